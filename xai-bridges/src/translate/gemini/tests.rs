use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};
use xai_core::ir::{
    BlockKind, ChatRequest, ChatResponse, Delta, FileSource, ImageSource, Message, Part, Reasoning, ReasoningConfig,
    ResponseFormat, Role, Signature, StopReason, StreamDecoder, StreamEncoder, StreamEvent, SystemBlock, Tool,
    ToolCall, ToolChoice, ToolKind, ToolResult,
};
use xai_core::{BodySpans, Endpoint, EndpointKind, GatewayError, Protocol, RequestMeta, Usage};

use super::*;

// ---------- helpers ----------

fn endpoint(kind: EndpointKind, sse: bool) -> Endpoint {
    Endpoint { kind, protocol: Protocol::Gemini, path_model: Some("gemini-2.5-flash".into()), sse }
}

fn meta(model: &str) -> RequestMeta {
    RequestMeta {
        model: Arc::from(model),
        stream: true,
        include_usage: true,
        max_tokens: None,
        body_len: 0,
        spans: BodySpans::default(),
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(crate::fixtures_dir().join("gemini").join(name)).unwrap()
}

fn decode_in(chunks: impl IntoIterator<Item = Vec<u8>>) -> Vec<StreamEvent> {
    let mut d = GeminiStreamDecoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.feed(&c, &mut out);
    }
    d.finish(None, &mut out);
    out
}

/// Splits `src` at pseudo-random points (deterministic per seed).
fn random_splits(src: &[u8], seed: u64) -> Vec<Vec<u8>> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut out = Vec::new();
    let mut at = 0;
    while at < src.len() {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let len = 1 + (state >> 33) as usize % 97;
        let end = (at + len).min(src.len());
        out.push(src[at..end].to_vec());
        at = end;
    }
    out
}

/// Checks the ir.rs stream invariants and folds the events into an answer (`Err` carries a stream error).
fn fold(events: &[StreamEvent]) -> Result<ChatResponse, (String, String)> {
    assert!(matches!(events.first(), Some(StreamEvent::Start { .. })), "Start first: {events:?}");
    let starts = events.iter().filter(|e| matches!(e, StreamEvent::Start { .. })).count();
    assert_eq!(starts, 1, "one Start");
    let terminals =
        events.iter().filter(|e| matches!(e, StreamEvent::Finish { .. } | StreamEvent::Error { .. })).count();
    assert_eq!(terminals, 1, "one terminal: {events:?}");
    assert!(matches!(events.last(), Some(StreamEvent::Finish { .. } | StreamEvent::Error { .. })));
    let mut resp = ChatResponse::default();
    let mut open: Option<u32> = None;
    let mut next = 0u32;
    for e in events {
        match e {
            StreamEvent::Start { id, model, .. } => {
                resp.id = id.clone().unwrap_or_default();
                resp.model = model.clone().unwrap_or_default();
            }
            StreamEvent::BlockStart { index, block } => {
                assert_eq!(open, None, "blocks are sequential");
                assert_eq!(*index, next, "indices count up");
                open = Some(*index);
                next += 1;
                resp.parts.push(match block {
                    BlockKind::Text => Part::Text { text: String::new(), cache: false },
                    BlockKind::Reasoning { id } => {
                        Part::Reasoning(Reasoning { id: id.clone(), ..Reasoning::default() })
                    }
                    BlockKind::RedactedReasoning { data } => {
                        Part::Reasoning(Reasoning { redacted: Some(data.clone()), ..Reasoning::default() })
                    }
                    BlockKind::ToolCall { id, name, kind, signature } => Part::ToolCall(ToolCall {
                        id: id.clone(),
                        name: name.clone(),
                        arguments: String::new(),
                        kind: *kind,
                        signature: signature.clone(),
                    }),
                });
            }
            StreamEvent::Delta { index, delta } => {
                assert_eq!(open, Some(*index), "delta of the open block");
                match (resp.parts.last_mut().unwrap(), delta) {
                    (Part::Text { text, .. }, Delta::Text(t)) => text.push_str(t),
                    (Part::Reasoning(r), Delta::Reasoning(t)) => r.text.push_str(t),
                    (Part::Reasoning(r), Delta::Signature(s)) => r.signature = Some(s.clone()),
                    (Part::ToolCall(c), Delta::ToolArgs(a)) => c.arguments.push_str(a),
                    (p, d) => panic!("delta {d:?} in {p:?}"),
                }
            }
            StreamEvent::BlockStop { index } => {
                assert_eq!(open, Some(*index));
                open = None;
                if let Some(Part::ToolCall(c)) = resp.parts.last() {
                    assert!(!c.id.is_empty(), "tool ids are never empty");
                    serde_json::from_str::<Value>(&c.arguments).expect("tool args are JSON");
                }
            }
            StreamEvent::Usage(u) => resp.usage = *u,
            StreamEvent::Finish { stop, usage } => {
                assert_eq!(open, None, "blocks closed before Finish");
                resp.stop = stop.clone();
                if let Some(u) = usage {
                    resp.usage = *u;
                }
            }
            StreamEvent::Error { message, code } => return Err((message.clone(), code.clone())),
        }
    }
    Ok(resp)
}

/// Decodes a stream fixture whole, in random splits and byte by byte, checking all give the same events.
fn decode_fixture(name: &str) -> ChatResponse {
    let src = fixture(name);
    let whole = decode_in([src.clone()]);
    for seed in 0..16 {
        assert_eq!(decode_in(random_splits(&src, seed)), whole, "{name} split with seed {seed}");
    }
    assert_eq!(decode_in(src.iter().map(|b| vec![*b])), whole, "{name} byte by byte");
    fold(&whole).unwrap()
}

