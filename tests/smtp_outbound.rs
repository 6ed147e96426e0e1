//! Outbound SMTP delivery (`transport::smtp_out`) against real loopback peers: a scriptable
//! aiosmtpd server (tests/support/smtp_peer.py: scripted 4xx/5xx replies, STARTTLS with an
//! `openssl`-made certificate, AUTH PLAIN/LOGIN, a JSON log of every AUTH attempt and message)
//! and dnsmasq for MX records (`--mx-host`, `--host-record`).
//!
//! Needs: `pip install aiosmtpd`, `apt-get install -y dnsmasq-base openssl` (a missing program
//! fails the test with that command; nothing is skipped).
//!
//! AUTH passwords come from the environment. `std::env::set_var` is unsafe in a multi-threaded
//! test binary (edition 2024), so the tests name a variable cargo already sets for every test
//! run (`CARGO_PKG_NAME`) and give the peer its value as the password.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use direct_agent::config::Config;
use direct_agent::transport::smtp_out::{DeliveryError, Outbound, Target, TargetTls};
use tempfile::TempDir;

use support::smtp_peer::{PeerOptions, SmtpPeer};
use support::{ChildGuard, dnsmasq, free_port, program, require_program, spawn_tied, wait_for_tcp};

const DOMAIN: &str = "peer.test";

/// A small Direct-like message with CRLF line ends, a lone "." line and a line starting with
/// "." (both need dot-stuffing on the wire), ending in CRLF.
fn message(id: &str) -> Vec<u8> {
    format!(
        "From: <alice@sender.test>\r\n\
         To: <bob@peer.test>\r\n\
         Subject: outbound test\r\n\
         Message-ID: <{id}@sender.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain\r\n\
         \r\n\
         line one\r\n\
         .\r\n\
         .starts with a dot\r\n\
         last line\r\n"
    )
    .into_bytes()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(openssl::sha::sha256(data))
}

/// An environment variable that is set with a short value (see the file's doc).
fn password_env() -> (&'static str, String) {
    for name in ["CARGO_PKG_NAME", "CARGO_CRATE_NAME", "USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(name)
            && !v.is_empty()
            && v.len() < 100
        {
            return (name, v);
        }
    }
    panic!("none of CARGO_PKG_NAME, USER, LOGNAME is set: run the tests with `cargo test`");
}

const UNSET_ENV: &str = "DIRECT_AGENT_TEST_SMTP_PASSWORD_SURELY_UNSET";

/// Settings from configuration text (the same parser and checks as `Config::load`).
fn outbound(toml: &str) -> Outbound {
    let cfg = Config::parse(toml, Path::new("smtp_outbound.toml"))
        .unwrap_or_else(|e| panic!("test configuration: {e}\n{toml}"));
    Outbound::from_config(&cfg).expect("outbound settings")
}

fn toml_path(p: &Path) -> String {
    // TOML basic strings: backslashes would need escaping (not on the test platforms).
    p.display().to_string()
}

fn route(port: u16, tls: &str, extra: &str) -> String {
    format!(
        r#"
[agent]
hostname = "sender.test"
[smtp_out]
timeout = "10s"
{extra}
[[smtp_out.route]]
domain = "{DOMAIN}"
host = "127.0.0.1"
port = {port}
tls = "{tls}"
"#
    )
}

fn rcpts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ------------------------------------------------------------------ routes

