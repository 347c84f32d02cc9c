//! Fixtures, round trips, traps and properties of the Responses translation.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};
use xai_core::ir::{
    BlockKind, ChatRequest, ChatResponse, Delta, FileSource, ImageSource, Part, Reasoning, ResponseFormat, Role,
    Signature, StopReason, StreamDecoder, StreamEncoder, StreamEvent, ToolCall, ToolChoice, ToolKind,
};
use xai_core::{BodySpans, Endpoint, EndpointKind, GatewayError, Protocol, RequestMeta, StreamTap, Usage};

use super::*;
use crate::translate::TranslateTap;

const P: Protocol = Protocol::OpenAiResponses;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(crate::fixtures_dir().join("openai-responses").join(name)).unwrap()
}

fn endpoint() -> Endpoint {
    Endpoint { kind: EndpointKind::Responses, protocol: P, path_model: None, sse: false }
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

fn decode_in(chunks: &[&[u8]], transport_error: Option<&str>) -> Vec<StreamEvent> {
    let mut d = ResponsesStreamDecoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.feed(c, &mut out);
    }
    d.finish(transport_error, &mut out);
    out
}

fn decode_whole(src: &[u8]) -> Vec<StreamEvent> {
    decode_in(&[src], None)
}

fn decode_bytewise(src: &[u8]) -> Vec<StreamEvent> {
    let chunks: Vec<&[u8]> = src.chunks(1).collect();
    decode_in(&chunks, None)
}

fn decode_split(src: &[u8], cuts: &[usize]) -> Vec<StreamEvent> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (src.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::new();
    let mut prev = 0;
    for c in at {
        chunks.push(&src[prev..c]);
        prev = c;
    }
    chunks.push(&src[prev..]);
    decode_in(&chunks, None)
}

/// Asserts the IR stream invariants: Start first once, sequential blocks, exactly one terminal event, last.
fn check_invariants(evs: &[StreamEvent]) {
    assert!(matches!(evs.first(), Some(StreamEvent::Start { .. })), "Start first: {evs:?}");
    assert_eq!(evs.iter().filter(|e| matches!(e, StreamEvent::Start { .. })).count(), 1);
    let terminals = evs.iter().filter(|e| matches!(e, StreamEvent::Finish { .. } | StreamEvent::Error { .. })).count();
    assert_eq!(terminals, 1, "{evs:?}");
    assert!(matches!(evs.last(), Some(StreamEvent::Finish { .. } | StreamEvent::Error { .. })));
    let mut open: Option<u32> = None;
    let mut next = 0;
    for e in evs {
        match e {
            StreamEvent::BlockStart { index, .. } => {
                assert_eq!(open, None, "block opened while {open:?} is open");
                assert_eq!(*index, next);
                open = Some(*index);
                next += 1;
            }
            StreamEvent::Delta { index, delta } => {
                assert_eq!(open, Some(*index));
                if let Delta::Text(t) | Delta::Reasoning(t) | Delta::ToolArgs(t) = delta {
                    assert!(!t.is_empty(), "empty delta");
                }
            }
            StreamEvent::BlockStop { index } => {
                assert_eq!(open, Some(*index));
                open = None;
            }
            StreamEvent::Finish { .. } => assert_eq!(open, None, "finish with an open block"),
            _ => {}
        }
    }
}

/// What a stream said, whatever its framing.
#[derive(Debug, Default, PartialEq)]
struct Digest {
    id: Option<String>,
    /// (kind, concatenated deltas, signature)
    blocks: Vec<(BlockKind, String, Option<Signature>)>,
    stop: Option<StopReason>,
    usage: Option<Usage>,
    error: Option<(String, String)>,
}

fn digest(evs: &[StreamEvent]) -> Digest {
    check_invariants(evs);
    let mut d = Digest::default();
    for e in evs {
        match e {
            StreamEvent::Start { id, .. } => d.id = id.clone(),
            StreamEvent::BlockStart { block, .. } => d.blocks.push((block.clone(), String::new(), None)),
            StreamEvent::Delta { delta, .. } => {
                let b = d.blocks.last_mut().unwrap();
                match delta {
                    Delta::Text(t) | Delta::Reasoning(t) | Delta::ToolArgs(t) => b.1.push_str(t),
                    Delta::Signature(s) => b.2 = Some(s.clone()),
                }
            }
            StreamEvent::Usage(u) => d.usage = Some(*u),
            StreamEvent::Finish { stop, usage } => {
                d.stop = Some(stop.clone());
                if usage.is_some() {
                    d.usage = *usage;
                }
            }
            StreamEvent::Error { message, code } => d.error = Some((message.clone(), code.clone())),
            StreamEvent::BlockStop { .. } => {}
        }
    }
    d
}

/// The decoded digest, checked to be the same whole, byte by byte and in random splits.
fn fixture_digest(name: &str) -> Digest {
    let src = fixture(name);
    let whole = digest(&decode_whole(&src));
    assert_eq!(digest(&decode_bytewise(&src)), whole, "{name} byte by byte");
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20 {
        let cuts: Vec<usize> = (0..8)
            .map(|_| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (seed >> 33) as usize
            })
            .collect();
        assert_eq!(digest(&decode_split(&src, &cuts)), whole, "{name} split at {cuts:?}");
    }
    whole
}

fn usage(prompt: u64, cached: u64, completion: u64, reasoning: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        cached_tokens: cached,
        completion_tokens: completion,
        reasoning_tokens: reasoning,
        ..Usage::default()
    }
}

/// The text of the last `output_item.done` message in a fixture, read independently of the decoder.
fn fixture_done_text(src: &[u8]) -> String {
    let s = std::str::from_utf8(src).unwrap();
    let mut text = String::new();
    for line in s.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["type"] == "response.output_item.done" && v["item"]["type"] == "message" {
            text = v["item"]["content"][0]["text"].as_str().unwrap().to_string();
        }
    }
    text
}

// ---- stream fixtures ----------------------------------------------------------------------------------------

#[test]
fn fixture_stream_text() {
    let d = fixture_digest("stream-text.sse");
    assert_eq!(d.id.as_deref(), Some("resp_6859a4ad7d3c81999e9e02548c91e2a8077218073e9990d3"));
    assert_eq!(d.blocks.len(), 1);
    assert_eq!(d.blocks[0].0, BlockKind::Text);
    assert!(d.blocks[0].1.starts_with("I am OpenAI's language model, known as GPT-3."));
    assert!(d.blocks[0].1.ends_with("because I am a machine learning model."));
    assert_eq!(d.blocks[0].1, fixture_done_text(&fixture("stream-text.sse")));
    assert_eq!(d.stop, Some(StopReason::EndTurn));
    assert_eq!(d.usage, Some(usage(10, 0, 62, 0)));
    assert_eq!(d.error, None);
}

