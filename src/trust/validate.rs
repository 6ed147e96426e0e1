//! Path validation: a chain from a certificate to a configured anchor (the anchor need not be a
//! root), at the clock's time, at most 5 certificates deep, with revocation by the CRLs supplied.
//!
//! OpenSSL builds and verifies the path; revocation is checked here against the CRLs the caller
//! has (fetched, cached or configured), so that a missing CRL is a policy decision of the caller
//! rather than a path failure.

use std::cmp::Ordering;

use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{CrlStatus, X509, X509Crl, X509Ref, X509StoreContext};

use super::{Binding, Purpose, TrustError, describe, describe_issuer};
use super::{binding_for, check_key_strength, check_key_usage, check_validity};
use crate::address::DirectAddress;
use crate::clock::Clock;

/// Maximum certificates in a path below the anchor (Applicability Statement: path length 5).
const MAX_DEPTH: i32 = 5;

/// What a validation may use.
pub struct TrustInputs<'a> {
    /// Certificates we trust for this direction and domain.
    pub anchors: &'a [X509],
    /// Untrusted certificates that may complete the path (from the message, configuration, AIA).
    pub intermediates: &'a [X509],
    /// CRLs to check every non-anchor certificate against.
    pub crls: &'a [X509Crl],
    pub clock: &'a dyn Clock,
}

/// A certificate found trustworthy, with its path (leaf first, anchor last) and binding.
#[derive(Debug, Clone)]
pub struct ValidatedPath {
    pub chain: Vec<X509>,
    pub binding: Option<Binding>,
}

/// Validate `cert` for `purpose` and, when given, its binding to `address`. The first failing
/// step is returned, in words an administrator can act on.
pub fn validate(
    cert: &X509Ref,
    inputs: &TrustInputs<'_>,
    purpose: Purpose,
    address: Option<&DirectAddress>,
) -> Result<ValidatedPath, TrustError> {
    check_key_strength(cert)?;
    check_key_usage(cert, purpose)?;
    check_validity(cert, inputs.clock)?;
    let chain = build_path(cert, inputs)?;
    check_revocation(&chain, inputs.crls)?;
    let binding = match address {
        Some(a) => Some(binding_for(cert, a)?),
        None => None,
    };
    Ok(ValidatedPath { chain, binding })
}

fn path_error(subject: String, detail: impl Into<String>) -> TrustError {
    TrustError::Path {
        subject,
        detail: detail.into(),
    }
}

fn build_path(cert: &X509Ref, inputs: &TrustInputs<'_>) -> Result<Vec<X509>, TrustError> {
    let subject = describe(cert);
    let internal = |e: openssl::error::ErrorStack| path_error(subject.clone(), e.to_string());
    if inputs.anchors.is_empty() {
        return Err(TrustError::NoPath {
            subject: subject.clone(),
            detail: "no trust anchors are configured".into(),
        });
    }
    let mut store = X509StoreBuilder::new().map_err(internal)?;
    for a in inputs.anchors {
        // Adding the same anchor twice is harmless; other errors are real.
        let _ = store.add_cert(a.clone());
    }
    let mut param = X509VerifyParam::new().map_err(internal)?;
    param.set_time(inputs.clock.unix_seconds() as _);
    param.set_depth(MAX_DEPTH);
    param
        .set_flags(X509VerifyFlags::PARTIAL_CHAIN)
        .map_err(internal)?;
    store.set_param(&param).map_err(internal)?;
    let store = store.build();
    let mut untrusted = Stack::new().map_err(internal)?;
    for c in inputs.intermediates {
        untrusted.push(c.clone()).map_err(internal)?;
    }
    let mut ctx = X509StoreContext::new().map_err(internal)?;
    let owned = cert.to_owned();
    ctx.init(&store, &owned, &untrusted, |c| {
        if c.verify_cert()? {
            let chain = c
                .chain()
                .map(|s| s.iter().map(|x| x.to_owned()).collect())
                .unwrap_or_default();
            return Ok(Ok(chain));
        }
        let at = c
            .current_cert()
            .map(describe)
            .unwrap_or_else(|| subject.clone());
        let at_cert = c.current_cert().map(|x| x.to_owned());
        Ok(Err((
            c.error().as_raw(),
            c.error().error_string(),
            at,
            at_cert,
        )))
    })
    .map_err(internal)?
    .map_err(|(code, text, at, at_cert)| match code {
        // X509_V_ERR_CERT_HAS_EXPIRED
        10 => TrustError::Expired {
            subject: at,
            not_after: at_cert
                .map(|c| c.not_after().to_string())
                .unwrap_or_default(),
        },
        // X509_V_ERR_CERT_NOT_YET_VALID
        9 => TrustError::NotYetValid {
            subject: at,
            not_before: at_cert
                .map(|c| c.not_before().to_string())
                .unwrap_or_default(),
        },
        // unable to get issuer / local issuer, self-signed, chain too long
        2 | 18 | 19 | 20 | 21 | 22 => TrustError::NoPath {
            subject: subject.clone(),
            detail: match at_cert {
                Some(c) => format!("{text} at {at}, issued by {}", describe_issuer(&c)),
                None => text.to_string(),
            },
        },
        _ => path_error(at, text),
    })
}

