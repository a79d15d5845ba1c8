//! Identification and health endpoints of each imitated engine, so that
//! `throtl probe` (and any tool that fingerprints servers) sees the real shapes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{EngineFlavor, SimState};

/// vLLM version reported by `/version`.
const VLLM_VERSION: &str = "0.11.0";
/// SGLang version reported by `/get_server_info`.
const SGLANG_VERSION: &str = "0.5.3";
/// llama.cpp build reported by `/props`.
const LLAMACPP_BUILD: &str = "b6700-3df2244d";

/// Whether the imitated engine serves Prometheus `/metrics` (Ollama and the
/// hosted APIs do not).
pub(super) fn serves_metrics(f: EngineFlavor) -> bool {
    matches!(
        f,
        EngineFlavor::Vllm | EngineFlavor::Sglang | EngineFlavor::Llamacpp | EngineFlavor::Tgi
    )
}

/// Adds the engine's identification and health routes.
pub(super) fn routes(r: Router<Arc<SimState>>, f: EngineFlavor) -> Router<Arc<SimState>> {
    match f {
        EngineFlavor::Vllm => r
            .route(
                "/version",
                get(|| async { Json(json!({"version": VLLM_VERSION})) }),
            )
            .route("/health", get(|| async { "" })),
        EngineFlavor::Sglang => r
            .route("/get_model_info", get(sglang_model_info))
            .route("/model_info", get(sglang_model_info))
            .route("/get_server_info", get(sglang_server_info))
            .route("/health", get(|| async { "" })),
        EngineFlavor::Llamacpp => r
            .route("/props", get(llamacpp_props))
            .route("/health", get(|| async { Json(json!({"status": "ok"})) })),
        EngineFlavor::Tgi => r.route("/health", get(|| async { "" })),
        _ => r,
    }
}

async fn sglang_model_info(State(st): State<Arc<SimState>>) -> Json<Value> {
    Json(
        json!({"model_path": st.cfg.model, "tokenizer_path": st.cfg.model, "is_generation": true,
                "preferred_sampling_params": null, "weight_version": "default"}),
    )
}

async fn sglang_server_info(State(st): State<Arc<SimState>>) -> Json<Value> {
    Json(
        json!({"model_path": st.cfg.model, "served_model_name": st.cfg.model, "tp_size": 1,
                "internal_states": [{"last_gen_throughput": 0.0}], "version": SGLANG_VERSION}),
    )
}

async fn llamacpp_props(State(st): State<Arc<SimState>>) -> Json<Value> {
    Json(json!({
        "default_generation_settings": {"n_ctx": 4096, "params": {"n_predict": -1}},
        "total_slots": 1, "model_path": format!("/models/{}.gguf", st.cfg.model),
        "chat_template": "", "modalities": {"vision": false}, "build_info": LLAMACPP_BUILD,
    }))
}

/// Adds the engine's response headers (llama.cpp names itself in `Server`).
pub(super) async fn engine_headers(
    State(st): State<Arc<SimState>>,
    mut resp: Response,
) -> Response {
    match st.cfg.engine {
        EngineFlavor::Llamacpp => {
            resp.headers_mut()
                .insert("server", HeaderValue::from_static("llama.cpp"));
        }
        EngineFlavor::Vllm | EngineFlavor::Sglang => {
            resp.headers_mut()
                .insert("server", HeaderValue::from_static("uvicorn"));
        }
        _ => {}
    }
    resp.into_response()
}
