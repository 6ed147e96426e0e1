//! Validation of HL7 v2.5.1 immunization messages against a profile: what an IIS and a state's
//! onboarding review check before a message is accepted. Pure code, no I/O: the code tables are
//! compiled in (see [`codes`]) and the clock comes in through [`Options::today`].
//!
//! - [`Profile::Header`]: the MiHIN MSH table (REFERENCE.md section 7).
//! - [`Profile::Immunization`]: the header rules plus the CDC IG 1.5 rules and Maine's message
//!   review checklist ([`ChecklistItem`]).
//!
//! Each [`Finding`] names a rule ([`Finding::rule`], stable ids such as `MSH-7-PRECISION`), a
//! severity, where it is ([`Location`]), a sentence an interface analyst can act on (never a
//! field's value: payloads are protected health information), the HL7 table 0357 code for ERR-3
//! and, where one fits, a table 0533 code for ERR-5. [`MessageReport::ack_code`] turns the
//! findings into MSA-1 (AR for an unsupported message type, processing ID or version; AE for
//! content errors; AA otherwise) and [`MessageReport::ack_errors`] into ERR segments.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

pub mod codes;
mod header;
mod immunization;

use super::ack::{AckCode, AckError, ApplicationErrorCode, ErrorCode, Severity};
use super::er7::{Message, Segment};
use super::{Hl7Error, Location};

/// Which rules to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Profile {
    /// The message header only (MiHIN MSH table).
    Header,
    /// Header plus the immunization content rules (CDC IG 1.5, Maine checklist).
    Immunization,
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "header" => Ok(Profile::Header),
            "immunization" => Ok(Profile::Immunization),
            other => Err(format!(
                "unknown HL7 validation profile {other:?}: use \"header\" or \"immunization\""
            )),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Header => "header",
            Profile::Immunization => "immunization",
        })
    }
}

/// MSH-11 the agent expects: `[agent] environment`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Expects MSH-11 = `T`; `P` is refused.
    Test,
    /// Expects MSH-11 = `P`; `T` is refused.
    Production,
}

/// What the rules need besides the message.
#[derive(Clone, Debug)]
pub struct Options {
    /// The rules to apply.
    pub profile: Profile,
    /// The MSH-11 processing ID expected.
    pub environment: Environment,
    /// Accept MSH-12 = `2.3.1` as well as `2.5.1`.
    pub allow_v231: bool,
    /// Today's date as `YYYYMMDD` (dates in the future are refused against it).
    pub today: String,
}

/// One item of Maine's message review checklist (plus the header and query structure), the rows
/// of the onboarding review.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ChecklistItem {
    /// The MSH rules (MiHIN table).
    MessageHeader,
    /// MSH-4 sending facility ID and MSH-22 responsible organisation.
    SendingFacility,
    /// Full client name (PID-5 family and given).
    ClientName,
    /// Date of birth (PID-7).
    DateOfBirth,
    /// Client address (PID-11).
    ClientAddress,
    /// Race (PID-10) and ethnicity (PID-22) from the current code tables, when present.
    RaceEthnicity,
    /// Administered doses with an active, specific CVX; historical with historically correct codes.
    VaccineCodes,
    /// VFC eligibility, OBX 64994-7, on administered doses.
    VfcEligibility,
    /// Lot number and expiration date on administered doses.
    LotAndExpiration,
    /// VIS date on administered doses (OBX 29768-9 / 69764-9 and 29769-7).
    VisDate,
    /// At least one NK1.
    NextOfKin,
    /// Dose amount (RXA-6) with units mL (RXA-7).
    DoseAmount,
    /// Dates not in the future and not before birth.
    Dates,
    /// QBP^Q11 Z34/Z44 QPD structure.
    QueryStructure,
}

