//! The message header: [`Msh`] reads MSH fields by name; [`MshBuilder`] writes a header, and a
//! whole connectivity-test ("ping") message, for the sending side.

use std::borrow::Cow;
use std::time::SystemTime;

use super::er7::{Delimiters, Field, Segment};
use super::{escape, push_segment};

/// Named access to an MSH segment (CDC immunization guide 1.5 numbering). Values are decoded;
/// None means absent or empty.
#[derive(Clone, Copy, Debug)]
pub struct Msh<'a> {
    segment: &'a Segment<'a>,
}

impl<'a> Msh<'a> {
    pub(super) fn new(segment: &'a Segment<'a>) -> Self {
        Msh { segment }
    }

    /// The MSH segment itself.
    pub fn segment(&self) -> &'a Segment<'a> {
        self.segment
    }

    fn field(&self, n: usize) -> Option<Field<'a>> {
        self.segment.field(n).filter(|f| !f.is_empty())
    }

    /// Component `c` of field `n`, decoded, if not empty.
    fn value(&self, n: usize, c: usize) -> Option<Cow<'a, str>> {
        let value = self.field(n)?.component(c)?.subcomponent(1)?.decoded();
        (!value.is_empty()).then_some(value)
    }

    fn hd(&self, n: usize) -> Option<Hd<'a>> {
        self.field(n).map(Hd)
    }

    /// MSH-3, the sending application.
    pub fn sending_application(&self) -> Option<Hd<'a>> {
        self.hd(3)
    }

    /// MSH-4, the sending facility (the IIS's ID for the submitting organisation).
    pub fn sending_facility(&self) -> Option<Hd<'a>> {
        self.hd(4)
    }

    /// MSH-5, the receiving application.
    pub fn receiving_application(&self) -> Option<Hd<'a>> {
        self.hd(5)
    }

    /// MSH-6, the receiving facility.
    pub fn receiving_facility(&self) -> Option<Hd<'a>> {
        self.hd(6)
    }

    /// MSH-7.1, the date and time of the message as written (`20261122093000-0500`).
    pub fn date_time(&self) -> Option<Cow<'a, str>> {
        self.value(7, 1)
    }

    /// MSH-9, the message type (`VXU^V04^VXU_V04`).
    pub fn message_type(&self) -> MessageType<'a> {
        MessageType {
            code: self.value(9, 1),
            trigger_event: self.value(9, 2),
            structure: self.value(9, 3),
        }
    }

    /// MSH-10, the message control ID, echoed in the acknowledgement's MSA-2.
    pub fn control_id(&self) -> Option<Cow<'a, str>> {
        self.value(10, 1)
    }

    /// MSH-11.1, the processing ID: `P` production, `T` training/test, `D` debugging.
    pub fn processing_id(&self) -> Option<Cow<'a, str>> {
        self.value(11, 1)
    }

    /// MSH-12.1, the version ID (`2.5.1`).
    pub fn version_id(&self) -> Option<Cow<'a, str>> {
        self.value(12, 1)
    }

    /// MSH-15, when the sender wants an accept acknowledgement (`AL`, `NE`, `ER`, `SU`).
    pub fn accept_ack_type(&self) -> Option<Cow<'a, str>> {
        self.value(15, 1)
    }

    /// MSH-16, when the sender wants an application acknowledgement (`AL`, `NE`, `ER`, `SU`).
    pub fn application_ack_type(&self) -> Option<Cow<'a, str>> {
        self.value(16, 1)
    }

    /// MSH-21, the message profile identifiers (EI.1 of each repetition: `Z22` for a VXU, `Z34`
    /// or `Z44` for a QBP, `Z23` for an ACK).
    pub fn message_profile_ids(&self) -> Vec<Cow<'a, str>> {
        let Some(field) = self.field(21) else {
            return Vec::new();
        };
        field
            .repetitions()
            .filter_map(|r| r.component(1)?.subcomponent(1).map(|s| s.decoded()))
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// MSH-22, the responsible sending organisation (XON: `.1` name, `.10` identifier).
    pub fn responsible_sending_org(&self) -> Option<Field<'a>> {
        self.field(22)
    }

    /// MSH-23, the responsible receiving organisation (XON).
    pub fn responsible_receiving_org(&self) -> Option<Field<'a>> {
        self.field(23)
    }
}

