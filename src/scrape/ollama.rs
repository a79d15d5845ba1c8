//! Ollama has no `/metrics`: its state comes from `/api/ps` (loaded models,
//! VRAM) and `/api/tags` (installed models).

use serde::Deserialize;

use super::model::{Engine, ServerSample};

#[derive(Debug, Deserialize)]
struct ModelList {
    #[serde(default)]
    models: Vec<ModelEntry>,
}

#[derive(Debug, Deserialize)]
struct ModelEntry {
    name: String,
    #[serde(default)]
    size_vram: Option<f64>,
}

/// Errors decoding an Ollama API body.
#[derive(Debug, thiserror::Error)]
#[error("unexpected Ollama {endpoint} body: {source}")]
pub struct OllamaError {
    /// Which endpoint.
    pub endpoint: &'static str,
    /// JSON error.
    pub source: serde_json::Error,
}

/// Maps `/api/ps` (and optionally `/api/tags`) bodies into a sample.
pub fn map(ps: &str, tags: Option<&str>) -> Result<ServerSample, OllamaError> {
    let ps: ModelList = serde_json::from_str(ps).map_err(|source| OllamaError {
        endpoint: "/api/ps",
        source,
    })?;
    let installed = match tags {
        Some(t) => Some(
            serde_json::from_str::<ModelList>(t)
                .map_err(|source| OllamaError {
                    endpoint: "/api/tags",
                    source,
                })?
                .models
                .len(),
        ),
        None => None,
    };
    Ok(ServerSample {
        engine: Engine::Ollama,
        loaded_models: Some(ps.models.len() as f64),
        installed_models: installed.map(|n| n as f64),
        model_vram: Some(ps.models.iter().filter_map(|m| m.size_vram).sum()),
        models: ps.models.into_iter().map(|m| m.name).collect(),
        ..ServerSample::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/info/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn maps_ps_and_tags_fixtures() {
        let s = map(&read("ollama_ps.json"), Some(&read("ollama_tags.json"))).unwrap();
        assert_eq!(s.engine, Engine::Ollama);
        assert_eq!(s.models, vec!["llama3.2:latest".to_owned()]);
        assert_eq!(s.loaded_models, Some(1.0));
        assert_eq!(s.model_vram, Some(3_772_581_888.0));
        let tags: serde_json::Value = serde_json::from_str(&read("ollama_tags.json")).unwrap();
        assert_eq!(
            s.installed_models,
            Some(tags["models"].as_array().unwrap().len() as f64)
        );
    }

    #[test]
    fn bad_body_names_the_endpoint() {
        let e = map("<html>", None).unwrap_err();
        assert!(e.to_string().contains("/api/ps"));
    }
}
