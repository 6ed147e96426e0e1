//! What the operations endpoint asks of the spool: a trivial query (readiness) and the size of
//! the quarantine (a gauge).

use super::{SpoolError, SqliteSpool};

impl SqliteSpool {
    /// Run a trivial query: the database answers.
    pub fn ping(&self) -> Result<(), SpoolError> {
        self.with(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
            .map(|_| ())
    }

    /// Inbound messages in quarantine.
    pub fn quarantine_size(&self) -> Result<u64, SpoolError> {
        self.with(|c| {
            c.query_row(
                "SELECT count(*) FROM inbound WHERE state = 'quarantined'",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use crate::spool::{InboundOutcome, NewInbound, Source, Spool, SqliteSpool};

    #[test]
    fn ping_answers_and_quarantine_size_counts_quarantined_entries() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SqliteSpool::open(dir.path()).unwrap();
        spool.ping().unwrap();
        assert_eq!(spool.quarantine_size().unwrap(), 0);
        for i in 0..2 {
            spool
                .receive(NewInbound {
                    source: Source::Smtp {
                        peer: "127.0.0.1:1".into(),
                        helo: "x".into(),
                        tls: false,
                    },
                    mail_from: "a@a.example".into(),
                    rcpt_to: vec!["b@b.example".into()],
                    message_id: Some(format!("<{i}@a.example>")),
                    raw: b"Subject: x\r\n\r\nbody\r\n",
                    now: 1,
                })
                .unwrap();
        }
        let e = spool.claim_inbound(2, 60).unwrap().unwrap();
        let outcome = InboundOutcome::Quarantined {
            kind: "trust".into(),
            reason: "untrusted".into(),
        };
        spool.finish_inbound(e.id, &outcome, 3).unwrap();
        assert_eq!(spool.quarantine_size().unwrap(), 1);
    }
}
