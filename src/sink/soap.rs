//! The `soap` sink: HL7 v2 messages submitted to an immunization information system through the
//! CDC IIS web service (WSDL "CDC IIS 2011", SOAP 1.2, namespace `urn:cdc:iisb:2011`), one
//! `submitSingleMessage(username, password, facilityID, hl7Message)` call per HL7 message. The
//! answer's `submitSingleMessageResponse/return` holds the IIS's HL7 ACK, whose MSA-1 decides.
//!
//! The response is read by a small tolerant extractor (element by local name, any prefix, entity
//! and CDATA unescaping) rather than an XML library: the agent needs two or three elements of a
//! fixed, shallow envelope (`return`, `Fault` with its `Code` and `Detail`), and misreading a
//! malformed answer can only make it a transient failure, never an acceptance. The request is
//! written from a template with every value XML-escaped; carriage returns (the HL7 segment
//! terminator) are written as `&#13;` because XML parsers turn a literal CR into LF.
//!
//! Outcomes: MSA-1 AA/CA accepted (the ACK kept); AE/AR/CE/CR permanent with the ACK (the reason
//! names MSA-1 and the ERR-3 codes, never ERR-8 text); `SecurityFault` or HTTP 401/403
//! [`SinkOutcome::CredentialRejected`] (never retried: IIS accounts lock after two failed
//! logins); `MessageTooLargeFault` and `UnsupportedOperationFault` permanent; other faults, 5xx,
//! timeouts and connection failures transient. The password and the message never appear in a
//! reason or a log.
//!
//! Non-HL7 payloads of a message (a Direct Context `metadata.txt`, attachments) are not sent.
//! After a message is refused (AE/AR) the following ones are still submitted, since the IIS
//! judges each on its own; a transient failure or a refused credential stops the call sequence.

use std::borrow::Cow;

use ureq::http::{HeaderName, HeaderValue};

use super::http::{Answer, HttpClient, secret_from_env};
use super::{Sink, SinkConfigError, SinkDelivery, SinkOutcome};
use crate::config::SoapSinkConfig;
use crate::hl7::parse_messages_bytes;
use crate::mime::payload::PayloadKind;

/// The SOAP 1.2 media type with the `submitSingleMessage` action.
const CONTENT_TYPE: &str =
    "application/soap+xml; charset=utf-8; action=\"urn:cdc:iisb:2011:submitSingleMessage\"";

/// Largest answer read (an ACK with its envelope is a few KiB).
const MAX_ANSWER_BYTES: u64 = 4 * 1024 * 1024;

/// Submits HL7 messages to a CDC IIS 2011 web service.
pub struct SoapSink {
    name: String,
    client: HttpClient,
    username: String,
    password_env: String,
    facility_id: String,
}

impl SoapSink {
    /// A `soap` sink named `name` (its display name) from its configuration.
    pub fn new(name: &str, config: &SoapSinkConfig) -> Result<SoapSink, SinkConfigError> {
        let fail = |reason: String| SinkConfigError {
            name: name.to_string(),
            reason,
        };
        let client = HttpClient::new(
            &config.url,
            &config.timeout,
            config.tls_ca.as_deref(),
            &fail,
        )?;
        for (key, value) in [
            ("username", &config.username),
            ("password_env", &config.password_env),
            ("facility_id", &config.facility_id),
        ] {
            if value.trim().is_empty() {
                return Err(fail(format!("{key} is empty")));
            }
            if xml_escape(value).is_err() {
                return Err(fail(format!(
                    "{key} holds a control character XML cannot carry"
                )));
            }
        }
        Ok(SoapSink {
            name: name.to_string(),
            client,
            username: config.username.clone(),
            password_env: config.password_env.clone(),
            facility_id: config.facility_id.clone(),
        })
    }

    fn refused_credential(&self, what: &str) -> SinkOutcome {
        SinkOutcome::CredentialRejected(format!(
            "POST {} answered {what}: the credential of user {} was refused; it is disabled until \
             an operator runs `direct-agent credentials reset sink:{}`",
            self.client.url, self.username, self.name
        ))
    }

