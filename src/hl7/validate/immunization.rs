//! The content rules of the `immunization` profile: the patient (PID), next of kin (NK1), each
//! ORC/RXA group with its OBX observations (VXU^V04, CDC IG 1.5 and Maine's review checklist),
//! and the query structure of a QBP^Q11 (QPD, RCP).

use super::codes::{self, CodeStatus, CvxStatus};
use super::{
    Check, ChecklistItem, DateTime, MessageKind, at, at_component, field_raw, today, value,
};
use crate::hl7::Location;
use crate::hl7::ack::ErrorCode;
use crate::hl7::er7::{Message, Segment};

/// LOINC of the VFC eligibility observation.
const LOINC_VFC: &str = "64994-7";
/// LOINC of the VIS publication date.
const LOINC_VIS_PUBLISHED: &str = "29768-9";
/// LOINC of the VIS document type (bar code), sent instead of the publication date.
const LOINC_VIS_DOCUMENT: &str = "69764-9";
/// LOINC of the date the VIS was presented.
const LOINC_VIS_PRESENTED: &str = "29769-7";

/// Apply the content rules for `kind`.
pub(super) fn check(message: &Message<'_>, kind: MessageKind, check: &mut Check<'_>) {
    match kind {
        MessageKind::Vxu => vxu(message, check),
        MessageKind::Qbp => qbp(message, check),
        // An ACK or RSP is checked for its header only.
        MessageKind::Ack | MessageKind::Rsp | MessageKind::Other => {}
    }
}

fn vxu(message: &Message<'_>, check: &mut Check<'_>) {
    for item in [
        ChecklistItem::ClientName,
        ChecklistItem::DateOfBirth,
        ChecklistItem::ClientAddress,
        ChecklistItem::VaccineCodes,
        ChecklistItem::NextOfKin,
        ChecklistItem::Dates,
    ] {
        check.applies(item);
    }
    let birth = match message.segment("PID") {
        Some(pid) => patient(pid, check),
        None => {
            check.error(
                "PID-MISSING",
                ChecklistItem::ClientName,
                None,
                "the message has no PID segment: a VXU must identify the patient",
                ErrorCode::SegmentSequenceError,
                None,
            );
            None
        }
    };
    if message.segment("NK1").is_none() {
        check.error(
            "NK1-MISSING",
            ChecklistItem::NextOfKin,
            None,
            "the message has no NK1 segment: send at least one next of kin or responsible person",
            ErrorCode::SegmentSequenceError,
            None,
        );
    }

    // ORC/RXA groups: an RXA opens a dose, the segments after it (until the next ORC or RXA)
    // belong to it. Borrowed slices: no allocation per dose.
    let segments = message.segments().as_slice();
    let mut any = false;
    for (i, rxa) in segments.iter().enumerate() {
        if rxa.id() != "RXA" {
            continue;
        }
        any = true;
        let rest = &segments[i + 1..];
        let end = rest
            .iter()
            .position(|s| matches!(s.id(), "RXA" | "ORC"))
            .unwrap_or(rest.len());
        Dose {
            rxa,
            group: &rest[..end],
        }
        .check(birth, check);
    }
    if !any {
        check.error(
            "RXA-MISSING",
            ChecklistItem::VaccineCodes,
            None,
            "the message has no RXA segment: a VXU must carry at least one ORC/RXA group",
            ErrorCode::SegmentSequenceError,
            None,
        );
    }
}

