//! `direct-agent bundles add|list|refresh|remove`: trust bundle subscriptions. A refresh loads the
//! bundle, and only when its checksum changed parses it (checking the pinned signer) and replaces
//! the anchors that came from it in one transaction. Any failure keeps the previous anchors and
//! records the error on the subscription.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use openssl::x509::X509;

use super::anchors::{AnchorView, now, open, open_domain, parse_direction};
use super::{EXIT_FAILED, EXIT_USAGE, usage};
use crate::config::parse_duration;
use crate::credential::load_certificates;
use crate::store::{AnchorRecord, BundleRecord, SqliteStore, TrustStore, bundle_source};
use crate::trust::bundle::{load_bundle, parse_bundle, sha256_hex};
use crate::trust::describe;
use crate::trust::fetch::{Fetcher, HttpFetcher};

#[derive(Subcommand, Debug)]
pub enum BundlesCommand {
    /// Subscribe a domain to a trust bundle (URL or file) and refresh it once.
    Add(AddArgs),
    /// List the subscriptions with their last refresh and error.
    List(ListArgs),
    /// Refresh every bundle (or one): load, compare checksums, replace the anchors if changed.
    Refresh(RefreshArgs),
    /// Remove a subscription and the anchors that came from it.
    Remove(RemoveArgs),
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// `http(s)://` URL or file path of the bundle.
    #[arg(value_name = "URL|FILE")]
    location: String,
    /// The configured domain whose anchors the bundle provides.
    #[arg(long)]
    domain: String,
    /// incoming, outgoing or both.
    #[arg(long, default_value = "both")]
    direction: String,
    /// Time between scheduled refreshes, e.g. 24h, 30m, 7d.
    #[arg(long, default_value = "24h")]
    refresh: String,
    /// Certificate that must have signed the bundle (CMS-signed bundles); pins it.
    #[arg(long, value_name = "CERT")]
    signer: Option<PathBuf>,
    /// Subscription name (default: the last path segment of the URL or file).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct RefreshArgs {
    /// Refresh only this subscription.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// Subscription name (see bundles list).
    name: String,
}

pub fn run(cmd: BundlesCommand, config: Option<&Path>) -> i32 {
    match cmd {
        BundlesCommand::Add(a) => add(a, config),
        BundlesCommand::List(a) => list(a, config),
        BundlesCommand::Refresh(a) => refresh(a, config),
        BundlesCommand::Remove(a) => remove(a, config),
    }
}

