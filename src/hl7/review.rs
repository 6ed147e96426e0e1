//! The onboarding review: many [`PayloadReport`]s (a partner's batch of test files) folded into
//! one verdict per item of Maine's message review checklist ([`ChecklistItem`]), a line per
//! message, and the details an interface analyst needs to fix what failed. Pure code, no I/O:
//! the caller reads and validates the files ([`crate::cli`]'s `hl7 review`) and writes the output.
//!
//! Three renderings of the same [`Review`]: [`render_text`] (aligned tables for a terminal),
//! JSON (`serde_json` over the derived [`Serialize`]) and [`render_html`] (one self-contained
//! page for the onboarding file). None prints a field's value: only file names, control IDs
//! (MSH-10), message types (MSH-9), rule ids, locations and the findings' texts, which name
//! fields but never their contents (payloads are protected health information).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::Severity;
use super::validate::{ChecklistItem, Finding, MessageReport, PayloadReport, Profile};

/// The verdict on one checklist item over every message reviewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ItemStatus {
    /// Applied to at least one message, and no error finding for it.
    Passed,
    /// At least one error finding for it.
    Failed,
    /// Applied, with warnings but no errors.
    Warnings,
    /// Applied to no message (e.g. the query structure in a batch of VXUs).
    NotApplicable,
}

impl ItemStatus {
    /// `passed`, `FAILED`, `warnings`, `not applicable` (failures shout in the text table).
    pub fn label(&self) -> &'static str {
        match self {
            ItemStatus::Passed => "passed",
            ItemStatus::Failed => "FAILED",
            ItemStatus::Warnings => "warnings",
            ItemStatus::NotApplicable => "not applicable",
        }
    }

    /// The CSS class of the HTML rendering.
    fn css_class(&self) -> &'static str {
        match self {
            ItemStatus::Passed => "passed",
            ItemStatus::Failed => "failed",
            ItemStatus::Warnings => "warnings",
            ItemStatus::NotApplicable => "na",
        }
    }
}

/// One finding as the review shows it (the fields of [`Finding`] a reviewer reads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FindingLine {
    /// Stable rule id, e.g. `NK1-MISSING`.
    pub rule: &'static str,
    /// `error` or `warning`.
    pub severity: &'static str,
    /// The path form (`RXA[2]-5.1`), None when the problem is an absence.
    pub location: Option<String>,
    /// What is wrong and what to do.
    pub text: String,
}

impl FindingLine {
    fn from_finding(f: &Finding) -> Self {
        FindingLine {
            rule: f.rule,
            severity: severity_name(f.severity),
            location: f.location.as_ref().map(ToString::to_string),
            text: f.text.clone(),
        }
    }
}

/// A message with error or warning findings for one checklist item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ItemMessage {
    pub file: String,
    /// 1-based index of the message in its file.
    pub index: usize,
    /// MSH-10.
    pub control_id: String,
    /// True when at least one of `findings` is an error.
    pub failed: bool,
    pub findings: Vec<FindingLine>,
}

/// One row of the checklist table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ItemReview {
    pub item: ChecklistItem,
    pub title: &'static str,
    pub status: ItemStatus,
    /// Messages the item applied to (listed in their `applicable`, or with a finding for it).
    pub applied: usize,
    /// Messages with at least one error finding for the item.
    pub failed: usize,
    /// Messages with warnings but no error for the item.
    pub warned: usize,
    /// The messages with error or warning findings for the item, in review order.
    pub messages: Vec<ItemMessage>,
}

/// One row of the per-message table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessageSummary {
    pub file: String,
    /// 1-based index of the message in its file.
    pub index: usize,
    /// MSH-10.
    pub control_id: String,
    /// MSH-9 as written.
    pub message_type: String,
    pub profile: Profile,
    /// No error findings (warnings allowed).
    pub passed: bool,
    pub errors: usize,
    pub warnings: usize,
}

/// A file that could not be read as HL7 at all (counted as one failed message).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnreadablePayload {
    pub file: String,
    /// Why, with line and offset (never the content).
    pub error: String,
}

/// The counts of the header line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub files: usize,
    /// Messages read plus unreadable payloads (each counts as one failed message).
    pub messages: usize,
    pub passed: usize,
    /// Messages with an error finding, plus unreadable payloads.
    pub failed: usize,
    pub unreadable: usize,
    /// Error findings over all messages.
    pub errors: usize,
    /// Warning findings over all messages.
    pub warnings: usize,
}

