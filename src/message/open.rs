//! Opening: outer message -> decrypt -> verify every signer -> unwrap message/rfc822 -> header
//! tamper check -> signer trust and binding to the sender -> payloads.
//!
//! Each refusal is an [`OpenError`] whose kind maps to the documented exit code.

use std::borrow::Cow;

use openssl::x509::X509;

use crate::address::{DirectAddress, parse_list};
use crate::credential::Credential;
use crate::mime::entity::Entity;
use crate::mime::payload::{self, Payload};
use crate::smime::algorithms::{ContentCipher, Digest, KeyTransport};
use crate::smime::{self, SignerReport, SmimeError};
use crate::trust::{self, Binding, TrustInputs, ValidationCache};

/// The SMTP envelope a message arrived with, when known.
#[derive(Clone, Debug, Default)]
pub struct Envelope {
    pub mail_from: Option<DirectAddress>,
    pub rcpt_to: Vec<DirectAddress>,
}

/// What opening needs besides the message.
pub struct OpenInputs<'a> {
    /// Our decryption credentials.
    pub ours: &'a [Credential],
    /// Anchors, extra intermediates, CRLs and the clock for signer trust.
    pub trust: TrustInputs<'a>,
    pub envelope: Envelope,
    /// Remembered validations (a long-running agent keeps one); `None` validates every time.
    pub cache: Option<&'a ValidationCache>,
}

/// Why a message was refused, by class. The classes are the exit codes of `message open`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Not a readable Direct message (exit 6).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Cannot decrypt: not encrypted, not for us, corrupt, weak cipher (exit 3).
    #[error("cannot decrypt: {0}")]
    Decrypt(String),
    /// Signature invalid, missing, or made with a refused digest (exit 4).
    #[error("signature invalid: {0}")]
    Signature(String),
    /// Signer not trusted or not bound to the sender; protected headers do not match (exit 5).
    #[error("not trusted: {0}")]
    Trust(String),
}

impl OpenError {
    /// The `message open` exit code for this refusal.
    pub fn exit_code(&self) -> i32 {
        match self {
            OpenError::Decrypt(_) => 3,
            OpenError::Signature(_) => 4,
            OpenError::Trust(_) => 5,
            OpenError::Malformed(_) => 6,
        }
    }

    /// A stable machine-readable name for the class.
    pub fn kind(&self) -> &'static str {
        match self {
            OpenError::Decrypt(_) => "decrypt",
            OpenError::Signature(_) => "signature",
            OpenError::Trust(_) => "trust",
            OpenError::Malformed(_) => "malformed",
        }
    }
}

/// The signer that was accepted.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AcceptedSigner {
    pub subject: String,
    pub fingerprint_sha256: String,
    pub binding: Binding,
    pub digest: Digest,
    pub chain: Vec<String>,
}

/// Everything learnt from an accepted message. Holds no payload bytes in its serialised form.
#[derive(Debug, serde::Serialize)]
pub struct OpenReport {
    pub message_id: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    pub wrapped: bool,
    pub cipher: ContentCipher,
    pub key_transport: Option<KeyTransport>,
    pub decrypted_with: String,
    pub signer: AcceptedSigner,
    pub signers: Vec<SignerReport>,
    pub disposition_notification_to: Option<String>,
    pub disposition_notification_options: Option<String>,
    pub payloads: Vec<Payload>,
    /// The inner RFC 5322 message (for MDNs, sinks and storage); never serialised.
    #[serde(skip)]
    pub inner: Vec<u8>,
}

fn smime_decrypt_error(e: SmimeError) -> OpenError {
    match e {
        SmimeError::Malformed { .. } => OpenError::Malformed(e.to_string()),
        _ => OpenError::Decrypt(e.to_string()),
    }
}

/// Open a received Direct message.
pub fn open(raw: &[u8], inputs: &OpenInputs<'_>) -> Result<OpenReport, OpenError> {
    open_message(Cow::Borrowed(raw), inputs)
}

/// [`open()`], taking the message: its buffer is decoded in place and freed once decrypted, so a
/// large message is not held three times over (wire text, DER, plaintext). For callers that do
/// not need the raw message afterwards, such as `message open` on a file.
pub fn open_owned(raw: Vec<u8>, inputs: &OpenInputs<'_>) -> Result<OpenReport, OpenError> {
    open_message(Cow::Owned(raw), inputs)
}