impl ChecklistItem {
    /// Every item, in review order.
    pub const ALL: [ChecklistItem; 14] = [
        ChecklistItem::MessageHeader,
        ChecklistItem::SendingFacility,
        ChecklistItem::ClientName,
        ChecklistItem::DateOfBirth,
        ChecklistItem::ClientAddress,
        ChecklistItem::RaceEthnicity,
        ChecklistItem::VaccineCodes,
        ChecklistItem::VfcEligibility,
        ChecklistItem::LotAndExpiration,
        ChecklistItem::VisDate,
        ChecklistItem::NextOfKin,
        ChecklistItem::DoseAmount,
        ChecklistItem::Dates,
        ChecklistItem::QueryStructure,
    ];

    /// The row title in the review, e.g. "Full client name".
    pub fn title(&self) -> &'static str {
        match self {
            ChecklistItem::MessageHeader => "Message header (MSH)",
            ChecklistItem::SendingFacility => "Sending facility ID and responsible organisation",
            ChecklistItem::ClientName => "Full client name",
            ChecklistItem::DateOfBirth => "Date of birth",
            ChecklistItem::ClientAddress => "Client address",
            ChecklistItem::RaceEthnicity => "Race and ethnicity codes",
            ChecklistItem::VaccineCodes => "Administered doses: active, specific CVX",
            ChecklistItem::VfcEligibility => "VFC eligibility (OBX 64994-7)",
            ChecklistItem::LotAndExpiration => "Lot number and expiration date",
            ChecklistItem::VisDate => "VIS date",
            ChecklistItem::NextOfKin => "Next of kin (NK1)",
            ChecklistItem::DoseAmount => "Dose amount in mL",
            ChecklistItem::Dates => "Dates not in the future nor before birth",
            ChecklistItem::QueryStructure => "Query structure (QBP^Q11 Z34/Z44)",
        }
    }
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable rule id, e.g. `MSH-7-PRECISION`, `RXA-5-CVX-INACTIVE`.
    pub rule: &'static str,
    /// The checklist row it counts against.
    pub item: ChecklistItem,
    /// Error (the message fails) or warning.
    #[serde(serialize_with = "severity_str")]
    pub severity: Severity,
    /// Where; None when the problem is an absence not tied to one place (e.g. no NK1).
    #[serde(serialize_with = "location_str")]
    pub location: Option<Location>,
    /// What is wrong and what to do, without the field's value.
    pub text: String,
    /// ERR-3 (HL7 table 0357).
    #[serde(serialize_with = "error_code_str")]
    pub hl7_error_code: ErrorCode,
    /// ERR-5 (HL7 table 0533), when one fits.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "app_code_str"
    )]
    pub application_error_code: Option<ApplicationErrorCode>,
}

/// The verdict on one message of a payload.
#[derive(Clone, Debug, Serialize)]
pub struct MessageReport {
    /// 1-based index of the message in the payload (batches hold several).
    pub index: usize,
    /// MSH-10, the message control ID (not PHI).
    pub control_id: String,
    /// MSH-9 as written, e.g. `VXU^V04^VXU_V04`.
    pub message_type: String,
    /// The profile applied.
    pub profile: Profile,
    /// The checklist items that applied to this message (an item absent here is "not applicable").
    pub applicable: Vec<ChecklistItem>,
    pub findings: Vec<Finding>,
}

