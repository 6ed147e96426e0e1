//! `direct-agent hl7 ...`: the HL7 subcommands and their dispatch (each lives in its own file).

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum Hl7Command {
    /// Review a partner's test messages against the onboarding checklist (text, JSON, HTML).
    Review(super::review::ReviewArgs),
}

pub fn run(command: Hl7Command) -> i32 {
    match command {
        Hl7Command::Review(args) => super::review::run_review(args),
    }
}
