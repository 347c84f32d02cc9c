use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};
use xai_core::ir::*;
use xai_core::{BodySpans, Endpoint, EndpointKind, Protocol, RequestMeta, Usage};

use super::*;

const P: Protocol = Protocol::OpenAiChat;

fn ep() -> Endpoint {
    Endpoint { kind: EndpointKind::ChatCompletions, protocol: P, path_model: None, sse: false }
}

fn meta(include_usage: bool) -> RequestMeta {
    RequestMeta {
        model: Arc::from("client-model"),
        stream: true,
        include_usage,
        max_tokens: None,
        body_len: 0,
        spans: BodySpans::default(),
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(crate::fixtures_dir().join("openai-chat").join(name)).unwrap()
}

// ---- stream helpers -------------------------------------------------------------------------------------------

/// Feeds `src` in pieces whose sizes a small xorshift generator picks from `seed` (0 = one byte at a time).
fn decode_split(src: &[u8], seed: u64) -> Vec<StreamEvent> {
    let mut d = ChatStreamDecoder::new();
    let mut out = Vec::new();
    let mut x = seed | 1;
    let mut at = 0;
    while at < src.len() {
        let n = if seed == 0 {
            1
        } else {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + (x % 97) as usize
        };
        let end = (at + n).min(src.len());
        d.feed(&src[at..end], &mut out);
        at = end;
    }
    d.finish(None, &mut out);
    out
}

fn decode_all(src: &[u8]) -> Vec<StreamEvent> {
    let mut d = ChatStreamDecoder::new();
    let mut out = Vec::new();
    d.feed(src, &mut out);
    d.finish(None, &mut out);
    out
}

/// Asserts the ir.rs stream invariants.
fn check_invariants(evs: &[StreamEvent]) {
    check_invariants_args(evs, true)
}

/// The invariants; `json_args` also checks that tool arguments are JSON (not when the upstream sent garbage).
fn check_invariants_args(evs: &[StreamEvent], json_args: bool) {
    assert!(matches!(evs.first(), Some(StreamEvent::Start { .. })), "Start first: {evs:?}");
    assert_eq!(evs.iter().filter(|e| matches!(e, StreamEvent::Start { .. })).count(), 1, "one Start");
    let terminals = evs.iter().filter(|e| matches!(e, StreamEvent::Finish { .. } | StreamEvent::Error { .. })).count();
    assert_eq!(terminals, 1, "exactly one terminal: {evs:?}");
    assert!(matches!(evs.last(), Some(StreamEvent::Finish { .. } | StreamEvent::Error { .. })), "terminal last");
    let mut open: Option<u32> = None;
    let mut next = 0u32;
    let mut args = String::new();
    let mut is_tool = false;
    for e in evs {
        match e {
            StreamEvent::BlockStart { index, block } => {
                assert_eq!(open, None, "block {index} opened while {open:?} open");
                assert_eq!(*index, next, "indices count from 0 in order");
                if let BlockKind::ToolCall { id, .. } = block {
                    assert!(!id.is_empty(), "tool call ids are never empty");
                }
                is_tool = matches!(block, BlockKind::ToolCall { .. });
                args.clear();
                open = Some(*index);
                next += 1;
            }
            StreamEvent::Delta { index, delta } => {
                assert_eq!(open, Some(*index), "delta outside its block");
                if let Delta::ToolArgs(a) = delta {
                    args.push_str(a);
                }
            }
            StreamEvent::BlockStop { index } => {
                assert_eq!(open, Some(*index));
                if is_tool && json_args {
                    serde_json::from_str::<Value>(&args).unwrap_or_else(|e| panic!("args {args:?} not JSON: {e}"));
                }
                open = None;
            }
            StreamEvent::Finish { .. } => assert_eq!(open, None, "Finish with a block open"),
            _ => {}
        }
    }
}

#[derive(Debug, Default, PartialEq)]
struct Summary {
    text: String,
    reasoning: String,
    /// (id, name, arguments)
    calls: Vec<(String, String, String)>,
    signatures: Vec<Signature>,
    stop: Option<StopReason>,
    usage: Option<Usage>,
    error: Option<(String, String)>,
    model: Option<String>,
}

fn summarise(evs: &[StreamEvent]) -> Summary {
    let mut s = Summary::default();
    for e in evs {
        match e {
            StreamEvent::Start { model, .. } => s.model.clone_from(model),
            StreamEvent::BlockStart { block: BlockKind::ToolCall { id, name, .. }, .. } => {
                s.calls.push((id.clone(), name.clone(), String::new()))
            }
            StreamEvent::Delta { delta, .. } => match delta {
                Delta::Text(t) => s.text.push_str(t),
                Delta::Reasoning(t) => s.reasoning.push_str(t),
                Delta::ToolArgs(a) => s.calls.last_mut().unwrap().2.push_str(a),
                Delta::Signature(sig) => s.signatures.push(sig.clone()),
            },
            StreamEvent::Usage(u) => s.usage = Some(*u),
            StreamEvent::Finish { stop, usage } => {
                s.stop = Some(stop.clone());
                if usage.is_some() {
                    s.usage = *usage;
                }
            }
            StreamEvent::Error { message, code } => s.error = Some((message.clone(), code.clone())),
            _ => {}
        }
    }
    s
}

fn usage(prompt: u64, completion: u64) -> Option<Usage> {
    Some(Usage { prompt_tokens: prompt, completion_tokens: completion, ..Usage::default() })
}

// ---- fixtures ------------------------------------------------------------------------------------------------

struct Expect {
    file: &'static str,
    text: &'static str,
    calls: &'static [(&'static str, &'static str, &'static str)],
    stop: StopReason,
    usage: Option<Usage>,
}