#[test]
fn fixture_stream_parallel_function_calls() {
    let d = fixture_digest("stream-parallel-function-calls.sse");
    let calls: Vec<_> = d
        .blocks
        .iter()
        .map(|(k, args, _)| match k {
            BlockKind::ToolCall { id, name, kind, .. } => (id.as_str(), name.as_str(), args.as_str(), *kind),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        calls,
        [
            (
                "call_GXd80NWdsX8ng3xdeNLeA42o",
                "search",
                r#"{"query":"Detroit Tigers game time October 6, 2023"}"#,
                ToolKind::Function
            ),
            ("call_qfdHN9tTntv02109c9RNnGGe", "weather", r#"{"city":"Detroit"}"#, ToolKind::Function),
        ]
    );
    assert_eq!(d.stop, Some(StopReason::ToolUse));
    assert_eq!(d.usage, Some(usage(92, 0, 52, 0)));
}

#[test]
fn fixture_stream_reasoning_summary_then_function_call() {
    let d = fixture_digest("stream-reasoning-summary-then-function-call.sse");
    assert_eq!(d.blocks.len(), 2);
    assert_eq!(
        d.blocks[0].0,
        BlockKind::Reasoning { id: Some("rs_6859a4c69e0481989e14c31c10bb34fb0179e266e69a389d".into()) }
    );
    assert!(d.blocks[0].1.starts_with("**Providing game details**\n\nThe Tigers game today is set for June 23, 2025"));
    assert!(d.blocks[0].1.ends_with("about their attire for the game."), "{}", d.blocks[0].1);
    assert_eq!(d.blocks[0].2, None, "no encrypted_content in this recording");
    match &d.blocks[1].0 {
        BlockKind::ToolCall { id, name, .. } => {
            assert_eq!((id.as_str(), name.as_str()), ("call_nNlsgLEC5L6HTPLYNLGxYOrZ", "search"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.blocks[1].1, r#"{"query": "Detroit Tigers game time June 23 2025"}"#);
    assert_eq!(d.stop, Some(StopReason::ToolUse));
    assert_eq!(d.usage, Some(usage(78, 0, 221, 192)));
}

#[test]
fn fixture_stream_reasoning_then_text() {
    let src = fixture("stream-reasoning-then-text.sse");
    let d = fixture_digest("stream-reasoning-then-text.sse");
    assert_eq!(d.blocks.len(), 2);
    assert_eq!(
        d.blocks[0],
        (
            BlockKind::Reasoning { id: Some("rs_689a24215ccc819aae0efab8490cbae90caba6b0e06e935a".into()) },
            String::new(),
            None
        )
    );
    assert_eq!(d.blocks[1].0, BlockKind::Text);
    assert!(d.blocks[1].1.starts_with("I’m an AI assistant created by OpenAI."));
    assert_eq!(d.blocks[1].1, fixture_done_text(&src));
    assert_eq!(d.stop, Some(StopReason::EndTurn));
    assert_eq!(d.usage, Some(usage(10, 0, 127, 64)));
}

#[test]
fn fixture_stream_web_search_skips_hosted_calls() {
    let src = fixture("stream-web-search-annotations.sse");
    let d = fixture_digest("stream-web-search-annotations.sse");
    let kinds: Vec<_> = d.blocks.iter().map(|b| std::mem::discriminant(&b.0)).collect();
    let r = std::mem::discriminant(&BlockKind::Reasoning { id: None });
    assert_eq!(kinds, [r, r, r, std::mem::discriminant(&BlockKind::Text)]);
    assert!(d.blocks[3].1.starts_with("To convert a length in centimeters (cm) to inches (in)"));
    assert_eq!(d.blocks[3].1, fixture_done_text(&src));
    assert_eq!(d.stop, Some(StopReason::EndTurn));
    assert_eq!(d.usage, Some(usage(17360, 8311, 1321, 1152)));
}

#[test]
fn fixture_stream_error_is_an_error_with_the_upstream_code() {
    let d = fixture_digest("stream-error-rate-limit.sse");
    assert!(d.blocks.is_empty());
    let (message, code) = d.error.unwrap();
    assert_eq!(code, "rate_limit_exceeded");
    assert!(message.starts_with("Request too large for gpt-4o in project"), "{message}");
    assert_eq!(d.stop, None);
}

// ---- non-streaming fixtures --------------------------------------------------------------------------------

#[test]
fn fixture_nonstream_text() {
    let r = decode_response(&fixture("nonstream-text.json")).unwrap();
    assert_eq!(r.id, "resp_688e94a36f04819ab9b92222098bfa900cb97fed98bbe78a");
    assert_eq!(r.model, "gpt-4o-2024-08-06");
    assert_eq!(
        r.parts,
        [Part::Text {
            text: "This document humorously concludes that the answer to the Ultimate Question of Life, the Universe, \
                   and Everything is simply the number 42."
                .into(),
            cache: false
        }]
    );
    assert_eq!(r.stop, StopReason::EndTurn);
    assert_eq!(r.usage, usage(34, 0, 28, 0));
}

#[test]
fn fixture_nonstream_function_call() {
    let r = decode_response(&fixture("nonstream-function-call.json")).unwrap();
    assert_eq!(
        r.parts,
        [Part::ToolCall(ToolCall {
            id: "call_YzbhDicRsZKscu0Xzob27Tdu".into(),
            name: "weather".into(),
            arguments: r#"{"city":"Detroit"}"#.into(),
            kind: ToolKind::Function,
            signature: None,
        })]
    );
    assert_eq!(r.stop, StopReason::ToolUse, "trap 5: a completed response with function calls is a tool stop");
    assert_eq!(r.usage, usage(200, 0, 14, 0));
}

#[test]
fn fixture_nonstream_reasoning() {
    let r = decode_response(&fixture("nonstream-reasoning.json")).unwrap();
    assert_eq!(r.parts.len(), 2);
    assert_eq!(
        r.parts[0],
        Part::Reasoning(Reasoning {
            text: String::new(),
            signature: None,
            redacted: None,
            id: Some("rs_689b71947cbc8199af51368ed8e14a810f49e192ec3eba8e".into()),
        })
    );
    assert!(matches!(&r.parts[1], Part::Text { text, .. } if text.starts_with("I’m ChatGPT, an AI assistant")));
    assert_eq!(r.usage, usage(10, 0, 112, 64));
}

#[test]
fn nonstream_incomplete_and_encrypted_reasoning() {
    let body = json!({"id": "resp_1", "object": "response", "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"}, "model": "o3",
        "output": [{"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "a"},
            {"type": "summary_text", "text": "b"}], "encrypted_content": "gAAAA"}],
        "usage": {"input_tokens": 5, "output_tokens": 16, "input_tokens_details": {"cached_tokens": 1},
            "output_tokens_details": {"reasoning_tokens": 16}, "total_tokens": 21}});
    let r = decode_response(body.to_string().as_bytes()).unwrap();
    assert_eq!(r.stop, StopReason::MaxTokens);
    let Part::Reasoning(rs) = &r.parts[0] else { panic!() };
    assert_eq!(rs.text, "a\n\nb");
    assert_eq!(rs.signature, Some(Signature::new(P, "rs_1:gAAAA")), "the item id travels with the signature");
    assert_eq!(rs.id.as_deref(), Some("rs_1"));
    assert_eq!(r.usage, usage(5, 1, 16, 16));
}

#[test]
fn error_messages() {
    let body = br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#;
    assert_eq!(error_message(body).as_deref(), Some("Incorrect API key provided"));
    assert_eq!(error_message(b"not json"), None);
    assert_eq!(error_message(br#"{"error":{"message":""}}"#), None);
}

// ---- requests ----------------------------------------------------------------------------------------------

/// What the Codex CLI sends on a second turn (shape taken from its request builder).
fn codex_body() -> Value {
    json!({
        "model": "gpt-5-codex",
        "instructions": "You are Codex, based on GPT-5.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>never</permissions>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>cwd</environment_context>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix the bug"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]},
            {"type": "reasoning", "id": "rs_abc", "summary": [{"type": "summary_text", "text": "**Looking**"}],
                "content": null, "encrypted_content": "gAAAAB-native"},
            {"type": "function_call", "name": "shell", "arguments": "{\"command\":[\"ls\"]}", "call_id": "call_1"},
            {"type": "function_call_output", "call_id": "call_1", "output": "a.rs\nb.rs"},
            {"type": "custom_tool_call", "status": "completed", "call_id": "call_2", "name": "apply_patch",
                "input": "*** Begin Patch\n*** End Patch"},
            {"type": "custom_tool_call_output", "call_id": "call_2", "output": "Success"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]},
            {"role": "user", "content": "thanks"}
        ],
        "tools": [
            {"type": "function", "name": "shell", "description": "Runs a shell command", "strict": false,
                "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                "required": ["command"], "additionalProperties": false}},
            {"type": "custom", "name": "apply_patch", "description": "Apply a patch",
                "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch"}},
            {"type": "web_search"},
            {"type": "local_shell"},
            {"type": "namespace", "name": "mcp__files", "description": "files server",
                "tools": [{"type": "function", "name": "read_file", "parameters": {"type": "object", "properties": {}}}]},
            {"type": "image_generation", "output_format": "png"}
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": false,
        "stream": true,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199-session",
        "text": {"verbosity": "low"}
    })
}

fn decode_value(v: &Value) -> Result<ChatRequest, GatewayError> {
    decode_request(&endpoint(), v.to_string().as_bytes())
}

#[test]
fn decodes_what_codex_sends() {
    let r = decode_value(&codex_body()).unwrap();
    assert_eq!(r.model, "gpt-5-codex");
    let system: Vec<_> = r.system.iter().map(|b| b.text.as_str()).collect();
    assert_eq!(system, ["You are Codex, based on GPT-5.", "<permissions>never</permissions>"], "trap 9");
    let roles: Vec<_> = r.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::User, Role::Assistant, Role::User, Role::Assistant, Role::User, Role::Assistant, Role::User]
    );
    assert_eq!(r.messages[0].parts.len(), 3);
    assert_eq!(
        r.messages[0].parts[2],
        Part::Image(ImageSource::Base64 { media_type: "image/png".into(), data: "iVBORw0KGgo=".into() })
    );
    // The reasoning item and its call are one assistant turn.
    let Part::Reasoning(rs) = &r.messages[1].parts[0] else { panic!("{:?}", r.messages[1]) };
    assert_eq!(rs.text, "**Looking**");
    assert_eq!(rs.id.as_deref(), Some("rs_abc"));
    assert_eq!(rs.signature, Some(Signature::new(P, "gAAAAB-native")));
    assert!(matches!(&r.messages[1].parts[1], Part::ToolCall(c) if c.name == "shell" && c.id == "call_1"));
    let Part::ToolResult(res) = &r.messages[2].parts[0] else { panic!() };
    assert_eq!((res.call_id.as_str(), res.text().as_str(), res.kind), ("call_1", "a.rs\nb.rs", ToolKind::Function));
    let Part::ToolCall(patch) = &r.messages[3].parts[0] else { panic!() };
    assert_eq!((patch.kind, patch.arguments.as_str()), (ToolKind::Custom, "*** Begin Patch\n*** End Patch"));
    let Part::ToolResult(res) = &r.messages[4].parts[0] else { panic!() };
    assert_eq!(res.kind, ToolKind::Custom);
    assert_eq!(r.messages[6].parts, [Part::Text { text: "thanks".into(), cache: false }]);
    // Hosted tools are skipped, the namespace is flattened.
    let tools: Vec<_> = r.tools.iter().map(|t| (t.name.as_str(), t.kind)).collect();
    assert_eq!(
        tools,
        [("shell", ToolKind::Function), ("apply_patch", ToolKind::Custom), ("read_file", ToolKind::Function)]
    );
    assert_eq!(r.tools[1].custom_format.as_ref().unwrap()["syntax"], "lark");
    assert_eq!(r.tool_choice, Some(ToolChoice::Auto));
    assert_eq!(r.parallel_tool_calls, Some(false));
    let rc = r.reasoning.unwrap();
    assert_eq!((rc.effort.as_deref(), rc.include_thoughts, rc.disabled), (Some("medium"), true, false));
    assert!(r.stream);
}

#[test]
fn request_round_trip_through_the_upstream_encoder() {
    let first = decode_value(&codex_body()).unwrap();
    let wire: Value = serde_json::from_slice(&encode_request(&first).unwrap()).unwrap();
    assert_eq!(wire["store"], false);
    assert_eq!(wire["include"], json!(["reasoning.encrypted_content"]));
    assert_eq!(wire["stream"], true);
    assert_eq!(wire["reasoning"], json!({"effort": "medium", "summary": "auto"}));
    let items = wire["input"].as_array().unwrap();
    let reasoning = items.iter().find(|i| i["type"] == "reasoning").unwrap();
    assert_eq!(reasoning["id"], "rs_abc");
    assert_eq!(reasoning["encrypted_content"], "gAAAAB-native");
    let img =
        items.iter().flat_map(|i| i["content"].as_array().into_iter().flatten()).find(|c| c["type"] == "input_image");
    assert_eq!(img.unwrap()["image_url"], "data:image/png;base64,iVBORw0KGgo=", "trap 11: a plain string");
    let again = decode_value(&wire).unwrap();
    // Instructions and developer messages come back merged into one block; everything else is the same.
    assert_eq!(again.system.len(), 1);
    assert_eq!(again.system[0].text, "You are Codex, based on GPT-5.\n\n<permissions>never</permissions>");
    assert_eq!(ChatRequest { system: first.system.clone(), ..again }, first);
}

#[test]
fn foreign_signatures_come_back_through_encrypted_content_and_are_dropped_upstream() {
    let envelope = Signature::new(Protocol::Anthropic, "EqQBCkYIARgC").for_client(P);
    let body = json!({"model": "claude", "input": [
        {"type": "message", "role": "user", "content": "hi"},
        {"type": "reasoning", "id": "rs_x", "summary": [{"type": "summary_text", "text": "thinking"}], "encrypted_content": envelope},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hello"}]}
    ]});
    let r = decode_value(&body).unwrap();
    let Part::Reasoning(rs) = &r.messages[1].parts[0] else { panic!() };
    assert_eq!(rs.signature, Some(Signature::new(Protocol::Anthropic, "EqQBCkYIARgC")), "trap 4");
    let wire: Value = serde_json::from_slice(&encode_request(&r).unwrap()).unwrap();
    assert!(wire["input"].as_array().unwrap().iter().all(|i| i["type"] != "reasoning"), "{wire}");
}

#[test]
fn upstream_reasoning_replays_through_a_client_that_keeps_only_the_signature() {
    // A Responses upstream answers with encrypted reasoning…
    let src = sse(&[
        json!({"type": "response.created", "response": {"id": "resp_1"}}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": {"id": "rs_42", "type": "reasoning", "summary": []}}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": {"id": "rs_42", "type": "reasoning",
            "summary": [], "encrypted_content": "gAAAAB_enc-1="}}),
        json!({"type": "response.completed", "response": {"id": "resp_1", "status": "completed"}}),
    ]);
    let d = digest(&decode_whole(&src));
    let sig = d.blocks[0].2.clone().unwrap();
    // …an Anthropic client keeps the enveloped signature but no item id, and sends it back…
    let back = Signature::from_field(Protocol::Anthropic, &sig.for_client(Protocol::Anthropic));
    let req = ChatRequest {
        model: "o3".into(),
        messages: vec![
            xai_core::ir::Message { role: Role::User, parts: vec![Part::Text { text: "hi".into(), cache: false }] },
            xai_core::ir::Message {
                role: Role::Assistant,
                parts: vec![
                    Part::Reasoning(Reasoning { signature: Some(back), ..Reasoning::default() }),
                    Part::Text { text: "hello".into(), cache: false },
                ],
            },
        ],
        ..ChatRequest::default()
    };
    // …and OpenAI gets the item whole again.
    let wire: Value = serde_json::from_slice(&encode_request(&req).unwrap()).unwrap();
    assert_eq!(
        wire["input"][1],
        json!({"type": "reasoning", "id": "rs_42", "summary": [], "encrypted_content": "gAAAAB_enc-1="})
    );
    assert_eq!(unpack_signature("gAAAAB_enc-1="), (None, "gAAAAB_enc-1="));
}

