//! Byte-exact reading of MIME entities: header/body split, unfolded header lookup, Content-Type
//! parameters, and the two parts of multipart/signed.

use std::borrow::Cow;

/// A MIME entity split into its header block and body, borrowed from the input.
pub struct Entity<'a> {
    pub header: &'a [u8],
    pub body: &'a [u8],
    /// Borrowed from `header` unless folded or not UTF-8.
    headers: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Entity<'a> {
    /// Split at the first empty line (CRLF CRLF, or LF LF in files saved on Unix). An entity with
    /// no empty line is all header.
    pub fn parse(bytes: &'a [u8]) -> Entity<'a> {
        let (header, body) = match find(bytes, b"\r\n\r\n") {
            Some(i) if find(&bytes[..i], b"\n\n").is_none() => (&bytes[..i + 2], &bytes[i + 4..]),
            _ => match find(bytes, b"\n\n") {
                Some(i) => (&bytes[..i + 1], &bytes[i + 2..]),
                None => (bytes, &bytes[bytes.len()..]),
            },
        };
        let headers = unfold(header);
        Entity {
            header,
            body,
            headers,
        }
    }

    /// The first value of a header, unfolded and trimmed; name comparison ignores case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// Every header as (name, value), in order.
    pub fn headers(&self) -> &[(Cow<'a, str>, Cow<'a, str>)] {
        &self.headers
    }

    /// The parsed Content-Type (text/plain when absent, as RFC 2045 says).
    pub fn content_type(&self) -> ContentType {
        ContentType::parse(self.header("Content-Type").unwrap_or("text/plain"))
    }
}

fn unfold(header: &[u8]) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    match std::str::from_utf8(header) {
        Ok(text) => unfold_text(text),
        // Not UTF-8: read lossily, and own what was read.
        Err(_) => unfold_text(&String::from_utf8_lossy(header))
            .into_iter()
            .map(|(n, v)| (Cow::Owned(n.into_owned()), Cow::Owned(v.into_owned())))
            .collect(),
    }
}

fn unfold_text(text: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    let mut out: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                let value = last.1.to_mut();
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        // RFC 5322 §2.2: a field name is printable ASCII other than ':' and space. A line that is
        // not a field is not a header (binary garbage then has no header block at all).
        if let Some((n, v)) = line.split_once(':') {
            let n = n.trim_end();
            if !n.is_empty() && n.bytes().all(|b| (33..=126).contains(&b)) {
                out.push((Cow::Borrowed(n), Cow::Borrowed(v.trim())));
            }
        }
    }
    out
}

/// A Content-Type value: `type/subtype; param=value; ...` (names lower-cased).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentType {
    pub mime: String,
    params: Vec<(String, String)>,
}

impl ContentType {
    pub fn parse(value: &str) -> ContentType {
        let mut parts = split_params(value).into_iter();
        let mime = parts
            .next()
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let params = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                Some((k.trim().to_ascii_lowercase(), v.to_string()))
            })
            .collect();
        ContentType { mime, params }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is(&self, mime: &str) -> bool {
        self.mime == mime
    }
}

fn split_params(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c)
            }
            ';' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(hay, needle)
}

/// The parts of a multipart body, each exactly as it stands between its delimiters (the CRLF
/// before a delimiter belongs to the delimiter, RFC 2046 §5.1.1). Returns `None` when the
/// boundary never appears.
pub fn multipart_parts<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<&'a [u8]>> {
    let delim = format!("--{boundary}");
    let mut starts = Vec::new(); // (line start, line end incl. newline)
    for pos in memchr::memmem::find_iter(body, delim.as_bytes()) {
        // A delimiter starts a line.
        if pos > 0 && body[pos - 1] != b'\n' {
            continue;
        }
        let end = memchr::memchr(b'\n', &body[pos..]).map_or(body.len(), |i| pos + i + 1);
        // A boundary parameter ending in CR or LF (a hostile or broken peer) makes the trimmed
        // line shorter than the delimiter: then this is no delimiter line.
        let Some(rest) = trim_line(&body[pos..end]).get(delim.len()..) else {
            continue;
        };
        if rest.starts_with(b"--") {
            starts.push((pos, end));
            break;
        }
        if rest.iter().all(|b| *b == b' ' || *b == b'\t') {
            starts.push((pos, end));
        }
    }
    if starts.len() < 2 {
        return None;
    }
    let mut parts = Vec::new();
    for w in starts.windows(2) {
        let (_, content_start) = w[0];
        let (next_line, _) = w[1];
        let mut content_end = next_line;
        if content_end > content_start && body[content_end - 1] == b'\n' {
            content_end -= 1;
            if content_end > content_start && body[content_end - 1] == b'\r' {
                content_end -= 1;
            }
        }
        parts.push(&body[content_start..content_end.max(content_start)]);
    }
    Some(parts)
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let [rest @ .., b'\n' | b'\r'] = l {
        l = rest;
    }
    l
}

/// Convert bare LF line endings to CRLF (S/MIME signs the canonical form). Input that already
/// uses CRLF is returned unchanged.
pub fn canonical_crlf(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let bare = |i: usize| i == 0 || bytes[i - 1] != b'\r';
    if !memchr::memchr_iter(b'\n', bytes).any(bare) {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 40);
    let mut from = 0;
    for i in memchr::memchr_iter(b'\n', bytes) {
        out.extend_from_slice(&bytes[from..i]);
        if bare(i) {
            out.push(b'\r');
        }
        out.push(b'\n');
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_header_and_body_with_folding() {
        let e = Entity::parse(
            b"Content-Type: multipart/signed;\r\n protocol=\"application/pkcs7-signature\"; boundary=\"b;1\"\r\n\r\nbody",
        );
        let ct = e.content_type();
        assert!(ct.is("multipart/signed"));
        assert_eq!(ct.param("boundary"), Some("b;1"));
        assert_eq!(ct.param("protocol"), Some("application/pkcs7-signature"));
        assert_eq!(e.body, b"body");
    }

    #[test]
    fn multipart_parts_are_byte_exact() {
        let body = b"preamble\r\n--B\r\nA: 1\r\n\r\nfirst\r\n\r\n--B\r\nsecond\r\n--B--\r\n";
        let parts = multipart_parts(body, "B").unwrap();
        assert_eq!(parts, vec![&b"A: 1\r\n\r\nfirst\r\n"[..], &b"second"[..]]);
        assert!(multipart_parts(b"no delimiters", "B").is_none());
    }

    #[test]
    fn boundary_ending_in_cr_does_not_panic() {
        // Found by the MDN parser's tests: `boundary="a\r\r"` used to slice out of range.
        assert!(multipart_parts(b"--a\r\r\n--a\r\r--\r\n", "a\r\r").is_none());
        assert!(multipart_parts(b"x\r\n--a\r\n", "a\r").is_none());
    }

    #[test]
    fn canonicalises_bare_lf_only() {
        assert_eq!(&*canonical_crlf(b"a\nb\r\n"), b"a\r\nb\r\n");
        assert!(matches!(
            canonical_crlf(b"a\r\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
