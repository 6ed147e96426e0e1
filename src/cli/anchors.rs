//! `direct-agent anchors add|list|remove|export`: the trust anchors of the configured domains,
//! kept in the trust store.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use openssl::x509::{X509, X509Ref};

use super::{EXIT_USAGE, configured_domain, load_config, usage};
use crate::store::{AnchorRecord, Direction, SqliteStore, TrustStore, open_store};
use crate::trust::bundle::{BundleError, parse_bundle};
use crate::trust::{describe, describe_issuer, fingerprint};

/// Anchors expiring within this many days are warned about.
pub(super) const WARN_DAYS: i64 = 30;

#[derive(Subcommand, Debug)]
pub enum AnchorsCommand {
    /// Add trust anchors from certificate files (PEM with one or more certificates, DER, or a
    /// certs-only PKCS#7 .p7b/.p7c).
    Add(AddArgs),
    /// List the anchors with their expiry.
    List(ListArgs),
    /// Remove one anchor by its SHA-256 fingerprint.
    Remove(RemoveArgs),
    /// Write a domain's anchors as PEM.
    Export(ExportArgs),
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// Certificate files.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The configured domain the anchors are for.
    #[arg(long)]
    domain: String,
    /// incoming (senders we accept), outgoing (recipients we encrypt to) or both.
    #[arg(long, default_value = "both")]
    direction: String,
    /// Accept end-entity certificates (no basicConstraints CA:TRUE) as anchors, for HISPs that
    /// pin leaves instead of CAs.
    #[arg(long)]
    allow_leaf_anchor: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this domain's anchors.
    #[arg(long)]
    domain: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// SHA-256 fingerprint, with or without colons, any case.
    fingerprint: String,
    /// The domain whose anchor it is.
    #[arg(long)]
    domain: String,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The domain whose anchors to export.
    #[arg(long)]
    domain: String,
    /// Output file (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(cmd: AnchorsCommand, config: Option<&Path>) -> i32 {
    match cmd {
        AnchorsCommand::Add(a) => add(a, config),
        AnchorsCommand::List(a) => list(a, config),
        AnchorsCommand::Remove(a) => remove(a, config),
        AnchorsCommand::Export(a) => export(a, config),
    }
}

/// Configuration and store, or the exit code after printing why not.
pub(super) fn open(config: Option<&Path>) -> Result<(crate::config::Config, SqliteStore), i32> {
    let cfg = load_config(config).map_err(usage)?;
    let store = open_store(&cfg).map_err(usage)?;
    Ok((cfg, store))
}

/// Parse `--direction`.
/// The configuration, the store, and `domain` checked against the configured domains.
pub(super) fn open_domain(
    config: Option<&Path>,
    domain: &str,
) -> Result<(crate::config::Config, SqliteStore, String), i32> {
    let (cfg, store) = open(config)?;
    let domain = configured_domain(&cfg, domain).map_err(usage)?;
    Ok((cfg, store, domain))
}

pub(super) fn parse_direction(s: &str) -> Result<Direction, i32> {
    Direction::parse(s).ok_or_else(|| {
        usage(format!(
            "--direction {s}: choose incoming, outgoing or both"
        ))
    })
}

pub(super) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What is shown about an anchor certificate.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct AnchorView {
    pub fingerprint: String,
    pub subject: String,
    pub issuer: String,
    /// `YYYY-MM-DD HH:MM:SS UTC`.
    pub not_after: String,
    /// Whole days until notAfter (negative once expired).
    pub days_left: i64,
    /// `expired` or `expires in N days`, when within the warning window.
    pub warning: Option<String>,
}

impl AnchorView {
    pub fn of(cert: &X509Ref) -> AnchorView {
        let not_after_unix = crate::clock::asn1_unix(cert.not_after());
        let days_left = not_after_unix.map_or(0, |t| (t - now()).div_euclid(86_400));
        let not_after = not_after_unix
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| cert.not_after().to_string());
        let warning = match not_after_unix {
            Some(t) if t <= now() => Some("expired".to_string()),
            Some(_) if days_left <= WARN_DAYS => Some(format!("expires in {days_left} days")),
            _ => None,
        };
        AnchorView {
            fingerprint: fingerprint(cert),
            subject: describe(cert),
            issuer: describe_issuer(cert),
            not_after,
            days_left,
            warning,
        }
    }

    /// Print a warning line on stderr when the anchor is expired or expiring soon.
    pub fn warn(&self, domain: &str) {
        if let Some(w) = &self.warning {
            eprintln!(
                "warning: anchor {} ({}) of {domain} {w} (notAfter {}); replace it before messages are refused",
                self.subject, self.fingerprint, self.not_after
            );
        }
    }
}

