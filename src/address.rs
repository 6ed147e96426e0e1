//! `DirectAddress`: a Direct address (`local@domain`) parsed once at the edge.
//!
//! Comparison is case-insensitive in both parts: the Applicability Statement binds certificates to
//! addresses without regard to case, and HISPs fold the local part.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a Direct address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{input}' is not a Direct address ({reason}); expected local-part@health-domain")]
pub struct AddressError {
    input: String,
    reason: &'static str,
}

/// A Direct address, stored as given; equality ignores case.
#[derive(Clone, Debug)]
pub struct DirectAddress {
    local: String,
    domain: String,
}

impl DirectAddress {
    /// Parse a bare address or a mailbox such as `"Clinic A" <ehr@hisp-a.example>`.
    ///
    /// ```
    /// use direct_agent::address::DirectAddress;
    /// let a = DirectAddress::parse("\"Clinic A\" <EHR@hisp-a.example>").unwrap();
    /// assert_eq!(a, DirectAddress::parse("ehr@HISP-A.example").unwrap());
    /// assert!(DirectAddress::parse("not-an-address").is_err());
    /// ```
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let err = |reason| AddressError {
            input: input.chars().take(200).collect(),
            reason,
        };
        let mut s = input.trim();
        if let (Some(open), true) = (s.rfind('<'), s.ends_with('>')) {
            s = &s[open + 1..s.len() - 1];
        }
        let s = s.trim();
        let (local, domain) = s.rsplit_once('@').ok_or_else(|| err("no '@'"))?;
        if local.is_empty() {
            return Err(err("empty local part"));
        }
        if domain.is_empty() || !domain.contains('.') {
            return Err(err("the domain must be a fully qualified name"));
        }
        let bad = |c: char| c.is_whitespace() || c.is_control() || "<>()[],;:\\\"".contains(c);
        if local.chars().any(bad) || domain.chars().any(bad) || domain.contains('@') {
            return Err(err("contains characters not allowed in an address"));
        }
        if !domain
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(err("the domain is not a valid host name"));
        }
        Ok(DirectAddress {
            local: local.to_string(),
            domain: domain.to_string(),
        })
    }

    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// The health domain, as given.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether the domain equals `domain`, ignoring case.
    pub fn in_domain(&self, domain: &str) -> bool {
        self.domain
            .eq_ignore_ascii_case(domain.trim_end_matches('.'))
    }

    /// The lower-cased form used as a key.
    pub fn canonical(&self) -> String {
        format!("{}@{}", self.local, self.domain).to_ascii_lowercase()
    }
}

impl PartialEq for DirectAddress {
    fn eq(&self, other: &Self) -> bool {
        self.canonical() == other.canonical()
    }
}
impl Eq for DirectAddress {}

impl std::hash::Hash for DirectAddress {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.canonical().hash(state)
    }
}

impl fmt::Display for DirectAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl FromStr for DirectAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DirectAddress::parse(s)
    }
}

/// Parse a header value holding one or more comma-separated mailboxes.
pub fn parse_list(value: &str) -> Vec<Result<DirectAddress, AddressError>> {
    split_mailboxes(value)
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| DirectAddress::parse(&p))
        .collect()
}

/// Split on commas outside quotes and angle brackets.
fn split_mailboxes(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut angle) = (false, false);
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bare_and_named_mailboxes() {
        let a = DirectAddress::parse("ehr@hisp-a.example").unwrap();
        assert_eq!(a.domain(), "hisp-a.example");
        let b = DirectAddress::parse("\"Clinic, A\" <EHR@HISP-A.example>").unwrap();
        assert_eq!(a, b, "comparison ignores case");
        assert_eq!(
            b.to_string(),
            "EHR@HISP-A.example",
            "display keeps the case given"
        );
    }

    #[test]
    fn refuses_bad_addresses_with_reason() {
        for bad in [
            "",
            "nobody",
            "@x.example",
            "a@",
            "a@localhost",
            "a b@x.example",
            "a@x..y",
        ] {
            let e = DirectAddress::parse(bad).unwrap_err();
            assert!(e.to_string().contains("not a Direct address"), "{bad}: {e}");
        }
    }

    #[test]
    fn splits_lists_outside_quotes() {
        let v = parse_list("\"Doe, J\" <j@a.example>, k@b.example");
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].as_ref().unwrap().to_string(), "k@b.example");
    }
}
