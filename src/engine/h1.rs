//! The measuring client for plain `http://` targets: HTTP/1.1 over a socket
//! owned by the request's own task.
//!
//! A general client (hyper's) reads the socket in a connection task and
//! hands each body frame to the request task through a channel: two task
//! wake-ups per token, and the timestamp is taken on the far side of that
//! queue. Here the task that awaits the socket is the one that stamps and
//! parses, so each token costs one wake-up and one `read`, and the instant
//! is taken the moment `read` returns. `https://` targets (hosted APIs) keep
//! the general client, where network latency dwarfs these microseconds.
//!
//! Scope: `POST` with a JSON body, keep-alive connections reused through a
//! small idle pool, responses framed by `Transfer-Encoding: chunked`,
//! `Content-Length` or connection close, `1xx` interim responses skipped.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::WaitForCancellationFuture;

use super::chunked::ChunkedDecoder;
use super::record::{ErrorClass, RequestRecord};
use super::request::{
    end_of_body, fail, fail_http, Decoder, Step, Transport, READ_BUFFER, SAMPLE_BYTES,
};
use super::retry::parse_retry_after;
use crate::api::Protocol;
use tokio_util::sync::CancellationToken;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Headers parsed per response.
const MAX_HEADERS: usize = 64;
/// How long a finished stream may take to deliver the end of its HTTP body
/// before the connection is closed instead of reused.
const DRAIN_WAIT: Duration = Duration::from_millis(100);
/// How long an error body is read for its sample.
const ERROR_BODY_WAIT: Duration = Duration::from_secs(2);
/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections opened at once when warming the pool.
const WARM_BATCH: usize = 64;

/// A plain-HTTP target and its idle keep-alive connections.
#[derive(Debug)]
pub struct Http1Target {
    /// `host:port` to connect to.
    authority: String,
    /// Value of the `Host` header.
    host: String,
    /// Path prefix of the base URL, without a trailing slash.
    prefix: String,
    idle: Mutex<Vec<TcpStream>>,
}

