//! `direct-agent demo`: the whole product on one machine in one command. Two agents
//! (hisp-a.example with an EHR sender, hisp-b.example with an IIS-side directory sink) run in this
//! process on free loopback ports, with a throwaway PKI ([`pki`]), static certificate discovery and
//! static routes (no DNS, no root, no system changes). The demo then runs, through the same code
//! as the real commands: the ping pong handshake; a VXU^V04 with MDNs requested, validated by B,
//! written to its sink, answered with processed and dispatched MDNs and an HL7 ACK; a message
//! signed by an untrusted certificate, quarantined with its reason; and the onboarding review of
//! what B received. It prints a transcript with timings and where the files are.
//!
//! The agents' logs go to `agents.log` in the demo folder, not to the terminal.

pub mod pki;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agent::Context;
use crate::agent::serve::Server;
use crate::spool::{InboundState, NewOutbound, OutboundKind, Spool, SqliteSpool};

/// The VXU^V04 the demo sends (synthetic; no real person).
const SAMPLE_VXU: &[u8] = include_bytes!("../../config/samples/vxu-v04.hl7");

struct Agent {
    name: &'static str,
    domain: &'static str,
    config: PathBuf,
    data: PathBuf,
    inbox: PathBuf,
    port: u16,
}

/// A free loopback TCP port (bound and released: another program could take it in between, which
/// on a demo machine does not happen in practice).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free loopback port: {e}"))
}

