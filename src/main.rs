//! The `direct-agent` binary: sets up logging and hands over to [`direct_agent::cli`].
#![forbid(unsafe_code)]

/// Environment variable with the log filter (tracing `EnvFilter` syntax); default `info` for `serve`,
/// `warn` otherwise.
const LOG_ENV: &str = "DIRECT_AGENT_LOG";

fn main() {
    // The demo writes its agents' logs to its own folder.
    if std::env::args().nth(1).as_deref() == Some("demo") {
        std::process::exit(direct_agent::cli::run());
    }
    // A running agent logs its state changes (info); one-shot commands only warnings.
    let default = if std::env::args().any(|a| a == "serve") {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    std::process::exit(direct_agent::cli::run());
}
