//! `medforge`: the one CLI binary. It only wires the crates together.
#![forbid(unsafe_code)]

mod logging;
mod run;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// MedForge: interactive GPU sessions on shared GPU machines.
#[derive(Debug, Parser)]
#[command(name = "medforge", version, about, long_about = None)]
struct Cli {
    /// Log format: `text` (readable) or `json`.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"], env = "MEDFORGE_LOG_FORMAT")]
    log_format: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything on this host: the embedded control plane, the scheduler,
    /// a node agent for this host and the api, in one process.
    Up(Box<run::UpArgs>),
    /// Run only the embedded control plane (a Kubernetes-compatible API server).
    Apiserver(ApiserverArgs),
    /// Run the scheduler and/or the node agent against a control plane.
    Operator(run::OperatorArgs),
    /// Run only the HTTP api against a control plane.
    Api(run::ApiArgs),
    /// Create or promote an admin user in the api's database.
    CreateAdmin(run::CreateAdminArgs),
    /// Print every MedForge CustomResourceDefinition as YAML, or write one file per CRD.
    Crds {
        /// Write `<plural>.<group>.yaml` files into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct ApiserverArgs {
    /// Where the database, CA, token and kubeconfig live.
    #[arg(
        long,
        default_value = "/var/lib/medforge/apiserver",
        env = "MEDFORGE_APISERVER_DIR"
    )]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = medforge_apiserver::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// How long an Event lives after its last write (`30m`, `1h`, `2h30m`).
    #[arg(long, default_value = "1h", value_parser = run::parse_duration_arg)]
    event_ttl: std::time::Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("medforge: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crds { write: None } => {
            let yaml = medforge_crds::all_crds_yaml()?;
            std::io::stdout()
                .lock()
                .write_all(yaml.as_bytes())
                .context("writing to standard output")?;
            Ok(())
        }
        Command::Crds { write: Some(dir) } => write_crds(&dir),
        Command::Apiserver(args) => runtime()?.block_on(run_apiserver(args)),
        Command::Up(args) => runtime()?.block_on(run::up(*args)),
        Command::Operator(args) => runtime()?.block_on(run::operator(args)),
        Command::Api(args) => runtime()?.block_on(run::api(args)),
        Command::CreateAdmin(args) => runtime()?.block_on(run::create_admin(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn run_apiserver(args: ApiserverArgs) -> anyhow::Result<()> {
    let mut config = medforge_apiserver::Config::new(&args.data_dir).with_listen(args.listen);
    config.event_ttl = args.event_ttl;
    let server = medforge_apiserver::start(config)
        .await
        .with_context(|| format!("starting the control plane in {}", args.data_dir.display()))?;
    tracing::info!(
        url = server.url(),
        kubeconfig = %server.kubeconfig_path().display(),
        "control plane ready"
    );
    run::shutdown_signal().await;
    server.shutdown().await;
    Ok(())
}

fn write_crds(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for crd in medforge_crds::all_crds() {
        let path = dir.join(medforge_crds::crd_file_name(&crd));
        let yaml = medforge_crds::crd_yaml(&crd)?;
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
