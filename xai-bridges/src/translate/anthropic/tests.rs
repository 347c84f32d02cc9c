//! Fixture replays, wire traps (PROTOCOLS.md) and encode→decode properties.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};
use xai_core::ir::*;
use xai_core::{BodySpans, Endpoint, EndpointKind, GatewayError, Protocol, RequestMeta, Usage};

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(crate::fixtures_dir().join("anthropic").join(name)).unwrap()
}

fn messages_endpoint() -> Endpoint {
    Endpoint { kind: EndpointKind::Messages, protocol: Protocol::Anthropic, path_model: None, sse: false }
}

fn meta(model: &str) -> RequestMeta {
    RequestMeta {
        model: model.into(),
        stream: true,
        include_usage: true,
        max_tokens: None,
        body_len: 0,
        spans: BodySpans::default(),
    }
}

/// Decodes `bytes` fed in pieces cut at `cuts` (sorted offsets).
fn decode_split(bytes: &[u8], cuts: &[usize]) -> Vec<StreamEvent> {
    let mut d = AnthropicStreamDecoder::new();
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let c = c.clamp(at, bytes.len());
        d.feed(&bytes[at..c], &mut out);
        at = c;
    }
    d.finish(None, &mut out);
    out
}

fn decode_all(bytes: &[u8]) -> Vec<StreamEvent> {
    decode_split(bytes, &[])
}

/// Asserts the ir.rs stream invariants.
fn check_invariants(events: &[StreamEvent]) {
    assert!(matches!(events.first(), Some(StreamEvent::Start { .. })), "Start first: {events:?}");
    assert_eq!(events.iter().filter(|e| matches!(e, StreamEvent::Start { .. })).count(), 1);
    let terminals = events.iter().filter(|e| matches!(e, StreamEvent::Finish { .. } | StreamEvent::Error { .. }));
    assert_eq!(terminals.count(), 1, "one terminal: {events:?}");
    assert!(matches!(events.last(), Some(StreamEvent::Finish { .. } | StreamEvent::Error { .. })));
    let mut open: Option<u32> = None;
    let mut next = 0u32;
    let mut tool_args: Option<String> = None;
    for e in events {
        match e {
            StreamEvent::BlockStart { index, block } => {
                assert_eq!(open, None, "sequential blocks");
                assert_eq!(*index, next, "indices count from 0");
                next += 1;
                open = Some(*index);
                tool_args = matches!(block, BlockKind::ToolCall { .. }).then(String::new);
            }
            StreamEvent::Delta { index, delta } => {
                assert_eq!(open, Some(*index));
                if let (Delta::ToolArgs(a), Some(acc)) = (delta, tool_args.as_mut()) {
                    acc.push_str(a);
                }
            }
            StreamEvent::BlockStop { index } => {
                assert_eq!(open, Some(*index));
                if let Some(a) = tool_args.take() {
                    serde_json::from_str::<Value>(&a).expect("tool args are a JSON text");
                }
                open = None;
            }
            _ => {}
        }
    }
}

#[derive(Debug, Default, PartialEq)]
struct Summary {
    id: Option<String>,
    model: Option<String>,
    start_usage: Option<Usage>,
    /// (kind, content, signature)
    blocks: Vec<(BlockKind, String, Option<Signature>)>,
    stop: Option<StopReason>,
    usage: Option<Usage>,
    error: Option<(String, String)>,
}

fn summarise(events: &[StreamEvent]) -> Summary {
    let mut s = Summary::default();
    for e in events {
        match e {
            StreamEvent::Start { id, model, usage } => {
                s.id = id.clone();
                s.model = model.clone();
                s.start_usage = *usage;
                s.usage = *usage;
            }
            StreamEvent::BlockStart { block, .. } => s.blocks.push((block.clone(), String::new(), None)),
            StreamEvent::Delta { delta, .. } => {
                let b = s.blocks.last_mut().unwrap();
                match delta {
                    Delta::Text(t) | Delta::Reasoning(t) | Delta::ToolArgs(t) => b.1.push_str(t),
                    Delta::Signature(sig) => b.2 = Some(sig.clone()),
                }
            }
            StreamEvent::BlockStop { .. } => {}
            StreamEvent::Usage(u) => s.usage = Some(*u),
            StreamEvent::Finish { stop, usage } => {
                s.stop = Some(stop.clone());
                if usage.is_some() {
                    s.usage = *usage;
                }
            }
            StreamEvent::Error { message, code } => s.error = Some((message.clone(), code.clone())),
        }
    }
    s
}

fn usage(prompt: u64, completion: u64) -> Usage {
    Usage { prompt_tokens: prompt, completion_tokens: completion, ..Usage::default() }
}

fn texts(s: &Summary) -> Vec<&str> {
    s.blocks.iter().filter(|b| b.0 == BlockKind::Text).map(|b| b.1.as_str()).collect()
}

const STREAM_FIXTURES: [&str; 6] = [
    "stream-text.sse",
    "stream-text-then-tool-use.sse",
    "stream-thinking-signature.sse",
    "stream-tool-use-padded.sse",
    "stream-text-padded.sse",
    "stream-web-search-citations.sse",
];

#[test]
fn fixture_stream_text() {
    let ev = decode_all(&fixture("stream-text.sse"));
    check_invariants(&ev);
    let s = summarise(&ev);
    assert_eq!(s.id.as_deref(), Some("msg_014HN4fQn2vqETrzGmNdZ9Eg"));
    assert_eq!(s.model.as_deref(), Some("claude-3-7-sonnet-20250219"));
    assert_eq!(s.start_usage, Some(usage(11, 3)));
    assert_eq!(
        texts(&s),
        ["I'm Claude, an AI assistant made by Anthropic. I'm designed to be helpful, harmless, and honest in my \
          interactions. I can assist with a wide range of tasks like answering questions, providing information, \
          creative writing, summarizing content, and having thoughtful conversations. I'm constantly learning but I \
          do have limitations - I don't have the ability to browse the web, run code, or access files unless you \
          share them with me directly. How can I help you today?"]
    );
    assert_eq!(s.stop, Some(StopReason::EndTurn));
    assert_eq!(s.usage, Some(usage(11, 104)));
}

