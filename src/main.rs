//! The `direct-agent` binary: sets up logging and hands over to [`direct_agent::cli`].
#![forbid(unsafe_code)]

/// Environment variable with the log filter (tracing `EnvFilter` syntax); default `info` for `serve`,
/// `warn` otherwise.
const LOG_ENV: &str = "DIRECT_AGENT_LOG";

/// Environment variable with the log format: `text` (default, human-readable) or `json` (one JSON
/// object per line: timestamp, level, fields with the message, span). An environment variable and
/// not a configuration key because logging starts before the configuration is read.
const LOG_FORMAT_ENV: &str = "DIRECT_AGENT_LOG_FORMAT";

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" | "" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

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
    let format = match std::env::var(LOG_FORMAT_ENV) {
        Ok(v) => match LogFormat::parse(&v) {
            Some(f) => f,
            None => {
                eprintln!("error: {LOG_FORMAT_ENV}={v:?} is not a log format; use json or text");
                std::process::exit(direct_agent::cli::EXIT_USAGE);
            }
        },
        Err(_) => LogFormat::Text,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        // One object a line; the event's fields (message included) at the top level.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    std::process::exit(direct_agent::cli::run());
}