fn expectations() -> Vec<Expect> {
    vec![
        Expect {
            file: "stream-text-include-usage.sse",
            text: "I'm unable to provide real-time weather updates. To get the current weather in San Francisco, I \
                   recommend checking a reliable weather website or a weather app.",
            calls: &[],
            stop: StopReason::EndTurn,
            usage: usage(14, 30),
        },
        Expect {
            file: "stream-text-no-usage.sse",
            text: "I am an artificial intelligence designed to assist with tasks and answer questions to the best of \
                   my ability.",
            calls: &[],
            stop: StopReason::EndTurn,
            usage: None,
        },
        Expect {
            file: "stream-tool-call-include-usage.sse",
            text: "",
            calls: &[("call_4XzlGBLtUe9dy3GVNV4jhq7h", "get_weather", r#"{"city":"New York City"}"#)],
            stop: StopReason::ToolUse,
            usage: usage(44, 16),
        },
        Expect {
            file: "stream-parallel-tool-calls-include-usage.sse",
            text: "",
            calls: &[
                (
                    "call_JMW1whyEaYG438VE1OIflxA2",
                    "GetWeatherArgs",
                    r#"{"city": "Edinburgh", "country": "GB", "units": "c"}"#,
                ),
                ("call_DNYTawLBoN8fj3KN6qU9N1Ou", "get_stock_price", r#"{"ticker": "AAPL", "exchange": "NASDAQ"}"#),
            ],
            stop: StopReason::ToolUse,
            usage: usage(149, 60),
        },
        Expect {
            file: "stream-parallel-tool-calls.sse",
            text: "",
            calls: &[
                ("call_DwtqVhx8c5yT7s2OKLb2D5hP", "search", r#"{"query": "Tigers game schedule October 22, 2023"}"#),
                ("call_Lq3VEqo3xVZMX0BOU4I79Ktg", "weather", r#"{"city": "Detroit"}"#),
            ],
            stop: StopReason::ToolUse,
            usage: None,
        },
        Expect {
            file: "stream-n3-choices-include-usage.sse",
            text: r#"{"city":"San Francisco","temperature":65,"units":"f"}"#,
            calls: &[],
            stop: StopReason::EndTurn,
            usage: usage(79, 42),
        },
        Expect {
            file: "stream-refusal-include-usage.sse",
            text: "I'm sorry, I can't assist with that request.",
            calls: &[],
            stop: StopReason::ContentFilter,
            usage: usage(79, 11),
        },
        Expect {
            file: "stream-logprobs-include-usage.sse",
            text: "Foo!",
            calls: &[],
            stop: StopReason::EndTurn,
            usage: usage(9, 2),
        },
        Expect {
            file: "stream-finish-length-include-usage.sse",
            text: "{\"",
            calls: &[],
            stop: StopReason::MaxTokens,
            usage: usage(79, 1),
        },
    ]
}

#[test]
fn every_stream_fixture_decodes_in_any_split() {
    for e in expectations() {
        let src = fixture(e.file);
        let whole = decode_all(&src);
        check_invariants(&whole);
        let s = summarise(&whole);
        assert_eq!(s.text, e.text, "{}", e.file);
        let calls: Vec<(String, String, String)> =
            e.calls.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
        assert_eq!(s.calls, calls, "{}", e.file);
        assert_eq!(s.stop, Some(e.stop.clone()), "{}", e.file);
        assert_eq!(s.usage, e.usage, "{}", e.file);
        assert_eq!(s.error, None, "{}", e.file);
        assert_eq!(
            s.model.as_deref(),
            Some(if e.file.contains("no-usage") { "gpt-4-0613" } else { "gpt-4o-2024-08-06" })
        );
        for seed in [0u64, 1, 7, 42, 1234, 99_999] {
            assert_eq!(decode_split(&src, seed), whole, "{} seed {seed}", e.file);
        }
    }
}

#[test]
fn nonstream_fixtures_decode() {
    let r = decode_response(&fixture("nonstream-text.json")).unwrap();
    assert_eq!(r.id, "chatcmpl-BB7W5yrFhtybzOkWObDxfYqV7ozGO");
    assert_eq!(r.model, "gpt-4o-2024-08-06");
    assert_eq!(r.stop, StopReason::EndTurn);
    assert_eq!(r.usage, Usage { prompt_tokens: 11, completion_tokens: 56, ..Usage::default() });
    match r.parts.as_slice() {
        [Part::Text { text, .. }] => {
            assert!(text.starts_with("I am ChatGPT, an AI language model") && text.ends_with("today?"))
        }
        p => panic!("{p:?}"),
    }

    let r = decode_response(&fixture("nonstream-parallel-tool-calls.json")).unwrap();
    assert_eq!(r.stop, StopReason::ToolUse);
    assert_eq!(r.usage, Usage { prompt_tokens: 111, completion_tokens: 52, ..Usage::default() });
    let calls: Vec<_> = r
        .parts
        .iter()
        .map(|p| match p {
            Part::ToolCall(c) => (c.id.as_str(), c.name.as_str(), c.arguments.as_str()),
            p => panic!("{p:?}"),
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("call_AZkZynIOpPQwJ4fyZETY4eTP", "search", r#"{"query": "Detroit Tigers game March 14 2025 time"}"#),
            ("call_huHZrdh8RFUy8a8Uqbb2qV1x", "weather", r#"{"city": "Detroit"}"#),
        ]
    );
}

// ---- requests ------------------------------------------------------------------------------------------------

fn decode(body: Value) -> ChatRequest {
    decode_request(&ep(), &Bytes::from(body.to_string())).unwrap()
}

fn decode_err(body: &str) -> String {
    decode_request(&ep(), &Bytes::from(body.to_string())).unwrap_err().to_string()
}

fn encode(req: &ChatRequest) -> Value {
    serde_json::from_slice(&encode_request(req).unwrap()).unwrap()
}

/// What the OpenAI Python SDK sends in an agent's tool loop (message dicts dumped back as sent).
fn sdk_tool_loop() -> Value {
    json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image, and the weather in Paris and Rome?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}
            ]},
            {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "Thanks"}
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "strict": true}}],
        "tool_choice": "auto",
        "parallel_tool_calls": true,
        "max_completion_tokens": 512,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "stream": true,
        "stream_options": {"include_usage": true},
        "user": "u-42",
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}},
        "logit_bias": {"50256": -100},
        "seed": 7
    })
}

