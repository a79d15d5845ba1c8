//! What the proxy keeps of one request while it streams: instants and
//! reference-counted chunks, nothing parsed. [`Tee`] passes each chunk on
//! unchanged and hands the capture to the writer when the stream ends — or
//! when it is dropped early (client gone, recording stopped).

use std::pin::Pin;
use std::sync::mpsc::Sender;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::HeaderMap;
use bytes::Bytes;
use futures_util::Stream;

use crate::api::ApiKind;

/// Headers a client may name its conversation (session) with, in order of
/// preference; the body's `user` field is the fallback (see analyze).
pub const CONVERSATION_HEADERS: [&str; 3] =
    ["x-conversation-id", "x-session-id", "x-throtl-conversation"];

/// One proxied generation request.
#[derive(Debug)]
pub struct Capture {
    /// Protocol, from the route.
    pub api: ApiKind,
    /// When the request reached the proxy (before its body was read).
    pub arrival: Instant,
    /// Request path (no query: it may hold a key).
    pub path: String,
    /// Conversation id from a header, if any.
    pub conversation_header: Option<String>,
    /// The request body as received.
    pub request: Bytes,
    /// Upstream status, or 502 when it could not be reached.
    pub status: Option<u16>,
    /// Upstream `content-type`.
    pub content_type: Option<String>,
    /// Each response chunk with the instant it arrived from upstream.
    pub chunks: Vec<(Instant, Bytes)>,
    /// End of the response (last chunk passed on, or the failure).
    pub end: Option<Instant>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

impl Capture {
    /// A capture of a request that arrived at `arrival`.
    pub fn new(
        api: ApiKind,
        arrival: Instant,
        path: &str,
        headers: &HeaderMap,
        request: Bytes,
    ) -> Self {
        let conversation_header = CONVERSATION_HEADERS
            .iter()
            .find_map(|h| headers.get(*h)?.to_str().ok().map(str::to_owned));
        Self {
            api,
            arrival,
            path: path.to_owned(),
            conversation_header,
            request,
            status: None,
            content_type: None,
            chunks: Vec::new(),
            end: None,
            error: None,
        }
    }
}

/// A response body stream that passes chunks through and records them.
pub struct Tee<S> {
    inner: S,
    capture: Option<Capture>,
    lines: Sender<Capture>,
}

impl<S> Tee<S> {
    /// Wraps `inner`; without a capture, chunks only pass through.
    pub fn new(inner: S, capture: Option<Capture>, lines: Sender<Capture>) -> Self {
        Self {
            inner,
            capture,
            lines,
        }
    }

    fn finish(&mut self, error: Option<String>) {
        if let Some(mut c) = self.capture.take() {
            c.end = Some(Instant::now());
            if c.error.is_none() {
                c.error = error;
            }
            let _ = self.lines.send(c);
        }
    }
}

impl<S, E> Stream for Tee<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(b))) => {
                // Stamp first, keep a reference: no copy, no parsing here.
                let now = Instant::now();
                if let Some(c) = self.capture.as_mut() {
                    c.chunks.push((now, b.clone()));
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let why = format!("upstream stream broke: {e}");
                self.finish(Some(why));
            }
            Poll::Ready(None) => self.finish(None),
            Poll::Pending => {}
        }
        polled
    }
}

impl<S> Drop for Tee<S> {
    fn drop(&mut self) {
        // Dropped before the end: the client went away or the recording stopped.
        self.finish(Some(
            "stream not finished: the client disconnected or the recording stopped".into(),
        ));
    }
}
