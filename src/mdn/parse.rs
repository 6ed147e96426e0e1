//! Reading received notifications: whether a message is an MDN or a DSN at all
//! ([`notification_kind`], so we never answer one with an MDN), and the fields a tracker needs
//! from either ([`parse_report`]): RFC 8098 `message/disposition-notification` and RFC 3464
//! `message/delivery-status`. Input is untrusted: every path returns a value or an [`MdnError`],
//! none panics.

use std::borrow::Cow;

use base64::Engine;

use crate::mdn::FINAL_DESTINATION_DELIVERY;
use crate::mime::entity::{Entity, multipart_parts};

/// Which kind of notification a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotificationKind {
    /// `multipart/report; report-type=disposition-notification` (RFC 8098).
    Mdn,
    /// `multipart/report; report-type=delivery-status` (RFC 3464).
    Dsn,
}

/// A parsed notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Mdn(MdnReport),
    Dsn(DsnReport),
}

/// The fields of a message disposition notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdnReport {
    /// `Original-Message-ID` normalised to `<...>`; else the Message-ID of the returned original
    /// message or headers, when the MDN carries them.
    pub original_message_id: Option<String>,
    /// `Final-Recipient`, the address only (`rfc822;` stripped), lower case.
    pub final_recipient: Option<String>,
    /// `Original-Recipient`, the address only, lower case.
    pub original_recipient: Option<String>,
    /// `Reporting-UA`, as written.
    pub reporting_ua: Option<String>,
    pub disposition: ParsedDisposition,
    /// The report carries the Direct `X-DIRECT-FINAL-DESTINATION-DELIVERY` field: it answers a
    /// request for timely and reliable delivery notification.
    pub final_destination_extension: bool,
    /// The `Failure` field, else the `Error` field.
    pub failure: Option<String>,
}

/// `Disposition: action-mode/sending-mode; type[/modifier,...]` (RFC 8098 §3.2.6), comments
/// removed and keywords lower-cased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedDisposition {
    /// `automatic-action` or `manual-action`.
    pub action_mode: String,
    /// `mdn-sent-automatically` or `mdn-sent-manually`.
    pub sending_mode: String,
    pub kind: DispositionKind,
    /// Modifiers after `/` (RFC 3798's `error`, `warning`, ...), lower case.
    pub modifiers: Vec<String>,
}

impl ParsedDisposition {
    /// Whether this disposition reports a failure: `failed`, or an `error`/`failed`/`failure`
    /// modifier (RFC 3798 style, e.g. `processed/error`), or `denied`/`error` as the type, which
    /// older agents send.
    pub fn is_failure(&self) -> bool {
        let failing = |s: &str| matches!(s, "error" | "failed" | "failure");
        match &self.kind {
            DispositionKind::Failed => true,
            DispositionKind::Other(k) if failing(k) || k == "denied" => true,
            _ => self.modifiers.iter().any(|m| failing(m)),
        }
    }
}

/// The disposition type.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DispositionKind {
    Processed,
    Dispatched,
    /// `failed` (Direct IG); `failure`, which some agents write, is read as the same.
    Failed,
    Displayed,
    Deleted,
    /// Any other type, lower case.
    Other(String),
}

/// The fields of a delivery status notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DsnReport {
    /// From the per-message `X-Original-Message-ID` (Direct RIs) or `Original-Envelope-Id` (when
    /// it is a message ID), else the Message-ID of the returned headers or message.
    pub original_message_id: Option<String>,
    /// One entry per recipient block that names a recipient and an action.
    pub recipients: Vec<DsnRecipient>,
}

/// One per-recipient block of a DSN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DsnRecipient {
    /// `Final-Recipient` (else `Original-Recipient`), the address only, lower case.
    pub final_recipient: String,
    /// `failed`, `delayed`, `delivered`, `relayed` or `expanded`, lower case.
    pub action: String,
    /// `Status`, e.g. `5.1.1`, comments removed.
    pub status: Option<String>,
    /// `Diagnostic-Code`, as written.
    pub diagnostic: Option<String>,
}

