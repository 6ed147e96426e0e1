//! The operations endpoint of `serve` (`[http] listen`): two agents on loopback exchange a
//! message with MDNs, then /metrics on both shows the counters moved, /healthz and /readyz
//! answer 200; an expired anchor added to B makes its /readyz 503 naming the anchor; unknown
//! paths are 404; garbage does not bring the endpoint down; a busy port fails start-up naming
//! `http.listen`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use direct_agent::spool::{Spool, SqliteSpool};
use support::agents::{AgentSetup, BIN, Extra, cli, start, two_agents, wait_until};
use support::{free_port, wait_for_tcp};

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/samples/vxu-v04.hl7")
}

fn cert(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("certs")
        .join(name)
}

fn http_tail(port: u16) -> Extra {
    Extra {
        tail: Some(format!("[http]\nlisten = \"127.0.0.1:{port}\"\n")),
        ..Extra::default()
    }
}

/// Send raw bytes to the endpoint and read the whole answer (the server closes).
fn raw(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A server that stops reading (an oversized head) may reset the connection mid-write.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET path` over HTTP/1.0: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let text = raw(port, format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of one series (`name{labels}` exactly as exported) in an exposition.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    })
}

fn metric(port: u16, series: &str) -> f64 {
    value(&get(port, "/metrics").1, series).unwrap_or(-1.0)
}

#[test]
fn metrics_health_and_readiness_of_two_agents() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let (a, b) = two_agents(dir.path(), &http_tail(pa), &http_tail(pb));
    let mut ra = start(&a);
    let mut rb = start(&b);
    for (r, port, s) in [(&mut ra, pa, &a), (&mut rb, pb, &b)] {
        wait_for_tcp(&mut r.child, port, Duration::from_secs(10), Some(&s.log))
            .unwrap_or_else(|e| panic!("{} endpoint: {e}", s.name));
    }
    assert!(ra.log_text().contains("operations endpoint"));

    let out = cli(
        &a,
        &[
            "send",
            "--from",
            "ehr@hisp-a.example",
            "--to",
            "iis@hisp-b.example",
            "--request-mdn",
            "--wait",
            "--timeout",
            "60s",
        ],
    )
    .arg("--in")
    .arg(sample())
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "send --wait: {}\nA:\n{}\nB:\n{}",
        String::from_utf8_lossy(&out.stderr),
        ra.log_text(),
        rb.log_text()
    );

    // B received and delivered the message, and sent its MDNs.
    assert!(
        wait_until(Duration::from_secs(20), || {
            metric(
                pb,
                "direct_agent_messages_received_total{outcome=\"delivered\"}",
            ) == 1.0
        }),
        "{}",
        get(pb, "/metrics").1
    );
    assert!(wait_until(Duration::from_secs(20), || metric(
        pb,
        "direct_agent_messages_sent_total{kind=\"mdn\",outcome=\"sent\"}"
    ) >= 1.0));
    // A sent it once and timed the processed MDN (send --wait returned once it was recorded).
    let ma = get(pa, "/metrics").1;
    assert_eq!(
        value(
            &ma,
            "direct_agent_messages_sent_total{kind=\"message\",outcome=\"sent\"}"
        ),
        Some(1.0),
        "{ma}"
    );
    assert!(value(&ma, "direct_agent_mdn_round_trip_seconds_count").unwrap() >= 1.0);
    assert!(
        value(
            &ma,
            "direct_agent_mdn_round_trip_seconds_bucket{le=\"+Inf\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        value(
            &ma,
            "direct_agent_messages_received_total{outcome=\"delivered\"}"
        )
        .unwrap()
            >= 1.0,
        "the MDNs count as received: {ma}"
    );
    assert_eq!(
        value(&ma, "direct_agent_quarantined_total{reason=\"trust\"}"),
        Some(0.0)
    );
    // Gauges from the spool, the trust store and our credentials.
    let mb = get(pb, "/metrics").1;
    for m in [&ma, &mb] {
        assert!(value(m, "direct_agent_queue_depth").is_some(), "{m}");
        assert!(value(m, "direct_agent_queue_oldest_age_seconds").is_some());
        assert_eq!(value(m, "direct_agent_quarantine_size"), Some(0.0));
        assert_eq!(value(m, "direct_agent_disabled_credentials"), Some(0.0));
        assert!(m.contains("# TYPE direct_agent_mdn_round_trip_seconds histogram\n"));
        // No addresses or subjects in any label.
        assert!(!m.contains('@') && !m.contains("CN="), "{m}");
    }
    assert!(
        value(
            &mb,
            "direct_agent_anchor_expiry_days{domain=\"hisp-b.example\"}"
        )
        .unwrap()
            > 0.0
    );
    assert!(
        value(
            &mb,
            "direct_agent_certificate_expiry_days{domain=\"hisp-b.example\"}"
        )
        .unwrap()
            > 0.0
    );
    // The partner's certificate came from [[discovery.certificate]] (the MDNs B sealed).
    assert!(
        value(
            &mb,
            "direct_agent_discovery_lookups_total{source=\"static\",result=\"found\"}"
        )
        .unwrap()
            >= 1.0,
        "{mb}"
    );

    for port in [pa, pb] {
        assert_eq!(get(port, "/healthz"), (200, "ok\n".to_string()));
        assert_eq!(get(port, "/readyz"), (200, "ready\n".to_string()));
        assert_eq!(get(port, "/nope").0, 404);
    }
    let post = raw(
        pb,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    // Garbage gets a 400 (or nothing), and the endpoint keeps answering.
    let garbage = raw(pb, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n");
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 400 "),
        "{garbage}"
    );
    let _ = raw(pb, &[b'A'; 20_000]);
    assert_eq!(get(pb, "/healthz").0, 200);

    // An expired anchor makes B not ready, and /readyz says which.
    let out = cli(&b, &["anchors", "add"])
        .arg(cert("expired@hisp-b.example.pem"))
        .args(["--domain", "hisp-b.example", "--allow-leaf-anchor"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "anchors add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = get(pb, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready\n"), "{body}");
    assert!(
        body.contains("anchor") && body.contains("hisp-b.example") && body.contains("expired"),
        "{body}"
    );
    assert!(
        metric(
            pb,
            "direct_agent_anchor_expiry_days{domain=\"hisp-b.example\"}"
        ) < 0.0,
        "the nearest anchor expiry is now in the past"
    );
    assert_eq!(get(pb, "/healthz").0, 200, "liveness is not readiness");
    assert_eq!(metric(pb, "direct_agent_ready"), 0.0);
    assert_eq!(get(pa, "/readyz").0, 200);
    assert_eq!(metric(pa, "direct_agent_ready"), 1.0);

    // A credential disabled in A's spool (as a delivery worker does when AUTH is refused) makes
    // A not ready until `credentials reset`.
    let spool = SqliteSpool::open(&a.data_dir).unwrap();
    spool
        .disable_credential("smtp:relay.example", "535 authentication failed", 1)
        .unwrap();
    let (status, body) = get(pa, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("credential smtp:relay.example disabled: 535 authentication failed")
            && body.contains("credentials reset smtp:relay.example"),
        "{body}"
    );
    assert_eq!(metric(pa, "direct_agent_disabled_credentials"), 1.0);
    let out = cli(&a, &["credentials", "reset", "smtp:relay.example"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(pa, "/readyz"), (200, "ready\n".to_string()));

    assert!(
        ra.terminate(Duration::from_secs(40))
            .is_some_and(|s| s.success())
    );
    assert!(
        rb.terminate(Duration::from_secs(40))
            .is_some_and(|s| s.success())
    );
}

#[test]
fn a_busy_http_port_fails_start_up_naming_http_listen() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let (a, _b) = two_agents(dir.path(), &http_tail(port), &Extra::default());
    let stderr = run_to_exit(&a, Duration::from_secs(30));
    assert!(stderr.contains("http.listen"), "{stderr}");
    assert!(stderr.contains(&port.to_string()), "{stderr}");
}

/// Run `serve` expecting it to exit on its own with a failure; its standard error.
fn run_to_exit(s: &AgentSetup, limit: Duration) -> String {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&s.config)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(!status.success(), "serve should have failed: {err}");
            return err;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve kept running with its http.listen port busy");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
