//! `throtl merge`: the shard files of one sharded run → one report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser};

use super::{parse_duration, print_stdout, Cli, Command, ResultArgs};
use crate::api::ApiKind;
use crate::config::BenchConfig;
use crate::shard::{self, ShardFile};

/// `throtl merge` flags.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Shard files written by `bench --shard K/N` (every slice of one run).
    #[arg(required = true, value_name = "SHARD_FILE")]
    pub files: Vec<PathBuf>,
    /// Merge even when slices are missing; the report says which.
    #[arg(long)]
    pub allow_partial: bool,
    /// Refuse a shard that started more than this after the common start T0.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub max_start_skew: Duration,
    /// Write the merged JSON summary here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// History, reports and cost of the merged run.
    #[command(flatten)]
    pub results: ResultArgs,
}

/// Runs `throtl merge`.
pub fn run_merge(args: &MergeArgs) -> Result<ExitCode> {
    let files = shard::load(&args.files)?;
    let missing = shard::check(&files, args.allow_partial, args.max_start_skew)?;
    let Some((_, first)) = files.first() else {
        bail!("no shard files given");
    };
    let cfg = merged_config(args, first)?;
    let run = shard::merge(&cfg, &files, &missing);
    crate::bench::write_finished(&cfg, &run)?;
    print_stdout(&crate::report::console::render(&run.report));
    if let Some(db) = &cfg.results.db {
        eprintln!(
            "merged run {} stored in {}",
            run.report.run_id,
            db.display()
        );
    }
    Ok(super::exit_code(&run.report, &cfg))
}

/// The run's configuration, rebuilt from the bench flags the shards
/// recorded, with this command's outputs and without the shard settings.
fn merged_config(args: &MergeArgs, first: &ShardFile) -> Result<BenchConfig> {
    let argv = ["throtl", "bench"]
        .into_iter()
        .map(String::from)
        .chain(first.args.iter().cloned());
    let cli = Cli::try_parse_from(argv)
        .context("the shard files hold bench flags this throtl cannot parse")?;
    let Command::Bench(bench) = cli.command else {
        bail!("the shard files do not hold bench flags");
    };
    let api = ApiKind::ALL
        .into_iter()
        .find(|k| k.to_string() == first.api)
        .with_context(|| format!("unknown protocol '{}' in the shard files", first.api))?;
    let mut cfg = bench.to_config_with(first.model.clone(), api)?;
    cfg.client.shard = None;
    cfg.json_out = args.json.clone();
    cfg.records_out = None;
    cfg.results = args.results.to_options()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_needs_files() {
        assert!(super::super::Cli::try_parse_from(["throtl", "merge"]).is_err());
    }
}