fn texts(resp: &ChatResponse) -> String {
    resp.parts
        .iter()
        .filter_map(|p| match p {
            Part::Text { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn calls(resp: &ChatResponse) -> Vec<&ToolCall> {
    resp.parts
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

fn usage(prompt: u64, completion: u64, reasoning: u64, cached: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        reasoning_tokens: reasoning,
        cached_tokens: cached,
        ..Usage::default()
    }
}

fn encode_events(events: &[StreamEvent], sse: bool, model: &str) -> Vec<u8> {
    let mut enc = GeminiStreamEncoder::new(sse, Arc::from(model));
    let mut out = Vec::new();
    for e in events {
        enc.encode(e, &mut out);
    }
    out
}

/// The JSON-array stream form re-framed as SSE, for the decoder.
fn array_as_sse(body: &[u8]) -> Vec<u8> {
    let items: Vec<Value> = serde_json::from_slice(body).expect("the array form is one JSON array");
    let mut out = Vec::new();
    for i in items {
        out.extend_from_slice(format!("data: {i}\n\n").as_bytes());
    }
    out
}

// ---------- stream fixtures ----------

#[test]
fn fixture_stream_text() {
    let r = decode_fixture("stream-text.sse");
    assert_eq!(texts(&r), "It is 75° and sunny in San Francisco, so you likely do not need to wear a coat.");
    assert_eq!(r.parts.len(), 1, "consecutive text chunks continue one block");
    assert_eq!(r.stop, StopReason::EndTurn);
    // Running totals: the last chunk's 22, not 2 + 18 + 22 (trap 6).
    assert_eq!(r.usage, usage(159, 22, 0, 0));
    assert_eq!(r.id, "WE2DaN7iMqz2nsEPkfWRoQw");
    assert_eq!(r.model, "gemini-2.5-flash");
}

#[test]
fn fixture_stream_function_call() {
    let r = decode_fixture("stream-function-call.sse");
    let c = calls(&r);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].name, "weather");
    assert_eq!(json(&c[0].arguments), json!({"city": "San Francisco"}));
    assert!(c[0].id.starts_with("call_"));
    assert_eq!(r.stop, StopReason::ToolUse, "STOP with a functionCall is tool use (trap 5)");
    assert_eq!(r.usage, usage(109, 14 + 144, 144, 0));
}

#[test]
fn fixture_stream_parallel_calls_with_signature() {
    let r = decode_fixture("stream-parallel-function-calls-thought-signature.sse");
    let c = calls(&r);
    assert_eq!(c.len(), 2, "parallel calls are two blocks (trap 3)");
    assert_eq!((c[0].name.as_str(), c[1].name.as_str()), ("weather", "weather"));
    assert_eq!(json(&c[0].arguments), json!({"city": "San Francisco"}));
    assert_eq!(json(&c[1].arguments), json!({"city": "Santa Cruz"}));
    assert_ne!(c[0].id, c[1].id);
    let sig = c[0].signature.as_ref().unwrap();
    assert_eq!(sig.origin, Protocol::Gemini);
    assert!(sig.value.starts_with("CiQBcsjafHZTzmdwT4VdIPd5yO2z") && sig.value.ends_with("dIUM="));
    assert_eq!(c[1].signature, None);
    assert_eq!(r.stop, StopReason::ToolUse);
    assert_eq!(r.usage, usage(68, 28 + 79, 79, 0));
}

#[test]
fn fixture_stream_text_with_signature() {
    let r = decode_fixture("stream-text-thought-signature.sse");
    // The signature on the text part becomes an empty signed reasoning right before the text (module docs).
    let Part::Reasoning(reasoning) = &r.parts[0] else { panic!("{:?}", r.parts) };
    assert_eq!(reasoning.text, "");
    assert!(reasoning.signature.as_ref().unwrap().value.starts_with("CiIBcsjafBDzgG/RVNyk2Y"));
    assert_eq!(r.parts.len(), 2);
    assert_eq!(
        texts(&r),
        "It is warmer in Santa Cruz. The weather in San Francisco is 50° and sunny, and in Santa Cruz, it is 75° and sunny."
    );
    assert_eq!(r.stop, StopReason::EndTurn);
    assert_eq!(r.usage, usage(245, 34 + 100, 100, 0));
}

#[test]
fn fixture_stream_thoughts_then_call() {
    let r = decode_fixture("stream-thoughts-then-function-call.sse");
    assert_eq!(r.parts.len(), 2, "{:?}", r.parts);
    let Part::Reasoning(reasoning) = &r.parts[0] else { panic!() };
    assert!(reasoning.text.starts_with("**Checking the Weather Data**"));
    assert!(reasoning.text.contains("**Refining Coat Recommendations**"), "thought chunks continue one block");
    assert_eq!(reasoning.signature, None);
    let c = calls(&r);
    assert_eq!(c[0].name, "weather");
    assert_eq!(json(&c[0].arguments), json!({"city": "San Francisco"}));
    assert!(c[0].signature.as_ref().unwrap().value.starts_with("Eq0ECqoEAdHtim8E9iAx"));
    // The finishReason comes in a trailing empty-text chunk after the call (trap 5).
    assert_eq!(r.stop, StopReason::ToolUse);
    assert_eq!(r.usage, usage(131, 15 + 95, 95, 0));
    assert_eq!(r.model, "gemini-3-pro-preview");
}

#[test]
fn stream_fixtures_equal_their_non_streaming_decoding() {
    // The same chunk, read as a complete answer, gives the same content.
    let src = fixture("stream-parallel-function-calls-thought-signature.sse");
    let body = crate::sse::data(&src).unwrap();
    let whole = decode_response(&body).unwrap();
    let streamed = decode_fixture("stream-parallel-function-calls-thought-signature.sse");
    assert_eq!(whole.parts.len(), streamed.parts.len());
    for (a, b) in calls(&whole).into_iter().zip(calls(&streamed)) {
        // Arguments are the same JSON (the stream keeps the upstream's spacing).
        assert_eq!((&a.id, &a.name, &a.signature), (&b.id, &b.name, &b.signature));
        assert_eq!(json(&a.arguments), json(&b.arguments));
    }
    assert_eq!((whole.stop, whole.usage), (streamed.stop, streamed.usage));
}

// ---------- non-streaming fixtures ----------

#[test]
fn fixture_nonstream_text() {
    let r = decode_response(&fixture("nonstream-text.json")).unwrap();
    assert!(texts(&r).starts_with("I am a large language model, trained by Google."));
    assert_eq!(r.stop, StopReason::EndTurn);
    assert_eq!(r.usage, usage(4, 57, 0, 0));
    assert_eq!(r.model, "gemini-1.5-flash");
}

#[test]
fn fixture_nonstream_parallel_calls() {
    let r = decode_response(&fixture("nonstream-parallel-function-calls.json")).unwrap();
    let c = calls(&r);
    assert_eq!(c.len(), 2);
    assert_eq!((c[0].name.as_str(), c[1].name.as_str()), ("search_games", "get_weather"));
    assert_eq!(json(&c[0].arguments), json!({"city": "Detroit"}));
    assert_eq!(json(&c[1].arguments), json!({"city": "Detroit"}));
    assert_ne!(c[0].id, c[1].id);
    assert_eq!(r.stop, StopReason::ToolUse);
    assert_eq!(r.usage, usage(124, 10, 0, 0));
}

#[test]
fn fixture_nonstream_grounding() {
    let r = decode_response(&fixture("nonstream-file-search-grounding.json")).unwrap();
    assert!(texts(&r).ends_with("which is stated to be 42."));
    assert_eq!(r.usage, usage(11, 55 + 187, 187, 0));
    assert_eq!(r.id, "99cgaZGaEaTR_uMPpfHf-A4");
    assert_eq!(r.stop, StopReason::EndTurn);
}

#[test]
fn errors_are_read() {
    let body = br#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}"#;
    assert_eq!(error_message(body).as_deref(), Some("Resource has been exhausted"));
    assert_eq!(error_message(br#"[{"error":{"code":500,"message":"boom"}}]"#).as_deref(), Some("boom"));
    assert_eq!(error_message(b"not json"), None);
    match decode_response(body) {
        Err(GatewayError::UpstreamRejected { status, message }) => {
            assert_eq!(status, 429);
            assert_eq!(message, "Resource has been exhausted");
        }
        other => panic!("{other:?}"),
    }
    assert!(decode_response(b"{").is_err());
}

#[test]
fn blocked_prompt_is_a_content_filter() {
    let r = decode_response(br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":7}}"#)
        .unwrap();
    assert_eq!((r.stop, r.usage.prompt_tokens), (StopReason::ContentFilter, 7));
    let ev = decode_in([b"data: {\"promptFeedback\":{\"blockReason\":\"SAFETY\"}}\n\n".to_vec()]);
    assert_eq!(fold(&ev).unwrap().stop, StopReason::ContentFilter);
    for (reason, stop) in [
        ("SAFETY", StopReason::ContentFilter),
        ("RECITATION", StopReason::ContentFilter),
        ("PROHIBITED_CONTENT", StopReason::ContentFilter),
        ("SPII", StopReason::ContentFilter),
        ("BLOCKLIST", StopReason::ContentFilter),
        ("MAX_TOKENS", StopReason::MaxTokens),
        ("STOP", StopReason::EndTurn),
    ] {
        let body =
            format!(r#"{{"candidates":[{{"content":{{"parts":[{{"text":"x"}}]}},"finishReason":"{reason}"}}]}}"#);
        assert_eq!(decode_response(body.as_bytes()).unwrap().stop, stop, "{reason}");
        let ev = decode_in([format!("data: {body}\r\n\r\n").into_bytes()]);
        assert_eq!(fold(&ev).unwrap().stop, stop, "{reason} streamed");
    }
}

// ---------- stream traps ----------

#[test]
fn truncated_stream_is_an_error() {
    // Trap 7: text chunks, then the body ends without a finishReason.
    let src = fixture("stream-text.sse");
    let cut = src.len() - 200;
    let ev = decode_in([src[..cut].to_vec()]);
    let (_, code) = fold(&ev).unwrap_err();
    assert_eq!(code, "stream_truncated");
    // A transport failure is one too.
    let mut d = GeminiStreamDecoder::new();
    let mut out = Vec::new();
    d.feed(&src[..cut], &mut out);
    d.finish(Some("connection reset"), &mut out);
    let (message, code) = fold(&out).unwrap_err();
    assert!(message.contains("connection reset") && code == "stream_truncated");
    // Nothing at all.
    assert_eq!(fold(&decode_in([])).unwrap_err().1, "stream_truncated");
}

#[test]
fn in_stream_error_carries_message_and_code() {
    let src = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}]}\n\n\
data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}\n\n\
data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"late\"}]},\"finishReason\":\"STOP\"}]}\n\n";
    let ev = decode_in([src.to_vec()]);
    assert_eq!(fold(&ev).unwrap_err(), ("The model is overloaded.".to_string(), "overloaded".to_string()));
    assert!(!format!("{ev:?}").contains("late"), "nothing after the error");
    let bad = decode_in([b"data: {not json\n\n".to_vec()]);
    assert_eq!(fold(&bad).unwrap_err().1, "bad_upstream_chunk");
}

#[test]
fn whole_function_call_is_one_args_delta() {
    // Trap 2: a whole functionCall becomes start, exactly one arguments delta, stop; no args → "{}".
    let src = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"now\"}},\
{\"functionCall\":{\"name\":\"add\",\"args\":{\"a\":1,\"b\":2},\"id\":\"given-1\"}}]},\"finishReason\":\"STOP\"}]}\n\n";
    let ev = decode_in([src.to_vec()]);
    let args: Vec<&str> = ev
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta { delta: Delta::ToolArgs(a), .. } => Some(a.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(args, ["{}", "{\"a\":1,\"b\":2}"]);
    let r = fold(&ev).unwrap();
    assert_eq!(calls(&r)[1].id, "given-1");
    assert_eq!(r.stop, StopReason::ToolUse);
}

#[test]
fn finish_reason_in_a_trailing_chunk_and_usage_after_it() {
    let src = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\n\n\
data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]}}]}\n\n\
data: {\"candidates\":[{\"finishReason\":\"MAX_TOKENS\"}]}\n\n\
data: {\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":2,\"cachedContentTokenCount\":3}}";
    let r = fold(&decode_in([src.to_vec()])).unwrap();
    assert_eq!(texts(&r), "ab");
    assert_eq!(r.stop, StopReason::MaxTokens);
    assert_eq!(r.usage, usage(5, 2, 0, 3), "the final event without a blank line is still read");
}

