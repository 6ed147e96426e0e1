//! The ER7 reader: a payload into messages, segments, fields, repetitions, components and
//! subcomponents, borrowing from the payload.
//!
//! - Segments end with CR, LF or CRLF. Blank lines are tolerated before a header or trailer
//!   (MSH, FHS, BHS, BTS, FTS) and at the end, where file writers put them; inside a message a
//!   blank line is an [`Hl7Error::EmptySegment`].
//! - Every MSH starts a message and takes its delimiters from its own MSH-1 and MSH-2. FHS, BHS,
//!   BTS and FTS are checked (their delimiters, their IDs) and then left out: the result is the
//!   list of messages. A leading UTF-8 byte-order mark is skipped.
//! - Values come back raw (`raw()`, still escaped, zero-copy) or decoded (`decoded()`, a `Cow`
//!   that borrows unless an escape sequence had to be decoded; see [`super::escape`]).
//! - Element numbers count from 1, as in HL7. MSH-1 and MSH-2 (FHS/BHS too) are single values:
//!   they are never split on the delimiters they declare.

use std::borrow::Cow;

use super::escape;
use super::msh::Msh;
use super::{Hl7Error, Location, is_segment_id};

/// The delimiters a message declares in MSH-1 (field separator) and MSH-2 (encoding
/// characters). All are printable ASCII, not letters or digits, and distinct.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Delimiters {
    field: char,
    component: char,
    repetition: char,
    escape: char,
    subcomponent: char,
    truncation: Option<char>,
}

impl Delimiters {
    /// `|^~\&`, what HL7 recommends and the CDC guide requires.
    pub const STANDARD: Delimiters = Delimiters {
        field: '|',
        component: '^',
        repetition: '~',
        escape: '\\',
        subcomponent: '&',
        truncation: None,
    };

    /// MSH-1.
    pub fn field(&self) -> char {
        self.field
    }

    /// MSH-2, first character.
    pub fn component(&self) -> char {
        self.component
    }

    /// MSH-2, second character.
    pub fn repetition(&self) -> char {
        self.repetition
    }

    /// MSH-2, third character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// MSH-2, fourth character.
    pub fn subcomponent(&self) -> char {
        self.subcomponent
    }

    /// MSH-2, fifth character: the truncation character of HL7 v2.7 and later, if declared.
    pub fn truncation(&self) -> Option<char> {
        self.truncation
    }

    /// MSH-2 as written, e.g. `^~\&`.
    pub fn encoding_characters(&self) -> String {
        [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ]
        .into_iter()
        .chain(self.truncation)
        .collect()
    }
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters::STANDARD
    }
}

/// Read every message in `payload`: one message, several one after the other, or an FHS/BHS
/// batch. Fails on the first malformed line, with its position (see [`Hl7Error`]).
///
/// ```
/// use direct_agent::hl7::parse_messages;
/// let payload = "MSH|^~\\&|EHR|CLINIC|IIS|STATE|20261122093000-0500||VXU^V04^VXU_V04|1|T|2.5.1\r\
///                PID|1||123^^^CLINIC^MR||DOE^JANE\r";
/// let messages = parse_messages(payload).unwrap();
/// assert_eq!(messages[0].get("PID-5.2").as_deref(), Some("JANE"));
/// assert_eq!(messages[0].msh().control_id().as_deref(), Some("1"));
/// ```
pub fn parse_messages(payload: &str) -> Result<Vec<Message<'_>>, Hl7Error> {
    let start = if payload.starts_with('\u{feff}') {
        3
    } else {
        0
    };
    let mut messages = Vec::new();
    let mut open: Option<OpenMessage<'_>> = None;
    // The delimiters of the last header seen: BTS and FTS are written with them.
    let mut current = Delimiters::STANDARD;
    let mut blank_in_message: Option<Line<'_>> = None;
    let mut saw_segment = false;

    for line in lines(payload, start) {
        if line.text.trim().is_empty() {
            if open.is_some() && blank_in_message.is_none() {
                blank_in_message = Some(line);
            }
            continue;
        }
        saw_segment = true;
        let id = segment_id(&line, current.field)?;
        let boundary = matches!(id, "MSH" | "FHS" | "BHS" | "BTS" | "FTS");
        if let Some(blank) = blank_in_message.take()
            && !boundary
        {
            return Err(Hl7Error::EmptySegment {
                line: blank.number,
                offset: blank.offset,
            });
        }
        match id {
            "MSH" => {
                let (delimiters, encoding_len) = header_delimiters(&line, id)?;
                messages.extend(open.take().map(OpenMessage::finish));
                current = delimiters;
                let msh = Segment::header(id, &line, delimiters, encoding_len);
                open = Some(OpenMessage::new(payload, msh));
            }
            "FHS" | "BHS" => {
                let (delimiters, _) = header_delimiters(&line, id)?;
                messages.extend(open.take().map(OpenMessage::finish));
                current = delimiters;
            }
            "BTS" | "FTS" => {
                check_separator(&line, current.field)?;
                messages.extend(open.take().map(OpenMessage::finish));
            }
            _ => {
                let Some(message) = open.as_mut() else {
                    return Err(Hl7Error::SegmentOutsideMessage {
                        id: id.to_owned(),
                        line: line.number,
                        offset: line.offset,
                    });
                };
                check_separator(&line, current.field)?;
                message.push(id, &line);
            }
        }
    }
    messages.extend(open.map(OpenMessage::finish));
    if messages.is_empty() {
        return Err(if saw_segment {
            Hl7Error::NoMessage
        } else {
            Hl7Error::Empty
        });
    }
    Ok(messages)
}

/// [`parse_messages`] over bytes, which must be UTF-8 ([`Hl7Error::NotUtf8`] otherwise).
pub fn parse_messages_bytes(payload: &[u8]) -> Result<Vec<Message<'_>>, Hl7Error> {
    let text = std::str::from_utf8(payload).map_err(|e| Hl7Error::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    parse_messages(text)
}

/// One line of the payload: a segment, or blank.
#[derive(Clone, Copy, Debug)]
struct Line<'a> {
    text: &'a str,
    /// Byte offset in the payload.
    offset: usize,
    /// 1-based.
    number: usize,
}