fn is_url(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// The default subscription name: the last non-empty path segment, without a query.
fn default_name(location: &str) -> Option<String> {
    let path = location.split(['?', '#']).next().unwrap_or(location);
    let path = path.strip_prefix("file://").unwrap_or(path);
    let path = if is_url(path) {
        path.split_once("://").map(|(_, rest)| rest).unwrap_or(path)
    } else {
        path
    };
    path.rsplit('/').find(|s| !s.is_empty()).map(str::to_string)
}

fn format_secs(s: u64) -> String {
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn add(a: AddArgs, config: Option<&Path>) -> i32 {
    let (cfg, store, domain) = match open_domain(config, &a.domain) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let direction = match parse_direction(&a.direction) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let refresh_secs = match parse_duration(&a.refresh) {
        Some(d) if d.as_secs() > 0 => d.as_secs(),
        _ => {
            return usage(format!(
                "--refresh {}: not a duration of at least a second (use e.g. 24h, 30m, 7d)",
                a.refresh
            ));
        }
    };
    let signer_der = match &a.signer {
        Some(p) => match load_certificates(p).map(|mut c| c.remove(0)) {
            Ok(cert) => match cert.to_der() {
                Ok(d) => Some(d),
                Err(e) => return usage(format!("--signer {}: {e}", p.display())),
            },
            Err(e) => return usage(format!("--signer: {e}")),
        },
        None => None,
    };
    // A file is recorded by its absolute path, so refreshes work from any directory.
    let location = if is_url(&a.location) {
        a.location.clone()
    } else {
        let p = Path::new(a.location.strip_prefix("file://").unwrap_or(&a.location));
        let abs = std::fs::canonicalize(p).unwrap_or_else(|_| {
            std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or_else(|_| p.to_path_buf())
        });
        abs.display().to_string()
    };
    let Some(name) = a.name.clone().or_else(|| default_name(&a.location)) else {
        return usage(format!(
            "cannot derive a name from {}; give one with --name",
            a.location
        ));
    };
    if name.trim().is_empty() || name.chars().any(char::is_control) {
        return usage(format!("--name {name:?}: give a printable, non-empty name"));
    }
    match store.bundles() {
        Ok(all) if all.iter().any(|b| b.name == name) => {
            return usage(format!(
                "a bundle named {name} already exists (see bundles list); choose another --name or remove it first"
            ));
        }
        Ok(_) => {}
        Err(e) => return usage(e),
    }
    let record = BundleRecord {
        name: name.clone(),
        domain: domain.clone(),
        direction,
        location: location.clone(),
        refresh_secs,
        signer_der,
        checksum: None,
        last_refresh: None,
        last_error: None,
    };
    if let Err(e) = store.upsert_bundle(&record) {
        return usage(e);
    }
    println!(
        "subscribed {domain} to bundle {name} ({location}, {}, refresh every {}{})",
        direction.as_str(),
        format_secs(refresh_secs),
        if record.signer_der.is_some() {
            ", signer pinned"
        } else {
            ""
        }
    );
    let fetcher = HttpFetcher::new(cfg.fetch_timeout());
    if refresh_one(&store, &fetcher, record) {
        0
    } else {
        EXIT_FAILED
    }
}

/// Refresh one subscription, printing what happened; returns whether it succeeded.
fn refresh_one(store: &SqliteStore, fetcher: &dyn Fetcher, b: BundleRecord) -> bool {
    let r = refresh_bundle(store, fetcher, b);
    for l in &r.lines {
        println!("{l}");
    }
    if let Some(e) = &r.error {
        eprintln!("error: {e}");
    }
    r.error.is_none()
}

/// What one refresh did, as lines for a terminal or a log.
pub(crate) struct Refreshed {
    pub lines: Vec<String>,
    /// Why it failed (the previous anchors are kept).
    pub error: Option<String>,
}

/// Refresh one subscription: fetch, verify, replace its anchors (or keep the last good set).
pub(crate) fn refresh_bundle(
    store: &SqliteStore,
    fetcher: &dyn Fetcher,
    mut b: BundleRecord,
) -> Refreshed {
    let mut lines = Vec::new();
    let mut error = None;
    let source = bundle_source(&b.name);
    let previous: Vec<AnchorRecord> = store
        .anchors(Some(&b.domain))
        .map(|v| v.into_iter().filter(|a| a.source == source).collect())
        .unwrap_or_default();
    b.last_refresh = Some(now());
    match apply(store, fetcher, &b, &previous) {
        Ok(Applied::Unchanged) => {
            b.last_error = None;
            lines.push(format!(
                "{}: unchanged ({} anchors for {})",
                b.name,
                previous.len(),
                b.domain
            ));
        }
        Ok(Applied::Changed {
            checksum,
            added,
            removed,
            count,
            shared,
        }) => {
            b.last_error = None;
            b.checksum = Some(checksum);
            lines.push(format!(
                "{}: added {}, removed {} ({count} anchors in the bundle for {}{})",
                b.name,
                added.len(),
                removed.len(),
                b.domain,
                if shared > 0 {
                    format!("; {shared} already present from another source, left as they are")
                } else {
                    String::new()
                }
            ));
            for v in &added {
                lines.push(format!("  + {} {}", v.fingerprint, v.subject));
            }
            for (fp, subject) in &removed {
                lines.push(format!("  - {fp} {subject}"));
            }
            for v in &added {
                v.warn(&b.domain);
            }
        }
        Err(e) => {
            error = Some(format!(
                "bundle {}: {e}; keeping the {} anchors from its last good refresh",
                b.name,
                previous.len()
            ));
            b.last_error = Some(e);
        }
    }
    if let Err(e) = store.upsert_bundle(&b) {
        error = Some(format!("cannot record the refresh of {}: {e}", b.name));
    }
    Refreshed { lines, error }
}

enum Applied {
    Unchanged,
    Changed {
        checksum: String,
        added: Vec<AnchorView>,
        removed: Vec<(String, String)>,
        count: usize,
        /// Anchors of the bundle already present from another source (added by hand or by
        /// another bundle): left as they are.
        shared: usize,
    },
}

fn apply(
    store: &SqliteStore,
    fetcher: &dyn Fetcher,
    b: &BundleRecord,
    previous: &[AnchorRecord],
) -> Result<Applied, String> {
    let bytes = load_bundle(&b.location, fetcher).map_err(|e| e.to_string())?;
    let checksum = sha256_hex(&bytes);
    if b.checksum.as_deref() == Some(checksum.as_str()) {
        return Ok(Applied::Unchanged);
    }
    let signer = match &b.signer_der {
        Some(der) => Some(X509::from_der(der).map_err(|_| {
            "the pinned signer certificate in the store cannot be read; remove and re-add the bundle with --signer".to_string()
        })?),
        None => None,
    };
    let certs = parse_bundle(&bytes, signer.as_ref()).map_err(|e| e.to_string())?;
    let added_at = now();
    let mut seen = HashSet::new();
    let mut records = Vec::new();
    let mut views = HashMap::new();
    for cert in &certs {
        let view = AnchorView::of(cert);
        if !seen.insert(view.fingerprint.clone()) {
            continue;
        }
        let der = cert
            .to_der()
            .map_err(|e| format!("cannot encode {}: {e}", describe(cert)))?;
        records.push(AnchorRecord {
            domain: b.domain.clone(),
            fingerprint: view.fingerprint.clone(),
            der,
            direction: b.direction,
            source: bundle_source(&b.name),
            added_at,
        });
        views.insert(view.fingerprint.clone(), view);
    }
    let others: HashSet<String> = store
        .anchors(Some(&b.domain))
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|a| a.source != bundle_source(&b.name))
        .map(|a| a.fingerprint)
        .collect();
    let shared = records
        .iter()
        .filter(|r| others.contains(&r.fingerprint))
        .count();
    let (added, removed) = store
        .replace_bundle_anchors(&b.name, &records)
        .map_err(|e| e.to_string())?;
    let old_subjects: HashMap<&str, String> = previous
        .iter()
        .map(|a| {
            let s = X509::from_der(&a.der)
                .map(|c| describe(&c))
                .unwrap_or_else(|_| "(unreadable)".into());
            (a.fingerprint.as_str(), s)
        })
        .collect();
    Ok(Applied::Changed {
        checksum,
        added: added
            .iter()
            .filter_map(|fp| views.get(fp).cloned())
            .collect(),
        removed: removed
            .iter()
            .map(|fp| {
                let s = old_subjects.get(fp.as_str()).cloned().unwrap_or_default();
                (fp.clone(), s)
            })
            .collect(),
        count: records.len(),
        shared,
    })
}

fn refresh(a: RefreshArgs, config: Option<&Path>) -> i32 {
    let (cfg, store) = match open(config) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let all = match store.bundles() {
        Ok(b) => b,
        Err(e) => return usage(e),
    };
    let chosen: Vec<BundleRecord> = match &a.name {
        Some(n) => {
            let Some(b) = all.into_iter().find(|b| &b.name == n) else {
                return usage(format!("no bundle named {n} (see bundles list)"));
            };
            vec![b]
        }
        None => all,
    };
    if chosen.is_empty() {
        println!("no bundles to refresh");
        return 0;
    }
    let fetcher = HttpFetcher::new(cfg.fetch_timeout());
    let mut failed = 0;
    for b in chosen {
        if !refresh_one(&store, &fetcher, b) {
            failed += 1;
        }
    }
    if failed > 0 { EXIT_FAILED } else { 0 }
}

fn list(a: ListArgs, config: Option<&Path>) -> i32 {
    let (_cfg, store) = match open(config) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let (bundles, anchors) = match (store.bundles(), store.anchors(None)) {
        (Ok(b), Ok(a)) => (b, a),
        (Err(e), _) | (_, Err(e)) => return usage(e),
    };
    let count = |name: &str| {
        let s = bundle_source(name);
        anchors.iter().filter(|a| a.source == s).count()
    };
    let signer = |b: &BundleRecord| {
        b.signer_der
            .as_ref()
            .map(|d| X509::from_der(d).map_or_else(|_| "(unreadable)".into(), |c| describe(&c)))
    };
    let when = |t: Option<i64>| {
        t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
    };
    if a.json {
        let v: Vec<serde_json::Value> = bundles
            .iter()
            .map(|b| {
                serde_json::json!({
                    "name": b.name,
                    "domain": b.domain,
                    "direction": b.direction.as_str(),
                    "location": b.location,
                    "refresh_secs": b.refresh_secs,
                    "signer": signer(b),
                    "checksum": b.checksum,
                    "last_refresh": b.last_refresh,
                    "last_refresh_utc": when(b.last_refresh),
                    "last_error": b.last_error,
                    "anchors": count(&b.name),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return 0;
    }
    if bundles.is_empty() {
        println!("no bundles");
        return 0;
    }
    for b in &bundles {
        println!("{}", b.name);
        println!("  domain       {} ({})", b.domain, b.direction.as_str());
        println!("  location     {}", b.location);
        println!("  refresh      every {}", format_secs(b.refresh_secs));
        println!(
            "  signer       {}",
            signer(b).unwrap_or_else(|| "none (unsigned bundle)".into())
        );
        println!("  anchors      {}", count(&b.name));
        println!(
            "  last refresh {}",
            when(b.last_refresh).unwrap_or_else(|| "never".into())
        );
        println!(
            "  checksum     {}",
            b.checksum.as_deref().unwrap_or("(none applied yet)")
        );
        if let Some(e) = &b.last_error {
            println!("  last error   {e}");
        }
    }
    for b in &bundles {
        if let Some(e) = &b.last_error {
            eprintln!("warning: bundle {} failed its last refresh: {e}", b.name);
        }
    }
    0
}

fn remove(a: RemoveArgs, config: Option<&Path>) -> i32 {
    let (_cfg, store) = match open(config) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let source = bundle_source(&a.name);
    let n = store
        .anchors(None)
        .map(|v| v.iter().filter(|x| x.source == source).count())
        .unwrap_or(0);
    match store.remove_bundle(&a.name) {
        Ok(true) => {
            println!("removed bundle {} and its {n} anchors", a.name);
            0
        }
        Ok(false) => {
            eprintln!("error: no bundle named {} (see bundles list)", a.name);
            EXIT_USAGE
        }
        Err(e) => usage(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        assert_eq!(
            default_name("https://b.example/bundles/a.p7b?x=1").as_deref(),
            Some("a.p7b")
        );
        assert_eq!(default_name("/srv/x/b.p7c").as_deref(), Some("b.p7c"));
        assert_eq!(
            default_name("http://b.example/").as_deref(),
            Some("b.example")
        );
        assert_eq!(default_name("file:///srv/c.pem").as_deref(), Some("c.pem"));
    }

    #[test]
    fn refresh_intervals_print_in_their_unit() {
        assert_eq!(format_secs(86_400), "1d");
        assert_eq!(format_secs(7_200), "2h");
        assert_eq!(format_secs(90), "90s");
        assert_eq!(format_secs(1_800), "30m");
    }
}
