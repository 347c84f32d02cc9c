//! OpenAI Chat Completions: `POST /v1/chat/completions` and `GET /v1/models`.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::reply::{
    ARGUMENT_FRAGMENTS, Answer, Content, DEFAULT_COMPLETION_TOKENS, DEFAULT_CONTENT_CHUNKS, DEFAULT_PROMPT_TOKENS,
    Invalid, MOCK_MODELS, REASONING_TEXT, Turn, content_text, data_event, invalid, model_of, split_content,
    tool_arguments, unix_secs,
};

/// The text of the last user message: a string content, or its text parts joined.
pub fn last_user_text(request: &Value) -> String {
    let messages = request.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content"), &["text"]))
        .unwrap_or_default()
}

/// Reads the last user turn: trailing `tool` messages are tool results.
pub fn turn(request: &Value) -> Turn {
    let messages = request.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut tool_results: Vec<String> = messages
        .iter()
        .rev()
        .take_while(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
        .map(|m| content_text(m.get("content"), &["text"]))
        .collect();
    tool_results.reverse();
    let tools = request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let reasoning = request.get("reasoning_effort").is_some_and(|v| !v.is_null());
    Turn { text: last_user_text(request), tool_results, tools, reasoning }
}

/// What the real API rejects: no messages, unknown roles, malformed tool calls and tools, a tool message that answers
/// no earlier tool call, a tool call left unanswered.
pub fn validate(request: &Value) -> Result<(), Invalid> {
    let Some(messages) = request.get("messages").and_then(Value::as_array).filter(|m| !m.is_empty()) else {
        invalid!("messages: must be a non-empty array")
    };
    let mut called: HashSet<&str> = HashSet::new();
    let mut unanswered: Vec<&str> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        if role != "tool" && !unanswered.is_empty() {
            invalid!(
                "messages[{i}]: an assistant message with 'tool_calls' must be followed by tool messages responding \
                 to each 'tool_call_id'; missing: {}",
                unanswered.join(", ")
            )
        }
        match role {
            "system" | "developer" | "user" => {}
            "assistant" => {
                for (j, call) in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    let Some(id) = call.get("id").and_then(Value::as_str) else {
                        invalid!("messages[{i}].tool_calls[{j}].id: missing")
                    };
                    if call.get("type").and_then(Value::as_str) != Some("function") {
                        invalid!("messages[{i}].tool_calls[{j}].type: must be 'function'")
                    }
                    if call.pointer("/function/name").and_then(Value::as_str).is_none() {
                        invalid!("messages[{i}].tool_calls[{j}].function.name: missing")
                    }
                    if !call.pointer("/function/arguments").is_some_and(Value::is_string) {
                        invalid!("messages[{i}].tool_calls[{j}].function.arguments: must be a string")
                    }
                    called.insert(id);
                    unanswered.push(id);
                }
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                if !called.contains(id) {
                    invalid!(
                        "messages[{i}]: messages with role 'tool' must be a response to a preceding message with \
                         'tool_calls' (tool_call_id {id:?})"
                    )
                }
                unanswered.retain(|u| *u != id);
            }
            other => invalid!("messages[{i}].role: {other:?} is not one of system, developer, user, assistant, tool"),
        }
    }
    for (i, tool) in request.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            invalid!("tools[{i}].type: must be 'function'")
        }
        if tool.pointer("/function/name").and_then(Value::as_str).is_none() {
            invalid!("tools[{i}].function.name: missing")
        }
    }
    Ok(())
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

fn call_id(seq: u64, i: usize) -> String {
    format!("call_mock_{seq}_{i}")
}

fn finish_reason(answer: &Answer) -> &'static str {
    if answer.calls_tools() { "tool_calls" } else { "stop" }
}

/// The non-streaming reply.
pub fn completion(answer: &Answer, request: &Value, seq: u64) -> Value {
    let mut message = json!({"role": "assistant", "content": null, "refusal": null});
    match &answer.content {
        Content::Text(text) => message["content"] = json!(text),
        Content::ToolCalls(names) => {
            let calls: Vec<Value> = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    json!({"id": call_id(seq, i), "type": "function",
                           "function": {"name": name, "arguments": tool_arguments(name).to_string()}})
                })
                .collect();
            message["tool_calls"] = json!(calls);
        }
    }
    if answer.reasoning {
        message["reasoning_content"] = json!(REASONING_TEXT);
    }
    json!({
        "id": format!("chatcmpl-mock-{seq}"),
        "object": "chat.completion",
        "created": unix_secs(),
        "model": model_of(request),
        "system_fingerprint": null,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(answer)}],
        "usage": usage(),
    })
}

/// The stream as SSE events: a role chunk, reasoning chunks, content chunks or tool call chunks (an opening chunk then
/// argument fragments per call), a finish chunk, the usage chunk when asked, `[DONE]`.
pub fn stream(answer: &Answer, request: &Value, seq: u64) -> Vec<String> {
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
    if answer.reasoning {
        for piece in split_content(REASONING_TEXT, 2) {
            events.push(chunk(json!({"reasoning_content": piece}), Value::Null));
        }
    }
    match &answer.content {
        Content::Text(text) => {
            for piece in split_content(text, DEFAULT_CONTENT_CHUNKS) {
                events.push(chunk(json!({"content": piece}), Value::Null));
            }
        }
        Content::ToolCalls(names) => {
            for (i, name) in names.iter().enumerate() {
                let open = json!({"index": i, "id": call_id(seq, i), "type": "function",
                                  "function": {"name": name, "arguments": ""}});
                events.push(chunk(json!({"tool_calls": [open]}), Value::Null));
                for piece in split_content(&tool_arguments(name).to_string(), ARGUMENT_FRAGMENTS) {
                    let frag = json!({"index": i, "function": {"arguments": piece}});
                    events.push(chunk(json!({"tool_calls": [frag]}), Value::Null));
                }
            }
        }
    }
    events.push(chunk(json!({}), json!(finish_reason(answer))));
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
    let mut out: Vec<String> = events.iter().map(data_event).collect();
    out.push("data: [DONE]\n\n".into());
    out
}

/// An OpenAI error body for `status` (also the Responses API's shape).
pub fn error_body(status: u16, message: Option<&str>) -> Value {
    let (kind, code) = match status {
        400 => ("invalid_request_error", Value::Null),
        401 => ("invalid_request_error", json!("invalid_api_key")),
        403 => ("permission_error", Value::Null),
        404 => ("invalid_request_error", json!("model_not_found")),
        429 => ("requests", json!("rate_limit_exceeded")),
        s if s >= 500 => ("server_error", Value::Null),
        _ => ("invalid_request_error", Value::Null),
    };
    let message = message.map_or_else(|| format!("mock upstream error (status {status})"), str::to_owned);
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
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
    fn stream_has_usage_only_when_asked() {
        let req = json!({"model": "m", "messages": [{"role": "user", "content": "ping"}], "stream": true});
        let plain = stream(&turn(&req).answer(), &req, 1);
        assert_eq!(plain.len(), 1 + DEFAULT_CONTENT_CHUNKS + 1 + 1);
        assert!(plain.iter().all(|e| !e.contains("\"usage\"")));
        let mut req = req;
        req["stream_options"] = json!({"include_usage": true});
        let with = stream(&turn(&req).answer(), &req, 1);
        assert_eq!(with.len(), plain.len() + 1);
        let usage: Value = serde_json::from_str(with[with.len() - 2].trim_start_matches("data: ").trim()).unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 5);
        assert_eq!(with.last().unwrap(), "data: [DONE]\n\n");
    }
}