#[test]
fn previous_response_id_is_refused() {
    let err = decode_value(&json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"})).unwrap_err();
    let GatewayError::BadRequest(m) = err else { panic!() };
    assert!(m.contains("previous_response_id") && m.contains("not supported across protocols"), "{m}");
    // `store:false` and a null id are fine.
    assert!(decode_value(&json!({"model": "m", "input": "hi", "store": false, "previous_response_id": null})).is_ok());
}

#[test]
fn malformed_requests_name_the_field() {
    let cases = [
        (json!([1]), "JSON object"),
        (json!({"model": "m", "input": 3}), "`input`"),
        (json!({"model": "m", "input": [{"type": "function_call", "call_id": "c"}]}), "`input[0].name`"),
        (json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}), "`input[0].role`"),
        (json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]}), "image_url"),
        (json!({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}), "`input[0].call_id`"),
        (json!({"model": "m", "tools": [{"type": "function"}]}), "`tools[0].name`"),
        (json!({"model": "m", "tool_choice": "sometimes"}), "`tool_choice`"),
        (json!({"model": "m", "max_output_tokens": -1}), "`max_output_tokens`"),
        (json!({"model": "m", "text": {"format": {"type": "json_schema", "name": "x"}}}), "`text.format.schema`"),
        (json!({"model": "m", "reasoning": "high"}), "`reasoning`"),
    ];
    for (body, needle) in cases {
        match decode_value(&body) {
            Err(GatewayError::BadRequest(m)) => assert!(m.contains(needle), "{body}: {m}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    assert!(matches!(decode_request(&endpoint(), b"{"), Err(GatewayError::BadRequest(_))));
}

#[test]
fn request_fields() {
    let body = json!({
        "model": "m", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "read"},
            {"type": "input_image", "image_url": "https://x/y.png", "detail": "auto"},
            {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBER"}]}],
        "tool_choice": {"type": "function", "name": "shell"},
        "max_output_tokens": 8, "temperature": 0.2, "top_p": 0.9,
        "reasoning": {"effort": "none"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}},
        "safety_identifier": "u-1"
    });
    let r = decode_value(&body).unwrap();
    assert_eq!(r.messages[0].parts[1], Part::Image(ImageSource::Url("https://x/y.png".into())));
    assert_eq!(
        r.messages[0].parts[2],
        Part::File { media_type: "application/pdf".into(), source: FileSource::Base64("JVBER".into()) }
    );
    assert_eq!(r.tool_choice, Some(ToolChoice::Tool("shell".into())));
    assert_eq!((r.max_tokens, r.temperature, r.top_p), (Some(8), Some(0.2), Some(0.9)));
    assert!(r.reasoning.as_ref().unwrap().disabled);
    assert_eq!(
        r.response_format,
        Some(ResponseFormat::JsonSchema { name: "out".into(), schema: json!({"type": "object"}), strict: Some(true) })
    );
    assert_eq!(r.user.as_deref(), Some("u-1"));
    let wire: Value = serde_json::from_slice(&encode_request(&r).unwrap()).unwrap();
    assert_eq!(wire["max_output_tokens"], 16, "OpenAI refuses fewer than 16");
    assert!(wire.get("reasoning").is_none(), "reasoning turned off");
    assert_eq!(wire["tool_choice"], json!({"type": "function", "name": "shell"}));
    assert_eq!(wire["text"]["format"]["strict"], true);
    assert_eq!(wire["input"][0]["content"][2]["file_data"], "data:application/pdf;base64,JVBER");
    // The null reasoning object OpenAI echoes asks for nothing.
    let r = decode_value(&json!({"model": "m", "reasoning": {"effort": null, "summary": null}})).unwrap();
    assert_eq!(r.reasoning, None);
    // A string input is one user message.
    let r = decode_value(&json!({"model": "m", "input": "hello"})).unwrap();
    assert_eq!(
        r.messages,
        [xai_core::ir::Message { role: Role::User, parts: vec![Part::Text { text: "hello".into(), cache: false }] }]
    );
}

#[test]
fn encrypted_reasoning_is_asked_only_where_the_model_can_give_it() {
    let plain = ChatRequest {
        model: "gpt-4o".into(),
        temperature: Some(0.3),
        messages: vec![xai_core::ir::Message {
            role: Role::User,
            parts: vec![Part::Text { text: "hi".into(), cache: false }],
        }],
        ..ChatRequest::default()
    };
    let wire = |r: &ChatRequest| -> Value { serde_json::from_slice(&encode_request(r).unwrap()).unwrap() };
    let w = wire(&plain);
    assert!(w.get("include").is_none(), "gpt-4o refuses encrypted reasoning: {w}");
    assert_eq!((w["store"].as_bool(), w["temperature"].as_f64()), (Some(false), Some(0.3)));
    // A reasoning model: encrypted reasoning asked, sampling parameters it refuses dropped.
    let w = wire(&ChatRequest { model: "o4-mini".into(), top_p: Some(0.5), ..plain.clone() });
    assert_eq!(w["include"], json!(["reasoning.encrypted_content"]));
    assert!(w.get("temperature").is_none() && w.get("top_p").is_none(), "{w}");
    // Reasoning asked explicitly, or native reasoning replayed.
    let asked = ChatRequest { reasoning: Some(Default::default()), ..plain.clone() };
    assert_eq!(wire(&asked)["include"], json!(["reasoning.encrypted_content"]));
    let mut replay = plain.clone();
    replay.messages.push(xai_core::ir::Message {
        role: Role::Assistant,
        parts: vec![Part::Reasoning(Reasoning {
            text: String::new(),
            signature: Some(Signature::new(P, "gAAA")),
            redacted: None,
            id: Some("rs_1".into()),
        })],
    });
    let w = wire(&replay);
    assert_eq!(w["include"], json!(["reasoning.encrypted_content"]));
    assert_eq!(w["input"][1], json!({"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"}));
    for (m, yes) in [
        ("gpt-5", true),
        ("openai/gpt-5-mini", true),
        ("gpt-5-chat-latest", false),
        ("o3", true),
        ("gpt-5-codex", true),
        ("gpt-4.1", false),
        ("omni-moderation", false),
    ] {
        assert_eq!(request::is_reasoning_model(m), yes, "{m}");
    }
}

// ---- complete responses for clients -------------------------------------------------------------------------

fn sample_response() -> ChatResponse {
    ChatResponse {
        id: "msg_01XFDUDYJgAACzvnptvVoYEL".into(),
        model: "claude-sonnet-4".into(),
        parts: vec![
            Part::Reasoning(Reasoning {
                text: "Let me think".into(),
                signature: Some(Signature::new(Protocol::Anthropic, "EqQB")),
                redacted: None,
                id: None,
            }),
            Part::Text { text: "Calling.".into(), cache: false },
            Part::ToolCall(ToolCall {
                id: "toolu_1".into(),
                name: "shell".into(),
                arguments: r#"{"command":["ls"]}"#.into(),
                kind: ToolKind::Function,
                signature: None,
            }),
            Part::ToolCall(ToolCall {
                id: "toolu_2".into(),
                name: "apply_patch".into(),
                arguments: "*** Begin Patch".into(),
                kind: ToolKind::Custom,
                signature: None,
            }),
        ],
        stop: StopReason::EndTurn,
        usage: Usage {
            prompt_tokens: 100,
            cached_tokens: 40,
            completion_tokens: 30,
            reasoning_tokens: 10,
            ..Usage::default()
        },
    }
}

#[test]
fn encodes_a_complete_response() {
    let bytes = encode_response(&sample_response(), &endpoint(), &meta("gpt-5-codex"));
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["id"], "resp_msg01XFDUDYJgAACzvnptvVoYEL");
    assert_eq!(v["model"], "gpt-5-codex", "the model the client asked");
    assert_eq!(v["status"], "completed");
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 100, "input_tokens_details": {"cached_tokens": 40}, "output_tokens": 30,
            "output_tokens_details": {"reasoning_tokens": 10}, "total_tokens": 130})
    );
    let out = v["output"].as_array().unwrap();
    assert_eq!(out[0]["type"], "reasoning");
    assert!(out[0]["id"].as_str().unwrap().starts_with("rs_"));
    assert_eq!(out[0]["encrypted_content"], envelope_of("anthropic", "EqQB"));
    assert_eq!(out[0]["summary"], json!([{"type": "summary_text", "text": "Let me think"}]));
    assert_eq!(out[1]["content"][0]["text"], "Calling.");
    assert_eq!((out[2]["type"].as_str(), out[2]["call_id"].as_str()), (Some("function_call"), Some("toolu_1")));
    assert!(out[2]["id"].as_str().unwrap().starts_with("fc_"));
    assert_eq!(
        (out[3]["type"].as_str(), out[3]["input"].as_str()),
        (Some("custom_tool_call"), Some("*** Begin Patch"))
    );
    // Decoding it again gives the same content (the foreign signature stays enveloped in the opaque field).
    let back = decode_response(&bytes).unwrap();
    let mut want = sample_response();
    if let Part::Reasoning(r) = &mut want.parts[0] {
        r.id = out[0]["id"].as_str().map(str::to_string);
        r.signature = Some(pack_signature(r.id.as_deref(), &envelope_of("anthropic", "EqQB")));
    }
    assert_eq!(back.parts, want.parts);
    assert_eq!(back.stop, StopReason::ToolUse);
    assert_eq!(back.usage, want.usage);
    // …and a client sending it back recovers its origin.
    assert_eq!(
        Signature::from_field(P, out[0]["encrypted_content"].as_str().unwrap()),
        Signature::new(Protocol::Anthropic, "EqQB")
    );
}