/// PID rules; returns the date of birth (`YYYYMMDD`) when it is valid.
fn patient(pid: &Segment<'_>, check: &mut Check<'_>) -> Option<u32> {
    if value(pid, 5, 1).is_empty() {
        check.error(
            "PID-5-FAMILY-MISSING",
            ChecklistItem::ClientName,
            Some(at_component(pid, 5, 1)),
            "PID-5.1 (patient family name) is empty: send the patient's full legal name",
            ErrorCode::RequiredFieldMissing,
            None,
        );
    }
    if value(pid, 5, 2).is_empty() {
        check.error(
            "PID-5-GIVEN-MISSING",
            ChecklistItem::ClientName,
            Some(at_component(pid, 5, 2)),
            "PID-5.2 (patient given name) is empty: send the patient's full legal name",
            ErrorCode::RequiredFieldMissing,
            None,
        );
    }

    let birth = date_of_birth(pid, check);

    if field_raw(pid, 11).is_empty() {
        check.error(
            "PID-11-MISSING",
            ChecklistItem::ClientAddress,
            Some(at(pid, 11)),
            "PID-11 (patient address) is empty: send street, city, state and ZIP code",
            ErrorCode::RequiredFieldMissing,
            None,
        );
    } else {
        for (component, text) in [
            (
                1,
                "PID-11.1 (street address) is empty: send the full address",
            ),
            (3, "PID-11.3 (city) is empty: send the full address"),
            (4, "PID-11.4 (state) is empty: send the full address"),
            (5, "PID-11.5 (ZIP code) is empty: send the full address"),
        ] {
            if value(pid, 11, component).is_empty() {
                check.error(
                    "PID-11-INCOMPLETE",
                    ChecklistItem::ClientAddress,
                    Some(at_component(pid, 11, component)),
                    text,
                    ErrorCode::RequiredFieldMissing,
                    None,
                );
            }
        }
    }

    code_list(pid, 10, check, RACE);
    code_list(pid, 22, check, ETHNICITY);
    birth
}

fn date_of_birth(pid: &Segment<'_>, check: &mut Check<'_>) -> Option<u32> {
    let text = value(pid, 7, 1);
    if text.is_empty() {
        check.error(
            "PID-7-MISSING",
            ChecklistItem::DateOfBirth,
            Some(at(pid, 7)),
            "PID-7 (date of birth) is empty: send the patient's date of birth as YYYYMMDD",
            ErrorCode::RequiredFieldMissing,
            None,
        );
        return None;
    }
    let Some(birth) = DateTime::parse(text).filter(DateTime::has_day) else {
        check.error(
            "PID-7-INVALID",
            ChecklistItem::DateOfBirth,
            Some(at(pid, 7)),
            "PID-7 (date of birth) is not a valid date: write it as YYYYMMDD",
            ErrorCode::DataTypeError,
            Some(2),
        );
        return None;
    };
    if today(check.options).is_some_and(|t| birth.date > t) {
        check.error(
            "PID-7-FUTURE",
            ChecklistItem::DateOfBirth,
            Some(at(pid, 7)),
            "PID-7 (date of birth) is in the future: check the date of birth",
            ErrorCode::DataTypeError,
            Some(1),
        );
        return None;
    }
    Some(birth.date)
}

/// A coded PID field checked against a table, when present.
struct CodeField {
    name: &'static str,
    unknown: &'static str,
    deprecated: &'static str,
    lookup: fn(&str) -> Option<CodeStatus>,
}

const RACE: CodeField = CodeField {
    name: "race",
    unknown: "PID-10-RACE-UNKNOWN",
    deprecated: "PID-10-RACE-DEPRECATED",
    lookup: codes::race,
};

const ETHNICITY: CodeField = CodeField {
    name: "ethnicity",
    unknown: "PID-22-ETHNICITY-UNKNOWN",
    deprecated: "PID-22-ETHNICITY-DEPRECATED",
    lookup: codes::ethnicity,
};

fn code_list(pid: &Segment<'_>, n: usize, check: &mut Check<'_>, table: CodeField) {
    let Some(field) = pid.field(n).filter(|f| !f.is_empty()) else {
        return;
    };
    check.applies(ChecklistItem::RaceEthnicity);
    for (r, repetition) in field.repetitions().enumerate() {
        let code = repetition.component(1).map(|c| c.raw()).unwrap_or("");
        if code.is_empty() {
            continue;
        }
        let location = Some(at(pid, n).repetition(r + 1).component(1));
        match (table.lookup)(code) {
            Some(CodeStatus::Valid) => {}
            Some(CodeStatus::Deprecated) => check.warning(
                table.deprecated,
                ChecklistItem::RaceEthnicity,
                location,
                &format!(
                    "PID-{n}.1 ({}) is a deprecated code: send the current CDC code instead",
                    table.name
                ),
                ErrorCode::TableValueNotFound,
                Some(5),
            ),
            None => check.error(
                table.unknown,
                ChecklistItem::RaceEthnicity,
                location,
                &format!(
                    "PID-{n}.1 ({}) is not in the CDC code table: send a current CDC code",
                    table.name
                ),
                ErrorCode::TableValueNotFound,
                Some(5),
            ),
        }
    }
}

