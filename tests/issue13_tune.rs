//! Issue 13: `throtl tune`. Search and confirm tests use a virtual-time
//! evaluation of the simulator's scheduler (deterministic, plus seeded
//! measurement noise); the harness tests run the real binary, launching
//! real `throtl mock` processes through the template.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use throtl::cli::{Cli, Command as Sub};
use throtl::engine::Controls;
use throtl::sim::engine::profile::Profile;
use throtl::sim::engine::scheduler::{NewRequest, SchedConfig, SchedulerCore};
use throtl::tune::report::{Measurement, Outcome, TuneReport};
use throtl::tune::space::{Candidate, Value};
use throtl::tune::{EvalRequest, Evaluation, Evaluator, TuneConfig};

const BIN: &str = env!("CARGO_BIN_EXE_throtl");

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A tune config parsed from flags, as the CLI builds it.
fn tune_config(dir: &Path, space: &str, launch: &str, extra: &[&str]) -> TuneConfig {
    let space = write(dir, "space.yaml", space);
    let mut argv: Vec<String> = ["throtl", "tune", "--launch", launch, "--space"]
        .map(String::from)
        .to_vec();
    argv.push(space.display().to_string());
    argv.extend(["--no-store", "--objective", "throughput"].map(String::from));
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    let Sub::Tune(args) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("tune")
    };
    args.to_config().unwrap()
}

/// Output tokens/s of `clients` closed-loop clients on the scheduler in
/// virtual time: `requests` requests of 256 prompt and 64 output tokens.
fn virtual_throughput(max_num_seqs: u32, clients: u32) -> f64 {
    let profile = Profile::builtin("llama3-8b-rtx4090").unwrap();
    let cfg = SchedConfig {
        max_num_seqs,
        max_num_batched_tokens: 2048,
        kv_blocks: profile.kv_blocks,
        block_size: 16,
        prefix_caching: false,
        chunked_prefill: true,
    };
    let mut core = SchedulerCore::new(cfg, profile);
    let req = |id, t| NewRequest {
        id,
        prompt_tokens: 256,
        max_tokens: 64,
        block_hashes: Vec::new(),
        arrival: t,
    };
    let (total, mut sent, mut t, mut tokens) = (400u64, 0u64, 0.0, 0u64);
    while sent < u64::from(clients) {
        core.add(req(sent, 0.0));
        sent += 1;
    }
    loop {
        let step = core.step(t);
        if step.scheduled_tokens == 0 {
            break;
        }
        t += step.duration;
        tokens += step.tokens.len() as u64;
        for _ in step.tokens.iter().filter(|k| k.finished) {
            if sent < total {
                core.add(req(sent, t));
                sent += 1;
            }
        }
    }
    tokens as f64 / t
}

/// Evaluates candidates with a model function plus ±`noise` relative noise.
struct ModelEvaluator {
    f: Box<dyn Fn(&Candidate) -> f64>,
    noise: f64,
    rng: SmallRng,
    calls: Arc<AtomicUsize>,
    labels: Vec<String>,
    cancel_after: Option<(usize, Controls)>,
    infeasible: fn(&Candidate) -> bool,
    delay: Duration,
}

impl ModelEvaluator {
    fn new(noise: f64, f: impl Fn(&Candidate) -> f64 + 'static) -> Self {
        Self {
            f: Box::new(f),
            noise,
            rng: SmallRng::seed_from_u64(3),
            calls: Arc::default(),
            labels: Vec::new(),
            cancel_after: None,
            infeasible: |_| false,
            delay: Duration::ZERO,
        }
    }
}

impl Evaluator for ModelEvaluator {
    async fn evaluate(&mut self, req: &EvalRequest) -> Evaluation {
        tokio::time::sleep(self.delay).await;
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.labels.push(req.label.clone());
        let jitter = 1.0 + self.noise * (self.rng.random::<f64>() * 2.0 - 1.0);
        let value = (self.f)(&req.candidate) * jitter;
        if let Some((k, c)) = &self.cancel_after {
            if n > *k {
                // A "kill" in the middle of this trial.
                c.soft.cancel();
            }
        }
        if (self.infeasible)(&req.candidate) {
            return Evaluation {
                outcome: Outcome::Infeasible {
                    reason: "ValueError: No available memory for the cache blocks.".into(),
                },
                command: None,
                pgid: None,
                log: None,
            };
        }
        Evaluation {
            outcome: Outcome::Measured(Measurement {
                value,
                output_tokens_per_s: value,
                ttft_p95_ms: 100.0,
                slo_attainment: None,
                probes: Vec::new(),
                signals: None,
                run_ids: Vec::new(),
            }),
            command: None,
            pgid: None,
            log: None,
        }
    }
}

