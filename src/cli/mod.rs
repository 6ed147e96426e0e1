//! The `direct-agent` command line. Exit codes are a contract (README, "Exit codes"):
//! 0 ok; 1 an operation failed (e.g. a bundle refresh, or a message failed `hl7 review`);
//! 2 usage or configuration; 3 cannot decrypt; 4 signature invalid or missing; 5 signer not
//! trusted; 6 malformed message.
//!
//! `--config FILE` is global: every command that reads the configuration resolves it with
//! [`Config::locate`] (the flag, else `DIRECT_AGENT_CONFIG`, else the default path).

mod anchors;
pub(crate) mod bundles;
mod certs;
mod config_check;
mod hl7;
mod message;
mod ping;
mod progress;
mod queue;
mod review;
mod serve;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::Config;

/// Exit code for usage and configuration errors.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for an operation that was attempted and failed (a refresh that could not fetch,
/// parse or verify its bundle).
pub const EXIT_FAILED: i32 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "direct-agent",
    version,
    about = "Direct Secure Messaging agent for HL7 v2 payloads"
)]
struct Cli {
    /// Configuration file (default: $DIRECT_AGENT_CONFIG, else config/direct-agent.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build and open Direct messages (S/MIME signed and encrypted).
    Message {
        #[command(subcommand)]
        command: message::MessageCommand,
    },
    /// Check the configuration file and everything it names (keys, certificates, anchors, ports,
    /// environment variables, sinks); every problem with its key path.
    Config {
        #[command(subcommand)]
        command: config_check::ConfigCommand,
    },
    /// Check certificates the way the agent does.
    Certs {
        #[command(subcommand)]
        command: certs::CertsCommand,
    },
    /// Manage the trust anchors of the configured domains.
    Anchors {
        #[command(subcommand)]
        command: anchors::AnchorsCommand,
    },
    /// Manage trust bundle subscriptions and refresh them.
    Bundles {
        #[command(subcommand)]
        command: bundles::BundlesCommand,
    },
    /// Work with HL7 v2 files: validate them against a profile; review a partner's test messages.
    Hl7 {
        #[command(subcommand)]
        command: hl7::Hl7Command,
    },
    /// Run the agent: inbound SMTP, IMAP polling, inbound processing and outbound delivery.
    Serve,
    /// Seal a payload with the configured keys and queue it for delivery (prints the Message-ID).
    Send(serve::SendArgs),
    /// Prove the route to a partner works: ping, processed MDN, pong (needs `serve` running).
    Ping(ping::PingArgs),
    /// Delivery tracking of sent messages: queued, sent, processed, dispatched, failed, timed out.
    Status {
        /// One message (its Message-ID, with angle brackets); default: the newest 100.
        message_id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Two agents exchanging a real Direct message on loopback: ping pong, a VXU with MDNs and an
    /// ACK, an untrusted message quarantined, the onboarding review. No configuration needed.
    Demo {
        /// Keep the demo's folder (PKI, configurations, stores, sinks, logs) at DIR (new or empty).
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
    /// Inspect and act on the outbound queue.
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// Inspect and release quarantined inbound messages.
    Quarantine {
        #[command(subcommand)]
        command: queue::QuarantineCommand,
    },
    /// List and re-enable credentials disabled after a server refused them.
    Credentials {
        #[command(subcommand)]
        command: queue::CredentialsCommand,
    },
}

/// Run the command line; returns the process exit code.
pub fn run() -> i32 {
    run_from(std::env::args_os())
}

/// Run the command line given as `args` (the first is the program name); returns the exit code.
/// The demo runs the real commands through this.
pub fn run_from<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let config = cli.config.as_deref();
    match cli.command {
        Command::Message { command } => message::run(command, config),
        Command::Config { command } => config_check::run(command, config),
        Command::Certs { command } => certs::run(command, config),
        Command::Anchors { command } => anchors::run(command, config),
        Command::Bundles { command } => bundles::run(command, config),
        Command::Hl7 { command } => hl7::run(command, config),
        Command::Serve => serve::run_serve(config),
        Command::Send(args) => serve::run_send(args, config),
        Command::Ping(args) => ping::run_ping(args, config),
        Command::Status { message_id, json } => serve::run_status(message_id, json, config),
        Command::Queue { command } => queue::run_queue(command, config),
        Command::Demo { keep } => crate::demo::run(keep),
        Command::Quarantine { command } => queue::run_quarantine(command, config),
        Command::Credentials { command } => queue::run_credentials(command, config),
    }
}

/// Print `error: MSG` and return the usage/configuration exit code.
fn usage(msg: impl std::fmt::Display) -> i32 {
    eprintln!("error: {msg}");
    EXIT_USAGE
}

/// Load the configuration named by `--config` (or the environment, or the default).
fn load_config(flag: Option<&Path>) -> Result<Config, String> {
    Config::load(&Config::locate(flag)).map_err(|e| e.to_string())
}

/// The configured `[[domain]]` name matching `name` (in its configured spelling, lower case), or
/// an error listing the configured ones.
pub(crate) fn configured_domain(cfg: &Config, name: &str) -> Result<String, String> {
    match cfg.domain(name.trim_end_matches('.')) {
        Some(d) => Ok(d.name.trim_end_matches('.').to_ascii_lowercase()),
        None => {
            let known: Vec<&str> = cfg.domains.iter().map(|d| d.name.as_str()).collect();
            Err(format!(
                "--domain {name} is not a configured domain (configured: {}); add a [[domain]] to {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                },
                cfg.source.display()
            ))
        }
    }
}
