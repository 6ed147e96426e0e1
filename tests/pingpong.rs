//! The ping pong handshake between two agents on loopback: every step green; a partner that does
//! not know our MSH-4; an untrusted partner (fails at trust, nothing sent); a partner that is
//! down; a partner that does not answer pings.

mod support;

use support::agents::{AgentSetup, Extra, cli, start, two_agents};

const A_PARTNER: &str = "[[partner]]\naddress = \"hisp-b.example\"\nsending_application = \"DEMO-EHR\"\nsending_facility = \"DEMO-CLINIC\"\nreceiving_application = \"IIS\"\nreceiving_facility = \"STATE-IIS\"\n";

fn b_partner(their_facility: &str, respond: bool) -> Extra {
    Extra {
        tail: Some(format!(
            "[pingpong]\nrespond = {respond}\n\n[[partner]]\naddress = \"hisp-a.example\"\nsending_application = \"IIS\"\nsending_facility = \"STATE-IIS\"\nreceiving_application = \"DEMO-EHR\"\nreceiving_facility = \"{their_facility}\"\n"
        )),
        ..Extra::default()
    }
}

fn a_extra() -> Extra {
    Extra {
        tail: Some(A_PARTNER.into()),
        ..Extra::default()
    }
}

fn ping(a: &AgentSetup, timeout: &str) -> (Option<i32>, String) {
    let out = cli(
        a,
        &[
            "ping",
            "iis@hisp-b.example",
            "--from",
            "ehr@hisp-a.example",
            "--timeout",
            timeout,
        ],
    )
    .output()
    .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn ping_pong_every_step_green() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_agents(dir.path(), &a_extra(), &b_partner("DEMO-CLINIC", true));
    let ra = start(&a);
    let rb = start(&b);
    let (code, out) = ping(&a, "30s");
    assert_eq!(
        code,
        Some(0),
        "{out}\nA:\n{}\nB:\n{}",
        ra.log_text(),
        rb.log_text()
    );
    for step in [
        "certificate discovery",
        "trust path",
        "SMTP connection",
        "message accepted",
        "processed MDN received",
        "pong received",
        "partner's verdict",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("[ ok ]") && l.contains(step)),
            "{step}: {out}"
        );
    }
    assert!(out.contains("connectivity verified"));
    // The ping never reached B's sink, nor the pong A's.
    assert!(support::agents::sidecars(&b.inbox).is_empty());
    assert!(support::agents::sidecars(&a.inbox).is_empty());
    // JSON form.
    let out = cli(
        &a,
        &[
            "ping",
            "iis@hisp-b.example",
            "--from",
            "ehr@hisp-a.example",
            "--timeout",
            "30s",
            "--json",
        ],
    )
    .output()
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["steps"].as_array().unwrap().len(), 7);
}

#[test]
fn unknown_sending_facility_fails_the_routing_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_agents(
        dir.path(),
        &a_extra(),
        &b_partner("SOME-OTHER-CLINIC", true),
    );
    let _ra = start(&a);
    let _rb = start(&b);
    let (code, out) = ping(&a, "30s");
    assert_eq!(code, Some(1), "{out}");
    let verdict = out
        .lines()
        .find(|l| l.contains("partner's verdict"))
        .unwrap_or_default();
    assert!(
        verdict.starts_with("[FAIL]") && verdict.contains("AE") && verdict.contains("MSH-4"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("[ ok ]") && l.contains("pong received")),
        "{out}"
    );
}

#[test]
fn untrusted_partner_fails_at_trust_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = two_agents(dir.path(), &a_extra(), &b_partner("DEMO-CLINIC", true));
    // A no longer trusts hisp-b's root.
    let list: serde_json::Value = serde_json::from_slice(
        &cli(&a, &["anchors", "list", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let fp = list[0]["fingerprint"].as_str().unwrap().to_string();
    assert!(
        cli(
            &a,
            &["anchors", "remove", &fp, "--domain", "hisp-a.example"]
        )
        .status()
        .unwrap()
        .success()
    );
    let (code, out) = ping(&a, "5s");
    assert_eq!(code, Some(1), "{out}");
    let trust = out
        .lines()
        .find(|l| l.contains("trust path"))
        .unwrap_or_default();
    assert!(trust.starts_with("[FAIL]"), "{out}");
    assert!(
        !out.contains("SMTP connection"),
        "nothing may be sent to an untrusted partner: {out}"
    );
}

#[test]
fn partner_down_fails_at_smtp() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = two_agents(dir.path(), &a_extra(), &b_partner("DEMO-CLINIC", true));
    let _ra = start(&a);
    let (code, out) = ping(&a, "5s");
    assert_eq!(code, Some(1), "{out}");
    let smtp = out
        .lines()
        .find(|l| l.contains("SMTP connection"))
        .unwrap_or_default();
    assert!(
        smtp.starts_with("[FAIL]") && smtp.contains("connect"),
        "{out}"
    );
}

#[test]
fn partner_that_does_not_answer_pings_still_sends_the_mdn() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_agents(dir.path(), &a_extra(), &b_partner("DEMO-CLINIC", false));
    let _ra = start(&a);
    let _rb = start(&b);
    let (code, out) = ping(&a, "5s");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("[ ok ]") && l.contains("processed MDN")),
        "{out}"
    );
    assert!(
        out.contains("MDN received; no pong: partner does not answer pings"),
        "{out}"
    );
}
