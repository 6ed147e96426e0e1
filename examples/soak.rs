//! Soak test (not run in CI): two real `direct-agent serve` processes on loopback, mixed traffic
//! both ways for N minutes, random SIGKILLs with restarts and SIGSTOP/SIGCONT pauses, then a
//! reconciliation of every Message-ID sent against the receiving side and the senders' queues.
//!
//! ```text
//! cargo build --release --bin direct-agent
//! cargo run --release --example soak -- --minutes 2
//! ```
//!
//! Options: `--minutes N` (default 2, fractions allowed), `--bin PATH` (default: the
//! `direct-agent` of the same profile under target/), `--keep DIR` (keep configurations, stores,
//! inboxes and logs there; default: a temporary folder, kept only on failure), `--seed N`.
//!
//! The agents are set up as in tests/support/agents.rs (hisp-a.example with ehr@, hisp-b.example
//! with iis@, the committed test PKI, revocation off, routes to each other's port, directory sinks).
//! Traffic: `direct-agent send` of config/samples/vxu-v04.hl7, direction and `--request-mdn` chosen
//! at random; the Message-ID printed by each successful `send` is recorded. Chaos, on its own
//! thread every 3-10 s: SIGKILL one agent and restart it 0.2-3 s later, or pause it with SIGSTOP
//! for 1-4 s. At the end both run again, and the soak waits (up to `--drain` seconds, default 180)
//! until every sent message is accounted for, then checks:
//!
//! - each Message-ID sent has exactly one sidecar (`*.json`) in the receiver's inbox, or, if none,
//!   one quarantine entry with a reason (counted as quarantined, a discrepancy only when it has
//!   no reason); never both, never two sidecars; no sidecar that was not sent; nothing else
//!   quarantined (the MDNs about the soak's messages must all be accepted);
//! - each sender holds exactly one outbound `message` entry per Message-ID, and every outbound
//!   entry (messages, MDNs, DSNs) is `sent`;
//! - each sent message's delivery tracking (`status`) is `complete`: its processed MDN, and its
//!   dispatched MDN with `--request-mdn`, came back and were accepted.
//!
//! Exit 0 when everything reconciles, 1 on any discrepancy, 2 on a setup error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cert(name: &str) -> PathBuf {
    root().join("certs").join(name)
}

/// A small xorshift generator: the soak needs variety, not statistical quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in `lo..hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo).max(1))
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

struct Args {
    minutes: f64,
    bin: PathBuf,
    keep: Option<PathBuf>,
    seed: u64,
    drain: u64,
}

fn parse_args() -> Result<Args, String> {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut args = Args {
        minutes: 2.0,
        bin: root().join("target").join(profile).join("direct-agent"),
        keep: None,
        seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1,
        drain: 180,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--minutes" => {
                args.minutes = value()?.parse().map_err(|e| format!("--minutes: {e}"))?
            }
            "--bin" => args.bin = PathBuf::from(value()?),
            "--keep" => args.keep = Some(PathBuf::from(value()?)),
            "--seed" => {
                let seed: u64 = value()?.parse().map_err(|e| format!("--seed: {e}"))?;
                args.seed = seed | 1;
            }
            "--drain" => {
                args.drain = value()?.parse().map_err(|e| format!("--drain: {e}"))?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: soak [--minutes N] [--bin PATH] [--keep DIR] [--seed N] [--drain SECONDS]"
                ));
            }
        }
    }
    if !args.bin.is_file() {
        return Err(format!(
            "{} is missing: run `cargo build{} --bin direct-agent` first, or pass --bin",
            args.bin.display(),
            if profile == "release" {
                " --release"
            } else {
                ""
            }
        ));
    }
    Ok(args)
}

/// One agent's files and port.
#[derive(Clone)]
struct Agent {
    name: &'static str,
    domain: &'static str,
    address: &'static str,
    config: PathBuf,
    data_dir: PathBuf,
    inbox: PathBuf,
    port: u16,
    log: PathBuf,
}

fn free_port() -> u16 {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    tcp.local_addr().expect("local address").port()
}

fn agent(dir: &Path, name: &'static str, domain: &'static str, address: &'static str) -> Agent {
    Agent {
        name,
        domain,
        address,
        config: dir.join(format!("{name}.toml")),
        data_dir: dir.join(format!("{name}-data")),
        inbox: dir.join(format!("{name}-inbox")),
        port: free_port(),
        log: dir.join(format!("{name}.log")),
    }
}

