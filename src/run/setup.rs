//! One-shot steps a command takes before its parts run: reaching the control
//! plane, the default Pack and its image, and the first admin.

use std::path::Path;

use anyhow::Context;

use crate::packs::PackImage;

/// A client of the control plane from `kubeconfig`, or from the usual places
/// (KUBECONFIG, ~/.kube/config, in-cluster) when none is given.
pub async fn client_from(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no kubeconfig given and none found (KUBECONFIG, ~/.kube/config, in-cluster)",
        )?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// Creates or updates the Pack `name` that runs `image` (`packs::pack_manifest`),
/// as a server-side apply by `medforge-up`: each start sets the fields it
/// manages and leaves others' alone. The control plane validates the image
/// reference, so a bad one fails the start with a clear message.
pub async fn apply_pack(
    client: &kube::Client,
    name: &str,
    image: &PackImage,
) -> anyhow::Result<()> {
    use kube::api::{Patch, PatchParams};
    let pack = crate::packs::pack_manifest(name, image)?;
    let packs: kube::Api<medforge_crds::Pack> = kube::Api::all(client.clone());
    packs
        .patch(
            name,
            &PatchParams::apply("medforge-up").force(),
            &Patch::Apply(&pack),
        )
        .await
        .with_context(|| format!("applying the Pack {name} with image {}", image.reference))?;
    tracing::info!(pack = name, image = %image.reference, port = %pack["spec"]["port"], "Pack applied");
    Ok(())
}

/// The image `medforge up` makes the default Pack (`--default-pack`) from:
/// `--default-pack-image` (with its labels when Docker has it), else, for a
/// Pack other than `default`, the newest image in Docker built for it
/// (refused, saying how to build one, when there is none). `None`: the Pack
/// `default` without an image, left as it is.
pub async fn default_pack_image(
    name: &str,
    given: Option<&str>,
    docker_socket: &Path,
) -> anyhow::Result<Option<PackImage>> {
    use crate::packs::{DEFAULT_PACK, build_command, docker_at, find_built, inspect};
    if let Some(reference) = given {
        return Ok(Some(match docker_at(docker_socket) {
            Ok(docker) => inspect(&docker, reference).await,
            Err(_) => PackImage {
                reference: reference.to_string(),
                ..PackImage::default()
            },
        }));
    }
    if name == DEFAULT_PACK {
        return Ok(None);
    }
    let docker = docker_at(docker_socket)?;
    let found = find_built(&docker, name).await.with_context(|| {
        format!(
            "looking in Docker at {} for the Pack {name}'s image (is Docker running?)",
            docker_socket.display()
        )
    })?;
    found.map(Some).ok_or_else(|| {
        anyhow::anyhow!(
            "--default-pack {name}: Docker at {} has no image labelled {}={name}: build it with `{}` \
             (or pass --default-pack-image, or --quickstart to build it)",
            docker_socket.display(),
            crate::packs::LABEL_PACK,
            build_command(name)
        )
    })
}

