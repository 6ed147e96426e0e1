//! LDAP for discovery through ldap3: anonymous bind, base DN from the rootDSE `namingContexts`,
//! search `mail=<address or domain>` for `userCertificate;binary`, `userCertificate` and
//! `userSMIMECertificate`, with short connect and operation timeouts so a dead server is skipped
//! quickly.

use std::net::SocketAddr;
use std::time::Duration;

use ldap3::{LdapConn, LdapConnSettings, Scope, SearchEntry, ldap_escape};

use super::{Directory, LookupError};

const CERT_ATTRS: [&str; 3] = [
    "userCertificate;binary",
    "userCertificate",
    "userSMIMECertificate",
];

/// An LDAP client for certificate discovery.
pub struct LdapDirectory {
    pub timeout: Duration,
}

impl Directory for LdapDirectory {
    fn certificates(&self, addr: SocketAddr, mail: &str) -> Result<Vec<Vec<u8>>, LookupError> {
        let url = format!("ldap://{addr}");
        let err = |reason: String| LookupError {
            what: format!("LDAP {url}"),
            reason,
        };
        let settings = LdapConnSettings::new().set_conn_timeout(self.timeout);
        let mut conn = LdapConn::with_settings(settings, &url).map_err(|e| err(describe(&e)))?;
        let root = conn
            .with_timeout(self.timeout)
            .search("", Scope::Base, "(objectClass=*)", vec!["namingContexts"])
            .and_then(|r| r.success())
            .map_err(|e| err(format!("rootDSE: {}", describe(&e))))?;
        let mut bases: Vec<String> = root
            .0
            .into_iter()
            .flat_map(|e| {
                SearchEntry::construct(e)
                    .attrs
                    .into_iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("namingContexts"))
                    .flat_map(|(_, v)| v)
            })
            .collect();
        if bases.is_empty() {
            bases.push(String::new());
        }
        let m = ldap_escape(mail);
        let filter = format!(
            "(&(mail={m})(|(userCertificate;binary=*)(userCertificate=*)(userSMIMECertificate=*)))"
        );
        let mut out = Vec::new();
        for base in bases {
            let found = conn
                .with_timeout(self.timeout)
                .search(&base, Scope::Subtree, &filter, CERT_ATTRS.to_vec())
                .and_then(|r| r.success())
                .map_err(|e| err(format!("search under {base}: {}", describe(&e))))?;
            for entry in found.0 {
                let entry = SearchEntry::construct(entry);
                for (name, values) in entry.bin_attrs {
                    if CERT_ATTRS.iter().any(|a| a.eq_ignore_ascii_case(&name)) {
                        out.extend(values);
                    }
                }
                // A value that happens to be valid UTF-8 lands in `attrs`.
                for (name, values) in entry.attrs {
                    if CERT_ATTRS.iter().any(|a| a.eq_ignore_ascii_case(&name)) {
                        out.extend(values.into_iter().map(String::into_bytes));
                    }
                }
            }
        }
        let _ = conn.unbind();
        Ok(out)
    }
}

fn describe(e: &ldap3::LdapError) -> String {
    match e {
        ldap3::LdapError::Io { source }
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            "connection refused".into()
        }
        ldap3::LdapError::Timeout { .. } => "timed out".into(),
        other => other.to_string(),
    }
}