    /// Submit one HL7 message (`number` counts from 1 across the delivery, for reasons).
    fn submit(&self, password: &str, hl7: &str, number: usize) -> Submitted {
        let url = &self.client.url;
        let envelope = match envelope(&self.username, password, &self.facility_id, hl7) {
            Ok(e) => e,
            Err(()) => {
                return Submitted::Done(SinkOutcome::permanent(format!(
                    "HL7 message {number} holds a control character XML 1.0 cannot carry; not sent"
                )));
            }
        };
        let headers = [(
            HeaderName::from_static("content-type"),
            HeaderValue::from_static(CONTENT_TYPE),
        )];
        let answer = match self
            .client
            .post(&headers, envelope.as_bytes(), Some(MAX_ANSWER_BYTES))
        {
            Ok(a) => a,
            Err(why) => return Submitted::Done(SinkOutcome::Transient(why)),
        };
        self.judge(&answer, number, url)
    }

    fn judge(&self, answer: &Answer, number: usize, url: &str) -> Submitted {
        let line = answer.status_line();
        let text = String::from_utf8_lossy(&answer.body);
        if let Some(fault) = Fault::find(&text) {
            let what = format!("HTTP {line} with SOAP fault {}", fault.describe());
            return Submitted::Done(match fault.kind {
                FaultKind::Security => self.refused_credential(&what),
                FaultKind::MessageTooLarge | FaultKind::UnsupportedOperation => {
                    SinkOutcome::permanent(format!(
                        "POST {url} answered {what} for HL7 message {number}"
                    ))
                }
                FaultKind::Other => SinkOutcome::Transient(format!(
                    "POST {url} answered {what} for HL7 message {number}"
                )),
            });
        }
        match answer.status {
            200..=299 => {}
            401 | 403 => return Submitted::Done(self.refused_credential(&format!("HTTP {line}"))),
            300..=399 => {
                let to = answer.redirect_target();
                return Submitted::Done(SinkOutcome::permanent(format!(
                    "POST {url} answered {line}: redirect to {to} not followed; configure the \
                     final URL"
                )));
            }
            400..=499 => {
                return Submitted::Done(SinkOutcome::permanent(format!(
                    "POST {url} refused HL7 message {number} with {line}"
                )));
            }
            _ => {
                return Submitted::Done(SinkOutcome::Transient(format!(
                    "POST {url} answered {line}"
                )));
            }
        }
        let Some(ack) = element(&text, "submitSingleMessageResponse")
            .and_then(|r| element(r, "return"))
            .map(unescape)
        else {
            return Submitted::Done(SinkOutcome::Transient(format!(
                "POST {url} answered {line} without submitSingleMessageResponse/return"
            )));
        };
        let ack = ack.into_owned();
        let Some(verdict) = AckVerdict::read(&ack) else {
            return Submitted::Done(SinkOutcome::Transient(format!(
                "POST {url} answered {line} but its return is not an HL7 ACK with MSA-1"
            )));
        };
        if matches!(verdict.code.as_str(), "AA" | "CA") {
            Submitted::Accepted { ack, verdict }
        } else {
            Submitted::Refused {
                reason: format!(
                    "the IIS refused HL7 message {number}: MSA-1 {}{}",
                    verdict.code,
                    verdict.errors()
                ),
                ack,
            }
        }
    }
}

/// How one `submitSingleMessage` call went.
enum Submitted {
    Accepted {
        ack: String,
        verdict: AckVerdict,
    },
    /// MSA-1 AE/AR/CE/CR: this message is refused; the others may still go.
    Refused {
        reason: String,
        ack: String,
    },
    /// Stop the delivery with this outcome.
    Done(SinkOutcome),
}

impl Sink for SoapSink {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn credential(&self) -> Option<String> {
        Some(format!("sink:{}", self.name))
    }

