//! The `header` profile: the MSH rules of the MiHIN table (REFERENCE.md section 7) and the CDC
//! message profiles (MSH-21), plus the sending facility (MSH-4) and responsible sending
//! organisation (MSH-22) of Maine's checklist.

use super::{Check, ChecklistItem, DateTime, MessageKind, at, at_component, field_raw, value};
use crate::hl7::ack::ErrorCode;
use crate::hl7::er7::{Message, Segment};

const HEADER: ChecklistItem = ChecklistItem::MessageHeader;
const FACILITY: ChecklistItem = ChecklistItem::SendingFacility;

/// Required MSH fields (rule id, field, what it is): a missing one is 0357 code 101.
const REQUIRED: [(&str, usize, &str); 9] = [
    (
        "MSH-3-REQUIRED",
        3,
        "MSH-3 (sending application) is empty: fill it with the sending application's name or ID",
    ),
    (
        "MSH-4-REQUIRED",
        4,
        "MSH-4 (sending facility) is empty: fill it with the facility ID the IIS assigned to the sender",
    ),
    (
        "MSH-5-REQUIRED",
        5,
        "MSH-5 (receiving application) is empty: fill it with the IIS application name",
    ),
    (
        "MSH-6-REQUIRED",
        6,
        "MSH-6 (receiving facility) is empty: fill it with the IIS facility ID",
    ),
    (
        "MSH-7-REQUIRED",
        7,
        "MSH-7 (date/time of message) is empty: send the time the message was created, to the second with a time-zone offset",
    ),
    (
        "MSH-9-REQUIRED",
        9,
        "MSH-9 (message type) is empty: send e.g. VXU^V04^VXU_V04 or QBP^Q11^QBP_Q11",
    ),
    (
        "MSH-10-REQUIRED",
        10,
        "MSH-10 (message control ID) is empty: send an ID unique to each message",
    ),
    (
        "MSH-11-REQUIRED",
        11,
        "MSH-11 (processing ID) is empty: send P for production or T for test",
    ),
    (
        "MSH-12-REQUIRED",
        12,
        "MSH-12 (version ID) is empty: send 2.5.1",
    ),
];

/// Fields MiHIN marks X (not supported): (rule id, field, for QBP only).
const NOT_SUPPORTED: [(&str, usize, bool); 9] = [
    ("MSH-8-NOT-SUPPORTED", 8, false),
    ("MSH-13-NOT-SUPPORTED", 13, false),
    ("MSH-14-NOT-SUPPORTED", 14, false),
    ("MSH-15-NOT-SUPPORTED", 15, true),
    ("MSH-16-NOT-SUPPORTED", 16, true),
    ("MSH-17-NOT-SUPPORTED", 17, true),
    ("MSH-18-NOT-SUPPORTED", 18, true),
    ("MSH-19-NOT-SUPPORTED", 19, true),
    ("MSH-20-NOT-SUPPORTED", 20, true),
];

/// Check the header of `message`; returns what kind of message it says it is.
pub(super) fn check(message: &Message<'_>, check: &mut Check<'_>) -> MessageKind {
    check.applies(HEADER);
    check.applies(FACILITY);
    let msh = message.msh().segment();

    if field_raw(msh, 1) != "|" {
        check.error(
            "MSH-1-SEPARATOR",
            HEADER,
            Some(at(msh, 1)),
            "MSH-1 (field separator) is not `|`: write the message with the standard field separator",
            ErrorCode::DataTypeError,
            Some(4),
        );
    }
    if field_raw(msh, 2) != "^~\\&" {
        check.error(
            "MSH-2-ENCODING",
            HEADER,
            Some(at(msh, 2)),
            "MSH-2 (encoding characters) is not `^~\\&`: write the message with the standard encoding characters",
            ErrorCode::DataTypeError,
            Some(4),
        );
    }
    for (rule, n, text) in REQUIRED {
        if field_raw(msh, n).is_empty() {
            let item = if n == 4 { FACILITY } else { HEADER };
            check.error(
                rule,
                item,
                Some(at(msh, n)),
                text,
                ErrorCode::RequiredFieldMissing,
                None,
            );
        }
    }

    date_time(msh, check);
    let kind = message_type(msh, check);
    processing_id(msh, check);
    version(msh, check);

    for (rule, n, qbp_only) in NOT_SUPPORTED {
        if (!qbp_only || kind == MessageKind::Qbp) && !field_raw(msh, n).is_empty() {
            check.warning(
                rule,
                HEADER,
                Some(at(msh, n)),
                &format!("MSH-{n} is not supported (MiHIN usage X) and is ignored: leave it empty"),
                ErrorCode::DataTypeError,
                None,
            );
        }
    }
    profile(msh, kind, check);
    facility(msh, kind, check);
    kind
}