/// The lines of `payload` from byte `start`, ended by CR, LF or CRLF.
fn lines(payload: &str, start: usize) -> impl Iterator<Item = Line<'_>> {
    let bytes = payload.as_bytes();
    let mut pos = start;
    let mut number = 0;
    std::iter::from_fn(move || {
        if pos >= bytes.len() {
            return None;
        }
        let end = memchr::memchr2(b'\r', b'\n', &bytes[pos..]).map_or(bytes.len(), |i| pos + i);
        number += 1;
        // CR and LF are ASCII, so `pos` and `end` are character boundaries.
        let line = Line {
            text: &payload[pos..end],
            offset: pos,
            number,
        };
        pos = end + 1;
        if bytes.get(end) == Some(&b'\r') && bytes.get(end + 1) == Some(&b'\n') {
            pos += 1;
        }
        Some(line)
    })
}

/// The segment ID a line starts with: three upper-case letters or digits.
fn segment_id<'a>(line: &Line<'a>, separator: char) -> Result<&'a str, Hl7Error> {
    match line.text.get(..3) {
        Some(id) if is_segment_id(id) => Ok(id),
        _ => Err(bad_segment_id(line, separator)),
    }
}

/// After a (non-header) segment ID: the end of the line or the field separator.
fn check_separator(line: &Line<'_>, separator: char) -> Result<(), Hl7Error> {
    match line.text[3..].chars().next() {
        None => Ok(()),
        Some(c) if c == separator => Ok(()),
        Some(_) => Err(bad_segment_id(line, separator)),
    }
}

fn bad_segment_id(line: &Line<'_>, separator: char) -> Hl7Error {
    Hl7Error::BadSegmentId {
        found: line.text.chars().take(4).collect(),
        separator,
        line: line.number,
        offset: line.offset,
    }
}

/// The delimiters an MSH, FHS or BHS line declares, and the byte length of its encoding
/// characters.
fn header_delimiters(line: &Line<'_>, id: &str) -> Result<(Delimiters, usize), Hl7Error> {
    let text = line.text;
    let length = text.chars().take(8).count();
    if length < 8 {
        return Err(Hl7Error::HeaderTooShort {
            id: id.to_owned(),
            line: line.number,
            offset: line.offset,
            length,
        });
    }
    let field_location = Location::segment(id, 1).field(1);
    let encoding_location = Location::segment(id, 1).field(2);
    let bad = |location: &Location, found: char, role: &'static str, problem: String| {
        Hl7Error::BadDelimiter {
            location: Box::new(location.clone()),
            line: line.number,
            offset: line.offset,
            found,
            role,
            problem,
        }
    };
    // `id` is three ASCII characters, so byte 3 is a boundary; there are at least 8 characters.
    let mut chars = text[3..].chars();
    let field = chars.next().unwrap_or_default();
    if let Err(problem) = delimiter_problem(field) {
        return Err(bad(
            &field_location,
            field,
            "field separator",
            problem.into(),
        ));
    }
    let encoding: Vec<char> = chars.take_while(|&c| c != field).collect();
    if !(4..=5).contains(&encoding.len()) {
        return Err(Hl7Error::BadEncodingCharacters {
            location: Box::new(encoding_location),
            line: line.number,
            offset: line.offset,
            count: encoding.len(),
        });
    }
    const ROLES: [&str; 5] = [
        "component separator",
        "repetition separator",
        "escape character",
        "subcomponent separator",
        "truncation character",
    ];
    for (i, &c) in encoding.iter().enumerate() {
        if let Err(problem) = delimiter_problem(c) {
            return Err(bad(&encoding_location, c, ROLES[i], problem.into()));
        }
        if let Some(j) = encoding[..i].iter().position(|&e| e == c) {
            let problem = format!("it is already the {}", ROLES[j]);
            return Err(bad(&encoding_location, c, ROLES[i], problem));
        }
    }
    let delimiters = Delimiters {
        field,
        component: encoding[0],
        repetition: encoding[1],
        escape: encoding[2],
        subcomponent: encoding[3],
        truncation: encoding.get(4).copied(),
    };
    // All ASCII (checked above): one byte each.
    Ok((delimiters, encoding.len()))
}

/// Why `c` cannot be a delimiter, if it cannot.
fn delimiter_problem(c: char) -> Result<(), &'static str> {
    if !c.is_ascii() {
        Err("delimiters must be ASCII characters")
    } else if c.is_ascii_alphanumeric() {
        Err("letters and digits cannot be delimiters")
    } else if !c.is_ascii_graphic() {
        Err("delimiters must be printable (no spaces or control characters)")
    } else {
        Ok(())
    }
}

/// A message being read: its segments so far and how often each ID occurred.
struct OpenMessage<'a> {
    payload: &'a str,
    message: Message<'a>,
    /// How often each segment ID occurred (a handful of IDs: a list beats a hash map).
    counts: Vec<(&'a str, usize)>,
}

impl<'a> OpenMessage<'a> {
    fn new(payload: &'a str, msh: Segment<'a>) -> Self {
        let message = Message {
            text: msh.raw,
            offset: msh.offset,
            delimiters: msh.delimiters,
            segments: vec![msh],
        };
        OpenMessage {
            payload,
            message,
            counts: vec![("MSH", 1)],
        }
    }

    fn push(&mut self, id: &'a str, line: &Line<'a>) {
        let sequence = match self.counts.iter_mut().find(|(seen, _)| *seen == id) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.counts.push((id, 1));
                1
            }
        };
        let delimiters = self.message.delimiters;
        let fields = match line.text.get(4..) {
            // A separator follows the ID (checked by `check_separator`).
            Some(rest) => {
                let separators = match u8::try_from(delimiters.field) {
                    Ok(d) => memchr::memchr_iter(d, rest.as_bytes()).count(),
                    Err(_) => rest.matches(delimiters.field).count(),
                };
                let mut fields = Vec::with_capacity(separators + 1);
                fields.extend(rest.split(delimiters.field));
                fields
            }
            None => Vec::new(),
        };
        self.message.segments.push(Segment {
            id,
            raw: line.text,
            sequence,
            line: line.number,
            offset: line.offset,
            header: false,
            fields,
            delimiters,
        });
        let end = line.offset + line.text.len();
        self.message.text = &self.payload[self.message.offset..end];
    }

    fn finish(self) -> Message<'a> {
        self.message
    }
}

