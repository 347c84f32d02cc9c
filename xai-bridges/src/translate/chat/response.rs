//! Complete Chat Completions answers ⇄ [`ChatResponse`], and upstream error bodies.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use xai_core::ir::{ChatResponse, Part, Reasoning, Signature, StopReason, ToolCall, ToolKind, synth_call_id};
use xai_core::{Endpoint, GatewayError, Protocol, RequestMeta};

use super::{UsageOut, completion_id, finish_reason, now_secs, stop_from_finish, usage_from};

const P: Protocol = Protocol::OpenAiChat;

fn upstream_bad(msg: impl Into<String>) -> GatewayError {
    GatewayError::UpstreamUnavailable { message: msg.into(), last_status: None, retry_after: None }
}

fn s<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    o.get(key).and_then(Value::as_str)
}

/// Decodes a complete `chat.completion` (only choice 0 is taken).
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, GatewayError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| upstream_bad(format!("upstream answer is not valid JSON: {e}")))?;
    let o = v.as_object().ok_or_else(|| upstream_bad("upstream answer is not a JSON object"))?;
    if o.get("error").is_some_and(|e| !e.is_null()) {
        return Err(upstream_bad(error_message(body).unwrap_or_else(|| "upstream returned an error".into())));
    }
    let id = s(o, "id").unwrap_or_default().to_string();
    let choices = o.get("choices").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let choice =
        choices.iter().find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0).and_then(Value::as_object);
    let mut parts = Vec::new();
    let mut refused = false;
    let mut finish = None;
    if let Some(c) = choice {
        finish = s(c, "finish_reason");
        if let Some(m) = c.get("message").and_then(Value::as_object) {
            refused = decode_message(m, &id, &mut parts);
        }
    }
    let saw_call = parts.iter().any(|p| matches!(p, Part::ToolCall(_)));
    let stop = match finish.map(stop_from_finish) {
        _ if saw_call => StopReason::ToolUse,
        Some(StopReason::EndTurn) | None if refused => StopReason::ContentFilter,
        Some(stop) => stop,
        None => StopReason::EndTurn,
    };
    Ok(ChatResponse {
        id,
        model: s(o, "model").unwrap_or_default().to_string(),
        parts,
        stop,
        usage: o.get("usage").and_then(usage_from).unwrap_or_default(),
    })
}

/// Appends a message's parts; returns whether it was a refusal.
fn decode_message(m: &Map<String, Value>, resp_id: &str, parts: &mut Vec<Part>) -> bool {
    match m.get("reasoning_details").and_then(Value::as_array).filter(|d| !d.is_empty()) {
        Some(details) => {
            for d in details.iter().filter_map(Value::as_object) {
                let id = s(d, "id").map(str::to_string);
                if s(d, "type") == Some("reasoning.encrypted") {
                    let redacted = s(d, "data").map(str::to_string);
                    parts.push(Part::Reasoning(Reasoning { redacted, id, ..Reasoning::default() }));
                } else {
                    let text = s(d, "text").or_else(|| s(d, "summary")).unwrap_or_default().to_string();
                    let signature = s(d, "signature").filter(|x| !x.is_empty()).map(|x| Signature::new(P, x));
                    parts.push(Part::Reasoning(Reasoning { text, signature, redacted: None, id }));
                }
            }
        }
        None => {
            if let Some(text) = s(m, "reasoning_content").or_else(|| s(m, "reasoning")).filter(|t| !t.is_empty()) {
                parts.push(Part::Reasoning(Reasoning { text: text.to_string(), ..Reasoning::default() }));
            }
        }
    }
    match m.get("content") {
        Some(Value::String(t)) if !t.is_empty() => parts.push(Part::Text { text: t.clone(), cache: false }),
        Some(Value::Array(a)) => {
            for t in a.iter().filter_map(|p| p.get("text")).filter_map(Value::as_str).filter(|t| !t.is_empty()) {
                parts.push(Part::Text { text: t.to_string(), cache: false });
            }
        }
        _ => {}
    }
    let refusal = s(m, "refusal").filter(|r| !r.is_empty());
    if let Some(r) = refusal {
        parts.push(Part::Text { text: r.to_string(), cache: false });
    }
    let calls = m.get("tool_calls").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for (i, c) in calls.iter().filter_map(Value::as_object).enumerate() {
        let custom = s(c, "type") == Some("custom");
        let body = c.get(if custom { "custom" } else { "function" }).and_then(Value::as_object);
        let arg_key = if custom { "input" } else { "arguments" };
        let arguments = match body.and_then(|b| b.get(arg_key)) {
            Some(Value::String(a)) if !a.trim().is_empty() || custom => a.clone(),
            Some(v @ Value::Object(_)) => v.to_string(),
            _ => "{}".into(),
        };
        parts.push(Part::ToolCall(ToolCall {
            id: s(c, "id").filter(|x| !x.is_empty()).map_or_else(|| synth_call_id(resp_id, i), str::to_string),
            name: body.and_then(|b| s(b, "name")).unwrap_or_default().to_string(),
            arguments,
            kind: if custom { ToolKind::Custom } else { ToolKind::Function },
            signature: c
                .get("extra_content")
                .and_then(|e| e.get("google"))
                .and_then(|g| g.get("thought_signature"))
                .and_then(Value::as_str)
                .map(|x| Signature::new(P, x)),
        }));
    }
    if calls.is_empty()
        && let Some(fc) = m.get("function_call").and_then(Value::as_object)
    {
        let name = s(fc, "name").unwrap_or_default();
        parts.push(Part::ToolCall(ToolCall {
            id: synth_call_id(resp_id, 0),
            name: name.to_string(),
            arguments: s(fc, "arguments").filter(|a| !a.trim().is_empty()).unwrap_or("{}").to_string(),
            ..ToolCall::default()
        }));
    }
    refusal.is_some()
}