#[tokio::test]
async fn plain_route_delivers_the_exact_bytes_with_the_right_envelope() {
    let peer = SmtpPeer::start(&PeerOptions::default());
    let out = outbound(&route(peer.port, "none", ""));
    let raw = message("plain-1");

    let d = out
        .deliver(
            DOMAIN,
            "alice@sender.test",
            &rcpts(&["bob@peer.test", "carol@peer.test"]),
            &raw,
        )
        .await
        .unwrap_or_else(|e| panic!("delivery failed: {e}\npeer: {}", peer.stderr()));
    assert_eq!(d.host, "127.0.0.1");
    assert_eq!(d.port, peer.port);
    assert!(!d.tls);
    assert!(
        d.response.starts_with("250 2.0.0 Ok: queued as "),
        "{}",
        d.response
    );

    let got = peer.messages();
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!(m.mail_from, "alice@sender.test");
    assert_eq!(m.rcpt_to, ["bob@peer.test", "carol@peer.test"]);
    assert_eq!(m.size, raw.len(), "byte count");
    assert_eq!(m.sha256, sha256_hex(&raw), "the bytes arrive exactly");
    assert_eq!(m.message_id.as_deref(), Some("<plain-1@sender.test>"));
    assert!(m.mail_options.is_empty(), "7-bit message: {m:?}");
    assert!(!m.tls);
    assert!(
        d.response.ends_with(&m.sha256[..12].to_uppercase()),
        "the reply is the peer's: {}",
        d.response
    );

    // The null reverse-path (MDNs, bounces), and a message without a final CRLF.
    let mut raw2 = message("plain-2");
    raw2.truncate(raw2.len() - 2);
    out.deliver(DOMAIN, "", &rcpts(&["bob@peer.test"]), &raw2)
        .await
        .expect("null sender delivery");
    let got = peer.messages();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].mail_from, "", "MAIL FROM:<>");
    let mut expected = raw2.clone();
    expected.extend_from_slice(b"\r\n");
    assert_eq!(
        got[1].sha256,
        sha256_hex(&expected),
        "SMTP ends the data with CRLF"
    );
    assert!(
        peer.auth_attempts().is_empty(),
        "no AUTH without credentials"
    );
}

#[tokio::test]
async fn starttls_route_trusts_the_peer_through_tls_ca() {
    let peer = SmtpPeer::start(&PeerOptions {
        starttls: true,
        require_tls: true,
        ..Default::default()
    });
    let ca = format!("tls_ca = \"{}\"", toml_path(&peer.ca_pem()));
    let out = outbound(&route(peer.port, "starttls", &ca));
    let raw = message("tls-1");
    let d = out
        .deliver(
            DOMAIN,
            "alice@sender.test",
            &rcpts(&["bob@peer.test"]),
            &raw,
        )
        .await
        .unwrap_or_else(|e| panic!("delivery failed: {e}\npeer: {}", peer.stderr()));
    assert!(d.tls, "{d:?}");
    let got = peer.messages();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls, "the peer saw TLS");
    assert_eq!(got[0].sha256, sha256_hex(&raw));

    // Without tls_ca the self-signed certificate is not trusted: retry later, nothing sent.
    let untrusting = outbound(&route(peer.port, "starttls", ""));
    let e = untrusting
        .deliver(
            DOMAIN,
            "alice@sender.test",
            &rcpts(&["bob@peer.test"]),
            &raw,
        )
        .await
        .expect_err("an untrusted certificate must fail the attempt");
    assert!(e.is_transient(), "{e:?}");
    assert!(e.to_string().contains("STARTTLS"), "{e}");
    assert_eq!(peer.messages().len(), 1, "nothing more was delivered");
}

fn auth_route(peer: &SmtpPeer, env: &str) -> String {
    format!(
        "{}username = \"edge-user\"\npassword_env = \"{env}\"\nname = \"hisp-submission\"\n",
        route(
            peer.port,
            "starttls",
            &format!("tls_ca = \"{}\"", toml_path(&peer.ca_pem()))
        )
    )
}

#[tokio::test]
async fn route_with_auth_delivers() {
    let (env, password) = password_env();
    let peer = SmtpPeer::start(&PeerOptions {
        starttls: true,
        auth: Some(("edge-user".into(), password)),
        ..Default::default()
    });
    let out = outbound(&auth_route(&peer, env));
    let raw = message("auth-1");
    let d = out
        .deliver(
            DOMAIN,
            "alice@sender.test",
            &rcpts(&["bob@peer.test"]),
            &raw,
        )
        .await
        .unwrap_or_else(|e| panic!("delivery failed: {e}\npeer: {}", peer.stderr()));
    assert!(d.tls);
    let auth = peer.auth_attempts();
    assert_eq!(auth.len(), 1, "{auth:?}");
    assert!(auth[0].success && auth[0].tls, "{auth:?}");
    assert_eq!(auth[0].user.as_deref(), Some("edge-user"));
    assert_eq!(auth[0].mechanism, "PLAIN", "PLAIN is preferred");
    let got = peer.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].auth_user.as_deref(), Some("edge-user"));
    assert_eq!(got[0].sha256, sha256_hex(&raw));
}

