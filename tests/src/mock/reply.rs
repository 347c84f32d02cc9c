//! The mock's default replies, in OpenAI Chat Completions shape (docs/test-contract.md).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Prompt tokens of every default reply.
pub const DEFAULT_PROMPT_TOKENS: u64 = 10;
/// Completion tokens of every default reply.
pub const DEFAULT_COMPLETION_TOKENS: u64 = 5;
/// Number of content chunks of the default stream.
pub const DEFAULT_CONTENT_CHUNKS: usize = 5;
/// Models listed by the mock's `GET /v1/models`.
pub const MOCK_MODELS: &[&str] = &["gpt-4o", "gpt-4o-mini", "gpt-5", "gpt-3.5-turbo", "o3-mini"];

pub(crate) fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(crate) fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The text of the last user message: a string content, or its text parts joined.
pub fn last_user_text(request: &Value) -> String {
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return String::new();
    };
    let Some(last) = messages.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")) else {
        return String::new();
    };
    match last.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// The content of the default reply to `request`.
pub fn default_content(request: &Value) -> String {
    format!("mock reply: {}", last_user_text(request))
}

/// Splits `text` into `n` pieces by characters, none lost; the pieces concatenate back to `text`.
pub fn split_content(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let len = chars.len();
    (0..n).map(|i| chars[i * len / n..(i + 1) * len / n].iter().collect()).collect()
}

fn model_of(request: &Value) -> Value {
    request.get("model").cloned().unwrap_or(Value::String("mock-model".into()))
}

/// Whether the request asked for the usage chunk of a stream.
pub fn wants_stream_usage(request: &Value) -> bool {
    request.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false)
}

fn usage() -> Value {
    json!({
        "prompt_tokens": DEFAULT_PROMPT_TOKENS,
        "completion_tokens": DEFAULT_COMPLETION_TOKENS,
        "total_tokens": DEFAULT_PROMPT_TOKENS + DEFAULT_COMPLETION_TOKENS,
    })
}

/// The default non-streaming reply.
pub fn chat_completion(request: &Value, seq: u64) -> Value {
    json!({
        "id": format!("chatcmpl-mock-{seq}"),
        "object": "chat.completion",
        "created": unix_secs(),
        "model": model_of(request),
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": default_content(request), "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": usage(),
    })
}

/// The default stream as SSE events: a role chunk, content chunks, a finish chunk, the usage chunk when asked, `[DONE]`.
pub fn chat_stream(request: &Value, seq: u64) -> Vec<String> {
    let with_usage = wants_stream_usage(request);
    let id = format!("chatcmpl-mock-{seq}");
    let created = unix_secs();
    let model = model_of(request);
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if with_usage {
            // The real API sends `usage: null` on every chunk but the last when usage was asked for.
            c["usage"] = Value::Null;
        }
        c
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    for piece in split_content(&default_content(request), DEFAULT_CONTENT_CHUNKS) {
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if with_usage {
        events.push(json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": null,
            "choices": [],
            "usage": usage(),
        }));
    }
    let mut out: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    out.push("data: [DONE]\n\n".into());
    out
}

/// An OpenAI-shaped error body for `status`.
pub fn error_body(status: u16) -> Value {
    let (kind, code) = match status {
        400 => ("invalid_request_error", Value::Null),
        401 => ("invalid_request_error", json!("invalid_api_key")),
        403 => ("permission_error", Value::Null),
        404 => ("invalid_request_error", json!("model_not_found")),
        429 => ("requests", json!("rate_limit_exceeded")),
        s if s >= 500 => ("server_error", Value::Null),
        _ => ("invalid_request_error", Value::Null),
    };
    json!({"error": {"message": format!("mock upstream error (status {status})"), "type": kind, "param": null, "code": code}})
}

/// The body of `GET /v1/models`.
pub fn models() -> Value {
    let created = unix_secs();
    let data: Vec<Value> = MOCK_MODELS
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "mock"}))
        .collect();
    json!({"object": "list", "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_user_text_takes_the_last_user_message() {
        let req = json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "x"},
            {"role": "user", "content": [{"type": "text", "text": "se"}, {"type": "image_url"}, {"type": "text", "text": "cond"}]},
            {"role": "system", "content": "ignored"},
        ]});
        assert_eq!(last_user_text(&req), "second");
        assert_eq!(last_user_text(&json!({})), "");
    }

    #[test]
    fn split_keeps_every_character() {
        for text in ["mock reply: hi", "mock reply: héllo wörld, a longer sentence", "abc"] {
            let parts = split_content(text, 5);
            assert_eq!(parts.len(), 5);
            assert_eq!(parts.concat(), text);
        }
    }

    #[test]
    fn stream_has_usage_only_when_asked() {
        let req = json!({"model": "m", "messages": [{"role": "user", "content": "ping"}], "stream": true});
        let plain = chat_stream(&req, 1);
        assert_eq!(plain.len(), 1 + DEFAULT_CONTENT_CHUNKS + 1 + 1);
        assert!(plain.iter().all(|e| !e.contains("\"usage\"")));
        let mut req = req;
        req["stream_options"] = json!({"include_usage": true});
        let with = chat_stream(&req, 1);
        assert_eq!(with.len(), plain.len() + 1);
        let usage: Value = serde_json::from_str(with[with.len() - 2].trim_start_matches("data: ").trim()).unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 5);
        assert_eq!(with.last().unwrap(), "data: [DONE]\n\n");
    }
}
