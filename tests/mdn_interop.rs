//! MDN interoperability with a real, independent S/MIME peer, the `openssl cms` command line:
//! (a) MDNs built and sealed here (iis@hisp-b.example answering ehr@hisp-a.example) open with
//! the `direct-agent message open` CLI and decrypt and verify in OpenSSL; (b) an MDN written by
//! hand, as another implementation would, and signed and encrypted by OpenSSL, opens here and
//! `parse_report` reads it.
//!
//! These tests need the `openssl` binary. Without it they fail (they never pass silently):
//! install it with `apt-get install -y openssl`.

use std::fs;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use direct_agent::address::DirectAddress;
use direct_agent::clock::SystemClock;
use direct_agent::credential::{Credential, load_certificates};
use direct_agent::mdn::{
    Disposition, DispositionKind, MdnReport, MdnRequest, NotificationKind, Report, build_mdn,
    notification_kind, parse_report,
};
use direct_agent::message::{Envelope, OpenInputs, SealOptions, open, seal_inner};
use direct_agent::trust::TrustInputs;
use tempfile::TempDir;

mod common;
use common::{BIN, cert, text};

/// The `openssl` command, after checking that it runs.
fn openssl() -> Command {
    match Command::new("openssl").arg("version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`openssl version` failed ({}); these interop tests need the OpenSSL 3 CLI: apt-get install -y openssl",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "the `openssl` command is not on PATH ({e}); these interop tests need it: apt-get install -y openssl"
        ),
    }
    Command::new("openssl")
}

/// Run `cmd`, feeding `stdin`; panic with both streams unless it succeeds.
fn run_ok(what: &str, cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("cannot spawn");
    let out = if let Some(data) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        // Write from a thread so a large input cannot deadlock against a full stdout pipe.
        let writer = std::thread::spawn(move || pipe.write_all(&data));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        out
    } else {
        child.wait_with_output().unwrap()
    };
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn addr(s: &str) -> DirectAddress {
    DirectAddress::parse(s).unwrap()
}

fn mdn_of(inner: &[u8]) -> MdnReport {
    match parse_report(inner) {
        Ok(Report::Mdn(r)) => r,
        other => panic!("not read as an MDN: {other:?}\n{}", text(inner)),
    }
}

