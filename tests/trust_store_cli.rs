//! The trust store from the command line: `anchors add|list|remove|export` and
//! `bundles add|list|refresh|remove`, driving the built binary with a configuration in a temp
//! directory. Bundles are served by a real HTTP peer on loopback (`python3 -m http.server`) and
//! signed bundles are made with `openssl cms -sign`.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::{BIN, cert, text};
use direct_agent::trust::{describe, fingerprint};
use openssl::x509::X509;

const DOMAIN: &str = "hisp-b.example";

/// A temp directory with a configuration naming one domain and a data directory inside it.
struct Agent {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Agent {
    fn new() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("direct-agent.toml");
        std::fs::write(
            &config,
            format!("[agent]\ndata_dir = \"var\"\n\n[[domain]]\nname = \"{DOMAIN}\"\n"),
        )
        .unwrap();
        Agent { dir, config }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    /// Run and require exit code `code`; returns (stdout, stderr).
    fn expect<I, S>(&self, code: i32, args: I) -> (String, String)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.run(&args);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        (stdout, stderr)
    }

    fn anchors_json(&self) -> Vec<serde_json::Value> {
        let (out, _) = self.expect(0, ["anchors", "list", "--domain", DOMAIN, "--json"]);
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// The fingerprints of the domain's anchors.
    fn anchors(&self) -> BTreeSet<String> {
        self.anchors_json()
            .iter()
            .map(|a| a["fingerprint"].as_str().unwrap().to_string())
            .collect()
    }

    fn bundle_json(&self, name: &str) -> serde_json::Value {
        let (out, _) = self.expect(0, ["bundles", "list", "--json"]);
        let all: serde_json::Value = serde_json::from_str(&out).unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("no bundle {name} in {out}"))
            .clone()
    }
}

fn pem(name: &str) -> X509 {
    X509::from_pem(&std::fs::read(cert(name)).unwrap()).unwrap()
}

fn fp(name: &str) -> String {
    fingerprint(&pem(name))
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| fp(n)).collect()
}

/// `python3 -m http.server` on 127.0.0.1 serving `dir`, killed on drop.
struct HttpPeer {
    child: Child,
    port: u16,
}

impl HttpPeer {
    fn serve(dir: &Path) -> HttpPeer {
        let mut child = Command::new("python3")
            .args(["-m", "http.server", "0", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .env("PYTHONUNBUFFERED", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start python3 for the loopback HTTP peer ({e}): apt-get install -y python3")
            });
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        // "Serving HTTP on 127.0.0.1 port 43567 (http://127.0.0.1:43567/) ..."
        let port = line
            .split("port ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("unexpected first line from python3 -m http.server: {line:?}")
            });
        HttpPeer { child, port }
    }

    fn url(&self, file: &str) -> String {
        format!("http://127.0.0.1:{}/{file}", self.port)
    }
}

impl Drop for HttpPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `openssl` with `args`; fail with the install command if it is missing.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): apt-get install -y openssl"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        text(&out.stderr)
    );
}

/// A certs-only PKCS#7 (DER) of the given test certificates, as `openssl crl2pkcs7` makes it.
fn p7b(out: &Path, certs: &[&str]) {
    let mut args = vec!["crl2pkcs7", "-nocrl", "-outform", "DER", "-out"];
    let out = out.to_str().unwrap();
    args.push(out);
    let paths: Vec<String> = certs
        .iter()
        .map(|c| cert(c).to_str().unwrap().to_string())
        .collect();
    for p in &paths {
        args.push("-certfile");
        args.push(p);
    }
    openssl(&args);
}

/// bundle-a.p7b signed by hisp-a.example (`openssl cms -sign -nodetach -binary`).
fn signed_bundle(out: &Path) {
    openssl(&[
        "cms",
        "-sign",
        "-nodetach",
        "-binary",
        "-outform",
        "DER",
        "-in",
        cert("bundle-a.p7b").to_str().unwrap(),
        "-signer",
        cert("hisp-a.example.pem").to_str().unwrap(),
        "-inkey",
        cert("hisp-a.example.key").to_str().unwrap(),
        "-out",
        out.to_str().unwrap(),
    ]);
}