/// MSH-9: message code, trigger event, message structure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageType<'a> {
    /// MSH-9.1, e.g. `VXU`.
    pub code: Option<Cow<'a, str>>,
    /// MSH-9.2, e.g. `V04`.
    pub trigger_event: Option<Cow<'a, str>>,
    /// MSH-9.3, e.g. `VXU_V04`.
    pub structure: Option<Cow<'a, str>>,
}

/// An HD (hierarchic designator) field read from a message: MSH-3 to MSH-6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hd<'a>(Field<'a>);

impl<'a> Hd<'a> {
    /// The whole field as written (still escaped), e.g. `DEMO-CLINIC^2.16.840.1.113883.3.72^ISO`.
    pub fn raw(&self) -> &'a str {
        self.0.raw()
    }

    /// The field itself.
    pub fn field(&self) -> Field<'a> {
        self.0
    }

    fn component(&self, n: usize) -> Option<Cow<'a, str>> {
        let value = self.0.component(n)?.decoded();
        (!value.is_empty()).then_some(value)
    }

    /// HD.1, the namespace ID (what most IIS match on).
    pub fn namespace_id(&self) -> Option<Cow<'a, str>> {
        self.component(1)
    }

    /// HD.2, the universal ID (often an OID).
    pub fn universal_id(&self) -> Option<Cow<'a, str>> {
        self.component(2)
    }

    /// HD.3, the universal ID type (`ISO`, `DNS`, ...).
    pub fn universal_id_type(&self) -> Option<Cow<'a, str>> {
        self.component(3)
    }
}

/// An HD value to write: namespace ID, universal ID, universal ID type (unescaped text).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HierarchicDesignator {
    /// HD.1.
    pub namespace_id: String,
    /// HD.2.
    pub universal_id: String,
    /// HD.3.
    pub universal_id_type: String,
}

impl HierarchicDesignator {
    /// The HD written as one field with `delimiters`, trailing empty components left out.
    pub fn to_er7(&self, delimiters: &Delimiters) -> String {
        let parts = [
            &self.namespace_id,
            &self.universal_id,
            &self.universal_id_type,
        ];
        let used = parts
            .iter()
            .rposition(|p| !p.is_empty())
            .map_or(0, |i| i + 1);
        let encoded: Vec<_> = parts[..used]
            .iter()
            .map(|p| escape::encode(p, delimiters))
            .collect();
        encoded.join(&delimiters.component().to_string())
    }
}

impl From<&str> for HierarchicDesignator {
    /// A namespace ID alone.
    fn from(namespace_id: &str) -> Self {
        HierarchicDesignator {
            namespace_id: namespace_id.to_owned(),
            ..Default::default()
        }
    }
}

impl From<Hd<'_>> for HierarchicDesignator {
    fn from(hd: Hd<'_>) -> Self {
        let text = |v: Option<Cow<'_, str>>| v.map(Cow::into_owned).unwrap_or_default();
        HierarchicDesignator {
            namespace_id: text(hd.namespace_id()),
            universal_id: text(hd.universal_id()),
            universal_id_type: text(hd.universal_id_type()),
        }
    }
}

/// An HL7 timestamp to the second with its UTC offset (`20261122073000-0500`), as MSH-7 wants.
pub fn timestamp(at: SystemTime, offset: chrono::FixedOffset) -> String {
    chrono::DateTime::<chrono::Utc>::from(at)
        .with_timezone(&offset)
        .format("%Y%m%d%H%M%S%z")
        .to_string()
}

