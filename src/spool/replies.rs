//! Pending replies: an MDN, pong or HL7 ACK reply whose sealing failed (most often the original
//! sender's certificate could not be discovered: DNS or LDAP unreachable, a partner's record
//! missing for a while). The reply is kept here unsealed (its inner message, which for an HL7 ACK
//! is protected health information like everything else in the spool) and retried on the
//! outbound queue's schedule until its lifetime ends, instead of being logged and lost. One row
//! per notification (original message, recipient, disposition), like `notified`.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::{OutboundKind, SpoolError, SqliteSpool};

/// A reply waiting to be sealed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PendingReply {
    pub id: i64,
    pub original_message_id: String,
    /// The notification's recipient key (see [`super::tracking::NotificationKey`]).
    pub recipient: String,
    pub disposition: String,
    pub kind: OutboundKind,
    /// The envelope sender of the queued reply ("" for MDNs).
    pub mail_from: String,
    pub from_address: String,
    pub to_address: String,
    #[serde(skip)]
    pub inner_message: Vec<u8>,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub attempts: u32,
    pub last_error: String,
}

/// A reply to keep (the fields of [`PendingReply`] known before it is stored).
pub struct NewPendingReply<'a> {
    pub original_message_id: &'a str,
    pub recipient: &'a str,
    pub disposition: &'a str,
    pub kind: OutboundKind,
    pub mail_from: &'a str,
    pub from_address: &'a str,
    pub to_address: &'a str,
    pub inner_message: &'a [u8],
    pub now: i64,
    pub next_attempt_at: i64,
    pub error: &'a str,
}

const COLUMNS: &str = "id, original_message_id, recipient, disposition, kind, mail_from, from_address, to_address, inner_message, created_at, next_attempt_at, attempts, last_error";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PendingReply> {
    let kind: String = r.get(4)?;
    Ok(PendingReply {
        id: r.get(0)?,
        original_message_id: r.get(1)?,
        recipient: r.get(2)?,
        disposition: r.get(3)?,
        kind: OutboundKind::parse(&kind).unwrap_or(OutboundKind::Message),
        mail_from: r.get(5)?,
        from_address: r.get(6)?,
        to_address: r.get(7)?,
        inner_message: r.get(8)?,
        created_at: r.get(9)?,
        next_attempt_at: r.get(10)?,
        attempts: r.get::<_, i64>(11)? as u32,
        last_error: r.get(12)?,
    })
}

impl SqliteSpool {
    /// Keep a reply that could not be sealed. A reply already kept for the same notification is
    /// left as it is (`false`): it is the same reply, on its own schedule.
    pub fn keep_reply(&self, r: &NewPendingReply<'_>) -> Result<bool, SpoolError> {
        self.with(|c| {
            let n = c
                .prepare_cached(
                    "INSERT OR IGNORE INTO pending_replies (original_message_id, recipient, disposition, kind, mail_from, from_address, to_address, inner_message, created_at, next_attempt_at, last_error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?
                .execute(params![
                    r.original_message_id,
                    r.recipient.to_ascii_lowercase(),
                    r.disposition,
                    r.kind.as_str(),
                    r.mail_from,
                    r.from_address,
                    r.to_address,
                    r.inner_message,
                    r.now,
                    r.next_attempt_at,
                    r.error
                ])?;
            Ok(n == 1)
        })
    }

    /// Replies due for another attempt at `now`, oldest first, at most `limit`.
    pub fn due_replies(&self, now: i64, limit: usize) -> Result<Vec<PendingReply>, SpoolError> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM pending_replies WHERE next_attempt_at <= ?1 ORDER BY next_attempt_at, id LIMIT ?2"
            ))?
            .query_map(params![now, limit as i64], from_row)?
            .collect()
        })
    }

    /// Every kept reply, oldest first (for `queue list`).
    pub fn pending_replies(&self) -> Result<Vec<PendingReply>, SpoolError> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM pending_replies ORDER BY id"
            ))?
            .query_map([], from_row)?
            .collect()
        })
    }

    /// Another attempt failed: note why and when to try next.
    pub fn reply_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: i64,
    ) -> Result<(), SpoolError> {
        self.with(|c| {
            c.prepare_cached(
                "UPDATE pending_replies SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, error, next_attempt_at])?;
            Ok(())
        })
    }

    /// The reply was queued (or its notification was already sent, or it is given up): forget it.
    pub fn forget_reply(&self, id: i64) -> Result<bool, SpoolError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute("DELETE FROM pending_replies WHERE id = ?1", [id])?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    /// The kept reply for a notification, if any.
    pub fn pending_reply(
        &self,
        original_message_id: &str,
        recipient: &str,
        disposition: &str,
    ) -> Result<Option<PendingReply>, SpoolError> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM pending_replies WHERE original_message_id = ?1 AND recipient = ?2 AND disposition = ?3"
            ))?
            .query_row(
                params![original_message_id, recipient.to_ascii_lowercase(), disposition],
                from_row,
            )
            .optional()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply<'a>(disposition: &'a str, now: i64) -> NewPendingReply<'a> {
        NewPendingReply {
            original_message_id: "<m@hisp-a.example>",
            recipient: "IIS@hisp-b.example",
            disposition,
            kind: OutboundKind::Mdn,
            mail_from: "",
            from_address: "iis@hisp-b.example",
            to_address: "ehr@hisp-a.example",
            inner_message: b"inner MDN",
            now,
            next_attempt_at: now + 60,
            error: "no usable certificate for ehr@hisp-a.example",
        }
    }

    #[test]
    fn kept_once_per_notification_due_in_order_rescheduled_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteSpool::open(dir.path()).unwrap();
        assert!(s.keep_reply(&reply("processed", 100)).unwrap());
        assert!(
            !s.keep_reply(&reply("processed", 101)).unwrap(),
            "the same notification is kept once"
        );
        assert!(s.keep_reply(&reply("dispatched", 102)).unwrap());
        assert!(s.due_replies(159, 10).unwrap().is_empty(), "not due yet");
        let due = s.due_replies(170, 10).unwrap();
        assert_eq!(
            due.iter()
                .map(|r| r.disposition.as_str())
                .collect::<Vec<_>>(),
            ["processed", "dispatched"]
        );
        let first = &due[0];
        assert_eq!(first.kind, OutboundKind::Mdn);
        assert_eq!(first.recipient, "iis@hisp-b.example");
        assert_eq!(first.inner_message, b"inner MDN");
        assert_eq!(first.attempts, 1);
        s.reply_failed(first.id, "DNS timed out", 400).unwrap();
        let again = s
            .pending_reply("<m@hisp-a.example>", "iis@HISP-B.example", "processed")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                again.attempts,
                again.next_attempt_at,
                again.last_error.as_str()
            ),
            (2, 400, "DNS timed out")
        );
        assert_eq!(s.due_replies(170, 10).unwrap().len(), 1);
        assert!(s.forget_reply(first.id).unwrap());
        assert!(!s.forget_reply(first.id).unwrap());
        assert_eq!(s.pending_replies().unwrap().len(), 1);
    }
}
