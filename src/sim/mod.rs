//! `throtl mock`: a built-in simulated inference server that speaks the
//! protocol of the engine or hosted API named by [`SimConfig::engine`].
//!
//! Two engine models decide when tokens leave (see `docs/simulator.md`):
//!
//! * Fixed delays (`SimConfig::engine_model == None`, the default of this
//!   struct, used by `throtl demo` and exact-truth tests): the first token
//!   leaves at arrival + TTFT and token k at arrival + TTFT + k·ITL. Deadlines
//!   are absolute, so delays never drift, and a sub-millisecond timer thread
//!   keeps them exact at thousands of streams.
//! * The batching engine ([`engine`]): continuous batching, paged KV cache,
//!   chunked prefill, preemption, prefix caching, roofline step times.
//!
//! Either can be wrapped in seeded fault injection ([`faults`]).

mod anthropic;
mod cohere;
pub mod engine;
pub mod faults;
mod frontend;
mod gemini;
mod info;
pub mod metrics;
pub mod model;
mod ollama;
mod openai;
mod tgi;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::sync::oneshot;

use crate::timer::PreciseTimer;
use engine::{BatchEngine, EngineConfig};
use faults::{FaultConfig, FaultyModel};
use metrics::SimMetrics;
use model::{EngineModel, FixedDelay};

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
    /// The engine imitated: routes, stream format, info endpoints, `/metrics` names.
    pub engine: EngineFlavor,
    /// The batching engine model; `None` uses the fixed `ttft`/`itl` delays.
    pub engine_model: Option<EngineConfig>,
    /// Faults to inject (none by default).
    pub faults: FaultConfig,
    /// Add DCGM-style GPU metrics to `/metrics` (engine model only).
    pub gpu_metrics: bool,
    /// Model-load time: until it has passed, every route (health and models
    /// included) answers 503, as an engine still loading weights would.
    pub startup_delay: Duration,
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
            engine_model: None,
            faults: FaultConfig::default(),
            gpu_metrics: false,
            startup_delay: Duration::ZERO,
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
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
}

pub(crate) struct SimState {
    pub(crate) cfg: SimConfig,
    /// Start-up ends here (`startup_delay` after the listener was bound).
    pub(crate) ready_at: std::time::Instant,
    pub(crate) metrics: Arc<SimMetrics>,
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
    if let Some(e) = &cfg.engine_model {
        e.validate().map_err(SimError::Config)?;
    }
    cfg.faults.validate().map_err(SimError::Config)?;
    let requested = SocketAddr::new(cfg.host, cfg.port);
    let listener = std::net::TcpListener::bind(requested).map_err(|source| SimError::Bind {
        addr: requested,
        source,
    })?;
    listener.set_nonblocking(true)?;
    widen_backlog(&listener);
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads.max(1))
        .thread_name("throtl-sim")
        .enable_all()
        .build()?;
    let timer = {
        let _in_runtime = runtime.enter();
        PreciseTimer::start()?
    };
    let gpu = cfg
        .engine_model
        .as_ref()
        .filter(|_| cfg.gpu_metrics)
        .map(EngineConfig::gpu_info);
    let metrics = Arc::new(SimMetrics::new(cfg.engine, cfg.engine_model.is_some(), gpu));
    let mut model: Box<dyn EngineModel> = match &cfg.engine_model {
        Some(e) => Box::new(BatchEngine::start(
            e,
            &runtime,
            timer.clone(),
            Arc::clone(&metrics),
        )),
        None => Box::new(FixedDelay {
            ttft: cfg.ttft,
            itl: cfg.itl,
            timer: timer.clone(),
        }),
    };
    if cfg.faults.is_active() {
        model = Box::new(FaultyModel::new(
            model,
            cfg.faults.clone(),
            timer,
            Arc::clone(&metrics),
        ));
    }
    let state = Arc::new(SimState {
        ready_at: std::time::Instant::now() + cfg.startup_delay,
        cfg,
        metrics,
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

/// Pending connections the listener queues. The standard library listens
/// with a backlog of 128: a thousand clients connecting at once would see
/// SYNs dropped and retried a second later, which real servers (uvicorn,
/// 2048) do not do. Listening again on a listening socket only changes its
/// backlog (Linux and the BSDs); the kernel caps it at `somaxconn`.
fn widen_backlog(listener: &std::net::TcpListener) {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on a socket this function borrows.
        unsafe {
            libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG);
        }
    }
    #[cfg(not(unix))]
    let _ = listener;
}

/// Backlog asked for by [`widen_backlog`].
const LISTEN_BACKLOG: i32 = 4096;

async fn serve(listener: std::net::TcpListener, state: Arc<SimState>, stop: oneshot::Receiver<()>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    // Without TCP_NODELAY, Nagle's algorithm holds a small token frame until
    // the client's delayed ACK of the headers (~40 ms on Linux), which would
    // add up to 40 ms to every TTFT below that.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
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
    let flavor = state.cfg.engine;
    let r = Router::new();
    let r = match flavor {
        EngineFlavor::Vllm | EngineFlavor::Sglang | EngineFlavor::Llamacpp => openai::routes(r),
        EngineFlavor::Openai => openai::azure_routes(openai::routes(r)),
        EngineFlavor::Tgi => tgi::routes(r),
        EngineFlavor::Ollama => openai::routes(ollama::routes(r)),
        EngineFlavor::Anthropic => anthropic::routes(r),
        EngineFlavor::Gemini => gemini::routes(r),
        EngineFlavor::Cohere => cohere::routes(r),
    };
    let mut r = info::routes(r, flavor);
    if info::serves_metrics(flavor) {
        r = r.route("/metrics", get(metrics_text));
    }
    r.layer(axum::middleware::map_response_with_state(
        state.clone(),
        info::engine_headers,
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        refuse_while_starting,
    ))
    .with_state(state)
}

/// During `--startup-delay` every request gets 503, so a client can only
/// learn that the engine is ready by polling (as with a real engine loading
/// weights).
async fn refuse_while_starting(
    axum::extract::State(st): axum::extract::State<Arc<SimState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if std::time::Instant::now() < st.ready_at {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "engine is starting (loading weights)",
        )
            .into_response();
    }
    next.run(req).await
}

async fn metrics_text(
    axum::extract::State(st): axum::extract::State<Arc<SimState>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !st.metrics.served() {
        return (
            axum::http::StatusCode::NOT_FOUND,
            "this engine serves no /metrics",
        )
            .into_response();
    }
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        st.metrics.render(&st.cfg.model),
    )
        .into_response()
}