#[tokio::test]
async fn rejected_auth_disables_the_credential_after_exactly_one_attempt() {
    let (env, password) = password_env();
    let peer = SmtpPeer::start(&PeerOptions {
        starttls: true,
        auth: Some(("edge-user".into(), format!("not-{password}"))),
        ..Default::default()
    });
    let out = outbound(&auth_route(&peer, env));
    let e = out
        .deliver(
            DOMAIN,
            "alice@sender.test",
            &rcpts(&["bob@peer.test"]),
            &message("auth-2"),
        )
        .await
        .expect_err("wrong password");
    match &e {
        DeliveryError::AuthRejected { credential, reason } => {
            assert_eq!(credential, "hisp-submission");
            assert!(reason.contains("535"), "{reason}");
            assert!(reason.contains("AUTH PLAIN"), "{reason}");
        }
        other => panic!("expected AuthRejected, got {other:?}"),
    }
    assert!(!e.is_transient() && !e.is_permanent());
    assert!(e.to_string().contains("credentials reset"), "{e}");
    let auth = peer.auth_attempts();
    assert_eq!(auth.len(), 1, "exactly one AUTH attempt: {auth:?}");
    assert!(!auth[0].success);
    assert!(peer.messages().is_empty());
}

#[tokio::test]
async fn missing_password_variable_is_a_configuration_problem_without_auth() {
    let (_, password) = password_env();
    let peer = SmtpPeer::start(&PeerOptions {
        starttls: true,
        auth: Some(("edge-user".into(), password)),
        ..Default::default()
    });
    let out = outbound(&auth_route(&peer, UNSET_ENV));
    let e = out
        .deliver(
            DOMAIN,
            "alice@sender.test",
            &rcpts(&["bob@peer.test"]),
            &message("auth-3"),
        )
        .await
        .expect_err("no password");
    assert!(matches!(e, DeliveryError::Configuration(_)), "{e:?}");
    assert!(e.to_string().contains(UNSET_ENV), "{e}");
    assert!(e.to_string().contains("hisp-submission"), "{e}");
    assert!(!e.is_transient() && !e.is_permanent());
    assert!(peer.auth_attempts().is_empty(), "no AUTH attempt");
    assert!(peer.messages().is_empty());
}

#[tokio::test]
async fn a_4xx_is_transient_and_the_next_attempt_delivers() {
    let peer = SmtpPeer::start(&PeerOptions {
        data: vec!["451 4.3.0 Try again later".into()],
        ..Default::default()
    });
    let out = outbound(&route(peer.port, "none", ""));
    let raw = message("retry-1");
    let to = rcpts(&["bob@peer.test"]);
    let e = out
        .deliver(DOMAIN, "alice@sender.test", &to, &raw)
        .await
        .expect_err("451 at the end of DATA");
    assert!(e.is_transient(), "{e:?}");
    assert!(e.to_string().contains("451 4.3.0 Try again later"), "{e}");
    assert!(e.to_string().contains("end of DATA"), "{e}");
    assert!(peer.messages().is_empty());

    out.deliver(DOMAIN, "alice@sender.test", &to, &raw)
        .await
        .expect("the second attempt gets 250");
    assert_eq!(peer.messages().len(), 1);
}