fn int(c: &Candidate, k: &str) -> u32 {
    match c[k] {
        Value::Int(i) => i as u32,
        _ => panic!("{k}"),
    }
}

fn run(cfg: &TuneConfig, eval: &mut ModelEvaluator, controls: &Controls) -> TuneReport {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(throtl::tune::run(cfg, eval, controls, |_| {}))
        .unwrap()
}

const SEQS_SPACE: &str = "knobs:\n  max_num_seqs: {values: [4, 16, 64, 128], default: 4}\n";

#[test]
fn issue13_defaults_clearly_worse_winner_beats_them_within_5pct_of_grid_best() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tune_config(
        dir.path(),
        SEQS_SPACE,
        "x --port {port} --max-num-seqs {max_num_seqs}",
        &[],
    );
    // The grid, computed by the test: max-num-seqs 4 is far too small for 64 clients.
    let grid: Vec<(u32, f64)> = [4, 16, 64, 128]
        .iter()
        .map(|&s| (s, virtual_throughput(s, 64)))
        .collect();
    let best = grid.iter().map(|g| g.1).fold(0.0, f64::max);
    assert!(grid[0].1 < 0.5 * best, "{grid:?}");
    let mut eval = ModelEvaluator::new(0.02, |c| virtual_throughput(int(c, "max_num_seqs"), 64));
    let r = run(&cfg, &mut eval, &Controls::default());
    assert_eq!(r.search, "grid");
    let rec = r.recommendation.as_ref().unwrap();
    let seqs = int(&rec.knobs, "max_num_seqs");
    let true_value = virtual_throughput(seqs, 64);
    assert!(
        true_value >= 0.95 * best,
        "recommended {seqs}: {true_value} vs grid best {best}"
    );
    let vs = rec.vs_defaults.as_ref().unwrap();
    assert!(
        vs.better && vs.p_value < 0.05 && vs.rel_ci.0 > 0.5,
        "{vs:?}"
    );
    let c = r.confirm.as_ref().unwrap();
    assert_eq!(c.rounds, 3);
    assert!(c.finalists.iter().all(|f| f.samples.len() == 4));
    // 64 and 128 seqs serve 64 clients alike: no false winner between them.
    assert!(
        c.verdict.contains("beats the defaults (p = ")
            && c.verdict.contains("indistinguishable from"),
        "{}",
        c.verdict
    );
    let text = throtl::tune::report::render(&r);
    assert!(
        text.contains("vs defaults: +") && text.contains("--max-num-seqs"),
        "{text}"
    );
}

#[test]
fn issue13_equivalent_candidates_name_no_false_winner() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tune_config(
        dir.path(),
        SEQS_SPACE,
        "x --port {port} --max-num-seqs {max_num_seqs}",
        &[],
    );
    // 2 clients: every max-num-seqs ≥ 4 serves them the same.
    let mut eval = ModelEvaluator::new(0.03, |c| virtual_throughput(int(c, "max_num_seqs"), 2));
    let r = run(&cfg, &mut eval, &Controls::default());
    let c = r.confirm.as_ref().unwrap();
    assert!(c.winner.is_none(), "{c:?}");
    assert!(c.verdict.contains("indistinguishable"), "{}", c.verdict);
    let rec = r.recommendation.as_ref().unwrap();
    assert_eq!(int(&rec.knobs, "max_num_seqs"), 4, "keep the defaults");
    assert!(rec.why[0].contains("keep them"), "{:?}", rec.why);
}

