//! Failure DSNs (RFC 3464) for our local senders: when a message we sent failed or timed out for
//! a recipient, the local sender is told with a `multipart/report; report-type=delivery-status`
//! message (Implementation Guide for Delivery Notification in Direct: the sending side reports a
//! failure to its edge). It is handed to the local sinks, not sent over SMTP: the sender is ours.

use crate::clock::Clock;

use super::build::{ascii_line, field};
use crate::mime::build::random_hex;

/// One recipient the message failed for.
pub struct FailedRecipient<'a> {
    pub address: &'a str,
    /// `5.0.0` for a refusal, `4.4.7` when the notifications did not come in time.
    pub status: &'a str,
    pub diagnostic: &'a str,
}

/// The DSN message (headers and body, CRLF) and its Message-ID.
pub fn build_failure_dsn(
    original_message_id: &str,
    local_sender: &str,
    reporting_host: &str,
    recipients: &[FailedRecipient<'_>],
    clock: &dyn Clock,
) -> (Vec<u8>, String) {
    let domain = local_sender
        .rsplit_once('@')
        .map_or(reporting_host, |(_, d)| d);
    let message_id = format!("<{}@{}>", random_hex(16), ascii_line(domain, 200));
    let boundary = format!("----=_direct_dsn_{}", random_hex(12));
    let date = chrono::DateTime::<chrono::Utc>::from(clock.now()).to_rfc2822();
    let mut m = String::new();
    field(
        &mut m,
        "From",
        &format!("mailer-daemon@{}", ascii_line(domain, 200)),
    );
    field(&mut m, "To", &ascii_line(local_sender, 300));
    field(&mut m, "Date", &date);
    field(&mut m, "Message-ID", &message_id);
    field(&mut m, "Subject", "Delivery failure notification");
    field(&mut m, "In-Reply-To", &ascii_line(original_message_id, 300));
    field(&mut m, "Auto-Submitted", "auto-replied");
    field(&mut m, "MIME-Version", "1.0");
    field(
        &mut m,
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
    );
    m.push_str("\r\n");
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ));
    m.push_str(&format!(
        "Your message {} could not be confirmed as delivered to:\r\n",
        ascii_line(original_message_id, 300)
    ));
    for r in recipients {
        m.push_str(&format!(
            "  {}: {}\r\n",
            ascii_line(r.address, 300),
            ascii_line(r.diagnostic, 500)
        ));
    }
    m.push_str("\r\n");
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    field(
        &mut m,
        "Reporting-MTA",
        &format!("dns; {}", ascii_line(reporting_host, 200)),
    );
    field(
        &mut m,
        "X-Original-Message-ID",
        &ascii_line(original_message_id, 300),
    );
    for r in recipients {
        m.push_str("\r\n");
        field(
            &mut m,
            "Final-Recipient",
            &format!("rfc822; {}", ascii_line(r.address, 300)),
        );
        field(&mut m, "Action", "failed");
        field(&mut m, "Status", &ascii_line(r.status, 20));
        field(
            &mut m,
            "Diagnostic-Code",
            &format!("x-direct; {}", ascii_line(r.diagnostic, 500)),
        );
    }
    m.push_str(&format!("\r\n--{boundary}--\r\n"));
    (m.into_bytes(), message_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::mdn::{Report, parse_report};

    #[test]
    fn failure_dsn_parses_back() {
        let (dsn, id) = build_failure_dsn(
            "<m1@hisp-a.example>",
            "ehr@hisp-a.example",
            "mx.hisp-a.example",
            &[FailedRecipient {
                address: "iis@hisp-b.example",
                status: "4.4.7",
                diagnostic: "no processed MDN within 3600 s of sending",
            }],
            &FixedClock::at_unix(1_790_000_000),
        );
        assert!(id.ends_with("@hisp-a.example>"));
        let Ok(Report::Dsn(d)) = parse_report(&dsn) else {
            panic!("not read back as a DSN: {}", String::from_utf8_lossy(&dsn));
        };
        assert_eq!(
            d.original_message_id.as_deref(),
            Some("<m1@hisp-a.example>")
        );
        assert_eq!(d.recipients.len(), 1);
        assert_eq!(d.recipients[0].final_recipient, "iis@hisp-b.example");
        assert_eq!(d.recipients[0].action, "failed");
        assert_eq!(d.recipients[0].status.as_deref(), Some("4.4.7"));
    }
}
