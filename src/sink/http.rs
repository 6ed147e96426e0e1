//! The `http` sink: each payload POSTed to one URL (body = the payload bytes, `Content-Type` = the
//! payload's), with configured headers, HTTP Basic auth and `X-Direct-*` metadata headers. Also
//! owns the HTTP client setup shared with the `soap` sink ([`HttpClient`]: timeout, CA file, no
//! redirects, non-2xx statuses as answers rather than errors) and the reading of secrets from the
//! environment.
//!
//! Outcomes: 2xx accepted; 401/403 [`SinkOutcome::CredentialRejected`] (never retried: IIS and
//! vendor gateways lock an account after a couple of failed logins, for every client of the
//! vendor); 3xx (redirects are not followed) and other 4xx permanent; 5xx, timeouts, connection
//! and TLS failures transient. Reasons carry the status, the reason phrase and the URL, never a
//! response body (it may echo PHI) nor a secret.
//!
//! A message with several payloads is several POSTs (the Direct Context `metadata.txt` is not
//! sent), in order, each with its
//! `X-Direct-Payload-Index`; a retry after a failure part-way resends the earlier ones, so the
//! receiver deduplicates on `X-Direct-Message-Id` plus the index (delivery is at-least-once).

use std::path::Path;

use base64::Engine;
use ureq::http::{HeaderName, HeaderValue, Uri};

use super::{Sink, SinkConfigError, SinkDelivery, SinkOutcome};
use crate::config::HttpSinkConfig;

/// The HTTP client of the `http` and `soap` sinks.
pub(super) struct HttpClient {
    agent: ureq::Agent,
    /// The URL as configured (checked: http or https, a host, no user info).
    pub url: String,
}

impl HttpClient {
    /// A client for `url` with a whole-exchange `timeout` and, if given, the PEM `tls_ca` file as
    /// the only trust anchors (otherwise the system's roots). `fail` names the key at fault.
    pub fn new(
        url: &str,
        timeout: &str,
        tls_ca: Option<&Path>,
        fail: &dyn Fn(String) -> SinkConfigError,
    ) -> Result<HttpClient, SinkConfigError> {
        check_url(url).map_err(|why| fail(format!("url {url:?}: {why}")))?;
        let timeout = crate::config::parse_duration(timeout)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                fail(format!(
                    "timeout {timeout:?} is not a duration such as \"30s\" or \"2m\""
                ))
            })?;
        let roots = match tls_ca {
            None => ureq::tls::RootCerts::PlatformVerifier,
            Some(path) => read_ca(path).map_err(|why| fail(format!("tls_ca {why}")))?,
        };
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .root_certs(roots)
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("direct-agent/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .new_agent();
        Ok(HttpClient {
            agent,
            url: url.to_string(),
        })
    }

    /// POST `body` with `headers`; the answer's status, reason phrase, `Location` and up to
    /// `body_limit` bytes of its body (`None`: the body is not read).
    pub fn post(
        &self,
        headers: &[(HeaderName, HeaderValue)],
        body: &[u8],
        body_limit: Option<u64>,
    ) -> Result<Answer, String> {
        let mut request = self.agent.post(&self.url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let mut response = request
            .send(body)
            .map_err(|e| format!("POST {} failed: {}", self.url, describe(&e)))?;
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match body_limit {
            None => Vec::new(),
            Some(limit) => response
                .body_mut()
                .with_config()
                .limit(limit)
                .read_to_vec()
                .map_err(|e| {
                    format!(
                        "POST {}: reading the HTTP {} answer failed: {}",
                        self.url,
                        status.as_u16(),
                        describe(&e)
                    )
                })?,
        };
        Ok(Answer {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("").to_string(),
            location,
            body,
        })
    }
}

/// What the server answered.
pub(super) struct Answer {
    pub status: u16,
    /// The standard reason phrase of the status (not the server's text).
    pub reason: String,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    /// Where a redirect pointed, at most 200 characters (the server chose it).
    pub fn redirect_target(&self) -> String {
        match &self.location {
            Some(l) => l.chars().filter(|c| !c.is_control()).take(200).collect(),
            None => "(no Location)".into(),
        }
    }

    /// `401 Unauthorized`.
    pub fn status_line(&self) -> String {
        format!("{} {}", self.status, self.reason)
            .trim()
            .to_string()
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|e| format!("is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must start with http:// or https://".into()),
    }
    let authority = uri.authority().ok_or("has no host")?;
    if authority.as_str().contains('@') {
        return Err("must not carry a user name or password: use username and password_env".into());
    }
    if authority.host().is_empty() {
        return Err("has no host".into());
    }
    Ok(())
}

