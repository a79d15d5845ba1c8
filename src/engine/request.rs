//! Executes one streamed request and fills its record.
//!
//! Every instant is taken right after the socket read returns, before the
//! bytes are decoded or parsed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

use super::h1::Http1Target;
use super::record::{ErrorClass, RequestRecord};
use crate::api::{sample_text, Framing, GenRequest, Protocol};
use crate::stream::{NdjsonDecoder, SseDecoder, SseEvent};

/// Longest error-body sample kept per error class.
pub(super) const SAMPLE_BYTES: usize = 300;

/// The HTTP client used for measured requests.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Bytes read from a socket at once. Fixed rather than adaptive: SSE chunks
/// are small, and adaptive buffers grow to ~20 KB per stream under load
/// (20 MB at 1,000 streams) without making reads any cheaper.
pub(super) const READ_BUFFER: usize = 4096;

/// Builds the measuring client: one connection pool for the whole run, Nagle
/// off so small requests leave at once, no proxy (a proxy would distort every
/// timing), TLS with the Mozilla roots for hosted APIs.
pub fn build_http_client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .http1_read_buf_exact_size(READ_BUFFER)
        .build(https)
}

/// Everything needed to send requests to one target.
pub struct Transport {
    /// Shared connection pool.
    pub client: HttpClient,
    /// Base URL without trailing slash, e.g. `http://127.0.0.1:8000`.
    pub base: String,
    /// Extra headers (authentication included) sent with every request.
    pub headers: HeaderMap,
    /// The wire protocol.
    pub protocol: Arc<dyn Protocol>,
    /// Per-request deadline, from send to end of stream.
    pub timeout: Duration,
    /// The socket-owning HTTP/1.1 client for `http://` targets; `None`
    /// sends through [`Transport::client`] (TLS, or when forced).
    pub h1: Option<Http1Target>,
}

impl Transport {
    /// A transport to `base`: `http://` targets use the socket-owning
    /// HTTP/1.1 client ([`super::h1`]), others the general client.
    pub fn new(
        base: &str,
        headers: HeaderMap,
        protocol: Arc<dyn Protocol>,
        timeout: Duration,
    ) -> Self {
        Self {
            client: build_http_client(),
            base: base.trim_end_matches('/').to_owned(),
            headers,
            protocol,
            timeout,
            h1: Http1Target::from_base(base),
        }
    }

    /// Opens a keep-alive connection ahead of the first request, so that
    /// request does not pay for TCP setup (plain `http://` targets; TLS
    /// targets connect on first use). Failures are left to the request,
    /// which reports them.
    pub async fn preconnect(&self) {
        if let Some(t) = &self.h1 {
            t.preconnect().await;
        }
    }

    /// Opens connections ahead of the load until `n` are idle (plain
    /// `http://` targets), so no measured request pays for TCP setup.
    pub async fn warm_connections(&self, n: u32) {
        if let Some(t) = &self.h1 {
            t.fill_idle(n as usize).await;
        }
    }
}

pub(super) enum Step {
    Continue,
    Stop,
}

pub(super) struct Decoder {
    framing: Framing,
    sse: SseDecoder,
    ndjson: NdjsonDecoder,
    events: Vec<SseEvent>,
    lines: Vec<String>,
    done: bool,
    finished: bool,
}

impl Decoder {
    pub(super) fn new(framing: Framing) -> Self {
        Self {
            framing,
            sse: SseDecoder::new(),
            ndjson: NdjsonDecoder::new(),
            events: Vec::new(),
            lines: Vec::new(),
            done: false,
            finished: false,
        }
    }

    /// Decodes a chunk that arrived at `at`, updating the record.
    pub(super) fn feed(
        &mut self,
        p: &dyn Protocol,
        bytes: &[u8],
        at: Instant,
        rec: &mut RequestRecord,
    ) -> Step {
        match self.framing {
            Framing::Sse => {
                self.sse.feed(bytes, &mut self.events);
                let events = std::mem::take(&mut self.events);
                let step = self.apply_all(
                    p,
                    events.iter().map(|e| (e.event.as_deref(), e.data.as_str())),
                    at,
                    rec,
                );
                self.events = events;
                self.events.clear();
                step
            }
            Framing::Ndjson => {
                self.ndjson.feed(bytes, &mut self.lines);
                let lines = std::mem::take(&mut self.lines);
                let step = self.apply_all(p, lines.iter().map(|l| (None, l.as_str())), at, rec);
                self.lines = lines;
                self.lines.clear();
                step
            }
        }
    }

