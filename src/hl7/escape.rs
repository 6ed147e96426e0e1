//! HL7 escape sequences: decoding values read from a message, encoding values written into one.
//!
//! Decoded (with the message's own escape character, shown here as `\`):
//! - `\F\ \S\ \T\ \R\ \E\`: the field, component, subcomponent and repetition separators and the
//!   escape character; `\P\` the truncation character, when MSH-2 declares one (v2.7).
//! - `\Xhhhh...\`: bytes in hexadecimal, read as UTF-8 when they are valid UTF-8, else each byte as
//!   an ISO-8859-1 character (the usual single-byte sets of MSH-18).
//! - `\.br\`: a line break, as `\n`.
//!
//! Kept as written: the other formatting commands (`\.sp\ \.in\ \.ti\ \.sk\ \.ce\ \.fi\ \.nf\`,
//! `\H\ \N\`), character-set switches (`\C..\ \M..\`), local `\Z..\` sequences, anything
//! unrecognised, and an escape character with no closing one. They only mean something in FT
//! fields or to a particular receiver, and keeping them loses nothing.
//!
//! Encoding escapes the delimiters and the escape character, and writes CR and LF as `\X0D\` and
//! `\X0A\` (a raw CR would end the segment).

use std::borrow::Cow;

use super::Delimiters;

/// `text` with its escape sequences decoded (see the module doc). Borrows when there are none.
pub fn decode<'a>(text: &'a str, delimiters: &Delimiters) -> Cow<'a, str> {
    let esc = delimiters.escape();
    if !text.contains(esc) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(esc) {
        out.push_str(&rest[..start]);
        // The escape character is ASCII (checked when the delimiters were read), so +1 is a
        // character boundary.
        let after = &rest[start + 1..];
        let Some(len) = after.find(esc) else {
            // No closing escape character: keep the rest as written.
            out.push_str(&rest[start..]);
            return Cow::Owned(out);
        };
        let sequence = &after[..len];
        match decode_sequence(sequence, delimiters) {
            Some(decoded) => out.push_str(&decoded),
            None => {
                out.push(esc);
                out.push_str(sequence);
                out.push(esc);
            }
        }
        rest = &after[len + 1..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// What one sequence (between the escape characters) stands for; None to keep it as written.
fn decode_sequence(sequence: &str, d: &Delimiters) -> Option<Cow<'static, str>> {
    let one = |c: char| Some(Cow::Owned(c.to_string()));
    match sequence {
        "F" => one(d.field()),
        "S" => one(d.component()),
        "T" => one(d.subcomponent()),
        "R" => one(d.repetition()),
        "E" => one(d.escape()),
        "P" => d.truncation().and_then(one),
        ".br" => Some(Cow::Borrowed("\n")),
        _ => {
            let hex = sequence.strip_prefix('X')?;
            let bytes = hex_bytes(hex)?;
            Some(Cow::Owned(match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => e.into_bytes().into_iter().map(char::from).collect(),
            }))
        }
    }
}

/// An even, non-zero number of hex digits as bytes.
fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// `text` with the delimiters, the escape character, CR and LF escaped, ready to be written as
/// one value (a component or subcomponent) with `delimiters`. Borrows when nothing needs escaping.
pub fn encode<'a>(text: &'a str, delimiters: &Delimiters) -> Cow<'a, str> {
    let d = delimiters;
    let special = |c: char| {
        c == d.field()
            || c == d.component()
            || c == d.repetition()
            || c == d.escape()
            || c == d.subcomponent()
            || Some(c) == d.truncation()
            || c == '\r'
            || c == '\n'
    };
    if !text.contains(special) {
        return Cow::Borrowed(text);
    }
    let esc = d.escape();
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        let code = if c == d.field() {
            "F"
        } else if c == d.component() {
            "S"
        } else if c == d.subcomponent() {
            "T"
        } else if c == d.repetition() {
            "R"
        } else if c == esc {
            "E"
        } else if Some(c) == d.truncation() {
            "P"
        } else if c == '\r' {
            "X0D"
        } else if c == '\n' {
            "X0A"
        } else {
            out.push(c);
            continue;
        };
        out.push(esc);
        out.push_str(code);
        out.push(esc);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STD: Delimiters = Delimiters::STANDARD;

    #[test]
    fn decodes_the_delimiter_sequences() {
        assert_eq!(decode(r"A\F\B\S\C\T\D\R\E\E\F", &STD), r"A|B^C&D~E\F");
    }

    #[test]
    fn borrows_when_there_is_nothing_to_decode() {
        assert!(matches!(
            decode("Hep B, adolescent", &STD),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            encode("Hep B, adolescent", &STD),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn decodes_hex_as_utf8_or_latin1() {
        assert_eq!(decode(r"a\X0D0A\b", &STD), "a\r\nb");
        assert_eq!(decode(r"Jos\XC3A9\", &STD), "José");
        assert_eq!(decode(r"Jos\XE9\", &STD), "José");
    }

    #[test]
    fn decodes_line_breaks_and_keeps_other_formatting() {
        assert_eq!(decode(r"one\.br\two", &STD), "one\ntwo");
        assert_eq!(decode(r"\H\bold\N\ \.sp2\", &STD), r"\H\bold\N\ \.sp2\");
    }

    #[test]
    fn keeps_malformed_sequences() {
        assert_eq!(decode(r"a\Xzz\b", &STD), r"a\Xzz\b");
        assert_eq!(decode(r"a\X0\b", &STD), r"a\X0\b");
        assert_eq!(decode(r"trailing\F", &STD), r"trailing\F");
        assert_eq!(decode(r"\\", &STD), r"\\");
        assert_eq!(decode(r"\P\", &STD), r"\P\");
    }

    #[test]
    fn encodes_delimiters_and_line_breaks() {
        assert_eq!(
            encode("A|B^C&D~E\\F\r\nG", &STD),
            r"A\F\B\S\C\T\D\R\E\E\F\X0D\\X0A\G"
        );
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(text in any::<String>()) {
            let encoded = encode(&text, &STD);
            prop_assert!(!encoded.contains(['|', '^', '~', '&', '\r', '\n']));
            prop_assert_eq!(decode(&encoded, &STD), text.as_str());
        }

        #[test]
        fn decode_never_panics(text in r"[\\A-Z0-9.|^~&é]{0,40}") {
            let _ = decode(&text, &STD);
        }
    }
}
