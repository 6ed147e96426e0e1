//! The `directory` sink: each payload as a file, plus one JSON sidecar per message, written
//! atomically (temporary file, fsync, rename, fsync of the folder). File names come from the
//! Message-ID and the part index (`<id>.<n>.<ext>`, sidecar `<id>.json`), so delivering the same
//! message again rewrites the same files instead of adding copies. The sidecar is written last:
//! its presence means every payload file is complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Sink, SinkDelivery, SinkOutcome};

/// Payload files and sidecars in one folder.
pub struct DirectorySink {
    path: PathBuf,
}

impl DirectorySink {
    pub fn new(path: PathBuf) -> DirectorySink {
        DirectorySink { path }
    }

    /// The base file name for a message: its Message-ID with everything but letters, digits and
    /// `.-_@` replaced, or `inbound-<id>` without one.
    pub fn base_name(message_id: Option<&str>, inbound_id: i64) -> String {
        let cleaned: String = message_id
            .map(|m| m.trim().trim_start_matches('<').trim_end_matches('>'))
            .unwrap_or("")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@') {
                    c
                } else {
                    '_'
                }
            })
            .take(150)
            .collect();
        let cleaned = cleaned.trim_start_matches('.').to_string();
        if cleaned.is_empty() {
            format!("inbound-{inbound_id}")
        } else {
            cleaned
        }
    }
}

fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.partial"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))
}

/// File-system failures (full disk, permissions) are transient: the message waits in the spool
/// and is retried once the operator fixes the folder.
fn transient(e: &std::io::Error, what: String) -> SinkOutcome {
    SinkOutcome::Transient(format!("{what}: {e}"))
}

/// The `<id>.json` sidecar, serialized from borrowed fields (no intermediate JSON tree).
#[derive(serde::Serialize)]
struct Sidecar<'a> {
    metadata: &'a crate::sink::DeliveryMetadata,
    payloads: Vec<SidecarFile<'a>>,
}

#[derive(serde::Serialize)]
struct SidecarFile<'a> {
    content_type: &'a str,
    file: String,
    sender_filename: Option<&'a str>,
    size: usize,
}

impl Sink for DirectorySink {
    fn name(&self) -> String {
        format!("directory:{}", self.path.display())
    }

