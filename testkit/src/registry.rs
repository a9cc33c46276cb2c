//! A container registry for a test: Debian's `docker-registry` (the CNCF
//! Distribution registry) run inside the harness's network namespace on
//! 127.0.0.1, where the harness's dockerd reaches it (Docker treats a
//! loopback registry as insecure, so plain HTTP works), optionally with
//! htpasswd logins. The test owns the process: it stops it (SIGKILL, by PID)
//! to play a registry that is down, and starts it again on the same port and
//! storage. Its request log counts what was fetched.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    BuildImageOptions, BuilderVersion, PushImageOptions, RemoveImageOptions,
};
use futures::StreamExt;
use rand::Rng;

use crate::error::{HarnessError, Result};
use crate::harness::Harness;

const COMPONENT: &str = "registry";

/// A registry process in the harness's namespace.
pub struct Registry {
    nsenter: PathBuf,
    netns: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    login: Option<(String, String)>,
    harness: Harness,
}

impl Registry {
    /// Starts a registry (with this login required, when given) and waits
    /// until it answers.
    pub async fn start(harness: &Harness, login: Option<(&str, &str)>) -> Result<Registry> {
        let which = |name: &str| {
            crate::process::find_in_path(name, &crate::process::default_search_path()).ok_or_else(
                || {
                    HarnessError::other(
                        COMPONENT,
                        format!("{name} is not installed: run bash scripts/install-deps.sh (apt-get install docker-registry apache2-utils)"),
                    )
                },
            )
        };
        which("docker-registry")?;
        let dir = tempfile::Builder::new()
            .prefix("mf-registry-")
            .tempdir()
            .map_err(HarnessError::io(COMPONENT, "create its directory"))?;
        let login = login.map(|(u, p)| (u.to_string(), p.to_string()));
        if let Some((user, password)) = &login {
            let out = Command::new(which("htpasswd")?)
                .args(["-Bbn", user, password])
                .output()
                .map_err(HarnessError::io(COMPONENT, "run htpasswd"))?;
            if !out.status.success() {
                return Err(HarnessError::other(
                    COMPONENT,
                    format!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr)),
                ));
            }
            std::fs::write(dir.path().join("htpasswd"), &out.stdout)
                .map_err(HarnessError::io(COMPONENT, "write htpasswd"))?;
        }
        let port = rand::rng().random_range(20_000..60_000);
        let mut r = Registry {
            nsenter: harness.netns_command("true").get_program().into(),
            netns: harness.netns_path().to_path_buf(),
            dir,
            port,
            child: None,
            login,
            harness: harness.clone(),
        };
        r.write_config()?;
        r.start_again().await?;
        Ok(r)
    }

    /// `127.0.0.1:<port>`: the registry's host in image names.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    fn write_config(&self) -> Result<()> {
        let root = self.dir.path().join("storage");
        let auth = if self.login.is_some() {
            format!(
                "auth:\n  htpasswd:\n    realm: medforge-test\n    path: {}\n",
                self.dir.path().join("htpasswd").display()
            )
        } else {
            String::new()
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {}\n{auth}",
            root.display(),
            self.addr()
        );
        std::fs::write(self.dir.path().join("config.yml"), config)
            .map_err(HarnessError::io(COMPONENT, "write config.yml"))
    }

    /// Starts the process again (after [`Registry::kill`]) on the same port
    /// and storage, and waits until it answers.
    pub async fn start_again(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(HarnessError::io(COMPONENT, "open its log"))?;
        let err = log
            .try_clone()
            .map_err(HarnessError::io(COMPONENT, "open its log"))?;
        let child = Command::new(&self.nsenter)
            .arg(format!("--net={}", self.netns.display()))
            .arg("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(HarnessError::io(COMPONENT, "start docker-registry"))?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            // Any HTTP answer (401 with a login) means it serves.
            if self.harness.http_get(self.addr(), "/v2/").await.is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(HarnessError::other(
                    COMPONENT,
                    format!(
                        "docker-registry exited ({status}) on port {}:\n{}",
                        self.port,
                        crate::process::log_tail(&self.log_path(), 20)
                    ),
                ));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(HarnessError::other(
                    COMPONENT,
                    format!(
                        "docker-registry did not answer on {} within 30 s:\n{}",
                        self.addr(),
                        crate::process::log_tail(&self.log_path(), 20)
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs the registry (its PID, the one this helper started) and
    /// waits until it is gone: the registry is down.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Lines of its log that contain every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> usize {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// The credentials its login takes, as Docker wants them.
    pub fn credentials(&self) -> Option<DockerCredentials> {
        self.login.as_ref().map(|(u, p)| DockerCredentials {
            username: Some(u.clone()),
            password: Some(p.clone()),
            serveraddress: Some(self.host()),
            ..Default::default()
        })
    }

    /// A Docker config file (`{"auths": …}`) with `user`/`password` for
    /// this registry, written under the registry's directory.
    pub fn auth_file(&self, user: &str, password: &str) -> PathBuf {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let path = self
            .dir
            .path()
            .join(format!("auth-{}.json", rand::rng().random::<u32>()));
        let body = serde_json::json!({"auths": {self.host(): {"auth": auth}}});
        std::fs::write(&path, body.to_string()).expect("write the auth file");
        path
    }

    /// Builds an image of its own (the workload image plus `bytes` of
    /// random data, so no layer of it is on the node yet), pushes it as
    /// `<host>/<repository>`, removes it from dockerd again, and returns
    /// `<host>/<repository>@sha256:…`: what a Pack names and a node lacks.
    pub async fn push_unique(&self, repository: &str, bytes: usize) -> Result<String> {
        let tag = format!("t{}", rand::rng().random::<u32>());
        self.push_unique_as(repository, &tag, bytes).await
    }

    /// [`Registry::push_unique`] under a tag of the caller's (pushing again
    /// moves the tag to the new image).
    pub async fn push_unique_as(
        &self,
        repository: &str,
        tag: &str,
        bytes: usize,
    ) -> Result<String> {
        let docker = self.harness.docker();
        let base = self.harness.workload_image().await?;
        let local = format!("{}/{repository}", self.host());
        let tag = tag.to_string();
        build_with_noise(docker, &base, &format!("{local}:{tag}"), bytes).await?;
        let mut push = docker.push_image(
            &local,
            Some(PushImageOptions {
                tag: Some(tag.clone()),
                ..Default::default()
            }),
            self.credentials(),
        );
        while let Some(item) = push.next().await {
            let info = item
                .map_err(|e| HarnessError::other(COMPONENT, format!("push {local}:{tag}: {e}")))?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                return Err(HarnessError::other(
                    COMPONENT,
                    format!("push {local}:{tag}: {e}"),
                ));
            }
        }
        let inspect = docker
            .inspect_image(&format!("{local}:{tag}"))
            .await
            .map_err(|e| HarnessError::other(COMPONENT, format!("inspect {local}:{tag}: {e}")))?;
        let reference = inspect
            .repo_digests
            .unwrap_or_default()
            .into_iter()
            .find(|d| d.starts_with(&format!("{local}@")))
            .ok_or_else(|| {
                HarnessError::other(
                    COMPONENT,
                    format!("{local}:{tag} has no digest after its push"),
                )
            })?;
        remove_image(docker, inspect.id.as_deref().unwrap_or_default()).await?;
        Ok(reference)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes an image (and its tags) from dockerd; an absent one is fine.
pub async fn remove_image(docker: &Docker, image: &str) -> Result<()> {
    match docker
        .remove_image(
            image,
            Some(RemoveImageOptions {
                force: true,
                ..Default::default()
            }),
            None,
        )
        .await
    {
        Ok(_)
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(HarnessError::other(
            COMPONENT,
            format!("remove image {image}: {e}"),
        )),
    }
}

/// `FROM base` with a file of random bytes, tagged `tag` (legacy builder, no
/// network).
async fn build_with_noise(docker: &Docker, base: &str, tag: &str, bytes: usize) -> Result<()> {
    let mut noise = vec![0u8; bytes];
    rand::rng().fill(noise.as_mut_slice());
    let dockerfile = format!("FROM {base}\nCOPY noise /noise\n");
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data)
    };
    add("Dockerfile", dockerfile.as_bytes()).map_err(HarnessError::io(COMPONENT, "tar"))?;
    add("noise", &noise).map_err(HarnessError::io(COMPONENT, "tar"))?;
    let context = tar
        .into_inner()
        .map_err(HarnessError::io(COMPONENT, "tar"))?;
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(tag.to_string()),
        rm: true,
        forcerm: true,
        networkmode: Some("none".into()),
        labels: Some(HashMap::from([(
            "dev.medforge.test".to_string(),
            "pull".to_string(),
        )])),
        version: BuilderVersion::BuilderV1,
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut log = Vec::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| HarnessError::other(COMPONENT, format!("build {tag}: {e}")))?;
        if let Some(s) = info.stream {
            let _ = log.write_all(s.as_bytes());
        }
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            return Err(HarnessError::other(
                COMPONENT,
                format!("build {tag}: {e}\n{}", String::from_utf8_lossy(&log)),
            ));
        }
    }
    Ok(())
}
