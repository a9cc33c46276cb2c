//! Log output: readable text by default, JSON when asked.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` overrides the default level
/// (`info`, with noisy dependencies at `warn`).
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "info,hyper=warn,kube_client=warn,kube_runtime=warn,sqlx=warn,bollard=warn,rustls=warn",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.compact().init();
    }
}
