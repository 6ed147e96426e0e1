//! A test PKI made at test time with the `openssl` CLI (as certs/generate.sh does, but with dates
//! relative to now and CRL/AIA URLs on the test's own loopback HTTP server):
//!
//! - `root`: "DCDT Test Root", the anchor;
//! - `intermediate`: issued by the root; given to the agent (`[[domain]] intermediates`) and
//!   also served through AIA;
//! - `aia-intermediate`: issued by the root, reachable ONLY through its leaves' AIA caIssuers URL
//!   (DCDT D18);
//! - `aia-unserved`: issued by the root, its AIA URL answers 404 (its leaves cannot be validated);
//! - `other-root`: a root that is not an anchor (untrusted leaves).
//!
//! Every CA's CRL is served at `/crl/NAME.crl` (DER) and its certificate at `/aia/NAME.cer` (DER),
//! except the two AIA-only cases above. Leaves carry SAN rfc822Name (`email:`) or dNSName
//! (`DNS:`), keyUsage digitalSignature,keyEncipherment, extendedKeyUsage emailProtection, a CRL
//! distribution point and AIA caIssuers. Leaves of one key size share a key (set-up speed); each
//! certificate is still distinct.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::hash::MessageDigest;
use openssl::x509::X509;

use super::http::HttpServer;
use super::run;

const DAY: i64 = 86_400;

/// How long a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// now-1d .. now+365d
    Valid,
    /// now-400d .. now-35d
    Expired,
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub label: String,
    /// `email:ADDRESS` or `DNS:DOMAIN` (openssl subjectAltName syntax).
    pub san: String,
    /// A CA name: `intermediate`, `aia-intermediate`, `aia-unserved`, `other-root`.
    pub issuer: String,
    pub validity: Validity,
    pub bits: u32,
    pub revoked: bool,
    /// keyUsage, default `digitalSignature,keyEncipherment`.
    pub key_usage: Option<String>,
}

/// An issued certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub der: Vec<u8>,
    pub pem: PathBuf,
    /// SHA-256 of the DER, lower-case hex with colons (the agent's format).
    pub fingerprint: String,
    pub subject: String,
}

pub struct Pki {
    dir: tempfile::TempDir,
    base_url: String,
    pub cas: BTreeMap<String, Issued>,
    pub leaves: BTreeMap<String, Issued>,
}

