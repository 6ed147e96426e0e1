//! `SqliteSpool`: the embedded spool, one SQLite file `spool.sqlite` in the data directory,
//! raw messages stored in the database beside their state so one commit makes a message and its
//! envelope durable together (no file/row mismatch after a crash). Raw bytes live in their own
//! tables (`inbound_raw`, `bodies`): SQLite rewrites a whole record on every update, and state
//! changes must not copy the message each time.
//!
//! WAL mode with `synchronous=FULL`: a commit is on disk (fsynced) when it returns, which is
//! what lets the SMTP listener answer `250` and the IMAP poller set `\Seen` afterwards. `send`
//! and the running agent share the file; `busy_timeout` lets their writes take turns.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::*;

/// The spool's file name inside the data directory.
pub const SPOOL_FILE: &str = "spool.sqlite";

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS inbound (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    source          TEXT    NOT NULL,
    mail_from       TEXT    NOT NULL,
    rcpt_to         TEXT    NOT NULL,
    message_id      TEXT,
    size            INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    received_at     INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    lease_owner     INTEGER,
    reason_kind     TEXT,
    reason          TEXT,
    outcome         TEXT
);
CREATE INDEX IF NOT EXISTS inbound_due ON inbound (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS inbound_raw (
    id  INTEGER PRIMARY KEY,
    raw BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS inbound_keys (
    key        TEXT    PRIMARY KEY,
    inbound_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbound (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    domain          TEXT    NOT NULL,
    mail_from       TEXT    NOT NULL,
    rcpt_to         TEXT    NOT NULL,
    body_id         INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    lease_owner     INTEGER,
    last_error      TEXT,
    blocked_on      TEXT,
    history         TEXT    NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS outbound_due ON outbound (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbound_message ON outbound (message_id);
CREATE TABLE IF NOT EXISTS bodies (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    raw  BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS tracking (
    message_id        TEXT    NOT NULL,
    recipient         TEXT    NOT NULL,
    kind              TEXT    NOT NULL,
    final_destination INTEGER NOT NULL,
    state             TEXT    NOT NULL,
    queued_at         INTEGER NOT NULL,
    sent_at           INTEGER,
    processed_at      INTEGER,
    dispatched_at     INTEGER,
    failed_at         INTEGER,
    timed_out_at      INTEGER,
    reason            TEXT,
    notes             TEXT    NOT NULL DEFAULT '[]',
    sender            TEXT    NOT NULL DEFAULT '',
    local_notified    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, recipient)
);
CREATE INDEX IF NOT EXISTS tracking_open ON tracking (state);
CREATE TABLE IF NOT EXISTS inbound_overrides (
    inbound_id INTEGER NOT NULL,
    what       TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (inbound_id, what)
);
CREATE TABLE IF NOT EXISTS notified (
    original_message_id TEXT    NOT NULL,
    recipient           TEXT    NOT NULL,
    disposition         TEXT    NOT NULL,
    at                  INTEGER NOT NULL,
    PRIMARY KEY (original_message_id, recipient, disposition)
);
CREATE TABLE IF NOT EXISTS pongs (
    ping_message_id TEXT    PRIMARY KEY,
    received_at     INTEGER NOT NULL,
    from_address    TEXT    NOT NULL,
    signer          TEXT    NOT NULL,
    ack_code        TEXT    NOT NULL,
    report          TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_replies (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    original_message_id TEXT    NOT NULL,
    recipient           TEXT    NOT NULL,
    disposition         TEXT    NOT NULL,
    kind                TEXT    NOT NULL,
    mail_from           TEXT    NOT NULL,
    from_address        TEXT    NOT NULL,
    to_address          TEXT    NOT NULL,
    inner_message       BLOB    NOT NULL,
    created_at          INTEGER NOT NULL,
    next_attempt_at     INTEGER NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 1,
    last_error          TEXT    NOT NULL,
    UNIQUE (original_message_id, recipient, disposition)
);
CREATE TABLE IF NOT EXISTS credentials (
    name        TEXT    PRIMARY KEY,
    disabled_at INTEGER NOT NULL,
    reason      TEXT    NOT NULL
);
";

/// The SQLite spool. One connection behind a mutex; callers in async code use `spawn_blocking`.
pub struct SqliteSpool {
    path: PathBuf,
    conn: Mutex<Connection>,
    batch: Mutex<Batch>,
}

impl std::fmt::Debug for SqliteSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSpool")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> SpoolError + '_ {
    move |e| SpoolError::Database {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

const INBOUND_COLUMNS: &str = "id, source, mail_from, rcpt_to, message_id, size, state, received_at, updated_at, attempts, next_attempt_at, reason_kind, reason, outcome";
const OUTBOUND_COLUMNS: &str = "id, kind, message_id, domain, mail_from, rcpt_to, state, attempts, created_at, next_attempt_at, expires_at, last_error, blocked_on, history, body_id";

fn inbound_from_row(row: &Row<'_>) -> rusqlite::Result<InboundEntry> {
    let rcpt: String = row.get(3)?;
    let state: String = row.get(6)?;
    let outcome: Option<String> = row.get(13)?;
    Ok(InboundEntry {
        id: row.get(0)?,
        source: row.get(1)?,
        mail_from: row.get(2)?,
        rcpt_to: serde_json::from_str(&rcpt).unwrap_or_default(),
        message_id: row.get(4)?,
        size: row.get::<_, i64>(5)? as usize,
        state: InboundState::parse(&state).unwrap_or(InboundState::Received),
        received_at: row.get(7)?,
        updated_at: row.get(8)?,
        attempts: row.get::<_, i64>(9)? as u32,
        next_attempt_at: row.get(10)?,
        reason_kind: row.get(11)?,
        reason: row.get(12)?,
        outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
        raw: Vec::new(),
    })
}

fn outbound_from_row(row: &Row<'_>) -> rusqlite::Result<(OutboundEntry, i64)> {
    let kind: String = row.get(1)?;
    let rcpt: String = row.get(5)?;
    let state: String = row.get(6)?;
    let history: String = row.get(13)?;
    Ok((
        OutboundEntry {
            id: row.get(0)?,
            kind: OutboundKind::parse(&kind).unwrap_or(OutboundKind::Message),
            message_id: row.get(2)?,
            domain: row.get(3)?,
            mail_from: row.get(4)?,
            rcpt_to: serde_json::from_str(&rcpt).unwrap_or_default(),
            size: 0,
            state: OutboundState::parse(&state).unwrap_or(OutboundState::Queued),
            attempts: row.get::<_, i64>(7)? as u32,
            created_at: row.get(8)?,
            next_attempt_at: row.get(9)?,
            expires_at: row.get(10)?,
            last_error: row.get(11)?,
            blocked_on: row.get(12)?,
            history: serde_json::from_str(&history).unwrap_or_default(),
            raw: Vec::new(),
        },
        row.get(14)?,
    ))
}

/// A received message waiting for the next group commit (its bytes owned when it waits in
/// the shared batch, borrowed when the caller commits a batch of its own).
struct PendingInbound<'a> {
    source: String,
    mail_from: String,
    rcpt_to: String,
    message_id: Option<String>,
    raw: std::borrow::Cow<'a, [u8]>,
    now: i64,
    keys: Vec<String>,
}

impl<'a> PendingInbound<'a> {
    fn new(msg: &NewInbound<'_>, raw: std::borrow::Cow<'a, [u8]>) -> Self {
        PendingInbound {
            source: msg.source.describe(),
            mail_from: msg.mail_from.clone(),
            rcpt_to: serde_json::to_string(&msg.rcpt_to).unwrap_or_else(|_| "[]".into()),
            message_id: msg.message_id.clone(),
            raw,
            now: msg.now,
            keys: inbound_keys(msg),
        }
    }
}

/// Messages queued for the next group commit, and results of a commit for their callers.
#[derive(Default)]
struct Batch {
    next_ticket: u64,
    pending: Vec<(u64, PendingInbound<'static>)>,
    results: std::collections::HashMap<u64, Result<Received, SpoolError>>,
}

/// Store every message of `items` in one transaction (or find their duplicates).
fn receive_in<'i, 'a: 'i>(
    conn: &mut Connection,
    items: impl Iterator<Item = &'i PendingInbound<'a>>,
) -> rusqlite::Result<Vec<Received>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut done = Vec::new();
    for item in items {
        done.push(receive_one(&tx, item)?);
    }
    tx.commit()?;
    Ok(done)
}

/// Store one received message inside an open transaction (or find its duplicate).
fn receive_one(
    tx: &rusqlite::Transaction<'_>,
    m: &PendingInbound<'_>,
) -> rusqlite::Result<Received> {
    for k in &m.keys {
        let existing: Option<i64> = tx
            .prepare_cached("SELECT inbound_id FROM inbound_keys WHERE key = ?1")?
            .query_row([k], |r| r.get(0))
            .optional()?;
        if let Some(id) = existing {
            // Record the other keys too (an IMAP copy of a message known by Message-ID).
            for k2 in &m.keys {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO inbound_keys (key, inbound_id) VALUES (?1, ?2)",
                )?
                .execute(params![k2, id])?;
            }
            return Ok(Received::Duplicate(id));
        }
    }
    tx.prepare_cached(
        "INSERT INTO inbound (source, mail_from, rcpt_to, message_id, size, state, received_at, updated_at, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'received', ?6, ?6, ?6)",
    )?
    .execute(params![
            m.source,
            m.mail_from,
            m.rcpt_to,
            m.message_id,
            m.raw.len() as i64,
            m.now
    ])?;
    let id = tx.last_insert_rowid();
    tx.prepare_cached("INSERT INTO inbound_raw (id, raw) VALUES (?1, ?2)")?
        .execute(params![id, &m.raw[..]])?;
    for k in &m.keys {
        tx.prepare_cached("INSERT OR IGNORE INTO inbound_keys (key, inbound_id) VALUES (?1, ?2)")?
            .execute(params![k, id])?;
    }
    Ok(Received::Stored(id))
}

/// Queue `msg` inside an open transaction: its body once, one entry per recipient domain (in
/// first-seen order).
pub(super) fn enqueue_in(
    tx: &rusqlite::Transaction<'_>,
    msg: &NewOutbound<'_>,
) -> rusqlite::Result<Vec<i64>> {
    let mut by_domain: Vec<(String, Vec<String>)> = Vec::new();
    for r in &msg.rcpt_to {
        let domain = r
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('>').to_ascii_lowercase())
            .unwrap_or_default();
        match by_domain.iter_mut().find(|(d, _)| *d == domain) {
            Some((_, list)) => list.push(r.clone()),
            None => by_domain.push((domain, vec![r.clone()])),
        }
    }
    tx.prepare_cached("INSERT INTO bodies (raw) VALUES (?1)")?
        .execute([msg.raw])?;
    let body_id = tx.last_insert_rowid();
    let mut ids = Vec::new();
    for (domain, rcpts) in &by_domain {
        tx.prepare_cached(
            "INSERT INTO outbound (kind, message_id, domain, mail_from, rcpt_to, body_id, state, created_at, next_attempt_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?7, ?8)",
        )?
        .execute(params![
            msg.kind.as_str(),
            msg.message_id,
            domain,
            msg.mail_from,
            serde_json::to_string(rcpts).unwrap_or_else(|_| "[]".into()),
            body_id,
            msg.now,
            msg.expires_at
        ])?;
        ids.push(tx.last_insert_rowid());
    }
    Ok(ids)
}

/// The duplicate-detection keys of a received message.
fn inbound_keys(msg: &NewInbound<'_>) -> Vec<String> {
    let mut keys = Vec::new();
    let mut rcpts: Vec<String> = msg.rcpt_to.iter().map(|r| r.to_ascii_lowercase()).collect();
    rcpts.sort();
    rcpts.dedup();
    match &msg.source {
        Source::Imap {
            account,
            uidvalidity,
            uid,
        } => {
            keys.push(format!("imap:{account}:{uidvalidity}:{uid}"));
            if let Some(id) = &msg.message_id {
                keys.push(format!("imap-msgid:{account}:{}", id.trim()));
            }
        }
        _ => {
            if let Some(id) = &msg.message_id {
                keys.push(format!("msgid:{}:{}", id.trim(), rcpts.join(",")));
            }
        }
    }
    keys
}

impl SqliteSpool {
    /// Open (creating) the spool in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<SqliteSpool, SpoolError> {
        std::fs::create_dir_all(data_dir).map_err(|e| SpoolError::Database {
            path: data_dir.display().to_string(),
            detail: format!("cannot create the data directory: {e}"),
        })?;
        let path = data_dir.join(SPOOL_FILE);
        let err = db_err(&path);
        let conn = Connection::open(&path).map_err(&err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(&err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(&err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(&err)?;
        conn.execute_batch(SCHEMA).map_err(&err)?;
        // Every statement of the message path is prepared once per connection, not per call.
        conn.set_prepared_statement_cache_capacity(64);
        let version: Option<i64> = conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .optional()
            .map_err(&err)?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(&err)?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(SpoolError::Database {
                    path: path.display().to_string(),
                    detail: format!(
                        "written by a newer direct-agent (schema {v}, this one reads {SCHEMA_VERSION}): upgrade this binary"
                    ),
                });
            }
            Some(_) => {}
        }
        drop(err);
        Ok(SqliteSpool {
            path,
            conn: Mutex::new(conn),
            batch: Mutex::new(Batch::default()),
        })
    }

    /// Run `f` with commits that are not fsynced (`synchronous=NORMAL` in WAL mode: durable at
    /// the next fsynced commit or checkpoint, never corrupt). For leases only: a lease lost in a
    /// power cut just lets the entry be worked on again, which every step tolerates.
    fn with_lazy_commit<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, SpoolError> {
        self.with(|c| {
            c.prepare_cached("PRAGMA synchronous = NORMAL")?
                .execute([])?;
            let r = f(c);
            c.prepare_cached("PRAGMA synchronous = FULL")?.execute([])?;
            r
        })
    }

    /// Store `msgs` durably in one commit (one fsync), in order, each as [`Spool::receive`]
    /// would (duplicates recognised, also within `msgs`). For a caller that gathers the
    /// messages of many sessions itself (the agent's SMTP committer).
    pub fn receive_all(&self, msgs: &[NewInbound<'_>]) -> Vec<Result<Received, SpoolError>> {
        let items: Vec<PendingInbound<'_>> = msgs
            .iter()
            .map(|m| PendingInbound::new(m, std::borrow::Cow::Borrowed(m.raw)))
            .collect();
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        match receive_in(&mut conn, items.iter()) {
            Ok(done) => done.into_iter().map(Ok).collect(),
            Err(e) => items
                .iter()
                .map(|_| {
                    Err(SpoolError::Database {
                        path: self.path.display().to_string(),
                        detail: e.to_string(),
                    })
                })
                .collect(),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, SpoolError> {
        // A poisoned lock means a panic while holding it; the connection itself is still
        // consistent (SQLite rolls back the open transaction), so keep using it.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(db_err(&self.path))
    }

    fn load_outbound(conn: &Connection, id: i64) -> rusqlite::Result<Option<OutboundEntry>> {
        let found = conn
            .prepare_cached(&format!(
                "SELECT {OUTBOUND_COLUMNS} FROM outbound WHERE id = ?1"
            ))?
            .query_row([id], outbound_from_row)
            .optional()?;
        let Some((mut entry, body_id)) = found else {
            return Ok(None);
        };
        entry.raw = conn
            .prepare_cached("SELECT raw FROM bodies WHERE id = ?1")?
            .query_row([body_id], |r| r.get(0))?;
        entry.size = entry.raw.len();
        Ok(Some(entry))
    }

    fn list_outbound_where(
        &self,
        clause: &str,
        param: Option<&str>,
    ) -> Result<Vec<OutboundEntry>, SpoolError> {
        self.with(|c| {
            let sql = format!(
                "SELECT {OUTBOUND_COLUMNS}, (SELECT length(raw) FROM bodies WHERE bodies.id = outbound.body_id) FROM outbound {clause} ORDER BY id DESC"
            );
            let mut stmt = c.prepare(&sql)?;
            let map = |r: &Row<'_>| {
                let (mut e, _) = outbound_from_row(r)?;
                e.size = r.get::<_, Option<i64>>(15)?.unwrap_or(0) as usize;
                Ok(e)
            };
            let rows = match param {
                Some(p) => stmt.query_map([p], map)?.collect::<Result<Vec<_>, _>>()?,
                None => stmt.query_map([], map)?.collect::<Result<Vec<_>, _>>()?,
            };
            Ok(rows)
        })
    }
}

fn push_history(history: &str, attempt: &Attempt) -> String {
    let mut h: Vec<Attempt> = serde_json::from_str(history).unwrap_or_default();
    h.push(attempt.clone());
    serde_json::to_string(&h).unwrap_or_else(|_| "[]".into())
}

/// This process, as the owner of the leases it takes (`getpid` is a system call each time).
fn lease_owner() -> u32 {
    static OWNER: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *OWNER.get_or_init(std::process::id)
}

/// Lease the next inbound entry due, with its raw bytes, inside an open transaction.
fn claim_inbound_in(
    tx: &rusqlite::Transaction<'_>,
    now: i64,
    lease: i64,
) -> rusqlite::Result<Option<InboundEntry>> {
    let id: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM inbound WHERE state = 'received' AND next_attempt_at <= ?1 AND lease_until <= ?1 ORDER BY next_attempt_at, id LIMIT 1",
        )?
        .query_row([now], |r| r.get(0))
        .optional()?;
    let Some(id) = id else {
        return Ok(None);
    };
    tx.prepare_cached(
        "UPDATE inbound SET lease_until = ?2, lease_owner = ?3, attempts = attempts + 1 WHERE id = ?1",
    )?
    .execute(params![id, now + lease, lease_owner()])?;
    let mut entry = tx
        .prepare_cached(&format!(
            "SELECT {INBOUND_COLUMNS} FROM inbound WHERE id = ?1"
        ))?
        .query_row([id], inbound_from_row)?;
    entry.raw = tx
        .prepare_cached("SELECT raw FROM inbound_raw WHERE id = ?1")?
        .query_row([id], |r| r.get(0))?;
    Ok(Some(entry))
}

/// Record how processing of a leased inbound entry ended, releasing the lease.
fn finish_inbound_in(
    c: &Connection,
    id: i64,
    outcome: &InboundOutcome,
    now: i64,
) -> rusqlite::Result<()> {
    match outcome {
        InboundOutcome::Delivered { detail } => c
            .prepare_cached(
                "UPDATE inbound SET state = 'delivered', updated_at = ?2, lease_until = 0, lease_owner = NULL, reason_kind = NULL, reason = NULL, outcome = ?3 WHERE id = ?1",
            )?
            .execute(params![id, now, detail.to_string()])?,
        InboundOutcome::Quarantined { kind, reason } => c
            .prepare_cached(
                "UPDATE inbound SET state = 'quarantined', updated_at = ?2, lease_until = 0, lease_owner = NULL, reason_kind = ?3, reason = ?4 WHERE id = ?1",
            )?
            .execute(params![id, now, kind, reason])?,
        InboundOutcome::Retry {
            reason,
            next_attempt_at,
        } => c
            .prepare_cached(
                "UPDATE inbound SET updated_at = ?2, lease_until = 0, lease_owner = NULL, reason_kind = 'sink', reason = ?3, next_attempt_at = ?4 WHERE id = ?1",
            )?
            .execute(params![id, now, reason, next_attempt_at])?,
    };
    Ok(())
}

impl Spool for SqliteSpool {
    fn receive(&self, msg: NewInbound<'_>) -> Result<Received, SpoolError> {
        // Group commit: queue the message, then take the connection. Whoever holds it commits
        // everything queued so far in one transaction (one fsync for many concurrent SMTP
        // sessions); a caller whose message was in someone else's batch finds its result ready.
        let ticket = {
            let mut b = self.batch.lock().unwrap_or_else(|p| p.into_inner());
            b.next_ticket += 1;
            let t = b.next_ticket;
            let raw = std::borrow::Cow::Owned(msg.raw.to_vec());
            b.pending.push((t, PendingInbound::new(&msg, raw)));
            t
        };
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut b = self.batch.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = b.results.remove(&ticket) {
            return r;
        }
        let items = std::mem::take(&mut b.pending);
        drop(b);
        let outcome = receive_in(&mut conn, items.iter().map(|(_, item)| item))
            .map(|done| items.iter().map(|(t, _)| *t).zip(done).collect::<Vec<_>>());
        // Results are published before the connection is released: a caller that then takes the
        // connection finds its result instead of committing an empty batch.
        let mut b = self.batch.lock().unwrap_or_else(|p| p.into_inner());
        let mut mine = None;
        match outcome {
            Ok(done) => {
                for (t, r) in done {
                    if t == ticket {
                        mine = Some(Ok(r));
                    } else {
                        b.results.insert(t, Ok(r));
                    }
                }
            }
            Err(e) => {
                for (t, _) in &items {
                    let err = SpoolError::Database {
                        path: self.path.display().to_string(),
                        detail: e.to_string(),
                    };
                    if *t == ticket {
                        mine = Some(Err(err));
                    } else {
                        b.results.insert(*t, Err(err));
                    }
                }
            }
        }
        drop(b);
        drop(conn);
        mine.unwrap_or_else(|| {
            Err(SpoolError::Database {
                path: self.path.display().to_string(),
                detail: "message lost from the commit batch (a bug): retry".into(),
            })
        })
    }

    fn imap_seen(
        &self,
        account: &str,
        uidvalidity: u32,
        uid: u32,
        message_id: Option<&str>,
    ) -> Result<bool, SpoolError> {
        let mut keys = vec![format!("imap:{account}:{uidvalidity}:{uid}")];
        if let Some(id) = message_id {
            keys.push(format!("imap-msgid:{account}:{}", id.trim()));
        }
        self.with(|c| {
            for k in &keys {
                let hit: Option<i64> = c
                    .query_row(
                        "SELECT inbound_id FROM inbound_keys WHERE key = ?1",
                        [k],
                        |r| r.get(0),
                    )
                    .optional()?;
                if hit.is_some() {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    fn claim_inbound(&self, now: i64, lease: i64) -> Result<Option<InboundEntry>, SpoolError> {
        self.with_lazy_commit(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let entry = claim_inbound_in(&tx, now, lease)?;
            tx.commit()?;
            Ok(entry)
        })
    }

    fn finish_inbound(
        &self,
        id: i64,
        outcome: &InboundOutcome,
        now: i64,
    ) -> Result<(), SpoolError> {
        self.with(|c| finish_inbound_in(c, id, outcome, now))
    }

    fn finish_and_claim_inbound(
        &self,
        id: i64,
        outcome: &InboundOutcome,
        now: i64,
        lease: i64,
    ) -> Result<Option<InboundEntry>, SpoolError> {
        // One fsynced commit records the outcome and takes the next lease.
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            finish_inbound_in(&tx, id, outcome, now)?;
            let entry = claim_inbound_in(&tx, now, lease)?;
            tx.commit()?;
            Ok(entry)
        })
    }

    fn inbound(&self, id: i64) -> Result<Option<InboundEntry>, SpoolError> {
        self.with(|c| {
            let entry = c
                .query_row(
                    &format!(
                        "SELECT {INBOUND_COLUMNS}, (SELECT raw FROM inbound_raw WHERE inbound_raw.id = inbound.id) FROM inbound WHERE id = ?1"
                    ),
                    [id],
                    |r| {
                        let mut e = inbound_from_row(r)?;
                        e.raw = r.get(14)?;
                        Ok(e)
                    },
                )
                .optional()?;
            Ok(entry)
        })
    }

    fn list_inbound(&self, state: Option<InboundState>) -> Result<Vec<InboundEntry>, SpoolError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {INBOUND_COLUMNS} FROM inbound WHERE (?1 IS NULL OR state = ?1) ORDER BY id DESC"
            ))?;
            let rows = stmt
                .query_map([state.map(|s| s.as_str())], inbound_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn release(&self, id: i64, now: i64) -> Result<bool, SpoolError> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE inbound SET state = 'received', next_attempt_at = ?2, updated_at = ?2, lease_until = 0 WHERE id = ?1 AND state = 'quarantined'",
                params![id, now],
            )?;
            Ok(n > 0)
        })
    }

    fn release_overriding(&self, id: i64, what: &str, now: i64) -> Result<bool, SpoolError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE inbound SET state = 'received', next_attempt_at = ?2, updated_at = ?2, lease_until = 0 WHERE id = ?1 AND state = 'quarantined'",
                params![id, now],
            )?;
            if n > 0 {
                tx.execute(
                    "INSERT OR REPLACE INTO inbound_overrides (inbound_id, what, at) VALUES (?1, ?2, ?3)",
                    params![id, what, now],
                )?;
            }
            tx.commit()?;
            Ok(n > 0)
        })
    }

    fn overridden(&self, id: i64, what: &str) -> Result<bool, SpoolError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT 1 FROM inbound_overrides WHERE inbound_id = ?1 AND what = ?2",
                params![id, what],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
        })
    }

    fn enqueue(&self, msg: NewOutbound<'_>) -> Result<Vec<i64>, SpoolError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let ids = enqueue_in(&tx, &msg)?;
            tx.commit()?;
            Ok(ids)
        })
    }

    fn claim_outbound(
        &self,
        now: i64,
        lease: i64,
        per_domain: usize,
    ) -> Result<Option<OutboundEntry>, SpoolError> {
        self.with_lazy_commit(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let id: Option<i64> = tx
                .prepare_cached(
                    "SELECT o.id FROM outbound o
                     WHERE o.blocked_on IS NULL
                       AND ((o.state = 'queued' AND o.next_attempt_at <= ?1)
                            OR (o.state = 'sending' AND o.lease_until <= ?1))
                       AND (SELECT count(*) FROM outbound b
                            WHERE b.domain = o.domain AND b.state = 'sending' AND b.lease_until > ?1) < ?2
                     ORDER BY o.next_attempt_at, o.id LIMIT 1",
                )?
                .query_row(params![now, per_domain as i64], |r| r.get(0))
                .optional()?;
            let Some(id) = id else {
                return Ok(None);
            };
            tx.prepare_cached("UPDATE outbound SET state = 'sending', lease_until = ?2, lease_owner = ?3 WHERE id = ?1")?.execute(params![id, now + lease, lease_owner()])?;
            let entry = Self::load_outbound(&tx, id)?;
            tx.commit()?;
            Ok(entry)
        })
    }

    fn claim_outbound_id(
        &self,
        id: i64,
        now: i64,
        lease: i64,
    ) -> Result<Option<OutboundEntry>, SpoolError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx
                .prepare_cached(
                    "UPDATE outbound SET state = 'sending', lease_until = ?3, lease_owner = ?4
                 WHERE id = ?1 AND blocked_on IS NULL
                   AND (state = 'queued' OR (state = 'sending' AND lease_until <= ?2))",
                )?
                .execute(params![id, now, now + lease, lease_owner()])?;
            let entry = if n == 1 {
                Self::load_outbound(&tx, id)?
            } else {
                None
            };
            tx.commit()?;
            Ok(entry)
        })
    }

    fn recover_leases(&self, is_alive: &dyn Fn(u32) -> bool) -> Result<usize, SpoolError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut owners: Vec<i64> = Vec::new();
            for table in ["inbound", "outbound"] {
                let mut stmt = tx.prepare(&format!(
                    "SELECT DISTINCT lease_owner FROM {table} WHERE lease_owner IS NOT NULL AND lease_until > 0"
                ))?;
                owners.extend(stmt.query_map([], |r| r.get::<_, i64>(0))?.collect::<Result<Vec<_>, _>>()?);
            }
            owners.sort();
            owners.dedup();
            let mut released = 0;
            for owner in owners {
                if is_alive(owner as u32) {
                    continue;
                }
                released += tx.execute(
                    "UPDATE inbound SET lease_until = 0, lease_owner = NULL WHERE lease_owner = ?1",
                    [owner],
                )?;
                released += tx.execute(
                    "UPDATE outbound SET lease_until = 0, lease_owner = NULL, state = CASE state WHEN 'sending' THEN 'queued' ELSE state END WHERE lease_owner = ?1",
                    [owner],
                )?;
            }
            tx.commit()?;
            Ok(released)
        })
    }

    fn record_attempt(
        &self,
        id: i64,
        result: &AttemptResult,
        now: i64,
    ) -> Result<OutboundState, SpoolError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (history, expires_at): (String, i64) = tx
                .prepare_cached("SELECT history, expires_at FROM outbound WHERE id = ?1")?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let (state, attempt, next, last_error, blocked_on, counts) = match result {
                AttemptResult::Sent { detail } => (
                    OutboundState::Sent,
                    Attempt {
                        at: now,
                        outcome: "sent".into(),
                        detail: detail.clone(),
                        next_attempt_at: None,
                    },
                    now,
                    None,
                    None,
                    true,
                ),
                AttemptResult::Transient {
                    detail,
                    next_attempt_at,
                } if *next_attempt_at > expires_at => (
                    OutboundState::Failed,
                    Attempt {
                        at: now,
                        outcome: "expired".into(),
                        detail: format!(
                            "{detail}; retries stopped: the message's lifetime (smtp_out.lifetime) ends before the next attempt"
                        ),
                        next_attempt_at: None,
                    },
                    now,
                    Some(detail.clone()),
                    None,
                    true,
                ),
                AttemptResult::Transient {
                    detail,
                    next_attempt_at,
                } => (
                    OutboundState::Queued,
                    Attempt {
                        at: now,
                        outcome: "transient".into(),
                        detail: detail.clone(),
                        next_attempt_at: Some(*next_attempt_at),
                    },
                    *next_attempt_at,
                    Some(detail.clone()),
                    None,
                    true,
                ),
                AttemptResult::Permanent { detail } => (
                    OutboundState::Failed,
                    Attempt {
                        at: now,
                        outcome: "permanent".into(),
                        detail: detail.clone(),
                        next_attempt_at: None,
                    },
                    now,
                    Some(detail.clone()),
                    None,
                    true,
                ),
                AttemptResult::Blocked {
                    credential,
                    outcome,
                    detail,
                } => (
                    OutboundState::Queued,
                    Attempt {
                        at: now,
                        outcome: outcome.clone(),
                        detail: detail.clone(),
                        next_attempt_at: None,
                    },
                    now,
                    Some(detail.clone()),
                    Some(credential.clone()),
                    outcome == "auth-rejected",
                ),
            };
            tx.prepare_cached("UPDATE outbound SET state = ?2, attempts = attempts + ?3, next_attempt_at = ?4, lease_until = 0, lease_owner = NULL, last_error = ?5, blocked_on = ?6, history = ?7 WHERE id = ?1")?.execute(params![
                    id,
                    state.as_str(),
                    counts as i64,
                    next,
                    last_error,
                    blocked_on,
                    push_history(&history, &attempt)
                ])?;
            tx.commit()?;
            Ok(state)
        })
    }

    fn outbound(&self, id: i64) -> Result<Option<OutboundEntry>, SpoolError> {
        self.with(|c| Self::load_outbound(c, id))
    }

    fn list_outbound(
        &self,
        state: Option<OutboundState>,
    ) -> Result<Vec<OutboundEntry>, SpoolError> {
        match state {
            Some(s) => self.list_outbound_where("WHERE state = ?1", Some(s.as_str())),
            None => self.list_outbound_where("", None),
        }
    }

    fn outbound_by_message_id(&self, message_id: &str) -> Result<Vec<OutboundEntry>, SpoolError> {
        self.list_outbound_where("WHERE message_id = ?1", Some(message_id))
    }

    fn retry(&self, id: i64, now: i64) -> Result<bool, SpoolError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let history: Option<String> = tx
                .query_row(
                    "SELECT history FROM outbound WHERE id = ?1 AND state IN ('queued', 'failed') AND blocked_on IS NULL",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(history) = history else {
                return Ok(false);
            };
            let attempt = Attempt {
                at: now,
                outcome: "retry".into(),
                detail: "operator asked for a retry (queue retry)".into(),
                next_attempt_at: Some(now),
            };
            tx.execute(
                "UPDATE outbound SET state = 'queued', next_attempt_at = ?2, expires_at = max(expires_at, ?2 + 3600), history = ?3 WHERE id = ?1",
                params![id, now, push_history(&history, &attempt)],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn drop_entry(&self, id: i64, now: i64) -> Result<bool, SpoolError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let history: Option<String> = tx
                .query_row(
                    "SELECT history FROM outbound WHERE id = ?1 AND state IN ('queued', 'failed')",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(history) = history else {
                return Ok(false);
            };
            let attempt = Attempt {
                at: now,
                outcome: "dropped".into(),
                detail: "dropped by an operator (queue drop)".into(),
                next_attempt_at: None,
            };
            tx.execute(
                "UPDATE outbound SET state = 'dropped', blocked_on = NULL, history = ?2 WHERE id = ?1",
                params![id, push_history(&history, &attempt)],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn queue_depth(&self) -> Result<(usize, Option<i64>), SpoolError> {
        self.with(|c| {
            c.query_row(
                "SELECT count(*), min(created_at) FROM outbound WHERE state IN ('queued', 'sending')",
                [],
                |r| Ok((r.get::<_, i64>(0)? as usize, r.get(1)?)),
            )
        })
    }

    fn disable_credential(&self, name: &str, reason: &str, now: i64) -> Result<(), SpoolError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO credentials (name, disabled_at, reason) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
                params![name, now, reason],
            )?;
            Ok(())
        })
    }

    fn disabled_credential(&self, name: &str) -> Result<Option<DisabledCredential>, SpoolError> {
        self.with(|c| {
            c.query_row(
                "SELECT name, disabled_at, reason FROM credentials WHERE name = ?1",
                [name],
                |r| {
                    Ok(DisabledCredential {
                        name: r.get(0)?,
                        disabled_at: r.get(1)?,
                        reason: r.get(2)?,
                    })
                },
            )
            .optional()
        })
    }

    fn disabled_credentials(&self) -> Result<Vec<DisabledCredential>, SpoolError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT name, disabled_at, reason FROM credentials ORDER BY name")?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(DisabledCredential {
                        name: r.get(0)?,
                        disabled_at: r.get(1)?,
                        reason: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn reset_credential(&self, name: &str, now: i64) -> Result<bool, SpoolError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute("DELETE FROM credentials WHERE name = ?1", [name])?;
            tx.execute(
                "UPDATE outbound SET blocked_on = NULL, next_attempt_at = ?2 WHERE blocked_on = ?1 AND state = 'queued'",
                params![name, now],
            )?;
            // Received messages waiting for a sink's credential: their retry reason names it
            // (`credential NAME is disabled` / `credential NAME refused`, agent::inbound).
            tx.execute(
                "UPDATE inbound SET next_attempt_at = ?2 WHERE state = 'received' AND reason_kind = 'sink' AND instr(reason, 'credential ' || ?1 || ' ') > 0",
                params![name, now],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool() -> (tempfile::TempDir, SqliteSpool) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteSpool::open(dir.path()).unwrap();
        (dir, s)
    }

    fn smtp_msg<'a>(id: Option<&str>, raw: &'a [u8]) -> NewInbound<'a> {
        NewInbound {
            source: Source::Smtp {
                peer: "127.0.0.1:1".into(),
                helo: "peer".into(),
                tls: false,
            },
            mail_from: "a@hisp-a.example".into(),
            rcpt_to: vec!["b@hisp-b.example".into()],
            message_id: id.map(str::to_string),
            raw,
            now: 100,
        }
    }

    #[test]
    fn inbound_duplicates_by_message_id_and_recipients() {
        let (_d, s) = spool();
        let first = s.receive(smtp_msg(Some("<1@a>"), b"x")).unwrap();
        assert!(matches!(first, Received::Stored(_)));
        assert_eq!(
            s.receive(smtp_msg(Some("<1@a>"), b"x")).unwrap(),
            Received::Duplicate(first.id())
        );
        let mut other = smtp_msg(Some("<1@a>"), b"x");
        other.rcpt_to = vec!["c@hisp-b.example".into()];
        assert!(matches!(s.receive(other).unwrap(), Received::Stored(_)));
        // Without a Message-ID nothing can be recognised: both are kept.
        assert!(matches!(
            s.receive(smtp_msg(None, b"y")).unwrap(),
            Received::Stored(_)
        ));
        assert!(matches!(
            s.receive(smtp_msg(None, b"y")).unwrap(),
            Received::Stored(_)
        ));
        assert_eq!(s.list_inbound(None).unwrap().len(), 4);
    }

    #[test]
    fn imap_keys_recognise_uid_and_message_id() {
        let (_d, s) = spool();
        let m = |uid, id: &str| NewInbound {
            source: Source::Imap {
                account: "acct".into(),
                uidvalidity: 7,
                uid,
            },
            mail_from: String::new(),
            rcpt_to: vec![],
            message_id: Some(id.into()),
            raw: b"m",
            now: 1,
        };
        assert!(!s.imap_seen("acct", 7, 1, None).unwrap());
        let id = s.receive(m(1, "<a@x>")).unwrap().id();
        assert!(s.imap_seen("acct", 7, 1, None).unwrap());
        assert!(s.imap_seen("acct", 8, 99, Some("<a@x>")).unwrap());
        assert_eq!(s.receive(m(2, "<a@x>")).unwrap(), Received::Duplicate(id));
        assert!(!s.imap_seen("other", 7, 1, None).unwrap());
    }

    #[test]
    fn inbound_claim_lease_and_finish() {
        let (_d, s) = spool();
        let id = s.receive(smtp_msg(Some("<1@a>"), b"raw")).unwrap().id();
        let e = s.claim_inbound(100, 60).unwrap().unwrap();
        assert_eq!((e.id, e.raw.as_slice(), e.attempts), (id, &b"raw"[..], 1));
        // Leased: not claimable again until the lease ends (a crashed worker's entry returns).
        assert!(s.claim_inbound(120, 60).unwrap().is_none());
        let again = s.claim_inbound(161, 60).unwrap().unwrap();
        assert_eq!((again.id, again.attempts), (id, 2));
        s.finish_inbound(
            id,
            &InboundOutcome::Quarantined {
                kind: "trust".into(),
                reason: "untrusted".into(),
            },
            170,
        )
        .unwrap();
        assert!(s.claim_inbound(10_000, 60).unwrap().is_none());
        let q = s.list_inbound(Some(InboundState::Quarantined)).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].reason.as_deref(), Some("untrusted"));
        assert!(s.release(id, 200).unwrap());
        assert!(
            !s.release(id, 200).unwrap(),
            "only quarantined entries are released"
        );
        assert_eq!(s.claim_inbound(200, 60).unwrap().unwrap().id, id);
    }

    #[test]
    fn a_batch_is_stored_in_order_with_duplicates_recognised_within_it() {
        let (_d, s) = spool();
        let earlier = s.receive(smtp_msg(Some("<0@a>"), b"zero")).unwrap().id();
        let batch = [
            smtp_msg(Some("<1@a>"), b"one"),
            smtp_msg(Some("<0@a>"), b"zero again"),
            smtp_msg(Some("<1@a>"), b"one again"),
            smtp_msg(None, b"no id"),
        ];
        let r: Vec<Received> = s
            .receive_all(&batch)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let Received::Stored(one) = r[0] else {
            panic!("{r:?}")
        };
        assert_eq!(r[1], Received::Duplicate(earlier));
        assert_eq!(r[2], Received::Duplicate(one));
        assert!(matches!(r[3], Received::Stored(n) if n > one));
        assert_eq!(s.list_inbound(None).unwrap().len(), 3);
        let first = s.claim_inbound(100, 60).unwrap().unwrap();
        assert_eq!((first.id, first.raw.as_slice()), (earlier, &b"zero"[..]));
        assert!(s.receive_all(&[]).is_empty());
    }

    #[test]
    fn finishing_an_entry_leases_the_next_in_the_same_commit() {
        let (_d, s) = spool();
        let first = s.receive(smtp_msg(Some("<1@a>"), b"one")).unwrap().id();
        let second = s.receive(smtp_msg(Some("<2@a>"), b"two")).unwrap().id();
        let e = s.claim_inbound(100, 60).unwrap().unwrap();
        assert_eq!(e.id, first);
        let delivered = InboundOutcome::Delivered {
            detail: serde_json::json!({"sinks": ["x"]}),
        };
        let next = s
            .finish_and_claim_inbound(first, &delivered, 110, 60)
            .unwrap()
            .unwrap();
        assert_eq!(
            (next.id, next.raw.as_slice(), next.attempts),
            (second, &b"two"[..], 1)
        );
        let done = s.inbound(first).unwrap().unwrap();
        assert_eq!(done.state, InboundState::Delivered);
        assert_eq!(done.outcome, Some(serde_json::json!({"sinks": ["x"]})));
        // The second is leased by that commit: nobody else gets it.
        assert!(s.claim_inbound(120, 60).unwrap().is_none());
        // Nothing left: the outcome is still recorded.
        assert!(
            s.finish_and_claim_inbound(second, &delivered, 130, 60)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            s.inbound(second).unwrap().unwrap().state,
            InboundState::Delivered
        );
    }

    fn queue(s: &SqliteSpool, rcpts: &[&str]) -> Vec<i64> {
        s.enqueue(NewOutbound {
            kind: OutboundKind::Message,
            message_id: "<m@a>".into(),
            mail_from: "a@hisp-a.example".into(),
            rcpt_to: rcpts.iter().map(|r| r.to_string()).collect(),
            raw: b"sealed",
            now: 1000,
            expires_at: 1000 + 86_400,
        })
        .unwrap()
    }

    #[test]
    fn outbound_one_entry_per_domain_and_per_domain_limit() {
        let (_d, s) = spool();
        let ids = queue(
            &s,
            &["b@hisp-b.example", "c@HISP-B.example", "d@hisp-c.example"],
        );
        assert_eq!(ids.len(), 2);
        let e = s.outbound(ids[0]).unwrap().unwrap();
        assert_eq!(e.rcpt_to.len(), 2);
        assert_eq!(e.raw, b"sealed");
        queue(&s, &["x@hisp-b.example"]);
        // per_domain = 1: one hisp-b entry in flight blocks the other hisp-b entry.
        let a = s.claim_outbound(1000, 60, 1).unwrap().unwrap();
        let b = s.claim_outbound(1000, 60, 1).unwrap().unwrap();
        assert_ne!(a.domain, b.domain);
        assert!(s.claim_outbound(1000, 60, 1).unwrap().is_none());
        s.record_attempt(
            a.id,
            &AttemptResult::Sent {
                detail: "250".into(),
            },
            1001,
        )
        .unwrap();
        let c = s.claim_outbound(1002, 60, 1).unwrap().unwrap();
        assert_eq!(c.domain, "hisp-b.example");
    }

    #[test]
    fn outbound_transient_then_expiry_and_operator_actions() {
        let (_d, s) = spool();
        let id = queue(&s, &["b@hisp-b.example"])[0];
        let e = s.claim_outbound(1000, 60, 4).unwrap().unwrap();
        let st = s
            .record_attempt(
                e.id,
                &AttemptResult::Transient {
                    detail: "451 try later".into(),
                    next_attempt_at: 1100,
                },
                1000,
            )
            .unwrap();
        assert_eq!(st, OutboundState::Queued);
        assert!(s.claim_outbound(1099, 60, 4).unwrap().is_none());
        let e = s.claim_outbound(1100, 60, 4).unwrap().unwrap();
        let st = s
            .record_attempt(
                e.id,
                &AttemptResult::Transient {
                    detail: "451 try later".into(),
                    next_attempt_at: 1000 + 86_401,
                },
                1100,
            )
            .unwrap();
        assert_eq!(st, OutboundState::Failed, "past the lifetime: failed");
        let e = s.outbound(id).unwrap().unwrap();
        assert_eq!(e.attempts, 2);
        assert_eq!(
            e.history
                .iter()
                .map(|a| a.outcome.as_str())
                .collect::<Vec<_>>(),
            ["transient", "expired"]
        );
        assert!(s.retry(id, 2000).unwrap());
        assert_eq!(s.claim_outbound(2000, 60, 4).unwrap().unwrap().id, id);
        s.record_attempt(
            id,
            &AttemptResult::Permanent {
                detail: "550 no".into(),
            },
            2001,
        )
        .unwrap();
        assert!(s.drop_entry(id, 2002).unwrap());
        assert_eq!(
            s.outbound(id).unwrap().unwrap().state,
            OutboundState::Dropped
        );
        assert!(!s.retry(id, 2003).unwrap());
    }

    #[test]
    fn leases_of_dead_processes_are_recovered() {
        let (_d, s) = spool();
        let id = queue(&s, &["b@hisp-b.example"])[0];
        s.receive(smtp_msg(Some("<1@a>"), b"raw")).unwrap();
        assert!(s.claim_outbound(1000, 900, 4).unwrap().is_some());
        assert!(s.claim_inbound(1000, 900).unwrap().is_some());
        // Our own process is alive: nothing is released.
        assert_eq!(s.recover_leases(&|_| true).unwrap(), 0);
        assert!(s.claim_outbound(1001, 900, 4).unwrap().is_none());
        // After a crash the owner is gone: both entries are claimable at once.
        assert_eq!(s.recover_leases(&|_| false).unwrap(), 2);
        assert_eq!(
            s.outbound(id).unwrap().unwrap().state,
            OutboundState::Queued
        );
        assert!(s.claim_outbound(1001, 900, 4).unwrap().is_some());
        assert!(s.claim_inbound(1001, 900).unwrap().is_some());
    }

    #[test]
    fn blocked_entries_wait_for_credential_reset() {
        let (_d, s) = spool();
        let id = queue(&s, &["b@hisp-b.example"])[0];
        s.claim_outbound(1000, 60, 4).unwrap().unwrap();
        s.disable_credential("smtp:hisp-b.example", "535 bad", 1000)
            .unwrap();
        s.record_attempt(
            id,
            &AttemptResult::Blocked {
                credential: "smtp:hisp-b.example".into(),
                outcome: "auth-rejected".into(),
                detail: "535 bad".into(),
            },
            1000,
        )
        .unwrap();
        assert!(s.claim_outbound(1_000_000, 60, 4).unwrap().is_none());
        assert_eq!(s.disabled_credentials().unwrap().len(), 1);
        assert!(s.reset_credential("smtp:hisp-b.example", 2000).unwrap());
        assert!(!s.reset_credential("smtp:hisp-b.example", 2000).unwrap());
        assert!(
            s.disabled_credential("smtp:hisp-b.example")
                .unwrap()
                .is_none()
        );
        assert_eq!(s.claim_outbound(2000, 60, 4).unwrap().unwrap().id, id);
    }
}