#[test]
fn decodes_a_real_sdk_tool_loop() {
    let r = decode(sdk_tool_loop());
    assert_eq!(r.model, "gpt-4o");
    // Trap 9: a developer message in the middle is merged, not dropped.
    assert_eq!(
        r.system,
        vec![
            SystemBlock { text: "You are terse.".into(), cache: false },
            SystemBlock { text: "Answer in French.".into(), cache: false }
        ]
    );
    assert_eq!(r.messages.len(), 4);
    // Trap 11: data URLs and https URLs; audio skipped; the file kept.
    assert_eq!(
        r.messages[0].parts[1..],
        [
            Part::Image(ImageSource::Base64 { media_type: "image/png".into(), data: "iVBORw0KGgo=".into() }),
            Part::Image(ImageSource::Url("https://example.com/cat.jpg".into())),
            Part::File { media_type: "application/pdf".into(), source: FileSource::Base64("JVBERi0=".into()) },
        ]
    );
    assert_eq!(r.messages[1].role, Role::Assistant);
    assert_eq!(r.messages[1].parts.len(), 2);
    // Consecutive tool messages: one User message of two results.
    let results: Vec<_> = r.messages[2]
        .parts
        .iter()
        .map(|p| match p {
            Part::ToolResult(t) => (t.call_id.clone(), t.text()),
            p => panic!("{p:?}"),
        })
        .collect();
    assert_eq!(results, [("call_1".to_string(), "18C".to_string()), ("call_2".into(), "21C".into())]);
    assert_eq!(
        r.messages[3],
        Message { role: Role::User, parts: vec![Part::Text { text: "Thanks".into(), cache: false }] }
    );
    assert_eq!(r.tools[0].strict, Some(true));
    assert_eq!((r.tool_choice, r.parallel_tool_calls, r.max_tokens), (Some(ToolChoice::Auto), Some(true), Some(512)));
    assert_eq!((r.temperature, r.top_p, r.stop.clone(), r.stream), (Some(0.2), Some(0.9), vec!["END".into()], true));
    assert_eq!(r.user.as_deref(), Some("u-42"));
    assert_eq!(
        r.response_format,
        Some(ResponseFormat::JsonSchema { name: "w".into(), schema: json!({"type": "object"}), strict: Some(true) })
    );
}

#[test]
fn request_round_trips_through_the_ir() {
    let src = sdk_tool_loop();
    let ir = decode(src.clone());
    let out = encode(&ir);
    // Same conversation out, in Chat's shape (system merged first).
    assert_eq!(out["messages"][0], json!({"role": "system", "content": "You are terse.\n\nAnswer in French."}));
    assert_eq!(out["messages"][2]["tool_calls"], src["messages"][2]["tool_calls"]);
    assert_eq!(out["messages"][3], json!({"role": "tool", "tool_call_id": "call_1", "content": "18C"}));
    assert_eq!(out["messages"][4], json!({"role": "tool", "tool_call_id": "call_2", "content": "21C"}));
    assert_eq!(out["messages"][5], json!({"role": "user", "content": "Thanks"}));
    assert_eq!(out["tools"], src["tools"]);
    assert_eq!(out["response_format"], src["response_format"]);
    assert_eq!(out["stream_options"], json!({"include_usage": true}));
    assert_eq!(out["max_tokens"], 512);
    assert!(out.get("logit_bias").is_none());
    // Decoding what we encoded gives the same IR back (system blocks are merged into one).
    let mut again = decode(out);
    assert_eq!(again.system.len(), 1);
    again.system = ir.system.clone();
    assert_eq!(again, ir);
}

#[test]
fn reasoning_models_get_their_own_parameters() {
    let mut r = decode(json!({"model": "o3-mini", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 100, "temperature": 0.5, "reasoning_effort": "high", "parallel_tool_calls": false}));
    assert_eq!(r.reasoning.as_ref().unwrap().effort.as_deref(), Some("high"));
    let out = encode(&r);
    assert_eq!(out["max_completion_tokens"], 100);
    assert!(out.get("max_tokens").is_none() && out.get("temperature").is_none());
    assert_eq!(out["reasoning_effort"], "high");
    // No tools: OpenAI refuses parallel_tool_calls alone.
    assert!(out.get("parallel_tool_calls").is_none());
    // A budget from another protocol becomes an effort; gpt-4o never gets reasoning_effort.
    r.reasoning = Some(ReasoningConfig { budget_tokens: Some(20_000), ..Default::default() });
    assert_eq!(encode(&r)["reasoning_effort"], "high");
    // Gemini's `include_thoughts` alone asks for reasoning too: the default effort.
    r.reasoning = Some(ReasoningConfig { include_thoughts: true, ..Default::default() });
    assert_eq!(encode(&r)["reasoning_effort"], "medium");
    r.model = "gpt-4o".into();
    assert!(encode(&r).get("reasoning_effort").is_none());
    let none = decode(json!({"model": "gpt-5.1", "messages": [], "reasoning_effort": "none"}));
    assert!(none.reasoning.unwrap().disabled);
}