/// The configuration of tests/support/agents.rs, with short retries.
fn write_config(me: &Agent, partner: &Agent) -> std::io::Result<()> {
    let creds: String = [me.address, me.domain]
        .iter()
        .map(|stem| {
            format!(
                "  [[domain.credential]]\n  key = \"{}\"\n  cert = \"{}\"\n",
                cert(&format!("{stem}.key")).display(),
                cert(&format!("{stem}.fullchain.pem")).display()
            )
        })
        .collect();
    let partner_intermediate = if partner.domain == "hisp-a.example" {
        "intermediate-a.pem"
    } else {
        "intermediate-b.pem"
    };
    let text = format!(
        r#"[agent]
data_dir = "{data}"
hostname = "mx.{domain}"

[trust]
revocation = "off"
aia = false

[discovery]
nameservers = ["127.0.0.1:9"]
timeout = "200ms"
attempts = 1
ldap = false
  [[discovery.certificate]]
  for = "{partner_domain}"
  file = "{partner_cert}"

[[domain]]
name = "{domain}"
intermediates = ["{intermediate}"]
{creds}
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
"#,
        data = me.data_dir.display(),
        domain = me.domain,
        partner_domain = partner.domain,
        partner_cert = cert(&format!("{}.pem", partner.domain)).display(),
        intermediate = cert(partner_intermediate).display(),
        port = me.port,
        partner_port = partner.port,
        inbox = me.inbox.display(),
    );
    std::fs::write(&me.config, text)
}

fn cli(bin: &Path, a: &Agent, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.arg("--config").arg(&a.config).args(args);
    c
}

fn start(bin: &Path, a: &Agent) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.log)
        .map_err(|e| format!("{}: {e}", a.log.display()))?;
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&a.config)
        .arg("serve")
        .env("DIRECT_AGENT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let started = Instant::now();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], a.port));
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "agent {} exited at start ({status}); see {}",
                a.name,
                a.log.display()
            ));
        }
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("agent {} did not listen within 30 s", a.name))
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

/// Both agents' processes, shared by the traffic and the chaos threads.
struct Fleet {
    bin: PathBuf,
    agents: [Agent; 2],
    children: Mutex<[Option<Child>; 2]>,
}

impl Fleet {
    fn kill(&self, i: usize) {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut c) = children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&self, i: usize) -> Result<(), String> {
        let child = start(&self.bin, &self.agents[i])?;
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children[i] = Some(child);
        Ok(())
    }

    fn send_signal(&self, i: usize, sig: &str) {
        let children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = &children[i] {
            signal(c, sig);
        }
    }

    fn stop_all(&self) {
        for i in 0..2 {
            self.send_signal(i, "-CONT");
            self.kill(i);
        }
    }
}

#[derive(Default)]
struct Chaos {
    kills: usize,
    pauses: usize,
    restart_errors: Vec<String>,
}

