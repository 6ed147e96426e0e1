//! Certificate validation through the CLI against a real loopback HTTP server serving the test
//! PKI's CRL distribution points and AIA caIssuers URLs (`http://127.0.0.1:18080/crl/...`,
//! `/aia/...`, as the committed certificates name them): `certs validate`, and `message open` /
//! `message seal` in configuration mode.
//!
//! The server is Python's `http.server` (a real, independent HTTP peer). The certificates fix the
//! port, so the tests of this file share one server and take turns (a mutex) when they change
//! what it serves.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

use tempfile::TempDir;

mod common;
mod support;
use common::{BIN, cert, text};
use support::http::HttpServer;

const PORT: u16 = 18080;

fn server() -> MutexGuard<'static, HttpServer> {
    static SERVER: OnceLock<Mutex<HttpServer>> = OnceLock::new();
    let m = SERVER.get_or_init(|| Mutex::new(HttpServer::start_on(PORT)));
    let guard = m.lock().unwrap_or_else(|p| p.into_inner());
    serve_everything(&guard);
    guard
}

/// Serve every CRL and CA certificate of the test PKI.
fn serve_everything(s: &HttpServer) {
    fs::create_dir_all(s.dir.path().join("crl")).unwrap();
    fs::create_dir_all(s.dir.path().join("aia")).unwrap();
    for n in [
        "root-a",
        "root-b",
        "intermediate-a",
        "intermediate-a2",
        "intermediate-b",
        "root-untrusted",
    ] {
        fs::copy(
            cert(&format!("{n}.crl")),
            s.dir.path().join(format!("crl/{n}.crl")),
        )
        .unwrap();
        fs::copy(
            cert(&format!("{n}.cer")),
            s.dir.path().join(format!("aia/{n}.cer")),
        )
        .unwrap();
    }
}

fn unserve(s: &HttpServer, rel: &str) {
    fs::remove_file(s.dir.path().join(rel)).unwrap();
}

/// A configuration for hisp-b.example (credentials of iis@ and the domain) with `revocation`.
fn config(dir: &Path, revocation: &str) -> PathBuf {
    let path = dir.join("direct-agent.toml");
    let certs = cert("");
    fs::write(
        &path,
        format!(
            r#"[agent]
data_dir = "{data}"
# The committed test keys (certs/) are public test material; git checks them out 0644.
insecure_key_permissions = true

[trust]
revocation = "{revocation}"
fetch_timeout = "5s"

[[domain]]
name = "hisp-b.example"

  [[domain.credential]]
  key = "{c}/hisp-b.example.key"
  cert = "{c}/hisp-b.example.fullchain.pem"

  [[domain.credential]]
  key = "{c}/iis@hisp-b.example.key"
  cert = "{c}/iis@hisp-b.example.fullchain.pem"
"#,
            data = dir.join("var").display(),
            c = certs.display(),
        ),
    )
    .unwrap();
    path
}

fn agent(cfg: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .expect("run direct-agent")
}

fn add_anchor(cfg: &Path, file: &str, direction: &str) {
    let out = agent(
        cfg,
        &[
            "anchors",
            "add",
            cert(file).to_str().unwrap(),
            "--domain",
            "hisp-b.example",
            "--direction",
            direction,
        ],
    );
    assert!(
        out.status.success(),
        "anchors add {file}: {}",
        text(&out.stderr)
    );
}

