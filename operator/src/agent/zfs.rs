//! [`Workspaces`] on ZFS through the `zfs` command (kernel ZFS or zfs-fuse).
//!
//! zfs-fuse quirks handled here: `zfs list -p` does not exist (exact numbers
//! come from `zfs get -Hp`); destroying a mounted dataset often fails with
//! "dataset is busy", so datasets are unmounted first and busy answers are
//! retried with a short backoff; after the daemon restarts, datasets come
//! back unmounted (the reconciler mounts them again).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use medforge_crds::ComponentHealth;
use tokio::process::Command;

use super::runtime::{DatasetObs, Destroyed, Refusal, WorkspaceError, Workspaces};

/// How long one `zfs` command may take before the agent gives up on it,
/// kills it and reports ZFS as not answering ([`WorkspaceError::Unavailable`]).
/// Creating, snapshotting or destroying a workspace takes well under a
/// second on a healthy pool; a daemon that hangs must not hold a step (and,
/// through the create lock, every other session's start) forever.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// ZFS through the `zfs` program.
#[derive(Debug, Clone)]
pub struct ZfsWorkspaces {
    zfs: PathBuf,
    /// See [`COMMAND_TIMEOUT`].
    timeout: Duration,
    /// Creates run one at a time: two `zfs create -p` racing to make the
    /// same parent fail to mount it on zfs-fuse ("Input/output error").
    creating: Arc<tokio::sync::Mutex<()>>,
}

/// Short retries for ZFS's transient "dataset is busy".
fn busy_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(1))
        .with_max_times(8)
}

fn is_busy(e: &WorkspaceError) -> bool {
    e.is_refusal(&Refusal::Busy)
}

fn is_missing(stderr: &str) -> bool {
    stderr.contains("does not exist") || stderr.contains("no such pool")
}

/// What a failed `zfs` command's answer means: the one place ZFS's words
/// are read. `args` are the command's arguments (the last names the object).
fn classify(command: String, args: &[&str], stderr: String) -> WorkspaceError {
    if stderr.contains("failed to initialize ZFS library")
        || stderr.contains("zfs-fuse daemon is running")
        || stderr.contains("/dev/zfs")
    {
        return WorkspaceError::Unavailable { cause: stderr };
    }
    if is_missing(&stderr) {
        return WorkspaceError::NotFound {
            what: format!("{} ({stderr})", args.last().copied().unwrap_or("")),
        };
    }
    let why = if stderr.contains("already exists") {
        Refusal::AlreadyExists
    } else if stderr.contains("already mounted") {
        Refusal::AlreadyMounted
    } else if stderr.contains("not currently mounted") || stderr.contains("not mounted") {
        Refusal::NotMounted
    } else if stderr.contains("busy") {
        Refusal::Busy
    } else if stderr.contains("dependent clones") {
        Refusal::DependentClones(dependent_clones(&stderr))
    } else if stderr.contains("cannot mount") {
        Refusal::CannotMount
    } else {
        Refusal::Other
    };
    WorkspaceError::Refused {
        command,
        stderr,
        why,
    }
}