fn date_time(msh: &Segment<'_>, check: &mut Check<'_>) {
    let text = value(msh, 7, 1);
    if text.is_empty() {
        return; // MSH-7-REQUIRED
    }
    match DateTime::parse(text) {
        None => check.error(
            "MSH-7-INVALID",
            HEADER,
            Some(at(msh, 7)),
            "MSH-7 (date/time of message) is not a valid HL7 date/time: write it as YYYYMMDDHHMMSS+/-ZZZZ",
            ErrorCode::DataTypeError,
            Some(2),
        ),
        Some(t) if t.digits < 14 || !t.offset => check.error(
            "MSH-7-PRECISION",
            HEADER,
            Some(at(msh, 7)),
            "MSH-7 (date/time of message) must be precise to the second and carry a time-zone offset: write it as YYYYMMDDHHMMSS+/-ZZZZ",
            ErrorCode::DataTypeError,
            Some(2),
        ),
        Some(_) => {}
    }
}

/// MSH-9: the supported types and their structures.
fn message_type(msh: &Segment<'_>, check: &mut Check<'_>) -> MessageKind {
    let code = value(msh, 9, 1);
    let event = value(msh, 9, 2);
    let structure = value(msh, 9, 3);
    if code.is_empty() {
        return MessageKind::Other; // MSH-9-REQUIRED
    }
    let (kind, expected) = match (code, event) {
        ("VXU", "V04") => (MessageKind::Vxu, "VXU_V04"),
        ("QBP", "Q11") => (MessageKind::Qbp, "QBP_Q11"),
        ("RSP", "K11") => (MessageKind::Rsp, "RSP_K11"),
        ("ACK", _) => (MessageKind::Ack, "ACK"),
        ("VXU" | "QBP" | "RSP", _) => {
            check.error(
                "MSH-9-EVENT",
                HEADER,
                Some(at_component(msh, 9, 2)),
                "MSH-9.2 (trigger event) is not supported for this message type: send VXU^V04, QBP^Q11 or RSP^K11",
                ErrorCode::UnsupportedEventCode,
                None,
            );
            return MessageKind::Other;
        }
        _ => {
            check.error(
                "MSH-9-TYPE",
                HEADER,
                Some(at_component(msh, 9, 1)),
                "MSH-9 (message type) is not supported: send VXU^V04^VXU_V04, QBP^Q11^QBP_Q11, ACK^V04^ACK or RSP^K11^RSP_K11",
                ErrorCode::UnsupportedMessageType,
                None,
            );
            return MessageKind::Other;
        }
    };
    if structure != expected {
        check.error(
            "MSH-9-STRUCTURE",
            HEADER,
            Some(at_component(msh, 9, 3)),
            "MSH-9.3 (message structure) is missing or does not match the message type and trigger event: send e.g. VXU^V04^VXU_V04",
            ErrorCode::DataTypeError,
            Some(4),
        );
    }
    kind
}