    fn apply_all<'a>(
        &mut self,
        p: &dyn Protocol,
        msgs: impl Iterator<Item = (Option<&'a str>, &'a str)>,
        at: Instant,
        rec: &mut RequestRecord,
    ) -> Step {
        for (event, data) in msgs {
            if let Step::Stop = self.apply(p, event, data, at, rec) {
                return Step::Stop;
            }
        }
        Step::Continue
    }

    fn apply(
        &mut self,
        p: &dyn Protocol,
        event: Option<&str>,
        data: &str,
        at: Instant,
        rec: &mut RequestRecord,
    ) -> Step {
        rec.messages += 1;
        let parsed = match p.parse_capture(event, data, rec.answer.as_mut()) {
            Ok(e) => e,
            Err(e) => return fail(rec, ErrorClass::Malformed, e.to_string(), at),
        };
        if let Some(msg) = parsed.error {
            return fail(rec, ErrorClass::StreamError, msg, at);
        }
        if parsed.content {
            rec.token_times.push(at);
        }
        if let Some(u) = parsed.usage {
            rec.usage.input_tokens = u.input_tokens.or(rec.usage.input_tokens);
            rec.usage.output_tokens = u.output_tokens.or(rec.usage.output_tokens);
        }
        if parsed.server.is_some() {
            rec.server = parsed.server;
        }
        if parsed.finished {
            self.finished = true;
        }
        if parsed.done {
            self.done = true;
            rec.end = at;
            return Step::Stop;
        }
        Step::Continue
    }

    fn has_partial(&self) -> bool {
        self.sse.has_partial()
    }
}

pub(super) fn fail(
    rec: &mut RequestRecord,
    class: ErrorClass,
    sample: String,
    at: Instant,
) -> Step {
    rec.error = Some(class);
    rec.error_sample = Some(sample_text(&sample, SAMPLE_BYTES));
    rec.end = at;
    Step::Stop
}

fn classify_send_error(e: &hyper_util::client::legacy::Error) -> ErrorClass {
    if e.is_connect() {
        ErrorClass::Connect
    } else {
        ErrorClass::Io
    }
}

fn build_request(
    t: &Transport,
    path: &str,
    body: Vec<u8>,
) -> Result<http::Request<Full<Bytes>>, http::Error> {
    let mut builder = http::Request::post(format!("{}{}", t.base, path))
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(h) = builder.headers_mut() {
        h.extend(t.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    builder.body(Full::new(Bytes::from(body)))
}

/// Sends `req` and reads its stream into `rec`. `cancel` ends it early as
/// [`ErrorClass::Cancelled`].
pub async fn execute(
    t: &Transport,
    req: &GenRequest,
    rec: &mut RequestRecord,
    cancel: &CancellationToken,
) {
    execute_with(t, req, rec, cancel, |_, _| {}).await;
}

/// Like [`execute`], also handing every body chunk of a successful response
/// (body bytes, de-chunked) to `on_chunk` with its arrival instant, after
/// the instant is taken and after the chunk is decoded into `rec`. `on_chunk` must be cheap (e.g. a
/// channel send): it runs on the measuring task. `execute` passes a no-op,
/// which compiles away.
pub async fn execute_with(
    t: &Transport,
    req: &GenRequest,
    rec: &mut RequestRecord,
    cancel: &CancellationToken,
    mut on_chunk: impl FnMut(Instant, &[u8]),
) {
    let spec = t.protocol.build(req);
    if let Some(target) = &t.h1 {
        super::h1::execute(
            t,
            target,
            &spec.path,
            &spec.body,
            rec,
            cancel,
            &mut on_chunk,
        )
        .await;
        return;
    }
    let request = match build_request(t, &spec.path, spec.body) {
        Ok(r) => r,
        Err(e) => {
            fail(
                rec,
                ErrorClass::Io,
                format!("cannot build request: {e}"),
                Instant::now(),
            );
            return;
        }
    };
    rec.sent = Instant::now();
    let deadline = tokio::time::sleep(t.timeout);
    tokio::pin!(deadline);
    let resp = tokio::select! {
        biased;
        r = t.client.request(request) => r,
        () = &mut deadline => { fail(rec, ErrorClass::Timeout, format!("no response within {:?}", t.timeout), Instant::now()); return; }
        () = cancel.cancelled() => { fail(rec, ErrorClass::Cancelled, "run ended".into(), Instant::now()); return; }
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            fail(
                rec,
                classify_send_error(&e),
                error_chain(&e),
                Instant::now(),
            );
            return;
        }
    };
    rec.headers = Some(Instant::now());
    rec.status = Some(resp.status().as_u16());
    if !resp.status().is_success() {
        rec.retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| super::retry::parse_retry_after(v, std::time::SystemTime::now()));
        read_error_body(resp.into_body(), rec).await;
        return;
    }
    read_stream(t, resp.into_body(), rec, cancel, deadline, &mut on_chunk).await;
}

