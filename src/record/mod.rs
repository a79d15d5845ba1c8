//! `throtl record`: a transparent streaming reverse proxy that writes the
//! *shape* of the traffic through it — arrival times, lengths, salted prefix
//! hashes, sessions — as a trace `throtl bench --trace throtl:FILE` replays.
//!
//! The request path does as little as possible: the body is read, the
//! request forwarded, and every response chunk passed on as it arrives; the
//! proxy only stamps instants and keeps references to the bytes
//! ([`capture`]). Parsing, counting and hashing happen on the writer thread
//! after the response ended ([`analyze`], [`writer`]), so they never delay
//! a byte to the client.

pub mod analyze;
pub mod capture;
pub mod writer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio_util::sync::CancellationToken;

use capture::{Capture, Tee};
use writer::{LineWriter, WriterSummary};

/// Largest request body forwarded (prompts are text; 64 MiB is plenty).
const MAX_BODY: usize = 64 << 20;

/// What `throtl record` needs, validated.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Upstream base URL, without a trailing `/`.
    pub upstream: String,
    /// The trace file (rotated parts are numbered beside it).
    pub out: PathBuf,
    /// Start a new file once the current one has this many bytes.
    pub rotate_bytes: Option<u64>,
    /// Also write prompt and answer text (off by default: shape only).
    pub keep_text: bool,
    /// Words per prefix block of `hash_ids`.
    pub block_tokens: u32,
    /// How long open streams may finish after a stop.
    pub grace: Duration,
}

/// A recording that could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}. Is another process using the port?")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The trace file could not be created or written.
    #[error("cannot write the trace '{path}': {source}")]
    Output {
        /// Path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The upstream client could not be built.
    #[error("cannot build the upstream client: {0}")]
    Client(String),
}

/// State shared by every proxied request.
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    lines: std::sync::mpsc::Sender<Capture>,
}

/// A running recording proxy.
pub struct RecordHandle {
    addr: SocketAddr,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    writer: LineWriter,
    grace: Duration,
}

impl RecordHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and lets open streams finish for the grace period.
    /// False when some were still open: they live in the runtime's
    /// connection tasks, so drop (or shut down) the runtime before
    /// [`RecordHandle::finish`] — each writes its line, marked unfinished, as
    /// it is dropped.
    pub async fn stop(&mut self) -> bool {
        self.stop.cancel();
        tokio::time::timeout(self.grace, &mut self.server)
            .await
            .is_ok()
    }

    /// Writes every remaining line, flushes and closes the trace. Waits for
    /// streams still open: call after [`RecordHandle::stop`].
    pub fn finish(self) -> Result<WriterSummary, RecordError> {
        self.server.abort();
        self.writer.finish()
    }
}

/// Binds, opens the trace and starts proxying on the current runtime.
pub async fn start(cfg: &RecordConfig) -> Result<RecordHandle, RecordError> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| RecordError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| RecordError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let writer = LineWriter::start(cfg)?;
    let proxy = Arc::new(Proxy {
        upstream: cfg.upstream.trim_end_matches('/').to_owned(),
        client: upstream_client()?,
        lines: writer.sender(),
    });
    let stop = CancellationToken::new();
    let app = Router::new().fallback(forward).with_state(proxy);
    let server = tokio::spawn(serve(listener, app, stop.clone()));
    Ok(RecordHandle {
        addr,
        stop,
        server,
        writer,
        grace: cfg.grace,
    })
}

async fn serve(listener: tokio::net::TcpListener, app: Router, stop: CancellationToken) {
    use axum::serve::ListenerExt;
    // Streamed chunks are small: Nagle would hold them back.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
}

fn upstream_client() -> Result<reqwest::Client, RecordError> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| RecordError::Client(e.to_string()))
}

/// Headers that belong to one hop, not to the request or response.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if !hop_by_hop(k) {
            to.append(k.clone(), v.clone());
        }
    }
}

/// Forwards one request and streams the answer back, capturing its shape
/// when it is a generation request of a protocol Throtl speaks.
async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let arrival = Instant::now();
    let (parts, body) = req.into_parts();
    let path_q = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let api = analyze::route(parts.uri.path());
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("throtl record: cannot read the request body: {e}"),
            )
                .into_response()
        }
    };
    let mut headers = HeaderMap::new();
    copy_headers(&parts.headers, &mut headers);
    let sent = p
        .client
        .request(parts.method, format!("{}{path_q}", p.upstream))
        .headers(headers)
        .body(body.clone())
        .send()
        .await;
    let capture = api.map(|api| Capture::new(api, arrival, parts.uri.path(), &parts.headers, body));
    match sent {
        Ok(resp) => stream_back(resp, capture, p.lines.clone()),
        Err(e) => upstream_failed(&p, e, capture),
    }
}

fn stream_back(
    resp: reqwest::Response,
    capture: Option<Capture>,
    lines: std::sync::mpsc::Sender<Capture>,
) -> Response {
    let status = resp.status();
    let mut headers = HeaderMap::new();
    copy_headers(resp.headers(), &mut headers);
    let capture = capture.map(|mut c| {
        c.status = Some(status.as_u16());
        c.content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        c
    });
    let body = Body::from_stream(Tee::new(resp.bytes_stream(), capture, lines));
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// The upstream could not be reached: the client gets a 502 saying so, and
/// the line records it.
fn upstream_failed(p: &Proxy, e: reqwest::Error, capture: Option<Capture>) -> Response {
    let why = crate::engine::request::error_chain(&e);
    let msg = format!("throtl record: upstream {} failed: {why}", p.upstream);
    if let Some(mut c) = capture {
        c.status = Some(StatusCode::BAD_GATEWAY.as_u16());
        c.error = Some(format!("upstream: {why}"));
        c.end = Some(Instant::now());
        let _ = p.lines.send(c);
    }
    let body = serde_json::json!({"error": {"message": msg, "type": "upstream_unreachable"}});
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}
