//! Interoperability with a real, independent S/MIME peer: the `openssl cms` command line
//! (OpenSSL 3.0). Messages sealed here must decrypt and verify in OpenSSL, and messages built by
//! OpenSSL must open here.
//!
//! These tests need the `openssl` binary. Without it they fail (they never pass silently):
//! install it with `apt-get install -y openssl`.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine;
use tempfile::TempDir;

mod common;
use common::{BIN, cert, open_as_iis, text};

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
    let out = run(cmd, stdin);
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("cannot spawn");
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        // Write from a thread so a large input cannot deadlock against a full stdout pipe.
        let writer = std::thread::spawn(move || pipe.write_all(&data));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        out
    } else {
        child.wait_with_output().unwrap()
    }
}

/// An HL7 v2 VXU whose control id makes it unique to one test case.
fn vxu(control_id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|EHR|HISPA|IIS|HISPB|20250101120000||VXU^V04^VXU_V04|{control_id}|P|2.5.1\r\
         PID|1||12345^^^EHR^MR||DOE^JANE||20200101|F\r\
         RXA|0|1|20250101||08^HEPB-PEDS^CVX|0.5|mL\r"
    )
    .into_bytes()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// `data` base64-encoded in CRLF lines of 76.
fn b64_lines(data: &[u8]) -> String {
    let s = b64(data);
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push_str("\r\n");
    }
    out
}

const CIPHERS: &[(&str, &str)] = &[
    ("aes128-cbc", "aes-128-cbc"),
    ("aes256-cbc", "aes-256-cbc"),
    ("aes128-gcm", "aes-128-gcm"),
    ("aes256-gcm", "aes-256-gcm"),
];
const TRANSPORTS: &[&str] = &["rsa-oaep-sha256", "rsa-oaep-sha1", "rsa-pkcs1"];
const DIGESTS: &[(&str, &str)] = &[
    ("sha256", "sha-256"),
    ("sha384", "sha-384"),
    ("sha512", "sha-512"),
];

/// `openssl cms -decrypt` of `sealed` with iis@hisp-b.example's key into `out`.
fn ossl_decrypt_as_iis(case: &str, sealed: &Path, out: &Path) {
    run_ok(
        &format!("openssl cms -decrypt {case}"),
        openssl()
            .args(["cms", "-decrypt", "-in"])
            .arg(sealed)
            .arg("-recip")
            .arg(cert("iis@hisp-b.example.pem"))
            .arg("-inkey")
            .arg(cert("iis@hisp-b.example.key"))
            .arg("-out")
            .arg(out),
        None,
    );
}

/// `direct-agent message seal` of `input` from ehr@hisp-a.example to iis@hisp-b.example into
/// `sealed`, with `extra` options.
fn seal_here(case: &str, input: &Path, sealed: &Path, extra: &[&str]) {
    run_ok(
        &format!("seal {case}"),
        Command::new(BIN)
            .args(["message", "seal", "--from", "ehr@hisp-a.example"])
            .args(["--to", "iis@hisp-b.example", "--in"])
            .arg(input)
            .arg("--out")
            .arg(sealed)
            .arg("--sign-key")
            .arg(cert("ehr@hisp-a.example.key"))
            .arg("--sign-cert")
            .arg(cert("ehr@hisp-a.example.fullchain.pem"))
            .arg("--recipient-cert")
            .arg(cert("iis@hisp-b.example.pem"))
            .args(extra),
        None,
    );
}