#[test]
fn tool_call_signatures_and_redacted_thinking_round_trip_through_a_codex_client() {
    let gemini_sig = Signature::new(Protocol::Gemini, "CiQB0e2Kb");
    let call = ToolCall {
        id: "call_g1".into(),
        name: "shell".into(),
        arguments: "{}".into(),
        kind: ToolKind::Function,
        signature: Some(gemini_sig.clone()),
    };
    let redacted = Reasoning { redacted: Some("EmwKAhgBEgy3va".into()), ..Reasoning::default() };
    // Streamed: the carrier items reach the client before the call, and the client sends every item back.
    let evs = vec![
        StreamEvent::Start { id: None, model: None, usage: None },
        StreamEvent::BlockStart { index: 0, block: BlockKind::RedactedReasoning { data: "EmwKAhgBEgy3va".into() } },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::BlockStart {
            index: 1,
            block: BlockKind::ToolCall {
                id: call.id.clone(),
                name: call.name.clone(),
                kind: ToolKind::Function,
                signature: Some(gemini_sig.clone()),
            },
        },
        StreamEvent::Delta { index: 1, delta: Delta::ToolArgs("{}".into()) },
        StreamEvent::BlockStop { index: 1 },
        StreamEvent::Finish { stop: StopReason::ToolUse, usage: None },
    ];
    let streamed = parse_sse(&encode_events(&evs));
    let output = streamed.last().unwrap()["response"]["output"].clone();
    let complete = ChatResponse {
        parts: vec![Part::Reasoning(redacted.clone()), Part::ToolCall(call.clone())],
        stop: StopReason::ToolUse,
        ..ChatResponse::default()
    };
    let v: Value = serde_json::from_slice(&encode_response(&complete, &endpoint(), &meta("m"))).unwrap();
    for output in [output, v["output"].clone()] {
        let items = output.as_array().unwrap();
        assert_eq!(items.len(), 3, "{output}");
        assert_eq!(items[1]["encrypted_content"], envelope_of("gemini", "CiQB0e2Kb"));
        let mut input = items.clone();
        input.push(json!({"type": "function_call_output", "call_id": "call_g1", "output": "ok"}));
        let req = decode_value(&json!({"model": "m", "input": input})).unwrap();
        assert_eq!(req.messages[0].role, Role::Assistant);
        assert_eq!(req.messages[0].parts, [Part::Reasoning(redacted.clone()), Part::ToolCall(call.clone())]);
    }
}