/// Writes an MSH with the standard delimiters, and the connectivity-test message
/// [`MshBuilder::ping`]. Values are given unescaped; the builder escapes them.
///
/// Defaults: MSH-9 `QBP^Q11^QBP_Q11`, MSH-11 `T`, MSH-12 `2.5.1`, MSH-15 `ER`, MSH-16 `AL`,
/// MSH-21 `Z34^CDCPHINVS` (request immunization history).
///
/// ```
/// use direct_agent::hl7::{MshBuilder, parse_messages};
/// let ping = MshBuilder::new("20261122073000-0500", "PING-1")
///     .sending_application("DIRECT-AGENT")
///     .sending_facility("DEMO-CLINIC")
///     .receiving_application("IIS")
///     .receiving_facility("STATE-IIS")
///     .ping();
/// let messages = parse_messages(&ping).unwrap();
/// assert_eq!(messages[0].get("MSH-9.2").as_deref(), Some("Q11"));
/// ```
#[derive(Clone, Debug)]
pub struct MshBuilder {
    sending_application: HierarchicDesignator,
    sending_facility: HierarchicDesignator,
    receiving_application: HierarchicDesignator,
    receiving_facility: HierarchicDesignator,
    date_time: String,
    message_type: [String; 3],
    control_id: String,
    processing_id: String,
    version_id: String,
    accept_ack_type: String,
    application_ack_type: String,
    profile: [String; 2],
    /// XON.1 name and XON.10 identifier.
    responsible_sending_org: Option<[String; 2]>,
}

impl MshBuilder {
    /// A header sent at `date_time` (MSH-7, e.g. from [`timestamp`]) with control ID
    /// `control_id` (MSH-10), and the defaults above.
    pub fn new(date_time: impl Into<String>, control_id: impl Into<String>) -> Self {
        MshBuilder {
            sending_application: HierarchicDesignator::default(),
            sending_facility: HierarchicDesignator::default(),
            receiving_application: HierarchicDesignator::default(),
            receiving_facility: HierarchicDesignator::default(),
            date_time: date_time.into(),
            message_type: ["QBP".into(), "Q11".into(), "QBP_Q11".into()],
            control_id: control_id.into(),
            processing_id: "T".into(),
            version_id: "2.5.1".into(),
            accept_ack_type: "ER".into(),
            application_ack_type: "AL".into(),
            profile: ["Z34".into(), "CDCPHINVS".into()],
            responsible_sending_org: None,
        }
    }

    /// MSH-3.
    pub fn sending_application(mut self, hd: impl Into<HierarchicDesignator>) -> Self {
        self.sending_application = hd.into();
        self
    }

    /// MSH-4.
    pub fn sending_facility(mut self, hd: impl Into<HierarchicDesignator>) -> Self {
        self.sending_facility = hd.into();
        self
    }

    /// MSH-5.
    pub fn receiving_application(mut self, hd: impl Into<HierarchicDesignator>) -> Self {
        self.receiving_application = hd.into();
        self
    }

    /// MSH-6.
    pub fn receiving_facility(mut self, hd: impl Into<HierarchicDesignator>) -> Self {
        self.receiving_facility = hd.into();
        self
    }

    /// MSH-9: code, trigger event, structure (e.g. `VXU`, `V04`, `VXU_V04`).
    pub fn message_type(mut self, code: &str, trigger_event: &str, structure: &str) -> Self {
        self.message_type = [code.into(), trigger_event.into(), structure.into()];
        self
    }

    /// MSH-11: `P` production, `T` test (the default).
    pub fn processing_id(mut self, id: &str) -> Self {
        self.processing_id = id.into();
        self
    }

    /// MSH-12 (default `2.5.1`).
    pub fn version_id(mut self, id: &str) -> Self {
        self.version_id = id.into();
        self
    }