/// One ORC/RXA group: the RXA and the segments after it (RXR, OBX, NTE...).
struct Dose<'m, 'a> {
    rxa: &'m Segment<'a>,
    group: &'m [Segment<'a>],
}

impl Dose<'_, '_> {
    fn check(&self, birth: Option<u32>, check: &mut Check<'_>) {
        let rxa = self.rxa;
        let source = value(rxa, 9, 1);
        let completion = value(rxa, 20, 1);
        let historical = matches!(
            source,
            "01" | "02" | "03" | "04" | "05" | "06" | "07" | "08"
        );
        if source.is_empty() {
            check.error(
                "RXA-9-MISSING",
                ChecklistItem::VaccineCodes,
                Some(at_component(rxa, 9, 1)),
                "RXA-9 (administration notes) is empty: send 00 for a newly administered dose or 01-08 for a historical one",
                ErrorCode::RequiredFieldMissing,
                None,
            );
        } else if source != "00" && !historical {
            check.error(
                "RXA-9-INVALID",
                ChecklistItem::VaccineCodes,
                Some(at_component(rxa, 9, 1)),
                "RXA-9 (administration notes) is not in NIP001: send 00 for a newly administered dose or 01-08 for a historical one",
                ErrorCode::TableValueNotFound,
                Some(5),
            );
        }
        if !completion.is_empty() && !matches!(completion, "CP" | "RE" | "NA" | "PA") {
            check.error(
                "RXA-20-INVALID",
                ChecklistItem::VaccineCodes,
                Some(at_component(rxa, 20, 1)),
                "RXA-20 (completion status) is not CP, RE, NA or PA",
                ErrorCode::TableValueNotFound,
                Some(5),
            );
        }
        let action = value(rxa, 21, 1);
        if !action.is_empty() && !matches!(action, "A" | "D" | "U") {
            check.error(
                "RXA-21-INVALID",
                ChecklistItem::VaccineCodes,
                Some(at_component(rxa, 21, 1)),
                "RXA-21 (action code) is not A, D or U",
                ErrorCode::TableValueNotFound,
                Some(5),
            );
        }
        // A refusal (RE) or a dose not administered (NA) has no lot, VFC or amount to check.
        let given = !matches!(completion, "RE" | "NA");
        let administered = source == "00" && given;

        self.vaccine_code(administered, check);
        self.manufacturer(check);
        self.date(birth, check);
        if administered {
            for item in [
                ChecklistItem::VfcEligibility,
                ChecklistItem::LotAndExpiration,
                ChecklistItem::VisDate,
                ChecklistItem::DoseAmount,
            ] {
                check.applies(item);
            }
            self.lot(check);
            self.vfc(check);
            self.vis(check);
            self.amount(check);
        }
    }

    fn vaccine_code(&self, administered: bool, check: &mut Check<'_>) {
        let rxa = self.rxa;
        let item = ChecklistItem::VaccineCodes;
        // The CVX is the first triplet, or the alternate one when the first names another system.
        let (code, component) = match (value(rxa, 5, 3), value(rxa, 5, 6)) {
            ("CVX" | "", _) => (value(rxa, 5, 1), 1),
            (_, "CVX") => (value(rxa, 5, 4), 4),
            _ => {
                check.error(
                    "RXA-5-NOT-CVX",
                    item,
                    Some(at_component(rxa, 5, 3)),
                    "RXA-5 (administered code) is not coded with CVX: send the CVX code in RXA-5.1 with RXA-5.3 = CVX",
                    ErrorCode::TableValueNotFound,
                    Some(5),
                );
                return;
            }
        };
        let location = Some(at_component(rxa, 5, component));
        if code.is_empty() {
            check.error(
                "RXA-5-MISSING",
                item,
                location,
                "RXA-5 (administered code) is empty: send the vaccine's CVX code",
                ErrorCode::RequiredFieldMissing,
                None,
            );
            return;
        }
        let Some(cvx) = codes::cvx(code) else {
            check.error(
                "RXA-5-CVX-UNKNOWN",
                item,
                location,
                "RXA-5 (administered code) is not a CDC CVX code: send a code from the current CVX table",
                ErrorCode::TableValueNotFound,
                Some(5),
            );
            return;
        };
        if !administered {
            return; // historical doses and refusals may use any known code
        }
        // Unspecified first: those codes are inactive too, and "send the specific product" is
        // the useful advice.
        if cvx.unspecified {
            check.error(
                "RXA-5-CVX-UNSPECIFIED",
                item,
                location,
                "RXA-5 (administered code) is an \"unspecified formulation\" CVX code: a newly administered dose needs the specific CVX code of the product given",
                ErrorCode::TableValueNotFound,
                Some(4),
            );
        } else if cvx.status != CvxStatus::Active {
            check.error(
                "RXA-5-CVX-INACTIVE",
                item,
                location,
                "RXA-5 (administered code) is a CVX code that is not active: a newly administered dose needs an active CVX code for the product given",
                ErrorCode::TableValueNotFound,
                Some(4),
            );
        }
    }

