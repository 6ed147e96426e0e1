//! `direct-agent message seal` and `direct-agent message open`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use openssl::x509::{X509, X509Crl};

use super::EXIT_USAGE;
use super::certs::EXIT_UNTRUSTED;
use crate::address::DirectAddress;
use crate::agent::Context;
use crate::clock::{Clock, FixedClock, SystemClock};
use crate::credential::{Credential, is_pkcs12, load_certificates};
use crate::domain::LocalDomain;
use crate::message::{Envelope, OpenInputs, SealOptions, open_owned, seal_owned};
use crate::smime::algorithms::{ContentCipher, Digest, KeyTransport};
use crate::store::Direction;
use crate::trust::TrustInputs;

#[derive(Subcommand, Debug)]
pub enum MessageCommand {
    /// Sign, wrap and encrypt a payload into a Direct message.
    Seal(SealArgs),
    /// Decrypt, verify and unwrap a Direct message; write its payloads.
    Open(OpenArgs),
}

#[derive(Args, Debug)]
pub struct SealArgs {
    /// Sender Direct address.
    #[arg(long)]
    from: String,
    /// Recipient Direct address (repeatable).
    #[arg(long, required = true)]
    to: Vec<String>,
    /// Payload file (HL7 v2 by default).
    #[arg(long = "in")]
    input: PathBuf,
    /// Where to write the sealed message (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Signing key: PEM (PKCS#8 or PKCS#1) or PKCS#12 (.p12/.pfx). Without it, the configured
    /// credential for --from signs and recipient certificates are validated against the domain's
    /// outgoing anchors.
    #[arg(long)]
    sign_key: Option<PathBuf>,
    /// Signing certificate followed by its chain (PEM); optional with PKCS#12.
    #[arg(long)]
    sign_cert: Option<PathBuf>,
    /// Environment variable holding the PKCS#12 password.
    #[arg(long)]
    key_password_env: Option<String>,
    /// Recipient encryption certificate (repeatable; one per recipient certificate).
    #[arg(long)]
    recipient_cert: Vec<PathBuf>,
    /// aes128-cbc (default), aes256-cbc, aes128-gcm, aes256-gcm.
    #[arg(long, default_value = "aes128-cbc")]
    cipher: String,
    /// sha256 (default), sha384, sha512.
    #[arg(long, default_value = "sha256")]
    digest: String,
    /// rsa-oaep-sha256 (default), rsa-oaep-sha1, rsa-pkcs1.
    #[arg(long, default_value = "rsa-oaep-sha256")]
    key_transport: String,
    /// Ask for processed and dispatched MDNs (timely and reliable delivery).
    #[arg(long)]
    request_mdn: bool,
    /// Send the payload as a plain attachment of this MIME type instead of Direct Context HL7 v2.
    #[arg(long)]
    content_type: Option<String>,
    /// Attachment file name (default: the input's file name).
    #[arg(long)]
    filename: Option<String>,
    /// Subject (must not contain PHI).
    #[arg(long, default_value = "Direct message")]
    subject: String,
}