#[test]
fn fixture_stream_text_then_tool_use() {
    let s = summarise(&decode_all(&fixture("stream-text-then-tool-use.sse")));
    assert_eq!(s.blocks.len(), 2);
    assert!(s.blocks[0].1.starts_with("I'll help you find information about the Tigers game"));
    assert!(s.blocks[0].1.ends_with("let me search for the Tigers game schedule:"));
    assert_eq!(
        s.blocks[1].0,
        BlockKind::ToolCall {
            id: "toolu_014cZKakAghgvhi4Y99XBUru".into(),
            name: "search".into(),
            kind: ToolKind::Function,
            signature: None
        }
    );
    assert_eq!(s.blocks[1].1, r#"{"query": "Detroit Tigers baseball game today time schedule"}"#);
    assert_eq!(s.stop, Some(StopReason::ToolUse));
    assert_eq!(s.usage, Some(usage(465, 96)));
}

#[test]
fn fixture_stream_thinking_signature() {
    let s = summarise(&decode_all(&fixture("stream-thinking-signature.sse")));
    assert_eq!(s.blocks.len(), 2);
    assert_eq!(s.blocks[0].0, BlockKind::Reasoning { id: None });
    assert!(
        s.blocks[0].1.starts_with("The question is asking about \"the meaning of life, the universe and everything\"")
    );
    let sig = s.blocks[0].2.clone().expect("signature");
    assert_eq!(sig.origin, Protocol::Anthropic);
    assert!(sig.value.starts_with("ErUBCkYIARgCIkCMkRFgNNhwET9y5IN2hGVa") && sig.value.ends_with("e43e4r7g=="));
    assert_eq!(s.blocks[1].0, BlockKind::Text);
    assert!(s.blocks[1].1.starts_with("In popular fiction, the most famous answer to \"the meaning of life"));
    assert_eq!(s.stop, Some(StopReason::EndTurn));
    assert_eq!(s.usage, Some(usage(50, 452)));
}

#[test]
fn fixture_stream_tool_use_padded() {
    let s = summarise(&decode_all(&fixture("stream-tool-use-padded.sse")));
    assert_eq!(s.blocks.len(), 1);
    assert!(matches!(&s.blocks[0].0, BlockKind::ToolCall { id, name, .. }
        if id == "toolu_018acGYLtfR52q9yDbWaEdQZ" && name == "get_weather"));
    assert_eq!(s.blocks[0].1, r#"{"location": "San Francisco, CA", "units": "f"}"#);
    assert_eq!(s.stop, Some(StopReason::ToolUse));
    assert_eq!(s.start_usage, Some(usage(656, 26)));
    assert_eq!(s.usage, Some(usage(656, 74)));
}

#[test]
fn fixture_stream_text_padded() {
    let s = summarise(&decode_all(&fixture("stream-text-padded.sse")));
    assert_eq!(
        texts(&s),
        [
            "The weather in San Francisco, CA is currently:\n- **Temperature:** 68°F\n- **Condition:** Sunny\n\nIt's a nice sunny day!"
        ]
    );
    assert_eq!(s.stop, Some(StopReason::EndTurn));
    assert_eq!(s.usage, Some(usage(770, 38)));
}

#[test]
fn fixture_stream_web_search_skips_server_blocks_and_renumbers() {
    let ev = decode_all(&fixture("stream-web-search-citations.sse"));
    check_invariants(&ev);
    let s = summarise(&ev);
    // Upstream blocks 1 (server_tool_use) and 2 (web_search_tool_result) have no canonical form.
    assert_eq!(s.blocks.len(), 8);
    assert!(s.blocks.iter().all(|b| b.0 == BlockKind::Text));
    assert_eq!(s.blocks[0].1, "I'll check the current weather in London, UK for you.");
    assert_eq!(s.start_usage, Some(usage(2685, 2)));
    assert_eq!(s.usage, Some(Usage { searches: 1, ..usage(9911, 343) }));
    assert_eq!(s.stop, Some(StopReason::EndTurn));
}

#[test]
fn fixtures_decode_the_same_in_any_split() {
    for name in STREAM_FIXTURES {
        let src = fixture(name);
        let whole = decode_all(&src);
        check_invariants(&whole);
        assert!(matches!(whole.last(), Some(StreamEvent::Finish { .. })), "{name}");
        // One byte at a time.
        let cuts: Vec<usize> = (1..src.len()).collect();
        assert_eq!(summarise(&decode_split(&src, &cuts)), summarise(&whole), "{name} byte by byte");
        // Pseudo-random splits (deterministic).
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20 {
            let mut cuts = Vec::new();
            let mut at = 0usize;
            while at < src.len() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                at += 1 + (x % 97) as usize;
                cuts.push(at.min(src.len()));
            }
            assert_eq!(decode_split(&src, &cuts), whole, "{name} random split");
        }
    }
}

#[test]
fn fixture_nonstream_text() {
    let r = decode_response(&fixture("nonstream-text.json")).unwrap();
    assert_eq!(r.id, "msg_01X2Qk7LtNEh4HB9xpYU57XU");
    assert_eq!(r.model, "claude-3-5-sonnet-20240620");
    assert_eq!(r.parts.len(), 1);
    assert!(
        matches!(&r.parts[0], Part::Text { text, .. } if text.starts_with("I am an AI assistant created by Anthropic"))
    );
    assert_eq!(r.stop, StopReason::EndTurn);
    assert_eq!(r.usage, usage(11, 55));
}

#[test]
fn fixture_nonstream_parallel_tool_use() {
    let r = decode_response(&fixture("nonstream-parallel-tool-use.json")).unwrap();
    assert_eq!(r.parts.len(), 3);
    let calls: Vec<_> = r
        .parts
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall(c) => Some((c.id.as_str(), c.name.as_str(), c.arguments.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        calls,
        [
            (
                "toolu_01DLVLVQttBP5DXr3ri6us49",
                "search",
                r#"{"query":"Detroit Tigers baseball game today time schedule"}"#
            ),
            ("toolu_01SFHFTJjudPJHhcZY5E9kim", "weather", r#"{"city":"Detroit"}"#),
        ]
    );
    assert_eq!(r.stop, StopReason::ToolUse);
    assert_eq!(r.usage, usage(478, 120));
}

#[test]
fn fixture_nonstream_thinking() {
    let r = decode_response(&fixture("nonstream-thinking.json")).unwrap();
    let Part::Reasoning(th) = &r.parts[0] else { panic!("reasoning first: {:?}", r.parts) };
    assert!(th.text.starts_with("I need to provide an answer about the meaning of life"));
    let sig = th.signature.as_ref().unwrap();
    assert_eq!(sig.native_for(Protocol::Anthropic).map(|s| &s[..12]), Some("ErUBCkYIBRgC"));
    assert!(matches!(&r.parts[1], Part::Text { text, .. } if text.contains("\"text\": \"In popular fiction")));
    assert_eq!(r.usage, usage(169, 265));
}

#[test]
fn fixture_errors_give_their_message() {
    let m = error_message(&fixture("error-429-rate-limit.json")).unwrap();
    assert!(m.starts_with("This request would exceed your organization's rate limit of 20,000,000 prompt bytes"));
    let m = error_message(&fixture("error-400-invalid-request.json")).unwrap();
    assert!(m.starts_with("messages.0.content.1: unexpected `tool_use_id` found in `tool_result` blocks"));
    assert_eq!(error_message(b"not json"), None);
}

// ---- stream decoder traps -------------------------------------------------------------------------------------

const START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":{\"input_tokens\":3,\"cache_creation_input_tokens\":10,\"cache_read_input_tokens\":20,\"output_tokens\":1}}}\n\n";

#[test]
fn stream_error_event_is_an_error_with_its_message() {
    let src = format!(
        "{START}event: ping\ndata: {{\"type\":\"ping\"}}\n\nevent: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n"
    );
    let ev = decode_all(src.as_bytes());
    check_invariants(&ev);
    assert_eq!(ev.last(), Some(&StreamEvent::Error { message: "Overloaded".into(), code: "overloaded".into() }));
    // An error event with an odd body, and one that is not JSON at all.
    for body in ["{\"type\":\"overloaded_error\",\"message\":\"busy\"}", "Internal Server Error"] {
        let ev = decode_all(format!("{START}event: error\ndata: {body}\n\n").as_bytes());
        check_invariants(&ev);
        assert!(matches!(ev.last(), Some(StreamEvent::Error { .. })), "{body}");
    }
}

#[test]
fn stream_without_message_stop_is_truncated() {
    let src = format!(
        "{START}event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n"
    );
    let ev = decode_all(src.as_bytes());
    check_invariants(&ev);
    assert!(matches!(ev.last(), Some(StreamEvent::Error { code, .. }) if code == "stream_truncated"));
    // Cached reads and cache writes are part of the canonical prompt count.
    let StreamEvent::Start { usage: Some(u), .. } = &ev[0] else { panic!() };
    assert_eq!((u.prompt_tokens, u.cached_tokens, u.cache_write_tokens), (33, 20, 10));
    // Transport failure.
    let mut d = AnthropicStreamDecoder::new();
    let mut out = Vec::new();
    d.feed(START.as_bytes(), &mut out);
    d.finish(Some("connection reset"), &mut out);
    assert!(matches!(out.last(), Some(StreamEvent::Error { message, .. }) if message.contains("connection reset")));
}

#[test]
fn stream_stop_reasons_map() {
    for (wire, want) in [
        ("end_turn", StopReason::EndTurn),
        ("stop_sequence", StopReason::StopSequence(Some("###".into()))),
        ("pause_turn", StopReason::PauseTurn),
        ("max_tokens", StopReason::MaxTokens),
        ("model_context_window_exceeded", StopReason::MaxTokens),
        ("tool_use", StopReason::ToolUse),
        ("refusal", StopReason::ContentFilter),
    ] {
        let seq = if wire == "stop_sequence" { "\"###\"" } else { "null" };
        let src = format!(
            "{START}event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{wire}\",\"stop_sequence\":{seq}}},\"usage\":{{\"output_tokens\":9}}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
        );
        let s = summarise(&decode_all(src.as_bytes()));
        assert_eq!(s.stop, Some(want), "{wire}");
        assert_eq!(s.usage.unwrap().completion_tokens, 9);
    }
}

#[test]
fn stream_tool_use_without_input_deltas_gets_empty_object() {
    let src = format!(
        "{START}event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"now\",\"input\":{{}}}}}}\n\nevent: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}}}\n\nevent: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
    );
    let ev = decode_all(src.as_bytes());
    check_invariants(&ev);
    assert_eq!(summarise(&ev).blocks[0].1, "{}");
}

// ---- requests -------------------------------------------------------------------------------------------------

/// What Claude Code sends (abridged: a few of its ~24 tools, plus server tools and newer fields).
fn claude_code_body() -> Value {
    json!({
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "stream": true,
        "metadata": {"user_id": "user_abc_account__session_123"},
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Working directory: /repo"}
        ],
        "thinking": {"type": "enabled", "budget_tokens": 10000},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "temperature": 1,
        "tools": [
            {"name": "Bash", "description": "Run a shell command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"], "$schema": "http://json-schema.org/draft-07/schema#"}},
            {"name": "Read", "description": "Read a file", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
            {"type": "bash_20250124", "name": "bash"},
            {"name": "TodoWrite", "description": "Todos", "input_schema": {"type": "object", "properties": {}}, "cache_control": {"type": "ephemeral"}}
        ],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                {"type": "text", "text": "list files", "cache_control": {"type": "ephemeral"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should run ls.", "signature": "EqQBCkYIARgC"},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy"},
                {"type": "text", "text": "Running ls."},
                {"type": "tool_use", "id": "toolu_01A", "name": "Bash", "input": {"command": "ls"}},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": [{"type": "text", "text": "a.txt\nb.txt"}], "is_error": false},
                {"type": "text", "text": "thanks"}
            ]}
        ]
    })
}

