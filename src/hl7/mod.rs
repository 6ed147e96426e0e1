//! HL7 v2 messages in ER7 ("pipe and hat") encoding: the reader, MSH access and the ACK builder.
//! Pure code, no I/O.
//!
//! - [`er7`]: [`parse_messages`] splits a payload (one message, several, or an FHS/BHS batch) into
//!   [`Message`]s of [`Segment`]s, and those into fields, repetitions, components and
//!   subcomponents, borrowing from the payload (nothing is copied until a value is decoded).
//! - [`escape`]: the escape sequences (`\F\ \S\ \T\ \R\ \E\ \Xhh\ \.br\`), both ways.
//! - [`msh`]: [`Msh`], typed access to the header; [`MshBuilder`] for connectivity-test messages.
//! - [`ack`]: [`build_ack`], the acknowledgement of the CDC immunization guide (MSA + ERR).
//! - [`validate`]: the validation profiles (`header`, `immunization`) and their findings, which
//!   become the ACK's MSA-1 and ERR segments.
//! - [`review`]: the onboarding review, validation reports of many files folded into one verdict
//!   per checklist item (text, JSON, HTML).
//! - here: [`Hl7Error`], what went wrong and where, and [`Location`], a position in a message.
//!
//! # Positions
//! A [`Location`] is written two ways:
//! - as a path, `RXA[2]-5.1`: segment ID, the segment's occurrence in the message in brackets
//!   (left out when it is the first), `-` field number, the field repetition in brackets (left
//!   out when it is the first), `.` component, `.` subcomponent. `PID-3[2].1` is the first
//!   component of the second repetition of PID-3. [`Message::get`] takes this form.
//! - as the HL7 ERL data type of ERR-2, `RXA^2^5^1^1`: segment ID ^ segment sequence ^ field
//!   position ^ field repetition ^ component number ^ subcomponent number, all counted from 1;
//!   the sequence counts occurrences of that segment ID in the message (not its Set-ID).
//!
//! Field numbers are HL7's: MSH-1 is the field separator itself and MSH-2 the encoding
//! characters, so MSH-9 is the message type, as in the standard.
//!
//! # Why our own reader
//! The maintained crates were checked first. `hl7-parser` (0.3) is zero-copy, but as far as its
//! documentation shows reads one message at a time (no FHS/BHS batches, no splitting of a payload
//! on MSH), reports failures as parser offsets rather than segment and field positions, and would
//! bring `nom` 7 into a tree that has no parser-combinator library today. The others found
//! (`hl7v2`, AGPL-licensed; `hl7v2-parser` and `hl7-net`, which copy the message into an owned
//! tree; `hl7kit`) are young projects. ER7 is a small grammar (split on five characters, decode a
//! handful of escape sequences), so a reader of a few hundred lines that we test and fuzz
//! ourselves costs less than adapting an outside API to located errors, ERL positions and
//! batches. No dependency was added (`memchr` and `thiserror` were already in the tree).

pub mod ack;
pub mod er7;
pub mod escape;
pub mod msh;
pub mod review;
pub mod validate;

use std::fmt;
use std::str::FromStr;

pub use ack::{AckCode, AckError, ApplicationErrorCode, ErrorCode, Severity, build_ack};
pub use er7::{
    Component, Delimiters, Field, Message, Repetition, Segment, Subcomponent, parse_messages,
    parse_messages_bytes,
};
pub use msh::{Hd, HierarchicDesignator, MessageType, Msh, MshBuilder};