/// Whether the certificate says it is a CA (basicConstraints CA:TRUE).
pub(super) fn is_ca(cert: &X509Ref) -> bool {
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::BasicConstraints;
    let Ok(der) = cert.to_der() else {
        return false;
    };
    let Ok(parsed) = x509_cert::Certificate::from_der(&der) else {
        return false;
    };
    matches!(
        parsed.tbs_certificate().get_extension::<BasicConstraints>(),
        Ok(Some((_, bc))) if bc.ca
    )
}

/// Canonical fingerprint form: lower-case hex pairs joined by colons (as `trust::fingerprint`).
fn normalize_fingerprint(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(
        hex.as_bytes()
            .chunks(2)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>()
            .join(":"),
    )
}

fn add(a: AddArgs, config: Option<&Path>) -> i32 {
    let (_, store, domain) = match open_domain(config, &a.domain) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let direction = match parse_direction(&a.direction) {
        Ok(d) => d,
        Err(code) => return code,
    };
    // Read and check every file before adding anything: all or nothing.
    let mut batch: Vec<(X509, String)> = Vec::new();
    for path in &a.files {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return usage(format!("cannot read {}: {e}", path.display())),
        };
        let certs = match parse_bundle(&bytes, None) {
            Ok(c) => c,
            Err(BundleError::SignerNotPinned { signer }) => {
                return usage(format!(
                    "{} is a signed bundle (signed by {signer}); subscribe to it with bundles add {} --domain {domain} --signer CERT so its signature is checked",
                    path.display(),
                    path.display()
                ));
            }
            Err(e) => return usage(format!("{}: {e}", path.display())),
        };
        for cert in certs {
            if !a.allow_leaf_anchor && !is_ca(&cert) {
                return usage(format!(
                    "{}: {} is not a CA certificate (no basicConstraints CA:TRUE); anchors are normally CA certificates. Some HISPs pin end-entity certificates instead: if this partner does, add it with --allow-leaf-anchor",
                    path.display(),
                    describe(&cert)
                ));
            }
            batch.push((cert, format!("file:{}", path.display())));
        }
    }
    let added_at = now();
    for (cert, source) in &batch {
        let der = match cert.to_der() {
            Ok(d) => d,
            Err(e) => return usage(format!("cannot encode {}: {e}", describe(cert))),
        };
        let view = AnchorView::of(cert);
        let record = AnchorRecord {
            domain: domain.clone(),
            fingerprint: view.fingerprint.clone(),
            der,
            direction,
            source: source.clone(),
            added_at,
        };
        let new = match store.add_anchor(&record) {
            Ok(n) => n,
            Err(e) => return usage(e),
        };
        println!(
            "{} {} {}{} (not after {}) for {domain} ({})",
            if new { "added" } else { "already present" },
            view.fingerprint,
            view.subject,
            if is_ca(cert) { "" } else { " [leaf anchor]" },
            view.not_after,
            direction.as_str(),
        );
        view.warn(&domain);
    }
    0
}