fn validate(cfg: &Path, leaf: &str, who: &str, purpose: &str) -> (i32, serde_json::Value) {
    let out = agent(
        cfg,
        &[
            "certs",
            "validate",
            cert(leaf).to_str().unwrap(),
            "--domain",
            "hisp-b.example",
            "--for",
            who,
            "--purpose",
            purpose,
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "certs validate --json printed no JSON ({e}): {} / {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

fn steps(v: &serde_json::Value) -> Vec<(String, String)> {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn missing_intermediate_comes_through_aia_and_crls_are_fetched() {
    let _s = server();
    let dir = TempDir::new().unwrap();
    let cfg = config(dir.path(), "require");
    add_anchor(&cfg, "root-a.pem", "both");
    // The leaf alone: its intermediate must be fetched from aia/intermediate-a.cer.
    let (code, v) = validate(&cfg, "ehr@hisp-a.example.pem", "ehr@hisp-a.example", "sign");
    assert_eq!(code, 0, "{v}");
    let st = steps(&v);
    assert!(st.contains(&("aia".into(), "pass".into())), "{st:?}");
    assert_eq!(
        st.iter()
            .filter(|s| s.0 == "revocation" && s.1 == "pass")
            .count(),
        2,
        "{st:?}"
    );
    // Second run: the CRLs and the AIA certificate come from the store's cache.
    let (code, v) = validate(&cfg, "ehr@hisp-a.example.pem", "ehr@hisp-a.example", "sign");
    assert_eq!(code, 0, "{v}");
    assert!(v["steps"].to_string().contains("cached CRL"), "{v}");
}

#[test]
fn anchor_may_be_an_intermediate() {
    let _s = server();
    let dir = TempDir::new().unwrap();
    let cfg = config(dir.path(), "require");
    add_anchor(&cfg, "intermediate-a.pem", "incoming");
    let (code, v) = validate(&cfg, "ehr@hisp-a.example.pem", "ehr@hisp-a.example", "sign");
    assert_eq!(code, 0, "{v}");
}

#[test]
fn unreachable_crl_under_require_and_best_effort() {
    let s = server();
    unserve(&s, "crl/intermediate-a.crl");
    let dir = TempDir::new().unwrap();
    let cfg = config(dir.path(), "require");
    add_anchor(&cfg, "root-a.pem", "both");
    let (code, v) = validate(
        &cfg,
        "ehr@hisp-a.example.fullchain.pem",
        "ehr@hisp-a.example",
        "sign",
    );
    assert_eq!(code, 5, "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "http://127.0.0.1:18080/crl/intermediate-a.crl could not be fetched: HTTP 404"
        ),
        "{reason}"
    );

    let dir2 = TempDir::new().unwrap();
    let cfg2 = config(dir2.path(), "best-effort");
    add_anchor(&cfg2, "root-a.pem", "both");
    let (code, v) = validate(
        &cfg2,
        "ehr@hisp-a.example.fullchain.pem",
        "ehr@hisp-a.example",
        "sign",
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1, "{v}");
    assert!(
        steps(&v).contains(&("revocation".into(), "warn".into())),
        "{v}"
    );
}

#[test]
fn dead_aia_url_fails_with_the_url() {
    let s = server();
    unserve(&s, "aia/intermediate-a.cer");
    let dir = TempDir::new().unwrap();
    let cfg = config(dir.path(), "require");
    add_anchor(&cfg, "root-a.pem", "both");
    let (code, v) = validate(&cfg, "ehr@hisp-a.example.pem", "ehr@hisp-a.example", "sign");
    assert_eq!(code, 5, "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("aia/intermediate-a.cer could not be fetched: HTTP 404"),
        "{v}"
    );
}

#[test]
fn expired_crl_is_refused_under_require() {
    let s = server();
    fs::copy(
        cert("intermediate-b.expired.crl"),
        s.dir.path().join("crl/intermediate-b.crl"),
    )
    .unwrap();
    let dir = TempDir::new().unwrap();
    let cfg = config(dir.path(), "require");
    add_anchor(&cfg, "root-b.pem", "both");
    let (code, v) = validate(
        &cfg,
        "iis@hisp-b.example.fullchain.pem",
        "iis@hisp-b.example",
        "sign",
    );
    assert_eq!(code, 5, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("expired on"), "{v}");
}

#[test]
fn revoked_leaf_and_revoked_intermediate_through_fetched_crls() {
    let _s = server();
    let dir = TempDir::new().unwrap();
    let cfg = config(dir.path(), "require");
    add_anchor(&cfg, "root-a.pem", "both");
    add_anchor(&cfg, "root-b.pem", "both");
    let (code, v) = validate(
        &cfg,
        "revoked@hisp-b.example.fullchain.pem",
        "revoked@hisp-b.example",
        "sign",
    );
    assert_eq!(code, 5, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("was revoked"), "{v}");
    let (code, v) = validate(
        &cfg,
        "revoked-intermediate-leaf@hisp-a.example.fullchain.pem",
        "revoked-intermediate-leaf@hisp-a.example",
        "sign",
    );
    assert_eq!(code, 5, "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("Intermediate A2"),
        "{v}"
    );
}

#[test]
fn wrong_binding_wrong_purpose_and_weak_key() {
    let _s = server();
    let dir = TempDir::new().unwrap();
    let cfg = config(dir.path(), "require");
    add_anchor(&cfg, "root-b.pem", "both");
    let (code, v) = validate(
        &cfg,
        "wrongdomain@hisp-b.example.fullchain.pem",
        "wrongdomain@hisp-b.example",
        "sign",
    );
    assert_eq!(code, 5);
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("is bound to someone@hisp-c.example"),
        "{v}"
    );
    let (code, v) = validate(
        &cfg,
        "split@hisp-b.example.sign.fullchain.pem",
        "split@hisp-b.example",
        "encrypt",
    );
    assert_eq!(code, 5);
    assert!(
        v["reason"].as_str().unwrap().contains("keyEncipherment"),
        "{v}"
    );
    let (code, v) = validate(
        &cfg,
        "rsa1024@hisp-b.example.fullchain.pem",
        "rsa1024@hisp-b.example",
        "sign",
    );
    assert_eq!(code, 5);
    assert!(v["reason"].as_str().unwrap().contains("1024-bit"), "{v}");
    let (code, v) = validate(
        &cfg,
        "notyet@hisp-b.example.fullchain.pem",
        "notyet@hisp-b.example",
        "sign",
    );
    assert_eq!(code, 5);
    assert!(
        v["reason"].as_str().unwrap().contains("not valid until"),
        "{v}"
    );
}

#[test]
fn unknown_domain_and_bad_purpose_are_usage_errors() {
    let dir = TempDir::new().unwrap();
    let cfg = config(dir.path(), "require");
    let out = agent(
        &cfg,
        &[
            "certs",
            "validate",
            cert("iis@hisp-b.example.pem").to_str().unwrap(),
            "--domain",
            "nowhere.example",
            "--for",
            "iis@hisp-b.example",
            "--purpose",
            "sign",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("hisp-b.example"),
        "lists the configured domains: {}",
        text(&out.stderr)
    );
    let out = agent(
        &cfg,
        &[
            "certs",
            "validate",
            cert("iis@hisp-b.example.pem").to_str().unwrap(),
            "--domain",
            "hisp-b.example",
            "--for",
            "iis@hisp-b.example",
            "--purpose",
            "decorate",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}

/// `message open` and `message seal` take keys, anchors and the revocation policy from the
/// configuration when --key / --sign-key are not given.
#[test]
fn message_open_and_seal_in_configuration_mode() {
    let _s = server();
    let dir = TempDir::new().unwrap();
    let cfg = config(dir.path(), "require");
    add_anchor(&cfg, "root-a.pem", "both");
    let payload = cert("../config/samples/vxu-v04.hl7");
    let sealed = dir.path().join("in.eml");
    // hisp-a seals with flags (it is not configured here); hisp-b opens from its configuration.
    let out = Command::new(BIN)
        .args([
            "message",
            "seal",
            "--from",
            "ehr@hisp-a.example",
            "--to",
            "iis@hisp-b.example",
            "--in",
        ])
        .arg(&payload)
        .arg("--out")
        .arg(&sealed)
        .arg("--sign-key")
        .arg(cert("ehr@hisp-a.example.key"))
        .arg("--sign-cert")
        .arg(cert("ehr@hisp-a.example.fullchain.pem"))
        .arg("--recipient-cert")
        .arg(cert("iis@hisp-b.example.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let inbox = dir.path().join("inbox");
    let out = agent(
        &cfg,
        &[
            "message",
            "open",
            "--in",
            sealed.to_str().unwrap(),
            "--out-dir",
            inbox.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f.as_str().unwrap().ends_with(".hl7"))
        .unwrap();
    assert_eq!(
        fs::read(file.as_str().unwrap()).unwrap(),
        fs::read(&payload).unwrap()
    );

    // hisp-b replies from its configuration: signer chosen by address, recipient validated
    // against the outgoing anchors (AIA fetch of intermediate-a, CRLs).
    let reply = dir.path().join("reply.eml");
    let out = agent(
        &cfg,
        &[
            "message",
            "seal",
            "--from",
            "iis@hisp-b.example",
            "--to",
            "ehr@hisp-a.example",
            "--in",
            payload.to_str().unwrap(),
            "--out",
            reply.to_str().unwrap(),
            "--recipient-cert",
            cert("ehr@hisp-a.example.pem").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // hisp-a opens it with flags: signed by iis@'s address-bound certificate.
    let out = Command::new(BIN)
        .args(["message", "open", "--json", "--in"])
        .arg(&reply)
        .arg("--key")
        .arg(cert("ehr@hisp-a.example.key"))
        .arg("--cert")
        .arg(cert("ehr@hisp-a.example.pem"))
        .arg("--anchor")
        .arg(cert("root-b.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["signer"]["binding"], "address", "{report}");

    // A recipient certificate from an untrusted root is refused before anything is sealed.
    let refused = dir.path().join("refused.eml");
    let out = agent(
        &cfg,
        &[
            "message",
            "seal",
            "--from",
            "iis@hisp-b.example",
            "--to",
            "untrusted@hisp-b.example",
            "--in",
            payload.to_str().unwrap(),
            "--out",
            refused.to_str().unwrap(),
            "--recipient-cert",
            cert("untrusted@hisp-b.example.pem").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("recipient certificate not trusted"),
        "{}",
        text(&out.stderr)
    );
    assert!(!refused.exists());
}