#[derive(Args, Debug)]
pub struct OpenArgs {
    /// The received message (RFC 5322 file).
    #[arg(long = "in")]
    input: PathBuf,
    /// Directory for payload files (created if missing).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Our decryption key (repeatable): PEM, paired in order with --cert, or PKCS#12. Without
    /// it, the configured domains' keys, incoming anchors and revocation policy are used.
    #[arg(long = "key")]
    keys: Vec<PathBuf>,
    /// Certificate for each PEM --key, in the same order.
    #[arg(long = "cert")]
    certs: Vec<PathBuf>,
    /// Environment variable holding PKCS#12 passwords.
    #[arg(long)]
    key_password_env: Option<String>,
    /// Trust anchor certificate file (repeatable; PEM may hold several). Required with --key.
    #[arg(long = "anchor")]
    anchors: Vec<PathBuf>,
    /// Extra intermediate certificates for path building (repeatable).
    #[arg(long = "intermediate")]
    intermediates: Vec<PathBuf>,
    /// CRL file, PEM or DER (repeatable).
    #[arg(long = "crl")]
    crls: Vec<PathBuf>,
    /// SMTP MAIL FROM the message arrived with, for the header tamper check.
    #[arg(long)]
    mail_from: Option<String>,
    /// SMTP RCPT TO (repeatable), for the header tamper check.
    #[arg(long)]
    rcpt_to: Vec<String>,
    /// Validate as of this Unix time instead of now (re-checking an old message).
    #[arg(long)]
    at: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Run a `message` command. Without `--sign-key` (seal) or `--key` (open) the keys, anchors and
/// revocation policy come from the configuration (`config`, `DIRECT_AGENT_CONFIG` or the default).
pub fn run(cmd: MessageCommand, config: Option<&Path>) -> i32 {
    match cmd {
        MessageCommand::Seal(a) => run_seal(a, config),
        MessageCommand::Open(a) => run_open(a, config),
    }
}

fn usage(msg: impl std::fmt::Display) -> i32 {
    eprintln!("error: {msg}");
    EXIT_USAGE
}

fn run_seal(a: SealArgs, config: Option<&Path>) -> i32 {
    let from = match DirectAddress::parse(&a.from) {
        Ok(f) => f,
        Err(e) => return usage(format!("--from: {e}")),
    };
    let mut to = Vec::new();
    for t in &a.to {
        match DirectAddress::parse(t) {
            Ok(x) => to.push(x),
            Err(e) => return usage(format!("--to: {e}")),
        }
    }
    let Some(cipher) = ContentCipher::parse(&a.cipher) else {
        return usage(format!(
            "--cipher {}: choose aes128-cbc, aes192-cbc, aes256-cbc, aes128-gcm, aes192-gcm or aes256-gcm",
            a.cipher
        ));
    };
    let Some(digest) = Digest::parse(&a.digest) else {
        return usage(format!(
            "--digest {}: choose sha256, sha384 or sha512",
            a.digest
        ));
    };
    let Some(key_transport) = KeyTransport::parse(&a.key_transport) else {
        return usage(format!(
            "--key-transport {}: choose rsa-oaep-sha256, rsa-oaep-sha1 or rsa-pkcs1",
            a.key_transport
        ));
    };
    if a.recipient_cert.is_empty() && a.sign_key.is_some() {
        return usage(
            "no --recipient-cert given: with --sign-key pass the recipients' encryption certificates, or omit --sign-key to use the configuration, which discovers them (DNS CERT, LDAP)",
        );
    }
    let mut recipients = Vec::new();
    let mut offered = Vec::new();
    for p in &a.recipient_cert {
        match load_certificates(p) {
            Ok(mut c) => {
                recipients.push(c.remove(0));
                offered.extend(c);
            }
            Err(e) => return usage(e),
        }
    }
    let signer = match &a.sign_key {
        Some(key) => {
            match Credential::load(key, a.sign_cert.as_deref(), a.key_password_env.as_deref()) {
                Ok(c) => c,
                Err(e) => return usage(e),
            }
        }
        None => match configured_signer(&from, &to, &mut recipients, &offered, config) {
            Ok(c) => c,
            Err((code, e)) => {
                eprintln!("error: {e}");
                return code;
            }
        },
    };
    let payload = match std::fs::read(&a.input) {
        Ok(p) => p,
        Err(e) => return usage(format!("cannot read {}: {e}", a.input.display())),
    };
    let filename = a.filename.clone().unwrap_or_else(|| {
        a.input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "message.hl7".into())
    });
    let opts = SealOptions {
        cipher,
        digest,
        key_transport,
        request_mdn: a.request_mdn,
        content_type: a.content_type.clone(),
        filename,
        subject: a.subject.clone(),
        extra_headers: Vec::new(),
    };
    let sealed = match seal_owned(
        &from,
        &to,
        payload,
        &signer,
        &recipients,
        &opts,
        &SystemClock,
    ) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let written = match &a.out {
        Some(path) => write_atomic(path, &sealed.message),
        None => std::io::stdout().write_all(&sealed.message),
    };
    if let Err(e) = written {
        return usage(format!("cannot write the sealed message: {e}"));
    }
    eprintln!(
        "sealed {} ({} bytes)",
        sealed.message_id,
        sealed.message.len()
    );
    0
}

