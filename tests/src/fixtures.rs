//! The contract's test setup ready to use: two mock upstreams (level 1 and its switch-over level 2), a server running
//! the contract's config against them, and request builders; [`wire`]: the four protocols as their clients speak them.

pub mod wire;

use serde_json::{Value, json};

use crate::client::{self, HttpResponse, SseEvent, StreamingResponse};
use crate::harness::XaiServer;
use crate::mock::MockUpstream;

/// The part of the config shared by [`CONTRACT_CONFIG`] and [`crate::admin::ADMIN_CONFIG`], as a string literal for
/// `concat!`: the admin token, server and routing settings, providers `mock-a` (level 1, keys [`MOCK_A_KEYS`]) and
/// `mock-b` (level 2, key [`MOCK_B_KEY`]) serving `gpt-*` at `{{MOCK_A}}` / `{{MOCK_B}}`, and switch-over 1 → 2.
macro_rules! two_mock_config {
    () => {
        r#"admin_token = "admin-secret"

[server]
max_body_bytes = 65536
shutdown_grace_ms = 5000

[routing]
attempt_timeout_ms = 2000
request_timeout_ms = 10000
max_attempts = 6
backoff_base_ms = 1000
backoff_max_ms = 60000
default_retry_after_ms = 5000

[[providers]]
name = "mock-a"
protocol = "openai"
base_url = "{{MOCK_A}}/v1"
keys = ["sk-up-1", "sk-up-2", "sk-up-3"]
level = 1
models = ["gpt-*"]

[[providers]]
name = "mock-b"
protocol = "openai"
base_url = "{{MOCK_B}}/v1"
keys = ["sk-b-1"]
level = 2
models = ["gpt-*"]

[switch_over]
1 = 2
"#
    };
}
pub(crate) use two_mock_config;

/// The config of docs/test-contract.md, plus a second provider at level 2 (the switch-over target).
/// `{{MOCK_A}}` and `{{MOCK_B}}` are the mocks' `http://127.0.0.1:PORT`.
pub const CONTRACT_CONFIG: &str = concat!(
    two_mock_config!(),
    r#"
[[accounts]]
name = "acme"
keys = ["sk-acme"]
allow_models = ["*"]
level = 1
model_mapper = { "gpt-3.5*" = "gpt-4o-mini" }

[[accounts]]
name = "acme/research"
keys = ["sk-research"]
allow_models = ["gpt-4o*"]
rpm = 60
"#
);

/// The virtual key of account `acme`.
pub const ACME_KEY: &str = "sk-acme";
/// The virtual key of account `acme/research`.
pub const RESEARCH_KEY: &str = "sk-research";
/// The upstream keys of provider `mock-a` (level 1).
pub const MOCK_A_KEYS: [&str; 3] = ["sk-up-1", "sk-up-2", "sk-up-3"];
/// The upstream key of provider `mock-b` (level 2).
pub const MOCK_B_KEY: &str = "sk-b-1";

/// Two mocks and a server wired to them.
#[derive(Debug)]
pub struct Gateway {
    /// The server under test (dropped first).
    pub server: XaiServer,
    /// Provider `mock-a`, level 1, keys [`MOCK_A_KEYS`].
    pub mock_a: MockUpstream,
    /// Provider `mock-b`, level 2, key [`MOCK_B_KEY`].
    pub mock_b: MockUpstream,
}

impl Gateway {
    /// Starts the mocks and a server running [`CONTRACT_CONFIG`].
    pub async fn start() -> Self {
        Self::start_with(CONTRACT_CONFIG).await
    }

    /// Starts the mocks and a server running `config` (with `{{MOCK_A}}` / `{{MOCK_B}}` placeholders).
    pub async fn start_with(config: &str) -> Self {
        let mock_a = MockUpstream::start().await;
        let mock_b = MockUpstream::start().await;
        let server = XaiServer::builder(config).var("MOCK_A", mock_a.url()).var("MOCK_B", mock_b.url()).start().await;
        Self { server, mock_a, mock_b }
    }

    /// A URL on the server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    /// `POST /v1/chat/completions` and read the whole reply.
    pub async fn chat(&self, key: &str, body: &Value) -> HttpResponse {
        client::post_json(&self.url("/v1/chat/completions"), Some(key), body).await
    }

    /// `POST /v1/chat/completions` and return once the headers arrived.
    pub async fn chat_stream(&self, key: &str, body: &Value) -> StreamingResponse {
        client::post_json_stream(&self.url("/v1/chat/completions"), Some(key), body).await
    }
}

/// A minimal chat request.
pub fn chat_body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// A streaming chat request, with `stream_options.include_usage` when asked.
pub fn stream_body(model: &str, text: &str, include_usage: bool) -> Value {
    let mut body = chat_body(model, text);
    body["stream"] = json!(true);
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// The JSON chunks of an OpenAI chat stream: a role chunk, one chunk per piece, a finish chunk and, with `usage`
/// `(prompt, completion)`, the `choices: []` usage chunk. Render with [`sse_events`].
pub fn chat_chunks(id: &str, model: &str, pieces: &[&str], usage: Option<(u64, u64)>) -> Vec<Value> {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    out.extend(pieces.iter().map(|p| chunk(json!({"content": p}), Value::Null)));
    out.push(chunk(json!({}), json!("stop")));
    if let Some((prompt, completion)) = usage {
        out.push(json!({
            "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }));
    }
    out
}

/// SSE events for `chunks`, followed by `data: [DONE]`.
pub fn sse_events(chunks: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    out.push("data: [DONE]\n\n".into());
    out
}

/// The text an OpenAI chat stream carried: the `choices[0].delta.content` of each event, joined.
pub fn streamed_text(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter_map(SseEvent::json)
        .filter_map(|v| v.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// Asserts an OpenAI error body `{"error":{"message","type","code"}}` and returns the inner object.
pub fn assert_openai_error(resp: &HttpResponse) -> Value {
    let body = resp.json();
    let err = body.get("error").unwrap_or_else(|| panic!("no `error` object in {body}"));
    assert!(
        err.get("message").and_then(Value::as_str).is_some_and(|m| !m.is_empty()),
        "error.message must be a non-empty string: {body}"
    );
    assert!(
        err.get("type").and_then(Value::as_str).is_some_and(|t| !t.is_empty()),
        "error.type must be a string: {body}"
    );
    assert!(err.get("code").is_some(), "error.code must be present: {body}");
    err.clone()
}

/// A numeric field of a usage record.
pub fn num(record: &Value, field: &str) -> u64 {
    record
        .get(field)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("usage record without numeric `{field}`: {record}"))
}

/// A string field of a usage record.
pub fn text<'a>(record: &'a Value, field: &str) -> &'a str {
    record
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("usage record without string `{field}`: {record}"))
}

/// An id field of a usage record (ids may be numbers or strings), as text.
pub fn id(record: &Value, field: &str) -> String {
    match record.get(field) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => panic!("usage record without an id in `{field}`: {record}"),
    }
}

/// Asserts that no upstream key material appears anywhere in `value` (usage records name keys by id only).
pub fn assert_no_key_material(value: &Value) {
    let text = value.to_string();
    for secret in MOCK_A_KEYS.iter().chain([&MOCK_B_KEY]) {
        assert!(!text.contains(secret), "upstream key {secret} leaked into {text}");
    }
}
