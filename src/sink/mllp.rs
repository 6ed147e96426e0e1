//! The `mllp` sink: each HL7 v2 message of a delivery sent to an interface engine over MLLP
//! (HL7 v2.5.1 Appendix C, the Minimal Lower Layer Protocol), its HL7 acknowledgement deciding.
//!
//! One TCP connection per delivery (`connect_timeout`, `TCP_NODELAY`), closed afterwards. Every
//! HL7 payload is split into its messages (an FHS/BHS batch gives one frame per MSH, the batch
//! envelope is not sent), each sent as one frame `0x0B message 0x1C 0x0D` with CR segment
//! terminators, and the reply frame is awaited within `ack_timeout` before the next is sent:
//!
//! - MSA-1 `AA`/`CA` with MSA-2 equal to the sent MSH-10: accepted, the ACK kept;
//! - `AE`/`AR`/`CE`/`CR`: refused for good (quarantine), the ACK kept; the reason names MSA-1
//!   and the ERR-3 codes only (ERR-8 and MSA-3 texts can echo patient data);
//! - no reply, a timeout, a refused or reset connection, an unreadable reply, an ACK for another
//!   control id: transient, retried later.
//!
//! Delivery is at-least-once: when the second message of a delivery fails after the first was
//! accepted, the failure is reported and the pipeline later delivers the whole message again, so
//! the engine sees the first message twice. Engines de-duplicate on MSH-10, which is unchanged.
//!
//! Logs carry the sink, `host:port`, control ids, MSA-1 and timings, never message content.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{Sink, SinkDelivery, SinkOutcome};
use crate::hl7::{Message, parse_messages_bytes};
use crate::mime::payload::PayloadKind;

/// Start of an MLLP frame (VT).
pub const START_BLOCK: u8 = 0x0B;
/// End of an MLLP frame: FS then CR.
pub const END_BLOCK: [u8; 2] = [0x1C, 0x0D];
/// The largest reply accepted, in bytes (an ACK is a few hundred).
pub const MAX_REPLY: usize = 1 << 20;

/// Sends HL7 messages to one MLLP listener.
#[derive(Debug, Clone)]
pub struct MllpSink {
    host: String,
    port: u16,
    connect_timeout: Duration,
    ack_timeout: Duration,
}

impl MllpSink {
    /// A sink for `host:port`.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        connect_timeout: Duration,
        ack_timeout: Duration,
    ) -> MllpSink {
        MllpSink {
            host: host.into(),
            port,
            connect_timeout,
            ack_timeout,
        }
    }

    fn peer(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Connect to the first address of `host` that answers.
    fn connect(&self) -> Result<TcpStream, SinkOutcome> {
        let peer = self.peer();
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| SinkOutcome::Transient(format!("cannot resolve mllp peer {peer}: {e}")))?
            .collect();
        let mut last = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, self.connect_timeout) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(SinkOutcome::Transient(match last {
            Some(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => {
                format!(
                    "cannot connect to mllp peer {peer}: no answer within {}",
                    humanize(self.connect_timeout)
                )
            }
            Some(e) => format!("cannot connect to mllp peer {peer}: {e}"),
            None => format!("cannot connect to mllp peer {peer}: the name has no address"),
        }))
    }

    /// Send one frame and read the reply frame, within `ack_timeout` from sending.
    fn exchange(
        &self,
        stream: &mut TcpStream,
        frame: &[u8],
        control_id: &str,
    ) -> Result<Vec<u8>, String> {
        let peer = self.peer();
        stream
            .set_write_timeout(Some(self.ack_timeout))
            .and_then(|()| stream.write_all(frame))
            .and_then(|()| stream.flush())
            .map_err(|e| format!("cannot send message {control_id} to mllp peer {peer}: {e}"))?;
        let deadline = Instant::now() + self.ack_timeout;
        let mut reader = FrameReader::default();
        let mut buf = [0u8; 8192];
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.no_ack(control_id));
            }
            stream
                .set_read_timeout(Some(remaining))
                .map_err(|e| format!("mllp peer {peer}: {e}"))?;
            let n = match stream.read(&mut buf) {
                Ok(0) => {
                    return Err(format!(
                        "mllp peer {peer} closed the connection without acknowledging message {control_id}"
                    ));
                }
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(self.no_ack(control_id));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(format!(
                        "reading the ACK for message {control_id} from mllp peer {peer}: {e}"
                    ));
                }
            };
            match reader.push(&buf[..n]) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => return Err(format!("mllp peer {peer}: {e}")),
            }
        }
    }

    fn no_ack(&self, control_id: &str) -> String {
        format!(
            "no ACK from mllp peer {} within {} for message {control_id}",
            self.peer(),
            humanize(self.ack_timeout)
        )
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// One message as an MLLP frame: its segments joined with CR (whatever terminators the payload
/// used), a CR after the last, wrapped in the start and end blocks.
pub fn frame(message: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.as_str().len() + 4);
    out.push(START_BLOCK);
    for segment in message.segments() {
        out.extend_from_slice(segment.raw().as_bytes());
        out.push(b'\r');
    }
    out.extend_from_slice(&END_BLOCK);
    out
}

