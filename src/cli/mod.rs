//! The `direct-agent` command line. Exit codes are a contract (README, "Exit codes"):
//! 0 ok; 2 usage or configuration; 3 cannot decrypt; 4 signature invalid or missing;
//! 5 signer not trusted; 6 malformed message.

mod message;

use clap::{Parser, Subcommand};

/// Exit code for usage and configuration errors.
pub const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "direct-agent",
    version,
    about = "Direct Secure Messaging agent for HL7 v2 payloads"
)]
struct Cli {
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
}

/// Run the command line; returns the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Command::Message { command } => message::run(command),
    }
}
