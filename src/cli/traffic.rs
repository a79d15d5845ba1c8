//! `throtl record` and `throtl trace` flags and commands (issue 14).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::{parse_duration, print_stdout};
use crate::record::{RecordConfig, RecordHandle};
use crate::trace::{ReplayOptions, TracePlan, TraceSpec};

/// `throtl record` flags.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Address to listen on (clients send their requests here).
    #[arg(long, default_value = "127.0.0.1:9000", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// The server requests are forwarded to, e.g. http://127.0.0.1:8000.
    #[arg(long, value_name = "URL")]
    pub upstream: String,
    /// Trace file to write (one JSON line per request; see docs/traces.md).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Start a new numbered file (out.1.ext, out.2.ext, …) when the current one reaches this size.
    #[arg(long, value_name = "MB")]
    pub rotate_mb: Option<f64>,
    /// Also write prompt and answer text (off: only lengths, timings and salted hashes).
    #[arg(long)]
    pub keep_text: bool,
    /// Words per prefix block of the hash_ids.
    #[arg(long, default_value_t = crate::trace::MOONCAKE_BLOCK_TOKENS, value_name = "N")]
    pub block_tokens: u32,
    /// Proxy runtime threads (one forwards thousands of streams; more only add hand-offs between threads).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,
    /// After Ctrl-C, how long open streams may finish before they are cut.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub grace: Duration,
}

impl RecordArgs {
    /// The validated recording config.
    pub fn to_config(&self) -> Result<RecordConfig> {
        let upstream = crate::config::normalize_base_url(&self.upstream)
            .map_err(|e| anyhow::anyhow!(e.0.replace("--url", "--upstream")))?;
        let rotate_bytes = match self.rotate_mb {
            Some(mb) if !(mb.is_finite() && mb > 0.0) => {
                anyhow::bail!("--rotate-mb '{mb}' must be a positive size in megabytes, e.g. 100")
            }
            Some(mb) => Some((mb * 1_000_000.0) as u64),
            None => None,
        };
        if self.block_tokens == 0 {
            anyhow::bail!("--block-tokens must be at least 1 (512 matches the Mooncake traces)");
        }
        Ok(RecordConfig {
            listen: self.listen,
            upstream,
            out: self.out.clone(),
            rotate_bytes,
            keep_text: self.keep_text,
            block_tokens: self.block_tokens,
            grace: self.grace,
        })
    }
}

/// `throtl trace` subcommands.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// What to do with the trace.
    #[command(subcommand)]
    pub action: TraceAction,
}

/// What `throtl trace` does.
#[derive(Debug, Subcommand)]
pub enum TraceAction {
    /// Summarise a trace: rate over time, lengths, prefix reuse, sessions.
    Stats(TraceStatsArgs),
}

/// `throtl trace stats` flags.
#[derive(Debug, Args)]
pub struct TraceStatsArgs {
    /// The trace: mooncake:FILE, azure:FILE, burstgpt:FILE or throtl:FILE.
    #[arg(value_name = "FORMAT:PATH", value_parser = TraceSpec::parse)]
    pub trace: TraceSpec,
    /// Summarise only requests for this model (burstgpt, throtl).
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Print one JSON object (with every per-second and per-minute count) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML page with charts (arrivals per second, length histograms, sessions).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// Runs `throtl trace`.
pub fn run_trace(args: &TraceArgs) -> Result<ExitCode> {
    let TraceAction::Stats(s) = &args.action;
    let options = ReplayOptions {
        model: s.model.clone(),
        ..ReplayOptions::default()
    };
    let plan = TracePlan::load(&s.trace, &options)?;
    let stats = crate::trace::stats::compute(&plan);
    if let Some(path) = &s.html {
        std::fs::write(path, crate::results::html::render_trace(&plan, &stats))
            .with_context(|| format!("cannot write '{}'", path.display()))?;
    }
    let text = if s.json {
        serde_json::to_string_pretty(&stats)? + "\n"
    } else {
        crate::trace::stats::render(&stats)
    };
    print_stdout(&text);
    Ok(ExitCode::SUCCESS)
}

/// Runs `throtl record` until Ctrl-C.
pub fn run_record(args: &RecordArgs) -> Result<ExitCode> {
    let cfg = args.to_config()?;
    let rt = super::runtime(Some(args.threads))?;
    let mut handle: RecordHandle = rt.block_on(crate::record::start(&cfg))?;
    eprintln!(
        "throtl record: listening on http://{} → {}, writing {}; Ctrl-C to stop",
        handle.addr(),
        cfg.upstream,
        cfg.out.display()
    );
    rt.block_on(tokio::signal::ctrl_c())
        .context("cannot wait for Ctrl-C")?;
    eprintln!("\nstopping: open streams have {:?} to finish", cfg.grace);
    let clean = rt.block_on(handle.stop());
    // Dropping the runtime drops streams still open; each writes its line.
    rt.shutdown_timeout(Duration::from_secs(1));
    let summary = handle.finish()?;
    eprintln!(
        "wrote {} lines ({} with errors{}) to {}",
        summary.lines,
        summary.errors,
        if clean {
            ""
        } else {
            "; some streams were cut at the stop"
        },
        summary
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
