//! The `command` sink: a local program run once per payload (the Direct Context `metadata.txt` is
//! not one; directly, not through a shell), the
//! payload on its standard input and the message's metadata in its environment. Its exit status
//! decides: 0 accepted, a code listed in `permanent_exit_codes` refused for good (quarantine),
//! anything else (another code, a signal, the timeout, a program that cannot be started)
//! transient.
//!
//! Environment given to the program, beside the agent's own (inherited):
//!
//! | variable | value |
//! |---|---|
//! | `DIRECT_MESSAGE_ID` | the Message-ID (empty without one) |
//! | `DIRECT_FROM` | the sender's address |
//! | `DIRECT_TO` | the recipients, comma-separated |
//! | `DIRECT_CONTENT_TYPE` | the payload's content type |
//! | `DIRECT_FILENAME` | a safe file name ([`Payload::safe_filename`]) |
//! | `DIRECT_PAYLOAD_INDEX` | the payload's position in the message, from 1 |
//! | `DIRECT_SIGNER_SUBJECT` | the signing certificate's subject |
//! | `DIRECT_RECEIVED_AT` | when the message was received, Unix seconds |
//!
//! The child runs in its own process group; on timeout the whole group is killed (so a `curl`
//! started by a script does not outlive it) and reaped. Standard input is written from a thread,
//! so a program that never reads it cannot block the agent; its output is read and discarded
//! (only lengths are logged: a program's stderr can echo patient data).
//!
//! Delivery is at-least-once: when the second payload fails after the program accepted the
//! first, the failure is reported and the pipeline runs the program for every payload again
//! later. Programs should be idempotent (keyed on `DIRECT_MESSAGE_ID` and
//! `DIRECT_PAYLOAD_INDEX`).

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Sink, SinkDelivery, SinkOutcome};
use crate::mime::payload::Payload;

/// Runs a program per payload.
#[derive(Debug, Clone)]
pub struct CommandSink {
    program: PathBuf,
    args: Vec<String>,
    timeout: Duration,
    permanent_exit_codes: Vec<i32>,
}

/// Why a command sink cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandConfigError {
    /// The program path does not exist or cannot be inspected.
    #[error("program {path}: {source}; fix [[sink]] program")]
    Missing {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The path is a folder or another non-file.
    #[error("program {path} is not a file; fix [[sink]] program")]
    NotAFile { path: PathBuf },
    /// No execute permission bit is set.
    #[error("program {path} is not executable (chmod +x it)")]
    NotExecutable { path: PathBuf },
}

impl CommandSink {
    /// A sink running `program args...`, checking that the program is an executable file.
    pub fn new(
        program: PathBuf,
        args: Vec<String>,
        timeout: Duration,
        permanent_exit_codes: Vec<i32>,
    ) -> Result<CommandSink, CommandConfigError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&program).map_err(|source| CommandConfigError::Missing {
            path: program.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(CommandConfigError::NotAFile { path: program });
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(CommandConfigError::NotExecutable { path: program });
        }
        Ok(CommandSink {
            program,
            args,
            timeout,
            permanent_exit_codes,
        })
    }

    /// The environment for payload `index` (from 1).
    fn environment(d: &SinkDelivery<'_>, payload: &Payload, index: usize) -> Vec<(String, String)> {
        let message_id = d
            .message_id
            .map(str::to_string)
            .or_else(|| d.metadata.message_id.clone())
            .unwrap_or_default();
        [
            ("DIRECT_MESSAGE_ID", message_id),
            ("DIRECT_FROM", d.from.to_string()),
            ("DIRECT_TO", d.to.join(",")),
            ("DIRECT_CONTENT_TYPE", payload.content_type.clone()),
            ("DIRECT_FILENAME", payload.safe_filename(index)),
            ("DIRECT_PAYLOAD_INDEX", index.to_string()),
            ("DIRECT_SIGNER_SUBJECT", d.metadata.signer_subject.clone()),
            ("DIRECT_RECEIVED_AT", d.metadata.received_at.to_string()),
        ]
        .into_iter()
        // A NUL cannot be passed in the environment; values come from peers.
        .map(|(k, v)| (k.to_string(), v.replace('\0', "")))
        .collect()
    }

    fn run(&self, d: &SinkDelivery<'_>, payload: &Payload, index: usize) -> SinkOutcome {
        let program = self.program.display();
        let started = Instant::now();
        let mut child = match Command::new(&self.program)
            .args(&self.args)
            .envs(Self::environment(d, payload, index))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                return SinkOutcome::Transient(format!(
                    "cannot run {program}: {e}; fix [[sink]] program"
                ));
            }
        };
        // Threads, not scoped: if a grandchild keeps a pipe open after the child is gone, the
        // agent does not wait for it. The payload is copied once for the writer.
        if let Some(mut stdin) = child.stdin.take() {
            let data = payload.data.clone();
            std::thread::spawn(move || {
                // A program that exits without reading closes the pipe: EPIPE, which is fine.
                let _ = stdin.write_all(&data);
            });
        }
        let stdout = child.stdout.take().map(drain);
        let stderr = child.stderr.take().map(drain);

        let status = match wait_until(&mut child, started + self.timeout) {
            Ok(Some(status)) => status,
            Ok(None) => {
                kill_group(&mut child);
                tracing::debug!(sink = %self.name(), payload = index, elapsed_ms = started.elapsed().as_millis() as u64, "command timed out; killed");
                return SinkOutcome::Transient(format!(
                    "{program} did not finish payload {index} within {}s; killed",
                    self.timeout.as_secs_f64()
                ));
            }
            Err(e) => {
                kill_group(&mut child);
                return SinkOutcome::Transient(format!("waiting for {program}: {e}"));
            }
        };
        let grace = Duration::from_millis(200);
        let stdout_len = stdout.and_then(|r| r.recv_timeout(grace).ok());
        let stderr_len = stderr.and_then(|r| r.recv_timeout(grace).ok());
        tracing::debug!(sink = %self.name(), payload = index, status = %status, stdout_bytes = ?stdout_len, stderr_bytes = ?stderr_len, elapsed_ms = started.elapsed().as_millis() as u64, "command finished");
        self.judge(status, index)
    }

    /// What an exit status means for payload `index`.
    fn judge(&self, status: ExitStatus, index: usize) -> SinkOutcome {
        let program = self.program.display();
        match (status.code(), status.signal()) {
            (Some(0), _) => SinkOutcome::accepted(format!("command:{program} exit 0")),
            (Some(code), _) if self.permanent_exit_codes.contains(&code) => {
                SinkOutcome::permanent(format!(
                    "{program} refused payload {index} with exit code {code} (listed in permanent_exit_codes)"
                ))
            }
            (Some(code), _) => SinkOutcome::Transient(format!(
                "{program} failed payload {index}: exit code {code}"
            )),
            (None, Some(signal)) => SinkOutcome::Transient(format!(
                "{program} was killed by signal {signal} on payload {index}"
            )),
            (None, None) => SinkOutcome::Transient(format!(
                "{program} ended without an exit code on payload {index}"
            )),
        }
    }
}

