//! Dovecot as a loopback IMAP server (a HISP's mailbox for the edge poller tests): a private
//! dovecot.conf in a temp dir (base_dir, state_dir, log and maildirs all inside it), a
//! passwd-file passdb with plain-text test passwords, a static userdb running every mailbox as
//! the system `dovecot` user, and two listeners on 127.0.0.1: plain IMAP (STARTTLS offered) and
//! IMAPS. The TLS certificate is issued at start-up by a throw-away CA made with the `openssl`
//! CLI (SAN `IP:127.0.0.1`, `DNS:localhost`); [`Dovecot::ca_pem`] is what a client trusts.
//!
//! Dovecot runs in the foreground (`dovecot -F`) under `spawn_tied`, so it stops on drop and
//! also when the test process dies. imap-login refuses to run as root, so login processes run
//! as `dovenull` and mail processes as `dovecot`; the temp dir is made world-searchable for them.
//!
//! Messages are delivered the way an MDA does: a file written into the user's `Maildir/tmp`,
//! renamed into `new/`, owned by `dovecot`. What clients see (flags, folders, bytes) is read back
//! over a second IMAP session that only `EXAMINE`s (read-only: it changes nothing).

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use tempfile::TempDir;
use tokio::net::TcpStream;

use super::{ChildGuard, free_port, program, require_program, run, spawn_tied, wait_for_tcp};

pub const INSTALL: &str = "DEBIAN_FRONTEND=noninteractive apt-get install -y dovecot-imapd";

/// A running Dovecot; stopped when dropped.
pub struct Dovecot {
    // Dropped first: Dovecot stops before its directory goes.
    _child: ChildGuard,
    dir: TempDir,
    /// Plain IMAP (STARTTLS offered) on 127.0.0.1.
    pub port: u16,
    /// IMAPS on 127.0.0.1.
    pub tls_port: u16,
    users: Vec<(String, String)>,
    owner: (u32, u32),
}

/// A message as a client sees it.
#[derive(Debug, Clone)]
pub struct SeenMessage {
    pub uid: u32,
    /// Flags as the server writes them (`\Seen`, `\Deleted`, ...).
    pub flags: Vec<String>,
    /// `BODY[]`, exactly as Dovecot returns it (CRLF line ends).
    pub body: Vec<u8>,
}

impl SeenMessage {
    pub fn seen(&self) -> bool {
        self.flags.iter().any(|f| f == "\\Seen")
    }
}