/// The onboarding review of a batch of files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Review {
    pub totals: Totals,
    /// One per [`ChecklistItem::ALL`], in that order.
    pub items: Vec<ItemReview>,
    /// Every message read, in input order.
    pub messages: Vec<MessageSummary>,
    pub unreadable: Vec<UnreadablePayload>,
}

impl Review {
    /// Fold the reports of `inputs` (file name, its report), in the order given.
    ///
    /// Information findings do not count toward any status. An item with a finding for a message
    /// counts as applied to that message even if the validator left it out of `applicable`.
    pub fn build(inputs: &[(String, PayloadReport)]) -> Review {
        let mut totals = Totals {
            files: inputs.len(),
            ..Totals::default()
        };
        let mut unreadable = Vec::new();
        let mut messages = Vec::new();
        let mut items: BTreeMap<ChecklistItem, ItemReview> = ChecklistItem::ALL
            .iter()
            .map(|&item| {
                (
                    item,
                    ItemReview {
                        item,
                        title: item.title(),
                        status: ItemStatus::NotApplicable,
                        applied: 0,
                        failed: 0,
                        warned: 0,
                        messages: Vec::new(),
                    },
                )
            })
            .collect();

        for (file, payload) in inputs {
            if let Some(e) = &payload.read_error {
                unreadable.push(UnreadablePayload {
                    file: file.clone(),
                    error: e.to_string(),
                });
                continue;
            }
            for m in &payload.messages {
                let summary = summarise(file, m);
                totals.errors += summary.errors;
                totals.warnings += summary.warnings;
                if summary.passed {
                    totals.passed += 1;
                } else {
                    totals.failed += 1;
                }
                messages.push(summary);
                for row in items.values_mut() {
                    fold_item(row, file, m);
                }
            }
        }

        totals.unreadable = unreadable.len();
        totals.failed += unreadable.len();
        totals.messages = messages.len() + unreadable.len();
        let items = ChecklistItem::ALL
            .iter()
            .filter_map(|item| items.remove(item))
            .map(|mut row| {
                row.status = if row.failed > 0 {
                    ItemStatus::Failed
                } else if row.warned > 0 {
                    ItemStatus::Warnings
                } else if row.applied > 0 {
                    ItemStatus::Passed
                } else {
                    ItemStatus::NotApplicable
                };
                row
            })
            .collect();
        Review {
            totals,
            items,
            messages,
            unreadable,
        }
    }

    /// Every message read and passed, and nothing was unreadable.
    pub fn passed(&self) -> bool {
        self.totals.failed == 0
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Information => "information",
    }
}

fn summarise(file: &str, m: &MessageReport) -> MessageSummary {
    let count = |s: Severity| m.findings.iter().filter(|f| f.severity == s).count();
    MessageSummary {
        file: file.to_owned(),
        index: m.index,
        control_id: m.control_id.clone(),
        message_type: m.message_type.clone(),
        profile: m.profile,
        passed: m.passed(),
        errors: count(Severity::Error),
        warnings: count(Severity::Warning),
    }
}

/// Count message `m` of `file` into the row of its item.
fn fold_item(row: &mut ItemReview, file: &str, m: &MessageReport) {
    let findings: Vec<&Finding> = m
        .findings
        .iter()
        .filter(|f| f.item == row.item && f.severity != Severity::Information)
        .collect();
    if !m.applicable.contains(&row.item) && findings.is_empty() {
        return;
    }
    row.applied += 1;
    if findings.is_empty() {
        return;
    }
    let failed = findings.iter().any(|f| f.severity == Severity::Error);
    if failed {
        row.failed += 1;
    } else {
        row.warned += 1;
    }
    row.messages.push(ItemMessage {
        file: file.to_owned(),
        index: m.index,
        control_id: m.control_id.clone(),
        failed,
        findings: findings
            .into_iter()
            .map(FindingLine::from_finding)
            .collect(),
    });
}