// ---------- stream encoder ----------

fn sample_events() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start { id: Some("msg_01abc".into()), model: Some("claude".into()), usage: None },
        StreamEvent::BlockStart { index: 0, block: BlockKind::Reasoning { id: None } },
        StreamEvent::Delta { index: 0, delta: Delta::Reasoning("think".into()) },
        StreamEvent::Delta { index: 0, delta: Delta::Signature(Signature::new(Protocol::Anthropic, "EqQB")) },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::BlockStart { index: 1, block: BlockKind::Text },
        StreamEvent::Delta { index: 1, delta: Delta::Text("Hel".into()) },
        StreamEvent::Delta { index: 1, delta: Delta::Text("lo \"x\"\n".into()) },
        StreamEvent::BlockStop { index: 1 },
        StreamEvent::BlockStart {
            index: 2,
            block: BlockKind::ToolCall {
                id: "toolu_1".into(),
                name: "get".into(),
                kind: ToolKind::Function,
                signature: None,
            },
        },
        StreamEvent::Delta { index: 2, delta: Delta::ToolArgs("{\"city\":".into()) },
        StreamEvent::Delta { index: 2, delta: Delta::ToolArgs("\n \"Paris\"}".into()) },
        StreamEvent::BlockStop { index: 2 },
        StreamEvent::Usage(usage(10, 7, 3, 4)),
        StreamEvent::Finish { stop: StopReason::ToolUse, usage: None },
    ]
}

