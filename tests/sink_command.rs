//! The `command` sink running real programs (small `sh` scripts written by each test): what the
//! program is given (stdin, environment) and how its exit maps to an outcome.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use direct_agent::config::{CommandSinkConfig, SinkConfig, SinkKind, SinkRoute};
use direct_agent::mime::payload::{Payload, PayloadKind};
use direct_agent::sink::{
    DeliveryMetadata, Sink, SinkConfigError, SinkDelivery, SinkOutcome, build,
};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples/vxu-v04.hl7");

/// Write `body` as an executable `sh` script named `name` in `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn config(program: PathBuf, args: &[&str], timeout: &str) -> SinkConfig {
    SinkConfig {
        name: None,
        route: SinkRoute::default(),
        kind: SinkKind::Command(CommandSinkConfig {
            program,
            args: args.iter().map(|s| s.to_string()).collect(),
            timeout: timeout.into(),
            permanent_exit_codes: vec![65],
        }),
    }
}

fn sink(program: PathBuf, args: &[&str], timeout: &str) -> Box<dyn Sink> {
    build(&config(program, args, timeout)).unwrap()
}

fn meta() -> DeliveryMetadata {
    DeliveryMetadata {
        message_id: Some("<m1@hisp-a.example>".into()),
        from: "ehr@hisp-a.example".into(),
        to: vec!["iis@hisp-b.example".into(), "lab@hisp-b.example".into()],
        signer_subject: "CN=ehr@hisp-a.example,O=Clinic".into(),
        signer_fingerprint_sha256: "00".into(),
        signer_binding: "address".into(),
        received_at: 1_790_000_000,
        accepted_at: 1_790_000_001,
        source: "test".into(),
        validation: None,
    }
}

fn hl7(data: Vec<u8>) -> Payload {
    Payload {
        kind: PayloadKind::Hl7v2,
        content_type: "application/x-direct-encapsulated+hl7v2".into(),
        filename: Some("../up/vxu v04.hl7".into()),
        size: data.len(),
        data,
    }
}

fn deliver(sink: &dyn Sink, payloads: &[Payload]) -> SinkOutcome {
    let m = meta();
    let to = m.to.clone();
    let d = SinkDelivery {
        inbound_id: 1,
        message_id: m.message_id.as_deref(),
        from: &m.from,
        to: &to,
        metadata: &m,
        payloads,
    };
    // A script just written can be briefly "busy" (ETXTBSY) while another test thread's fork
    // still holds the write descriptor; that is the test harness, not the sink: try again.
    for _ in 0..20 {
        match sink.deliver(&d) {
            SinkOutcome::Transient(r) if r.contains("Text file busy") => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => return other,
        }
    }
    panic!("the script stayed busy (ETXTBSY)")
}

#[test]
fn payload_on_stdin_and_metadata_in_env() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let program = script(
        dir.path(),
        "take.sh",
        r#"cat > "$1/payload.$DIRECT_PAYLOAD_INDEX"
env | grep '^DIRECT_' | sort > "$1/env.$DIRECT_PAYLOAD_INDEX""#,
    );
    std::fs::create_dir(&out).unwrap();
    let sink = sink(program.clone(), &[out.to_str().unwrap()], "10s");
    let data = std::fs::read(SAMPLE).unwrap();
    let second = Payload {
        kind: PayloadKind::Attachment,
        content_type: "application/pdf".into(),
        filename: None,
        data: b"%PDF-1.4 not really".to_vec(),
        size: 19,
    };
    let outcome = deliver(&*sink, &[hl7(data.clone()), second]);
    assert_eq!(
        outcome,
        SinkOutcome::accepted(format!("command:{} exit 0", program.display()))
    );
    assert_eq!(std::fs::read(out.join("payload.1")).unwrap(), data);
    assert_eq!(
        std::fs::read(out.join("payload.2")).unwrap(),
        b"%PDF-1.4 not really"
    );
    let env = std::fs::read_to_string(out.join("env.1")).unwrap();
    assert_eq!(
        env,
        "DIRECT_CONTENT_TYPE=application/x-direct-encapsulated+hl7v2\n\
         DIRECT_FILENAME=01-vxuv04.hl7\n\
         DIRECT_FROM=ehr@hisp-a.example\n\
         DIRECT_MESSAGE_ID=<m1@hisp-a.example>\n\
         DIRECT_PAYLOAD_INDEX=1\n\
         DIRECT_RECEIVED_AT=1790000000\n\
         DIRECT_SIGNER_SUBJECT=CN=ehr@hisp-a.example,O=Clinic\n\
         DIRECT_TO=iis@hisp-b.example,lab@hisp-b.example\n"
    );
    let env2 = std::fs::read_to_string(out.join("env.2")).unwrap();
    assert!(env2.contains("DIRECT_FILENAME=02-payload.bin\n"), "{env2}");
    assert!(
        env2.contains("DIRECT_CONTENT_TYPE=application/pdf\n"),
        "{env2}"
    );
}