impl Http1Target {
    /// The target of an `http://` base URL; `None` for other schemes.
    pub fn from_base(base: &str) -> Option<Self> {
        let uri: http::Uri = base.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let auth = uri.authority()?;
        let host = match auth.port() {
            Some(p) => format!("{}:{}", auth.host(), p.as_str()),
            None => auth.host().to_owned(),
        };
        Some(Self {
            authority: format!("{}:{}", auth.host(), auth.port_u16().unwrap_or(80)),
            host,
            prefix: uri.path().trim_end_matches('/').to_owned(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The bytes of a `POST` of `body` to `path` with `headers`.
    fn request_bytes(&self, path: &str, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + body.len());
        out.extend_from_slice(b"POST ");
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1");
        if !headers.contains_key(http::header::HOST) {
            out.extend_from_slice(b"\r\nhost: ");
            out.extend_from_slice(self.host.as_bytes());
        }
        if !headers.contains_key(http::header::CONTENT_TYPE) {
            out.extend_from_slice(b"\r\ncontent-type: application/json");
        }
        out.extend_from_slice(b"\r\ncontent-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        for (name, value) in headers {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
        out
    }

    /// An idle connection that is still open, or a new one; true when reused.
    async fn checkout(&self) -> std::io::Result<(TcpStream, bool)> {
        while let Some(conn) = self.pop_idle() {
            // An idle keep-alive connection must have nothing to read: a
            // readable one was closed by the server (or sent garbage).
            let mut probe = [0u8; 1];
            if matches!(conn.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            {
                return Ok((conn, true));
            }
        }
        Ok((self.connect().await?, false))
    }

    /// A new connection, Nagle off.
    async fn connect(&self) -> std::io::Result<TcpStream> {
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        conn.set_nodelay(true)?;
        Ok(conn)
    }

    /// Puts one open connection in the idle pool; errors are ignored.
    pub(super) async fn preconnect(&self) {
        if let Ok((conn, _)) = self.checkout().await {
            self.checkin(conn);
        }
    }

    /// Opens connections until `n` are idle, [`WARM_BATCH`] at a time so a
    /// thousand users do not send a thousand SYNs in one burst. Failures
    /// are left to the requests, which report them.
    pub(super) async fn fill_idle(&self, n: usize) {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        let mut missing = n.saturating_sub(idle);
        while missing > 0 {
            let batch = missing.min(WARM_BATCH);
            let opened = futures_util::future::join_all((0..batch).map(|_| self.connect())).await;
            let mut ok = 0;
            for conn in opened.into_iter().flatten() {
                self.checkin(conn);
                ok += 1;
            }
            if ok == 0 {
                return;
            }
            missing -= batch;
        }
    }

    fn pop_idle(&self) -> Option<TcpStream> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn checkin(&self, conn: TcpStream) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }
}

/// Why an exchange stopped before its end.
enum Abort {
    Timeout,
    Cancelled,
}

/// The run's deadline and cancellation, checked at every await.
struct Guard<'a, 'c> {
    deadline: Pin<&'a mut tokio::time::Sleep>,
    cancelled: Pin<&'a mut WaitForCancellationFuture<'c>>,
}

impl Guard<'_, '_> {
    async fn run<T>(&mut self, f: impl Future<Output = T>) -> Result<T, Abort> {
        tokio::select! {
            biased;
            v = f => Ok(v),
            () = &mut self.deadline => Err(Abort::Timeout),
            () = &mut self.cancelled => Err(Abort::Cancelled),
        }
    }
}

/// A parsed response head.
struct Head {
    status: u16,
    /// Length of the head in the buffer.
    len: usize,
    framing: BodyFraming,
    keep_alive: bool,
    /// The `Retry-After` value, when the server sent one.
    retry_after: Option<String>,
}

/// How the end of the body is found.
enum BodyFraming {
    Chunked(ChunkedDecoder),
    Length(u64),
    UntilClose,
}

/// What stopped the head from being read.
enum HeadError {
    /// The connection closed before a single response byte.
    ClosedEarly,
    Io(String),
}

/// Sends a `POST` of `body` to `path` over `target` and reads the streamed
/// answer into `rec`, exactly as [`super::request::execute`] does over the
/// general client.
pub(super) async fn execute(
    t: &Transport,
    target: &Http1Target,
    path: &str,
    body: &[u8],
    rec: &mut RequestRecord,
    cancel: &CancellationToken,
    on_chunk: &mut impl FnMut(Instant, &[u8]),
) {
    let wire = target.request_bytes(path, &t.headers, body);
    rec.sent = Instant::now();
    let deadline = tokio::time::sleep(t.timeout);
    tokio::pin!(deadline);
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let mut guard = Guard {
        deadline,
        cancelled,
    };
    if let Err(a) = exchange(t, target, &wire, rec, &mut guard, on_chunk).await {
        let now = Instant::now();
        match a {
            Abort::Timeout if rec.headers.is_none() => fail(
                rec,
                ErrorClass::Timeout,
                format!("no response within {:?}", t.timeout),
                now,
            ),
            Abort::Timeout => fail(
                rec,
                ErrorClass::Timeout,
                format!("stream not finished within {:?}", t.timeout),
                now,
            ),
            Abort::Cancelled => fail(rec, ErrorClass::Cancelled, "run ended".into(), now),
        };
    }
}

async fn exchange(
    t: &Transport,
    target: &Http1Target,
    wire: &[u8],
    rec: &mut RequestRecord,
    g: &mut Guard<'_, '_>,
    on_chunk: &mut impl FnMut(Instant, &[u8]),
) -> Result<(), Abort> {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut retried = false;
    loop {
        let asked = Instant::now();
        let (mut conn, reused) = match g.run(target.checkout()).await? {
            Ok(c) if c.1 => {
                rec.connect = Some(Duration::ZERO);
                c
            }
            Ok(c) => {
                rec.connect = Some(asked.elapsed());
                c
            }
            Err(e) => {
                let msg = format!("cannot connect to {}: {e}", target.authority);
                fail(rec, ErrorClass::Connect, msg, Instant::now());
                return Ok(());
            }
        };
        let head = match g.run(conn.write_all(wire)).await? {
            Ok(()) => read_head(&mut conn, &mut buf, g).await?,
            Err(_) if reused && !retried => {
                // The server closed the idle connection as it was taken and
                // the request could not be written: send it on a new one.
                // (A request that was written is never sent twice.)
                retried = true;
                rec.sent = Instant::now();
                continue;
            }
            Err(e) => Err(HeadError::Io(format!("cannot send the request: {e}"))),
        };
        let (head, filled, at) = match head {
            Ok(h) => h,
            Err(HeadError::ClosedEarly) => {
                let msg = "the server closed the connection without answering".to_owned();
                fail(rec, ErrorClass::Io, msg, Instant::now());
                return Ok(());
            }
            Err(HeadError::Io(msg)) => {
                fail(rec, ErrorClass::Io, msg, Instant::now());
                return Ok(());
            }
        };
        rec.headers = Some(at);
        rec.status = Some(head.status);
        if !(200..300).contains(&head.status) {
            rec.retry_after = head
                .retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
            read_error_body(&mut conn, &mut buf, head, filled, rec).await;
            return Ok(());
        }
        let reusable =
            read_stream(t, &mut conn, &mut buf, head, filled, at, rec, g, on_chunk).await?;
        if reusable {
            target.checkin(conn);
        }
        return Ok(());
    }
}

/// Reads until the response head is complete. Returns the head, how much of
/// `buf` is filled, and the instant of the read that completed it.
async fn read_head(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    g: &mut Guard<'_, '_>,
) -> Result<Result<(Head, usize, Instant), HeadError>, Abort> {
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if buf.len() >= MAX_HEAD {
                return Ok(Err(HeadError::Io(format!(
                    "response headers larger than {} KiB",
                    MAX_HEAD / 1024
                ))));
            }
            buf.resize(buf.len() * 2, 0);
        }
        let n = g.run(conn.read(&mut buf[filled..])).await?;
        let at = Instant::now();
        let n = match n {
            Ok(0) if filled == 0 => return Ok(Err(HeadError::ClosedEarly)),
            Ok(0) => {
                let msg = "connection closed in the middle of the response headers";
                return Ok(Err(HeadError::Io(msg.into())));
            }
            Ok(n) => n,
            Err(e) if filled == 0 && is_reset(&e) => return Ok(Err(HeadError::ClosedEarly)),
            Err(e) => return Ok(Err(HeadError::Io(format!("cannot read the response: {e}")))),
        };
        filled += n;
        loop {
            match parse_head(&buf[..filled]) {
                Ok(Some(head)) if (100..200).contains(&head.status) && head.status != 101 => {
                    // An interim response (100 Continue): drop it, read on.
                    buf.copy_within(head.len..filled, 0);
                    filled -= head.len;
                }
                Ok(Some(head)) => return Ok(Ok((head, filled, at))),
                Ok(None) => break,
                Err(msg) => return Ok(Err(HeadError::Io(msg))),
            }
        }
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionAborted
    )
}

/// The head at the start of `bytes`, `None` when it is not complete yet.
fn parse_head(bytes: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("invalid HTTP response head: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let mut keep_alive = resp.version == Some(1);
    let mut chunked = false;
    let mut length = None;
    let mut retry_after = None;
    for h in resp.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("invalid content-length '{value}'"))?,
            );
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            retry_after = Some(value.into_owned());
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                keep_alive = false;
            } else if v.contains("keep-alive") {
                keep_alive = true;
            }
        }
    }
    let framing = if chunked {
        BodyFraming::Chunked(ChunkedDecoder::default())
    } else if matches!(status, 204 | 304) {
        BodyFraming::Length(0)
    } else if let Some(n) = length {
        BodyFraming::Length(n)
    } else {
        keep_alive = false;
        BodyFraming::UntilClose
    };
    Ok(Some(Head {
        status,
        len,
        framing,
        keep_alive,
        retry_after,
    }))
}