impl MessageReport {
    /// No error findings (warnings allowed).
    pub fn passed(&self) -> bool {
        !self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// MSA-1 for the ACK: AR when an error says the message type, processing ID or version is
    /// not supported (0357 codes 200-203), AE for other errors, AA otherwise.
    pub fn ack_code(&self) -> AckCode {
        let errors = || {
            self.findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
        };
        if errors().any(|f| {
            matches!(
                f.hl7_error_code,
                ErrorCode::UnsupportedMessageType
                    | ErrorCode::UnsupportedEventCode
                    | ErrorCode::UnsupportedProcessingId
                    | ErrorCode::UnsupportedVersionId
            )
        }) {
            AckCode::Reject
        } else if errors().next().is_some() {
            AckCode::Error
        } else {
            AckCode::Accept
        }
    }

    /// One ERR per finding.
    pub fn ack_errors(&self) -> Vec<AckError> {
        self.findings
            .iter()
            .map(|f| AckError {
                location: f.location.clone(),
                hl7_error_code: f.hl7_error_code,
                severity: f.severity,
                application_error_code: f.application_error_code.clone(),
                message: f.text.clone(),
            })
            .collect()
    }
}

/// The verdict on a payload (one message or a batch).
#[derive(Clone, Debug, Serialize)]
pub struct PayloadReport {
    /// Set when the payload could not be read at all (then `messages` is empty).
    #[serde(serialize_with = "read_error_str")]
    pub read_error: Option<Hl7Error>,
    pub messages: Vec<MessageReport>,
}

impl PayloadReport {
    /// Readable, and every message passed.
    pub fn passed(&self) -> bool {
        self.read_error.is_none() && self.messages.iter().all(MessageReport::passed)
    }
}

fn severity_str<S: serde::Serializer>(s: &Severity, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Information => "information",
    })
}

fn location_str<S: serde::Serializer>(l: &Option<Location>, ser: S) -> Result<S::Ok, S::Error> {
    match l {
        Some(l) => ser.serialize_str(&l.to_string()),
        None => ser.serialize_none(),
    }
}

fn error_code_str<S: serde::Serializer>(c: &ErrorCode, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(c.code())
}

fn app_code_str<S: serde::Serializer>(
    c: &Option<ApplicationErrorCode>,
    ser: S,
) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => ser.serialize_str(&c.code),
        None => ser.serialize_none(),
    }
}

fn read_error_str<S: serde::Serializer>(e: &Option<Hl7Error>, ser: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => ser.serialize_str(&e.to_string()),
        None => ser.serialize_none(),
    }
}

/// Validate every message of `payload` (bytes as received: UTF-8 expected). Never panics: a
/// payload that cannot be read at all comes back with [`PayloadReport::read_error`] set.
pub fn validate_payload(payload: &[u8], options: &Options) -> PayloadReport {
    report_parsed(super::parse_messages_bytes(payload), options)
}

/// [`validate_payload`] for a payload the caller has already read (it needs the messages too).
pub fn report_parsed(
    parsed: Result<Vec<Message<'_>>, Hl7Error>,
    options: &Options,
) -> PayloadReport {
    match parsed {
        Err(e) => PayloadReport {
            read_error: Some(e),
            messages: Vec::new(),
        },
        Ok(messages) => PayloadReport {
            read_error: None,
            messages: messages
                .iter()
                .enumerate()
                .map(|(i, m)| validate_message(i + 1, m, options))
                .collect(),
        },
    }
}

/// Validate one message already read; `index` is its 1-based place in the payload.
pub fn validate_message(index: usize, message: &Message<'_>, options: &Options) -> MessageReport {
    let mut check = Check::new(options);
    let kind = header::check(message, &mut check);
    if options.profile == Profile::Immunization {
        immunization::check(message, kind, &mut check);
    }
    let msh = message.msh().segment();
    MessageReport {
        index,
        control_id: msh
            .field(10)
            .map(|f| f.decoded().into_owned())
            .unwrap_or_default(),
        message_type: msh
            .field(9)
            .map(|f| f.raw())
            .unwrap_or_default()
            .to_string(),
        profile: options.profile,
        applicable: check.applicable(),
        findings: check.findings,
    }
}

/// The kinds of message the profiles know (MSH-9.1 and .2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MessageKind {
    /// `VXU^V04`: unsolicited vaccination record update.
    Vxu,
    /// `QBP^Q11`: query by parameter (Z34 / Z44).
    Qbp,
    /// `ACK`: acknowledgement.
    Ack,
    /// `RSP^K11`: response to a query.
    Rsp,
    /// Anything else (already reported by the header rules).
    Other,
}

