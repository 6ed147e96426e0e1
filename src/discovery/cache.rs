//! `DiscoveryCache`: chosen certificates per address for the DNS TTL (capped), and "nothing
//! usable" for a short negative time, so a burst of messages to one partner looks up once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openssl::x509::X509;

use super::Discovery;

enum Entry {
    Found(Vec<X509>),
    Nothing(String),
}

/// Remembered discoveries, keyed by lower-cased address.
pub struct DiscoveryCache {
    entries: Mutex<HashMap<String, (Instant, Entry)>>,
    max_ttl: Duration,
    negative_ttl: Duration,
}

impl DiscoveryCache {
    pub fn new(max_ttl: Duration, negative_ttl: Duration) -> Self {
        DiscoveryCache {
            entries: Mutex::new(HashMap::new()),
            max_ttl,
            negative_ttl,
        }
    }

    /// A remembered answer: the certificates, or why there are none.
    pub fn get(&self, address: &str, now: Instant) -> Option<Result<Vec<X509>, String>> {
        let entries = self.entries.lock().ok()?;
        let (until, entry) = entries.get(&address.to_ascii_lowercase())?;
        if *until <= now {
            return None;
        }
        Some(match entry {
            Entry::Found(c) => Ok(c.clone()),
            Entry::Nothing(r) => Err(r.clone()),
        })
    }

    /// Forget everything (the trust store changed: remembered choices may no longer hold).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }

    /// Remember a discovery: positive answers for min(TTL, max), negative ones briefly.
    pub fn put(&self, address: &str, discovery: &Discovery, now: Instant) {
        let chosen = discovery.chosen_certs();
        if chosen.is_empty() && discovery.transient {
            // A lookup failure is not an answer: ask again next time.
            return;
        }
        let (ttl, entry) = if chosen.is_empty() {
            (
                self.negative_ttl,
                Entry::Nothing(discovery.reason.clone().unwrap_or_default()),
            )
        } else {
            (discovery.ttl.min(self.max_ttl), Entry::Found(chosen))
        };
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(address.to_ascii_lowercase(), (now + ttl, entry));
        }
    }
}