/// The next data bytes of the body: `Ok(None)` at its end; trailers skipped.
async fn next_data(body: &mut Incoming) -> Result<Option<Bytes>, hyper::Error> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

async fn read_stream(
    t: &Transport,
    mut body: Incoming,
    rec: &mut RequestRecord,
    cancel: &CancellationToken,
    mut deadline: std::pin::Pin<&mut tokio::time::Sleep>,
    on_chunk: &mut impl FnMut(Instant, &[u8]),
) {
    let mut dec = Decoder::new(t.protocol.framing());
    // Created once: re-creating the cancellation future per chunk would
    // register and unregister a waiter under a lock for every token.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let chunk = tokio::select! {
            biased;
            c = next_data(&mut body) => c,
            () = &mut deadline => { fail(rec, ErrorClass::Timeout, format!("stream not finished within {:?}", t.timeout), Instant::now()); return; }
            () = &mut cancelled => { fail(rec, ErrorClass::Cancelled, "run ended".into(), Instant::now()); return; }
        };
        let at = Instant::now();
        match chunk {
            Ok(Some(bytes)) => {
                let step = dec.feed(t.protocol.as_ref(), &bytes, at, rec);
                on_chunk(at, &bytes);
                if let Step::Stop = step {
                    return;
                }
            }
            Ok(None) => {
                end_of_body(&mut dec, t.protocol.as_ref(), rec, at);
                return;
            }
            Err(e) => {
                fail(
                    rec,
                    ErrorClass::Truncated,
                    format!("connection lost mid-stream: {}", error_chain(&e)),
                    at,
                );
                return;
            }
        }
    }
}

/// The body ended: fine after a terminator, otherwise a truncated stream.
pub(super) fn end_of_body(
    dec: &mut Decoder,
    p: &dyn Protocol,
    rec: &mut RequestRecord,
    at: Instant,
) {
    if dec.framing == Framing::Ndjson {
        if let Some(rest) = dec.ndjson.take_rest() {
            if p.parse(None, &rest).is_err() {
                // A last line cut short is a truncation, not a malformed message.
                fail(
                    rec,
                    ErrorClass::Truncated,
                    "stream ended in the middle of a message".into(),
                    at,
                );
                return;
            }
            if let Step::Stop = dec.apply(p, None, &rest, at, rec) {
                return;
            }
        }
    }
    if dec.done {
        return;
    }
    if dec.finished && !dec.has_partial() {
        // Protocols without a terminator (Gemini) end with the body.
        rec.end = at;
        return;
    }
    let what = if dec.has_partial() {
        "in the middle of a message"
    } else {
        "without its terminator"
    };
    fail(
        rec,
        ErrorClass::Truncated,
        format!("stream ended {what}"),
        at,
    );
}

async fn read_error_body(mut incoming: Incoming, rec: &mut RequestRecord) {
    let code = rec.status.unwrap_or_default();
    let mut body = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(Some(c)) = next_data(&mut incoming).await {
            body.extend_from_slice(&c);
            if body.len() > SAMPLE_BYTES * 4 {
                break;
            }
        }
    });
    let _ = read.await;
    fail_http(rec, code, &body);
}

/// Records an HTTP error status with a sample of its body.
pub(super) fn fail_http(rec: &mut RequestRecord, code: u16, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    fail(
        rec,
        ErrorClass::Http(code),
        format!("HTTP {code}: {}", text.trim()),
        Instant::now(),
    );
}

/// The error with its causes, e.g. "error sending request: connection refused".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Decodes a whole response body, delivered in `chunks`, exactly as
/// [`execute`] would, and returns the resulting record. For tests and
/// fixture replays: every chunk is stamped with `Instant::now()`.
pub fn replay_body<'a>(
    protocol: &dyn Protocol,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> RequestRecord {
    let start = Instant::now();
    let mut rec = RequestRecord::new(0, false, start, 64);
    rec.status = Some(200);
    let mut dec = Decoder::new(protocol.framing());
    for c in chunks {
        if let Step::Stop = dec.feed(protocol, c, Instant::now(), &mut rec) {
            return rec;
        }
    }
    end_of_body(&mut dec, protocol, &mut rec, Instant::now());
    rec
}
