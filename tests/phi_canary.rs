//! The PHI canary: a VXU whose patient name (PID-5) and address (PID-11) are canary strings goes
//! through every inbound outcome between two real agents logging at `trace` in JSON: delivered
//! to the directory sink, quarantined by HL7 validation (MSH-11 P while B expects test traffic),
//! quarantined by a sink (a command exiting 65) and quarantined by trust (B without A's anchor).
//! Then no log line of either agent, nor of the `send` commands, holds a canary string; the logs
//! are not trivially empty (they carry the Message-IDs and the quarantines).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::agents::{AgentSetup, Extra, Running, cli, start_with_env, two_agents, wait_until};

const CANARY_FAMILY: &str = "ZZCANARYFAMILY";
const CANARY_GIVEN: &str = "ZZCANARYGIVEN";
const CANARY_STREET: &str = "999 ZZCANARY LANE";
/// Any of these in a log line is a leak (the last catches a partial echo of the address).
const CANARIES: [&str; 4] = [CANARY_FAMILY, CANARY_GIVEN, CANARY_STREET, "ZZCANARY"];

const LOG_ENV: [(&str, &str); 2] = [
    ("DIRECT_AGENT_LOG", "trace"),
    ("DIRECT_AGENT_LOG_FORMAT", "json"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The sample VXU with canary name and address, MSH-10 set to `control_id`, MSH-11 to
/// `processing`; `broken` puts a bare line break inside PID-11 (the usual way a payload becomes
/// unreadable: the next "segment" starts with patient data).
fn canary_vxu(dir: &Path, control_id: &str, processing: &str, broken: bool) -> PathBuf {
    let text = std::fs::read_to_string(root().join("config/samples/vxu-v04.hl7")).unwrap();
    let edited = text
        .replace(
            "|TESTPATIENT^ALEX^^^^^L|",
            &format!("|{CANARY_FAMILY}^{CANARY_GIVEN}^^^^^L|"),
        )
        .replace(
            "|1 TEST ST^^AUGUSTA",
            &if broken {
                format!("|APT 1\r{CANARY_STREET}^^AUGUSTA")
            } else {
                format!("|{CANARY_STREET}^^AUGUSTA")
            },
        )
        .replace(
            "|DEMO-0001|T|2.5.1|",
            &format!("|{control_id}|{processing}|2.5.1|"),
        );
    assert!(
        edited.contains(CANARY_FAMILY)
            && edited.contains(CANARY_STREET)
            && edited.contains(control_id),
        "the sample VXU changed; update the canary edits"
    );
    let out = dir.join(format!("{control_id}.hl7"));
    std::fs::write(&out, edited).unwrap();
    out
}

/// `send` from A with trace logging; returns the Message-ID and the command's log.
fn send(a: &AgentSetup, payload: &Path) -> (String, String) {
    let out = cli(
        a,
        &[
            "send",
            "--from",
            "ehr@hisp-a.example",
            "--to",
            "iis@hisp-b.example",
            "--request-mdn",
        ],
    )
    .envs(LOG_ENV)
    .arg("--in")
    .arg(payload)
    .output()
    .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "send: {log}");
    (String::from_utf8_lossy(&out.stdout).trim().to_string(), log)
}

/// The refusal kind of the quarantined entry with this Message-ID, if any.
fn quarantined_kind(s: &AgentSetup, message_id: &str) -> Option<String> {
    let out = cli(s, &["quarantine", "list", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let entries = list
        .as_array()
        .cloned()
        .or_else(|| list["entries"].as_array().cloned())?;
    entries
        .iter()
        .find(|e| e["message_id"].as_str() == Some(message_id))
        .and_then(|e| e["reason_kind"].as_str().map(str::to_string))
}

fn hl7_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "hl7"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn wait_quarantined(s: &AgentSetup, id: &str, kind: &str, a: &Running, b: &Running) {
    let ok = wait_until(Duration::from_secs(30), || {
        quarantined_kind(s, id).as_deref() == Some(kind)
    });
    assert!(
        ok,
        "{id} not quarantined as {kind} (now {:?})\nA:\n{}\nB:\n{}",
        quarantined_kind(s, id),
        a.log_text(),
        b.log_text()
    );
}

/// Every line of `log` holding a canary, with the canary.
fn leaks(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| CANARIES.iter().any(|c| l.contains(c)))
        .map(str::to_string)
        .collect()
}

#[test]
fn no_canary_patient_data_reaches_any_log_line() {
    let dir = tempfile::tempdir().unwrap();
    // A command sink refusing (exit 65) messages whose control ID says so, accepting others; it
    // reads its standard input so the agent's writer never blocks.
    let script = dir.path().join("refuse-some.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nif grep -q 'SINKREFUSE' ; then exit 65; fi\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let b_inbox = dir.path().join("b-inbox");
    let b_extra = Extra {
        sinks: Some(format!(
            "[[sink]]\nkind = \"directory\"\npath = \"{}\"\n\n[[sink]]\nkind = \"command\"\nprogram = \"{}\"\npermanent_exit_codes = [65]\n",
            b_inbox.display(),
            script.display()
        )),
        tail: Some("[hl7]\nprofile = \"immunization\"\nreply_with_ack = true\n".into()),
        ..Extra::default()
    };
    let (a, b) = two_agents(dir.path(), &Extra::default(), &b_extra);
    let mut ra = start_with_env(&a, &LOG_ENV);
    let mut rb = start_with_env(&b, &LOG_ENV);
    let mut send_logs = String::new();

    // 1. Delivered to the directory sink.
    let (ok_id, log) = send(&a, &canary_vxu(dir.path(), "CANARY-OK", "T", false));
    send_logs.push_str(&log);
    let delivered = wait_until(Duration::from_secs(30), || {
        hl7_in(&b.inbox).iter().any(|t| t.contains("CANARY-OK"))
    });
    assert!(
        delivered,
        "the canary VXU was not delivered\nA:\n{}\nB:\n{}",
        ra.log_text(),
        rb.log_text()
    );
    // 2. HL7 validation: production processing ID while B expects test traffic, and a line break
    // inside PID-11 (the profile rules that refuse MSH-11 P live on another branch; an unreadable
    // payload fails validation on this one too).
    let (hl7_id, log) = send(&a, &canary_vxu(dir.path(), "CANARY-LIVE", "P", true));
    send_logs.push_str(&log);
    wait_quarantined(&b, &hl7_id, "hl7", &ra, &rb);
    // 3. A sink refuses it for good.
    let (sink_id, log) = send(&a, &canary_vxu(dir.path(), "SINKREFUSE", "T", false));
    send_logs.push_str(&log);
    wait_quarantined(&b, &sink_id, "sink", &ra, &rb);
    // Let the MDNs and ACKs of these reach A before B restarts.
    wait_until(Duration::from_secs(15), || {
        hl7_in(&a.inbox)
            .iter()
            .filter(|t| t.contains("MSA|"))
            .count()
            >= 2
    });

    // 4. Trust: B no longer trusts A's root.
    assert!(
        rb.terminate(Duration::from_secs(20)).is_some(),
        "B did not stop"
    );
    let root_a =
        openssl::x509::X509::from_pem(&std::fs::read(root().join("certs/root-a.pem")).unwrap())
            .unwrap();
    let fingerprint = hex::encode(
        root_a
            .digest(openssl::hash::MessageDigest::sha256())
            .unwrap(),
    );
    let out = cli(
        &b,
        &[
            "anchors",
            "remove",
            &fingerprint,
            "--domain",
            "hisp-b.example",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "anchors remove: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rb2 = start_with_env(&b, &LOG_ENV);
    let (trust_id, log) = send(&a, &canary_vxu(dir.path(), "CANARY-UNTRUSTED", "T", false));
    send_logs.push_str(&log);
    wait_quarantined(&b, &trust_id, "trust", &ra, &rb2);
    std::thread::sleep(Duration::from_secs(2));
    drop(rb2);
    ra.terminate(Duration::from_secs(20));

    let a_log = std::fs::read_to_string(&a.log).unwrap();
    let b_log = std::fs::read_to_string(&b.log).unwrap();
    // Non-trivial logs: JSON lines at trace level naming the messages and the quarantines.
    for (name, log) in [("A", &a_log), ("B", &b_log)] {
        assert!(log.lines().count() > 20, "{name} logged little:\n{log}");
        for line in log.lines().filter(|l| l.starts_with('{')) {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{name}: not a JSON line ({e}): {line}"));
        }
        assert!(
            log.contains("\"level\":\"TRACE\"") || log.contains("\"level\":\"DEBUG\""),
            "{name}: no debug/trace lines:\n{log}"
        );
    }
    for id in [&ok_id, &hl7_id, &sink_id, &trust_id] {
        let bare = id.trim_matches(|c| c == '<' || c == '>');
        assert!(b_log.contains(bare), "B's log lacks {id}:\n{b_log}");
        assert!(a_log.contains(bare), "A's log lacks {id}:\n{a_log}");
    }
    assert!(b_log.contains("quarantined"), "{b_log}");
    for kind in ["hl7", "sink", "trust"] {
        assert!(
            b_log.contains(&format!("\"refusal\":\"{kind}\"")),
            "B's log lacks a {kind} quarantine:\n{b_log}"
        );
    }
    // The point: no canary anywhere.
    for (name, log) in [("A", &a_log), ("B", &b_log), ("send", &send_logs)] {
        let found = leaks(log);
        assert!(
            found.is_empty(),
            "PHI canary in {name}'s log:\n{}",
            found.join("\n")
        );
    }
}
