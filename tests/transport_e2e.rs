//! Two `direct-agent serve` processes exchange Direct messages over loopback SMTP: send → queue →
//! SMTP → spool → open → directory sink; an untrusted message is quarantined with its reason and
//! released after the operator adds the anchor; SIGTERM stops the agent cleanly.

mod support;

use std::process::Command;
use std::time::Duration;

use support::agents::{Extra, cli, sidecars, start, two_agents, wait_until};

fn sample() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/samples/vxu-v04.hl7")
}

fn stdout(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_agents_exchange_a_message_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_agents(dir.path(), &Extra::default(), &Extra::default());
    let _ra = start(&a);
    let rb = start(&b);
    let sent = cli(
        &a,
        &[
            "send",
            "--from",
            "ehr@hisp-a.example",
            "--to",
            "iis@hisp-b.example",
            "--wait",
            "--timeout",
            "60s",
            "--in",
        ],
    )
    .arg(sample())
    .output()
    .unwrap();
    assert!(
        sent.status.success(),
        "send --wait: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let message_id = String::from_utf8_lossy(&sent.stdout).trim().to_string();
    assert!(
        message_id.starts_with('<') && message_id.ends_with("@hisp-a.example>"),
        "{message_id}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || sidecars(&b.inbox).len() == 1),
        "B's sink got nothing; B log:\n{}",
        rb.log_text()
    );
    let side: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sidecars(&b.inbox)[0]).unwrap()).unwrap();
    assert_eq!(side["metadata"]["from"], "ehr@hisp-a.example");
    assert_eq!(side["metadata"]["message_id"], message_id.as_str());
    assert_eq!(side["metadata"]["signer_binding"], "address");
    let files: Vec<&str> = side["payloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["file"].as_str().unwrap())
        .collect();
    let file = files
        .iter()
        .find(|f| f.ends_with(".hl7"))
        .unwrap_or_else(|| panic!("no HL7 payload in {files:?}"));
    assert_eq!(
        std::fs::read(b.inbox.join(file)).unwrap(),
        std::fs::read(sample()).unwrap(),
        "the HL7 payload arrives byte for byte"
    );
    // A's queue shows the entry sent, with B's reply.
    let q: serde_json::Value =
        serde_json::from_str(&stdout(&mut cli(&a, &["queue", "list", "--json"]))).unwrap();
    assert_eq!(q[0]["state"], "sent");
    assert_eq!(q[0]["message_id"], message_id.as_str());
    let detail = q[0]["history"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("127.0.0.1:{}", b.smtp_port)) && detail.contains("250"),
        "{detail}"
    );
    // B's log has the message's state changes and no payload content.
    let log = rb.log_text();
    assert!(
        log.contains(&message_id) && log.contains("delivered"),
        "{log}"
    );
    assert!(
        !log.contains("MSH|") && !log.contains("PID|"),
        "payload content leaked into the log"
    );
    // Nothing in quarantine.
    assert!(stdout(&mut cli(&b, &["quarantine", "list"])).contains("quarantine is empty"));
}

