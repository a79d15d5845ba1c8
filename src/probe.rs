//! `throtl probe`: identifies the server behind a URL from its identification
//! endpoints, response headers and `/metrics`, and picks the `--api` bench uses.
//!
//! All endpoints are fetched concurrently with a short timeout; no API key is
//! sent (only `-H` headers the user passed).

use std::fmt::Write as _;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::Value;

use crate::api::ApiKind;
use crate::engine::request::error_chain;

/// Endpoints fetched by a probe, in [`Fetched`] order.
const PATHS: [&str; 12] = [
    "/",
    "/v1/models",
    "/version",
    "/info",
    "/api/version",
    "/api/tags",
    "/props",
    "/get_model_info",
    "/get_server_info",
    "/health",
    "/metrics",
    "/v1beta/models",
];

/// How long each probe request may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing answered at the address.
    #[error("cannot reach {url}: {reason}. Is the server running, and is the URL right?")]
    Unreachable {
        /// Base URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] crate::BenchError),
    /// A header argument was invalid.
    #[error("invalid header '{0}'")]
    Header(String),
}

/// What a probe found (`--json` prints this object).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// Probed base URL.
    pub url: String,
    /// `vllm`, `tgi`, `ollama`, `llamacpp`, `sglang`, `openai`, `anthropic`,
    /// `gemini`, `cohere`, `azure-openai` or `unknown`.
    pub engine: String,
    /// Engine version, when the server tells.
    pub version: Option<String>,
    /// Models served.
    pub models: Vec<String>,
    /// Health endpoint answered OK (`None` when the server has none).
    pub healthy: Option<bool>,
    /// URL of a Prometheus `/metrics` endpoint, or null.
    pub metrics: Option<String>,
    /// The `--api` value bench would use.
    pub api: String,
    /// What the identification rests on.
    pub evidence: Vec<String>,
}

impl ProbeReport {
    /// The protocol chosen.
    pub fn api_kind(&self) -> ApiKind {
        ApiKind::parse(&self.api).unwrap_or(ApiKind::OpenaiChat)
    }

    /// The first model, or an error telling to pass `--model`.
    pub fn first_model(&self) -> Result<String, anyhow::Error> {
        self.models.first().cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "{} lists no models; pass the model name with --model",
                self.url
            )
        })
    }

    /// One line saying what `--api auto` picked (and a warning when unsure).
    pub fn choice_line(&self) -> String {
        if self.engine == "unknown" {
            format!("warning: could not identify the server at {}; using --api openai-chat. Pass --api to choose", self.url)
        } else {
            let v = self
                .version
                .as_deref()
                .map(|v| format!(" {v}"))
                .unwrap_or_default();
            format!(
                "detected {}{v} at {}; using --api {}",
                self.engine, self.url, self.api
            )
        }
    }

    /// Human-readable rendering.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
        let _ = writeln!(s, "url      {}", self.url);
        let _ = writeln!(s, "engine   {}", self.engine);
        let _ = writeln!(s, "version  {}", opt(&self.version));
        let _ = writeln!(
            s,
            "models   {}",
            if self.models.is_empty() {
                "—".into()
            } else {
                self.models.join(", ")
            }
        );
        let health = match self.healthy {
            Some(true) => "ok",
            Some(false) => "NOT healthy",
            None => "unknown (no health endpoint)",
        };
        let _ = writeln!(s, "health   {health}");
        let _ = writeln!(s, "metrics  {}", opt(&self.metrics));
        let _ = writeln!(
            s,
            "api      {} (what `throtl bench --api auto` uses)",
            self.api
        );
        let _ = writeln!(s, "evidence {}", self.evidence.join("; "));
        if self.engine == "unknown" {
            let _ = writeln!(
                s,
                "warning: server not identified; bench falls back to openai-chat"
            );
        }
        s
    }
}

/// One fetched endpoint.
#[derive(Debug, Clone, Default)]
struct Resp {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn json(&self) -> Option<Value> {
        if !self.ok() {
            return None;
        }
        serde_json::from_str(&self.body).ok()
    }
}

/// Responses by path (`None`: no answer).
struct Fetched(Vec<Option<Resp>>);

impl Fetched {
    fn get(&self, path: &str) -> Option<&Resp> {
        let i = PATHS.iter().position(|p| *p == path)?;
        self.0.get(i)?.as_ref()
    }

    fn json(&self, path: &str) -> Option<Value> {
        self.get(path)?.json()
    }
}

