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

use super::ack::{AckCode, AckError, ApplicationErrorCode, ErrorCode, Severity};
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
    pub profile: Profile,
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

/// Validate every message of `payload` (bytes as received: UTF-8 expected).
///
/// TODO(issue 8): the rules; this skeleton only reads the payload.
pub fn validate_payload(payload: &[u8], options: &Options) -> PayloadReport {
    match super::parse_messages_bytes(payload) {
        Err(e) => PayloadReport {
            read_error: Some(e),
            messages: Vec::new(),
        },
        Ok(messages) => PayloadReport {
            read_error: None,
            messages: messages
                .iter()
                .enumerate()
                .map(|(i, m)| MessageReport {
                    index: i + 1,
                    control_id: m.get("MSH-10").map(|c| c.into_owned()).unwrap_or_default(),
                    message_type: m.raw("MSH-9").unwrap_or_default().to_string(),
                    profile: options.profile,
                    applicable: Vec::new(),
                    findings: Vec::new(),
                })
                .collect(),
        },
    }
}
