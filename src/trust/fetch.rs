//! `Fetcher`: how CRLs, AIA certificates and trust bundles are fetched. The trust core asks this
//! trait, so validation is tested with an in-memory fetcher and no sockets; [`HttpFetcher`] is the
//! real one (HTTP and HTTPS, bounded size and time).

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

/// Largest body accepted (a large CA's CRL is a few MiB).
pub const MAX_FETCH_BYTES: u64 = 32 * 1024 * 1024;

/// Why a fetch failed, in words for an administrator.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{url} could not be fetched: {reason}")]
pub struct FetchError {
    pub url: String,
    pub reason: String,
}

/// Fetch the bytes at a URL.
pub trait Fetcher: Send + Sync {
    fn fetch(&self, url: &str) -> Result<Vec<u8>, FetchError>;
}

/// HTTP(S) with a timeout for the whole exchange.
pub struct HttpFetcher {
    agent: ureq::Agent,
}

impl HttpFetcher {
    pub fn new(timeout: Duration) -> Self {
        // ureq's default roots are webpki's, which the native-tls build does not have: without
        // this an https:// CRL, AIA or bundle URL made ureq panic instead of fetching.
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .new_agent();
        HttpFetcher { agent }
    }
}

impl Fetcher for HttpFetcher {
    fn fetch(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let err = |reason: String| FetchError {
            url: url.to_string(),
            reason,
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(err("only http:// and https:// URLs are fetched".into()));
        }
        let resp = self.agent.get(url).call().map_err(|e| err(describe(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(err(format!("HTTP {}", status.as_u16())));
        }
        let mut body = Vec::new();
        resp.into_body()
            .into_reader()
            .take(MAX_FETCH_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| err(format!("reading the body failed: {e}")))?;
        if body.len() as u64 > MAX_FETCH_BYTES {
            return Err(err(format!("larger than {MAX_FETCH_BYTES} bytes")));
        }
        Ok(body)
    }
}

fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::TimedOut => "timed out".into(),
            _ => io.to_string(),
        },
        ureq::Error::Timeout(_) => "timed out".into(),
        other => other.to_string(),
    }
}

/// A fetcher answering from a map: for tests and for offline operation.
#[derive(Default)]
pub struct StaticFetcher {
    pub answers: HashMap<String, Result<Vec<u8>, String>>,
}

impl StaticFetcher {
    pub fn with(mut self, url: &str, body: Vec<u8>) -> Self {
        self.answers.insert(url.to_string(), Ok(body));
        self
    }

    pub fn failing(mut self, url: &str, reason: &str) -> Self {
        self.answers
            .insert(url.to_string(), Err(reason.to_string()));
        self
    }
}

impl Fetcher for StaticFetcher {
    fn fetch(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        match self.answers.get(url) {
            Some(Ok(b)) => Ok(b.clone()),
            Some(Err(r)) => Err(FetchError {
                url: url.to_string(),
                reason: r.clone(),
            }),
            None => Err(FetchError {
                url: url.to_string(),
                reason: "connection refused".into(),
            }),
        }
    }
}
