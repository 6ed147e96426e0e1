//! Configuration of the running agent's transports: `[smtp_in]`, `[smtp_out]` with its
//! `[[smtp_out.route]]`s, `[[imap]]` mailboxes and `[[sink]]`s. Every key is documented in
//! docs/configuration.md.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::parse_duration;

/// `listen = "addr"` or `listen = ["addr", ...]`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// `[smtp_in]`: where partners' HISPs deliver to us.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpInConfig {
    /// Listening sockets, `IP:PORT`; one string or a list. Empty: no inbound SMTP.
    #[serde(default, deserialize_with = "one_or_many")]
    pub listen: Vec<String>,
    /// PEM certificate (with chain) offered by STARTTLS. Without it STARTTLS is not advertised.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Refuse MAIL until the client has started TLS. Default false.
    #[serde(default)]
    pub require_tls: bool,
    /// Largest message accepted, e.g. "38MiB" (default), "10MB", or bytes.
    #[serde(default = "default_max_size")]
    pub max_size: String,
    /// Time allowed for each command. Default "5m" (RFC 5321 §4.5.3.2).
    #[serde(default = "default_command_timeout")]
    pub command_timeout: String,
    /// Time allowed for the whole DATA transfer. Default "10m".
    #[serde(default = "default_data_timeout")]
    pub data_timeout: String,
    /// Concurrent connections; more wait in the accept backlog. Default 100.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Recipients per transaction. Default 100 (RFC 5321 §4.5.3.1.8).
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
}

impl Default for SmtpInConfig {
    fn default() -> Self {
        SmtpInConfig {
            listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            require_tls: false,
            max_size: default_max_size(),
            command_timeout: default_command_timeout(),
            data_timeout: default_data_timeout(),
            max_connections: default_max_connections(),
            max_recipients: default_max_recipients(),
        }
    }
}

impl SmtpInConfig {
    /// `max_size` in bytes (checked when loading).
    pub fn max_size_bytes(&self) -> usize {
        parse_size(&self.max_size).unwrap_or(38 * 1024 * 1024)
    }
    pub fn command_timeout(&self) -> Duration {
        parse_duration(&self.command_timeout).unwrap_or(Duration::from_secs(300))
    }
    pub fn data_timeout(&self) -> Duration {
        parse_duration(&self.data_timeout).unwrap_or(Duration::from_secs(600))
    }
}

fn default_max_size() -> String {
    "38MiB".into()
}
fn default_command_timeout() -> String {
    "5m".into()
}
fn default_data_timeout() -> String {
    "10m".into()
}
fn default_max_connections() -> usize {
    100
}
fn default_max_recipients() -> usize {
    100
}

/// Parse "38MiB", "10MB", "512KiB", "1GiB" or a bare number of bytes.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1024,
        "MB" => 1_000_000,
        "MiB" => 1024 * 1024,
        "GB" => 1_000_000_000,
        "GiB" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// How we use TLS towards a partner's MX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MxTls {
    /// STARTTLS must succeed with a valid certificate, else the attempt fails (default).
    #[default]
    Required,
    /// STARTTLS when offered; plain text otherwise. Weakens confidentiality of the envelope.
    Opportunistic,
}

/// TLS on a configured route or IMAP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnTls {
    /// Plain text. Only for loopback test set-ups.
    None,
    /// Plain connect, then STARTTLS (required).
    Starttls,
    /// TLS from the first byte (SMTPS 465, IMAPS 993).
    Tls,
}

/// `[smtp_out]`: delivering queued messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpOutConfig {
    /// TLS towards MX hosts: `required` (default) or `opportunistic`.
    #[serde(default)]
    pub mx_tls: MxTls,
    /// Port used for MX hosts. Default 25.
    #[serde(default = "default_mx_port")]
    pub mx_port: u16,
    /// Extra PEM CA certificates trusted for TLS to peers (besides the system's).
    pub tls_ca: Option<PathBuf>,
    /// How long a message is retried before it fails. Default "24h".
    #[serde(default = "default_lifetime")]
    pub lifetime: String,
    /// First retry delay; doubled each attempt, with jitter. Default "1m".
    #[serde(default = "default_retry_initial")]
    pub retry_initial: String,
    /// Longest delay between attempts. Default "1h".
    #[serde(default = "default_retry_max")]
    pub retry_max: String,
    /// Time limit for the connection and each SMTP command. Default "60s".
    #[serde(default = "default_smtp_timeout")]
    pub timeout: String,
    /// Deliveries in flight to one domain. Default 4.
    #[serde(default = "default_per_domain")]
    pub per_domain_concurrency: usize,
    /// Deliveries in flight in all. Default 16.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Routes that override MX lookup for a domain.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
}

