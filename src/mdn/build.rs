//! Building MDNs: what a received message asks for ([`requested`]) and the inner RFC 5322
//! message of a `processed`, `dispatched` or `failed` notification ([`build_mdn`]), ready for
//! [`crate::message::seal_inner`]. Written with CRLF and 7-bit text so it signs canonically.

use crate::address::DirectAddress;
use crate::clock::Clock;
use crate::mdn::FINAL_DESTINATION_DELIVERY;
use crate::mdn::parse::angle_message_id;
use crate::mime::build::{new_message_id, random_hex};

/// The disposition an MDN reports (RFC 8098 §3.2.6.2, and `failed` from the Direct IG).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// The message passed security and trust and was accepted for processing.
    Processed,
    /// The payload reached its final destination (for us: a sink accepted it).
    Dispatched,
    /// The payload could not be delivered. `reason` goes into the `Failure:` field, so it must
    /// not carry PHI (say what failed, not what the message held).
    Failed { reason: String },
}

impl Disposition {
    /// The disposition-type keyword on the wire.
    pub fn keyword(&self) -> &'static str {
        match self {
            Disposition::Processed => "processed",
            Disposition::Dispatched => "dispatched",
            Disposition::Failed { .. } => "failed",
        }
    }
}

/// Whom an MDN answers and what it reports on.
#[derive(Clone, Debug)]
pub struct MdnRequest {
    /// The Message-ID of the message being answered (angle brackets optional).
    pub original_message_id: String,
    /// The sender of the original message: the MDN goes to this address.
    pub original_sender: DirectAddress,
    /// The recipient of the original message (us): the MDN comes from this address.
    pub final_recipient: DirectAddress,
    /// The address from the original message's Original-Recipient header or ORCPT, when known.
    pub original_recipient: Option<String>,
    /// The sender asked for timely and reliable delivery (`X-DIRECT-FINAL-DESTINATION-DELIVERY`).
    pub final_destination_requested: bool,
}

/// An MDN's inner message and its Message-ID.
#[derive(Clone, Debug)]
pub struct BuiltMdn {
    /// The inner RFC 5322 message (headers and body, CRLF), to be sealed with `seal_inner`.
    pub inner: Vec<u8>,
    /// Its Message-ID, `<...>`.
    pub message_id: String,
}

/// What a received message asks for in its (protected) headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationRequest {
    /// Where the sender wants notifications: the Disposition-Notification-To address, or, when
    /// only the Direct option is present, the From address (the Direct IG sends MDNs to the
    /// original sender). The bare address when it parses as one, else the header value.
    pub to: String,
    /// `X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true` (or `required,true`) was asked:
    /// `dispatched` or `failed` must follow `processed`.
    pub final_destination: bool,
}

