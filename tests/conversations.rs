#![allow(clippy::unwrap_used)]
//! Issue 4: multi-turn conversations (`--turns`) against the in-process
//! simulator, on every chat protocol, and JSONL `messages` records sent as
//! real message lists.

mod common;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use throtl::api::ApiKind;
use throtl::engine::record::RequestRecord;
use throtl::engine::request::Transport;
use throtl::engine::workload::{TokenLengths, Workload};
use throtl::engine::{Controls, LoadPlan, LoadShape, StopCondition};
use throtl::sim::{self, EngineFlavor, SimConfig};

/// What the simulator streams for a 5-token answer (its words, in order).
const SIM_ANSWER_5: &str = " the of and to in";
/// Words of each synthetic prompt (the simulator counts one token per word).
const PROMPT_WORDS: u32 = 4;

fn sim_of(engine: EngineFlavor) -> sim::SimHandle {
    sim::start(SimConfig {
        ttft: Duration::from_millis(3),
        itl: Duration::from_millis(1),
        engine,
        ..SimConfig::default()
    })
    .unwrap()
}

/// Runs `requests` requests of `turns`-turn conversations with one user and
/// returns the records in issue order.
async fn run_turns(url: String, api: ApiKind, requests: u64, turns: u32) -> Vec<RequestRecord> {
    run_turns_shaped(url, api, requests, turns, LoadShape::Closed { think: None }).await
}

async fn run_turns_shaped(
    url: String,
    api: ApiKind,
    requests: u64,
    turns: u32,
    shape: LoadShape,
) -> Vec<RequestRecord> {
    let transport = Arc::new(Transport::new(
        &url,
        Default::default(),
        Arc::from(api.protocol()),
        Duration::from_secs(10),
    ));
    let plan = Arc::new(LoadPlan {
        concurrency: 1,
        stop: StopCondition::Requests(requests),
        warmup: 0,
        model: "throtl-sim".into(),
        ignore_eos: true,
        workload: Workload::words(16, PROMPT_WORDS, &TokenLengths::Fixed { n: 5 }, 3),
        shape,
        ramp_up: Duration::ZERO,
        turns,
        first_seq: 0,
        retry: Default::default(),
        cold_connections: false,
        shard: None,
        trace_offsets: None,
    });
    let (tx, rx) = mpsc::channel();
    throtl::engine::run(transport, plan, tx, Controls::default()).await;
    let mut recs: Vec<RequestRecord> = rx.try_iter().collect();
    recs.sort_by_key(|r| r.seq);
    recs
}