#[test]
fn incomplete_responses() {
    for (stop, reason) in [(StopReason::MaxTokens, "max_output_tokens"), (StopReason::ContentFilter, "content_filter")]
    {
        let resp = ChatResponse {
            parts: vec![Part::Text { text: "cut".into(), cache: false }],
            stop: stop.clone(),
            ..ChatResponse::default()
        };
        let bytes = encode_response(&resp, &endpoint(), &meta("m"));
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], reason);
        assert!(v["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(decode_response(&bytes).unwrap().stop, stop);
    }
}

// ---- the client stream encoder -----------------------------------------------------------------------------

/// Parses an encoded stream into its (event name, data) pairs, checking the framing Codex and the SDKs need.
fn parse_sse(bytes: &[u8]) -> Vec<Value> {
    let s = std::str::from_utf8(bytes).unwrap();
    assert!(s.is_empty() || s.ends_with("\n\n"));
    let mut out = Vec::new();
    for (seq, ev) in s.split("\n\n").filter(|e| !e.is_empty()).enumerate() {
        let mut lines = ev.lines();
        let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
        let data: Value = serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert!(lines.next().is_none());
        assert_eq!(data["type"], name, "event line equals the JSON type");
        assert_eq!(data["sequence_number"], seq as u64, "sequence numbers count from 0");
        out.push(data);
    }
    out
}

fn encode_events(evs: &[StreamEvent]) -> Vec<u8> {
    let mut enc = ResponsesStreamEncoder::new("gpt-5-codex");
    let mut out = Vec::new();
    for e in evs {
        enc.encode(e, &mut out);
    }
    out
}

fn sample_events() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start { id: Some("msg_01".into()), model: Some("claude".into()), usage: None },
        StreamEvent::BlockStart { index: 0, block: BlockKind::Reasoning { id: None } },
        StreamEvent::Delta { index: 0, delta: Delta::Reasoning("Let me ".into()) },
        StreamEvent::Delta { index: 0, delta: Delta::Reasoning("think".into()) },
        StreamEvent::Delta { index: 0, delta: Delta::Signature(Signature::new(Protocol::Anthropic, "EqQB")) },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::BlockStart { index: 1, block: BlockKind::Text },
        StreamEvent::Delta { index: 1, delta: Delta::Text("Hel".into()) },
        StreamEvent::Delta { index: 1, delta: Delta::Text("lo \"x\"".into()) },
        StreamEvent::BlockStop { index: 1 },
        StreamEvent::BlockStart {
            index: 2,
            block: BlockKind::ToolCall {
                id: "toolu_1".into(),
                name: "shell".into(),
                kind: ToolKind::Function,
                signature: None,
            },
        },
        StreamEvent::Delta { index: 2, delta: Delta::ToolArgs("{\"command\":".into()) },
        StreamEvent::Delta { index: 2, delta: Delta::ToolArgs("[\"ls\"]}".into()) },
        StreamEvent::BlockStop { index: 2 },
        StreamEvent::Usage(usage(50, 0, 5, 0)),
        StreamEvent::Finish { stop: StopReason::EndTurn, usage: Some(usage(100, 40, 30, 10)) },
    ]
}

#[test]
fn encoder_writes_what_codex_reads() {
    let evs = parse_sse(&encode_events(&sample_events()));
    let types: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ],
        "trap 8: items and parts are added before their deltas"
    );
    let created = &evs[0]["response"];
    assert!(created["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!((created["object"].as_str(), created["status"].as_str()), (Some("response"), Some("in_progress")));
    assert_eq!(created["model"], "gpt-5-codex");
    assert_eq!(created["output"], json!([]));
    assert_eq!(evs[2]["item"]["summary"], json!([]));
    assert_eq!(
        evs[8]["item"]["encrypted_content"],
        envelope_of("anthropic", "EqQB"),
        "trap 4: the signature reaches Codex"
    );
    assert_eq!(evs[8]["item"]["summary"], json!([{"type": "summary_text", "text": "Let me think"}]));
    let msg = &evs[9]["item"];
    assert_eq!(
        (msg["type"].as_str(), msg["status"].as_str(), msg["role"].as_str()),
        (Some("message"), Some("in_progress"), Some("assistant"))
    );
    assert_eq!(evs[10]["part"], json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []}));
    assert_eq!(evs[11]["item_id"], msg["id"]);
    assert_eq!(evs[11]["output_index"], 1);
    assert_eq!(evs[13]["text"], "Hello \"x\"");
    assert_eq!(evs[15]["item"]["content"][0]["text"], "Hello \"x\"");
    assert_eq!(evs[15]["item"]["status"], "completed");
    let fc = &evs[16]["item"];
    assert_eq!(
        (fc["call_id"].as_str(), fc["name"].as_str(), fc["arguments"].as_str()),
        (Some("toolu_1"), Some("shell"), Some(""))
    );
    assert!(fc["id"].as_str().unwrap().starts_with("fc_"));
    assert_eq!(evs[19]["arguments"], "{\"command\":[\"ls\"]}");
    let done = &evs[21]["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["id"], created["id"]);
    let output = done["output"].as_array().unwrap();
    assert_eq!(output.len(), 3);
    assert_eq!(output[0], evs[8]["item"]);
    assert_eq!(output[1], evs[15]["item"]);
    assert_eq!(output[2], evs[20]["item"]);
    assert_eq!(
        done["usage"],
        json!({"input_tokens": 100, "input_tokens_details": {"cached_tokens": 40}, "output_tokens": 30,
            "output_tokens_details": {"reasoning_tokens": 10}, "total_tokens": 130}),
        "trap 6: all five counts"
    );
}

#[test]
fn encoder_custom_tool_calls_and_empty_arguments() {
    let evs = vec![
        StreamEvent::Start { id: None, model: None, usage: None },
        StreamEvent::BlockStart {
            index: 0,
            block: BlockKind::ToolCall {
                id: "c1".into(),
                name: "apply_patch".into(),
                kind: ToolKind::Custom,
                signature: None,
            },
        },
        StreamEvent::Delta { index: 0, delta: Delta::ToolArgs("*** Begin".into()) },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::BlockStart {
            index: 1,
            block: BlockKind::ToolCall {
                id: "c2".into(),
                name: "now".into(),
                kind: ToolKind::Function,
                signature: None,
            },
        },
        StreamEvent::BlockStop { index: 1 },
        StreamEvent::Finish { stop: StopReason::ToolUse, usage: None },
    ];
    let out = parse_sse(&encode_events(&evs));
    let types: Vec<&str> = out.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"response.custom_tool_call_input.delta"));
    assert!(types.contains(&"response.custom_tool_call_input.done"));
    let last = out.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    let output = &last["response"]["output"];
    assert_eq!(output[0]["type"], "custom_tool_call");
    assert_eq!(output[0]["input"], "*** Begin");
    assert_eq!(output[1]["arguments"], "{}", "a call without arguments has `{{}}`");
    assert_eq!(last["response"]["usage"]["total_tokens"], 0, "usage present even when unknown");
}

#[test]
fn encoder_incomplete_stops() {
    for (stop, reason) in [(StopReason::MaxTokens, "max_output_tokens"), (StopReason::ContentFilter, "content_filter")]
    {
        let evs = [
            StreamEvent::Start { id: None, model: None, usage: None },
            StreamEvent::BlockStart { index: 0, block: BlockKind::Text },
            StreamEvent::Delta { index: 0, delta: Delta::Text("cut".into()) },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::Finish { stop, usage: Some(usage(1, 0, 2, 0)) },
        ];
        let out = parse_sse(&encode_events(&evs));
        let last = out.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["status"], "incomplete");
        assert_eq!(last["response"]["incomplete_details"]["reason"], reason);
    }
}

