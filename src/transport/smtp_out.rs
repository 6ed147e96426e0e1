//! Delivering one queued message over SMTP: choosing the hosts to try (a configured
//! `[[smtp_out.route]]`, else the domain's MX hosts), one SMTP transaction per host through
//! lettre's [`AsyncSmtpConnection`], and classifying the outcome for the queue
//! ([`DeliveryError::is_transient`]). The queue worker owns retries; [`next_attempt_delay`] is
//! its back-off.
//!
//! lettre's `AsyncSmtpTransport` is not used: it authenticates inside `send`, so a `535` to AUTH
//! and a `5xx` to MAIL or RCPT come back as the same kind of error. Driving the connection
//! command by command lets every reply be classified by the command it answers (an AUTH
//! rejection disables a credential; a RCPT rejection fails a message), and puts a time limit on
//! every step (lettre's async connection only bounds the TCP connect).
//!
//! Recipients are handled per transaction, as lettre's own `send` does: the first RCPT that is
//! refused ends the transaction before DATA (RSET/QUIT), so nothing is delivered and the whole
//! message gets the classification of that reply. The queue then retries (4xx) or fails (5xx)
//! the message for all its recipients; no recipient ever receives a copy twice. Direct messages
//! carry one encrypted payload per recipient domain, so a partial split would gain little.

use std::future::Future;
use std::time::{Duration, Instant};

use lettre::Address;
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Quit, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::{Response, Severity};

use super::mx::{MxError, MxResolver};
use crate::config::{Config, ConnTls, MxTls, RouteConfig, SmtpOutConfig};

/// The AUTH mechanisms we offer, in order of preference. Both send the password as is, which
/// is why AUTH is only ever done over TLS.
const MECHANISMS: [Mechanism; 2] = [Mechanism::Plain, Mechanism::Login];

/// How long a failed session may take to say QUIT (a hung peer must not hold the worker).
const QUIT_LIMIT: Duration = Duration::from_secs(5);

/// How one attempt uses TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetTls {
    /// Plain text (a route with `tls = "none"`: loopback test set-ups only).
    None,
    /// Plain connect, then STARTTLS. `required`: a server that does not offer it, or whose
    /// certificate does not verify, fails the attempt. Not required (`mx_tls = "opportunistic"`):
    /// STARTTLS when offered, without checking the certificate (RFC 7435: encryption without
    /// authentication beats plain text), plain text otherwise.
    Starttls { required: bool },
    /// TLS from the first byte (SMTPS, port 465).
    Wrapper,
}

/// Where and how one attempt connects.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Host name (or IP address) to connect to; also the name the certificate must carry.
    pub host: String,
    pub port: u16,
    pub tls: TargetTls,
    /// SMTP AUTH: (user name, credential name, environment variable holding the password).
    pub auth: Option<(String, String, String)>,
}

/// Why an attempt failed, classified for the queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// 4xx, timeouts, connection refused/reset, DNS temporary failure: retry later.
    #[error("{0} (will retry)")]
    Transient(String),
    /// 5xx (other than AUTH rejection), no MX and no A for the domain (NXDOMAIN), null MX
    /// (RFC 7505): fail now.
    #[error("{0}")]
    Permanent(String),
    /// The server rejected our AUTH credentials: the credential must be disabled and never
    /// retried automatically (a password retried in a loop locks accounts).
    #[error(
        "credential {credential} was rejected: {reason} (fix it, then `direct-agent credentials reset {credential}`)"
    )]
    AuthRejected { credential: String, reason: String },
    /// The configuration cannot work as it is (the password variable is unset, the server
    /// offers no AUTH mechanism we have): not retried until fixed, no AUTH attempt made.
    #[error("configuration: {0}")]
    Configuration(String),
}

impl DeliveryError {
    /// Whether another attempt later can succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, DeliveryError::Transient(_))
    }

    /// Whether the message has failed for good.
    pub fn is_permanent(&self) -> bool {
        matches!(self, DeliveryError::Permanent(_))
    }

    fn kind(&self) -> &'static str {
        match self {
            DeliveryError::Transient(_) => "transient",
            DeliveryError::Permanent(_) => "permanent",
            DeliveryError::AuthRejected { .. } => "auth-rejected",
            DeliveryError::Configuration(_) => "configuration",
        }
    }
}