#[test]
fn issue13_tpe_on_a_large_space_respects_constraints_and_finds_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let space = "knobs:\n  max_num_seqs: {type: int, min: 2, max: 256, log: true, steps: 8, default: 2}\n  spare: {type: int, min: 0, max: 9, step: 1, default: 0}\nconstraints: ['max_num_seqs * (spare + 1) <= 512']\n";
    let cfg = tune_config(
        dir.path(),
        space,
        "x {port} {max_num_seqs} {spare}",
        &["--trials", "12", "--confirm-rounds", "0"],
    );
    let mut eval = ModelEvaluator::new(0.0, |c| virtual_throughput(int(c, "max_num_seqs"), 64));
    let r = run(&cfg, &mut eval, &Controls::default());
    assert_eq!(r.search, "random + tpe");
    assert_eq!(r.trials.len(), 12);
    for t in &r.trials {
        assert!(int(&t.knobs, "max_num_seqs") * (int(&t.knobs, "spare") + 1) <= 512);
    }
    let best = virtual_throughput(64, 64);
    let got = r.recommendation.unwrap().value;
    assert!(got >= 0.95 * best, "{got} vs {best}");
}

#[test]
fn issue13_three_infeasible_starts_in_a_row_stop_the_search() {
    let dir = tempfile::tempdir().unwrap();
    let space = "knobs:\n  util: {values: [0.5, 0.6, 0.7, 0.8, 0.9], default: 0.9}\n";
    let cfg = tune_config(dir.path(), space, "x {port} {util}", &[]);
    let mut eval = ModelEvaluator::new(0.0, |_| 100.0);
    eval.infeasible = |c| c["util"].as_f64().unwrap() < 0.75;
    let r = run(&cfg, &mut eval, &Controls::default());
    // defaults, then 0.5 0.6 0.7 infeasible: stop before 0.8.
    assert_eq!(r.trials.len(), 4);
    let stop = r.stopped.clone().unwrap();
    assert!(
        stop.contains("3 configurations in a row failed to start")
            && stop.contains("No available memory"),
        "{stop}"
    );
    assert!(r.confirm.is_none());
    assert!(throtl::tune::report::render(&r).contains("No available memory"));
}

#[test]
fn issue13_budget_ends_the_tune_after_the_trial_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tune_config(
        dir.path(),
        SEQS_SPACE,
        "x {port} {max_num_seqs}",
        &["--budget", "250ms"],
    );
    let mut eval = ModelEvaluator::new(0.0, |c| virtual_throughput(int(c, "max_num_seqs"), 64));
    eval.delay = Duration::from_millis(100);
    let r = run(&cfg, &mut eval, &Controls::default());
    assert_eq!(
        r.trials.len(),
        3,
        "trials at 0, 100 and 200 ms; none started after 250 ms"
    );
    assert!(
        r.stopped
            .as_deref()
            .unwrap()
            .contains("--budget 250ms used up"),
        "{:?}",
        r.stopped
    );
    assert!(r.confirm.is_none() && r.recommendation.is_some());
}

#[test]
fn issue13_resume_after_a_kill_does_not_rerun_finished_trials() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("j.jsonl");
    let j = journal.display().to_string();
    let space = "knobs:\n  max_num_seqs: {values: [4, 8, 16, 32, 64, 128], default: 4}\n";
    let cfg = tune_config(
        dir.path(),
        space,
        "x {port} {max_num_seqs}",
        &["--journal", &j],
    );
    let f = |c: &Candidate| virtual_throughput(int(c, "max_num_seqs"), 64);
    // First run "killed" during its fourth trial.
    let controls = Controls::default();
    let mut first = ModelEvaluator::new(0.0, f);
    first.cancel_after = Some((3, controls.clone()));
    let r1 = run(&cfg, &mut first, &controls);
    assert_eq!(r1.trials.len(), 3);
    // A SIGKILL mid-write leaves half a line.
    let mut text = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(text.lines().count(), 4, "header + 3 trials");
    text.push_str("{\"index\":3,\"label\":\"tri");
    std::fs::write(&journal, text).unwrap();
    // Without --resume the journal is not overwritten.
    let mut fresh = ModelEvaluator::new(0.0, f);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(throtl::tune::run(
            &cfg,
            &mut fresh,
            &Controls::default(),
            |_| {},
        ))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--resume"), "{e}");
    let cfg = tune_config(
        dir.path(),
        space,
        "x {port} {max_num_seqs}",
        &["--journal", &j, "--resume"],
    );
    let mut second = ModelEvaluator::new(0.0, f);
    let r2 = run(&cfg, &mut second, &Controls::default());
    assert!(
        !second
            .labels
            .iter()
            .any(|l| ["trial-0", "trial-1", "trial-2"].contains(&l.as_str())),
        "{:?}",
        second.labels
    );
    assert_eq!(second.labels[0], "trial-3");
    assert_eq!(
        r2.trials
            .iter()
            .filter(|t| t.label.starts_with("trial-"))
            .count(),
        6
    );
    assert_eq!(r2.trials[..3], r1.trials[..]);
    // A different space cannot resume this journal.
    let other = tune_config(
        dir.path(),
        SEQS_SPACE,
        "x {port} {max_num_seqs}",
        &["--journal", &j, "--resume"],
    );
    let e = rt
        .block_on(throtl::tune::run(
            &other,
            &mut ModelEvaluator::new(0.0, f),
            &Controls::default(),
            |_| {},
        ))
        .unwrap_err()
        .to_string();
    assert!(e.contains("another --launch, --space"), "{e}");
}