#[test]
fn encoder_error_is_response_failed_and_nothing_follows() {
    for (code, want) in [
        ("rate_limit_error", "rate_limit_exceeded"),
        ("insufficient_quota", "insufficient_quota"),
        ("model_context_window_exceeded", "context_length_exceeded"),
        ("overloaded_error", "server_error"),
        ("stream_truncated", "server_error"),
    ] {
        let mut evs = sample_events();
        evs.truncate(8);
        evs.push(StreamEvent::Error { message: "boom".into(), code: code.into() });
        evs.push(StreamEvent::Delta { index: 1, delta: Delta::Text("late".into()) });
        evs.push(StreamEvent::Finish { stop: StopReason::EndTurn, usage: None });
        let out = parse_sse(&encode_events(&evs));
        let last = out.last().unwrap();
        assert_eq!(last["type"], "response.failed", "trap 7");
        assert_eq!(last["response"]["status"], "failed");
        assert_eq!(last["response"]["error"], json!({"code": want, "message": "boom"}));
        assert!(out.iter().all(|e| e["type"] != "error"), "Codex ignores bare error events");
        assert_eq!(out.iter().filter(|e| e["type"] == "response.failed").count(), 1);
    }
    // An error before anything else still opens the response first.
    let out = parse_sse(&encode_events(&[StreamEvent::Error { message: "x".into(), code: "overloaded".into() }]));
    let types: Vec<&str> = out.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["response.created", "response.in_progress", "response.failed"]);
}

#[test]
fn encoder_ignores_deltas_for_blocks_not_open() {
    let evs = [
        StreamEvent::Start { id: None, model: None, usage: None },
        StreamEvent::Delta { index: 0, delta: Delta::Text("orphan".into()) },
        StreamEvent::BlockStart { index: 0, block: BlockKind::RedactedReasoning { data: "opaque".into() } },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::BlockStart { index: 1, block: BlockKind::Text },
        StreamEvent::Delta { index: 1, delta: Delta::Text("hi".into()) },
        StreamEvent::BlockStop { index: 1 },
        StreamEvent::Finish { stop: StopReason::EndTurn, usage: None },
    ];
    let out = parse_sse(&encode_events(&evs));
    let deltas: Vec<&Value> = out.iter().filter(|e| e["type"] == "response.output_text.delta").collect();
    assert_eq!(deltas.len(), 1, "Codex rejects a text delta with no open item");
    // Redacted thinking became a carrier item first (output 0), with nothing a client would show.
    assert_eq!(deltas[0]["output_index"], 1);
    let output = out.last().unwrap()["response"]["output"].as_array().unwrap().clone();
    assert_eq!(output.len(), 2);
    assert_eq!(output[0]["summary"], json!([]));
    assert_eq!(output[0]["encrypted_content"], envelope_of("anthropic", "opaque"));
}

// ---- decoder traps -----------------------------------------------------------------------------------------

fn sse(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.extend_from_slice(format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()).as_bytes());
    }
    out
}

#[test]
fn decoder_takes_output_item_done_as_the_truth() {
    // Trap 2: arguments only in `.done`; text only in `output_item.done`; an encrypted reasoning item.
    let src = sse(&[
        json!({"type": "response.created", "response": {"id": "resp_1", "model": "gpt-5", "status": "in_progress"}}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": {"id": "rs_1", "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "s1"}, {"type": "summary_text", "text": "s2"}], "encrypted_content": "gAAA"}}),
        json!({"type": "response.output_item.added", "output_index": 1, "item": {"id": "msg_1", "type": "message", "role": "assistant", "content": []}}),
        json!({"type": "response.output_item.done", "output_index": 1, "item": {"id": "msg_1", "type": "message",
            "content": [{"type": "output_text", "text": "whole"}]}}),
        json!({"type": "response.output_item.added", "output_index": 2, "item": {"id": "fc_1", "type": "function_call",
            "call_id": "call_9", "name": "f", "arguments": ""}}),
        json!({"type": "response.function_call_arguments.done", "output_index": 2, "arguments": "{\"a\":1}"}),
        json!({"type": "response.output_item.done", "output_index": 2, "item": {"id": "fc_1", "type": "function_call",
            "call_id": "call_9", "name": "f", "arguments": "{\"a\":1}"}}),
        json!({"type": "response.output_item.added", "output_index": 3, "item": {"id": "fc_2", "type": "function_call",
            "call_id": "call_10", "name": "g", "arguments": ""}}),
        json!({"type": "response.output_item.done", "output_index": 3, "item": {"id": "fc_2", "type": "function_call",
            "call_id": "call_10", "name": "g", "arguments": ""}}),
        json!({"type": "response.completed", "response": {"id": "resp_1", "status": "completed",
            "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}}}),
    ]);
    let d = digest(&decode_whole(&src));
    assert_eq!(d.blocks[0].1, "s1\n\ns2");
    assert_eq!(d.blocks[0].2, Some(Signature::new(P, "rs_1:gAAA")), "encrypted_content kept as a native signature");
    assert_eq!(d.blocks[1].1, "whole");
    assert_eq!(d.blocks[2].1, "{\"a\":1}", "one delta with the whole arguments");
    assert_eq!(d.blocks[3].1, "{}", "a call without arguments has `{{}}`");
    assert_eq!(d.stop, Some(StopReason::ToolUse));
    assert_eq!(d.usage, Some(usage(3, 0, 4, 0)));
}

#[test]
fn decoder_multi_part_summaries_custom_calls_and_incomplete() {
    let src = sse(&[
        json!({"type": "response.created", "response": {"id": "resp_2"}}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": {"id": "rs_2", "type": "reasoning", "summary": []}}),
        json!({"type": "response.reasoning_summary_part.added", "output_index": 0, "summary_index": 0}),
        json!({"type": "response.reasoning_summary_text.delta", "output_index": 0, "summary_index": 0, "delta": "a"}),
        json!({"type": "response.reasoning_summary_part.added", "output_index": 0, "summary_index": 1}),
        json!({"type": "response.reasoning_summary_text.delta", "output_index": 0, "summary_index": 1, "delta": "b"}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": {"id": "rs_2", "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "a"}, {"type": "summary_text", "text": "b"}]}}),
        json!({"type": "response.output_item.added", "output_index": 1, "item": {"id": "ctc_1", "type": "custom_tool_call",
            "call_id": "call_p", "name": "apply_patch", "input": ""}}),
        json!({"type": "response.custom_tool_call_input.delta", "output_index": 1, "delta": "*** Begin"}),
        json!({"type": "response.output_item.done", "output_index": 1, "item": {"id": "ctc_1", "type": "custom_tool_call",
            "call_id": "call_p", "name": "apply_patch", "input": "*** Begin"}}),
        json!({"type": "response.incomplete", "response": {"id": "resp_2", "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"}, "usage": {"input_tokens": 1, "output_tokens": 2}}}),
    ]);
    let d = digest(&decode_whole(&src));
    assert_eq!(d.blocks[0].1, "a\n\nb");
    assert_eq!(
        d.blocks[1],
        (
            BlockKind::ToolCall {
                id: "call_p".into(),
                name: "apply_patch".into(),
                kind: ToolKind::Custom,
                signature: None
            },
            "*** Begin".into(),
            None
        )
    );
    assert_eq!(d.stop, Some(StopReason::MaxTokens), "incomplete wins over the tool call");
}

#[test]
fn truncated_streams_are_errors() {
    // Trap 7: a stream cut before `response.completed`, whether the connection closed cleanly or not.
    let src = fixture("stream-text.sse");
    let cut = src.windows(28).position(|w| w == b"event: response.completed\nda").unwrap();
    for transport in [None, Some("connection reset")] {
        let evs = decode_in(&[&src[..cut]], transport);
        let d = digest(&evs);
        let (message, code) = d.error.unwrap();
        assert_eq!(code, "stream_truncated");
        assert!(message.contains("response.completed"));
        if let Some(t) = transport {
            assert!(message.contains(t));
        }
        assert_eq!(d.blocks.len(), 1);
    }
    // The terminal event without its final blank line still counts.
    let trimmed = &src[..src.len() - 2];
    assert_eq!(digest(&decode_whole(trimmed)).stop, Some(StopReason::EndTurn));
    // An empty body is an error too, after a Start.
    let evs = decode_in(&[], None);
    assert!(matches!(&evs[..], [StreamEvent::Start { .. }, StreamEvent::Error { .. }]));
}