/// Why a reply could not be read as a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The reply grew past [`MAX_REPLY`] without an end block.
    #[error("the reply is larger than {limit} bytes without an MLLP end block; refused")]
    TooLarge { limit: usize },
}

/// Reads one MLLP frame from bytes arriving in pieces: bytes before the start block are
/// ignored, the frame ends at `0x1C 0x0D` (which may be split across pieces).
#[derive(Debug, Default)]
pub struct FrameReader {
    started: bool,
    body: Vec<u8>,
}

impl FrameReader {
    /// Take the next piece; the frame's content once its end block has arrived. Bytes after the
    /// end block are ignored (one reply per message is expected).
    pub fn push(&mut self, piece: &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        let mut rest = piece;
        if !self.started {
            match rest.iter().position(|&b| b == START_BLOCK) {
                Some(i) => {
                    self.started = true;
                    rest = &rest[i + 1..];
                }
                None => return Ok(None),
            }
        }
        for &b in rest {
            self.body.push(b);
            if self.body.ends_with(&END_BLOCK) {
                self.body.truncate(self.body.len() - END_BLOCK.len());
                self.started = false;
                return Ok(Some(std::mem::take(&mut self.body)));
            }
            // The end block's FS may still be pending, hence the one byte of slack.
            if self.body.len() > MAX_REPLY + 1 {
                return Err(FrameError::TooLarge { limit: MAX_REPLY });
            }
        }
        Ok(None)
    }
}

/// What an acknowledgement says about one sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckVerdict {
    /// MSA-1 AA or CA for the right control id; `ack` is the reply text.
    Accepted { code: String, ack: String },
    /// MSA-1 AE, AR, CE or CR for the right control id: refused for good.
    Refused { reason: String, ack: String },
    /// Not a usable acknowledgement (unreadable, no MSA, another control id, an unknown code):
    /// worth trying again.
    Unusable(String),
}

/// Judge the reply `reply` from `peer` to the message with MSH-10 `control_id`.
pub fn judge_ack(peer: &str, control_id: &str, reply: &[u8]) -> AckVerdict {
    let messages = match parse_messages_bytes(reply) {
        Ok(m) => m,
        Err(e) => {
            return AckVerdict::Unusable(format!(
                "mllp peer {peer} answered message {control_id} with something that is not an HL7 ACK ({e})"
            ));
        }
    };
    let Some(ack) = messages.first() else {
        return AckVerdict::Unusable(format!(
            "mllp peer {peer} answered message {control_id} with an empty reply"
        ));
    };
    let Some(code) = ack.get("MSA-1").map(|c| c.trim().to_ascii_uppercase()) else {
        return AckVerdict::Unusable(format!(
            "mllp peer {peer} answered message {control_id} without MSA-1 (no MSA segment?)"
        ));
    };
    let acked = ack.get("MSA-2").unwrap_or_default();
    if acked != control_id {
        return AckVerdict::Unusable(format!(
            "mllp peer {peer} answered message {control_id} with an ACK for control id {:?} (MSA-2); ignored",
            acked.as_ref()
        ));
    }
    let text = String::from_utf8_lossy(reply).into_owned();
    match code.as_str() {
        "AA" | "CA" => AckVerdict::Accepted { code, ack: text },
        "AE" | "AR" | "CE" | "CR" => {
            let codes: Vec<String> = ack
                .segments_named("ERR")
                .filter_map(|s| s.field(3)?.component(1).map(|c| c.decoded().into_owned()))
                .filter(|c| !c.is_empty())
                .collect();
            let mut reason =
                format!("mllp peer {peer} refused message {control_id} with MSA-1 {code}");
            if !codes.is_empty() {
                reason.push_str(&format!(" (ERR-3: {})", codes.join(", ")));
            }
            AckVerdict::Refused { reason, ack: text }
        }
        other => AckVerdict::Unusable(format!(
            "mllp peer {peer} answered message {control_id} with unknown MSA-1 {other:?}"
        )),
    }
}

