//! `direct-agent demo` as a newcomer runs it: exit 0, every step of the transcript passed, the
//! files it names exist, and the agents' log holds no HL7 content.

use std::process::Command;

#[test]
fn the_demo_runs_every_step_and_logs_no_phi() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_direct-agent"))
        .args(["demo", "--keep"])
        .arg(&keep)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for step in 1..=7 {
        assert!(stdout.contains(&format!("[{step}/7]")), "{stdout}");
    }
    assert_eq!(stdout.matches("-> ok:").count(), 7, "{stdout}");
    assert!(
        stdout.contains("connectivity verified: every step passed"),
        "{stdout}"
    );
    // `send --wait` reports on stderr, as it does on its own.
    assert!(stderr.contains("iis@hisp-b.example: complete"), "{stderr}");
    assert!(stdout.contains("MSA|AA|DEMO-0001"), "{stdout}");
    assert!(
        stdout.contains("no path to a configured trust anchor"),
        "{stdout}"
    );
    assert!(stdout.contains("every step passed"), "{stdout}");
    // What it names is there.
    assert!(keep.join("review.html").is_file());
    assert!(keep.join("hisp-a.example.toml").is_file());
    let inbox: Vec<_> = std::fs::read_dir(keep.join("hisp-b.example-inbox"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "hl7"))
        .collect();
    assert_eq!(inbox.len(), 1, "B's sink holds the one VXU");
    // The transcript and the agents' log carry no patient data from the VXU.
    let log = std::fs::read_to_string(keep.join("agents.log")).unwrap();
    assert!(
        log.contains("message accepted"),
        "the log is written: {log}"
    );
    for canary in ["TESTPATIENT", "1 TEST ST", "LOT123"] {
        assert!(!log.contains(canary), "{canary} in the agents' log");
        assert!(!stdout.contains(canary), "{canary} in the transcript");
    }
    // Private keys are written owner-only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keep.join("pki/ehr.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
}

#[test]
fn the_demo_refuses_a_folder_that_is_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x"), "x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_direct-agent"))
        .args(["demo", "--keep"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}