#[test]
fn flat_error_events() {
    let src = sse(&[json!({"type": "error", "code": "context_length_exceeded", "message": "too long", "param": null})]);
    let d = digest(&decode_whole(&src));
    assert_eq!(d.error, Some(("too long".into(), "context_length_exceeded".into())));
}

#[test]
fn completed_without_item_events_uses_its_output() {
    let src = sse(&[json!({"type": "response.completed", "response": {"id": "resp_3", "status": "completed",
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "all at once"}]}],
        "usage": {"input_tokens": 1, "output_tokens": 1}}})]);
    let d = digest(&decode_whole(&src));
    assert_eq!(d.blocks, [(BlockKind::Text, "all at once".to_string(), None)]);
    assert_eq!(d.stop, Some(StopReason::EndTurn));
}

#[test]
fn odd_shapes_do_not_lose_the_terminal_event() {
    let src = sse(&[
        json!({"type": "response.created", "response": {"id": "resp_4", "usage": "soon", "output": {"x": 1}}}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "message", "content": "odd"}}),
        json!({"type": "response.output_text.delta", "output_index": 0, "delta": "ok"}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": {"type": "message", "content": "odd"}}),
        json!({"type": "response.some_future_event", "delta": {"not": "a string"}}),
        json!({"type": "response.completed", "response": {"id": "resp_4", "status": "completed",
            "usage": {"input_tokens": 1.5, "output_tokens": 2}, "error": "none", "output": [{"type": "message", "content": 7}]}}),
    ]);
    let d = digest(&decode_whole(&src));
    assert_eq!(d.blocks, [(BlockKind::Text, "ok".to_string(), None)]);
    assert_eq!(d.stop, Some(StopReason::EndTurn));
    assert_eq!(d.usage, None, "unreadable usage is unknown, not zero");
}

#[test]
fn translate_tap_responses_to_responses_keeps_every_fixture() {
    // Upstream decoder → client encoder → our own decoder again: the same content and usage.
    for name in [
        "stream-text.sse",
        "stream-parallel-function-calls.sse",
        "stream-reasoning-summary-then-function-call.sse",
        "stream-reasoning-then-text.sse",
        "stream-web-search-annotations.sse",
        "stream-error-rate-limit.sse",
    ] {
        let src = fixture(name);
        let mut tap = TranslateTap::new(
            Box::new(ResponsesStreamDecoder::new()),
            Box::new(ResponsesStreamEncoder::new("client-model")),
        );
        let mut out = Vec::new();
        for c in src.chunks(97) {
            out.extend_from_slice(&tap.feed(Bytes::copy_from_slice(c)));
        }
        out.extend_from_slice(&tap.finish(None));
        parse_sse(&out);
        let (a, b) = (digest(&decode_whole(&src)), digest(&decode_whole(&out)));
        assert_eq!(a.blocks, b.blocks, "{name}");
        assert_eq!(
            (a.stop, a.usage, a.error),
            (b.stop, b.usage, b.error.map(|(m, _)| (m, "rate_limit_exceeded".into()))),
            "{name}"
        );
        assert_eq!(b.id, a.id, "{name}: a resp_ id is kept");
    }
}

// ---- properties --------------------------------------------------------------------------------------------

fn text_strategy() -> impl Strategy<Value = String> {
    prop_oneof![Just("a".to_string()), "[a-z \"\\\\\n\u{e9}\u{1F600}]{1,12}"]
}

#[derive(Debug, Clone)]
enum GenBlock {
    Text(Vec<String>),
    Reasoning { id: Option<String>, deltas: Vec<String>, sig: Option<String> },
    Call { id: String, name: String, custom: bool, deltas: Vec<String> },
}

fn block_strategy() -> impl Strategy<Value = GenBlock> {
    let deltas = || proptest::collection::vec(text_strategy(), 0..4);
    prop_oneof![
        deltas().prop_map(GenBlock::Text),
        (proptest::option::of("rs_[a-z0-9]{1,8}"), deltas(), proptest::option::of("[A-Za-z0-9+/=]{1,16}"))
            .prop_map(|(id, deltas, sig)| GenBlock::Reasoning { id, deltas, sig }),
        ("call_[a-z0-9]{1,8}", "[a-z_]{1,8}", any::<bool>(), proptest::collection::vec(1u32..1000, 0..3)).prop_map(
            |(id, name, custom, nums)| {
                // Function arguments are JSON split anywhere; custom input is free text.
                let deltas = if custom {
                    nums.iter().map(|n| format!("line {n}\n")).collect()
                } else if nums.is_empty() {
                    Vec::new()
                } else {
                    let json = format!("{{\"n\":{nums:?}}}");
                    let mid = json.len() / 2;
                    vec![json[..mid].to_string(), json[mid..].to_string()]
                };
                GenBlock::Call { id, name, custom, deltas }
            }
        ),
    ]
}

fn events_of(blocks: &[GenBlock], stop_pick: u8, u: Usage, error: Option<&str>) -> Vec<StreamEvent> {
    let mut evs = vec![StreamEvent::Start { id: Some("resp_gen".into()), model: None, usage: None }];
    let mut has_tool = false;
    for (i, b) in blocks.iter().enumerate() {
        let index = i as u32;
        match b {
            GenBlock::Text(ds) => {
                evs.push(StreamEvent::BlockStart { index, block: BlockKind::Text });
                evs.extend(ds.iter().map(|d| StreamEvent::Delta { index, delta: Delta::Text(d.clone()) }));
            }
            GenBlock::Reasoning { id, deltas, sig } => {
                evs.push(StreamEvent::BlockStart { index, block: BlockKind::Reasoning { id: id.clone() } });
                evs.extend(deltas.iter().map(|d| StreamEvent::Delta { index, delta: Delta::Reasoning(d.clone()) }));
                if let Some(s) = sig {
                    evs.push(StreamEvent::Delta { index, delta: Delta::Signature(Signature::new(P, s.clone())) });
                }
            }
            GenBlock::Call { id, name, custom, deltas } => {
                has_tool = true;
                let kind = if *custom { ToolKind::Custom } else { ToolKind::Function };
                evs.push(StreamEvent::BlockStart {
                    index,
                    block: BlockKind::ToolCall { id: id.clone(), name: name.clone(), kind, signature: None },
                });
                evs.extend(deltas.iter().map(|d| StreamEvent::Delta { index, delta: Delta::ToolArgs(d.clone()) }));
            }
        }
        evs.push(StreamEvent::BlockStop { index });
    }
    match error {
        Some(code) => evs.push(StreamEvent::Error { message: "upstream failed".into(), code: code.into() }),
        None => {
            let stop = if has_tool {
                StopReason::ToolUse
            } else {
                [StopReason::EndTurn, StopReason::MaxTokens, StopReason::ContentFilter][stop_pick as usize % 3].clone()
            };
            evs.push(StreamEvent::Finish { stop, usage: Some(u) });
        }
    }
    evs
}