/// The findings and applicable items of one message, as the rules add them.
struct Check<'o> {
    options: &'o Options,
    findings: Vec<Finding>,
    /// Bit `i` set: `ChecklistItem::ALL[i]` applies.
    applicable: u32,
}

impl<'o> Check<'o> {
    fn new(options: &'o Options) -> Self {
        Check {
            options,
            findings: Vec::new(),
            applicable: 0,
        }
    }

    fn applies(&mut self, item: ChecklistItem) {
        if let Some(i) = ChecklistItem::ALL.iter().position(|x| *x == item) {
            self.applicable |= 1 << i;
        }
    }

    fn applicable(&self) -> Vec<ChecklistItem> {
        ChecklistItem::ALL
            .iter()
            .enumerate()
            .filter(|(i, _)| self.applicable & (1 << i) != 0)
            .map(|(_, item)| *item)
            .collect()
    }

    /// Add a finding; `application` is a CDC table 0533 code (see [`application_error`]).
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        severity: Severity,
        rule: &'static str,
        item: ChecklistItem,
        location: Option<Location>,
        text: &str,
        code: ErrorCode,
        application: Option<u8>,
    ) {
        self.applies(item);
        self.findings.push(Finding {
            rule,
            item,
            severity,
            location,
            text: text.to_owned(),
            hl7_error_code: code,
            application_error_code: application.and_then(application_error),
        });
    }

    fn error(
        &mut self,
        rule: &'static str,
        item: ChecklistItem,
        location: Option<Location>,
        text: &str,
        code: ErrorCode,
        application: Option<u8>,
    ) {
        self.add(
            Severity::Error,
            rule,
            item,
            location,
            text,
            code,
            application,
        );
    }

    fn warning(
        &mut self,
        rule: &'static str,
        item: ChecklistItem,
        location: Option<Location>,
        text: &str,
        code: ErrorCode,
        application: Option<u8>,
    ) {
        self.add(
            Severity::Warning,
            rule,
            item,
            location,
            text,
            code,
            application,
        );
    }
}

/// CDC table 0533 (application error codes) entries the rules use.
const APPLICATION_ERRORS: [(u8, &str); 6] = [
    (1, "Illogical Date error"),
    (2, "Invalid Date"),
    (3, "Illogical Value error"),
    (4, "Invalid value"),
    (5, "Table value not found"),
    (6, "Required observation missing"),
];

/// ERR-5 for a CDC table 0533 code.
fn application_error(code: u8) -> Option<ApplicationErrorCode> {
    APPLICATION_ERRORS
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(c, text)| ApplicationErrorCode {
            code: c.to_string(),
            text: (*text).to_owned(),
        })
}

/// `SEG[seq]-field`.
fn at(segment: &Segment<'_>, field: usize) -> Location {
    Location::segment(segment.id(), segment.sequence()).field(field)
}

/// `SEG[seq]-field.component`.
fn at_component(segment: &Segment<'_>, field: usize, component: usize) -> Location {
    at(segment, field).component(component)
}

/// The raw text of field `n` (all repetitions), "" when absent.
fn field_raw<'a>(segment: &Segment<'a>, n: usize) -> &'a str {
    segment.field(n).map(|f| f.raw()).unwrap_or("")
}

/// The raw first subcomponent of component `c` of the first repetition of field `n`, "" when
/// absent. Codes, dates and identifiers are compared raw: an escape sequence in one is itself
/// not a valid value.
fn value<'a>(segment: &Segment<'a>, n: usize, c: usize) -> &'a str {
    segment
        .field(n)
        .and_then(|f| f.component(c))
        .and_then(|c| c.subcomponent(1))
        .map(|s| s.raw())
        .unwrap_or("")
}

