//! A PostgreSQL cluster of a test's own: `initdb` into the test's directory
//! and `pg_ctl start` on a free loopback port (as the `postgres` user when
//! the test runs as root, since initdb refuses root), stopped by `pg_ctl
//! stop` when dropped, also when the test fails. The api suite's shared
//! cluster (`api/tests/api/postgres.rs`) is for many short scenarios in
//! many processes; a test that runs several `medforge api` processes on one
//! database for minutes owns its cluster instead. Included with `#[path]`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct PrivatePostgres {
    bin: PathBuf,
    home: PathBuf,
    as_postgres: bool,
    pub port: u16,
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

impl PrivatePostgres {
    /// Makes and starts a cluster under `home` (which must not exist yet).
    /// Panics naming the install command when PostgreSQL is missing.
    pub fn start(home: &Path) -> PrivatePostgres {
        let bin = pg_bin_dir().expect(
            "PostgreSQL server binaries not found under /usr/lib/postgresql: install them with `apt-get install postgresql`",
        );
        let as_postgres = nix::unistd::Uid::effective().is_root();
        std::fs::create_dir_all(home).unwrap();
        if as_postgres {
            let ok = Command::new("chown")
                .arg("postgres:postgres")
                .arg(home)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown postgres {}", home.display());
        }
        let mut pg = PrivatePostgres {
            bin,
            home: home.to_path_buf(),
            as_postgres,
            port: 0,
        };
        let data = pg.data();
        pg.run(&[
            "initdb",
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        pg.port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories= \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c max_connections=200",
            pg.port
        );
        let log = home.join("postgres.log");
        pg.run(&[
            "pg_ctl",
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
            "-w",
            "-t",
            "60",
            "start",
        ]);
        pg
    }

    fn data(&self) -> PathBuf {
        self.home.join("data")
    }

    /// The database every client shares (`postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn command(&self, args: &[&str]) -> Command {
        let exe = self.bin.join(args[0]);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(&args[1..])
            .current_dir(&self.home)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) {
        let out = self.command(args).output().unwrap();
        let log = std::fs::read_to_string(self.home.join("postgres.log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}\n{}\n{log}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let out = self
            .command(&[
                "pg_ctl",
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "-t",
                "60",
                "stop",
            ])
            .output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("stopping the private PostgreSQL cluster: {out:?}");
        }
    }
}
