//! Path validation, the one path every signer and recipient certificate goes through: key
//! strength, key usage, validity at the clock's time, a chain to a configured anchor (the anchor
//! need not be a root; at most 5 certificates below it; missing intermediates fetched through AIA
//! caIssuers), revocation of every non-anchor certificate by CRL (given, cached or fetched from the
//! distribution points, under the configured policy), binding to the address, and required
//! certificate policies.
//!
//! [`validate_report`] records every step's verdict for `direct-agent certs validate`; [`validate`]
//! is the same run returning only the outcome. Network access goes through [`Online`]'s
//! [`Fetcher`], so the core runs without sockets in tests.

use std::cmp::Ordering;

use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{CrlStatus, X509, X509Crl, X509Ref, X509StoreContext};

use super::fetch::Fetcher;
use super::{Binding, Purpose, TrustError, describe, describe_issuer};
use super::{binding_for, check_key_strength, check_key_usage, check_validity};
use crate::address::DirectAddress;
use crate::clock::{Clock, asn1_unix as unix_time};
use crate::config::RevocationPolicy;
use crate::store::{CachedBlob, TrustStore};

/// Maximum certificates in a path below the anchor (Applicability Statement: path length 5).
const MAX_DEPTH: i32 = 5;
/// AIA fetch rounds at most (one per missing intermediate).
const MAX_AIA_ROUNDS: usize = 5;

/// Network access for validation: CRLs and AIA certificates, cached in the store when given.
#[derive(Clone, Copy)]
pub struct Online<'a> {
    pub fetcher: &'a dyn Fetcher,
    pub store: Option<&'a dyn TrustStore>,
    /// Fetch missing intermediates through AIA caIssuers.
    pub aia: bool,
}

/// What a validation may use.
#[derive(Clone, Copy)]
pub struct TrustInputs<'a> {
    /// Certificates we trust for this direction and domain.
    pub anchors: &'a [X509],
    /// Untrusted certificates that may complete the path (from the message, configuration).
    pub intermediates: &'a [X509],
    /// CRLs known without fetching (configured files).
    pub crls: &'a [X509Crl],
    pub clock: &'a dyn Clock,
    /// What to do when no current CRL can be had for a certificate.
    pub revocation: RevocationPolicy,
    /// `None`: offline, only `crls` are consulted.
    pub online: Option<Online<'a>>,
    /// Policy OIDs of which the certificate must carry one (empty: no requirement).
    pub required_policies: &'a [String],
}

impl<'a> TrustInputs<'a> {
    /// Offline inputs: the CRLs given are consulted, and a certificate without one is accepted
    /// (best-effort), as `message open --crl` does without a configuration.
    pub fn offline(anchors: &'a [X509], clock: &'a dyn Clock) -> Self {
        TrustInputs {
            anchors,
            intermediates: &[],
            crls: &[],
            clock,
            revocation: RevocationPolicy::BestEffort,
            online: None,
            required_policies: &[],
        }
    }
}

/// A certificate found trustworthy, with its path (leaf first, anchor last) and binding.
#[derive(Debug, Clone)]
pub struct ValidatedPath {
    pub chain: Vec<X509>,
    /// [`describe`] of each certificate of `chain`, computed once (a cached path is reused for
    /// every message of a partner).
    pub chain_subjects: Vec<String>,
    pub binding: Option<Binding>,
    /// Accepted with reservations (a CRL that could not be had under best-effort).
    pub warnings: Vec<String>,
    /// Unix seconds until which this verdict holds: the earliest notAfter in the path and
    /// nextUpdate of the CRLs consulted.
    pub fresh_until: i64,
}

/// The verdict of one validation step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub step: &'static str,
    /// `pass`, `fail`, `warn` or `skip`.
    pub verdict: &'static str,
    pub detail: String,
}

/// Every step of one validation, and its outcome.
#[derive(Debug)]
pub struct ValidationReport {
    pub steps: Vec<Step>,
    pub outcome: Result<ValidatedPath, TrustError>,
}

struct Recorder(Vec<Step>);

impl Recorder {
    fn push(&mut self, step: &'static str, verdict: &'static str, detail: impl Into<String>) {
        self.0.push(Step {
            step,
            verdict,
            detail: detail.into(),
        });
    }

