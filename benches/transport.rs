//! Transport figures (issue 6): inbound messages per second accepted over loopback SMTP by 16
//! concurrent clients and fully processed (spool fsync, decrypt, verify, trust, directory sink
//! write), with p50/p99 latency from the end of DATA to the sink write; and outbound messages per
//! second sealed, queued and delivered by the agent's workers to a local SMTP peer (a second
//! agent's listener). `openssl speed rsa2048` is printed beside them: the target is processing
//! limited by RSA, at least 60 % of its sign/s with both cores busy.
//!
//! `cargo bench --bench transport` (N=400 by default; `TRANSPORT_BENCH_N` to change).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use direct_agent::address::DirectAddress;
use direct_agent::agent::Context;
use direct_agent::agent::outbound::seal_and_queue;
use direct_agent::agent::serve::Server;
use direct_agent::clock::SystemClock;
use direct_agent::credential::Credential;
use direct_agent::message::{SealOptions, seal};
use direct_agent::sink::{DirectorySink, Sink, SinkDelivery, SinkOutcome};
use direct_agent::spool::{OutboundState, Spool, SqliteSpool};
use openssl::x509::X509;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const CLIENTS: usize = 16;

/// Sealed messages waiting for a client: (Message-ID, bytes).
type Outbox = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

fn cert(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("certs")
        .join(name)
}

/// A directory sink that also notes when each message was written.
struct TimedSink {
    inner: DirectorySink,
    written: Mutex<HashMap<String, Instant>>,
}

impl Sink for TimedSink {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn deliver(&self, d: &SinkDelivery<'_>) -> SinkOutcome {
        let out = self.inner.deliver(d);
        if let (SinkOutcome::Accepted { .. }, Some(id)) = (&out, d.message_id) {
            self.written
                .lock()
                .unwrap()
                .insert(id.to_string(), Instant::now());
        }
        out
    }
}

struct SharedSink(Arc<TimedSink>);
impl Sink for SharedSink {
    fn name(&self) -> String {
        self.0.name()
    }
    fn deliver(&self, d: &SinkDelivery<'_>) -> SinkOutcome {
        self.0.deliver(d)
    }
}

