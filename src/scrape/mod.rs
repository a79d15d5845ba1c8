//! Scraping serving engines: the Prometheus text parser ([`prom`]), the mapping
//! of each engine's names into one model ([`model`]), Ollama's JSON API
//! ([`ollama`]) and metrics derived over a sliding window ([`mod@derive`]).

pub mod derive;
pub mod gpu;
pub mod model;
pub mod ollama;
pub mod prom;
pub mod recorder;

use std::time::Duration;

pub use derive::{Derived, Quantiles, TimedSample, Window};
pub use model::{Engine, ServerSample};

/// Why one scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The request failed (connect, timeout, body).
    #[error("cannot scrape {url}: {reason}")]
    Http {
        /// URL requested.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The server answered with a non-success status.
    #[error("{url} answered HTTP {status}; is this an inference server with metrics enabled (vLLM, TGI, SGLang --enable-metrics, llama.cpp --metrics, Ollama)?")]
    Status {
        /// URL requested.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// The `/metrics` body is not exposition text.
    #[error("{url}: invalid Prometheus text at {source}")]
    Parse {
        /// URL requested.
        url: String,
        /// Parser error.
        source: prom::ParseError,
    },
    /// An Ollama API body could not be read.
    #[error("{url}: {source}")]
    Ollama {
        /// URL requested.
        url: String,
        /// Decoding error.
        source: ollama::OllamaError,
    },
}

/// Scrapes one server: `/metrics`, or Ollama's `/api/ps` + `/api/tags` when
/// `/metrics` is not there.
#[derive(Debug, Clone)]
pub struct Scraper {
    client: reqwest::Client,
    base: String,
}

impl Scraper {
    /// A scraper of the server at `base` (no trailing `/`), with its own client.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, ScrapeError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
            .map_err(|e| ScrapeError::Http {
                url: base.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One scrape, mapped into a [`ServerSample`].
    pub async fn scrape(&self) -> Result<ServerSample, ScrapeError> {
        let url = format!("{}/metrics", self.base);
        match self.get(&url).await {
            Ok(text) => {
                let exp =
                    prom::parse(&text).map_err(|source| ScrapeError::Parse { url, source })?;
                Ok(model::map(&exp))
            }
            Err(ScrapeError::Status { status: 404, .. }) => self.scrape_ollama().await,
            Err(e) => Err(e),
        }
    }

    async fn scrape_ollama(&self) -> Result<ServerSample, ScrapeError> {
        let ps_url = format!("{}/api/ps", self.base);
        let ps = self.get(&ps_url).await?;
        let tags = self.get(&format!("{}/api/tags", self.base)).await.ok();
        ollama::map(&ps, tags.as_deref()).map_err(|source| ScrapeError::Ollama {
            url: ps_url,
            source,
        })
    }

    async fn get(&self, url: &str) -> Result<String, ScrapeError> {
        let http = |e: reqwest::Error| ScrapeError::Http {
            url: url.to_owned(),
            reason: crate::engine::request::error_chain(&e),
        };
        let resp = self.client.get(url).send().await.map_err(http)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ScrapeError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
            });
        }
        resp.text().await.map_err(http)
    }
}

/// Unix time now, in milliseconds.
pub fn unix_ms() -> i64 {
    time::OffsetDateTime::now_utc()
        .unix_timestamp_nanos()
        .div_euclid(1_000_000) as i64
}
