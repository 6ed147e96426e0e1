//! A read-only walk over the BER of a CMS EnvelopedData, to decrypt a large message without a
//! second copy of its ciphertext.
//!
//! Why this exists: OpenSSL's CMS parser copies the encrypted content into its own structure (and,
//! for the indefinite-length, chunked octet strings that OpenSSL and BouncyCastle peers stream,
//! grows that copy chunk by chunk). For a 20 MiB payload that copy is another 27 MiB held beside
//! the DER it came from. OpenSSL can decrypt *detached* content from a BIO instead, so this module
//! splits the structure: everything but the encrypted content is re-encoded as a small ContentInfo
//! for OpenSSL to parse, and the content's chunks are moved together in place inside the caller's
//! buffer, where OpenSSL reads them through a memory BIO.
//!
//! The same walk takes the certificates out of a SignedData ([`detach_certificates`]): the
//! signature does not cover them, and a partner's certificates are the same DER in every message,
//! so they are parsed once and reused (see `smime::verify`) instead of decoded by OpenSSL each time.
//!
//! No maintained crate fits: the `der` crate and RustCrypto's `cms` refuse indefinite lengths, and
//! OpenSSL has no API for it. The walk only reads tags and lengths; anything it does not expect
//! (high tag numbers, a missing content, nesting deeper than [`MAX_DEPTH`]) returns `None`, and
//! the caller falls back to parsing the whole message with OpenSSL.

use std::ops::Range;

/// Deeper nesting than this is refused (a constructed octet string of constructed octet
/// strings...), so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 32;

/// DER of the OID 1.2.840.113549.1.7.3 (id-envelopedData), tag and length included.
const OID_ENVELOPED: &[u8] = &[
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x03,
];
/// DER of the OID 1.2.840.113549.1.9.16.1.23 (id-ct-authEnvelopedData).
const OID_AUTH_ENVELOPED: &[u8] = &[
    0x06, 0x0B, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x10, 0x01, 0x17,
];

/// DER of the OID 1.2.840.113549.1.7.2 (id-signedData).
const OID_SIGNED: &[u8] = &[
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02,
];

/// One element: its identifier octet, where its contents are, and where it ends.
#[derive(Debug, Clone, Copy)]
struct Element {
    tag: u8,
    start: usize,
    /// Start of the contents (after the identifier and length octets).
    body: usize,
    /// End of the contents (before the end-of-contents octets of an indefinite length).
    body_end: usize,
    /// End of the whole element.
    end: usize,
}

impl Element {
    fn constructed(&self) -> bool {
        self.tag & 0x20 != 0
    }
    fn raw<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start..self.end]
    }
}

/// Read the element at `pos`, not beyond `limit`.
fn read(buf: &[u8], pos: usize, limit: usize, depth: usize) -> Option<Element> {
    if depth > MAX_DEPTH || pos + 2 > limit {
        return None;
    }
    let tag = buf[pos];
    if tag & 0x1F == 0x1F {
        return None; // high tag numbers never occur in these structures
    }
    let first = buf[pos + 1];
    let mut body = pos + 2;
    if first == 0x80 {
        // Indefinite length: constructed only; the contents end at the end-of-contents octets.
        if tag & 0x20 == 0 {
            return None;
        }
        let mut at = body;
        loop {
            if at + 2 > limit {
                return None;
            }
            if buf[at] == 0 && buf[at + 1] == 0 {
                return Some(Element {
                    tag,
                    start: pos,
                    body,
                    body_end: at,
                    end: at + 2,
                });
            }
            at = read(buf, at, limit, depth + 1)?.end;
        }
    }
    let len = if first & 0x80 == 0 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || body + n > limit {
            return None;
        }
        let len = buf[body..body + n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        body += n;
        len
    };
    let body_end = body.checked_add(len).filter(|&e| e <= limit)?;
    Some(Element {
        tag,
        start: pos,
        body,
        body_end,
        end: body_end,
    })
}

/// The elements inside a constructed element.
fn children(buf: &[u8], e: &Element, depth: usize) -> Option<Vec<Element>> {
    if !e.constructed() {
        return None;
    }
    let mut out = Vec::new();
    let mut at = e.body;
    while at < e.body_end {
        let c = read(buf, at, e.body_end, depth + 1)?;
        at = c.end;
        out.push(c);
    }
    Some(out)
}

/// The content ranges of an octet string's primitive segments, in order.
fn segments(buf: &[u8], e: &Element, depth: usize, out: &mut Vec<Range<usize>>) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    if !e.constructed() {
        out.push(e.body..e.body_end);
        return Some(());
    }
    for c in children(buf, e, depth)? {
        // Segments of a constructed OCTET STRING are OCTET STRINGs (universal 4).
        if c.tag & 0xDF != 0x04 {
            return None;
        }
        segments(buf, &c, depth + 1, out)?;
    }
    Some(())
}