/// Why a payload (or a location) could not be read, with where and what to do about it.
///
/// Every variant that points into a payload carries the 1-based line (segment terminators CR, LF
/// and CRLF each end a line, blank lines count) and the byte offset, so an interface analyst can
/// open the file at the spot. Messages name delimiters and segment IDs, never field contents
/// (payloads are protected health information).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Hl7Error {
    /// Nothing but blank lines.
    #[error("the HL7 payload is empty: expected a message starting with MSH|^~\\&|")]
    Empty,

    /// The payload is not UTF-8 ([`parse_messages_bytes`]).
    #[error(
        "the HL7 payload is not UTF-8 (invalid byte at offset {offset}): convert it from the \
         character set named in MSH-18 (e.g. ISO-8859-1) before reading, or ask the sender for UTF-8"
    )]
    NotUtf8 {
        /// Offset of the first byte that is not UTF-8.
        offset: usize,
    },

    /// Only batch or file headers and trailers (FHS, BHS, BTS, FTS), no MSH.
    #[error(
        "the HL7 payload holds batch headers or trailers but no message: each message must start \
         with an MSH segment"
    )]
    NoMessage,

    /// A segment that belongs to no message: before the first MSH or after a batch trailer.
    #[error(
        "line {line} (byte {offset}): segment {id} belongs to no message (it comes before any MSH, \
         or after a batch trailer): every HL7 message must start with its MSH header; check that \
         the sender did not drop or reorder it"
    )]
    SegmentOutsideMessage {
        /// The segment ID found.
        id: String,
        /// 1-based line in the payload.
        line: usize,
        /// Byte offset of the segment in the payload.
        offset: usize,
    },

    /// An MSH, FHS or BHS too short to declare its delimiters.
    #[error(
        "line {line} (byte {offset}): the {id} segment is {length} characters long: a header needs \
         at least 8 (`{id}|^~\\&`) to declare its delimiters"
    )]
    HeaderTooShort {
        /// MSH, FHS or BHS.
        id: String,
        /// 1-based line in the payload.
        line: usize,
        /// Byte offset of the segment in the payload.
        offset: usize,
        /// Its length in characters.
        length: usize,
    },

    /// A delimiter in MSH-1/MSH-2 (or FHS/BHS) that cannot be one.
    #[error(
        "line {line} (byte {offset}): {location} declares {found:?} as the {role}, but {problem}; \
         the standard delimiters are |^~\\&"
    )]
    BadDelimiter {
        /// MSH-1 (or FHS-1, BHS-1) for the field separator, MSH-2 for the others.
        location: Box<Location>,
        /// 1-based line in the payload.
        line: usize,
        /// Byte offset of the segment in the payload.
        offset: usize,
        /// The character declared.
        found: char,
        /// Which delimiter, e.g. "component separator".
        role: &'static str,
        /// What is wrong with it.
        problem: String,
    },

    /// MSH-2 (or FHS-2, BHS-2) does not hold four (or five) encoding characters.
    #[error(
        "line {line} (byte {offset}): {location} holds {count} encoding characters: it must hold \
         four (component, repetition, escape, subcomponent, e.g. ^~\\&), or five with the HL7 v2.7 \
         truncation character"
    )]
    BadEncodingCharacters {
        /// MSH-2, FHS-2 or BHS-2.
        location: Box<Location>,
        /// 1-based line in the payload.
        line: usize,
        /// Byte offset of the segment in the payload.
        offset: usize,
        /// How many characters it holds.
        count: usize,
    },

    /// A blank line inside a message (blank lines between messages and at the end are tolerated).
    #[error(
        "line {line} (byte {offset}) is an empty segment inside a message: HL7 segments are never \
         empty; a line break inside a field value is the usual cause (it must be sent escaped, as \
         \\X0A\\ or \\.br\\)"
    )]
    EmptySegment {
        /// 1-based line in the payload.
        line: usize,
        /// Byte offset of the line in the payload.
        offset: usize,
    },

    /// A line that does not start with a segment ID and the field separator.
    #[error(
        "line {line} (byte {offset}) does not start with a segment ID: a segment starts with three \
         upper-case letters or digits (e.g. PID) followed by the field separator {separator:?}; a \
         line break inside a field value is the usual cause"
    )]
    BadSegmentId {
        /// The first (at most four) characters of the line. Not in the message: after a broken
        /// line they are usually patient data.
        found: String,
        /// The field separator in force.
        separator: char,
        /// 1-based line in the payload.
        line: usize,
        /// Byte offset of the line in the payload.
        offset: usize,
    },

    /// A location path (`RXA[2]-5.1`) or ERL (`RXA^2^5^1^1`) that does not parse.
    #[error(
        "{text:?} is not an HL7 location ({reason}); write e.g. RXA[2]-5.1 or PID-3[2].1, or \
         RXA^2^5^1^1 as in ERR-2"
    )]
    InvalidLocation {
        /// The text given (at most 80 characters of it).
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Hl7Error {
    /// The field the error is in, when it is in one (MSH-1, MSH-2).
    pub fn location(&self) -> Option<&Location> {
        match self {
            Hl7Error::BadDelimiter { location, .. }
            | Hl7Error::BadEncodingCharacters { location, .. } => Some(&**location),
            _ => None,
        }
    }

    /// The 1-based line of the payload the error is on, when it is on one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Hl7Error::SegmentOutsideMessage { line, .. }
            | Hl7Error::HeaderTooShort { line, .. }
            | Hl7Error::BadDelimiter { line, .. }
            | Hl7Error::BadEncodingCharacters { line, .. }
            | Hl7Error::EmptySegment { line, .. }
            | Hl7Error::BadSegmentId { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The byte offset in the payload the error is at, when it is at one.
    pub fn offset(&self) -> Option<usize> {
        match self {
            Hl7Error::NotUtf8 { offset }
            | Hl7Error::SegmentOutsideMessage { offset, .. }
            | Hl7Error::HeaderTooShort { offset, .. }
            | Hl7Error::BadDelimiter { offset, .. }
            | Hl7Error::BadEncodingCharacters { offset, .. }
            | Hl7Error::EmptySegment { offset, .. }
            | Hl7Error::BadSegmentId { offset, .. } => Some(*offset),
            _ => None,
        }
    }

    /// Never: the same bytes fail the same way every time; the sender has to fix the message.
    pub fn is_transient(&self) -> bool {
        false
    }

    /// Always (see [`Hl7Error::is_transient`]).
    pub fn is_permanent(&self) -> bool {
        !self.is_transient()
    }

    fn invalid_location(text: &str, reason: &'static str) -> Self {
        Hl7Error::InvalidLocation {
            text: text.chars().take(80).collect(),
            reason,
        }
    }
}

/// A position in a message: a segment occurrence, and optionally a field repetition, a component
/// and a subcomponent. All numbers count from 1. See the module doc for the two written forms.
///
/// ```
/// use direct_agent::hl7::{Delimiters, Location};
/// let at: Location = "RXA[2]-5.1".parse().unwrap();
/// assert_eq!(at, Location::segment("RXA", 2).field(5).component(1));
/// assert_eq!(at.to_erl(&Delimiters::STANDARD), "RXA^2^5^1^1");
/// assert_eq!(at.to_string(), "RXA[2]-5.1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    segment_id: String,
    sequence: usize,
    field: Option<usize>,
    repetition: usize,
    component: Option<usize>,
    subcomponent: Option<usize>,
}

impl Location {
    /// The `sequence`-th occurrence (from 1; 0 is taken as 1) of segment `id` in a message.
    pub fn segment(id: &str, sequence: usize) -> Self {
        Location {
            segment_id: id.to_owned(),
            sequence: sequence.max(1),
            field: None,
            repetition: 1,
            component: None,
            subcomponent: None,
        }
    }

    /// Narrow to field `n` (HL7 numbering: MSH-9 is the message type), first repetition.
    pub fn field(mut self, n: usize) -> Self {
        self.field = Some(n.max(1));
        self
    }

    /// Narrow to repetition `r` of the field (from 1). Ignored while no field is set.
    pub fn repetition(mut self, r: usize) -> Self {
        if self.field.is_some() {
            self.repetition = r.max(1);
        }
        self
    }

    /// Narrow to component `n`. Ignored while no field is set.
    pub fn component(mut self, n: usize) -> Self {
        if self.field.is_some() {
            self.component = Some(n.max(1));
        }
        self
    }

    /// Narrow to subcomponent `n`. Ignored while no component is set.
    pub fn subcomponent(mut self, n: usize) -> Self {
        if self.component.is_some() {
            self.subcomponent = Some(n.max(1));
        }
        self
    }

    /// ERL-1, the segment ID.
    pub fn segment_id(&self) -> &str {
        &self.segment_id
    }

    /// ERL-2, which occurrence of the segment ID in the message (from 1).
    pub fn segment_sequence(&self) -> usize {
        self.sequence
    }

    /// ERL-3, the field number, if the location is below the segment.
    pub fn field_position(&self) -> Option<usize> {
        self.field
    }

    /// ERL-4, the field repetition (1 unless set).
    pub fn field_repetition(&self) -> usize {
        self.repetition
    }

    /// ERL-5, the component number, if the location is below the field.
    pub fn component_number(&self) -> Option<usize> {
        self.component
    }

    /// ERL-6, the subcomponent number, if the location is below the component.
    pub fn subcomponent_number(&self) -> Option<usize> {
        self.subcomponent
    }

    /// The ERL form for ERR-2 (`RXA^2^5^1^1`), written with `delimiters`' component separator.
    /// The field repetition is always written when a field is (ERL-4 is "assumed 1" otherwise,
    /// but receivers read the explicit form more reliably).
    pub fn to_erl(&self, delimiters: &Delimiters) -> String {
        let sep = delimiters.component();
        let mut out = escape::encode(&self.segment_id, delimiters).into_owned();
        out.push(sep);
        out.push_str(&self.sequence.to_string());
        if let Some(field) = self.field {
            for n in [
                Some(field),
                Some(self.repetition),
                self.component,
                self.subcomponent,
            ]
            .into_iter()
            .map_while(|n| n)
            {
                out.push(sep);
                out.push_str(&n.to_string());
            }
        }
        out
    }

    /// Read an ERL (the raw text of ERR-2, e.g. `RXA^2^5^1^1`) written with `delimiters`.
    /// An empty sequence or repetition is taken as 1, as ERL says.
    pub fn from_erl(text: &str, delimiters: &Delimiters) -> Result<Self, Hl7Error> {
        let bad = |reason| Hl7Error::invalid_location(text, reason);
        let mut parts = text.split(delimiters.component());
        let id = parts.next().unwrap_or_default();
        if !is_segment_id(id) {
            return Err(bad(
                "ERL-1 must be a segment ID of three upper-case letters or digits",
            ));
        }
        let mut numbers = [None; 5];
        for (slot, part) in numbers.iter_mut().zip(parts.by_ref()) {
            *slot = match part {
                "" => None,
                n => Some(
                    parse_number(n).ok_or_else(|| bad("ERL-2 to ERL-6 must be numbers from 1"))?,
                ),
            };
        }
        if parts.next().is_some() {
            return Err(bad("an ERL has at most six components"));
        }
        let [sequence, field, repetition, component, subcomponent] = numbers;
        if (component.is_some() && field.is_none())
            || (subcomponent.is_some() && component.is_none())
        {
            return Err(bad("a component needs a field, a subcomponent a component"));
        }
        Ok(Location {
            segment_id: id.to_owned(),
            sequence: sequence.unwrap_or(1),
            field,
            repetition: if field.is_some() {
                repetition.unwrap_or(1)
            } else {
                1
            },
            component,
            subcomponent,
        })
    }
}

impl fmt::Display for Location {
    /// The path form, `RXA[2]-5.1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segment_id)?;
        if self.sequence > 1 {
            write!(f, "[{}]", self.sequence)?;
        }
        if let Some(field) = self.field {
            write!(f, "-{field}")?;
            if self.repetition > 1 {
                write!(f, "[{}]", self.repetition)?;
            }
            if let Some(c) = self.component {
                write!(f, ".{c}")?;
                if let Some(s) = self.subcomponent {
                    write!(f, ".{s}")?;
                }
            }
        }
        Ok(())
    }
}