#[test]
fn deepseek_reasoning_content_round_trips_unsigned() {
    let r = decode(json!({"model": "deepseek-reasoner", "messages": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "add them"},
        {"role": "user", "content": "and 3+3?"}
    ]}));
    assert_eq!(
        r.messages[1].parts,
        [
            Part::Reasoning(Reasoning { text: "add them".into(), ..Default::default() }),
            Part::Text { text: "4".into(), cache: false }
        ]
    );
    let out = encode(&r);
    assert_eq!(out["messages"][1]["reasoning_content"], "add them");
}

#[test]
fn trap4_foreign_signatures_survive_the_client_and_never_reach_the_upstream() {
    // An answer from Anthropic, written for a Chat client...
    let sig = Signature::new(Protocol::Anthropic, "EqQBCkYIARgC");
    let resp = ChatResponse {
        id: "msg_01".into(),
        model: "claude".into(),
        parts: vec![
            Part::Reasoning(Reasoning { text: "think".into(), signature: Some(sig.clone()), ..Default::default() }),
            Part::Reasoning(Reasoning { redacted: Some("opaque".into()), ..Default::default() }),
            Part::Text { text: "hi".into(), cache: false },
        ],
        stop: StopReason::EndTurn,
        usage: Usage::default(),
    };
    let body: Value = serde_json::from_slice(&encode_response(&resp, &ep(), &meta(false))).unwrap();
    let msg = body["choices"][0]["message"].clone();
    assert_eq!(msg["reasoning_content"], "think");
    assert_eq!(msg["reasoning_details"][0]["signature"], envelope_of("anthropic", "EqQBCkYIARgC"));
    // ...comes back on the next turn with its origin...
    let r = decode(json!({"model": "m", "messages": [msg, {"role": "user", "content": "more"}]}));
    assert_eq!(r.messages[0].parts, resp.parts);
    // ...and is not sent to a Chat upstream, reasoning and all.
    let out = encode(&r);
    assert!(out["messages"][0].get("reasoning_content").is_none(), "{out}");
    assert!(out["messages"][0].get("reasoning_details").is_none());
    assert_eq!(out["messages"][0]["content"], "hi");
    // A Gemini thought signature on a call rides in extra_content, and only returns natively.
    let call = ToolCall {
        id: "call_g".into(),
        name: "f".into(),
        arguments: "{}".into(),
        signature: Some(Signature::new(Protocol::Gemini, "c2ln")),
        ..Default::default()
    };
    let resp = ChatResponse { parts: vec![Part::ToolCall(call.clone())], ..resp };
    let body: Value = serde_json::from_slice(&encode_response(&resp, &ep(), &meta(false))).unwrap();
    let msg = body["choices"][0]["message"].clone();
    assert_eq!(msg["tool_calls"][0]["extra_content"]["google"]["thought_signature"], envelope_of("gemini", "c2ln"));
    let r = decode(json!({"model": "m", "messages": [msg]}));
    assert_eq!(r.messages[0].parts, [Part::ToolCall(call)]);
    assert!(encode(&r)["messages"][0]["tool_calls"][0].get("extra_content").is_none());
}