/// The inner RFC 5322 message of an MDN, to be sealed with
/// [`seal_inner`](crate::message::seal_inner): From the final recipient (us), To the original
/// sender, a fresh Message-ID in our domain, In-Reply-To and References naming the original
/// message, and a `multipart/report; report-type=disposition-notification` body: a human-readable
/// part without PHI, then the `message/disposition-notification` fields. It carries no
/// Disposition-Notification-To (an MDN is never answered).
///
/// `reporting_ua_host` names this host in `Reporting-UA` (the final recipient's domain when
/// empty).
pub fn build_mdn(
    req: &MdnRequest,
    disposition: &Disposition,
    reporting_ua_host: &str,
    clock: &dyn Clock,
) -> BuiltMdn {
    let message_id = new_message_id(req.final_recipient.domain());
    let date = chrono::DateTime::<chrono::Utc>::from(clock.now()).to_rfc2822();
    let original_id = angle_message_id(&req.original_message_id)
        .map(|id| ascii_line(&id, 500))
        .unwrap_or_else(|| "<unknown>".into());
    let from = ascii_line(&req.final_recipient.to_string(), 300);
    let to = ascii_line(&req.original_sender.to_string(), 300);
    let keyword = disposition.keyword();
    let boundary = format!("----=_direct_mdn_{}", random_hex(12));

    let mut m = String::with_capacity(2048);
    field(&mut m, "Date", &date);
    field(&mut m, "Message-ID", &message_id);
    field(&mut m, "From", &from);
    field(&mut m, "To", &to);
    let subject = format!("{}: message disposition notification", capitalised(keyword));
    field(&mut m, "Subject", &subject);
    field(&mut m, "MIME-Version", "1.0");
    field(&mut m, "In-Reply-To", &original_id);
    field(&mut m, "References", &original_id);
    let content_type =
        format!("multipart/report; report-type=disposition-notification; boundary=\"{boundary}\"");
    field(&mut m, "Content-Type", &content_type);
    m.push_str("\r\n");

    // Part 1: for people. Names the message and the disposition, never the content.
    m.push_str(&format!("--{boundary}\r\n"));
    field(&mut m, "Content-Type", "text/plain; charset=us-ascii");
    field(&mut m, "Content-Transfer-Encoding", "7bit");
    m.push_str("\r\n");
    let what = match disposition {
        Disposition::Processed => "was received and processed: it passed security and trust checks",
        Disposition::Dispatched => "was delivered to its final destination",
        Disposition::Failed { .. } => "could not be delivered to its final destination",
    };
    m.push_str(&format!(
        "The message {original_id} sent to {from} {what}.\r\n\
         Disposition: {keyword}.\r\n\
         This is an automatically generated notification; do not reply.\r\n"
    ));

    // Part 2: for machines (RFC 8098 §3.1).
    m.push_str(&format!("--{boundary}\r\n"));
    field(&mut m, "Content-Type", "message/disposition-notification");
    field(&mut m, "Content-Transfer-Encoding", "7bit");
    m.push_str("\r\n");
    let host = ascii_line(reporting_ua_host, 200).replace(';', " ");
    let host = match host.trim() {
        "" => req.final_recipient.domain().to_string(),
        h => h.to_string(),
    };
    let ua = format!("{host}; direct-agent/{}", env!("CARGO_PKG_VERSION"));
    field(&mut m, "Reporting-UA", &ua);
    if let Some(orig) = req
        .original_recipient
        .as_deref()
        .map(recipient_address)
        .filter(|a| !a.is_empty())
    {
        field(&mut m, "Original-Recipient", &format!("rfc822;{orig}"));
    }
    field(&mut m, "Final-Recipient", &format!("rfc822;{from}"));
    field(&mut m, "Original-Message-ID", &original_id);
    let disposition_value = format!("automatic-action/MDN-sent-automatically;{keyword}");
    field(&mut m, "Disposition", &disposition_value);
    let extension = matches!(
        disposition,
        Disposition::Dispatched | Disposition::Failed { .. }
    ) && req.final_destination_requested;
    if extension {
        // The IG gives the extension field an empty value.
        field(&mut m, FINAL_DESTINATION_DELIVERY, "");
    }
    if let Disposition::Failed { reason } = disposition {
        let reason = match ascii_line(reason, 500) {
            r if r.trim().is_empty() => "delivery to the final destination failed".to_string(),
            r => r,
        };
        field(&mut m, "Failure", &reason);
    }
    m.push_str(&format!("--{boundary}--\r\n"));
    BuiltMdn {
        inner: m.into_bytes(),
        message_id,
    }
}