    /// MSH-21: profile identifier and namespace (e.g. `Z22`, `CDCPHINVS`).
    pub fn message_profile(mut self, id: &str, namespace: &str) -> Self {
        self.profile = [id.into(), namespace.into()];
        self
    }

    /// MSH-22, the responsible sending organisation, as its XON.1 name and XON.10 identifier.
    pub fn responsible_sending_org(mut self, name: &str, identifier: &str) -> Self {
        self.responsible_sending_org = Some([name.into(), identifier.into()]);
        self
    }

    /// The MSH segment, CR-terminated.
    pub fn build(&self) -> String {
        let d = Delimiters::STANDARD;
        let e = |v: &str| escape::encode(v, &d).into_owned();
        let join = |parts: &[&str]| {
            let used = parts
                .iter()
                .rposition(|p| !p.is_empty())
                .map_or(0, |i| i + 1);
            parts[..used]
                .iter()
                .map(|p| e(p))
                .collect::<Vec<_>>()
                .join("^")
        };
        let [code, trigger, structure] = &self.message_type;
        let message_type = join(&[code, trigger, structure]);
        let profile = join(&[&self.profile[0], &self.profile[1]]);
        let org = self
            .responsible_sending_org
            .as_ref()
            .map(|[name, identifier]| {
                let mut xon = e(name);
                if !identifier.is_empty() {
                    xon.push_str("^^^^^^^^^");
                    xon.push_str(&e(identifier));
                }
                xon
            })
            .unwrap_or_default();
        let fields = [
            "MSH".to_owned(),
            d.encoding_characters(),
            self.sending_application.to_er7(&d),
            self.sending_facility.to_er7(&d),
            self.receiving_application.to_er7(&d),
            self.receiving_facility.to_er7(&d),
            e(&self.date_time),
            String::new(),
            message_type,
            e(&self.control_id),
            e(&self.processing_id),
            e(&self.version_id),
            String::new(),
            String::new(),
            e(&self.accept_ack_type),
            e(&self.application_ack_type),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            profile,
            org,
        ];
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        let mut out = String::new();
        push_segment(&mut out, &d, &fields);
        out
    }

