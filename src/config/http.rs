//! `[http]`: the operations endpoint (`/healthz`, `/readyz`, `/metrics`).

use serde::Deserialize;

/// `[http]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the operations endpoint, e.g. "127.0.0.1:9090". Default none: no endpoint.
    /// The endpoint is not authenticated: bind it to loopback (or a management network) only;
    /// `serve` warns at start-up when it is bound elsewhere.
    pub listen: Option<String>,
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn http_listen_is_optional_and_read() {
        let p = std::path::Path::new("x.toml");
        let none = Config::parse("", p).unwrap();
        assert!(none.http.listen.is_none());
        let set = Config::parse("[http]\nlisten = \"127.0.0.1:9090\"\n", p).unwrap();
        assert_eq!(set.http.listen.as_deref(), Some("127.0.0.1:9090"));
        let e = Config::parse("[http]\nport = 9090\n", p).unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
    }
}