/// Read a message's request for notifications from its (inner, protected) headers.
///
/// `Some` when Disposition-Notification-To is present, or when Disposition-Notification-Options
/// asks for the Direct final-destination extension (the .NET and Java RIs honour that option on
/// its own). `final_destination` is true only for a well-formed
/// `X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true` or `required,true` parameter; a malformed
/// options header still yields a request, for `processed` only.
pub fn requested<N: AsRef<str>, V: AsRef<str>>(headers: &[(N, V)]) -> Option<NotificationRequest> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.as_ref().trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref().trim())
    };
    let final_destination = headers
        .iter()
        .filter(|(n, _)| {
            n.as_ref()
                .trim()
                .eq_ignore_ascii_case("Disposition-Notification-Options")
        })
        .any(|(_, v)| asks_final_destination(v.as_ref()));
    let to = match header("Disposition-Notification-To").filter(|v| !v.is_empty()) {
        Some(to) => to,
        None if final_destination => header("From").filter(|v| !v.is_empty())?,
        None => return None,
    };
    let to = DirectAddress::parse(to)
        .map(|a| a.to_string())
        .unwrap_or_else(|_| to.to_string());
    Some(NotificationRequest {
        to,
        final_destination,
    })
}

/// RFC 8098 §2.2: `parameter *(";" parameter)`, `parameter = attribute "=" importance ","
/// value *("," value)`. True when the Direct parameter is present, well formed and `true`.
fn asks_final_destination(options: &str) -> bool {
    let unquote = |s: &str| {
        let s = s.trim();
        s.strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(s)
            .trim()
            .to_string()
    };
    options.split(';').any(|parameter| {
        let Some((attribute, rest)) = parameter.split_once('=') else {
            return false;
        };
        if !attribute
            .trim()
            .eq_ignore_ascii_case(FINAL_DESTINATION_DELIVERY)
        {
            return false;
        }
        let mut values = rest.split(',').map(unquote);
        let importance = values.next().unwrap_or_default();
        let first = values.next().unwrap_or_default();
        (importance.eq_ignore_ascii_case("optional") || importance.eq_ignore_ascii_case("required"))
            && first.eq_ignore_ascii_case("true")
    })
}

/// Append `name: value` CRLF (`name:` alone for an empty value).
pub(crate) fn field(m: &mut String, name: &str, value: &str) {
    m.push_str(name);
    m.push(':');
    if !value.is_empty() {
        m.push(' ');
        m.push_str(value);
    }
    m.push_str("\r\n");
}

/// `rfc822;addr`, `<addr>` or `addr` -> `addr` (for the Original-Recipient field we write).
fn recipient_address(value: &str) -> String {
    let v = value.split_once(';').map_or(value, |(_, a)| a).trim();
    let v = v
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .unwrap_or(v);
    ascii_line(v.trim(), 300)
}

/// One line of printable ASCII, at most `max` characters: control characters are dropped and
/// anything else outside ASCII becomes `?`, so a header stays a single 7-bit line.
pub(crate) fn ascii_line(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| if c.is_ascii() { c } else { '?' })
        .take(max)
        .collect()
}

