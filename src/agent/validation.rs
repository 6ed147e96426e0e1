//! HL7 validation of a received message's payloads, with the profile configured for its sender
//! (`[[partner]] profile`, else `[hl7] profile`), and the message types routing looks at.
//!
//! Summaries and records name rule ids, locations and counts, never field values.

use crate::address::DirectAddress;
use crate::config::Config;
use crate::hl7::validate::{Options, PayloadReport, Profile, report_parsed};
use crate::mime::payload::{Payload, PayloadKind};

/// The validation profile for messages from `sender`; None for `none`.
pub fn profile_for(
    config: &Config,
    sender: Option<&DirectAddress>,
) -> Result<Option<Profile>, String> {
    let name = sender
        .and_then(|s| config.partner(s))
        .and_then(|p| p.profile.clone())
        .unwrap_or_else(|| config.hl7.profile.clone());
    parse_profile(&name)
}

/// `none`, `header` or `immunization`.
pub fn parse_profile(name: &str) -> Result<Option<Profile>, String> {
    match name.trim() {
        "none" => Ok(None),
        other => other.parse().map(Some),
    }
}

/// Every configured profile name parses (checked when `serve` starts).
pub fn check_config(config: &Config) -> Result<(), String> {
    parse_profile(&config.hl7.profile).map_err(|e| format!("[hl7] profile: {e}"))?;
    for p in &config.partners {
        if let Some(name) = &p.profile {
            parse_profile(name).map_err(|e| format!("[[partner]] {} profile: {e}", p.address))?;
        }
    }
    Ok(())
}

/// What validation found in one message's payloads.
#[derive(Debug)]
pub struct Hl7Verdict {
    /// The profile applied; None when validation is off for this sender.
    pub profile: Option<Profile>,
    /// One report per HL7 payload, in payload order (empty when off or no HL7).
    pub reports: Vec<PayloadReport>,
    /// `MSH-9.1^MSH-9.2` of each readable HL7 message.
    pub message_types: Vec<String>,
}

/// Acknowledgements and query responses answer our own messages: they are checked and the
/// findings recorded, but never refused (refusing an ACK helps nobody, and it must not be
/// answered with another ACK).
pub fn is_response(message_type: &str) -> bool {
    matches!(
        message_type.split('^').next().unwrap_or(""),
        "ACK" | "RSP" | "MFK" | "MCF"
    )
}

impl Hl7Verdict {
    /// No HL7 payload failed (or validation is off). Responses never fail.
    pub fn passed(&self) -> bool {
        self.reports.iter().all(|r| {
            r.read_error.is_none()
                && r.messages
                    .iter()
                    .all(|m| m.passed() || is_response(&m.message_type))
        })
    }

    /// `2 errors: MSH-7-PRECISION at MSH-7, NK1-MISSING` (rule ids and places only).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for r in &self.reports {
            if let Some(e) = &r.read_error {
                parts.push(format!("unreadable HL7 ({})", e));
            }
            for m in r.messages.iter().filter(|m| !is_response(&m.message_type)) {
                for f in m
                    .findings
                    .iter()
                    .filter(|f| f.severity == crate::hl7::Severity::Error)
                {
                    parts.push(match &f.location {
                        Some(l) => format!("{} at {l}", f.rule),
                        None => f.rule.to_string(),
                    });
                }
            }
        }
        let n = parts.len();
        let shown: Vec<_> = parts.into_iter().take(10).collect();
        format!(
            "{n} error{}: {}{}",
            if n == 1 { "" } else { "s" },
            shown.join(", "),
            if n > 10 { ", ..." } else { "" }
        )
    }

    /// For records and sidecars: the reports as JSON (no field values).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "profile": self.profile,
            "passed": self.passed(),
            "payloads": self.reports,
        })
    }
}

/// Validate the HL7 payloads of a message from `sender`.
pub fn check(
    config: &Config,
    sender: Option<&DirectAddress>,
    payloads: &[Payload],
    today: &str,
) -> Result<Hl7Verdict, String> {
    let profile = profile_for(config, sender)?;
    let mut reports = Vec::new();
    let mut message_types = Vec::new();
    let options = profile.map(|profile| Options {
        profile,
        environment: config.agent.environment,
        allow_v231: config.hl7.allow_v231,
        today: today.to_string(),
    });
    for p in payloads.iter().filter(|p| p.kind == PayloadKind::Hl7v2) {
        // Read once: the message types for routing and the report both come from it.
        let parsed = crate::hl7::parse_messages_bytes(&p.data);
        if let Ok(messages) = &parsed {
            for m in messages {
                let t = m.msh().message_type();
                message_types.push(format!(
                    "{}^{}",
                    t.code.as_deref().unwrap_or(""),
                    t.trigger_event.as_deref().unwrap_or("")
                ));
            }
        }
        if let Some(options) = &options {
            reports.push(report_parsed(parsed, options));
        }
    }
    Ok(Hl7Verdict {
        profile,
        reports,
        message_types,
    })
}

/// The latest date that is "today" somewhere (UTC+14), as `YYYYMMDD`: a dose dated in the
/// clinic's local date is never taken for one in the future because the agent runs in UTC.
pub fn today(now: i64) -> String {
    chrono::DateTime::from_timestamp(now + 14 * 3600, 0)
        .unwrap_or_default()
        .format("%Y%m%d")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::validate::{Environment, Options, Profile, validate_payload};

    fn verdict(payload: &str) -> Hl7Verdict {
        let options = Options {
            profile: Profile::Header,
            environment: Environment::Test,
            allow_v231: false,
            today: "20261206".into(),
        };
        Hl7Verdict {
            profile: Some(Profile::Header),
            reports: vec![validate_payload(payload.as_bytes(), &options)],
            message_types: Vec::new(),
        }
    }

    #[test]
    fn responses_are_recorded_but_never_refused() {
        // MSH-11 P while the agent is in test: refused for a VXU, not for its ACK.
        let vxu = "MSH|^~\\&|A|B|C|D|20261206120000+0000||VXU^V04^VXU_V04|1|P|2.5.1\r";
        let ack = "MSH|^~\\&|A|B|C|D|20261206120000+0000||ACK^V04^ACK|1|P|2.5.1\rMSA|AE|1\r";
        let v = verdict(vxu);
        assert!(!v.passed());
        assert!(v.summary().contains("MSH-11"), "{}", v.summary());
        let a = verdict(ack);
        assert!(!a.reports[0].passed(), "the ACK has findings");
        assert!(a.passed(), "but is not refused");
    }

    #[test]
    fn the_check_date_is_today_anywhere() {
        // 2026-12-06 20:00 UTC is already 2026-12-07 at UTC+14.
        assert_eq!(today(1796587200), "20261207");
    }

    #[test]
    fn profiles_parse() {
        assert_eq!(parse_profile("none").unwrap(), None);
        assert_eq!(
            parse_profile("immunization").unwrap(),
            Some(Profile::Immunization)
        );
        assert!(parse_profile("strict").unwrap_err().contains("strict"));
    }
}