/// An HL7 DTM (`YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`) read for the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    /// `YYYYMMDD` as a number (month and day 0 when not given), to compare dates.
    date: u32,
    /// How many digits before any fraction or offset: 4, 6, 8, 10, 12 or 14.
    digits: usize,
    /// A time-zone offset is given.
    offset: bool,
}

impl DateTime {
    /// The DTM in `text`, or None if it is not a valid one (wrong length, letters, month 13,
    /// February 30, hour 24, offset beyond +/-1400...).
    fn parse(text: &str) -> Option<DateTime> {
        let b = text.as_bytes();
        let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
        if !matches!(digits, 4 | 6 | 8 | 10 | 12 | 14) {
            return None;
        }
        let num = |from: usize, len: usize| -> u32 {
            b[from..from + len]
                .iter()
                .fold(0, |n, d| n * 10 + u32::from(d - b'0'))
        };
        let year = num(0, 4);
        let month = if digits >= 6 { num(4, 2) } else { 0 };
        let day = if digits >= 8 { num(6, 2) } else { 0 };
        if digits >= 6 && !(1..=12).contains(&month) {
            return None;
        }
        if digits >= 8 && (day == 0 || day > days_in_month(year, month)) {
            return None;
        }
        if digits >= 10 && num(8, 2) > 23 {
            return None;
        }
        if digits >= 12 && num(10, 2) > 59 {
            return None;
        }
        if digits >= 14 && num(12, 2) > 59 {
            return None;
        }
        let mut rest = &b[digits..];
        if let Some(fraction) = rest.strip_prefix(b".") {
            let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
            if digits != 14 || !(1..=4).contains(&n) {
                return None;
            }
            rest = &fraction[n..];
        }
        let offset = match rest {
            [] => false,
            [sign, h1, h2, m1, m2]
                if (*sign == b'+' || *sign == b'-')
                    && [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
            {
                let hours = u32::from(h1 - b'0') * 10 + u32::from(h2 - b'0');
                let minutes = u32::from(m1 - b'0') * 10 + u32::from(m2 - b'0');
                if hours > 14 || minutes > 59 {
                    return None;
                }
                true
            }
            _ => return None,
        };
        Some(DateTime {
            date: year * 10_000 + month * 100 + day,
            digits,
            offset,
        })
    }

    /// Precise to the day at least.
    fn has_day(&self) -> bool {
        self.digits >= 8
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

/// [`Options::today`] as `YYYYMMDD`, if it is a valid date (else the "not in the future" rules
/// are skipped).
fn today(options: &Options) -> Option<u32> {
    DateTime::parse(&options.today)
        .filter(|d| d.digits == 8)
        .map(|d| d.date)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = include_str!("../../../config/samples/vxu-v04.hl7");

    fn options(profile: Profile) -> Options {
        Options {
            profile,
            environment: Environment::Test,
            allow_v231: false,
            today: "20261206".into(),
        }
    }

    fn rules(payload: &str, profile: Profile) -> Vec<&'static str> {
        let report = validate_payload(payload.as_bytes(), &options(profile));
        assert!(report.read_error.is_none(), "{:?}", report.read_error);
        report.messages[0].findings.iter().map(|f| f.rule).collect()
    }

    #[test]
    fn the_sample_passes_both_profiles() {
        for profile in [Profile::Header, Profile::Immunization] {
            let report = validate_payload(SAMPLE.as_bytes(), &options(profile));
            assert!(report.passed(), "{profile}: {:#?}", report.messages);
            assert_eq!(report.messages[0].control_id, "DEMO-0001");
            assert_eq!(report.messages[0].ack_code(), AckCode::Accept);
        }
        let report = validate_payload(SAMPLE.as_bytes(), &options(Profile::Immunization));
        let applicable = &report.messages[0].applicable;
        assert!(applicable.contains(&ChecklistItem::VfcEligibility));
        assert!(!applicable.contains(&ChecklistItem::QueryStructure));
        assert!(!applicable.contains(&ChecklistItem::RaceEthnicity));
    }

    #[test]
    fn production_refuses_test_messages_with_ar() {
        let mut o = options(Profile::Header);
        o.environment = Environment::Production;
        let report = validate_payload(SAMPLE.as_bytes(), &o);
        let m = &report.messages[0];
        assert_eq!(m.findings[0].rule, "MSH-11-ENVIRONMENT");
        assert_eq!(m.ack_code(), AckCode::Reject);
    }

    #[test]
    fn content_errors_give_ae_and_one_err_each() {
        let no_nk1: String = SAMPLE
            .split_inclusive('\r')
            .filter(|s| !s.starts_with("NK1"))
            .collect();
        let report = validate_payload(no_nk1.as_bytes(), &options(Profile::Immunization));
        let m = &report.messages[0];
        assert!(!m.passed());
        assert_eq!(m.ack_code(), AckCode::Error);
        assert_eq!(m.ack_errors().len(), m.findings.len());
        assert!(m.findings.iter().any(|f| f.rule == "NK1-MISSING"));
        // The header profile does not look at NK1.
        assert!(validate_payload(no_nk1.as_bytes(), &options(Profile::Header)).passed());
    }

    #[test]
    fn version_231_only_when_allowed() {
        let old = SAMPLE.replace("|2.5.1|", "|2.3.1|");
        assert_eq!(rules(&old, Profile::Header), ["MSH-12-VERSION"]);
        let mut o = options(Profile::Header);
        o.allow_v231 = true;
        assert!(validate_payload(old.as_bytes(), &o).passed());
    }

    #[test]
    fn dates() {
        let ok = |s: &str| DateTime::parse(s).is_some();
        assert!(ok("20261122093000-0500"));
        assert!(ok("20261122093000.1234+0100"));
        assert!(ok("20240229"));
        assert!(!ok("20230229"));
        assert!(!ok("20261322"));
        assert!(!ok("2026112209300"));
        assert!(!ok("20261122093000.12345"));
        assert!(!ok("20261122-05"));
        assert!(!ok("2026112a"));
        assert!(!ok(""));
        let msh7 = SAMPLE.replace("20261122093000-0500", "202611220930");
        assert_eq!(rules(&msh7, Profile::Header), ["MSH-7-PRECISION"]);
    }

    #[test]
    fn findings_never_carry_values() {
        let bad = SAMPLE
            .replace("20240115", "20991301")
            .replace("|08^", "|XYZ42^")
            .replace("TESTPATIENT^ALEX", "TESTPATIENT^");
        let report = validate_payload(bad.as_bytes(), &options(Profile::Immunization));
        let json = serde_json::to_string(&report).unwrap();
        for value in [
            "20991301",
            "XYZ42",
            "TESTPATIENT",
            "ALEX",
            "AUGUSTA",
            "LOT123",
        ] {
            assert!(!json.contains(value), "{value} in {json}");
        }
        let found: Vec<_> = report.messages[0].findings.iter().map(|f| f.rule).collect();
        assert!(found.contains(&"PID-7-INVALID"), "{found:?}");
        assert!(found.contains(&"RXA-5-CVX-UNKNOWN"), "{found:?}");
        assert!(found.contains(&"PID-5-GIVEN-MISSING"), "{found:?}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = validate_payload(&bytes, &options(Profile::Immunization));
        }

        #[test]
        fn mutated_messages_never_panic(
            at in 0usize..SAMPLE.len(),
            len in 0usize..40,
            insert in "[|^~&\\\\\r\nA-Z0-9.+-]{0,12}",
        ) {
            let mut text = SAMPLE.as_bytes().to_vec();
            let end = (at + len).min(text.len());
            text.splice(at..end, insert.bytes());
            for profile in [Profile::Header, Profile::Immunization] {
                let report = validate_payload(&text, &options(profile));
                for m in &report.messages {
                    let _ = (m.ack_code(), m.ack_errors());
                }
            }
        }
    }
}