fn read_ca(path: &Path) -> Result<ureq::tls::RootCerts, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("{}: not PEM: {e}", path.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

/// A transport failure in words (no URL: callers add it).
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "timed out".into(),
            _ => io.to_string(),
        },
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Tls(why) => format!("TLS failed: {why}"),
        ureq::Error::NativeTls(e) => format!("TLS failed: {e}"),
        other => other.to_string(),
    }
}

/// A secret read from environment variable `var` for `key`; unset or empty is an error, so
/// nothing is ever sent with an empty password (a failed login that counts towards a lockout).
pub(super) fn secret_from_env(key: &str, var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        Ok(_) => Err(format!(
            "{key}: environment variable {var} is empty; set it and reset the credential"
        )),
        Err(_) => Err(format!(
            "{key}: environment variable {var} is not set (or not UTF-8); set it and reset the \
             credential"
        )),
    }
}

/// `Basic base64(user:password)`.
pub(super) fn basic_auth(user: &str, password: &str) -> Result<HeaderValue, String> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {token}"))
        .map_err(|_| "the Basic credentials are not a valid header value".to_string())?;
    value.set_sensitive(true);
    Ok(value)
}

/// A header value from text we do not control (addresses, Message-IDs): control characters
/// dropped so it is always valid.
fn metadata_value(text: &str) -> HeaderValue {
    let cleaned: String = text.chars().filter(|c| !c.is_control()).collect();
    // Invariant: without control characters every string is a valid header value (visible
    // ASCII, spaces and bytes >= 0x80); the fallback is never taken.
    HeaderValue::from_str(&cleaned).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// POSTs each payload to one URL.
pub struct HttpSink {
    name: String,
    client: HttpClient,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Header name -> environment variable.
    header_env: Vec<(HeaderName, String)>,
    /// User name and the variable holding the password.
    basic: Option<(String, String)>,
}

impl HttpSink {
    /// An `http` sink named `name` (its display name) from its configuration.
    pub fn new(name: &str, config: &HttpSinkConfig) -> Result<HttpSink, SinkConfigError> {
        let fail = |reason: String| SinkConfigError {
            name: name.to_string(),
            reason,
        };
        let client = HttpClient::new(
            &config.url,
            &config.timeout,
            config.tls_ca.as_deref(),
            &fail,
        )?;
        let header_name = |key: &str, h: &str| {
            HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| fail(format!("{key}: {h:?} is not a valid header name")))
        };
        let mut headers = Vec::new();
        for (h, v) in &config.headers {
            let hn = header_name("headers", h)?;
            let hv = HeaderValue::from_str(v).map_err(|_| {
                fail(format!(
                    "headers.{h}: the value is not a valid header value"
                ))
            })?;
            headers.push((hn, hv));
        }
        let mut header_env = Vec::new();
        for (h, var) in &config.header_env {
            header_env.push((header_name("header_env", h)?, var.clone()));
        }
        let basic = match (&config.username, &config.password_env) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(fail(
                    "username is set but password_env is not: name the variable holding the \
                     password"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(fail("password_env is set but username is not".into()));
            }
        };
        Ok(HttpSink {
            name: name.to_string(),
            client,
            headers,
            header_env,
            basic,
        })
    }

    /// The headers common to every payload: configured, from the environment, Basic auth.
    /// Err when a secret's variable is unset: nothing may be sent.
    fn credential_headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let mut out = self.headers.clone();
        for (h, var) in &self.header_env {
            let value = secret_from_env(&format!("header_env.{h}"), var)?;
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                format!("header_env.{h}: variable {var} does not hold a valid header value")
            })?;
            value.set_sensitive(true);
            out.push((h.clone(), value));
        }
        if let Some((user, var)) = &self.basic {
            let password = secret_from_env("password_env", var)?;
            out.push((
                ureq::http::header::AUTHORIZATION,
                basic_auth(user, &password)?,
            ));
        }
        Ok(out)
    }
}

impl Sink for HttpSink {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn credential(&self) -> Option<String> {
        // Always: even without username or header_env, literal headers may carry an API key,
        // and a 401 means the endpoint wants one; either way nothing more is sent until reset.
        Some(format!("sink:{}", self.name))
    }