/// `YYYYMMDDHHMMSSZ` for a Unix time (days-from-civil, inverted; proleptic Gregorian).
pub fn asn1_time(unix: i64) -> String {
    let days = unix.div_euclid(DAY);
    let secs = unix.rem_euclid(DAY);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn fingerprint(der: &[u8]) -> String {
    let cert = X509::from_der(der).expect("DER certificate made by openssl");
    let digest = cert.digest(MessageDigest::sha256()).expect("sha256");
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn subject_of(der: &[u8]) -> String {
    let cert = X509::from_der(der).expect("DER certificate made by openssl");
    cert.subject_name()
        .entries()
        .map(|e| {
            format!(
                "{}={}",
                e.object().nid().short_name().unwrap_or("?"),
                String::from_utf8_lossy(e.data().as_slice())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Pki {
    /// Make the CAs and publish their certificates and (empty) CRLs on `http`.
    pub fn new(http: &HttpServer) -> Pki {
        super::require_program("openssl", "apt-get install -y openssl");
        let dir = tempfile::TempDir::new().expect("temp dir");
        let mut pki = Pki {
            dir,
            base_url: format!("http://127.0.0.1:{}", http.port),
            cas: BTreeMap::new(),
            leaves: BTreeMap::new(),
        };
        let t = now();
        let (start, end) = (asn1_time(t - 800 * DAY), asn1_time(t + 3650 * DAY));
        pki.make_ca("root", "DCDT Test Root", None, &start, &end);
        pki.make_ca(
            "intermediate",
            "DCDT Test Intermediate",
            Some("root"),
            &start,
            &end,
        );
        pki.make_ca(
            "aia-intermediate",
            "DCDT Test AIA-only Intermediate",
            Some("root"),
            &start,
            &end,
        );
        pki.make_ca(
            "aia-unserved",
            "DCDT Test Unreachable Intermediate",
            Some("root"),
            &start,
            &end,
        );
        pki.make_ca("other-root", "DCDT Untrusted Root", None, &start, &end);
        pki
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn ca_dir(&self, name: &str) -> PathBuf {
        self.path(&format!("ca/{name}"))
    }

    fn init_ca(&self, name: &str) {
        let d = self.ca_dir(name);
        fs::create_dir_all(d.join("newcerts")).expect("ca dir");
        fs::write(d.join("index.txt"), "").expect("index");
        fs::write(d.join("index.txt.attr"), "unique_subject = no\n").expect("attr");
        fs::write(d.join("crlnumber"), "1000\n").expect("crlnumber");
        fs::write(
            d.join("ca.cnf"),
            format!(
                r#"[ ca ]
default_ca = CA_default

[ CA_default ]
dir              = {d}
database         = $dir/index.txt
new_certs_dir    = $dir/newcerts
crlnumber        = $dir/crlnumber
serial           = $dir/serial
certificate      = {cert}
private_key      = {key}
default_md       = sha256
default_crl_days = 30
policy           = policy_any
unique_subject   = no
copy_extensions  = none
email_in_dn      = no
crl_extensions   = crl_ext

[ policy_any ]
organizationName = optional
commonName       = supplied

[ crl_ext ]
authorityKeyIdentifier = keyid:always
"#,
                d = d.display(),
                cert = self.path(&format!("{name}.pem")).display(),
                key = self.path(&format!("{name}.key")).display(),
            ),
        )
        .expect("ca.cnf");
    }

    fn new_key_and_csr(&self, name: &str, bits: u32, cn: &str) {
        run(Command::new("openssl")
            .args(["req", "-new", "-nodes", "-newkey"])
            .arg(format!("rsa:{bits}"))
            .arg("-keyout")
            .arg(self.path(&format!("{name}.key")))
            .arg("-subj")
            .arg(format!("/O=DCDT Test/CN={cn}"))
            .arg("-out")
            .arg(self.path(&format!("{name}.csr"))));
    }

    /// `openssl ca` with the extensions `exts`; `ca` None = self-signed by `name`.
    fn sign(&self, ca: Option<&str>, name: &str, start: &str, end: &str, exts: &str) -> Issued {
        let ext = self.path(&format!("{name}.ext"));
        fs::write(&ext, format!("[ ext ]\n{exts}\n")).expect("ext file");
        let pem = self.path(&format!("{name}.pem"));
        let mut cmd = Command::new("openssl");
        cmd.args(["ca", "-batch", "-notext", "-config"]);
        match ca {
            None => {
                cmd.arg(self.ca_dir(name).join("ca.cnf"))
                    .arg("-selfsign")
                    .arg("-keyfile")
                    .arg(self.path(&format!("{name}.key")));
            }
            Some(ca) => {
                cmd.arg(self.ca_dir(ca).join("ca.cnf"));
            }
        }
        cmd.arg("-in")
            .arg(self.path(&format!("{name}.csr")))
            .arg("-out")
            .arg(&pem)
            .args(["-rand_serial", "-preserveDN", "-md", "sha256"])
            .args(["-startdate", start, "-enddate", end])
            .arg("-extfile")
            .arg(&ext)
            .args(["-extensions", "ext"]);
        run(&mut cmd);
        let der = run(Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&pem));
        Issued {
            fingerprint: fingerprint(&der),
            subject: subject_of(&der),
            der,
            pem,
        }
    }

    fn make_ca(&mut self, name: &str, cn: &str, issuer: Option<&str>, start: &str, end: &str) {
        self.new_key_and_csr(name, 2048, cn);
        self.init_ca(name);
        let exts = match issuer {
            None => "basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n".to_string(),
            Some(i) => format!(
                "basicConstraints = critical,CA:TRUE,pathlen:0\nkeyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\ncrlDistributionPoints = URI:{b}/crl/{i}.crl\nauthorityInfoAccess = caIssuers;URI:{b}/aia/{i}.cer\n",
                b = self.base_url
            ),
        };
        let issued = self.sign(issuer, name, start, end, &exts);
        self.cas.insert(name.to_string(), issued);
    }

    /// Issue a leaf.
    pub fn issue(&mut self, spec: &LeafSpec) -> Issued {
        assert!(
            self.cas.contains_key(&spec.issuer),
            "certificate {}: unknown issuer {:?} (one of {:?})",
            spec.label,
            spec.issuer,
            self.cas.keys().collect::<Vec<_>>()
        );
        let t = now();
        let (start, end) = match spec.validity {
            Validity::Valid => (asn1_time(t - DAY), asn1_time(t + 365 * DAY)),
            Validity::Expired => (asn1_time(t - 400 * DAY), asn1_time(t - 35 * DAY)),
        };
        let name = format!("leaf-{}", spec.label);
        let cn = spec
            .san
            .split_once(':')
            .map(|(_, v)| v)
            .unwrap_or(&spec.san);
        // Leaves share one key per size (generating ~40 RSA keys would dominate the test's
        // set-up time); every certificate still differs (serial, subject, dates).
        let key = self.path(&format!("leaf-key-{}.key", spec.bits));
        if !key.exists() {
            run(Command::new("openssl")
                .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
                .arg(format!("rsa_keygen_bits:{}", spec.bits))
                .arg("-out")
                .arg(&key));
        }
        run(Command::new("openssl")
            .args(["req", "-new", "-key"])
            .arg(&key)
            .arg("-subj")
            .arg(format!("/O=DCDT Test/CN={cn} ({})", spec.label))
            .arg("-out")
            .arg(self.path(&format!("{name}.csr"))));
        let i = &spec.issuer;
        let ku = spec
            .key_usage
            .as_deref()
            .unwrap_or("digitalSignature,keyEncipherment");
        let exts = format!(
            "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,{ku}\nextendedKeyUsage = emailProtection\nsubjectAltName = {san}\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\ncrlDistributionPoints = URI:{b}/crl/{i}.crl\nauthorityInfoAccess = caIssuers;URI:{b}/aia/{i}.cer\n",
            san = spec.san,
            b = self.base_url
        );
        let issued = self.sign(Some(i), &name, &start, &end, &exts);
        if spec.revoked {
            run(Command::new("openssl")
                .args(["ca", "-batch", "-config"])
                .arg(self.ca_dir(i).join("ca.cnf"))
                .arg("-revoke")
                .arg(&issued.pem)
                .args(["-crl_reason", "keyCompromise"]));
        }
        self.leaves.insert(spec.label.clone(), issued.clone());
        issued
    }

    /// Write every CA's CRL (after all revocations) and certificate to the HTTP server, leaving
    /// out the AIA certificates that must not be found there.
    pub fn publish(&self, http: &HttpServer) {
        for name in self.cas.keys() {
            let crl_pem = self.path(&format!("{name}.crl.pem"));
            run(Command::new("openssl")
                .args(["ca", "-batch", "-gencrl", "-md", "sha256", "-crldays", "30"])
                .arg("-config")
                .arg(self.ca_dir(name).join("ca.cnf"))
                .arg("-out")
                .arg(&crl_pem));
            let der = run(Command::new("openssl")
                .args(["crl", "-outform", "DER", "-in"])
                .arg(&crl_pem));
            http.put(&format!("crl/{name}.crl"), &der);
            if name != "aia-unserved" {
                http.put(&format!("aia/{name}.cer"), &self.cas[name].der);
            }
        }
    }

    /// The PEM file of a CA.
    pub fn ca_pem(&self, name: &str) -> &Path {
        &self.cas[name].pem
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn asn1_time_known_dates() {
        assert_eq!(super::asn1_time(0), "19700101000000Z");
        assert_eq!(super::asn1_time(951_782_400), "20000229000000Z");
        assert_eq!(super::asn1_time(1_735_689_599), "20241231235959Z");
    }
}
