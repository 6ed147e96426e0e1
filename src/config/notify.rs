//! `[mdn]` (delivery notifications), `[pingpong]` (the connectivity handshake) and `[[partner]]`
//! (per-partner HL7 routing fields).

use std::time::Duration;

use serde::Deserialize;

use super::parse_duration;

/// `[mdn]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdnConfig {
    /// Send MDNs for received messages (processed; dispatched/failed when asked). Default true.
    #[serde(default = "yes")]
    pub send: bool,
    /// How long after sending a processed MDN is awaited. Default "1h".
    #[serde(default = "one_hour")]
    pub processed_timeout: String,
    /// How long after the processed MDN a requested dispatched MDN is awaited. Default "1h".
    #[serde(default = "one_hour")]
    pub dispatched_timeout: String,
}

impl Default for MdnConfig {
    fn default() -> Self {
        MdnConfig {
            send: true,
            processed_timeout: one_hour(),
            dispatched_timeout: one_hour(),
        }
    }
}

impl MdnConfig {
    pub fn processed_timeout(&self) -> Duration {
        parse_duration(&self.processed_timeout).unwrap_or(Duration::from_secs(3600))
    }
    pub fn dispatched_timeout(&self) -> Duration {
        parse_duration(&self.dispatched_timeout).unwrap_or(Duration::from_secs(3600))
    }
}

fn yes() -> bool {
    true
}
fn one_hour() -> String {
    "1h".into()
}

/// `[pingpong]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingPongConfig {
    /// Answer pings (test traffic, MSH-11 = T) with a pong. Default true.
    #[serde(default = "yes")]
    pub respond: bool,
    /// Pongs sent to one sender address per hour, at most. Default 30.
    #[serde(default = "default_pongs_per_hour")]
    pub max_pongs_per_hour: u32,
}

impl Default for PingPongConfig {
    fn default() -> Self {
        PingPongConfig {
            respond: true,
            max_pongs_per_hour: default_pongs_per_hour(),
        }
    }
}

fn default_pongs_per_hour() -> u32 {
    30
}

/// `[[partner]]`: a trading partner and the HL7 routing fields used with it. `sending_*` are
/// OUR application and facility (MSH-3/4 of what we send them, expected as MSH-5/6 of what they
/// send us); `receiving_*` are THEIRS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    /// The partner's Direct address, or its health domain.
    pub address: String,
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    /// The HL7 validation profile for messages from this partner (`none`, `header`,
    /// `immunization`); default `[hl7] profile`.
    #[serde(default)]
    pub profile: Option<String>,
}

impl PartnerConfig {
    /// Whether this entry is for `address` (exact address, else its domain).
    pub fn matches(&self, address: &crate::address::DirectAddress) -> bool {
        let a = self.address.trim().to_ascii_lowercase();
        if a.contains('@') {
            a == address.canonical()
        } else {
            address.in_domain(&a)
        }
    }
}