// A benchmark fixture writer: every argument is one key of the generated configuration.
#[allow(clippy::too_many_arguments)]
fn config(
    dir: &Path,
    name: &str,
    domain: &str,
    own: &[&str],
    partner: &str,
    partner_cert: &str,
    route_port: Option<u16>,
    extra: &str,
) -> PathBuf {
    let creds: String = own
        .iter()
        .map(|s| {
            format!(
                "  [[domain.credential]]\n  key = \"{}\"\n  cert = \"{}\"\n",
                cert(&format!("{s}.key")).display(),
                cert(&format!("{s}.fullchain.pem")).display()
            )
        })
        .collect();
    let route = route_port
        .map(|p| format!("[[smtp_out.route]]\ndomain = \"{partner}\"\nhost = \"127.0.0.1\"\nport = {p}\ntls = \"none\"\n"))
        .unwrap_or_default();
    // insecure_key_permissions: the committed test keys (certs/) are public test material, which
    // git checks out 0644; the agent refuses readable keys otherwise.
    let text = format!(
        "[agent]\ninsecure_key_permissions = true\ndata_dir = \"{data}\"\n[trust]\nrevocation = \"off\"\naia = false\n[discovery]\nldap = false\n  [[discovery.certificate]]\n  for = \"{partner}\"\n  file = \"{pc}\"\n[[domain]]\nname = \"{domain}\"\nintermediates = [\"{inter}\"]\n{creds}\n[smtp_in]\nlisten = \"127.0.0.1:0\"\nmax_connections = 64\n[smtp_out]\nconcurrency = 16\nper_domain_concurrency = 16\n{route}\n[[sink]]\nkind = \"directory\"\npath = \"{inbox}\"\n{extra}\n",
        data = dir.join(format!("{name}-data")).display(),
        pc = cert(partner_cert).display(),
        inter = cert(if partner == "hisp-a.example" {
            "intermediate-a.pem"
        } else {
            "intermediate-b.pem"
        })
        .display(),
        inbox = dir.join(format!("{name}-inbox")).display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_direct-agent"))
        .arg("--config")
        .arg(&path)
        .args(["anchors", "add"])
        .arg(cert(if domain == "hisp-b.example" {
            "root-a.pem"
        } else {
            "root-b.pem"
        }))
        .args(["--domain", domain])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    path
}

async fn smtp_send(
    port: u16,
    from: &str,
    to: &str,
    msgs: Outbox,
    sent_at: Arc<Mutex<HashMap<String, Instant>>>,
) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // Like any SMTP client: the final "." goes out at once instead of waiting for an ACK.
    stream.set_nodelay(true).unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>, line: &mut String) -> String {
        loop {
            line.clear();
            r.read_line(line).await.unwrap();
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line.clone();
            }
        }
    }
    reply(&mut r, &mut line).await;
    w.write_all(b"EHLO bench\r\n").await.unwrap();
    reply(&mut r, &mut line).await;
    loop {
        let next = msgs.lock().unwrap().pop();
        let Some((id, raw)) = next else { break };
        w.write_all(format!("MAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\nDATA\r\n").as_bytes())
            .await
            .unwrap();
        for _ in 0..3 {
            let rep = reply(&mut r, &mut line).await;
            assert!(rep.starts_with('2') || rep.starts_with('3'), "{rep}");
        }
        w.write_all(&raw).await.unwrap();
        sent_at.lock().unwrap().insert(id, Instant::now());
        w.write_all(b".\r\n").await.unwrap();
        let rep = reply(&mut r, &mut line).await;
        assert!(rep.starts_with("250"), "{rep}");
    }
    w.write_all(b"QUIT\r\n").await.unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let n: usize = std::env::var("TRANSPORT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    // The agents' data (spools, sink folders) goes under TRANSPORT_BENCH_DIR, by default cargo's
    // target/tmp: a folder of the project's own. /tmp is shared with every build and test on the
    // machine, and on a file system without a journal (this project machine's) ext4 then skips
    // every recently deleted inode when it creates a file: 330-550 us per file there against
    // ~47 us in a quiet folder, which would measure the machine's other users, not the agent.
    let base = std::env::var_os("TRANSPORT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let payload =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples/vxu-v04.hl7"))
            .unwrap();
    let payload: Vec<u8> = payload.iter().copied().cycle().take(4096).collect();

    // ---- inbound: 16 SMTP clients -> agent B -> directory sink
    let b_cfg = config(
        dir.path(),
        "b",
        "hisp-b.example",
        &["iis@hisp-b.example", "hisp-b.example"],
        "hisp-a.example",
        "hisp-a.example.pem",
        None,
        "[mdn]\nsend = false\n",
    );
    // MDNs go to a closed loopback port: queued and retried, not delivered.
    let b_mdn_cfg = config(
        dir.path(),
        "b-mdn",
        "hisp-b.example",
        &["iis@hisp-b.example", "hisp-b.example"],
        "hisp-a.example",
        "hisp-a.example.pem",
        Some(9),
        "",
    );
    let signer = Credential::load(
        &cert("ehr@hisp-a.example.key"),
        Some(&cert("ehr@hisp-a.example.fullchain.pem")),
        None,
    )
    .unwrap();
    let rcpt = X509::from_pem(&std::fs::read(cert("iis@hisp-b.example.pem")).unwrap()).unwrap();
    let from = DirectAddress::parse("ehr@hisp-a.example").unwrap();
    let to = [DirectAddress::parse("iis@hisp-b.example").unwrap()];
    let msgs: Vec<(String, Vec<u8>)> = (0..n)
        .map(|_| {
            let s = seal(
                &from,
                &to,
                &payload,
                &signer,
                std::slice::from_ref(&rcpt),
                &SealOptions::default(),
                &SystemClock,
            )
            .unwrap();
            // SMTP dot-stuffing is not needed: base64 lines never start with '.'.
            let mut raw = s.message;
            if !raw.ends_with(b"\r\n") {
                raw.extend_from_slice(b"\r\n");
            }
            (s.message_id, raw)
        })
        .collect();
    let size = msgs[0].1.len();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // What `serve` will choose there without `[agent] inbound_workers`.
    let (workers, why) = direct_agent::agent::workers::choose(None, &base);
    println!(
        "transport bench, {n} messages of a 4 KiB HL7 payload ({size} bytes sealed), {CLIENTS} SMTP clients, {cores} cores; data in {}; {}; {workers} inbound workers ({why})",
        base.display(),
        load_average()
    );
    // TRANSPORT_BENCH_ONLY=inbound runs only the inbound figure without MDNs, `inbound-mdn` only
    // the one with MDNs, TRANSPORT_BENCH_REPEAT times each (default 1): the ones to watch when
    // working on the receive path.
    let only = std::env::var("TRANSPORT_BENCH_ONLY").unwrap_or_default();
    let only_inbound = only.starts_with("inbound");
    let repeat: usize = std::env::var("TRANSPORT_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    const PLAIN: &str = "without MDNs ([mdn] send = false)";
    const MDN: &str = "with a processed MDN sealed and queued for each";
    let mut runs: Vec<(&str, PathBuf)> = Vec::new();
    // Each repetition needs its own spool: the same messages again would be duplicates.
    for i in 0..repeat.max(1) {
        let again = |name: &str, route: Option<u16>, extra: &str| {
            config(
                dir.path(),
                &format!("{name}{i}"),
                "hisp-b.example",
                &["iis@hisp-b.example", "hisp-b.example"],
                "hisp-a.example",
                "hisp-a.example.pem",
                route,
                extra,
            )
        };
        if only != "inbound-mdn" {
            let cfg = if i == 0 {
                b_cfg.clone()
            } else {
                again("b", None, "[mdn]\nsend = false\n")
            };
            runs.push((PLAIN, cfg));
        }
        if only != "inbound" {
            let cfg = if i == 0 {
                b_mdn_cfg.clone()
            } else {
                again("b-mdn", Some(9), "")
            };
            runs.push((MDN, cfg));
        }
    }
    for (label, cfg) in runs {
        let cpu_before = cpu_seconds();
        let (elapsed, latencies) = inbound(&rt, dir.path(), &cfg, msgs.clone(), n);
        let busy = cpu_seconds()
            .zip(cpu_before)
            .map(|(after, before)| {
                format!(
                    "; process CPU {:.0} % of the cores, {:.2} ms per message",
                    100.0 * (after - before) / elapsed.as_secs_f64() / cores as f64,
                    1e3 * (after - before) / n as f64
                )
            })
            .unwrap_or_default();
        println!(
            "inbound {label}: {:.0} messages/s accepted and processed (spool fsync + open + sink); DATA end -> sink write p50 {:.1} ms, p99 {:.1} ms{busy}",
            n as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3
        );
    }

    if only_inbound {
        openssl_speed();
        println!("{}", load_average());
        return;
    }
    // ---- outbound: seal + queue at A, A's workers deliver to B's listener
    let (tx, rx) = tokio::sync::watch::channel(false);
    let b_port = rt.block_on(async {
        let ctx = Context::load(Some(&b_cfg)).unwrap();
        let server = Server::bind(ctx).await.unwrap();
        let port = server.smtp_addresses()[0].port();
        rt_spawn_server(server, rx);
        port
    });
    let a_cfg = config(
        dir.path(),
        "a",
        "hisp-a.example",
        &["ehr@hisp-a.example", "hisp-a.example"],
        "hisp-b.example",
        "iis@hisp-b.example.pem",
        Some(b_port),
        "[mdn]\nsend = false\n",
    );
    let ctx = Context::load(Some(&a_cfg)).unwrap();
    let spool = SqliteSpool::open(&dir.path().join("a-data")).unwrap();
    let start = Instant::now();
    for _ in 0..n {
        seal_and_queue(&ctx, &spool, &from, &to, &payload, &SealOptions::default()).unwrap();
    }
    let sealed = start.elapsed();
    let (atx, arx) = tokio::sync::watch::channel(false);
    let delivered = rt.block_on(async {
        let ctx = Context::load(Some(&a_cfg)).unwrap();
        let server = Server::bind(ctx).await.unwrap();
        let start = Instant::now();
        let run = tokio::spawn(server.run(arx));
        loop {
            let sent = spool
                .list_outbound(Some(OutboundState::Sent))
                .unwrap()
                .len();
            if sent >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let d = start.elapsed();
        atx.send(true).unwrap();
        run.await.unwrap().unwrap();
        d
    });
    tx.send(true).unwrap();
    println!(
        "outbound: {:.0} messages/s sealed and queued (discovery, sign, encrypt, spool fsync); {:.0} messages/s delivered by the queue workers to a local SMTP peer",
        n as f64 / sealed.as_secs_f64(),
        n as f64 / delivered.as_secs_f64()
    );
    openssl_speed();
    // Other work on the machine skews every figure above: say how busy it was.
    println!("{}", load_average());
}

/// The machine's load average (Linux), to judge how noisy a run was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().take(3).collect();
            format!("load average {}", f.join(" "))
        })
        .unwrap_or_else(|_| "load average unknown".into())
}

