//! `ValidationCache`: successful validations remembered per (certificate, purpose, address,
//! anchors, CRLs) until the earliest expiry among the certificates and CRLs involved, so a
//! partner who sends every few seconds is not re-validated every time.
//!
//! Only successes are cached: a failure may be transient (a CRL not yet fetched) and is cheap to
//! find again. The key names the anchors and CRLs by content (fingerprints; a CRL by issuer,
//! thisUpdate), so a changed trust store never reuses an old verdict. (A CRL is named by
//! issuer, thisUpdate, nextUpdate and entry count: two different CRLs sharing all four would be a
//! CA error.)

use std::collections::HashMap;
use std::sync::Mutex;

use openssl::hash::{Hasher, MessageDigest};
use openssl::x509::X509Ref;

use super::{Purpose, TrustError, TrustInputs, ValidatedPath, validate};
use crate::address::DirectAddress;

/// Entries kept at most; the cache is cleared when full (partners are few, so this is rare).
const MAX_ENTRIES: usize = 10_000;

type Key = [u8; 32];

struct Entry {
    path: ValidatedPath,
    /// Unix seconds: valid from (latest notBefore) until (earliest notAfter / nextUpdate).
    from: i64,
    until: i64,
}

/// A cache of successful validations, shared by the tasks of one agent.
#[derive(Default)]
pub struct ValidationCache {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl std::fmt::Debug for ValidationCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("ValidationCache")
            .field("entries", &n)
            .finish()
    }
}

fn key(
    cert: &X509Ref,
    inputs: &TrustInputs<'_>,
    purpose: Purpose,
    address: Option<&DirectAddress>,
) -> Option<Key> {
    let mut h = Hasher::new(MessageDigest::sha256()).ok()?;
    h.update(&super::facts(cert)?.sha256).ok()?;
    h.update(&[purpose as u8]).ok()?;
    h.update(
        address
            .map(|a| a.canonical())
            .unwrap_or_default()
            .as_bytes(),
    )
    .ok()?;
    for a in inputs.anchors {
        h.update(b"A").ok()?;
        h.update(&super::facts(a)?.sha256).ok()?;
    }
    for c in inputs.crls {
        h.update(b"C").ok()?;
        h.update(&c.issuer_name().to_der().ok()?).ok()?;
        h.update(crate::smime::asn1_time_text(c.last_update()).1)
            .ok()?;
        if let Some(next) = c.next_update() {
            h.update(crate::smime::asn1_time_text(next).1).ok()?;
        }
        let revoked = c.get_revoked().map_or(0, |r| r.len());
        h.update(&revoked.to_le_bytes()).ok()?;
    }
    h.update(format!("{:?}", inputs.revocation).as_bytes())
        .ok()?;
    h.update(&[u8::from(inputs.online.is_some())]).ok()?;
    for p in inputs.required_policies {
        h.update(b"P").ok()?;
        h.update(p.as_bytes()).ok()?;
    }
    let out = h.finish().ok()?;
    out.as_ref().try_into().ok()
}

impl ValidationCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// [`validate`], answered from the cache when the same question was answered before and every
    /// certificate and CRL involved is still current at the clock's time.
    pub fn validate(
        &self,
        cert: &X509Ref,
        inputs: &TrustInputs<'_>,
        purpose: Purpose,
        address: Option<&DirectAddress>,
    ) -> Result<ValidatedPath, TrustError> {
        let now = inputs.clock.unix_seconds();
        let Some(k) = key(cert, inputs, purpose, address) else {
            return validate(cert, inputs, purpose, address);
        };
        let hit = self.entries.lock().ok().and_then(|entries| {
            entries
                .get(&k)
                .filter(|e| e.from <= now && now <= e.until)
                .map(|e| e.path.clone())
        });
        if let Some(path) = hit {
            return Ok(path);
        }
        let path = validate(cert, inputs, purpose, address)?;
        // A best-effort pass (a CRL missing) is not remembered: the CRL may be back next time.
        if !path.warnings.is_empty() {
            return Ok(path);
        }
        let from = path
            .chain
            .iter()
            .map(|c| crate::clock::asn1_unix(c.not_before()).unwrap_or(i64::MAX))
            .max()
            .unwrap_or(i64::MAX);
        let until = path.fresh_until;
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(
                k,
                Entry {
                    path: path.clone(),
                    from,
                    until,
                },
            );
        }
        Ok(path)
    }

    /// Forget everything (call when anchors or CRLs change, or simply let the key miss).
    pub fn clear(&self) {
        if let Ok(mut e) = self.entries.lock() {
            e.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::trust::test_cert as cert;
    use openssl::x509::X509Crl;

    #[test]
    fn hit_within_validity_miss_after_expiry_and_on_new_crl() {
        let cache = ValidationCache::new();
        let anchors = [cert("root-b.pem")];
        let inter = [cert("intermediate-b.pem")];
        let leaf = cert("revoked@hisp-b.example.pem");
        let who = DirectAddress::parse("revoked@hisp-b.example").unwrap();
        let clock = FixedClock::at_unix(1_893_456_000); // 2030
        // Revocation off: a clean pass, remembered.
        let no_crls = TrustInputs {
            intermediates: &inter,
            revocation: crate::config::RevocationPolicy::Off,
            ..TrustInputs::offline(&anchors, &clock)
        };
        cache
            .validate(&leaf, &no_crls, Purpose::Sign, Some(&who))
            .unwrap();
        assert_eq!(cache.len(), 1);
        cache
            .validate(&leaf, &no_crls, Purpose::Sign, Some(&who))
            .unwrap();
        assert_eq!(cache.len(), 1, "second call is a hit");

        // A CRL that revokes the leaf is a different question: no stale success.
        let crl_pem = std::fs::read(format!(
            "{}/certs/intermediate-b.crl.pem",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let crls = [X509Crl::from_pem(&crl_pem).unwrap()];
        let with_crl = TrustInputs {
            crls: &crls,
            revocation: crate::config::RevocationPolicy::Require,
            ..no_crls
        };
        let e = cache
            .validate(&leaf, &with_crl, Purpose::Sign, Some(&who))
            .unwrap_err();
        assert!(matches!(e, TrustError::Revoked { .. }), "{e}");

        // A best-effort pass with a warning (no CRL at all) is not remembered.
        let fresh = ValidationCache::new();
        let warned = TrustInputs {
            revocation: crate::config::RevocationPolicy::BestEffort,
            ..no_crls
        };
        let p = fresh
            .validate(&leaf, &warned, Purpose::Sign, Some(&who))
            .unwrap();
        assert_eq!(p.warnings.len(), 2, "leaf and intermediate unchecked");
        assert!(fresh.is_empty());

        // After the leaf's notAfter (2045) the cached success is not used.
        let later = FixedClock::at_unix(2_430_000_000);
        let expired = TrustInputs {
            clock: &later,
            ..no_crls
        };
        let e = cache
            .validate(&leaf, &expired, Purpose::Sign, Some(&who))
            .unwrap_err();
        assert!(matches!(e, TrustError::Expired { .. }), "{e}");
    }
}
