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

pub(crate) fn random_hex(bytes: usize) -> String {
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
    let mut out = Vec::with_capacity(base64_lines_len(data.len()));
    push_base64_lines(&mut out, data);
    out
}

/// The length of [`base64_lines`]' output for `n` input bytes.
pub fn base64_lines_len(n: usize) -> usize {
    let lines = n.div_ceil(57);
    n.div_ceil(3) * 4 + lines * 2
}

/// Append `data` as base64 lines to `out`, without an intermediate copy of the whole encoding.
pub fn push_base64_lines(out: &mut Vec<u8>, data: &[u8]) {
    // Encoded 64 lines at a time (the encoder is fast on long input, slow on many short ones),
    // then cut into lines: 57 input bytes are exactly 76 characters, so a block of 64 × 57
    // bytes is 64 whole lines and only the last block can end short or padded.
    const LINES: usize = 64;
    out.reserve(base64_lines_len(data.len()));
    let mut block = [0u8; 76 * LINES];
    for chunk in data.chunks(57 * LINES) {
        let n = super::base64_engine()
            .encode_slice(chunk, &mut block)
            .expect("64 lines of 76 hold the base64 of 64 × 57 bytes");
        for line in block[..n].chunks(76) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Strip characters that would break a header or a file name.
fn header_safe(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' { '\'' } else { c })
        .collect()
}

/// Append the inner RFC 5322 message to `out` (so it can be built in place inside its wrapper).
pub fn build_inner_into(out: &mut Vec<u8>, m: &InnerMessage<'_>, message_id: &str, date: &str) {
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
    out.reserve(h.len() + base64_lines_len(m.payload.len()) + 2048);
    out.extend_from_slice(h.as_bytes());
    let part = |out: &mut Vec<u8>, headers: String, body: &[u8]| {
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
        out,
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
                out,
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
        out,
        format!(
            "Content-Type: {payload_type}; name=\"{filename}\"\r\n\
             Content-Disposition: attachment; filename=\"{filename}\"\r\n\
             Content-Transfer-Encoding: base64\r\n"
        ),
        &[],
    );
    push_base64_lines(out, m.payload);
    out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
}

/// The header that makes an entity an RFC 5751 §3.1 wrapper (message/rfc822).
pub const RFC822_WRAPPER: &[u8] = b"Content-Type: message/rfc822\r\n\r\n";

/// Start a detached multipart/signed entity in `out`: its header and the first delimiter. The
/// signed content is appended next, then [`finish_multipart_signed`] closes it. Returns the
/// boundary.
pub fn begin_multipart_signed(out: &mut Vec<u8>, micalg: &str) -> String {
    let b = boundary();
    out.extend_from_slice(
        format!(
            "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg={micalg}; boundary=\"{b}\"\r\n\r\n--{b}\r\n"
        )
        .as_bytes(),
    );
    b
}

/// Close a multipart/signed entity begun with [`begin_multipart_signed`] with its signature part.
pub fn finish_multipart_signed(out: &mut Vec<u8>, boundary: &str, signature_der: &[u8]) {
    let b = boundary;
    out.extend_from_slice(
        format!(
            "\r\n--{b}\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=smime.p7s\r\n\r\n"
        )
        .as_bytes(),
    );
    push_base64_lines(out, signature_der);
    out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
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

/// The header block of the outer message (ending with the blank line), for the base64 lines of
/// the enveloped CMS to be appended to, as [`Base64Lines`] does while OpenSSL streams it.
pub fn outer_headers(copied: &[(String, String)], authenticated: bool) -> Vec<u8> {
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
    out.into_bytes()
}

/// Base64 in CRLF lines of 76, written piece by piece: the same text as [`push_base64_lines`]
/// over the concatenation of every piece, for output that arrives as a stream.
#[derive(Debug)]
pub struct Base64Lines {
    pending: [u8; 57],
    pending_len: usize,
}

impl Default for Base64Lines {
    fn default() -> Self {
        Base64Lines {
            pending: [0; 57],
            pending_len: 0,
        }
    }
}

impl Base64Lines {
    /// Encode `data` onto `out`; a trailing partial line waits for more.
    pub fn push(&mut self, out: &mut Vec<u8>, mut data: &[u8]) {
        if self.pending_len > 0 {
            let take = (57 - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len < 57 {
                return;
            }
            let line = self.pending;
            push_base64_lines(out, &line);
            self.pending_len = 0;
        }
        let whole = data.len() / 57 * 57;
        push_base64_lines(out, &data[..whole]);
        let rest = &data[whole..];
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// Write the last, partial line.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        push_base64_lines(out, &self.pending[..self.pending_len]);
        self.pending_len = 0;
    }
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
        let mut bytes = Vec::new();
        build_inner_into(
            &mut bytes,
            &m,
            "<x@hisp-a.example>",
            "Sun, 22 Nov 2026 04:00:00 +0000",
        );
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

    #[test]
    fn streamed_base64_lines_match_the_whole_encoding() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 + i / 7) as u8).collect();
        let mut whole = Vec::new();
        push_base64_lines(&mut whole, &data);
        for sizes in [
            &[1usize][..],
            &[56, 1, 57, 58],
            &[4096],
            &[3, 1000, 7],
            &[10_000],
        ] {
            let mut out = Vec::new();
            let mut enc = Base64Lines::default();
            let mut rest = &data[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                enc.push(&mut out, &rest[..n]);
                rest = &rest[n..];
                i += 1;
            }
            enc.finish(&mut out);
            assert!(out == whole, "pieces of {sizes:?}");
        }
        let mut empty = Vec::new();
        let mut enc = Base64Lines::default();
        enc.push(&mut empty, b"");
        enc.finish(&mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn base64_lines_are_76_characters_and_decode_back() {
        use base64::Engine;
        for len in [
            0usize,
            1,
            56,
            57,
            58,
            57 * 64 - 1,
            57 * 64,
            57 * 64 + 1,
            57 * 130 + 5,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 + i / 57) as u8).collect();
            let mut out = Vec::new();
            push_base64_lines(&mut out, &data);
            assert_eq!(out.len(), base64_lines_len(len), "length for {len}");
            let text = std::str::from_utf8(&out).unwrap();
            let lines: Vec<&str> = text.split_terminator("\r\n").collect();
            for (i, l) in lines.iter().enumerate() {
                assert!(
                    l.len() == 76 || (i == lines.len() - 1 && l.len() < 76),
                    "line {i} of {len}: {} characters",
                    l.len()
                );
            }
            let back = base64::engine::general_purpose::STANDARD
                .decode(lines.concat())
                .unwrap();
            assert!(back == data, "round trip of {len}");
        }
    }
}