// ---- the live path: the real binary launching real `throtl mock` processes.

fn tune_cli(dir: &Path, space: &str, launch: &str, extra: &[&str]) -> (Output, Option<TuneReport>) {
    let space = write(dir, "space.yaml", space);
    let json = dir.join("r.json");
    let out = Command::new(BIN)
        .args(["tune", "--launch", launch, "--space"])
        .arg(&space)
        .arg("--json")
        .arg(&json)
        .arg("--db")
        .arg(dir.join("h.db"))
        .args([
            "--tokenizer",
            "words",
            "--output-tokens",
            "16",
            "--input-tokens",
            "32",
            "--warmup",
            "2",
        ])
        .args(extra)
        .output()
        .unwrap();
    let report = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    (out, report)
}

/// Whether process group `pgid` has a running member: a process in /proc
/// with that group that is not a zombie (orphans re-parented to a PID 1 that
/// reaps slowly linger as zombies, which are no longer running).
fn alive(pgid: i32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let mut f = stat.rsplit(')').next().unwrap_or("").split_whitespace();
        let (state, _ppid, pgrp) = (f.next(), f.next(), f.next());
        pgrp == Some(pgid.to_string().as_str()) && state != Some("Z")
    })
}

/// Checks the `--json` file against docs/tune.schema.json.
fn assert_schema(dir: &Path) {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/tune.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("r.json")).unwrap()).unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = v
        .iter_errors(&doc)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let mut bad = doc.clone();
    bad["trials"][0]["outcome"]["status"] = "weird".into();
    assert!(!v.is_valid(&bad), "the schema checks outcomes");
}

fn mock() -> String {
    throtl::tune::template::quote(BIN)
}