    fn manufacturer(&self, check: &mut Check<'_>) {
        let rxa = self.rxa;
        let code = value(rxa, 17, 1);
        if code.is_empty() || !matches!(value(rxa, 17, 3), "MVX" | "") {
            return;
        }
        if codes::mvx(code).is_none() {
            check.warning(
                "RXA-17-MVX-UNKNOWN",
                ChecklistItem::VaccineCodes,
                Some(at_component(rxa, 17, 1)),
                "RXA-17 (manufacturer) is not a CDC MVX code: send a code from the MVX table",
                ErrorCode::TableValueNotFound,
                Some(5),
            );
        }
    }

    fn date(&self, birth: Option<u32>, check: &mut Check<'_>) {
        let rxa = self.rxa;
        let item = ChecklistItem::Dates;
        let location = || Some(at(rxa, 3));
        let text = value(rxa, 3, 1);
        if text.is_empty() {
            check.error(
                "RXA-3-MISSING",
                item,
                location(),
                "RXA-3 (date of administration) is empty: send the date the dose was given",
                ErrorCode::RequiredFieldMissing,
                None,
            );
            return;
        }
        let Some(date) = DateTime::parse(text).filter(DateTime::has_day) else {
            check.error(
                "RXA-3-INVALID",
                item,
                location(),
                "RXA-3 (date of administration) is not a valid date: write it as YYYYMMDD",
                ErrorCode::DataTypeError,
                Some(2),
            );
            return;
        };
        if today(check.options).is_some_and(|t| date.date > t) {
            check.error(
                "RXA-3-FUTURE",
                item,
                location(),
                "RXA-3 (date of administration) is in the future: check the date the dose was given",
                ErrorCode::DataTypeError,
                Some(1),
            );
        } else if birth.is_some_and(|b| date.date < b) {
            check.error(
                "RXA-3-BEFORE-BIRTH",
                item,
                location(),
                "RXA-3 (date of administration) is before PID-7 (date of birth): check both dates",
                ErrorCode::DataTypeError,
                Some(1),
            );
        }
    }

    fn lot(&self, check: &mut Check<'_>) {
        let rxa = self.rxa;
        let item = ChecklistItem::LotAndExpiration;
        if field_raw(rxa, 15).is_empty() {
            check.warning(
                "RXA-15-LOT-MISSING",
                item,
                Some(at(rxa, 15)),
                "RXA-15 (lot number) is empty on an administered dose: send the lot number when it is available",
                ErrorCode::RequiredFieldMissing,
                None,
            );
        }
        let expiration = value(rxa, 16, 1);
        if expiration.is_empty() {
            check.warning(
                "RXA-16-EXPIRATION-MISSING",
                item,
                Some(at(rxa, 16)),
                "RXA-16 (lot expiration date) is empty on an administered dose: send it when it is available",
                ErrorCode::RequiredFieldMissing,
                None,
            );
        } else if DateTime::parse(expiration).is_none_or(|d| !d.has_day()) {
            check.error(
                "RXA-16-INVALID",
                item,
                Some(at(rxa, 16)),
                "RXA-16 (lot expiration date) is not a valid date: write it as YYYYMMDD",
                ErrorCode::DataTypeError,
                Some(2),
            );
        }
    }

