//! `throtl mock`: a built-in simulated OpenAI-compatible inference server.
//!
//! Fixed-delay mode: the first token leaves at arrival + TTFT and token k at
//! arrival + TTFT + k·ITL. Deadlines are absolute, so delays never drift, and
//! a sub-millisecond timer thread keeps them exact at thousands of streams.

pub mod metrics;
pub mod model;
mod openai;
pub mod timer;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::sync::oneshot;

use metrics::SimMetrics;
use model::{EngineModel, FixedDelay};
use timer::PreciseTimer;

/// Which real engine or hosted API the simulator imitates: routes, stream
/// format, identification endpoints and `/metrics` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineFlavor {
    /// vLLM (OpenAI routes, `vllm:*` metrics).
    #[default]
    Vllm,
    /// Hugging Face TGI.
    Tgi,
    /// Ollama.
    Ollama,
    /// llama.cpp server.
    Llamacpp,
    /// SGLang.
    Sglang,
    /// OpenAI's hosted API.
    Openai,
    /// Anthropic Messages API.
    Anthropic,
    /// Google Gemini API.
    Gemini,
    /// Cohere v2 chat.
    Cohere,
}

/// Configuration of the simulated server.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address to bind (127.0.0.1 by default).
    pub host: IpAddr,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// Time to first token.
    pub ttft: Duration,
    /// Inter-token latency.
    pub itl: Duration,
    /// Tokens generated when the request sets no `max_tokens`.
    pub default_output_tokens: u32,
    /// Model name served by `/v1/models`.
    pub model: String,
    /// Tokio worker threads of the server's own runtime.
    pub worker_threads: usize,
    /// The engine imitated (only `Vllm` is served until per-engine front-ends land).
    pub engine: EngineFlavor,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            ttft: Duration::from_millis(100),
            itl: Duration::from_millis(20),
            default_output_tokens: 64,
            model: "throtl-sim".into(),
            worker_threads: 1,
            engine: EngineFlavor::Vllm,
        }
    }
}

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}. Choose another --port (0 picks a free one)")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// A thread or runtime could not be created.
    #[error("cannot start the simulator: {0}")]
    Start(#[from] std::io::Error),
}

pub(crate) struct SimState {
    pub(crate) cfg: SimConfig,
    pub(crate) metrics: SimMetrics,
    pub(crate) model: Box<dyn EngineModel>,
}

/// A running simulator; stops when dropped.
pub struct SimHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Blocks until the server thread exits (it runs until dropped otherwise).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the simulator on its own runtime and thread, so that it never
/// competes with the caller's runtime for scheduling. Returns once bound.
pub fn start(cfg: SimConfig) -> Result<SimHandle, SimError> {
    let requested = SocketAddr::new(cfg.host, cfg.port);
    let listener = std::net::TcpListener::bind(requested).map_err(|source| SimError::Bind {
        addr: requested,
        source,
    })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads.max(1))
        .thread_name("throtl-sim")
        .enable_all()
        .build()?;
    let model = Box::new(FixedDelay {
        ttft: cfg.ttft,
        itl: cfg.itl,
        timer: PreciseTimer::start()?,
    });
    let state = Arc::new(SimState {
        cfg,
        metrics: SimMetrics::default(),
        model,
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("throtl-sim-main".into())
        .spawn(move || runtime.block_on(serve(listener, state, stop_rx)))?;
    Ok(SimHandle {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

async fn serve(listener: std::net::TcpListener, state: Arc<SimState>, stop: oneshot::Receiver<()>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    // Small SSE frames must leave at once: with Nagle's algorithm on, every
    // frame after the first waits for the client's (delayed, ~40 ms) ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = router(state);
    // Not a graceful shutdown: open streams and idle keep-alive connections
    // would hold it forever; dropping the runtime closes them.
    tokio::select! {
        _ = axum::serve(listener, app) => {}
        _ = stop => {}
    }
}

fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/models", get(openai::models))
        .route("/health", get(|| async { "" }))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

async fn metrics_text(
    axum::extract::State(st): axum::extract::State<Arc<SimState>>,
) -> impl axum::response::IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        st.metrics.render(&st.cfg.model),
    )
}
