//! MDN flows between two agents on loopback (Implementation Guide for Delivery Notification in
//! Direct): processed and dispatched complete a message; a sink that refuses gives a failed
//! MDN; a partner that sends nothing times out; duplicate and late MDNs change nothing; an MDN
//! whose signature is broken is refused.

mod support;

use std::time::Duration;

use direct_agent::address::DirectAddress;
use direct_agent::agent::Context;
use direct_agent::clock::SystemClock;
use direct_agent::credential::Credential;
use direct_agent::mdn::{Disposition, MdnRequest, build_mdn};
use direct_agent::message::{SealOptions, seal_inner};
use openssl::x509::X509;

use support::agents::{AgentSetup, Extra, cli, sidecars, start, two_agents, wait_until};
use support::smtp_peer::{PeerOptions, SmtpPeer};

fn sample() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/samples/vxu-v04.hl7")
}

fn cert(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("certs")
        .join(name)
}

fn status(a: &AgentSetup, id: &str) -> serde_json::Value {
    let out = cli(a, &["status", id, "--json"]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The JSON a `--json` command of agent `s` prints.
fn json_of(s: &AgentSetup, args: &[&str]) -> serde_json::Value {
    let out = cli(s, args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn send(a: &AgentSetup, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = cli(
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
    .output()
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn processed_and_dispatched_complete_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_agents(dir.path(), &Extra::default(), &Extra::default());
    let ra = start(&a);
    let rb = start(&b);
    let (code, id, err) = send(&a, &["--request-mdn", "--wait", "--timeout", "60s"]);
    assert_eq!(
        code,
        Some(0),
        "send --wait: {err}\nA:\n{}\nB:\n{}",
        ra.log_text(),
        rb.log_text()
    );
    let s = status(&a, &id);
    assert_eq!(s[0]["state"], "complete", "{s}");
    assert!(
        s[0]["processed_at"].is_i64() && s[0]["dispatched_at"].is_i64(),
        "{s}"
    );
    assert_eq!(sidecars(&b.inbox).len(), 1);
    // B answered with two MDNs (processed, dispatched), queued with the null sender and sent.
    let q: serde_json::Value = json_of(&b, &["queue", "list", "--json"]);
    let mdns: Vec<&serde_json::Value> = q
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "mdn")
        .collect();
    assert_eq!(mdns.len(), 2, "{q}");
    assert!(
        mdns.iter()
            .all(|e| e["mail_from"] == "" && e["state"] == "sent"),
        "{q}"
    );
    // A did not answer the MDNs with MDNs, and nothing of them reached A's sink.
    let qa: serde_json::Value = json_of(&a, &["queue", "list", "--json"]);
    assert!(
        qa.as_array().unwrap().iter().all(|e| e["kind"] != "mdn"),
        "{qa}"
    );
    assert!(sidecars(&a.inbox).is_empty());
    // Without --request-mdn the processed MDN alone completes it.
    let (code, id2, err) = send(&a, &["--wait", "--timeout", "60s"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(status(&a, &id2)[0]["state"], "complete");
}

#[test]
fn partner_without_mdns_times_out() {
    let peer = SmtpPeer::start(&PeerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let extra = Extra {
        routes: Some(format!(
            "[[smtp_out.route]]\ndomain = \"hisp-b.example\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\n[mdn]\nprocessed_timeout = \"2s\"\ndispatched_timeout = \"2s\"\n",
            peer.port
        )),
        ..Extra::default()
    };
    let (a, _b) = two_agents(dir.path(), &extra, &Extra::default());
    let ra = start(&a);
    let (code, id, err) = send(&a, &["--request-mdn", "--wait", "--timeout", "30s"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("timed-out"), "{err}");
    assert_eq!(peer.messages().len(), 1);
    let s = status(&a, &id);
    assert_eq!(s[0]["state"], "timed-out");
    assert!(
        s[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no processed MDN"),
        "{s}"
    );
    assert!(ra.log_text().contains("delivery not confirmed in time"));
    // The local sender is told: a failure DSN in A's own sink.
    assert!(
        wait_until(Duration::from_secs(10), || sidecars(&a.inbox).len() == 1),
        "no failure notification; log:\n{}",
        ra.log_text()
    );
    let dsn = local_dsn(&a);
    assert!(
        dsn.contains("report-type=delivery-status")
            && dsn.contains(&format!("X-Original-Message-ID: {id}")),
        "{dsn}"
    );
    assert!(
        dsn.contains("Status: 4.4.7")
            && dsn.contains("Final-Recipient: rfc822; iis@hisp-b.example"),
        "{dsn}"
    );
}

/// The failure DSN written to an agent's directory sink.
fn local_dsn(a: &AgentSetup) -> String {
    let side: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sidecars(&a.inbox)[0]).unwrap()).unwrap();
    assert_eq!(side["metadata"]["to"][0], "ehr@hisp-a.example");
    let file = side["payloads"][0]["file"].as_str().unwrap();
    std::fs::read_to_string(a.inbox.join(file)).unwrap()
}

/// An MDN from iis@hisp-b.example about `original`, sealed for ehr@hisp-a.example.
fn mdn_from_b(original: &str, disposition: Disposition) -> Vec<u8> {
    let b = DirectAddress::parse("iis@hisp-b.example").unwrap();
    let a = DirectAddress::parse("ehr@hisp-a.example").unwrap();
    let built = build_mdn(
        &MdnRequest {
            original_message_id: original.into(),
            original_sender: a.clone(),
            final_recipient: b.clone(),
            original_recipient: None,
            final_destination_requested: true,
        },
        &disposition,
        "mx.hisp-b.example",
        &SystemClock,
    );
    let signer = Credential::load(
        &cert("iis@hisp-b.example.key"),
        Some(&cert("iis@hisp-b.example.fullchain.pem")),
        None,
    )
    .unwrap();
    let to = X509::from_pem(&std::fs::read(cert("ehr@hisp-a.example.pem")).unwrap()).unwrap();
    seal_inner(
        &b,
        &[a],
        &built.inner,
        &signer,
        &[to],
        &SealOptions::default(),
        &SystemClock,
    )
    .unwrap()
    .message
}

fn smtp_deliver(port: u16, raw: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("m.eml");
    std::fs::write(&f, raw).unwrap();
    let py = format!(
        "import smtplib,sys\ns=smtplib.SMTP('127.0.0.1',{port})\ns.sendmail('',['ehr@hisp-a.example'],open(sys.argv[1],'rb').read())\ns.quit()"
    );
    let st = std::process::Command::new("python3")
        .args(["-c", &py])
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn duplicate_late_and_forged_mdns_change_nothing() {
    let peer = SmtpPeer::start(&PeerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let extra = Extra {
        routes: Some(format!(
            "[[smtp_out.route]]\ndomain = \"hisp-b.example\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\n[mdn]\nprocessed_timeout = \"60s\"\ndispatched_timeout = \"2s\"\n",
            peer.port
        )),
        ..Extra::default()
    };
    let (a, _b) = two_agents(dir.path(), &extra, &Extra::default());
    let ra = start(&a);
    let (code, id, err) = send(&a, &["--request-mdn"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(wait_until(
        Duration::from_secs(30),
        || status(&a, &id)[0]["state"] == "sent"
    ));
    // processed, twice: the second is a duplicate.
    let processed = mdn_from_b(&id, Disposition::Processed);
    smtp_deliver(a.smtp_port, &processed);
    smtp_deliver(a.smtp_port, &mdn_from_b(&id, Disposition::Processed));
    assert!(
        wait_until(Duration::from_secs(30), || status(&a, &id)[0]["notes"]
            .as_array()
            .is_some_and(|n| !n.is_empty())),
        "duplicate not noted: {}\n{}",
        status(&a, &id),
        ra.log_text()
    );
    assert_eq!(status(&a, &id)[0]["state"], "processed");
    // dispatched never comes in time: timed out; then it arrives late and changes nothing.
    assert!(wait_until(
        Duration::from_secs(30),
        || status(&a, &id)[0]["state"] == "timed-out"
    ));
    smtp_deliver(a.smtp_port, &mdn_from_b(&id, Disposition::Dispatched));
    assert!(wait_until(Duration::from_secs(30), || {
        status(&a, &id)[0]["notes"].as_array().is_some_and(|n| {
            n.iter()
                .any(|x| x.as_str().unwrap_or("").contains("late dispatched"))
        })
    }));
    assert_eq!(status(&a, &id)[0]["state"], "timed-out");
    // A forged "failed" MDN (ciphertext altered in transit) is refused and quarantined; the
    // tracking does not move.
    let quarantined_before = count_quarantine(&a);
    let mut forged = mdn_from_b(&id, Disposition::Failed { reason: "x".into() });
    let n = forged.len();
    // Flip base64 characters in the middle of the ciphertext.
    for b in forged[n / 2..n / 2 + 8].iter_mut() {
        if b.is_ascii_alphanumeric() {
            *b = if *b == b'A' { b'B' } else { b'A' };
        }
    }
    smtp_deliver(a.smtp_port, &forged);
    assert!(wait_until(Duration::from_secs(30), || count_quarantine(&a)
        == quarantined_before + 1));
    assert_eq!(
        status(&a, &id)[0]["state"],
        "timed-out",
        "a refused MDN changes no tracking"
    );
}

fn count_quarantine(a: &AgentSetup) -> usize {
    let out = cli(a, &["quarantine", "list", "--json"]).output().unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().map(|x| x.len()))
        .unwrap_or(0)
}

/// B runs in this process with a sink that refuses every message: A gets a failed MDN.
#[test]
fn sink_that_refuses_gives_a_failed_mdn() {
    use direct_agent::agent::serve::Server;
    use direct_agent::sink::{SinkOutcome, StubSink};

    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_agents(dir.path(), &Extra::default(), &Extra::default());
    let ra = start(&a);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let server = rt.block_on(async {
        let ctx = Context::load(Some(&b.config)).unwrap();
        Server::bind(ctx).await.unwrap()
    });
    let stub = StubSink::default();
    stub.script.lock().unwrap().extend(std::iter::repeat_n(
        SinkOutcome::permanent("AR: the IIS refused the message (test sink)"),
        5,
    ));
    let handle = rt.spawn(server.run_with_sinks(vec![Box::new(stub)], rx));
    let (code, id, err) = send(&a, &["--request-mdn", "--wait", "--timeout", "60s"]);
    assert_eq!(code, Some(1), "{err}\nA:\n{}", ra.log_text());
    let s = status(&a, &id);
    assert_eq!(s[0]["state"], "failed", "{s}");
    let reason = s[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("refused"), "{s}");
    assert!(s[0]["processed_at"].is_i64(), "processed came first: {s}");
    assert!(
        wait_until(Duration::from_secs(10), || sidecars(&a.inbox).len() == 1),
        "no failure notification for the local sender"
    );
    assert!(local_dsn(&a).contains("Status: 5.0.0"));
    tx.send(true).unwrap();
    rt.block_on(handle).unwrap().unwrap();
    // B kept the message in quarantine with the sink's reason.
    let q: serde_json::Value = json_of(&b, &["quarantine", "list", "--json"]);
    assert_eq!(q[0]["reason_kind"], "sink", "{q}");
}

/// Point `b`'s certificate for hisp-a at a file in `dir` that does not exist yet; returns it.
fn missing_partner_cert(dir: &std::path::Path, b: &AgentSetup) -> std::path::PathBuf {
    let copy = dir.join("partner-a.pem");
    let text = std::fs::read_to_string(&b.config).unwrap();
    let replaced = text.replace(
        &cert("hisp-a.example.pem").display().to_string(),
        &copy.display().to_string(),
    );
    assert_ne!(text, replaced, "B's partner certificate path was not found");
    std::fs::write(&b.config, replaced).unwrap();
    copy
}

/// The receiving agent cannot seal its MDNs at first (the sender's certificate is not
/// discoverable: here its `[[discovery.certificate]]` file is missing). The MDNs are kept, not
/// lost, and sent once the certificate can be found again, completing the message at the sender.
#[test]
fn mdns_that_cannot_be_sealed_yet_are_kept_and_sent_later() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_agents(dir.path(), &Extra::default(), &Extra::default());
    let copy = missing_partner_cert(dir.path(), &b);
    let ra = start(&a);
    let rb = start(&b);
    let (code, id, err) = send(&a, &["--request-mdn"]);
    assert_eq!(code, Some(0), "send: {err}");
    assert!(
        wait_until(Duration::from_secs(30), || {
            sidecars(&b.inbox).len() == 1 && rb.log_text().contains("kept and retried")
        }),
        "B delivers the message and keeps its MDNs:\n{}",
        rb.log_text()
    );
    // Retried (smtp_out.retry_initial = 1 s in these agents), still failing.
    assert!(
        wait_until(Duration::from_secs(30), || rb
            .log_text()
            .contains("kept reply still cannot be sealed")),
        "{}",
        rb.log_text()
    );
    assert_ne!(status(&a, &id)[0]["state"], "complete");
    let kept: serde_json::Value = json_of(&b, &["queue", "replies", "--json"]);
    let kept = kept.as_array().unwrap();
    assert_eq!(kept.len(), 2, "processed and dispatched are kept: {kept:?}");
    assert!(
        kept.iter().all(|r| r["kind"] == "mdn"
            && r["to_address"] == "ehr@hisp-a.example"
            && r["last_error"].as_str().unwrap().contains("partner-a.pem")),
        "{kept:?}"
    );
    std::fs::copy(cert("hisp-a.example.pem"), &copy).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || status(&a, &id)[0]["state"]
            == "complete"),
        "the kept MDNs reach A once they can be sealed: {}\nA:\n{}\nB:\n{}",
        status(&a, &id),
        ra.log_text(),
        rb.log_text()
    );
    let q: serde_json::Value = json_of(&b, &["queue", "list", "--json"]);
    let mdns = q
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "mdn")
        .count();
    assert_eq!(
        mdns, 2,
        "one processed and one dispatched MDN, each once: {q}"
    );
}

/// A kept MDN that still cannot be sealed when `[smtp_out] lifetime` is over is given up, with
/// an error naming the reply, and no longer listed.
#[test]
fn kept_mdns_are_given_up_after_the_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let b_extra = Extra {
        smtp_out: Some(
            "[smtp_out]\nretry_initial = \"1s\"\nretry_max = \"1s\"\nlifetime = \"3s\"\ntimeout = \"10s\"\n"
                .into(),
        ),
        ..Extra::default()
    };
    let (a, b) = two_agents(dir.path(), &Extra::default(), &b_extra);
    missing_partner_cert(dir.path(), &b);
    let _ra = start(&a);
    let rb = start(&b);
    let (code, _id, err) = send(&a, &["--request-mdn"]);
    assert_eq!(code, Some(0), "send: {err}");
    assert!(
        wait_until(Duration::from_secs(30), || rb
            .log_text()
            .contains("kept reply given up")),
        "{}",
        rb.log_text()
    );
    assert!(
        rb.log_text().contains("partner-a.pem"),
        "the reason is logged"
    );
    assert_eq!(
        json_of(&b, &["queue", "replies", "--json"]),
        serde_json::json!([])
    );
    let q = json_of(&b, &["queue", "list", "--json"]);
    assert!(
        q.as_array().unwrap().iter().all(|e| e["kind"] != "mdn"),
        "nothing was queued: {q}"
    );
}
