//! `throtl k8s job` and `throtl k8s collect`: flags and glue around [`crate::k8s`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use super::merge::{run_merge, MergeArgs};
use super::{parse_duration, print_stdout, Cli, ResultArgs};
use crate::k8s::{self, JobPlan};

/// `throtl k8s` subcommands.
#[derive(Debug, Args)]
pub struct K8sArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: K8sAction,
}

/// Kubernetes helpers for sharded runs.
#[derive(Debug, Subcommand)]
pub enum K8sAction {
    /// Print an Indexed Job running a bench sharded over N pods: throtl k8s job --shards 4 --image IMG -- bench FLAGS.
    Job(JobArgs),
    /// Collect the shard files from a finished job's pod logs (kubectl logs) and merge them.
    Collect(CollectArgs),
}

/// `throtl k8s job` flags.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// Pods, one shard each.
    #[arg(long)]
    pub shards: u32,
    /// Container image with the throtl binary on its PATH (see the Dockerfile).
    #[arg(long)]
    pub image: String,
    /// Job name.
    #[arg(long, default_value = "throtl-run")]
    pub name: String,
    /// Namespace of the job [default: the kube context's].
    #[arg(long)]
    pub namespace: Option<String>,
    /// The common start T0 is this long after now: time for every pod to be scheduled and pull the image.
    #[arg(long, default_value = "2m", value_parser = parse_duration, value_name = "DURATION")]
    pub start_in: Duration,
    /// `bench` and its flags (after `--`), without --shard, --start-at, --shard-out.
    #[arg(last = true, required = true, value_name = "bench FLAGS")]
    pub bench: Vec<String>,
}

/// `throtl k8s collect` flags.
#[derive(Debug, Args)]
pub struct CollectArgs {
    /// The job's name.
    pub job: String,
    /// Namespace of the job [default: the kube context's].
    #[arg(long)]
    pub namespace: Option<String>,
    /// The kubectl (or oc) to run.
    #[arg(long, default_value = "kubectl", value_name = "PATH")]
    pub kubectl: String,
    /// Where the collected shard files are written.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Merge even when slices are missing.
    #[arg(long)]
    pub allow_partial: bool,
    /// Refuse a shard that started more than this after T0.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub max_start_skew: Duration,
    /// Write the merged JSON summary here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// History, reports and cost of the merged run.
    #[command(flatten)]
    pub results: ResultArgs,
}

/// Runs `throtl k8s …`.
pub fn run_k8s(args: K8sArgs) -> Result<ExitCode> {
    match args.action {
        K8sAction::Job(a) => run_job(&a),
        K8sAction::Collect(a) => run_collect(a),
    }
}

fn run_job(a: &JobArgs) -> Result<ExitCode> {
    let Some(("bench", flags)) = a.bench.split_first().map(|(h, t)| (h.as_str(), t)) else {
        bail!("give the bench to run after '--': throtl k8s job --shards 4 --image IMG -- bench --url … ");
    };
    // Fail here, not in N pods: the flags must parse.
    let argv = ["throtl", "bench"]
        .into_iter()
        .map(String::from)
        .chain(flags.iter().cloned());
    Cli::try_parse_from(argv).context("the bench flags after '--' are invalid")?;
    let t0 = time::OffsetDateTime::now_utc() + a.start_in;
    let plan = JobPlan {
        name: a.name.clone(),
        namespace: a.namespace.clone(),
        shards: a.shards,
        image: a.image.clone(),
        start_at: t0
            .replace_nanosecond(0)
            .unwrap_or(t0)
            .format(&time::format_description::well_known::Rfc3339)?,
        bench_args: flags.to_vec(),
    };
    print_stdout(&k8s::job_manifest(&plan)?);
    Ok(ExitCode::SUCCESS)
}

fn run_collect(a: CollectArgs) -> Result<ExitCode> {
    let texts = k8s::collect(&a.kubectl, a.namespace.as_deref(), &a.job)?;
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("cannot create '{}'", a.out_dir.display()))?;
    let mut files = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let path = a.out_dir.join(format!("{}-{i}.shard.json", a.job));
        std::fs::write(&path, text)
            .with_context(|| format!("cannot write '{}'", path.display()))?;
        files.push(path);
    }
    eprintln!(
        "collected {} shard file(s) into {}",
        files.len(),
        a.out_dir.display()
    );
    run_merge(&MergeArgs {
        files,
        allow_partial: a.allow_partial,
        max_start_skew: a.max_start_skew,
        json: a.json,
        results: a.results,
    })
}

/// `throtl discover` flags.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// Only this namespace [default: all namespaces].
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Label selector, e.g. app=vllm.
    #[arg(long, short = 'l')]
    pub selector: Option<String>,
    /// Kubeconfig file for kubectl [default: kubectl's own].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<String>,
    /// The kubectl (or oc) to run.
    #[arg(long, default_value = "kubectl", value_name = "PATH")]
    pub kubectl: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How long each endpoint's probe may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// Runs `throtl discover`.
pub fn run_discover(a: &DiscoverArgs) -> Result<ExitCode> {
    let q = crate::discover::DiscoverQuery {
        kubectl: a.kubectl.clone(),
        namespace: a.namespace.clone(),
        selector: a.selector.clone(),
        kubeconfig: a.kubeconfig.clone(),
    };
    let mut found = q.endpoints()?;
    let rt = super::runtime(Some(2))?;
    rt.block_on(crate::discover::probe_all(&mut found, a.timeout));
    // A timed-out probe may leave a DNS lookup running on a blocking
    // thread; do not wait for it.
    rt.shutdown_background();
    if a.json {
        print_stdout(&format!("{}\n", serde_json::to_string_pretty(&found)?));
    } else {
        print_stdout(&crate::discover::render(&found));
    }
    Ok(ExitCode::SUCCESS)
}
