//! The agent's configuration file (TOML): `[agent]`, `[trust]` and `[[domain]]`. Every key is
//! documented in docs/configuration.md; `config/direct-agent.toml` is the example.
//!
//! Relative paths in the file are resolved against the file's own directory, so a configuration
//! can be moved together with its keys.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod http;
pub mod notify;
pub mod sinks;
pub mod transport;
pub use http::HttpConfig;
pub use notify::{MdnConfig, PartnerConfig, PingPongConfig};
pub use sinks::{
    CommandSinkConfig, Hl7Config, HttpSinkConfig, MllpSinkConfig, SinkConfig, SinkKind, SinkRole,
    SinkRoute, SoapSinkConfig,
};
pub use transport::{
    ConnTls, ImapAfter, ImapConfig, MxTls, RouteConfig, SmtpInConfig, SmtpOutConfig, parse_size,
};

/// Environment variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "DIRECT_AGENT_CONFIG";
/// The configuration file used when neither `--config` nor the environment names one.
pub const DEFAULT_CONFIG: &str = "config/direct-agent.toml";

/// Why the configuration could not be used; names the file and the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "cannot read the configuration {path}: {source} (give one with --config FILE or {CONFIG_ENV})"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax or a key of the wrong type.
    #[error("configuration {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value that parses but cannot be used.
    #[error("configuration {path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub trust: TrustConfig,
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    #[serde(default, rename = "domain")]
    pub domains: Vec<DomainConfig>,
    #[serde(default)]
    pub smtp_in: SmtpInConfig,
    #[serde(default)]
    pub smtp_out: SmtpOutConfig,
    #[serde(default)]
    pub imap: Vec<ImapConfig>,
    #[serde(default, rename = "sink")]
    pub sinks: Vec<SinkConfig>,
    #[serde(default)]
    pub mdn: MdnConfig,
    #[serde(default)]
    pub pingpong: PingPongConfig,
    #[serde(default, rename = "partner")]
    pub partners: Vec<PartnerConfig>,
    #[serde(default)]
    pub hl7: Hl7Config,
    /// `[http]`: the operations endpoint (health, readiness, metrics).
    #[serde(default)]
    pub http: HttpConfig,
    /// Where the file was read from (set by [`Config::load`]).
    #[serde(skip)]
    pub source: PathBuf,
}

/// `[agent]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Directory for the store (trust anchors, bundles, caches). Default `var`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Our host name in SMTP greetings (banner, EHLO) and generated Message-IDs. Default
    /// "localhost".
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// `test` (default) or `production`: the MSH-11 processing ID received HL7 must carry (`T`
    /// or `P`). Switch to `production` when the partner moves from test to live messages.
    #[serde(default = "default_environment")]
    pub environment: crate::hl7::validate::Environment,
    /// Accept private key files (`[[domain.credential]] key`, `smtp_in.tls_key`) that group or
    /// others may read. Default false: such a key is refused with the `chmod 600` fix. Only for
    /// public test keys (the committed `certs/`, which git checks out 0644); logged at start-up.
    #[serde(default)]
    pub insecure_key_permissions: bool,
    /// Inbound workers `serve` runs (1 to 1024). Default: chosen at start-up by timing fsyncs
    /// in `data_dir`, one to four per core (`agent::workers`).
    #[serde(default)]
    pub inbound_workers: Option<usize>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            data_dir: default_data_dir(),
            hostname: default_hostname(),
            environment: default_environment(),
            insecure_key_permissions: false,
            inbound_workers: None,
        }
    }
}

fn default_environment() -> crate::hl7::validate::Environment {
    crate::hl7::validate::Environment::Test
}

fn default_hostname() -> String {
    "localhost".into()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("var")
}

/// How revocation is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationPolicy {
    /// A certificate whose CRL cannot be had is refused (production default).
    #[default]
    Require,
    /// A CRL that cannot be fetched is logged and the certificate accepted (the Java RI's
    /// soft-fail).
    BestEffort,
    /// No revocation checking. Insecure: only for isolated test set-ups.
    Off,
}

