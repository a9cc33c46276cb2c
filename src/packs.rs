//! The Pack `medforge up` creates at start (`--default-pack`), and the images
//! built from a recipe under `packs/` (`bash packs/jupyter/build.sh`). Such
//! an image names its Pack, port, display name and description in labels,
//! so `medforge up --default-pack jupyter` finds it in Docker and makes the
//! Pack from it; the labels are read from any image given by
//! `--default-pack-image` too. Deciding the Pack from an image's labels is
//! pure ([`pack_manifest`]); reading Docker is [`find_built`] and [`inspect`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use bollard::Docker;
use serde_json::{Value, json};

/// The Pack an image was built for (`jupyter`).
pub const LABEL_PACK: &str = "dev.medforge.pack";
/// The port its server listens on.
pub const LABEL_PORT: &str = "dev.medforge.pack.port";
/// The Pack's display name.
pub const LABEL_DISPLAY_NAME: &str = "dev.medforge.pack.display-name";
/// The Pack's description.
pub const LABEL_DESCRIPTION: &str = "dev.medforge.pack.description";
/// The Pack a create without one gets when nothing else is configured.
pub const DEFAULT_PACK: &str = "default";
/// The port of the Pack `default` when its image names none (the test
/// workload listens there).
pub const DEFAULT_PORT: u16 = 8080;

/// An image for a Pack: its pinned reference and its labels (empty when
/// Docker does not have the image).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackImage {
    pub reference: String,
    pub labels: HashMap<String, String>,
}

/// The Pack `name` that runs `image`, as `medforge up` applies it: the image,
/// the port from the image's label (8080 for the Pack `default` when there
/// is none; another Pack without one is refused, since a wrong port makes
/// sessions that never become Ready), and the display name and description
/// from the labels when the image has them.
pub fn pack_manifest(name: &str, image: &PackImage) -> Result<Value> {
    let port = match image.labels.get(LABEL_PORT) {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            anyhow!(
                "image {}: label {LABEL_PORT}={p:?} is not a port",
                image.reference
            )
        })?,
        None if name == DEFAULT_PACK => DEFAULT_PORT,
        None => bail!(
            "image {} names no port (label {LABEL_PORT}), so medforge up cannot make the Pack {name} from it: \
             load the image into this host's Docker first (its labels are read there), \
             or create the Pack yourself (docs/packs.md)",
            image.reference
        ),
    };
    let mut spec = json!({"image": image.reference, "port": port});
    for (label, field) in [
        (LABEL_DISPLAY_NAME, "displayName"),
        (LABEL_DESCRIPTION, "description"),
    ] {
        if let Some(v) = image.labels.get(label).filter(|v| !v.is_empty()) {
            spec[field] = json!(v);
        }
    }
    Ok(json!({
        "apiVersion": medforge_crds::API_VERSION,
        "kind": "Pack",
        "metadata": {"name": name},
        "spec": spec,
    }))
}

/// The image of the newest of several built for one Pack: `(created, id)`.
fn newest(images: impl IntoIterator<Item = (i64, String)>) -> Option<String> {
    images.into_iter().max().map(|(_, id)| id)
}

/// A client of the Docker at `socket`.
pub fn docker_at(socket: &Path) -> Result<Docker> {
    Docker::connect_with_unix(
        &socket.display().to_string(),
        120,
        &medforge_operator::agent::docker::API_VERSION,
    )
    .with_context(|| format!("connecting to Docker at {}", socket.display()))
}

