//! The spool committer: one thread that stores what the SMTP sessions receive.
//!
//! Each session hands its message over a channel and waits for the answer; the thread takes
//! every message waiting (at most [`MAX_COMMIT_BATCH`]), stores them in one transaction (one
//! fsync, `SqliteSpool::receive_all`) and answers each. So there is no blocking-pool task per
//! message and no sessions queuing on the spool's one connection, and a session still answers
//! 250 only after its message is durably stored.

use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::clock::{Clock, SystemClock};
use crate::spool::SqliteSpool;
use crate::spool::{NewInbound, Received, Source, SpoolError};
use crate::transport::smtp_in::ReceivedEnvelope;

/// Most messages stored in one commit.
pub const MAX_COMMIT_BATCH: usize = 256;

/// A message an SMTP session waits to see stored.
struct StoreJob {
    envelope: ReceivedEnvelope,
    message_id: Option<String>,
    raw: Vec<u8>,
    stored: oneshot::Sender<Result<Received, String>>,
}

/// The sending side; the thread ends when it is dropped.
pub struct Committer {
    jobs: mpsc::Sender<StoreJob>,
}

impl Committer {
    /// Start the thread storing into `spool`. If it cannot start, every store is answered with
    /// an error (a 451 to the client); nothing is lost.
    pub fn start(spool: Arc<SqliteSpool>) -> Committer {
        let (jobs_in, jobs) = mpsc::channel::<StoreJob>();
        let spawned = std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || run(&spool, &jobs));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the spool committer thread");
        }
        Committer { jobs: jobs_in }
    }

    /// Store a message received over SMTP; the answer comes once it is durably stored.
    pub async fn store(
        &self,
        envelope: ReceivedEnvelope,
        message_id: Option<String>,
        raw: Vec<u8>,
    ) -> Result<Received, String> {
        let (stored, answer) = oneshot::channel();
        self.jobs
            .send(StoreJob {
                envelope,
                message_id,
                raw,
                stored,
            })
            .map_err(|_| "the spool committer is not running".to_string())?;
        answer
            .await
            .map_err(|_| "the spool committer stopped before storing the message".to_string())?
    }
}

fn run(spool: &SqliteSpool, jobs: &mpsc::Receiver<StoreJob>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_COMMIT_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let now = SystemClock.unix_seconds();
        let msgs: Vec<NewInbound<'_>> = batch
            .iter()
            .map(|job| NewInbound {
                source: Source::Smtp {
                    peer: job.envelope.peer.to_string(),
                    helo: job.envelope.helo.clone(),
                    tls: job.envelope.tls,
                },
                mail_from: job.envelope.mail_from.clone(),
                rcpt_to: job.envelope.rcpt_to.clone(),
                message_id: job.message_id.clone(),
                raw: &job.raw,
                now,
            })
            .collect();
        // A panic here (a bug) fails this batch with a 451, not every later one.
        let results =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| spool.receive_all(&msgs)))
                .unwrap_or_else(|_| {
                    tracing::error!(
                        messages = msgs.len(),
                        "the spool commit panicked; the senders are told to retry"
                    );
                    msgs.iter()
                        .map(|_| {
                            Err(SpoolError::Database {
                                path: spool.path().display().to_string(),
                                detail: "the commit failed unexpectedly: retry".into(),
                            })
                        })
                        .collect()
                });
        drop(msgs);
        for (job, result) in batch.into_iter().zip(results) {
            // A session that went away (timeout, shutdown) has nobody to answer.
            let _ = job.stored.send(result.map_err(|e| e.to_string()));
        }
    }
}
