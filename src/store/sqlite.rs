//! `SqliteStore`: the embedded trust store, one SQLite file `trust.sqlite` in the data directory.
//!
//! The database runs in WAL mode with `synchronous=FULL`, so an anchor change that was reported
//! survives a power cut, and readers (the agent) never block the writer (the CLI). The schema is
//! created on open and versioned in `schema_version`; a file written by a newer agent is refused
//! rather than guessed at.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{AnchorRecord, BundleRecord, CachedBlob, Direction, StoreError, TrustStore};

/// The database file's name inside the data directory.
pub const STORE_FILE: &str = "trust.sqlite";

/// The schema this code writes and reads.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS anchors (
    domain      TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    der         BLOB    NOT NULL,
    direction   TEXT    NOT NULL CHECK (direction IN ('incoming', 'outgoing', 'both')),
    source      TEXT    NOT NULL,
    added_at    INTEGER NOT NULL,
    PRIMARY KEY (domain, fingerprint)
);
CREATE INDEX IF NOT EXISTS anchors_source ON anchors (source);
CREATE TABLE IF NOT EXISTS bundles (
    name         TEXT    PRIMARY KEY,
    domain       TEXT    NOT NULL,
    direction    TEXT    NOT NULL CHECK (direction IN ('incoming', 'outgoing', 'both')),
    location     TEXT    NOT NULL,
    refresh_secs INTEGER NOT NULL,
    signer_der   BLOB,
    checksum     TEXT,
    last_refresh INTEGER,
    last_error   TEXT
);
CREATE TABLE IF NOT EXISTS cache (
    url        TEXT    PRIMARY KEY,
    data       BLOB    NOT NULL,
    fetched_at INTEGER NOT NULL,
    until      INTEGER NOT NULL
);
";

/// The SQLite trust store. One connection behind a mutex: the store is small and its writes are
/// rare (administrator commands, bundle refreshes, CRL fetches), so a pool would buy nothing.
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Domain names are stored lower case and without a trailing dot.
fn normalize_domain(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The `source` of anchors that came from bundle `name`.
pub fn bundle_source(name: &str) -> String {
    format!("bundle:{name}")
}

fn direction_from_sql(s: &str) -> Direction {
    // The CHECK constraint keeps other values out; widest reading if one slips in anyway.
    Direction::parse(s).unwrap_or(Direction::Both)
}

fn widen(a: Direction, b: Direction) -> Direction {
    if a == b { a } else { Direction::Both }
}

impl SqliteStore {
    /// Open (creating if needed) `<data_dir>/trust.sqlite`, creating `data_dir` too.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Database {
            path: data_dir.display().to_string(),
            detail: format!("cannot create the data directory: {e}"),
        })?;
        SqliteStore::open_file(&data_dir.join(STORE_FILE))
    }

    /// Open (creating if needed) the database at `path`.
    pub fn open_file(path: &Path) -> Result<SqliteStore, StoreError> {
        let db = |e: rusqlite::Error| StoreError::Database {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let mut conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(db)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database {
                path: path.display().to_string(),
                detail: format!(
                    "cannot switch to WAL journaling (got {mode}); is the file on a network filesystem?"
                ),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", true).map_err(db)?;
        {
            let tx = conn.transaction().map_err(db)?;
            tx.execute_batch(SCHEMA).map_err(db)?;
            let version: Option<i64> = tx
                .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
                .map_err(db)?;
            match version {
                None => {
                    tx.execute(
                        "INSERT INTO schema_version (version) VALUES (?1)",
                        [SCHEMA_VERSION],
                    )
                    .map_err(db)?;
                }
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::Database {
                        path: path.display().to_string(),
                        detail: format!(
                            "schema version {v} was written by a newer direct-agent (this one knows {SCHEMA_VERSION}); upgrade direct-agent"
                        ),
                    });
                }
                Some(_) => {}
            }
            tx.commit().map_err(db)?;
        }
        Ok(SqliteStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError::Database {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        }
    }

    /// A number that changes whenever another connection (an `anchors`/`bundles` command)
    /// committed to the store, or this one wrote anchors: cached anchor sets compare it.
    pub fn version(&self) -> Result<i64, StoreError> {
        let conn = self.lock()?;
        let data_version: i64 = conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(data_version * 1_000_000 + conn.total_changes() as i64 % 1_000_000)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Database {
            path: self.path.display().to_string(),
            detail: "the connection lock was poisoned by a panic in another thread".into(),
        })
    }
}

