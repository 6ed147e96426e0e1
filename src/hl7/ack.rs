//! The HL7 acknowledgement (`ACK^V04^ACK`, profile Z23) of the CDC immunization guide 1.5: MSH,
//! MSA and one ERR per problem found.
//!
//! Written with the standard delimiters `|^~\&` whatever the original used; values copied from
//! the original are decoded and escaped again.

use std::fmt;

use super::er7::{Delimiters, Message};
use super::{Location, escape, push_segment};

/// MSA-1 (HL7 table 0008).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// `AA`, application accept: processed; there may be warnings in ERR.
    Accept,
    /// `AE`, application error: processed, with errors (some data may have been ignored).
    Error,
    /// `AR`, application reject: not processed (unsupported message type, event, processing
    /// ID or version, or a failure unrelated to the content).
    Reject,
}

impl AckCode {
    /// `AA`, `AE` or `AR`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AckCode::Accept => "AA",
            AckCode::Error => "AE",
            AckCode::Reject => "AR",
        }
    }
}

impl fmt::Display for AckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// ERR-4 (HL7 table 0516).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// `E`: the data was not accepted.
    Error,
    /// `W`: accepted, with a possible problem.
    Warning,
    /// `I`: information only.
    Information,
}

impl Severity {
    /// `E`, `W` or `I`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Error => "E",
            Severity::Warning => "W",
            Severity::Information => "I",
        }
    }
}

/// ERR-3, the HL7 error code (HL7 table 0357, as of v2.5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 0
    MessageAccepted,
    /// 100
    SegmentSequenceError,
    /// 101
    RequiredFieldMissing,
    /// 102
    DataTypeError,
    /// 103
    TableValueNotFound,
    /// 200
    UnsupportedMessageType,
    /// 201
    UnsupportedEventCode,
    /// 202
    UnsupportedProcessingId,
    /// 203
    UnsupportedVersionId,
    /// 204
    UnknownKeyIdentifier,
    /// 205
    DuplicateKeyIdentifier,
    /// 206
    ApplicationRecordLocked,
    /// 207
    ApplicationInternalError,
}

impl ErrorCode {
    const ALL: [ErrorCode; 13] = [
        ErrorCode::MessageAccepted,
        ErrorCode::SegmentSequenceError,
        ErrorCode::RequiredFieldMissing,
        ErrorCode::DataTypeError,
        ErrorCode::TableValueNotFound,
        ErrorCode::UnsupportedMessageType,
        ErrorCode::UnsupportedEventCode,
        ErrorCode::UnsupportedProcessingId,
        ErrorCode::UnsupportedVersionId,
        ErrorCode::UnknownKeyIdentifier,
        ErrorCode::DuplicateKeyIdentifier,
        ErrorCode::ApplicationRecordLocked,
        ErrorCode::ApplicationInternalError,
    ];

    /// The table 0357 code, e.g. `101`.
    pub fn code(&self) -> &'static str {
        self.entry().0
    }

    /// The table 0357 text, e.g. `Required field missing`.
    pub fn text(&self) -> &'static str {
        self.entry().1
    }

    /// The variant for a table 0357 code (`"101"`), if it is one.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    fn entry(&self) -> (&'static str, &'static str) {
        match self {
            ErrorCode::MessageAccepted => ("0", "Message accepted"),
            ErrorCode::SegmentSequenceError => ("100", "Segment sequence error"),
            ErrorCode::RequiredFieldMissing => ("101", "Required field missing"),
            ErrorCode::DataTypeError => ("102", "Data type error"),
            ErrorCode::TableValueNotFound => ("103", "Table value not found"),
            ErrorCode::UnsupportedMessageType => ("200", "Unsupported message type"),
            ErrorCode::UnsupportedEventCode => ("201", "Unsupported event code"),
            ErrorCode::UnsupportedProcessingId => ("202", "Unsupported processing id"),
            ErrorCode::UnsupportedVersionId => ("203", "Unsupported version id"),
            ErrorCode::UnknownKeyIdentifier => ("204", "Unknown key identifier"),
            ErrorCode::DuplicateKeyIdentifier => ("205", "Duplicate key identifier"),
            ErrorCode::ApplicationRecordLocked => ("206", "Application record locked"),
            ErrorCode::ApplicationInternalError => ("207", "Application internal error"),
        }
    }
}

/// ERR-5, an application error code: in the CDC guide from CDC table 0533 (e.g. `1` illogical
/// date error, `4` invalid value, `5` table value not found, `6` required observation missing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplicationErrorCode {
    /// The code, e.g. `5`.
    pub code: String,
    /// Its text, e.g. `Table value not found`.
    pub text: String,
}

/// One problem to report in an ERR segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckError {
    /// ERR-2: where in the original message; None when the problem is not in one place (e.g.
    /// an internal error).
    pub location: Option<Location>,
    /// ERR-3.
    pub hl7_error_code: ErrorCode,
    /// ERR-4.
    pub severity: Severity,
    /// ERR-5 (coding system `HL70533`).
    pub application_error_code: Option<ApplicationErrorCode>,
    /// ERR-8, the user message: a sentence for the sender's staff (plain text, escaped here).
    pub message: String,
}