fn decode(body: &Value) -> Result<ChatRequest, GatewayError> {
    decode_request(&messages_endpoint(), &serde_json::to_vec(body).unwrap())
}

#[test]
fn decodes_a_claude_code_request() {
    let r = decode(&claude_code_body()).unwrap();
    assert_eq!(r.model, "claude-sonnet-4-5-20250929");
    assert_eq!(r.max_tokens, Some(32000));
    assert!(r.stream);
    assert_eq!(r.user.as_deref(), Some("user_abc_account__session_123"));
    assert_eq!(r.system.len(), 2);
    assert!(r.system[0].cache && !r.system[1].cache);
    // Server tools are not offered to other providers.
    assert_eq!(r.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["Bash", "Read", "TodoWrite"]);
    assert_eq!(r.tool_choice, Some(ToolChoice::Auto));
    assert_eq!(r.parallel_tool_calls, Some(false));
    assert_eq!(r.reasoning.as_ref().unwrap().budget_tokens, Some(10000));
    assert_eq!(r.messages.len(), 3);
    assert_eq!(r.messages[0].parts.len(), 3);
    assert!(matches!(&r.messages[0].parts[1], Part::Text { cache: true, .. }));
    assert!(
        matches!(&r.messages[0].parts[2], Part::Image(ImageSource::Base64 { media_type, .. }) if media_type == "image/png")
    );
    let a = &r.messages[1].parts;
    assert_eq!(a.len(), 4, "server tool blocks skipped: {a:?}");
    let Part::Reasoning(th) = &a[0] else { panic!() };
    assert_eq!(th.signature, Some(Signature::new(Protocol::Anthropic, "EqQBCkYIARgC")));
    assert!(matches!(&a[1], Part::Reasoning(Reasoning { redacted: Some(d), .. }) if d == "EmwKAhgBEgy"));
    assert!(matches!(&a[3], Part::ToolCall(c) if c.arguments == r#"{"command":"ls"}"# && c.id == "toolu_01A"));
    let Part::ToolResult(res) = &r.messages[2].parts[0] else { panic!() };
    assert_eq!(
        (res.call_id.as_str(), res.name.as_deref(), res.text().as_str()),
        ("toolu_01A", Some("Bash"), "a.txt\nb.txt")
    );
}

#[test]
fn claude_code_request_round_trips() {
    let r = decode(&claude_code_body()).unwrap();
    let body: Value = serde_json::from_slice(&encode_request(&r).unwrap()).unwrap();
    // Thinking on: no temperature; budget below max_tokens.
    assert_eq!(body["thinking"], json!({"type": "enabled", "budget_tokens": 10000}));
    assert!(body.get("temperature").is_none());
    assert_eq!(body["max_tokens"], 32000);
    assert_eq!(body["tool_choice"], json!({"type": "auto", "disable_parallel_tool_use": true}));
    assert_eq!(body["system"][0]["cache_control"], json!({"type": "ephemeral"}));
    assert_eq!(body["messages"][1]["content"][0]["signature"], "EqQBCkYIARgC");
    assert_eq!(body["messages"][1]["content"][1], json!({"type": "redacted_thinking", "data": "EmwKAhgBEgy"}));
    assert_eq!(body["messages"][1]["content"][3]["input"], json!({"command": "ls"}));
    let again = decode_request(&messages_endpoint(), &Bytes::from(serde_json::to_vec(&body).unwrap())).unwrap();
    // Everything survives but the temperature, which Anthropic refuses alongside thinking.
    assert_eq!(again, ChatRequest { temperature: None, ..r });
}

#[test]
fn max_tokens_is_required_on_messages() {
    let mut b = claude_code_body();
    b.as_object_mut().unwrap().remove("max_tokens");
    match decode(&b) {
        Err(GatewayError::BadRequest(m)) => assert_eq!(m, "max_tokens: Field required"),
        other => panic!("{other:?}"),
    }
    let count = Endpoint { kind: EndpointKind::CountTokens, ..messages_endpoint() };
    assert!(decode_request(&count, &serde_json::to_vec(&b).unwrap()).is_ok());
}

#[test]
fn malformed_fields_are_named() {
    let cases = [
        (json!({"model": "m", "max_tokens": 5}), "messages: Field required"),
        (json!({"max_tokens": 5, "messages": []}), "model: Field required"),
        (json!({"model": "m", "max_tokens": "5", "messages": []}), "max_tokens: Input should be a valid integer"),
        (json!({"model": "m", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]}), "messages.0.role"),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_use", "name": "x"}]}]}),
            "messages.0.content.0.id: Field required",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image"}]}]}),
            "messages.0.content.0.source: Field required",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [], "tool_choice": {"type": "sometimes"}}),
            "tool_choice.type",
        ),
        (json!({"model": "m", "max_tokens": 5, "messages": [], "thinking": {"type": "maybe"}}), "thinking.type"),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [], "tools": [{"description": "no name", "input_schema": {}}]}),
            "tools.0.name: Field required",
        ),
    ];
    for (body, want) in cases {
        match decode(&body) {
            Err(GatewayError::BadRequest(m)) => assert!(m.starts_with(want), "{m} vs {want}"),
            other => panic!("{want}: {other:?}"),
        }
    }
    assert!(matches!(decode_request(&messages_endpoint(), b"{not json"), Err(GatewayError::BadRequest(_))));
}