/// `[trust]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// `require` (default), `best-effort` or `off`.
    #[serde(default)]
    pub revocation: RevocationPolicy,
    /// Fetch missing intermediates through AIA caIssuers. Default true.
    #[serde(default = "yes")]
    pub aia: bool,
    /// Timeout for each CRL, AIA or bundle fetch, e.g. "10s". Default 10 s.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout: String,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            revocation: RevocationPolicy::default(),
            aia: true,
            fetch_timeout: default_fetch_timeout(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_fetch_timeout() -> String {
    "10s".into()
}

/// `[discovery]`: finding recipients' certificates (DNS CERT, then LDAP).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// DNS servers as `IP` or `IP:PORT` (UDP and TCP); empty: the system's resolvers.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Time limit of each DNS query and each LDAP connect/search. Default 2 s.
    #[serde(default = "default_discovery_timeout")]
    pub timeout: String,
    /// DNS attempts per query. Default 2.
    #[serde(default = "default_attempts")]
    pub attempts: usize,
    /// Consult LDAP (SRV `_ldap._tcp.<domain>`) when DNS has no certificate. Default true.
    #[serde(default = "yes")]
    pub ldap: bool,
    /// Longest time a found certificate is reused (the DNS TTL when shorter). Default 1 h.
    #[serde(default = "default_cache_max")]
    pub cache_ttl_max: String,
    /// How long "nothing usable" is remembered. Default 5 m.
    #[serde(default = "default_negative")]
    pub negative_ttl: String,
    /// Certificates configured for partners that publish none (`[[discovery.certificate]]`).
    #[serde(default, rename = "certificate")]
    pub certificates: Vec<StaticCertificate>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            nameservers: Vec::new(),
            timeout: default_discovery_timeout(),
            attempts: default_attempts(),
            ldap: true,
            cache_ttl_max: default_cache_max(),
            negative_ttl: default_negative(),
            certificates: Vec::new(),
        }
    }
}

impl DiscoveryConfig {
    /// The nameservers as socket addresses (checked when loading).
    pub fn nameserver_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.nameservers
            .iter()
            .filter_map(|s| parse_nameserver(s))
            .collect()
    }
}

fn parse_nameserver(s: &str) -> Option<std::net::SocketAddr> {
    s.parse::<std::net::SocketAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(|ip| (ip, 53).into()))
}

fn default_discovery_timeout() -> String {
    "2s".into()
}
fn default_attempts() -> usize {
    2
}
fn default_cache_max() -> String {
    "1h".into()
}
fn default_negative() -> String {
    "5m".into()
}

/// A partner certificate given in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticCertificate {
    /// The Direct address or health domain it is for.
    #[serde(rename = "for")]
    pub target: String,
    /// PEM or DER certificate file.
    pub file: PathBuf,
}

/// What a credential is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Usage {
    Sign,
    Encrypt,
    #[default]
    Both,
}

/// One private key with its certificate (`[[domain.credential]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// PEM key (PKCS#8 or PKCS#1) or PKCS#12 file.
    pub key: PathBuf,
    /// Certificate followed by its chain (PEM); optional with PKCS#12.
    pub cert: Option<PathBuf>,
    /// Environment variable holding the PKCS#12 password.
    pub password_env: Option<String>,
    /// `sign`, `encrypt` or `both` (default).
    #[serde(default)]
    pub usage: Usage,
}

/// `[[domain]]`: a health domain this agent serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// The health domain, e.g. `hisp-b.example`.
    pub name: String,
    /// Our keys and certificates for this domain.
    #[serde(default, rename = "credential")]
    pub credentials: Vec<CredentialConfig>,
    /// Extra intermediate certificates offered to path building (PEM files).
    #[serde(default)]
    pub intermediates: Vec<PathBuf>,
    /// Certificate policy OIDs of which a partner's certificate must carry at least one.
    #[serde(default)]
    pub required_policies: Vec<String>,
}