fn open_message(raw: Cow<'_, [u8]>, inputs: &OpenInputs<'_>) -> Result<OpenReport, OpenError> {
    if raw.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(OpenError::Malformed("the message is empty".into()));
    }
    let outer = Entity::parse(&raw);
    if outer.headers().is_empty() {
        return Err(OpenError::Malformed(
            "no RFC 5322 header block: this is not an e-mail message".into(),
        ));
    }
    let ct = outer.content_type();
    if ct.is("multipart/signed") {
        return Err(OpenError::Decrypt(
            "the message is signed but not encrypted; Direct requires an application/pkcs7-mime enveloped-data layer".into(),
        ));
    }
    if !(ct.is("application/pkcs7-mime") || ct.is("application/x-pkcs7-mime")) {
        return Err(OpenError::Decrypt(format!(
            "the message is not encrypted: Content-Type is {}, expected application/pkcs7-mime; smime-type=enveloped-data",
            if ct.mime.is_empty() {
                "missing"
            } else {
                &ct.mime
            }
        )));
    }
    if ct
        .param("smime-type")
        .is_some_and(|t| t.eq_ignore_ascii_case("signed-data"))
    {
        return Err(OpenError::Decrypt(
            "the message is signed-data without encryption; Direct requires enveloped-data".into(),
        ));
    }
    // Keep only the header block of the outer message; its base64 body becomes the DER.
    let head_len = raw.len() - outer.body.len();
    let what = "envelope (application/pkcs7-mime)";
    let (head, cms): (Cow<'_, [u8]>, Vec<u8>) = match raw {
        Cow::Borrowed(r) => (
            Cow::Borrowed(&r[..head_len]),
            smime::verify::decode_base64(&r[head_len..], what)
                .map_err(|e| OpenError::Malformed(e.to_string()))?,
        ),
        Cow::Owned(mut r) => {
            let head = r[..head_len].to_vec();
            smime::verify::decode_base64_in_place(&mut r, head_len, what)
                .map_err(|e| OpenError::Malformed(e.to_string()))?;
            (Cow::Owned(head), r)
        }
    };
    let outer = Entity::parse(&head);
    if cms.is_empty() {
        return Err(OpenError::Malformed("the smime.p7m body is empty".into()));
    }
    let decrypted = smime::decrypt(cms, inputs.ours).map_err(smime_decrypt_error)?;
    let smime::Decrypted {
        content,
        cipher,
        key_transport,
        recipient,
    } = decrypted;
    let mut verified = smime::verify(content).map_err(|e| match e {
        SmimeError::Unsigned(m) => OpenError::Signature(format!("missing signature: {m}")),
        other => OpenError::Signature(other.to_string()),
    })?;

    // Signatures first: at least one must verify with an accepted digest.
    let mut reasons = Vec::new();
    let mut candidates: Vec<(&SignerReport, &X509)> = Vec::new();
    for s in &verified.signers {
        let who = s.subject.clone().unwrap_or_else(|| "unknown signer".into());
        match (&s.cert, s.signature_valid) {
            (Some(cert), true) if s.digest.accepted() => candidates.push((s, cert)),
            (_, true) => reasons.push(format!(
                "{who}: signed with {}, which Direct refuses (SHA-256 or stronger required)",
                s.digest
            )),
            (_, false) => reasons.push(format!(
                "{who}: {}",
                s.failure
                    .clone()
                    .unwrap_or_else(|| "signature does not verify".into())
            )),
        }
    }
    if verified.signers.is_empty() {
        return Err(OpenError::Signature("the SignedData has no signers".into()));
    }
    if candidates.is_empty() {
        return Err(OpenError::Signature(reasons.join("; ")));
    }

    // Unwrap, in place: the signed content becomes the inner message.
    let (wrapped, body_start) = {
        let signed = Entity::parse(&verified.content);
        (
            signed.content_type().is("message/rfc822"),
            verified.content.len() - signed.body.len(),
        )
    };
    let mut inner = std::mem::take(&mut verified.content);
    if wrapped {
        inner.drain(..body_start);
    }
    let inner_entity = Entity::parse(&inner);

    // Who sent it: the protected From, else (unwrapped content) the outer From.
    let from_value = inner_entity
        .header("From")
        .or_else(|| outer.header("From"))
        .ok_or_else(|| OpenError::Malformed("the message has no From header".into()))?;
    let sender = DirectAddress::parse(from_value)
        .map_err(|e| OpenError::Malformed(format!("From header: {e}")))?;
    check_headers(&outer, &inner_entity, wrapped, &sender, &inputs.envelope)?;

    // Trust: the first signer with a valid signature whose certificate validates and is bound to
    // the sender is accepted.
    let mut intermediates: Vec<X509> = verified.certs.clone();
    intermediates.extend(inputs.trust.intermediates.iter().cloned());
    let trust_inputs = TrustInputs {
        intermediates: &intermediates,
        ..inputs.trust
    };
    let mut accepted = None;
    let mut trust_reasons = Vec::new();
    for (report, cert) in &candidates {
        let result = match inputs.cache {
            Some(cache) => cache.validate(cert, &trust_inputs, trust::Purpose::Sign, Some(&sender)),
            None => trust::validate(cert, &trust_inputs, trust::Purpose::Sign, Some(&sender)),
        };
        match result {
            Ok(path) => {
                // The signer report already describes this certificate.
                accepted = Some(AcceptedSigner {
                    subject: report
                        .subject
                        .clone()
                        .unwrap_or_else(|| trust::describe(cert)),
                    fingerprint_sha256: report
                        .fingerprint_sha256
                        .clone()
                        .unwrap_or_else(|| trust::fingerprint(cert)),
                    binding: path.binding.unwrap_or(Binding::Domain),
                    digest: report.digest,
                    chain: path.chain_subjects,
                });
                break;
            }
            Err(e) => trust_reasons.push(e.to_string()),
        }
    }
    let signer = accepted.ok_or_else(|| OpenError::Trust(trust_reasons.join("; ")))?;

    let payloads = payload::extract(&inner)
        .ok_or_else(|| OpenError::Malformed("the protected message cannot be parsed".into()))?;
    Ok(OpenReport {
        message_id: inner_entity
            .header("Message-ID")
            .or_else(|| outer.header("Message-ID"))
            .map(str::to_string),
        from: sender.to_string(),
        to: inner_entity
            .header("To")
            .map(|v| {
                parse_list(v)
                    .into_iter()
                    .filter_map(Result::ok)
                    .map(|a| a.to_string())
                    .collect()
            })
            .unwrap_or_default(),
        wrapped,
        cipher,
        key_transport,
        decrypted_with: recipient,
        signer,
        signers: verified.signers,
        disposition_notification_to: inner_entity
            .header("Disposition-Notification-To")
            .map(str::to_string),
        disposition_notification_options: inner_entity
            .header("Disposition-Notification-Options")
            .map(str::to_string),
        payloads,
        inner,
    })
}

