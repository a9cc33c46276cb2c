//! Minimal HTTP/1.x request parsing and response writing (std only).

use std::fmt;

/// Largest request head (request line plus headers) we accept.
pub const MAX_HEAD: usize = 16 * 1024;

/// The parsed request line and headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target without the query string.
    pub path: String,
    /// The query string (after `?`), if any.
    pub query: Option<String>,
    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header contains this token (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the connection stays open after this request.
    pub fn keep_alive(&self) -> bool {
        if self.header_has_token("connection", "close") {
            false
        } else if self.minor_version == 0 {
            self.header_has_token("connection", "keep-alive")
        } else {
            true
        }
    }

    /// How the body is framed.
    pub fn body_framing(&self) -> Result<BodyFraming, ParseError> {
        if let Some(te) = self.header("transfer-encoding") {
            if te.trim().eq_ignore_ascii_case("chunked") {
                return Ok(BodyFraming::Chunked);
            }
            return Err(ParseError::UnsupportedTransferEncoding);
        }
        match self.header("content-length") {
            None => Ok(BodyFraming::Length(0)),
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map(BodyFraming::Length)
                .map_err(|_| ParseError::BadContentLength),
        }
    }
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Length(u64),
    Chunked,
}

/// Why a request could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    HeadTooLarge,
    BadRequestLine,
    BadVersion,
    BadHeader,
    BadContentLength,
    UnsupportedTransferEncoding,
    BadChunk,
}

impl ParseError {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            ParseError::HeadTooLarge => 431,
            ParseError::BadVersion => 505,
            ParseError::UnsupportedTransferEncoding => 501,
            _ => 400,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ParseError::HeadTooLarge => "request head too large",
            ParseError::BadRequestLine => "malformed request line",
            ParseError::BadVersion => "unsupported HTTP version",
            ParseError::BadHeader => "malformed header",
            ParseError::BadContentLength => "malformed Content-Length",
            ParseError::UnsupportedTransferEncoding => "unsupported Transfer-Encoding",
            ParseError::BadChunk => "malformed chunked body",
        };
        f.write_str(s)
    }
}

/// Finds the end of the head (index just past the empty line), accepting CRLF or bare LF.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            let line = &buf[line_start..i];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() && line_start > 0 {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

/// Parses a request head from the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, or the head and the number of
/// bytes it used.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, ParseError> {
    // Tolerate empty lines before the request line (RFC 9112 2.2).
    let skip = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[skip..];
    let Some(end) = head_end(rest) else {
        if buf.len() > MAX_HEAD {
            return Err(ParseError::HeadTooLarge);
        }
        return Ok(None);
    };
    if end > MAX_HEAD {
        return Err(ParseError::HeadTooLarge);
    }
    let text = std::str::from_utf8(&rest[..end]).map_err(|_| ParseError::BadHeader)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().ok_or(ParseError::BadRequestLine)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadRequestLine);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) || target.is_empty() {
        return Err(ParseError::BadRequestLine);
    }
    let minor_version = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return Err(ParseError::BadVersion),
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or(ParseError::BadHeader)?;
        if name.is_empty()
            || name
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(ParseError::BadHeader);
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Some((
        RequestHead {
            method: method.to_string(),
            path,
            query,
            minor_version,
            headers,
        },
        skip + end,
    )))
}

/// Parses a chunk-size line (without its line ending), ignoring chunk extensions.
pub fn parse_chunk_size(line: &str) -> Result<u64, ParseError> {
    let size = line.split(';').next().unwrap_or("").trim();
    if size.is_empty() || size.len() > 15 {
        return Err(ParseError::BadChunk);
    }
    u64::from_str_radix(size, 16).map_err(|_| ParseError::BadChunk)
}

/// The reason phrase for the status codes this program uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// Serialises a complete response with a Content-Length body.
pub fn response(
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    if !body.is_empty() || status != 204 {
        out.push_str(&format!("Content-Type: {content_type}\r\n"));
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in extra_headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Escapes a string as a JSON string literal (with quotes).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON object of string keys and values, in the given order.
pub fn json_object<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let body: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
        .collect();
    format!("{{{}}}", body.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_simple_get() {
        let raw = b"GET /env?x=1 HTTP/1.1\r\nHost: a\r\nX-Thing:  v  \r\n\r\nrest";
        let (head, used) = parse_request_head(raw).unwrap().unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.path, "/env");
        assert_eq!(head.query.as_deref(), Some("x=1"));
        assert_eq!(head.minor_version, 1);
        assert_eq!(head.header("host"), Some("a"));
        assert_eq!(head.header("x-thing"), Some("v"));
        assert_eq!(&raw[used..], b"rest");
        assert!(head.keep_alive());
        assert_eq!(head.body_framing().unwrap(), BodyFraming::Length(0));
    }

    #[test]
    fn needs_more_bytes_for_a_partial_head() {
        assert_eq!(
            parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap(),
            None
        );
        assert_eq!(parse_request_head(b"").unwrap(), None);
    }

    #[test]
    fn accepts_bare_lf_and_leading_empty_lines() {
        let raw = b"\r\nPUT /workspace/a HTTP/1.0\nContent-Length: 3\n\nabc";
        let (head, used) = parse_request_head(raw).unwrap().unwrap();
        assert_eq!(head.method, "PUT");
        assert_eq!(head.minor_version, 0);
        assert!(!head.keep_alive());
        assert_eq!(head.body_framing().unwrap(), BodyFraming::Length(3));
        assert_eq!(&raw[used..], b"abc");
    }

    #[test]
    fn rejects_malformed_heads() {
        let huge = vec![b'a'; MAX_HEAD + 10];
        let cases: [(&[u8], ParseError); 5] = [
            (b"GET /\r\n\r\n", ParseError::BadRequestLine),
            (b"GET / HTTP/2.0\r\n\r\n", ParseError::BadVersion),
            (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", ParseError::BadHeader),
            (
                b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
                ParseError::BadHeader,
            ),
            (&huge, ParseError::HeadTooLarge),
        ];
        for (head, error) in cases {
            assert_eq!(
                parse_request_head(head).unwrap_err(),
                error,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn body_framing_and_connection_tokens() {
        let raw =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: Upgrade, close\r\n\r\n";
        let (head, _) = parse_request_head(raw).unwrap().unwrap();
        assert_eq!(head.body_framing().unwrap(), BodyFraming::Chunked);
        assert!(head.header_has_token("connection", "upgrade"));
        assert!(!head.keep_alive());
        let raw = b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n";
        let (head, _) = parse_request_head(raw).unwrap().unwrap();
        assert_eq!(
            head.body_framing().unwrap_err(),
            ParseError::BadContentLength
        );
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size("1a").unwrap(), 26);
        assert_eq!(parse_chunk_size("0;ext=1").unwrap(), 0);
        assert!(parse_chunk_size("").is_err());
        assert!(parse_chunk_size("zz").is_err());
    }

    #[test]
    fn responses_and_json() {
        let r = response(200, "text/plain", &[("X-A", "b")], b"hi", false);
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(s.contains("Content-Length: 2\r\n"));
        assert!(s.contains("X-A: b\r\n"));
        assert!(s.ends_with("Connection: close\r\n\r\nhi"));
        assert_eq!(
            json_object([("A", "x\"y"), ("B", "\u{1}")]),
            r#"{"A":"x\"y","B":"\u0001"}"#
        );
    }
}
