//! What `medforge up --quickstart` prints once it is ready.

use std::fmt::Write as _;
use std::path::Path;

use super::dir::{QuickstartDir, Report};
use crate::cli::QuickstartArgs;

/// How a person reaches MedForge now, printed when `medforge up` is ready.
pub fn summary(
    data_dir: &Path,
    args: &QuickstartArgs,
    domain: &str,
    admin: &str,
    report: &Report,
) -> String {
    let qs = QuickstartDir::new(data_dir);
    let port = if args.https_port == 443 {
        String::new()
    } else {
        format!(":{}", args.https_port)
    };
    let ca = qs.caddy_root_cert();
    let mut s = String::new();
    let _ = writeln!(s, "\nMedForge is up (quickstart). What was done:");
    for l in &report.lines {
        let _ = writeln!(s, "  - {l}");
    }
    let _ = writeln!(
        s,
        "\n  Open        https://{domain}{port}/api/v2/openapi.json   (the api; sessions at https://s-<slug>.external.{domain}{port}/)"
    );
    let _ = writeln!(
        s,
        "  TLS         Caddy's internal CA: {} (trust it in the browser, or curl --cacert it)",
        ca.display()
    );
    let _ = writeln!(s, "  Sign in     {admin}");
    let _ = writeln!(
        s,
        "              curl --cacert {} -c jar -H 'content-type: application/json' -d '{{\"email\":\"…\",\"password\":\"…\"}}' https://{domain}{port}/api/v2/auth/login",
        ca.display()
    );
    let _ = writeln!(
        s,
        "  A session   curl --cacert {} -b jar -H 'content-type: application/json' -d '{{\"gpus\":0}}' 'https://{domain}{port}/api/v2/external/sessions?wait=ready'",
        ca.display()
    );
    let _ = writeln!(
        s,
        "              CPU-only sessions (gpus: 0) are allowed because this is a quickstart; a production configuration refuses them."
    );
    let _ = writeln!(
        s,
        "  kubectl     kubectl --kubeconfig {} get sessions,gpunodes -A",
        data_dir.join("apiserver/kubeconfig").display()
    );
    let _ = writeln!(
        s,
        "  Names       *.localhost resolves to this machine in browsers and curl without DNS. From another\n              machine: ssh -L 8443:127.0.0.1:{} <this host>, then open https://{domain}:8443/ there\n              (or start with --caddy-bind :: and a --domain whose names, wildcard included, resolve to this host).",
        args.https_port
    );
    let _ = writeln!(
        s,
        "  Stop        medforge down --data-dir {}   (keeps the data; --purge removes it)",
        data_dir.display()
    );
    s
}
