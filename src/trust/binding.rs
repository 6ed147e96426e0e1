//! Address and domain binding (Applicability Statement §4.1): an address-bound certificate names
//! the Direct address in subjectAltName rfc822Name (or the subject's emailAddress); a domain-bound
//! one names the health domain in dNSName. Address binding wins over domain binding.

use openssl::nid::Nid;
use openssl::x509::X509Ref;

use super::{TrustError, describe};
use crate::address::DirectAddress;

/// How a certificate is bound to an address.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Binding {
    /// rfc822Name (or subject e-mail) equals the address.
    Address,
    /// dNSName equals the address's domain.
    Domain,
}

/// The binding of `cert` to `address`, or why there is none.
pub fn binding_for(cert: &X509Ref, address: &DirectAddress) -> Result<Binding, TrustError> {
    let mut emails = Vec::new();
    let mut dns = Vec::new();
    if let Some(names) = cert.subject_alt_names() {
        for n in names.iter() {
            if let Some(e) = n.email() {
                emails.push(e.to_string());
            }
            if let Some(d) = n.dnsname() {
                dns.push(d.to_string());
            }
        }
    }
    for e in cert.subject_name().entries_by_nid(Nid::PKCS9_EMAILADDRESS) {
        if let Ok(s) = e.data().to_string() {
            emails.push(s);
        }
    }
    if emails
        .iter()
        .any(|e| DirectAddress::parse(e).is_ok_and(|a| &a == address))
    {
        return Ok(Binding::Address);
    }
    if dns.iter().any(|d| address.in_domain(d)) {
        return Ok(Binding::Domain);
    }
    let mut bound: Vec<String> = emails;
    bound.extend(dns);
    Err(TrustError::Binding {
        subject: describe(cert),
        bound: if bound.is_empty() {
            "no address or domain (no rfc822Name or dNSName)".into()
        } else {
            bound.join(", ")
        },
        expected: address.to_string(),
    })
}
