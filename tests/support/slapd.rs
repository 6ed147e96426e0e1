//! OpenLDAP slapd on loopback: a private slapd.conf (core, cosine and inetorgperson schemas from
//! /etc/ldap/schema, one mdb database with suffix `dc=test` in a temp dir), loaded with `slapadd`,
//! then `slapd -d 0` in the foreground under `spawn_tied` (stopped on drop or when the test
//! process dies). Reads are anonymous (slapd's
//! default access); the rootDSE lists `namingContexts: dc=test`.
//!
//! slapd runs as whoever runs the tests (root in CI containers is fine: without `-u`/`-g` it
//! does not change user).

use std::fmt::Write as _;
use std::fs;
use std::process::Command;
use std::time::Duration;

use openssl::base64::encode_block;
use tempfile::TempDir;

use super::{ChildGuard, free_port, program, require_program, run, spawn_tied, wait_for_tcp};

pub const INSTALL: &str = "DEBIAN_FRONTEND=noninteractive apt-get install -y slapd ldap-utils";
pub const SUFFIX: &str = "dc=test";

/// One directory entry: an inetOrgPerson with `mail` and binary attribute values.
#[derive(Debug, Clone)]
pub struct Entry {
    pub mail: String,
    /// (attribute description, value), e.g. ("userCertificate;binary", DER).
    pub values: Vec<(String, Vec<u8>)>,
}

pub struct Slapd {
    _child: ChildGuard,
    _dir: TempDir,
    pub port: u16,
}

fn ldif(entries: &[Entry]) -> String {
    let mut s = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: test\no: DCDT test directory\n\n"
    );
    for (i, e) in entries.iter().enumerate() {
        let _ = write!(
            s,
            "dn: cn=entry{i},{SUFFIX}\nobjectClass: inetOrgPerson\ncn: entry{i}\nsn: {mail}\nmail: {mail}\n",
            mail = e.mail
        );
        for (attr, value) in &e.values {
            // LDIF continuation lines start with one space.
            let b64 = encode_block(value);
            let _ = writeln!(s, "{attr}:: {b64}");
        }
        s.push('\n');
    }
    s
}

impl Slapd {
    pub fn start(entries: &[Entry]) -> Slapd {
        require_program("slapd", INSTALL);
        require_program("slapadd", INSTALL);
        let dir = TempDir::new().expect("temp dir");
        let d = dir.path();
        fs::create_dir_all(d.join("db")).expect("db dir");
        let modulepath = ["/usr/lib/ldap", "/usr/lib64/openldap", "/usr/lib/openldap"]
            .into_iter()
            .find(|p| {
                std::path::Path::new(p).join("back_mdb.la").exists()
                    || std::path::Path::new(p).join("back_mdb.so").exists()
            })
            .unwrap_or("/usr/lib/ldap");
        let conf = d.join("slapd.conf");
        fs::write(
            &conf,
            format!(
                r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath {modulepath}
moduleload back_mdb
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
loglevel 0

database mdb
maxsize 104857600
suffix "{SUFFIX}"
rootdn "cn=admin,{SUFFIX}"
directory {d}/db
"#,
                d = d.display()
            ),
        )
        .expect("slapd.conf");
        let ldif_path = d.join("data.ldif");
        fs::write(&ldif_path, ldif(entries)).expect("ldif");
        run(Command::new(program("slapadd"))
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&ldif_path));
        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let log = d.join(format!("slapd-{attempt}.log"));
            let args: Vec<String> = vec![
                "-f".into(),
                conf.display().to_string(),
                "-h".into(),
                format!("ldap://127.0.0.1:{port}/"),
                // Any -d keeps slapd in the foreground, as the wrapper's child.
                "-d".into(),
                "0".into(),
            ];
            let mut child = spawn_tied(&program("slapd"), &args, &log)
                .unwrap_or_else(|e| panic!("cannot start slapd under bash ({e}): {INSTALL}"));
            match wait_for_tcp(&mut child, port, Duration::from_secs(10), Some(&log)) {
                Ok(()) => {
                    return Slapd {
                        _child: child,
                        _dir: dir,
                        port,
                    };
                }
                Err(e) => last = e,
            }
        }
        panic!("slapd did not start: {last}");
    }
}