impl FromStr for Location {
    type Err = Hl7Error;

    /// Read the path form: `PID`, `RXA[2]`, `MSH-9`, `MSH-9.1`, `PID-3[2].1`, `PID-5.1.2`.
    fn from_str(text: &str) -> Result<Self, Hl7Error> {
        let bad = |reason| Hl7Error::invalid_location(text, reason);
        let id = text
            .get(..3)
            .filter(|id| is_segment_id(id))
            .ok_or_else(|| {
                bad("it must start with a segment ID of three upper-case letters or digits")
            })?;
        let mut rest = &text[3..];
        let mut location = Location::segment(id, 1);
        if let Some((n, r)) = bracketed(rest) {
            location.sequence =
                n.ok_or_else(|| bad("the segment occurrence must be a number from 1"))?;
            rest = r;
        }
        if rest.is_empty() {
            return Ok(location);
        }
        rest = rest
            .strip_prefix('-')
            .ok_or_else(|| bad("the segment ID is followed by '-' and a field number"))?;
        let (field, r) = leading_number(rest);
        location.field =
            Some(field.ok_or_else(|| bad("the field number must be a number from 1"))?);
        rest = r;
        if let Some((n, r)) = bracketed(rest) {
            location.repetition =
                n.ok_or_else(|| bad("the field repetition must be a number from 1"))?;
            rest = r;
        }
        for level in 0..2 {
            let Some(r) = rest.strip_prefix('.') else {
                break;
            };
            let (n, r) = leading_number(r);
            let n = n.ok_or_else(|| bad("component and subcomponent must be numbers from 1"))?;
            if level == 0 {
                location.component = Some(n);
            } else {
                location.subcomponent = Some(n);
            }
            rest = r;
        }
        if !rest.is_empty() {
            return Err(bad("unexpected text after the position"));
        }
        Ok(location)
    }
}