fn toml_path(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

/// Write one agent's configuration.
fn write_config(
    me: &Agent,
    partner: &Agent,
    pki: &pki::DemoPki,
    own: &str,
    theirs: &str,
) -> Result<(), String> {
    let (ours_app, ours_fac, their_app, their_fac) = if me.name == "A" {
        ("DEMO-EHR", "DEMO-CLINIC", "IIS", "STATE-IIS")
    } else {
        ("IIS", "STATE-IIS", "DEMO-EHR", "DEMO-CLINIC")
    };
    let partner_intermediate = if me.name == "A" {
        "intermediate-b"
    } else {
        "intermediate-a"
    };
    let text = format!(
        r#"# direct-agent demo: agent {name} ({domain}). Written by `direct-agent demo`.
[agent]
data_dir = "{data}"
hostname = "mx.{domain}"
environment = "test"

[trust]
# The demo PKI publishes no CRLs.
revocation = "best-effort"
aia = false

[discovery]
# No DNS in the demo: the partner's certificate is configured below.
nameservers = ["127.0.0.1:9"]
timeout = "200ms"
attempts = 1
ldap = false
  [[discovery.certificate]]
  for = "{partner_domain}"
  file = "{partner_cert}"

[[domain]]
name = "{domain}"
intermediates = ["{partner_intermediate}"]
  [[domain.credential]]
  key = "{key}"
  cert = "{cert}"

[smtp_in]
listen = "127.0.0.1:{port}"

[smtp_out]
retry_initial = "1s"
retry_max = "2s"
timeout = "10s"

[[smtp_out.route]]
domain = "{partner_domain}"
host = "127.0.0.1"
port = {partner_port}
tls = "none"

[[sink]]
kind = "directory"
path = "{inbox}"

[mdn]
processed_timeout = "60s"
dispatched_timeout = "60s"

[hl7]
profile = "immunization"
reply_with_ack = {reply}

[[partner]]
address = "{partner_domain}"
sending_application = "{ours_app}"
sending_facility = "{ours_fac}"
receiving_application = "{their_app}"
receiving_facility = "{their_fac}"
"#,
        name = me.name,
        domain = me.domain,
        data = toml_path(&me.data),
        partner_domain = partner.domain,
        partner_cert = toml_path(&pki.path(&format!("{theirs}.pem"))),
        partner_intermediate = toml_path(&pki.path(&format!("{partner_intermediate}.pem"))),
        key = toml_path(&pki.path(&format!("{own}.key"))),
        cert = toml_path(&pki.path(&format!("{own}.pem"))),
        port = me.port,
        partner_port = partner.port,
        inbox = toml_path(&me.inbox),
        reply = me.name == "B",
    );
    std::fs::write(&me.config, text).map_err(|e| format!("{}: {e}", me.config.display()))
}

/// The transcript: numbered steps with timings.
struct Transcript {
    started: Instant,
    failures: Vec<String>,
}

impl Transcript {
    fn step(&self, n: usize, title: &str) -> Instant {
        println!("\n== [{n}/7] {title}");
        Instant::now()
    }

    fn done(&mut self, since: Instant, ok: bool, what: &str) {
        let ms = since.elapsed().as_millis();
        if ok {
            println!("   -> ok: {what} ({ms} ms)");
        } else {
            println!("   -> FAILED: {what} ({ms} ms)");
            self.failures.push(what.to_string());
        }
    }
}

/// Run a real `direct-agent` command in this process, echoing it first.
fn command(config: &Path, args: &[&str]) -> i32 {
    println!(
        "   $ direct-agent --config {} {}",
        config.display(),
        args.join(" ")
    );
    let mut argv: Vec<OsString> = vec!["direct-agent".into(), "--config".into(), config.into()];
    argv.extend(args.iter().map(OsString::from));
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let code = crate::cli::run_from(argv);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    code
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// Files in a directory sink with `ext`.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `direct-agent demo [--keep DIR]`; returns the exit code (0 when every step passed).
pub fn run(keep: Option<PathBuf>) -> i32 {
    match run_inner(keep) {
        Ok(0) => 0,
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            crate::cli::EXIT_FAILED
        }
    }
}

fn run_inner(keep: Option<PathBuf>) -> Result<i32, String> {
    let dir = match &keep {
        Some(d) => {
            if d.exists()
                && std::fs::read_dir(d)
                    .map(|mut r| r.next().is_some())
                    .unwrap_or(true)
            {
                return Err(format!(
                    "--keep {}: the folder exists and is not empty; name a new one",
                    d.display()
                ));
            }
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            std::fs::canonicalize(d).map_err(|e| format!("{}: {e}", d.display()))?
        }
        None => {
            let d = std::env::temp_dir().join(format!(
                "direct-agent-demo-{}-{}",
                std::process::id(),
                crate::clock::Clock::unix_seconds(&crate::clock::SystemClock)
            ));
            std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            d
        }
    };
    let log = dir.join("agents.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::sync::Mutex::new(log_file))
        .with_ansi(false)
        .with_target(false)
        .try_init();
    let result = run_steps(&dir);
    match (&keep, &result) {
        (None, Ok(0)) => {
            let _ = std::fs::remove_dir_all(&dir);
            println!(
                "\n(the demo folder was removed: `direct-agent demo --keep DIR` keeps the PKI, configurations,\n stores, sink folders, agents.log and review.html to look at)"
            );
        }
        _ => println!("\nthe demo folder is kept: {}", dir.display()),
    }
    result
}

fn run_steps(dir: &Path) -> Result<i32, String> {
    let mut t = Transcript {
        started: Instant::now(),
        failures: Vec::new(),
    };
    println!("direct-agent demo: two Direct agents exchanging HL7 on loopback");
    println!("   folder: {}", dir.display());
    println!("   agent logs: {}", dir.join("agents.log").display());

    // 1. PKI and configurations.
    let s = t.step(1, "throwaway PKI and two agent configurations");
    let pki = pki::DemoPki::create(&dir.join("pki"))?;
    let mk = |name, domain: &'static str, port| Agent {
        name,
        domain,
        config: dir.join(format!("{}.toml", domain)),
        data: dir.join(format!("{domain}-data")),
        inbox: dir.join(format!("{domain}-inbox")),
        port,
    };
    let a = mk("A", "hisp-a.example", free_port()?);
    let b = mk("B", "hisp-b.example", free_port()?);
    write_config(&a, &b, &pki, "ehr", "iis")?;
    write_config(&b, &a, &pki, "iis", "ehr")?;
    println!(
        "   roots, intermediates and address-bound leaves for ehr@hisp-a.example and iis@hisp-b.example,"
    );
    println!(
        "   plus an untrusted root with a leaf impersonating ehr@hisp-a.example: {}",
        pki.dir.display()
    );
    let mut ok = command(
        &a.config,
        &[
            "anchors",
            "add",
            &pki.path("root-b.pem").display().to_string(),
            "--domain",
            a.domain,
        ],
    ) == 0;
    ok &= command(
        &b.config,
        &[
            "anchors",
            "add",
            &pki.path("root-a.pem").display().to_string(),
            "--domain",
            b.domain,
        ],
    ) == 0;
    t.done(
        s,
        ok,
        "PKI issued, configurations written, each side trusts the other's root",
    );
    if !ok {
        return Ok(crate::cli::EXIT_FAILED);
    }

    // 2. Start both agents.
    let s = t.step(2, "start both agents (serve, in this process)");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut handles = Vec::new();
    for agent in [&a, &b] {
        let ctx = Context::load(Some(&agent.config))?;
        let server = runtime.block_on(Server::bind(ctx))?;
        println!(
            "   {} ({}) listening on SMTP {:?}",
            agent.name,
            agent.domain,
            server.smtp_addresses()
        );
        handles.push(runtime.spawn(server.run(stopped.clone())));
    }
    t.done(s, true, "both agents running");

    let outcome = exchange(&mut t, dir, &a, &b, &pki);

    // Stop the agents.
    let _ = stop.send(true);
    for h in handles {
        let _ = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), h).await });
    }
    outcome?;
    println!(
        "\n== demo finished in {:.1} s: {}",
        t.started.elapsed().as_secs_f64(),
        if t.failures.is_empty() {
            "every step passed".to_string()
        } else {
            format!(
                "{} step(s) FAILED: {}",
                t.failures.len(),
                t.failures.join("; ")
            )
        }
    );
    println!(
        "   A's inbox (the HL7 ACK from B):      {}",
        a.inbox.display()
    );
    println!(
        "   B's inbox (the VXU and its sidecar): {}",
        b.inbox.display()
    );
    println!("   review: {}", dir.join("review.html").display());
    Ok(if t.failures.is_empty() {
        0
    } else {
        crate::cli::EXIT_FAILED
    })
}