#[test]
fn bad_requests_name_the_field() {
    for (body, needle) in [
        ("{", "not valid JSON"),
        ("[]", "request body"),
        (r#"{"messages":[]}"#, "`model`"),
        (r#"{"model":"m"}"#, "messages"),
        (r#"{"model":"m","messages":{}}"#, "`messages` must be an array"),
        (r#"{"model":"m","messages":[3]}"#, "messages[0]"),
        (r#"{"model":"m","messages":[{"role":"wizard"}]}"#, "messages[0].role"),
        (r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#, "messages[0].tool_call_id"),
        (r#"{"model":"m","messages":[{"role":"user","content":5}]}"#, "messages[0].content"),
        (r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#, "content[0].image_url"),
        (
            r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","function":{"name":3}}]}]}"#,
            "messages[0].tool_calls[0].function.name",
        ),
        (r#"{"model":"m","messages":[],"tools":[{"type":"function"}]}"#, "tools[0].function"),
        (r#"{"model":"m","messages":[],"tool_choice":7}"#, "tool_choice"),
        (r#"{"model":"m","messages":[],"max_tokens":-1}"#, "max_tokens"),
        (r#"{"model":"m","messages":[],"stop":[1]}"#, "stop"),
        (r#"{"model":"m","messages":[],"stream":"yes"}"#, "stream"),
    ] {
        let e = decode_err(body);
        assert!(e.contains(needle), "{body}: {e}");
    }
}

#[test]
fn tool_choice_and_custom_tools() {
    let r = decode(json!({"model": "m", "messages": [], "tools": [
        {"type": "custom", "custom": {"name": "apply_patch", "format": {"type": "grammar"}}},
        {"type": "web_search"}
    ], "tool_choice": {"type": "custom", "custom": {"name": "apply_patch"}}}));
    assert_eq!(r.tools.len(), 1);
    assert_eq!(r.tools[0].kind, ToolKind::Custom);
    assert_eq!(r.tool_choice, Some(ToolChoice::Tool("apply_patch".into())));
    let out = encode(&r);
    assert_eq!(out["tool_choice"], json!({"type": "custom", "custom": {"name": "apply_patch"}}));
    assert_eq!(out["tools"][0]["custom"]["format"], json!({"type": "grammar"}));
    let r =
        decode(json!({"model": "m", "messages": [], "tool_choice": {"type": "function", "function": {"name": "f"}}}));
    assert_eq!(r.tool_choice, Some(ToolChoice::Tool("f".into())));
    assert_eq!(
        decode(json!({"model": "m", "messages": [], "tool_choice": "required"})).tool_choice,
        Some(ToolChoice::Required)
    );
    // A tool choice without tools is not sent (OpenAI refuses it).
    assert!(encode(&decode(json!({"model": "m", "messages": [], "tool_choice": "none"}))).get("tool_choice").is_none());
}

#[test]
fn tool_results_from_other_protocols_become_tool_messages() {
    let req = ChatRequest {
        model: "gpt-4o".into(),
        messages: vec![Message {
            role: Role::User,
            parts: vec![
                Part::ToolResult(ToolResult {
                    call_id: "toolu_1".into(),
                    content: vec![
                        Part::Text { text: "no such file".into(), cache: false },
                        Part::Image(ImageSource::Url("https://x/y.png".into())),
                    ],
                    is_error: true,
                    ..Default::default()
                }),
                Part::Text { text: "go on".into(), cache: true },
            ],
        }],
        top_k: Some(40),
        ..Default::default()
    };
    let out = encode(&req);
    assert_eq!(
        out["messages"][0],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": "Error: no such file"})
    );
    assert_eq!(
        out["messages"][1]["content"],
        json!([{"type": "image_url", "image_url": {"url": "https://x/y.png"}}, {"type": "text", "text": "go on"}])
    );
    assert!(out.get("top_k").is_none());
    assert!(out.get("stream").is_none());
}

// ---- responses -----------------------------------------------------------------------------------------------

#[test]
fn encodes_a_complete_answer_like_openai() {
    let resp = ChatResponse {
        id: "msg_1".into(),
        model: "claude-x".into(),
        parts: vec![
            Part::Text { text: "Let me check.".into(), cache: false },
            Part::ToolCall(ToolCall {
                id: "toolu_9".into(),
                name: "w".into(),
                arguments: "{}".into(),
                ..Default::default()
            }),
        ],
        // Trap 5: an upstream that said "stop" with a tool call still reports tool_calls.
        stop: StopReason::EndTurn,
        usage: Usage {
            prompt_tokens: 100,
            completion_tokens: 20,
            reasoning_tokens: 5,
            cached_tokens: 60,
            ..Default::default()
        },
    };
    let v: Value = serde_json::from_slice(&encode_response(&resp, &ep(), &meta(false))).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], "chatcmpl-msg_1");
    assert_eq!(v["model"], "client-model");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["choices"][0]["message"]["content"], "Let me check.");
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{}");
    assert!(v["choices"][0]["message"].get("reasoning_details").is_none());
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 5}})
    );
    let back = decode_response(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(back.parts, resp.parts);
    assert_eq!((back.stop, back.usage), (StopReason::ToolUse, resp.usage));
}

#[test]
fn error_bodies() {
    assert_eq!(
        error_message(br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#)
            .as_deref(),
        Some("Rate limit reached")
    );
    assert_eq!(error_message(br#"{"error":"bad key"}"#).as_deref(), Some("bad key"));
    assert_eq!(error_message(br#"[{"error":{"message":"m"}}]"#).as_deref(), Some("m"));
    assert_eq!(error_message(b"<html>"), None);
    assert!(decode_response(br#"{"error":{"message":"boom"}}"#).unwrap_err().to_string().contains("boom"));
    assert!(decode_response(b"nope").is_err());
}

// ---- stream traps --------------------------------------------------------------------------------------------

fn sse(chunks: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(format!("data: {c}\n\n").as_bytes());
    }
    out
}

fn ch(delta: Value, finish: Value) -> Value {
    json!({"id": "chatcmpl-t", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": null})
}

#[test]
fn trap3_interleaved_parallel_calls_become_sequential_blocks() {
    let tc = |i: u32, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut f = json!({"arguments": args});
        if let Some(n) = name {
            f["name"] = n.into();
        }
        let mut t = json!({"index": i, "function": f});
        if let Some(id) = id {
            t["id"] = id.into();
            t["type"] = "function".into();
        }
        t
    };
    let mut src = sse(&[
        ch(json!({"role": "assistant", "content": "Checking."}), Value::Null),
        // Three calls opened in one delta, then fragments interleaved.
        ch(
            json!({"tool_calls": [tc(0, Some("c0"), Some("a"), ""), tc(1, Some("c1"), Some("b"), "{\"x\""), tc(2, Some("c2"), Some("c"), "")]}),
            Value::Null,
        ),
        ch(json!({"tool_calls": [tc(1, None, None, ":1}"), tc(0, None, None, "{\"y\":")]}), Value::Null),
        ch(json!({"tool_calls": [tc(0, None, None, "2}")]}), Value::Null),
        ch(json!({}), json!("tool_calls")),
    ]);
    src.extend_from_slice(b"data: [DONE]\n\n");
    let evs = decode_all(&src);
    check_invariants(&evs);
    let s = summarise(&evs);
    assert_eq!(s.text, "Checking.");
    assert_eq!(
        s.calls,
        [
            ("c0".into(), "a".into(), "{\"y\":2}".into()),
            ("c1".into(), "b".into(), "{\"x\":1}".into()),
            ("c2".into(), "c".into(), "{}".into())
        ]
    );
    assert_eq!(s.stop, Some(StopReason::ToolUse));
    for seed in [0, 3, 77] {
        assert_eq!(decode_split(&src, seed), evs);
    }
}

#[test]
fn trap5_stop_with_a_tool_call_is_tool_use() {
    let mut src = sse(&[
        ch(
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "c", "type": "function",
            "function": {"name": "f", "arguments": "{}"}}]}),
            Value::Null,
        ),
        ch(json!({}), json!("stop")),
    ]);
    src.extend_from_slice(b"data: [DONE]\n\n");
    assert_eq!(summarise(&decode_all(&src)).stop, Some(StopReason::ToolUse));
    // Encoder side: a tool block then Finish(EndTurn) still says tool_calls.
    let mut enc = ChatStreamEncoder::new(&meta(false));
    let mut out = Vec::new();
    for e in [
        StreamEvent::Start { id: None, model: None, usage: None },
        StreamEvent::BlockStart {
            index: 0,
            block: BlockKind::ToolCall { id: "c".into(), name: "f".into(), kind: ToolKind::Function, signature: None },
        },
        StreamEvent::Delta { index: 0, delta: Delta::ToolArgs("{}".into()) },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::Finish { stop: StopReason::EndTurn, usage: None },
    ] {
        enc.encode(&e, &mut out);
    }
    assert!(String::from_utf8(out).unwrap().contains("\"finish_reason\":\"tool_calls\""));
}

#[test]
fn trap6_usage_placeholders_and_the_usage_chunk() {
    let mut src = sse(&[
        ch(json!({"role": "assistant", "content": "a"}), Value::Null),
        json!({"id": "x", "choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": null}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}),
        ch(json!({}), json!("stop")),
        json!({"id": "x", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 3}, "completion_tokens_details": {"reasoning_tokens": 1}}}),
    ]);
    src.extend_from_slice(b"data: [DONE]\n\n");
    let evs = decode_all(&src);
    let want =
        Usage { prompt_tokens: 5, completion_tokens: 2, cached_tokens: 3, reasoning_tokens: 1, ..Default::default() };
    assert_eq!(evs.iter().filter(|e| matches!(e, StreamEvent::Usage(_))).count(), 1, "{evs:?}");
    assert_eq!(evs.last(), Some(&StreamEvent::Finish { stop: StopReason::EndTurn, usage: Some(want) }));
    // DeepSeek puts usage on the finishing chunk itself.
    let mut ds = sse(&[
        json!({"id": "d", "model": "deepseek-reasoner", "choices": [{"index": 0,
        "delta": {"reasoning_content": "hmm"}, "finish_reason": null}]}),
        json!({"id": "d", "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 9, "completion_tokens_details": {"reasoning_tokens": 6}}}),
    ]);
    ds.extend_from_slice(b"data: [DONE]");
    let s = summarise(&decode_all(&ds));
    assert_eq!((s.reasoning.as_str(), s.text.as_str()), ("hmm", "ok"));
    assert_eq!(s.usage.unwrap().reasoning_tokens, 6);
}

#[test]
fn trap7_truncation_and_in_stream_errors() {
    let src = fixture("stream-text-include-usage.sse");
    let cut = &src[..src.len() - "data: [DONE]\n\n".len()];
    let evs = decode_all(cut);
    check_invariants(&evs);
    assert_eq!(summarise(&evs).error.unwrap().1, "stream_truncated");
    let mut d = ChatStreamDecoder::new();
    let mut evs = Vec::new();
    d.feed(&src[..200], &mut evs);
    d.finish(Some("connection reset"), &mut evs);
    check_invariants(&evs);
    assert_eq!(summarise(&evs).error, Some(("connection reset".into(), "stream_truncated".into())));

    let mut src = sse(&[
        ch(json!({"role": "assistant", "content": "a"}), Value::Null),
        json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
    ]);
    src.extend_from_slice(b"data: [DONE]\n\n");
    let evs = decode_all(&src);
    check_invariants(&evs);
    assert_eq!(summarise(&evs).error, Some(("Rate limit reached".into(), "rate_limit_exceeded".into())));

    // Encoder: an error is the last thing written, without [DONE].
    let mut enc = ChatStreamEncoder::new(&meta(true));
    let mut out = Vec::new();
    for e in &evs {
        enc.encode(e, &mut out);
    }
    enc.encode(&StreamEvent::Finish { stop: StopReason::EndTurn, usage: None }, &mut out);
    let text = String::from_utf8(out).unwrap();
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let v: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["error"]["message"], "Rate limit reached");
    assert!(!text.contains("[DONE]") && !text.contains("finish_reason\":\"stop"));
}

#[test]
fn only_choice_zero_is_translated() {
    let s = summarise(&decode_all(&fixture("stream-n3-choices-include-usage.sse")));
    assert_eq!(s.text.matches("San Francisco").count(), 1);
}

/// Splits an encoded stream into the JSON payloads an OpenAI SDK would see.
fn client_chunks(out: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(out).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    text.split("\n\n")
        .filter(|e| !e.is_empty() && *e != "data: [DONE]")
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect()
}

#[test]
fn encoder_writes_what_the_sdk_parses() {
    let events = decode_all(&fixture("stream-parallel-tool-calls-include-usage.sse"));
    for include in [true, false] {
        let mut enc = ChatStreamEncoder::new(&meta(include));
        let mut out = Vec::new();
        for e in &events {
            enc.encode(e, &mut out);
        }
        let chunks = client_chunks(&out);
        for c in &chunks {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], "client-model");
            assert!(c["id"].as_str().unwrap().starts_with("chatcmpl-") && c["created"].is_u64());
        }
        assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        let opens: Vec<_> = chunks
            .iter()
            .flat_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array().cloned().unwrap_or_default())
            .filter(|t| t.get("id").is_some())
            .collect();
        assert_eq!(opens.len(), 2);
        assert_eq!(opens[1]["index"], 1);
        assert_eq!(opens[1]["function"], json!({"name": "get_stock_price", "arguments": ""}));
        let usage_chunks: Vec<_> = chunks.iter().filter(|c| c["choices"] == json!([])).collect();
        if include {
            assert_eq!(usage_chunks.len(), 1);
            assert_eq!(usage_chunks[0]["usage"]["total_tokens"], 209);
        } else {
            assert!(usage_chunks.is_empty());
        }
        let decoded = decode_all(&out);
        check_invariants(&decoded);
        let (a, mut b) = (summarise(&events), summarise(&decoded));
        b.model = a.model.clone();
        if !include {
            b.usage = a.usage;
        }
        assert_eq!(a, b);
    }
}

// ---- properties ----------------------------------------------------------------------------------------------

fn arb_text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof!["[a-z ]{1,8}", "[\"\\\\\n\u{e9}\u{1F600}]{1,3}"], 1..5).prop_map(|v| v.concat())
}

fn fragments(s: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts {
        let end = (at + 1 + c % 5).min(chars.len());
        if end > at {
            out.push(chars[at..end].iter().collect());
        }
        at = end;
    }
    if at < chars.len() {
        out.push(chars[at..].iter().collect());
    }
    out
}

#[derive(Debug, Clone)]
struct GenStream {
    reasoning: Option<(Vec<String>, Option<String>)>,
    text: Option<Vec<String>>,
    calls: Vec<(String, Vec<String>)>,
    stop: StopReason,
    usage: Usage,
}

fn arb_stream() -> impl Strategy<Value = GenStream> {
    let frags = || (arb_text(), prop::collection::vec(0usize..9, 0..6)).prop_map(|(t, c)| fragments(&t, &c));
    let args = (prop::collection::btree_map("[a-z]{1,4}", arb_text(), 0..3), prop::collection::vec(0usize..9, 0..6))
        .prop_map(|(m, c)| {
            let j = serde_json::to_string(&m).unwrap();
            fragments(&j, &c)
        });
    (
        prop::option::of((frags(), prop::option::of("[A-Za-z0-9+/]{4,12}"))),
        prop::option::of(frags()),
        prop::collection::vec(("[a-z_]{1,10}", args), 0..4),
        prop_oneof![Just(StopReason::EndTurn), Just(StopReason::MaxTokens), Just(StopReason::ContentFilter)],
        (0u64..10_000, 0u64..5_000, 0u64..100, 0u64..100),
    )
        .prop_map(|(reasoning, text, calls, stop, (p, c, cached, r))| GenStream {
            reasoning,
            text,
            calls,
            stop,
            usage: Usage {
                prompt_tokens: p + cached,
                completion_tokens: c + r,
                cached_tokens: cached,
                reasoning_tokens: r,
                ..Default::default()
            },
        })
}

fn events_of(g: &GenStream) -> Vec<StreamEvent> {
    let mut evs = vec![StreamEvent::Start { id: Some("resp_1".into()), model: Some("up".into()), usage: None }];
    let mut i = 0;
    if let Some((frags, sig)) = &g.reasoning {
        evs.push(StreamEvent::BlockStart { index: i, block: BlockKind::Reasoning { id: None } });
        for f in frags {
            evs.push(StreamEvent::Delta { index: i, delta: Delta::Reasoning(f.clone()) });
        }
        if let Some(s) = sig {
            let sig = Signature::new(Protocol::Anthropic, s.clone());
            evs.push(StreamEvent::Delta { index: i, delta: Delta::Signature(sig) });
        }
        evs.push(StreamEvent::BlockStop { index: i });
        i += 1;
    }
    if let Some(frags) = &g.text {
        evs.push(StreamEvent::BlockStart { index: i, block: BlockKind::Text });
        for f in frags {
            evs.push(StreamEvent::Delta { index: i, delta: Delta::Text(f.clone()) });
        }
        evs.push(StreamEvent::BlockStop { index: i });
        i += 1;
    }
    for (n, (name, frags)) in g.calls.iter().enumerate() {
        let block = BlockKind::ToolCall {
            id: format!("call_{n}"),
            name: name.clone(),
            kind: ToolKind::Function,
            signature: None,
        };
        evs.push(StreamEvent::BlockStart { index: i, block });
        for f in frags {
            evs.push(StreamEvent::Delta { index: i, delta: Delta::ToolArgs(f.clone()) });
        }
        evs.push(StreamEvent::BlockStop { index: i });
        i += 1;
    }
    evs.push(StreamEvent::Usage(g.usage));
    let stop = if g.calls.is_empty() { g.stop.clone() } else { StopReason::ToolUse };
    evs.push(StreamEvent::Finish { stop, usage: Some(g.usage) });
    evs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn stream_encode_then_decode_gives_the_events_back(g in arb_stream(), seed in 0u64..1000) {
        let evs = events_of(&g);
        let mut enc = ChatStreamEncoder::new(&meta(true));
        let mut out = Vec::new();
        for e in &evs {
            enc.encode(e, &mut out);
        }
        let back = decode_split(&out, seed);
        check_invariants(&back);
        let (want, got) = (summarise(&evs), summarise(&back));
        prop_assert_eq!(&got.text, &want.text);
        prop_assert_eq!(&got.reasoning, &want.reasoning);
        prop_assert_eq!(&got.calls, &want.calls);
        prop_assert_eq!(&got.stop, &want.stop);
        prop_assert_eq!(got.usage, want.usage);
        // Signatures come back as the client-side envelope, which names their origin.
        let sigs: Vec<Signature> = got.signatures.iter().map(|s| Signature::from_field(P, &s.value)).collect();
        prop_assert_eq!(sigs, want.signatures);
        prop_assert_eq!(got.model.as_deref(), Some("client-model"));
    }

    #[test]
    fn response_encode_then_decode_gives_the_answer_back(g in arb_stream()) {
        let mut parts = Vec::new();
        if let Some((f, _)) = &g.reasoning {
            parts.push(Part::Reasoning(Reasoning { text: f.concat(), ..Default::default() }));
        }
        if let Some(f) = &g.text {
            parts.push(Part::Text { text: f.concat(), cache: false });
        }
        for (n, (name, f)) in g.calls.iter().enumerate() {
            parts.push(Part::ToolCall(ToolCall { id: format!("call_{n}"), name: name.clone(), arguments: f.concat(), ..Default::default() }));
        }
        let stop = if g.calls.is_empty() { g.stop.clone() } else { StopReason::ToolUse };
        let resp = ChatResponse { id: "chatcmpl-1".into(), model: "up".into(), parts, stop, usage: g.usage };
        let back = decode_response(&encode_response(&resp, &ep(), &meta(false))).unwrap();
        prop_assert_eq!(back, ChatResponse { model: "client-model".into(), ..resp });
    }

    #[test]
    fn stream_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..800), seed in 0u64..100) {
        check_invariants(&decode_split(&bytes, seed));
    }

    #[test]
    fn stream_decoder_survives_mangled_chunks(g in arb_stream(), cut in 0usize..4000, flip in 0usize..4000) {
        let mut enc = ChatStreamEncoder::new(&meta(true));
        let mut out = Vec::new();
        for e in &events_of(&g) {
            enc.encode(e, &mut out);
        }
        if !out.is_empty() {
            let f = flip % out.len();
            out[f] = out[f].wrapping_add(1);
            out.truncate(cut % (out.len() + 1));
        }
        check_invariants_args(&decode_split(&out, 5), false);
    }

    #[test]
    fn decode_request_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode_request(&ep(), &Bytes::from(bytes));
    }

    #[test]
    fn decode_request_never_panics_on_json(v in arb_json()) {
        let body = json!({"model": "m", "messages": [v.clone(), {"role": "assistant", "content": v.clone(), "tool_calls": [v.clone()]}],
            "tools": [v.clone()], "tool_choice": v.clone(), "response_format": v.clone(), "stop": v});
        if let Ok(r) = decode_request(&ep(), &Bytes::from(body.to_string())) {
            let _ = encode_request(&r);
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof!["user", "tool", "assistant", "system", "text", "image_url", "function", "[a-z]{0,5}"]
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    "role",
                    "content",
                    "type",
                    "text",
                    "tool_call_id",
                    "id",
                    "function",
                    "name",
                    "arguments",
                    "url",
                    "image_url",
                    "json_schema"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

#[test]
fn trap3_calls_reusing_index_zero_are_not_folded() {
    // Some compatibles send every parallel call whole on index 0, each with its own id.
    let call = |id: &str, name: &str, args: &str| json!({"tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": args}}]});
    let mut src = sse(&[
        ch(call("a", "f", "{\"n\":1}"), Value::Null),
        ch(call("b", "g", "{\"n\":2}"), Value::Null),
        ch(json!({"tool_calls": [{"index": 0, "function": {"arguments": ""}}]}), Value::Null),
        ch(call("c", "h", ""), json!("stop")),
    ]);
    src.extend_from_slice(b"data: [DONE]\n\n");
    let evs = decode_all(&src);
    check_invariants(&evs);
    let s = summarise(&evs);
    assert_eq!(
        s.calls,
        [
            ("a".into(), "f".into(), "{\"n\":1}".into()),
            ("b".into(), "g".into(), "{\"n\":2}".into()),
            ("c".into(), "h".into(), "{}".into())
        ]
    );
    assert_eq!(s.stop, Some(StopReason::ToolUse));
    // A call without an id gets a stable synthesised one.
    let mut src = sse(&[ch(json!({"tool_calls": [{"index": 0, "function": {"name": "f"}}]}), json!("tool_calls"))]);
    src.extend_from_slice(b"data: [DONE]\n\n");
    let s = summarise(&decode_all(&src));
    assert_eq!(s.calls, [(synth_call_id("chatcmpl-t", 0), "f".into(), "{}".into())]);
}