#[test]
fn encoder_sse_shape() {
    let out = String::from_utf8(encode_events(&sample_events(), true, "gemini-pro")).unwrap();
    let chunks: Vec<Value> = out
        .split("\r\n\r\n")
        .filter(|s| !s.is_empty())
        .map(|s| serde_json::from_str(s.strip_prefix("data: ").expect("lines start with `data: `")).unwrap())
        .collect();
    assert_eq!(chunks.len(), 6, "{out}");
    assert_eq!(chunks[0]["candidates"][0]["content"]["parts"][0], json!({"text": "think", "thought": true}));
    assert_eq!(chunks[0]["modelVersion"], "gemini-pro");
    let id = chunks[0]["responseId"].as_str().unwrap();
    assert!(super::is_native_id(id) && id.len() == 23, "a foreign id is replaced: {id}");
    assert!(chunks.iter().all(|c| c["responseId"] == id));
    assert_eq!(
        chunks[1]["candidates"][0]["content"]["parts"][0]["thoughtSignature"],
        Signature::new(Protocol::Anthropic, "EqQB").envelope()
    );
    let call = &chunks[4]["candidates"][0]["content"]["parts"][0];
    assert_eq!(call["functionCall"], json!({"name": "get", "args": {"city": "Paris"}, "id": "toolu_1"}));
    let last = &chunks[5];
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        last["usageMetadata"],
        json!({"promptTokenCount": 10, "candidatesTokenCount": 4, "thoughtsTokenCount": 3, "cachedContentTokenCount": 4, "totalTokenCount": 17})
    );
    assert!(
        chunks[..5]
            .iter()
            .all(|c| c.get("usageMetadata").is_none() && c["candidates"][0].get("finishReason").is_none())
    );
}

#[test]
fn encoder_array_shape() {
    let out = encode_events(&sample_events(), false, "gemini-pro");
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.starts_with("[{") && text.ends_with("\n]"), "{text}");
    assert_eq!(text.matches("\n,{").count(), 5);
    let items: Vec<Value> = serde_json::from_slice(&out).unwrap();
    assert_eq!(items.len(), 6);
    // Every prefix of the stream is a prefix of valid elements: the first chunk alone starts the array.
    let mut enc = GeminiStreamEncoder::new(false, Arc::from("m"));
    let mut first = Vec::new();
    for e in &sample_events()[..3] {
        enc.encode(e, &mut first);
    }
    assert!(first.starts_with(b"[{") && first.ends_with(b"}\n"));
    first.push(b']');
    assert_eq!(serde_json::from_slice::<Vec<Value>>(&first).unwrap().len(), 1);
}

#[test]
fn encoder_errors_mid_stream_and_nothing_after() {
    let events = [
        StreamEvent::Start { id: None, model: None, usage: None },
        StreamEvent::BlockStart { index: 0, block: BlockKind::Text },
        StreamEvent::Delta { index: 0, delta: Delta::Text("Hi".into()) },
        StreamEvent::Error { message: "rate limited".into(), code: "rate_limit_exceeded".into() },
        StreamEvent::Delta { index: 0, delta: Delta::Text("late".into()) },
        StreamEvent::Finish { stop: StopReason::EndTurn, usage: None },
    ];
    let sse = String::from_utf8(encode_events(&events, true, "m")).unwrap();
    assert!(sse.ends_with(
        "data: {\"error\":{\"code\":429,\"message\":\"rate limited\",\"status\":\"RESOURCE_EXHAUSTED\"}}\r\n\r\n"
    ));
    assert!(!sse.contains("late") && !sse.contains("finishReason"));
    let arr = encode_events(&events, false, "m");
    let items: Vec<Value> = serde_json::from_slice(&arr).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[1]["error"]["status"], "RESOURCE_EXHAUSTED");
    // An error before any chunk is a one-element array.
    let only = encode_events(&[events[0].clone(), events[3].clone()], false, "m");
    assert_eq!(serde_json::from_slice::<Vec<Value>>(&only).unwrap().len(), 1);
    // Re-decoded, it is the same error.
    let back = fold(&decode_in([sse.into_bytes()])).unwrap_err();
    assert_eq!(back, ("rate limited".to_string(), "rate_limit_exceeded".to_string()));
}

#[test]
fn translated_stream_through_the_tap() {
    // A Gemini upstream fixture re-encoded for a Gemini array client via the TranslateTap joins cleanly.
    use xai_core::StreamTap;
    let mut tap = crate::translate::TranslateTap::new(
        Box::new(GeminiStreamDecoder::new()),
        Box::new(GeminiStreamEncoder::new(false, Arc::from("m"))),
    );
    let mut body = Vec::new();
    for c in random_splits(&fixture("stream-thoughts-then-function-call.sse"), 3) {
        body.extend_from_slice(&tap.feed(Bytes::from(c)));
    }
    body.extend_from_slice(&tap.finish(None));
    let items: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(items.last().unwrap()["candidates"][0]["finishReason"], "STOP");
    assert_eq!(tap.usage(), (usage(131, 110, 95, 0), true));
    assert!(!tap.failed());
}

// ---------- requests ----------

