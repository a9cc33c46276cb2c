//! The configuration file: one TOML file for every part (default
//! `/etc/medforge/medforge.toml`, or `--config FILE`, or `MEDFORGE_CONFIG`).
//!
//! Every key is the long name of a flag (`domain`, `signup-mode`,
//! `max-sessions-per-user`), and the file's value becomes that flag's
//! default in every subcommand that has it; so an environment variable and
//! then a flag override it, in that order. The session policy's two flags
//! take a table (`[session-default]`, `[session-maximum]`, one key per
//! limit). A key that is no flag of any command, a value the flag refuses,
//! or a table or list where a flag takes one value stops the start with the
//! file, the key and the reason. `medforge config check` prints the
//! configuration in effect, secrets redacted.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// Where the file is looked for when neither `--config` nor
/// `MEDFORGE_CONFIG` names one (it need not exist there).
pub const DEFAULT_PATH: &str = "/etc/medforge/medforge.toml";
/// The environment variable naming the file.
pub const ENV: &str = "MEDFORGE_CONFIG";

/// Flags that hold secrets: `config check` prints them redacted.
const SECRET_KEYS: &[&str] = &["database-url"];
/// Flags the file may not set: which file to read, and one-off actions.
const NOT_IN_FILE: &[&str] = &[
    "config",
    "help",
    "version",
    "write",
    "purge",
    "reset-password",
    "email",
    "audit-log",
    "rbac",
];

/// A value from the file, as the flag takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileValue {
    /// One value (a string, number or boolean, as text).
    One(String),
    /// Several values (a list; a policy table as `key=value`s).
    Many(Vec<String>),
}

/// The file read: where from, its values by key, and the values of the
/// tables named after a command (`[api]`, `[apiserver]`…), which hold for
/// that command only and win over the top level.
#[derive(Clone, Debug, Default)]
pub struct FileConfig {
    pub path: Option<PathBuf>,
    pub values: BTreeMap<String, FileValue>,
    pub scoped: BTreeMap<String, BTreeMap<String, FileValue>>,
}

/// The commands whose name may be a table of the file.
const COMMANDS: &[&str] = &["up", "api", "operator", "apiserver", "create-admin", "down"];

impl FileConfig {
    /// Whether `key` is set for the command `which` (its table or the top level).
    pub fn sets(&self, which: &str, key: &str) -> bool {
        self.values.contains_key(key) || self.scoped.get(which).is_some_and(|t| t.contains_key(key))
    }
}

/// The file named by `--config` in `args` (`--config F` or `--config=F`),
/// else by `MEDFORGE_CONFIG`, else the default path when a file is there.
/// `None`: no file (a named file that does not exist is `load`'s error).
pub fn locate(args: &[OsString], env: Option<OsString>) -> Option<PathBuf> {
    let mut named = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            named = it.next().map(PathBuf::from);
        } else if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            named = Some(PathBuf::from(v));
        }
    }
    named
        .or_else(|| env.filter(|e| !e.is_empty()).map(PathBuf::from))
        .or_else(|| Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()))
}

/// Reads and parses the file.
pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    parse(path, &text)
}

/// Parses a file's text; errors name the file and the key.
pub fn parse(path: &Path, text: &str) -> anyhow::Result<FileConfig> {
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{}: not valid TOML", path.display()))?;
    let mut out = FileConfig {
        path: Some(path.to_path_buf()),
        ..FileConfig::default()
    };
    for (key, value) in table {
        if COMMANDS.contains(&key.as_str())
            && let toml::Value::Table(inner) = value
        {
            let mut scoped = BTreeMap::new();
            for (k, v) in inner {
                let v = read_value(path, &format!("[{key}] {k}"), &k, v)?;
                scoped.insert(k, v);
            }
            out.scoped.insert(key, scoped);
            continue;
        }
        let v = read_value(path, &key, &key, value)?;
        out.values.insert(key, v);
    }
    Ok(out)
}

/// One key's value; errors name the file and `shown` (the key, with its table).
fn read_value(
    path: &Path,
    shown: &str,
    key: &str,
    value: toml::Value,
) -> anyhow::Result<FileValue> {
    let at = || format!("{}: key `{shown}`", path.display());
    Ok({
        match (key, value) {
            ("session-default" | "session-maximum", toml::Value::Table(t)) => {
                let mut pairs = Vec::new();
                for (k, v) in t {
                    pairs.push(format!(
                        "{k}={}",
                        scalar(&v).with_context(|| format!("{}.{k}", at()))?
                    ));
                }
                FileValue::Many(pairs)
            }
            (_, toml::Value::Array(items)) => FileValue::Many(
                items
                    .iter()
                    .map(scalar)
                    .collect::<anyhow::Result<_>>()
                    .with_context(at)?,
            ),
            (_, v) => FileValue::One(scalar(&v).with_context(at)?),
        }
    })
}