fn anchor_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AnchorRecord> {
    let direction: String = r.get(3)?;
    Ok(AnchorRecord {
        domain: r.get(0)?,
        fingerprint: r.get(1)?,
        der: r.get(2)?,
        direction: direction_from_sql(&direction),
        source: r.get(4)?,
        added_at: r.get(5)?,
    })
}

fn bundle_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BundleRecord> {
    let direction: String = r.get(2)?;
    let refresh: i64 = r.get(4)?;
    Ok(BundleRecord {
        name: r.get(0)?,
        domain: r.get(1)?,
        direction: direction_from_sql(&direction),
        location: r.get(3)?,
        refresh_secs: refresh.max(0) as u64,
        signer_der: r.get(5)?,
        checksum: r.get(6)?,
        last_refresh: r.get(7)?,
        last_error: r.get(8)?,
    })
}

/// Insert or widen one anchor inside a transaction; returns whether it was new.
fn add_anchor_tx(tx: &rusqlite::Transaction<'_>, a: &AnchorRecord) -> rusqlite::Result<bool> {
    let domain = normalize_domain(&a.domain);
    let existing: Option<String> = tx
        .query_row(
            "SELECT direction FROM anchors WHERE domain = ?1 AND fingerprint = ?2",
            params![domain, a.fingerprint],
            |r| r.get(0),
        )
        .optional()?;
    match existing {
        Some(d) => {
            let wider = widen(direction_from_sql(&d), a.direction);
            tx.execute(
                "UPDATE anchors SET direction = ?3 WHERE domain = ?1 AND fingerprint = ?2",
                params![domain, a.fingerprint, wider.as_str()],
            )?;
            Ok(false)
        }
        None => {
            tx.execute(
                "INSERT INTO anchors (domain, fingerprint, der, direction, source, added_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    domain,
                    a.fingerprint,
                    a.der,
                    a.direction.as_str(),
                    a.source,
                    a.added_at
                ],
            )?;
            Ok(true)
        }
    }
}