    fn deliver(&self, d: &SinkDelivery<'_>) -> SinkOutcome {
        let password = match secret_from_env("password_env", &self.password_env) {
            Ok(p) => p,
            Err(why) => return SinkOutcome::CredentialRejected(why),
        };
        let mut acks = Vec::new();
        let mut refusals = Vec::new();
        let mut accepted = Vec::new();
        let mut number = 0;
        for (i, p) in d.payloads.iter().enumerate() {
            if p.kind != PayloadKind::Hl7v2 {
                continue;
            }
            let messages = match parse_messages_bytes(&p.data) {
                Ok(m) => m,
                Err(e) => {
                    return SinkOutcome::permanent(format!(
                        "payload {} is not readable HL7 v2, nothing of it was sent: {e}",
                        i + 1
                    ));
                }
            };
            for m in messages {
                number += 1;
                // The last segment keeps its terminator, as every segment has one on the wire.
                let mut text = Cow::Borrowed(m.as_str());
                if !text.ends_with(['\r', '\n']) {
                    text.to_mut().push('\r');
                }
                match self.submit(&password, &text, number) {
                    Submitted::Accepted { ack, verdict } => {
                        accepted.push(verdict.control_id.unwrap_or_else(|| "?".into()));
                        acks.push(ack);
                    }
                    Submitted::Refused { reason, ack } => {
                        refusals.push(reason);
                        acks.push(ack);
                    }
                    Submitted::Done(outcome) => return outcome,
                }
            }
        }
        if number == 0 {
            return SinkOutcome::permanent(
                "no HL7 v2 payload in the message: the soap sink submits HL7 only (route other \
                 messages elsewhere with message_types)",
            );
        }
        let ack = Some(join_acks(&acks));
        if refusals.is_empty() {
            SinkOutcome::Accepted {
                location: format!("soap:{} ACK {}", self.client.url, accepted.join(",")),
                ack,
            }
        } else {
            SinkOutcome::Permanent {
                reason: format!(
                    "{} ({} of {number} HL7 messages accepted)",
                    refusals.join("; "),
                    accepted.len()
                ),
                ack,
            }
        }
    }
}

/// ACK messages one after the other, each ending with a segment terminator.
fn join_acks(acks: &[String]) -> String {
    let mut out = String::new();
    for a in acks {
        let a = a.trim_matches(|c: char| c.is_whitespace());
        out.push_str(a);
        out.push('\r');
    }
    out
}

/// MSA-1, the ACK's control ID (MSH-10) and the ERR-3 codes of an ACK.
struct AckVerdict {
    code: String,
    control_id: Option<String>,
    err_codes: Vec<String>,
}

impl AckVerdict {
    fn read(ack: &str) -> Option<AckVerdict> {
        let messages = parse_messages_bytes(ack.trim().as_bytes()).ok()?;
        let m = messages.first()?;
        let code = m.get("MSA-1")?.trim().to_ascii_uppercase();
        let count = m.segments_named("ERR").count();
        let err_codes = (1..=count)
            .filter_map(|n| m.get(&format!("ERR[{n}]-3.1")))
            .map(|c| c.into_owned())
            .collect();
        Some(AckVerdict {
            code,
            control_id: m.get("MSH-10").map(Cow::into_owned),
            err_codes,
        })
    }

    fn errors(&self) -> String {
        if self.err_codes.is_empty() {
            String::new()
        } else {
            format!(", ERR-3 {}", self.err_codes.join(", "))
        }
    }
}

/// The `submitSingleMessage` request, every value XML-escaped. Err: a value holds a character
/// XML 1.0 cannot carry.
fn envelope(username: &str, password: &str, facility_id: &str, hl7: &str) -> Result<String, ()> {
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <soap:Envelope xmlns:soap=\"http://www.w3.org/2003/05/soap-envelope\" \
         xmlns:urn=\"urn:cdc:iisb:2011\"><soap:Header/><soap:Body><urn:submitSingleMessage>\
         <urn:username>{}</urn:username><urn:password>{}</urn:password>\
         <urn:facilityID>{}</urn:facilityID><urn:hl7Message>{}</urn:hl7Message>\
         </urn:submitSingleMessage></soap:Body></soap:Envelope>",
        xml_escape(username)?,
        xml_escape(password)?,
        xml_escape(facility_id)?,
        xml_escape(hl7)?,
    ))
}

