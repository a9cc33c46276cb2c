//! MedForge test workload: what a session container runs in the tests.
//!
//! Listens on `0.0.0.0:$PORT` (default 8080), one thread per connection:
//! - `GET /` → the session name (`MEDFORGE_SESSION`, else the host name)
//! - `GET /healthz` → `ok`
//! - `GET /env` → JSON of the GPU-related environment (`NVIDIA_*`, `MEDFORGE_*`,
//!   `CUDA_VISIBLE_DEVICES`)
//! - `GET /ws` → websocket echo (text and binary, answers ping, handles close)
//! - `GET /set-cookie` → 200 with a `Set-Cookie` for each `X-Set-Cookie`
//!   request header: a hostile session trying to plant cookies
//! - `PUT /workspace/<file>` / `GET /workspace/<file>` → write / read a file
//!   under `$WORKSPACE_DIR` (default `/workspace`)
//!
//! It never resolves a name: it binds a numeric address and reads the host
//! name from `/proc`. Built statically, it is the only file of a `FROM scratch`
//! image.

mod http;
mod paths;
mod ws;

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{BodyFraming, ParseError, RequestHead};
use ws::{FrameError, Opcode};

/// Largest request body accepted by `PUT /workspace/…`.
const MAX_BODY: u64 = 256 * 1024 * 1024;
/// How long an idle HTTP connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

struct Config {
    session: String,
    workspace: PathBuf,
}

fn main() {
    let port = match std::env::var("PORT") {
        Ok(p) => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) => {
                eprintln!("medforge-workload: invalid PORT {p:?}");
                std::process::exit(2);
            }
        },
        Err(_) => 8080,
    };
    let config = Arc::new(Config {
        session: session_name(),
        workspace: std::env::var_os("WORKSPACE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/workspace")),
    });
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("medforge-workload: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!(
        "medforge-workload: session {:?} listening on {addr}",
        config.session
    );
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let config = Arc::clone(&config);
                let spawned = std::thread::Builder::new()
                    .name("conn".into())
                    .spawn(move || {
                        if let Err(e) = serve_connection(stream, &config)
                            && !matches!(
                                e.kind(),
                                ErrorKind::UnexpectedEof
                                    | ErrorKind::ConnectionReset
                                    | ErrorKind::BrokenPipe
                                    | ErrorKind::WouldBlock
                                    | ErrorKind::TimedOut
                            )
                        {
                            eprintln!("medforge-workload: connection error: {e}");
                        }
                    });
                if let Err(e) = spawned {
                    eprintln!("medforge-workload: cannot spawn a thread: {e}");
                }
            }
            Err(e) => eprintln!("medforge-workload: accept failed: {e}"),
        }
    }
}

/// `MEDFORGE_SESSION`, else the kernel's host name (no resolver involved).
fn session_name() -> String {
    if let Ok(s) = std::env::var("MEDFORGE_SESSION")
        && !s.is_empty()
    {
        return s;
    }
    for file in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(s) = std::fs::read_to_string(file) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    "unknown".to_string()
}

/// A buffered connection: bytes read but not yet consumed live in `buf`.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn fill_or_eof(&mut self) -> io::Result<()> {
        if self.fill()? == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed mid-request",
            ));
        }
        Ok(())
    }

    /// The next message `parse` finds at the front of the buffer (which it
    /// then drops), reading more until there is one; `None` when the peer
    /// closes first, `Some(Err)` when the bytes are not a valid message.
    fn next<T, E>(
        &mut self,
        parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, E>,
    ) -> io::Result<Option<Result<T, E>>> {
        loop {
            match parse(&self.buf) {
                Ok(Some((message, used))) => {
                    self.take(used);
                    return Ok(Some(Ok(message)));
                }
                Ok(None) => {
                    if self.fill()? == 0 {
                        return Ok(None);
                    }
                }
                Err(e) => return Ok(Some(Err(e))),
            }
        }
    }

    /// Answers `status` with a plain-text `message` and no keep-alive: the
    /// last response on this connection.
    fn refuse(&mut self, status: u16, message: &str) -> io::Result<()> {
        self.write_all(&http::response(
            status,
            "text/plain",
            &[],
            message.as_bytes(),
            false,
        ))
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let rest = self.buf.split_off(n);
        std::mem::replace(&mut self.buf, rest)
    }

    fn read_exact_body(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill_or_eof()?;
        }
        Ok(self.take(n))
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.take(i + 1);
                let line = String::from_utf8_lossy(&line);
                return Ok(line.trim_end_matches(['\r', '\n']).to_string());
            }
            if self.buf.len() > 4096 {
                return Err(io::Error::new(ErrorKind::InvalidData, "line too long"));
            }
            self.fill_or_eof()?;
        }
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)?;
        self.stream.flush()
    }
}

/// Why a request failed before a handler ran.
enum RequestError {
    Parse(ParseError),
    TooLarge,
    Io(io::Error),
}

impl From<io::Error> for RequestError {
    fn from(e: io::Error) -> Self {
        RequestError::Io(e)
    }
}

