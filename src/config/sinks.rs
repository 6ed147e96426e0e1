//! `[[sink]]` entries (where accepted payloads are handed on, and which messages go where) and
//! `[hl7]` (validation and ACK replies).
//!
//! A sink entry is one table: the routing keys common to every kind (`name`, `senders`,
//! `recipient_domains`, `message_types`, `role`) and the keys of its `kind`. The common keys are
//! taken out first and the rest is read as the kind's table, so a key that the kind does not know
//! is refused with its name.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// One `[[sink]]`.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// A name for logs, records and credentials; default `<kind>:<target>`.
    pub name: Option<String>,
    /// Which messages it takes.
    pub route: SinkRoute,
    /// Where it hands them.
    pub kind: SinkKind,
}

/// The routing keys of a `[[sink]]`: a message goes to a sink when every non-empty list matches.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkRoute {
    /// Sender addresses or domains (`ehr@clinic.example`, `clinic.example`); empty: any.
    #[serde(default)]
    pub senders: Vec<String>,
    /// Local recipient domains; empty: any.
    #[serde(default)]
    pub recipient_domains: Vec<String>,
    /// HL7 message types as MSH-9.1^MSH-9.2 (`VXU^V04`, `QBP^Q11`) or MSH-9.1 alone (`ACK`);
    /// empty: any, including non-HL7 payloads.
    #[serde(default)]
    pub message_types: Vec<String>,
    /// `deliver` (default): accepted messages; `fallback`: accepted messages no `deliver` sink
    /// takes; `reject`: messages that failed HL7 validation.
    #[serde(default)]
    pub role: SinkRole,
}

/// What a sink is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkRole {
    #[default]
    Deliver,
    Fallback,
    Reject,
}

/// The kind-specific part of a `[[sink]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum SinkKind {
    /// Files in a folder: payload plus a JSON sidecar, written atomically.
    Directory { path: PathBuf },
    /// An interface engine over MLLP; its HL7 ACK decides.
    Mllp(MllpSinkConfig),
    /// An HTTP(S) endpoint taking the payload as a POST body.
    Http(HttpSinkConfig),
    /// The CDC IIS web service (`submitSingleMessage`).
    Soap(SoapSinkConfig),
    /// A program given the payload on stdin and metadata in its environment.
    Command(CommandSinkConfig),
}

/// `kind = "mllp"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllpSinkConfig {
    pub host: String,
    pub port: u16,
    /// Connecting may take this long (default "10s").
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    /// The ACK must arrive within this (default "30s"); none is a transient failure.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: String,
}

/// `kind = "http"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// `http://` or `https://` URL the payload is POSTed to.
    pub url: String,
    /// Extra request headers, literal values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Extra request headers whose values are read from environment variables (header name ->
    /// variable name), e.g. `{ Authorization = "IIS_BEARER" }`.
    #[serde(default)]
    pub header_env: BTreeMap<String, String>,
    /// HTTP Basic user; the password comes from `password_env`.
    pub username: Option<String>,
    pub password_env: Option<String>,
    /// Whole request timeout (default "30s").
    #[serde(default = "default_ack_timeout")]
    pub timeout: String,
    /// PEM CA file to verify the server with (default: the system roots).
    pub tls_ca: Option<PathBuf>,
}

/// `kind = "soap"`: CDC WSDL `submitSingleMessage(username, password, facilityID, hl7Message)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoapSinkConfig {
    pub url: String,
    pub username: String,
    /// Environment variable holding the password (never in the file).
    pub password_env: String,
    #[serde(rename = "facility_id")]
    pub facility_id: String,
    #[serde(default = "default_ack_timeout")]
    pub timeout: String,
    pub tls_ca: Option<PathBuf>,
}

/// `kind = "command"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSinkConfig {
    /// The program (absolute, or relative to the configuration file).
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// Killed and retried after this long (default "60s").
    #[serde(default = "default_command_timeout")]
    pub timeout: String,
    /// Exit codes meaning "refused, do not retry" (default `[65]`, EX_DATAERR); any other
    /// non-zero exit is transient.
    #[serde(default = "default_permanent_exit")]
    pub permanent_exit_codes: Vec<i32>,
}