    /// Record a step's result; pass its error on.
    fn check<T>(
        &mut self,
        step: &'static str,
        ok_detail: impl FnOnce(&T) -> String,
        r: Result<T, TrustError>,
    ) -> Result<T, TrustError> {
        match &r {
            Ok(v) => self.push(step, "pass", ok_detail(v)),
            Err(e) => self.push(step, "fail", e.to_string()),
        }
        r
    }
}

/// Validate `cert` for `purpose` and, when given, its binding to `address`. The first failing
/// step is returned, in words an administrator can act on.
pub fn validate(
    cert: &X509Ref,
    inputs: &TrustInputs<'_>,
    purpose: Purpose,
    address: Option<&DirectAddress>,
) -> Result<ValidatedPath, TrustError> {
    validate_report(cert, inputs, purpose, address).outcome
}

/// [`validate`] with every step's verdict recorded.
pub fn validate_report(
    cert: &X509Ref,
    inputs: &TrustInputs<'_>,
    purpose: Purpose,
    address: Option<&DirectAddress>,
) -> ValidationReport {
    let mut rec = Recorder(Vec::new());
    let outcome = run(cert, inputs, purpose, address, &mut rec);
    ValidationReport {
        steps: rec.0,
        outcome,
    }
}

fn run(
    cert: &X509Ref,
    inputs: &TrustInputs<'_>,
    purpose: Purpose,
    address: Option<&DirectAddress>,
    rec: &mut Recorder,
) -> Result<ValidatedPath, TrustError> {
    let bits = cert.public_key().map(|k| k.bits()).unwrap_or(0);
    rec.check(
        "key strength",
        |_| format!("{bits}-bit key"),
        check_key_strength(cert),
    )?;
    rec.check(
        "key usage",
        |_| format!("allows {purpose:?}").to_lowercase(),
        check_key_usage(cert, purpose),
    )?;
    rec.check(
        "validity",
        |_| format!("valid {} to {}", cert.not_before(), cert.not_after()),
        check_validity(cert, inputs.clock),
    )?;
    let built = build_path_with_aia(cert, inputs, rec);
    let chain = rec.check(
        "path",
        |c: &Vec<X509>| {
            c.iter()
                .map(|x| describe(x))
                .collect::<Vec<_>>()
                .join(" <- ")
        },
        built,
    )?;
    let (warnings, crl_until) = check_revocation(&chain, inputs, rec)?;
    let fresh_until = chain
        .iter()
        .filter_map(|c| unix_time(c.not_after()))
        .min()
        .unwrap_or(i64::MIN)
        .min(crl_until);
    let binding = match address {
        Some(a) => Some(rec.check(
            "binding",
            |b: &Binding| format!("{b:?}-bound to {a}").to_lowercase(),
            binding_for(cert, a),
        )?),
        None => {
            rec.push("binding", "skip", "no address to bind to");
            None
        }
    };
    if inputs.required_policies.is_empty() {
        rec.push("policy", "skip", "no certificate policy required");
    } else {
        rec.check(
            "policy",
            |oid: &String| format!("carries required policy {oid}"),
            check_policies(cert, inputs.required_policies),
        )?;
    }
    Ok(ValidatedPath {
        chain_subjects: chain.iter().map(|c| describe(c)).collect(),
        chain,
        binding,
        warnings,
        fresh_until,
    })
}

fn path_error(subject: String, detail: impl Into<String>) -> TrustError {
    TrustError::Path {
        subject,
        detail: detail.into(),
    }
}