fn capitalised(word: &str) -> String {
    let mut c = word.chars();
    match c.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::mdn::parse::{DispositionKind, Report, parse_report};
    use crate::mime::entity::{Entity, multipart_parts};

    fn request(final_destination: bool) -> MdnRequest {
        MdnRequest {
            original_message_id: "abc123@hisp-a.example".into(),
            original_sender: DirectAddress::parse("ehr@hisp-a.example").unwrap(),
            final_recipient: DirectAddress::parse("IIS@hisp-b.example").unwrap(),
            original_recipient: Some("rfc822; iis@hisp-b.example".into()),
            final_destination_requested: final_destination,
        }
    }

    fn clock() -> FixedClock {
        FixedClock::at_unix(1_767_225_600) // 2026-01-01
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn built_mdn_round_trips_for_every_disposition() {
        let cases = [
            Disposition::Processed,
            Disposition::Dispatched,
            Disposition::Failed {
                reason: "the sink refused the payload (HTTP 503)".into(),
            },
        ];
        for disposition in &cases {
            for final_destination in [false, true] {
                let case = format!("{disposition:?} final_destination={final_destination}");
                let built = build_mdn(
                    &request(final_destination),
                    disposition,
                    "mx.hisp-b.example",
                    &clock(),
                );
                assert!(
                    built.message_id.starts_with('<')
                        && built.message_id.ends_with("@hisp-b.example>")
                );
                let Ok(Report::Mdn(r)) = parse_report(&built.inner) else {
                    panic!("{case}: not parsed as an MDN");
                };
                assert_eq!(
                    r.original_message_id.as_deref(),
                    Some("<abc123@hisp-a.example>")
                );
                assert_eq!(r.final_recipient.as_deref(), Some("iis@hisp-b.example"));
                assert_eq!(r.original_recipient.as_deref(), Some("iis@hisp-b.example"));
                assert_eq!(
                    r.reporting_ua.as_deref(),
                    Some(
                        format!(
                            "mx.hisp-b.example; direct-agent/{}",
                            env!("CARGO_PKG_VERSION")
                        )
                        .as_str()
                    )
                );
                assert_eq!(r.disposition.action_mode, "automatic-action");
                assert_eq!(r.disposition.sending_mode, "mdn-sent-automatically");
                let (kind, extension) = match disposition {
                    Disposition::Processed => (DispositionKind::Processed, false),
                    Disposition::Dispatched => (DispositionKind::Dispatched, final_destination),
                    Disposition::Failed { .. } => (DispositionKind::Failed, final_destination),
                };
                assert_eq!(r.disposition.kind, kind, "{case}");
                assert!(r.disposition.modifiers.is_empty(), "{case}");
                assert_eq!(r.final_destination_extension, extension, "{case}");
                assert_eq!(
                    r.failure.as_deref(),
                    matches!(disposition, Disposition::Failed { .. })
                        .then_some("the sink refused the payload (HTTP 503)"),
                    "{case}"
                );
            }
        }
    }

    #[test]
    fn built_mdn_has_the_headers_the_ig_asks_for_and_no_phi() {
        let built = build_mdn(
            &request(true),
            &Disposition::Dispatched,
            "mx.hisp-b.example",
            &clock(),
        );
        assert!(
            !built
                .inner
                .windows(2)
                .any(|w| w[1] == b'\n' && w[0] != b'\r'),
            "CRLF only"
        );
        assert!(built.inner.iter().all(|b| b.is_ascii()), "7-bit only");
        let e = Entity::parse(&built.inner);
        assert_eq!(e.header("From"), Some("IIS@hisp-b.example"));
        assert_eq!(e.header("To"), Some("ehr@hisp-a.example"));
        assert_eq!(e.header("Message-ID"), Some(built.message_id.as_str()));
        assert_eq!(e.header("In-Reply-To"), Some("<abc123@hisp-a.example>"));
        assert_eq!(e.header("References"), Some("<abc123@hisp-a.example>"));
        assert_eq!(
            e.header("Subject"),
            Some("Dispatched: message disposition notification")
        );
        assert_eq!(e.header("MIME-Version"), Some("1.0"));
        assert!(e.header("Date").is_some());
        assert!(e.header("Disposition-Notification-To").is_none());
        assert!(e.header("Disposition-Notification-Options").is_none());
        let ct = e.content_type();
        assert!(ct.is("multipart/report"));
        assert_eq!(ct.param("report-type"), Some("disposition-notification"));
        let parts = multipart_parts(e.body, ct.param("boundary").unwrap()).unwrap();
        assert_eq!(parts.len(), 2);
        let human = Entity::parse(parts[0]);
        assert!(human.content_type().is("text/plain"));
        let text = String::from_utf8_lossy(human.body);
        assert!(text.contains("<abc123@hisp-a.example>") && text.contains("dispatched"));
        let fields = Entity::parse(parts[1]);
        assert!(fields.content_type().is("message/disposition-notification"));
        let body = String::from_utf8_lossy(fields.body);
        // The last field; its CRLF belongs to the closing delimiter (RFC 2046 §5.1.1).
        assert!(
            body.ends_with("\r\nX-DIRECT-FINAL-DESTINATION-DELIVERY:"),
            "{body}"
        );
        assert!(
            body.contains("Disposition: automatic-action/MDN-sent-automatically;dispatched\r\n")
        );
        assert!(body.contains("Final-Recipient: rfc822;IIS@hisp-b.example\r\n"));
        assert!(body.contains("Original-Recipient: rfc822;iis@hisp-b.example\r\n"));
    }

    #[test]
    fn failure_reason_stays_one_ascii_line() {
        let built = build_mdn(
            &MdnRequest {
                original_recipient: None,
                ..request(true)
            },
            &Disposition::Failed {
                reason: "line one\r\nInjected: header\u{e9}".into(),
            },
            "",
            &clock(),
        );
        let Ok(Report::Mdn(r)) = parse_report(&built.inner) else {
            panic!("not an MDN");
        };
        assert_eq!(r.failure.as_deref(), Some("line oneInjected: header?"));
        assert_eq!(r.original_recipient, None);
        assert!(
            r.reporting_ua
                .unwrap()
                .starts_with("hisp-b.example; direct-agent/"),
            "an empty host falls back to our domain"
        );
    }

    #[test]
    fn requested_reads_the_direct_option() {
        let good = headers(&[
            ("From", "ehr@hisp-a.example"),
            (
                "Disposition-Notification-To",
                "\"EHR\" <ehr@hisp-a.example>",
            ),
            (
                "Disposition-Notification-Options",
                "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true",
            ),
        ]);
        assert_eq!(
            requested(&good),
            Some(NotificationRequest {
                to: "ehr@hisp-a.example".into(),
                final_destination: true
            })
        );
        for options in [
            "x-direct-final-destination-delivery = required , TRUE",
            "signed-receipt-protocol=optional,pkcs7-signature; X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true",
            "X-DIRECT-FINAL-DESTINATION-DELIVERY=\"optional\",\"true\"",
        ] {
            let h = headers(&[
                ("disposition-notification-to", "ehr@hisp-a.example"),
                ("DISPOSITION-NOTIFICATION-OPTIONS", options),
            ]);
            assert!(requested(&h).unwrap().final_destination, "{options}");
        }
    }

    #[test]
    fn requested_with_malformed_options_is_processed_only() {
        for options in [
            "X-DIRECT-FINAL-DESTINATION-DELIVERY",
            "X-DIRECT-FINAL-DESTINATION-DELIVERY=true",
            "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional",
            "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,false",
            "X-DIRECT-FINAL-DESTINATION-DELIVERY=sometimes,true",
            "X-DIRECT-FINAL-DESTINATION-DELIVERY-NOT=optional,true",
            ";;;==,,",
            "",
        ] {
            let h = headers(&[
                ("Disposition-Notification-To", "ehr@hisp-a.example"),
                ("Disposition-Notification-Options", options),
            ]);
            assert_eq!(
                requested(&h),
                Some(NotificationRequest {
                    to: "ehr@hisp-a.example".into(),
                    final_destination: false
                }),
                "{options}"
            );
        }
    }

    #[test]
    fn requested_without_request_headers_is_none() {
        assert_eq!(requested::<String, String>(&[]), None);
        assert_eq!(
            requested(&headers(&[
                ("From", "ehr@hisp-a.example"),
                ("Disposition-Notification-To", "  "),
                (
                    "Disposition-Notification-Options",
                    "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,false"
                ),
            ])),
            None
        );
        // The Direct option alone asks for notifications to the sender.
        assert_eq!(
            requested(&headers(&[
                ("From", "EHR <ehr@hisp-a.example>"),
                (
                    "Disposition-Notification-Options",
                    "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true"
                ),
            ])),
            Some(NotificationRequest {
                to: "ehr@hisp-a.example".into(),
                final_destination: true
            })
        );
        // An unparsable address is passed on as written.
        assert_eq!(
            requested(&headers(&[("Disposition-Notification-To", "postmaster")])).map(|r| r.to),
            Some("postmaster".into())
        );
    }
}
