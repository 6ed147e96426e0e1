//! Building Direct messages: the inner RFC 5322 message (Direct Context v1.1 for HL7 v2
//! payloads), the message/rfc822 wrapper, multipart/signed, and the outer enveloped message.
//! Everything is written with CRLF line endings and 7-bit content so it signs canonically.

use base64::Engine;

use crate::address::DirectAddress;

/// The MIME type Direct Context v1.1 gives an HL7 v2 payload.
pub const HL7V2_DIRECT_TYPE: &str = "application/x-direct-encapsulated+hl7v2";

/// What the inner message carries.
pub struct InnerMessage<'a> {
    pub from: &'a DirectAddress,
    pub to: &'a [DirectAddress],
    /// A subject without PHI.
    pub subject: &'a str,
    pub payload: &'a [u8],
    /// `None`: Direct Context with an HL7 v2 payload. `Some(type)`: a plain attachment.
    pub content_type: Option<&'a str>,
    pub filename: &'a str,
    pub request_mdn: bool,
    /// Extra protected headers (e.g. ping markers), already valid header lines without CRLF.
    pub extra_headers: &'a [(String, String)],
}

/// `<random@domain>`: 128 random bits make it unique without coordination.
pub fn new_message_id(domain: &str) -> String {
    format!("<{}@{}>", random_hex(16), domain)
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    // A failing system RNG is not recoverable; OpenSSL reports it as an error we cannot act on.
    openssl::rand::rand_bytes(&mut b).expect("the OpenSSL random generator failed");
    hex::encode(b)
}

fn boundary() -> String {
    format!("----=_direct_{}", random_hex(12))
}

/// Base64 in lines of 76 characters, each ending CRLF.
pub fn base64_lines(data: &[u8]) -> Vec<u8> {
    let enc = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(enc.len() + enc.len() / 76 * 2 + 2);
    for chunk in enc.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Strip characters that would break a header or a file name.
fn header_safe(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' { '\'' } else { c })
        .collect()
}

/// Build the inner RFC 5322 message. Returns its bytes.
pub fn build_inner(m: &InnerMessage<'_>, message_id: &str, date: &str) -> Vec<u8> {
    let to =
        m.to.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
    let b = boundary();
    let filename = header_safe(m.filename);
    let mut h = String::new();
    h.push_str(&format!("Date: {date}\r\n"));
    h.push_str(&format!("Message-ID: {message_id}\r\n"));
    h.push_str(&format!("From: {}\r\n", m.from));
    h.push_str(&format!("To: {to}\r\n"));
    h.push_str(&format!("Subject: {}\r\n", header_safe(m.subject)));
    h.push_str("MIME-Version: 1.0\r\n");
    if m.request_mdn {
        h.push_str(&format!("Disposition-Notification-To: {}\r\n", m.from));
        h.push_str(
            "Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true\r\n",
        );
    }
    for (k, v) in m.extra_headers {
        h.push_str(&format!("{}: {}\r\n", header_safe(k), header_safe(v)));
    }
    let context_cid = format!("{}@{}", random_hex(12), m.from.domain());
    if m.content_type.is_none() {
        h.push_str(&format!("X-Direct-Context: <{context_cid}>\r\n"));
    }
    h.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n"
    ));
    let mut out = h.into_bytes();
    let mut part = |headers: String, body: &[u8]| {
        out.extend_from_slice(format!("--{b}\r\n").as_bytes());
        out.extend_from_slice(headers.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
    };
    let note = if m.content_type.is_none() {
        "This Direct message carries an HL7 v2 message as an attachment.\r\n"
    } else {
        "This Direct message carries an attachment.\r\n"
    };
    part(
        "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n".into(),
        note.as_bytes(),
    );
    let payload_type = match m.content_type {
        None => {
            let metadata = format!(
                "version: 1.0\r\nid: {}\r\nencapsulation: hl7v2\r\n",
                message_id
            );
            part(
                format!(
                    "Content-Type: text/plain; charset=us-ascii; name=metadata.txt\r\n\
                     Content-ID: <{context_cid}>\r\n\
                     Content-Disposition: attachment; filename=metadata.txt\r\n\
                     Content-Transfer-Encoding: 7bit\r\n"
                ),
                metadata.as_bytes(),
            );
            HL7V2_DIRECT_TYPE.to_string()
        }
        Some(t) => header_safe(t),
    };
    part(
        format!(
            "Content-Type: {payload_type}; name=\"{filename}\"\r\n\
             Content-Disposition: attachment; filename=\"{filename}\"\r\n\
             Content-Transfer-Encoding: base64\r\n"
        ),
        &base64_lines(m.payload),
    );
    out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    out
}