/// The acknowledgement of `original`, CR-terminated segments:
///
/// - MSH: sending and receiving applications and facilities swapped (MSH-3/4 from the
///   original's MSH-5/6 and back), MSH-7 `now`, MSH-9 `ACK^<original MSH-9.2>^ACK`, MSH-10
///   `control_id`, MSH-11 and MSH-12 copied, MSH-15/16 `NE` (an ACK is not acknowledged),
///   MSH-21 `Z23^CDCPHINVS`, MSH-22/23 the original's MSH-23/22.
/// - MSA: `code`, and MSA-2 the original's MSH-10.
/// - ERR per error: ERR-2 the ERL (`RXA^1^5^1^1`), ERR-3 `<code>^<text>^HL70357`, ERR-4 the
///   severity, ERR-5 `<code>^<text>^HL70533`, ERR-8 the message.
pub fn build_ack(
    original: &Message<'_>,
    code: AckCode,
    errors: &[AckError],
    now: &str,
    control_id: &str,
) -> String {
    let d = Delimiters::STANDARD;
    let e = |v: &str| escape::encode(v, &d).into_owned();
    let msh = original.msh().segment();
    let copy = |n: usize| msh.field(n).map(|f| f.to_er7(&d)).unwrap_or_default();
    let trigger = original
        .msh()
        .message_type()
        .trigger_event
        .map(|t| e(&t))
        .unwrap_or_default();
    let message_type = format!("ACK^{trigger}^ACK");
    let encoding = d.encoding_characters();
    let now = e(now);
    let control_id = e(control_id);
    let (receiving_app, receiving_facility) = (copy(5), copy(6));
    let (sending_app, sending_facility) = (copy(3), copy(4));
    let (processing, version) = (copy(11), copy(12));
    // The responsible organisations swap too: the ACK's MSH-22 is the original's MSH-23.
    let (org_22, org_23) = (copy(23), copy(22));
    let mut out = String::new();
    push_segment(
        &mut out,
        &d,
        &[
            "MSH",
            &encoding,
            &receiving_app,
            &receiving_facility,
            &sending_app,
            &sending_facility,
            &now,
            "",
            &message_type,
            &control_id,
            &processing,
            &version,
            "",
            "",
            "NE",
            "NE",
            "",
            "",
            "",
            "",
            "Z23^CDCPHINVS",
            &org_22,
            &org_23,
        ],
    );
    push_segment(&mut out, &d, &["MSA", code.as_str(), &copy(10)]);
    for error in errors {
        let location = error
            .location
            .as_ref()
            .map(|l| l.to_erl(&d))
            .unwrap_or_default();
        let hl7_code = format!(
            "{}^{}^HL70357",
            error.hl7_error_code.code(),
            error.hl7_error_code.text()
        );
        let application = error
            .application_error_code
            .as_ref()
            .map(|a| format!("{}^{}^HL70533", e(&a.code), e(&a.text)))
            .unwrap_or_default();
        push_segment(
            &mut out,
            &d,
            &[
                "ERR",
                "",
                &location,
                &hl7_code,
                error.severity.as_str(),
                &application,
                "",
                "",
                &e(&error.message),
            ],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::parse_messages;

    const VXU: &str = "MSH|^~\\&|DEMO-EHR|DEMO-CLINIC|IIS|STATE-IIS|20261122093000-0500||VXU^V04^VXU_V04|DEMO-0001|T|2.5.1|||ER|AL|||||Z22^CDCPHINVS|DEMO-CLINIC\r\
PID|1||DEMO123^^^DEMO-CLINIC^MR||TESTPATIENT^ALEX^^^^^L||20240115|U\r\
RXA|0|1|20261120||99^Unknown^CVX|0.5|mL^milliliters^UCUM\r\
RXA|0|1|20261120||08^Hep B^CVX|0.5|mL^milliliters^UCUM\r";

    #[test]
    fn accepts_with_swapped_parties() {
        let original = parse_messages(VXU).unwrap();
        let ack = build_ack(
            &original[0],
            AckCode::Accept,
            &[],
            "20261122093005-0500",
            "ACK-1",
        );
        assert_eq!(
            ack,
            "MSH|^~\\&|IIS|STATE-IIS|DEMO-EHR|DEMO-CLINIC|20261122093005-0500||ACK^V04^ACK|ACK-1|T|\
             2.5.1|||NE|NE|||||Z23^CDCPHINVS||DEMO-CLINIC\rMSA|AA|DEMO-0001\r"
        );
        let parsed = parse_messages(&ack).unwrap();
        let m = &parsed[0];
        let msh = m.msh();
        assert_eq!(msh.sending_application().unwrap().raw(), "IIS");
        assert_eq!(msh.sending_facility().unwrap().raw(), "STATE-IIS");
        assert_eq!(msh.receiving_application().unwrap().raw(), "DEMO-EHR");
        assert_eq!(msh.receiving_facility().unwrap().raw(), "DEMO-CLINIC");
        assert_eq!(m.raw("MSH-9"), Some("ACK^V04^ACK"));
        assert_eq!(msh.control_id().as_deref(), Some("ACK-1"));
        assert_eq!(msh.message_profile_ids(), ["Z23"]);
        assert_eq!(m.get("MSA-1").as_deref(), Some("AA"));
        assert_eq!(m.get("MSA-2").as_deref(), Some("DEMO-0001"));
        assert!(m.segment("ERR").is_none());
    }

    #[test]
    fn reports_two_errors_that_read_back() {
        let original = parse_messages(VXU).unwrap();
        let errors = [
            AckError {
                location: Some("RXA-5.1".parse().unwrap()),
                hl7_error_code: ErrorCode::TableValueNotFound,
                severity: Severity::Error,
                application_error_code: Some(ApplicationErrorCode {
                    code: "5".into(),
                    text: "Table value not found".into(),
                }),
                message: "CVX 99 | unknown ^ not & active~\\ here\r\nsee the CVX table".into(),
            },
            AckError {
                location: Some(Location::segment("PID", 1).field(11)),
                hl7_error_code: ErrorCode::RequiredFieldMissing,
                severity: Severity::Warning,
                application_error_code: None,
                message: "Patient address is missing".into(),
            },
        ];
        let ack = build_ack(
            &original[0],
            AckCode::Error,
            &errors,
            "20261122093005-0500",
            "ACK-2",
        );
        assert!(ack.contains(
            "\rERR||RXA^1^5^1^1|103^Table value not found^HL70357|E|5^Table value not found^HL70533|||\
             CVX 99 \\F\\ unknown \\S\\ not \\T\\ active\\R\\\\E\\ here\\X0D\\\\X0A\\see the CVX table\r"
        ), "{ack}");
        let parsed = parse_messages(&ack).unwrap();
        let m = &parsed[0];
        assert_eq!(m.get("MSA-1").as_deref(), Some("AE"));
        assert_eq!(m.segments_named("ERR").count(), 2);
        for (i, error) in errors.iter().enumerate() {
            let err = format!("ERR[{}]", i + 1);
            let erl = m.raw(&format!("{err}-2")).unwrap();
            let location = Location::from_erl(erl, &m.delimiters()).unwrap();
            assert_eq!(Some(location), error.location);
            assert_eq!(
                m.get(&format!("{err}-3.1")).as_deref(),
                Some(error.hl7_error_code.code())
            );
            assert_eq!(m.get(&format!("{err}-3.3")).as_deref(), Some("HL70357"));
            assert_eq!(
                m.get(&format!("{err}-4")).as_deref(),
                Some(error.severity.as_str())
            );
            assert_eq!(
                m.get(&format!("{err}-5.1")).map(|c| c.into_owned()),
                error
                    .application_error_code
                    .as_ref()
                    .map(|a| a.code.clone())
            );
            assert_eq!(
                m.get(&format!("{err}-8")).as_deref(),
                Some(error.message.as_str())
            );
        }
        assert_eq!(m.get("ERR[2]-2.3").as_deref(), Some("11"));
        assert_eq!(
            ErrorCode::from_code("101"),
            Some(ErrorCode::RequiredFieldMissing)
        );
        assert_eq!(ErrorCode::from_code("999"), None);
    }

    #[test]
    fn rewrites_non_standard_delimiters() {
        let original = "MSH#$*@!#EHR$1.2.3$ISO#CLINIC#IIS#STATE^ONE@T@TWO#20261122093000-0500##QBP$Q11$QBP_Q11#Q@F@1#P#2.5.1\r";
        let parsed = parse_messages(original).unwrap();
        let error = AckError {
            location: None,
            hl7_error_code: ErrorCode::ApplicationInternalError,
            severity: Severity::Error,
            application_error_code: None,
            message: "Try again later".into(),
        };
        let ack = build_ack(
            &parsed[0],
            AckCode::Reject,
            &[error],
            "20261122093005-0500",
            "A3",
        );
        assert!(
            ack.starts_with(
                "MSH|^~\\&|IIS|STATE\\S\\ONE!TWO|EHR^1.2.3^ISO|CLINIC|20261122093005-0500||ACK^Q11^ACK|A3|P|2.5.1|"
            ),
            "{ack}"
        );
        assert!(
            ack.ends_with(
                "\rMSA|AR|Q#1\rERR|||207^Application internal error^HL70357|E||||Try again later\r"
            ),
            "{ack}"
        );
        let back = parse_messages(&ack).unwrap();
        assert_eq!(back[0].get("MSH-4").as_deref(), Some("STATE^ONE!TWO"));
        assert_eq!(back[0].get("MSA-2").as_deref(), Some("Q#1"));
        assert_eq!(back[0].raw("ERR-2"), Some(""));
    }
}