/// Configuration mode of `seal`: see [`Context::signer_and_recipients`]. Errors carry their
/// exit code: 2 configuration, 5 untrusted or undiscoverable recipient.
fn configured_signer(
    from: &DirectAddress,
    to: &[DirectAddress],
    recipients: &mut Vec<X509>,
    offered: &[X509],
    config: Option<&Path>,
) -> Result<Credential, (i32, String)> {
    let ctx = Context::load(config).map_err(|e| (EXIT_USAGE, e))?;
    let mut discovered = Vec::new();
    let signer = ctx
        .signer_and_recipients(from, to, recipients, offered, &mut discovered)
        .map_err(|e| match e {
            crate::agent::SealRefusal::Configuration(m) => (EXIT_USAGE, m),
            crate::agent::SealRefusal::Untrusted(m) => (EXIT_UNTRUSTED, m),
        })?;
    for (rcpt, n) in discovered {
        eprintln!("discovered {n} certificate(s) for {rcpt}");
    }
    Ok(signer)
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("partial");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

fn load_crl(path: &Path) -> Result<Vec<X509Crl>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let crl = X509Crl::from_pem(&bytes)
        .or_else(|_| X509Crl::from_der(&bytes))
        .map_err(|_| format!("{} is not a PEM or DER CRL", path.display()))?;
    Ok(vec![crl])
}

