//! `direct-agent config check`: load the configuration and check everything `serve` will need,
//! collecting every problem with its key path (`domain[0].credential[1].key`, `sink[2].program`)
//! instead of stopping at the first: files readable, keys matching certificates and owner-only,
//! key sizes, own certificates' validity, anchors in the store, listen ports, environment
//! variables, HL7 profiles and sinks. Exit 0 without errors, 2 with any (warnings do not count).
//!
//! A file that is not TOML or has keys of the wrong type is one error: nothing else can be read.
//! The semantic checks of [`Config::load`] (durations, sizes, addresses, keys that go together)
//! stop at their first problem; that one is reported, every duration and listen address is
//! checked again here, and everything else is checked on the configuration as written. Other
//! semantic problems behind the first (a size, a pair of keys) show up at the next run.

use std::path::Path;

use clap::Subcommand;
use openssl::asn1::Asn1Time;
use serde::Serialize;

use crate::config::sinks::SinkKind;
use crate::config::{Config, ConfigError};
use crate::credential::{Credential, CredentialError, check_key_permissions, load_certificates};
use crate::store::{Direction, TrustStore};

use super::{EXIT_USAGE, usage};

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check the configuration and everything it names; list every problem (exit 2 on errors).
    Check {
        /// Print `{"errors":[{"key":..,"problem":..}],"warnings":[...]}`.
        #[arg(long)]
        json: bool,
    },
}

/// One problem, at one configuration key.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `domain[0].credential[1].key`.
    pub key: String,
    /// What is wrong and what to do.
    pub problem: String,
}