fn addresses(e: &Entity<'_>, names: &[&str]) -> Vec<DirectAddress> {
    names
        .iter()
        .filter_map(|n| e.header(n))
        .flat_map(parse_list)
        .filter_map(Result::ok)
        .collect()
}

/// The header tamper rule: what the outer headers and the SMTP envelope claim must agree with the
/// protected headers.
fn check_headers(
    outer: &Entity<'_>,
    inner: &Entity<'_>,
    wrapped: bool,
    sender: &DirectAddress,
    envelope: &Envelope,
) -> Result<(), OpenError> {
    let protected_rcpts = addresses(inner, &["To", "Cc", "Bcc"]);
    if wrapped {
        if let Some(outer_from) = outer.header("From") {
            let ok = DirectAddress::parse(outer_from).is_ok_and(|a| &a == sender);
            if !ok {
                return Err(OpenError::Trust(format!(
                    "header tampering: outer From '{outer_from}' differs from the signed From '{sender}'"
                )));
            }
        }
        for a in addresses(outer, &["To", "Cc"]) {
            if !protected_rcpts.contains(&a) {
                return Err(OpenError::Trust(format!(
                    "header tampering: outer recipient {a} is not among the signed To/Cc recipients"
                )));
            }
        }
    }
    if let Some(mail_from) = envelope.mail_from.as_ref().filter(|m| *m != sender) {
        return Err(OpenError::Trust(format!(
            "header tampering: SMTP MAIL FROM {mail_from} differs from the signed From {sender}"
        )));
    }
    let known = if protected_rcpts.is_empty() {
        addresses(outer, &["To", "Cc"])
    } else {
        protected_rcpts
    };
    for rcpt in &envelope.rcpt_to {
        if !known.contains(rcpt) {
            return Err(OpenError::Trust(format!(
                "header tampering: SMTP RCPT TO {rcpt} is not among the signed recipients"
            )));
        }
    }
    Ok(())
}