/// Escape text for an XML element: `& < > " '` as entities, CR as `&#13;` (a literal CR would
/// be read back as LF). Err on characters XML 1.0 forbids (C0 controls but tab, LF and CR).
fn xml_escape(text: &str) -> Result<String, ()> {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => return Err(()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The content of the first element whose local name is `local` (any prefix, or none), or None.
/// A self-closing element has empty content.
fn element<'a>(xml: &'a str, local: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(at) = xml[from..].find('<') {
        let start = from + at + 1;
        from = start;
        let rest = &xml[start..];
        let name_len = rest
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .unwrap_or(rest.len());
        let qname = &rest[..name_len];
        if qname.rsplit(':').next() != Some(local) || qname.starts_with(['/', '?', '!']) {
            continue;
        }
        let tag_end = start + rest.find('>')?;
        if xml[..tag_end].ends_with('/') {
            return Some("");
        }
        let content = &xml[tag_end + 1..];
        let close = format!("</{qname}");
        let end = content.find(&close)?;
        return Some(&content[..end]);
    }
    None
}

/// XML text content to a string: the five entities, numeric character references and CDATA
/// sections. Unknown entities are left as written.
fn unescape(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['&', '<']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(cdata) = rest.strip_prefix("<![CDATA[") {
            let end = cdata.find("]]>").unwrap_or(cdata.len());
            out.push_str(&cdata[..end]);
            rest = cdata.get(end + 3..).unwrap_or("");
            continue;
        }
        if rest.starts_with('<') {
            out.push('<');
            rest = &rest[1..];
            continue;
        }
        let Some(semi) = rest.find(';').filter(|&s| s <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e => e
                .strip_prefix("#x")
                .or_else(|| e.strip_prefix("#X"))
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| e.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// A SOAP fault in an answer.
struct Fault {
    kind: FaultKind,
    /// The fault code (`soap:Receiver`) and subcode values, as written.
    code: String,
}

#[derive(Debug, PartialEq, Eq)]
enum FaultKind {
    Security,
    MessageTooLarge,
    UnsupportedOperation,
    Other,
}

impl Fault {
    /// The fault in a response body, if there is one (SOAP 1.2 `Code/Value`, or SOAP 1.1
    /// `faultcode`; the CDC fault type from the `Detail` element's children).
    fn find(xml: &str) -> Option<Fault> {
        let fault = element(xml, "Fault")?;
        let code_text = element(fault, "Code")
            .or_else(|| element(fault, "faultcode"))
            .unwrap_or("");
        let mut code = Vec::new();
        let mut rest = code_text;
        while let Some(v) = element(rest, "Value") {
            code.push(unescape(v).trim().to_string());
            // Move past this Value (a subslice of `rest`) to find the subcode's.
            let end = v.as_ptr() as usize - rest.as_ptr() as usize + v.len();
            rest = &rest[end..];
        }
        if code.is_empty() && !code_text.trim().is_empty() {
            code.push(unescape(code_text).trim().to_string());
        }
        let code = code.join(" / ");
        let detail = element(fault, "Detail")
            .or_else(|| element(fault, "detail"))
            .unwrap_or("");
        let lower = code.to_ascii_lowercase();
        let kind = if element(detail, "SecurityFault").is_some()
            || lower.contains("security")
            || lower.contains("failedauthentication")
        {
            FaultKind::Security
        } else if element(detail, "MessageTooLargeFault").is_some() {
            FaultKind::MessageTooLarge
        } else if element(detail, "UnsupportedOperationFault").is_some() {
            FaultKind::UnsupportedOperation
        } else {
            FaultKind::Other
        };
        Some(Fault { kind, code })
    }

    /// `SecurityFault (code soap:Sender)`; no fault text (it may echo the message).
    fn describe(&self) -> String {
        let name = match self.kind {
            FaultKind::Security => "SecurityFault",
            FaultKind::MessageTooLarge => "MessageTooLargeFault",
            FaultKind::UnsupportedOperation => "UnsupportedOperationFault",
            FaultKind::Other => "fault",
        };
        if self.code.is_empty() {
            name.to_string()
        } else {
            format!("{name} (code {})", self.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_values_and_keeps_carriage_returns() {
        let e = envelope("u&1", "p<w>'\"", "F", "MSH|^~\\&|A\rPID|1\r").unwrap();
        assert!(e.contains("<urn:username>u&amp;1</urn:username>"));
        assert!(e.contains("<urn:password>p&lt;w&gt;&apos;&quot;</urn:password>"));
        assert!(e.contains("<urn:hl7Message>MSH|^~\\&amp;|A&#13;PID|1&#13;</urn:hl7Message>"));
        assert!(envelope("u", "p", "F", "MSH\u{1}").is_err());
    }

    #[test]
    fn reads_the_return_element_with_any_prefix() {
        let xml = "<S:Envelope xmlns:S='x'><S:Body><ns2:submitSingleMessageResponse \
                   xmlns:ns2='urn:cdc:iisb:2011'><ns2:return>MSH|^~\\&amp;|IIS&#13;MSA|AA|1&#13;\
                   </ns2:return></ns2:submitSingleMessageResponse></S:Body></S:Envelope>";
        let r = element(xml, "submitSingleMessageResponse")
            .and_then(|r| element(r, "return"))
            .map(unescape)
            .unwrap();
        assert_eq!(r, "MSH|^~\\&|IIS\rMSA|AA|1\r");
        let plain = "<Body><submitSingleMessageResponse><return><![CDATA[MSH|^~\\&|X]]></return>\
                     </submitSingleMessageResponse></Body>";
        let r = element(plain, "return").map(unescape).unwrap();
        assert_eq!(r, "MSH|^~\\&|X");
        assert_eq!(
            element("<a><returnValue>x</returnValue></a>", "return"),
            None
        );
        assert_eq!(element("<a><b:return/></a>", "return"), Some(""));
    }

    #[test]
    fn classifies_faults() {
        let fault = |code: &str, detail: &str| {
            format!(
                "<soap:Envelope><soap:Body><soap:Fault><soap:Code><soap:Value>{code}</soap:Value>\
                 </soap:Code><soap:Reason><soap:Text>secret</soap:Text></soap:Reason>\
                 <soap:Detail>{detail}</soap:Detail></soap:Fault></soap:Body></soap:Envelope>"
            )
        };
        let f = Fault::find(&fault(
            "soap:Sender",
            "<urn:SecurityFault><urn:Code>10</urn:Code></urn:SecurityFault>",
        ))
        .unwrap();
        assert_eq!(f.kind, FaultKind::Security);
        assert!(!f.describe().contains("secret"));
        let f = Fault::find(&fault("soap:Receiver", "<MessageTooLargeFault/>")).unwrap();
        assert_eq!(f.kind, FaultKind::MessageTooLarge);
        let f = Fault::find(&fault("soap:Receiver", "<x:UnsupportedOperationFault/>")).unwrap();
        assert_eq!(f.kind, FaultKind::UnsupportedOperation);
        let f = Fault::find(&fault("wsse:InvalidSecurity", "")).unwrap();
        assert_eq!(f.kind, FaultKind::Security);
        let f = Fault::find(&fault("soap:Receiver", "<fault>oops</fault>")).unwrap();
        assert_eq!(f.kind, FaultKind::Other);
        assert_eq!(f.describe(), "fault (code soap:Receiver)");
        assert!(Fault::find("<Envelope><Body><submitSingleMessageResponse/></Body>").is_none());
    }

    #[test]
    fn reads_msa_and_err_codes_only() {
        let ack = "MSH|^~\\&|IIS|ST|EHR|C|20261122||ACK^V04^ACK|A1|P|2.5.1\r\
                   MSA|AE|DEMO-0001\r\
                   ERR||RXA^1^5|103^Table value not found^HL70357|W||||Patient name DOE is wrong\r\
                   ERR||PID^1^7|101^Required field missing^HL70357|E\r";
        let v = AckVerdict::read(ack).unwrap();
        assert_eq!(v.code, "AE");
        assert_eq!(v.control_id.as_deref(), Some("A1"));
        assert_eq!(v.errors(), ", ERR-3 103, 101");
        assert!(AckVerdict::read("not hl7").is_none());
    }

    #[test]
    fn unescape_handles_references_and_leaves_junk() {
        assert_eq!(unescape("a&#x41;&#66;&lt;&bogus;&"), "aAB<&bogus;&");
    }
}