/// Whether reasoning needs `reasoning_details` to survive a round trip through the client.
fn needs_details(r: &Reasoning) -> bool {
    r.signature.is_some() || r.redacted.is_some() || r.id.is_some()
}

/// One `reasoning_details` entry.
pub(crate) fn reasoning_detail(r: &Reasoning, index: usize) -> Value {
    let mut d = match &r.redacted {
        Some(data) => json!({"type": "reasoning.encrypted", "data": data}),
        None => json!({"type": "reasoning.text", "text": r.text}),
    };
    if let Some(sig) = &r.signature {
        d["signature"] = sig.for_client(P).into();
    }
    if let Some(id) = &r.id {
        d["id"] = id.clone().into();
    }
    d["index"] = index.into();
    d
}

/// Encodes a complete answer for a Chat Completions client.
pub fn encode_response(resp: &ChatResponse, _endpoint: &Endpoint, meta: &RequestMeta) -> Bytes {
    let id = completion_id(Some(&resp.id));
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    let reasonings: Vec<&Reasoning> =
        resp.parts.iter().filter_map(|p| if let Part::Reasoning(r) = p { Some(r) } else { None }).collect();
    for p in &resp.parts {
        match p {
            Part::Text { text: t, .. } => text.push_str(t),
            Part::Reasoning(r) => reasoning.push_str(&r.text),
            Part::ToolCall(c) => {
                let cid = if c.id.is_empty() { synth_call_id(&id, calls.len()) } else { c.id.clone() };
                let mut v = match c.kind {
                    ToolKind::Function => json!({"id": cid, "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments}}),
                    ToolKind::Custom => json!({"id": cid, "type": "custom",
                        "custom": {"name": c.name, "input": c.arguments}}),
                };
                if let Some(sig) = &c.signature {
                    v["extra_content"] = json!({"google": {"thought_signature": sig.for_client(P)}});
                }
                calls.push(v);
            }
            Part::Image(_) | Part::File { .. } | Part::ToolResult(_) => {}
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() },
        "refusal": null,
    });
    if !reasoning.is_empty() {
        message["reasoning_content"] = reasoning.into();
    }
    if reasonings.iter().any(|r| needs_details(r)) {
        let d: Vec<Value> = reasonings.iter().enumerate().map(|(i, r)| reasoning_detail(r, i)).collect();
        message["reasoning_details"] = d.into();
    }
    let saw_call = !calls.is_empty();
    if saw_call {
        message["tool_calls"] = calls.into();
    }
    let out = json!({
        "id": id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": &*meta.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(&resp.stop, saw_call),
        }],
        "usage": UsageOut::from(&resp.usage),
    });
    serde_json::to_vec(&out).map(Bytes::from).unwrap_or_default()
}

/// The message of an OpenAI(-compatible) error body: `{"error":{"message"}}`, `{"error":"…"}` or `{"message"}`.
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let v = match &v {
        Value::Array(a) => a.first()?.clone(), // some compatibles wrap the error in an array
        _ => v,
    };
    let msg = match v.get("error") {
        Some(Value::String(m)) => Some(m.as_str()),
        Some(e) => e.get("message").and_then(Value::as_str),
        None => v.get("message").and_then(Value::as_str),
    };
    msg.filter(|m| !m.is_empty()).map(str::to_string)
}