fn load_all_certs(paths: &[PathBuf]) -> Result<Vec<X509>, String> {
    let mut out = Vec::new();
    for p in paths {
        out.extend(load_certificates(p).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn load_credentials(a: &OpenArgs) -> Result<Vec<Credential>, String> {
    let mut certs = a.certs.iter();
    let mut out = Vec::new();
    for key in &a.keys {
        let cert = if is_pkcs12(key) {
            None
        } else {
            Some(certs.next().ok_or_else(|| {
                format!(
                    "--key {} has no matching --cert (give them in pairs)",
                    key.display()
                )
            })?)
        };
        out.push(
            Credential::load(
                key,
                cert.map(|c| c.as_path()),
                a.key_password_env.as_deref(),
            )
            .map_err(|e| e.to_string())?,
        );
    }
    Ok(out)
}

fn run_open(a: OpenArgs, config: Option<&Path>) -> i32 {
    let mut anchors = match load_all_certs(&a.anchors) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let mut intermediates = match load_all_certs(&a.intermediates) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let mut crls = Vec::new();
    for p in &a.crls {
        match load_crl(p) {
            Ok(c) => crls.extend(c),
            Err(e) => return usage(e),
        }
    }
    let mut envelope = Envelope::default();
    if let Some(m) = &a.mail_from {
        match DirectAddress::parse(m) {
            Ok(x) => envelope.mail_from = Some(x),
            Err(e) => return usage(format!("--mail-from: {e}")),
        }
    }
    for r in &a.rcpt_to {
        match DirectAddress::parse(r) {
            Ok(x) => envelope.rcpt_to.push(x),
            Err(e) => return usage(format!("--rcpt-to: {e}")),
        }
    }
    let raw = match std::fs::read(&a.input) {
        Ok(r) => r,
        Err(e) => return usage(format!("cannot read {}: {e}", a.input.display())),
    };
    let clock: Box<dyn Clock> = match a.at {
        Some(t) => Box::new(FixedClock::at_unix(t)),
        None => Box::new(SystemClock),
    };
    // Flags mode (--key/--anchor, as before) or configuration mode.
    let ctx;
    let ours;
    let mut domain = None;
    if a.keys.is_empty() {
        ctx = match Context::load(config) {
            Ok(c) => c,
            Err(e) => return usage(e),
        };
        let recipients = if envelope.rcpt_to.is_empty() {
            crate::agent::inbound::outer_recipients(&raw)
        } else {
            envelope.rcpt_to.clone()
        };
        let served: Vec<&LocalDomain> = ctx
            .domains
            .iter()
            .filter(|d| recipients.iter().any(|r| r.in_domain(&d.name)))
            .collect();
        let Some(first) = served.first() else {
            return usage(format!(
                "the message is addressed to {} and none of them is in a configured domain",
                recipients
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        for d in &served {
            match ctx.anchors(&d.name, Direction::Incoming) {
                Ok(x) => anchors.extend(x),
                Err(e) => return usage(e),
            }
            intermediates.extend(d.intermediates.iter().cloned());
        }
        ours = ctx
            .domains
            .iter()
            .flat_map(|d| d.decryption_credentials().cloned())
            .collect::<Vec<_>>();
        domain = Some((&ctx, *first));
    } else {
        if anchors.is_empty() {
            return usage(
                "--key needs at least one --anchor (or omit --key to use the configuration)",
            );
        }
        ours = match load_credentials(&a) {
            Ok(c) => c,
            Err(e) => return usage(e),
        };
    }
    let trust = match domain {
        Some((ctx, d)) => ctx.trust_inputs(d, &anchors, &intermediates, &crls, clock.as_ref()),
        None => TrustInputs {
            intermediates: &intermediates,
            crls: &crls,
            ..TrustInputs::offline(&anchors, clock.as_ref())
        },
    };
    let inputs = OpenInputs {
        ours: &ours,
        trust,
        envelope,
        cache: None,
    };
    let report = match open_owned(raw, &inputs) {
        Ok(r) => r,
        Err(e) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "kind": e.kind(), "exit_code": e.exit_code(), "reason": e.to_string()})
                );
            }
            eprintln!("refused: {e}");
            return e.exit_code();
        }
    };
    let mut written = Vec::new();
    if let Some(dir) = &a.out_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return usage(format!("cannot create {}: {e}", dir.display()));
        }
        for (i, p) in report.payloads.iter().enumerate() {
            let path = dir.join(p.safe_filename(i + 1));
            if let Err(e) = write_atomic(&path, &p.data) {
                return usage(format!("cannot write {}: {e}", path.display()));
            }
            written.push(path.display().to_string());
        }
    }
    if a.json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        v["ok"] = serde_json::Value::Bool(true);
        v["files"] = serde_json::json!(written);
        println!("{v}");
    } else {
        print_report(&report, &written);
    }
    0
}

fn print_report(r: &crate::message::OpenReport, files: &[String]) {
    println!(
        "accepted    {}",
        r.message_id.as_deref().unwrap_or("(no Message-ID)")
    );
    println!("from        {}", r.from);
    println!("to          {}", r.to.join(", "));
    println!(
        "signer      {} [{:?}-bound]",
        r.signer.subject, r.signer.binding
    );
    println!("fingerprint {}", r.signer.fingerprint_sha256);
    println!("chain       {}", r.signer.chain.join(" <- "));
    println!("digest      {}", r.signer.digest);
    println!("cipher      {}", r.cipher);
    println!(
        "key         {}",
        r.key_transport
            .as_ref()
            .map_or("key agreement".to_string(), |k| k.name())
    );
    println!("decrypted   with {}", r.decrypted_with);
    println!(
        "wrapped     {}",
        if r.wrapped {
            "yes (message/rfc822)"
        } else {
            "no"
        }
    );
    if let Some(o) = &r.disposition_notification_options {
        println!("mdn         requested: {o}");
    }
    for (i, p) in r.payloads.iter().enumerate() {
        println!(
            "payload {}   {:?} {} ({} bytes){}",
            i + 1,
            p.kind,
            p.content_type,
            p.size,
            files.get(i).map(|f| format!(" -> {f}")).unwrap_or_default()
        );
    }
}