/// Body bytes of one read, as ranges of that read's bytes.
struct Framed {
    done: bool,
    /// Bytes left over after the end of the body.
    excess: bool,
}

impl BodyFraming {
    fn take(
        &mut self,
        input: &[u8],
        data: &mut Vec<std::ops::Range<usize>>,
    ) -> Result<Framed, String> {
        match self {
            BodyFraming::Chunked(d) => {
                let r = d.decode(input, data).map_err(|e| e.to_string())?;
                Ok(Framed {
                    done: r.done,
                    excess: r.consumed < input.len(),
                })
            }
            BodyFraming::Length(left) => {
                let take = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                data.clear();
                if take > 0 {
                    data.push(0..take);
                }
                *left -= take as u64;
                Ok(Framed {
                    done: *left == 0,
                    excess: take < input.len(),
                })
            }
            BodyFraming::UntilClose => {
                data.clear();
                data.push(0..input.len());
                Ok(Framed {
                    done: false,
                    excess: false,
                })
            }
        }
    }
}

/// Reads the streamed body into `rec`. Returns true when the connection
/// ended cleanly at the end of the body and can carry another request.
#[allow(clippy::too_many_arguments)]
async fn read_stream(
    t: &Transport,
    conn: &mut TcpStream,
    buf: &mut [u8],
    mut head: Head,
    filled: usize,
    first_at: Instant,
    rec: &mut RequestRecord,
    g: &mut Guard<'_, '_>,
    on_chunk: &mut impl FnMut(Instant, &[u8]),
) -> Result<bool, Abort> {
    let p: &dyn Protocol = t.protocol.as_ref();
    let mut dec = Decoder::new(p.framing());
    let mut ranges = Vec::with_capacity(4);
    let (mut start, mut end, mut at) = (head.len, filled, first_at);
    // Set once the protocol's stream is over (terminator or error); the rest
    // of the HTTP body is then only drained for connection reuse.
    let mut stopped = false;
    loop {
        let framed = match head.framing.take(&buf[start..end], &mut ranges) {
            Ok(f) => f,
            Err(msg) if !stopped => {
                fail(rec, ErrorClass::Malformed, msg, at);
                return Ok(false);
            }
            Err(_) => return Ok(false),
        };
        if !stopped {
            for r in &ranges {
                let bytes = &buf[start + r.start..start + r.end];
                let step = dec.feed(p, bytes, at, rec);
                on_chunk(at, bytes);
                if let Step::Stop = step {
                    stopped = true;
                    break;
                }
            }
        }
        if framed.done {
            if !stopped {
                end_of_body(&mut dec, p, rec, at);
            }
            return Ok(head.keep_alive && !framed.excess && rec.error.is_none());
        }
        if stopped && rec.error.is_some() {
            return Ok(false);
        }
        let n = if stopped {
            match tokio::time::timeout(DRAIN_WAIT, conn.read(buf)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return Ok(false),
            }
        } else {
            let n = g.run(conn.read(buf)).await?;
            at = Instant::now();
            match n {
                Ok(0) => {
                    body_closed(&mut dec, p, &head.framing, rec, at);
                    return Ok(false);
                }
                Ok(n) => n,
                Err(e) => {
                    let msg = format!("connection lost mid-stream: {e}");
                    fail(rec, ErrorClass::Truncated, msg, at);
                    return Ok(false);
                }
            }
        };
        (start, end) = (0, n);
    }
}