impl ZfsWorkspaces {
    pub fn new(zfs: impl Into<PathBuf>) -> ZfsWorkspaces {
        ZfsWorkspaces {
            zfs: zfs.into(),
            timeout: COMMAND_TIMEOUT,
            creating: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The same, with another bound on each command's time.
    pub fn with_timeout(mut self, timeout: Duration) -> ZfsWorkspaces {
        self.timeout = timeout;
        self
    }

    /// Runs `zfs ARGS…`; its stdout. A daemon that does not answer (or a
    /// command still running after the timeout, which is then killed) is
    /// [`WorkspaceError::Unavailable`]; an absent dataset `NotFound`.
    ///
    /// A reconcile that is dropped mid-command leaves the command to finish
    /// (as a crash would): every step is safe to repeat.
    async fn run<S: AsRef<str>>(&self, args: &[S]) -> Result<String, WorkspaceError> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let command = format!("zfs {}", args.join(" "));
        let cannot_run = |e: std::io::Error| WorkspaceError::Unavailable {
            cause: format!("cannot run {}: {e}", self.zfs.display()),
        };
        let child = Command::new(&self.zfs)
            .args(&args)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            .spawn()
            .map_err(cannot_run)?;
        let pid = child.id();
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(out) => out.map_err(cannot_run)?,
            Err(_) => {
                // Not reaped yet (the dropped wait did not collect it), so
                // the PID is still this child's.
                if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                return Err(WorkspaceError::Unavailable {
                    cause: format!(
                        "`{command}` did not finish within {:?} and was killed",
                        self.timeout
                    ),
                });
            }
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(classify(command, &args, stderr))
    }

    /// ZFS's health for the GpuNode: the pool of `root` answers.
    pub async fn health(&self, root: &str) -> ComponentHealth {
        let pool = root.split('/').next().unwrap_or(root);
        match self.run(&["list", "-H", "-o", "name", pool]).await {
            Ok(_) => ComponentHealth {
                healthy: true,
                version: None,
                message: None,
            },
            Err(e) => ComponentHealth {
                healthy: false,
                version: None,
                message: Some(pool_problem(pool, &e.to_string())),
            },
        }
    }

    /// Creates the root dataset (and its parents) unless it exists.
    pub async fn ensure_root(&self, root: &str) -> Result<(), WorkspaceError> {
        self.run_unless(&["create", "-p", root], Refusal::AlreadyExists)
            .await
    }

    /// Every snapshot under `root`, with the bytes it holds on its own
    /// (`used`). `zfs get` rather than `zfs list`: zfs-fuse's `list` has no
    /// `-p` (exact numbers) and no `-t snapshot`.
    pub async fn snapshots_under(&self, root: &str) -> Result<Vec<(String, i64)>, WorkspaceError> {
        let out = self
            .run(&["get", "-H", "-p", "-r", "-o", "name,value", "used", root])
            .await?;
        Ok(parse_snapshots(&out))
    }

    /// Runs `zfs ARGS…` for its effect; refused for `done` means it is done.
    async fn run_unless(&self, args: &[&str], done: Refusal) -> Result<(), WorkspaceError> {
        match self.run(args).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_refusal(&done) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The ancestors of `dataset` that mount by themselves (`canmount=on`,
    /// a path as mountpoint) and are not mounted, top first.
    async fn unmounted_ancestors(&self, dataset: &str) -> Result<Vec<String>, WorkspaceError> {
        let ancestors = ancestors(dataset);
        if ancestors.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![
            "get",
            "-H",
            "-o",
            "name,property,value",
            "mounted,canmount,mountpoint",
        ];
        args.extend(ancestors.iter().map(String::as_str));
        let out = self.run(&args).await?;
        Ok(parse_unmounted(&ancestors, &out))
    }

    async fn unmount(&self, dataset: &str) -> Result<(), WorkspaceError> {
        let args = ["unmount", dataset];
        let once = || self.run_unless(&args, Refusal::NotMounted);
        once.retry(busy_backoff()).when(is_busy).await
    }
}

/// `a`, `a/b` for `a/b/c`: every dataset above this one, top first.
fn ancestors(dataset: &str) -> Vec<String> {
    dataset
        .match_indices('/')
        .map(|(i, _)| dataset[..i].to_string())
        .collect()
}

/// Of `ancestors` (top first), those that `zfs get -H -o
/// name,property,value mounted,canmount,mountpoint` says mount by
/// themselves and are not mounted, in the same order.
fn parse_unmounted(ancestors: &[String], out: &str) -> Vec<String> {
    let mut props: HashMap<&str, HashMap<&str, &str>> = HashMap::new();
    for line in out.lines() {
        let mut cols = line.split('\t');
        if let (Some(name), Some(property), Some(value)) = (cols.next(), cols.next(), cols.next()) {
            props
                .entry(name)
                .or_default()
                .insert(property, value.trim());
        }
    }
    ancestors
        .iter()
        .filter(|a| {
            props.get(a.as_str()).is_some_and(|p| {
                p.get("mounted") == Some(&"no")
                    && p.get("canmount") == Some(&"on")
                    && p.get("mountpoint").is_some_and(|m| m.starts_with('/'))
            })
        })
        .cloned()
        .collect()
}

/// The arguments of `zfs create` or `zfs clone`: `<verb> -p -o k=v … <operands>`.
fn creating_args(verb: &str, properties: &[(String, String)], operands: &[&str]) -> Vec<String> {
    let flags = properties
        .iter()
        .flat_map(|(k, v)| ["-o".to_string(), format!("{k}={v}")]);
    [verb.to_string(), "-p".to_string()]
        .into_iter()
        .chain(flags)
        .chain(operands.iter().map(|o| o.to_string()))
        .collect()
}

/// The dataset and its snapshots from `zfs list -H -o name,mounted,mountpoint
/// -t all -r -d 1` (owner not filled in).
fn parse_listing(dataset: &str, out: &str) -> Option<DatasetObs> {
    let mut obs: Option<DatasetObs> = None;
    let mut snapshots = Vec::new();
    let prefix = format!("{dataset}@");
    for line in out.lines() {
        let mut cols = line.split('\t');
        let (Some(name), Some(mounted), Some(mountpoint)) = (cols.next(), cols.next(), cols.next())
        else {
            continue;
        };
        if name == dataset {
            obs = Some(DatasetObs {
                name: name.to_string(),
                mounted: mounted.trim() == "yes",
                mountpoint: mountpoint
                    .trim()
                    .starts_with('/')
                    .then(|| PathBuf::from(mountpoint.trim())),
                owner: None,
                snapshots: Vec::new(),
            });
        } else if let Some(snap) = name.strip_prefix(&prefix) {
            snapshots.push(snap.to_string());
        }
    }
    obs.map(|o| DatasetObs { snapshots, ..o })
}

/// `(name, used bytes)` of the snapshots in `zfs get -H -p -r -o name,value used`.
fn parse_snapshots(out: &str) -> Vec<(String, i64)> {
    out.lines()
        .filter_map(|line| {
            let (name, used) = line.split_once('\t')?;
            name.contains('@')
                .then(|| (name.to_string(), used.trim().parse().unwrap_or(0)))
        })
        .collect()
}

/// The datasets `zfs destroy` names as dependent clones.
fn dependent_clones(stderr: &str) -> Vec<String> {
    if !stderr.contains("dependent clones") {
        return Vec::new();
    }
    stderr
        .lines()
        .skip_while(|l| !l.contains("use '-R'"))
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains(' '))
        .map(str::to_string)
        .collect()
}

impl Workspaces for ZfsWorkspaces {
    async fn inspect(&self, dataset: &str) -> Result<Option<DatasetObs>, WorkspaceError> {
        // One call for the dataset and its snapshots.
        let out = match self
            .run(&[
                "list",
                "-H",
                "-o",
                "name,mounted,mountpoint",
                "-t",
                "all",
                "-r",
                "-d",
                "1",
                dataset,
            ])
            .await
        {
            Ok(out) => out,
            Err(WorkspaceError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(obs) = parse_listing(dataset, &out) else {
            return Ok(None);
        };
        let owner = match (&obs.mountpoint, obs.mounted) {
            (Some(p), true) => {
                let p = p.clone();
                tokio::task::spawn_blocking(move || {
                    std::fs::metadata(&p).ok().map(|m| (m.uid(), m.gid()))
                })
                .await
                .ok()
                .flatten()
            }
            _ => None,
        };
        Ok(Some(DatasetObs { owner, ..obs }))
    }

    async fn snapshot_exists(&self, snapshot: &str) -> Result<bool, WorkspaceError> {
        match self
            .run(&["list", "-H", "-o", "name", "-t", "snapshot", snapshot])
            .await
        {
            Ok(_) => Ok(true),
            Err(WorkspaceError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn create(
        &self,
        dataset: &str,
        properties: &[(String, String)],
    ) -> Result<(), WorkspaceError> {
        let args = creating_args("create", properties, &[dataset]);
        let _one_at_a_time = self.creating.lock().await;
        self.run(&args).await.map(drop)
    }

    async fn clone_from(
        &self,
        snapshot: &str,
        dataset: &str,
        properties: &[(String, String)],
    ) -> Result<(), WorkspaceError> {
        let args = creating_args("clone", properties, &[snapshot, dataset]);
        let _one_at_a_time = self.creating.lock().await;
        match self.run(&args).await {
            Ok(_) => Ok(()),
            // The absent one is the snapshot, not the new dataset.
            Err(WorkspaceError::NotFound { .. }) => Err(WorkspaceError::NotFound {
                what: format!("snapshot {snapshot}"),
            }),
            Err(e) => Err(e),
        }
    }

    /// Mounts the dataset, and first its unmounted ancestors, top down.
    /// After a ZFS daemon restart the agent may come to a session's dataset
    /// before the import has mounted its parents; mounted under an
    /// unmounted parent, it would make its mountpoint's directories in the
    /// file system below, and the parent could then never be mounted over
    /// them ("directory is not empty").
    async fn mount(&self, dataset: &str) -> Result<(), WorkspaceError> {
        let parents = self.unmounted_ancestors(dataset).await?;
        if !parents.is_empty() {
            // One at a time, as creates are: zfs-fuse fails a parent's
            // mount that races another.
            let _one = self.creating.lock().await;
            for parent in parents {
                self.run_unless(&["mount", &parent], Refusal::AlreadyMounted)
                    .await?;
            }
        }
        self.run_unless(&["mount", dataset], Refusal::AlreadyMounted)
            .await
    }

    async fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<(), WorkspaceError> {
        let p = path.to_path_buf();
        tokio::task::spawn_blocking(move || std::os::unix::fs::chown(&p, Some(uid), Some(gid)))
            .await
            .map_err(|e| WorkspaceError::io(path, e))?
            .map_err(|e| {
                WorkspaceError::io(path, format!("cannot change the owner to {uid}:{gid}: {e}"))
            })
    }

    async fn snapshot(&self, snapshot: &str) -> Result<(), WorkspaceError> {
        self.run_unless(&["snapshot", snapshot], Refusal::AlreadyExists)
            .await
    }

    async fn destroy(&self, dataset: &str) -> Result<Destroyed, WorkspaceError> {
        match self.inspect(dataset).await? {
            None => return Ok(Destroyed::AlreadyGone),
            Some(d) if d.mounted => self.unmount(dataset).await?,
            Some(_) => {}
        }
        let destroy = || async {
            match self.run(&["destroy", "-r", dataset]).await {
                Err(WorkspaceError::NotFound { .. }) => Ok(String::new()),
                other => other,
            }
        };
        match destroy.retry(busy_backoff()).when(is_busy).await {
            Ok(_) => Ok(Destroyed::Destroyed),
            Err(WorkspaceError::Refused {
                why: Refusal::DependentClones(clones),
                ..
            }) if !clones.is_empty() => {
                // Another workspace was restored from one of its snapshots:
                // promote it (it takes the snapshots it depends on), then
                // the dataset can go without touching the other workspace.
                for clone in &clones {
                    self.run(&["promote", clone]).await?;
                }
                destroy.retry(busy_backoff()).when(is_busy).await?;
                Ok(Destroyed::PromotedClones(clones))
            }
            Err(e) => Err(e),
        }
    }

    async fn destroy_snapshot(&self, snapshot: &str) -> Result<(), WorkspaceError> {
        if !snapshot.contains('@') {
            return Err(WorkspaceError::Refused {
                command: format!("zfs destroy {snapshot}"),
                stderr: format!("{snapshot} is not a snapshot"),
                why: Refusal::Other,
            });
        }
        let once = || async {
            match self.run(&["destroy", snapshot]).await {
                Ok(_) | Err(WorkspaceError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        };
        once.retry(busy_backoff()).when(is_busy).await
    }

    async fn user_property(
        &self,
        dataset: &str,
        key: &str,
    ) -> Result<Option<String>, WorkspaceError> {
        let out = self
            .run(&["get", "-H", "-o", "value", key, dataset])
            .await?;
        let value = out.trim();
        Ok((!value.is_empty() && value != "-").then(|| value.to_string()))
    }

    async fn retire(&self, dataset: &str, stamp: &str) -> Result<(), WorkspaceError> {
        // Marked first: a crash after it leaves a dataset that is known to
        // be retired, and the unmount is repeated.
        self.run(&[
            "set",
            &format!("{}={stamp}", medforge_crds::keys::dataset::RETIRED),
            dataset,
        ])
        .await?;
        self.run(&["set", "canmount=noauto", dataset]).await?;
        self.unmount(dataset).await
    }

    async fn origins(
        &self,
        root: &str,
    ) -> Result<std::collections::BTreeSet<String>, WorkspaceError> {
        let out = self
            .run(&["get", "-H", "-r", "-o", "name,value", "origin", root])
            .await?;
        Ok(parse_origins(&out))
    }

    async fn snapshot_size(&self, snapshot: &str) -> Result<Option<i64>, WorkspaceError> {
        match self
            .run(&["get", "-H", "-p", "-o", "value", "used", snapshot])
            .await
        {
            Ok(out) => Ok(out.trim().parse().ok()),
            Err(WorkspaceError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The snapshots named as some dataset's origin in `zfs get -H -o
/// name,value origin` (`-` for a dataset that is no clone).
fn parse_origins(out: &str) -> std::collections::BTreeSet<String> {
    out.lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(_, origin)| origin.trim())
        .filter(|o| o.contains('@'))
        .map(str::to_string)
        .collect()
}

/// What a failed look at the pool means, with the fix when the pool is missing.
fn pool_problem(pool: &str, error: &str) -> String {
    if error.contains("does not exist") || error.contains("no such pool") {
        format!(
            "{error}: the ZFS pool {pool} does not exist; create it (`zpool create {pool} <devices>`), point --zfs-root at an existing pool, or try MedForge with `medforge up --quickstart` (a file-backed trial pool)"
        )
    } else {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ancestors_top_first_and_the_unmounted_ones_among_them() {
        assert_eq!(
            super::ancestors("tank/mf/alice/uid"),
            ["tank", "tank/mf", "tank/mf/alice"]
        );
        assert!(super::ancestors("tank").is_empty());
        let out = "tank\tmounted\tyes\ntank\tcanmount\ton\ntank\tmountpoint\t/tank\n\
                   tank/mf\tmounted\tno\ntank/mf\tcanmount\ton\ntank/mf\tmountpoint\t/tank/mf\n\
                   tank/mf/alice\tmounted\tno\ntank/mf/alice\tcanmount\tnoauto\ntank/mf/alice\tmountpoint\t/x\n";
        let ancestors = super::ancestors("tank/mf/alice/uid");
        assert_eq!(super::parse_unmounted(&ancestors, out), ["tank/mf"]);
        let legacy = "tank\tmounted\tno\ntank\tcanmount\ton\ntank\tmountpoint\tlegacy\n";
        assert!(super::parse_unmounted(&ancestors, legacy).is_empty());
    }

    use super::*;

    #[test]
    fn zfs_answers_become_typed_errors() {
        let answer = |stderr: &str| classify("zfs x p/a".into(), &["x", "p/a"], stderr.into());
        let refusal = |stderr: &str| match answer(stderr) {
            WorkspaceError::Refused { why, .. } => why,
            other => panic!("{stderr:?} gave {other:?}"),
        };
        assert_eq!(
            refusal("cannot create 'p/a': dataset already exists"),
            Refusal::AlreadyExists
        );
        assert_eq!(
            refusal("cannot destroy 'p/a': dataset is busy"),
            Refusal::Busy
        );
        assert_eq!(
            refusal("cannot unmount 'p/a': not currently mounted"),
            Refusal::NotMounted
        );
        assert_eq!(
            refusal("cannot mount 'p/a': filesystem already mounted"),
            Refusal::AlreadyMounted
        );
        assert_eq!(
            refusal("filesystem successfully created, but cannot mount: Input/output error"),
            Refusal::CannotMount
        );
        assert_eq!(
            refusal(
                "cannot destroy 'p/a': filesystem has dependent clones\nuse '-R' to destroy the following datasets:\np/b"
            ),
            Refusal::DependentClones(vec!["p/b".into()])
        );
        assert_eq!(refusal("cannot create 'p/a': out of space"), Refusal::Other);
        // ZFS's own words are what users see.
        assert_eq!(
            answer("cannot create 'p/a': out of space").to_string(),
            "`zfs x p/a` failed: cannot create 'p/a': out of space"
        );
        assert!(matches!(
            answer("cannot open 'p/a': dataset does not exist"),
            WorkspaceError::NotFound { .. }
        ));
        assert!(matches!(
            answer("failed to initialize ZFS library"),
            WorkspaceError::Unavailable { .. }
        ));
    }

    #[test]
    fn origins_are_the_snapshots_datasets_were_cloned_from() {
        let out = "p\t-\np/a\t-\np/a@s1\t-\np/b\tp/a@s1\np/c\tp/a@s2\n";
        let origins = parse_origins(out);
        assert_eq!(
            origins.into_iter().collect::<Vec<_>>(),
            vec!["p/a@s1".to_string(), "p/a@s2".to_string()]
        );
    }

    #[test]
    fn dependent_clones_are_read_from_the_error() {
        let stderr = "cannot destroy 'p/a/b': filesystem has dependent clones\n\
                      use '-R' to destroy the following datasets:\n\
                      p/a/g\n\
                      p/x/y\n";
        assert_eq!(dependent_clones(stderr), vec!["p/a/g", "p/x/y"]);
        assert!(dependent_clones("cannot destroy: dataset is busy").is_empty());
    }

    #[test]
    fn a_listing_gives_the_dataset_and_its_snapshots() {
        let out = "p/ws/a/u\tyes\t/mnt/p/ws/a/u\np/ws/a/u@stop-1\t-\t-\np/ws/a/u@death-2\t-\t-\n";
        let obs = parse_listing("p/ws/a/u", out).unwrap();
        assert!(obs.mounted);
        assert_eq!(obs.mountpoint, Some(PathBuf::from("/mnt/p/ws/a/u")));
        assert_eq!(obs.snapshots, vec!["stop-1", "death-2"]);
        let unmounted = parse_listing("p/x", "p/x\tno\tnone\n").unwrap();
        assert!(!unmounted.mounted && unmounted.mountpoint.is_none());
        assert_eq!(parse_listing("p/y", ""), None);
    }

    #[test]
    fn a_snapshot_listing_gives_names_and_sizes() {
        let out =
            "pool/ws\t900\npool/ws/alice/u1@stop-1\t12345\npool/ws/alice/u1@death-2\t0\nnoise\n";
        assert_eq!(
            parse_snapshots(out),
            [
                ("pool/ws/alice/u1@stop-1".to_string(), 12345),
                ("pool/ws/alice/u1@death-2".to_string(), 0)
            ]
        );
    }

    #[test]
    fn properties_become_o_flags() {
        assert_eq!(
            creating_args("create", &[("quota".into(), "1024".into())], &["p/x"]),
            vec!["create", "-p", "-o", "quota=1024", "p/x"]
        );
    }

    #[test]
    fn a_missing_pool_names_the_fix() {
        let m = pool_problem("tank", "cannot open 'tank': dataset does not exist");
        assert!(
            m.contains("zpool create tank") && m.contains("--quickstart"),
            "{m}"
        );
        assert_eq!(
            pool_problem("tank", "permission denied"),
            "permission denied"
        );
    }
}

#[cfg(test)]
mod timeout_tests {
    use std::time::Instant;

    use super::*;

    /// A `zfs` that records its PID and then never answers, as a hung
    /// daemon's client does.
    fn hanging_zfs(dir: &Path) -> (PathBuf, PathBuf) {
        let pidfile = dir.join("pid");
        let body = format!("echo $$ > {}\nexec sleep 600", pidfile.display());
        (medforge_testkit::fake_program(dir, "zfs", &body), pidfile)
    }

    fn running(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
    }

    #[tokio::test]
    async fn a_command_that_never_answers_is_killed_and_reported_as_zfs_not_answering() {
        let dir = tempfile::tempdir().unwrap();
        let (program, pidfile) = hanging_zfs(dir.path());
        let zfs = ZfsWorkspaces::new(program).with_timeout(Duration::from_millis(300));

        let err = zfs.ensure_root("pool/root").await.unwrap_err();
        assert!(
            matches!(&err, WorkspaceError::Unavailable { cause }
                if cause.contains("`zfs create -p pool/root` did not finish within 300ms")),
            "{err:?}"
        );
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(pid) {
            assert!(
                Instant::now() < deadline,
                "the hung zfs {pid} was not killed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
