//! `hl7`: work on HL7 v2 files outside the pipeline. `hl7 validate` applies a validation
//! profile ([`crate::hl7::validate`]) to files and prints the findings, never a field's value;
//! `hl7 review` (in `cli::review`) folds many files into the onboarding checklist.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::hl7::Severity;
use crate::hl7::validate::{Environment, Options, PayloadReport, Profile, validate_payload};

use super::{EXIT_FAILED, EXIT_USAGE};

#[derive(Subcommand, Debug)]
pub enum Hl7Command {
    /// Validate HL7 files against a profile. Exit 0 when every message passed (warnings
    /// allowed), 1 when one failed or a file is not HL7, 2 when a file cannot be read.
    Validate(ValidateArgs),
    /// Review a partner's test messages against the onboarding checklist (text, JSON, HTML).
    Review(super::review::ReviewArgs),
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// HL7 v2 files (ER7), one message or a batch each.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// `header` (MSH rules only) or `immunization` (header plus content rules).
    #[arg(long, default_value = "immunization")]
    profile: Profile,
    /// The MSH-11 expected: `test` (T) or `production` (P). Default: `[agent] environment` of
    /// the configuration named by --config or DIRECT_AGENT_CONFIG (as the running agent checks),
    /// else `test`.
    #[arg(long, value_parser = parse_environment)]
    environment: Option<Environment>,
    /// Accept MSH-12 = 2.3.1 as well as 2.5.1.
    #[arg(long)]
    allow_v231: bool,
    /// Print a JSON array of {file, report}.
    #[arg(long)]
    json: bool,
}

fn parse_environment(s: &str) -> Result<Environment, String> {
    match s {
        "test" => Ok(Environment::Test),
        "production" => Ok(Environment::Production),
        other => Err(format!(
            "unknown environment {other:?}: use \"test\" or \"production\""
        )),
    }
}

/// Run an `hl7` command; returns the exit code.
pub fn run(command: Hl7Command, config: Option<&Path>) -> i32 {
    match command {
        Hl7Command::Validate(args) => validate(args, config),
        Hl7Command::Review(args) => super::review::run_review(args, config),
    }
}

/// The environment to validate for: `flag` when given, else `[agent] environment` of the
/// configuration when one is named (`--config` or `DIRECT_AGENT_CONFIG`), else test. Files are
/// often checked on a desk without any configuration, so the default file is not looked for.
pub(super) fn environment(
    flag: Option<Environment>,
    config: Option<&Path>,
) -> Result<Environment, String> {
    if let Some(e) = flag {
        return Ok(e);
    }
    if config.is_none() && std::env::var_os(crate::config::CONFIG_ENV).is_none() {
        return Ok(Environment::Test);
    }
    let path = crate::config::Config::locate(config);
    crate::config::Config::load(&path)
        .map(|c| c.agent.environment)
        .map_err(|e| format!("{e} (or give --environment test|production)"))
}

#[derive(Serialize)]
struct FileReport {
    file: String,
    report: PayloadReport,
}

fn validate(args: ValidateArgs, config: Option<&Path>) -> i32 {
    let environment = match environment(args.environment, config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let options = Options {
        profile: args.profile,
        environment,
        allow_v231: args.allow_v231,
        // The same "today" as the pipeline: the latest date anywhere (UTC+14), so a dose given
        // today in any time zone is not "in the future".
        today: crate::agent::validation::today(chrono::Utc::now().timestamp()),
    };
    let mut code = 0;
    let mut reports = Vec::new();
    for file in &args.files {
        let payload = match std::fs::read(file) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", file.display());
                code = EXIT_USAGE;
                continue;
            }
        };
        let report = validate_payload(&payload, &options);
        if !report.passed() && code == 0 {
            code = EXIT_FAILED;
        }
        if !args.json {
            print_text(&file.display().to_string(), &report, options.profile);
        }
        reports.push(FileReport {
            file: file.display().to_string(),
            report,
        });
    }
    if args.json {
        match serde_json::to_string_pretty(&reports) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("error: cannot write the report as JSON: {e}");
                return EXIT_FAILED;
            }
        }
    }
    code
}

fn print_text(file: &str, report: &PayloadReport, profile: Profile) {
    if let Some(e) = &report.read_error {
        println!("{file}: FAIL: not readable as HL7: {e}");
        return;
    }
    println!(
        "{file}: {} message(s), {profile} profile",
        report.messages.len()
    );
    for m in &report.messages {
        println!(
            "  message {} {} {}: {}",
            m.index,
            if m.control_id.is_empty() {
                "(no MSH-10)"
            } else {
                &m.control_id
            },
            if m.message_type.is_empty() {
                "(no MSH-9)"
            } else {
                &m.message_type
            },
            if m.passed() { "PASS" } else { "FAIL" }
        );
        for f in &m.findings {
            let severity = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Information => "info",
            };
            match &f.location {
                Some(at) => println!("    {severity} {} at {at}: {}", f.rule, f.text),
                None => println!("    {severity} {}: {}", f.rule, f.text),
            }
        }
    }
}