/// The newest image in `docker` labelled as built for the Pack `name`,
/// by its id (`sha256:…`, pinned), with its labels.
pub async fn find_built(docker: &Docker, name: &str) -> Result<Option<PackImage>> {
    use bollard::query_parameters::ListImagesOptionsBuilder;
    let filters = HashMap::from([("label", vec![format!("{LABEL_PACK}={name}")])]);
    let images = docker
        .list_images(Some(
            ListImagesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .with_context(|| format!("listing the images labelled {LABEL_PACK}={name}"))?;
    let Some(id) = newest(images.iter().map(|i| (i.created, i.id.clone()))) else {
        return Ok(None);
    };
    let labels = images
        .into_iter()
        .find(|i| i.id == id)
        .map(|i| i.labels)
        .unwrap_or_default();
    Ok(Some(PackImage {
        reference: id,
        labels,
    }))
}

/// `reference` with the labels Docker has for it; none when Docker does not
/// have the image (a registry's image not loaded yet) or does not answer.
pub async fn inspect(docker: &Docker, reference: &str) -> PackImage {
    let labels = match docker.inspect_image(reference).await {
        Ok(info) => info.config.and_then(|c| c.labels).unwrap_or_default(),
        Err(e) => {
            tracing::debug!(%reference, "image not inspected: {e}");
            HashMap::new()
        }
    };
    PackImage {
        reference: reference.to_string(),
        labels,
    }
}

/// The command that builds the Pack `name`'s image from its recipe.
pub fn build_command(name: &str) -> String {
    format!("bash packs/{name}/build.sh")
}

/// The build script of the Pack `name`'s recipe: `packs/<name>/build.sh`
/// in the current directory or in the checkout this binary was built in
/// (`target/<profile>/medforge`); none when neither has it.
pub fn recipe_script(name: &str) -> Option<PathBuf> {
    if !is_pack_name(name) {
        return None;
    }
    let relative = Path::new("packs").join(name).join("build.sh");
    let checkout = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()));
    [Some(PathBuf::from(".")), checkout]
        .into_iter()
        .flatten()
        .map(|root| root.join(&relative))
        .find(|p| p.is_file())
}

/// Whether `name` can name a Pack in a create (1–63 of `[a-z0-9-]`), as the
/// api's catalogue requires.
pub fn is_pack_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(labels: &[(&str, &str)]) -> PackImage {
        PackImage {
            reference: "sha256:abc".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_built_image_gives_its_pack_the_port_and_names_of_its_labels() {
        let m = pack_manifest(
            "jupyter",
            &image(&[
                (LABEL_PACK, "jupyter"),
                (LABEL_PORT, "8888"),
                (LABEL_DISPLAY_NAME, "JupyterLab"),
                (LABEL_DESCRIPTION, "notebooks"),
            ]),
        )
        .unwrap();
        assert_eq!(m["metadata"]["name"], "jupyter");
        assert_eq!(
            m["spec"],
            json!({"image": "sha256:abc", "port": 8888, "displayName": "JupyterLab", "description": "notebooks"})
        );
    }

    #[test]
    fn the_default_pack_without_labels_listens_on_8080() {
        let m = pack_manifest("default", &image(&[])).unwrap();
        assert_eq!(m["spec"], json!({"image": "sha256:abc", "port": 8080}));
    }

    #[test]
    fn another_pack_without_a_port_label_is_refused_with_what_to_do() {
        let e = pack_manifest("jupyter", &image(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(LABEL_PORT) && e.contains("docs/packs.md"), "{e}");
        let e = pack_manifest("jupyter", &image(&[(LABEL_PORT, "http")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a port"), "{e}");
    }

    #[test]
    fn the_newest_build_wins() {
        assert_eq!(
            newest([(10, "sha256:old".into()), (20, "sha256:new".into())]),
            Some("sha256:new".to_string())
        );
        assert_eq!(newest([]), None);
    }

    #[test]
    fn pack_names_are_what_a_create_can_name() {
        assert!(is_pack_name("jupyter"));
        assert!(is_pack_name("code-server-2"));
        for bad in ["", "Jupyter", "../x", "a/b", &"a".repeat(64)] {
            assert!(!is_pack_name(bad), "{bad:?}");
        }
        assert_eq!(recipe_script("../etc"), None);
    }
}