/// User + system CPU time of this process so far (Linux `/proc/self/stat`, in USER_HZ = 1/100 s).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// One inbound run: a fresh spool and inbox for `cfg`'s agent, 16 clients sending `msgs`.
fn inbound(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    cfg: &Path,
    msgs: Vec<(String, Vec<u8>)>,
    n: usize,
) -> (Duration, Vec<Duration>) {
    let _ = dir;
    let sink = Arc::new(TimedSink {
        inner: DirectorySink::new(dir.join(format!(
            "inbox-{}",
            cfg.file_stem().unwrap().to_string_lossy()
        ))),
        written: Mutex::new(HashMap::new()),
    });
    let (tx, rx) = tokio::sync::watch::channel(false);
    rt.block_on(async {
        let ctx = Context::load(Some(cfg)).unwrap();
        let server = Server::bind(ctx).await.unwrap();
        let port = server.smtp_addresses()[0].port();
        let run = tokio::spawn(server.run_with_sinks(vec![Box::new(SharedSink(sink.clone()))], rx));
        let queue = Arc::new(Mutex::new(msgs));
        let sent_at = Arc::new(Mutex::new(HashMap::new()));
        let start = Instant::now();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                tokio::spawn(smtp_send(
                    port,
                    "ehr@hisp-a.example",
                    "iis@hisp-b.example",
                    queue.clone(),
                    sent_at.clone(),
                ))
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
        eprintln!("(all {n} accepted over SMTP after {:?})", start.elapsed());
        while sink.written.lock().unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = start.elapsed();
        let written = sink.written.lock().unwrap().clone();
        let sent_at = sent_at.lock().unwrap().clone();
        let mut lat: Vec<Duration> = sent_at
            .iter()
            .filter_map(|(id, t0)| written.get(id).map(|t1| t1.duration_since(*t0)))
            .collect();
        lat.sort();
        tx.send(true).unwrap();
        run.await.unwrap().unwrap();
        (elapsed, lat)
    })
}

fn rt_spawn_server(server: Server, rx: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let _ = server.run(rx).await;
    });
}

fn openssl_speed() {
    match Command::new("openssl")
        .args(["speed", "-seconds", "2", "rsa2048"])
        .output()
    {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            for l in text.lines().filter(|l| {
                l.contains("sign/s") || (l.trim_start().starts_with("rsa") && l.contains("2048"))
            }) {
                println!("openssl speed: {}", l.trim());
            }
        }
        Ok(o) => println!(
            "openssl speed rsa2048 failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => println!("openssl speed rsa2048 could not be run: {e}"),
    }
}