    fn deliver(&self, d: &SinkDelivery<'_>) -> SinkOutcome {
        let url = &self.client.url;
        let common = match self.credential_headers() {
            Ok(h) => h,
            Err(why) => return SinkOutcome::CredentialRejected(why),
        };
        let mut statuses = Vec::new();
        // The Direct Context metadata.txt describes the Direct message, not the payload.
        let payloads = d
            .payloads
            .iter()
            .enumerate()
            .filter(|(_, p)| p.kind != crate::mime::payload::PayloadKind::DirectContext);
        for (i, p) in payloads {
            let mut headers = common.clone();
            headers.push((
                ureq::http::header::CONTENT_TYPE,
                metadata_value(&p.content_type),
            ));
            if let Some(id) = d.message_id {
                headers.push((
                    HeaderName::from_static("x-direct-message-id"),
                    metadata_value(id),
                ));
            }
            headers.push((
                HeaderName::from_static("x-direct-from"),
                metadata_value(d.from),
            ));
            headers.push((
                HeaderName::from_static("x-direct-to"),
                metadata_value(&d.to.join(", ")),
            ));
            headers.push((
                HeaderName::from_static("x-direct-payload-index"),
                metadata_value(&(i + 1).to_string()),
            ));
            let answer = match self.client.post(&headers, &p.data, None) {
                Ok(a) => a,
                Err(why) => return SinkOutcome::Transient(why),
            };
            let line = answer.status_line();
            match answer.status {
                200..=299 => statuses.push(answer.status.to_string()),
                401 | 403 => {
                    return SinkOutcome::CredentialRejected(format!(
                        "POST {url} answered {line}: the credential was refused; it is disabled \
                         until an operator runs `direct-agent credentials reset sink:{}`",
                        self.name
                    ));
                }
                300..=399 => {
                    let to = answer.redirect_target();
                    return SinkOutcome::permanent(format!(
                        "POST {url} answered {line}: redirect to {to} not followed; configure the \
                         final URL"
                    ));
                }
                400..=499 => {
                    return SinkOutcome::permanent(format!(
                        "POST {url} refused payload {} with {line}",
                        i + 1
                    ));
                }
                _ => {
                    return SinkOutcome::Transient(format!("POST {url} answered {line}"));
                }
            }
        }
        if statuses.is_empty() {
            return SinkOutcome::accepted(format!("http:{url} (no payloads)"));
        }
        SinkOutcome::accepted(format!("http:{url} {}", statuses.join(",")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config(url: &str) -> HttpSinkConfig {
        HttpSinkConfig {
            url: url.into(),
            headers: BTreeMap::new(),
            header_env: BTreeMap::new(),
            username: None,
            password_env: None,
            timeout: "30s".into(),
            tls_ca: None,
        }
    }

    fn error(c: &HttpSinkConfig) -> String {
        HttpSink::new("t", c)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn bad_settings_name_their_key() {
        assert!(error(&config("ftp://x/")).contains("url"));
        assert!(error(&config("not a url")).contains("url"));
        assert!(error(&config("https://u:p@host/")).contains("password_env"));
        let mut c = config("https://iis.example/");
        c.timeout = "soon".into();
        assert!(error(&c).contains("timeout"));
        let mut c = config("https://iis.example/");
        c.headers.insert("Bad Name".into(), "x".into());
        assert!(error(&c).contains("headers"));
        let mut c = config("https://iis.example/");
        c.username = Some("u".into());
        assert!(error(&c).contains("password_env"));
        let mut c = config("https://iis.example/");
        c.tls_ca = Some("/nonexistent/ca.pem".into());
        assert!(error(&c).contains("tls_ca"));
        assert!(HttpSink::new("t", &config("https://iis.example:8443/in")).is_ok());
    }

    #[test]
    fn basic_auth_is_rfc7617() {
        let v = basic_auth("Aladdin", "open sesame").unwrap();
        assert_eq!(v.to_str().unwrap(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(v.is_sensitive());
    }

    #[test]
    fn metadata_values_drop_control_characters() {
        assert_eq!(metadata_value("<a\r\nb@x>").to_str().unwrap(), "<ab@x>");
    }

    #[test]
    fn unset_or_empty_secret_is_refused() {
        assert!(secret_from_env("password_env", "DIRECT_AGENT_TEST_SURELY_UNSET_VAR").is_err());
    }
}
