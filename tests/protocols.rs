#![allow(clippy::unwrap_used)]
//! Issue 3: every protocol's client against captured fixtures: whole
//! stream, split at every byte boundary, CRLF variants, comments and
//! keep-alives, in-stream errors and truncation.

use throtl::api::{ApiKind, Protocol};
use throtl::engine::record::{ErrorClass, RequestRecord};
use throtl::engine::request::replay_body;

/// What a fixture must decode to.
struct Expect {
    file: &'static str,
    api: ApiKind,
    /// Content-carrying messages (first token included).
    content: usize,
    input: Option<u32>,
    output: Option<u32>,
    error: Option<ErrorClass>,
}

const fn ok(
    file: &'static str,
    api: ApiKind,
    content: usize,
    input: Option<u32>,
    output: Option<u32>,
) -> Expect {
    Expect {
        file,
        api,
        content,
        input,
        output,
        error: None,
    }
}

const fn err(file: &'static str, api: ApiKind, content: usize, error: ErrorClass) -> Expect {
    Expect {
        file,
        api,
        content,
        input: None,
        output: None,
        error: Some(error),
    }
}

fn fixtures() -> Vec<Expect> {
    use ApiKind::*;
    vec![
        ok("openai_chat.sse", OpenaiChat, 10, Some(42), Some(11)),
        ok(
            "openai_completions.sse",
            OpenaiCompletions,
            16,
            Some(6),
            Some(16),
        ),
        ok("azure_openai_chat.sse", AzureOpenai, 9, Some(14), Some(10)),
        ok("llamacpp_chat.sse", OpenaiChat, 10, Some(31), Some(11)),
        ok("tgi_generate_stream.sse", Tgi, 20, Some(7), Some(20)),
        ok("ollama_chat.ndjson", OllamaChat, 10, Some(31), Some(11)),
        ok(
            "ollama_generate.ndjson",
            OllamaGenerate,
            9,
            Some(36),
            Some(10),
        ),
        ok("anthropic_messages.sse", Anthropic, 3, Some(14), Some(12)),
        ok("gemini_stream.sse", Gemini, 3, Some(9), Some(17)),
        ok("cohere_v2_chat.sse", Cohere, 10, Some(497), Some(12)),
        err(
            "openai_error_midstream.sse",
            OpenaiChat,
            3,
            ErrorClass::StreamError,
        ),
        err(
            "llamacpp_error_midstream.sse",
            OpenaiChat,
            1,
            ErrorClass::StreamError,
        ),
        err("tgi_error_midstream.sse", Tgi, 1, ErrorClass::StreamError),
        err("anthropic_error.sse", Anthropic, 1, ErrorClass::StreamError),
    ]
}