/// Build the path; when it breaks for want of an issuer and AIA is allowed, fetch the missing
/// certificate from the caIssuers URL of the certificate where it broke and try again.
fn build_path_with_aia(
    cert: &X509Ref,
    inputs: &TrustInputs<'_>,
    rec: &mut Recorder,
) -> Result<Vec<X509>, TrustError> {
    let mut extra: Vec<X509> = Vec::new();
    let mut tried: Vec<String> = Vec::new();
    for _ in 0..=MAX_AIA_ROUNDS {
        let mut pool: Vec<X509> = inputs.intermediates.to_vec();
        pool.extend(extra.iter().cloned());
        let err = match build_path(cert, inputs.anchors, &pool, inputs.clock) {
            Ok(chain) => return Ok(chain),
            Err(e) => e,
        };
        let (TrustError::NoPath { .. }, Some(online)) = (&err.0, inputs.online) else {
            return Err(err.0);
        };
        if !online.aia {
            return Err(err.0);
        }
        let Some(broken) = err.1 else {
            return Err(err.0);
        };
        let urls: Vec<String> = ca_issuers(&broken)
            .into_iter()
            .filter(|u| !tried.contains(u))
            .collect();
        if urls.is_empty() {
            return Err(err.0);
        }
        let mut fetched_any = false;
        let mut reasons = Vec::new();
        for url in urls {
            tried.push(url.clone());
            match fetch_certs(&url, online, inputs.clock) {
                Ok(certs) => {
                    rec.push(
                        "aia",
                        "pass",
                        format!("fetched {} certificate(s) from {url}", certs.len()),
                    );
                    extra.extend(certs);
                    fetched_any = true;
                }
                Err(reason) => {
                    rec.push("aia", "fail", reason.clone());
                    reasons.push(reason);
                }
            }
        }
        if !fetched_any {
            return Err(match err.0 {
                TrustError::NoPath { subject, detail } => TrustError::IntermediateUnavailable {
                    subject,
                    detail: format!("{detail}; {}", reasons.join("; ")),
                },
                other => other,
            });
        }
    }
    Err(TrustError::NoPath {
        subject: describe(cert),
        detail: format!("no path after {MAX_AIA_ROUNDS} AIA fetches"),
    })
}

fn ca_issuers(cert: &X509Ref) -> Vec<String> {
    cert.authority_info()
        .map(|ads| {
            ads.iter()
                .filter(|ad| ad.method().nid() == Nid::AD_CA_ISSUERS)
                .filter_map(|ad| ad.location().uri().map(str::to_string))
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                .collect()
        })
        .unwrap_or_default()
}

/// Fetch (or take from the store's cache) the certificates at an AIA URL: DER or PEM `.cer`, or
/// a certs-only PKCS#7 `.p7c`.
fn fetch_certs(url: &str, online: Online<'_>, clock: &dyn Clock) -> Result<Vec<X509>, String> {
    let now = clock.unix_seconds();
    let cached = online
        .store
        .and_then(|s| s.cached(url).ok().flatten())
        .filter(|b| b.until > now)
        .and_then(|b| parse_certs(&b.data));
    if let Some(certs) = cached {
        return Ok(certs);
    }
    let body = online.fetcher.fetch(url).map_err(|e| format!("AIA {e}"))?;
    let certs = parse_certs(&body)
        .ok_or_else(|| format!("AIA {url} did not return a certificate (DER, PEM or .p7c)"))?;
    if let Some(store) = online.store {
        let until = certs
            .iter()
            .filter_map(|c| unix_time(c.not_after()))
            .min()
            .unwrap_or(now);
        let _ = store.put_cached(&CachedBlob {
            url: url.to_string(),
            data: body,
            fetched_at: now,
            until,
        });
    }
    Ok(certs)
}

/// Certificates from DER, PEM, or a certs-only PKCS#7 (DER or PEM).
pub fn parse_certs(data: &[u8]) -> Option<Vec<X509>> {
    if let Ok(c) = X509::from_der(data) {
        return Some(vec![c]);
    }
    if let Some(v) = X509::stack_from_pem(data).ok().filter(|v| !v.is_empty()) {
        return Some(v);
    }
    let p7 = openssl::pkcs7::Pkcs7::from_der(data)
        .or_else(|_| openssl::pkcs7::Pkcs7::from_pem(data))
        .ok()?;
    let certs: Vec<X509> = p7
        .signed()?
        .certificates()?
        .iter()
        .map(|c| c.to_owned())
        .collect();
    (!certs.is_empty()).then_some(certs)
}