    /// The OBX of this dose with OBX-3.1 = `loinc`.
    fn observation(&self, loinc: &str) -> Option<&Segment<'_>> {
        self.group
            .iter()
            .find(|s| s.id() == "OBX" && value(s, 3, 1) == loinc)
    }

    fn vfc(&self, check: &mut Check<'_>) {
        let item = ChecklistItem::VfcEligibility;
        let Some(obx) = self.observation(LOINC_VFC) else {
            check.warning(
                "OBX-VFC-MISSING",
                item,
                Some(Location::segment("RXA", self.rxa.sequence())),
                "the administered dose has no VFC eligibility observation (OBX-3 = 64994-7): send one after the RXA",
                ErrorCode::RequiredFieldMissing,
                Some(6),
            );
            return;
        };
        let code = value(obx, 5, 1);
        let location = Some(at_component(obx, 5, 1));
        match codes::vfc_eligibility(code) {
            Some(CodeStatus::Valid) => {}
            Some(CodeStatus::Deprecated) => check.error(
                "OBX-VFC-INVALID",
                item,
                location,
                "OBX-5 (VFC eligibility) is a code the table marks invalid: send the patient's actual eligibility (V01-V07 or a state code)",
                ErrorCode::TableValueNotFound,
                Some(4),
            ),
            None => check.error(
                "OBX-VFC-UNKNOWN",
                item,
                location,
                "OBX-5 (VFC eligibility) is not in the financial status table: send V01-V07 or a state code",
                ErrorCode::TableValueNotFound,
                Some(5),
            ),
        }
    }

    fn vis(&self, check: &mut Check<'_>) {
        let item = ChecklistItem::VisDate;
        let published = self.observation(LOINC_VIS_PUBLISHED);
        let document = self.observation(LOINC_VIS_DOCUMENT);
        if published.is_none() && document.is_none() {
            check.warning(
                "OBX-VIS-MISSING",
                item,
                Some(Location::segment("RXA", self.rxa.sequence())),
                "the administered dose has no VIS observation (OBX-3 = 29768-9 publication date or 69764-9 document type): send the VIS given",
                ErrorCode::RequiredFieldMissing,
                Some(6),
            );
            return;
        }
        let presented = self.observation(LOINC_VIS_PRESENTED);
        if presented.is_none() {
            check.warning(
                "OBX-VIS-PRESENTED-MISSING",
                item,
                Some(Location::segment("RXA", self.rxa.sequence())),
                "the administered dose has a VIS but no date presented (OBX-3 = 29769-7): send the date the VIS was given",
                ErrorCode::RequiredFieldMissing,
                Some(6),
            );
        }
        for obx in [published, presented].into_iter().flatten() {
            if DateTime::parse(value(obx, 5, 1)).is_none_or(|d| !d.has_day()) {
                check.error(
                    "OBX-VIS-DATE-INVALID",
                    item,
                    Some(at(obx, 5)),
                    "OBX-5 (VIS date) is not a valid date: write it as YYYYMMDD",
                    ErrorCode::DataTypeError,
                    Some(2),
                );
            }
        }
    }

    fn amount(&self, check: &mut Check<'_>) {
        let rxa = self.rxa;
        let item = ChecklistItem::DoseAmount;
        let amount = value(rxa, 6, 1);
        if amount.is_empty() {
            check.error(
                "RXA-6-MISSING",
                item,
                Some(at(rxa, 6)),
                "RXA-6 (administered amount) is empty: send the dose amount in mL",
                ErrorCode::RequiredFieldMissing,
                None,
            );
            return;
        }
        if amount == "999" {
            check.error(
                "RXA-6-UNKNOWN-AMOUNT",
                item,
                Some(at(rxa, 6)),
                "RXA-6 (administered amount) is 999 (unknown) on an administered dose: 999 is for historical doses only; send the amount in mL",
                ErrorCode::DataTypeError,
                Some(4),
            );
            return;
        }
        if !is_positive_number(amount) {
            check.error(
                "RXA-6-INVALID",
                item,
                Some(at(rxa, 6)),
                "RXA-6 (administered amount) is not a positive number: send the dose amount in mL, e.g. 0.5",
                ErrorCode::DataTypeError,
                Some(4),
            );
            return;
        }
        let unit = value(rxa, 7, 1);
        if unit.is_empty() {
            check.error(
                "RXA-7-UNITS-MISSING",
                item,
                Some(at(rxa, 7)),
                "RXA-7 (administered units) is empty: send mL^milliliters^UCUM",
                ErrorCode::RequiredFieldMissing,
                None,
            );
        } else if unit != "mL" || !matches!(value(rxa, 7, 3), "UCUM" | "") {
            check.error(
                "RXA-7-UNITS",
                item,
                Some(at(rxa, 7)),
                "RXA-7 (administered units) is not milliliters: send mL^milliliters^UCUM",
                ErrorCode::TableValueNotFound,
                Some(5),
            );
        }
    }
}