/// Opens the api's database and brings its schema up to date.
pub async fn api_db(
    database_url: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<medforge_api::Db> {
    let db = medforge_api::Db::connect(database_url, data_dir)
        .await
        .context("opening the api database")?;
    db.migrate().await.context("migrating the api database")?;
    Ok(db)
}

/// Ensures an admin exists. With none configured and none in the database,
/// creates `admin@<domain>` with a random password, written to
/// `<data_dir>/admin-password` (mode 0600); the log names the file, never the
/// password. Returns how to sign in as the first admin.
///
/// Safe when several replicas start at once on one empty database: one
/// creates the admin; the others find it created and leave it, and its
/// password file, as they are.
pub async fn first_admin(
    config: &medforge_api::ApiConfig,
    data_dir: &Path,
) -> anyhow::Result<String> {
    if let Some(b) = &config.bootstrap_admin {
        return Ok(format!(
            "{} with the password you gave in MEDFORGE_ADMIN_PASSWORD",
            b.email
        )); // Api::start ensures it.
    }
    let db = api_db(config.database_url.as_deref(), &config.data_dir).await?;
    let email = format!("admin@{}", config.domain);
    let file = data_dir.join("admin-password");
    let existing = |file: &Path| {
        if file.exists() {
            format!(
                "{email}, password in {} (unless changed since)",
                file.display()
            )
        } else {
            "an existing admin (`medforge create-admin` makes another)".to_string()
        }
    };
    if medforge_api::users::count_admins(&db).await? > 0 {
        return Ok(existing(&file));
    }
    let password = random_password();
    // Written under a name of this process's own, and moved into place only
    // once the account has this password: a replica that loses the race to
    // create the admin leaves the winner's file as it is.
    let pending = data_dir.join(format!(
        "admin-password.{}-{:016x}.new",
        std::process::id(),
        rand::random::<u64>()
    ));
    write_secret(&pending, &password)?;
    // A fresh password that only the file holds: an account someone signed up
    // as admin@<domain> before the first start gets it and loses its logins.
    let ensured = medforge_api::ensure_admin_outcome(
        &db,
        config.auth.password_hashing,
        &email,
        Some(&password),
        medforge_api::ExistingAccount::ResetUnlessAdmin,
    )
    .await;
    let outcome = match ensured {
        Ok((_, outcome)) => outcome,
        Err(err) => {
            let _ = std::fs::remove_file(&pending);
            return Err(anyhow::Error::new(err).context("creating the first admin"));
        }
    };
    if outcome == medforge_api::AdminOutcome::LeftAsItIs {
        let _ = std::fs::remove_file(&pending);
        tracing::info!(%email, "the first admin was created meanwhile by another process; left as it is");
        return Ok(existing(&file));
    }
    std::fs::rename(&pending, &file).with_context(|| {
        format!(
            "moving the first admin's password from {} to {}",
            pending.display(),
            file.display()
        )
    })?;
    tracing::info!(%email, password_file = %file.display(), "created the first admin; the password is in the file (mode 0600)");
    Ok(format!("{email}, password in {}", file.display()))
}

/// Writes a secret to a new file only its owner can read.
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{secret}").with_context(|| format!("writing {}", path.display()))
}

/// 20 characters from an alphabet without look-alikes (no 0/O, 1/l/I).
fn random_password() -> String {
    use rand::Rng;
    use rand::distr::slice::Choose;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let Ok(letters) = Choose::new(ALPHABET) else {
        unreachable!("the alphabet is not empty")
    };
    rand::rng()
        .sample_iter(letters)
        .take(20)
        .map(|&b| char::from(b))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{first_admin, random_password};

    /// Replicas starting at once on one empty database (and, here, one data
    /// directory): every one starts, one admin is made, and the password
    /// file is the winner's, never a loser's left behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_starting_at_once_make_one_first_admin() {
        const REPLICAS: usize = 6;
        let dir = tempfile::tempdir().unwrap();
        let mut config = medforge_api::ApiConfig::new("example.org", dir.path());
        config.auth.password_hashing = medforge_api::PasswordHashing::INSECURE_FAST;
        // The schema first, as one replica would have it: the race is the admin's.
        super::api_db(None, dir.path()).await.unwrap();
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(REPLICAS));
        let replicas: Vec<_> = (0..REPLICAS)
            .map(|_| {
                let config = config.clone();
                let start = start.clone();
                tokio::spawn(async move {
                    start.wait().await;
                    first_admin(&config, &config.data_dir).await
                })
            })
            .collect();
        for replica in replicas {
            let said = replica.await.unwrap().expect("every replica starts");
            assert!(said.starts_with("admin@example.org"), "{said}");
        }
        let db = super::api_db(None, dir.path()).await.unwrap();
        assert_eq!(medforge_api::users::count_admins(&db).await.unwrap(), 1);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("admin-password"))
            .collect();
        assert_eq!(names, ["admin-password"], "no pending password files left");
        let password = std::fs::read_to_string(dir.path().join("admin-password")).unwrap();
        let stored = medforge_api::users::password_hash_of(&db, "admin@example.org")
            .await
            .unwrap();
        let slot = medforge_api::hash_slots::HashSlots::new(1).take().unwrap();
        assert!(
            medforge_api::auth::verify_password(
                config.auth.password_hashing,
                password.trim().to_owned(),
                stored,
                slot
            )
            .await
            .unwrap(),
            "the password file holds the admin's password"
        );
    }

    #[test]
    fn a_random_password_has_20_characters_without_look_alikes() {
        let p = random_password();
        assert_eq!(p.chars().count(), 20);
        assert!(
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() && !"01OIl".contains(c)),
            "{p}"
        );
        assert_ne!(p, random_password());
    }
}