/// Why a message could not be read as a notification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MdnError {
    /// The message is not a `multipart/report`.
    #[error(
        "not a notification: Content-Type is {0}, expected multipart/report with report-type disposition-notification (MDN) or delivery-status (DSN)"
    )]
    NotAReport(String),
    /// A `multipart/report` of another report type.
    #[error(
        "multipart/report with report-type '{0}' is neither disposition-notification (MDN) nor delivery-status (DSN)"
    )]
    ReportType(String),
    /// The multipart body cannot be split into parts.
    #[error("the multipart/report body cannot be split into parts: {0}")]
    Parts(String),
    /// A required part is absent.
    #[error("the {report} has no {part} part")]
    MissingPart {
        report: &'static str,
        part: &'static str,
    },
    /// A required field is absent.
    #[error("the {part} part has no {field} field")]
    MissingField {
        part: &'static str,
        field: &'static str,
    },
    /// The Disposition field does not follow RFC 8098 §3.2.6.
    #[error("Disposition '{value}' is malformed: {reason}")]
    Disposition { value: String, reason: &'static str },
    /// A part's transfer encoding cannot be decoded.
    #[error("the {part} part is not valid {encoding}")]
    Encoding {
        part: &'static str,
        encoding: &'static str,
    },
}

const MDN_REPORT: &str = "MDN (multipart/report; report-type=disposition-notification)";
const DSN_REPORT: &str = "DSN (multipart/report; report-type=delivery-status)";
const MDN_PART: &str = "message/disposition-notification";
const DSN_PART: &str = "message/delivery-status";

/// Whether `inner` (the protected message, or its message/rfc822 wrapper) is a notification:
/// `multipart/report` with report-type `disposition-notification` or `delivery-status`, compared
/// without regard to case. Such a message is never answered with an MDN.
pub fn notification_kind(inner: &[u8]) -> Option<NotificationKind> {
    report_kind(&message_entity(inner)).ok()
}

/// Parse a received MDN or DSN. Errors say what is missing; no input makes it panic.
pub fn parse_report(inner: &[u8]) -> Result<Report, MdnError> {
    let message = message_entity(inner);
    let kind = report_kind(&message)?;
    let ct = message.content_type();
    let boundary = ct
        .param("boundary")
        .ok_or_else(|| MdnError::Parts("the Content-Type has no boundary parameter".into()))?;
    check_boundary(boundary)?;
    let parts: Vec<Entity<'_>> = multipart_parts(message.body, boundary)
        .ok_or_else(|| {
            MdnError::Parts(format!(
                "the boundary '{}' does not delimit any part",
                truncated(boundary)
            ))
        })?
        .into_iter()
        .map(Entity::parse)
        .collect();
    match kind {
        NotificationKind::Mdn => parse_mdn(&parts).map(Report::Mdn),
        NotificationKind::Dsn => parse_dsn(&parts).map(Report::Dsn),
    }
}

