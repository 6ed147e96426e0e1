//! Facts about a certificate that every message asks for again (its SHA-256, the fingerprint
//! text, the subject text), worked out once per certificate object.
//!
//! A partner's certificates are the same objects message after message (the opener reuses one
//! parsed certificate per distinct DER, and configured keys, anchors and recipient certificates are
//! loaded once), so the facts are remembered by object. The memo holds its own reference to every
//! certificate it remembers: while an entry exists its object cannot be freed, so its address
//! cannot be reused by another certificate. Certificates are never changed after they are built.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use foreign_types::ForeignTypeRef;
use openssl::hash::MessageDigest;
use openssl::x509::{X509, X509NameRef, X509Ref};

/// Certificates remembered at most; past that the memo starts over.
const REMEMBERED: usize = 1024;

/// Certificate address -> (our reference to that certificate, its facts).
type Memo = HashMap<usize, (X509, Arc<Facts>)>;

/// What [`facts`] gives.
#[derive(Debug)]
pub struct Facts {
    /// SHA-256 of the DER certificate.
    pub sha256: [u8; 32],
    /// The same, lower-case hex with colons.
    pub fingerprint: String,
    /// "CN=..., O=..." (most significant last), or "(empty subject)".
    pub subject: String,
}

/// The facts of `cert`; `None` only if OpenSSL cannot digest it (then nothing is remembered).
pub fn facts(cert: &X509Ref) -> Option<Arc<Facts>> {
    static MEMO: OnceLock<Mutex<Memo>> = OnceLock::new();
    let memo = MEMO.get_or_init(Mutex::default);
    let id = cert.as_ptr() as usize;
    if let Some((_, f)) = memo.lock().ok()?.get(&id) {
        return Some(f.clone());
    }
    let digest = cert.digest(MessageDigest::sha256()).ok()?;
    let sha256: [u8; 32] = digest.as_ref().try_into().ok()?;
    let subject = match describe_name(cert.subject_name()) {
        s if s.is_empty() => "(empty subject)".to_string(),
        s => s,
    };
    let f = Arc::new(Facts {
        sha256,
        fingerprint: hex_colons(&sha256),
        subject,
    });
    let mut map = memo.lock().ok()?;
    if map.len() >= REMEMBERED {
        map.clear();
    }
    map.insert(id, (cert.to_owned(), f.clone()));
    Some(f)
}

/// "CN=..., O=..." for a name, most significant part last.
pub(super) fn describe_name(name: &X509NameRef) -> String {
    let mut parts: Vec<String> = name
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let val = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={val}")
        })
        .collect();
    parts.reverse();
    parts.join(", ")
}

fn hex_colons(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::test_cert as cert;

    #[test]
    fn facts_match_a_fresh_computation_and_are_reused_per_object() {
        let a = cert("root-b.pem");
        let f = facts(&a).unwrap();
        let digest = a.digest(MessageDigest::sha256()).unwrap();
        assert_eq!(f.sha256.as_slice(), digest.as_ref());
        let by_hand: Vec<String> = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(f.fingerprint, by_hand.join(":"));
        assert!(f.subject.starts_with("CN="), "{}", f.subject);
        assert!(
            Arc::ptr_eq(&f, &facts(&a).unwrap()),
            "same object, same facts"
        );

        // Another certificate, and another object of the same certificate, get their own entry
        // with the right content.
        let b = cert("intermediate-b.pem");
        let fb = facts(&b).unwrap();
        assert_ne!(fb.sha256, f.sha256);
        assert_ne!(fb.subject, f.subject);
        let a2 = cert("root-b.pem");
        assert_eq!(facts(&a2).unwrap().sha256, f.sha256);
    }

    #[test]
    fn a_freed_certificate_address_never_carries_old_facts() {
        // The memo pins what it remembers, so dropping our copy and loading other certificates
        // (which may land anywhere) always gives each its own facts.
        let names = [
            "root-a.pem",
            "root-b.pem",
            "intermediate-a.pem",
            "intermediate-b.pem",
        ];
        for round in 0..50 {
            let name = names[round % names.len()];
            let c = cert(name);
            let want = c.digest(MessageDigest::sha256()).unwrap();
            assert_eq!(
                facts(&c).unwrap().sha256.as_slice(),
                want.as_ref(),
                "{name}"
            );
        }
    }
}
