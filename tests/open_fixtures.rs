//! Data-driven `direct-agent message open` tests over `tests/fixtures/open/`.
//!
//! Each case is `NAME.eml` (the received message) and `NAME.expect` (line 1: the expected exit
//! code; line 2: a substring expected in stderr's reason, may be empty). The fixtures are made by
//! `tests/fixtures/open/make.sh`; re-run it after regenerating `certs/`.
//!
//! Also here: the 30 MB round trip (generated at run time, not committed) and the refusals of
//! `message seal` for certificates that must not be used.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

mod common;
use common::{BIN, cert, open_as_iis, root, text};

fn fixtures_dir() -> PathBuf {
    root().join("tests/fixtures/open")
}

/// `message open` as iis@hisp-b.example with both anchors and all the CRLs.
fn open_cmd(input: &Path) -> Command {
    open_as_iis(
        input,
        &["root-a.pem", "root-b.pem"],
        &[
            "intermediate-a.crl.pem",
            "intermediate-b.crl.pem",
            "root-a.crl.pem",
        ],
    )
}

fn run(mut c: Command) -> Output {
    c.output().expect("cannot run direct-agent")
}

struct Case {
    name: String,
    eml: PathBuf,
    code: i32,
    reason: String,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for entry in fs::read_dir(fixtures_dir()).expect("tests/fixtures/open is missing") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("eml") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let expect_path = path.with_extension("expect");
        let expect = fs::read_to_string(&expect_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expect_path.display()));
        let mut lines = expect.lines();
        let code = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: line 1 must be an exit code", expect_path.display()));
        let reason = lines.next().unwrap_or("").to_string();
        out.push(Case {
            name,
            eml: path,
            code,
            reason,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[test]
fn open_fixtures() {
    let cases = cases();
    assert!(
        cases.len() >= 20,
        "expected the fixtures of tests/fixtures/open (run tests/fixtures/open/make.sh), found {}",
        cases.len()
    );
    let scratch = TempDir::new().unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let out_dir = scratch.path().join(&case.name);
        let mut c = open_cmd(&case.eml);
        c.arg("--json").arg("--out-dir").arg(&out_dir);
        let out = run(c);
        let code = out.status.code().unwrap_or(-1);
        let stderr = text(&out.stderr);
        let stdout = text(&out.stdout);
        let mut problems = Vec::new();
        if code != case.code {
            problems.push(format!("exit code {code}, expected {}", case.code));
        }
        if !stderr.contains(&case.reason) {
            problems.push(format!("stderr lacks {:?}", case.reason));
        }
        // The JSON report on stdout must agree with the exit code.
        match serde_json::from_str::<serde_json::Value>(stdout.trim()) {
            Ok(v) => {
                if v["ok"] != serde_json::Value::Bool(code == 0) {
                    problems.push(format!("JSON ok is {} with exit code {code}", v["ok"]));
                }
                if code != 0 && v["exit_code"] != serde_json::json!(code) {
                    problems.push(format!("JSON exit_code is {}", v["exit_code"]));
                }
                if code != 0
                    && !v["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains(&case.reason))
                {
                    problems.push(format!("JSON reason lacks {:?}", case.reason));
                }
            }
            Err(e) if code != 2 => problems.push(format!("stdout is not JSON ({e}): {stdout}")),
            Err(_) => {}
        }
        if case.code != 0 && out_dir.exists() {
            problems.push("a refused message wrote to --out-dir".into());
        }
        if case.name == "good" && code != 0 && stderr.contains("not addressed to us") {
            problems.push(
                "the fixtures were made with other certificates: run tests/fixtures/open/make.sh"
                    .into(),
            );
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n    stderr: {}",
                case.name,
                problems.join("; "),
                stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixture(s) failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The good fixture's payload is the VXU of make.sh, byte-exact.
#[test]
fn good_fixture_payload() {
    let scratch = TempDir::new().unwrap();
    let mut c = open_cmd(&fixtures_dir().join("good.eml"));
    c.arg("--out-dir").arg(scratch.path());
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let hl7 = fs::read(scratch.path().join("02-vxu.hl7")).expect("02-vxu.hl7 not written");
    assert!(hl7.starts_with(b"MSH|^~\\&|EHR|HISPA|IIS|HISPB|"));
    assert!(hl7.ends_with(b"|0.5|mL\r"));
    assert_eq!(hl7.iter().filter(|&&b| b == b'\r').count(), 3);
    assert!(!hl7.contains(&b'\n'));
}

/// A 30 MB random attachment survives seal and open byte-exactly.
#[test]
fn thirty_megabytes_round_trip() {
    let scratch = TempDir::new().unwrap();
    let input = scratch.path().join("big.bin");
    // Deterministic pseudo-random bytes (xorshift64*), so a failure can be reproduced.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut data = Vec::with_capacity(30 * 1024 * 1024);
    while data.len() < 30 * 1024 * 1024 {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        data.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    fs::write(&input, &data).unwrap();
    let sealed = scratch.path().join("big.eml");
    let out = run({
        let mut c = Command::new(BIN);
        c.args(["message", "seal", "--from", "ehr@hisp-a.example"])
            .args(["--to", "iis@hisp-b.example", "--in"])
            .arg(&input)
            .arg("--out")
            .arg(&sealed)
            .arg("--sign-key")
            .arg(cert("ehr@hisp-a.example.key"))
            .arg("--sign-cert")
            .arg(cert("ehr@hisp-a.example.fullchain.pem"))
            .arg("--recipient-cert")
            .arg(cert("iis@hisp-b.example.pem"))
            .args(["--content-type", "application/octet-stream"]);
        c
    });
    assert_eq!(out.status.code(), Some(0), "seal: {}", text(&out.stderr));
    let out_dir = scratch.path().join("out");
    let mut c = open_cmd(&sealed);
    c.arg("--json").arg("--out-dir").arg(&out_dir);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "open: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = report["files"].as_array().expect("files in the report");
    assert_eq!(files.len(), 1, "{report}");
    assert_eq!(report["payloads"][0]["kind"], "attachment");
    assert_eq!(
        report["payloads"][0]["content_type"],
        "application/octet-stream"
    );
    let got = fs::read(files[0].as_str().unwrap()).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the 30 MB payload differs after open");
}

fn seal_with(from: &str, sign_stem: &str, recipient: &str) -> Output {
    let scratch = TempDir::new().unwrap();
    let input = scratch.path().join("vxu.hl7");
    fs::write(
        &input,
        b"MSH|^~\\&|EHR|A|IIS|B|20250101||VXU^V04|1|P|2.5.1\r",
    )
    .unwrap();
    let out_file = scratch.path().join("out.eml");
    let mut c = Command::new(BIN);
    c.args(["message", "seal", "--from", from])
        .args(["--to", "iis@hisp-b.example", "--in"])
        .arg(&input)
        .arg("--out")
        .arg(&out_file)
        .arg("--sign-key")
        .arg(cert(&format!("{sign_stem}.key")))
        .arg("--sign-cert")
        .arg(cert(&format!("{sign_stem}.fullchain.pem")))
        .arg("--recipient-cert")
        .arg(cert(recipient));
    let out = run(c);
    if out.status.code() != Some(0) {
        assert!(!out_file.exists(), "a refused seal wrote its output");
    }
    out
}

fn assert_usage(out: &Output, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "nothing may reach stdout");
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}: {stderr}");
    }
}

#[test]
fn seal_refuses_signer_without_digital_signature() {
    let out = seal_with(
        "nosign@hisp-b.example",
        "nosign@hisp-b.example",
        "iis@hisp-b.example.pem",
    );
    assert_usage(
        &out,
        &[
            "our signing certificate cannot be used",
            "nosign@hisp-b.example",
            "lacks digitalSignature",
        ],
    );
}

#[test]
fn seal_refuses_recipient_without_key_encipherment() {
    let out = seal_with(
        "ehr@hisp-a.example",
        "ehr@hisp-a.example",
        "split@hisp-b.example.sign.pem",
    );
    assert_usage(
        &out,
        &[
            "recipient certificate cannot be used",
            "split@hisp-b.example",
            "lacks keyEncipherment",
        ],
    );
}

#[test]
fn seal_refuses_rsa1024_signer_and_recipient() {
    let out = seal_with(
        "rsa1024@hisp-b.example",
        "rsa1024@hisp-b.example",
        "iis@hisp-b.example.pem",
    );
    assert_usage(
        &out,
        &[
            "our signing certificate cannot be used",
            "1024-bit RSA key",
            "at least 2048 bits",
        ],
    );
    let out = seal_with(
        "ehr@hisp-a.example",
        "ehr@hisp-a.example",
        "rsa1024@hisp-b.example.pem",
    );
    assert_usage(
        &out,
        &["recipient certificate cannot be used", "1024-bit RSA key"],
    );
}

#[test]
fn seal_refuses_expired_own_certificate() {
    let out = seal_with(
        "expired@hisp-b.example",
        "expired@hisp-b.example",
        "iis@hisp-b.example.pem",
    );
    assert_usage(
        &out,
        &[
            "our signing certificate cannot be used",
            "expired@hisp-b.example",
            "expired on",
        ],
    );
}