/// The connection closed before the body's framing said it ended.
fn body_closed(
    dec: &mut Decoder,
    p: &dyn Protocol,
    framing: &BodyFraming,
    rec: &mut RequestRecord,
    at: Instant,
) {
    if let BodyFraming::UntilClose = framing {
        end_of_body(dec, p, rec, at);
    } else {
        let msg = "connection lost mid-stream: connection closed before the message completed";
        fail(rec, ErrorClass::Truncated, msg.into(), at);
    }
}

/// Keeps a sample of an error response's body and records the HTTP error.
async fn read_error_body(
    conn: &mut TcpStream,
    buf: &mut [u8],
    mut head: Head,
    filled: usize,
    rec: &mut RequestRecord,
) {
    let code = head.status;
    let mut body = Vec::new();
    let mut ranges = Vec::new();
    let (mut start, mut end) = (head.len, filled);
    let started = Instant::now();
    while let Ok(framed) = head.framing.take(&buf[start..end], &mut ranges) {
        for r in &ranges {
            body.extend_from_slice(&buf[start + r.start..start + r.end]);
        }
        if framed.done || body.len() > SAMPLE_BYTES * 4 {
            break;
        }
        let wait = ERROR_BODY_WAIT.saturating_sub(started.elapsed());
        match tokio::time::timeout(wait, conn.read(buf)).await {
            Ok(Ok(n)) if n > 0 => (start, end) = (0, n),
            _ => break,
        }
    }
    fail_http(rec, code, &body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_map_to_authority_host_and_prefix() {
        let t = Http1Target::from_base("http://127.0.0.1:8000").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.host.as_str(), t.prefix.as_str()),
            ("127.0.0.1:8000", "127.0.0.1:8000", "")
        );
        let t = Http1Target::from_base("http://localhost/api/").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.host.as_str(), t.prefix.as_str()),
            ("localhost:80", "localhost", "/api")
        );
        let t = Http1Target::from_base("http://[::1]:9000/x").unwrap();
        assert_eq!(t.authority, "[::1]:9000");
        assert!(Http1Target::from_base("https://api.openai.com").is_none());
    }

    #[test]
    fn request_carries_host_length_and_headers() {
        let t = Http1Target::from_base("http://127.0.0.1:8000/p").unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-test", http::HeaderValue::from_static("1"));
        let wire = t.request_bytes("/v1/chat/completions", &h, b"{}");
        let text = String::from_utf8(wire).unwrap();
        assert_eq!(
            text,
            "POST /p/v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:8000\r\n\
             content-type: application/json\r\ncontent-length: 2\r\nx-test: 1\r\n\r\n{}"
        );
    }

    #[test]
    fn a_host_header_given_by_the_user_replaces_the_default() {
        let t = Http1Target::from_base("http://127.0.0.1:8000").unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            http::header::HOST,
            http::HeaderValue::from_static("api.example"),
        );
        let text = String::from_utf8(t.request_bytes("/x", &h, b"")).unwrap();
        assert_eq!(text.matches("host: ").count(), 1, "{text}");
        assert!(text.contains("host: api.example\r\n"), "{text}");
    }

    #[test]
    fn heads_are_parsed_with_their_framing() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.len, h.keep_alive), (200, 47, true));
        assert!(matches!(h.framing, BodyFraming::Chunked(_)));
        let h =
            parse_head(b"HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\nconnection: close\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(matches!(h.framing, BodyFraming::Length(5)) && !h.keep_alive);
        let h = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(matches!(h.framing, BodyFraming::UntilClose) && !h.keep_alive);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le")
            .unwrap()
            .is_none());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }
}