#[tokio::test]
async fn a_5xx_is_permanent_with_the_reply_text() {
    let peer = SmtpPeer::start(&PeerOptions {
        rcpt_by_address: vec![(
            "bob@peer.test".into(),
            "550 5.1.1 <bob@peer.test>: Recipient address rejected".into(),
        )],
        data: vec!["554 5.6.0 Message content rejected".into()],
        ..Default::default()
    });
    let out = outbound(&route(peer.port, "none", ""));
    let raw = message("reject-1");

    // One recipient refused among accepted ones: the whole transaction fails before DATA.
    let e = out
        .deliver(
            DOMAIN,
            "alice@sender.test",
            &rcpts(&["carol@peer.test", "bob@peer.test"]),
            &raw,
        )
        .await
        .expect_err("550 to RCPT");
    assert!(e.is_permanent(), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("RCPT TO:<bob@peer.test>")
            && text.contains("550 5.1.1 <bob@peer.test>: Recipient address rejected"),
        "{text}"
    );
    assert!(
        peer.messages().is_empty(),
        "per transaction: carol got nothing either"
    );

    // 5xx to the end of DATA.
    let e = out
        .deliver(
            DOMAIN,
            "alice@sender.test",
            &rcpts(&["carol@peer.test"]),
            &raw,
        )
        .await
        .expect_err("554 to DATA");
    assert!(e.is_permanent(), "{e:?}");
    assert!(
        e.to_string().contains("554 5.6.0 Message content rejected"),
        "{e}"
    );
    assert!(
        !e.to_string().contains("starts with a dot"),
        "no message content in errors"
    );
    assert!(peer.messages().is_empty());
}

#[tokio::test]
async fn connection_refused_is_transient() {
    // A port that was free a moment ago: nothing listens there.
    let port = free_port();
    let out = outbound(&route(port, "none", ""));
    let e = out
        .deliver(
            DOMAIN,
            "alice@sender.test",
            &rcpts(&["bob@peer.test"]),
            &message("refused-1"),
        )
        .await
        .expect_err("nothing listens");
    assert!(e.is_transient(), "{e:?}");
    assert!(
        e.to_string()
            .contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{e}"
    );
}

// ------------------------------------------------------------------ MX through dnsmasq

/// dnsmasq answering for `*.test` with the given extra options (`--mx-host`, `--host-record`).
/// (support::dnsmasq's `Zone` has no MX records; the start-up is the same.)
struct MxDns {
    _child: ChildGuard,
    _dir: TempDir,
    port: u16,
}

impl MxDns {
    fn start(records: &[String]) -> MxDns {
        require_program("dnsmasq", dnsmasq::INSTALL);
        let dir = TempDir::new().expect("temp dir");
        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let log = dir.path().join(format!("dnsmasq-{attempt}.log"));
            let mut args: Vec<String> = [
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--conf-file=/dev/null",
                "--local=/test/",
                "--cache-size=0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.push(format!(
                "--pid-file={}",
                dir.path().join("dnsmasq.pid").display()
            ));
            args.push(format!("--port={port}"));
            args.extend(records.iter().cloned());
            let mut child = spawn_tied(&program("dnsmasq"), &args, &log)
                .unwrap_or_else(|e| panic!("cannot start dnsmasq ({e}): {}", dnsmasq::INSTALL));
            match wait_for_tcp(&mut child, port, Duration::from_secs(10), Some(&log)) {
                Ok(()) => {
                    return MxDns {
                        _child: child,
                        _dir: dir,
                        port,
                    };
                }
                Err(e) => last = e,
            }
        }
        panic!("dnsmasq did not start: {last}");
    }
}

fn mx_config(dns: &MxDns, mx_port: u16, mx_tls: &str, tls_ca: Option<PathBuf>) -> String {
    let ca = tls_ca
        .map(|p| format!("tls_ca = \"{}\"", toml_path(&p)))
        .unwrap_or_default();
    format!(
        r#"
[agent]
hostname = "sender.test"
[discovery]
nameservers = ["127.0.0.1:{}"]
timeout = "2s"
attempts = 1
[smtp_out]
mx_port = {mx_port}
mx_tls = "{mx_tls}"
timeout = "10s"
{ca}
"#,
        dns.port
    )
}