/// One HL7 message: its segments, MSH first, borrowed from the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    text: &'a str,
    offset: usize,
    delimiters: Delimiters,
    /// Never empty: the first segment is the MSH (made so by `parse_messages`).
    segments: Vec<Segment<'a>>,
}

impl<'a> Message<'a> {
    /// The message as it appears in the payload, from `MSH` to the end of its last segment
    /// (the terminators between segments as they were).
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    /// Byte offset of the message (its MSH) in the payload.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The delimiters its MSH declares.
    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    /// Typed access to the header.
    pub fn msh(&self) -> Msh<'_> {
        // `segments[0]` exists and is the MSH: `parse_messages` opens a message with it.
        Msh::new(&self.segments[0])
    }

    /// All segments in order, MSH first.
    pub fn segments(&self) -> std::slice::Iter<'_, Segment<'a>> {
        self.segments.iter()
    }

    /// The first segment with ID `id`.
    pub fn segment(&self, id: &str) -> Option<&Segment<'a>> {
        self.segments.iter().find(|s| s.id == id)
    }

    /// Every segment with ID `id`, in order.
    pub fn segments_named<'s>(&'s self, id: &'s str) -> impl Iterator<Item = &'s Segment<'a>> + 's {
        self.segments.iter().filter(move |s| s.id == id)
    }

    /// The `sequence`-th (from 1) segment with ID `id`.
    pub fn segment_at(&self, id: &str, sequence: usize) -> Option<&Segment<'a>> {
        let index = sequence.checked_sub(1)?;
        self.segments.iter().filter(|s| s.id == id).nth(index)
    }

    /// The decoded value at `path` (`MSH-9.1`, `RXA[2]-5.1`, `PID-3[2].1`; see
    /// [`Location`]), or None if the path does not parse, the element is absent, or it is empty.
    ///
    /// Like HAPI's Terser, a path that stops above a leaf means the first one below it: `PID-5`
    /// reads `PID-5.1.1`, `MSH-9` the message code. [`Message::raw`] gives the whole element.
    /// A path that stops at a segment (`PID`) has no value: None.
    pub fn get(&self, path: &str) -> Option<Cow<'a, str>> {
        self.lookup(&path.parse().ok()?)
    }

    /// The raw (still escaped) text of exactly the element at `path`: a segment, a field
    /// repetition (the first unless `[n]` is given), a component, a subcomponent. Some("") for
    /// an element that is present but empty; None if absent or if the path does not parse.
    pub fn raw(&self, path: &str) -> Option<&'a str> {
        self.lookup_raw(&path.parse().ok()?)
    }

    /// [`Message::get`] with a parsed [`Location`].
    pub fn lookup(&self, location: &Location) -> Option<Cow<'a, str>> {
        let segment = self.segment_at(location.segment_id(), location.segment_sequence())?;
        let field = segment.field(location.field_position()?)?;
        let value = field
            .repetition(location.field_repetition())?
            .component(location.component_number().unwrap_or(1))?
            .subcomponent(location.subcomponent_number().unwrap_or(1))?
            .decoded();
        (!value.is_empty()).then_some(value)
    }

    /// [`Message::raw`] with a parsed [`Location`].
    pub fn lookup_raw(&self, location: &Location) -> Option<&'a str> {
        let segment = self.segment_at(location.segment_id(), location.segment_sequence())?;
        let Some(field) = location.field_position() else {
            return Some(segment.raw);
        };
        let repetition = segment
            .field(field)?
            .repetition(location.field_repetition())?;
        let Some(component) = location.component_number() else {
            return Some(repetition.raw());
        };
        let component = repetition.component(component)?;
        match location.subcomponent_number() {
            None => Some(component.raw()),
            Some(n) => Some(component.subcomponent(n)?.raw()),
        }
    }
}

/// One segment: its ID, which occurrence of that ID it is, and its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    id: &'a str,
    raw: &'a str,
    sequence: usize,
    line: usize,
    offset: usize,
    /// MSH, FHS, BHS: fields 1 and 2 are the delimiters themselves.
    header: bool,
    /// `fields[n - 1]` is field n.
    fields: Vec<&'a str>,
    delimiters: Delimiters,
}

impl<'a> Segment<'a> {
    /// A header line whose delimiters `header_delimiters` has read.
    fn header(id: &'a str, line: &Line<'a>, delimiters: Delimiters, encoding_len: usize) -> Self {
        let text = line.text;
        // The field separator and encoding characters are ASCII: bytes 3..4+len are boundaries.
        let mut fields = vec![&text[3..4], &text[4..4 + encoding_len]];
        if let Some(rest) = text[4 + encoding_len..].strip_prefix(delimiters.field) {
            fields.extend(rest.split(delimiters.field));
        }
        Segment {
            id,
            raw: text,
            sequence: 1,
            line: line.number,
            offset: line.offset,
            header: true,
            fields,
            delimiters,
        }
    }

    /// The segment ID, e.g. `PID`.
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// Which occurrence of its ID in the message this is, from 1 (ERL-2).
    pub fn sequence(&self) -> usize {
        self.sequence
    }

    /// The segment as written, without its terminator.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Its 1-based line in the payload.
    pub fn line(&self) -> usize {
        self.line
    }

    /// Its byte offset in the payload.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The delimiters it is written with.
    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    /// Where it is, for an ERR-2.
    pub fn location(&self) -> Location {
        Location::segment(self.id, self.sequence)
    }

    /// How many fields it has (the number of the last one written).
    pub fn field_count(&self) -> usize {
        self.fields.len()
    }

    /// Field `n` (from 1, HL7 numbering: MSH-1 is the field separator), if written.
    pub fn field(&self, n: usize) -> Option<Field<'a>> {
        let raw = *self.fields.get(n.checked_sub(1)?)?;
        Some(Field {
            raw,
            delimiters: self.delimiters,
            opaque: self.header && n <= 2,
        })
    }

    /// All fields, field 1 first.
    pub fn fields(&self) -> impl Iterator<Item = Field<'a>> + '_ {
        (1..=self.fields.len()).filter_map(|n| self.field(n))
    }
}