#[test]
fn anchors_add_list_remove_export() {
    let agent = Agent::new();
    let (out, _) = agent.expect(
        0,
        [
            "anchors",
            "add",
            cert("root-a.pem").to_str().unwrap(),
            "--domain",
            DOMAIN,
        ],
    );
    assert!(out.starts_with("added "), "{out}");
    assert!(out.contains(&fp("root-a.pem")), "{out}");
    assert!(out.contains("CN=Direct Agent Test Root A"), "{out}");
    assert!(out.contains("2054-01-01"), "prints not-after: {out}");

    // A certs-only PKCS#7 with root-a and root-b: one already there, one new.
    let (out, _) = agent.expect(
        0,
        [
            "anchors",
            "add",
            cert("bundle-a.p7b").to_str().unwrap(),
            "--domain",
            "HISP-B.example",
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("already present ") && l.contains("Root A")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("added ") && l.contains("Root B")),
        "{out}"
    );
    assert_eq!(agent.anchors(), set(&["root-a.pem", "root-b.pem"]));

    // The table has every column.
    let (table, _) = agent.expect(0, ["anchors", "list"]);
    for col in [
        "DOMAIN",
        "FINGERPRINT",
        "SUBJECT",
        "ISSUER",
        "NOT AFTER",
        "DAYS LEFT",
        "DIRECTION",
        "SOURCE",
    ] {
        assert!(table.contains(col), "{table}");
    }
    assert!(table.contains("bundle-a.p7b"), "source is shown: {table}");

    // JSON fields.
    let rows = agent.anchors_json();
    let a = rows
        .iter()
        .find(|r| r["fingerprint"] == fp("root-a.pem"))
        .unwrap();
    assert_eq!(a["domain"], DOMAIN);
    assert_eq!(a["direction"], "both");
    assert_eq!(a["subject"], describe(&pem("root-a.pem")));
    assert_eq!(a["issuer"], describe(&pem("root-a.pem")));
    assert!(a["days_left"].as_i64().unwrap() > 30);
    assert!(a["warning"].is_null());
    assert!(a["source"].as_str().unwrap().starts_with("file:"));

    // A leaf is refused unless asked for.
    let leaf = cert("hisp-a.example.pem");
    let (_, err) = agent.expect(
        2,
        ["anchors", "add", leaf.to_str().unwrap(), "--domain", DOMAIN],
    );
    assert!(err.contains("not a CA certificate"), "{err}");
    assert!(err.contains("pin"), "mentions HISPs pinning leaves: {err}");
    assert!(err.contains("--allow-leaf-anchor"), "{err}");
    assert_eq!(agent.anchors().len(), 2);
    let (out, _) = agent.expect(
        0,
        [
            "anchors",
            "add",
            leaf.to_str().unwrap(),
            "--domain",
            DOMAIN,
            "--allow-leaf-anchor",
        ],
    );
    assert!(out.starts_with("added "), "{out}");
    assert_eq!(
        agent.anchors(),
        set(&["root-a.pem", "root-b.pem", "hisp-a.example.pem"])
    );

    // Remove by fingerprint without colons, upper case.
    let bare = fp("root-b.pem").replace(':', "").to_uppercase();
    let (out, _) = agent.expect(0, ["anchors", "remove", &bare, "--domain", DOMAIN]);
    assert!(out.contains("removed"), "{out}");
    assert_eq!(agent.anchors(), set(&["root-a.pem", "hisp-a.example.pem"]));
    let (_, err) = agent.expect(2, ["anchors", "remove", &bare, "--domain", DOMAIN]);
    assert!(err.contains("has no anchor"), "{err}");
    let (_, err) = agent.expect(2, ["anchors", "remove", "abcd", "--domain", DOMAIN]);
    assert!(err.contains("not a SHA-256 fingerprint"), "{err}");

    // Export: PEM of exactly the domain's anchors, to a file and to stdout.
    let out_file = agent.path("anchors.pem");
    agent.expect(
        0,
        [
            "anchors",
            "export",
            "--domain",
            DOMAIN,
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    let exported: BTreeSet<String> = X509::stack_from_pem(&std::fs::read(&out_file).unwrap())
        .unwrap()
        .iter()
        .map(|c| fingerprint(c))
        .collect();
    assert_eq!(exported, set(&["root-a.pem", "hisp-a.example.pem"]));
    let (stdout, _) = agent.expect(0, ["anchors", "export", "--domain", DOMAIN]);
    assert_eq!(X509::stack_from_pem(stdout.as_bytes()).unwrap().len(), 2);
}

#[test]
fn anchors_refuse_unknown_domains_and_bad_input() {
    let agent = Agent::new();
    let root = cert("root-a.pem");
    let (_, err) = agent.expect(
        2,
        [
            "anchors",
            "add",
            root.to_str().unwrap(),
            "--domain",
            "hisp-z.example",
        ],
    );
    assert!(err.contains("hisp-z.example"), "{err}");
    assert!(
        err.contains("configured: hisp-b.example"),
        "lists them: {err}"
    );
    agent.expect(2, ["anchors", "list", "--domain", "hisp-z.example"]);
    agent.expect(2, ["anchors", "export", "--domain", "hisp-z.example"]);
    let (_, err) = agent.expect(
        2,
        [
            "anchors",
            "add",
            root.to_str().unwrap(),
            "--domain",
            DOMAIN,
            "--direction",
            "sideways",
        ],
    );
    assert!(err.contains("incoming, outgoing or both"), "{err}");
    let junk = agent.path("junk.pem");
    std::fs::write(&junk, b"not a certificate").unwrap();
    let (_, err) = agent.expect(
        2,
        ["anchors", "add", junk.to_str().unwrap(), "--domain", DOMAIN],
    );
    assert!(err.contains("junk.pem"), "{err}");
    // A signed bundle belongs in bundles add, where its signer is pinned.
    let signed = agent.path("signed.p7m");
    signed_bundle(&signed);
    let (_, err) = agent.expect(
        2,
        [
            "anchors",
            "add",
            signed.to_str().unwrap(),
            "--domain",
            DOMAIN,
        ],
    );
    assert!(
        err.contains("bundles add") && err.contains("--signer"),
        "{err}"
    );
    // Nothing of a failed batch is added.
    agent.expect(
        2,
        [
            "anchors",
            "add",
            root.to_str().unwrap(),
            junk.to_str().unwrap(),
            "--domain",
            DOMAIN,
        ],
    );
    assert!(agent.anchors().is_empty());
    // A missing configuration is a configuration error.
    let out = Command::new(BIN)
        .args(["anchors", "list", "--config"])
        .arg(agent.path("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.toml"));
}

#[test]
fn anchor_directions_widen_and_expiry_is_warned() {
    let agent = Agent::new();
    let root = cert("root-a.pem");
    for dir in ["incoming", "outgoing"] {
        agent.expect(
            0,
            [
                "anchors",
                "add",
                root.to_str().unwrap(),
                "--domain",
                DOMAIN,
                "--direction",
                dir,
            ],
        );
    }
    assert_eq!(agent.anchors_json()[0]["direction"], "both");

    let expired = cert("expired@hisp-b.example.pem");
    let (_, err) = agent.expect(
        0,
        [
            "anchors",
            "add",
            expired.to_str().unwrap(),
            "--domain",
            DOMAIN,
            "--allow-leaf-anchor",
        ],
    );
    assert!(err.contains("warning") && err.contains("expired"), "{err}");
    let rows = agent.anchors_json();
    let e = rows
        .iter()
        .find(|r| r["fingerprint"] == fp("expired@hisp-b.example.pem"))
        .unwrap();
    assert_eq!(e["warning"], "expired");
    assert!(e["days_left"].as_i64().unwrap() < 0);
    let (_, err) = agent.expect(0, ["anchors", "list"]);
    assert!(err.contains("expired"), "list warns too: {err}");
}

#[test]
fn bundle_from_a_file() {
    let agent = Agent::new();
    let file = agent.path("partners.p7b");
    std::fs::copy(cert("bundle-a.p7b"), &file).unwrap();
    let (out, _) = agent.expect(
        0,
        [
            "bundles",
            "add",
            file.to_str().unwrap(),
            "--domain",
            DOMAIN,
            "--direction",
            "incoming",
            "--refresh",
            "12h",
        ],
    );
    assert!(out.contains("added 2, removed 0"), "{out}");
    assert!(out.contains(&fp("root-b.pem")), "{out}");
    assert_eq!(agent.anchors(), set(&["root-a.pem", "root-b.pem"]));
    assert!(
        agent
            .anchors_json()
            .iter()
            .all(|a| a["direction"] == "incoming" && a["source"] == "bundle:partners.p7b")
    );
    let b = agent.bundle_json("partners.p7b");
    assert_eq!(b["refresh_secs"], 43_200);
    assert_eq!(b["anchors"], 2);
    assert!(b["last_error"].is_null());
    assert!(b["checksum"].as_str().unwrap().len() == 64);

    let (out, _) = agent.expect(0, ["bundles", "refresh"]);
    assert!(out.contains("partners.p7b: unchanged"), "{out}");

    // Same name twice is a usage error.
    agent.expect(
        2,
        ["bundles", "add", file.to_str().unwrap(), "--domain", DOMAIN],
    );
    agent.expect(
        2,
        [
            "bundles",
            "add",
            file.to_str().unwrap(),
            "--domain",
            "hisp-z.example",
            "--name",
            "other",
        ],
    );
    agent.expect(
        2,
        [
            "bundles",
            "add",
            file.to_str().unwrap(),
            "--domain",
            DOMAIN,
            "--name",
            "x",
            "--refresh",
            "often",
        ],
    );
    agent.expect(2, ["bundles", "refresh", "--name", "nope"]);

    let (out, _) = agent.expect(0, ["bundles", "remove", "partners.p7b"]);
    assert!(out.contains("its 2 anchors"), "{out}");
    assert!(agent.anchors().is_empty());
    agent.expect(2, ["bundles", "remove", "partners.p7b"]);
}

#[test]
fn bundle_over_http_adds_removes_and_survives_failures() {
    let agent = Agent::new();
    let www = agent.path("www");
    std::fs::create_dir(&www).unwrap();
    let served = www.join("directtrust.p7b");
    p7b(&served, &["root-a.pem", "root-b.pem"]);
    // A hand-added anchor the bundle must not touch.
    agent.expect(
        0,
        [
            "anchors",
            "add",
            cert("intermediate-b.pem").to_str().unwrap(),
            "--domain",
            DOMAIN,
        ],
    );
    let peer = HttpPeer::serve(&www);
    let url = peer.url("directtrust.p7b");

    let (out, _) = agent.expect(0, ["bundles", "add", &url, "--domain", DOMAIN]);
    assert!(out.contains("added 2, removed 0"), "{out}");
    assert_eq!(
        agent.anchors(),
        set(&["root-a.pem", "root-b.pem", "intermediate-b.pem"])
    );

    // The publisher drops root-b.
    p7b(&served, &["root-a.pem"]);
    let (out, _) = agent.expect(0, ["bundles", "refresh", "--name", "directtrust.p7b"]);
    assert!(out.contains("added 0, removed 1"), "{out}");
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("- ")
            && l.contains(&fp("root-b.pem"))
            && l.contains("CN=Direct Agent Test Root B")),
        "the removed anchor is named: {out}"
    );
    assert_eq!(agent.anchors(), set(&["root-a.pem", "intermediate-b.pem"]));

    // Garbage: refused, previous set kept, error recorded.
    std::fs::write(&served, b"\x30\x82garbage garbage garbage").unwrap();
    let (_, err) = agent.expect(1, ["bundles", "refresh"]);
    assert!(err.contains("not a trust bundle"), "{err}");
    assert!(err.contains("keeping the 1 anchors"), "{err}");
    assert_eq!(agent.anchors(), set(&["root-a.pem", "intermediate-b.pem"]));
    let b = agent.bundle_json("directtrust.p7b");
    assert!(
        b["last_error"]
            .as_str()
            .unwrap()
            .contains("not a trust bundle"),
        "{b}"
    );

    // HTTP 404: same.
    std::fs::remove_file(&served).unwrap();
    let (_, err) = agent.expect(1, ["bundles", "refresh"]);
    assert!(err.contains("HTTP 404"), "{err}");
    assert_eq!(agent.anchors(), set(&["root-a.pem", "intermediate-b.pem"]));
    let b = agent.bundle_json("directtrust.p7b");
    assert!(b["last_error"].as_str().unwrap().contains("404"), "{b}");
    assert_eq!(b["anchors"], 1);

    // Back again: the error clears, root-b returns.
    p7b(&served, &["root-a.pem", "root-b.pem"]);
    let (out, _) = agent.expect(0, ["bundles", "refresh"]);
    assert!(out.contains("added 1, removed 0"), "{out}");
    assert!(agent.bundle_json("directtrust.p7b")["last_error"].is_null());

    // A failed first refresh keeps the subscription, with its error.
    let (_, err) = agent.expect(
        1,
        [
            "bundles",
            "add",
            &peer.url("missing.p7b"),
            "--domain",
            DOMAIN,
        ],
    );
    assert!(err.contains("HTTP 404"), "{err}");
    let b = agent.bundle_json("missing.p7b");
    assert!(b["last_error"].as_str().unwrap().contains("404"), "{b}");
    assert!(b["checksum"].is_null());
}