fn processing_id(msh: &Segment<'_>, check: &mut Check<'_>) {
    let id = value(msh, 11, 1);
    if id.is_empty() {
        return; // MSH-11-REQUIRED
    }
    let expected = match check.options.environment {
        super::Environment::Test => "T",
        super::Environment::Production => "P",
    };
    if id != "P" && id != "T" {
        check.error(
            "MSH-11-PROCESSING-ID",
            HEADER,
            Some(at_component(msh, 11, 1)),
            "MSH-11 (processing ID) is neither P (production) nor T (test)",
            ErrorCode::UnsupportedProcessingId,
            None,
        );
    } else if id != expected {
        check.error(
            "MSH-11-ENVIRONMENT",
            HEADER,
            Some(at_component(msh, 11, 1)),
            if expected == "T" {
                "MSH-11 (processing ID) says production but this agent is a test environment: send T, or route the message to production"
            } else {
                "MSH-11 (processing ID) says test but this agent is a production environment: send P, or route the message to the test environment"
            },
            ErrorCode::UnsupportedProcessingId,
            None,
        );
    }
}

fn version(msh: &Segment<'_>, check: &mut Check<'_>) {
    let version = value(msh, 12, 1);
    if version.is_empty() || version == "2.5.1" {
        return;
    }
    if version == "2.3.1" && check.options.allow_v231 {
        return;
    }
    check.error(
        "MSH-12-VERSION",
        HEADER,
        Some(at_component(msh, 12, 1)),
        if check.options.allow_v231 {
            "MSH-12 (version ID) is not supported: send 2.5.1 (2.3.1 is accepted here too)"
        } else {
            "MSH-12 (version ID) is not supported: send 2.5.1"
        },
        ErrorCode::UnsupportedVersionId,
        None,
    );
}

/// MSH-21: the CDC message profile for the type.
fn profile(msh: &Segment<'_>, kind: MessageKind, check: &mut Check<'_>) {
    let expected: &[&str] = match kind {
        MessageKind::Vxu => &["Z22"],
        MessageKind::Qbp => &["Z34", "Z44"],
        MessageKind::Ack => &["Z23"],
        MessageKind::Rsp => &["Z31", "Z32", "Z33", "Z42"],
        MessageKind::Other => return,
    };
    let Some(field) = msh.field(21).filter(|f| !f.is_empty()) else {
        check.warning(
            "MSH-21-PROFILE",
            HEADER,
            Some(at(msh, 21)),
            "MSH-21 (message profile identifier) is empty: send the CDC profile for the message type (Z22 VXU, Z34/Z44 QBP, Z23 ACK, Z31/Z32/Z33/Z42 RSP)",
            ErrorCode::RequiredFieldMissing,
            None,
        );
        return;
    };
    let found = field
        .repetitions()
        .any(|r| r.component(1).is_some_and(|c| expected.contains(&c.raw())));
    if !found {
        check.warning(
            "MSH-21-PROFILE",
            HEADER,
            Some(at(msh, 21)),
            "MSH-21 (message profile identifier) does not name the CDC profile for the message type (Z22 VXU, Z34/Z44 QBP, Z23 ACK, Z31/Z32/Z33/Z42 RSP)",
            ErrorCode::TableValueNotFound,
            Some(5),
        );
    }
}

/// MSH-4 carries an ID; MSH-22 names the responsible sending organisation (VXU, QBP).
fn facility(msh: &Segment<'_>, kind: MessageKind, check: &mut Check<'_>) {
    if !field_raw(msh, 4).is_empty() && value(msh, 4, 1).is_empty() && value(msh, 4, 2).is_empty() {
        check.error(
            "MSH-4-ID",
            FACILITY,
            Some(at(msh, 4)),
            "MSH-4 (sending facility) has neither a namespace ID (MSH-4.1) nor a universal ID (MSH-4.2): send the facility ID the IIS assigned",
            ErrorCode::RequiredFieldMissing,
            None,
        );
    }
    if matches!(kind, MessageKind::Vxu | MessageKind::Qbp)
        && value(msh, 22, 1).is_empty()
        && value(msh, 22, 10).is_empty()
    {
        check.error(
            "MSH-22-REQUIRED",
            FACILITY,
            Some(at(msh, 22)),
            "MSH-22 (responsible sending organisation) is empty: send the organisation's name (MSH-22.1) or IIS-assigned ID (MSH-22.10)",
            ErrorCode::RequiredFieldMissing,
            None,
        );
    }
}