#[test]
#[ignore = "timing: cargo test --release -p xai-bridges --lib translate::chat -- --ignored --nocapture"]
fn translated_stream_cost_against_passthrough() {
    use std::hint::black_box;
    use std::time::Instant;

    use xai_core::StreamTap;

    use crate::openai_chat::ChatStreamTap;
    use crate::translate::TranslateTap;

    let src = Bytes::from(fixture("stream-text-include-usage.sse"));
    let pieces: Vec<Bytes> = src.chunks(300).map(Bytes::copy_from_slice).collect();
    let run = |mut tap: Box<dyn StreamTap>| {
        for p in &pieces {
            black_box(tap.feed(p.clone()));
        }
        black_box(tap.finish(None));
    };
    let n = 5000;
    let t = Instant::now();
    for _ in 0..n {
        run(Box::new(ChatStreamTap::new(true)));
    }
    let pass = t.elapsed();
    let t = Instant::now();
    for _ in 0..n {
        run(Box::new(TranslateTap::new(
            Box::new(ChatStreamDecoder::new()),
            Box::new(ChatStreamEncoder::new(&meta(true))),
        )));
    }
    let translated = t.elapsed();
    let per = |d: std::time::Duration| d.as_nanos() as f64 / n as f64 / 1000.0;
    eprintln!("passthrough {:.1} µs/stream, chat→IR→chat {:.1} µs/stream", per(pass), per(translated));
}

/// The envelope a client of another protocol receives for a signature of `origin`.
fn envelope_of(origin: &str, value: &str) -> String {
    xai_core::ir::Signature::new(origin.parse().expect("a protocol name"), value).envelope()
}