#[test]
fn issue13_live_tune_end_to_end_infeasible_oom_reported_and_no_process_left() {
    let dir = tempfile::tempdir().unwrap();
    let space = "knobs:\n  max_num_seqs: {values: [1, 16], default: 1}\n  gpu_memory_utilization: {values: [0.6, 0.9], default: 0.9}\n";
    let launch = format!(
        "{} mock --port {{port}} --startup-delay 200ms --max-num-seqs {{max_num_seqs}} --gpu-memory-utilization {{gpu_memory_utilization}}",
        mock()
    );
    let journal = dir.path().join("j.jsonl");
    let t0 = Instant::now();
    let (out, report) = tune_cli(
        dir.path(),
        space,
        &launch,
        &[
            "--objective",
            "throughput",
            "-c",
            "16",
            "--probe-duration",
            "1s",
            "--confirm-rounds",
            "3",
            "--journal",
            journal.to_str().unwrap(),
            "--html",
            dir.path().join("t.html").to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(120));
    // Every engine the tune started is gone.
    let pgids: Vec<i32> = r.trials.iter().filter_map(|t| t.pgid).collect();
    assert_eq!(pgids.len(), r.trials.len());
    for g in &pgids {
        assert!(!alive(*g), "engine group {g} is still alive");
    }
    // The OOM configurations are infeasible with vLLM's log line, not retried.
    let oom: Vec<_> = r
        .trials
        .iter()
        .filter(|t| t.outcome.is_infeasible())
        .collect();
    assert_eq!(oom.len(), 2, "{stdout}");
    for t in &oom {
        assert_eq!(t.knobs["gpu_memory_utilization"], Value::Float(0.6));
        assert!(t
            .outcome
            .reason()
            .unwrap()
            .contains("No available memory for the cache blocks"));
        assert!(t.log.as_ref().unwrap().exists(), "engine log kept");
    }
    assert!(
        stdout.contains("infeasible") && stdout.contains("No available memory"),
        "{stdout}"
    );
    // max-num-seqs 1 serves 16 users far worse than 16.
    let rec = r.recommendation.unwrap();
    assert_eq!(rec.knobs["max_num_seqs"], Value::Int(16), "{stdout}");
    assert!(rec.vs_defaults.unwrap().rel > 1.0, "{stdout}");
    assert!(rec.command.contains("--max-num-seqs 16") && rec.command.contains("--port 8000"));
    assert!(
        std::fs::read_dir(format!("{}.logs", journal.display()))
            .unwrap()
            .count()
            >= r.trials.len()
    );
    assert_schema(dir.path());
    let html = std::fs::read_to_string(dir.path().join("t.html")).unwrap();
    assert!(
        html.contains("Pareto front")
            && html.contains("No available memory")
            && html.contains("<svg")
    );
    // Each measurement is a stored run of the tune's group.
    let group = r.group.unwrap();
    let runs = Command::new(BIN)
        .args(["runs", "list", "--group", &group, "--db"])
        .arg(dir.path().join("h.db"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&runs.stdout);
    assert!(listed.lines().count() >= 2, "{listed}");
}

#[test]
fn issue13_live_capacity_doubles_then_bisects_to_5pct() {
    let dir = tempfile::tempdir().unwrap();
    let space = "knobs:\n  max_num_seqs: {values: [1, 16], default: 1}\n";
    let launch = format!(
        "{} mock --port {{port}} --max-num-seqs {{max_num_seqs}}",
        mock()
    );
    let (out, report) = tune_cli(
        dir.path(),
        space,
        &launch,
        &[
            "--objective",
            "capacity",
            "--slo",
            "ttft=400ms",
            "--start-rate",
            "2",
            "--probe-duration",
            "1500ms",
            "--confirm-rounds",
            "0",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report.unwrap();
    let cap = |i: usize| r.trials[i].outcome.measurement().unwrap().clone();
    let (one, many) = (cap(0), cap(1));
    assert!(many.value > 2.0 * one.value, "{stdout}");
    for m in [&one, &many] {
        let met = m
            .probes
            .iter()
            .filter(|p| p.met)
            .map(|p| p.rate)
            .fold(0.0, f64::max);
        let missed = m
            .probes
            .iter()
            .filter(|p| !p.met)
            .map(|p| p.rate)
            .fold(f64::MAX, f64::min);
        assert_eq!(met, m.value);
        assert!(
            missed <= met * 1.05 + 1e-9,
            "bracket {met}..{missed}: {:?}",
            m.probes
        );
        assert!(m.slo_attainment.is_some() && m.run_ids.len() == m.probes.len());
    }
    assert!(stdout.contains("req/s"), "{stdout}");
    assert_schema(dir.path());
}

#[test]
fn issue13_live_cost_prices_good_tokens_with_the_gpu_count_of_each_candidate() {
    let dir = tempfile::tempdir().unwrap();
    // gpus: 1 for max-num-seqs 8, 2 for 16: the bigger batch must earn its second GPU.
    let space = "knobs:\n  max_num_seqs: {values: [8, 16], default: 8}\ngpus: max_num_seqs / 8\n";
    let launch = format!(
        "{} mock --port {{port}} --max-num-seqs {{max_num_seqs}}",
        mock()
    );
    let (out, report) = tune_cli(
        dir.path(),
        space,
        &launch,
        &[
            "--objective",
            "cost",
            "--rate",
            "4",
            "--gpu-cost-per-hour",
            "3.6",
            "--slo",
            "ttft=2s",
            "--probe-duration",
            "2s",
            "--confirm-rounds",
            "0",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report.unwrap();
    assert_eq!(r.unit, "$/1M good tok");
    for (t, gpus) in r.trials.iter().zip([1.0, 2.0]) {
        let m = t.outcome.measurement().unwrap();
        let good = m.output_tokens_per_s * m.slo_attainment.unwrap();
        let expected = 3.6 * gpus / 3600.0 / good * 1e6;
        assert!(
            (m.value - expected).abs() < 1e-6 * expected,
            "{} vs {expected}",
            m.value
        );
    }
    // At 4 req/s both keep up, so one GPU is the cheaper configuration.
    assert_eq!(
        r.recommendation.unwrap().knobs["max_num_seqs"],
        Value::Int(8)
    );
}

#[test]
fn issue13_trial_timeout_and_unhealthy_engine_leave_no_process_alive() {
    let dir = tempfile::tempdir().unwrap();
    // delay 30s: /health answers 503 past --startup-timeout; delay 0s: healthy,
    // but the 5 s measurement outlasts --trial-timeout.
    let space = "knobs:\n  delay: {values: ['0s', '30s'], default: '0s'}\n";
    let launch = format!("{} mock --port {{port}} --startup-delay {{delay}}", mock());
    let (out, report) = tune_cli(
        dir.path(),
        space,
        &launch,
        &[
            "--objective",
            "throughput",
            "--probe-duration",
            "5s",
            "--trial-timeout",
            "2500ms",
            "--startup-timeout",
            "1500ms",
            "--stop-grace",
            "2s",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report.unwrap();
    assert_eq!(r.trials.len(), 2, "{stdout}");
    let timeout = r.trials[0].outcome.reason().unwrap();
    assert!(timeout.contains("trial timeout"), "{timeout}");
    let unhealthy = r.trials[1].outcome.reason().unwrap();
    assert!(r.trials[1].outcome.is_infeasible());
    assert!(
        unhealthy.contains("health route never answered 200") && unhealthy.contains("503"),
        "{unhealthy}"
    );
    for t in &r.trials {
        assert!(!alive(t.pgid.unwrap()), "{} left its engine alive", t.label);
    }
    assert!(r.recommendation.is_none());
    assert!(stdout.contains("nothing to recommend"), "{stdout}");
    assert_schema(dir.path());
}

#[test]
fn issue13_ctrl_c_stops_the_running_engine() {
    let dir = tempfile::tempdir().unwrap();
    let space = write(
        dir.path(),
        "space.yaml",
        "knobs:\n  max_num_seqs: {values: [4, 8], default: 4}\n",
    );
    let launch = format!(
        "{} mock --port {{port}} --max-num-seqs {{max_num_seqs}}",
        mock()
    );
    let mut child = Command::new(BIN)
        .args([
            "tune",
            "--no-store",
            "--objective",
            "throughput",
            "--probe-duration",
            "30s",
            "--tokenizer",
            "words",
            "--launch",
            &launch,
            "--space",
        ])
        .arg(&space)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first engine: a child of the tune process.
    let tune_pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(20);
    let engines = loop {
        let kids = children(tune_pid);
        if !kids.is_empty() {
            break kids;
        }
        assert!(Instant::now() < deadline, "no engine started");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(2)); // measuring now
    assert!(
        engines.iter().all(|p| alive(*p)),
        "the checker sees the running engine"
    );
    unsafe { libc::kill(tune_pid, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    for pid in engines {
        assert!(!alive(pid), "engine {pid} survived Ctrl-C");
    }
}

#[test]
fn issue13_live_resume_after_sigkill_replays_finished_trials() {
    let dir = tempfile::tempdir().unwrap();
    let space = write(
        dir.path(),
        "space.yaml",
        "knobs:\n  max_num_seqs: {values: [1, 2, 4, 8, 16], default: 1}\n",
    );
    let journal = dir.path().join("j.jsonl");
    let launch = format!(
        "{} mock --port {{port}} --max-num-seqs {{max_num_seqs}}",
        mock()
    );
    let tune = |resume: bool| {
        let mut c = Command::new(BIN);
        c.args([
            "tune",
            "--no-store",
            "--objective",
            "throughput",
            "--probe-duration",
            "1s",
            "--confirm-rounds",
            "0",
        ])
        .args([
            "--tokenizer",
            "words",
            "--output-tokens",
            "16",
            "--warmup",
            "2",
            "--launch",
            &launch,
            "--space",
        ])
        .arg(&space)
        .arg("--journal")
        .arg(&journal)
        .arg("--json")
        .arg(dir.path().join("r.json"));
        if resume {
            c.arg("--resume");
        }
        c
    };
    let mut child = tune(false)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = || {
        std::fs::read_to_string(&journal)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines() < 3 {
        assert!(Instant::now() < deadline, "no two trials journaled");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL: the tune cannot stop the engine in flight, so the test does,
    // by its group. SIGSTOP first, so no engine starts between the listing and the kill.
    unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(50));
    let orphans = children(child.id() as i32);
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    for g in &orphans {
        unsafe { libc::kill(-g, libc::SIGKILL) };
    }
    let text = std::fs::read_to_string(&journal).unwrap();
    let done: Vec<serde_json::Value> = text
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(done.len() >= 2);
    let out = tune(true).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: TuneReport =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(r.trials.len(), 5);
    // The finished trials are replayed (same engine process groups), not re-run.
    for (old, new) in done.iter().zip(&r.trials) {
        assert_eq!(
            old["pgid"].as_i64(),
            new.pgid.map(i64::from),
            "{} was re-run",
            new.label
        );
    }
    let fresh: Vec<i32> = r.trials[done.len()..]
        .iter()
        .filter_map(|t| t.pgid)
        .collect();
    assert_eq!(fresh.len(), 5 - done.len());
    for g in fresh.iter().chain(&orphans) {
        assert!(!alive(*g), "group {g} alive");
    }
}

/// Pids whose parent is `pid` (from /proc).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let after = stat.rsplit(')').next().unwrap_or("");
            after
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse::<i32>().ok())
                == Some(pid)
        })
        .collect()
}

#[test]
fn issue13_bad_input_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let err = |space: &str, launch: &str, extra: &[&str]| {
        let (out, _) = tune_cli(dir.path(), space, launch, extra);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let s = "knobs:\n  max_num_seqs: {values: [4, 8], default: 4}\n";
    let e = err(
        s,
        "m --port {port} {max_num_seqs} {tp}",
        &["--objective", "throughput"],
    );
    assert!(e.contains("no knob 'tp'"), "{e}");
    let e = err(s, "m --port {port}", &["--objective", "throughput"]);
    assert!(
        e.contains("knob 'max_num_seqs' is not used by --launch"),
        "{e}"
    );
    let e = err(
        "knobs: {}\n",
        "m --port {port}",
        &["--objective", "throughput"],
    );
    assert!(e.contains("no knobs"), "{e}");
    let e = err(
        "knobs:\n  a: {values: [1, 2], default: 1}\n  b: {values: [1], default: 5}\nconstraints: ['a * b >= 5']\n",
        "m {port} {a} {b}",
        &["--objective", "throughput"],
    );
    assert!(e.contains("exclude every candidate"), "{e}");
    let e = err(
        s,
        "m --port {port} {max_num_seqs}",
        &["--objective", "capacity"],
    );
    assert!(e.contains("--slo"), "{e}");
    // --dry-run prints every launch command and starts nothing.
    let (out, _) = tune_cli(
        dir.path(),
        s,
        "m --port {port} --seqs {max_num_seqs}",
        &["--objective", "throughput", "--dry-run"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("trial-0 (defaults): m --port 8000 --seqs 4")
            && text.contains("trial-1: m --port 8000 --seqs 8"),
        "{text}"
    );
}

#[test]
fn issue13_init_writes_a_space_that_parses_with_real_flag_names() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tune.yaml");
    let out = Command::new(BIN)
        .args(["tune", "--init"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&p).unwrap();
    for flag in [
        "--max-num-seqs",
        "--max-running-requests",
        "--max-batch-prefill-tokens",
        "--mem-fraction-static",
    ] {
        assert!(text.contains(flag), "{flag}");
    }
    let space = throtl::tune::space::Space::parse(&text).unwrap();
    assert_eq!(space.knobs.len(), 6);
    let again = Command::new(BIN)
        .args(["tune", "--init"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!again.status.success());
}
