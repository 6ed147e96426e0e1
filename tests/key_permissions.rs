//! Private key file permissions through the real binary: a configured key that group or others
//! may read stops `serve` (exit 2, the file, its mode and `chmod 600` in the message) and is an
//! error of `config check`; an owner-only key passes; `[agent] insecure_key_permissions = true`
//! accepts the readable key with a start-up warning. `config check` on a working two-agent set-up
//! has no error.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::agents::{AgentSetup, BIN, Extra, cli, start, two_agents, wait_until};

fn config_check(s: &AgentSetup) -> (i32, serde_json::Value) {
    let out = cli(s, &["config", "check", "--json"]).output().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "config check --json printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

/// `serve` that is expected to stop by itself: its exit code and stderr.
fn serve_until_exit(s: &AgentSetup) -> (i32, String) {
    let err = s.log.with_extension("serve-stderr");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&s.config)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (
                st.code().unwrap_or(-1),
                std::fs::read_to_string(&err).unwrap_or_default(),
            );
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "serve kept running with a world-readable key:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_readable_key_is_refused_unless_the_insecure_setting_says_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = two_agents(dir.path(), &Extra::default(), &Extra::default());
    let key = dir.path().join("keys/ehr@hisp-a.example.key");
    assert!(key.exists(), "the test agents' keys moved");

    // Owner-only keys, anchors in place, free port: no error.
    let (code, found) = config_check(&a);
    assert_eq!(code, 0, "{found:#}");
    assert_eq!(found["errors"], serde_json::json!([]), "{found:#}");

    // 0644: refused by config check and by serve.
    chmod(&key, 0o644);
    let (code, found) = config_check(&a);
    assert_eq!(code, 2, "{found:#}");
    let refusal = found["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "domain[0].credential[0].key")
        .unwrap_or_else(|| panic!("no error at domain[0].credential[0].key: {found:#}"));
    let problem = refusal["problem"].as_str().unwrap();
    assert!(
        problem.contains("mode 0644") && problem.contains(&format!("chmod 600 {}", key.display())),
        "{problem}"
    );
    let (code, stderr) = serve_until_exit(&a);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&key.display().to_string())
            && stderr.contains("mode 0644")
            && stderr.contains("chmod 600"),
        "{stderr}"
    );

    // The insecure setting: accepted, with a warning from config check and from serve.
    let text = std::fs::read_to_string(&a.config).unwrap();
    std::fs::write(
        &a.config,
        text.replacen(
            "[agent]\n",
            "[agent]\n# public test key\ninsecure_key_permissions = true\n",
            1,
        ),
    )
    .unwrap();
    let (code, found) = config_check(&a);
    assert_eq!(code, 0, "{found:#}");
    assert!(
        found["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["key"] == "agent.insecure_key_permissions"),
        "{found:#}"
    );
    let running = start(&a);
    assert!(
        wait_until(Duration::from_secs(10), || running
            .log_text()
            .contains("insecure_key_permissions")),
        "no start-up warning:\n{}",
        running.log_text()
    );
    let warning = running
        .log_text()
        .lines()
        .find(|l| l.contains("insecure_key_permissions"))
        .unwrap()
        .to_string();
    assert!(warning.contains("WARN"), "{warning}");

    // Back to 0600 without the setting: serve starts.
    drop(running);
    std::fs::write(&a.config, text).unwrap();
    chmod(&key, 0o600);
    let (code, found) = config_check(&a);
    assert_eq!(code, 0, "{found:#}");
    drop(start(&a));
}