#[test]
fn signed_bundle_needs_its_pinned_signer() {
    let agent = Agent::new();
    let www = agent.path("www");
    std::fs::create_dir(&www).unwrap();
    let signed = www.join("signed.p7m");
    signed_bundle(&signed);
    let peer = HttpPeer::serve(&www);
    let url = peer.url("signed.p7m");
    let hisp_a = cert("hisp-a.example.pem");

    // Without a pin the signature proves nothing: refused, with the flag to use.
    let (_, err) = agent.expect(
        1,
        [
            "bundles", "add", &url, "--domain", DOMAIN, "--name", "nopin",
        ],
    );
    assert!(err.contains("--signer"), "{err}");
    agent.expect(0, ["bundles", "remove", "nopin"]);

    let (out, _) = agent.expect(
        0,
        [
            "bundles",
            "add",
            &url,
            "--domain",
            DOMAIN,
            "--signer",
            hisp_a.to_str().unwrap(),
        ],
    );
    assert!(out.contains("added 2, removed 0"), "{out}");
    let good = set(&["root-a.pem", "root-b.pem"]);
    assert_eq!(agent.anchors(), good);
    assert!(
        agent.bundle_json("signed.p7m")["signer"]
            .as_str()
            .unwrap()
            .contains("CN=hisp-a.example")
    );

    // Flip a byte inside the signed content: refused, previous set kept.
    let original = std::fs::read(&signed).unwrap();
    let inner = std::fs::read(cert("bundle-a.p7b")).unwrap();
    let at = original
        .windows(inner.len())
        .position(|w| w == inner.as_slice())
        .expect("the signed bundle encapsulates bundle-a.p7b")
        + inner.len() / 2;
    let mut tampered = original.clone();
    tampered[at] ^= 0x01;
    std::fs::write(&signed, &tampered).unwrap();
    let (_, err) = agent.expect(1, ["bundles", "refresh", "--name", "signed.p7m"]);
    assert!(err.contains("does not verify"), "{err}");
    assert_eq!(agent.anchors(), good);
    assert!(
        agent.bundle_json("signed.p7m")["last_error"]
            .as_str()
            .unwrap()
            .contains("altered")
    );

    // The signature stripped (a plain certs-only bundle at the pinned URL): refused.
    std::fs::copy(cert("bundle-a.p7b"), &signed).unwrap();
    let (_, err) = agent.expect(1, ["bundles", "refresh", "--name", "signed.p7m"]);
    assert!(err.contains("not signed"), "{err}");
    assert_eq!(agent.anchors(), good);

    // Restored: accepted again (its checksum equals the applied one: unchanged).
    std::fs::write(&signed, &original).unwrap();
    let (out, _) = agent.expect(0, ["bundles", "refresh", "--name", "signed.p7m"]);
    assert!(out.contains("unchanged"), "{out}");
    assert!(agent.bundle_json("signed.p7m")["last_error"].is_null());

    // Pinned to someone else: refused, naming both.
    let (_, err) = agent.expect(
        1,
        [
            "bundles",
            "add",
            &url,
            "--domain",
            DOMAIN,
            "--name",
            "wrong",
            "--signer",
            cert("hisp-b.example.pem").to_str().unwrap(),
        ],
    );
    assert!(err.contains("not by the pinned signer"), "{err}");
    assert!(err.contains("CN=hisp-b.example"), "{err}");
    assert!(agent.bundle_json("wrong")["last_error"].is_string());
    assert_eq!(agent.bundle_json("wrong")["anchors"], 0);
    assert_eq!(agent.anchors(), good);
}
