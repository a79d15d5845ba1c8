//! Finding out what a server serves.

use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The first model id listed by `GET {base}/v1/models`.
pub async fn first_model(base: &str) -> Result<String> {
    let url = format!("{base}/v1/models");
    let client = crate::bench::build_client()?;
    let resp = client
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| {
            format!(
                "cannot reach {url} to find the model name; is the server running? Or pass --model"
            )
        })?;
    if !resp.status().is_success() {
        bail!(
            "{url} answered HTTP {}; pass the model name with --model",
            resp.status()
        );
    }
    let v: serde_json::Value = resp
        .json()
        .await
        .with_context(|| format!("{url} did not return JSON; pass the model name with --model"))?;
    match v["data"][0]["id"].as_str() {
        Some(id) => Ok(id.to_owned()),
        None => bail!("{url} lists no models; pass the model name with --model"),
    }
}