fn scalar(v: &toml::Value) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) => bail!("a list where one value is expected"),
        toml::Value::Table(_) => bail!("a table where one value is expected"),
    })
}

/// The arguments of `cmd` (a subcommand) that take values from the file.
fn file_args(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| !NOT_IN_FILE.contains(&l)))
}

/// Makes the file's values the defaults of the flags they name, in every
/// command that has them (a command's own table: in that command only),
/// after checking each with the flag's own parser. A key no command has,
/// or a value refused, is an error.
pub fn apply(mut cmd: Command, file: &FileConfig) -> anyhow::Result<Command> {
    let Some(path) = &file.path else {
        return Ok(cmd);
    };
    let every: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for (key, value) in &file.values {
        // The flags of the command line itself (`log-format`).
        let root_arg = file_args(&cmd)
            .find(|a| a.get_long() == Some(key.as_str()))
            .cloned();
        if let Some(arg) = root_arg {
            check(&arg, value).with_context(|| format!("{}: key `{key}`", path.display()))?;
            cmd = set_default(cmd, None, arg.get_id().clone(), value.clone());
            continue;
        }
        let (next, used) = apply_to(
            cmd,
            &every,
            key,
            value,
            &format!("{}: key `{key}`", path.display()),
        )?;
        cmd = next;
        if !used {
            bail!(
                "{}: unknown key `{key}`: keys are the long names of flags (`medforge up --help`), \
                 `[session-default]`/`[session-maximum]` tables, and tables named after a \
                 command (`[api]`) for that command alone",
                path.display()
            );
        }
    }
    for (scope, values) in &file.scoped {
        for (key, value) in values {
            let at = format!("{}: key `[{scope}] {key}`", path.display());
            let (next, used) = apply_to(cmd, std::slice::from_ref(scope), key, value, &at)?;
            cmd = next;
            if !used {
                bail!("{at}: `medforge {scope}` has no flag --{key}");
            }
        }
    }
    Ok(cmd)
}

/// Sets `key` in each of `commands` that has it; whether any had it.
fn apply_to(
    mut cmd: Command,
    commands: &[String],
    key: &str,
    value: &FileValue,
    at: &str,
) -> anyhow::Result<(Command, bool)> {
    let mut used = false;
    for name in commands {
        let Some(arg) = cmd
            .find_subcommand(name)
            .and_then(|sub| file_args(sub).find(|a| a.get_long() == Some(key)).cloned())
        else {
            continue;
        };
        check(&arg, value).with_context(|| at.to_string())?;
        let id = arg.get_id().clone();
        cmd = set_default(cmd, Some(name), id, value.clone());
        used = true;
    }
    Ok((cmd, used))
}

fn set_default(cmd: Command, sub: Option<&str>, id: clap::Id, value: FileValue) -> Command {
    let set = move |a: Arg| match value {
        FileValue::One(v) => a.default_value(v),
        FileValue::Many(vs) => a.default_values(vs),
    };
    match sub {
        None => cmd.mut_arg(id, set),
        Some(name) => cmd.mut_subcommand(name, move |s| s.mut_arg(id, set)),
    }
}

/// Whether the flag takes this value, by its own parser.
fn check(arg: &Arg, value: &FileValue) -> anyhow::Result<()> {
    let takes_many =
        matches!(arg.get_action(), ArgAction::Append) || arg.get_value_delimiter().is_some();
    let values: Vec<&str> = match value {
        FileValue::One(v) => vec![v.as_str()],
        FileValue::Many(_) if !takes_many => {
            bail!("a list where one value is expected")
        }
        FileValue::Many(vs) => vs.iter().map(String::as_str).collect(),
    };
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        for v in &values {
            if !matches!(*v, "true" | "false") {
                bail!("{v:?} is not true or false");
            }
        }
        return Ok(());
    }
    // The flag alone, given the value on a command line: its own parser
    // decides, with its own message.
    let long = arg.get_long().unwrap_or_default();
    let alone = Command::new("medforge")
        .no_binary_name(true)
        .arg(arg.clone().required(false));
    let mut line: Vec<String> = Vec::new();
    for v in values {
        line.push(format!("--{long}"));
        line.push(v.to_string());
    }
    if let Err(e) = alone.try_get_matches_from(line) {
        // clap's message without its "error:" prefix and usage.
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or_default();
        bail!("{}", first.trim_start_matches("error: "));
    }
    Ok(())
}