#[tokio::test]
async fn mx_lookup_moves_on_from_a_refusing_host_to_the_next() {
    // The peer listens on 127.0.0.1 only: mx1 (127.0.0.2) refuses connections on the port.
    let peer = SmtpPeer::start(&PeerOptions {
        starttls: true,
        tls_names: vec!["mx2.peer.test".into()],
        ..Default::default()
    });
    let dns = MxDns::start(&[
        "--mx-host=peer.test,mx2.peer.test,20".into(),
        "--mx-host=peer.test,mx1.peer.test,10".into(),
        "--host-record=mx1.peer.test,127.0.0.2".into(),
        "--host-record=mx2.peer.test,127.0.0.1".into(),
        // No MX, an address: the domain is its own mail host (RFC 5321 §5.1).
        "--host-record=implicit.test,127.0.0.1".into(),
    ]);
    let out = outbound(&mx_config(&dns, peer.port, "required", Some(peer.ca_pem())));

    let targets = out.targets(DOMAIN).await.expect("MX lookup");
    let expected = |host: &str| Target {
        host: host.into(),
        port: peer.port,
        tls: TargetTls::Starttls { required: true },
        auth: None,
    };
    assert_eq!(
        targets,
        vec![expected("mx1.peer.test"), expected("mx2.peer.test")]
    );
    assert_eq!(
        out.targets("implicit.test").await.expect("implicit MX"),
        vec![expected("implicit.test")]
    );

    let raw = message("mx-1");
    let d = out
        .deliver(
            DOMAIN,
            "alice@sender.test",
            &rcpts(&["bob@peer.test"]),
            &raw,
        )
        .await
        .unwrap_or_else(|e| panic!("delivery failed: {e}\npeer: {}", peer.stderr()));
    assert_eq!(d.host, "mx2.peer.test");
    assert_eq!(d.port, peer.port);
    assert!(
        d.tls,
        "mx_tls = required, certificate verified for mx2.peer.test"
    );
    let got = peer.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sha256, sha256_hex(&raw));
}

#[tokio::test]
async fn a_domain_without_mx_or_address_fails_permanently() {
    let dns = MxDns::start(&["--mx-host=nomail.test,.,0".into()]);
    let out = outbound(&mx_config(&dns, 25, "required", None));
    let to = rcpts(&["bob@nowhere.test"]);

    let e = out
        .deliver("nowhere.test", "alice@sender.test", &to, &message("nx-1"))
        .await
        .expect_err("NXDOMAIN");
    assert!(e.is_permanent(), "{e:?}");
    assert!(e.to_string().contains("nowhere.test does not exist"), "{e}");

    let e = out.targets("nomail.test").await.expect_err("null MX");
    assert!(e.is_permanent(), "{e:?}");
    assert!(e.to_string().contains("null MX"), "{e}");
}

#[tokio::test]
async fn mx_tls_required_refuses_a_peer_without_starttls() {
    let peer = SmtpPeer::start(&PeerOptions::default());
    let dns = MxDns::start(&[
        "--mx-host=peer.test,mx.peer.test,10".into(),
        "--host-record=mx.peer.test,127.0.0.1".into(),
    ]);
    let out = outbound(&mx_config(&dns, peer.port, "required", None));
    let e = out
        .deliver(
            DOMAIN,
            "alice@sender.test",
            &rcpts(&["bob@peer.test"]),
            &message("notls-1"),
        )
        .await
        .expect_err("no STARTTLS offered");
    assert!(e.is_transient(), "{e:?}");
    assert!(
        e.to_string()
            .contains("STARTTLS required by smtp_out.mx_tls"),
        "{e}"
    );
    assert!(e.to_string().contains("does not offer STARTTLS"), "{e}");
    assert!(peer.messages().is_empty(), "nothing sent in plain text");

    // Opportunistic: the same peer gets the message in plain text.
    let out = outbound(&mx_config(&dns, peer.port, "opportunistic", None));
    let d = out
        .deliver(
            DOMAIN,
            "alice@sender.test",
            &rcpts(&["bob@peer.test"]),
            &message("notls-2"),
        )
        .await
        .expect("opportunistic delivery");
    assert!(!d.tls);
    assert_eq!(peer.messages().len(), 1);
}