/// What google-genai sends for a second tool turn (camelCase, upper-case OpenAPI types, signatures).
const GENAI_BODY: &str = r#"{
  "contents": [
    {"role": "user", "parts": [
      {"text": "What should I wear in Paris? Here is my wardrobe."},
      {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
      {"fileData": {"mimeType": "application/pdf", "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}}
    ]},
    {"role": "model", "parts": [
      {"text": "Checking the weather", "thought": true},
      {"text": "", "thought": true, "thoughtSignature": "c2lnLTE="},
      {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnLTI="},
      {"functionCall": {"name": "get_weather", "args": {"city": "Lyon"}}}
    ]},
    {"role": "user", "parts": [
      {"functionResponse": {"name": "get_weather", "response": {"temp": 12}}},
      {"functionResponse": {"name": "get_weather", "response": {"error": "station offline"}}}
    ]},
    {"role": "model", "parts": [{"text": "Take a coat.", "thoughtSignature": "c2lnLTM="}]},
    {"role": "user", "parts": [{"text": "Thanks!"}]}
  ],
  "systemInstruction": {"parts": [{"text": "You are terse."}, {"text": "Answer in English."}]},
  "tools": [
    {"functionDeclarations": [{"name": "get_weather", "description": "Weather by city",
      "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]},
    {"googleSearch": {}}
  ],
  "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
  "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
  "generationConfig": {"temperature": 0.2, "topP": 0.9, "topK": 40, "maxOutputTokens": 1024,
    "stopSequences": ["END"], "responseMimeType": "application/json",
    "responseSchema": {"type": "OBJECT", "properties": {"advice": {"type": "STRING"}}},
    "thinkingConfig": {"includeThoughts": true, "thinkingBudget": 2048}}
}"#;

fn sig(v: &str) -> Option<Signature> {
    Some(Signature::new(Protocol::Gemini, v))
}

#[test]
fn decodes_a_genai_request() {
    let r = decode_request(&endpoint(EndpointKind::StreamGenerateContent, true), GENAI_BODY.as_bytes()).unwrap();
    assert_eq!(r.model, "gemini-2.5-flash");
    assert!(r.stream);
    // Trap 9: every system part kept.
    assert_eq!(
        r.system,
        vec![
            SystemBlock { text: "You are terse.".into(), cache: false },
            SystemBlock { text: "Answer in English.".into(), cache: false }
        ]
    );
    assert_eq!(r.messages.len(), 5);
    assert_eq!(
        r.messages[0].parts[1..],
        [
            Part::Image(ImageSource::Base64 { media_type: "image/png".into(), data: "iVBORw0KGgo=".into() }),
            Part::File {
                media_type: "application/pdf".into(),
                source: FileSource::Url("https://generativelanguage.googleapis.com/v1beta/files/abc".into())
            },
        ]
    );
    let model = &r.messages[1];
    assert_eq!(model.role, Role::Assistant);
    assert_eq!(
        model.parts[0],
        Part::Reasoning(Reasoning {
            text: "Checking the weather".into(),
            signature: sig("c2lnLTE="),
            ..Reasoning::default()
        })
    );
    let Part::ToolCall(c1) = &model.parts[1] else { panic!() };
    let Part::ToolCall(c2) = &model.parts[2] else { panic!() };
    assert_eq!(c1.signature, sig("c2lnLTI="));
    assert_ne!(c1.id, c2.id);
    // Trap 10: responses matched to calls by name, in order.
    let Part::ToolResult(r1) = &r.messages[2].parts[0] else { panic!() };
    let Part::ToolResult(r2) = &r.messages[2].parts[1] else { panic!() };
    assert_eq!((r1.call_id.as_str(), r2.call_id.as_str()), (c1.id.as_str(), c2.id.as_str()));
    assert_eq!(r1.text(), r#"{"temp":12}"#);
    assert!(!r1.is_error && r2.is_error);
    assert_eq!(r2.text(), "station offline");
    assert_eq!(r1.name.as_deref(), Some("get_weather"));
    assert_eq!(
        r.messages[3].parts,
        [
            Part::Reasoning(Reasoning { signature: sig("c2lnLTM="), ..Reasoning::default() }),
            Part::Text { text: "Take a coat.".into(), cache: false }
        ]
    );
    assert_eq!(r.tools.len(), 1, "googleSearch is ignored");
    assert_eq!(r.tools[0].parameters["type"], "object", "OpenAPI types lower-cased");
    assert_eq!(r.tools[0].parameters["properties"]["city"]["type"], "string");
    assert_eq!(r.tool_choice, Some(ToolChoice::Tool("get_weather".into())));
    assert_eq!((r.temperature, r.top_p, r.top_k, r.max_tokens), (Some(0.2), Some(0.9), Some(40), Some(1024)));
    assert_eq!(r.stop, ["END"]);
    assert!(
        matches!(&r.response_format, Some(ResponseFormat::JsonSchema { schema, .. }) if schema["type"] == "object")
    );
    assert_eq!(
        r.reasoning,
        Some(ReasoningConfig { budget_tokens: Some(2048), include_thoughts: true, ..ReasoningConfig::default() })
    );
}

#[test]
fn request_round_trips_through_the_upstream_encoding() {
    let ep = endpoint(EndpointKind::GenerateContent, false);
    let first = decode_request(&ep, GENAI_BODY.as_bytes()).unwrap();
    let body = encode_request(&first).unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v.get("model").is_none() && v.get("stream").is_none(), "the model and stream are in the path");
    assert_eq!(v["contents"][1]["role"], "model");
    // The empty signed text part is written back on the text part it came with.
    assert_eq!(v["contents"][3]["parts"], json!([{"text": "Take a coat.", "thoughtSignature": "c2lnLTM="}]));
    assert_eq!(
        v["contents"][2]["parts"][1]["functionResponse"],
        json!({"name": "get_weather", "response": {"error": "station offline"}})
    );
    assert!(v["tools"][0]["functionDeclarations"][0].get("parametersJsonSchema").is_some());
    assert_eq!(
        v["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["get_weather"]})
    );
    assert_eq!(v["generationConfig"]["thinkingConfig"], json!({"includeThoughts": true, "thinkingBudget": 2048}));
    let mut second = decode_request(&ep, &body).unwrap();
    second.stream = first.stream;
    assert_eq!(second, first);
}

#[test]
fn snake_case_and_shorthand_requests() {
    let body = br#"{"system_instruction": "Be brief.",
      "contents": [{"parts": [{"inline_data": {"mime_type": "image/jpeg", "data": "AAAA"}}, {"text": "hi"}]},
                   {"role": "model", "parts": [{"function_call": {"name": "f", "args": {}}, "thought_signature": "s"}]},
                   {"role": "user", "parts": [{"function_response": {"name": "f", "response": {"ok": true}}}]}],
      "tools": [{"function_declarations": [{"name": "f"}]}],
      "tool_config": {"function_calling_config": {"mode": "NONE"}},
      "generation_config": {"max_output_tokens": 5, "thinking_config": {"thinking_budget": 0}}}"#;
    let r = decode_request(&endpoint(EndpointKind::GenerateContent, false), body).unwrap();
    assert_eq!(r.system[0].text, "Be brief.");
    assert!(!r.stream);
    assert!(
        matches!(&r.messages[0].parts[0], Part::Image(ImageSource::Base64 { media_type, .. }) if media_type == "image/jpeg")
    );
    let Part::ToolCall(c) = &r.messages[1].parts[0] else { panic!() };
    let Part::ToolResult(res) = &r.messages[2].parts[0] else { panic!() };
    assert_eq!((c.signature.clone(), res.call_id.as_str()), (sig("s"), c.id.as_str()));
    assert_eq!(r.tools[0].parameters, json!({"type": "object", "properties": {}}));
    assert_eq!(r.tool_choice, Some(ToolChoice::None));
    assert_eq!(r.max_tokens, Some(5));
    assert!(r.reasoning.unwrap().disabled);
}

#[test]
fn malformed_requests_name_the_field() {
    let ep = endpoint(EndpointKind::GenerateContent, false);
    for (body, field) in [
        (r#"{"contents": {}}"#, "contents"),
        (r#"{"contents": [{"role": "system", "parts": []}]}"#, "contents[0].role"),
        (r#"{"contents": [{"parts": [{"text": 3}]}]}"#, "contents[0].parts[0].text"),
        (r#"{"contents": [{"parts": [{"functionCall": {"args": {}}}]}]}"#, "contents[0].parts[0].functionCall"),
        (r#"{"contents": [{"parts": [{"inlineData": {"data": "x"}}]}]}"#, "contents[0].parts[0].inlineData.mimeType"),
        (r#"{"generationConfig": {"temperature": "hot"}}"#, "generationConfig.temperature"),
        (r#"{"generationConfig": {"maxOutputTokens": -3}}"#, "generationConfig.maxOutputTokens"),
        (
            r#"{"toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}}"#,
            "toolConfig.functionCallingConfig.mode",
        ),
        (
            r#"{"tools": [{"functionDeclarations": [{"name": "f", "parameters": 3}]}]}"#,
            "tools[0].functionDeclarations[0].parameters",
        ),
    ] {
        match decode_request(&ep, body.as_bytes()) {
            Err(GatewayError::BadRequest(m)) => assert!(m.contains(&format!("'{field}'")), "{m} should name {field}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    assert!(matches!(decode_request(&ep, b"[1]"), Err(GatewayError::BadRequest(_))));
    let no_model = Endpoint { path_model: None, ..ep };
    assert!(matches!(decode_request(&no_model, b"{}"), Err(GatewayError::BadRequest(_))));
}

/// A conversation as another protocol (Anthropic, say) decoded it.
fn foreign_request() -> ChatRequest {
    ChatRequest {
        model: "gemini-3-pro-preview".into(),
        system: vec![SystemBlock { text: "A".into(), cache: true }, SystemBlock { text: "B".into(), cache: false }],
        messages: vec![
            Message { role: Role::User, parts: vec![Part::Text { text: "hi".into(), cache: false }] },
            Message { role: Role::User, parts: vec![Part::Image(ImageSource::Url("https://x.test/cat.webp".into()))] },
            Message {
                role: Role::Assistant,
                parts: vec![
                    Part::Reasoning(Reasoning {
                        text: "hmm".into(),
                        signature: Some(Signature::new(Protocol::Anthropic, "EqQB")),
                        ..Reasoning::default()
                    }),
                    Part::Text { text: String::new(), cache: false },
                    Part::ToolCall(ToolCall {
                        id: "toolu_1".into(),
                        name: "get".into(),
                        arguments: "{\"q\":1}".into(),
                        ..ToolCall::default()
                    }),
                    Part::ToolCall(ToolCall {
                        id: "toolu_2".into(),
                        name: "apply_patch".into(),
                        arguments: "*** Begin Patch".into(),
                        kind: ToolKind::Custom,
                        signature: None,
                    }),
                ],
            },
            Message {
                role: Role::User,
                parts: vec![
                    Part::ToolResult(ToolResult {
                        call_id: "toolu_1".into(),
                        content: vec![Part::Text { text: "plain words".into(), cache: false }],
                        ..ToolResult::default()
                    }),
                    Part::ToolResult(ToolResult {
                        call_id: "toolu_2".into(),
                        content: vec![Part::Text { text: "{\"ok\":true}".into(), cache: false }],
                        kind: ToolKind::Custom,
                        ..ToolResult::default()
                    }),
                ],
            },
        ],
        tools: vec![
            Tool {
                name: "get".into(),
                description: Some("d".into()),
                parameters: json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                    "properties": {"q": {"type": "integer"}}, "additionalProperties": false}),
                strict: Some(true),
                kind: ToolKind::Function,
                custom_format: None,
            },
            Tool {
                name: "apply_patch".into(),
                description: None,
                parameters: json!({}),
                strict: None,
                kind: ToolKind::Custom,
                custom_format: Some(json!({"type": "grammar"})),
            },
        ],
        tool_choice: Some(ToolChoice::Required),
        reasoning: Some(ReasoningConfig { effort: Some("high".into()), ..ReasoningConfig::default() }),
        response_format: Some(ResponseFormat::JsonObject),
        user: Some("u1".into()),
        stream: true,
        ..ChatRequest::default()
    }
}

#[test]
fn encodes_a_foreign_request_for_gemini() {
    let v: Value = serde_json::from_slice(&encode_request(&foreign_request()).unwrap()).unwrap();
    assert_eq!(v["systemInstruction"], json!({"parts": [{"text": "A"}, {"text": "B"}]}));
    // Consecutive user turns merged; the foreign-signed reasoning and the empty text dropped (trap 4).
    let contents = v["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 3);
    assert_eq!(
        contents[0],
        json!({"role": "user", "parts": [{"text": "hi"}, {"fileData": {"mimeType": "image/webp", "fileUri": "https://x.test/cat.webp"}}]})
    );
    assert_eq!(
        contents[1]["parts"],
        json!([
            {"functionCall": {"name": "get", "args": {"q": 1}}, "thoughtSignature": SKIP_SIGNATURE},
            {"functionCall": {"name": "apply_patch", "args": {"input": "*** Begin Patch"}}}
        ])
    );
    // Tool names looked up from the calls; text wrapped as {"result": …}, objects kept.
    assert_eq!(
        contents[2]["parts"],
        json!([
            {"functionResponse": {"name": "get", "response": {"result": "plain words"}}},
            {"functionResponse": {"name": "apply_patch", "response": {"ok": true}}}
        ])
    );
    let decls = &v["tools"][0]["functionDeclarations"];
    assert_eq!(
        decls[0]["parametersJsonSchema"],
        json!({"type": "object", "properties": {"q": {"type": "integer"}}, "additionalProperties": false})
    );
    assert_eq!(decls[1]["parametersJsonSchema"]["required"], json!(["input"]));
    assert_eq!(v["toolConfig"]["functionCallingConfig"], json!({"mode": "ANY"}));
    assert_eq!(
        v["generationConfig"],
        json!({"responseMimeType": "application/json", "thinkingConfig": {"thinkingBudget": 16384}})
    );
    assert!(v.get("user").is_none());
}

#[test]
fn native_signatures_go_back_upstream() {
    let mut req = foreign_request();
    req.messages[2].parts[0] = Part::Reasoning(Reasoning {
        text: "hmm".into(),
        signature: Some(Signature::new(Protocol::Gemini, "g1")),
        ..Reasoning::default()
    });
    if let Part::ToolCall(c) = &mut req.messages[2].parts[2] {
        c.signature = Some(Signature::new(Protocol::Gemini, "g2"));
    }
    req.messages.push(Message {
        role: Role::Assistant,
        parts: vec![
            Part::Reasoning(Reasoning {
                signature: Some(Signature::new(Protocol::Gemini, "g3")),
                ..Reasoning::default()
            }),
            Part::Text { text: "ok".into(), cache: false },
        ],
    });
    let v: Value = serde_json::from_slice(&encode_request(&req).unwrap()).unwrap();
    let parts = &v["contents"][1]["parts"];
    assert_eq!(parts[0], json!({"text": "hmm", "thought": true, "thoughtSignature": "g1"}));
    assert_eq!(parts[1]["thoughtSignature"], "g2", "a real signature is never replaced");
    assert!(parts[2].get("thoughtSignature").is_none(), "only the first call needs one");
    assert_eq!(v["contents"][3]["parts"], json!([{"text": "ok", "thoughtSignature": "g3"}]));
}

// ---------- complete answers for a Gemini client ----------

#[test]
fn encodes_a_complete_answer() {
    let resp = ChatResponse {
        id: "chatcmpl-123".into(),
        model: "gpt-4o".into(),
        parts: vec![
            Part::Reasoning(Reasoning {
                text: "r".into(),
                signature: Some(Signature::new(Protocol::OpenAiResponses, "enc")),
                ..Reasoning::default()
            }),
            Part::Text { text: "Hello".into(), cache: false },
            Part::ToolCall(ToolCall {
                id: "call_1".into(),
                name: "f".into(),
                arguments: "{}".into(),
                ..ToolCall::default()
            }),
        ],
        stop: StopReason::EndTurn,
        usage: usage(20, 9, 4, 8),
    };
    let out = encode_response(&resp, &endpoint(EndpointKind::GenerateContent, false), &meta("gemini-x"));
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["modelVersion"], "gemini-x", "echoes the model the client asked");
    assert!(super::is_native_id(v["responseId"].as_str().unwrap()));
    let c = &v["candidates"][0];
    assert_eq!(c["finishReason"], "STOP");
    assert_eq!(c["content"]["role"], "model");
    assert_eq!(
        c["content"]["parts"],
        json!([
            {"text": "r", "thought": true, "thoughtSignature": Signature::new(Protocol::OpenAiResponses, "enc").envelope()},
            {"text": "Hello"},
            {"functionCall": {"name": "f", "args": {}, "id": "call_1"}}
        ])
    );
    assert_eq!(
        v["usageMetadata"],
        json!({"promptTokenCount": 20, "candidatesTokenCount": 5, "thoughtsTokenCount": 4, "cachedContentTokenCount": 8, "totalTokenCount": 29})
    );
    // Sent back by the client, the foreign signature recovers its origin (trap 4).
    let body = json!({"contents": [{"role": "model", "parts": c["content"]["parts"]}]});
    let back = decode_request(&endpoint(EndpointKind::GenerateContent, false), body.to_string().as_bytes()).unwrap();
    assert_eq!(back.messages[0].parts, resp.parts);
}

// ---------- properties ----------

fn arb_sig() -> impl Strategy<Value = Option<Signature>> {
    prop_oneof![
        Just(None),
        "[A-Za-z0-9+/=]{1,12}".prop_map(|v| Some(Signature::new(Protocol::Gemini, v))),
        "[A-Za-z0-9+/=]{1,12}".prop_map(|v| Some(Signature::new(Protocol::Anthropic, v))),
    ]
}

fn arb_part() -> impl Strategy<Value = Part> {
    prop_oneof![
        ".{0,12}".prop_map(|text| Part::Text { text, cache: false }),
        (".{0,12}", arb_sig()).prop_map(|(text, signature)| Part::Reasoning(Reasoning {
            text,
            signature,
            ..Reasoning::default()
        })),
        ("[a-z_]{1,8}", "[a-zA-Z0-9_]{1,10}", proptest::collection::btree_map("[a-z]{1,4}", ".{0,6}", 0..3), arb_sig())
            .prop_map(|(name, id, args, signature)| Part::ToolCall(ToolCall {
                id: format!("call_{id}"),
                name,
                arguments: serde_json::to_string(&args).unwrap(),
                kind: ToolKind::Function,
                signature,
            })),
    ]
}

fn arb_response() -> impl Strategy<Value = ChatResponse> {
    (
        proptest::collection::vec(arb_part(), 0..6),
        prop_oneof![Just(StopReason::EndTurn), Just(StopReason::MaxTokens), Just(StopReason::ContentFilter)],
        (0u64..1000, 0u64..1000, 0u64..1000, 0u64..1000),
    )
        .prop_map(|(parts, stop, (a, b, c, d))| {
            let stop = if parts.iter().any(|p| matches!(p, Part::ToolCall(_))) { StopReason::ToolUse } else { stop };
            ChatResponse { id: "AbCdEf123".into(), model: "m".into(), parts, stop, usage: usage(a + b, c + d, d, b) }
        })
}

/// What Gemini's wire keeps of a generated answer: empty text and empty unsigned reasoning vanish, adjacent text
/// merges, and unsigned reasoning continues into the thought text after it (module docs).
fn wire_normal(parts: &[Part]) -> Vec<Part> {
    let mut out: Vec<Part> = Vec::new();
    for p in parts {
        match p {
            Part::Text { text, .. } if text.is_empty() => {}
            Part::Reasoning(r) if r.text.is_empty() && r.signature.is_none() => {}
            Part::Text { text, .. } => match out.last_mut() {
                Some(Part::Text { text: prev, .. }) => prev.push_str(text),
                _ => out.push(p.clone()),
            },
            Part::Reasoning(r) if !r.text.is_empty() => match out.last_mut() {
                Some(Part::Reasoning(prev)) if prev.signature.is_none() => {
                    prev.text.push_str(&r.text);
                    prev.signature = r.signature.clone();
                }
                _ => out.push(p.clone()),
            },
            _ => out.push(p.clone()),
        }
    }
    out
}

fn events_of(resp: &ChatResponse, split: usize) -> Vec<StreamEvent> {
    let mut ev = vec![StreamEvent::Start { id: Some(resp.id.clone()), model: Some(resp.model.clone()), usage: None }];
    for (i, p) in resp.parts.iter().enumerate() {
        let index = i as u32;
        let pieces = |s: &str| -> Vec<String> {
            let chars: Vec<char> = s.chars().collect();
            chars.chunks(split.max(1)).map(|c| c.iter().collect()).collect()
        };
        match p {
            Part::Text { text, .. } => {
                ev.push(StreamEvent::BlockStart { index, block: BlockKind::Text });
                ev.extend(pieces(text).into_iter().map(|t| StreamEvent::Delta { index, delta: Delta::Text(t) }));
            }
            Part::Reasoning(r) => {
                ev.push(StreamEvent::BlockStart { index, block: BlockKind::Reasoning { id: None } });
                ev.extend(
                    pieces(&r.text).into_iter().map(|t| StreamEvent::Delta { index, delta: Delta::Reasoning(t) }),
                );
                if let Some(s) = &r.signature {
                    ev.push(StreamEvent::Delta { index, delta: Delta::Signature(s.clone()) });
                }
            }
            Part::ToolCall(c) => {
                ev.push(StreamEvent::BlockStart {
                    index,
                    block: BlockKind::ToolCall {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        kind: c.kind,
                        signature: c.signature.clone(),
                    },
                });
                ev.extend(
                    pieces(&c.arguments).into_iter().map(|t| StreamEvent::Delta { index, delta: Delta::ToolArgs(t) }),
                );
            }
            _ => unreachable!(),
        }
        ev.push(StreamEvent::BlockStop { index });
    }
    ev.push(StreamEvent::Usage(resp.usage));
    ev.push(StreamEvent::Finish { stop: resp.stop.clone(), usage: None });
    ev
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn stream_encode_then_decode_is_identity(resp in arb_response(), split in 1usize..5, sse in any::<bool>(), cut in 1usize..64) {
        let bytes = encode_events(&events_of(&resp, split), sse, "m");
        let wire = if sse { bytes } else { array_as_sse(&bytes) };
        let chunks: Vec<Vec<u8>> = wire.chunks(cut).map(<[u8]>::to_vec).collect();
        let back = fold(&decode_in(chunks)).unwrap();
        prop_assert_eq!(back.parts, wire_normal(&resp.parts));
        prop_assert_eq!(back.stop, resp.stop);
        prop_assert_eq!(back.usage, resp.usage);
        prop_assert_eq!(back.id, resp.id);
        prop_assert_eq!(back.model, "m");
    }

    #[test]
    fn response_encode_then_decode_is_identity(resp in arb_response()) {
        let body = encode_response(&resp, &endpoint(EndpointKind::GenerateContent, false), &meta("m"));
        let back = decode_response(&body).unwrap();
        prop_assert_eq!(back.parts, wire_normal(&resp.parts));
        prop_assert_eq!(back.stop, resp.stop);
        prop_assert_eq!(back.usage, resp.usage);
        prop_assert_eq!(back.id, resp.id);
    }

    #[test]
    fn answers_sent_back_as_history_keep_their_parts(resp in arb_response()) {
        // A Gemini client replays the answer's parts as a model turn: the request decoder reads them back.
        let body = encode_response(&resp, &endpoint(EndpointKind::GenerateContent, false), &meta("m"));
        let v: Value = serde_json::from_slice(&body).unwrap();
        let req = json!({"contents": [{"role": "model", "parts": v["candidates"][0]["content"]["parts"]}]});
        let back = decode_request(&endpoint(EndpointKind::GenerateContent, false), req.to_string().as_bytes()).unwrap();
        let got: Vec<Part> = back.messages[0].parts.iter().filter(|p| !matches!(p, Part::Text { text, .. } if text.is_empty())).cloned().collect();
        let want: Vec<Part> = resp.parts.iter().filter(|p| !matches!(p, Part::Text { text, .. } if text.is_empty())).cloned().collect();
        // Requests keep text parts separate: compare with the answer's own parts, normalised the same way except
        // for text merging.
        prop_assert_eq!(texts_of(&got), texts_of(&want));
        prop_assert_eq!(calls_of(&got), calls_of(&want));
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), cut in 1usize..50) {
        let ep = endpoint(EndpointKind::StreamGenerateContent, true);
        let _ = decode_request(&ep, &bytes);
        let _ = decode_response(&bytes);
        let _ = error_message(&bytes);
        let mut framed = b"data: ".to_vec();
        framed.extend_from_slice(&bytes);
        for input in [bytes.clone(), framed] {
            let ev = decode_in(input.chunks(cut).map(<[u8]>::to_vec));
            let terminal = matches!(ev.last(), Some(StreamEvent::Finish { .. } | StreamEvent::Error { .. }));
            prop_assert!(terminal, "a terminal event last");
        }
    }

    #[test]
    fn request_decoder_never_panics_on_mangled_bodies(at in 0usize..2000, junk in "[\\[\\]{}:,\"a-z0-9 ]{0,8}") {
        let mut body = GENAI_BODY.to_string();
        let at = (0..=at.min(body.len())).rev().find(|i| body.is_char_boundary(*i)).unwrap_or(0);
        body.insert_str(at, &junk);
        let _ = decode_request(&endpoint(EndpointKind::GenerateContent, false), body.as_bytes());
    }

    #[test]
    fn stream_errors_round_trip(code in prop_oneof![
        Just("rate_limit_exceeded"), Just("overloaded"), Just("timeout"), Just("invalid_request_error"), Just("api_error")
    ], message in ".{0,20}", sse in any::<bool>()) {
        let events = [
            StreamEvent::Start { id: None, model: None, usage: None },
            StreamEvent::Error { message: message.clone(), code: code.to_string() },
        ];
        let bytes = encode_events(&events, sse, "m");
        let wire = if sse { bytes } else { array_as_sse(&bytes) };
        prop_assert_eq!(fold(&decode_in([wire])).unwrap_err(), (message, code.to_string()));
    }
}

fn texts_of(parts: &[Part]) -> String {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn calls_of(parts: &[Part]) -> Vec<ToolCall> {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn call_ids_are_stable_across_turns() {
    // The same history decodes to the same ids every time, and a longer history keeps the earlier ids.
    let ep = endpoint(EndpointKind::GenerateContent, false);
    let turn = r#"{"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}"#;
    let reply = r#"{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}"#;
    let one = format!(r#"{{"contents": [{turn}, {reply}]}}"#);
    let two = format!(r#"{{"contents": [{turn}, {reply}, {turn}, {reply}]}}"#);
    let a = decode_request(&ep, one.as_bytes()).unwrap();
    let b = decode_request(&ep, two.as_bytes()).unwrap();
    assert_eq!(a.messages[..], b.messages[..2]);
    let Part::ToolCall(c1) = &b.messages[0].parts[0] else { panic!() };
    let Part::ToolCall(c2) = &b.messages[2].parts[0] else { panic!() };
    let Part::ToolResult(r2) = &b.messages[3].parts[0] else { panic!() };
    assert_ne!(c1.id, c2.id);
    assert_eq!(r2.call_id, c2.id);
}

/// Rough CPU comparison with the passthrough tap (run with `--release --ignored --nocapture`).
#[test]
#[ignore]
fn translation_cost_against_passthrough() {
    for set in [
        &["stream-text.sse"][..],
        &["stream-text.sse", "stream-thoughts-then-function-call.sse", "stream-text-thought-signature.sse"],
    ] {
        cost_of(set);
    }
}

fn cost_of(names: &[&str]) {
    use xai_core::{ProtocolAdapter, StreamTap};
    let mut src = Vec::new();
    for name in names {
        src.extend_from_slice(&fixture(name));
    }
    // Network-sized reads (small random splits mostly measure the shared SSE splitter's re-scans).
    let chunks: Vec<Bytes> = src.chunks(1400).map(Bytes::copy_from_slice).collect();
    let rounds = 5000;
    let run = |translate: bool| {
        let t = std::time::Instant::now();
        for _ in 0..rounds {
            let mut tap: Box<dyn StreamTap> = if translate {
                Box::new(crate::translate::TranslateTap::new(
                    Box::new(GeminiStreamDecoder::new()),
                    Box::new(GeminiStreamEncoder::new(true, Arc::from("m"))),
                ))
            } else {
                crate::gemini::Gemini.stream_tap(&meta("m"))
            };
            for c in &chunks {
                std::hint::black_box(tap.feed(c.clone()));
            }
            std::hint::black_box(tap.finish(None));
        }
        t.elapsed()
    };
    let (pass, translated) = (run(false), run(true));
    println!(
        "{names:?}: passthrough {pass:?}, translated {translated:?}, ratio {:.2}",
        translated.as_secs_f64() / pass.as_secs_f64()
    );
}