#[test]
fn system_role_messages_join_the_system_prompt() {
    let body = json!({"model": "m", "max_tokens": 5, "system": "first", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": [{"type": "text", "text": "reminder"}]},
    ]});
    let req = decode(&body).unwrap();
    let texts: Vec<&str> = req.system.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(texts, ["first", "reminder"]);
    assert_eq!(req.messages.len(), 1, "the system message is not a turn");
}

#[test]
fn thinking_variants_and_extra_fields() {
    let base = |thinking: Value| {
        json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], "thinking": thinking,
               "output_config": {"effort": "high"}, "unknown_future_field": {"x": 1}, "service_tier": "auto"})
    };
    let r = decode(&base(json!({"type": "adaptive"}))).unwrap().reasoning.unwrap();
    assert_eq!((r.effort.as_deref(), r.include_thoughts, r.disabled), (Some("high"), true, false));
    let r = decode(&base(json!({"type": "disabled"}))).unwrap().reasoning.unwrap();
    assert!(r.disabled);
}

fn req(messages: Vec<Message>) -> ChatRequest {
    ChatRequest { model: "claude-x".into(), messages, ..ChatRequest::default() }
}

fn text(t: &str) -> Part {
    Part::Text { text: t.into(), cache: false }
}

fn user(parts: Vec<Part>) -> Message {
    Message { role: Role::User, parts }
}

fn assistant(parts: Vec<Part>) -> Message {
    Message { role: Role::Assistant, parts }
}

fn encode(r: &ChatRequest) -> Value {
    serde_json::from_slice(&encode_request(r).unwrap()).unwrap()
}

fn call(id: &str, args: &str) -> Part {
    Part::ToolCall(ToolCall { id: id.into(), name: "f".into(), arguments: args.into(), ..ToolCall::default() })
}

fn result(id: &str, t: &str) -> Part {
    Part::ToolResult(ToolResult { call_id: id.into(), content: vec![text(t)], ..ToolResult::default() })
}