impl TrustStore for SqliteStore {
    fn add_anchor(&self, anchor: &AnchorRecord) -> Result<bool, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let added = add_anchor_tx(&tx, anchor).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(added)
    }

    fn remove_anchor(&self, domain: &str, fingerprint: &str) -> Result<bool, StoreError> {
        let conn = self.lock()?;
        let n = conn
            .execute(
                "DELETE FROM anchors WHERE domain = ?1 AND fingerprint = ?2",
                params![normalize_domain(domain), fingerprint],
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    fn anchors(&self, domain: Option<&str>) -> Result<Vec<AnchorRecord>, StoreError> {
        let conn = self.lock()?;
        let cols = "SELECT domain, fingerprint, der, direction, source, added_at FROM anchors";
        let rows = match domain {
            Some(d) => {
                let mut st = conn
                    .prepare(&format!(
                        "{cols} WHERE domain = ?1 ORDER BY added_at, fingerprint"
                    ))
                    .map_err(|e| self.err(e))?;
                st.query_map([normalize_domain(d)], anchor_from_row)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            }
            None => {
                let mut st = conn
                    .prepare(&format!("{cols} ORDER BY domain, added_at, fingerprint"))
                    .map_err(|e| self.err(e))?;
                st.query_map([], anchor_from_row)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            }
        };
        rows.map_err(|e| self.err(e))
    }

    fn upsert_bundle(&self, b: &BundleRecord) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT INTO bundles (name, domain, direction, location, refresh_secs, signer_der,
                                  checksum, last_refresh, last_error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (name) DO UPDATE SET
                domain = excluded.domain, direction = excluded.direction,
                location = excluded.location, refresh_secs = excluded.refresh_secs,
                signer_der = excluded.signer_der, checksum = excluded.checksum,
                last_refresh = excluded.last_refresh, last_error = excluded.last_error",
            params![
                b.name,
                normalize_domain(&b.domain),
                b.direction.as_str(),
                b.location,
                i64::try_from(b.refresh_secs).unwrap_or(i64::MAX),
                b.signer_der,
                b.checksum,
                b.last_refresh,
                b.last_error
            ],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn bundles(&self) -> Result<Vec<BundleRecord>, StoreError> {
        let conn = self.lock()?;
        let mut st = conn
            .prepare(
                "SELECT name, domain, direction, location, refresh_secs, signer_der, checksum,
                        last_refresh, last_error
                 FROM bundles ORDER BY name",
            )
            .map_err(|e| self.err(e))?;
        st.query_map([], bundle_from_row)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))
    }

    fn remove_bundle(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute(
            "DELETE FROM anchors WHERE source = ?1",
            [bundle_source(name)],
        )
        .map_err(|e| self.err(e))?;
        let n = tx
            .execute("DELETE FROM bundles WHERE name = ?1", [name])
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    fn replace_bundle_anchors(
        &self,
        name: &str,
        anchors: &[AnchorRecord],
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let source = bundle_source(name);
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let result = (|| -> rusqlite::Result<(Vec<String>, Vec<String>)> {
            let previous: Vec<(String, String)> = {
                let mut st =
                    tx.prepare("SELECT domain, fingerprint FROM anchors WHERE source = ?1")?;
                st.query_map([&source], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?
            };
            let wanted: std::collections::HashSet<(String, String)> = anchors
                .iter()
                .map(|a| (normalize_domain(&a.domain), a.fingerprint.clone()))
                .collect();
            let mut removed = Vec::new();
            for (domain, fp) in &previous {
                if !wanted.contains(&(domain.clone(), fp.clone())) {
                    tx.execute(
                        "DELETE FROM anchors WHERE domain = ?1 AND fingerprint = ?2 AND source = ?3",
                        params![domain, fp, source],
                    )?;
                    removed.push(fp.clone());
                }
            }
            let mut added = Vec::new();
            for a in anchors {
                let domain = normalize_domain(&a.domain);
                let owner: Option<String> = tx
                    .query_row(
                        "SELECT source FROM anchors WHERE domain = ?1 AND fingerprint = ?2",
                        params![domain, a.fingerprint],
                        |r| r.get(0),
                    )
                    .optional()?;
                match owner {
                    // Ours already: follow the bundle's current direction.
                    Some(s) if s == source => {
                        tx.execute(
                            "UPDATE anchors SET direction = ?3, der = ?4
                             WHERE domain = ?1 AND fingerprint = ?2",
                            params![domain, a.fingerprint, a.direction.as_str(), a.der],
                        )?;
                    }
                    // Added by hand or by another bundle: not ours to change.
                    Some(_) => {}
                    None => {
                        let rec = AnchorRecord {
                            domain,
                            source: source.clone(),
                            ..a.clone()
                        };
                        add_anchor_tx(&tx, &rec)?;
                        added.push(a.fingerprint.clone());
                    }
                }
            }
            Ok((added, removed))
        })()
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(result)
    }

    fn cached(&self, url: &str) -> Result<Option<CachedBlob>, StoreError> {
        let conn = self.lock()?;
        conn.query_row(
            "SELECT url, data, fetched_at, until FROM cache WHERE url = ?1",
            [url],
            |r| {
                Ok(CachedBlob {
                    url: r.get(0)?,
                    data: r.get(1)?,
                    fetched_at: r.get(2)?,
                    until: r.get(3)?,
                })
            },
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    fn put_cached(&self, blob: &CachedBlob) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT INTO cache (url, data, fetched_at, until) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (url) DO UPDATE SET
                data = excluded.data, fetched_at = excluded.fetched_at, until = excluded.until",
            params![blob.url, blob.data, blob.fetched_at, blob.until],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor(domain: &str, fp: &str, direction: Direction, source: &str) -> AnchorRecord {
        AnchorRecord {
            domain: domain.into(),
            fingerprint: fp.into(),
            der: fp.as_bytes().to_vec(),
            direction,
            source: source.into(),
            added_at: 1,
        }
    }

    fn bundle(name: &str) -> BundleRecord {
        BundleRecord {
            name: name.into(),
            domain: "hisp-b.example".into(),
            direction: Direction::Both,
            location: "https://bundles.example/a.p7b".into(),
            refresh_secs: 86_400,
            signer_der: None,
            checksum: None,
            last_refresh: None,
            last_error: None,
        }
    }

    fn fps(v: &[AnchorRecord]) -> Vec<&str> {
        v.iter().map(|a| a.fingerprint.as_str()).collect()
    }

    #[test]
    fn creates_the_data_dir_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("var/data");
        {
            let s = SqliteStore::open(&data).unwrap();
            assert!(
                s.add_anchor(&anchor("hisp-b.example", "aa", Direction::Both, "file:x"))
                    .unwrap()
            );
        }
        assert!(data.join(STORE_FILE).exists());
        let s = SqliteStore::open(&data).unwrap();
        assert_eq!(fps(&s.anchors(None).unwrap()), ["aa"]);
        let conn = s.lock().unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let versions: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(versions, 1, "the version row is written once");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(STORE_FILE)).unwrap();
        conn.execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        drop(conn);
        let e = SqliteStore::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("newer direct-agent"), "{e}");
        assert!(e.to_string().contains(STORE_FILE), "names the file: {e}");
    }

    #[test]
    fn unusable_path_is_a_database_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let e = SqliteStore::open(&file).unwrap_err();
        assert!(matches!(e, StoreError::Database { .. }));
        assert!(e.to_string().contains("not-a-dir"), "{e}");
    }

    #[test]
    fn anchors_are_per_domain_lower_case_and_widen() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        assert!(
            s.add_anchor(&anchor(
                "HISP-B.Example.",
                "aa",
                Direction::Incoming,
                "file:a"
            ))
            .unwrap()
        );
        assert!(
            s.add_anchor(&anchor(
                "hisp-a.example",
                "aa",
                Direction::Outgoing,
                "file:a"
            ))
            .unwrap()
        );
        // Same direction again: present, unchanged.
        assert!(
            !s.add_anchor(&anchor(
                "hisp-b.example",
                "aa",
                Direction::Incoming,
                "file:a"
            ))
            .unwrap()
        );
        assert_eq!(
            s.anchors(Some("hisp-b.example")).unwrap()[0].direction,
            Direction::Incoming
        );
        // Other direction: widened to both.
        assert!(
            !s.add_anchor(&anchor(
                "hisp-b.example",
                "aa",
                Direction::Outgoing,
                "file:a"
            ))
            .unwrap()
        );
        let b = s.anchors(Some("Hisp-B.example")).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].domain, "hisp-b.example");
        assert_eq!(b[0].direction, Direction::Both);
        assert_eq!(s.anchors(None).unwrap().len(), 2);
        assert!(s.remove_anchor("HISP-B.example", "aa").unwrap());
        assert!(!s.remove_anchor("hisp-b.example", "aa").unwrap());
        assert_eq!(
            s.anchors(Some("hisp-a.example")).unwrap()[0].direction,
            Direction::Outgoing
        );
    }

    #[test]
    fn bundles_upsert_list_remove_with_their_anchors() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let mut b = bundle("a");
        s.upsert_bundle(&b).unwrap();
        b.checksum = Some("ff".into());
        b.last_error = Some("HTTP 404".into());
        b.signer_der = Some(vec![1, 2, 3]);
        b.last_refresh = Some(42);
        s.upsert_bundle(&b).unwrap();
        s.upsert_bundle(&bundle("b")).unwrap();
        let all = s.bundles().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], b);
        s.add_anchor(&anchor("hisp-b.example", "hand", Direction::Both, "file:x"))
            .unwrap();
        s.replace_bundle_anchors(
            "a",
            &[anchor("hisp-b.example", "b1", Direction::Both, "ignored")],
        )
        .unwrap();
        assert_eq!(s.anchors(None).unwrap().len(), 2);
        assert!(s.remove_bundle("a").unwrap());
        assert!(!s.remove_bundle("a").unwrap());
        assert_eq!(fps(&s.anchors(None).unwrap()), ["hand"]);
        assert_eq!(s.bundles().unwrap().len(), 1);
    }

    #[test]
    fn replace_bundle_anchors_touches_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let d = "hisp-b.example";
        s.add_anchor(&anchor(d, "hand", Direction::Incoming, "file:x"))
            .unwrap();
        s.add_anchor(&anchor(d, "other", Direction::Both, "bundle:other"))
            .unwrap();
        let (added, removed) = s
            .replace_bundle_anchors(
                "a",
                &[
                    anchor(d, "r1", Direction::Both, ""),
                    anchor(d, "r2", Direction::Both, ""),
                    anchor(d, "hand", Direction::Both, ""),
                ],
            )
            .unwrap();
        assert_eq!(added, ["r1", "r2"]);
        assert!(removed.is_empty());
        let hand = s
            .anchors(Some(d))
            .unwrap()
            .into_iter()
            .find(|a| a.fingerprint == "hand")
            .unwrap();
        assert_eq!(
            hand.source, "file:x",
            "a hand-added anchor stays hand-added"
        );
        assert_eq!(hand.direction, Direction::Incoming);

        let (added, removed) = s
            .replace_bundle_anchors("a", &[anchor(d, "r1", Direction::Outgoing, "")])
            .unwrap();
        assert!(added.is_empty());
        assert_eq!(removed, ["r2"]);
        let mut left: Vec<(String, String, Direction)> = s
            .anchors(Some(d))
            .unwrap()
            .into_iter()
            .map(|a| (a.fingerprint, a.source, a.direction))
            .collect();
        left.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            left,
            [
                ("hand".into(), "file:x".into(), Direction::Incoming),
                ("other".into(), "bundle:other".into(), Direction::Both),
                ("r1".into(), "bundle:a".into(), Direction::Outgoing),
            ]
        );
        let (added, removed) = s.replace_bundle_anchors("a", &[]).unwrap();
        assert!(added.is_empty());
        assert_eq!(removed, ["r1"]);
    }

    #[test]
    fn cache_round_trip_and_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.cached("http://x/crl").unwrap(), None);
        let mut blob = CachedBlob {
            url: "http://x/crl".into(),
            data: vec![0, 1, 2],
            fetched_at: 10,
            until: 20,
        };
        s.put_cached(&blob).unwrap();
        assert_eq!(s.cached("http://x/crl").unwrap().as_ref(), Some(&blob));
        blob.data = vec![9];
        blob.until = 30;
        s.put_cached(&blob).unwrap();
        assert_eq!(s.cached("http://x/crl").unwrap(), Some(blob));
    }

    #[test]
    fn is_shared_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(SqliteStore::open(dir.path()).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    s.add_anchor(&anchor(
                        "hisp-b.example",
                        &format!("fp{i}"),
                        Direction::Both,
                        "file:x",
                    ))
                    .unwrap()
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().unwrap());
        }
        assert_eq!(s.anchors(None).unwrap().len(), 4);
    }
}
