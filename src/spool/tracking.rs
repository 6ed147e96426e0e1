//! Delivery tracking (Implementation Guide for Delivery Notification in Direct): per sent message
//! and recipient, queued → sent → processed → dispatched (complete), or failed, or timed out;
//! the MDNs we sent (so none goes twice for the same message, recipient and disposition); and the
//! pongs received for our pings.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::{NewOutbound, SpoolError, SqliteSpool};

/// The notification a queued reply is: one per original message, recipient and disposition
/// (`processed`, `dispatched`, `failed`, `pong`, `hl7-ack`).
pub struct NotificationKey<'a> {
    pub original_message_id: &'a str,
    pub recipient: &'a str,
    pub disposition: &'a str,
}

/// Where a sent message stands for one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TrackState {
    Queued,
    Sent,
    /// The processed MDN arrived; dispatched still awaited (when requested).
    Processed,
    /// Complete: processed and (when requested) dispatched.
    Complete,
    Failed,
    TimedOut,
}

impl TrackState {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackState::Queued => "queued",
            TrackState::Sent => "sent",
            TrackState::Processed => "processed",
            TrackState::Complete => "complete",
            TrackState::Failed => "failed",
            TrackState::TimedOut => "timed-out",
        }
    }
    pub fn parse(s: &str) -> TrackState {
        match s {
            "sent" => TrackState::Sent,
            "processed" => TrackState::Processed,
            "complete" => TrackState::Complete,
            "failed" => TrackState::Failed,
            "timed-out" => TrackState::TimedOut,
            _ => TrackState::Queued,
        }
    }
    /// No further change is expected.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TrackState::Complete | TrackState::Failed | TrackState::TimedOut
        )
    }
}

/// One message and recipient.
#[derive(Clone, Debug, Serialize)]
pub struct Tracked {
    pub message_id: String,
    pub recipient: String,
    /// `message` or `ping`.
    pub kind: String,
    /// The sender asked for dispatched (X-DIRECT-FINAL-DESTINATION-DELIVERY).
    pub final_destination: bool,
    pub state: TrackState,
    pub queued_at: i64,
    pub sent_at: Option<i64>,
    pub processed_at: Option<i64>,
    pub dispatched_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub timed_out_at: Option<i64>,
    pub reason: Option<String>,
    /// Notifications that changed nothing (duplicates, late arrivals), for the record.
    pub notes: Vec<String>,
    /// Our local sender (who is told of a failure).
    pub sender: String,
}

/// A pong received for one of our pings.
#[derive(Clone, Debug, Serialize)]
pub struct Pong {
    pub received_at: i64,
    pub from: String,
    /// The accepted signer's subject (the pong passed decryption, signature and trust).
    pub signer: String,
    /// The partner's HL7 ACK code for our ping (AA, AE, AR).
    pub ack_code: String,
    /// The partner's findings, one per line.
    pub report: String,
}

/// A notification about one of our messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    Processed,
    Dispatched,
    Failed,
}

/// What recording a notification did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoticeOutcome {
    /// The tracking state moved to this.
    Updated(TrackState),
    /// The same notification was recorded before: ignored.
    Duplicate,
    /// It arrived after the message timed out or failed: recorded, not passed on as success.
    Late(TrackState),
    /// No message of ours with that Message-ID and recipient.
    Unknown,
}

const COLUMNS: &str = "message_id, recipient, kind, final_destination, state, queued_at, sent_at, processed_at, dispatched_at, failed_at, timed_out_at, reason, notes, sender";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Tracked> {
    let state: String = r.get(4)?;
    let notes: String = r.get(12)?;
    Ok(Tracked {
        message_id: r.get(0)?,
        recipient: r.get(1)?,
        kind: r.get(2)?,
        final_destination: r.get::<_, i64>(3)? != 0,
        state: TrackState::parse(&state),
        queued_at: r.get(5)?,
        sent_at: r.get(6)?,
        processed_at: r.get(7)?,
        dispatched_at: r.get(8)?,
        failed_at: r.get(9)?,
        timed_out_at: r.get(10)?,
        reason: r.get(11)?,
        notes: serde_json::from_str(&notes).unwrap_or_default(),
        sender: r.get(13)?,
    })
}