fn list(a: ListArgs, config: Option<&Path>) -> i32 {
    let (cfg, store) = match open(config) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let domain = match &a.domain {
        Some(d) => match configured_domain(&cfg, d) {
            Ok(d) => Some(d),
            Err(e) => return usage(e),
        },
        None => None,
    };
    let records = match store.anchors(domain.as_deref()) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let mut rows = Vec::new();
    for r in &records {
        match X509::from_der(&r.der) {
            Ok(cert) => rows.push((r, AnchorView::of(&cert))),
            Err(_) => eprintln!(
                "warning: anchor {} of {} in the store is not a readable certificate; remove it",
                r.fingerprint, r.domain
            ),
        }
    }
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(r, v)| {
                serde_json::json!({
                    "domain": r.domain,
                    "fingerprint": v.fingerprint,
                    "subject": v.subject,
                    "issuer": v.issuer,
                    "not_after": v.not_after,
                    "days_left": v.days_left,
                    "direction": r.direction.as_str(),
                    "source": r.source,
                    "added_at": r.added_at,
                    "ca": X509::from_der(&r.der).map(|c| is_ca(&c)).unwrap_or(false),
                    "warning": v.warning,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else if rows.is_empty() {
        println!(
            "no anchors{}",
            domain
                .as_deref()
                .map(|d| format!(" for {d}"))
                .unwrap_or_default()
        );
    } else {
        println!(
            "{:<20} {:<95} {:<44} {:<44} {:<23} {:>9} {:<9} SOURCE",
            "DOMAIN",
            "FINGERPRINT (SHA-256)",
            "SUBJECT",
            "ISSUER",
            "NOT AFTER",
            "DAYS LEFT",
            "DIRECTION"
        );
        for (r, v) in &rows {
            println!(
                "{:<20} {:<95} {:<44} {:<44} {:<23} {:>9} {:<9} {}",
                r.domain,
                v.fingerprint,
                v.subject,
                v.issuer,
                v.not_after,
                v.days_left,
                r.direction.as_str(),
                r.source
            );
        }
    }
    for (r, v) in &rows {
        v.warn(&r.domain);
    }
    0
}

fn remove(a: RemoveArgs, config: Option<&Path>) -> i32 {
    let (_, store, domain) = match open_domain(config, &a.domain) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(fp) = normalize_fingerprint(&a.fingerprint) else {
        return usage(format!(
            "{} is not a SHA-256 fingerprint (64 hex digits, colons optional; see anchors list)",
            a.fingerprint
        ));
    };
    let subject = store.anchors(Some(&domain)).ok().and_then(|all| {
        all.into_iter()
            .find(|r| r.fingerprint == fp)
            .map(|r| (r.source, X509::from_der(&r.der).map(|c| describe(&c))))
    });
    match store.remove_anchor(&domain, &fp) {
        Ok(true) => {
            let (source, subject) = match subject {
                Some((s, Ok(subj))) => (s, subj),
                Some((s, Err(_))) => (s, "(unreadable)".into()),
                None => (String::new(), String::new()),
            };
            println!("removed {fp} {subject} from {domain}");
            if source.starts_with("bundle:") {
                eprintln!(
                    "warning: this anchor came from {source}; its next changed refresh adds it back (remove the bundle with bundles remove to stop that)"
                );
            }
            0
        }
        Ok(false) => {
            eprintln!("error: {domain} has no anchor {fp} (see anchors list --domain {domain})");
            EXIT_USAGE
        }
        Err(e) => usage(e),
    }
}

fn export(a: ExportArgs, config: Option<&Path>) -> i32 {
    let (_, store, domain) = match open_domain(config, &a.domain) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let records = match store.anchors(Some(&domain)) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let mut pem = Vec::new();
    for r in &records {
        match X509::from_der(&r.der).and_then(|c| c.to_pem()) {
            Ok(p) => pem.extend(p),
            Err(_) => eprintln!(
                "warning: anchor {} in the store is not a readable certificate; skipped",
                r.fingerprint
            ),
        }
    }
    let written = match &a.out {
        Some(path) => std::fs::write(path, &pem),
        None => std::io::stdout().write_all(&pem),
    };
    if let Err(e) = written {
        return usage(format!("cannot write the anchors: {e}"));
    }
    eprintln!("exported {} anchor(s) of {domain}", records.len());
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_normalize() {
        let canon = "ab:".repeat(31) + "ab";
        assert_eq!(normalize_fingerprint(&"AB".repeat(32)), Some(canon.clone()));
        assert_eq!(normalize_fingerprint(&canon.to_uppercase()), Some(canon));
        assert_eq!(normalize_fingerprint("abcd"), None);
        assert_eq!(normalize_fingerprint(&"zz".repeat(32)), None);
    }

    #[test]
    fn ca_detection() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
        let load = |n: &str| X509::from_pem(&std::fs::read(dir.join(n)).unwrap()).unwrap();
        assert!(is_ca(&load("root-a.pem")));
        assert!(is_ca(&load("intermediate-b.pem")));
        assert!(!is_ca(&load("hisp-b.example.pem")));
    }
}