impl Default for SmtpOutConfig {
    fn default() -> Self {
        SmtpOutConfig {
            mx_tls: MxTls::default(),
            mx_port: default_mx_port(),
            tls_ca: None,
            lifetime: default_lifetime(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            timeout: default_smtp_timeout(),
            per_domain_concurrency: default_per_domain(),
            concurrency: default_concurrency(),
            routes: Vec::new(),
        }
    }
}

impl SmtpOutConfig {
    pub fn lifetime(&self) -> Duration {
        parse_duration(&self.lifetime).unwrap_or(Duration::from_secs(86_400))
    }
    pub fn retry_initial(&self) -> Duration {
        parse_duration(&self.retry_initial).unwrap_or(Duration::from_secs(60))
    }
    pub fn retry_max(&self) -> Duration {
        parse_duration(&self.retry_max).unwrap_or(Duration::from_secs(3600))
    }
    pub fn timeout(&self) -> Duration {
        parse_duration(&self.timeout).unwrap_or(Duration::from_secs(60))
    }
    /// The route for `domain`, if one is configured (case-insensitive).
    pub fn route_for(&self, domain: &str) -> Option<&RouteConfig> {
        self.routes
            .iter()
            .find(|r| r.domain.eq_ignore_ascii_case(domain) || r.domain == "*")
    }
}

fn default_mx_port() -> u16 {
    25
}
fn default_lifetime() -> String {
    "24h".into()
}
fn default_retry_initial() -> String {
    "1m".into()
}
fn default_retry_max() -> String {
    "1h".into()
}
fn default_smtp_timeout() -> String {
    "60s".into()
}
fn default_per_domain() -> usize {
    4
}
fn default_concurrency() -> usize {
    16
}

/// `[[smtp_out.route]]`: deliver mail for `domain` to a fixed host (a HISP's submission port, a
/// relay) instead of its MX. `domain = "*"` routes everything (an edge sending via its HISP).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub domain: String,
    pub host: String,
    #[serde(default = "default_mx_port")]
    pub port: u16,
    /// `none`, `starttls` (default) or `tls`.
    #[serde(default = "default_route_tls")]
    pub tls: ConnTls,
    /// SMTP AUTH user name (submission to a HISP).
    pub username: Option<String>,
    /// Environment variable holding the AUTH password.
    pub password_env: Option<String>,
    /// Name of the credential for `credentials list|reset`; default `smtp:<domain>`.
    pub name: Option<String>,
}

impl RouteConfig {
    /// The name this route's credential is known by.
    pub fn credential_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("smtp:{}", self.domain))
    }
}

fn default_route_tls() -> ConnTls {
    ConnTls::Starttls
}

/// What is done with a mailbox message once it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImapAfter {
    /// Set \Seen (default).
    #[default]
    Seen,
    /// Move to `processed_mailbox`.
    Move,
}

/// `[[imap]]`: a HISP mailbox polled by an edge agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    /// Name for `credentials list|reset` and logs; default `imap:<username>@<host>`.
    pub name: Option<String>,
    pub host: String,
    /// Default 993.
    #[serde(default = "default_imap_port")]
    pub port: u16,
    /// `tls` (default), `starttls` or `none`.
    #[serde(default = "default_imap_tls")]
    pub tls: ConnTls,
    pub username: String,
    /// Environment variable holding the password.
    pub password_env: String,
    /// Default "INBOX".
    #[serde(default = "default_mailbox")]
    pub mailbox: String,
    /// Time between polls (when IDLE is not used or not supported). Default "60s".
    #[serde(default = "default_poll_interval")]
    pub poll_interval: String,
    /// Use IDLE when the server offers it. Default true.
    #[serde(default = "yes")]
    pub idle: bool,
    /// `seen` (default) or `move`.
    #[serde(default)]
    pub after: ImapAfter,
    /// Target of `after = "move"`. Default "Processed".
    #[serde(default = "default_processed")]
    pub processed_mailbox: String,
    /// Extra PEM CA certificates trusted for this server's TLS.
    pub tls_ca: Option<PathBuf>,
}

impl ImapConfig {
    pub fn credential_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("imap:{}@{}", self.username, self.host))
    }
    pub fn poll_interval(&self) -> Duration {
        parse_duration(&self.poll_interval).unwrap_or(Duration::from_secs(60))
    }
}

fn yes() -> bool {
    true
}
fn default_imap_port() -> u16 {
    993
}
fn default_imap_tls() -> ConnTls {
    ConnTls::Tls
}
fn default_mailbox() -> String {
    "INBOX".into()
}
fn default_poll_interval() -> String {
    "60s".into()
}
fn default_processed() -> String {
    "Processed".into()
}
