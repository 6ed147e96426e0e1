//! The operations HTTP endpoint: `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! A tiny HTTP/1.x responder over a tokio `TcpListener` rather than a library: the crate has no
//! HTTP server dependency (hyper is not in the lock file; ureq is a client), and three fixed GET
//! routes with no request bodies do not justify one. What it accepts is deliberately narrow: the
//! request line and headers are read up to [`MAX_HEAD`] bytes within [`READ_TIMEOUT`], headers
//! are ignored, every response carries `Connection: close`, other paths are 404 and other
//! methods 405. [`parse_head`] works on bytes and never panics on any input (a proptest feeds it
//! random bytes); connections are bounded by a semaphore.
//!
//! The endpoint is not authenticated: it is meant for loopback or a management network.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};

/// Largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 16;

/// What the endpoint reports. Both calls may block (SQLite); they run on the blocking pool.
pub trait Endpoints: Send + Sync + 'static {
    /// `Ok` when ready, else one line per problem.
    fn ready(&self) -> Result<(), Vec<String>>;
    /// The Prometheus text exposition.
    fn metrics(&self) -> String;
}

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without any query string.
    pub path: String,
}

/// Why a request was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The head did not end within [`MAX_HEAD`] bytes.
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    /// The request line is not `METHOD SP TARGET SP HTTP/1.x`.
    #[error("malformed request line")]
    Malformed,
    /// Not HTTP/1.0 or HTTP/1.1.
    #[error("unsupported HTTP version")]
    Version,
}

/// Where the request head ends (just past the blank line), if it has.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    let lf = memchr::memmem::find(buf, b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parse the request line of a request head (headers are ignored).
pub fn parse_head(head: &[u8]) -> Result<Request, RequestError> {
    if head.len() > MAX_HEAD {
        return Err(RequestError::TooLarge);
    }
    let line_end = memchr::memchr(b'\n', head).ok_or(RequestError::Malformed)?;
    let line = &head[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).map_err(|_| RequestError::Malformed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(RequestError::Malformed);
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RequestError::Malformed);
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(RequestError::Version);
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
    })
}

/// A response to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// The response bytes (HTTP/1.1, `Connection: close`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Internal Server Error",
        };
        let allow = if self.status == 405 {
            "Allow: GET\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

/// The fixed routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Ready,
    Metrics,
}

/// The route of a request, or the error response (404, 405).
pub fn route(req: &Request) -> Result<Route, Response> {
    let route = match req.path.as_str() {
        "/healthz" => Route::Health,
        "/readyz" => Route::Ready,
        "/metrics" => Route::Metrics,
        _ => {
            return Err(Response::text(
                404,
                "not found: the endpoint serves /healthz, /readyz and /metrics\n",
            ));
        }
    };
    if req.method != "GET" {
        return Err(Response::text(405, "only GET is served\n"));
    }
    Ok(route)
}

/// Answer one request.
async fn respond(route: Route, endpoints: Arc<dyn Endpoints>) -> Response {
    match route {
        Route::Health => Response::text(200, "ok\n"),
        Route::Ready => match tokio::task::spawn_blocking(move || endpoints.ready()).await {
            Ok(Ok(())) => Response::text(200, "ready\n"),
            Ok(Err(problems)) => {
                let mut body = String::from("not ready\n");
                for p in problems {
                    body.push_str(&p.replace('\n', " "));
                    body.push('\n');
                }
                Response::text(503, body)
            }
            Err(e) => Response::text(503, format!("not ready\nreadiness check failed: {e}\n")),
        },
        Route::Metrics => match tokio::task::spawn_blocking(move || endpoints.metrics()).await {
            Ok(text) => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: text,
            },
            Err(e) => Response::text(500, format!("metrics unavailable: {e}\n")),
        },
    }
}

/// Read one request head from `stream`, answer it and close. Generic over the stream so tests
/// drive it in memory.
pub async fn serve_connection<S>(stream: S, endpoints: Arc<dyn Endpoints>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    serve_within(stream, endpoints, READ_TIMEOUT).await
}

async fn serve_within<S>(mut stream: S, endpoints: Arc<dyn Endpoints>, timeout: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head = tokio::time::timeout(timeout, read_head(&mut stream)).await;
    let response = match head {
        Err(_) => Some(Response::text(408, "request head not received in time\n")),
        Ok(Err(ReadError::Closed)) => None,
        Ok(Err(ReadError::TooLarge)) => Some(Response::text(431, "request head too large\n")),
        Ok(Ok(head)) => Some(match parse_head(&head) {
            Ok(req) => match route(&req) {
                Ok(r) => respond(r, endpoints).await,
                Err(resp) => resp,
            },
            Err(RequestError::Version) => Response::text(505, "HTTP/1.0 or HTTP/1.1 only\n"),
            Err(RequestError::TooLarge) => Response::text(431, "request head too large\n"),
            Err(RequestError::Malformed) => Response::text(400, "malformed request\n"),
        }),
    };
    if let Some(r) = response {
        let _ = tokio::time::timeout(timeout, async {
            stream.write_all(&r.to_bytes()).await?;
            stream.shutdown().await
        })
        .await;
    }
}