/// The path, or the error with the certificate at which it broke.
fn build_path(
    cert: &X509Ref,
    anchors: &[X509],
    intermediates: &[X509],
    clock: &dyn Clock,
) -> Result<Vec<X509>, (TrustError, Option<X509>)> {
    let subject = describe(cert);
    let internal =
        |e: openssl::error::ErrorStack| (path_error(subject.clone(), e.to_string()), None);
    if anchors.is_empty() {
        return Err((
            TrustError::NoPath {
                subject: subject.clone(),
                detail: "no trust anchors are configured".into(),
            },
            None,
        ));
    }
    let mut store = X509StoreBuilder::new().map_err(internal)?;
    for a in anchors {
        // Adding the same anchor twice is harmless; other errors are real.
        let _ = store.add_cert(a.clone());
    }
    let mut param = X509VerifyParam::new().map_err(internal)?;
    param.set_time(clock.unix_seconds() as _);
    param.set_depth(MAX_DEPTH);
    param
        .set_flags(X509VerifyFlags::PARTIAL_CHAIN)
        .map_err(internal)?;
    store.set_param(&param).map_err(internal)?;
    let store = store.build();
    let mut untrusted = Stack::new().map_err(internal)?;
    for c in intermediates {
        untrusted.push(c.clone()).map_err(internal)?;
    }
    let mut ctx = X509StoreContext::new().map_err(internal)?;
    let owned = cert.to_owned();
    let verdict = ctx
        .init(&store, &owned, &untrusted, |c| {
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
        .map_err(internal)?;
    verdict.map_err(|(code, text, at, at_cert)| {
        let err = match code {
            // X509_V_ERR_CERT_HAS_EXPIRED
            10 => TrustError::Expired {
                subject: at,
                not_after: at_cert
                    .as_ref()
                    .map(|c| crate::clock::asn1_iso(c.not_after()))
                    .unwrap_or_default(),
            },
            // X509_V_ERR_CERT_NOT_YET_VALID
            9 => TrustError::NotYetValid {
                subject: at,
                not_before: at_cert
                    .as_ref()
                    .map(|c| crate::clock::asn1_iso(c.not_before()))
                    .unwrap_or_default(),
            },
            // unable to get issuer / local issuer, self-signed, chain too long
            2 | 18 | 19 | 20 | 21 | 22 => TrustError::NoPath {
                subject: subject.clone(),
                detail: match &at_cert {
                    Some(c) => format!("{text} at {at}, issued by {}", describe_issuer(c)),
                    None => text.to_string(),
                },
            },
            _ => path_error(at, text),
        };
        (err, at_cert)
    })
}

/// Whether a current, correctly signed CRL from the issuer lists `cert` (`Some(date)`: revoked
/// on that date), or why no such CRL could be had.
fn crl_status(
    cert: &X509,
    issuer: &X509Ref,
    inputs: &TrustInputs<'_>,
    rec: &mut Recorder,
) -> Result<(Option<String>, i64), String> {
    let revoked = |crl: &X509Crl| {
        let status = match crl.get_by_cert(cert) {
            CrlStatus::Revoked(entry) => Some(crate::clock::asn1_iso(entry.revocation_date())),
            _ => None,
        };
        let next = crl.next_update().and_then(unix_time).unwrap_or(i64::MAX);
        (status, next)
    };
    let now = inputs.clock.unix_seconds();
    let issuer_key = issuer
        .public_key()
        .map_err(|_| format!("issuer {} has no readable key", describe(issuer)))?;
    let usable = |crl: &X509Crl| -> Result<(), String> {
        let same_issuer = crl
            .issuer_name()
            .try_cmp(cert.issuer_name())
            .is_ok_and(|o| o == Ordering::Equal);
        if !same_issuer || !crl.verify(&issuer_key).unwrap_or(false) {
            return Err(format!("CRL is not signed by {}", describe(issuer)));
        }
        match crl.next_update().and_then(unix_time) {
            Some(next) if next < now => Err(format!(
                "CRL from {} expired on {}",
                describe(issuer),
                crl.next_update()
                    .map(crate::clock::asn1_iso)
                    .unwrap_or_default()
            )),
            _ => Ok(()),
        }
    };
    let mut reasons = Vec::new();
    for crl in inputs.crls {
        match usable(crl) {
            Ok(()) => return Ok(revoked(crl)),
            Err(r) if r.contains("expired") => reasons.push(r),
            Err(_) => {}
        }
    }
    let Some(online) = inputs.online else {
        reasons.push("no CRL given and fetching is off (offline)".into());
        return Err(reasons.join("; "));
    };
    let urls = crl_urls(cert);
    if urls.is_empty() {
        reasons.push("the certificate names no http CRL distribution point".into());
    }
    for url in urls {
        let cached = online
            .store
            .and_then(|s| s.cached(&url).ok().flatten())
            .filter(|b| b.until > now);
        let (data, from_cache) = match cached {
            Some(b) => (b.data, true),
            None => match online.fetcher.fetch(&url) {
                Ok(d) => (d, false),
                Err(e) => {
                    reasons.push(format!("CRL at {e}"));
                    continue;
                }
            },
        };
        let Ok(crl) = X509Crl::from_der(&data).or_else(|_| X509Crl::from_pem(&data)) else {
            reasons.push(format!("{url} did not return a CRL"));
            continue;
        };
        match usable(&crl) {
            Ok(()) => {
                if let Some(store) = online.store.filter(|_| !from_cache) {
                    let until = crl.next_update().and_then(unix_time).unwrap_or(now);
                    let _ = store.put_cached(&CachedBlob {
                        url: url.clone(),
                        data,
                        fetched_at: now,
                        until,
                    });
                }
                rec.push(
                    "crl",
                    "pass",
                    format!(
                        "{} CRL {url}",
                        if from_cache { "cached" } else { "fetched" }
                    ),
                );
                return Ok(revoked(&crl));
            }
            Err(r) => reasons.push(format!("{url}: {r}")),
        }
    }
    Err(reasons.join("; "))
}

fn crl_urls(cert: &X509Ref) -> Vec<String> {
    cert.crl_distribution_points()
        .map(|dps| {
            dps.iter()
                .filter_map(|dp| dp.distpoint())
                .filter_map(|n| n.fullname())
                .flat_map(|names| {
                    names
                        .iter()
                        .filter_map(|g| g.uri().map(str::to_string))
                        .collect::<Vec<_>>()
                })
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                .collect()
        })
        .unwrap_or_default()
}

/// Revocation of every certificate below the anchor. Returns the warnings of a best-effort pass
/// and the earliest nextUpdate of the CRLs used.
fn check_revocation(
    chain: &[X509],
    inputs: &TrustInputs<'_>,
    rec: &mut Recorder,
) -> Result<(Vec<String>, i64), TrustError> {
    if inputs.revocation == RevocationPolicy::Off {
        rec.push(
            "revocation",
            "skip",
            "revocation checking is off (insecure)",
        );
        return Ok((Vec::new(), i64::MAX));
    }
    let mut warnings = Vec::new();
    let mut until = i64::MAX;
    // The last certificate is the anchor: trusted by configuration, not checked.
    for pair in chain.windows(2) {
        let (cert, issuer) = (&pair[0], &pair[1]);
        match crl_status(cert, issuer, inputs, rec) {
            Ok((Some(date), _)) => {
                let e = TrustError::Revoked {
                    subject: describe(cert),
                    date,
                    issuer: describe(issuer),
                };
                rec.push("revocation", "fail", e.to_string());
                return Err(e);
            }
            Ok((None, next)) => {
                until = until.min(next);
                rec.push(
                    "revocation",
                    "pass",
                    format!("{} is not revoked", describe(cert)),
                );
            }
            Err(reason) => {
                let e = TrustError::RevocationUnavailable {
                    subject: describe(cert),
                    detail: reason,
                };
                if inputs.revocation == RevocationPolicy::Require {
                    rec.push("revocation", "fail", e.to_string());
                    return Err(e);
                }
                rec.push("revocation", "warn", format!("{e} (best-effort: accepted)"));
                warnings.push(e.to_string());
            }
        }
    }
    Ok((warnings, until))
}

/// The certificate must carry one of `required` in its certificatePolicies extension.
fn check_policies(cert: &X509Ref, required: &[String]) -> Result<String, TrustError> {
    let found = certificate_policies(cert);
    for oid in required {
        if found.iter().any(|f| f == oid) {
            return Ok(oid.clone());
        }
    }
    Err(TrustError::Policy {
        subject: describe(cert),
        required: required.join(", "),
        found: if found.is_empty() {
            "none".into()
        } else {
            found.join(", ")
        },
    })
}

/// The policy OIDs of a certificate (x509-cert reads the extension; OpenSSL does not expose it).
fn certificate_policies(cert: &X509Ref) -> Vec<String> {
    use der::Decode;
    use x509_cert::ext::pkix::CertificatePolicies;
    let Ok(der) = cert.to_der() else {
        return Vec::new();
    };
    let Ok(parsed) = x509_cert::Certificate::from_der(&der) else {
        return Vec::new();
    };
    let policies_oid = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.32");
    parsed
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .filter(|e| e.extn_id == policies_oid)
        .filter_map(|e| CertificatePolicies::from_der(e.extn_value.as_bytes()).ok())
        .flat_map(|p| p.0.into_iter().map(|pi| pi.policy_identifier.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::trust::fetch::StaticFetcher;
    use crate::trust::test_cert as cert;

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
            intermediates: &inter,
            crls,
            ..TrustInputs::offline(anchors, &clock)
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

    fn der(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/certs/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    const BASE: &str = "http://127.0.0.1:18080";

    /// Everything the committed PKI's CRL and AIA URLs point at, served from memory.
    fn full_fetcher() -> StaticFetcher {
        let mut f = StaticFetcher::default();
        for n in [
            "root-a",
            "root-b",
            "intermediate-a",
            "intermediate-a2",
            "intermediate-b",
        ] {
            f = f
                .with(&format!("{BASE}/crl/{n}.crl"), der(&format!("{n}.crl")))
                .with(&format!("{BASE}/aia/{n}.cer"), der(&format!("{n}.cer")));
        }
        f
    }

    fn online_check(
        leaf: &str,
        who: &str,
        fetcher: &StaticFetcher,
        policy: RevocationPolicy,
        intermediates: &[X509],
        purpose: Purpose,
    ) -> ValidationReport {
        let anchors = [cert("root-a.pem"), cert("root-b.pem")];
        let clock = FixedClock::at_unix(IN_2030);
        let inputs = TrustInputs {
            intermediates,
            revocation: policy,
            online: Some(Online {
                fetcher,
                store: None,
                aia: true,
            }),
            ..TrustInputs::offline(&anchors, &clock)
        };
        validate_report(&cert(leaf), &inputs, purpose, Some(&addr(who)))
    }

    fn verdicts(r: &ValidationReport) -> Vec<(&'static str, &'static str)> {
        r.steps.iter().map(|s| (s.step, s.verdict)).collect()
    }

    #[test]
    fn missing_intermediate_is_fetched_through_aia_and_crls_from_distribution_points() {
        let f = full_fetcher();
        let r = online_check(
            "iis@hisp-b.example.pem",
            "iis@hisp-b.example",
            &f,
            RevocationPolicy::Require,
            &[],
            Purpose::Sign,
        );
        let path = r.outcome.as_ref().expect("valid through AIA");
        assert_eq!(path.chain.len(), 3);
        assert!(path.warnings.is_empty());
        let v = verdicts(&r);
        assert!(v.contains(&("aia", "pass")), "{v:?}");
        assert!(v.contains(&("crl", "pass")), "{v:?}");
        assert_eq!(
            v.iter().filter(|s| **s == ("revocation", "pass")).count(),
            2,
            "leaf and intermediate checked: {v:?}"
        );
    }

    #[test]
    fn dead_aia_url_names_the_url() {
        let f = StaticFetcher::default().failing(
            &format!("{BASE}/aia/intermediate-b.cer"),
            "connection refused",
        );
        let r = online_check(
            "iis@hisp-b.example.pem",
            "iis@hisp-b.example",
            &f,
            RevocationPolicy::Require,
            &[],
            Purpose::Sign,
        );
        let e = r.outcome.unwrap_err();
        assert!(
            matches!(e, TrustError::IntermediateUnavailable { .. }),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("aia/intermediate-b.cer could not be fetched: connection refused"),
            "{e}"
        );
    }

    #[test]
    fn fetched_crl_revokes_leaf_and_intermediate() {
        let f = full_fetcher();
        let inter = [cert("intermediate-b.pem")];
        let r = online_check(
            "revoked@hisp-b.example.pem",
            "revoked@hisp-b.example",
            &f,
            RevocationPolicy::Require,
            &inter,
            Purpose::Sign,
        );
        assert!(
            matches!(r.outcome, Err(TrustError::Revoked { .. })),
            "{:?}",
            r.outcome
        );
        let inter = [cert("intermediate-a2.pem")];
        let r = online_check(
            "revoked-intermediate-leaf@hisp-a.example.pem",
            "revoked-intermediate-leaf@hisp-a.example",
            &f,
            RevocationPolicy::Require,
            &inter,
            Purpose::Sign,
        );
        let e = r.outcome.unwrap_err();
        assert!(
            e.to_string().contains("Intermediate A2") && e.to_string().contains("revoked"),
            "{e}"
        );
    }

    #[test]
    fn unreachable_crl_fails_under_require_and_warns_under_best_effort() {
        let f = full_fetcher().failing(
            &format!("{BASE}/crl/intermediate-b.crl"),
            "connection refused",
        );
        let inter = [cert("intermediate-b.pem")];
        let r = online_check(
            "iis@hisp-b.example.pem",
            "iis@hisp-b.example",
            &f,
            RevocationPolicy::Require,
            &inter,
            Purpose::Sign,
        );
        let e = r.outcome.unwrap_err();
        assert!(matches!(e, TrustError::RevocationUnavailable { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("crl/intermediate-b.crl could not be fetched: connection refused"),
            "{e}"
        );
        let r = online_check(
            "iis@hisp-b.example.pem",
            "iis@hisp-b.example",
            &f,
            RevocationPolicy::BestEffort,
            &inter,
            Purpose::Sign,
        );
        let path = r.outcome.as_ref().expect("best-effort accepts");
        assert_eq!(path.warnings.len(), 1, "{:?}", path.warnings);
        assert!(verdicts(&r).contains(&("revocation", "warn")));
        let r = online_check(
            "iis@hisp-b.example.pem",
            "iis@hisp-b.example",
            &f,
            RevocationPolicy::Off,
            &inter,
            Purpose::Sign,
        );
        assert!(r.outcome.is_ok());
        assert!(verdicts(&r).contains(&("revocation", "skip")));
    }

    #[test]
    fn expired_crl_is_not_used() {
        let f = full_fetcher().with(
            &format!("{BASE}/crl/intermediate-b.crl"),
            der("intermediate-b.expired.crl"),
        );
        let inter = [cert("intermediate-b.pem")];
        let r = online_check(
            "iis@hisp-b.example.pem",
            "iis@hisp-b.example",
            &f,
            RevocationPolicy::Require,
            &inter,
            Purpose::Sign,
        );
        let e = r.outcome.unwrap_err();
        assert!(
            matches!(e, TrustError::RevocationUnavailable { .. })
                && e.to_string().contains("expired on"),
            "{e}"
        );
    }

    #[test]
    fn signing_certificate_cannot_receive_encrypted_mail() {
        let f = full_fetcher();
        let inter = [cert("intermediate-b.pem")];
        let r = online_check(
            "split@hisp-b.example.sign.pem",
            "split@hisp-b.example",
            &f,
            RevocationPolicy::Require,
            &inter,
            Purpose::Encrypt,
        );
        assert!(
            matches!(r.outcome, Err(TrustError::KeyUsage { .. })),
            "{:?}",
            r.outcome
        );
        let r = online_check(
            "split@hisp-b.example.encrypt.pem",
            "split@hisp-b.example",
            &f,
            RevocationPolicy::Require,
            &inter,
            Purpose::Encrypt,
        );
        assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    }

    #[test]
    fn required_policy_missing_is_refused() {
        let anchors = [cert("root-b.pem")];
        let inter = [cert("intermediate-b.pem")];
        let clock = FixedClock::at_unix(IN_2030);
        let required = ["1.3.6.1.4.1.41179.0.1.2".to_string()];
        let inputs = TrustInputs {
            intermediates: &inter,
            required_policies: &required,
            ..TrustInputs::offline(&anchors, &clock)
        };
        let r = validate_report(
            &cert("iis@hisp-b.example.pem"),
            &inputs,
            Purpose::Sign,
            Some(&addr("iis@hisp-b.example")),
        );
        let e = r.outcome.unwrap_err();
        assert!(matches!(e, TrustError::Policy { .. }), "{e}");
        assert!(e.to_string().contains("1.3.6.1.4.1.41179.0.1.2"), "{e}");
    }
}