impl From<MxError> for DeliveryError {
    fn from(e: MxError) -> Self {
        if e.is_transient() {
            DeliveryError::Transient(e.to_string())
        } else {
            DeliveryError::Permanent(e.to_string())
        }
    }
}

/// The outcome of a successful attempt, for the queue's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub host: String,
    pub port: u16,
    /// Whether the message went over TLS.
    pub tls: bool,
    /// The server's final reply, e.g. "250 2.0.0 Ok: queued as X".
    pub response: String,
}

/// Outbound settings built from `[smtp_out]`, `[agent] hostname` and `[discovery]` nameservers.
pub struct Outbound {
    smtp: SmtpOutConfig,
    hello: ClientId,
    timeout: Duration,
    /// `smtp_out.tls_ca`: trusted besides the system's roots.
    extra_roots: Vec<Certificate>,
    resolver: MxResolver,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("hello", &self.hello.to_string())
            .field("timeout", &self.timeout)
            .field("mx_tls", &self.smtp.mx_tls)
            .field("mx_port", &self.smtp.mx_port)
            .field("routes", &self.smtp.routes.len())
            .field("extra_roots", &self.extra_roots.len())
            .finish_non_exhaustive()
    }
}

/// Which setting made STARTTLS required, for error messages.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Route(&'a RouteConfig),
    Mx,
}

impl Origin<'_> {
    fn starttls_rule(&self) -> String {
        match self {
            Origin::Route(r) => format!(
                "STARTTLS required by smtp_out.route for {} (tls = \"starttls\")",
                r.domain
            ),
            Origin::Mx => "STARTTLS required by smtp_out.mx_tls = \"required\"".into(),
        }
    }
}