/// Every turn after the first resends the previous prompt, the answer the
/// simulator actually streamed, and a new prompt: the server's prompt count
/// grows by exactly answer + new prompt, and the captured answer is the
/// simulator's text.
fn assert_growing_history(api: ApiKind, recs: &[RequestRecord]) {
    assert_eq!(recs.len(), 6, "{api}");
    for (i, r) in recs.iter().enumerate() {
        assert!(r.is_ok(), "{api}: {:?}", r.error_sample);
        assert_eq!(r.conversation, Some(i as u64 / 3), "{api}");
        assert_eq!(r.turn, Some(i as u32 % 3), "{api}");
        assert_eq!(r.answer.as_deref(), Some(SIM_ANSWER_5), "{api}");
    }
    for pair in recs.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        let prompt = next.usage.input_tokens.unwrap();
        if next.turn == Some(0) {
            assert_eq!(
                prompt, PROMPT_WORDS,
                "{api}: a new conversation starts afresh"
            );
        } else {
            let expect = prev.usage.input_tokens.unwrap() + 5 + PROMPT_WORDS;
            assert_eq!(prompt, expect, "{api}: turn {:?}", next.turn);
        }
    }
    // Only a first turn's prompt is the one the local count refers to.
    assert!(recs
        .iter()
        .filter(|r| r.turn != Some(0))
        .all(|r| r.local_input_tokens.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue4_three_turn_conversations_resend_the_streamed_answers_on_every_chat_protocol() {
    let cases = [
        (EngineFlavor::Vllm, ApiKind::OpenaiChat),
        (EngineFlavor::Anthropic, ApiKind::Anthropic),
        (EngineFlavor::Gemini, ApiKind::Gemini),
        (EngineFlavor::Cohere, ApiKind::Cohere),
        (EngineFlavor::Ollama, ApiKind::OllamaChat),
    ];
    for (engine, api) in cases {
        let server = sim_of(engine);
        let recs = run_turns(server.url(), api, 6, 3).await;
        assert_growing_history(api, &recs);
    }
}

#[tokio::test]
async fn single_turn_runs_capture_no_answer_text() {
    let server = sim_of(EngineFlavor::Vllm);
    let recs = run_turns(server.url(), ApiKind::OpenaiChat, 3, 1).await;
    assert_eq!(recs.len(), 3);
    for r in &recs {
        assert!(r.is_ok());
        assert_eq!(
            (r.answer.as_ref(), r.conversation, r.turn),
            (None, None, None)
        );
        assert_eq!(r.usage.input_tokens, Some(PROMPT_WORDS));
    }
}

#[tokio::test]
async fn bench_with_turns_writes_conversation_and_turn_to_the_records() {
    let server = sim_of(EngineFlavor::Vllm);
    let dir = common::tmpdir();
    let records = dir.path().join("r.jsonl");
    let mut cfg = common::config(&server.url(), 2, 8, 4);
    cfg.records_out = Some(records.clone());
    cfg.workload.turns = 2;
    let r = throtl::bench::run(&cfg, Controls::default()).await.unwrap();
    assert_eq!(r.requests.ok, 8);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&records)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    let turns: Vec<u64> = lines.iter().map(|l| l["turn"].as_u64().unwrap()).collect();
    assert_eq!(turns.iter().filter(|&&t| t == 0).count(), 4, "{turns:?}");
    assert_eq!(turns.iter().filter(|&&t| t == 1).count(), 4, "{turns:?}");
    let mut convs: Vec<u64> = lines
        .iter()
        .map(|l| l["conversation"].as_u64().unwrap())
        .collect();
    convs.sort_unstable();
    convs.dedup();
    assert_eq!(convs, [0, 1, 2, 3]);
    // Second turns carry the first turn's prompt and answer (16 + 4 words) plus a new prompt.
    for l in lines.iter().filter(|l| l["turn"] == 1) {
        assert_eq!(l["input_tokens"], 16 + 4 + 16, "{l}");
    }
}

#[test]
fn turns_on_a_completion_protocol_or_open_loop_is_an_actionable_error() {
    let mut cfg = common::config("http://127.0.0.1:9", 1, 4, 4);
    cfg.workload.turns = 3;
    cfg.api = ApiKind::Tgi;
    let e = cfg.validate().unwrap_err().0;
    assert!(
        e.contains("--turns 3") && e.contains("--api openai-chat"),
        "{e}"
    );
    cfg.api = ApiKind::OpenaiChat;
    cfg.validate().unwrap();
    cfg.workload.shape = LoadShape::Open {
        arrivals: throtl::engine::arrival::ArrivalConfig {
            rate: 5.0,
            process: throtl::engine::arrival::ArrivalProcess::Poisson,
            seed: 1,
            ramp_up: Duration::ZERO,
        },
        max_concurrency: None,
    };
    let e = cfg.validate().unwrap_err().0;
    assert!(e.contains("--users") && e.contains("--rate"), "{e}");
    cfg.workload.shape = LoadShape::Closed { think: None };
    cfg.workload.turns = 0;
    assert!(cfg
        .validate()
        .unwrap_err()
        .0
        .contains("--turns must be at least 1"));
}

#[tokio::test]
async fn jsonl_messages_records_reach_the_server_as_a_message_list() {
    // The simulator counts the words of every message's content: a real
    // message list gives the sum of the contents, while the old flattened
    // form ("role: content" lines) would add one word per role label.
    let server = sim_of(EngineFlavor::Anthropic);
    let dir = common::tmpdir();
    let path = dir.path().join("conv.jsonl");
    std::fs::write(
        &path,
        r#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"one two three"},{"role":"assistant","content":"four five"},{"role":"user","content":"six"}],"max_tokens":3}"#,
    )
    .unwrap();
    let mut cfg = common::config(&server.url(), 1, 2, 4);
    cfg.api = ApiKind::Anthropic;
    cfg.workload.tokenizer = Some(throtl::engine::tokenizer::TokenizerSpec::Cl100kBase);
    cfg.workload.dataset = Some(throtl::engine::dataset::DatasetSpec::Jsonl(path));
    let r = throtl::bench::run(&cfg, Controls::default()).await.unwrap();
    assert_eq!(r.requests.ok, 2);
    // 2 system words (sent as Anthropic's top-level `system`) + 3 + 2 + 1.
    assert_eq!(r.tokens.input_total, 2 * 8);
}

#[test]
fn issue4_turns_from_a_config_file_and_init_from_the_cli() {
    let server = sim_of(EngineFlavor::Vllm);
    let dir = common::tmpdir();
    let yaml = dir.path().join("throtl.yaml");
    // `throtl init` writes the example, and refuses to overwrite it without --force.
    let init = |force: bool| {
        let mut c = std::process::Command::new(common::bin());
        c.arg("init").arg(&yaml);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    assert!(init(false).status.success());
    assert!(std::fs::read_to_string(&yaml)
        .unwrap()
        .contains("# turns: 4"));
    let again = init(false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    std::fs::write(
        &yaml,
        "turns: 3\nconcurrency: 1\nrequests: 3\noutput-tokens: 4\ninput-tokens: 8\ntokenizer: words\nwarmup: 0\n",
    )
    .unwrap();
    let records = dir.path().join("r.jsonl");
    let out = std::process::Command::new(common::bin())
        .args([
            "bench",
            "--url",
            &server.url(),
            "-m",
            "throtl-sim",
            "--no-store",
            "--quiet",
        ])
        .arg("--config")
        .arg(&yaml)
        .arg("--records")
        .arg(&records)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prompts: Vec<u64> = std::fs::read_to_string(&records)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .inspect(|v| assert_eq!(v["conversation"], 0))
        .map(|v| v["input_tokens"].as_u64().unwrap())
        .collect();
    // 8-word prompts and 4-token answers: 8, 8+4+8, 20+4+8.
    assert_eq!(prompts, [8, 20, 32]);
}

#[tokio::test]
async fn users_think_between_turns() {
    let server = sim_of(EngineFlavor::Vllm);
    let think = throtl::engine::ThinkTime {
        mean: Duration::from_millis(120),
        jitter: Duration::ZERO,
    };
    let shape = LoadShape::Closed { think: Some(think) };
    let recs = run_turns_shaped(server.url(), ApiKind::OpenaiChat, 4, 2, shape).await;
    assert_eq!(recs.len(), 4);
    for w in recs.windows(2) {
        assert!(w[1].scheduled >= w[0].end + think.mean, "{:?}", w[1].turn);
    }
    assert_eq!(recs[1].turn, Some(1));
    assert_eq!(
        recs[1].usage.input_tokens,
        Some(PROMPT_WORDS + 5 + PROMPT_WORDS)
    );
}