/// The `n`-th (from 1) piece of `raw` split on `separator`; an opaque value is one piece.
fn nth_piece(raw: &str, separator: char, opaque: bool, n: usize) -> Option<&str> {
    pieces(raw, separator, opaque).nth(n.checked_sub(1)?)
}

fn pieces(raw: &str, separator: char, opaque: bool) -> std::str::SplitN<'_, char> {
    raw.splitn(if opaque { 1 } else { usize::MAX }, separator)
}

/// The accessors every level shares.
macro_rules! value_methods {
    () => {
        /// As written, still escaped.
        pub fn raw(&self) -> &'a str {
            self.raw
        }

        /// Nothing written.
        pub fn is_empty(&self) -> bool {
            self.raw.is_empty()
        }

        /// The HL7 null `""`: the receiver should delete what it holds.
        pub fn is_null(&self) -> bool {
            self.raw == "\"\""
        }

        /// The text with escape sequences decoded. Delimiters below this level stay as they are,
        /// so this is meant for values without structure (and for display).
        pub fn decoded(&self) -> Cow<'a, str> {
            if self.opaque {
                Cow::Borrowed(self.raw)
            } else {
                escape::decode(self.raw, &self.delimiters)
            }
        }
    };
}

/// One field: all its repetitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    raw: &'a str,
    delimiters: Delimiters,
    opaque: bool,
}

impl<'a> Field<'a> {
    value_methods!();

    /// The repetitions, in order (one, possibly empty, at least).
    pub fn repetitions(&self) -> impl Iterator<Item = Repetition<'a>> + use<'a> {
        let (delimiters, opaque) = (self.delimiters, self.opaque);
        pieces(self.raw, delimiters.repetition, opaque).map(move |raw| Repetition {
            raw,
            delimiters,
            opaque,
        })
    }

    /// Repetition `n` (from 1).
    pub fn repetition(&self, n: usize) -> Option<Repetition<'a>> {
        Some(Repetition {
            raw: nth_piece(self.raw, self.delimiters.repetition, self.opaque, n)?,
            delimiters: self.delimiters,
            opaque: self.opaque,
        })
    }

    /// Component `n` (from 1) of the first repetition.
    pub fn component(&self, n: usize) -> Option<Component<'a>> {
        self.repetition(1)?.component(n)
    }

    /// This field written with other delimiters: every leaf decoded and escaped again, the
    /// structure (repetitions, components, subcomponents) kept.
    pub fn to_er7(&self, delimiters: &Delimiters) -> String {
        if self.opaque {
            return self.raw.to_owned();
        }
        let mut out = String::with_capacity(self.raw.len());
        for (r, repetition) in self.repetitions().enumerate() {
            if r > 0 {
                out.push(delimiters.repetition);
            }
            for (c, component) in repetition.components().enumerate() {
                if c > 0 {
                    out.push(delimiters.component);
                }
                for (s, sub) in component.subcomponents().enumerate() {
                    if s > 0 {
                        out.push(delimiters.subcomponent);
                    }
                    out.push_str(&escape::encode(&sub.decoded(), delimiters));
                }
            }
        }
        out
    }
}

/// One repetition of a field: its components.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repetition<'a> {
    raw: &'a str,
    delimiters: Delimiters,
    opaque: bool,
}

impl<'a> Repetition<'a> {
    value_methods!();

    /// The components, in order.
    pub fn components(&self) -> impl Iterator<Item = Component<'a>> + use<'a> {
        let (delimiters, opaque) = (self.delimiters, self.opaque);
        pieces(self.raw, delimiters.component, opaque).map(move |raw| Component {
            raw,
            delimiters,
            opaque,
        })
    }

    /// Component `n` (from 1).
    pub fn component(&self, n: usize) -> Option<Component<'a>> {
        Some(Component {
            raw: nth_piece(self.raw, self.delimiters.component, self.opaque, n)?,
            delimiters: self.delimiters,
            opaque: self.opaque,
        })
    }
}

/// One component: its subcomponents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Component<'a> {
    raw: &'a str,
    delimiters: Delimiters,
    opaque: bool,
}

impl<'a> Component<'a> {
    value_methods!();

    /// The subcomponents, in order.
    pub fn subcomponents(&self) -> impl Iterator<Item = Subcomponent<'a>> + use<'a> {
        let (delimiters, opaque) = (self.delimiters, self.opaque);
        pieces(self.raw, delimiters.subcomponent, opaque).map(move |raw| Subcomponent {
            raw,
            delimiters,
            opaque,
        })
    }

    /// Subcomponent `n` (from 1).
    pub fn subcomponent(&self, n: usize) -> Option<Subcomponent<'a>> {
        Some(Subcomponent {
            raw: nth_piece(self.raw, self.delimiters.subcomponent, self.opaque, n)?,
            delimiters: self.delimiters,
            opaque: self.opaque,
        })
    }
}

/// One subcomponent: a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subcomponent<'a> {
    raw: &'a str,
    delimiters: Delimiters,
    opaque: bool,
}

impl<'a> Subcomponent<'a> {
    value_methods!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::{AckCode, AckError, ErrorCode, Severity, build_ack};
    use proptest::prelude::*;

    /// config/samples/vxu-v04.hl7, as a literal.
    const SAMPLE_VXU: &str = "MSH|^~\\&|DEMO-EHR|DEMO-CLINIC|IIS|STATE-IIS|20261122093000-0500||VXU^V04^VXU_V04|DEMO-0001|T|2.5.1|||ER|AL|||||Z22^CDCPHINVS|DEMO-CLINIC\r\
PID|1||DEMO123^^^DEMO-CLINIC^MR||TESTPATIENT^ALEX^^^^^L||20240115|U|||1 TEST ST^^AUGUSTA^ME^04330^USA^P\r\
NK1|1|TESTPATIENT^JORDAN^^^^^L|MTH^Mother^HL70063\r\
ORC|RE||DEMO-ORDER-1^DEMO-CLINIC\r\
RXA|0|1|20261120||08^Hep B, adolescent or pediatric^CVX|0.5|mL^milliliters^UCUM||00^New immunization record^NIP001|||||||LOT123||MSD^Merck and Co^MVX|||CP|A\r";