/// Three upper-case ASCII letters or digits.
fn is_segment_id(id: &str) -> bool {
    id.len() == 3
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// A decimal number from 1 (no sign, no spaces).
fn parse_number(text: &str) -> Option<usize> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&n| n >= 1)
}

/// The number at the start of `text` (None if there is none) and what follows it.
fn leading_number(text: &str) -> (Option<usize>, &str) {
    let end = text.bytes().take_while(u8::is_ascii_digit).count();
    (parse_number(&text[..end]), &text[end..])
}

/// `[n]` at the start of `text`: Some((number, rest)) when it opens with a bracket.
fn bracketed(text: &str) -> Option<(Option<usize>, &str)> {
    let inner = text.strip_prefix('[')?;
    Some(match inner.split_once(']') {
        Some((n, rest)) => (parse_number(n), rest),
        None => (None, ""),
    })
}

/// Append one segment: `fields` joined by `|` with trailing empty fields left out, then CR.
/// `fields[0]` is the segment ID (for MSH, `fields[1]` the encoding characters).
fn push_segment(out: &mut String, delimiters: &Delimiters, fields: &[&str]) {
    let used = fields
        .iter()
        .rposition(|f| !f.is_empty())
        .map_or(0, |i| i + 1);
    for (i, field) in fields[..used].iter().enumerate() {
        if i > 0 {
            out.push(delimiters.field());
        }
        out.push_str(field);
    }
    out.push('\r');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STD: Delimiters = Delimiters::STANDARD;

    #[test]
    fn paths_format_and_parse() {
        let cases = [
            ("PID", Location::segment("PID", 1)),
            ("RXA[2]", Location::segment("RXA", 2)),
            ("MSH-9", Location::segment("MSH", 1).field(9)),
            ("MSH-9.1", Location::segment("MSH", 1).field(9).component(1)),
            (
                "RXA[2]-5.1",
                Location::segment("RXA", 2).field(5).component(1),
            ),
            (
                "PID-3[2].1",
                Location::segment("PID", 1)
                    .field(3)
                    .repetition(2)
                    .component(1),
            ),
            (
                "RCP-2.2.3",
                Location::segment("RCP", 1)
                    .field(2)
                    .component(2)
                    .subcomponent(3),
            ),
        ];
        for (text, location) in cases {
            assert_eq!(text.parse::<Location>().unwrap(), location, "{text}");
            assert_eq!(location.to_string(), text);
        }
        // The first occurrence and repetition may be written out; they read the same.
        assert_eq!(
            "PID[1]-3[1].1".parse::<Location>().unwrap().to_string(),
            "PID-3.1"
        );
    }

    #[test]
    fn erl_formats_and_parses() {
        let cases = [
            ("RXA[2]-5.1", "RXA^2^5^1^1"),
            ("RXA-5", "RXA^1^5^1"),
            ("PID-3[2].1", "PID^1^3^2^1"),
            ("RCP-2.2.3", "RCP^1^2^1^2^3"),
            ("OBX[4]", "OBX^4"),
            ("MSH-9.2", "MSH^1^9^1^2"),
        ];
        for (path, erl) in cases {
            let location: Location = path.parse().unwrap();
            assert_eq!(location.to_erl(&STD), erl, "{path}");
            assert_eq!(Location::from_erl(erl, &STD).unwrap(), location, "{erl}");
        }
        // Empty sequence and repetition mean 1; other delimiters work too.
        let read = Location::from_erl("PID^^5^^1", &STD).unwrap();
        assert_eq!(read.to_string(), "PID-5.1");
        let hash = parse_messages("MSH#$*@!").unwrap()[0].delimiters();
        assert_eq!(
            Location::from_erl("RXA$2$5", &hash).unwrap().to_string(),
            "RXA[2]-5"
        );
        let at = Location::segment("RXA", 2).field(5).component(1);
        assert_eq!(
            (at.segment_id(), at.segment_sequence(), at.field_position()),
            ("RXA", 2, Some(5))
        );
        assert_eq!(
            (
                at.field_repetition(),
                at.component_number(),
                at.subcomponent_number()
            ),
            (1, Some(1), None)
        );
    }

    #[test]
    fn bad_locations_say_why() {
        for text in [
            "",
            "pid-5",
            "PI-5",
            "PID-",
            "PID-0",
            "PID-x",
            "PID5",
            "PID[0]",
            "PID[2",
            "PID-5.",
            "PID-5.1.2.3",
            "PID-5[",
            "PID-5 ",
            "PID-99999999999999999999999",
        ] {
            let e = text.parse::<Location>().unwrap_err();
            assert!(matches!(e, Hl7Error::InvalidLocation { .. }), "{text:?}");
            assert!(e.to_string().contains("RXA[2]-5.1"), "{e}");
        }
        for erl in [
            "",
            "pid^1",
            "PID^x",
            "PID^1^^^2",
            "PID^1^5^1^^2",
            "PID^1^2^3^4^5^6",
        ] {
            assert!(Location::from_erl(erl, &STD).is_err(), "{erl:?}");
        }
    }

    #[test]
    fn builder_levels_below_a_missing_one_are_ignored() {
        let at = Location::segment("PID", 0).component(2).subcomponent(1);
        assert_eq!(at, Location::segment("PID", 1));
        assert_eq!(at.to_erl(&STD), "PID^1");
    }

    fn location_strategy() -> impl Strategy<Value = Location> {
        (
            "[A-Z][A-Z0-9]{2}",
            1usize..5,
            proptest::option::of((1usize..40, 1usize..4)),
            proptest::option::of(1usize..10),
            proptest::option::of(1usize..5),
        )
            .prop_map(|(id, seq, field, component, sub)| {
                let mut at = Location::segment(&id, seq);
                if let Some((f, r)) = field {
                    at = at.field(f).repetition(r);
                    if let Some(c) = component {
                        at = at.component(c);
                        if let Some(s) = sub {
                            at = at.subcomponent(s);
                        }
                    }
                }
                at
            })
    }

    proptest! {
        #[test]
        fn both_forms_round_trip(at in location_strategy()) {
            prop_assert_eq!(at.to_string().parse::<Location>().unwrap(), at.clone());
            prop_assert_eq!(Location::from_erl(&at.to_erl(&STD), &STD).unwrap(), at);
        }

        #[test]
        fn parsing_locations_never_panics(text in r"[A-Z\[\]\-.0-9^]{0,16}") {
            let _ = text.parse::<Location>();
            let _ = Location::from_erl(&text, &STD);
        }
    }
}