fn check_revocation(chain: &[X509], crls: &[X509Crl]) -> Result<(), TrustError> {
    // The last certificate is the anchor: trusted by configuration, not checked.
    for pair in chain.windows(2) {
        let (cert, issuer) = (&pair[0], &pair[1]);
        let Ok(issuer_key) = issuer.public_key() else {
            continue;
        };
        for crl in crls {
            let same_issuer = crl
                .issuer_name()
                .try_cmp(cert.issuer_name())
                .is_ok_and(|o| o == Ordering::Equal);
            if !same_issuer || !crl.verify(&issuer_key).unwrap_or(false) {
                continue;
            }
            if let CrlStatus::Revoked(entry) = crl.get_by_cert(cert) {
                return Err(TrustError::Revoked {
                    subject: describe(cert),
                    date: entry.revocation_date().to_string(),
                    issuer: describe(issuer),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;

    fn cert(name: &str) -> X509 {
        let path = format!("{}/certs/{name}", env!("CARGO_MANIFEST_DIR"));
        X509::from_pem(&std::fs::read(&path).expect("committed test certificate")).unwrap()
    }
    fn crl(name: &str) -> X509Crl {
        let path = format!("{}/certs/{name}", env!("CARGO_MANIFEST_DIR"));
        X509Crl::from_pem(&std::fs::read(&path).expect("committed test CRL")).unwrap()
    }
    fn addr(s: &str) -> DirectAddress {
        DirectAddress::parse(s).unwrap()
    }
    /// 2030-01-01: inside every "good" certificate's validity.
    const IN_2030: u64 = 1_893_456_000;

    fn check(
        leaf: &str,
        anchors: &[X509],
        crls: &[X509Crl],
        at: u64,
        who: &str,
    ) -> Result<ValidatedPath, TrustError> {
        let inter = [
            cert("intermediate-a.pem"),
            cert("intermediate-b.pem"),
            cert("intermediate-a2.pem"),
        ];
        let clock = FixedClock::at_unix(at);
        let inputs = TrustInputs {
            anchors,
            intermediates: &inter,
            crls,
            clock: &clock,
        };
        validate(&cert(leaf), &inputs, Purpose::Sign, Some(&addr(who)))
    }

    #[test]
    fn valid_path_to_root_with_address_binding() {
        let p = check(
            "iis@hisp-b.example.pem",
            &[cert("root-b.pem")],
            &[],
            IN_2030,
            "IIS@hisp-b.example",
        )
        .unwrap();
        assert_eq!(p.chain.len(), 3);
        assert_eq!(p.binding, Some(Binding::Address));
    }

    #[test]
    fn anchor_may_be_an_intermediate_and_domain_binding_counts() {
        let p = check(
            "hisp-b.example.pem",
            &[cert("intermediate-b.pem")],
            &[],
            IN_2030,
            "anyone@hisp-b.example",
        )
        .unwrap();
        assert_eq!(p.chain.len(), 2);
        assert_eq!(p.binding, Some(Binding::Domain));
    }

    #[test]
    fn expired_at_the_clock_time() {
        let e = check(
            "iis@hisp-b.example.pem",
            &[cert("root-b.pem")],
            &[],
            2_430_000_000,
            "iis@hisp-b.example",
        )
        .unwrap_err();
        assert!(matches!(e, TrustError::Expired { .. }), "{e}");
        let e = check(
            "expired@hisp-b.example.pem",
            &[cert("root-b.pem")],
            &[],
            IN_2030,
            "expired@hisp-b.example",
        )
        .unwrap_err();
        assert!(e.to_string().contains("expired on"), "{e}");
    }

    #[test]
    fn untrusted_root_has_no_path() {
        let e = check(
            "untrusted@hisp-b.example.pem",
            &[cert("root-a.pem"), cert("root-b.pem")],
            &[],
            IN_2030,
            "untrusted@hisp-b.example",
        )
        .unwrap_err();
        assert!(matches!(e, TrustError::NoPath { .. }), "{e}");
        let e = check(
            "iis@hisp-b.example.pem",
            &[],
            &[],
            IN_2030,
            "iis@hisp-b.example",
        )
        .unwrap_err();
        assert!(e.to_string().contains("no trust anchors"), "{e}");
    }

    #[test]
    fn revoked_leaf_and_revoked_intermediate() {
        let crls = [
            crl("intermediate-b.crl.pem"),
            crl("root-a.crl.pem"),
            crl("intermediate-a.crl.pem"),
        ];
        let e = check(
            "revoked@hisp-b.example.pem",
            &[cert("root-b.pem")],
            &crls,
            IN_2030,
            "revoked@hisp-b.example",
        )
        .unwrap_err();
        assert!(matches!(e, TrustError::Revoked { .. }), "{e}");
        let e = check(
            "revoked-intermediate-leaf@hisp-a.example.pem",
            &[cert("root-a.pem")],
            &crls,
            IN_2030,
            "revoked-intermediate-leaf@hisp-a.example",
        )
        .unwrap_err();
        assert!(
            matches!(&e, TrustError::Revoked { subject, .. } if subject.contains("A2")),
            "{e}"
        );
        // Without the CRLs the same certificates validate: revocation is the only failing step.
        check(
            "revoked@hisp-b.example.pem",
            &[cert("root-b.pem")],
            &[],
            IN_2030,
            "revoked@hisp-b.example",
        )
        .unwrap();
    }

    #[test]
    fn wrong_binding_names_both_sides() {
        let e = check(
            "wrongdomain@hisp-b.example.pem",
            &[cert("root-b.pem")],
            &[],
            IN_2030,
            "wrongdomain@hisp-b.example",
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("someone@hisp-c.example") && text.contains("wrongdomain@hisp-b.example"),
            "{text}"
        );
    }

    #[test]
    fn key_usage_and_strength_are_checked_first() {
        let e = check(
            "nosign@hisp-b.example.pem",
            &[cert("root-b.pem")],
            &[],
            IN_2030,
            "nosign@hisp-b.example",
        )
        .unwrap_err();
        assert!(matches!(e, TrustError::KeyUsage { .. }), "{e}");
        let e = check(
            "rsa1024@hisp-b.example.pem",
            &[cert("root-b.pem")],
            &[],
            IN_2030,
            "rsa1024@hisp-b.example",
        )
        .unwrap_err();
        assert!(e.to_string().contains("1024-bit"), "{e}");
    }
}