fn read_body(conn: &mut Conn, head: &RequestHead) -> Result<Vec<u8>, RequestError> {
    match head.body_framing().map_err(RequestError::Parse)? {
        BodyFraming::Length(n) => {
            if n > MAX_BODY {
                return Err(RequestError::TooLarge);
            }
            // n <= MAX_BODY fits in usize.
            Ok(conn.read_exact_body(n as usize)?)
        }
        BodyFraming::Chunked => {
            let mut body = Vec::new();
            loop {
                let line = conn.read_line()?;
                let size = http::parse_chunk_size(&line).map_err(RequestError::Parse)?;
                if body.len() as u64 + size > MAX_BODY {
                    return Err(RequestError::TooLarge);
                }
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !conn.read_line()?.is_empty() {}
                    return Ok(body);
                }
                body.extend(conn.read_exact_body(size as usize)?);
                if !conn.read_line()?.is_empty() {
                    return Err(RequestError::Parse(ParseError::BadChunk));
                }
            }
        }
    }
}

fn serve_connection(stream: TcpStream, config: &Config) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
    };
    loop {
        let head = match conn.next(http::parse_request_head)? {
            None => return Ok(()),
            Some(Ok(head)) => head,
            Some(Err(e)) => return conn.refuse(e.status(), &format!("{e}\n")),
        };
        if head.path == "/ws" && head.header_has_token("upgrade", "websocket") {
            return websocket(conn, &head);
        }
        let keep_alive = head.keep_alive();
        if head
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let body = match read_body(&mut conn, &head) {
            Ok(body) => body,
            Err(RequestError::Io(e)) => return Err(e),
            Err(RequestError::Parse(e)) => return conn.refuse(e.status(), &format!("{e}\n")),
            Err(RequestError::TooLarge) => return conn.refuse(413, "body too large\n"),
        };
        let (status, content_type, payload) = route(&head, &body, config);
        // `/set-cookie` plays a hostile session: it answers with a
        // `Set-Cookie` for each `X-Set-Cookie` the request carries.
        let planted: Vec<(&str, &str)> = if head.path == "/set-cookie" {
            head.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("x-set-cookie"))
                .map(|(_, v)| ("Set-Cookie", v.as_str()))
                .collect()
        } else {
            Vec::new()
        };
        let mut response = http::response(status, content_type, &planted, &payload, keep_alive);
        if head.method == "HEAD" {
            // Same headers (Content-Length included) as GET, no body.
            response.truncate(response.len() - payload.len());
        }
        conn.write_all(&response)?;
        if !keep_alive {
            return Ok(());
        }
    }
}

fn text(status: u16, s: &str) -> (u16, &'static str, Vec<u8>) {
    (status, "text/plain; charset=utf-8", s.as_bytes().to_vec())
}

fn route(head: &RequestHead, body: &[u8], config: &Config) -> (u16, &'static str, Vec<u8>) {
    let get = head.method == "GET" || head.method == "HEAD";
    match head.path.as_str() {
        "/" if get => text(200, &config.session),
        "/healthz" if get => text(200, "ok"),
        "/env" if get => (200, "application/json", gpu_env_json().into_bytes()),
        "/ws" if get => text(426, "websocket upgrade required\n"),
        "/set-cookie" if get => text(200, "cookies set\n"),
        "/" | "/healthz" | "/env" | "/ws" | "/set-cookie" => text(405, "method not allowed\n"),
        path => match path.strip_prefix("/workspace/") {
            Some(rel) => workspace_file(head, rel, body, config),
            None => text(404, "not found\n"),
        },
    }
}