fn exchange(
    t: &mut Transcript,
    dir: &Path,
    a: &Agent,
    b: &Agent,
    pki: &pki::DemoPki,
) -> Result<(), String> {
    // 3. Ping pong.
    let s = t.step(3, "ping pong: prove the route A -> B works");
    let code = command(
        &a.config,
        &[
            "ping",
            "iis@hisp-b.example",
            "--from",
            "ehr@hisp-a.example",
            "--timeout",
            "60s",
        ],
    );
    t.done(
        s,
        code == 0,
        "connectivity verified (discovery, trust, SMTP, processed MDN, pong)",
    );

    // 4. A VXU with MDNs requested.
    let s = t.step(
        4,
        "send a VXU^V04 from ehr@hisp-a.example to iis@hisp-b.example, MDNs requested",
    );
    let vxu = dir.join("vxu-v04.hl7");
    std::fs::write(&vxu, SAMPLE_VXU).map_err(|e| format!("{}: {e}", vxu.display()))?;
    let code = command(
        &a.config,
        &[
            "send",
            "--from",
            "ehr@hisp-a.example",
            "--to",
            "iis@hisp-b.example",
            "--in",
            &vxu.display().to_string(),
            "--request-mdn",
            "--wait",
            "--timeout",
            "60s",
        ],
    );
    let delivered = files(&b.inbox, "hl7");
    println!("   B validated it (immunization profile) and wrote it to its sink:");
    for f in &delivered {
        println!("     {}", f.display());
    }
    t.done(
        s,
        code == 0 && !delivered.is_empty(),
        "delivered; processed and dispatched MDNs received: complete",
    );
    let _ = command(&a.config, &["status"]);

    // 5. The HL7 ACK back to A.
    let s = t.step(5, "B answers with the HL7 ACK as a Direct reply");
    let acked = wait_until(Duration::from_secs(30), || {
        files(&a.inbox, "hl7")
            .iter()
            .any(|f| std::fs::read_to_string(f).is_ok_and(|x| x.contains("MSA|")))
    });
    if acked {
        for f in files(&a.inbox, "hl7") {
            if let Ok(text) = std::fs::read_to_string(&f) {
                // An ACK holds no patient data: MSH, MSA and ERR only.
                if let Some(msa) = text.split(['\r', '\n']).find(|l| l.starts_with("MSA|")) {
                    println!("   {}: {msa}", f.display());
                }
            }
        }
    }
    t.done(s, acked, "ACK received by A's sink");

    // 6. A message signed by an untrusted certificate.
    let s = t.step(
        6,
        "a message signed by a certificate from an untrusted root is refused",
    );
    let bad = dir.join("untrusted.eml");
    let code = command(
        &a.config,
        &[
            "message",
            "seal",
            "--from",
            "ehr@hisp-a.example",
            "--to",
            "iis@hisp-b.example",
            "--in",
            &vxu.display().to_string(),
            "--sign-key",
            &pki.path("rogue.key").display().to_string(),
            "--sign-cert",
            &pki.path("rogue.pem").display().to_string(),
            "--recipient-cert",
            &pki.path("iis.pem").display().to_string(),
            "--out",
            &bad.display().to_string(),
        ],
    );
    let raw = std::fs::read(&bad).map_err(|e| format!("{}: {e}", bad.display()))?;
    let spool = SqliteSpool::open(&a.data).map_err(|e| e.to_string())?;
    let now = crate::clock::Clock::unix_seconds(&crate::clock::SystemClock);
    let message_id = crate::mime::entity::Entity::parse(&raw)
        .header("Message-ID")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| format!("<untrusted-{now}@hisp-a.example>"));
    spool
        .enqueue(NewOutbound {
            kind: OutboundKind::Message,
            message_id,
            mail_from: "ehr@hisp-a.example".into(),
            rcpt_to: vec!["iis@hisp-b.example".into()],
            raw: &raw,
            now,
            expires_at: now + 600,
        })
        .map_err(|e| e.to_string())?;
    println!("   (queued at A as it is, so A's agent delivers it to B over SMTP)");
    let b_spool = SqliteSpool::open(&b.data).map_err(|e| e.to_string())?;
    let quarantined = wait_until(Duration::from_secs(30), || {
        b_spool
            .list_inbound(Some(InboundState::Quarantined))
            .is_ok_and(|q| !q.is_empty())
    });
    let _ = command(&b.config, &["quarantine", "list"]);
    t.done(
        s,
        code == 0 && quarantined,
        "quarantined at B with the trust failure; nothing reached B's sink",
    );

    // 7. The onboarding review of what B received.
    let s = t.step(7, "the onboarding review of the delivered message");
    let html = dir.join("review.html");
    let code = command(
        &b.config,
        &[
            "hl7",
            "review",
            &b.inbox.display().to_string(),
            "--html",
            &html.display().to_string(),
        ],
    );
    t.done(
        s,
        code == 0 && html.exists(),
        "every checklist item passed or not applicable",
    );
    Ok(())
}