/// Read a pipe to its end, keeping only the count; the count arrives on the channel.
fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<u64> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let n = std::io::copy(&mut pipe, &mut std::io::sink()).unwrap_or(0);
        let _ = tx.send(n);
    });
    rx
}

/// Wait for the child until `deadline`; None if it is still running then.
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Kill the child's process group (it leads one: `process_group(0)`), then reap the child.
fn kill_group(child: &mut Child) {
    let pid = rustix::process::Pid::from_child(child);
    if rustix::process::kill_process_group(pid, rustix::process::Signal::KILL).is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

impl Sink for CommandSink {
    fn name(&self) -> String {
        format!("command:{}", self.program.display())
    }

    fn deliver(&self, d: &SinkDelivery<'_>) -> SinkOutcome {
        let mut last = None;
        // The Direct Context metadata.txt describes the Direct message, not the payload.
        let payloads = d
            .payloads
            .iter()
            .enumerate()
            .filter(|(_, p)| p.kind != crate::mime::payload::PayloadKind::DirectContext);
        for (i, payload) in payloads {
            match self.run(d, payload, i + 1) {
                accepted @ SinkOutcome::Accepted { .. } => last = Some(accepted),
                other => return other,
            }
        }
        last.unwrap_or_else(|| {
            SinkOutcome::permanent("the message has no payload to hand to the command")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(codes: Vec<i32>) -> CommandSink {
        CommandSink {
            program: "/bin/true".into(),
            args: vec![],
            timeout: Duration::from_secs(1),
            permanent_exit_codes: codes,
        }
    }

    #[test]
    fn exit_codes_map_to_outcomes() {
        let s = sink(vec![65, 77]);
        assert_eq!(
            s.judge(ExitStatus::from_raw(0), 1),
            SinkOutcome::accepted("command:/bin/true exit 0")
        );
        // Wait statuses: exit code in the high byte.
        assert_eq!(
            s.judge(ExitStatus::from_raw(65 << 8), 2),
            SinkOutcome::permanent(
                "/bin/true refused payload 2 with exit code 65 (listed in permanent_exit_codes)"
            )
        );
        assert!(matches!(
            s.judge(ExitStatus::from_raw(3 << 8), 1),
            SinkOutcome::Transient(r) if r.contains("exit code 3")
        ));
        assert!(matches!(
            s.judge(ExitStatus::from_raw(9), 1),
            SinkOutcome::Transient(r) if r.contains("signal 9")
        ));
    }

    #[test]
    fn build_checks_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err =
            CommandSink::new(missing.clone(), vec![], Duration::from_secs(1), vec![]).unwrap_err();
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
        assert!(matches!(
            CommandSink::new(dir.path().into(), vec![], Duration::from_secs(1), vec![]),
            Err(CommandConfigError::NotAFile { .. })
        ));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        assert!(matches!(
            CommandSink::new(plain, vec![], Duration::from_secs(1), vec![]),
            Err(CommandConfigError::NotExecutable { .. })
        ));
    }
}