/// The configuration `sub` runs with, one line per flag: `key = value` and
/// where it came from (flag, environment, file or built in), secrets
/// redacted.
pub fn effective(sub: &Command, matches: &ArgMatches, file: &FileConfig) -> String {
    let which = sub.get_name();
    let mut out = String::new();
    for arg in file_args(sub) {
        let long = arg.get_long().unwrap_or_default();
        let id = arg.get_id().as_str();
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) if file.sets(which, long) => "file",
            Some(ValueSource::DefaultValue) => "built in",
            _ => "unset",
        };
        let shown: Vec<String> = raw
            .iter()
            .map(|v| {
                if SECRET_KEYS.contains(&long) {
                    redact(v)
                } else {
                    v.clone()
                }
            })
            .collect();
        let value = match shown.len() {
            0 => "(unset)".to_string(),
            1 if !matches!(arg.get_action(), ArgAction::Append)
                && arg.get_value_delimiter().is_none() =>
            {
                shown[0].clone()
            }
            _ => format!("[{}]", shown.join(", ")),
        };
        let _ = writeln!(out, "{long} = {value}  # {source}");
    }
    out
}

/// A secret as `config check` shows it: a URL keeps its scheme, user and
/// host, without its password; anything else is hidden.
pub fn redact(v: &str) -> String {
    match v.split_once("://") {
        Some((scheme, rest)) => {
            let (auth, host) = match rest.rsplit_once('@') {
                Some((auth, host)) => (Some(auth), host),
                None => (None, rest),
            };
            match auth {
                Some(auth) => {
                    let user = auth.split(':').next().unwrap_or_default();
                    format!("{scheme}://{user}:***@{host}")
                }
                None => format!("{scheme}://{host}"),
            }
        }
        None if v.is_empty() => String::new(),
        None => "***".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn file(text: &str) -> anyhow::Result<FileConfig> {
        parse(Path::new("/etc/medforge/medforge.toml"), text)
    }

    fn prepared(text: &str) -> anyhow::Result<Command> {
        apply(crate::cli::Cli::command(), &file(text)?)
    }

    fn up_matches(cmd: Command, args: &[&str]) -> ArgMatches {
        let mut argv = vec!["medforge", "up"];
        argv.extend_from_slice(args);
        let m = cmd.try_get_matches_from(argv).expect("parses");
        m.subcommand_matches("up").unwrap().clone()
    }

    #[test]
    fn file_values_are_defaults_that_flags_override() {
        let cmd = prepared(
            r#"
            domain = "medforge.example.org"
            max-sessions-per-user = 3
            allow-cpu-only = true
            container-label = ["team=a", "site=b"]
            [session-maximum]
            memory = "64Gi"
            gpus = 2
            "#,
        )
        .unwrap();
        let m = up_matches(cmd.clone(), &[]);
        assert_eq!(
            m.get_one::<String>("domain").unwrap(),
            "medforge.example.org"
        );
        assert_eq!(*m.get_one::<u32>("max_sessions_per_user").unwrap(), 3);
        assert!(m.get_flag("allow_cpu_only"));
        let labels: Vec<&(String, String)> = m.get_many("container_labels").unwrap().collect();
        assert_eq!(labels.len(), 2);
        let maxima: Vec<&String> = m.get_many("maxima").unwrap().collect();
        assert_eq!(maxima, ["gpus=2", "memory=64Gi"]);
        // A flag wins over the file.
        let m = up_matches(cmd, &["--domain", "other.example.org"]);
        assert_eq!(m.get_one::<String>("domain").unwrap(), "other.example.org");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file_and_the_key() {
        let err = |text: &str| format!("{:#}", prepared(text).unwrap_err());
        let e = err("domian = \"x\"");
        assert!(
            e.contains("/etc/medforge/medforge.toml: unknown key `domian`"),
            "{e}"
        );
        let e = err("max-sessions-per-user = \"lots\"");
        assert!(e.contains("key `max-sessions-per-user`"), "{e}");
        assert!(e.contains("lots"), "{e}");
        let e = err("allow-cpu-only = \"yes\"");
        assert!(
            e.contains("key `allow-cpu-only`: \"yes\" is not true or false"),
            "{e}"
        );
        let e = err("domain = [\"a\", \"b\"]");
        assert!(
            e.contains("key `domain`: a list where one value is expected"),
            "{e}"
        );
        let e = err("[domain]\nx = 1");
        assert!(e.contains("key `domain`: a table"), "{e}");
        let e = err("lease-duration = \"500ms\"");
        assert!(e.contains("whole number of seconds"), "{e}");
        let e = err("config = \"/other.toml\"");
        assert!(e.contains("unknown key `config`"), "{e}");
        let e = format!("{:#}", file("domain = ").unwrap_err());
        assert!(e.contains("not valid TOML"), "{e}");
    }

    #[test]
    fn a_commands_table_holds_for_that_command_alone() {
        let cmd = prepared(
            r#"
            listen = "127.0.0.1:9000"
            log-format = "json"
            [apiserver]
            listen = "127.0.0.1:6444"
            "#,
        )
        .unwrap();
        let m = cmd
            .clone()
            .try_get_matches_from(["medforge", "apiserver"])
            .unwrap();
        assert_eq!(m.get_one::<String>("log_format").unwrap(), "json");
        let sub = m.subcommand_matches("apiserver").unwrap();
        assert_eq!(
            sub.get_one::<std::net::SocketAddr>("listen")
                .unwrap()
                .port(),
            6444
        );
        let m = cmd.try_get_matches_from(["medforge", "api"]).unwrap();
        let sub = m.subcommand_matches("api").unwrap();
        assert_eq!(
            sub.get_one::<std::net::SocketAddr>("listen")
                .unwrap()
                .port(),
            9000
        );
        let e = format!("{:#}", prepared("[apiserver]\ndomain = \"x\"").unwrap_err());
        assert!(
            e.contains("key `[apiserver] domain`: `medforge apiserver` has no flag --domain"),
            "{e}"
        );
    }

    #[test]
    fn the_effective_configuration_says_where_each_value_came_from_and_hides_secrets() {
        let f = file(
            r#"
            domain = "medforge.example.org"
            database-url = "postgres://medforge:hunter2@db.internal/medforge"
            "#,
        )
        .unwrap();
        let cmd = apply(crate::cli::Cli::command(), &f).unwrap();
        let m = up_matches(cmd.clone(), &["--namespace", "sessions"]);
        let up = cmd.find_subcommand("up").unwrap();
        let text = effective(up, &m, &f);
        assert!(
            text.contains("domain = medforge.example.org  # file"),
            "{text}"
        );
        assert!(text.contains("namespace = sessions  # flag"), "{text}");
        assert!(text.contains("signup-mode = closed  # built in"), "{text}");
        assert!(
            text.contains("database-url = postgres://medforge:***@db.internal/medforge  # file"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn the_file_is_named_by_flag_then_environment_then_default() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            locate(
                &args(&["medforge", "--config", "/a.toml", "up"]),
                Some("/b.toml".into())
            ),
            Some(PathBuf::from("/a.toml"))
        );
        assert_eq!(
            locate(&args(&["medforge", "up", "--config=/c.toml"]), None),
            Some(PathBuf::from("/c.toml"))
        );
        assert_eq!(
            locate(&args(&["medforge", "up"]), Some("/b.toml".into())),
            Some(PathBuf::from("/b.toml"))
        );
    }

    #[test]
    fn every_key_is_documented_and_the_example_file_holds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let docs = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
        let cmd = crate::cli::Cli::command();
        let mut keys: Vec<&str> = file_args(&cmd).filter_map(Arg::get_long).collect();
        for sub in cmd.get_subcommands() {
            keys.extend(file_args(sub).filter_map(Arg::get_long));
        }
        keys.sort_unstable();
        keys.dedup();
        let missing: Vec<&&str> = keys
            .iter()
            .filter(|k| !docs.contains(&format!("| `{k}` |")))
            .collect();
        assert!(missing.is_empty(), "not in docs/operations.md: {missing:?}");
        // The shipped example is a valid file.
        let example = root.join("deploy/medforge.toml.example");
        let file = load(&example).unwrap();
        let cmd = apply(crate::cli::Cli::command(), &file).unwrap();
        let m = up_matches(cmd, &[]);
        assert_eq!(
            m.get_one::<String>("domain").unwrap(),
            "medforge.example.org"
        );
    }

    #[test]
    fn redaction_keeps_what_is_not_secret() {
        assert_eq!(
            redact("postgres://u:p@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
        assert_eq!(redact("postgres://h/d"), "postgres://h/d");
        assert_eq!(redact("sqlite:/var/lib/x.db"), "***");
    }
}
