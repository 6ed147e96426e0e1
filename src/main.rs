//! The `direct-agent` binary: sets up logging and hands over to [`direct_agent::cli`].
#![forbid(unsafe_code)]

/// Environment variable with the log filter (tracing `EnvFilter` syntax); default `warn`.
const LOG_ENV: &str = "DIRECT_AGENT_LOG";

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    std::process::exit(direct_agent::cli::run());
}
