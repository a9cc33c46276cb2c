//! PostgreSQL for the scenarios: one cluster (initdb + pg_ctl, as the
//! `postgres` user when run as root) shared by every test process of the
//! suite, and a database of its own per app, dropped when its scenario ends.
//!
//! nextest runs each test in a process of its own, and an initdb costs about
//! a second, so the cluster is shared across processes through
//! `<target>/tmp/api-postgres/`:
//!
//! - `cluster/data` is the data directory. It is kept between runs: a start
//!   is a `pg_ctl start` (a fraction of a second), not an initdb.
//! - `start.lock`: a test process holds it (flock, exclusive) while it finds
//!   the cluster running, or starts it.
//! - `users.lock`: every test process that uses the cluster holds a shared
//!   flock on it until the process exits. The kernel drops it however the
//!   process ends (a panic, a kill after nextest's timeout).
//! - The process that starts the cluster also starts its stopper (PID in
//!   `stopper.pid`): `flock -x users.lock pg_ctl stop`, which waits until no
//!   test process holds the shared lock, then stops the postmaster (pg_ctl
//!   signals the PID in `postmaster.pid`) while it holds the lock
//!   exclusively, so that no test process joins a cluster being stopped. The
//!   next test process to need it starts it again, drops the databases left
//!   by scenarios that failed, and starts a new stopper.
//!
//! So the cluster runs while tests use it, and stops by itself after the
//! last one: no step of `scripts/test.sh` starts or stops it, and one test
//! run by hand works the same way.

use std::fs::File;
use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::common::TestEnv;

/// The shared cluster's directory.
fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("api-postgres")
}

/// The newest installed server's `bin` directory (`MEDFORGE_PG_BIN` overrides).
fn pg_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("MEDFORGE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// Runs one scenario on PostgreSQL: in the shared cluster, each app with a
/// database of its own (`t_<pid>_<test>_<n>`), all of them dropped after.
pub async fn scenario<F: Future<Output = ()>>(run: impl FnOnce(TestEnv) -> F) {
    static NEXT_TEST: AtomicU32 = AtomicU32::new(0);
    let base_url = shared_base_url().await;
    let prefix = format!(
        "t_{}_{}",
        std::process::id(),
        NEXT_TEST.fetch_add(1, Ordering::Relaxed)
    );
    run(TestEnv::Postgres {
        base_url: base_url.clone(),
        prefix: prefix.clone(),
    })
    .await;
    drop_databases(&base_url, &format!("{prefix}\\_%")).await;
}

/// The admin URL of the shared cluster (append `/<database>`), joining it or
/// starting it. Fails the test when PostgreSQL is not installed.
pub async fn shared_base_url() -> String {
    static SHARED: OnceLock<Result<Joined, String>> = OnceLock::new();
    if let Some(joined) = SHARED.get() {
        return joined
            .clone()
            .unwrap_or_else(|why| panic!("{why}"))
            .base_url;
    }
    let joined = tokio::task::spawn_blocking(join_or_start)
        .await
        .expect("joining the shared PostgreSQL cluster");
    let joined = SHARED.get_or_init(|| joined).clone();
    let joined = joined.unwrap_or_else(|why| panic!("{why}"));
    if joined.started {
        println!("started the shared PostgreSQL cluster: {}", joined.base_url);
    }
    joined.base_url
}

#[derive(Clone, Debug)]
struct Joined {
    base_url: String,
    /// This process started the cluster (rather than finding it running).
    started: bool,
}

/// The shared lock every user of the cluster holds until it exits.
static USER: OnceLock<File> = OnceLock::new();

/// The cluster, as this process runs its programs.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    /// Run as root: initdb and pg_ctl run as the `postgres` user.
    as_postgres: bool,
}

impl Cluster {
    fn home(&self) -> PathBuf {
        self.dir.join("cluster")
    }

    fn data(&self) -> PathBuf {
        self.home().join("data")
    }

    fn log(&self) -> PathBuf {
        self.home().join("postgres.log")
    }

    /// A command for one of the server's programs, as the cluster's owner.
    fn program(&self, name: &str) -> Command {
        let exe = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.current_dir(self.home()).stdin(Stdio::null());
        cmd
    }