    fn deliver(&self, d: &SinkDelivery<'_>) -> SinkOutcome {
        let dir = &self.path;
        // The folder is created when first missing, not looked for on every delivery.
        // The folder is opened once (its handle syncs the renames at the end) and created only
        // when missing, rather than looked for on every delivery.
        let folder = match std::fs::File::open(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).and_then(|()| std::fs::File::open(dir))
            }
            other => other,
        };
        let folder = match folder {
            Ok(f) => f,
            Err(e) => return transient(&e, format!("cannot create {}", dir.display())),
        };
        let base = Self::base_name(d.message_id, d.inbound_id);
        let mut files = Vec::new();
        for (i, p) in d.payloads.iter().enumerate() {
            let ext = p.kind.extension();
            let name = format!("{base}.{}.{ext}", i + 1);
            if let Err(e) = write_atomic(dir, &name, &p.data) {
                return transient(&e, format!("cannot write {}", dir.join(&name).display()));
            }
            files.push(SidecarFile {
                content_type: &p.content_type,
                file: name,
                sender_filename: p.filename.as_deref(),
                size: p.data.len(),
            });
        }
        let sidecar = Sidecar {
            metadata: d.metadata,
            payloads: files,
        };
        let name = format!("{base}.json");
        let text = serde_json::to_vec_pretty(&sidecar).unwrap_or_default();
        if let Err(e) = write_atomic(dir, &name, &text) {
            return transient(&e, format!("cannot write {}", dir.join(&name).display()));
        }
        // Make the renames durable.
        if let Err(e) = folder.sync_all() {
            return transient(&e, format!("cannot sync {}", dir.display()));
        }
        SinkOutcome::accepted(dir.join(name).display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::payload::{Payload, PayloadKind};
    use crate::sink::DeliveryMetadata;

    fn meta() -> DeliveryMetadata {
        DeliveryMetadata {
            message_id: Some("<abc/../x@hisp-a.example>".into()),
            from: "a@hisp-a.example".into(),
            to: vec!["b@hisp-b.example".into()],
            signer_subject: "CN=a".into(),
            signer_fingerprint_sha256: "00".into(),
            signer_binding: "address".into(),
            received_at: 1,
            accepted_at: 2,
            source: "local".into(),
            validation: None,
        }
    }

    #[test]
    fn names_are_safe_and_stable() {
        assert_eq!(
            DirectorySink::base_name(Some("<abc/../x@hisp-a.example>"), 3),
            "abc_.._x@hisp-a.example"
        );
        assert_eq!(DirectorySink::base_name(Some("<...>"), 3), "inbound-3");
        assert_eq!(DirectorySink::base_name(None, 4), "inbound-4");
    }

    #[test]
    fn writes_payloads_and_sidecar_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let sink = DirectorySink::new(dir.path().join("inbox"));
        let payloads = vec![Payload {
            kind: PayloadKind::Hl7v2,
            content_type: "application/x-direct-encapsulated+hl7v2".into(),
            filename: Some("../../etc/passwd".into()),
            data: b"MSH|^~\\&|\r".to_vec(),
            size: 10,
        }];
        let m = meta();
        let to = vec!["b@hisp-b.example".to_string()];
        let d = SinkDelivery {
            inbound_id: 1,
            message_id: m.message_id.as_deref(),
            from: "a@hisp-a.example",
            to: &to,
            metadata: &m,
            payloads: &payloads,
        };
        for _ in 0..2 {
            assert!(matches!(sink.deliver(&d), SinkOutcome::Accepted { .. }));
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("inbox"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "abc_.._x@hisp-a.example.1.hl7",
                "abc_.._x@hisp-a.example.json"
            ]
        );
        let body = std::fs::read(dir.path().join("inbox/abc_.._x@hisp-a.example.1.hl7")).unwrap();
        assert_eq!(body, b"MSH|^~\\&|\r");
        let side: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("inbox/abc_.._x@hisp-a.example.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(side["metadata"]["from"], "a@hisp-a.example");
        assert_eq!(side["metadata"]["signer_binding"], "address");
        assert!(side["metadata"].get("validation").is_none());
        assert_eq!(side["payloads"][0]["size"], 10);
        assert_eq!(side["payloads"][0]["file"], "abc_.._x@hisp-a.example.1.hl7");
        assert_eq!(side["payloads"][0]["sender_filename"], "../../etc/passwd");
        assert_eq!(
            side["payloads"][0]["content_type"],
            "application/x-direct-encapsulated+hl7v2"
        );

        // The folder removed under a running agent is made again at the next delivery.
        std::fs::remove_dir_all(dir.path().join("inbox")).unwrap();
        assert!(matches!(sink.deliver(&d), SinkOutcome::Accepted { .. }));
        assert!(
            dir.path()
                .join("inbox/abc_.._x@hisp-a.example.json")
                .exists()
        );

        // A path that cannot be a folder is a transient failure naming it.
        let blocked = DirectorySink::new(dir.path().join("inbox/abc_.._x@hisp-a.example.json"));
        match blocked.deliver(&d) {
            SinkOutcome::Transient(reason) => {
                assert!(reason.contains("abc_.._x@hisp-a.example.json"), "{reason}")
            }
            other => panic!("expected a transient failure, got {other:?}"),
        }
    }

    #[test]
    fn unwritable_folder_is_transient() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let sink = DirectorySink::new(file.join("inbox"));
        let m = meta();
        let d = SinkDelivery {
            inbound_id: 1,
            message_id: None,
            from: "a@x.example",
            to: &[],
            metadata: &m,
            payloads: &[],
        };
        assert!(matches!(sink.deliver(&d), SinkOutcome::Transient(_)));
    }
}
