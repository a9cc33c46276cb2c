//! `medforge`: the one CLI binary. It only wires the crates together:
//! `cli` holds the flags, `config` turns them into the crates'
//! configurations, `run` composes each command, and `quickstart` sets up a
//! bare host for `medforge up --quickstart`.
#![forbid(unsafe_code)]

mod cli;
mod config;
mod logging;
mod quickstart;
mod run;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log_format);
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("medforge: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Crds { write: None } => run::print_crds(),
        Command::Crds { write: Some(dir) } => run::write_crds(&dir),
        Command::Apiserver(args) => runtime()?.block_on(run::apiserver(args)),
        Command::Up(args) => runtime()?.block_on(run::up(*args)),
        Command::Operator(args) => runtime()?.block_on(run::operator(args)),
        Command::Api(args) => runtime()?.block_on(run::api(args)),
        Command::CreateAdmin(args) => runtime()?.block_on(run::create_admin(args)),
        Command::Down(args) => runtime()?.block_on(run::down(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
