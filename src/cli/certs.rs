//! `direct-agent certs validate`: run the agent's own certificate validation on one certificate
//! and print each step's verdict.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::EXIT_USAGE;
use crate::address::DirectAddress;
use crate::agent::Context;
use crate::clock::SystemClock;
use crate::credential::load_certificates;
use crate::store::Direction;
use crate::trust::{Purpose, describe, fingerprint, validate_report};

/// Exit code when the certificate is not trusted (as `message open`'s 5).
pub const EXIT_UNTRUSTED: i32 = 5;

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Validate a certificate exactly as the agent would, step by step.
    Validate(ValidateArgs),
    /// Find a recipient's certificates (DNS CERT, then LDAP) and show every step.
    Discover(DiscoverArgs),
}

#[derive(Args, Debug)]
pub struct DiscoverArgs {
    /// The recipient's Direct address.
    address: String,
    /// Our domain whose outgoing anchors decide (default: the only configured domain).
    #[arg(long)]
    domain: Option<String>,
    /// Print the account as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The certificate (PEM or DER; a PEM file may carry its chain after it).
    cert: PathBuf,
    /// Intermediate certificates to offer to path building.
    #[arg(long)]
    chain: Option<PathBuf>,
    /// Our domain whose anchors decide (a configured [[domain]]).
    #[arg(long)]
    domain: String,
    /// The Direct address the certificate must be bound to.
    #[arg(long = "for")]
    for_address: String,
    /// sign: a sender's signing certificate (incoming anchors); encrypt: a recipient's
    /// encryption certificate (outgoing anchors).
    #[arg(long)]
    purpose: String,
    /// Print the steps as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: CertsCommand, config: Option<&std::path::Path>) -> i32 {
    match cmd {
        CertsCommand::Validate(a) => validate(a, config),
        CertsCommand::Discover(a) => discover(a, config),
    }
}

fn discover(a: DiscoverArgs, config: Option<&std::path::Path>) -> i32 {
    let address = match DirectAddress::parse(&a.address) {
        Ok(x) => x,
        Err(e) => return usage(e),
    };
    let ctx = match Context::load_public(config) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let domain = match a.domain.as_deref() {
        Some(d) => match ctx.domain(d) {
            Ok(d) => d,
            Err(e) => return usage(e),
        },
        None => match ctx.domains.as_slice() {
            [only] => only,
            _ => return usage("several domains are configured: name ours with --domain"),
        },
    };
    let found = match ctx.discover(&address, domain) {
        Ok(f) => f,
        Err(e) => return usage(e),
    };
    if a.json {
        println!("{}", serde_json::to_string(&found).unwrap_or_default());
    } else {
        println!(
            "discovering certificates for {address} (validated for {})",
            domain.name
        );
        for s in &found.steps {
            println!(
                "  {:<6} {:<24} {}",
                s.verdict.to_uppercase(),
                s.step,
                s.detail
            );
        }
        for c in &found.candidates {
            println!(
                "  candidate {:?} {} {} {}",
                c.source,
                c.subject,
                c.fingerprint_sha256,
                if c.valid {
                    "valid".to_string()
                } else {
                    c.reason.clone().unwrap_or_default()
                }
            );
        }
        match &found.reason {
            None => println!("chosen: {}", found.chosen.join(", ")),
            Some(r) => println!("nothing chosen: {r}"),
        }
    }
    if found.chosen.is_empty() {
        EXIT_UNTRUSTED
    } else {
        0
    }
}

fn usage(msg: impl std::fmt::Display) -> i32 {
    eprintln!("error: {msg}");
    EXIT_USAGE
}

fn validate(a: ValidateArgs, config: Option<&std::path::Path>) -> i32 {
    let (purpose, direction) = match a.purpose.to_ascii_lowercase().as_str() {
        "sign" => (Purpose::Sign, Direction::Incoming),
        "encrypt" => (Purpose::Encrypt, Direction::Outgoing),
        other => return usage(format!("--purpose {other}: choose sign or encrypt")),
    };
    let address = match DirectAddress::parse(&a.for_address) {
        Ok(x) => x,
        Err(e) => return usage(format!("--for: {e}")),
    };
    let ctx = match Context::load_public(config) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let domain = match ctx.domain(&a.domain) {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    let mut certs = match load_certificates(&a.cert) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let leaf = certs.remove(0);
    let mut intermediates = certs;
    if let Some(chain) = &a.chain {
        match load_certificates(chain) {
            Ok(c) => intermediates.extend(c),
            Err(e) => return usage(e),
        }
    }
    intermediates.extend(domain.intermediates.iter().cloned());
    let anchors = match ctx.anchors(&domain.name, direction) {
        Ok(a) => a,
        Err(e) => return usage(e),
    };
    let clock = SystemClock;
    let inputs = ctx.trust_inputs(domain, &anchors, &intermediates, &[], &clock);
    let report = validate_report(&leaf, &inputs, purpose, Some(&address));
    let ok = report.outcome.is_ok();
    if a.json {
        let v = serde_json::json!({
            "certificate": describe(&leaf),
            "fingerprint_sha256": fingerprint(&leaf),
            "domain": domain.name,
            "direction": direction.as_str(),
            "for": address.to_string(),
            "purpose": a.purpose.to_ascii_lowercase(),
            "anchors": anchors.len(),
            "steps": report.steps,
            "valid": ok,
            "reason": report.outcome.as_ref().err().map(|e| e.to_string()),
            "warnings": report.outcome.as_ref().map(|p| p.warnings.clone()).unwrap_or_default(),
        });
        println!("{v}");
    } else {
        println!("certificate {} ({})", describe(&leaf), fingerprint(&leaf));
        println!(
            "checked for {address} ({:?}) against {} {} anchor(s) of {}",
            purpose,
            anchors.len(),
            direction.as_str(),
            domain.name
        );
        for s in &report.steps {
            println!(
                "  {:<6} {:<12} {}",
                s.verdict.to_uppercase(),
                s.step,
                s.detail
            );
        }
        match &report.outcome {
            Ok(_) => println!("VALID"),
            Err(e) => println!("NOT VALID: {e}"),
        }
    }
    if ok { 0 } else { EXIT_UNTRUSTED }
}