/// RFC 5751 §3.1 wrapping: the whole message as a message/rfc822 entity.
pub fn wrap_rfc822(inner: &[u8]) -> Vec<u8> {
    let mut out = b"Content-Type: message/rfc822\r\n\r\n".to_vec();
    out.extend_from_slice(inner);
    out
}

/// A detached multipart/signed entity around `content` (already canonical) and its signature.
pub fn multipart_signed(content: &[u8], signature_der: &[u8], micalg: &str) -> Vec<u8> {
    let b = boundary();
    let mut out = format!(
        "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg={micalg}; boundary=\"{b}\"\r\n\r\n--{b}\r\n"
    )
    .into_bytes();
    out.extend_from_slice(content);
    out.extend_from_slice(
        format!(
            "\r\n--{b}\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=smime.p7s\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&base64_lines(signature_der));
    out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    out
}

/// Headers copied from the inner message to the outer one (the Java RI's list; Subject is not
/// copied, so nothing a sender typed there leaks outside the encryption), plus the MDN request
/// headers, which relays and MDN trackers read.
pub const COPIED_HEADERS: &[&str] = &[
    "MIME-Version",
    "From",
    "To",
    "Cc",
    "Bcc",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Disposition-Notification-To",
    "Disposition-Notification-Options",
];

/// The outer message: copied headers and the enveloped CMS as `smime.p7m`.
pub fn outer_message(copied: &[(String, String)], cms_der: &[u8], authenticated: bool) -> Vec<u8> {
    let mut out = String::new();
    let mut has_mime_version = false;
    for (k, v) in copied {
        has_mime_version |= k.eq_ignore_ascii_case("MIME-Version");
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_mime_version {
        out.push_str("MIME-Version: 1.0\r\n");
    }
    let smime_type = if authenticated {
        "authEnveloped-data"
    } else {
        "enveloped-data"
    };
    out.push_str(&format!(
        "Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=smime.p7m\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=smime.p7m\r\n\r\n"
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&base64_lines(cms_der));
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::entity::{Entity, multipart_parts};

    #[test]
    fn inner_message_follows_direct_context() {
        let from = DirectAddress::parse("ehr@hisp-a.example").unwrap();
        let to = [DirectAddress::parse("iis@hisp-b.example").unwrap()];
        let m = InnerMessage {
            from: &from,
            to: &to,
            subject: "HL7 message",
            payload: b"MSH|^~\\&|A\r",
            content_type: None,
            filename: "message.hl7",
            request_mdn: true,
            extra_headers: &[],
        };
        let bytes = build_inner(&m, "<x@hisp-a.example>", "Sun, 22 Nov 2026 04:00:00 +0000");
        let e = Entity::parse(&bytes);
        let cid = e.header("X-Direct-Context").unwrap().to_string();
        assert!(cid.starts_with('<'));
        assert_eq!(
            e.header("Disposition-Notification-Options"),
            Some("X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true")
        );
        let ct = e.content_type();
        let parts = multipart_parts(e.body, ct.param("boundary").unwrap()).unwrap();
        assert_eq!(parts.len(), 3);
        let meta = Entity::parse(parts[1]);
        assert_eq!(meta.header("Content-ID"), Some(cid.as_str()));
        assert!(String::from_utf8_lossy(meta.body).contains("encapsulation: hl7v2"));
        assert!(Entity::parse(parts[2]).content_type().is(HL7V2_DIRECT_TYPE));
        assert!(
            !bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
            "CRLF only"
        );
    }

    #[test]
    fn base64_lines_are_76_wide() {
        let l = base64_lines(&[7u8; 200]);
        let text = String::from_utf8(l).unwrap();
        assert!(text.split("\r\n").all(|line| line.len() <= 76));
    }
}