/// Append a definite DER length.
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// Append `tag`, a definite length and the concatenation of `parts`.
fn push_tlv(out: &mut Vec<u8>, tag: u8, parts: &[&[u8]]) {
    out.push(tag);
    push_len(out, parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// An enveloped message split for detached decryption.
#[derive(Debug)]
pub struct Detached {
    /// The ContentInfo without its encrypted content (small; definite lengths outside, the
    /// peer's own encoding inside each copied field).
    pub header: Vec<u8>,
    /// Where the ciphertext now lies, contiguous, in the caller's buffer.
    pub ciphertext: Range<usize>,
}

/// Split an EnvelopedData or AuthEnvelopedData ContentInfo in `buf` into a small header for
/// OpenSSL and its ciphertext, moved together in place. `None` (with `buf` untouched) when the
/// structure is not one this walk expects; the caller then lets OpenSSL parse it whole.
pub fn detach_enveloped(buf: &mut [u8]) -> Option<Detached> {
    let (header, pieces) = plan(buf)?;
    // Move the segments together, front to back: each lands at or before where it was.
    let start = pieces.first().map_or(0, |r| r.start);
    let mut write = start;
    for r in pieces {
        let len = r.len();
        buf.copy_within(r, write);
        write += len;
    }
    Some(Detached {
        header,
        ciphertext: start..write,
    })
}

/// Everything [`detach_enveloped`] needs, read without changing the buffer.
fn plan(buf: &[u8]) -> Option<(Vec<u8>, Vec<Range<usize>>)> {
    let ci = read(buf, 0, buf.len(), 0)?;
    let ci_kids = children(buf, &ci, 0)?;
    let [oid, explicit] = ci_kids.as_slice() else {
        return None;
    };
    let oid_raw = oid.raw(buf);
    if oid_raw != OID_ENVELOPED && oid_raw != OID_AUTH_ENVELOPED {
        return None;
    }
    if explicit.tag != 0xA0 {
        return None;
    }
    let env_kids = children(buf, explicit, 1)?;
    let [env] = env_kids.as_slice() else {
        return None;
    };
    if env.tag != 0x30 {
        return None;
    }
    let fields = children(buf, env, 2)?;
    let set = fields.iter().position(|f| f.tag == 0x31)?;
    let eci_at = set + 1;
    let eci = fields.get(eci_at).filter(|f| f.tag == 0x30)?;
    let eci_fields = children(buf, eci, 3)?;
    let [content_type, algorithm, content] = eci_fields.as_slice() else {
        return None; // already detached, or not the expected shape
    };
    if content.tag & 0xDF != 0x80 {
        return None; // [0] IMPLICIT OCTET STRING, primitive or constructed
    }
    let mut pieces = Vec::new();
    segments(buf, content, 4, &mut pieces)?;

    let mut new_eci = Vec::new();
    push_tlv(
        &mut new_eci,
        0x30,
        &[content_type.raw(buf), algorithm.raw(buf)],
    );
    let mut env_parts: Vec<&[u8]> = fields[..eci_at].iter().map(|f| f.raw(buf)).collect();
    env_parts.push(&new_eci);
    env_parts.extend(fields[eci_at + 1..].iter().map(|f| f.raw(buf)));
    let mut new_env = Vec::new();
    push_tlv(&mut new_env, 0x30, &env_parts);
    let mut new_explicit = Vec::new();
    push_tlv(&mut new_explicit, 0xA0, &[&new_env]);
    let mut header = Vec::new();
    push_tlv(&mut header, 0x30, &[oid_raw, &new_explicit]);
    Some((header, pieces))
}

/// A SignedData split from its certificates.
#[derive(Debug)]
pub struct WithoutCertificates {
    /// The ContentInfo without its `certificates` field.
    pub header: Vec<u8>,
    /// Each certificate's encoding, in order, as ranges of the caller's buffer.
    pub certificates: Vec<Range<usize>>,
}

/// Split a SignedData ContentInfo into the structure without its certificates and the
/// certificates themselves. `None` when it is not a SignedData, carries no certificates, or
/// carries anything but plain X.509 certificates there (OpenSSL then parses it whole).
pub fn detach_certificates(buf: &[u8]) -> Option<WithoutCertificates> {
    let ci = read(buf, 0, buf.len(), 0)?;
    let ci_kids = children(buf, &ci, 0)?;
    let [oid, explicit] = ci_kids.as_slice() else {
        return None;
    };
    if oid.raw(buf) != OID_SIGNED || explicit.tag != 0xA0 {
        return None;
    }
    let sd_kids = children(buf, explicit, 1)?;
    let [sd] = sd_kids.as_slice() else {
        return None;
    };
    if sd.tag != 0x30 {
        return None;
    }
    let fields = children(buf, sd, 2)?;
    // version, digestAlgorithms, encapContentInfo, then [0] IMPLICIT certificates OPTIONAL.
    let at = fields
        .iter()
        .enumerate()
        .skip(3)
        .find(|(_, f)| f.tag == 0xA0)
        .map(|(i, _)| i)?;
    let certs = children(buf, &fields[at], 3)?;
    if certs.is_empty() || certs.iter().any(|c| c.tag != 0x30) {
        return None;
    }
    let parts: Vec<&[u8]> = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at)
        .map(|(_, f)| f.raw(buf))
        .collect();
    let mut new_sd = Vec::new();
    push_tlv(&mut new_sd, 0x30, &parts);
    let mut new_explicit = Vec::new();
    push_tlv(&mut new_explicit, 0xA0, &[&new_sd]);
    let mut header = Vec::new();
    push_tlv(&mut header, 0x30, &[OID_SIGNED, &new_explicit]);
    Some(WithoutCertificates {
        header,
        certificates: certs.iter().map(|c| c.start..c.end).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        push_tlv(&mut v, tag, parts);
        v
    }

    /// An indefinite-length constructed element.
    fn indef(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![tag, 0x80];
        for p in parts {
            v.extend_from_slice(p);
        }
        v.extend_from_slice(&[0, 0]);
        v
    }

    fn enveloped(content: &[u8], indefinite: bool) -> Vec<u8> {
        let version = [0x02, 0x01, 0x00];
        let ris = tlv(0x31, &[&tlv(0x30, &[&[0x02, 0x01, 0x00]])]);
        let ct = [0x06, 0x03, 0x2A, 0x03, 0x04];
        let alg = tlv(0x30, &[&[0x06, 0x01, 0x01]]);
        let make = |tag: u8, parts: &[&[u8]]| {
            if indefinite {
                indef(tag, parts)
            } else {
                tlv(tag, parts)
            }
        };
        let eci = make(0x30, &[&ct, &alg, content]);
        let env = make(0x30, &[&version, &ris, &eci]);
        let explicit = make(0xA0, &[&env]);
        make(0x30, &[OID_ENVELOPED, &explicit])
    }

    #[test]
    fn definite_primitive_content_is_cut_out() {
        let mut buf = enveloped(&tlv(0x80, &[b"ciphertext"]), false);
        let d = detach_enveloped(&mut buf).expect("split");
        assert_eq!(&buf[d.ciphertext.clone()], b"ciphertext");
        // The header is the same structure without the [0] content.
        let expected = enveloped(&[], false);
        assert_eq!(d.header, expected);
    }

    #[test]
    fn indefinite_chunked_content_is_joined_in_place() {
        let chunks = indef(
            0xA0,
            &[
                &tlv(0x04, &[b"abc"]),
                &indef(0x24, &[&tlv(0x04, &[b"def"]), &tlv(0x04, &[b"g"])]),
                &tlv(0x04, &[b""]),
                &tlv(0x04, &[&[b'h'; 300]]),
            ],
        );
        let mut buf = enveloped(&chunks, true);
        let d = detach_enveloped(&mut buf).expect("split");
        let mut want = b"abcdefg".to_vec();
        want.extend_from_slice(&[b'h'; 300]);
        assert_eq!(&buf[d.ciphertext.clone()], want.as_slice());
        assert_eq!(d.header, enveloped(&[], false));
    }

    #[test]
    fn unexpected_shapes_are_left_to_openssl() {
        // Already detached (no content), signed data, garbage, truncation, bad segment type.
        let mut no_content = enveloped(&[], false);
        assert!(detach_enveloped(&mut no_content).is_none());
        let mut signed = tlv(
            0x30,
            &[
                &[
                    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02,
                ],
                &tlv(0xA0, &[&tlv(0x30, &[])]),
            ],
        );
        assert!(detach_enveloped(&mut signed).is_none());
        for garbage in [
            &b""[..],
            b"\x30",
            b"\x30\x80",
            b"\x30\x84\xff\xff\xff\xff",
            b"hello",
        ] {
            let mut g = garbage.to_vec();
            assert!(detach_enveloped(&mut g).is_none());
            assert_eq!(g, garbage, "a refused input is untouched");
        }
        let good = enveloped(&tlv(0x80, &[b"ciphertext"]), true);
        for cut in 1..good.len() {
            let mut t = good[..cut].to_vec();
            assert!(detach_enveloped(&mut t).is_none(), "truncated at {cut}");
        }
        let mut bad_segment = enveloped(&indef(0xA0, &[&tlv(0x02, &[b"x"])]), true);
        assert!(detach_enveloped(&mut bad_segment).is_none());
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        let mut v = Vec::new();
        for _ in 0..100_000 {
            v.extend_from_slice(&[0x30, 0x80]);
        }
        assert!(detach_enveloped(&mut v).is_none());
    }

    #[test]
    fn lengths_are_encoded_minimally() {
        let mut v = Vec::new();
        for (len, want) in [
            (0usize, &[0x00][..]),
            (0x7F, &[0x7F]),
            (0x80, &[0x81, 0x80]),
            (0x1234, &[0x82, 0x12, 0x34]),
            (0x0102_0304, &[0x84, 0x01, 0x02, 0x03, 0x04]),
        ] {
            v.clear();
            push_len(&mut v, len);
            assert_eq!(v, want, "length {len}");
        }
    }

    /// Random corruption of a valid structure (enveloped or signed) never panics: the walk either
    /// splits it or says no, and a split's ranges always lie inside the buffer.
    #[test]
    fn corrupted_structures_never_panic() {
        let chunks = indef(
            0xA0,
            &[&tlv(0x04, &[&[7u8; 200]]), &tlv(0x04, &[&[9u8; 1000]])],
        );
        let certs = tlv(
            0xA0,
            &[&tlv(0x30, &[&[1u8; 300]]), &tlv(0x30, &[&[2u8; 200]])],
        );
        let goods = [enveloped(&chunks, true), signed(Some(&certs))];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for i in 0..40_000 {
            let good = &goods[i % 2];
            let mut buf = good.clone();
            for _ in 0..(x % 4 + 1) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % buf.len();
                buf[at] = (x >> 32) as u8;
            }
            let len = buf.len();
            if let Some(w) = detach_certificates(&buf) {
                assert!(w.certificates.iter().all(|r| r.end <= len));
            }
            if let Some(d) = detach_enveloped(&mut buf) {
                assert!(d.ciphertext.end <= len);
            }
        }
    }

    fn signed(certs: Option<&[u8]>) -> Vec<u8> {
        let version = [0x02, 0x01, 0x01];
        let algs = tlv(0x31, &[]);
        let encap = tlv(0x30, &[&[0x06, 0x03, 0x2A, 0x03, 0x04]]);
        let sis = tlv(0x31, &[&tlv(0x30, &[&[0x02, 0x01, 0x01]])]);
        let mut parts: Vec<&[u8]> = vec![&version, &algs, &encap];
        if let Some(c) = certs {
            parts.push(c);
        }
        parts.push(&sis);
        let sd = indef(0x30, &parts);
        tlv(0x30, &[OID_SIGNED, &indef(0xA0, &[&sd])])
    }

    #[test]
    fn certificates_are_taken_out_of_signed_data() {
        let c1 = tlv(0x30, &[b"first certificate"]);
        let c2 = tlv(0x30, &[b"second"]);
        let certs = tlv(0xA0, &[&c1, &c2]);
        let buf = signed(Some(&certs));
        let w = detach_certificates(&buf).expect("split");
        assert_eq!(&buf[w.certificates[0].clone()], c1.as_slice());
        assert_eq!(&buf[w.certificates[1].clone()], c2.as_slice());
        // The header is the same SignedData without the field (definite lengths outside).
        let without = signed(None);
        let again = detach_certificates(&w.header);
        assert!(again.is_none(), "no certificates left");
        let (ci, h) = (
            read(&without, 0, without.len(), 0).unwrap(),
            read(&w.header, 0, w.header.len(), 0).unwrap(),
        );
        let kids = |b: &[u8], e: &Element| -> Vec<Vec<u8>> {
            let sd = &children(b, &children(b, e, 0).unwrap()[1], 1).unwrap()[0];
            children(b, sd, 2)
                .unwrap()
                .iter()
                .map(|f| f.raw(b).to_vec())
                .collect()
        };
        assert_eq!(kids(&without, &ci), kids(&w.header, &h));
    }

    #[test]
    fn other_certificate_choices_and_enveloped_data_are_left_whole() {
        let attr_cert = tlv(0xA1, &[b"attribute certificate"]);
        let certs = tlv(0xA0, &[&tlv(0x30, &[b"cert"]), &attr_cert]);
        assert!(detach_certificates(&signed(Some(&certs))).is_none());
        assert!(detach_certificates(&signed(Some(&tlv(0xA0, &[])))).is_none());
        assert!(detach_certificates(&enveloped(&tlv(0x80, &[b"x"]), false)).is_none());
        assert!(detach_certificates(b"\x30\x80").is_none());
    }
}