fn gpu_env_json() -> String {
    let vars: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| {
            k.starts_with("NVIDIA_") || k.starts_with("MEDFORGE_") || k == "CUDA_VISIBLE_DEVICES"
        })
        .collect();
    http::json_object(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn workspace_file(
    head: &RequestHead,
    rel: &str,
    body: &[u8],
    config: &Config,
) -> (u16, &'static str, Vec<u8>) {
    let path = match paths::workspace_path(&config.workspace, rel) {
        Ok(p) => p,
        Err(_) => return text(400, "invalid workspace path\n"),
    };
    match head.method.as_str() {
        "GET" | "HEAD" => match std::fs::read(&path) {
            Ok(data) => (200, "application/octet-stream", data),
            Err(e) if e.kind() == ErrorKind::NotFound => text(404, "no such file\n"),
            Err(e) if e.kind() == ErrorKind::IsADirectory => text(404, "is a directory\n"),
            Err(e) => text(500, &format!("read failed: {e}\n")),
        },
        "PUT" => {
            let existed = path.exists();
            if let Some(parent) = path.parent()
                && let Err(e) = std::fs::create_dir_all(parent)
            {
                return io_failure("create directory", &e);
            }
            match std::fs::File::create(&path).and_then(|mut f| {
                f.write_all(body)?;
                f.sync_all()
            }) {
                Ok(()) => {
                    let status = if existed { 200 } else { 201 };
                    text(status, &format!("{}\n", body.len()))
                }
                Err(e) => io_failure("write", &e),
            }
        }
        _ => text(405, "method not allowed\n"),
    }
}

fn io_failure(what: &str, e: &io::Error) -> (u16, &'static str, Vec<u8>) {
    // EDQUOT (122) and ENOSPC (28): the workspace quota is full.
    let status = match e.raw_os_error() {
        Some(122) | Some(28) => 507,
        _ => 500,
    };
    text(status, &format!("{what} failed: {e}\n"))
}

fn websocket(mut conn: Conn, head: &RequestHead) -> io::Result<()> {
    let key = match head.header("sec-websocket-key") {
        Some(k) if head.method == "GET" && head.header("sec-websocket-version") == Some("13") => {
            k.to_string()
        }
        _ => {
            conn.write_all(&http::response(
                400,
                "text/plain",
                &[("Sec-WebSocket-Version", "13")],
                b"bad websocket handshake\n",
                false,
            ))?;
            return Ok(());
        }
    };
    let accept = ws::accept_key(&key);
    let handshake = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    conn.write_all(handshake.as_bytes())?;
    conn.stream.set_read_timeout(None)?;

    let mut message: Option<(Opcode, Vec<u8>)> = None;
    loop {
        let frame = match conn.next(|buf| ws::decode_frame(buf, ws::MAX_PAYLOAD))? {
            None => return Ok(()),
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return close_with(&mut conn, e.close_code()),
        };
        if !frame.masked {
            return close_with(&mut conn, 1002);
        }
        match frame.opcode {
            Opcode::Ping => {
                conn.write_all(&ws::encode_frame(true, Opcode::Pong, &frame.payload, None))?
            }
            Opcode::Pong => {}
            Opcode::Close => {
                let reply = ws::close_reply(&frame.payload);
                conn.write_all(&ws::encode_frame(true, Opcode::Close, &reply, None))?;
                return Ok(());
            }
            Opcode::Text | Opcode::Binary => {
                if message.is_some() {
                    return close_with(&mut conn, 1002);
                }
                if frame.fin {
                    echo(&mut conn, frame.opcode, &frame.payload)?;
                } else {
                    message = Some((frame.opcode, frame.payload));
                }
            }
            Opcode::Continuation => {
                let Some((opcode, mut data)) = message.take() else {
                    return close_with(&mut conn, 1002);
                };
                data.extend_from_slice(&frame.payload);
                if data.len() as u64 > ws::MAX_PAYLOAD {
                    return close_with(&mut conn, FrameError::TooLarge.close_code());
                }
                if frame.fin {
                    echo(&mut conn, opcode, &data)?;
                } else {
                    message = Some((opcode, data));
                }
            }
        }
    }
}

fn echo(conn: &mut Conn, opcode: Opcode, data: &[u8]) -> io::Result<()> {
    if opcode == Opcode::Text && std::str::from_utf8(data).is_err() {
        return close_with(conn, 1007);
    }
    conn.write_all(&ws::encode_frame(true, opcode, data, None))
}

fn close_with(conn: &mut Conn, code: u16) -> io::Result<()> {
    conn.write_all(&ws::encode_frame(
        true,
        Opcode::Close,
        &code.to_be_bytes(),
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> Config {
        Config {
            session: "s-test".into(),
            workspace: dir.to_path_buf(),
        }
    }

    fn head(method: &str, path: &str) -> RequestHead {
        let raw = format!("{method} {path} HTTP/1.1\r\n\r\n");
        http::parse_request_head(raw.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn routes_root_and_unknown_paths() {
        let dir = std::env::temp_dir();
        let c = config(&dir);
        let (status, _, body) = route(&head("GET", "/"), b"", &c);
        assert_eq!((status, body.as_slice()), (200, &b"s-test"[..]));
        assert_eq!(route(&head("GET", "/nope"), b"", &c).0, 404);
        assert_eq!(route(&head("POST", "/"), b"", &c).0, 405);
        assert_eq!(route(&head("GET", "/ws"), b"", &c).0, 426);
        assert_eq!(route(&head("GET", "/workspace/../x"), b"", &c).0, 400);
        assert_eq!(route(&head("PUT", "/workspace//etc/x"), b"", &c).0, 400);
    }

    #[test]
    fn workspace_put_then_get() {
        let dir = std::env::temp_dir().join(format!("mf-workload-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = config(&dir);
        let name = "sub/hello.txt";
        let path = format!("/workspace/{name}");
        assert_eq!(route(&head("GET", &path), b"", &c).0, 404);
        assert_eq!(route(&head("PUT", &path), b"hi there", &c).0, 201);
        assert_eq!(route(&head("PUT", &path), b"hi again", &c).0, 200);
        let (status, _, body) = route(&head("GET", &path), b"", &c);
        assert_eq!((status, body.as_slice()), (200, &b"hi again"[..]));
        assert_eq!(route(&head("DELETE", &path), b"", &c).0, 405);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
