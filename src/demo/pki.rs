//! A throwaway PKI for `direct-agent demo`, made in memory with OpenSSL: per HISP a root and an
//! intermediate CA, address-bound leaves (digitalSignature + keyEncipherment, emailProtection,
//! SAN rfc822Name), and a root nobody trusts with a leaf impersonating the EHR (the demo's bad
//! message). RSA 2048, SHA-256, valid from an hour ago for 30 days (CAs: a year). The leaves name
//! no CRL distribution point, so the demo configurations use `revocation = "best-effort"`.

use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder};

/// A certificate and its key.
pub struct Issued {
    pub key: PKey<Private>,
    pub cert: X509,
}

fn serial() -> Result<Asn1Integer, ErrorStack> {
    let mut bn = BigNum::new()?;
    bn.rand(120, MsbOption::MAYBE_ZERO, false)?;
    bn.to_asn1_integer()
}

fn builder(
    cn: &str,
    org: &str,
    key: &PKey<Private>,
    issuer: Option<&Issued>,
    days: u32,
) -> Result<X509Builder, ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("O", org)?;
    name.append_entry_by_text("CN", cn)?;
    let name = name.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    match issuer {
        Some(i) => b.set_issuer_name(i.cert.subject_name())?,
        None => b.set_issuer_name(&name)?,
    }
    b.set_pubkey(key)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (from, until) = (
        Asn1Time::from_unix(now - 3600)?,
        Asn1Time::days_from_now(days)?,
    );
    b.set_not_before(&from)?;
    b.set_not_after(&until)?;
    Ok(b)
}

/// A CA: self-signed when `issuer` is None.
pub fn ca(cn: &str, org: &str, issuer: Option<&Issued>) -> Result<Issued, ErrorStack> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut b = builder(cn, org, &key, issuer, 365)?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    let ski =
        SubjectKeyIdentifier::new().build(&b.x509v3_context(issuer.map(|i| &*i.cert), None))?;
    b.append_extension(ski)?;
    if let Some(i) = issuer {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&i.cert), None))?;
        b.append_extension(aki)?;
    }
    let signer = issuer.map_or(&key, |i| &i.key);
    b.sign(signer, MessageDigest::sha256())?;
    let cert = b.build();
    Ok(Issued { key, cert })
}

/// An address-bound leaf for signing and encryption.
pub fn leaf(address: &str, org: &str, issuer: &Issued) -> Result<Issued, ErrorStack> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut b = builder(address, org, &key, Some(issuer), 30)?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()?,
    )?;
    b.append_extension(ExtendedKeyUsage::new().email_protection().build()?)?;
    let san = SubjectAlternativeName::new()
        .email(address)
        .build(&b.x509v3_context(Some(&issuer.cert), None))?;
    b.append_extension(san)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&issuer.cert), None))?;
    b.append_extension(ski)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(Some(&issuer.cert), None))?;
    b.append_extension(aki)?;
    b.sign(&issuer.key, MessageDigest::sha256())?;
    let cert = b.build();
    Ok(Issued { key, cert })
}

/// The demo's PKI, written as PEM files.
pub struct DemoPki {
    pub dir: PathBuf,
}

impl DemoPki {
    /// Issue everything into `dir` (created). Key files are written with mode 0600.
    pub fn create(dir: &Path) -> Result<DemoPki, String> {
        let err = |what: &str, e: ErrorStack| format!("demo PKI: cannot make {what}: {e}");
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let root_a = ca("HISP A Demo Root", "HISP A Demo", None).map_err(|e| err("root A", e))?;
        let int_a = ca("HISP A Demo Intermediate", "HISP A Demo", Some(&root_a))
            .map_err(|e| err("intermediate A", e))?;
        let root_b = ca("HISP B Demo Root", "HISP B Demo", None).map_err(|e| err("root B", e))?;
        let int_b = ca("HISP B Demo Intermediate", "HISP B Demo", Some(&root_b))
            .map_err(|e| err("intermediate B", e))?;
        let ehr = leaf("ehr@hisp-a.example", "HISP A Demo", &int_a)
            .map_err(|e| err("ehr@hisp-a.example", e))?;
        let iis = leaf("iis@hisp-b.example", "HISP B Demo", &int_b)
            .map_err(|e| err("iis@hisp-b.example", e))?;
        let rogue_root =
            ca("Untrusted Demo Root", "Nobody", None).map_err(|e| err("untrusted root", e))?;
        let rogue = leaf("ehr@hisp-a.example", "Nobody", &rogue_root)
            .map_err(|e| err("untrusted leaf", e))?;
        let pki = DemoPki {
            dir: dir.to_path_buf(),
        };
        for (name, c) in [
            ("root-a", &root_a),
            ("intermediate-a", &int_a),
            ("root-b", &root_b),
            ("intermediate-b", &int_b),
        ] {
            pki.write_cert(name, &c.cert)?;
        }
        for (name, c, chain) in [
            ("ehr", &ehr, &int_a),
            ("iis", &iis, &int_b),
            ("rogue", &rogue, &rogue_root),
        ] {
            let mut pem = c.cert.to_pem().map_err(|e| err(name, e))?;
            pem.extend(chain.cert.to_pem().map_err(|e| err(name, e))?);
            write(&pki.path(&format!("{name}.pem")), &pem, false)?;
            let key = c.key.private_key_to_pem_pkcs8().map_err(|e| err(name, e))?;
            write(&pki.path(&format!("{name}.key")), &key, true)?;
        }
        Ok(pki)
    }

    /// `dir/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write_cert(&self, name: &str, cert: &X509) -> Result<(), String> {
        let pem = cert
            .to_pem()
            .map_err(|e| format!("demo PKI: {name}: {e}"))?;
        write(&self.path(&format!("{name}.pem")), &pem, false)
    }
}

fn write(path: &Path, data: &[u8], secret: bool) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_chain_to_their_roots() {
        let root = ca("R", "O", None).unwrap();
        let int = ca("I", "O", Some(&root)).unwrap();
        let l = leaf("a@b.example", "O", &int).unwrap();
        assert!(l.cert.verify(&int.key).unwrap());
        assert!(int.cert.verify(&root.key).unwrap());
        let san = l.cert.subject_alt_names().unwrap();
        assert_eq!(san.iter().next().unwrap().email(), Some("a@b.example"));
    }
}
