//! The workspace steps: create (or clone) the dataset, mount it, give its
//! root to the workload's user.

use kube::ResourceExt;
use medforge_crds::{SessionReason, keys};

use super::pass::{Next, Pass};
use crate::agent::context::Context;
use crate::agent::error::Error;
use crate::agent::runtime::{Cluster, Containers, Refusal, WorkspaceError, Workspaces};
use crate::agent::spec;

/// `MountDataset`.
pub(super) async fn mount<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    dataset: &str,
) -> Result<Next, Error> {
    ctx.workspaces.mount(dataset).await?;
    Ok(Next::AGAIN)
}

impl<C: Containers, W: Workspaces, K: Cluster> Pass<'_, C, W, K> {
    /// `CreateDataset`: the dataset with its properties and quota, cloned from
    /// the restore snapshot when there is one.
    pub(super) async fn create_dataset(&self, dataset: &str) -> Result<Next, Error> {
        let Pass { ctx, s, .. } = *self;
        let quota = match spec::quota_bytes(s) {
            Ok(q) => q,
            Err(e) => return self.fail(e.reason, &e.message).await,
        };
        let mut properties = vec![
            (
                keys::dataset::SESSION_UID.to_string(),
                s.uid().unwrap_or_default(),
            ),
            (
                keys::dataset::SESSION.to_string(),
                format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()),
            ),
        ];
        if let Some(q) = quota {
            properties.push(("quota".to_string(), q.to_string()));
        }
        let made = match spec::restore_from(s) {
            Some(_) => match self.restore_source().await? {
                Ok(src) => ctx.workspaces.clone_from(&src, dataset, &properties).await,
                Err(e) => return self.fail(e.reason, &e.message).await,
            },
            None => ctx.workspaces.create(dataset, &properties).await,
        };
        match made {
            Ok(()) => Ok(Next::AGAIN),
            // Made by an earlier, interrupted pass: the next pass sees it.
            Err(WorkspaceError::Refused {
                why: Refusal::AlreadyExists,
                ..
            }) => Ok(Next::AGAIN),
            // Made, but not mounted (zfs-fuse hiccup): the next pass mounts it,
            // or this is tried again.
            Err(
                e @ WorkspaceError::Refused {
                    why: Refusal::CannotMount,
                    ..
                },
            ) => Err(e.into()),
            Err(WorkspaceError::NotFound { what }) => {
                let msg = format!("workspace.restoreFrom: {what} does not exist");
                self.fail(SessionReason::SnapshotNotFound, &msg).await
            }
            Err(WorkspaceError::Refused { stderr, .. }) => {
                let quota_note = quota
                    .map(|q| format!(" with quota {q} bytes"))
                    .unwrap_or_default();
                let msg =
                    format!("ZFS could not create the workspace {dataset}{quota_note}: {stderr}");
                self.fail(SessionReason::WorkspaceFailed, &msg).await
            }
            Err(e) => Err(e.into()),
        }
    }
    /// `ChownWorkspace`: the dataset's root to the workload's user.
    pub(super) async fn chown_workspace(&self, dataset: &str) -> Result<Next, Error> {
        let Pass { ctx, w, .. } = *self;
        let Some(path) = w.dataset.as_ref().and_then(|d| d.mountpoint.clone()) else {
            let msg = format!("dataset {dataset} has no mountpoint");
            return self.fail(SessionReason::WorkspaceFailed, &msg).await;
        };
        let cfg = &ctx.config;
        ctx.workspaces
            .chown(&path, cfg.container_uid, cfg.container_gid)
            .await?;
        Ok(Next::AGAIN)
    }
}
