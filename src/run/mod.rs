//! The commands, composed from the crates: what each one starts, in which
//! order, and how it stops. The long-running parts and their shutdown are in
//! [`parts`]; the one-shot steps (client, default Pack, first admin) in
//! [`setup`].

mod identities;
mod parts;
mod setup;

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};

use crate::cli::{ApiArgs, ApiserverArgs, CreateAdminArgs, DownArgs, OperatorArgs, UpArgs};
use crate::config::identity;
use crate::quickstart;
use parts::{Parts, serve_api, shutdown_token};
use setup::{api_db, apply_pack, client_from, default_pack_image, first_admin};

/// `medforge up`: everything in one process.
pub async fn up(mut args: UpArgs) -> anyhow::Result<()> {
    // Refused before anything starts.
    let policy = args.policy.policy()?;
    args.api.signup()?;
    args.api.default_pack()?;
    private_dir(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let mut quickstart = None;
    if args.quickstart.quickstart {
        quickstart = Some(prepare_quickstart(&mut args).await?);
    }
    // Found (or refused) before anything starts.
    let pack_image = default_pack_image(
        &args.api.default_pack,
        args.default_pack_image.as_deref(),
        &args.agent.docker_socket,
    )
    .await?;
    let server = start_control_plane(&args).await?;
    let client = server.client().context("connecting to the control plane")?;
    medforge_operator::leader::ensure_namespace(&client, &args.api.namespace)
        .await
        .context("creating the sessions namespace")?;
    if let Some(image) = &pack_image {
        apply_pack(&client, &args.api.default_pack, image).await?;
    }
    // Each part runs as the chart's ServiceAccount for it (decision 0021).
    identities::apply(&client, &args.api.namespace, args.agent.destroy_workspaces).await?;

    let mut parts = Parts::new();
    let clients = identities::clients(
        &server,
        &args.data_dir.join("apiserver").join("identities"),
        parts.shutdown(),
    )?;
    parts.start_scheduler(clients.scheduler, args.scheduler.config(&identity()));
    if !args.agent.no_agent {
        let mut agent_config = args.agent.config(policy)?;
        agent_config.storage_note = quickstart.as_ref().and_then(|q| q.storage_note.clone());
        parts.start_agent(clients.agent, agent_config);
    }

    let api_config = args.api.config(&args.data_dir.join("api"), policy)?;
    let admin = first_admin(&api_config, &args.data_dir).await?;
    match &mut quickstart {
        Some(prepared) => {
            let domain = &api_config.domain;
            let api = args.api_listen.to_string();
            quickstart::ensure_caddy(
                &args.data_dir,
                &args.quickstart,
                domain,
                &api,
                &mut prepared.report,
            )
            .await?;
            let summary = quickstart::summary(
                &args.data_dir,
                &args.quickstart,
                domain,
                &admin,
                &prepared.report,
            );
            println!("{summary}");
        }
        None => tracing::info!(%admin, "first admin"),
    }
    let result = serve_api(
        api_config,
        clients.api,
        args.api_listen,
        "--api-listen",
        parts.shutdown(),
    )
    .await;

    // SIGTERM (or the api failing): the scheduler and the node agent finish
    // what they have in flight, then the control plane closes. Containers
    // keep running and are adopted at the next start.
    parts.stop().await;
    server.shutdown().await;
    tracing::info!("stopped; running sessions keep running and are adopted at the next start");
    result
}

/// `up --quickstart`: sets up what the host lacks, records `medforge up`'s
/// PID for `medforge down`, and points the agent, the default Pack and the
/// scheduler at what it set up.
async fn prepare_quickstart(args: &mut UpArgs) -> anyhow::Result<quickstart::Prepared> {
    let prepared = quickstart::prepare(
        &args.data_dir,
        &args.quickstart,
        &args.agent.docker_socket,
        &args.agent.zfs_binary,
        &args.agent.zfs_root,
        &args.api.default_pack,
        args.default_pack_image.as_deref(),
    )
    .await?;
    let pidfile = quickstart::QuickstartDir::new(&args.data_dir).pidfile("medforge");
    std::fs::write(pidfile, format!("{}\n", std::process::id()))
        .context("recording medforge up's PID")?;
    args.agent.zfs_root = prepared.zfs_root.clone();
    args.default_pack_image = prepared.pack_image.clone();
    args.scheduler.allow_cpu_only = true;
    Ok(prepared)
}

/// The embedded control plane of `medforge up`, under `<data-dir>/apiserver`.
async fn start_control_plane(args: &UpArgs) -> anyhow::Result<medforge_apiserver::RunningServer> {
    let dir = args.data_dir.join("apiserver");
    let mut config = medforge_apiserver::Config::new(&dir).with_listen(args.apiserver_listen);
    config.event_ttl = args.event_ttl;
    config.audit_log = args.audit_log_path.clone();
    let server = medforge_apiserver::start(config).await.with_context(|| {
        format!(
            "starting the control plane in {} (if its port is in use, pick another with --apiserver-listen)",
            dir.display()
        )
    })?;
    tracing::info!(
        url = server.url(),
        kubeconfig = %server.kubeconfig_path().display(),
        "control plane ready; use it with: kubectl --kubeconfig {}",
        server.kubeconfig_path().display()
    );
    Ok(server)
}

/// `medforge operator`: the scheduler and/or the node agent, until SIGTERM.
pub async fn operator(args: OperatorArgs) -> anyhow::Result<()> {
    if args.no_scheduler && args.agent.no_agent {
        bail!("nothing to run: both --no-scheduler and --no-agent were given");
    }
    let policy = args.policy.policy()?;
    let client = client_from(args.control_plane.kubeconfig.as_deref()).await?;
    let mut parts = Parts::new();
    if !args.no_scheduler {
        parts.start_scheduler(client.clone(), args.scheduler.config(&identity()));
    }
    if !args.agent.no_agent {
        parts.start_agent(client, args.agent.config(policy)?);
    }
    parts.shutdown().cancelled().await;
    parts.stop().await;
    Ok(())
}

/// `medforge api`: the api alone, against a control plane, until SIGTERM.
pub async fn api(args: ApiArgs) -> anyhow::Result<()> {
    let policy = args.policy.policy()?;
    let config = args.api.config(&args.data_dir, policy)?;
    let client = client_from(args.control_plane.kubeconfig.as_deref()).await?;
    let admin = first_admin(&config, &args.data_dir).await?;
    tracing::info!(%admin, "first admin");
    serve_api(config, client, args.listen, "--listen", shutdown_token()).await
}

/// `medforge apiserver`: the embedded control plane alone, until SIGTERM.
pub async fn apiserver(args: ApiserverArgs) -> anyhow::Result<()> {
    let mut config = medforge_apiserver::Config::new(&args.data_dir).with_listen(args.listen);
    config.event_ttl = args.event_ttl;
    config.audit_log = args.audit_log_path.clone();
    let server = medforge_apiserver::start(config)
        .await
        .with_context(|| format!("starting the control plane in {}", args.data_dir.display()))?;
    tracing::info!(
        url = server.url(),
        kubeconfig = %server.kubeconfig_path().display(),
        "control plane ready"
    );
    medforge_api::shutdown_signal().await;
    server.shutdown().await;
    Ok(())
}

/// `medforge create-admin`: reads the password from standard input.
pub async fn create_admin(args: CreateAdminArgs) -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.len() < 8 {
        bail!("the password (read from standard input) must have at least 8 characters");
    }
    let mut config = medforge_api::ApiConfig::new("localhost", &args.data_dir);
    config.database_url = args.database_url;
    let db = api_db(config.database_url.as_deref(), &config.data_dir).await?;
    let existing = if args.reset_password {
        medforge_api::ExistingAccount::ResetPassword
    } else {
        medforge_api::ExistingAccount::Refuse
    };
    let user = medforge_api::ensure_admin(
        &db,
        config.auth.password_hashing,
        &args.email,
        Some(password),
        existing,
    )
    .await
    .context("creating the admin")?;
    if args.reset_password {
        println!(
            "admin {} ready (id {}); its password is the one given and its earlier logins have ended",
            args.email, user.id
        );
    } else {
        println!(
            "admin {} ready (id {}); an admin that existed already keeps its password (--reset-password sets it)",
            args.email, user.id
        );
    }
    Ok(())
}