#[test]
fn trap_roles_alternate_tool_results_first_no_empty_text() {
    let r = req(vec![
        Message { role: Role::User, parts: vec![text("a")] },
        user(vec![text(""), text("b")]),
        assistant(vec![text("calling"), call("call_1", r#"{"x":1}"#), call("call.2:x", "not json")]),
        assistant(vec![text("")]),
        user(vec![text("here you go")]),
        user(vec![result("call_1", "one"), result("call.2:x", "two")]),
    ]);
    let b = encode(&r);
    let msgs = b["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert_eq!(msgs[0]["content"], json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]));
    assert_eq!(msgs[1]["content"][1]["input"], json!({"x": 1}));
    // Invalid JSON arguments still make an object; foreign ids are mapped to Anthropic's alphabet.
    assert_eq!(msgs[1]["content"][2]["input"], json!({"_raw": "not json"}));
    assert_eq!(msgs[1]["content"][2]["id"], "call_2_x");
    let last = msgs[2]["content"].as_array().unwrap();
    assert_eq!(last[0]["type"], "tool_result");
    assert_eq!(last[1]["type"], "tool_result");
    assert_eq!(last[1]["tool_use_id"], "call_2_x");
    assert_eq!(last[2], json!({"type": "text", "text": "here you go"}));
    assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
    assert!(b.get("thinking").is_none() && b.get("tool_choice").is_none());
}

#[test]
fn trap_thinking_only_with_native_signatures() {
    let reasoning = |sig: Option<Signature>| {
        Part::Reasoning(Reasoning { text: "hmm".into(), signature: sig, ..Reasoning::default() })
    };
    let r = req(vec![
        user(vec![text("q")]),
        assistant(vec![
            reasoning(Some(Signature::new(Protocol::Anthropic, "native"))),
            reasoning(Some(Signature::new(Protocol::Gemini, "foreign"))),
            reasoning(None),
            Part::Reasoning(Reasoning { redacted: Some("opaque".into()), ..Reasoning::default() }),
            text("answer"),
        ]),
        user(vec![text("more")]),
    ]);
    let b = encode(&r);
    assert_eq!(
        b["messages"][1]["content"],
        json!([
            {"type": "thinking", "thinking": "hmm", "signature": "native"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "answer"}
        ])
    );
    // An assistant turn holding only foreign reasoning disappears, and its neighbours merge.
    let r = req(vec![user(vec![text("q")]), assistant(vec![reasoning(None)]), user(vec![text("again")])]);
    assert_eq!(
        encode(&r)["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "q"}, {"type": "text", "text": "again"}]}])
    );
}

#[test]
fn trap_thinking_config_rules() {
    let mut r = req(vec![user(vec![text("q")])]);
    r.temperature = Some(0.3);
    r.top_k = Some(5);
    r.max_tokens = Some(4000);
    r.reasoning = Some(ReasoningConfig { effort: Some("high".into()), ..Default::default() });
    let b = encode(&r);
    // Effort without budget → the default budget for it; max_tokens must exceed it.
    let budget = b["thinking"]["budget_tokens"].as_u64().unwrap();
    assert!(budget >= 1024 && budget < b["max_tokens"].as_u64().unwrap(), "{b}");
    assert!(b.get("temperature").is_none() && b.get("top_k").is_none());
    // A small cap grows by the budget instead.
    r.max_tokens = Some(500);
    let b = encode(&r);
    assert_eq!((b["thinking"]["budget_tokens"].as_u64(), b["max_tokens"].as_u64()), (Some(16384), Some(16884)));
    // Without thinking, temperature is sent (clamped to Anthropic's range).
    r.reasoning = None;
    r.temperature = Some(1.7);
    assert_eq!(encode(&r)["temperature"], 1.0);
    // Forced tool use and thinking cannot go together: thinking is dropped.
    r.reasoning = Some(ReasoningConfig { budget_tokens: Some(2000), ..Default::default() });
    r.tools = vec![Tool {
        name: "f".into(),
        description: None,
        parameters: json!({"properties": {}}),
        strict: None,
        kind: ToolKind::Function,
        custom_format: None,
    }];
    r.tool_choice = Some(ToolChoice::Required);
    let b = encode(&r);
    assert!(b.get("thinking").is_none());
    assert_eq!(b["tool_choice"], json!({"type": "any"}));
    assert_eq!(b["tools"][0]["input_schema"], json!({"type": "object", "properties": {}}));
    // A tool loop whose assistant turn lost its (foreign) thinking cannot run with thinking on.
    r.tool_choice = None;
    r.messages = vec![
        user(vec![text("q")]),
        assistant(vec![Part::Reasoning(Reasoning { text: "x".into(), ..Reasoning::default() }), call("c1", "{}")]),
        user(vec![result("c1", "ok")]),
    ];
    assert!(encode(&r).get("thinking").is_none());
    r.messages[1].parts[0] = Part::Reasoning(Reasoning {
        text: "x".into(),
        signature: Some(Signature::new(Protocol::Anthropic, "s")),
        ..Reasoning::default()
    });
    assert_eq!(encode(&r)["thinking"]["budget_tokens"], 2000);
}

#[test]
fn encodes_system_files_format_and_stop() {
    let mut r = req(vec![user(vec![
        Part::File { media_type: "application/pdf".into(), source: FileSource::Base64("JVBERi0=".into()) },
        Part::File { media_type: "text/plain".into(), source: FileSource::Base64("aGVsbG8gd29ybGQ=".into()) },
        Part::Image(ImageSource::Url("https://x/y.png".into())),
    ])]);
    r.system = vec![SystemBlock { text: "be brief".into(), cache: false }];
    r.stop = vec!["###".into(), "  ".into()];
    r.user = Some("u1".into());
    r.response_format =
        Some(ResponseFormat::JsonSchema { name: "x".into(), schema: json!({"type": "object"}), strict: None });
    let b = encode(&r);
    assert_eq!(b["system"], "be brief");
    assert_eq!(b["stop_sequences"], json!(["###"]));
    assert_eq!(b["metadata"], json!({"user_id": "u1"}));
    assert_eq!(b["output_config"]["format"]["type"], "json_schema");
    let c = &b["messages"][0]["content"];
    assert_eq!(c[0]["source"], json!({"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}));
    assert_eq!(c[1]["source"], json!({"type": "text", "media_type": "text/plain", "data": "hello world"}));
    assert_eq!(c[2]["source"], json!({"type": "url", "url": "https://x/y.png"}));
    assert_eq!(request::base64_decode("aGk"), Some(b"hi".to_vec()));
}

// ---- responses ------------------------------------------------------------------------------------------------

#[test]
fn response_for_a_client_reports_tool_use_and_envelopes_foreign_signatures() {
    let resp = ChatResponse {
        id: "chatcmpl-123".into(),
        model: "gpt-x".into(),
        parts: vec![
            Part::Reasoning(Reasoning {
                text: "thinking".into(),
                signature: Some(Signature::new(Protocol::OpenAiResponses, "enc")),
                ..Reasoning::default()
            }),
            text("hi"),
            call("call_9", r#"{"a":[1]}"#),
        ],
        stop: StopReason::EndTurn,
        usage: Usage {
            prompt_tokens: 100,
            cached_tokens: 60,
            cache_write_tokens: 10,
            completion_tokens: 7,
            ..Usage::default()
        },
    };
    let b: Value =
        serde_json::from_slice(&encode_response(&resp, &messages_endpoint(), &meta("claude-asked"))).unwrap();
    assert!(b["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(b["model"], "claude-asked");
    assert_eq!(b["stop_reason"], "tool_use");
    assert_eq!(b["content"][0]["signature"], Signature::new(Protocol::OpenAiResponses, "enc").envelope().as_str());
    assert_eq!(b["content"][2]["input"], json!({"a": [1]}));
    assert_eq!(
        b["usage"],
        json!({"input_tokens": 30, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 60, "output_tokens": 7})
    );
    // The client sends the envelope back: its origin is recovered.
    let next =
        decode(&json!({"model": "m", "max_tokens": 9, "messages": [{"role": "assistant", "content": b["content"]}]}))
            .unwrap();
    let Part::Reasoning(th) = &next.messages[0].parts[0] else { panic!() };
    assert_eq!(th.signature, Some(Signature::new(Protocol::OpenAiResponses, "enc")));
}

// ---- stream encoder -------------------------------------------------------------------------------------------

fn encode_stream(events: &[StreamEvent]) -> Vec<u8> {
    let mut e = AnthropicStreamEncoder::new(Arc::from("claude-asked"));
    let mut out = Vec::new();
    for ev in events {
        e.encode(ev, &mut out);
    }
    out
}

/// (event name, parsed data) of every event of an encoded stream.
fn events_of(bytes: &[u8]) -> Vec<(String, Value)> {
    let s = std::str::from_utf8(bytes).unwrap();
    assert!(s.ends_with("\n\n") || s.is_empty());
    s.split_terminator("\n\n")
        .map(|ev| {
            let (name, data) = ev.split_once('\n').unwrap();
            // Trap 1: every event has its `event:` line, equal to the JSON type.
            let name = name.strip_prefix("event: ").expect("event line").to_string();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").expect("data line")).unwrap();
            assert_eq!(data["type"], name.as_str());
            (name, data)
        })
        .collect()
}

#[test]
fn stream_encoder_writes_what_the_sdk_expects() {
    let u0 = Usage { prompt_tokens: 40, cached_tokens: 30, ..Usage::default() };
    let events = vec![
        StreamEvent::Start { id: Some("resp_1".into()), model: Some("gpt".into()), usage: Some(u0) },
        StreamEvent::BlockStart { index: 0, block: BlockKind::Reasoning { id: None } },
        StreamEvent::Delta { index: 0, delta: Delta::Reasoning("hm".into()) },
        StreamEvent::Delta { index: 0, delta: Delta::Signature(Signature::new(Protocol::Gemini, "g")) },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::BlockStart { index: 1, block: BlockKind::Reasoning { id: None } },
        StreamEvent::Delta { index: 1, delta: Delta::Reasoning("unsigned".into()) },
        StreamEvent::BlockStop { index: 1 },
        StreamEvent::BlockStart { index: 2, block: BlockKind::Text },
        StreamEvent::Delta { index: 2, delta: Delta::Text("say \"hi\"\n".into()) },
        StreamEvent::BlockStop { index: 2 },
        StreamEvent::BlockStart {
            index: 3,
            block: BlockKind::ToolCall {
                id: "call_1".into(),
                name: "now".into(),
                kind: ToolKind::Function,
                signature: None,
            },
        },
        StreamEvent::BlockStop { index: 3 },
        StreamEvent::Usage(Usage { completion_tokens: 5, ..u0 }),
        StreamEvent::Finish { stop: StopReason::EndTurn, usage: None },
    ];
    let out = events_of(&encode_stream(&events));
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let m = &out[0].1["message"];
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(m["model"], "claude-asked");
    assert_eq!((m["content"].clone(), m["stop_reason"].clone()), (json!([]), Value::Null));
    assert_eq!(
        m["usage"],
        json!({"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 30, "output_tokens": 0})
    );
    assert_eq!(out[1].1["content_block"], json!({"type": "thinking", "thinking": "", "signature": ""}));
    assert_eq!(
        out[3].1["delta"],
        json!({"type": "signature_delta", "signature": Signature::new(Protocol::Gemini, "g").envelope()})
    );
    // Unsigned reasoning: a thinking block without signature_delta.
    assert_eq!(out[6].1["delta"]["type"], "thinking_delta");
    assert_eq!(out[9].1["delta"], json!({"type": "text_delta", "text": "say \"hi\"\n"}));
    assert_eq!(out[11].1["content_block"], json!({"type": "tool_use", "id": "call_1", "name": "now", "input": {}}));
    // Trap 2: arguments always come as a delta.
    assert_eq!(out[12].1["delta"], json!({"type": "input_json_delta", "partial_json": "{}"}));
    // Trap 5: a tool was called.
    assert_eq!(out[14].1["delta"], json!({"stop_reason": "tool_use", "stop_sequence": null}));
    assert_eq!(
        out[14].1["usage"],
        json!({"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 30, "output_tokens": 5})
    );
}

#[test]
fn stream_encoder_errors_end_the_stream() {
    let events = vec![
        StreamEvent::Start { id: None, model: None, usage: None },
        StreamEvent::BlockStart { index: 0, block: BlockKind::Text },
        StreamEvent::Delta { index: 0, delta: Delta::Text("par".into()) },
        StreamEvent::Error { message: "Slow down".into(), code: "rate_limit_exceeded".into() },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::Finish { stop: StopReason::EndTurn, usage: None },
    ];
    let out = events_of(&encode_stream(&events));
    let (name, data) = out.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["error"], json!({"type": "rate_limit_error", "message": "Slow down"}));
    assert_eq!(out.len(), 4, "nothing after the error");
    for (code, ty) in [("overloaded", "overloaded_error"), ("stream_truncated", "api_error")] {
        let out = events_of(&encode_stream(&[StreamEvent::Error { message: "x".into(), code: code.into() }]));
        assert_eq!(out[0].1["error"]["type"], ty);
    }
}

#[test]
fn fixtures_survive_decode_encode_decode() {
    for name in STREAM_FIXTURES {
        let first = decode_all(&fixture(name));
        let again = decode_all(&encode_stream(&first));
        let (a, b) = (summarise(&first), summarise(&again));
        assert_eq!(a.blocks, b.blocks, "{name}");
        assert_eq!(a.stop, b.stop, "{name}");
        let strip = |u: Option<Usage>| u.map(|u| Usage { searches: 0, ..u });
        assert_eq!(strip(a.usage), strip(b.usage), "{name}");
        assert_eq!(a.id, b.id, "{name}: Anthropic ids are kept");
    }
}

// ---- properties -----------------------------------------------------------------------------------------------

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z ]{0,12}", "\\PC{0,8}", Just("\"\\\n\t\u{0}é😀".to_string())]
}

fn arb_usage() -> impl Strategy<Value = Usage> {
    (0u64..10_000, 0u64..5_000, 0u64..5_000, 0u64..10_000).prop_map(|(input, read, write, out)| Usage {
        prompt_tokens: input + read + write,
        completion_tokens: out,
        cached_tokens: read,
        cache_write_tokens: write,
        ..Usage::default()
    })
}

#[derive(Clone, Debug)]
enum GenBlock {
    Text(Vec<String>),
    Reasoning(Vec<String>, Option<String>),
    Redacted(String),
    Tool(String, String, Vec<String>),
}

fn arb_block() -> impl Strategy<Value = GenBlock> {
    prop_oneof![
        prop::collection::vec(arb_text(), 0..4).prop_map(GenBlock::Text),
        (prop::collection::vec(arb_text(), 0..4), prop::option::of("[A-Za-z0-9+/=]{1,16}"))
            .prop_map(|(t, s)| GenBlock::Reasoning(t, s)),
        "[A-Za-z0-9]{1,10}".prop_map(GenBlock::Redacted),
        ("toolu_[a-z0-9]{1,6}", "[a-z_]{1,8}", prop::collection::vec(any::<u8>(), 0..3), arb_text()).prop_map(
            |(id, name, shape, s)| {
                // Arguments as fragments of a JSON text (or none at all).
                let args = json!({"s": s, "n": shape.len()}).to_string();
                let frags = if shape.is_empty() {
                    Vec::new()
                } else {
                    let cut = args.len() / 2;
                    let cut = (0..=cut).rev().find(|&c| args.is_char_boundary(c)).unwrap_or(0);
                    vec![args[..cut].to_string(), args[cut..].to_string()]
                };
                GenBlock::Tool(id, name, frags)
            }
        ),
    ]
}

fn arb_stop() -> impl Strategy<Value = StopReason> {
    prop_oneof![
        Just(StopReason::EndTurn),
        Just(StopReason::MaxTokens),
        Just(StopReason::ToolUse),
        Just(StopReason::ContentFilter),
        Just(StopReason::PauseTurn),
        prop::option::of("[a-z#]{1,4}").prop_map(StopReason::StopSequence),
    ]
}

fn build_events(blocks: &[GenBlock], start: Option<Usage>, end: Usage, stop: StopReason) -> Vec<StreamEvent> {
    let mut ev = vec![StreamEvent::Start { id: Some("msg_prop".into()), model: None, usage: start }];
    for (i, b) in blocks.iter().enumerate() {
        let index = i as u32;
        let (block, deltas): (BlockKind, Vec<Delta>) = match b {
            GenBlock::Text(t) => (BlockKind::Text, t.iter().cloned().map(Delta::Text).collect()),
            GenBlock::Reasoning(t, sig) => {
                let mut d: Vec<Delta> = t.iter().cloned().map(Delta::Reasoning).collect();
                d.extend(sig.iter().map(|s| Delta::Signature(Signature::new(Protocol::Anthropic, s.clone()))));
                (BlockKind::Reasoning { id: None }, d)
            }
            GenBlock::Redacted(data) => (BlockKind::RedactedReasoning { data: data.clone() }, Vec::new()),
            GenBlock::Tool(id, name, frags) => (
                BlockKind::ToolCall { id: id.clone(), name: name.clone(), kind: ToolKind::Function, signature: None },
                frags.iter().cloned().map(Delta::ToolArgs).collect(),
            ),
        };
        ev.push(StreamEvent::BlockStart { index, block });
        ev.extend(deltas.into_iter().map(|delta| StreamEvent::Delta { index, delta }));
        ev.push(StreamEvent::BlockStop { index });
    }
    ev.push(StreamEvent::Finish { stop, usage: Some(end) });
    ev
}

proptest! {
    #[test]
    fn stream_encode_then_decode_gives_the_same(
        blocks in prop::collection::vec(arb_block(), 0..5),
        start in prop::option::of(arb_usage()),
        end in arb_usage(),
        stop in arb_stop(),
        cut in 1usize..64,
    ) {
        let events = build_events(&blocks, start, end, stop.clone());
        let bytes = encode_stream(&events);
        let cuts: Vec<usize> = (cut..bytes.len()).step_by(cut).collect();
        let back = decode_split(&bytes, &cuts);
        check_invariants(&back);
        let (want, got) = (summarise(&events), summarise(&back));
        // Tool calls without fragments come back as "{}" (trap 2).
        let fix = |mut s: Summary| {
            for b in &mut s.blocks {
                if matches!(b.0, BlockKind::ToolCall { .. }) && b.1.is_empty() {
                    b.1 = "{}".into();
                }
            }
            s
        };
        let want = fix(want);
        prop_assert_eq!(&got.blocks, &want.blocks);
        prop_assert_eq!(got.id, want.id);
        prop_assert_eq!(got.model.as_deref(), Some("claude-asked"));
        prop_assert_eq!(got.start_usage, Some(start.unwrap_or_default()));
        prop_assert_eq!(got.usage, Some(end));
        let has_tool = blocks.iter().any(|b| matches!(b, GenBlock::Tool(..)));
        let want_stop = match stop {
            StopReason::EndTurn | StopReason::StopSequence(_) if has_tool => StopReason::ToolUse,
            s => s,
        };
        prop_assert_eq!(got.stop, Some(want_stop));
    }

    #[test]
    fn response_encode_then_decode_gives_the_same(
        blocks in prop::collection::vec(arb_block(), 0..5),
        usage in arb_usage(),
        stop in arb_stop(),
    ) {
        let parts: Vec<Part> = blocks.iter().filter_map(|b| match b {
            GenBlock::Text(t) => Some(text(&t.concat())),
            GenBlock::Reasoning(t, sig) => {
                let sig = sig.clone().map(|s| Signature::new(Protocol::Anthropic, s));
                let t = t.concat();
                (!t.is_empty() || sig.is_some()).then(|| Part::Reasoning(Reasoning { text: t, signature: sig, ..Reasoning::default() }))
            }
            GenBlock::Redacted(d) => Some(Part::Reasoning(Reasoning { redacted: Some(d.clone()), ..Reasoning::default() })),
            GenBlock::Tool(id, name, frags) => {
                let args = if frags.is_empty() { "{}".to_string() } else { frags.concat() };
                let args = serde_json::to_string(&serde_json::from_str::<Value>(&args).unwrap()).unwrap();
                Some(Part::ToolCall(ToolCall { id: id.clone(), name: name.clone(), arguments: args, ..ToolCall::default() }))
            }
        }).collect();
        let has_tool = parts.iter().any(|p| matches!(p, Part::ToolCall(_)));
        let resp = ChatResponse { id: "msg_x".into(), model: "up".into(), parts, stop: stop.clone(), usage };
        let back = decode_response(&encode_response(&resp, &messages_endpoint(), &meta("asked"))).unwrap();
        let want_stop = match stop {
            StopReason::EndTurn | StopReason::StopSequence(_) if has_tool => StopReason::ToolUse,
            s => s,
        };
        prop_assert_eq!(back, ChatResponse { model: "asked".into(), stop: want_stop, ..resp });
    }

    #[test]
    fn request_decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_request(&messages_endpoint(), &bytes);
    }

    #[test]
    fn request_decode_never_panics_on_odd_json(v in arb_json()) {
        let body = json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [v.clone()]}], "tools": [v.clone()], "system": v.clone(), "thinking": v.clone(), "tool_choice": v});
        if let Ok(r) = decode_request(&messages_endpoint(), &serde_json::to_vec(&body).unwrap()) {
            let _ = encode_request(&r);
        }
    }

    #[test]
    fn stream_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), cut in 1usize..32) {
        let cuts: Vec<usize> = (cut..bytes.len()).step_by(cut).collect();
        check_invariants(&decode_split(&bytes, &cuts));
    }

    #[test]
    fn stream_decoder_holds_invariants_on_shuffled_fixture_events(seed in any::<u64>(), drop in 0usize..40) {
        // Real events in a broken order and with one missing: still one Start, sequential blocks, one terminal.
        let src = String::from_utf8(fixture("stream-web-search-citations.sse")).unwrap();
        let mut evs: Vec<&str> = src.split_terminator("\n\n").collect();
        if drop < evs.len() { evs.remove(drop); }
        let n = evs.len();
        let (i, j) = ((seed % n as u64) as usize, ((seed >> 32) % n as u64) as usize);
        evs.swap(i, j);
        let bytes = evs.join("\n\n") + "\n\n";
        check_invariants(&decode_all(bytes.as_bytes()));
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just("text"),
            Just("image"),
            Just("tool_use"),
            Just("tool_result"),
            Just("thinking"),
            Just("base64"),
            Just("url"),
            Just("enabled"),
            Just("tool"),
            Just("document")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type"),
                    Just("text"),
                    Just("source"),
                    Just("id"),
                    Just("name"),
                    Just("input"),
                    Just("content"),
                    Just("data"),
                    Just("tool_use_id"),
                    Just("budget_tokens"),
                    Just("input_schema")
                ]
                .prop_map(String::from),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn delta_fast_path_agrees_with_serde(s in "\\PC{0,12}|[\"\\\\a]{0,6}", pad in "[ ]{0,3}", kind in 0usize..3) {
        let (block, ty, field) = [
            (r#"{"type":"text","text":""}"#, "text_delta", "text"),
            (r#"{"type":"thinking","thinking":"","signature":""}"#, "thinking_delta", "thinking"),
            (r#"{"type":"tool_use","id":"t","name":"n","input":{}}"#, "input_json_delta", "partial_json"),
        ][kind];
        let v = serde_json::to_string(&s).unwrap();
        let stream = |delta: String| {
            format!(
                "{START}event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{block}}}\n\n\
                 event: content_block_delta\ndata: {delta}\n\n\
                 event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\n\
                 event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
            )
        };
        // Anthropic's own key order takes the fast path; another order goes through serde.
        let fast = stream(format!("{{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"{ty}\",\"{field}\":{v}}}}}{pad}"));
        let slow = stream(format!("{{\"index\":0,\"delta\":{{\"{field}\":{v},\"type\":\"{ty}\"}},\"type\":\"content_block_delta\"}}"));
        let (a, b) = (decode_all(fast.as_bytes()), decode_all(slow.as_bytes()));
        prop_assert_eq!(&a, &b);
        if kind < 2 && !s.is_empty() {
            prop_assert_eq!(&summarise(&a).blocks[0].1, &s);
        }
    }
}

// ---- the real Claude Code request (tests/cli) ----------------------------------------------------------------

/// The body Claude Code 2.1.197 sends for `claude -p "Say hello to xai"` (tests/cli/captured; tests/cli/run.sh
/// routes it to an `openai` Chat provider).
fn captured_claude_code_body() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/cli/captured/claude-code-2.1.197.messages.json");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    file["body"].clone()
}

#[test]
fn the_captured_claude_code_request_reaches_a_chat_provider_intact() {
    let body = captured_claude_code_body();
    let r = decode(&body).unwrap();
    assert_eq!(r.model, "claude-opus-4-8");
    assert!(r.stream);
    assert_eq!(r.max_tokens, Some(64000));
    // The three `system` blocks, then the mid-conversation `{"role":"system"}` message after the user turn.
    assert_eq!(r.system.len(), 4, "{:?}", r.system);
    assert!(r.system[1].text.contains("Claude Agent SDK"));
    assert!(r.system[3].text.starts_with("Available agent types for the Agent tool:"));
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].role, Role::User);
    assert!(matches!(r.messages[0].parts.last(), Some(Part::Text { text, cache: true }) if text == "Say hello to xai"));
    let names: Vec<&str> = body["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 24);
    assert_eq!(r.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), names);

    let chat: Value = serde_json::from_slice(&crate::translate::chat::encode_request(&r).unwrap()).unwrap();
    let messages = chat["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().unwrap();
    assert!(system.contains("Claude Agent SDK") && system.contains("Available agent types for the Agent tool:"));
    assert_eq!(messages[1]["role"], "user");
    let user = messages[1]["content"].as_array().unwrap();
    assert!(user[0]["text"].as_str().unwrap().starts_with("<system-reminder>"));
    assert_eq!(user.last().unwrap(), &json!({"type": "text", "text": "Say hello to xai"}));
    let tools = chat["tools"].as_array().unwrap();
    assert_eq!(tools.iter().map(|t| t["function"]["name"].as_str().unwrap()).collect::<Vec<_>>(), names);
    assert!(tools.iter().all(|t| t["type"] == "function" && t["function"]["parameters"]["type"] == "object"));
    assert_eq!(chat["max_tokens"], 64000);
    assert_eq!(chat["reasoning_effort"], "high");
    assert_eq!((&chat["stream"], &chat["stream_options"]), (&json!(true), &json!({"include_usage": true})));
    assert_eq!(chat["user"], body["metadata"]["user_id"]);
    // Nothing Anthropic-only leaks to the Chat provider.
    assert!(!chat.to_string().contains("cache_control"));
    for key in ["context_management", "output_config", "thinking", "metadata", "system"] {
        assert!(chat.get(key).is_none(), "{key} reached the Chat provider");
    }
}
