//! A real HTTP peer: Python's `http.server` on 127.0.0.1 (a port the kernel chooses), serving a
//! temporary directory. It exits when its standard input closes, i.e. at the latest when the test
//! process ends, so a server kept in a static never outlives the tests.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use tempfile::TempDir;

use super::ChildGuard;

pub struct HttpServer {
    _child: ChildGuard,
    pub dir: TempDir,
    pub port: u16,
}

const SCRIPT: &str = r#"
import functools, http.server, sys, threading
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
handler = functools.partial(Quiet, directory=sys.argv[1])
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), handler)
print("port %d" % server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
"#;

impl HttpServer {
    /// On a port the kernel chooses.
    pub fn start() -> HttpServer {
        HttpServer::start_on(0)
    }

    /// On `port` (0: the kernel chooses); fails the test when the port is taken.
    pub fn start_on(wanted: u16) -> HttpServer {
        let dir = TempDir::new().expect("temp dir");
        let child = Command::new("python3")
            .args(["-c", SCRIPT])
            .arg(dir.path())
            .arg(wanted.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start python3 ({e}): apt-get install -y python3"));
        let mut child = ChildGuard(child);
        let mut line = String::new();
        let stdout = child.0.stdout.take().expect("piped stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse::<u16>().ok());
        let Some(port) = port else {
            let mut err = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!(
                "the loopback HTTP server did not start on 127.0.0.1:{wanted} (is the port taken?): {line:?} {err}"
            );
        };
        HttpServer {
            _child: child,
            dir,
            port,
        }
    }

    /// `http://127.0.0.1:PORT/REL`.
    pub fn url(&self, rel: &str) -> String {
        format!("http://127.0.0.1:{}/{rel}", self.port)
    }

    /// Serve `data` at `/REL`.
    pub fn put(&self, rel: &str, data: &[u8]) {
        let path = self.dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create served directory");
        }
        std::fs::write(path, data).expect("write served file");
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}