impl Config {
    /// Resolve which file to read: the flag, else `DIRECT_AGENT_CONFIG`, else the default.
    pub fn locate(flag: Option<&Path>) -> PathBuf {
        match flag {
            Some(p) => p.to_path_buf(),
            None => std::env::var_os(CONFIG_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)),
        }
    }

    /// Read and check a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Config::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        cfg.resolve_paths(&base);
        cfg.source = path.to_path_buf();
        Ok(cfg)
    }

    /// Read a configuration file without its semantic checks (durations, addresses, pairs of
    /// keys), paths resolved: for `config check`, which reports the first failed check of
    /// [`Config::load`] and goes on checking everything else instead of stopping there.
    pub fn load_unchecked(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        cfg.resolve_paths(&base);
        cfg.source = path.to_path_buf();
        Ok(cfg)
    }

    /// Parse configuration text; `path` is used in messages only. Paths stay as written.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.check(path)?;
        Ok(cfg)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        parse_duration(&self.trust.fetch_timeout).ok_or_else(|| {
            invalid(
                "trust.fetch_timeout".into(),
                format!(
                    "'{}' is not a duration (use e.g. \"10s\", \"500ms\", \"2m\")",
                    self.trust.fetch_timeout
                ),
            )
        })?;
        for (key, value) in [
            ("discovery.timeout", &self.discovery.timeout),
            ("discovery.cache_ttl_max", &self.discovery.cache_ttl_max),
            ("discovery.negative_ttl", &self.discovery.negative_ttl),
        ] {
            if parse_duration(value).is_none() {
                return Err(invalid(
                    key.into(),
                    format!("'{value}' is not a duration (use e.g. \"2s\", \"5m\", \"1h\")"),
                ));
            }
        }
        for (i, ns) in self.discovery.nameservers.iter().enumerate() {
            if parse_nameserver(ns).is_none() {
                return Err(invalid(
                    format!("discovery.nameservers[{i}]"),
                    format!("'{ns}' is not IP or IP:PORT (e.g. \"127.0.0.1:5353\")"),
                ));
            }
        }
        self.check_transport(&invalid)?;
        let mut seen = std::collections::HashSet::new();
        for (i, d) in self.domains.iter().enumerate() {
            let key = format!("domain[{i}].name");
            let name = d.name.trim().trim_end_matches('.');
            if name.is_empty()
                || !name.contains('.')
                || !name.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
            {
                return Err(invalid(key, format!("'{}' is not a domain name", d.name)));
            }
            if !seen.insert(name.to_ascii_lowercase()) {
                return Err(invalid(
                    key,
                    format!("domain {} is configured twice", d.name),
                ));
            }
            for (j, oid) in d.required_policies.iter().enumerate() {
                if oid.parse::<der::asn1::ObjectIdentifier>().is_err() {
                    return Err(invalid(
                        format!("domain[{i}].required_policies[{j}]"),
                        format!(
                            "'{oid}' is not an OID (dotted digits, e.g. 1.3.6.1.4.1.41179.0.1)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_transport(
        &self,
        invalid: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let duration = |key: &str, value: &str| {
            if parse_duration(value).is_none() {
                Err(invalid(
                    key.into(),
                    format!("'{value}' is not a duration (use e.g. \"30s\", \"5m\", \"24h\")"),
                ))
            } else {
                Ok(())
            }
        };
        let s = &self.smtp_in;
        for (i, l) in s.listen.iter().enumerate() {
            if l.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    format!("smtp_in.listen[{i}]"),
                    format!("'{l}' is not IP:PORT (e.g. \"0.0.0.0:25\")"),
                ));
            }
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            return Err(invalid(
                "smtp_in.tls_cert".into(),
                "tls_cert and tls_key go together: give both or neither".into(),
            ));
        }
        if s.require_tls && s.tls_cert.is_none() {
            return Err(invalid(
                "smtp_in.require_tls".into(),
                "require_tls needs tls_cert and tls_key to offer STARTTLS".into(),
            ));
        }
        if parse_size(&s.max_size).is_none() {
            return Err(invalid(
                "smtp_in.max_size".into(),
                format!(
                    "'{}' is not a size (use e.g. \"38MiB\", \"10MB\")",
                    s.max_size
                ),
            ));
        }
        duration("smtp_in.command_timeout", &s.command_timeout)?;
        duration("smtp_in.data_timeout", &s.data_timeout)?;
        if let Some(n) = self.agent.inbound_workers
            && !(1..=1024).contains(&n)
        {
            return Err(invalid(
                "agent.inbound_workers".into(),
                format!("{n} workers: give 1 to 1024, or leave it out to let the agent choose"),
            ));
        }
        if s.max_connections == 0 || s.max_recipients == 0 {
            return Err(invalid(
                "smtp_in.max_connections".into(),
                "max_connections and max_recipients must be at least 1".into(),
            ));
        }
        let o = &self.smtp_out;
        duration("smtp_out.lifetime", &o.lifetime)?;
        duration("smtp_out.retry_initial", &o.retry_initial)?;
        duration("smtp_out.retry_max", &o.retry_max)?;
        duration("smtp_out.timeout", &o.timeout)?;
        if o.per_domain_concurrency == 0 || o.concurrency == 0 {
            return Err(invalid(
                "smtp_out.concurrency".into(),
                "concurrency and per_domain_concurrency must be at least 1".into(),
            ));
        }
        for (i, r) in o.routes.iter().enumerate() {
            if r.host.trim().is_empty() {
                return Err(invalid(
                    format!("smtp_out.route[{i}].host"),
                    "a route needs a host".into(),
                ));
            }
            if r.username.is_some() != r.password_env.is_some() {
                return Err(invalid(
                    format!("smtp_out.route[{i}].password_env"),
                    "username and password_env go together for SMTP AUTH".into(),
                ));
            }
            if r.username.is_some() && r.tls == ConnTls::None {
                return Err(invalid(
                    format!("smtp_out.route[{i}].tls"),
                    "SMTP AUTH over a plain-text connection would expose the password: use tls = \"starttls\" or \"tls\"".into(),
                ));
            }
        }
        duration("mdn.processed_timeout", &self.mdn.processed_timeout)?;
        duration("mdn.dispatched_timeout", &self.mdn.dispatched_timeout)?;
        for (i, p) in self.partners.iter().enumerate() {
            if crate::address::DirectAddress::parse(&p.address).is_err() && !p.address.contains('.')
            {
                return Err(invalid(
                    format!("partner[{i}].address"),
                    format!("'{}' is neither a Direct address nor a domain", p.address),
                ));
            }
        }
        for (i, m) in self.imap.iter().enumerate() {
            duration(&format!("imap[{i}].poll_interval"), &m.poll_interval)?;
            if m.host.trim().is_empty() || m.username.trim().is_empty() {
                return Err(invalid(
                    format!("imap[{i}].host"),
                    "an IMAP mailbox needs host and username".into(),
                ));
            }
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.agent.data_dir);
        for p in [
            &mut self.smtp_in.tls_cert,
            &mut self.smtp_in.tls_key,
            &mut self.smtp_out.tls_ca,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        for m in &mut self.imap {
            if let Some(p) = m.tls_ca.as_mut() {
                fix(p);
            }
        }
        for s in &mut self.sinks {
            for p in s.paths_mut() {
                fix(p);
            }
        }
        for c in &mut self.discovery.certificates {
            fix(&mut c.file);
        }
        for d in &mut self.domains {
            for c in &mut d.credentials {
                fix(&mut c.key);
                if let Some(cert) = c.cert.as_mut() {
                    fix(cert);
                }
            }
            for p in &mut d.intermediates {
                fix(p);
            }
        }
    }

    /// The `[[domain]]` entry for `name`, ignoring case.
    pub fn domain(&self, name: &str) -> Option<&DomainConfig> {
        self.domains
            .iter()
            .find(|d| d.name.trim_end_matches('.').eq_ignore_ascii_case(name))
    }

    /// The `[[partner]]` entry for `address` (an exact address wins over a domain entry).
    pub fn partner(&self, address: &crate::address::DirectAddress) -> Option<&PartnerConfig> {
        self.partners
            .iter()
            .find(|p| p.address.contains('@') && p.matches(address))
            .or_else(|| self.partners.iter().find(|p| p.matches(address)))
    }

    /// The fetch timeout (checked when loading).
    pub fn fetch_timeout(&self) -> Duration {
        parse_duration(&self.trust.fetch_timeout).unwrap_or(Duration::from_secs(10))
    }
}

/// Parse "500ms", "10s", "2m", "1h", "24h" (also a bare number of seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        "d" => Duration::from_secs(n.checked_mul(86_400)?),
        _ => return None,
    };
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/direct-agent.toml");
        let cfg = Config::load(&path).expect("the example configuration loads");
        assert!(cfg.domain("HISP-B.example").is_some());
        assert!(cfg.agent.data_dir.is_absolute() || cfg.agent.data_dir.starts_with("config"));
    }

    #[test]
    fn errors_name_the_key() {
        let e =
            Config::parse("[trust]\nfetch_timeout = \"soon\"\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("trust.fetch_timeout"), "{e}");
        let e = Config::parse("[[domain]]\nname = \"nodots\"\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("domain[0].name"), "{e}");
        let e =
            Config::parse("[trust]\nrevocation = \"maybe\"\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("revocation"), "{e}");
        let e = Config::parse("[agent]\ndata_dri = \"x\"\n", Path::new("x.toml")).unwrap_err();
        assert!(
            e.to_string().contains("data_dri"),
            "unknown keys are refused: {e}"
        );
        let e = Config::parse(
            "[[domain]]\nname = \"a.example\"\nrequired_policies = [\"x.y\"]\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("required_policies[0]"), "{e}");
        let e = Config::parse("[agent]\ninbound_workers = 0\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("agent.inbound_workers"), "{e}");
        let ok = Config::parse("[agent]\ninbound_workers = 6\n", Path::new("x.toml")).unwrap();
        assert_eq!(ok.agent.inbound_workers, Some(6));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("ten"), None);
    }
}