#[test]
fn listed_exit_code_is_permanent_without_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(
        dir.path(),
        "refuse.sh",
        "cat >/dev/null; echo 'patient TESTPATIENT ALEX is wrong' >&2; exit 65",
    );
    let outcome = deliver(
        &*sink(program.clone(), &[], "10s"),
        &[hl7(b"MSH|^~\\&|\r".to_vec())],
    );
    assert_eq!(
        outcome,
        SinkOutcome::permanent(format!(
            "{} refused payload 1 with exit code 65 (listed in permanent_exit_codes)",
            program.display()
        ))
    );
}

#[test]
fn other_exit_code_is_transient() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "fail.sh", "exit 3");
    let outcome = deliver(
        &*sink(program.clone(), &[], "10s"),
        &[hl7(b"MSH|^~\\&|\r".to_vec())],
    );
    assert_eq!(
        outcome,
        SinkOutcome::Transient(format!(
            "{} failed payload 1: exit code 3",
            program.display()
        ))
    );
}

#[test]
fn timeout_kills_the_program_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let sleeper = dir.path().join("sleeper");
    let program = script(
        dir.path(),
        "slow.sh",
        &format!(
            "echo $$ > '{}'\nsleep 30 &\necho $! > '{}'\nwait",
            pidfile.display(),
            sleeper.display()
        ),
    );
    let started = Instant::now();
    let outcome = deliver(
        &*sink(program.clone(), &[], "1s"),
        &[hl7(b"MSH|^~\\&|\r".to_vec())],
    );
    let elapsed = started.elapsed();
    assert!(
        matches!(&outcome, SinkOutcome::Transient(r)
            if r.contains("within 1s") && r.contains("killed")),
        "{outcome:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    // The script (reaped by the sink: `kill -0` fails) and the `sleep` it started (killed with
    // the process group; an orphan, so it may stay a zombie until init reaps it).
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let alive = std::process::Command::new("sh")
        .args(["-c", &format!("kill -0 {} 2>/dev/null", pid.trim())])
        .status()
        .unwrap();
    assert!(!alive.success(), "process {} still runs", pid.trim());
    let sleeper = std::fs::read_to_string(&sleeper).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while running(sleeper.trim()) {
        assert!(
            Instant::now() < deadline,
            "sleep {} still runs",
            sleeper.trim()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` exists and is not a zombie (from /proc/PID/stat, state after the name).
fn running(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

#[test]
fn a_program_that_ignores_stdin_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "ignore.sh", "exit 0");
    let big = hl7(vec![b'x'; 5 * 1024 * 1024]);
    let started = Instant::now();
    let outcome = deliver(&*sink(program.clone(), &[], "10s"), &[big]);
    assert!(
        matches!(outcome, SinkOutcome::Accepted { .. }),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_program_writing_lots_of_output_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "loud.sh", "cat; head -c 3000000 /dev/zero >&2");
    let outcome = deliver(
        &*sink(program, &[], "10s"),
        &[hl7(vec![b'y'; 2 * 1024 * 1024])],
    );
    assert!(
        matches!(outcome, SinkOutcome::Accepted { .. }),
        "{outcome:?}"
    );
}

#[test]
fn a_missing_program_is_a_build_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-program");
    let err: SinkConfigError = build(&config(missing.clone(), &[], "10s"))
        .err()
        .expect("a missing program is refused");
    let text = err.to_string();
    assert!(text.contains(&missing.display().to_string()), "{text}");
}

#[test]
fn a_program_removed_after_start_is_transient() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "gone.sh", "exit 0");
    let sink = sink(program.clone(), &[], "10s");
    std::fs::remove_file(&program).unwrap();
    let outcome = deliver(&*sink, &[hl7(b"MSH|^~\\&|\r".to_vec())]);
    assert!(
        matches!(&outcome, SinkOutcome::Transient(r)
            if r.starts_with(&format!("cannot run {}", program.display()))
                && r.ends_with("fix [[sink]] program")),
        "{outcome:?}"
    );
}

#[test]
fn a_bad_timeout_is_a_build_error() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "ok.sh", "exit 0");
    let err = build(&config(program, &[], "ten seconds"))
        .err()
        .expect("a bad timeout is refused");
    assert!(err.to_string().contains("timeout"), "{err}");
}

#[test]
fn exit_zero_cannot_be_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "ok.sh", "exit 0");
    let mut c = config(program, &[], "10s");
    if let SinkKind::Command(k) = &mut c.kind {
        k.permanent_exit_codes = vec![65, 0];
    }
    let err = build(&c).err().expect("0 is refused");
    assert!(err.to_string().contains("permanent_exit_codes"), "{err}");
}