fn chaos(fleet: &Fleet, mut rng: Rng, running: &AtomicBool) -> Chaos {
    let mut tally = Chaos::default();
    let sleep_while_running = |d: Duration| {
        let until = Instant::now() + d;
        while running.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    loop {
        sleep_while_running(rng.millis(3_000, 10_000));
        if !running.load(Ordering::SeqCst) {
            return tally;
        }
        let i = (rng.next() % 2) as usize;
        if rng.next().is_multiple_of(3) {
            let pause = rng.millis(1_000, 4_000);
            eprintln!("chaos: SIGSTOP {} for {pause:?}", fleet.agents[i].name);
            fleet.send_signal(i, "-STOP");
            std::thread::sleep(pause);
            fleet.send_signal(i, "-CONT");
            tally.pauses += 1;
        } else {
            let down = rng.millis(200, 3_000);
            eprintln!(
                "chaos: SIGKILL {}, restart in {down:?}",
                fleet.agents[i].name
            );
            fleet.kill(i);
            tally.kills += 1;
            std::thread::sleep(down);
            if let Err(e) = fleet.restart(i) {
                eprintln!("chaos: restart failed: {e}");
                tally.restart_errors.push(e);
            }
        }
    }
}

/// What one `send` recorded.
struct Sent {
    /// Message-ID -> index of the sending agent.
    ids: BTreeMap<String, usize>,
    with_mdn: usize,
    failures: Vec<String>,
}

fn traffic(fleet: &Fleet, mut rng: Rng, until: Instant) -> Sent {
    let payload = root().join("config/samples/vxu-v04.hl7");
    let mut sent = Sent {
        ids: BTreeMap::new(),
        with_mdn: 0,
        failures: Vec::new(),
    };
    while Instant::now() < until {
        let from = (rng.next() % 2) as usize;
        let to = 1 - from;
        let mdn = rng.coin();
        let (a, b) = (&fleet.agents[from], &fleet.agents[to]);
        let mut c = cli(
            &fleet.bin,
            a,
            &["send", "--from", a.address, "--to", b.address, "--in"],
        );
        c.arg(&payload);
        if mdn {
            c.arg("--request-mdn");
        }
        match c.output() {
            Ok(out) if out.status.success() => {
                let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if id.is_empty() || sent.ids.insert(id.clone(), from).is_some() {
                    sent.failures.push(format!(
                        "send printed an empty or repeated Message-ID {id:?}"
                    ));
                }
                if mdn {
                    sent.with_mdn += 1;
                }
            }
            Ok(out) => sent.failures.push(format!(
                "send from {} failed ({}): {}",
                a.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => sent.failures.push(format!("cannot run send: {e}")),
        }
        std::thread::sleep(rng.millis(0, 150));
    }
    sent
}

fn json_list(bin: &Path, a: &Agent, args: &[&str]) -> Result<Vec<serde_json::Value>, String> {
    let out = cli(bin, a, args)
        .output()
        .map_err(|e| format!("cannot run {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{} {args:?}: {}",
            a.name,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
        .map_err(|e| format!("{} {args:?}: not a JSON list: {e}", a.name))
}

/// The reconciliation of one moment.
#[derive(Default, Debug)]
struct Tally {
    delivered: usize,
    quarantined: usize,
    quarantine_reasons: BTreeMap<String, usize>,
    missing: Vec<String>,
    duplicated: Vec<String>,
    both: Vec<String>,
    unexpected: Vec<String>,
    unreasoned_quarantine: Vec<String>,
    /// Quarantined entries that are not messages sent by the soak (MDNs about them): none expected.
    other_quarantined: Vec<String>,
    outbound_total: usize,
    outbound_by_kind: BTreeMap<String, usize>,
    outbound_not_sent: Vec<String>,
    outbound_entries_wrong: Vec<String>,
    /// Sent messages whose delivery tracking is not `complete` (an MDN missing or refused).
    tracking_incomplete: Vec<String>,
}

impl Tally {
    fn discrepancies(&self) -> usize {
        self.missing.len()
            + self.duplicated.len()
            + self.both.len()
            + self.unexpected.len()
            + self.unreasoned_quarantine.len()
            + self.other_quarantined.len()
            + self.outbound_not_sent.len()
            + self.outbound_entries_wrong.len()
            + self.tracking_incomplete.len()
    }
}

fn sidecar_ids(inbox: &Path) -> Result<Vec<String>, String> {
    let Ok(rd) = std::fs::read_dir(inbox) else {
        return Ok(Vec::new());
    };
    let mut ids = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let text = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let v: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        match v["metadata"]["message_id"].as_str() {
            Some(id) => ids.push(id.to_string()),
            None => return Err(format!("{}: no metadata.message_id", p.display())),
        }
    }
    Ok(ids)
}

/// Message-ID -> tracking state, read from the sender's spool (`status --json` lists only the
/// newest 100).
fn tracking_states(data_dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let path = data_dir.join("spool.sqlite");
    let db = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    let _ = db.busy_timeout(Duration::from_secs(30));
    let mut stmt = db
        .prepare("SELECT message_id, state FROM tracking WHERE kind = 'message'")
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    rows.collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn reconcile(fleet: &Fleet, sent: &BTreeMap<String, usize>) -> Result<Tally, String> {
    let mut t = Tally::default();
    for (receiver, agent) in fleet.agents.iter().enumerate() {
        let expected: BTreeSet<&String> = sent
            .iter()
            .filter(|(_, from)| **from != receiver)
            .map(|(id, _)| id)
            .collect();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for id in sidecar_ids(&agent.inbox)? {
            *seen.entry(id).or_default() += 1;
        }
        let mut quarantined: BTreeMap<String, Option<String>> = BTreeMap::new();
        for e in json_list(&fleet.bin, agent, &["quarantine", "list", "--json"])? {
            if let Some(id) = e["message_id"].as_str() {
                let reason = e["reason"].as_str().map(str::to_string);
                quarantined.insert(id.to_string(), reason);
            }
        }
        for id in &expected {
            let copies = seen.get(*id).copied().unwrap_or(0);
            let q = quarantined.get(*id);
            match (copies, q) {
                (1, None) => t.delivered += 1,
                (0, Some(reason)) => {
                    t.quarantined += 1;
                    match reason {
                        Some(r) => *t.quarantine_reasons.entry(r.clone()).or_default() += 1,
                        None => t.unreasoned_quarantine.push((*id).clone()),
                    }
                }
                (0, None) => t.missing.push((*id).clone()),
                (_, Some(_)) => t.both.push((*id).clone()),
                _ => t.duplicated.push((*id).clone()),
            }
        }
        for (id, reason) in &quarantined {
            if !expected.contains(id) {
                t.other_quarantined.push(format!(
                    "{}: {id}: {}",
                    agent.name,
                    reason.as_deref().unwrap_or("")
                ));
            }
        }
        for id in seen.keys() {
            if !expected.contains(id) {
                t.unexpected.push(format!("{}: {id}", agent.name));
            }
        }
        // The sender's side: one `message` entry per Message-ID it sent, every entry sent.
        let mut entries: BTreeMap<String, usize> = BTreeMap::new();
        for e in json_list(&fleet.bin, agent, &["queue", "list", "--json"])? {
            t.outbound_total += 1;
            let kind = e["kind"].as_str().unwrap_or("?").to_string();
            *t.outbound_by_kind.entry(kind.clone()).or_default() += 1;
            let id = e["message_id"].as_str().unwrap_or("?").to_string();
            if e["state"].as_str() != Some("sent") {
                t.outbound_not_sent.push(format!(
                    "{} #{} {kind} {id}: {} ({})",
                    agent.name,
                    e["id"],
                    e["state"],
                    e["last_error"].as_str().unwrap_or("")
                ));
            }
            if kind == "message" {
                *entries.entry(id).or_default() += 1;
            }
        }
        // Delivery tracking (what `status` shows): processed, and dispatched when requested.
        let tracking = tracking_states(&agent.data_dir)?;
        for (id, from) in sent {
            if *from == receiver {
                let state = tracking.get(id).map(String::as_str).unwrap_or("untracked");
                if state != "complete" {
                    t.tracking_incomplete
                        .push(format!("{}: {id} is {state}", agent.name));
                }
                let n = entries.get(id).copied().unwrap_or(0);
                if n != 1 {
                    t.outbound_entries_wrong
                        .push(format!("{}: {id} has {n} outbound entries", agent.name));
                }
            }
        }
    }
    Ok(t)
}

fn setup(dir: &Path, bin: &Path) -> Result<[Agent; 2], String> {
    let a = agent(dir, "a", "hisp-a.example", "ehr@hisp-a.example");
    let b = agent(dir, "b", "hisp-b.example", "iis@hisp-b.example");
    write_config(&a, &b).map_err(|e| e.to_string())?;
    write_config(&b, &a).map_err(|e| e.to_string())?;
    for (s, root) in [(&a, "root-b.pem"), (&b, "root-a.pem")] {
        let out = cli(bin, s, &["anchors", "add"])
            .arg(cert(root))
            .args(["--domain", s.domain])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "anchors add: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok([a, b])
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let temp;
    let dir = match &args.keep {
        Some(d) => {
            if let Err(e) = std::fs::create_dir_all(d) {
                eprintln!("error: {}: {e}", d.display());
                return ExitCode::from(2);
            }
            d.clone()
        }
        None => {
            temp = match tempfile::Builder::new().prefix("soak-").tempdir() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: no temporary folder: {e}");
                    return ExitCode::from(2);
                }
            };
            temp.path().to_path_buf()
        }
    };
    eprintln!(
        "soak: {} minute(s), seed {}, binary {}, folder {}",
        args.minutes,
        args.seed,
        args.bin.display(),
        dir.display()
    );
    let agents = match setup(&dir, &args.bin) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: setup: {e}");
            return ExitCode::from(2);
        }
    };
    let fleet = Arc::new(Fleet {
        bin: args.bin.clone(),
        agents,
        children: Mutex::new([None, None]),
    });
    for i in 0..2 {
        if let Err(e) = fleet.restart(i) {
            eprintln!("error: {e}");
            fleet.stop_all();
            return ExitCode::from(2);
        }
    }

    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.minutes * 60.0);
    let running = Arc::new(AtomicBool::new(true));
    let chaos_thread = {
        let (fleet, running) = (fleet.clone(), running.clone());
        let rng = Rng(args.seed.rotate_left(17) | 1);
        std::thread::spawn(move || chaos(&fleet, rng, &running))
    };
    let sent = traffic(&fleet, Rng(args.seed), until);
    running.store(false, Ordering::SeqCst);
    let chaos = chaos_thread.join().unwrap_or_default();
    eprintln!(
        "soak: traffic over after {:?}; {} sent ({} with --request-mdn), {} send failures, {} kills, {} pauses; draining",
        started.elapsed(),
        sent.ids.len(),
        sent.with_mdn,
        sent.failures.len(),
        chaos.kills,
        chaos.pauses
    );

    // Both up again, then wait for the queues to drain.
    for i in 0..2 {
        fleet.send_signal(i, "-CONT");
        let alive = fleet.children.lock().unwrap_or_else(|p| p.into_inner())[i]
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if !alive && let Err(e) = fleet.restart(i) {
            eprintln!("error: {e}");
            fleet.stop_all();
            return ExitCode::from(1);
        }
    }
    let drain_start = Instant::now();
    let mut tally = Err("not reconciled yet".to_string());
    // Settled: reconciled twice in a row, 3 s apart, with no new outbound entry (late MDNs).
    let mut settled_total = None;
    while drain_start.elapsed() < Duration::from_secs(args.drain) {
        tally = reconcile(&fleet, &sent.ids);
        match &tally {
            Ok(t) if t.discrepancies() == 0 => {
                if settled_total == Some(t.outbound_total) {
                    break;
                }
                settled_total = Some(t.outbound_total);
                std::thread::sleep(Duration::from_secs(3));
                continue;
            }
            _ => settled_total = None,
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let drained_in = drain_start.elapsed();
    fleet.stop_all();

    let by_direction = |from: usize| sent.ids.values().filter(|f| **f == from).count();
    println!("soak result (seed {})", args.seed);
    println!(
        "  traffic:         {:.1} min, {} messages sent (a->b {}, b->a {}), {} with --request-mdn",
        args.minutes,
        sent.ids.len(),
        by_direction(0),
        by_direction(1),
        sent.with_mdn
    );
    println!("  send failures:   {}", sent.failures.len());
    for f in sent.failures.iter().take(5) {
        println!("    {f}");
    }
    println!(
        "  chaos:           {} SIGKILL+restart, {} SIGSTOP/SIGCONT pauses, {} restart errors",
        chaos.kills,
        chaos.pauses,
        chaos.restart_errors.len()
    );
    println!("  drain:           {drained_in:.1?}");
    let ok = match &tally {
        Ok(t) => {
            println!(
                "  received:        {} delivered once, {} quarantined {:?}",
                t.delivered, t.quarantined, t.quarantine_reasons
            );
            println!(
                "  outbound:        {} entries {:?}, {} not sent",
                t.outbound_total,
                t.outbound_by_kind,
                t.outbound_not_sent.len()
            );
            // A processed MDN for every message, a dispatched one more with --request-mdn. Not
            // a discrepancy when it differs (MDNs are at-least-once), but worth a look.
            let mdns = t.outbound_by_kind.get("mdn").copied().unwrap_or(0);
            let expected_mdns = sent.ids.len() + sent.with_mdn;
            println!(
                "  MDNs:            {mdns} sent, {expected_mdns} expected (processed for each, dispatched for --request-mdn){}",
                if mdns == expected_mdns {
                    ""
                } else {
                    "  <- differs"
                }
            );
            let lists = [
                ("missing", &t.missing),
                ("duplicated", &t.duplicated),
                ("sidecar and quarantine", &t.both),
                ("unexpected sidecar", &t.unexpected),
                ("quarantined without reason", &t.unreasoned_quarantine),
                ("other quarantined (notifications)", &t.other_quarantined),
                ("outbound not sent", &t.outbound_not_sent),
                ("outbound entries", &t.outbound_entries_wrong),
                ("tracking not complete", &t.tracking_incomplete),
            ];
            for (what, list) in lists {
                if !list.is_empty() {
                    println!("  DISCREPANCY {what}: {}", list.len());
                    for x in list.iter().take(10) {
                        println!("    {x}");
                    }
                }
            }
            t.discrepancies() == 0 && chaos.restart_errors.is_empty()
        }
        Err(e) => {
            println!("  reconciliation failed: {e}");
            false
        }
    };
    if ok {
        println!("  reconciliation:  OK");
        ExitCode::SUCCESS
    } else {
        println!("  reconciliation:  FAILED");
        if let Some(t) = temp_keep(&args, &dir) {
            println!("  files kept in {}", t.display());
        }
        ExitCode::from(1)
    }
}

/// On failure keep the temporary folder for inspection.
fn temp_keep(args: &Args, dir: &Path) -> Option<PathBuf> {
    if args.keep.is_some() {
        return Some(dir.to_path_buf());
    }
    let kept = std::env::temp_dir().join(format!(
        "soak-failed-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    ));
    let status = Command::new("cp")
        .arg("-a")
        .arg(dir)
        .arg(&kept)
        .status()
        .ok()?;
    status.success().then_some(kept)
}