enum ReadError {
    Closed,
    TooLarge,
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| ReadError::Closed)?;
        if n == 0 {
            // A head without its blank line (e.g. a bare HTTP/1.0 request line) is still read.
            return if buf.is_empty() {
                Err(ReadError::Closed)
            } else {
                Ok(buf)
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf) {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::TooLarge);
        }
    }
}

/// Accept connections until shutdown, each answered on its own task.
pub async fn run(
    listener: tokio::net::TcpListener,
    endpoints: Arc<dyn Endpoints>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        if *shutdown.borrow() {
            break;
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() { break; }
                continue;
            }
        };
        match accepted {
            Ok((stream, _peer)) => {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let endpoints = endpoints.clone();
                tokio::spawn(async move {
                    serve_connection(stream, endpoints).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "http: accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Fixed(Result<(), Vec<String>>);
    impl Endpoints for Fixed {
        fn ready(&self) -> Result<(), Vec<String>> {
            self.0.clone()
        }
        fn metrics(&self) -> String {
            "# TYPE x counter\nx 1\n".into()
        }
    }

    async fn exchange(request: &[u8], ready: Result<(), Vec<String>>) -> String {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(serve_connection(server, Arc::new(Fixed(ready))));
        client.write_all(request).await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        task.await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_lines_parse_and_route() {
        let r = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(r.path, "/metrics");
        assert_eq!(route(&r), Ok(Route::Metrics));
        let r = parse_head(b"GET /readyz HTTP/1.0\n\n").unwrap();
        assert_eq!(route(&r), Ok(Route::Ready));
        let post = parse_head(b"POST /healthz HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(route(&post).unwrap_err().status, 405);
        let other = parse_head(b"GET /admin HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(route(&other).unwrap_err().status, 404);
        assert_eq!(
            parse_head(b"GET /healthz HTTP/2.0\r\n\r\n"),
            Err(RequestError::Version)
        );
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET  /healthz HTTP/1.1\r\n\r\n",
            b"get /healthz HTTP/1.1\r\n\r\n",
            b"GET healthz HTTP/1.1\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_head(bad), Err(RequestError::Malformed), "{bad:?}");
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n"), None);
    }

    #[tokio::test]
    async fn routes_answer_over_a_stream() {
        let ok = exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", Ok(())).await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Connection: close\r\n") && ok.ends_with("\r\n\r\nok\n"));
        let m = exchange(b"GET /metrics HTTP/1.0\r\n\r\n", Ok(())).await;
        assert!(m.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(m.ends_with("x 1\n"));
        let nr = exchange(
            b"GET /readyz HTTP/1.1\r\n\r\n",
            Err(vec![
                "credential smtp:x disabled".into(),
                "spool: gone".into(),
            ]),
        )
        .await;
        assert!(nr.starts_with("HTTP/1.1 503 "), "{nr}");
        assert!(nr.ends_with("not ready\ncredential smtp:x disabled\nspool: gone\n"));
        let r = exchange(b"GET /readyz HTTP/1.1\r\n\r\n", Ok(())).await;
        assert!(r.starts_with("HTTP/1.1 200 ") && r.ends_with("ready\n"));
        let post = exchange(b"DELETE /metrics HTTP/1.1\r\n\r\n", Ok(())).await;
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET\r\n"));
        let missing = exchange(b"GET / HTTP/1.1\r\n\r\n", Ok(())).await;
        assert!(missing.starts_with("HTTP/1.1 404 "));
        let garbage = exchange(b"\x00\x01\x02 nonsense\r\n\r\n", Ok(())).await;
        assert!(garbage.starts_with("HTTP/1.1 400 "));
        let big = vec![b'a'; MAX_HEAD + 10];
        let too_big = exchange(&big, Ok(())).await;
        assert!(too_big.starts_with("HTTP/1.1 431 "), "{too_big}");
    }

    #[tokio::test]
    async fn a_silent_client_gets_408_after_the_timeout() {
        let (mut client, server) = tokio::io::duplex(1024);
        let task = tokio::spawn(serve_within(
            server,
            Arc::new(Fixed(Ok(()))),
            Duration::from_millis(100),
        ));
        client.write_all(b"GET /healthz HTT").await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        task.await.unwrap();
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408 "));
    }

    proptest! {
        #[test]
        fn the_request_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = head_end(&bytes);
            if let Ok(req) = parse_head(&bytes) {
                prop_assert!(req.path.starts_with('/'));
                let _ = route(&req);
            }
        }

        #[test]
        fn request_like_input_never_panics(
            method in "[A-Z]{0,8}",
            target in "[ -~]{0,40}",
            version in "HTTP/[0-9]\\.[0-9]",
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut head = format!("{method} {target} {version}\r\n").into_bytes();
            head.extend_from_slice(&tail);
            let _ = parse_head(&head);
        }
    }
}
