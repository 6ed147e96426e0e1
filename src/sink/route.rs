//! Which sinks take a message: the `[[sink]]` routing keys (`senders`, `recipient_domains`,
//! `message_types`, `role`) applied to a message's sender, local recipients and HL7 message
//! types. Pure code.

use crate::address::DirectAddress;
use crate::config::{SinkConfig, SinkRole, SinkRoute};

use super::{Sink, SinkConfigError};

/// A sink with the rule saying which messages it takes.
pub struct RoutedSink {
    pub sink: Box<dyn Sink>,
    pub route: SinkRoute,
}

/// The configured sinks, in file order.
#[derive(Default)]
pub struct SinkSet {
    sinks: Vec<RoutedSink>,
}

/// What routing looks at.
pub struct RouteKey<'a> {
    pub from: &'a str,
    /// The local recipients.
    pub to: &'a [DirectAddress],
    /// `MSH-9.1^MSH-9.2` of every HL7 message in the payloads (empty: no HL7).
    pub message_types: &'a [String],
}

impl SinkSet {
    /// Build the configured sinks.
    pub fn from_config(configs: &[SinkConfig]) -> Result<SinkSet, SinkConfigError> {
        let sinks = configs
            .iter()
            .map(|c| {
                Ok(RoutedSink {
                    sink: super::build(c)?,
                    route: c.route.clone(),
                })
            })
            .collect::<Result<_, SinkConfigError>>()?;
        Ok(SinkSet { sinks })
    }

    /// Sinks that take every message (tests, embedding).
    pub fn unrouted(sinks: Vec<Box<dyn Sink>>) -> SinkSet {
        SinkSet {
            sinks: sinks
                .into_iter()
                .map(|sink| RoutedSink {
                    sink,
                    route: SinkRoute::default(),
                })
                .collect(),
        }
    }

    /// Every sink, for start-up checks.
    pub fn all(&self) -> impl Iterator<Item = &RoutedSink> {
        self.sinks.iter()
    }

    /// The sinks of `role` whose rule takes the message, in file order.
    pub fn select(&self, role: SinkRole, key: &RouteKey<'_>) -> Vec<&dyn Sink> {
        self.sinks
            .iter()
            .filter(|s| s.route.role == role && takes(&s.route, key))
            .map(|s| s.sink.as_ref())
            .collect()
    }
}

/// Whether `route` takes the message: every non-empty list matches.
pub fn takes(route: &SinkRoute, key: &RouteKey<'_>) -> bool {
    let from = DirectAddress::parse(key.from).ok();
    let sender_ok = route.senders.is_empty()
        || from.as_ref().is_some_and(|f| {
            route.senders.iter().any(|s| {
                let s = s.trim().to_ascii_lowercase();
                if s.contains('@') {
                    f.canonical() == s
                } else {
                    f.in_domain(&s)
                }
            })
        });
    let domain_ok = route.recipient_domains.is_empty()
        || key.to.iter().any(|r| {
            route
                .recipient_domains
                .iter()
                .any(|d| r.in_domain(d.trim()))
        });
    // Every HL7 message must be of a listed type, so a VXU-only sink never gets half a batch.
    let type_ok = route.message_types.is_empty()
        || (!key.message_types.is_empty()
            && key
                .message_types
                .iter()
                .all(|t| route.message_types.iter().any(|want| type_matches(want, t))));
    sender_ok && domain_ok && type_ok
}

/// `VXU^V04` matches `VXU^V04`; `ACK` matches any ACK.
fn type_matches(want: &str, have: &str) -> bool {
    let want = want.trim();
    if want.contains('^') {
        want.eq_ignore_ascii_case(have)
    } else {
        have.split('^')
            .next()
            .is_some_and(|code| code.eq_ignore_ascii_case(want))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(senders: &[&str], domains: &[&str], types: &[&str]) -> SinkRoute {
        SinkRoute {
            senders: senders.iter().map(|s| s.to_string()).collect(),
            recipient_domains: domains.iter().map(|s| s.to_string()).collect(),
            message_types: types.iter().map(|s| s.to_string()).collect(),
            role: SinkRole::Deliver,
        }
    }

    fn key<'a>(from: &'a str, to: &'a [DirectAddress], types: &'a [String]) -> RouteKey<'a> {
        RouteKey {
            from,
            to,
            message_types: types,
        }
    }

    #[test]
    fn empty_lists_take_everything() {
        let to = [DirectAddress::parse("iis@hisp-b.example").unwrap()];
        assert!(takes(&route(&[], &[], &[]), &key("a@x.example", &to, &[])));
    }

    #[test]
    fn senders_match_addresses_and_domains() {
        let to = [DirectAddress::parse("iis@hisp-b.example").unwrap()];
        let r = route(&["clinic.example", "EHR@Other.example"], &[], &[]);
        assert!(takes(&r, &key("ehr@clinic.example", &to, &[])));
        assert!(takes(&r, &key("ehr@other.example", &to, &[])));
        assert!(!takes(&r, &key("x@other.example", &to, &[])));
        assert!(!takes(&r, &key("ehr@notclinic.example", &to, &[])));
    }

    #[test]
    fn recipient_domains_match_any_local_recipient() {
        let to = [
            DirectAddress::parse("a@one.example").unwrap(),
            DirectAddress::parse("b@two.example").unwrap(),
        ];
        assert!(takes(
            &route(&[], &["two.example"], &[]),
            &key("x@y.example", &to, &[])
        ));
        assert!(!takes(
            &route(&[], &["three.example"], &[]),
            &key("x@y.example", &to, &[])
        ));
    }

    #[test]
    fn message_types_need_every_message_listed() {
        let to = [DirectAddress::parse("iis@hisp-b.example").unwrap()];
        let vxu = ["VXU^V04".to_string()];
        let mixed = ["VXU^V04".to_string(), "QBP^Q11".to_string()];
        let acks = ["ACK^V04".to_string()];
        assert!(takes(
            &route(&[], &[], &["VXU^V04"]),
            &key("x@y.example", &to, &vxu)
        ));
        assert!(!takes(
            &route(&[], &[], &["VXU^V04"]),
            &key("x@y.example", &to, &mixed)
        ));
        assert!(takes(
            &route(&[], &[], &["vxu^v04", "QBP^Q11"]),
            &key("x@y.example", &to, &mixed)
        ));
        assert!(takes(
            &route(&[], &[], &["ACK"]),
            &key("x@y.example", &to, &acks)
        ));
        // A sink limited to HL7 types does not take a message without HL7.
        assert!(!takes(
            &route(&[], &[], &["VXU^V04"]),
            &key("x@y.example", &to, &[])
        ));
    }
}