/// Probes `base` (normalised, no trailing slash) with extra `headers`.
pub async fn probe(base: &str, headers: &[(String, String)]) -> Result<ProbeReport, ProbeError> {
    let client = crate::bench::build_client()?;
    let hmap = header_map(headers)?;
    let futs = PATHS
        .iter()
        .map(|p| fetch(&client, format!("{base}{p}"), hmap.clone()));
    let results = join_all(futs).await;
    if results.iter().all(Result::is_err) {
        let reason = results
            .into_iter()
            .find_map(Result::err)
            .unwrap_or_default();
        return Err(ProbeError::Unreachable {
            url: base.to_owned(),
            reason,
        });
    }
    let fetched = Fetched(results.into_iter().map(Result::ok).collect());
    Ok(identify(base, &fetched))
}

fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, ProbeError> {
    let mut map = HeaderMap::new();
    for (n, v) in headers {
        let name =
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| ProbeError::Header(n.clone()))?;
        let mut value = HeaderValue::from_str(v).map_err(|_| ProbeError::Header(n.clone()))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

async fn fetch(client: &reqwest::Client, url: String, headers: HeaderMap) -> Result<Resp, String> {
    let resp = client
        .get(&url)
        .headers(headers)
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(PROBE_TIMEOUT, resp.text())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// The identification, from the fetched endpoints.
fn identify(base: &str, f: &Fetched) -> ProbeReport {
    let mut r = ProbeReport {
        url: base.to_owned(),
        engine: "unknown".into(),
        version: None,
        models: Vec::new(),
        healthy: None,
        metrics: None,
        api: ApiKind::OpenaiChat.as_str().into(),
        evidence: Vec::new(),
    };
    let engine = by_host(base, &mut r)
        .or_else(|| tgi(f, &mut r))
        .or_else(|| ollama(f, &mut r))
        .or_else(|| llamacpp(f, &mut r))
        .or_else(|| sglang(f, &mut r))
        .or_else(|| openai_owner(f, &mut r))
        .or_else(|| anthropic(f, &mut r))
        .or_else(|| gemini(f, &mut r))
        .or_else(|| cohere(f, &mut r));
    if let Some((engine, api)) = engine {
        r.engine = engine.into();
        r.api = api.as_str().into();
    } else if r.models.is_empty() {
        r.models = openai_models(f);
    }
    r.healthy = health(f, &r.engine);
    r.metrics = metrics(base, f);
    r
}

type Found = Option<(&'static str, ApiKind)>;

fn by_host(base: &str, r: &mut ProbeReport) -> Found {
    let host = reqwest::Url::parse(base)
        .ok()?
        .host_str()?
        .to_ascii_lowercase();
    let found = if host == "api.openai.com" {
        ("openai", ApiKind::OpenaiChat)
    } else if host.ends_with(".openai.azure.com") {
        ("azure-openai", ApiKind::AzureOpenai)
    } else if host == "api.anthropic.com" {
        ("anthropic", ApiKind::Anthropic)
    } else if host == "generativelanguage.googleapis.com" {
        ("gemini", ApiKind::Gemini)
    } else if host == "api.cohere.com" || host == "api.cohere.ai" {
        ("cohere", ApiKind::Cohere)
    } else {
        return None;
    };
    r.evidence.push(format!("host {host}"));
    Some(found)
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v[key].as_str().map(str::to_owned)
}

fn tgi(f: &Fetched, r: &mut ProbeReport) -> Found {
    let info = f.json("/info")?;
    if !info["router"].as_str()?.contains("text-generation-router") {
        return None;
    }
    r.version = str_of(&info, "version");
    r.models = str_of(&info, "model_id").into_iter().collect();
    r.evidence
        .push("/info router text-generation-router".into());
    Some(("tgi", ApiKind::Tgi))
}

fn ollama(f: &Fetched, r: &mut ProbeReport) -> Found {
    let v = f.json("/api/version")?;
    r.version = Some(str_of(&v, "version")?);
    let tags = f.json("/api/tags").unwrap_or_default();
    r.models = tags["models"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| str_of(m, "name"))
        .collect();
    r.evidence.push("/api/version answered".into());
    Some(("ollama", ApiKind::OllamaChat))
}

fn owner(f: &Fetched) -> Option<String> {
    f.json("/v1/models")?["data"][0]["owned_by"]
        .as_str()
        .map(str::to_owned)
}

fn openai_models(f: &Fetched) -> Vec<String> {
    let v = f.json("/v1/models").unwrap_or_default();
    v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| str_of(m, "id"))
        .collect()
}

fn llamacpp(f: &Fetched, r: &mut ProbeReport) -> Found {
    let server_header = PATHS.iter().filter_map(|p| f.get(p)).any(|resp| {
        resp.headers
            .get("server")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|s| s.contains("llama.cpp"))
    });
    let props = f.json("/props");
    let props_ok = props.as_ref().is_some_and(|p| {
        p.get("default_generation_settings").is_some() || p.get("build_info").is_some()
    });
    if !(server_header || props_ok || owner(f).as_deref() == Some("llamacpp")) {
        return None;
    }
    r.version = props.as_ref().and_then(|p| str_of(p, "build_info"));
    r.models = openai_models(f);
    r.evidence.push(
        if server_header {
            "server: llama.cpp header"
        } else {
            "/props answered"
        }
        .into(),
    );
    Some(("llamacpp", ApiKind::OpenaiChat))
}

fn sglang(f: &Fetched, r: &mut ProbeReport) -> Found {
    let info = f.json("/get_model_info");
    let by_info = info.as_ref().is_some_and(|i| i.get("model_path").is_some());
    if !(by_info || owner(f).as_deref() == Some("sglang")) {
        return None;
    }
    r.version = f
        .json("/get_server_info")
        .and_then(|v| str_of(&v, "version"));
    r.models = openai_models(f);
    r.evidence.push(
        if by_info {
            "/get_model_info answered"
        } else {
            "/v1/models owned_by sglang"
        }
        .into(),
    );
    Some(("sglang", ApiKind::OpenaiChat))
}

fn openai_owner(f: &Fetched, r: &mut ProbeReport) -> Found {
    let owned_by = owner(f);
    let version = f.json("/version").and_then(|v| str_of(&v, "version"));
    let engine = match owned_by.as_deref() {
        Some("vllm") => "vllm",
        Some("openai" | "system" | "openai-internal") => "openai",
        _ if version.is_some() && metrics_prefix(f, "vllm:") => "vllm",
        _ => return None,
    };
    if engine == "vllm" {
        r.version = version;
    }
    r.models = openai_models(f);
    r.evidence.push(match owned_by {
        Some(o) => format!("/v1/models owned_by {o}"),
        None => "/version and vllm:* metrics".into(),
    });
    Some((engine, ApiKind::OpenaiChat))
}

fn anthropic(f: &Fetched, r: &mut ProbeReport) -> Found {
    let v = f.json("/v1/models")?;
    if v["data"][0]["type"].as_str() != Some("model") || v.get("has_more").is_none() {
        return None;
    }
    r.models = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| str_of(m, "id"))
        .collect();
    r.evidence.push("/v1/models in Anthropic's shape".into());
    Some(("anthropic", ApiKind::Anthropic))
}

