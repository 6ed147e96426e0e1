//! Trust decisions about certificates: usage, key strength, validity, path to an anchor,
//! revocation and address binding. Pure functions of certificates, CRLs and a [`Clock`]; nothing
//! here touches the network (fetching CRLs and AIA certificates belongs at the edge).
//!
//! [`Clock`]: crate::clock::Clock

mod binding;
pub mod bundle;
mod cache;
mod checks;
mod facts;
pub mod fetch;
mod validate;

pub use binding::{Binding, binding_for};
pub use cache::ValidationCache;
pub use checks::{Purpose, check_key_strength, check_key_usage, check_validity};
pub use facts::{Facts, facts};
pub use validate::{
    Online, Step, TrustInputs, ValidatedPath, ValidationReport, parse_certs, validate,
    validate_report,
};

use openssl::x509::X509Ref;

/// Why a certificate is not trusted for a use. Each message names the certificate and what to do.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustError {
    /// Outside its validity period at the clock's time.
    #[error("certificate {subject} expired on {not_after}")]
    Expired { subject: String, not_after: String },
    /// Not valid yet.
    #[error("certificate {subject} is not valid until {not_before}")]
    NotYetValid { subject: String, not_before: String },
    /// The key usage extension forbids the purpose.
    #[error("certificate {subject} may not be used to {purpose}: its key usage lacks {needed}")]
    KeyUsage {
        subject: String,
        purpose: &'static str,
        needed: &'static str,
    },
    /// Key too small or of an unsupported type.
    #[error(
        "certificate {subject} has a {detail}; Direct requires RSA of at least 2048 bits or EC P-256/P-384"
    )]
    WeakKey { subject: String, detail: String },
    /// No chain to a configured anchor.
    #[error(
        "certificate {subject} has no path to a configured trust anchor ({detail}); add its issuer's CA as an anchor if you trust it"
    )]
    NoPath { subject: String, detail: String },
    /// The issuer needed to complete the path was neither sent nor obtainable through AIA.
    #[error(
        "certificate {subject} cannot be chained: its issuer's certificate is missing ({detail}); the sender must include its intermediates or publish them at the AIA URL"
    )]
    IntermediateUnavailable { subject: String, detail: String },
    /// A certificate in the path is revoked.
    #[error("certificate {subject} was revoked on {date} (CRL issued by {issuer})")]
    Revoked {
        subject: String,
        date: String,
        issuer: String,
    },
    /// Bound to another address or domain.
    #[error("certificate {subject} is bound to {bound}, not to {expected}")]
    Binding {
        subject: String,
        bound: String,
        expected: String,
    },
    /// No current CRL could be had under the `require` policy.
    #[error(
        "revocation of certificate {subject} cannot be checked: {detail}; fix the CRL distribution point or set [trust] revocation = \"best-effort\""
    )]
    RevocationUnavailable { subject: String, detail: String },
    /// The certificate carries none of the required policies.
    #[error(
        "certificate {subject} carries none of the required certificate policies ({required}); it has: {found}"
    )]
    Policy {
        subject: String,
        required: String,
        found: String,
    },
    /// Any other path-validation failure, in OpenSSL's words.
    #[error("certificate {subject} failed path validation: {detail}")]
    Path { subject: String, detail: String },
}

/// "CN=..., O=..." for messages and reports.
pub fn describe(cert: &X509Ref) -> String {
    match facts(cert) {
        Some(f) => f.subject.clone(),
        None => match facts::describe_name(cert.subject_name()) {
            s if s.is_empty() => "(empty subject)".into(),
            s => s,
        },
    }
}

/// The issuer in the same form.
pub fn describe_issuer(cert: &X509Ref) -> String {
    facts::describe_name(cert.issuer_name())
}

/// SHA-256 fingerprint of the DER certificate, lower-case hex with colons ("" if OpenSSL cannot
/// digest it).
pub fn fingerprint(cert: &X509Ref) -> String {
    facts(cert)
        .map(|f| f.fingerprint.clone())
        .unwrap_or_default()
}

/// A certificate of the committed test PKI (`certs/`), for unit tests.
#[cfg(test)]
pub(crate) fn test_cert(name: &str) -> openssl::x509::X509 {
    let path = format!("{}/certs/{name}", env!("CARGO_MANIFEST_DIR"));
    openssl::x509::X509::from_pem(&std::fs::read(path).expect("committed test certificate"))
        .expect("committed test certificate is PEM")
}