/// What the decoder gives back for a generated block (function calls without arguments get `{}`).
fn expected(blocks: &[GenBlock], got: &Digest) -> Vec<(BlockKind, String, Option<Signature>)> {
    blocks
        .iter()
        .enumerate()
        .map(|(i, b)| match b {
            GenBlock::Text(ds) => (BlockKind::Text, ds.concat(), None),
            GenBlock::Reasoning { id, deltas, sig } => {
                // Ids the encoder made are fresh `rs_…` ones.
                let id = match (id, &got.blocks.get(i).map(|b| &b.0)) {
                    (Some(id), _) => Some(id.clone()),
                    (None, Some(BlockKind::Reasoning { id })) => id.clone(),
                    _ => None,
                };
                let sig = sig.as_ref().map(|s| pack_signature(id.as_deref(), s));
                (BlockKind::Reasoning { id }, deltas.concat(), sig)
            }
            GenBlock::Call { id, name, custom, deltas } => {
                let kind = if *custom { ToolKind::Custom } else { ToolKind::Function };
                let args = deltas.concat();
                let args = if args.is_empty() && !custom { "{}".to_string() } else { args };
                (BlockKind::ToolCall { id: id.clone(), name: name.clone(), kind, signature: None }, args, None)
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_gives_back_the_events(
        blocks in proptest::collection::vec(block_strategy(), 0..5),
        stop_pick in any::<u8>(),
        counts in (0u64..100_000, 0u64..100_000, 0u64..100_000),
        error in proptest::option::weighted(0.2, prop_oneof![
            Just("rate_limit_exceeded"), Just("insufficient_quota"), Just("context_length_exceeded"), Just("server_error")]),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let (prompt, completion, extra) = counts;
        let u = Usage { prompt_tokens: prompt + extra, cached_tokens: prompt, completion_tokens: completion + extra,
            reasoning_tokens: completion, ..Usage::default() };
        let evs = events_of(&blocks, stop_pick, u, error);
        let bytes = encode_events(&evs);
        parse_sse(&bytes);
        let got = digest(&decode_split(&bytes, &cuts));
        let want = digest(&evs);
        prop_assert_eq!(&got.blocks, &expected(&blocks, &got));
        prop_assert_eq!(got.id.as_deref(), Some("resp_gen"));
        if error.is_some() {
            prop_assert_eq!(&got.error, &want.error);
        } else {
            prop_assert_eq!(&got.stop, &want.stop);
            prop_assert_eq!(got.usage, Some(u));
        }
    }

    #[test]
    fn complete_responses_round_trip(
        blocks in proptest::collection::vec(block_strategy(), 0..5),
        stop_pick in any::<u8>(),
        prompt in 0u64..100_000,
    ) {
        let evs = events_of(&blocks, stop_pick, usage(prompt, 0, 7, 0), None);
        let d = digest(&evs);
        let parts: Vec<Part> = d.blocks.iter().filter_map(|(k, text, sig)| match k {
            BlockKind::Text if text.is_empty() => None,
            BlockKind::Text => Some(Part::Text { text: text.clone(), cache: false }),
            BlockKind::Reasoning { id } => Some(Part::Reasoning(Reasoning {
                text: text.clone(), signature: sig.clone(), redacted: None, id: id.clone() })),
            BlockKind::ToolCall { id, name, kind, .. } => Some(Part::ToolCall(ToolCall {
                id: id.clone(), name: name.clone(),
                arguments: if text.is_empty() && *kind == ToolKind::Function { "{}".into() } else { text.clone() },
                kind: *kind, signature: None })),
            BlockKind::RedactedReasoning { .. } => None,
        }).collect();
        let resp = ChatResponse { id: "resp_x".into(), model: "m".into(), parts, stop: d.stop.clone().unwrap(), usage: d.usage.unwrap() };
        let back = decode_response(&encode_response(&resp, &endpoint(), &meta("m"))).unwrap();
        prop_assert_eq!(back.parts.len(), resp.parts.len());
        for (a, b) in back.parts.iter().zip(&resp.parts) {
            match (a, b) {
                (Part::Reasoning(x), Part::Reasoning(y)) => {
                    prop_assert_eq!(&x.text, &y.text);
                    let bare = |r: &Reasoning| r.signature.as_ref().map(|s| unpack_signature(&s.value).1.to_string());
                    prop_assert_eq!(bare(x), bare(y));
                    if y.id.is_some() {
                        prop_assert_eq!(&x.id, &y.id);
                    }
                }
                _ => prop_assert_eq!(a, b),
            }
        }
        prop_assert_eq!(back.stop, resp.stop);
        prop_assert_eq!(back.usage, resp.usage);
        prop_assert_eq!(back.id, "resp_x");
    }

    #[test]
    fn decode_request_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_request(&endpoint(), &bytes);
    }

    #[test]
    fn decode_request_never_panics_on_mangled_codex_bodies(cut in 0usize..4000, byte in any::<u8>()) {
        let mut body = codex_body().to_string().into_bytes();
        let at = cut % body.len();
        body[at] = byte;
        let _ = decode_request(&endpoint(), &body);
        let _ = decode_request(&endpoint(), &body[..at]);
    }

    #[test]
    fn stream_decoder_never_panics_and_always_ends(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        cut in 0usize..20000,
    ) {
        let evs = decode_in(&[&bytes], None);
        check_invariants(&evs);
        // Fixture prefixes with garbage after them.
        let src = fixture("stream-reasoning-summary-then-function-call.sse");
        let at = cut % src.len();
        let evs = decode_in(&[&src[..at], &bytes], None);
        check_invariants(&evs);
    }
}

/// Per-event cost of translation next to the passthrough tap (run with `--release --ignored --nocapture`).
#[test]
#[ignore]
fn translation_cost() {
    use xai_core::ProtocolAdapter;
    let src = fixture("stream-reasoning-summary-then-function-call.sse");
    let rounds = 2000;
    let run = |mut make: Box<dyn FnMut() -> Box<dyn StreamTap>>| {
        let t = std::time::Instant::now();
        let mut n = 0;
        for _ in 0..rounds {
            let mut tap = make();
            for c in src.chunks(512) {
                n += tap.feed(Bytes::copy_from_slice(c)).len();
            }
            n += tap.finish(None).len();
        }
        (t.elapsed() / rounds, n)
    };
    let (pass, _) = run(Box::new(|| crate::responses::OpenAiResponses.stream_tap(&meta("m"))));
    let (tr, _) = run(Box::new(|| {
        Box::new(TranslateTap::new(Box::new(ResponsesStreamDecoder::new()), Box::new(ResponsesStreamEncoder::new("m"))))
    }));
    println!("{} bytes: passthrough {pass:?}, translated {tr:?} per stream", src.len());
}

/// The envelope a client of another protocol receives for a signature of `origin`.
fn envelope_of(origin: &str, value: &str) -> String {
    xai_core::ir::Signature::new(origin.parse().expect("a protocol name"), value).envelope()
}

// ---- the real Codex request (tests/cli) ----------------------------------------------------------------------

/// The body Codex 0.169.0 sends for `codex exec "Say hello to xai"` (tests/cli/captured; tests/cli/run.sh routes it
/// to an `anthropic` provider).
fn captured_codex_body() -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cli/captured/codex-0.169.0.responses.json");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    file["body"].clone()
}

#[test]
fn the_captured_codex_request_reaches_an_anthropic_provider_intact() {
    let body = captured_codex_body();
    let r = decode_value(&body).unwrap();
    assert_eq!(r.model, "gpt-5.5-codex");
    assert!(r.stream);
    // No `instructions`: the two developer messages are the system prompt.
    assert_eq!(r.system.len(), 2, "{:?}", r.system);
    assert!(r.system[0].text.starts_with("You are Codex"));
    assert!(r.system[1].text.starts_with("<skills_instructions>"));
    let functions = [
        "exec_command",
        "write_stdin",
        "request_user_input",
        "apply_patch",
        "view_image",
        "get_goal",
        "create_goal",
        "update_goal",
    ];
    // tool_search and web_search are OpenAI-hosted: not offered to other providers.
    assert_eq!(r.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), functions);
    assert_eq!(r.tools[3].kind, ToolKind::Custom);

    let out: Value = serde_json::from_slice(&crate::translate::anthropic::encode_request(&r).unwrap()).unwrap();
    assert_eq!(out["model"], "gpt-5.5-codex");
    let system = out["system"].as_array().unwrap();
    assert_eq!(system.len(), 2);
    assert!(system[0]["text"].as_str().unwrap().starts_with("You are Codex"));
    // The environment context and the prompt: one user turn, as Anthropic wants roles to alternate.
    let messages = out["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["role"], "user");
    let content = messages[0]["content"].as_array().unwrap();
    assert!(content[0]["text"].as_str().unwrap().starts_with("<environment_context>"));
    assert_eq!(content.last().unwrap(), &json!({"type": "text", "text": "Say hello to xai"}));
    let tools = out["tools"].as_array().unwrap();
    assert_eq!(tools.iter().map(|t| t["name"].as_str().unwrap()).collect::<Vec<_>>(), functions);
    assert!(tools.iter().all(|t| t["input_schema"]["type"] == "object"), "{tools:?}");
    // Reasoning asked: thinking with a budget below max_tokens; auto tool choice, parallel calls allowed.
    let max_tokens = out["max_tokens"].as_u64().unwrap();
    assert_eq!(out["thinking"]["type"], "enabled");
    let budget = out["thinking"]["budget_tokens"].as_u64().unwrap();
    assert!((1024..max_tokens).contains(&budget), "budget {budget}, max_tokens {max_tokens}");
    assert_eq!(out["tool_choice"], json!({"type": "auto"}));
    assert!(out.get("temperature").is_none());
    // Nothing Responses-only (item ids, include, cache key, client metadata) leaks to the Anthropic provider.
    let text = out.to_string();
    assert!(!text.contains("msg_01a2") && !text.contains("\"input_text\""), "Responses items reached Anthropic");
    for key in ["include", "prompt_cache_key", "client_metadata", "store", "text", "reasoning", "parallel_tool_calls"] {
        assert!(out.get(key).is_none(), "{key} reached the Anthropic provider");
    }
}