fn gemini(f: &Fetched, r: &mut ProbeReport) -> Found {
    let v = f.json("/v1beta/models")?;
    let names: Vec<String> = v["models"]
        .as_array()?
        .iter()
        .filter_map(|m| str_of(m, "name"))
        .collect();
    if names.is_empty() || !names.iter().all(|n| n.starts_with("models/")) {
        return None;
    }
    r.models = names
        .into_iter()
        .map(|n| n.trim_start_matches("models/").to_owned())
        .collect();
    r.evidence.push("/v1beta/models in Gemini's shape".into());
    Some(("gemini", ApiKind::Gemini))
}

fn cohere(f: &Fetched, r: &mut ProbeReport) -> Found {
    let v = f.json("/v1/models")?;
    let models = v["models"].as_array()?;
    if !models.iter().any(|m| m.get("endpoints").is_some()) {
        return None;
    }
    r.models = models.iter().filter_map(|m| str_of(m, "name")).collect();
    r.evidence.push("/v1/models in Cohere's shape".into());
    Some(("cohere", ApiKind::Cohere))
}

fn metrics_prefix(f: &Fetched, prefix: &str) -> bool {
    f.get("/metrics")
        .is_some_and(|m| m.ok() && m.body.contains(prefix))
}

fn metrics(base: &str, f: &Fetched) -> Option<String> {
    let m = f.get("/metrics")?;
    let prometheus = m.ok()
        && (m.body.contains("# TYPE")
            || m.body
                .lines()
                .any(|l| l.contains(':') && !l.starts_with('{')));
    prometheus.then(|| format!("{base}/metrics"))
}

fn health(f: &Fetched, engine: &str) -> Option<bool> {
    if engine == "ollama" {
        return f.get("/").map(Resp::ok);
    }
    match f.get("/health") {
        Some(h) if h.status != 404 && h.status != 405 => Some(h.ok()),
        _ => match engine {
            "unknown" => None,
            // Hosted APIs have no health route: listing models is the check.
            _ => Some(
                f.get("/v1/models").is_some_and(Resp::ok)
                    || f.get("/v1beta/models").is_some_and(Resp::ok),
            ),
        },
    }
}
