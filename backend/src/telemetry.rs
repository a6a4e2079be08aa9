//! Logging setup: `RUST_LOG` filters, default `info` (plus `natter_server=debug` if asked).

use tracing_subscriber::{EnvFilter, fmt};

/// Installs a global subscriber writing to stderr; later calls are no-ops.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}