    /// A whole connectivity-test message, CR-terminated segments: this header as a
    /// `QBP^Q11^QBP_Q11` with profile `Z34^CDCPHINVS` (request immunization history), a QPD
    /// asking for a test patient no IIS holds (`PING^CONNECTIVITY`, born 2000-01-01, sex U,
    /// MR number `PING` assigned by the sending facility; query tag = the control ID), and an
    /// RCP for an immediate answer of at most one record.
    ///
    /// Why a query rather than a bare header: an IIS processes it end to end without storing
    /// anything and answers with an RSP (normally Z33 "no match"), which proves transport,
    /// trust, routing and the IIS's HL7 endpoint at once; a header-only message would be
    /// rejected as an unsupported structure.
    pub fn ping(&self) -> String {
        let d = Delimiters::STANDARD;
        let e = |v: &str| escape::encode(v, &d).into_owned();
        let header = self
            .clone()
            .message_type("QBP", "Q11", "QBP_Q11")
            .message_profile("Z34", "CDCPHINVS");
        let mut out = header.build();
        let patient_id = format!("PING^^^{}^MR", e(&self.sending_facility.namespace_id));
        push_segment(
            &mut out,
            &d,
            &[
                "QPD",
                "Z34^Request Immunization History^CDCPHINVS",
                &e(&self.control_id),
                &patient_id,
                "PING^CONNECTIVITY^^^^^L",
                "",
                "20000101",
                "U",
            ],
        );
        push_segment(&mut out, &d, &["RCP", "I", "1^RD&Records&HL70126"]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::parse_messages;

    fn builder() -> MshBuilder {
        MshBuilder::new("20261122073000-0500", "PING-0001")
            .sending_application("DIRECT-AGENT")
            .sending_facility(HierarchicDesignator {
                namespace_id: "DEMO-CLINIC".into(),
                universal_id: "2.16.840.1.113883.3.72.5.1".into(),
                universal_id_type: "ISO".into(),
            })
            .receiving_application("IIS")
            .receiving_facility("STATE-IIS")
    }

    #[test]
    fn builds_a_header_that_reads_back() {
        let msh = builder()
            .message_type("VXU", "V04", "VXU_V04")
            .message_profile("Z22", "CDCPHINVS")
            .processing_id("P")
            .responsible_sending_org("Demo Clinic", "DEMO-CLINIC")
            .build();
        assert_eq!(
            msh,
            "MSH|^~\\&|DIRECT-AGENT|DEMO-CLINIC^2.16.840.1.113883.3.72.5.1^ISO|IIS|STATE-IIS|\
             20261122073000-0500||VXU^V04^VXU_V04|PING-0001|P|2.5.1|||ER|AL|||||Z22^CDCPHINVS|\
             Demo Clinic^^^^^^^^^DEMO-CLINIC\r"
        );
        let messages = parse_messages(&msh).unwrap();
        let m = messages[0].msh();
        assert_eq!(
            m.sending_facility().unwrap().universal_id_type().as_deref(),
            Some("ISO")
        );
        assert_eq!(m.message_type().structure.as_deref(), Some("VXU_V04"));
        assert_eq!(
            m.responsible_sending_org()
                .unwrap()
                .component(10)
                .unwrap()
                .raw(),
            "DEMO-CLINIC"
        );
    }

    #[test]
    fn escapes_values() {
        let msh = MshBuilder::new("20261122073000-0500", "A|1")
            .sending_application("EHR^ONE")
            .build();
        assert!(msh.contains("|EHR\\S\\ONE|"), "{msh}");
        let messages = parse_messages(&msh).unwrap();
        let m = messages[0].msh();
        assert_eq!(m.control_id().as_deref(), Some("A|1"));
        let app = m.sending_application().unwrap();
        assert_eq!(app.namespace_id().as_deref(), Some("EHR^ONE"));
        assert_eq!(HierarchicDesignator::from(app).namespace_id, "EHR^ONE");
    }

    #[test]
    fn ping_is_a_query_for_a_test_patient() {
        let ping = builder().message_type("VXU", "V04", "VXU_V04").ping();
        assert!(ping.ends_with('\r'));
        let messages = parse_messages(&ping).unwrap();
        let m = &messages[0];
        let ids: Vec<_> = m.segments().map(|s| s.id()).collect();
        assert_eq!(ids, ["MSH", "QPD", "RCP"]);
        assert_eq!(m.raw("MSH-9"), Some("QBP^Q11^QBP_Q11"));
        assert_eq!(m.msh().message_profile_ids(), ["Z34"]);
        assert_eq!(m.msh().processing_id().as_deref(), Some("T"));
        assert_eq!(m.msh().version_id().as_deref(), Some("2.5.1"));
        assert_eq!(m.msh().date_time().as_deref(), Some("20261122073000-0500"));
        assert_eq!(m.get("QPD-1").as_deref(), Some("Z34"));
        assert_eq!(m.get("QPD-2").as_deref(), Some("PING-0001"));
        assert_eq!(m.get("QPD-3.4").as_deref(), Some("DEMO-CLINIC"));
        assert_eq!(m.get("QPD-4.2").as_deref(), Some("CONNECTIVITY"));
        assert_eq!(m.get("RCP-2.2.2").as_deref(), Some("Records"));
    }

    #[test]
    fn timestamps_to_the_second_with_offset() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-22T12:30:00Z").unwrap();
        let offset = chrono::FixedOffset::west_opt(5 * 3600).unwrap();
        assert_eq!(timestamp(at.into(), offset), "20261122073000-0500");
        let utc = chrono::FixedOffset::east_opt(0).unwrap();
        assert_eq!(timestamp(at.into(), utc), "20261122123000+0000");
    }
}