/// (a) Built and sealed here for every disposition; opened by the CLI as ehr@hisp-a.example and
/// decrypted and verified by OpenSSL, the report part intact.
#[test]
fn mdn_sealed_here_opens_in_the_cli_and_in_openssl() {
    openssl();
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let signer = Credential::load(
        &cert("iis@hisp-b.example.key"),
        Some(&cert("iis@hisp-b.example.fullchain.pem")),
        None,
    )
    .unwrap();
    let recipient_certs = load_certificates(&cert("ehr@hisp-a.example.pem")).unwrap();
    let cases = [
        (
            Disposition::Processed,
            "processed",
            DispositionKind::Processed,
        ),
        (
            Disposition::Dispatched,
            "dispatched",
            DispositionKind::Dispatched,
        ),
        (
            Disposition::Failed {
                reason: "the sink refused the payload".into(),
            },
            "failed",
            DispositionKind::Failed,
        ),
    ];
    for (disposition, keyword, kind) in &cases {
        let built = build_mdn(
            &MdnRequest {
                original_message_id: format!("<vxu-{keyword}@hisp-a.example>"),
                original_sender: addr("ehr@hisp-a.example"),
                final_recipient: addr("iis@hisp-b.example"),
                original_recipient: Some("rfc822;iis@hisp-b.example".into()),
                final_destination_requested: true,
            },
            disposition,
            "mx.hisp-b.example",
            &SystemClock,
        );
        let sealed = seal_inner(
            &addr("iis@hisp-b.example"),
            &[addr("ehr@hisp-a.example")],
            &built.inner,
            &signer,
            &recipient_certs,
            &SealOptions::default(),
            &SystemClock,
        )
        .unwrap_or_else(|e| panic!("{keyword}: seal_inner: {e}"));
        assert_eq!(sealed.message_id, built.message_id, "{keyword}");
        let path = d.join(format!("{keyword}.eml"));
        fs::write(&path, &sealed.message).unwrap();

        // The agent's own CLI, as the receiving side ehr@hisp-a.example.
        let out = Command::new(BIN)
            .args(["message", "open", "--in"])
            .arg(&path)
            .arg("--key")
            .arg(cert("ehr@hisp-a.example.key"))
            .arg("--cert")
            .arg(cert("ehr@hisp-a.example.pem"))
            .arg("--anchor")
            .arg(cert("root-b.pem"))
            .arg("--crl")
            .arg(cert("intermediate-b.crl.pem"))
            .arg("--crl")
            .arg(cert("root-b.crl.pem"))
            .args(["--mail-from", "iis@hisp-b.example"])
            .args(["--rcpt-to", "ehr@hisp-a.example", "--json"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{keyword}: message open refused the MDN: {}",
            text(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{keyword}: {e}: {}", text(&out.stdout)));
        assert_eq!(report["ok"], true, "{keyword}: {report}");
        assert_eq!(report["from"], "iis@hisp-b.example", "{keyword}");
        assert_eq!(report["wrapped"], true, "{keyword}");
        assert_eq!(report["message_id"], built.message_id.as_str(), "{keyword}");
        assert_eq!(report["signer"]["binding"], "address", "{keyword}");
        assert!(
            report["disposition_notification_to"].is_null(),
            "{keyword}: an MDN asks for no MDN: {report}"
        );

        // OpenSSL: decrypt with ehr's key, verify against root-b.
        let decrypted = d.join(format!("{keyword}.signed"));
        run_ok(
            &format!("openssl cms -decrypt {keyword}"),
            openssl()
                .args(["cms", "-decrypt", "-in"])
                .arg(&path)
                .arg("-recip")
                .arg(cert("ehr@hisp-a.example.pem"))
                .arg("-inkey")
                .arg(cert("ehr@hisp-a.example.key"))
                .arg("-out")
                .arg(&decrypted),
            None,
        );
        let verified = run_ok(
            &format!("openssl cms -verify {keyword}"),
            openssl()
                .args(["cms", "-verify", "-in"])
                .arg(&decrypted)
                .arg("-CAfile")
                .arg(cert("root-b.pem")),
            None,
        );
        assert!(
            text(&verified.stderr).contains("Verification successful"),
            "{keyword}: {}",
            text(&verified.stderr)
        );
        let content = verified.stdout;
        let wrapper = b"Content-Type: message/rfc822\r\n\r\n";
        assert!(
            content.starts_with(wrapper),
            "{keyword}: the signed content is not the message/rfc822 wrapper:\n{}",
            text(&content)
        );
        let inner = &content[wrapper.len()..];
        assert_eq!(
            inner,
            &built.inner[..],
            "{keyword}: the MDN arrives byte for byte"
        );
        let r = mdn_of(inner);
        assert_eq!(
            r.original_message_id,
            Some(format!("<vxu-{keyword}@hisp-a.example>")),
            "{keyword}"
        );
        assert_eq!(&r.disposition.kind, kind, "{keyword}");
        assert_eq!(
            r.final_destination_extension,
            *keyword != "processed",
            "{keyword}"
        );
        let fields = text(inner);
        assert!(
            fields.contains(&format!(
                "Disposition: automatic-action/MDN-sent-automatically;{keyword}\r\n"
            )),
            "{keyword}:\n{fields}"
        );
    }
}

/// An MDN as the Java Direct RI writes it, from iis@hisp-b.example to ehr@hisp-a.example.
fn hand_written_mdn(with_headers: bool) -> String {
    let headers = if with_headers {
        "Message-ID: <1400000000000.JavaMail.direct@hisp-b.example>\r\n\
         Date: Wed, 01 Jan 2025 12:05:00 +0000\r\n\
         From: iis@hisp-b.example\r\n\
         To: ehr@hisp-a.example\r\n\
         Subject: Processed:Direct message\r\n\
         In-Reply-To: <vxu-ri@hisp-a.example>\r\n\
         MIME-Version: 1.0\r\n"
    } else {
        ""
    };
    format!(
        "{headers}Content-Type: multipart/report; \r\n\
         \tboundary=\"----=_Part_7_1390876423.1400000000000\"; \r\n\
         \treport-type=disposition-notification\r\n\
         \r\n\
         ------=_Part_7_1390876423.1400000000000\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         Content-Transfer-Encoding: 7bit\r\n\
         \r\n\
         Your message was successfully processed.\r\n\
         ------=_Part_7_1390876423.1400000000000\r\n\
         Content-Type: message/disposition-notification\r\n\
         Content-Transfer-Encoding: 7bit\r\n\
         \r\n\
         Reporting-UA: hisp-b.example; DirectJavaRI\r\n\
         Original-Recipient: rfc822; iis@hisp-b.example\r\n\
         Final-Recipient: rfc822; iis@hisp-b.example\r\n\
         Original-Message-ID: vxu-ri@hisp-a.example\r\n\
         Disposition: automatic-action/MDN-sent-automatically;processed\r\n\
         \r\n\
         ------=_Part_7_1390876423.1400000000000--\r\n"
    )
}

/// (b) Written by hand and signed (detached, SHA-256) and encrypted (AES-128-CBC) by OpenSSL,
/// wrapped as message/rfc822 or as a bare multipart/report entity: opened here by the library
/// as ehr@hisp-a.example, and `parse_report` reads the processed disposition and the
/// Original-Message-ID.
#[test]
fn mdn_built_by_openssl_opens_here_and_parses() {
    openssl();
    let ours = [Credential::load(
        &cert("ehr@hisp-a.example.key"),
        Some(&cert("ehr@hisp-a.example.pem")),
        None,
    )
    .unwrap()];
    let anchors = load_certificates(&cert("root-b.pem")).unwrap();
    for wrapped in [true, false] {
        let case = if wrapped { "wrapped" } else { "bare" };
        let entity = hand_written_mdn(wrapped);
        let content = if wrapped {
            format!("Content-Type: message/rfc822\r\n\r\n{entity}")
        } else {
            entity.clone()
        };
        let signed = run_ok(
            &format!("openssl cms -sign {case}"),
            openssl()
                .args(["cms", "-sign", "-signer"])
                .arg(cert("iis@hisp-b.example.pem"))
                .arg("-inkey")
                .arg(cert("iis@hisp-b.example.key"))
                .arg("-certfile")
                .arg(cert("intermediate-b.pem"))
                .args(["-md", "sha256"]),
            Some(content.as_bytes()),
        )
        .stdout;
        assert!(
            text(&signed).contains("multipart/signed"),
            "{case}: OpenSSL did not make a detached signature"
        );
        let message = run_ok(
            &format!("openssl cms -encrypt {case}"),
            openssl()
                .args(["cms", "-encrypt", "-aes-128-cbc"])
                .args(["-from", "iis@hisp-b.example", "-to", "ehr@hisp-a.example"])
                .args(["-subject", "Processed:Direct message"])
                .arg(cert("ehr@hisp-a.example.pem")),
            Some(&signed),
        )
        .stdout;

        let report = open(
            &message,
            &OpenInputs {
                ours: &ours,
                trust: TrustInputs::offline(&anchors, &SystemClock),
                envelope: Envelope {
                    mail_from: Some(addr("iis@hisp-b.example")),
                    rcpt_to: vec![addr("ehr@hisp-a.example")],
                },
                cache: None,
            },
        )
        .unwrap_or_else(|e| panic!("{case}: open refused the OpenSSL MDN: {e}"));
        assert_eq!(report.wrapped, wrapped, "{case}");
        assert_eq!(report.from, "iis@hisp-b.example", "{case}");
        assert_eq!(
            notification_kind(&report.inner),
            Some(NotificationKind::Mdn),
            "{case}: never answer this with an MDN"
        );
        let r = mdn_of(&report.inner);
        assert_eq!(r.disposition.kind, DispositionKind::Processed, "{case}");
        assert_eq!(r.disposition.action_mode, "automatic-action", "{case}");
        assert_eq!(
            r.disposition.sending_mode, "mdn-sent-automatically",
            "{case}"
        );
        assert_eq!(
            r.original_message_id.as_deref(),
            Some("<vxu-ri@hisp-a.example>"),
            "{case}"
        );
        assert_eq!(
            r.final_recipient.as_deref(),
            Some("iis@hisp-b.example"),
            "{case}"
        );
        assert_eq!(
            r.reporting_ua.as_deref(),
            Some("hisp-b.example; DirectJavaRI"),
            "{case}"
        );
        assert!(!r.final_destination_extension, "{case}");
    }
}