/// Everything found: errors stop `serve` (or a message); warnings deserve a look.
#[derive(Debug, Default, Serialize)]
pub struct Findings {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Findings {
    fn error(&mut self, key: impl Into<String>, problem: impl Into<String>) {
        self.errors.push(Problem {
            key: key.into(),
            problem: problem.into(),
        });
    }
    fn warning(&mut self, key: impl Into<String>, problem: impl Into<String>) {
        self.warnings.push(Problem {
            key: key.into(),
            problem: problem.into(),
        });
    }
}

/// Own certificates expiring within this many days are a warning.
const EXPIRY_WARNING_DAYS: u32 = 30;
/// RSA keys below this size are refused.
const MIN_RSA_BITS: u32 = 2048;

pub fn run(command: ConfigCommand, config: Option<&Path>) -> i32 {
    match command {
        ConfigCommand::Check { json } => {
            let path = Config::locate(config);
            let findings = check_file(&path);
            if json {
                match serde_json::to_string_pretty(&findings) {
                    Ok(s) => println!("{s}"),
                    Err(e) => return usage(e),
                }
            } else {
                print_text(&path, &findings);
            }
            if findings.errors.is_empty() {
                0
            } else {
                EXIT_USAGE
            }
        }
    }
}

fn print_text(path: &Path, f: &Findings) {
    for (title, list) in [("errors", &f.errors), ("warnings", &f.warnings)] {
        if list.is_empty() {
            continue;
        }
        println!("{title}:");
        for p in list {
            println!("  {}: {}", p.key, p.problem);
        }
    }
    println!(
        "{}: {} error{}, {} warning{}",
        path.display(),
        f.errors.len(),
        if f.errors.len() == 1 { "" } else { "s" },
        f.warnings.len(),
        if f.warnings.len() == 1 { "" } else { "s" }
    );
}

/// Load the file at `path` and check it. A file that cannot be read or parsed is one error; a
/// failed semantic check of [`Config::load`] (which stops at its first) is reported, and the
/// rest is checked on the configuration as written.
pub fn check_file(path: &Path) -> Findings {
    let first = match Config::load(path) {
        Ok(cfg) => return check(&cfg),
        Err(ConfigError::Invalid { key, message, .. }) => Problem {
            key,
            problem: message,
        },
        Err(e) => {
            let mut f = Findings::default();
            f.error("(file)", e.to_string());
            return f;
        }
    };
    let cfg = match Config::load_unchecked(path) {
        Ok(cfg) => cfg,
        Err(e) => {
            let mut f = Findings::default();
            f.error(first.key, first.problem);
            f.error("(file)", e.to_string());
            return f;
        }
    };
    let mut f = check(&cfg);
    check_durations(&cfg, &mut f);
    if !f.errors.iter().any(|p| p.key == first.key) {
        f.errors.insert(0, first);
    }
    f
}

/// Every duration of the file (when [`Config::load`] refused it, it named only the first bad one).
fn check_durations(cfg: &Config, f: &mut Findings) {
    let mut keys: Vec<(String, &str)> = vec![
        ("trust.fetch_timeout".into(), &cfg.trust.fetch_timeout),
        ("discovery.timeout".into(), &cfg.discovery.timeout),
        (
            "discovery.cache_ttl_max".into(),
            &cfg.discovery.cache_ttl_max,
        ),
        ("discovery.negative_ttl".into(), &cfg.discovery.negative_ttl),
        (
            "smtp_in.command_timeout".into(),
            &cfg.smtp_in.command_timeout,
        ),
        ("smtp_in.data_timeout".into(), &cfg.smtp_in.data_timeout),
        ("smtp_out.lifetime".into(), &cfg.smtp_out.lifetime),
        ("smtp_out.retry_initial".into(), &cfg.smtp_out.retry_initial),
        ("smtp_out.retry_max".into(), &cfg.smtp_out.retry_max),
        ("smtp_out.timeout".into(), &cfg.smtp_out.timeout),
        ("mdn.processed_timeout".into(), &cfg.mdn.processed_timeout),
        ("mdn.dispatched_timeout".into(), &cfg.mdn.dispatched_timeout),
    ];
    for (i, m) in cfg.imap.iter().enumerate() {
        keys.push((format!("imap[{i}].poll_interval"), &m.poll_interval));
    }
    for (key, value) in keys {
        if crate::config::parse_duration(value).is_none() {
            f.error(
                key,
                format!("'{value}' is not a duration (use e.g. \"30s\", \"5m\", \"24h\")"),
            );
        }
    }
}

/// Check a loaded configuration.
pub fn check(cfg: &Config) -> Findings {
    let mut f = Findings::default();
    check_agent(cfg, &mut f);
    check_domains(cfg, &mut f);
    check_anchors(cfg, &mut f);
    check_smtp_in(cfg, &mut f);
    check_outbound_and_imap(cfg, &mut f);
    check_discovery(cfg, &mut f);
    check_sinks(cfg, &mut f);
    if let Err(e) = crate::agent::validation::check_config(cfg) {
        f.error("hl7.profile", e);
    }
    f
}

fn check_agent(cfg: &Config, f: &mut Findings) {
    if cfg.agent.insecure_key_permissions {
        f.warning(
            "agent.insecure_key_permissions",
            "private key files readable by group or others are accepted: only for public test keys; remove it and `chmod 600` the keys",
        );
    }
    let data = &cfg.agent.data_dir;
    if !data.exists() {
        f.warning(
            "agent.data_dir",
            format!(
                "{} does not exist yet: the first command that needs the store creates it",
                data.display()
            ),
        );
    } else if !data.is_dir() {
        f.error(
            "agent.data_dir",
            format!("{} is not a directory", data.display()),
        );
    }
}

/// A file that must be readable: true when it is, else an error at `key`.
fn readable(f: &mut Findings, key: &str, path: &Path) -> bool {
    match std::fs::File::open(path) {
        Ok(_) => true,
        Err(e) => {
            f.error(
                key,
                format!(
                    "cannot read {}: {e}: check the path and its permissions",
                    path.display()
                ),
            );
            false
        }
    }
}

fn check_key_file(cfg: &Config, f: &mut Findings, key: &str, path: &Path) -> bool {
    if !readable(f, key, path) {
        return false;
    }
    if !cfg.agent.insecure_key_permissions
        && let Err(e) = check_key_permissions(path)
    {
        f.error(key, e.to_string());
    }
    true
}

fn check_domains(cfg: &Config, f: &mut Findings) {
    for (i, d) in cfg.domains.iter().enumerate() {
        if d.credentials.is_empty() {
            f.warning(
                format!("domain[{i}].credential"),
                format!(
                    "{} has no credential: it can neither sign nor decrypt; add a [[domain.credential]]",
                    d.name
                ),
            );
        }
        for (j, c) in d.credentials.iter().enumerate() {
            let at = format!("domain[{i}].credential[{j}]");
            let key_ok = check_key_file(cfg, f, &format!("{at}.key"), &c.key);
            let cert_ok = match &c.cert {
                Some(cert) => readable(f, &format!("{at}.cert"), cert),
                None => true,
            };
            if let Some(var) = &c.password_env
                && std::env::var_os(var).is_none()
            {
                f.error(
                    format!("{at}.password_env"),
                    format!(
                        "environment variable {var} is not set: export it before starting the agent"
                    ),
                );
                continue;
            }
            if !(key_ok && cert_ok) {
                continue;
            }
            match Credential::load(&c.key, c.cert.as_deref(), c.password_env.as_deref()) {
                Ok(cred) => check_credential(f, &at, &cred),
                Err(e) => {
                    let field = match &e {
                        CredentialError::NoCertificate { .. } => "cert",
                        CredentialError::PasswordNeeded { .. }
                        | CredentialError::PasswordEnvMissing { .. } => "password_env",
                        _ => "key",
                    };
                    f.error(format!("{at}.{field}"), e.to_string());
                }
            }
        }
        for (j, p) in d.intermediates.iter().enumerate() {
            if let Err(e) = load_certificates(p) {
                f.error(format!("domain[{i}].intermediates[{j}]"), e.to_string());
            }
        }
    }
}

fn check_credential(f: &mut Findings, at: &str, cred: &Credential) {
    let subject = crate::trust::describe(&cred.cert);
    if let Ok(rsa) = cred.key.rsa() {
        let bits = rsa.size() * 8;
        if bits < MIN_RSA_BITS {
            f.error(
                format!("{at}.key"),
                format!("RSA key of {bits} bits ({subject}): at least {MIN_RSA_BITS} are required; issue a new key and certificate"),
            );
        }
    }
    let (Ok(now), Ok(soon)) = (
        Asn1Time::days_from_now(0),
        Asn1Time::days_from_now(EXPIRY_WARNING_DAYS),
    ) else {
        return;
    };
    let not_after = cred.cert.not_after();
    if not_after < now {
        f.error(
            format!("{at}.cert"),
            format!("certificate {subject} expired on {not_after}: renew it"),
        );
    } else if not_after < soon {
        f.warning(
            format!("{at}.cert"),
            format!("certificate {subject} expires on {not_after} (within {EXPIRY_WARNING_DAYS} days): renew it"),
        );
    }
    if cred.cert.not_before() > now {
        f.error(
            format!("{at}.cert"),
            format!(
                "certificate {subject} is not valid before {}: check the clock or the certificate",
                cred.cert.not_before()
            ),
        );
    }
}

fn check_anchors(cfg: &Config, f: &mut Findings) {
    if cfg.domains.is_empty() {
        return;
    }
    // Checking must not create anything: without a store there are no anchors.
    if !cfg.agent.data_dir.join(crate::store::STORE_FILE).exists() {
        for (i, d) in cfg.domains.iter().enumerate() {
            f.error(
                format!("domain[{i}].anchors"),
                format!(
                    "no trust store in {} yet, so {} has no trust anchor: `direct-agent anchors add FILE --domain {}` (or subscribe a bundle)",
                    cfg.agent.data_dir.display(),
                    d.name,
                    d.name
                ),
            );
        }
        return;
    }
    let store = match crate::store::open_store(cfg) {
        Ok(s) => s,
        Err(e) => {
            f.error(
                "agent.data_dir",
                format!("cannot open the trust store: {e}"),
            );
            return;
        }
    };
    for (i, d) in cfg.domains.iter().enumerate() {
        let name = d.name.trim_end_matches('.').to_ascii_lowercase();
        let anchors = match store.anchors(Some(&name)) {
            Ok(a) => a,
            Err(e) => {
                f.error(format!("domain[{i}]"), format!("cannot read anchors: {e}"));
                continue;
            }
        };
        for (wanted, what) in [
            (Direction::Incoming, "accept messages from"),
            (Direction::Outgoing, "send messages to"),
        ] {
            if !anchors.iter().any(|a| a.direction.serves(wanted)) {
                f.error(
                    format!("domain[{i}].anchors"),
                    format!(
                        "{name} has no {} trust anchor: it cannot {what} any partner; `direct-agent anchors add FILE --domain {name}` (or subscribe a bundle)",
                        wanted.as_str()
                    ),
                );
            }
        }
    }
}

fn check_smtp_in(cfg: &Config, f: &mut Findings) {
    let s = &cfg.smtp_in;
    if let Some(cert) = &s.tls_cert
        && readable(f, "smtp_in.tls_cert", cert)
        && let Err(e) = load_certificates(cert)
    {
        f.error("smtp_in.tls_cert", e.to_string());
    }
    if let Some(key) = &s.tls_key {
        check_key_file(cfg, f, "smtp_in.tls_key", key);
    }
    if let (Some(cert), Some(key)) = (&s.tls_cert, &s.tls_key)
        && cert.exists()
        && key.exists()
        && let Err(e) = crate::transport::tls::acceptor_from_pem(cert, key)
    {
        f.error("smtp_in.tls_key", e);
    }
    for (i, l) in s.listen.iter().enumerate() {
        let Ok(addr) = l.parse::<std::net::SocketAddr>() else {
            f.error(
                format!("smtp_in.listen[{i}]"),
                format!("'{l}' is not IP:PORT"),
            );
            continue;
        };
        if let Err(e) = std::net::TcpListener::bind(addr) {
            let problem = format!("cannot listen on {addr}: {e}");
            if e.kind() == std::io::ErrorKind::AddrInUse {
                f.warning(
                    format!("smtp_in.listen[{i}]"),
                    format!("{problem}: fine if `serve` is already running; otherwise stop what holds the port"),
                );
            } else {
                f.error(
                    format!("smtp_in.listen[{i}]"),
                    format!("{problem}: ports below 1024 need CAP_NET_BIND_SERVICE (see docs/operations.md, systemd)"),
                );
            }
        }
    }
}

fn env_set(f: &mut Findings, key: String, var: &str) {
    if std::env::var_os(var).is_none() {
        f.error(
            key,
            format!("environment variable {var} is not set: export it before starting the agent"),
        );
    }
}

fn check_outbound_and_imap(cfg: &Config, f: &mut Findings) {
    if let Some(ca) = &cfg.smtp_out.tls_ca
        && readable(f, "smtp_out.tls_ca", ca)
        && let Err(e) = load_certificates(ca)
    {
        f.error("smtp_out.tls_ca", e.to_string());
    }
    for (i, r) in cfg.smtp_out.routes.iter().enumerate() {
        if let Some(var) = &r.password_env {
            env_set(f, format!("smtp_out.route[{i}].password_env"), var);
        }
    }
    for (i, m) in cfg.imap.iter().enumerate() {
        env_set(f, format!("imap[{i}].password_env"), &m.password_env);
        if let Some(ca) = &m.tls_ca
            && readable(f, &format!("imap[{i}].tls_ca"), ca)
            && let Err(e) = load_certificates(ca)
        {
            f.error(format!("imap[{i}].tls_ca"), e.to_string());
        }
    }
}

fn check_discovery(cfg: &Config, f: &mut Findings) {
    for (i, c) in cfg.discovery.certificates.iter().enumerate() {
        if let Err(e) = load_certificates(&c.file) {
            f.error(format!("discovery.certificate[{i}].file"), e.to_string());
        }
    }
}

fn check_sinks(cfg: &Config, f: &mut Findings) {
    for (i, s) in cfg.sinks.iter().enumerate() {
        let at = format!("sink[{i}]");
        match &s.kind {
            // The sink creates its folder (and missing parents); the nearest existing ancestor
            // must be a writable directory.
            SinkKind::Directory { path } => match path.ancestors().find(|p| p.exists()) {
                Some(p) if p.is_dir() => {
                    if p.metadata().is_ok_and(|m| m.permissions().readonly()) {
                        f.error(
                            format!("{at}.path"),
                            format!(
                                "{} is read-only: the sink cannot write into it",
                                p.display()
                            ),
                        );
                    }
                }
                Some(p) => f.error(
                    format!("{at}.path"),
                    format!(
                        "{} is not a directory: the sink needs a folder there",
                        p.display()
                    ),
                ),
                None => f.error(
                    format!("{at}.path"),
                    format!("no part of {} exists", path.display()),
                ),
            },
            SinkKind::Command(c) => check_program(f, &format!("{at}.program"), &c.program),
            SinkKind::Http(h) => {
                for (header, var) in &h.header_env {
                    env_set(f, format!("{at}.header_env.{header}"), var);
                }
                if let Some(var) = &h.password_env {
                    env_set(f, format!("{at}.password_env"), var);
                }
                if let Some(ca) = &h.tls_ca {
                    readable(f, &format!("{at}.tls_ca"), ca);
                }
            }
            SinkKind::Soap(s) => {
                env_set(f, format!("{at}.password_env"), &s.password_env);
                if let Some(ca) = &s.tls_ca {
                    readable(f, &format!("{at}.tls_ca"), ca);
                }
            }
            _ => {}
        }
        if let Err(e) = crate::sink::build(s) {
            f.error(at, e.to_string());
        }
    }
}

fn check_program(f: &mut Findings, key: &str, program: &Path) {
    match std::fs::metadata(program) {
        Err(e) => f.error(
            key,
            format!(
                "cannot find {}: {e}: give the program's full path",
                program.display()
            ),
        ),
        Ok(m) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if !m.is_file() || m.permissions().mode() & 0o111 == 0 {
                    f.error(
                        key,
                        format!(
                            "{} is not an executable file: chmod 755 it",
                            program.display()
                        ),
                    );
                }
            }
            #[cfg(not(unix))]
            let _ = m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_collected_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[agent]\ndata_dir = \"{d}/var\"\n\n[[domain]]\nname = \"a.example\"\nintermediates = [\"{d}/missing-int.pem\"]\n  [[domain.credential]]\n  key = \"{d}/missing.key\"\n  cert = \"{d}/missing.pem\"\n\n[[imap]]\nhost = \"imap.example\"\nusername = \"u\"\npassword_env = \"DIRECT_AGENT_TEST_UNSET_VAR\"\n\n[[sink]]\nkind = \"command\"\nprogram = \"{d}/no-such-program\"\n",
            d = dir.path().display()
        );
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let f = check_file(&path);
        let keys: Vec<&str> = f.errors.iter().map(|p| p.key.as_str()).collect();
        for want in [
            "domain[0].credential[0].key",
            "domain[0].credential[0].cert",
            "domain[0].intermediates[0]",
            "domain[0].anchors",
            "imap[0].password_env",
            "sink[0].program",
        ] {
            assert!(keys.contains(&want), "{want} missing from {:#?}", f.errors);
        }
    }

    #[test]
    fn every_bad_duration_is_reported_with_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!(
                "[agent]\ndata_dir = \"{}\"\n[smtp_out]\ntimeout = \"soon\"\nlifetime = \"forever\"\n[[sink]]\nkind = \"command\"\nprogram = \"/no/such/program\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let f = check_file(&path);
        let keys: Vec<&str> = f.errors.iter().map(|p| p.key.as_str()).collect();
        for want in ["smtp_out.lifetime", "smtp_out.timeout", "sink[0].program"] {
            assert_eq!(
                keys.iter().filter(|k| **k == want).count(),
                1,
                "{want} not reported once: {f:#?}"
            );
        }
    }

    #[test]
    fn an_unparsable_file_is_one_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[agent\n").unwrap();
        let f = check_file(&path);
        assert_eq!(f.errors.len(), 1, "{f:#?}");
        assert_eq!(f.errors[0].key, "(file)");
    }
}
