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
    if medforge_api::users::count_admins(&db).await? > 0 {
        return Ok(if file.exists() {
            format!(
                "{email}, password in {} (unless changed since)",
                file.display()
            )
        } else {
            "an existing admin (`medforge create-admin` makes another)".to_string()
        });
    }
    let password = random_password();
    write_secret(&file, &password)?;
    // A fresh password that only the file holds: an account someone signed up
    // as admin@<domain> before the first start gets it and loses its logins.
    medforge_api::ensure_admin(
        &db,
        config.auth.password_hashing,
        &email,
        Some(&password),
        medforge_api::ExistingAccount::ResetPassword,
    )
    .await
    .context("creating the first admin")?;
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
    use super::random_password;

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
