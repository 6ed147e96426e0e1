//! Outbound reliability through the running agent against a real SMTP peer (aiosmtpd): a peer
//! that answers 451 three times then 250 gets the message once, with the backoff visible in
//! `queue show`; a 550 fails the entry at once with the reply; an AUTH rejection disables the
//! credential after exactly one attempt, and nothing tries it again until `credentials reset`.

mod support;

use std::time::Duration;

use support::agents::{Extra, cli, start, start_with_env, two_agents, wait_until};
use support::smtp_peer::{PeerOptions, SmtpPeer};

fn sample() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/samples/vxu-v04.hl7")
}

fn route_to(peer: &SmtpPeer, extra: &str) -> Extra {
    Extra {
        routes: Some(format!(
            "[[smtp_out.route]]\ndomain = \"hisp-b.example\"\nhost = \"127.0.0.1\"\nport = {}\n{extra}",
            peer.port
        )),
        ..Extra::default()
    }
}

fn json(out: std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn send(
    a: &support::agents::AgentSetup,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    cli(
        a,
        &[
            "send",
            "--from",
            "ehr@hisp-a.example",
            "--to",
            "iis@hisp-b.example",
        ],
    )
    .args(extra)
    .arg("--in")
    .arg(sample())
    .envs(env.iter().copied())
    .output()
    .unwrap()
}

#[test]
fn peer_answering_451_three_times_gets_the_message_once_with_backoff() {
    let peer = SmtpPeer::start(&PeerOptions {
        data: vec!["451 4.3.0 Try again later".into(); 3],
        ..PeerOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = two_agents(
        dir.path(),
        &route_to(&peer, "tls = \"none\"\n"),
        &Extra::default(),
    );
    let out = send(&a, &[], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ra = start(&a);
    let sent = wait_until(Duration::from_secs(60), || {
        json(cli(&a, &["queue", "list", "--json"]).output().unwrap())[0]["state"] == "sent"
    });
    assert!(sent, "not sent; log:\n{}", ra.log_text());
    let messages = peer.messages();
    assert_eq!(messages.len(), 1, "accepted exactly once: {messages:?}");
    let id = json(cli(&a, &["queue", "list", "--json"]).output().unwrap())[0]["id"].to_string();
    let entry = json(cli(&a, &["queue", "show", &id, "--json"]).output().unwrap());
    let history = entry["history"].as_array().unwrap();
    let outcomes: Vec<&str> = history
        .iter()
        .map(|h| h["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["transient", "transient", "transient", "sent"]);
    assert_eq!(entry["attempts"], 4);
    for h in &history[..3] {
        assert!(h["detail"].as_str().unwrap().contains("451"), "{h}");
        let delay = h["next_attempt_at"].as_i64().unwrap() - h["at"].as_i64().unwrap();
        assert!(
            (1..=2).contains(&delay),
            "backoff between retry_initial and retry_max: {h}"
        );
    }
    // The human view shows the schedule.
    let text =
        String::from_utf8(cli(&a, &["queue", "show", &id]).output().unwrap().stdout).unwrap();
    assert!(
        text.contains("next attempt") && text.contains("451"),
        "{text}"
    );
}

#[test]
fn peer_answering_550_fails_the_entry_at_once() {
    let peer = SmtpPeer::start(&PeerOptions {
        rcpt: vec!["550 5.1.1 No such user here".into()],
        ..PeerOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = two_agents(
        dir.path(),
        &route_to(&peer, "tls = \"none\"\n"),
        &Extra::default(),
    );
    let out = send(&a, &["--now"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failed") && err.contains("550 5.1.1 No such user here"),
        "{err}"
    );
    let q = json(cli(&a, &["queue", "list", "--json"]).output().unwrap());
    assert_eq!(q[0]["state"], "failed");
    assert_eq!(q[0]["attempts"], 1);
    assert!(peer.messages().is_empty());
    // The operator can retry a failed entry (due now) or drop it (kept as dropped).
    let id = q[0]["id"].to_string();
    let out = cli(&a, &["queue", "retry", &id]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = json(cli(&a, &["queue", "show", &id, "--json"]).output().unwrap());
    assert_eq!(e["state"], "queued");
    assert_eq!(
        e["history"].as_array().unwrap().last().unwrap()["outcome"],
        "retry"
    );
    let out = cli(&a, &["queue", "drop", &id]).output().unwrap();
    assert!(out.status.success());
    let e = json(cli(&a, &["queue", "show", &id, "--json"]).output().unwrap());
    assert_eq!(e["state"], "dropped");
    let out = cli(&a, &["queue", "retry", &id]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a dropped entry cannot be retried"
    );
}

#[test]
fn auth_rejection_disables_the_credential_after_exactly_one_attempt() {
    let peer = SmtpPeer::start(&PeerOptions {
        starttls: true,
        auth: Some(("edge-user".into(), "right-password".into())),
        ..PeerOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let extra = Extra {
        smtp_out: Some(format!(
            "[smtp_out]\nretry_initial = \"1s\"\nretry_max = \"1s\"\ntls_ca = \"{}\"\n",
            peer.ca_pem().display()
        )),
        ..route_to(
            &peer,
            "tls = \"starttls\"\nusername = \"edge-user\"\npassword_env = \"HISP_PASSWORD\"\nname = \"hisp-submission\"\n",
        )
    };
    let (a, _b) = two_agents(dir.path(), &extra, &Extra::default());
    let wrong = [("HISP_PASSWORD", "wrong-password")];
    let out = send(&a, &["--now"], &wrong);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("credentials reset hisp-submission"), "{err}");
    assert_eq!(peer.auth_attempts().len(), 1);
    let creds = json(
        cli(&a, &["credentials", "list", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(creds[0]["name"], "hisp-submission");

    // A second message, a restart and a running agent: no further AUTH attempt.
    let out = send(&a, &["--now"], &wrong);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("blocked"));
    {
        let ra = start_with_env(&a, &wrong);
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(
            peer.auth_attempts().len(),
            1,
            "retried a rejected credential; log:\n{}",
            ra.log_text()
        );
        let q = json(cli(&a, &["queue", "list", "--json"]).output().unwrap());
        assert!(
            q.as_array()
                .unwrap()
                .iter()
                .all(|e| e["state"] == "queued" && e["blocked_on"] == "hisp-submission"),
            "{q}"
        );
    }
    // The operator fixes the password and resets: both messages go.
    let right = [("HISP_PASSWORD", "right-password")];
    let ra = start_with_env(&a, &right);
    let out = cli(&a, &["credentials", "reset", "hisp-submission"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        wait_until(Duration::from_secs(30), || peer.messages().len() == 2),
        "not delivered after reset; log:\n{}",
        ra.log_text()
    );
    let attempts = peer.auth_attempts();
    assert_eq!(
        attempts.iter().filter(|a| !a.success).count(),
        1,
        "{attempts:?}"
    );
}
