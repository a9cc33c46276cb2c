//! `mf-harness up|down|status`: drive the test harness by hand.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use medforge_testkit::{DownOptions, ENV_HARNESS_DIR, HarnessConfig};

#[derive(Parser)]
#[command(
    name = "mf-harness",
    about = "Bring the MedForge test harness (netns, dockerd, zfs-fuse pool) up or down"
)]
struct Cli {
    /// State directory (default: <workspace>/target/harness).
    #[arg(long, env = ENV_HARNESS_DIR, global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring everything up (or check that it is up); prints shell variables.
    Up,
    /// Tear down what the harness started (waits for running tests).
    Down {
        /// Do not wait for test processes that still hold the harness.
        #[arg(long)]
        force: bool,
        /// Seconds to wait for running tests.
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
    /// Report each component; exit status 0 only when all are up.
    Status {
        /// Print the layout as JSON as well.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = HarnessConfig::from_env();
    if let Some(dir) = cli.state_dir {
        config = config.with_state_dir(dir);
    }
    match cli.command {
        Cmd::Up => match medforge_testkit::up(&config) {
            Ok(layout) => {
                println!("MEDFORGE_HARNESS_DIR={}", layout.state_dir.display());
                println!("DOCKER_HOST={}", layout.docker_host());
                println!("MEDFORGE_NETNS={}", layout.netns);
                println!("MEDFORGE_NETNS_PATH={}", layout.netns_path.display());
                println!("MEDFORGE_ZFS_POOL={}", layout.pool);
                println!(
                    "MEDFORGE_ZFS_MOUNTPOINT={}",
                    layout.pool_mountpoint.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mf-harness up: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Down { force, wait } => {
            let options = DownOptions {
                wait: Duration::from_secs(wait),
                force,
            };
            match medforge_testkit::down(&config, &options) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mf-harness down: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Status { json } => match medforge_testkit::status(&config) {
            Ok(status) => {
                println!("{status}");
                if json {
                    match serde_json::to_string_pretty(&status.layout) {
                        Ok(s) => println!("{s}"),
                        Err(e) => eprintln!("mf-harness status: {e}"),
                    }
                }
                if status.is_up() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(3)
                }
            }
            Err(e) => {
                eprintln!("mf-harness status: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