fn default_connect_timeout() -> String {
    "10s".into()
}
fn default_ack_timeout() -> String {
    "30s".into()
}
fn default_command_timeout() -> String {
    "60s".into()
}
fn default_permanent_exit() -> Vec<i32> {
    vec![65]
}

const ROUTE_KEYS: [&str; 4] = ["senders", "recipient_domains", "message_types", "role"];

impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(d)?;
        let name = match table.remove("name") {
            None => None,
            Some(toml::Value::String(s)) => Some(s),
            Some(_) => return Err(D::Error::custom("sink name must be a string")),
        };
        let mut route = toml::Table::new();
        for key in ROUTE_KEYS {
            if let Some(v) = table.remove(key) {
                route.insert(key.into(), v);
            }
        }
        let route = SinkRoute::deserialize(toml::Value::Table(route)).map_err(D::Error::custom)?;
        let kind = SinkKind::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)?;
        Ok(SinkConfig { name, route, kind })
    }
}

impl SinkConfig {
    /// The kind as written in the file.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            SinkKind::Directory { .. } => "directory",
            SinkKind::Mllp(_) => "mllp",
            SinkKind::Http(_) => "http",
            SinkKind::Soap(_) => "soap",
            SinkKind::Command(_) => "command",
        }
    }

    /// The configured name, or `<kind>:<target>`.
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let target = match &self.kind {
            SinkKind::Directory { path } => path.display().to_string(),
            SinkKind::Mllp(m) => format!("{}:{}", m.host, m.port),
            SinkKind::Http(h) => h.url.clone(),
            SinkKind::Soap(s) => s.url.clone(),
            SinkKind::Command(c) => c.program.display().to_string(),
        };
        format!("{}:{target}", self.kind_name())
    }

    /// Paths to resolve against the configuration file's folder.
    pub fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        match &mut self.kind {
            SinkKind::Directory { path } => vec![path],
            SinkKind::Http(h) => h.tls_ca.iter_mut().collect(),
            SinkKind::Soap(s) => s.tls_ca.iter_mut().collect(),
            SinkKind::Command(c) => vec![&mut c.program],
            SinkKind::Mllp(_) => vec![],
        }
    }
}

/// `[hl7]`: validation of received HL7 payloads and ACK replies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hl7Config {
    /// `none`, `header` or `immunization` (default `header`); `[[partner]] profile` overrides it
    /// per sender.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Accept MSH-12 = 2.3.1 as well as 2.5.1.
    #[serde(default)]
    pub allow_v231: bool,
    /// Send the HL7 ACK back to the sender as a Direct message (AA on acceptance, AE/AR with ERR
    /// segments on a validation failure; a sink's own ACK when it returns one).
    #[serde(default)]
    pub reply_with_ack: bool,
}

fn default_profile() -> String {
    "header".into()
}

impl Default for Hl7Config {
    fn default() -> Self {
        Hl7Config {
            profile: default_profile(),
            allow_v231: false,
            reply_with_ack: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        sink: Vec<SinkConfig>,
    }

    #[test]
    fn common_keys_are_split_from_the_kind() {
        let f: File = toml::from_str(
            r#"
[[sink]]
name = "iis"
kind = "mllp"
host = "127.0.0.1"
port = 2575
message_types = ["VXU^V04"]
senders = ["clinic.example"]

[[sink]]
kind = "directory"
path = "inbox"
role = "reject"
"#,
        )
        .unwrap();
        assert_eq!(f.sink[0].display_name(), "iis");
        assert!(
            matches!(&f.sink[0].kind, SinkKind::Mllp(m) if m.port == 2575 && m.ack_timeout == "30s")
        );
        assert_eq!(f.sink[0].route.message_types, ["VXU^V04"]);
        assert_eq!(f.sink[1].route.role, SinkRole::Reject);
        assert_eq!(f.sink[1].display_name(), "directory:inbox");
    }

    #[test]
    fn a_key_the_kind_does_not_know_is_named() {
        let e = toml::from_str::<File>(
            "[[sink]]\nkind = \"mllp\"\nhost = \"h\"\nport = 1\nurl = \"x\"\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("url"), "{e}");
        let e = toml::from_str::<File>("[[sink]]\nkind = \"ftp\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ftp"), "{e}");
    }
}