#[test]
fn untrusted_message_is_quarantined_then_released_once_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, b) = two_agents(dir.path(), &Extra::default(), &Extra::default());
    let rb = start(&b);
    // A message signed under a root B does not trust, delivered by a plain SMTP client.
    let msg = dir.path().join("untrusted.eml");
    let c = support::agents::BIN;
    let certs = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("certs");
    let out = Command::new(c)
        .args([
            "message",
            "seal",
            "--from",
            "untrusted@hisp-b.example",
            "--to",
            "iis@hisp-b.example",
            "--sign-key",
        ])
        .arg(certs.join("untrusted@hisp-b.example.key"))
        .arg("--sign-cert")
        .arg(certs.join("untrusted@hisp-b.example.fullchain.pem"))
        .arg("--recipient-cert")
        .arg(certs.join("iis@hisp-b.example.pem"))
        .arg("--in")
        .arg(sample())
        .arg("--out")
        .arg(&msg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py = format!(
        "import smtplib,sys\ns=smtplib.SMTP('127.0.0.1',{})\ns.sendmail('untrusted@hisp-b.example',['iis@hisp-b.example'],open(sys.argv[1],'rb').read())\ns.quit()",
        b.smtp_port
    );
    let st = Command::new("python3")
        .args(["-c", &py])
        .arg(&msg)
        .status()
        .unwrap();
    assert!(st.success(), "the SMTP client was refused");
    assert!(
        wait_until(Duration::from_secs(30), || stdout(&mut cli(
            &b,
            &["quarantine", "list", "--json"]
        ))
        .contains("\"trust\"")),
        "not quarantined; log:\n{}",
        rb.log_text()
    );
    let q: serde_json::Value =
        serde_json::from_str(&stdout(&mut cli(&b, &["quarantine", "list", "--json"]))).unwrap();
    assert_eq!(q.as_array().unwrap().len(), 1);
    assert_eq!(q[0]["reason_kind"], "trust");
    let reason = q[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("Untrusted Test Root") || reason.contains("anchor"),
        "{reason}"
    );
    assert!(
        sidecars(&b.inbox).is_empty(),
        "a refused message must not reach the sink"
    );
    // The raw message is kept byte for byte (plus our Received: header on top).
    let id = q[0]["id"].as_i64().unwrap().to_string();
    let raw = dir.path().join("kept.eml");
    stdout(cli(&b, &["quarantine", "show", &id, "--raw"]).arg(&raw));
    let kept = std::fs::read(&raw).unwrap();
    let original = std::fs::read(&msg).unwrap();
    assert!(kept.starts_with(b"Received: "), "Received: header first");
    assert!(
        kept.ends_with(&original[original.len() - 200..]),
        "message body kept"
    );
    // The operator trusts the root and releases the message: now it is delivered.
    stdout(
        cli(&b, &["anchors", "add", "--domain", "hisp-b.example"])
            .arg(certs.join("root-untrusted.pem")),
    );
    assert!(stdout(&mut cli(&b, &["quarantine", "release", &id])).contains("released"));
    assert!(
        wait_until(Duration::from_secs(30), || sidecars(&b.inbox).len() == 1),
        "released message not delivered; log:\n{}",
        rb.log_text()
    );
    assert!(stdout(&mut cli(&b, &["quarantine", "list"])).contains("quarantine is empty"));
}

#[test]
fn sigterm_stops_the_agent_cleanly_and_it_refuses_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = two_agents(dir.path(), &Extra::default(), &Extra::default());
    let mut ra = start(&a);
    let status = ra
        .terminate(Duration::from_secs(40))
        .expect("serve did not stop within 40 s of SIGTERM");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        ra.log_text()
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", a.smtp_port)).is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn serve_refuses_a_configuration_without_a_sink() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = two_agents(dir.path(), &Extra::default(), &Extra::default());
    let text = std::fs::read_to_string(&a.config).unwrap();
    let cut = text.find("[[sink]]").unwrap();
    std::fs::write(&a.config, &text[..cut]).unwrap();
    let out = cli(&a, &["serve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [[sink]]"));
}

/// An edge agent (hisp-b side) that receives through its HISP mailbox: Dovecot over IMAP.
fn imap_block(port: u16, env: &str) -> Extra {
    Extra {
        tail: Some(format!(
            "[[imap]]\nname = \"hisp-mailbox\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nusername = \"iis\"\npassword_env = \"{env}\"\npoll_interval = \"1s\"\n"
        )),
        ..Extra::default()
    }
}

fn sealed_for_b(dir: &std::path::Path, a: &support::agents::AgentSetup) -> Vec<u8> {
    let out = dir.join("for-b.eml");
    stdout(
        cli(
            a,
            &[
                "message",
                "seal",
                "--from",
                "ehr@hisp-a.example",
                "--to",
                "iis@hisp-b.example",
                "--in",
            ],
        )
        .arg(sample())
        .arg("--out")
        .arg(&out),
    );
    std::fs::read(out).unwrap()
}

