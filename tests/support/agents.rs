//! Two real `direct-agent serve` processes on loopback: hisp-a.example (an EHR sender,
//! ehr@hisp-a.example) and hisp-b.example (the IIS side, iis@hisp-b.example), each with its own
//! configuration, data directory and inbox, routing the other's domain to the other's SMTP port.
//! Trust: each trusts the other's root for its own domain; partner certificates come from
//! `[[discovery.certificate]]`; revocation is off (CRL handling is tested elsewhere).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ChildGuard, free_port, wait_for_tcp};

pub const BIN: &str = env!("CARGO_BIN_EXE_direct-agent");

fn cert(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("certs")
        .join(name)
}

/// One agent's files and port.
#[derive(Clone, Debug)]
pub struct AgentSetup {
    pub name: String,
    pub domain: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub inbox: PathBuf,
    pub smtp_port: u16,
    pub log: PathBuf,
}

/// Extra TOML appended to an agent's configuration (routes, smtp_out settings).
#[derive(Default, Clone)]
pub struct Extra {
    /// Replaces the default `[smtp_out]` block.
    pub smtp_out: Option<String>,
    /// Replaces the default route to the partner.
    pub routes: Option<String>,
    pub smtp_in: Option<String>,
    /// Appended at the end (e.g. `[[imap]]` blocks).
    pub tail: Option<String>,
    /// Replaces the default `[[sink]]` (a directory sink at `inbox` taking everything).
    pub sinks: Option<String>,
}

/// A copy of the committed test key `stem.key` in `dir/keys`, readable by its owner only (0600):
/// the agent refuses configured keys that group or others may read, and git checks the committed
/// ones out 0644.
fn private_key(dir: &Path, stem: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let copy = keys.join(format!("{stem}.key"));
    std::fs::copy(cert(&format!("{stem}.key")), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    copy
}

fn write_config(
    dir: &Path,
    me: &AgentSetup,
    partner: &AgentSetup,
    own: &[&str],
    partner_cert: &str,
    extra: &Extra,
) {
    let creds: String = own
        .iter()
        .map(|stem| {
            format!(
                "  [[domain.credential]]\n  key = \"{}\"\n  cert = \"{}\"\n",
                private_key(dir, stem).display(),
                cert(&format!("{stem}.fullchain.pem")).display()
            )
        })
        .collect();
    let smtp_out = extra.smtp_out.clone().unwrap_or_else(|| {
        "[smtp_out]\nretry_initial = \"1s\"\nretry_max = \"2s\"\ntimeout = \"10s\"\n".into()
    });
    let routes = extra.routes.clone().unwrap_or_else(|| {
        format!(
            "[[smtp_out.route]]\ndomain = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
            partner.domain, partner.smtp_port
        )
    });
    let smtp_in = extra.smtp_in.clone().unwrap_or_default();
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
intermediates = ["{partner_intermediate}"]
{creds}
[smtp_in]
listen = "127.0.0.1:{port}"
{smtp_in}

{smtp_out}
{routes}
{sinks}

{tail}
"#,
        sinks = extra.sinks.clone().unwrap_or_else(|| format!(
            "[[sink]]\nkind = \"directory\"\npath = \"{}\"\n",
            me.inbox.display()
        )),
        tail = extra.tail.clone().unwrap_or_default(),
        data = me.data_dir.display(),
        domain = me.domain,
        partner_domain = partner.domain,
        partner_cert = cert(partner_cert).display(),
        partner_intermediate = cert(if partner.domain == "hisp-a.example" {
            "intermediate-a.pem"
        } else {
            "intermediate-b.pem"
        })
        .display(),
        port = me.smtp_port,
    );
    std::fs::write(dir.join(format!("{}.toml", me.name)), text).unwrap();
}

fn setup(dir: &Path, name: &str, domain: &str) -> AgentSetup {
    AgentSetup {
        name: name.into(),
        domain: domain.into(),
        config: dir.join(format!("{name}.toml")),
        data_dir: dir.join(format!("{name}-data")),
        inbox: dir.join(format!("{name}-inbox")),
        smtp_port: free_port(),
        log: dir.join(format!("{name}.log")),
    }
}

/// Write both configurations and add each side's anchor.
pub fn two_agents(dir: &Path, extra_a: &Extra, extra_b: &Extra) -> (AgentSetup, AgentSetup) {
    let a = setup(dir, "a", "hisp-a.example");
    let b = setup(dir, "b", "hisp-b.example");
    write_config(
        dir,
        &a,
        &b,
        &["ehr@hisp-a.example", "hisp-a.example"],
        "hisp-b.example.pem",
        extra_a,
    );
    write_config(
        dir,
        &b,
        &a,
        &["iis@hisp-b.example", "hisp-b.example"],
        "hisp-a.example.pem",
        extra_b,
    );
    for (s, root) in [(&a, "root-b.pem"), (&b, "root-a.pem")] {
        let out = cli(s, &["anchors", "add"])
            .arg(cert(root))
            .args(["--domain", &s.domain])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "anchors add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (a, b)
}

/// `direct-agent --config <agent> ARGS…`
pub fn cli(s: &AgentSetup, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--config").arg(&s.config).args(args);
    c
}

/// A running `serve`.
pub struct Running {
    pub child: ChildGuard,
    pub log: PathBuf,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }
    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }
    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(st)) = self.child.0.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Start `serve` for `s` and wait until its SMTP port accepts connections.
pub fn start(s: &AgentSetup) -> Running {
    start_with_env(s, &[])
}

/// As [`start`], with extra environment variables (passwords named by `password_env`).
pub fn start_with_env(s: &AgentSetup, env: &[(&str, &str)]) -> Running {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&s.log)
        .unwrap();
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&s.config)
        .arg("serve")
        .env("DIRECT_AGENT_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start direct-agent serve");
    let mut child = ChildGuard(child);
    if let Err(e) = wait_for_tcp(
        &mut child,
        s.smtp_port,
        Duration::from_secs(30),
        Some(&s.log),
    ) {
        panic!("{} did not start: {e}", s.name);
    }
    Running {
        child,
        log: s.log.clone(),
    }
}

/// The sidecars (`*.json`) in an inbox: one per delivered message.
pub fn sidecars(inbox: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(inbox)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Wait until `f` holds or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}
