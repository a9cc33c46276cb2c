//! `medforge`: the one CLI binary. It only wires the crates together:
//! `cli` holds the flags, `config` turns them into the crates'
//! configurations, `run` composes each command, `packs` makes the default
//! Pack from an image (one a recipe under `packs/` built, found by its
//! labels), and `quickstart` sets up a bare host for `medforge up --quickstart`.
#![forbid(unsafe_code)]

mod cli;
mod config;
mod config_file;
mod logging;
mod packs;
mod quickstart;
mod run;

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};

use cli::{Cli, Command, ConfigAction};

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The configuration file's values become the flags' defaults.
    let (command, file) = match prepare(&argv) {
        Ok(prepared) => prepared,
        Err(err) => {
            eprintln!("medforge: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let matches = command.clone().get_matches_from(&argv);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    logging::init(&cli.log_format);
    let result = match cli.command {
        Command::Config {
            action: ConfigAction::Check { command: which },
        } => config_check(&command, &file, &which),
        other => dispatch(other),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("medforge: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line with the configuration file's values applied.
fn prepare(
    argv: &[std::ffi::OsString],
) -> anyhow::Result<(clap::Command, config_file::FileConfig)> {
    let file = match config_file::locate(argv, std::env::var_os(config_file::ENV)) {
        Some(path) => config_file::load(&path)?,
        None => config_file::FileConfig::default(),
    };
    let command = config_file::apply(Cli::command(), &file)?;
    Ok((command, file))
}

/// `medforge config check`: the configuration `which` would run with, from
/// the file and the environment, after the checks its start makes.
fn config_check(
    command: &clap::Command,
    file: &config_file::FileConfig,
    which: &str,
) -> anyhow::Result<()> {
    let matches = command
        .clone()
        .try_get_matches_from(["medforge", which])
        .map_err(|e| anyhow::anyhow!("{}", e.render()))?;
    let sub = matches.subcommand_matches(which).expect("parsed");
    match which {
        // The api's settings are checked as its start checks them (no I/O).
        "up" => {
            let args = cli::UpArgs::from_arg_matches(sub)?;
            let policy = args.policy.policy()?;
            args.api.config(&args.data_dir.join("api"), policy)?;
        }
        "api" => {
            let args = cli::ApiArgs::from_arg_matches(sub)?;
            let policy = args.policy.policy()?;
            args.api.config(&args.data_dir, policy)?;
        }
        _ => {
            let args = cli::OperatorArgs::from_arg_matches(sub)?;
            args.policy.policy()?;
        }
    }
    match &file.path {
        Some(p) => println!("# configuration file: {}", p.display()),
        None => println!(
            "# no configuration file ({} does not exist)",
            config_file::DEFAULT_PATH
        ),
    }
    println!("# medforge {which}: every setting, and where it comes from");
    let spec = command.find_subcommand(which).expect("known");
    print!("{}", config_file::effective(spec, sub, file));
    Ok(())
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::RbacReport { audit_log, rbac } => run::rbac_report(&audit_log, &rbac),
        Command::Crds { write: None } => run::print_crds(),
        Command::Crds { write: Some(dir) } => run::write_crds(&dir),
        Command::Apiserver(args) => runtime()?.block_on(run::apiserver(args)),
        Command::Up(args) => runtime()?.block_on(run::up(*args)),
        Command::Operator(args) => runtime()?.block_on(run::operator(args)),
        Command::Api(args) => runtime()?.block_on(run::api(args)),
        Command::CreateAdmin(args) => runtime()?.block_on(run::create_admin(args)),
        Command::Down(args) => runtime()?.block_on(run::down(args)),
        Command::Config { .. } => unreachable!("handled in main"),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