impl Outbound {
    /// Build from the configuration: hello name from `agent.hostname`, MX lookups through the
    /// `[discovery]` nameservers (the system's when empty), extra trust from `smtp_out.tls_ca`.
    /// Does not need a running Tokio runtime.
    pub fn from_config(cfg: &Config) -> Result<Outbound, String> {
        let smtp = cfg.smtp_out.clone();
        let extra_roots = match &smtp.tls_ca {
            Some(path) => load_roots(path)?,
            None => Vec::new(),
        };
        let timeout =
            crate::config::parse_duration(&cfg.discovery.timeout).unwrap_or(Duration::from_secs(2));
        let resolver = MxResolver::new(
            &cfg.discovery.nameserver_addrs(),
            timeout,
            cfg.discovery.attempts,
        )?;
        let hostname = cfg.agent.hostname.trim().trim_end_matches('.');
        let hello = match hostname.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => ClientId::Ipv4(ip),
            Ok(std::net::IpAddr::V6(ip)) => ClientId::Ipv6(ip),
            Err(_) => ClientId::Domain(hostname.to_string()),
        };
        if smtp.mx_tls == MxTls::Opportunistic {
            tracing::warn!(
                "smtp_out.mx_tls = \"opportunistic\": MX hosts without STARTTLS get the envelope in plain text, and MX certificates are not verified"
            );
        }
        for r in &smtp.routes {
            if r.tls == ConnTls::None {
                tracing::warn!(
                    domain = %r.domain,
                    host = %r.host,
                    port = r.port,
                    "smtp_out.route uses tls = \"none\": plain-text SMTP (loopback test set-ups only)"
                );
            }
        }
        Ok(Outbound {
            timeout: smtp.timeout(),
            smtp,
            hello,
            extra_roots,
            resolver,
        })
    }

    /// The route for `domain`: an exact match (ignoring case and a trailing dot) wins over `*`.
    fn route_for(&self, domain: &str) -> Option<&RouteConfig> {
        let domain = domain.trim_end_matches('.');
        self.smtp
            .routes
            .iter()
            .find(|r| r.domain.trim_end_matches('.').eq_ignore_ascii_case(domain))
            .or_else(|| self.smtp.routes.iter().find(|r| r.domain == "*"))
    }

    /// The targets to try for `domain`, in order: the configured route (`smtp_out.route`,
    /// exact or `*`), else the MX hosts by preference (the domain itself when it has an address
    /// but no MX, RFC 5321 §5.1) on `mx_port`, with STARTTLS per `mx_tls`.
    pub async fn targets(&self, domain: &str) -> Result<Vec<Target>, DeliveryError> {
        Ok(self.targets_with_origin(domain).await?.0)
    }

    async fn targets_with_origin(
        &self,
        domain: &str,
    ) -> Result<(Vec<Target>, Origin<'_>), DeliveryError> {
        if let Some(route) = self.route_for(domain) {
            let tls = match route.tls {
                ConnTls::None => TargetTls::None,
                ConnTls::Starttls => TargetTls::Starttls { required: true },
                ConnTls::Tls => TargetTls::Wrapper,
            };
            let auth = match (&route.username, &route.password_env) {
                (Some(user), Some(env)) => {
                    Some((user.clone(), route.credential_name(), env.clone()))
                }
                _ => None,
            };
            let target = Target {
                host: route.host.clone(),
                port: route.port,
                tls,
                auth,
            };
            return Ok((vec![target], Origin::Route(route)));
        }
        let hosts = self.resolver.mail_hosts(domain).await?;
        let required = self.smtp.mx_tls == MxTls::Required;
        let targets = hosts
            .into_iter()
            .map(|host| Target {
                host,
                port: self.smtp.mx_port,
                tls: TargetTls::Starttls { required },
                auth: None,
            })
            .collect();
        Ok((targets, Origin::Mx))
    }

    /// Deliver `raw` to `rcpt_to` (all in `domain`) with reverse-path `mail_from` ("" = the null
    /// sender `<>`), trying each target in order until one gives a definite answer: a delivery,
    /// a 5xx (permanent, not tried elsewhere: the MX hosts of a domain share its policy), an AUTH
    /// rejection or a configuration problem. A transient failure moves on to the next target;
    /// after the last one, its error decides. The AUTH password is read from the environment
    /// at the moment of the attempt, so a fixed variable takes effect without a restart.
    pub async fn deliver(
        &self,
        domain: &str,
        mail_from: &str,
        rcpt_to: &[String],
        raw: &[u8],
    ) -> Result<Delivered, DeliveryError> {
        let envelope = Envelope::parse(mail_from, rcpt_to)?;
        let (targets, origin) = match self.targets_with_origin(domain).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(domain, outcome = e.kind(), error = %e, "no host to deliver to");
                return Err(e);
            }
        };
        let mut last = DeliveryError::Permanent(format!("no host to deliver to for {domain}"));
        for target in &targets {
            let started = Instant::now();
            let mut progress = Progress::default();
            let result = self
                .attempt(target, origin, &envelope, raw, &mut progress)
                .await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match result {
                Ok(delivered) => {
                    tracing::info!(
                        domain,
                        host = %target.host,
                        port = target.port,
                        tls = delivered.tls,
                        from = mail_from,
                        to = ?rcpt_to,
                        recipients = rcpt_to.len(),
                        size = raw.len(),
                        outcome = "delivered",
                        elapsed_ms,
                        response = %delivered.response,
                        "message delivered"
                    );
                    return Ok(delivered);
                }
                Err(e) => {
                    tracing::warn!(
                        domain,
                        host = %target.host,
                        port = target.port,
                        tls = progress.tls,
                        from = mail_from,
                        to = ?rcpt_to,
                        outcome = e.kind(),
                        elapsed_ms,
                        error = %e,
                        "delivery attempt failed"
                    );
                    if !e.is_transient() {
                        return Err(e);
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// One SMTP transaction with one target.
    async fn attempt(
        &self,
        target: &Target,
        origin: Origin<'_>,
        envelope: &Envelope,
        raw: &[u8],
        progress: &mut Progress,
    ) -> Result<Delivered, DeliveryError> {
        let at = format!("{}:{}", target.host, target.port);
        // The password first: a missing one is a configuration problem, found without touching
        // the network and without an AUTH attempt.
        let auth = match &target.auth {
            Some((user, credential, env)) => Some((
                credential.as_str(),
                Credentials::new(user.clone(), password(credential, env)?),
            )),
            None => None,
        };

        let ips = self.resolver.addresses(&target.host).await.map_err(|e| {
            // A host that does not resolve is worth another try (later, or the next MX).
            DeliveryError::Transient(format!("cannot deliver to {at}: {e}"))
        })?;
        let addrs: Vec<std::net::SocketAddr> = ips
            .into_iter()
            .map(|ip| std::net::SocketAddr::new(ip, target.port))
            .collect();
        let wrapper = match target.tls {
            TargetTls::Wrapper => Some(self.tls_parameters(&target.host, true)?),
            _ => None,
        };
        // lettre bounds each TCP connect; this bounds them all plus TLS, greeting and EHLO.
        let connect_limit = self
            .timeout
            .saturating_mul(addrs.len() as u32)
            .saturating_add(self.timeout);
        let mut conn = match wrapper {
            Some(tls) => step(
                connect_limit,
                AsyncSmtpConnection::connect_tokio1(
                    addrs.as_slice(),
                    Some(self.timeout),
                    &self.hello,
                    Some(tls),
                    None,
                ),
            )
            .await
            .map_err(|f| f.classify(&at, Phase::Connect, None))?,
            None => {
                // Our own connect, so the socket gets TCP_NODELAY: lettre leaves Nagle on, and
                // the final "." of DATA then waits for the peer's delayed ACK (~40 ms a message).
                let stream = connect_nodelay(&addrs, self.timeout).await.map_err(|e| {
                    DeliveryError::Transient(format!("cannot connect to {at}: {e}"))
                })?;
                step(
                    connect_limit,
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello),
                )
                .await
                .map_err(|f| f.classify(&at, Phase::Connect, None))?
            }
        };
        progress.tls = conn.is_encrypted();

        let result = self
            .transaction(
                &mut conn, target, origin, &at, auth, envelope, raw, progress,
            )
            .await;
        match &result {
            Ok(_) => {
                // The message is accepted; a slow or failed QUIT changes nothing.
                let _ = step(self.timeout, conn.command(Quit)).await;
            }
            // A failed TLS upgrade leaves lettre's connection without a stream: writing QUIT
            // to it would trip a debug assertion in lettre. Just drop it.
            Err(_) if progress.stream_lost => {}
            Err(_) => {
                // Politely end the session (RSET is implied by QUIT); bounded, errors ignored.
                let _ = tokio::time::timeout(self.timeout.min(QUIT_LIMIT), conn.abort()).await;
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn transaction(
        &self,
        conn: &mut AsyncSmtpConnection,
        target: &Target,
        origin: Origin<'_>,
        at: &str,
        auth: Option<(&str, Credentials)>,
        envelope: &Envelope,
        raw: &[u8],
        progress: &mut Progress,
    ) -> Result<Delivered, DeliveryError> {
        if let TargetTls::Starttls { required } = target.tls {
            if conn.can_starttls() {
                let params = self.tls_parameters(&target.host, required)?;
                step(self.timeout, conn.starttls(params, &self.hello))
                    .await
                    .map_err(|f| {
                        // Without a reply code the TLS handshake itself failed (or timed out)
                        // and the stream is gone.
                        progress.stream_lost =
                            !matches!(&f, Failure::Smtp(e) if e.status().is_some());
                        f.classify(at, Phase::Starttls, None)
                    })?;
                progress.tls = conn.is_encrypted();
            } else if required {
                return Err(DeliveryError::Transient(format!(
                    "{at} does not offer STARTTLS ({})",
                    origin.starttls_rule()
                )));
            } else {
                tracing::warn!(
                    host = %target.host,
                    port = target.port,
                    "no STARTTLS offered: sending in plain text (smtp_out.mx_tls = \"opportunistic\")"
                );
            }
        }

        if let Some((credential, credentials)) = auth {
            if !conn.is_encrypted() {
                return Err(DeliveryError::Configuration(format!(
                    "refusing to send the password of credential {credential} to {at} over plain text (use tls = \"starttls\" or \"tls\")"
                )));
            }
            let Some(mechanism) = conn.server_info().get_auth_mechanism(&MECHANISMS) else {
                return Err(DeliveryError::Configuration(format!(
                    "{at} offers no AUTH mechanism we support (PLAIN, LOGIN) for credential {credential}"
                )));
            };
            // Exactly one AUTH: lettre's `auth` sends one AUTH command (plus the answers to its
            // challenges) and never retries; neither do we, here or on another target.
            step(self.timeout, conn.auth(&[mechanism], &credentials))
                .await
                .map_err(|f| f.classify(at, Phase::Auth(mechanism), Some(credential)))?;
        }

        let mut params = Vec::new();
        if !raw.is_ascii() {
            if !conn.server_info().supports_feature(Extension::EightBitMime) {
                return Err(DeliveryError::Permanent(format!(
                    "the message has 8-bit content and {at} does not offer 8BITMIME"
                )));
            }
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        if !envelope.is_ascii() {
            if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Err(DeliveryError::Permanent(format!(
                    "the envelope has non-ASCII addresses and {at} does not offer SMTPUTF8"
                )));
            }
            params.push(MailParameter::SmtpUtfEight);
        }
        step(
            self.timeout,
            conn.command(Mail::new(envelope.from.clone(), params)),
        )
        .await
        .map_err(|f| f.classify(at, Phase::Mail, None))?;
        for rcpt in &envelope.to {
            step(self.timeout, conn.command(Rcpt::new(rcpt.clone(), vec![])))
                .await
                .map_err(|f| f.classify(at, Phase::Rcpt(AsRef::<str>::as_ref(rcpt)), None))?;
        }
        step(self.timeout, conn.command(Data))
            .await
            .map_err(|f| f.classify(at, Phase::Data, None))?;
        // lettre ends the data with CRLF.CRLF; one CRLF of the message's own makes the server
        // receive exactly `raw` (a message not ending in CRLF gets one, as SMTP requires).
        let body = raw.strip_suffix(b"\r\n").unwrap_or(raw);
        // The whole transfer and the final reply: RFC 5321 §4.5.3.2 allows 3 minutes per data
        // block and 10 for the reply to the final dot, where a command gets 5.
        let response = step(self.timeout.saturating_mul(10), conn.message(body))
            .await
            .map_err(|f| f.classify(at, Phase::EndOfData, None))?;
        Ok(Delivered {
            host: target.host.clone(),
            port: target.port,
            tls: conn.is_encrypted(),
            response: reply_text(&response),
        })
    }

    /// TLS parameters for `host`: the system's roots plus `smtp_out.tls_ca`. `verify = false`
    /// only for opportunistic STARTTLS to an MX (see [`TargetTls::Starttls`]).
    fn tls_parameters(&self, host: &str, verify: bool) -> Result<TlsParameters, DeliveryError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut builder = TlsParameters::builder(host.to_string());
        for root in &self.extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        if !verify {
            builder = builder
                .dangerous_accept_invalid_certs(true)
                .dangerous_accept_invalid_hostnames(true);
        }
        builder
            .build()
            .map_err(|e| DeliveryError::Configuration(format!("cannot set up TLS for {host}: {e}")))
    }
}

/// The AUTH password from `env`, read now.
fn password(credential: &str, env: &str) -> Result<String, DeliveryError> {
    match std::env::var(env) {
        Ok(p) if !p.is_empty() => Ok(p),
        Ok(_) => Err(DeliveryError::Configuration(format!(
            "the password of credential {credential} is read from ${env}, which is empty: set it"
        ))),
        Err(std::env::VarError::NotPresent) => Err(DeliveryError::Configuration(format!(
            "the password of credential {credential} is read from ${env}, which is not set: set it in the agent's environment"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(DeliveryError::Configuration(format!(
            "the password of credential {credential} in ${env} is not valid UTF-8"
        ))),
    }
}

/// The certificates of a PEM file (`smtp_out.tls_ca`); native-tls reads one per call.
fn load_roots(path: &std::path::Path) -> Result<Vec<Certificate>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("smtp_out.tls_ca: cannot read {}: {e}", path.display()))?;
    let mut roots = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        let cert = Certificate::from_pem(&rest.as_bytes()[start..end]).map_err(|e| {
            format!(
                "smtp_out.tls_ca: certificate {} in {} is not valid: {e}",
                roots.len() + 1,
                path.display()
            )
        })?;
        roots.push(cert);
        rest = &rest[end..];
    }
    if roots.is_empty() {
        return Err(format!(
            "smtp_out.tls_ca: {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(roots)
}

/// What an attempt got as far as, for its log line and its clean-up.
#[derive(Default)]
struct Progress {
    /// The session is encrypted.
    tls: bool,
    /// lettre's connection has no stream left (a failed TLS upgrade).
    stream_lost: bool,
}

/// The envelope, parsed once.
struct Envelope {
    /// `None`: the null reverse-path `<>` (MDNs, bounces).
    from: Option<Address>,
    to: Vec<Address>,
}

impl Envelope {
    /// Addresses as `local@domain`, with or without angle brackets.
    fn parse(mail_from: &str, rcpt_to: &[String]) -> Result<Envelope, DeliveryError> {
        let bare = |s: &str| {
            let s = s.trim();
            s.strip_prefix('<')
                .and_then(|s| s.strip_suffix('>'))
                .unwrap_or(s)
                .to_string()
        };
        let from = match bare(mail_from).as_str() {
            "" => None,
            s => Some(s.parse::<Address>().map_err(|e| {
                DeliveryError::Permanent(format!("sender address '{s}' is not valid: {e}"))
            })?),
        };
        if rcpt_to.is_empty() {
            return Err(DeliveryError::Permanent(
                "the message has no recipient".into(),
            ));
        }
        let to = rcpt_to
            .iter()
            .map(|r| {
                bare(r).parse::<Address>().map_err(|e| {
                    DeliveryError::Permanent(format!("recipient address '{r}' is not valid: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Envelope { from, to })
    }

    fn is_ascii(&self) -> bool {
        self.from
            .iter()
            .chain(&self.to)
            .all(|a| AsRef::<str>::as_ref(a).is_ascii())
    }
}

/// The SMTP command an error answered.
#[derive(Clone, Copy)]
enum Phase<'a> {
    /// TCP connect, TLS (SMTPS), greeting and EHLO.
    Connect,
    Starttls,
    Auth(Mechanism),
    Mail,
    Rcpt(&'a str),
    Data,
    EndOfData,
}

impl std::fmt::Display for Phase<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::Connect => f.write_str("the greeting or EHLO"),
            Phase::Starttls => f.write_str("STARTTLS"),
            Phase::Auth(m) => write!(f, "AUTH {m}"),
            Phase::Mail => f.write_str("MAIL FROM"),
            Phase::Rcpt(r) => write!(f, "RCPT TO:<{r}>"),
            Phase::Data => f.write_str("DATA"),
            Phase::EndOfData => f.write_str("the end of DATA"),
        }
    }
}

/// A step that did not succeed.
enum Failure {
    TimedOut(Duration),
    Smtp(SmtpError),
}

/// Connect to the first address that answers, each within `limit`, with TCP_NODELAY set.
async fn connect_nodelay(
    addrs: &[std::net::SocketAddr],
    limit: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address to connect to");
    for addr in addrs {
        match tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("timed out after {limit:?}"),
                )
            }
        }
    }
    Err(last)
}

/// Run one step of the session with a time limit.
async fn step<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, SmtpError>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::Smtp(e)),
        Err(_) => Err(Failure::TimedOut(limit)),
    }
}

impl Failure {
    /// Classify for the queue. The server's reply text goes into the message (it is protocol
    /// text, not message content).
    fn classify(self, at: &str, phase: Phase<'_>, credential: Option<&str>) -> DeliveryError {
        let e = match self {
            Failure::TimedOut(limit) => {
                let what = match phase {
                    Phase::Connect => "connecting (TCP, greeting, EHLO)".to_string(),
                    other => format!("waiting for the reply to {other}"),
                };
                return DeliveryError::Transient(format!("{at}: timed out after {limit:?} {what}"));
            }
            Failure::Smtp(e) => e,
        };
        let Some(code) = e.status() else {
            // No reply code: connection refused or reset, TLS failure, unparsable reply.
            let what = match phase {
                Phase::Connect => "cannot connect to".to_string(),
                Phase::Starttls => "TLS handshake (STARTTLS) failed with".to_string(),
                other => format!("connection lost during {other} with"),
            };
            return DeliveryError::Transient(format!("{what} {at}: {}", chain(&e)));
        };
        let reply = match std::error::Error::source(&e) {
            Some(text) => format!("{code} {text}"),
            None => code.to_string(),
        };
        let text = format!("{at} answered {phase} with {reply}");
        match (code.severity, phase) {
            (Severity::TransientNegativeCompletion, _) => DeliveryError::Transient(text),
            // Any 5xx to AUTH (535 bad credentials, 534 mechanism too weak, 530, 538): the
            // credential cannot be used with this server as it is. Retrying it automatically
            // risks locking the account, so a person must look.
            (_, Phase::Auth(_)) => DeliveryError::AuthRejected {
                credential: credential.unwrap_or("(none)").to_string(),
                reason: text,
            },
            // A 5xx greeting means "no service here", not "this message is refused": like
            // Postfix (smtp_skip_5xx_greeting) we move on and retry later.
            (_, Phase::Connect) => DeliveryError::Transient(text),
            // A refused STARTTLS only means no TLS at this host.
            (_, Phase::Starttls) => DeliveryError::Transient(text),
            _ => DeliveryError::Permanent(text),
        }
    }
}

/// An error and its causes, "a: b: c".
fn chain(e: &SmtpError) -> String {
    // lettre's Display already appends its source; add the deeper causes (io errors).
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e).and_then(|s| s.source());
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    // lettre wraps a failed TLS upgrade twice ("Connection error: Connection error: ...").
    while out.contains("Connection error: Connection error: ") {
        out = out.replace("Connection error: Connection error: ", "Connection error: ");
    }
    out
}

/// "250 2.0.0 Ok: queued as X".
fn reply_text(r: &Response) -> String {
    let lines: Vec<&str> = r.message().collect();
    if lines.is_empty() {
        r.code().to_string()
    } else {
        format!("{} {}", r.code(), lines.join(" "))
    }
}

/// How long to wait before attempt `attempt + 1`, after `attempt` attempts failed (1 after
/// the first failure; 0 is taken as 1): `initial` doubled each time, capped at `max`, then
/// ±20% jitter derived from `jitter_seed` (deterministic: the same inputs give the same delay,
/// different messages get different seeds so their retries spread out). Never more than `max`.
pub fn next_attempt_delay(
    attempt: u32,
    initial: Duration,
    max: Duration,
    jitter_seed: u64,
) -> Duration {
    let attempt = attempt.max(1);
    let doublings = attempt - 1;
    let base = if doublings >= 32 {
        max
    } else {
        initial.saturating_mul(1u32 << doublings).min(max)
    };
    // splitmix64 of seed and attempt: a well-mixed 64-bit value, then 53 bits as a fraction.
    let mut z = jitter_seed
        .wrapping_add(u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
    let factor = 0.8 + 0.4 * unit;
    Duration::try_from_secs_f64(base.as_secs_f64() * factor)
        .unwrap_or(max)
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const MIN: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn delay_doubles_within_jitter() {
        for seed in [0u64, 1, 42, u64::MAX] {
            for attempt in 1..=6u32 {
                let d = next_attempt_delay(attempt, MIN, HOUR, seed);
                let base = MIN * (1 << (attempt - 1));
                assert!(
                    d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2),
                    "attempt {attempt} seed {seed}: {d:?} not within 20% of {base:?}"
                );
            }
        }
        assert_eq!(
            next_attempt_delay(0, MIN, HOUR, 7),
            next_attempt_delay(1, MIN, HOUR, 7),
            "attempt 0 counts as the first"
        );
    }

    #[test]
    fn delay_is_capped() {
        for attempt in [7u32, 10, 31, 32, 33, 1000, u32::MAX] {
            for seed in 0..50u64 {
                let d = next_attempt_delay(attempt, MIN, HOUR, seed);
                assert!(d <= HOUR, "attempt {attempt}: {d:?}");
                assert!(d >= HOUR.mul_f64(0.8), "attempt {attempt}: {d:?}");
            }
        }
        let d = next_attempt_delay(3, Duration::MAX, Duration::MAX, 9);
        assert!(d <= Duration::MAX);
    }

    #[test]
    fn delay_is_deterministic_and_spread() {
        assert_eq!(
            next_attempt_delay(3, MIN, HOUR, 12345),
            next_attempt_delay(3, MIN, HOUR, 12345)
        );
        let distinct: std::collections::HashSet<Duration> = (0..100u64)
            .map(|seed| next_attempt_delay(3, MIN, HOUR, seed))
            .collect();
        assert!(distinct.len() > 90, "seeds spread the delays: {distinct:?}");
        let low = (0..1000u64)
            .filter(|s| next_attempt_delay(2, MIN, HOUR, *s) < MIN * 2)
            .count();
        assert!(
            (350..650).contains(&low),
            "jitter centred on the base: {low}"
        );
    }

    fn outbound(toml: &str) -> Outbound {
        let cfg = Config::parse(toml, Path::new("test.toml")).expect("test configuration");
        Outbound::from_config(&cfg).expect("outbound settings")
    }

    #[tokio::test]
    async fn exact_route_wins_over_star_and_ignores_case() {
        let out = outbound(
            r#"
[discovery]
nameservers = ["127.0.0.1:9"]
[[smtp_out.route]]
domain = "*"
host = "relay.example"
port = 587
username = "edge"
password_env = "RELAY_PASSWORD"
[[smtp_out.route]]
domain = "hisp-b.example"
host = "smtp.hisp-b.example"
port = 465
tls = "tls"
"#,
        );
        let t = out.targets("HISP-B.example.").await.unwrap();
        assert_eq!(
            t,
            vec![Target {
                host: "smtp.hisp-b.example".into(),
                port: 465,
                tls: TargetTls::Wrapper,
                auth: None,
            }]
        );
        let t = out.targets("other.example").await.unwrap();
        assert_eq!(
            t,
            vec![Target {
                host: "relay.example".into(),
                port: 587,
                tls: TargetTls::Starttls { required: true },
                auth: Some(("edge".into(), "smtp:*".into(), "RELAY_PASSWORD".into())),
            }]
        );
    }

    #[tokio::test]
    async fn route_tls_none_and_credential_name() {
        let out = outbound(
            r#"
[[smtp_out.route]]
domain = "lab.test"
host = "127.0.0.1"
port = 2525
tls = "none"
[[smtp_out.route]]
domain = "hisp.test"
host = "smtp.hisp.test"
port = 587
username = "u"
password_env = "P"
name = "hisp-submission"
"#,
        );
        let t = out.targets("lab.test").await.unwrap();
        assert_eq!(t[0].tls, TargetTls::None);
        assert_eq!(t[0].port, 2525);
        let t = out.targets("hisp.test").await.unwrap();
        assert_eq!(
            t[0].auth,
            Some(("u".into(), "hisp-submission".into(), "P".into()))
        );
        assert!(out.route_for("unrouted.test").is_none());
    }

    #[test]
    fn envelope_null_sender_and_bad_addresses() {
        let e = Envelope::parse("", &["bob@b.test".into()]).unwrap();
        assert!(e.from.is_none());
        assert_eq!(e.to.len(), 1);
        let e = Envelope::parse("<>", &["<bob@b.test>".into()]).unwrap();
        assert!(e.from.is_none());
        assert_eq!(AsRef::<str>::as_ref(&e.to[0]), "bob@b.test");
        let err = Envelope::parse("alice@a.test", &[]).err().unwrap();
        assert!(err.is_permanent());
        let err = Envelope::parse("alice@a.test", &["not an address".into()])
            .err()
            .unwrap();
        assert!(err.is_permanent(), "{err}");
        assert!(err.to_string().contains("not an address"), "{err}");
    }

    #[test]
    fn missing_password_is_configuration() {
        let e = password("smtp:x", "DIRECT_AGENT_TEST_SURELY_UNSET_0F3A").unwrap_err();
        assert!(matches!(e, DeliveryError::Configuration(_)), "{e}");
        assert!(!e.is_transient() && !e.is_permanent());
        assert!(
            e.to_string()
                .contains("DIRECT_AGENT_TEST_SURELY_UNSET_0F3A")
        );
    }

    #[test]
    fn tls_ca_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "nothing here\n").unwrap();
        let e = load_roots(&p).err().unwrap();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = load_roots(&dir.path().join("missing.pem")).err().unwrap();
        assert!(e.contains("cannot read"), "{e}");
    }
}