    fn run(&self, name: &str, args: &[&str]) -> Result<(), String> {
        let out = self
            .program(name)
            .args(args)
            .output()
            .map_err(|e| format!("{name}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        Err(format!(
            "{} {name} {args:?} failed ({}): {}{}\n{tail}",
            self.bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// Whether a postmaster runs on the data directory (`pg_ctl status`).
    fn running(&self) -> bool {
        self.data().join("PG_VERSION").exists()
            && self
                .program("pg_ctl")
                .args(["status", "-D"])
                .arg(self.data())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// The port of the running postmaster (line 4 of `postmaster.pid`).
    fn port(&self) -> Result<u16, String> {
        let pidfile = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .map_err(|e| format!("postmaster.pid: {e}"))?;
        pidfile
            .lines()
            .nth(3)
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("no port in postmaster.pid: {pidfile:?}"))
    }

    /// Makes the data directory when there is none.
    fn init(&self) -> Result<(), String> {
        if self.data().join("PG_VERSION").exists() {
            return Ok(());
        }
        let home = self.home();
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
        if self.as_postgres {
            // initdb refuses to run as root: the cluster belongs to the postgres user.
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&home)
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err(format!("chown postgres {} failed", home.display()));
            }
        }
        let data = self.data().display().to_string();
        self.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )
    }

    /// Starts the postmaster on a free port.
    fn start(&self) -> Result<(), String> {
        let _ = std::fs::remove_file(self.log());
        let mut last = String::new();
        // A free port can be taken by someone else before the postmaster
        // binds it: then another.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| e.to_string())?
                .port();
            let options = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories= \
                 -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
                 -c max_connections=300"
            );
            let data = self.data().display().to_string();
            let log = self.log().display().to_string();
            match self.run(
                "pg_ctl",
                &[
                    "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
                ],
            ) {
                Ok(()) => return Ok(()),
                Err(why) => last = why,
            }
        }
        Err(last)
    }

    fn stopper_pid_file(&self) -> PathBuf {
        self.dir.join("stopper.pid")
    }

    fn users_lock(&self) -> PathBuf {
        self.dir.join("users.lock")
    }

    /// Whether the stopper recorded in `stopper.pid` still waits.
    fn stopper_waits(&self) -> bool {
        let Ok(pid) = std::fs::read_to_string(self.stopper_pid_file()) else {
            return false;
        };
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        cmdline.starts_with("flock") && cmdline.contains(&*self.users_lock().to_string_lossy())
    }

    /// Starts the stopper: it waits for the users' lock exclusively, then
    /// stops the postmaster. In a process group of its own, so that a kill
    /// of a test's group does not take it along.
    fn start_stopper(&self) -> Result<(), String> {
        let mut cmd = Command::new("flock");
        cmd.arg("-x").arg(self.users_lock());
        if self.as_postgres {
            cmd.args(["runuser", "-u", "postgres", "--"]);
        }
        cmd.arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd.spawn().map_err(|e| {
            format!("flock: {e} (the shared PostgreSQL cluster needs util-linux's flock: apt-get install util-linux)")
        })?;
        std::fs::write(self.stopper_pid_file(), child.id().to_string())
            .map_err(|e| format!("stopper.pid: {e}"))
    }
}

fn open_lock(path: &Path) -> Result<File, String> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Joins the running cluster, or starts it (with its stopper).
fn join_or_start() -> Result<Joined, String> {
    let bin = pg_bin_dir().ok_or(
        "PostgreSQL server binaries not found under /usr/lib/postgresql: install them with `apt-get install postgresql`",
    )?;
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("id -u: {e}"))?;
    let cluster = Cluster {
        bin,
        dir: shared_dir(),
        as_postgres: String::from_utf8_lossy(&uid.stdout).trim() == "0",
    };
    std::fs::create_dir_all(&cluster.dir).map_err(|e| format!("{}: {e}", cluster.dir.display()))?;
    let start = open_lock(&cluster.dir.join("start.lock"))?;
    start.lock().map_err(|e| format!("start.lock: {e}"))?;
    // Waits while a stopper stops the cluster.
    let user = open_lock(&cluster.users_lock())?;
    user.lock_shared().map_err(|e| format!("users.lock: {e}"))?;
    let _ = USER.set(user);
    let started = !cluster.running();
    if started {
        cluster.init()?;
        cluster.start()?;
    }
    let port = cluster.port()?;
    let base_url = format!("postgres://postgres@127.0.0.1:{port}");
    if started {
        // Nobody else is in: what is there was left by scenarios that failed.
        tokio::runtime::Handle::current().block_on(drop_databases(&base_url, "t\\_%"));
    }
    if !cluster.stopper_waits() {
        cluster.start_stopper()?;
    }
    drop(start);
    Ok(Joined { base_url, started })
}

/// Drops every database whose name is `LIKE pattern`, closing its connections.
async fn drop_databases(base_url: &str, pattern: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&format!("{base_url}/postgres"))
        .await
        .expect("connect to the test cluster");
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE $1")
            .bind(pattern)
            .fetch_all(&mut conn)
            .await
            .expect("list databases");
    for (name,) in names {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await
        .expect("drop database");
    }
    let _ = conn.close().await;
}