/// `0.5`, `1`, `.25`: digits with at most one point, above zero.
fn is_positive_number(text: &str) -> bool {
    let mut point = false;
    let mut nonzero = false;
    let mut digits = 0;
    for c in text.bytes() {
        match c {
            b'.' if !point => point = true,
            b'0' => digits += 1,
            b'1'..=b'9' => {
                digits += 1;
                nonzero = true;
            }
            _ => return false,
        }
    }
    digits > 0 && nonzero
}

fn qbp(message: &Message<'_>, check: &mut Check<'_>) {
    let item = ChecklistItem::QueryStructure;
    check.applies(item);
    if message.segment("RCP").is_none() {
        check.error(
            "RCP-MISSING",
            item,
            None,
            "the query has no RCP segment (response control parameters): send RCP|I|... after the QPD",
            ErrorCode::SegmentSequenceError,
            None,
        );
    }
    let Some(qpd) = message.segment("QPD") else {
        check.error(
            "QPD-MISSING",
            item,
            None,
            "the query has no QPD segment: a QBP^Q11 carries its parameters in QPD",
            ErrorCode::SegmentSequenceError,
            None,
        );
        return;
    };
    let name = value(qpd, 1, 1);
    if !matches!(name, "Z34" | "Z44") {
        check.error(
            "QPD-1-QUERY-NAME",
            item,
            Some(at_component(qpd, 1, 1)),
            "QPD-1 (message query name) is not Z34 (request immunization history) or Z44 (request evaluated history and forecast)",
            if name.is_empty() {
                ErrorCode::RequiredFieldMissing
            } else {
                ErrorCode::TableValueNotFound
            },
            (!name.is_empty()).then_some(5),
        );
    }
    for (rule, n, c, text) in [
        (
            "QPD-2-QUERY-TAG",
            2,
            1,
            "QPD-2 (query tag) is empty: send an ID for the query, echoed in the response",
        ),
        (
            "QPD-3-PATIENT-ID",
            3,
            1,
            "QPD-3 (patient identifier list) is empty: send the patient's medical record number or IIS ID",
        ),
        (
            "QPD-4-NAME",
            4,
            1,
            "QPD-4.1 (patient family name) is empty: send the patient's full name",
        ),
        (
            "QPD-4-NAME",
            4,
            2,
            "QPD-4.2 (patient given name) is empty: send the patient's full name",
        ),
    ] {
        if value(qpd, n, c).is_empty() {
            check.error(
                rule,
                item,
                Some(at_component(qpd, n, c)),
                text,
                ErrorCode::RequiredFieldMissing,
                None,
            );
        }
    }
    let birth = value(qpd, 6, 1);
    if birth.is_empty() {
        check.error(
            "QPD-6-DOB",
            item,
            Some(at(qpd, 6)),
            "QPD-6 (patient date of birth) is empty: send the date of birth as YYYYMMDD",
            ErrorCode::RequiredFieldMissing,
            None,
        );
    } else if DateTime::parse(birth).is_none_or(|d| !d.has_day()) {
        check.error(
            "QPD-6-DOB",
            item,
            Some(at(qpd, 6)),
            "QPD-6 (patient date of birth) is not a valid date: write it as YYYYMMDD",
            ErrorCode::DataTypeError,
            Some(2),
        );
    }
}
