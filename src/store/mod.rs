//! The trust store: anchors per local domain and direction, trust bundles, and the cache of
//! fetched CRLs and AIA certificates. [`TrustStore`] is the interface; [`SqliteStore`] the
//! embedded default in the data directory. A PostgreSQL implementation can follow for several agents
//! sharing one store: nothing outside this module knows the storage.
//!
//! Records hold data (DER, strings, Unix seconds), never live OpenSSL values.

mod sqlite;
pub use sqlite::{STORE_FILE, SqliteStore, bundle_source};

/// Open the store the configuration names: `<data_dir>/trust.sqlite`.
pub fn open_store(cfg: &crate::config::Config) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(&cfg.agent.data_dir)
}

/// Whose certificates an anchor vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Senders whose signatures we accept.
    Incoming,
    /// Recipients we encrypt to.
    Outgoing,
    /// Both.
    Both,
}

impl Direction {
    pub fn parse(s: &str) -> Option<Direction> {
        match s.to_ascii_lowercase().as_str() {
            "incoming" | "in" => Some(Direction::Incoming),
            "outgoing" | "out" => Some(Direction::Outgoing),
            "both" => Some(Direction::Both),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Incoming => "incoming",
            Direction::Outgoing => "outgoing",
            Direction::Both => "both",
        }
    }

    /// Whether an anchor of this direction serves `wanted` (Incoming or Outgoing).
    pub fn serves(self, wanted: Direction) -> bool {
        self == Direction::Both || wanted == Direction::Both || self == wanted
    }
}

/// One trust anchor of one local domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorRecord {
    /// Local domain (lower case).
    pub domain: String,
    /// SHA-256 of the DER, lower-case hex with colons (as `trust::fingerprint`).
    pub fingerprint: String,
    pub der: Vec<u8>,
    pub direction: Direction,
    /// `file:PATH` for anchors added by hand, `bundle:NAME` for anchors from a bundle.
    pub source: String,
    /// Unix seconds.
    pub added_at: i64,
}

/// A trust bundle subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRecord {
    /// Unique name (defaults to the URL's or file's last path segment).
    pub name: String,
    pub domain: String,
    pub direction: Direction,
    /// `http(s)://...` or a file path.
    pub location: String,
    /// Seconds between scheduled refreshes.
    pub refresh_secs: u64,
    /// DER of the pinned certificate that must sign the bundle (CMS-signed bundles).
    pub signer_der: Option<Vec<u8>>,
    /// SHA-256 hex of the last bundle content applied.
    pub checksum: Option<String>,
    /// Unix seconds of the last refresh attempt, and its error if it failed.
    pub last_refresh: Option<i64>,
    pub last_error: Option<String>,
}

/// A fetched CRL or AIA certificate, kept until `until` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedBlob {
    pub url: String,
    pub data: Vec<u8>,
    pub fetched_at: i64,
    pub until: i64,
}

/// Why the store failed. Storage errors are transient (retry later); the caller decides.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened or used.
    #[error("trust store {path}: {detail}")]
    Database { path: String, detail: String },
    /// A record that must exist does not.
    #[error("{0}")]
    NotFound(String),
}

/// The trust store interface.
pub trait TrustStore: Send + Sync {
    /// Add an anchor; returns false when the same (domain, fingerprint) was already there (its
    /// direction is then widened to cover both).
    fn add_anchor(&self, anchor: &AnchorRecord) -> Result<bool, StoreError>;
    /// Remove an anchor; returns whether it existed.
    fn remove_anchor(&self, domain: &str, fingerprint: &str) -> Result<bool, StoreError>;
    /// Anchors of one domain, or of all domains.
    fn anchors(&self, domain: Option<&str>) -> Result<Vec<AnchorRecord>, StoreError>;

    /// Create or replace a bundle subscription (by name).
    fn upsert_bundle(&self, bundle: &BundleRecord) -> Result<(), StoreError>;
    fn bundles(&self) -> Result<Vec<BundleRecord>, StoreError>;
    /// Remove a bundle and the anchors that came from it; returns whether it existed.
    fn remove_bundle(&self, name: &str) -> Result<bool, StoreError>;
    /// Atomically replace the anchors that came from bundle `name` with `anchors`; returns the
    /// fingerprints added and removed.
    fn replace_bundle_anchors(
        &self,
        name: &str,
        anchors: &[AnchorRecord],
    ) -> Result<(Vec<String>, Vec<String>), StoreError>;

    /// A cached CRL or AIA certificate by URL, whatever its age (the caller checks `until`).
    fn cached(&self, url: &str) -> Result<Option<CachedBlob>, StoreError>;
    fn put_cached(&self, blob: &CachedBlob) -> Result<(), StoreError>;
}