/// (a) Sealed here with every cipher x key transport x digest: OpenSSL decrypts with the
/// recipient key and verifies against root-a, and the verified content carries the payload.
#[test]
fn sealed_here_decrypts_and_verifies_in_openssl() {
    openssl();
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let mut checked = 0;
    for (cipher, ossl_cipher) in CIPHERS {
        for transport in TRANSPORTS {
            for (digest, micalg) in DIGESTS {
                let case = format!("{cipher}-{transport}-{digest}");
                let payload = vxu(&case);
                let input = d.join(format!("{case}.hl7"));
                fs::write(&input, &payload).unwrap();
                let sealed = d.join(format!("{case}.eml"));
                seal_here(
                    &case,
                    &input,
                    &sealed,
                    &[
                        "--cipher",
                        cipher,
                        "--key-transport",
                        transport,
                        "--digest",
                        digest,
                    ],
                );

                // The algorithms on the wire are the ones asked for.
                let printed = run_ok(
                    &format!("openssl cms -cmsout -print {case}"),
                    openssl()
                        .args(["cms", "-cmsout", "-print", "-in"])
                        .arg(&sealed),
                    None,
                );
                let printed = text(&printed.stdout);
                assert!(
                    printed.contains(&format!("algorithm: {ossl_cipher} (")),
                    "{case}: content cipher {ossl_cipher} not found in:\n{printed}"
                );
                match *transport {
                    "rsa-pkcs1" => assert!(
                        printed.contains("algorithm: rsaEncryption (1.2.840.113549.1.1.1)"),
                        "{case}: PKCS#1 v1.5 key transport expected:\n{printed}"
                    ),
                    "rsa-oaep-sha1" => assert!(
                        printed.contains("algorithm: rsaesOaep") && !printed.contains("sha256"),
                        "{case}: OAEP with default (SHA-1) parameters expected:\n{printed}"
                    ),
                    _ => assert!(
                        printed.contains("algorithm: rsaesOaep") && printed.contains("sha256"),
                        "{case}: OAEP with SHA-256 expected:\n{printed}"
                    ),
                }

                let decrypted = d.join(format!("{case}.signed"));
                ossl_decrypt_as_iis(&case, &sealed, &decrypted);
                let signed = text(&fs::read(&decrypted).unwrap());
                assert!(
                    signed.starts_with("Content-Type: multipart/signed;"),
                    "{case}: decrypted content is not multipart/signed:\n{signed}"
                );
                assert!(
                    signed.contains(&format!("micalg={micalg}")),
                    "{case}: micalg={micalg} missing:\n{}",
                    &signed[..signed.len().min(300)]
                );

                let verified = run_ok(
                    &format!("openssl cms -verify {case}"),
                    openssl()
                        .args(["cms", "-verify", "-in"])
                        .arg(&decrypted)
                        .arg("-CAfile")
                        .arg(cert("root-a.pem")),
                    None,
                );
                assert!(
                    text(&verified.stderr).contains("Verification successful"),
                    "{case}: {}",
                    text(&verified.stderr)
                );
                if checked == 0 {
                    // The signature announces the ciphers we open, as OpenSSL reads them, and
                    // not 3DES (which the opener refuses).
                    let sig = run_ok(
                        &format!("openssl cms -cmsout -print (signature) {case}"),
                        openssl()
                            .args(["cms", "-cmsout", "-print", "-in"])
                            .arg(&decrypted),
                        None,
                    );
                    let sig = text(&sig.stdout);
                    let caps = sig
                        .split("object: S/MIME Capabilities (1.2.840.113549.1.9.15)")
                        .nth(1)
                        .unwrap_or_else(|| panic!("{case}: no S/MIME Capabilities:\n{sig}"));
                    let caps = &caps[..caps.find("signatureAlgorithm").unwrap_or(caps.len())];
                    let listed: Vec<&str> = caps
                        .lines()
                        .filter_map(|l| l.split("OBJECT            :").nth(1))
                        .map(str::trim)
                        .collect();
                    assert_eq!(
                        listed,
                        [
                            "aes-256-cbc",
                            "aes-192-cbc",
                            "aes-128-cbc",
                            "aes-256-gcm",
                            "aes-128-gcm"
                        ],
                        "{case}:\n{caps}"
                    );
                }
                let content = text(&verified.stdout);
                assert!(
                    content.starts_with("Content-Type: message/rfc822"),
                    "{case}: the signed content is not the message/rfc822 wrapper:\n{content}"
                );
                assert!(content.contains("From: ehr@hisp-a.example\r\n"), "{case}");
                assert!(content.contains("To: iis@hisp-b.example\r\n"), "{case}");
                let flat: String = content
                    .chars()
                    .filter(|c| *c != '\r' && *c != '\n')
                    .collect();
                assert!(
                    flat.contains(&b64(&payload)),
                    "{case}: the HL7 payload (base64) is not in the verified content:\n{content}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 36);
}

/// A 3 MiB payload, sealed here (OpenSSL streams the encryption straight into the message's
/// base64, so the DER is indefinite-length with a chunked content): OpenSSL decrypts and
/// verifies it, and `message open` (decoding in place, decrypting the joined chunks) returns the
/// payload byte for byte, for CBC and GCM.
#[test]
fn large_payload_sealed_here_round_trips_through_openssl_and_back() {
    openssl();
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let payload: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let input = d.join("big.bin");
    fs::write(&input, &payload).unwrap();
    for cipher in ["aes128-cbc", "aes256-gcm"] {
        let sealed = d.join(format!("big-{cipher}.eml"));
        seal_here(
            &format!("3 MiB {cipher}"),
            &input,
            &sealed,
            &[
                "--cipher",
                cipher,
                "--content-type",
                "application/octet-stream",
            ],
        );
        let message = fs::read(&sealed).unwrap();
        assert!(
            message.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r'),
            "{cipher}: every line of the sealed message ends in CRLF"
        );

        let decrypted = d.join(format!("big-{cipher}.signed"));
        ossl_decrypt_as_iis(&format!("3 MiB {cipher}"), &sealed, &decrypted);
        let verified = run_ok(
            &format!("openssl cms -verify 3 MiB {cipher}"),
            openssl()
                .args(["cms", "-verify", "-in"])
                .arg(&decrypted)
                .arg("-CAfile")
                .arg(cert("root-a.pem"))
                .arg("-out")
                .arg(d.join("verified.eml")),
            None,
        );
        assert!(
            text(&verified.stderr).contains("Verification successful"),
            "{cipher}: {}",
            text(&verified.stderr)
        );

        let out_dir = d.join(format!("out-{cipher}"));
        let report = open_ok(cipher, &sealed, &out_dir);
        assert_eq!(report["cipher"], cipher);
        let files = report["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{cipher}: {report}");
        assert!(
            fs::read(files[0].as_str().unwrap()).unwrap() == payload,
            "{cipher}: the 3 MiB payload differs after the round trip"
        );
    }
}

/// How the inner message carries the HL7 payload.
#[derive(Clone, Copy, Debug)]
enum Attach {
    /// `application/hl7-v2` attachment.
    Hl7v2Type,
    /// `text/plain` named `*.hl7`.
    TextPlainHl7,
}

/// An inner RFC 5322 message from ehr@hisp-a.example to iis@hisp-b.example, multipart/mixed with
/// a note and the HL7 payload.
fn inner_message(message_id: &str, from: &str, payload: &[u8], attach: Attach) -> Vec<u8> {
    let part_type = match attach {
        Attach::Hl7v2Type => "application/hl7-v2; name=\"vxu.hl7\"",
        Attach::TextPlainHl7 => "text/plain; charset=us-ascii; name=\"vxu.hl7\"",
    };
    format!(
        "From: {from}\r\n\
         To: iis@hisp-b.example\r\n\
         Subject: immunization update\r\n\
         Date: Wed, 01 Jan 2025 12:00:00 +0000\r\n\
         Message-ID: <{message_id}@hisp-a.example>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"INTEROP-BOUNDARY\"\r\n\
         \r\n\
         --INTEROP-BOUNDARY\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         An HL7 v2 VXU is attached.\r\n\
         --INTEROP-BOUNDARY\r\n\
         Content-Type: {part_type}\r\n\
         Content-Disposition: attachment; filename=\"vxu.hl7\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {}\
         --INTEROP-BOUNDARY--\r\n",
        b64_lines(payload)
    )
    .into_bytes()
}

fn wrap_rfc822(inner: &[u8]) -> Vec<u8> {
    let mut v = b"Content-Type: message/rfc822\r\n\r\n".to_vec();
    v.extend_from_slice(inner);
    v
}

/// `openssl cms -sign` of `content` as `stem` (with its intermediate), S/MIME output.
fn ossl_sign(content: &[u8], stem: &str, intermediate: &str, md: &str, opaque: bool) -> Vec<u8> {
    let mut cmd = openssl();
    cmd.args(["cms", "-sign", "-signer"])
        .arg(cert(&format!("{stem}.pem")))
        .arg("-inkey")
        .arg(cert(&format!("{stem}.key")))
        .arg("-certfile")
        .arg(cert(intermediate))
        .args(["-md", md]);
    if opaque {
        cmd.arg("-nodetach");
    }
    run_ok(
        &format!("openssl cms -sign -md {md}"),
        &mut cmd,
        Some(content),
    )
    .stdout
}

/// How OpenSSL wraps the content-encryption key for the recipient.
#[derive(Clone, Copy, Debug)]
enum Kt {
    Pkcs1,
    OaepSha256,
}

/// `openssl cms -encrypt` of `content` to iis@hisp-b.example with outer From/To/Subject.
fn ossl_encrypt(content: &[u8], from: &str, cipher: &str, kt: Kt) -> Vec<u8> {
    let mut cmd = openssl();
    cmd.args(["cms", "-encrypt", cipher])
        .args(["-from", from, "-to", "iis@hisp-b.example"])
        .args(["-subject", "immunization update"]);
    match kt {
        Kt::Pkcs1 => {
            cmd.arg(cert("iis@hisp-b.example.pem"));
        }
        Kt::OaepSha256 => {
            cmd.arg("-recip")
                .arg(cert("iis@hisp-b.example.pem"))
                .args(["-keyopt", "rsa_padding_mode:oaep"])
                .args(["-keyopt", "rsa_oaep_md:sha256"]);
        }
    }
    run_ok(
        &format!("openssl cms -encrypt {cipher}"),
        &mut cmd,
        Some(content),
    )
    .stdout
}

/// `direct-agent message open --json` as iis@hisp-b.example trusting root-a.
fn open_here(message: &Path, out_dir: &Path) -> Output {
    run(
        open_as_iis(
            message,
            &["root-a.pem"],
            &["intermediate-a.crl.pem", "root-a.crl.pem"],
        )
        .arg("--json")
        .arg("--out-dir")
        .arg(out_dir),
        None,
    )
}

/// [`open_here`], which must succeed (exit 0); its JSON report.
fn open_ok(case: &str, message: &Path, out_dir: &Path) -> serde_json::Value {
    let out = open_here(message, out_dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{case}: open refused it: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{case}: {e}: {}", text(&out.stdout)))
}

/// (b) Built by OpenSSL (wrapped or not; detached or opaque signature; AES-CBC/GCM of every key
/// size OpenSSL offers here; PKCS#1 v1.5 or OAEP-SHA-256), opened here with the payload intact.
#[test]
fn built_by_openssl_opens_here() {
    openssl();
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let encryptions: &[(&str, Kt, &str, &str)] = &[
        ("-aes-128-cbc", Kt::Pkcs1, "aes128-cbc", "rsa-pkcs1"),
        (
            "-aes-128-cbc",
            Kt::OaepSha256,
            "aes128-cbc",
            "rsa-oaep-sha256",
        ),
        ("-aes-192-cbc", Kt::Pkcs1, "aes192-cbc", "rsa-pkcs1"),
        (
            "-aes-256-cbc",
            Kt::OaepSha256,
            "aes256-cbc",
            "rsa-oaep-sha256",
        ),
        (
            "-aes-128-gcm",
            Kt::OaepSha256,
            "aes128-gcm",
            "rsa-oaep-sha256",
        ),
        ("-aes-256-gcm", Kt::Pkcs1, "aes256-gcm", "rsa-pkcs1"),
        (
            "-aes-256-gcm",
            Kt::OaepSha256,
            "aes256-gcm",
            "rsa-oaep-sha256",
        ),
    ];
    let mut n = 0;
    for wrapped in [true, false] {
        for opaque in [false, true] {
            for attach in [Attach::Hl7v2Type, Attach::TextPlainHl7] {
                for (cipher, kt, cipher_name, kt_name) in encryptions {
                    n += 1;
                    let case = format!(
                        "{n:02}-{}-{}-{attach:?}{cipher}-{kt:?}",
                        if wrapped { "wrapped" } else { "bare" },
                        if opaque { "opaque" } else { "detached" },
                    );
                    let payload = vxu(&case);
                    let inner =
                        inner_message(&format!("case{n}"), "ehr@hisp-a.example", &payload, attach);
                    let content = if wrapped { wrap_rfc822(&inner) } else { inner };
                    let signed = ossl_sign(
                        &content,
                        "ehr@hisp-a.example",
                        "intermediate-a.pem",
                        "sha256",
                        opaque,
                    );
                    let message = ossl_encrypt(&signed, "ehr@hisp-a.example", cipher, *kt);
                    let msg_path = d.join(format!("{case}.eml"));
                    fs::write(&msg_path, &message).unwrap();
                    let out_dir = d.join(&case);
                    let report = open_ok(&case, &msg_path, &out_dir);
                    assert_eq!(report["ok"], true, "{case}: {report}");
                    assert_eq!(report["from"], "ehr@hisp-a.example", "{case}");
                    assert_eq!(report["wrapped"], wrapped, "{case}");
                    assert_eq!(report["cipher"], *cipher_name, "{case}");
                    assert_eq!(report["key_transport"], *kt_name, "{case}");
                    assert_eq!(report["signer"]["digest"], "sha256", "{case}");
                    assert_eq!(report["signer"]["binding"], "address", "{case}");
                    assert_eq!(
                        report["message_id"],
                        format!("<case{n}@hisp-a.example>"),
                        "{case}"
                    );
                    let payloads = report["payloads"].as_array().unwrap();
                    assert_eq!(payloads.len(), 1, "{case}: {report}");
                    assert_eq!(payloads[0]["kind"], "hl7v2", "{case}: {report}");
                    let files = report["files"].as_array().unwrap();
                    assert_eq!(files.len(), 1, "{case}: {report}");
                    let got = fs::read(files[0].as_str().unwrap()).unwrap();
                    assert!(
                        got == payload,
                        "{case}: payload differs:\n got {:?}\nwant {:?}",
                        text(&got),
                        text(&payload)
                    );
                }
            }
        }
    }
}

/// OpenSSL peers stream large messages (`-stream`): indefinite-length BER whose encrypted content
/// is a constructed octet string of many chunks. Such messages open here (the chunks are joined in
/// place for decryption), and a flipped ciphertext bit is still caught, for CBC and for GCM.
#[test]
fn openssl_streamed_ber_opens_here_and_tampering_is_caught() {
    openssl();
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    // ~300 KB so the content spans many of OpenSSL's streaming chunks.
    let mut payload = Vec::new();
    for i in 0..2500 {
        payload.extend_from_slice(&vxu(&format!("stream{i}")));
    }
    for (cipher, name) in [
        ("-aes-128-cbc", "aes128-cbc"),
        ("-aes-256-gcm", "aes256-gcm"),
    ] {
        let inner = inner_message(
            "streamed",
            "ehr@hisp-a.example",
            &payload,
            Attach::Hl7v2Type,
        );
        let signed = ossl_sign(
            &wrap_rfc822(&inner),
            "ehr@hisp-a.example",
            "intermediate-a.pem",
            "sha256",
            false,
        );
        let mut cmd = openssl();
        cmd.args(["cms", "-encrypt", "-stream", cipher])
            .args(["-from", "ehr@hisp-a.example", "-to", "iis@hisp-b.example"])
            .args(["-subject", "immunization update"])
            .arg(cert("iis@hisp-b.example.pem"));
        let message = run_ok("openssl cms -encrypt -stream", &mut cmd, Some(&signed)).stdout;
        // The test only means something if OpenSSL really streamed: check the DER is indefinite.
        let body_at = message
            .windows(4)
            .position(|w| w == b"\r\n\r\n" || &w[..2] == b"\n\n")
            .expect("header block");
        let body: Vec<u8> = message[body_at..]
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(&body)
            .unwrap();
        assert_eq!(
            &der[..2],
            &[0x30, 0x80],
            "{cipher}: OpenSSL did not stream BER"
        );

        let msg_path = d.join(format!("stream{cipher}.eml"));
        fs::write(&msg_path, &message).unwrap();
        let out_dir = d.join(format!("out{cipher}"));
        let report = open_ok(cipher, &msg_path, &out_dir);
        assert_eq!(report["cipher"], name, "{cipher}");
        let files = report["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{cipher}: {report}");
        assert!(
            fs::read(files[0].as_str().unwrap()).unwrap() == payload,
            "{cipher}: the payload differs"
        );

        // Flip one bit in the middle of the ciphertext (well inside the chunked content).
        let mut bad = der.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x01;
        let mut tampered = message[..body_at].to_vec();
        tampered.extend_from_slice(b"\r\n\r\n");
        tampered.extend_from_slice(b64_lines(&bad).as_bytes());
        let bad_path = d.join(format!("tampered{cipher}.eml"));
        fs::write(&bad_path, &tampered).unwrap();
        let out = open_here(&bad_path, &d.join(format!("bad{cipher}")));
        let code = out.status.code();
        // CBC: the flipped block garbles the signed content (signature fails, 4) or its padding
        // (3); GCM: the tag check fails (3). Never accepted.
        assert!(
            matches!(code, Some(3) | Some(4) | Some(6)),
            "{cipher}: tampered message got {code:?}: {}",
            text(&out.stderr)
        );
        if cipher.ends_with("gcm") {
            assert_eq!(code, Some(3), "{cipher}: {}", text(&out.stderr));
        }
    }
}

/// (c) A SHA-1 signature made by OpenSSL is refused with exit 4, naming sha1.
#[test]
fn openssl_sha1_signature_is_refused() {
    openssl();
    let dir = TempDir::new().unwrap();
    for opaque in [false, true] {
        let payload = vxu("SHA1");
        let content = wrap_rfc822(&inner_message(
            "sha1",
            "ehr@hisp-a.example",
            &payload,
            Attach::Hl7v2Type,
        ));
        let signed = ossl_sign(
            &content,
            "ehr@hisp-a.example",
            "intermediate-a.pem",
            "sha1",
            opaque,
        );
        let message = ossl_encrypt(&signed, "ehr@hisp-a.example", "-aes-128-cbc", Kt::Pkcs1);
        let path = dir.path().join(format!("sha1-{opaque}.eml"));
        fs::write(&path, message).unwrap();
        let out_dir = dir.path().join(format!("out-{opaque}"));
        let out = open_here(&path, &out_dir);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "opaque={opaque}: {stderr}");
        assert!(stderr.contains("sha1"), "reason must name sha1: {stderr}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["kind"], "signature");
        assert!(
            !out_dir.exists(),
            "nothing may be written for a refused message"
        );
    }
}

/// (c) 3DES content encryption made by OpenSSL is refused with exit 3.
#[test]
fn openssl_3des_is_refused() {
    openssl();
    let dir = TempDir::new().unwrap();
    let payload = vxu("DES3");
    let content = wrap_rfc822(&inner_message(
        "des3",
        "ehr@hisp-a.example",
        &payload,
        Attach::Hl7v2Type,
    ));
    let signed = ossl_sign(
        &content,
        "ehr@hisp-a.example",
        "intermediate-a.pem",
        "sha256",
        false,
    );
    for kt in [Kt::Pkcs1, Kt::OaepSha256] {
        let message = ossl_encrypt(&signed, "ehr@hisp-a.example", "-des3", kt);
        let path = dir.path().join(format!("des3-{kt:?}.eml"));
        fs::write(&path, message).unwrap();
        let out_dir = dir.path().join(format!("out-{kt:?}"));
        let out = open_here(&path, &out_dir);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{kt:?}: {stderr}");
        assert!(
            stderr.contains("des-ede3-cbc") && stderr.contains("not accept"),
            "reason must name 3DES and say it is refused: {stderr}"
        );
        assert!(!out_dir.exists());
    }
}