fn parse_mdn(parts: &[Entity<'_>]) -> Result<MdnReport, MdnError> {
    let part = parts
        .iter()
        .find(|p| {
            let ct = p.content_type();
            ct.is(MDN_PART) || ct.is("message/global-disposition-notification")
        })
        .ok_or(MdnError::MissingPart {
            report: MDN_REPORT,
            part: MDN_PART,
        })?;
    let body = decoded(part, MDN_PART)?;
    // One block of fields; blank lines some agents add are tolerated.
    let fields: Vec<(String, String)> = field_blocks(&body).into_iter().flatten().collect();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let disposition = field("Disposition").ok_or(MdnError::MissingField {
        part: MDN_PART,
        field: "Disposition",
    })?;
    let disposition = parse_disposition(disposition)?;
    let original_message_id = match field("Original-Message-ID").and_then(angle_message_id) {
        Some(id) => Some(id),
        None => returned_message_id(parts)?,
    };
    Ok(MdnReport {
        original_message_id,
        final_recipient: field("Final-Recipient").and_then(recipient_address),
        original_recipient: field("Original-Recipient").and_then(recipient_address),
        reporting_ua: field("Reporting-UA")
            .map(str::to_string)
            .filter(|v| !v.is_empty()),
        disposition,
        final_destination_extension: field(FINAL_DESTINATION_DELIVERY).is_some(),
        failure: field("Failure")
            .or_else(|| field("Error"))
            .map(str::to_string),
    })
}

fn parse_dsn(parts: &[Entity<'_>]) -> Result<DsnReport, MdnError> {
    let part = parts
        .iter()
        .find(|p| {
            let ct = p.content_type();
            ct.is(DSN_PART) || ct.is("message/global-delivery-status")
        })
        .ok_or(MdnError::MissingPart {
            report: DSN_REPORT,
            part: DSN_PART,
        })?;
    let body = decoded(part, DSN_PART)?;
    let blocks = field_blocks(&body);
    let field = |block: &[(String, String)], name: &str| -> Option<String> {
        block
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let recipients: Vec<DsnRecipient> = blocks
        .iter()
        .filter_map(|b| {
            let final_recipient = field(b, "Final-Recipient")
                .and_then(|v| recipient_address(&v))
                .or_else(|| field(b, "Original-Recipient").and_then(|v| recipient_address(&v)))?;
            let action = field(b, "Action")
                .map(|a| strip_comments(&a).trim().to_ascii_lowercase())
                .filter(|a| !a.is_empty())?;
            Some(DsnRecipient {
                final_recipient,
                action,
                status: field(b, "Status")
                    .map(|s| strip_comments(&s).trim().to_string())
                    .filter(|s| !s.is_empty()),
                diagnostic: field(b, "Diagnostic-Code").filter(|d| !d.is_empty()),
            })
        })
        .collect();
    if recipients.is_empty() {
        return Err(MdnError::MissingField {
            part: DSN_PART,
            field: "per-recipient Final-Recipient and Action",
        });
    }
    let everywhere = |name: &str| blocks.iter().find_map(|b| field(b, name));
    let original_message_id = match everywhere("X-Original-Message-ID")
        .and_then(|v| angle_message_id(&v))
        .or_else(|| {
            everywhere("Original-Envelope-Id")
                .map(|v| xtext_decode(&v))
                .filter(|v| v.contains('@'))
                .and_then(|v| angle_message_id(&v))
        }) {
        Some(id) => Some(id),
        None => returned_message_id(parts)?,
    };
    Ok(DsnReport {
        original_message_id,
        recipients,
    })
}

/// The Message-ID of the returned original (text/rfc822-headers, message/rfc822 or the RFC 6533
/// global forms), when the report carries it.
fn returned_message_id(parts: &[Entity<'_>]) -> Result<Option<String>, MdnError> {
    const RETURNED: &[&str] = &[
        "text/rfc822-headers",
        "message/rfc822",
        "message/global-headers",
        "message/global",
    ];
    let Some(part) = parts
        .iter()
        .find(|p| RETURNED.iter().any(|t| p.content_type().is(t)))
    else {
        return Ok(None);
    };
    let body = decoded(part, "returned message")?;
    Ok(Entity::parse(&body)
        .header("Message-ID")
        .and_then(angle_message_id))
}

/// The message itself, or the message inside a message/rfc822 wrapper (one level).
fn message_entity(bytes: &[u8]) -> Entity<'_> {
    let e = Entity::parse(bytes);
    if e.content_type().is("message/rfc822") {
        Entity::parse(e.body)
    } else {
        e
    }
}

fn report_kind(message: &Entity<'_>) -> Result<NotificationKind, MdnError> {
    let ct = message.content_type();
    if !ct.is("multipart/report") {
        return Err(MdnError::NotAReport(match message.header("Content-Type") {
            None => "missing (text/plain)".to_string(),
            Some(_) if ct.mime.is_empty() => "empty".to_string(),
            Some(_) => truncated(&ct.mime),
        }));
    }
    let report_type = ct.param("report-type").unwrap_or("");
    if report_type.eq_ignore_ascii_case("disposition-notification") {
        Ok(NotificationKind::Mdn)
    } else if report_type.eq_ignore_ascii_case("delivery-status") {
        Ok(NotificationKind::Dsn)
    } else if report_type.is_empty() {
        Err(MdnError::ReportType("(missing)".into()))
    } else {
        Err(MdnError::ReportType(truncated(report_type)))
    }
}

/// RFC 2046 §5.1.1: 1 to 70 characters, none a control character, not ending in a space.
fn check_boundary(boundary: &str) -> Result<(), MdnError> {
    let ok = (1..=70).contains(&boundary.len())
        && !boundary.ends_with(' ')
        && boundary
            .chars()
            .all(|c| c.is_ascii() && !c.is_ascii_control());
    if ok {
        Ok(())
    } else {
        Err(MdnError::Parts(format!(
            "the boundary '{}' is not a valid MIME boundary (1-70 printable ASCII characters)",
            truncated(&boundary.escape_debug().to_string())
        )))
    }
}

/// A part's body with its Content-Transfer-Encoding undone (7bit, 8bit and binary as they are).
fn decoded<'a>(part: &Entity<'a>, name: &'static str) -> Result<Cow<'a, [u8]>, MdnError> {
    let encoding = part
        .header("Content-Transfer-Encoding")
        .map(|e| e.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "base64" => {
            let clean: Vec<u8> = part
                .body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(&clean)
                .map(Cow::Owned)
                .map_err(|_| MdnError::Encoding {
                    part: name,
                    encoding: "base64",
                })
        }
        "quoted-printable" => Ok(Cow::Owned(quoted_printable(part.body))),
        _ => Ok(Cow::Borrowed(part.body)),
    }
}

/// RFC 2045 §6.7, leniently: soft line breaks removed, `=XX` decoded, anything else kept.
fn quoted_printable(body: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'=' {
            out.push(body[i]);
            i += 1;
            continue;
        }
        match body.get(i + 1..i + 3) {
            Some(b"\r\n") => i += 3,
            Some([b'\n', _]) => i += 2,
            Some(&[h, l]) if hex(h).is_some() && hex(l).is_some() => {
                let (h, l) = (hex(h).unwrap_or(0), hex(l).unwrap_or(0));
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            _ if body.get(i + 1) == Some(&b'\n') => i += 2,
            _ => {
                out.push(b'=');
                i += 1;
            }
        }
    }
    out
}

/// The field blocks of a report part (RFC 3464 §2.1: blocks separated by blank lines), each
/// unfolded into (name, value) pairs. CRLF or LF; names keep their case; lines that are not
/// fields are skipped.
fn field_blocks(body: &[u8]) -> Vec<Vec<(String, String)>> {
    let text = String::from_utf8_lossy(body);
    let mut blocks: Vec<Vec<(String, String)>> = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    // A continuation only continues a field that was read, not a skipped line.
    let mut continuing = false;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
            }
            continuing = false;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let (true, Some(last)) = (continuing, current.last_mut()) {
                last.1.push(' ');
                last.1.push_str(line.trim());
                last.1 = last.1.trim().to_string();
            }
            continue;
        }
        continuing = false;
        if let Some((n, v)) = line.split_once(':') {
            let n = n.trim_end();
            if !n.is_empty() && n.bytes().all(|b| (33..=126).contains(&b)) {
                current.push((n.to_string(), v.trim().to_string()));
                continuing = true;
            }
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    blocks
}

/// Parse a Disposition value (RFC 8098 §3.2.6):
/// `action-mode "/" sending-mode ";" disposition-type [ "/" modifier *( "," modifier ) ]`, with
/// comments and spaces anywhere between tokens.
fn parse_disposition(raw: &str) -> Result<ParsedDisposition, MdnError> {
    let err = |reason| MdnError::Disposition {
        value: truncated(raw),
        reason,
    };
    let value = strip_comments(raw);
    let (mode, rest) = value
        .split_once(';')
        .ok_or_else(|| err("no ';' between action-mode/sending-mode and the disposition type"))?;
    let (action, sending) = mode
        .split_once('/')
        .ok_or_else(|| err("the mode is not action-mode/sending-mode"))?;
    let token = |s: &str, what| {
        let t = s.trim();
        if t.is_empty() || t.contains(|c: char| c.is_whitespace() || c == '/' || c == ';') {
            Err(err(what))
        } else {
            Ok(t.to_ascii_lowercase())
        }
    };
    let action_mode = token(action, "the action-mode is missing or not one word")?;
    let sending_mode = token(sending, "the sending-mode is missing or not one word")?;
    // Anything after a second ';' is an extension we do not know; the type comes first.
    let rest = rest.split(';').next().unwrap_or("");
    let (kind, modifiers) = rest.split_once('/').unwrap_or((rest, ""));
    let kind = token(kind, "the disposition type is missing or not one word")?;
    let modifiers = modifiers
        .split(',')
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty())
        .collect();
    let kind = match kind.as_str() {
        "processed" => DispositionKind::Processed,
        "dispatched" => DispositionKind::Dispatched,
        "failed" | "failure" => DispositionKind::Failed,
        "displayed" => DispositionKind::Displayed,
        "deleted" => DispositionKind::Deleted,
        _ => DispositionKind::Other(kind),
    };
    Ok(ParsedDisposition {
        action_mode,
        sending_mode,
        kind,
        modifiers,
    })
}

/// Remove RFC 5322 comments (nested, with quoted-pairs), leaving quoted strings alone; each
/// comment becomes a space.
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for c in s.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' if depth > 0 || quoted => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    out.push(' ');
                }
            }
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// `address-type ";" address` (or a bare address, or `<address>`) -> lower-case address.
fn recipient_address(value: &str) -> Option<String> {
    let v = strip_comments(value);
    let v = v.split_once(';').map_or(v.as_str(), |(_, a)| a).trim();
    let v = v
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .unwrap_or(v)
        .trim();
    (!v.is_empty()).then(|| v.to_lowercase())
}