/// `medforge down`: stops, by PID, what `medforge up --quickstart` started.
pub async fn down(args: DownArgs) -> anyhow::Result<()> {
    let out = quickstart::down(&args.data_dir, args.purge).await?;
    print!("{out}");
    Ok(())
}

/// `medforge crds`: every CRD as YAML on standard output.
pub fn print_crds() -> anyhow::Result<()> {
    let yaml = medforge_crds::all_crds_yaml()?;
    std::io::stdout()
        .lock()
        .write_all(yaml.as_bytes())
        .context("writing to standard output")
}

/// `medforge rbac-report`: refused requests and unused grants per
/// ServiceAccount; an error (exit 1) when there are any.
pub fn rbac_report(audit_log: &Path, rbac: &[std::path::PathBuf]) -> anyhow::Result<()> {
    let mut objects: Vec<serde_json::Value> = Vec::new();
    for file in rbac {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("{}: not YAML", file.display()))?;
        objects.extend(docs.into_iter().filter(|d| !d.is_null()));
    }
    let audit = std::fs::read_to_string(audit_log)
        .with_context(|| format!("reading {}", audit_log.display()))?;
    let report = medforge_apiserver::rbac_report::report(&objects, &audit)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    print!("{}", report.render());
    if report.accounts.is_empty() {
        bail!("the RBAC objects bind no ServiceAccount");
    }
    if !report.is_clean() {
        bail!("refused requests or unused grants (above)");
    }
    Ok(())
}

/// `medforge crds --write DIR`: one `<plural>.<group>.yaml` file per CRD.
pub fn write_crds(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for crd in medforge_crds::all_crds() {
        let path = dir.join(medforge_crds::crd_file_name(&crd));
        let yaml = medforge_crds::crd_yaml(&crd)?;
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Creates `dir` with mode 0700 (and its missing parents), or narrows an
/// existing one to 0700: it holds the databases, keys and tokens.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