/// The review for a terminal: a header line, the checklist table, the message table, the
/// unreadable files, then the findings of every failed or warned item.
pub fn render_text(review: &Review) -> String {
    let t = &review.totals;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "HL7 onboarding review: {} file{}, {} message{}: {} passed, {} failed ({} unreadable); \
         {} error{}, {} warning{}",
        t.files,
        plural(t.files),
        t.messages,
        plural(t.messages),
        t.passed,
        t.failed,
        t.unreadable,
        t.errors,
        plural(t.errors),
        t.warnings,
        plural(t.warnings)
    );

    out.push('\n');
    let rows: Vec<Vec<String>> = review
        .items
        .iter()
        .map(|r| {
            vec![
                r.title.to_owned(),
                r.status.label().to_owned(),
                r.applied.to_string(),
                r.failed.to_string(),
                r.warned.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["Checklist item", "Status", "Applied", "Failed", "Warned"],
        &[false, false, true, true, true],
        &rows,
    ));

    if !review.messages.is_empty() {
        out.push_str("\nMessages\n");
        let rows: Vec<Vec<String>> = review
            .messages
            .iter()
            .map(|m| {
                vec![
                    printable(&m.file),
                    m.index.to_string(),
                    printable(&m.control_id),
                    printable(&m.message_type),
                    if m.passed { "pass" } else { "FAIL" }.to_owned(),
                    m.errors.to_string(),
                    m.warnings.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "File",
                "#",
                "Control ID",
                "Type",
                "Result",
                "Errors",
                "Warnings",
            ],
            &[false, true, false, false, false, true, true],
            &rows,
        ));
    }

    if !review.unreadable.is_empty() {
        out.push_str("\nUnreadable files (each counted as a failed message)\n");
        for u in &review.unreadable {
            let _ = writeln!(out, "  {}: {}", printable(&u.file), printable(&u.error));
        }
    }

    let detailed: Vec<&ItemReview> = review
        .items
        .iter()
        .filter(|r| !r.messages.is_empty())
        .collect();
    if !detailed.is_empty() {
        out.push_str("\nDetails\n");
        for r in detailed {
            let _ = writeln!(out, "\n{}: {}", r.title, r.status.label());
            for m in &r.messages {
                let _ = writeln!(
                    out,
                    "  {} message {} (control ID {})",
                    printable(&m.file),
                    m.index,
                    printable(&m.control_id)
                );
                for f in &m.findings {
                    let _ = writeln!(
                        out,
                        "    {:<7} {} at {}: {}",
                        f.severity,
                        f.rule,
                        f.location.as_deref().unwrap_or("(message)"),
                        printable(&f.text)
                    );
                }
            }
        }
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `text` with control characters replaced, so a file name or control ID cannot move the
/// terminal's cursor or change its colours.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// An aligned table: `header`, a rule, then `rows`; columns flagged in `right` are right-aligned.
fn table(header: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if right.get(i).copied().unwrap_or(false) {
                s.extend(std::iter::repeat_n(' ', pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().copied());
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    out.push_str(&line(&mut rule.iter().map(String::as_str)));
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// `text` safe inside HTML element content and double- or single-quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "\
body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}h3{font-size:1em}\
table{border-collapse:collapse;margin:.5em 0}\
th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#eee}td.n{text-align:right}\
tr.passed td.status{background:#d4edda}tr.failed td.status{background:#f8d7da;font-weight:bold}\
tr.warnings td.status{background:#fff3cd}tr.na td.status{background:#f2f2f2;color:#666}\
td.pass{background:#d4edda}td.fail{background:#f8d7da;font-weight:bold}\
code{font-family:ui-monospace,monospace}\
ul{margin:.2em 0 .8em 0}li{margin:.15em 0}";

/// The review as one self-contained HTML page (inline CSS; no script, image, font or link),
/// `generated_at` printed under the title. Every text from the review is escaped.
pub fn render_html(review: &Review, generated_at: &str) -> String {
    let t = &review.totals;
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<title>HL7 onboarding review</title>\n<style>");
    out.push_str(CSS);
    out.push_str("</style>\n</head>\n<body>\n<h1>HL7 onboarding review</h1>\n");
    let _ = writeln!(
        out,
        "<p>Generated {}. {} file{}, {} message{}: {} passed, {} failed ({} unreadable); \
         {} error{}, {} warning{}.</p>",
        escape_html(generated_at),
        t.files,
        plural(t.files),
        t.messages,
        plural(t.messages),
        t.passed,
        t.failed,
        t.unreadable,
        t.errors,
        plural(t.errors),
        t.warnings,
        plural(t.warnings)
    );

    out.push_str(
        "<h2>Checklist</h2>\n<table>\n<tr><th>Checklist item</th><th>Status</th>\
         <th>Applied</th><th>Failed</th><th>Warned</th></tr>\n",
    );
    for r in &review.items {
        let _ = writeln!(
            out,
            "<tr class=\"{}\"><td>{}</td><td class=\"status\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            r.status.css_class(),
            escape_html(r.title),
            escape_html(r.status.label()),
            r.applied,
            r.failed,
            r.warned
        );
    }
    out.push_str("</table>\n");

    if !review.messages.is_empty() {
        out.push_str(
            "<h2>Messages</h2>\n<table>\n<tr><th>File</th><th>#</th><th>Control ID</th>\
             <th>Type</th><th>Result</th><th>Errors</th><th>Warnings</th></tr>\n",
        );
        for m in &review.messages {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"n\">{}</td><td><code>{}</code></td>\
                 <td><code>{}</code></td><td class=\"{}\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td></tr>",
                escape_html(&m.file),
                m.index,
                escape_html(&m.control_id),
                escape_html(&m.message_type),
                if m.passed { "pass" } else { "fail" },
                if m.passed { "pass" } else { "FAIL" },
                m.errors,
                m.warnings
            );
        }
        out.push_str("</table>\n");
    }

    if !review.unreadable.is_empty() {
        out.push_str(
            "<h2>Unreadable files</h2>\n<p>Each is counted as a failed message.</p>\n<ul>\n",
        );
        for u in &review.unreadable {
            let _ = writeln!(
                out,
                "<li>{}: {}</li>",
                escape_html(&u.file),
                escape_html(&u.error)
            );
        }
        out.push_str("</ul>\n");
    }

    let detailed: Vec<&ItemReview> = review
        .items
        .iter()
        .filter(|r| !r.messages.is_empty())
        .collect();
    if !detailed.is_empty() {
        out.push_str("<h2>Details</h2>\n");
        for r in detailed {
            let _ = writeln!(
                out,
                "<h3>{}: {}</h3>\n<ul>",
                escape_html(r.title),
                escape_html(r.status.label())
            );
            for m in &r.messages {
                let _ = writeln!(
                    out,
                    "<li>{} message {} (control ID <code>{}</code>)\n<ul>",
                    escape_html(&m.file),
                    m.index,
                    escape_html(&m.control_id)
                );
                for f in &m.findings {
                    let _ = writeln!(
                        out,
                        "<li>{} <code>{}</code> at <code>{}</code>: {}</li>",
                        escape_html(f.severity),
                        escape_html(f.rule),
                        escape_html(f.location.as_deref().unwrap_or("(message)")),
                        escape_html(&f.text)
                    );
                }
                out.push_str("</ul></li>\n");
            }
            out.push_str("</ul>\n");
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::{ErrorCode, Hl7Error, Location};
    use ChecklistItem::*;

    fn finding(item: ChecklistItem, severity: Severity, rule: &'static str) -> Finding {
        Finding {
            rule,
            item,
            severity,
            location: Some(Location::segment("PID", 1).field(11)),
            text: format!("{rule}: fix it"),
            hl7_error_code: ErrorCode::RequiredFieldMissing,
            application_error_code: None,
        }
    }

    fn message(
        index: usize,
        control_id: &str,
        applicable: &[ChecklistItem],
        findings: Vec<Finding>,
    ) -> MessageReport {
        MessageReport {
            index,
            control_id: control_id.to_owned(),
            message_type: "VXU^V04^VXU_V04".to_owned(),
            profile: Profile::Immunization,
            applicable: applicable.to_vec(),
            findings,
        }
    }

    fn payload(messages: Vec<MessageReport>) -> PayloadReport {
        PayloadReport {
            read_error: None,
            messages,
        }
    }

    fn row(review: &Review, item: ChecklistItem) -> &ItemReview {
        review.items.iter().find(|r| r.item == item).unwrap()
    }

    /// good.hl7: one clean message; bad.hl7: a batch of two, one with an NK1 error and an
    /// address warning, one with only the address warning.
    fn sample() -> Review {
        let applied = [MessageHeader, ClientName, ClientAddress, NextOfKin, VisDate];
        Review::build(&[
            (
                "good.hl7".to_owned(),
                payload(vec![message(1, "GOOD-1", &applied, vec![])]),
            ),
            (
                "bad.hl7".to_owned(),
                payload(vec![
                    message(
                        1,
                        "BAD-1",
                        &applied,
                        vec![
                            finding(NextOfKin, Severity::Error, "NK1-MISSING"),
                            finding(ClientAddress, Severity::Warning, "PID-11-INCOMPLETE"),
                        ],
                    ),
                    message(
                        2,
                        "BAD-2",
                        &applied,
                        vec![
                            finding(ClientAddress, Severity::Warning, "PID-11-INCOMPLETE"),
                            finding(VisDate, Severity::Information, "VIS-NOTE"),
                        ],
                    ),
                ]),
            ),
        ])
    }

    #[test]
    fn statuses_follow_the_worst_finding() {
        let review = sample();
        let nk1 = row(&review, NextOfKin);
        assert_eq!(nk1.status, ItemStatus::Failed);
        assert_eq!((nk1.applied, nk1.failed, nk1.warned), (3, 1, 0));
        assert_eq!(nk1.messages.len(), 1);
        let m = &nk1.messages[0];
        assert_eq!(
            (m.file.as_str(), m.index, m.control_id.as_str()),
            ("bad.hl7", 1, "BAD-1")
        );
        assert!(m.failed);
        assert_eq!(m.findings[0].rule, "NK1-MISSING");
        assert_eq!(m.findings[0].location.as_deref(), Some("PID-11"));
        assert_eq!(m.findings[0].text, "NK1-MISSING: fix it");

        let address = row(&review, ClientAddress);
        assert_eq!(address.status, ItemStatus::Warnings);
        assert_eq!((address.applied, address.failed, address.warned), (3, 0, 2));

        // Information findings change nothing.
        let vis = row(&review, VisDate);
        assert_eq!(vis.status, ItemStatus::Passed);
        assert!(vis.messages.is_empty());
        assert_eq!(row(&review, ClientName).status, ItemStatus::Passed);
    }

    #[test]
    fn items_applied_to_no_message_are_not_applicable() {
        let review = sample();
        assert_eq!(review.items.len(), ChecklistItem::ALL.len());
        for (r, item) in review.items.iter().zip(ChecklistItem::ALL) {
            assert_eq!(r.item, item, "review order is ChecklistItem::ALL");
        }
        let q = row(&review, QueryStructure);
        assert_eq!(q.status, ItemStatus::NotApplicable);
        assert_eq!(q.applied, 0);
        // An error for an item the validator did not list still counts (and fails it).
        let review = Review::build(&[(
            "x.hl7".to_owned(),
            payload(vec![message(
                1,
                "X",
                &[],
                vec![finding(DoseAmount, Severity::Error, "RXA-7-UNITS")],
            )]),
        )]);
        assert_eq!(row(&review, DoseAmount).status, ItemStatus::Failed);
        assert_eq!(row(&review, DoseAmount).applied, 1);
    }

    #[test]
    fn messages_and_totals() {
        let review = sample();
        let t = review.totals;
        assert_eq!(
            (t.files, t.messages, t.passed, t.failed, t.unreadable),
            (2, 3, 2, 1, 0)
        );
        assert_eq!((t.errors, t.warnings), (1, 2));
        assert!(!review.passed());
        let bad = &review.messages[1];
        assert_eq!(
            (
                bad.control_id.as_str(),
                bad.passed,
                bad.errors,
                bad.warnings
            ),
            ("BAD-1", false, 1, 1)
        );
        // Warnings alone pass.
        assert!(review.messages[2].passed);
    }

    #[test]
    fn unreadable_payloads_count_as_failed_messages() {
        let review = Review::build(&[
            (
                "good.hl7".to_owned(),
                payload(vec![message(1, "GOOD-1", &[MessageHeader], vec![])]),
            ),
            (
                "empty.hl7".to_owned(),
                PayloadReport {
                    read_error: Some(Hl7Error::Empty),
                    messages: vec![],
                },
            ),
        ]);
        let t = review.totals;
        assert_eq!(
            (t.files, t.messages, t.passed, t.failed, t.unreadable),
            (2, 2, 1, 1, 1)
        );
        assert!(!review.passed());
        assert_eq!(review.unreadable[0].file, "empty.hl7");
        assert!(review.unreadable[0].error.contains("empty"));
        assert_eq!(row(&review, MessageHeader).status, ItemStatus::Passed);
        let text = render_text(&review);
        assert!(text.contains("Unreadable files"), "{text}");
        assert!(
            text.contains("empty.hl7: the HL7 payload is empty"),
            "{text}"
        );
    }

    #[test]
    fn text_is_aligned_and_lists_the_failures() {
        let text = render_text(&sample());
        assert!(text.starts_with(
            "HL7 onboarding review: 2 files, 3 messages: 2 passed, 1 failed (0 unreadable); \
             1 error, 2 warnings\n"
        ));
        for item in ChecklistItem::ALL {
            assert!(text.contains(item.title()), "{}", item.title());
        }
        // Every status starts in the same column of the checklist table.
        let checklist = text.split("\nMessages\n").next().unwrap();
        let column: Vec<usize> = checklist
            .lines()
            .filter(|l| ChecklistItem::ALL.iter().any(|i| l.starts_with(i.title())))
            .map(|l| {
                ["passed", "FAILED", "warnings", "not applicable"]
                    .iter()
                    .filter_map(|s| l.find(s))
                    .min()
                    .unwrap()
            })
            .collect();
        assert_eq!(column.len(), ChecklistItem::ALL.len());
        assert!(column.windows(2).all(|w| w[0] == w[1]), "{text}");
        assert!(text.contains("Next of kin (NK1): FAILED"), "{text}");
        assert!(
            text.contains("bad.hl7 message 1 (control ID BAD-1)"),
            "{text}"
        );
        assert!(
            text.contains("error   NK1-MISSING at PID-11: NK1-MISSING: fix it"),
            "{text}"
        );
        assert!(!text.contains("VIS-NOTE"), "{text}");
    }

    #[test]
    fn text_replaces_control_characters() {
        let review = Review::build(&[(
            "a\u{1b}[31m.hl7".to_owned(),
            payload(vec![message(1, "ID\u{1b}]0;x\u{7}", &[], vec![])]),
        )]);
        let text = render_text(&review);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
    }

    #[test]
    fn html_escapes_everything_it_prints() {
        assert_eq!(
            escape_html(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        let mut evil = finding(NextOfKin, Severity::Error, "NK1-MISSING");
        evil.text = "<script>alert(1)</script>".to_owned();
        let review = Review::build(&[(
            "<b>file</b>.hl7".to_owned(),
            payload(vec![message(1, "<i>id</i>", &[NextOfKin], vec![evil])]),
        )]);
        let html = render_html(&review, "2026-12-06 <now>");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>") && !html.contains("<i>") && !html.contains("<now>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;b&gt;file&lt;/b&gt;.hl7"));
    }

    #[test]
    fn html_is_one_self_contained_page() {
        let html = render_html(&sample(), "2026-12-06 12:00:00 +00:00");
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert_eq!(html.matches("<html").count(), 1);
        assert_eq!(html.matches("</html>").count(), 1);
        for banned in ["<script", "http", "src=", "<link", "url("] {
            assert!(!html.contains(banned), "{banned}");
        }
        for item in ChecklistItem::ALL {
            assert!(
                html.contains(&escape_html(item.title())),
                "{}",
                item.title()
            );
        }
        assert!(html.contains("<tr class=\"failed\"><td>Next of kin (NK1)</td>"));
        assert!(html.contains("<tr class=\"warnings\"><td>Client address</td>"));
        assert!(html.contains("<tr class=\"na\"><td>Query structure"));
        assert!(html.contains("Generated 2026-12-06 12:00:00 +00:00."));
        assert!(html.contains("<code>NK1-MISSING</code> at <code>PID-11</code>"));
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["totals"]["messages"], 3);
        assert_eq!(v["totals"]["failed"], 1);
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), ChecklistItem::ALL.len());
        let nk1 = items.iter().find(|i| i["item"] == "next-of-kin").unwrap();
        assert_eq!(nk1["status"], "failed");
        assert_eq!(nk1["title"], "Next of kin (NK1)");
        assert_eq!(nk1["messages"][0]["file"], "bad.hl7");
        assert_eq!(nk1["messages"][0]["control_id"], "BAD-1");
        assert_eq!(nk1["messages"][0]["findings"][0]["rule"], "NK1-MISSING");
        assert_eq!(nk1["messages"][0]["findings"][0]["severity"], "error");
        assert_eq!(nk1["messages"][0]["findings"][0]["location"], "PID-11");
        let q = items
            .iter()
            .find(|i| i["item"] == "query-structure")
            .unwrap();
        assert_eq!(q["status"], "not-applicable");
        assert_eq!(v["messages"][1]["passed"], false);
        assert_eq!(v["messages"][1]["profile"], "immunization");
        assert_eq!(v["unreadable"], serde_json::json!([]));
    }
}