/// uid and gid of a system user, from /etc/passwd.
fn system_user(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// A throw-away CA and a server certificate for 127.0.0.1/localhost, made with `openssl`.
fn make_certificates(d: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(Command::new("openssl")
        .args(["req", "-x509"])
        .args(ec)
        .args(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"])
        .args(["-subj", "/CN=Dovecot Test CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .current_dir(d));
    run(Command::new("openssl")
        .arg("req")
        .args(ec)
        .args(["-keyout", "server.key", "-out", "server.csr"])
        .args(["-subj", "/CN=localhost"])
        .current_dir(d));
    fs::write(
        d.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("server.ext");
    run(Command::new("openssl")
        .args(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem"])
        .args(["-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem"])
        .args(["-days", "2", "-extfile", "server.ext"])
        .current_dir(d));
}

fn config(d: &Path, port: u16, tls_port: u16) -> String {
    let d = d.display();
    format!(
        r#"protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
instance_name = direct-agent-test-{port}
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
auth_verbose = yes
auth_failure_delay = 0
auth_mechanisms = plain login
disable_plaintext_auth = no
ssl = yes
ssl_cert = <{d}/server.pem
ssl_key = <{d}/server.key
mail_location = maildir:{d}/mail/%u
# Notice messages dropped into new/ within a second while a client IDLEs (inotify does it
# sooner where it works).
mailbox_idle_check_interval = 1 secs
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={d}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
"#
    )
}

/// Start `dovecot -F` on two free loopback ports (retrying when another process takes one).
fn launch(d: &Path) -> (ChildGuard, u16, u16) {
    let mut last = String::new();
    for attempt in 0..5 {
        let (port, tls_port) = (free_port(), free_port());
        if port == tls_port {
            continue;
        }
        let conf = d.join("dovecot.conf");
        fs::write(&conf, config(d, port, tls_port)).expect("dovecot.conf");
        let log = d.join(format!("dovecot-stderr-{attempt}.log"));
        let args: Vec<String> = vec!["-F".into(), "-c".into(), conf.display().to_string()];
        let mut child = spawn_tied(&program("dovecot"), &args, &log)
            .unwrap_or_else(|e| panic!("cannot start dovecot under bash ({e}): {INSTALL}"));
        let ready = wait_for_tcp(&mut child, port, Duration::from_secs(15), Some(&log))
            .and_then(|()| wait_for_tcp(&mut child, tls_port, Duration::from_secs(5), Some(&log)));
        match ready {
            Ok(()) => return (child, port, tls_port),
            Err(why) => {
                let log = fs::read_to_string(d.join("dovecot.log")).unwrap_or_default();
                last = format!("{why}\n{log}");
            }
        }
    }
    panic!("dovecot did not start: {last}");
}

impl Dovecot {
    /// Start Dovecot with these (user, password) accounts, each with an empty INBOX.
    pub fn start(users: &[(&str, &str)]) -> Dovecot {
        require_program("dovecot", INSTALL);
        require_program("openssl", "apt-get install -y openssl");
        let owner = system_user("dovecot").unwrap_or_else(|| {
            panic!("no system user `dovecot` (is Dovecot installed? {INSTALL})")
        });
        let dir = TempDir::new().expect("temp dir");
        let d = dir.path();
        // Login and mail processes (dovenull, dovecot) must reach their files in here.
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        make_certificates(d);
        let passwd: String = users
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
            .collect();
        fs::write(d.join("passwd"), passwd).expect("passwd file");
        fs::set_permissions(d.join("passwd"), fs::Permissions::from_mode(0o644))
            .expect("chmod passwd");
        for dir in ["mail", "home"] {
            fs::create_dir(d.join(dir)).expect("create dir");
            chown(d.join(dir), Some(owner.0), Some(owner.1)).expect("chown");
        }
        for (user, _) in users {
            let maildir = d.join("mail").join(user);
            for sub in ["", "cur", "new", "tmp"] {
                let p = maildir.join(sub);
                fs::create_dir_all(&p).expect("maildir");
                fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).expect("chmod");
                chown(&p, Some(owner.0), Some(owner.1)).expect("chown maildir");
            }
        }
        let (child, port, tls_port) = launch(d);
        Dovecot {
            _child: child,
            dir,
            port,
            tls_port,
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            owner,
        }
    }

    /// The user's maildir (INBOX; other folders are `.NAME` inside it).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    /// The PEM certificate of the CA that issued the server's certificate.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Drop a message into the user's INBOX (`new/`), as an MDA would. `raw` may use LF or
    /// CRLF line ends; Dovecot serves CRLF either way.
    pub fn deliver(&self, user: &str, raw: &[u8]) {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970");
        let name = format!(
            "{}.M{}P{}Q{}.direct-agent-test",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let maildir = self.maildir(user);
        let tmp = maildir.join("tmp").join(&name);
        fs::write(&tmp, raw).expect("write message into tmp/");
        chown(&tmp, Some(self.owner.0), Some(self.owner.1)).expect("chown message");
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).expect("chmod message");
        fs::rename(&tmp, maildir.join("new").join(&name)).expect("move message into new/");
    }

    /// Dovecot's log (logins, authentication failures, errors).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Wait up to `limit` until the log contains `needle` (the log process writes
    /// asynchronously); whether it does.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while !self.log().contains(needle) {
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// Logins from 127.0.0.1 (the client under test; inspection sessions come from
    /// 127.0.0.2).
    pub fn client_logins(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("Login: user=<") && l.contains("rip=127.0.0.1,"))
            .count()
    }

    /// How many password checks failed so far (one per rejected LOGIN). Waits `settle` for
    /// the log process to write what is in flight.
    pub fn auth_failures(&self, settle: Duration) -> usize {
        std::thread::sleep(settle);
        self.log().matches("Password mismatch").count()
    }

    /// Wait up to `limit` until at least `n` password checks failed; the count then.
    pub fn wait_auth_failures(&self, n: usize, limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            let count = self.auth_failures(Duration::ZERO);
            if count >= n || start.elapsed() > limit {
                return count;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn password(&self, user: &str) -> &str {
        self.users
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.as_str())
            .unwrap_or_else(|| panic!("{user} is not a user of this Dovecot"))
    }

    async fn session(&self, user: &str) -> async_imap::Session<TcpStream> {
        // From 127.0.0.2: Dovecot delays logins from an address after a failed one (its auth
        // penalty, 2 s and up); the poller's failures must not slow down the inspection.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(([127, 0, 0, 2], 0).into())
            .expect("bind 127.0.0.2");
        let tcp = socket
            .connect(([127, 0, 0, 1], self.port).into())
            .await
            .expect("connect to dovecot");
        let mut client = async_imap::Client::new(tcp);
        client
            .read_response()
            .await
            .expect("greeting")
            .expect("greeting");
        client
            .login(user, self.password(user))
            .await
            .map_err(|(e, _)| e)
            .expect("inspection login")
    }

    /// The messages in `mailbox` with their flags and bytes, read without changing anything.
    /// Empty when the mailbox does not exist.
    pub async fn messages(&self, user: &str, mailbox: &str) -> Vec<SeenMessage> {
        let mut session = self.session(user).await;
        let mut out = Vec::new();
        if let Ok(mb) = session.examine(mailbox).await
            && mb.exists > 0
        {
            let fetches: Vec<_> = session
                .fetch("1:*", "(UID FLAGS BODY.PEEK[])")
                .await
                .expect("FETCH")
                .try_collect()
                .await
                .expect("FETCH responses");
            for f in fetches {
                out.push(SeenMessage {
                    uid: f.uid.expect("UID in FETCH"),
                    flags: f.flags().map(|fl| flag_name(&fl)).collect(),
                    body: f.body().expect("BODY[] in FETCH").to_vec(),
                });
            }
        }
        let _ = session.logout().await;
        out.sort_by_key(|m| m.uid);
        out
    }

    /// The user's mailbox names.
    pub async fn mailboxes(&self, user: &str) -> Vec<String> {
        let mut session = self.session(user).await;
        let names: Vec<_> = session
            .list(Some(""), Some("*"))
            .await
            .expect("LIST")
            .try_collect()
            .await
            .expect("LIST responses");
        let _ = session.logout().await;
        let mut names: Vec<String> = names.iter().map(|n| n.name().to_string()).collect();
        names.sort();
        names
    }
}

fn flag_name(flag: &async_imap::types::Flag<'_>) -> String {
    use async_imap::types::Flag;
    match flag {
        Flag::Seen => "\\Seen".into(),
        Flag::Answered => "\\Answered".into(),
        Flag::Flagged => "\\Flagged".into(),
        Flag::Deleted => "\\Deleted".into(),
        Flag::Draft => "\\Draft".into(),
        Flag::Recent => "\\Recent".into(),
        Flag::MayCreate => "\\*".into(),
        Flag::Custom(c) => c.to_string(),
    }
}

/// `raw` with every line ending CRLF, as an IMAP server serves it.
pub fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}