/// A Message-ID with or without angle brackets (comments and surrounding text dropped),
/// normalised to `<...>`; `None` when nothing is left.
pub(crate) fn angle_message_id(value: &str) -> Option<String> {
    let v = strip_comments(value);
    let v = v.trim();
    let id = match (v.find('<'), v.find('>')) {
        (Some(open), Some(close)) if open < close => &v[open + 1..close],
        _ => v.split_whitespace().next().unwrap_or(""),
    };
    let id = id.trim().trim_matches(['<', '>']).trim();
    (!id.is_empty() && !id.contains(char::is_whitespace)).then(|| format!("<{id}>"))
}

/// RFC 3461 §4: `+XX` in an xtext stands for the byte 0xXX.
fn xtext_decode(value: &str) -> String {
    let b = value.trim().as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let decoded = (b[i] == b'+')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// At most 200 characters of untrusted text, for error messages.
fn truncated(s: &str) -> String {
    let mut t: String = s.chars().take(200).collect();
    if t.len() < s.len() {
        t.push_str("...");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A processed MDN as the Java Direct RI writes it (JavaMail: LF line endings once saved,
    /// folded Content-Type, `report-type` after the boundary).
    const JAVA_RI_MDN: &str = "Message-ID: <1400000000000.JavaMail.direct@hisp-b.example>\n\
        From: iis@hisp-b.example\n\
        To: ehr@hisp-a.example\n\
        Subject: Processed:Direct message\n\
        MIME-Version: 1.0\n\
        Content-Type: multipart/report; \n\
        \tboundary=\"----=_Part_1_1390876423.1400000000000\"; \n\
        \treport-type=disposition-notification\n\
        \n\
        ------=_Part_1_1390876423.1400000000000\n\
        Content-Type: text/plain; charset=us-ascii\n\
        Content-Transfer-Encoding: 7bit\n\
        \n\
        Your message was successfully processed.\n\
        ------=_Part_1_1390876423.1400000000000\n\
        Content-Type: message/disposition-notification\n\
        Content-Transfer-Encoding: 7bit\n\
        \n\
        Reporting-UA: hisp-b.example; DirectJavaRI\n\
        Original-Recipient: rfc822; IIS@hisp-b.example\n\
        Final-Recipient: rfc822; IIS@hisp-b.example\n\
        Original-Message-ID: <vxu-1@hisp-a.example>\n\
        Disposition: automatic-action/MDN-sent-automatically;processed\n\
        \n\
        ------=_Part_1_1390876423.1400000000000--\n";

    /// A dispatched MDN with the Direct extension, written loosely: comments, spaces, folding,
    /// odd case, a bare Original-Message-ID, CRLF, and a quoted-printable report part.
    const LOOSE_DISPATCHED: &str = "From: iis@hisp-b.example\r\n\
        To: ehr@hisp-a.example\r\n\
        Content-Type: Multipart/Report; Report-Type=\"Disposition-Notification\";\r\n \
        boundary=B1\r\n\
        \r\n\
        --B1\r\n\
        \r\n\
        Dispatched.\r\n\
        --B1\r\n\
        Content-Type: message/disposition-notification\r\n\
        Content-Transfer-Encoding: quoted-printable\r\n\
        \r\n\
        reporting-ua: hisp-b.example; Security Agent (.NET RI)\r\n\
        FINAL-RECIPIENT: rfc822;\r\n  iis@hisp-b.example (the IIS)\r\n\
        original-message-id: vxu-2@hisp-a.example\r\n\
        DISPOSITION: automatic-action (auto) / MDN-sent-automatically ;\r\n \
        Dispatched (final) / Warning , error\r\n\
        X-Direct-Final-Destination-Delivery: \r\n\
        Error: partial=3D1 \r\n\
        --B1--\r\n";

    /// A Postfix bounce (RFC 3464) returning the headers as text/rfc822-headers.
    const POSTFIX_DSN: &str = "Return-Path: <>\r\n\
        From: MAILER-DAEMON@mx.hisp-b.example (Mail Delivery System)\r\n\
        To: ehr@hisp-a.example\r\n\
        Subject: Undelivered Mail Returned to Sender\r\n\
        Auto-Submitted: auto-replied\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: multipart/report; report-type=delivery-status;\r\n\
        \tboundary=\"4D3B81C0A2.1700000000/mx.hisp-b.example\"\r\n\
        \r\n\
        This is a MIME-encapsulated message.\r\n\
        \r\n\
        --4D3B81C0A2.1700000000/mx.hisp-b.example\r\n\
        Content-Description: Notification\r\n\
        Content-Type: text/plain; charset=us-ascii\r\n\
        \r\n\
        This is the mail system at host mx.hisp-b.example.\r\n\
        \r\n\
        --4D3B81C0A2.1700000000/mx.hisp-b.example\r\n\
        Content-Description: Delivery report\r\n\
        Content-Type: message/delivery-status\r\n\
        \r\n\
        Reporting-MTA: dns; mx.hisp-b.example\r\n\
        X-Postfix-Queue-ID: 4D3B81C0A2\r\n\
        X-Postfix-Sender: rfc822; ehr@hisp-a.example\r\n\
        Arrival-Date: Wed,  1 Jan 2025 12:00:00 +0000 (UTC)\r\n\
        \r\n\
        Final-Recipient: rfc822; Nobody@hisp-b.example\r\n\
        Original-Recipient: rfc822;nobody@hisp-b.example\r\n\
        Action: failed\r\n\
        Status: 5.1.1\r\n\
        Remote-MTA: dns; mailbox.hisp-b.example\r\n\
        Diagnostic-Code: x-unix; user unknown\r\n\
        \r\n\
        --4D3B81C0A2.1700000000/mx.hisp-b.example\r\n\
        Content-Description: Undelivered Message Headers\r\n\
        Content-Type: text/rfc822-headers\r\n\
        \r\n\
        Return-Path: <ehr@hisp-a.example>\r\n\
        Message-ID: <vxu-42@hisp-a.example>\r\n\
        From: ehr@hisp-a.example\r\n\
        To: nobody@hisp-b.example\r\n\
        \r\n\
        --4D3B81C0A2.1700000000/mx.hisp-b.example--\r\n";

    /// A DSN as the Direct RIs write it: the original Message-ID in the per-message fields, two
    /// recipients, one delayed.
    const RI_DSN: &str = "Content-Type: multipart/report; boundary=\"D\"; report-type=delivery-status\n\
        \n\
        --D\n\
        Content-Type: text/plain\n\
        \n\
        An error occurred while delivering the message.\n\
        --D\n\
        Content-Type: message/delivery-status\n\
        \n\
        Reporting-MTA: dns;hisp-b.example\n\
        X-Original-Message-ID: vxu-7@hisp-a.example\n\
        Original-Envelope-Id: not-a-message-id\n\
        \n\
        Final-Recipient: rfc822;iis@hisp-b.example\n\
        Action: failed\n\
        Status: 5.0.0 (permanent failure)\n\
        \n\
        Final-Recipient: rfc822;lab@hisp-b.example\n\
        Action: Delayed\n\
        Status: 4.4.7\n\
        --D--\n";

    fn mdn(bytes: &[u8]) -> MdnReport {
        match parse_report(bytes) {
            Ok(Report::Mdn(r)) => r,
            other => panic!("expected an MDN, got {other:?}"),
        }
    }

    fn dsn(bytes: &[u8]) -> DsnReport {
        match parse_report(bytes) {
            Ok(Report::Dsn(r)) => r,
            other => panic!("expected a DSN, got {other:?}"),
        }
    }

    #[test]
    fn reads_a_java_ri_processed_mdn() {
        assert_eq!(
            notification_kind(JAVA_RI_MDN.as_bytes()),
            Some(NotificationKind::Mdn)
        );
        let r = mdn(JAVA_RI_MDN.as_bytes());
        assert_eq!(
            r,
            MdnReport {
                original_message_id: Some("<vxu-1@hisp-a.example>".into()),
                final_recipient: Some("iis@hisp-b.example".into()),
                original_recipient: Some("iis@hisp-b.example".into()),
                reporting_ua: Some("hisp-b.example; DirectJavaRI".into()),
                disposition: ParsedDisposition {
                    action_mode: "automatic-action".into(),
                    sending_mode: "mdn-sent-automatically".into(),
                    kind: DispositionKind::Processed,
                    modifiers: vec![],
                },
                final_destination_extension: false,
                failure: None,
            }
        );
        assert!(!r.disposition.is_failure());
    }

    #[test]
    fn reads_a_loosely_written_dispatched_mdn() {
        let r = mdn(LOOSE_DISPATCHED.as_bytes());
        assert_eq!(
            r.original_message_id.as_deref(),
            Some("<vxu-2@hisp-a.example>")
        );
        assert_eq!(r.final_recipient.as_deref(), Some("iis@hisp-b.example"));
        assert_eq!(r.original_recipient, None);
        assert_eq!(
            r.reporting_ua.as_deref(),
            Some("hisp-b.example; Security Agent (.NET RI)")
        );
        assert_eq!(r.disposition.kind, DispositionKind::Dispatched);
        assert_eq!(r.disposition.modifiers, vec!["warning", "error"]);
        assert!(r.final_destination_extension);
        assert_eq!(r.failure.as_deref(), Some("partial=1"));
        assert!(r.disposition.is_failure(), "an error modifier is a failure");
    }

    #[test]
    fn reads_dispositions_by_the_rfc_8098_grammar() {
        let d = |v: &str| parse_disposition(v);
        let ok = d("manual-action/MDN-sent-manually; displayed").unwrap();
        assert_eq!(
            (ok.action_mode.as_str(), ok.sending_mode.as_str(), ok.kind),
            (
                "manual-action",
                "mdn-sent-manually",
                DispositionKind::Displayed
            )
        );
        assert_eq!(d(" a/b ;Deleted").unwrap().kind, DispositionKind::Deleted);
        assert_eq!(d("a/b;failure").unwrap().kind, DispositionKind::Failed);
        assert_eq!(
            d("a/b;(c;d/e) denied ; ext").unwrap().kind,
            DispositionKind::Other("denied".into())
        );
        assert!(d("a/b;failed/").unwrap().modifiers.is_empty());
        for (bad, reason) in [
            ("processed", "no ';'"),
            ("automatic-action;processed", "action-mode/sending-mode"),
            ("a/;processed", "sending-mode"),
            ("a/b;", "disposition type"),
            ("a/b; pro cessed", "disposition type"),
            ("(only a comment ; x/y)", "no ';'"),
        ] {
            let e = d(bad).unwrap_err().to_string();
            assert!(e.contains(reason), "{bad}: {e}");
        }
    }

    #[test]
    fn reads_a_postfix_dsn_with_returned_headers() {
        assert_eq!(
            notification_kind(POSTFIX_DSN.as_bytes()),
            Some(NotificationKind::Dsn)
        );
        let r = dsn(POSTFIX_DSN.as_bytes());
        assert_eq!(
            r,
            DsnReport {
                original_message_id: Some("<vxu-42@hisp-a.example>".into()),
                recipients: vec![DsnRecipient {
                    final_recipient: "nobody@hisp-b.example".into(),
                    action: "failed".into(),
                    status: Some("5.1.1".into()),
                    diagnostic: Some("x-unix; user unknown".into()),
                }],
            }
        );
    }

    #[test]
    fn reads_an_ri_dsn_with_x_original_message_id() {
        let r = dsn(RI_DSN.as_bytes());
        assert_eq!(
            r.original_message_id.as_deref(),
            Some("<vxu-7@hisp-a.example>")
        );
        let actions: Vec<_> = r
            .recipients
            .iter()
            .map(|x| {
                (
                    x.final_recipient.as_str(),
                    x.action.as_str(),
                    x.status.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            actions,
            vec![
                ("iis@hisp-b.example", "failed", Some("5.0.0")),
                ("lab@hisp-b.example", "delayed", Some("4.4.7")),
            ]
        );
        // Without X-Original-Message-ID, an ENVID that is a message ID (xtext) is used.
        let envid = RI_DSN
            .replace("X-Original-Message-ID: vxu-7@hisp-a.example\n", "")
            .replace("not-a-message-id", "+3Cvxu-8@hisp-a.example+3E");
        assert_eq!(
            dsn(envid.as_bytes()).original_message_id.as_deref(),
            Some("<vxu-8@hisp-a.example>")
        );
        let neither = RI_DSN.replace("X-Original-Message-ID: vxu-7@hisp-a.example\n", "");
        assert_eq!(dsn(neither.as_bytes()).original_message_id, None);
    }

    #[test]
    fn a_wrapped_or_base64_report_is_read_too() {
        let wrapped = format!("Content-Type: message/rfc822\r\n\r\n{POSTFIX_DSN}");
        assert_eq!(
            notification_kind(wrapped.as_bytes()),
            Some(NotificationKind::Dsn)
        );
        let fields = "Final-Recipient: rfc822;iis@hisp-b.example\r\n\
                      Original-Message-ID: <vxu-3@hisp-a.example>\r\n\
                      Disposition: automatic-action/MDN-sent-automatically;processed\r\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(fields);
        let msg = format!(
            "Content-Type: multipart/report; report-type=disposition-notification; boundary=X\r\n\r\n\
             --X\r\nContent-Type: message/disposition-notification\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n{}\r\n--X--\r\n",
            &b64[..40],
            &b64[40..]
        );
        let r = mdn(msg.as_bytes());
        assert_eq!(
            r.original_message_id.as_deref(),
            Some("<vxu-3@hisp-a.example>")
        );
        assert_eq!(r.disposition.kind, DispositionKind::Processed);
    }

    #[test]
    fn errors_say_what_is_missing() {
        let e = |s: &str| parse_report(s.as_bytes()).unwrap_err();
        assert!(matches!(e(""), MdnError::NotAReport(_)));
        assert!(
            e("Subject: hi\r\n\r\nbody")
                .to_string()
                .contains("Content-Type is missing")
        );
        assert!(matches!(
            e("Content-Type: multipart/mixed; boundary=x\r\n\r\n"),
            MdnError::NotAReport(m) if m == "multipart/mixed"
        ));
        assert!(matches!(
            e("Content-Type: multipart/report; report-type=spam; boundary=x\r\n\r\n"),
            MdnError::ReportType(t) if t == "spam"
        ));
        assert!(matches!(
            e("Content-Type: multipart/report; report-type=delivery-status\r\n\r\n"),
            MdnError::Parts(_)
        ));
        let no_part = "Content-Type: multipart/report; report-type=disposition-notification; boundary=x\r\n\r\n--x\r\n\r\nhello\r\n--x--\r\n";
        assert_eq!(
            e(no_part),
            MdnError::MissingPart {
                report: MDN_REPORT,
                part: MDN_PART
            }
        );
        let no_disposition = JAVA_RI_MDN.replace(
            "Disposition: automatic-action/MDN-sent-automatically;processed\n",
            "",
        );
        assert_eq!(
            e(&no_disposition).to_string(),
            "the message/disposition-notification part has no Disposition field"
        );
        let no_recipients = RI_DSN.replace("Action:", "X-Action:");
        assert!(e(&no_recipients).to_string().contains("per-recipient"));
        assert!(matches!(
            e(
                "Content-Type: multipart/report; report-type=delivery-status; boundary=\"a\r\r\"\r\n\r\n--a\r\r\n\r\n--a\r\r\n"
            ),
            MdnError::Parts(_)
        ));
        let bad_b64 = "Content-Type: multipart/report; report-type=disposition-notification; boundary=x\r\n\r\n--x\r\nContent-Type: message/disposition-notification\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n--x--\r\n";
        assert!(matches!(e(bad_b64), MdnError::Encoding { .. }));
    }

    #[test]
    fn ordinary_messages_are_not_notifications() {
        for m in [
            "",
            "From: a@b.example\r\n\r\nhi",
            "Content-Type: multipart/mixed; boundary=x\r\n\r\n",
            "Content-Type: multipart/report; report-type=x-other; boundary=x\r\n\r\n",
            "Content-Type: text/plain; report-type=disposition-notification\r\n\r\n",
        ] {
            assert_eq!(notification_kind(m.as_bytes()), None, "{m:?}");
        }
    }

    #[test]
    fn message_ids_are_normalised_to_angle_brackets() {
        for (raw, want) in [
            ("<a@b>", Some("<a@b>")),
            ("a@b", Some("<a@b>")),
            ("  <a@b> (original)", Some("<a@b>")),
            ("(c) a@b", Some("<a@b>")),
            ("<<a@b>>", Some("<a@b>")),
            ("", None),
            ("<>", None),
            ("(only a comment)", None),
        ] {
            assert_eq!(angle_message_id(raw).as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn every_truncation_of_a_report_is_handled() {
        for sample in [JAVA_RI_MDN, LOOSE_DISPATCHED, POSTFIX_DSN, RI_DSN] {
            let b = sample.as_bytes();
            for n in 0..b.len() {
                let _ = parse_report(&b[..n]);
                let _ = notification_kind(&b[..n]);
            }
        }
        // A report cut off before its report part cannot be read.
        let cut = JAVA_RI_MDN.find("Reporting-UA").unwrap();
        assert!(parse_report(&JAVA_RI_MDN.as_bytes()[..cut]).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = notification_kind(&bytes);
            if let Ok(report) = parse_report(&bytes) {
                prop_assert!(notification_kind(&bytes).is_some(), "{report:?}");
            }
        }

        #[test]
        fn mutated_reports_never_panic(
            sample in 0usize..4,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut b = [JAVA_RI_MDN, LOOSE_DISPATCHED, POSTFIX_DSN, RI_DSN][sample].as_bytes().to_vec();
            for (at, byte) in edits {
                let i = at.index(b.len());
                b[i] = byte;
            }
            let _ = notification_kind(&b);
            let _ = parse_report(&b);
        }

        #[test]
        fn arbitrary_disposition_text_never_panics(s in "\\PC{0,80}") {
            let _ = parse_disposition(&s);
            let _ = angle_message_id(&s);
            let _ = recipient_address(&s);
            let _ = xtext_decode(&s);
        }
    }
}