fn add_note(notes: &str, note: String) -> String {
    let mut v: Vec<String> = serde_json::from_str(notes).unwrap_or_default();
    v.push(note);
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

impl SqliteSpool {
    /// Start tracking a queued message for each recipient.
    pub fn track(
        &self,
        sender: &str,
        message_id: &str,
        recipients: &[String],
        kind: &str,
        final_destination: bool,
        now: i64,
    ) -> Result<(), SpoolError> {
        self.with(|c| {
            let tx = c.transaction()?;
            for r in recipients {
                tx.execute(
                    &format!("INSERT OR IGNORE INTO tracking ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, 'queued', ?5, NULL, NULL, NULL, NULL, NULL, NULL, '[]', ?6)"),
                    params![message_id, r.to_ascii_lowercase(), kind, final_destination as i64, now, sender],
                )?;
            }
            tx.commit()
        })
    }

    /// The queue delivered `message_id` to these recipients.
    pub fn track_sent(
        &self,
        message_id: &str,
        recipients: &[String],
        now: i64,
    ) -> Result<(), SpoolError> {
        self.with(|c| {
            for r in recipients {
                c.execute(
                    "UPDATE tracking SET state = 'sent', sent_at = ?3 WHERE message_id = ?1 AND recipient = ?2 AND state = 'queued'",
                    params![message_id, r.to_ascii_lowercase(), now],
                )?;
            }
            Ok(())
        })
    }

    /// The queue gave up on `message_id` for these recipients (5xx, expired).
    pub fn track_failed(
        &self,
        message_id: &str,
        recipients: &[String],
        reason: &str,
        now: i64,
    ) -> Result<(), SpoolError> {
        self.with(|c| {
            for r in recipients {
                c.execute(
                    "UPDATE tracking SET state = 'failed', failed_at = ?3, reason = ?4 WHERE message_id = ?1 AND recipient = ?2 AND state IN ('queued', 'sent', 'processed')",
                    params![message_id, r.to_ascii_lowercase(), now, reason],
                )?;
            }
            Ok(())
        })
    }

    /// Record an MDN (or DSN) about one of our messages.
    pub fn record_notice(
        &self,
        message_id: &str,
        recipient: &str,
        notice: Notice,
        detail: &str,
        now: i64,
    ) -> Result<NoticeOutcome, SpoolError> {
        let recipient = recipient.to_ascii_lowercase();
        self.with(|c| {
            // Read, then write: IMMEDIATE takes the write lock first (waiting out `busy_timeout`).
            // A deferred transaction would read a snapshot and then fail with "database is
            // locked" when another process (`send`, the queue) committed in between, which
            // quarantined MDNs under load (found by the soak test, examples/soak.rs).
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row = tx
                .query_row(
                    &format!("SELECT {COLUMNS} FROM tracking WHERE message_id = ?1 AND recipient = ?2"),
                    params![message_id, recipient],
                    from_row,
                )
                .optional()?;
            let Some(t) = row else {
                return Ok(NoticeOutcome::Unknown);
            };
            let notes: String = tx.query_row(
                "SELECT notes FROM tracking WHERE message_id = ?1 AND recipient = ?2",
                params![message_id, recipient],
                |r| r.get(0),
            )?;
            let outcome = match notice {
                Notice::Processed if t.processed_at.is_some() => NoticeOutcome::Duplicate,
                Notice::Dispatched if t.dispatched_at.is_some() => NoticeOutcome::Duplicate,
                Notice::Failed if t.failed_at.is_some() => NoticeOutcome::Duplicate,
                // A failed MDN may overtake the processed one it follows: keep the time, the
                // message stays failed.
                Notice::Processed if t.state == TrackState::Failed => {
                    tx.execute(
                        "UPDATE tracking SET processed_at = ?3 WHERE message_id = ?1 AND recipient = ?2",
                        params![message_id, recipient, now],
                    )?;
                    NoticeOutcome::Updated(TrackState::Failed)
                }
                _ if matches!(t.state, TrackState::TimedOut | TrackState::Failed) => {
                    NoticeOutcome::Late(t.state)
                }
                Notice::Processed => {
                    let next = if t.final_destination && t.dispatched_at.is_none() {
                        TrackState::Processed
                    } else {
                        TrackState::Complete
                    };
                    tx.execute(
                        "UPDATE tracking SET state = ?3, processed_at = ?4, sent_at = coalesce(sent_at, ?4) WHERE message_id = ?1 AND recipient = ?2",
                        params![message_id, recipient, next.as_str(), now],
                    )?;
                    NoticeOutcome::Updated(next)
                }
                Notice::Dispatched => {
                    // Complete once processed is in too (a dispatched MDN may overtake it).
                    let next = if t.processed_at.is_some() {
                        TrackState::Complete
                    } else {
                        t.state
                    };
                    tx.execute(
                        "UPDATE tracking SET state = ?3, dispatched_at = ?4 WHERE message_id = ?1 AND recipient = ?2",
                        params![message_id, recipient, next.as_str(), now],
                    )?;
                    NoticeOutcome::Updated(next)
                }
                Notice::Failed => {
                    tx.execute(
                        "UPDATE tracking SET state = 'failed', failed_at = ?3, reason = ?4 WHERE message_id = ?1 AND recipient = ?2",
                        params![message_id, recipient, now, detail],
                    )?;
                    NoticeOutcome::Updated(TrackState::Failed)
                }
            };
            if matches!(outcome, NoticeOutcome::Duplicate | NoticeOutcome::Late(_)) {
                let what = match notice {
                    Notice::Processed => "processed",
                    Notice::Dispatched => "dispatched",
                    Notice::Failed => "failed",
                };
                let kind = if outcome == NoticeOutcome::Duplicate { "duplicate" } else { "late" };
                tx.execute(
                    "UPDATE tracking SET notes = ?3 WHERE message_id = ?1 AND recipient = ?2",
                    params![message_id, recipient, add_note(&notes, format!("{now}: {kind} {what} notification ignored"))],
                )?;
            }
            tx.commit()?;
            Ok(outcome)
        })
    }

    /// Time out what waited too long: processed `processed_timeout` seconds after sending,
    /// dispatched `dispatched_timeout` after processed. Returns the rows that timed out now.
    pub fn expire_tracking(
        &self,
        now: i64,
        processed_timeout: i64,
        dispatched_timeout: i64,
    ) -> Result<Vec<Tracked>, SpoolError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let due: Vec<Tracked> = {
                let mut stmt = tx.prepare(&format!(
                    "SELECT {COLUMNS} FROM tracking WHERE
                       (state = 'sent' AND sent_at + ?2 <= ?1)
                    OR (state = 'processed' AND processed_at + ?3 <= ?1)"
                ))?;
                stmt.query_map(params![now, processed_timeout, dispatched_timeout], from_row)?
                    .collect::<Result<_, _>>()?
            };
            for t in &due {
                let reason = if t.state == TrackState::Sent {
                    format!("no processed MDN within {processed_timeout} s of sending")
                } else {
                    format!("no dispatched MDN within {dispatched_timeout} s of the processed MDN")
                };
                tx.execute(
                    "UPDATE tracking SET state = 'timed-out', timed_out_at = ?3, reason = ?4 WHERE message_id = ?1 AND recipient = ?2",
                    params![t.message_id, t.recipient, now, reason],
                )?;
            }
            tx.commit()?;
            Ok(due)
        })
    }

    /// Failed or timed-out messages (kind `message`) whose local sender was not told yet.
    pub fn unnotified_failures(&self, limit: usize) -> Result<Vec<Tracked>, SpoolError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM tracking WHERE local_notified = 0 AND kind = 'message' AND state IN ('failed', 'timed-out') ORDER BY queued_at LIMIT ?1"
            ))?;
            let rows = stmt
                .query_map([limit as i64], from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// The local sender was told of this failure.
    pub fn mark_local_notified(&self, message_id: &str, recipient: &str) -> Result<(), SpoolError> {
        self.with(|c| {
            c.execute(
                "UPDATE tracking SET local_notified = 1 WHERE message_id = ?1 AND recipient = ?2",
                params![message_id, recipient],
            )?;
            Ok(())
        })
    }

    /// The tracking rows of one message, or the newest `limit` rows.
    pub fn tracking(
        &self,
        message_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Tracked>, SpoolError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM tracking WHERE (?1 IS NULL OR message_id = ?1) ORDER BY queued_at DESC, recipient LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map(params![message_id, limit as i64], from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Whether the `disposition` notification about `original_message_id` to `recipient` is
    /// already recorded (read only: see [`SqliteSpool::enqueue_once`]).
    pub fn notified(
        &self,
        original_message_id: &str,
        recipient: &str,
        disposition: &str,
    ) -> Result<bool, SpoolError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT 1 FROM notified WHERE original_message_id = ?1 AND recipient = ?2 AND disposition = ?3",
            )?
            .query_row(
                params![original_message_id, recipient.to_ascii_lowercase(), disposition],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
        })
    }

    /// Queue `msg`, a notification (MDN, pong, HL7 ACK reply), and record that it was sent, in one
    /// commit: both or neither, so a failure can neither lose the notification while recording
    /// it as sent nor send it twice. `None` (nothing queued) when it was recorded already.
    pub fn enqueue_once(
        &self,
        once: &NotificationKey<'_>,
        msg: NewOutbound<'_>,
    ) -> Result<Option<Vec<i64>>, SpoolError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let claimed = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO notified (original_message_id, recipient, disposition, at) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    once.original_message_id,
                    once.recipient.to_ascii_lowercase(),
                    once.disposition,
                    msg.now
                ])?;
            if claimed == 0 {
                return Ok(None);
            }
            let ids = super::sqlite::enqueue_in(&tx, &msg)?;
            tx.commit()?;
            Ok(Some(ids))
        })
    }

    /// How many `disposition` notifications went to `recipient` since `since` (rate limits).
    pub fn count_notifications(
        &self,
        recipient: &str,
        disposition: &str,
        since: i64,
    ) -> Result<usize, SpoolError> {
        self.with(|c| {
            c.query_row(
                "SELECT count(*) FROM notified WHERE recipient = ?1 AND disposition = ?2 AND at >= ?3",
                params![recipient.to_ascii_lowercase(), disposition, since],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
        })
    }

    /// Record a pong for one of our pings.
    pub fn record_pong(
        &self,
        ping_message_id: &str,
        from: &str,
        signer: &str,
        ack_code: &str,
        report: &str,
        now: i64,
    ) -> Result<bool, SpoolError> {
        self.with(|c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO pongs (ping_message_id, received_at, from_address, signer, ack_code, report) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![ping_message_id, now, from, signer, ack_code, report],
            )?;
            Ok(n == 1)
        })
    }

    /// The pong for a ping.
    pub fn pong(&self, ping_message_id: &str) -> Result<Option<Pong>, SpoolError> {
        self.with(|c| {
            c.query_row(
                "SELECT received_at, from_address, signer, ack_code, report FROM pongs WHERE ping_message_id = ?1",
                [ping_message_id],
                |r| {
                    Ok(Pong {
                        received_at: r.get(0)?,
                        from: r.get(1)?,
                        signer: r.get(2)?,
                        ack_code: r.get(3)?,
                        report: r.get(4)?,
                    })
                },
            )
            .optional()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool() -> (tempfile::TempDir, SqliteSpool) {
        let d = tempfile::tempdir().unwrap();
        let s = SqliteSpool::open(d.path()).unwrap();
        (d, s)
    }

    #[test]
    fn processed_then_dispatched_completes_and_duplicates_are_ignored() {
        let (_d, s) = spool();
        s.track(
            "a@x.example",
            "<m>",
            &["B@x.example".into()],
            "message",
            true,
            100,
        )
        .unwrap();
        s.track_sent("<m>", &["b@x.example".into()], 101).unwrap();
        assert_eq!(
            s.record_notice("<m>", "b@x.example", Notice::Processed, "", 102)
                .unwrap(),
            NoticeOutcome::Updated(TrackState::Processed)
        );
        assert_eq!(
            s.record_notice("<m>", "b@x.example", Notice::Processed, "", 103)
                .unwrap(),
            NoticeOutcome::Duplicate
        );
        assert_eq!(
            s.record_notice("<m>", "b@x.example", Notice::Dispatched, "", 104)
                .unwrap(),
            NoticeOutcome::Updated(TrackState::Complete)
        );
        let t = &s.tracking(Some("<m>"), 10).unwrap()[0];
        assert_eq!(
            (t.state, t.processed_at, t.dispatched_at),
            (TrackState::Complete, Some(102), Some(104))
        );
        assert_eq!(t.notes.len(), 1);
        assert_eq!(
            s.record_notice("<other>", "b@x.example", Notice::Processed, "", 105)
                .unwrap(),
            NoticeOutcome::Unknown
        );
    }

    #[test]
    fn without_final_destination_processed_completes() {
        let (_d, s) = spool();
        s.track(
            "a@x.example",
            "<m>",
            &["b@x.example".into()],
            "message",
            false,
            100,
        )
        .unwrap();
        assert_eq!(
            s.record_notice("<m>", "b@x.example", Notice::Processed, "", 102)
                .unwrap(),
            NoticeOutcome::Updated(TrackState::Complete)
        );
    }

    #[test]
    fn timeouts_and_late_dispatched() {
        let (_d, s) = spool();
        s.track(
            "a@x.example",
            "<a>",
            &["b@x.example".into()],
            "message",
            true,
            100,
        )
        .unwrap();
        s.track(
            "a@x.example",
            "<b>",
            &["b@x.example".into()],
            "message",
            true,
            100,
        )
        .unwrap();
        s.track_sent("<a>", &["b@x.example".into()], 100).unwrap();
        s.track_sent("<b>", &["b@x.example".into()], 100).unwrap();
        s.record_notice("<b>", "b@x.example", Notice::Processed, "", 110)
            .unwrap();
        assert!(s.expire_tracking(150, 60, 60).unwrap().is_empty());
        let expired = s.expire_tracking(170, 60, 60).unwrap();
        assert_eq!(
            expired.len(),
            2,
            "<a> waited for processed, <b> for dispatched"
        );
        assert_eq!(
            s.record_notice("<b>", "b@x.example", Notice::Dispatched, "", 200)
                .unwrap(),
            NoticeOutcome::Late(TrackState::TimedOut)
        );
        assert_eq!(
            s.tracking(Some("<b>"), 10).unwrap()[0].state,
            TrackState::TimedOut
        );
    }

    #[test]
    fn failed_notice_and_notification_dedupe() {
        let (_d, s) = spool();
        s.track(
            "a@x.example",
            "<m>",
            &["b@x.example".into()],
            "message",
            true,
            100,
        )
        .unwrap();
        assert_eq!(
            s.record_notice("<m>", "b@x.example", Notice::Failed, "sink refused", 101)
                .unwrap(),
            NoticeOutcome::Updated(TrackState::Failed)
        );
        assert_eq!(
            s.tracking(Some("<m>"), 1).unwrap()[0].reason.as_deref(),
            Some("sink refused")
        );
        use crate::spool::{OutboundKind, Spool};
        let mdn = |now| NewOutbound {
            kind: OutboundKind::Mdn,
            message_id: format!("<mdn-{now}>"),
            mail_from: String::new(),
            rcpt_to: vec!["a@x.example".into()],
            raw: b"sealed MDN",
            now,
            expires_at: now + 60,
        };
        let key = |recipient, disposition| NotificationKey {
            original_message_id: "<x>",
            recipient,
            disposition,
        };
        assert!(!s.notified("<x>", "b@x.example", "processed").unwrap());
        let queued = s
            .enqueue_once(&key("b@x.example", "processed"), mdn(1))
            .unwrap()
            .expect("the first processed MDN is queued");
        assert!(s.notified("<x>", "B@x.example", "processed").unwrap());
        assert_eq!(
            s.enqueue_once(&key("B@x.example", "processed"), mdn(2))
                .unwrap(),
            None,
            "a second processed MDN for the same message and recipient is not queued"
        );
        assert!(
            s.enqueue_once(&key("b@x.example", "dispatched"), mdn(3))
                .unwrap()
                .is_some()
        );
        let entries = s.list_outbound(None).unwrap();
        assert_eq!(entries.len(), 2, "one queue entry per MDN recorded");
        assert!(
            entries
                .iter()
                .any(|e| e.id == queued[0] && e.message_id == "<mdn-1>")
        );
        assert!(!entries.iter().any(|e| e.message_id == "<mdn-2>"));
    }

    /// The record and the queue entry are one commit: when queueing fails, the notification is
    /// not recorded either, so it is not taken as sent.
    #[test]
    fn a_notification_that_cannot_be_queued_is_not_recorded() {
        let (_d, s) = spool();
        s.with(|c| c.execute_batch("DROP TABLE bodies")).unwrap();
        let key = NotificationKey {
            original_message_id: "<y>",
            recipient: "b@x.example",
            disposition: "processed",
        };
        let msg = NewOutbound {
            kind: crate::spool::OutboundKind::Mdn,
            message_id: "<mdn>".into(),
            mail_from: String::new(),
            rcpt_to: vec!["a@x.example".into()],
            raw: b"sealed MDN",
            now: 1,
            expires_at: 61,
        };
        assert!(s.enqueue_once(&key, msg).is_err(), "queueing failed");
        assert!(
            !s.notified("<y>", "b@x.example", "processed").unwrap(),
            "and the MDN is not recorded as sent"
        );
    }

    /// A writer that commits while `record_notice` runs made the deferred transaction fail with
    /// "database is locked" (the MDN was quarantined); now it waits its turn.
    #[test]
    fn record_notice_waits_for_a_concurrent_writer() {
        let (d, s) = spool();
        s.track(
            "a@x.example",
            "<m>",
            &["b@x.example".into()],
            "message",
            false,
            100,
        )
        .unwrap();
        s.track_sent("<m>", &["b@x.example".into()], 101).unwrap();
        let other = rusqlite::Connection::open(d.path().join("spool.sqlite")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        other
            .execute(
                "UPDATE tracking SET notes = notes WHERE message_id = '<m>'",
                [],
            )
            .unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            other.execute_batch("COMMIT").unwrap();
        });
        let outcome = s.record_notice("<m>", "b@x.example", Notice::Processed, "", 102);
        writer.join().unwrap();
        assert_eq!(
            outcome.unwrap(),
            NoticeOutcome::Updated(TrackState::Complete)
        );
    }
}