#[test]
fn edge_agent_receives_through_its_hisp_mailbox_over_imap() {
    let dovecot = support::dovecot::Dovecot::start(&[("iis", "mailbox-secret")]);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_agents(
        dir.path(),
        &Extra::default(),
        &imap_block(dovecot.port, "IMAP_PASSWORD"),
    );
    let raw = sealed_for_b(dir.path(), &a);
    dovecot.deliver("iis", &raw);
    let rb = support::agents::start_with_env(&b, &[("IMAP_PASSWORD", "mailbox-secret")]);
    assert!(
        wait_until(Duration::from_secs(30), || sidecars(&b.inbox).len() == 1),
        "IMAP message not delivered; log:\n{}",
        rb.log_text()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen = wait_until(Duration::from_secs(10), || {
        rt.block_on(dovecot.messages("iis", "INBOX"))
            .iter()
            .all(|m| m.seen())
    });
    assert!(seen, "stored but not flagged \\Seen");
    // A second message arrives while the agent runs (IDLE or the next poll picks it up) and
    // the first is not delivered again.
    dovecot.deliver("iis", &sealed_for_b(dir.path(), &a));
    assert!(
        wait_until(Duration::from_secs(30), || sidecars(&b.inbox).len() == 2),
        "second IMAP message not delivered; log:\n{}",
        rb.log_text()
    );
    let spool = direct_agent::spool::SqliteSpool::open(&b.data_dir).unwrap();
    let entries = direct_agent::spool::Spool::list_inbound(&spool, None).unwrap();
    assert_eq!(entries.len(), 2, "each mailbox message stored once");
    assert!(
        entries
            .iter()
            .all(|e| e.source.starts_with("imap hisp-mailbox")),
        "{entries:?}"
    );
}

#[test]
fn rejected_imap_login_disables_the_credential_and_is_not_retried() {
    let dovecot = support::dovecot::Dovecot::start(&[("iis", "mailbox-secret")]);
    let dir = tempfile::tempdir().unwrap();
    let (_a, b) = two_agents(
        dir.path(),
        &Extra::default(),
        &imap_block(dovecot.port, "IMAP_PASSWORD"),
    );
    let mut rb = support::agents::start_with_env(&b, &[("IMAP_PASSWORD", "wrong")]);
    assert!(
        wait_until(Duration::from_secs(20), || stdout(&mut cli(
            &b,
            &["credentials", "list"]
        ))
        .contains("hisp-mailbox")),
        "credential not disabled; log:\n{}",
        rb.log_text()
    );
    // Several poll intervals later: still exactly one failed login at the server.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        dovecot.auth_failures(Duration::from_millis(500)),
        1,
        "{}",
        dovecot.log()
    );
    assert!(rb.log_text().contains("ALERT"), "an alert is logged");
    // After a restart the disabled credential is not used either.
    rb.terminate(Duration::from_secs(40)).expect("stops");
    let _rb = support::agents::start_with_env(&b, &[("IMAP_PASSWORD", "wrong")]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(dovecot.auth_failures(Duration::from_millis(500)), 1);
}

/// A certs-only PKCS#7 bundle of committed test certificates, made by the openssl CLI.
fn p7b(certs: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.p7b");
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("certs");
    let mut c = Command::new("openssl");
    c.args(["crl2pkcs7", "-nocrl", "-outform", "DER", "-out"])
        .arg(&out);
    for name in certs {
        c.arg("-certfile").arg(root.join(name));
    }
    assert!(c.status().unwrap().success());
    std::fs::read(out).unwrap()
}

#[test]
fn serve_refreshes_trust_bundles_when_due() {
    let www = support::http::HttpServer::start();
    www.put("bundle.p7b", &p7b(&["root-untrusted.pem"]));
    let dir = tempfile::tempdir().unwrap();
    let (_a, b) = two_agents(dir.path(), &Extra::default(), &Extra::default());
    stdout(&mut cli(
        &b,
        &[
            "bundles",
            "add",
            &www.url("bundle.p7b"),
            "--domain",
            "hisp-b.example",
            "--refresh",
            "1s",
        ],
    ));
    let from_bundle = |b: &support::agents::AgentSetup| -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(&stdout(&mut cli(b, &["anchors", "list", "--json"]))).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|a| a["source"].as_str().unwrap_or("").starts_with("bundle:"))
            .map(|a| a["subject"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert!(
        from_bundle(&b)
            .iter()
            .all(|s| s.contains("Untrusted Test Root"))
    );
    let rb = start(&b);
    // The publisher replaces the bundle's content: the running agent picks it up by itself.
    www.put("bundle.p7b", &p7b(&["root-b.pem"]));
    assert!(
        wait_until(Duration::from_secs(40), || {
            let now = from_bundle(&b);
            now.len() == 1 && now[0].contains("Direct Agent Test Root B")
        }),
        "bundle not refreshed by serve: {:?}; log:\n{}",
        from_bundle(&b),
        rb.log_text()
    );
    // The store changes before the refresh's log line is written: wait for the line too.
    assert!(
        wait_until(Duration::from_secs(5), || rb
            .log_text()
            .contains("added 1, removed 1")),
        "{}",
        rb.log_text()
    );
}