impl Sink for MllpSink {
    fn name(&self) -> String {
        format!("mllp:{}", self.peer())
    }

    fn deliver(&self, d: &SinkDelivery<'_>) -> SinkOutcome {
        let peer = self.peer();
        let hl7: Vec<_> = d
            .payloads
            .iter()
            .enumerate()
            .filter(|(_, p)| p.kind == PayloadKind::Hl7v2)
            .collect();
        if hl7.is_empty() {
            let types: Vec<&str> = d.payloads.iter().map(|p| p.content_type.as_str()).collect();
            return SinkOutcome::permanent(format!(
                "the mllp sink takes HL7 v2 payloads; this message has none (content types: {})",
                if types.is_empty() {
                    "none".to_string()
                } else {
                    types.join(", ")
                }
            ));
        }
        // Read everything first: an unreadable payload is refused before anything is sent.
        let mut frames = Vec::new();
        for (index, payload) in hl7 {
            let messages = match parse_messages_bytes(&payload.data) {
                Ok(m) => m,
                Err(e) => {
                    return SinkOutcome::permanent(format!(
                        "payload {} is not readable HL7 v2: {e}",
                        index + 1
                    ));
                }
            };
            for (n, message) in messages.iter().enumerate() {
                let Some(control_id) = message.msh().control_id() else {
                    return SinkOutcome::permanent(format!(
                        "payload {} message {} has no MSH-10 control id, so an ACK could not be matched to it",
                        index + 1,
                        n + 1
                    ));
                };
                frames.push((control_id.into_owned(), frame(message)));
            }
        }

        let started = Instant::now();
        let mut stream = match self.connect() {
            Ok(s) => s,
            Err(outcome) => {
                tracing::debug!(sink = %self.name(), peer = %peer, "mllp connect failed");
                return outcome;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(peer = %peer, error = %e, "cannot set TCP_NODELAY");
        }
        let total = frames.len();
        let mut ids = Vec::new();
        let mut acks = String::new();
        for (i, (control_id, frame)) in frames.iter().enumerate() {
            let sent = Instant::now();
            let earlier = if i > 0 {
                format!(" ({i} of {total} messages were accepted before; all will be sent again)")
            } else {
                String::new()
            };
            let reply = match self.exchange(&mut stream, frame, control_id) {
                Ok(r) => r,
                Err(reason) => {
                    tracing::debug!(sink = %self.name(), peer = %peer, control_id = %control_id, "mllp exchange failed");
                    return SinkOutcome::Transient(format!("{reason}{earlier}"));
                }
            };
            match judge_ack(&peer, control_id, &reply) {
                AckVerdict::Accepted { code, ack } => {
                    tracing::debug!(sink = %self.name(), peer = %peer, control_id = %control_id, msa_1 = %code, elapsed_ms = sent.elapsed().as_millis() as u64, "mllp message acknowledged");
                    ids.push(control_id.as_str());
                    acks.push_str(&ack);
                    if !acks.ends_with('\r') {
                        acks.push('\r');
                    }
                }
                AckVerdict::Refused { reason, ack } => {
                    tracing::debug!(sink = %self.name(), peer = %peer, control_id = %control_id, elapsed_ms = sent.elapsed().as_millis() as u64, "mllp message refused");
                    return SinkOutcome::Permanent {
                        reason: format!("{reason}{earlier}"),
                        ack: Some(ack),
                    };
                }
                AckVerdict::Unusable(reason) => {
                    tracing::debug!(sink = %self.name(), peer = %peer, control_id = %control_id, "mllp reply unusable");
                    return SinkOutcome::Transient(format!("{reason}{earlier}"));
                }
            }
        }
        let _ = stream.shutdown(std::net::Shutdown::Both);
        tracing::debug!(sink = %self.name(), peer = %peer, messages = total, elapsed_ms = started.elapsed().as_millis() as u64, "mllp delivery accepted");
        SinkOutcome::Accepted {
            location: format!("mllp:{peer} MSA-2={}", ids.join(",")),
            ack: Some(acks),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(code: &str, id: &str, extra: &str) -> Vec<u8> {
        format!(
            "MSH|^~\\&|IIS|STATE|EHR|CLINIC|20261122093001||ACK^V04^ACK|A1|P|2.5.1\rMSA|{code}|{id}\r{extra}"
        )
        .into_bytes()
    }

    #[test]
    fn frame_reader_ignores_noise_and_joins_pieces() {
        let mut r = FrameReader::default();
        assert_eq!(r.push(b"noise\x0bMSH|"), Ok(None));
        assert_eq!(r.push(b"abc\r\x1c"), Ok(None));
        assert_eq!(r.push(b"\x0dtrailing"), Ok(Some(b"MSH|abc\r".to_vec())));
    }

    #[test]
    fn frame_reader_needs_start_block() {
        let mut r = FrameReader::default();
        assert_eq!(r.push(b"MSH|abc\r\x1c\x0d"), Ok(None));
        assert_eq!(r.push(b"\x0b\x1c\x0d"), Ok(Some(Vec::new())));
    }

    #[test]
    fn frame_reader_keeps_lone_fs() {
        let mut r = FrameReader::default();
        assert_eq!(r.push(b"\x0ba\x1cb\x1c\x0d"), Ok(Some(b"a\x1cb".to_vec())));
    }

    #[test]
    fn frame_reader_refuses_oversized_reply() {
        let mut r = FrameReader::default();
        assert_eq!(r.push(&[START_BLOCK]), Ok(None));
        let chunk = vec![b'x'; 64 * 1024];
        let mut result = Ok(None);
        for _ in 0..17 {
            result = r.push(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(FrameError::TooLarge { limit: MAX_REPLY }));
    }

    #[test]
    fn frame_reader_accepts_exactly_max() {
        let mut r = FrameReader::default();
        let mut data = vec![START_BLOCK];
        data.extend(std::iter::repeat_n(b'x', MAX_REPLY));
        data.extend_from_slice(&END_BLOCK);
        assert_eq!(
            r.push(&data).map(|f| f.map(|f| f.len())),
            Ok(Some(MAX_REPLY))
        );
    }

    #[test]
    fn frame_uses_cr_terminators() {
        let payload = "MSH|^~\\&|A|B|C|D|20260101||VXU^V04|X1|P|2.5.1\r\nPID|1\n";
        let messages = parse_messages_bytes(payload.as_bytes()).unwrap();
        assert_eq!(
            frame(&messages[0]),
            b"\x0bMSH|^~\\&|A|B|C|D|20260101||VXU^V04|X1|P|2.5.1\rPID|1\r\x1c\x0d".to_vec()
        );
    }

    #[test]
    fn aa_and_ca_accept() {
        for code in ["AA", "CA", "aa"] {
            let reply = ack(code, "X1", "");
            match judge_ack("h:1", "X1", &reply) {
                AckVerdict::Accepted { ack, .. } => assert_eq!(ack.as_bytes(), reply),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn refusals_name_msa1_and_err3_codes_only() {
        let reply = ack(
            "AE",
            "X1",
            "ERR||PID^1^7|102^Data type error^HL70357|E||||Birth date 20240115 of DOE is wrong\rERR||RXA^1^5|103^Table value not found^HL70357|W\r",
        );
        let AckVerdict::Refused { reason, ack } = judge_ack("h:1", "X1", &reply) else {
            panic!("not refused");
        };
        assert_eq!(
            reason,
            "mllp peer h:1 refused message X1 with MSA-1 AE (ERR-3: 102, 103)"
        );
        assert!(!reason.contains("DOE"));
        assert_eq!(ack.as_bytes(), reply);
        for code in ["AR", "CE", "CR"] {
            assert!(matches!(
                judge_ack("h:1", "X1", &ack_bytes(code)),
                AckVerdict::Refused { .. }
            ));
        }
    }

    fn ack_bytes(code: &str) -> Vec<u8> {
        ack(code, "X1", "")
    }

    #[test]
    fn unusable_replies_are_transient() {
        for (reply, expect) in [
            (b"hello".to_vec(), "not an HL7 ACK"),
            (ack("AA", "OTHER", ""), "control id \"OTHER\""),
            (ack("ZZ", "X1", ""), "unknown MSA-1"),
            (
                b"MSH|^~\\&|IIS|STATE|EHR|CLINIC|20261122||ACK|A1|P|2.5.1\r".to_vec(),
                "without MSA-1",
            ),
        ] {
            match judge_ack("h:1", "X1", &reply) {
                AckVerdict::Unusable(r) => assert!(r.contains(expect), "{r}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