fn load(file: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/streams/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

type Summary = (usize, Option<u32>, Option<u32>, Option<ErrorClass>);

fn summary(r: &RequestRecord) -> Summary {
    (
        r.token_times.len(),
        r.usage.input_tokens,
        r.usage.output_tokens,
        r.error,
    )
}

fn expected(e: &Expect) -> Summary {
    match e.error {
        // Usage seen before the error is kept; only content and class matter.
        Some(_) => (e.content, None, None, e.error),
        None => (e.content, e.input, e.output, None),
    }
}

fn decode(p: &dyn Protocol, body: &[u8]) -> Summary {
    let mut s = summary(&replay_body(p, [body]));
    if s.3.is_some() {
        (s.1, s.2) = (None, None);
    }
    s
}

fn decode_split(p: &dyn Protocol, body: &[u8], at: usize) -> Summary {
    let mut s = summary(&replay_body(p, [&body[..at], &body[at..]]));
    if s.3.is_some() {
        (s.1, s.2) = (None, None);
    }
    s
}

#[test]
fn issue3_every_fixture_decodes_to_its_counts() {
    for e in fixtures() {
        let p = e.api.protocol();
        assert_eq!(
            decode(p.as_ref(), &load(e.file)),
            expected(&e),
            "{}",
            e.file
        );
    }
}

#[test]
fn issue3_split_at_every_byte_boundary_gives_the_same_result() {
    for e in fixtures() {
        let p = e.api.protocol();
        let body = load(e.file);
        for at in 0..=body.len() {
            assert_eq!(
                decode_split(p.as_ref(), &body, at),
                expected(&e),
                "{} split at {at}",
                e.file
            );
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        let mut s = summary(&replay_body(p.as_ref(), bytes));
        if s.3.is_some() {
            (s.1, s.2) = (None, None);
        }
        assert_eq!(s, expected(&e), "{} byte by byte", e.file);
    }
}

fn to_crlf(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(body.to_vec())
        .unwrap()
        .replace("\r\n", "\n");
    text.replace('\n', "\r\n").into_bytes()
}

fn to_lf(body: &[u8]) -> Vec<u8> {
    String::from_utf8(body.to_vec())
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes()
}

#[test]
fn issue3_crlf_and_lf_line_endings_are_equivalent() {
    for e in fixtures() {
        let p = e.api.protocol();
        let body = load(e.file);
        assert_eq!(
            decode(p.as_ref(), &to_crlf(&body)),
            expected(&e),
            "{} CRLF",
            e.file
        );
        assert_eq!(
            decode(p.as_ref(), &to_lf(&body)),
            expected(&e),
            "{} LF",
            e.file
        );
    }
}

/// Inserts SSE comments/keep-alives (or blank NDJSON lines) between messages.
fn with_keepalives(body: &[u8], sse: bool) -> Vec<u8> {
    let text = String::from_utf8(to_lf(body)).unwrap();
    let sep = if sse {
        "\n\n: keep-alive\n\n:\n\n"
    } else {
        "\n\n\n"
    };
    let mut out = if sse {
        ": ping\n\n".to_owned()
    } else {
        "\n".to_owned()
    };
    out.push_str(&text.replace(if sse { "\n\n" } else { "\n" }, sep));
    out.into_bytes()
}

#[test]
fn issue3_comments_and_keepalives_are_ignored() {
    for e in fixtures() {
        let p = e.api.protocol();
        let sse = !e.file.ends_with(".ndjson");
        let body = with_keepalives(&load(e.file), sse);
        assert_eq!(decode(p.as_ref(), &body), expected(&e), "{}", e.file);
    }
}

/// Splits every `data:` JSON line into two `data:` lines at its first comma.
fn multiline_data(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(to_lf(body)).unwrap();
    let lines: Vec<String> = text
        .split('\n')
        .map(|l| match (l.strip_prefix("data:"), l.find(',')) {
            (Some(rest), Some(i)) if rest.trim_start().starts_with('{') => {
                format!("{}\ndata: {}", &l[..=i], &l[i + 1..])
            }
            _ => l.to_owned(),
        })
        .collect();
    lines.join("\n").into_bytes()
}

#[test]
fn issue3_multiline_data_fields_are_joined() {
    for e in fixtures()
        .into_iter()
        .filter(|e| !e.file.ends_with(".ndjson"))
    {
        let p = e.api.protocol();
        let body = multiline_data(&load(e.file));
        assert_ne!(body, to_lf(&load(e.file)), "{} was not rewritten", e.file);
        assert_eq!(decode(p.as_ref(), &body), expected(&e), "{}", e.file);
    }
}

/// The body without its last message (the terminator / end marker).
fn without_last_message(body: &[u8], sse: bool) -> Vec<u8> {
    let text = String::from_utf8(to_lf(body)).unwrap();
    let trimmed = text.trim_end();
    let sep = if sse { "\n\n" } else { "\n" };
    let cut = trimmed.rfind(sep).unwrap();
    trimmed.as_bytes()[..cut + sep.len()].to_vec()
}

#[test]
fn issue3_stream_without_its_end_marker_is_truncated() {
    for e in fixtures().into_iter().filter(|e| e.error.is_none()) {
        let p = e.api.protocol();
        let sse = !e.file.ends_with(".ndjson");
        let mut body = without_last_message(&load(e.file), sse);
        if e.file.starts_with("cohere") {
            // Cohere ends with message-end then [DONE]: drop both.
            body = without_last_message(&body, sse);
        }
        let r = replay_body(p.as_ref(), [body.as_slice()]);
        assert_eq!(
            r.error,
            Some(ErrorClass::Truncated),
            "{}: {:?}",
            e.file,
            r.error_sample
        );
        // Cut in the middle of the last message: also truncated.
        let full = to_lf(&load(e.file));
        let mid = full.len() - 5;
        let r = replay_body(p.as_ref(), [&full[..mid]]);
        assert_eq!(
            r.error,
            Some(ErrorClass::Truncated),
            "{} cut mid-message",
            e.file
        );
    }
}

#[test]
fn issue3_gemini_and_cohere_end_without_terminator_is_normal() {
    // Gemini never sends a terminator; Cohere's [DONE] is optional.
    let cohere = String::from_utf8(load("cohere_v2_chat.sse"))
        .unwrap()
        .replace("data: [DONE]\n\n", "");
    let r = replay_body(ApiKind::Cohere.protocol().as_ref(), [cohere.as_bytes()]);
    assert!(r.is_ok(), "{:?}", r.error_sample);
    assert_eq!(r.usage.output_tokens, Some(12));
}

#[test]
fn issue3_server_timings_are_captured() {
    let r = replay_body(
        ApiKind::OllamaChat.protocol().as_ref(),
        [load("ollama_chat.ndjson").as_slice()],
    );
    let t = r.server.unwrap();
    assert_eq!(
        (t.prompt_tokens, t.prompt_ns, t.decode_tokens, t.decode_ns),
        (Some(31), Some(143_000_000), Some(11), Some(224_000_000))
    );
    assert_eq!(
        (t.load_ns, t.total_ns),
        (Some(19_384_208), Some(412_873_166))
    );
    let r = replay_body(
        ApiKind::OpenaiChat.protocol().as_ref(),
        [load("llamacpp_chat.sse").as_slice()],
    );
    let t = r.server.unwrap();
    assert_eq!(t.decode_tokens, Some(11));
    assert!(t.prompt_ns.unwrap() > 0 && t.decode_ns.unwrap() > 0);
    let r = replay_body(
        ApiKind::OpenaiChat.protocol().as_ref(),
        [load("openai_chat.sse").as_slice()],
    );
    assert!(r.server.is_none());
}

#[test]
fn issue3_error_lines_are_classified_not_counted() {
    let ndjson = b"{\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n{\"error\":\"model runner crashed\"}\n";
    let r = replay_body(ApiKind::OllamaChat.protocol().as_ref(), [&ndjson[..]]);
    assert_eq!(
        (r.token_times.len(), r.error),
        (1, Some(ErrorClass::StreamError))
    );
    assert!(r.error_sample.unwrap().contains("crashed"));
    let gemini = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\r\n\r\ndata: {\"error\":{\"code\":500,\"message\":\"boom\",\"status\":\"INTERNAL\"}}\r\n\r\n";
    let r = replay_body(ApiKind::Gemini.protocol().as_ref(), [&gemini[..]]);
    assert_eq!(
        (r.token_times.len(), r.error),
        (1, Some(ErrorClass::StreamError))
    );
    let garbage = b"data: {not json\n\n";
    let r = replay_body(ApiKind::Anthropic.protocol().as_ref(), [&garbage[..]]);
    assert_eq!(r.error, Some(ErrorClass::Malformed));
}
