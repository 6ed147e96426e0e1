//! Finding the payloads of a received Direct message: Direct Context v1.1 (HL7 v2), the HL7 MIME
//! types seen in the field, and XDM packages, decoded by `mail-parser`.

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// What kind of content a payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PayloadKind {
    /// An HL7 v2 (ER7) message or batch.
    Hl7v2,
    /// An IHE XDM zip package.
    Xdm,
    /// The Direct Context metadata.txt.
    DirectContext,
    /// Any other attachment.
    Attachment,
}

/// One payload taken from a message.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Payload {
    pub kind: PayloadKind,
    pub content_type: String,
    /// The sender's file name, if any (not sanitised: see [`Payload::safe_filename`]).
    pub filename: Option<String>,
    #[serde(skip)]
    pub data: Vec<u8>,
    pub size: usize,
}

impl PayloadKind {
    /// The file extension for this kind of payload.
    pub fn extension(self) -> &'static str {
        match self {
            PayloadKind::Hl7v2 => "hl7",
            PayloadKind::Xdm => "zip",
            PayloadKind::DirectContext => "txt",
            PayloadKind::Attachment => "bin",
        }
    }
}

impl Payload {
    /// A file name safe to create in an output directory: the sender's base name with path
    /// separators and control characters removed, or `payload-N.ext`.
    pub fn safe_filename(&self, index: usize) -> String {
        let ext = self.kind.extension();
        let cleaned: Option<String> = self.filename.as_ref().map(|f| {
            let base = f.rsplit(['/', '\\']).next().unwrap_or("");
            base.chars()
                .filter(|c| c.is_ascii_alphanumeric() || "._-@+".contains(*c))
                .collect::<String>()
                .trim_start_matches('.')
                .to_string()
        });
        match cleaned {
            Some(n) if !n.is_empty() && n.len() <= 100 => format!("{index:02}-{n}"),
            _ => format!("{index:02}-payload.{ext}"),
        }
    }
}

const HL7_TYPES: &[&str] = &[
    "application/x-direct-encapsulated+hl7v2",
    "application/hl7-v2",
    "x-application/hl7-v2+er7",
    "application/edi-hl7",
];

fn looks_like_hl7(data: &[u8]) -> bool {
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(&data[..0], |i| &data[i..]);
    ["MSH|", "FHS|", "BHS|"]
        .iter()
        .any(|s| start.starts_with(s.as_bytes()))
}

fn looks_like_xdm(data: &[u8]) -> bool {
    data.starts_with(b"PK") && crate::mime::entity::find(data, b"IHE_XDM/").is_some()
}

/// Extract every payload. The message body text is not a payload.
pub fn extract(message: &[u8]) -> Option<Vec<Payload>> {
    // mail-parser 0.11.9 has a `debug_assert!(false, "Invalid part ID, could not find
    // multipart.")` that a malformed nested multipart reaches (found by the `mime_entity` fuzz
    // target): a panic in debug builds on what a peer sent. Whatever the parser panics on is
    // not a readable message; `parse` gets only the borrowed input, so nothing is left half-done.
    let parsed = std::panic::catch_unwind(|| MessageParser::default().parse(message))
        .unwrap_or_else(|_| {
            tracing::warn!("the MIME parser panicked on a received message; treated as unreadable");
            None
        })?;
    let context_cid = parsed.header_raw("X-Direct-Context").map(|v| {
        v.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string()
    });
    // First decide which parts are payloads (borrowing), then move their decoded bodies out of
    // the parser's message so a large payload is not copied once more.
    let mut chosen = Vec::new();
    for (i, part) in parsed.parts.iter().enumerate() {
        if matches!(part.body, PartType::Multipart(_) | PartType::Message(_)) {
            continue;
        }
        let mime = part
            .content_type()
            .map(|c| {
                format!("{}/{}", c.ctype(), c.subtype().unwrap_or("octet-stream"))
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|| "text/plain".into());
        let filename = part.attachment_name().map(|s| s.to_string());
        let data = part.contents();
        let cid = part
            .content_id()
            .map(|c| c.trim_start_matches('<').trim_end_matches('>').to_string());
        let is_attachment = filename.is_some()
            || part
                .content_disposition()
                .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
        let kind = if context_cid.is_some() && cid.is_some() && cid == context_cid {
            PayloadKind::DirectContext
        } else if HL7_TYPES.contains(&mime.as_str())
            || mime == "text/plain"
                && filename
                    .as_deref()
                    .is_some_and(|f| f.to_ascii_lowercase().ends_with(".hl7"))
                && looks_like_hl7(data)
        {
            PayloadKind::Hl7v2
        } else if (mime == "application/zip"
            || mime == "application/octet-stream"
            || mime == "application/x-zip-compressed")
            && looks_like_xdm(data)
        {
            PayloadKind::Xdm
        } else if is_attachment && i > 0 {
            PayloadKind::Attachment
        } else {
            continue;
        };
        chosen.push((i, kind, mime, filename));
    }
    let mut parts = parsed.parts;
    let out = chosen
        .into_iter()
        .map(|(i, kind, content_type, filename)| {
            let body = std::mem::replace(&mut parts[i].body, PartType::Binary(Default::default()));
            let data = match body {
                PartType::Binary(c) | PartType::InlineBinary(c) => c.into_owned(),
                PartType::Text(t) | PartType::Html(t) => t.into_owned().into_bytes(),
                // Multipart and message parts were skipped above.
                _ => Vec::new(),
            };
            Payload {
                kind,
                content_type,
                filename,
                size: data.len(),
                data,
            }
        })
        .collect();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz crasher: a nested multipart that trips mail-parser's debug assertion.
    #[test]
    fn parser_panic_is_an_unreadable_message() {
        let crasher = include_bytes!(
            "../../tests/fixtures/fuzz/mime_entity/mail-parser-debug-assert-invalid-part-id.eml"
        );
        let _ = extract(crasher);
    }

    #[test]
    fn finds_field_hl7_types_and_named_text() {
        let msg = b"From: a@x.example\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n--B\r\nContent-Type: text/plain; name=vxu.hl7\r\nContent-Disposition: attachment; filename=vxu.hl7\r\n\r\nMSH|^~\\&|X\r\n--B\r\nContent-Type: application/edi-hl7\r\nContent-Disposition: attachment\r\n\r\nMSH|^~\\&|Y\r\n--B--\r\n";
        let p = extract(msg).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|p| p.kind == PayloadKind::Hl7v2));
    }

    #[test]
    fn safe_filenames_cannot_escape() {
        let p = Payload {
            kind: PayloadKind::Hl7v2,
            content_type: "x".into(),
            filename: Some("../../etc/passwd".into()),
            data: vec![],
            size: 0,
        };
        assert_eq!(p.safe_filename(1), "01-passwd");
        let q = Payload {
            filename: Some("..".into()),
            ..p
        };
        assert_eq!(q.safe_filename(2), "02-payload.hl7");
    }
}