    /// The observations the CDC guide asks for under an administered dose (VFC eligibility,
    /// vaccine type, VIS dates), appended to the sample.
    const SAMPLE_OBX: &str = "\
OBX|1|CE|64994-7^Vaccine funding program eligibility category^LN|1|V02^VFC eligible - Medicaid/Medicaid Managed Care^HL70064||||||F|||20261120|||VXC40^Eligibility captured at the immunization level^CDCPHINVS\r\
OBX|2|CE|30956-7^vaccine type^LN|2|08^Hep B, adolescent or pediatric^CVX||||||F\r\
OBX|3|TS|29768-9^Date vaccine information statement published^LN|2|20120202||||||F\r\
OBX|4|TS|29769-7^Date vaccine information statement presented^LN|2|20261120||||||F\r";

    const MSH: &str =
        "MSH|^~\\&|EHR|CLINIC|IIS|STATE|20261122093000-0500||VXU^V04^VXU_V04|1|T|2.5.1";

    fn one(payload: &str) -> Message<'_> {
        let mut messages = parse_messages(payload).expect("parses");
        assert_eq!(messages.len(), 1);
        messages.remove(0)
    }

    fn ids<'a>(message: &'a Message<'_>) -> Vec<&'a str> {
        message.segments().map(|s| s.id()).collect()
    }

    #[test]
    fn reads_the_sample_vxu() {
        let payload = format!("{SAMPLE_VXU}{SAMPLE_OBX}");
        let m = one(&payload);
        assert_eq!(
            ids(&m),
            [
                "MSH", "PID", "NK1", "ORC", "RXA", "OBX", "OBX", "OBX", "OBX"
            ]
        );
        let msh = m.msh();
        let facility = msh.sending_facility().unwrap();
        assert_eq!(facility.raw(), "DEMO-CLINIC");
        assert_eq!(facility.namespace_id().as_deref(), Some("DEMO-CLINIC"));
        assert_eq!(facility.universal_id(), None);
        assert_eq!(m.get("MSH-4").as_deref(), Some("DEMO-CLINIC"));
        assert_eq!(
            msh.sending_application().unwrap().namespace_id().as_deref(),
            Some("DEMO-EHR")
        );
        assert_eq!(msh.receiving_application().unwrap().raw(), "IIS");
        assert_eq!(msh.receiving_facility().unwrap().raw(), "STATE-IIS");
        assert_eq!(msh.date_time().as_deref(), Some("20261122093000-0500"));
        let t = msh.message_type();
        assert_eq!(
            (
                t.code.as_deref(),
                t.trigger_event.as_deref(),
                t.structure.as_deref()
            ),
            (Some("VXU"), Some("V04"), Some("VXU_V04"))
        );
        assert_eq!(msh.control_id().as_deref(), Some("DEMO-0001"));
        assert_eq!(msh.processing_id().as_deref(), Some("T"));
        assert_eq!(msh.version_id().as_deref(), Some("2.5.1"));
        assert_eq!(msh.accept_ack_type().as_deref(), Some("ER"));
        assert_eq!(msh.application_ack_type().as_deref(), Some("AL"));
        assert_eq!(msh.message_profile_ids(), ["Z22"]);
        assert_eq!(msh.responsible_sending_org().unwrap().raw(), "DEMO-CLINIC");
        assert_eq!(msh.responsible_receiving_org(), None);

        assert_eq!(m.get("PID-5.1").as_deref(), Some("TESTPATIENT"));
        assert_eq!(m.get("PID-5.2").as_deref(), Some("ALEX"));
        assert_eq!(m.get("PID-7").as_deref(), Some("20240115"));
        assert_eq!(m.get("PID-3.4").as_deref(), Some("DEMO-CLINIC"));
        assert_eq!(m.get("PID-11.3").as_deref(), Some("AUGUSTA"));
        assert_eq!(m.get("NK1-3.1").as_deref(), Some("MTH"));
        assert_eq!(m.get("RXA-5.1").as_deref(), Some("08"));
        assert_eq!(
            m.get("RXA-5.2").as_deref(),
            Some("Hep B, adolescent or pediatric")
        );
        assert_eq!(m.get("RXA-6").as_deref(), Some("0.5"));
        assert_eq!(m.get("RXA-9.1").as_deref(), Some("00"));
        // The sample has one field separator too many after RXA-9: the lot number lands in
        // RXA-16 (expiration date), the MVX code in RXA-18, `CP` in RXA-21 (action code) and
        // `A` in a 22nd field. The reader reports the text as it is.
        assert_eq!(m.get("RXA-15"), None);
        assert_eq!(m.get("RXA-16").as_deref(), Some("LOT123"));
        assert_eq!(m.get("RXA-18.1").as_deref(), Some("MSD"));
        assert_eq!(m.get("RXA-21").as_deref(), Some("CP"));
        assert_eq!(m.get("RXA-22").as_deref(), Some("A"));
        assert_eq!(m.segment("RXA").unwrap().field_count(), 22);
        assert_eq!(m.get("OBX-3.1").as_deref(), Some("64994-7"));
        assert_eq!(m.get("OBX-5").as_deref(), Some("V02"));
        assert_eq!(m.get("OBX[2]-5.3").as_deref(), Some("CVX"));
        assert_eq!(m.get("OBX[4]-5").as_deref(), Some("20261120"));
        assert_eq!(m.get("OBX[5]-5"), None);

        let obx = m.segment_at("OBX", 3).unwrap();
        assert_eq!((obx.id(), obx.sequence(), obx.line()), ("OBX", 3, 8));
        assert_eq!(obx.location().to_string(), "OBX[3]");
        assert_eq!(m.segments_named("OBX").count(), 4);
        assert_eq!(m.as_str(), payload.trim_end_matches('\r'));
    }

    #[test]
    fn cr_lf_and_crlf_terminators_read_the_same() {
        let body = [MSH, "PID|1||123^^^CLINIC^MR||DOE^JANE", "RXA|0|1|20261120"];
        let cr_payload = body.join("\r") + "\r";
        let cr = one(&cr_payload);
        for terminator in ["\n", "\r\n"] {
            let other = body.join(terminator) + terminator + terminator;
            let m = one(&other);
            assert_eq!(ids(&m), ids(&cr));
            assert_eq!(m.get("PID-5.2"), cr.get("PID-5.2"));
            assert_eq!(m.get("RXA-3").as_deref(), Some("20261120"));
            assert_eq!(m.segment("RXA").unwrap().line(), 3);
            assert!(!m.as_str().ends_with(['\r', '\n']));
        }
        // A final segment without terminator, and a byte-order mark before the MSH.
        let payload = format!("\u{feff}{}", body.join("\r"));
        let m = one(&payload);
        assert_eq!(m.get("RXA-3").as_deref(), Some("20261120"));
        assert_eq!(m.offset(), 3);
    }

    #[test]
    fn decodes_escapes_and_keeps_raw_text() {
        let payload = format!(
            "{MSH}\rNTE|1||Dose \\F\\ 2 \\S\\ 3 \\T\\ 4 \\R\\ 5 \\E\\ end\\.br\\next \\X4F4B\\ \\H\\x\\N\\"
        );
        let m = one(&payload);
        assert_eq!(
            m.get("NTE-3").as_deref(),
            Some("Dose | 2 ^ 3 & 4 ~ 5 \\ end\nnext OK \\H\\x\\N\\")
        );
        assert!(m.raw("NTE-3").unwrap().starts_with("Dose \\F\\ 2"));
        // An escaped delimiter does not split.
        assert_eq!(
            m.segment("NTE")
                .unwrap()
                .field(3)
                .unwrap()
                .repetitions()
                .count(),
            1
        );
        // Decoding only copies when there is something to decode.
        assert!(matches!(m.get("MSH-3"), Some(Cow::Borrowed("EHR"))));
    }

    #[test]
    fn reads_repetitions() {
        let payload = format!("{MSH}\rPID|1||A1^^^CLINIC^MR~B2^^^SSA^SS~||DOE^JANE");
        let m = one(&payload);
        let field = m.segment("PID").unwrap().field(3).unwrap();
        assert_eq!(field.repetitions().count(), 3);
        assert_eq!(field.raw(), "A1^^^CLINIC^MR~B2^^^SSA^SS~");
        assert_eq!(m.get("PID-3").as_deref(), Some("A1"));
        assert_eq!(m.get("PID-3[2].1").as_deref(), Some("B2"));
        assert_eq!(m.get("PID-3[2].5").as_deref(), Some("SS"));
        assert_eq!(m.raw("PID-3[2]"), Some("B2^^^SSA^SS"));
        assert_eq!(m.raw("PID-3[3]"), Some(""));
        assert_eq!(m.get("PID-3[3]"), None);
        assert_eq!(m.raw("PID-3[4]"), None);
        assert_eq!(m.raw("PID-3"), Some("A1^^^CLINIC^MR"));
    }

    #[test]
    fn reads_components_and_subcomponents() {
        let payload = format!("{MSH}\rRCP|I|1^RD&Records&HL70126");
        let m = one(&payload);
        assert_eq!(m.get("RCP-2.1").as_deref(), Some("1"));
        assert_eq!(m.get("RCP-2.2").as_deref(), Some("RD"));
        assert_eq!(m.get("RCP-2.2.2").as_deref(), Some("Records"));
        assert_eq!(m.get("RCP-2.2.3").as_deref(), Some("HL70126"));
        assert_eq!(m.get("RCP-2.2.4"), None);
        assert_eq!(m.raw("RCP-2.2"), Some("RD&Records&HL70126"));
        assert_eq!(m.raw("RCP-2.2.1"), Some("RD"));
        assert_eq!(m.raw("RCP"), Some("RCP|I|1^RD&Records&HL70126"));
        let component = m
            .segment("RCP")
            .unwrap()
            .field(2)
            .unwrap()
            .component(2)
            .unwrap();
        let subs: Vec<_> = component.subcomponents().map(|s| s.raw()).collect();
        assert_eq!(subs, ["RD", "Records", "HL70126"]);
        // Absent and malformed paths.
        assert_eq!(m.get("RCP-9"), None);
        assert_eq!(m.get("PID-1"), None);
        assert_eq!(m.get("RCP"), None);
        assert_eq!(m.get("rcp-2"), None);
    }

    #[test]
    fn msh_1_and_2_are_the_delimiters_themselves() {
        let m = one(MSH);
        assert_eq!(m.get("MSH-1").as_deref(), Some("|"));
        assert_eq!(m.get("MSH-2").as_deref(), Some("^~\\&"));
        assert_eq!(m.raw("MSH-2.1"), Some("^~\\&"));
        assert_eq!(m.get("MSH-9").as_deref(), Some("VXU"));
        assert_eq!(m.raw("MSH-9"), Some("VXU^V04^VXU_V04"));
        assert_eq!(m.get("MSH-12").as_deref(), Some("2.5.1"));
        assert_eq!(m.delimiters(), Delimiters::STANDARD);
        assert_eq!(m.delimiters().encoding_characters(), "^~\\&");
    }

    #[test]
    fn reads_non_standard_delimiters() {
        let payload = "MSH#$*@!#EHR#CLINIC$2.16.840.1$ISO#IIS#STATE#20261122093000-0500##VXU$V04$VXU_V04#7#P#2.5.1\r\
                       PID#1##A1$$$CLINIC$MR*B2$$$SSA$SS##DOE$JANE@F@SMITH##19800101\r\
                       RCP#I#1$RD!Records!HL70126";
        let m = one(payload);
        let d = m.delimiters();
        assert_eq!(
            (
                d.field(),
                d.component(),
                d.repetition(),
                d.escape(),
                d.subcomponent()
            ),
            ('#', '$', '*', '@', '!')
        );
        assert_eq!(m.get("MSH-1").as_deref(), Some("#"));
        assert_eq!(m.get("MSH-2").as_deref(), Some("$*@!"));
        assert_eq!(m.get("MSH-9.2").as_deref(), Some("V04"));
        assert_eq!(m.msh().control_id().as_deref(), Some("7"));
        let facility = m.msh().sending_facility().unwrap();
        assert_eq!(facility.universal_id().as_deref(), Some("2.16.840.1"));
        assert_eq!(facility.universal_id_type().as_deref(), Some("ISO"));
        assert_eq!(m.get("PID-3[2].4").as_deref(), Some("SSA"));
        assert_eq!(m.get("PID-5.2").as_deref(), Some("JANE#SMITH"));
        assert_eq!(m.get("RCP-2.2.2").as_deref(), Some("Records"));
        // Written again with the standard delimiters, structure kept.
        let pid3 = m.segment("PID").unwrap().field(3).unwrap();
        assert_eq!(
            pid3.to_er7(&Delimiters::STANDARD),
            "A1^^^CLINIC^MR~B2^^^SSA^SS"
        );
        let pid5 = m.segment("PID").unwrap().field(5).unwrap();
        assert_eq!(pid5.to_er7(&Delimiters::STANDARD), "DOE^JANE#SMITH");
    }

    #[test]
    fn tolerates_a_truncation_character() {
        let m = one(
            "MSH|^~\\&#|EHR|CLINIC|IIS|STATE|20261122093000-0500||VXU^V04|1|T|2.7\rNTE|1||a\\P\\b",
        );
        assert_eq!(m.delimiters().truncation(), Some('#'));
        assert_eq!(m.get("MSH-2").as_deref(), Some("^~\\&#"));
        assert_eq!(m.get("MSH-3").as_deref(), Some("EHR"));
        assert_eq!(m.get("NTE-3").as_deref(), Some("a#b"));
    }

    #[test]
    fn reads_a_batch_of_two_messages() {
        let payload = "FHS|^~\\&|EHR|CLINIC|IIS|STATE|20261122093000-0500\r\
                       BHS|^~\\&|EHR|CLINIC|IIS|STATE|20261122093000-0500\r\
                       MSH|^~\\&|EHR|CLINIC|IIS|STATE|20261122093000-0500||VXU^V04^VXU_V04|M1|P|2.5.1\r\
                       PID|1||111^^^CLINIC^MR||DOE^JANE\r\
                       RXA|0|1|20261120||08^HepB^CVX\r\
                       MSH|^~\\&|EHR|CLINIC|IIS|STATE|20261122093001-0500||VXU^V04^VXU_V04|M2|P|2.5.1\r\
                       PID|1||222^^^CLINIC^MR||ROE^RICHARD\r\
                       BTS|2\r\
                       FTS|1\r";
        let messages = parse_messages(payload).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].msh().control_id().as_deref(), Some("M1"));
        assert_eq!(ids(&messages[0]), ["MSH", "PID", "RXA"]);
        assert_eq!(messages[1].msh().control_id().as_deref(), Some("M2"));
        assert_eq!(messages[1].get("PID-5.1").as_deref(), Some("ROE"));
        assert_eq!(ids(&messages[1]), ["MSH", "PID"]);
        assert!(messages[1].as_str().ends_with("ROE^RICHARD"));
        assert_eq!(messages[1].segment("PID").unwrap().line(), 7);
    }

    #[test]
    fn splits_several_messages_on_msh() {
        // Blank lines between messages (file writers add them) are fine.
        let payload = format!("{MSH}\rPID|1\r\r\n\n{MSH}\rPID|2\rPID|3\n\n");
        let messages = parse_messages(&payload).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].segment_at("PID", 2).unwrap().sequence(), 2);
        assert_eq!(messages[1].get("PID[2]-1").as_deref(), Some("3"));
        assert_eq!(messages[0].get("PID[2]-1"), None);
    }

    #[test]
    fn a_message_without_msh_is_located() {
        let e = parse_messages("PID|1||123\rRXA|0|1").unwrap_err();
        assert!(
            matches!(&e, Hl7Error::SegmentOutsideMessage { id, line: 1, offset: 0 } if id == "PID")
        );
        assert!(e.to_string().contains("line 1 (byte 0)"), "{e}");
        assert!(e.is_permanent());
        // After a batch trailer, too.
        let e = parse_messages(&format!("{MSH}\rBTS|1\rPID|1")).unwrap_err();
        assert_eq!(e.line(), Some(3));
        assert_eq!(parse_messages(""), Err(Hl7Error::Empty));
        assert_eq!(parse_messages("\r\n \n"), Err(Hl7Error::Empty));
        assert_eq!(
            parse_messages("FHS|^~\\&|EHR\rBHS|^~\\&\rBTS|0\rFTS|1"),
            Err(Hl7Error::NoMessage)
        );
    }

    #[test]
    fn a_short_msh_is_located() {
        for short in ["MSH", "MSH|", "MSH|^~\\", "PID|1\rMSH|^~"] {
            let e = parse_messages(short).unwrap_err();
            if short.starts_with("PID") {
                assert!(matches!(e, Hl7Error::SegmentOutsideMessage { .. }));
                continue;
            }
            assert!(
                matches!(e, Hl7Error::HeaderTooShort { .. }),
                "{short:?}: {e}"
            );
            assert!(e.to_string().contains("at least 8"), "{e}");
        }
        // Exactly `MSH|^~\&` is enough.
        assert_eq!(one("MSH|^~\\&").segments().count(), 1);
    }

    #[test]
    fn bad_delimiters_are_located() {
        let cases: [(&str, &str, &str); 6] = [
            ("MSH¦^~\\&|EHR", "MSH-1", "must be ASCII"),
            ("MSH|^~\\§|EHR", "MSH-2", "must be ASCII"),
            ("MSH|A~\\&|EHR", "MSH-2", "letters and digits"),
            ("MSH ^~\\&|EHR", "MSH-1", "printable"),
            ("MSH|^^\\&|EHR", "MSH-2", "already the component separator"),
            (
                "BHS|^~\\&&|EHR",
                "BHS-2",
                "already the subcomponent separator",
            ),
        ];
        for (payload, location, problem) in cases {
            let e = parse_messages(payload).unwrap_err();
            assert!(
                matches!(e, Hl7Error::BadDelimiter { .. }),
                "{payload:?}: {e}"
            );
            assert_eq!(e.location().unwrap().to_string(), location, "{payload:?}");
            assert!(e.to_string().contains(problem), "{e}");
            assert_eq!((e.line(), e.offset()), (Some(1), Some(0)));
        }
        let e = parse_messages("MSH|^~|EHR|CLINIC").unwrap_err();
        assert!(
            matches!(e, Hl7Error::BadEncodingCharacters { count: 2, .. }),
            "{e}"
        );
        assert_eq!(e.location().unwrap().to_string(), "MSH-2");
        let e = parse_messages("MSH|^~\\&#!|EHR|CLINIC").unwrap_err();
        assert!(
            matches!(e, Hl7Error::BadEncodingCharacters { count: 6, .. }),
            "{e}"
        );
    }

    #[test]
    fn an_empty_segment_inside_a_message_is_located() {
        let payload = format!("{MSH}\r\rPID|1");
        let e = parse_messages(&payload).unwrap_err();
        assert_eq!(
            e,
            Hl7Error::EmptySegment {
                line: 2,
                offset: MSH.len() + 1
            }
        );
        assert!(e.to_string().contains("line 2"), "{e}");
        // CRLF is one terminator, not an empty segment; a blank-looking line is still one.
        assert!(parse_messages(&format!("{MSH}\r\nPID|1\r\n")).is_ok());
        assert!(matches!(
            parse_messages(&format!("{MSH}\n   \nPID|1")),
            Err(Hl7Error::EmptySegment { line: 2, .. })
        ));
    }

    #[test]
    fn a_bad_segment_id_is_located() {
        let cases = [
            ("pid|1", "pid|"),
            ("PIDX|1", "PIDX"),
            ("P1", "P1"),
            ("PI|1", "PI|1"),
            ("PID^1", "PID^"),
            ("ÉID|1", "ÉID|"),
            // The usual cause: a line break inside a field value.
            ("PID|1||123||DOE^JANE\rSMITH^JOHN|", "SMIT"),
        ];
        for (segment, found) in cases {
            let payload = format!("{MSH}\r{segment}");
            let e = parse_messages(&payload).unwrap_err();
            let Hl7Error::BadSegmentId {
                found: f,
                separator,
                line,
                offset,
            } = &e
            else {
                panic!("{segment:?}: {e}");
            };
            assert_eq!((f.as_str(), *separator), (found, '|'), "{segment:?}");
            let expected_line = if segment.contains('\r') { 3 } else { 2 };
            assert_eq!(*line, expected_line, "{segment:?}");
            assert_eq!(&payload[*offset..*offset + found.len()], found);
            assert!(e.to_string().contains("segment ID"), "{e}");
        }
        // Segment IDs may hold digits (NK1, ZX9) and a segment may be only its ID.
        assert_eq!(
            ids(&one(&format!("{MSH}\rNK1|1\rZX9"))),
            ["MSH", "NK1", "ZX9"]
        );
    }

    #[test]
    fn bytes_must_be_utf8() {
        let mut payload = MSH.as_bytes().to_vec();
        payload.extend_from_slice(b"\rPID|1||\xe9");
        let e = parse_messages_bytes(&payload).unwrap_err();
        assert_eq!(
            e,
            Hl7Error::NotUtf8 {
                offset: MSH.len() + 8
            }
        );
        assert!(parse_messages_bytes(SAMPLE_VXU.as_bytes()).is_ok());
    }

    /// Every accessor on every message, and an ACK of it: nothing may panic.
    fn exercise(messages: &[Message<'_>], paths: &[String]) {
        for m in messages {
            let msh = m.msh();
            for hd in [
                msh.sending_application(),
                msh.sending_facility(),
                msh.receiving_application(),
                msh.receiving_facility(),
            ]
            .into_iter()
            .flatten()
            {
                let _ = (hd.namespace_id(), hd.universal_id(), hd.universal_id_type());
            }
            let _ = (msh.date_time(), msh.message_type(), msh.control_id());
            let _ = (
                msh.processing_id(),
                msh.version_id(),
                msh.message_profile_ids(),
            );
            for segment in m.segments() {
                for field in segment.fields() {
                    let _ = field.to_er7(&Delimiters::STANDARD);
                    for repetition in field.repetitions() {
                        for component in repetition.components() {
                            for sub in component.subcomponents() {
                                let _ = sub.decoded();
                            }
                        }
                    }
                }
            }
            for path in paths {
                let _ = (m.get(path), m.raw(path));
            }
            let error = AckError {
                location: Some(m.msh().segment().location().field(9).component(2)),
                hl7_error_code: ErrorCode::UnsupportedEventCode,
                severity: Severity::Error,
                application_error_code: None,
                message: "x".into(),
            };
            let ack = build_ack(m, AckCode::Reject, &[error], "20260101000000+0000", "A1");
            let acks = parse_messages(&ack).expect("our own ACK parses");
            assert_eq!(acks.len(), 1);
        }
    }

    fn segment_strategy() -> impl Strategy<Value = String> {
        let id = prop_oneof![
            Just("MSH"),
            Just("MSH|^~\\&|"),
            Just("MSH#$*@!#"),
            Just("FHS|^~\\&|"),
            Just("BHS|^~\\&|"),
            Just("BTS|"),
            Just("FTS"),
            Just("PID|"),
            Just("OBX|"),
            Just(""),
        ];
        (id, r"[|^~\\&#$*@!A-Z0-9 .é\r\n]{0,30}").prop_map(|(id, rest)| format!("{id}{rest}"))
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            if let Ok(messages) = parse_messages(&text) {
                exercise(&messages, &[]);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(messages) = parse_messages_bytes(&bytes) {
                exercise(&messages, &[]);
            }
        }

        #[test]
        fn hl7_shaped_text_never_panics(
            segments in proptest::collection::vec(segment_strategy(), 0..8),
            terminator in prop_oneof![Just("\r"), Just("\n"), Just("\r\n")],
            paths in proptest::collection::vec(r"(MSH|PID|OBX)(\[[0-9]\])?(-[0-9]{1,2}(\[[0-9]\])?(\.[0-9](\.[0-9])?)?)?", 0..6),
        ) {
            let payload = segments.join(terminator);
            match parse_messages(&payload) {
                Ok(messages) => exercise(&messages, &paths),
                Err(e) => {
                    // Every error renders as a sentence; positions point into the payload.
                    prop_assert!(!e.to_string().is_empty());
                    if let Some(offset) = e.offset() {
                        prop_assert!(offset <= payload.len());
                    }
                }
            }
        }
    }
}
