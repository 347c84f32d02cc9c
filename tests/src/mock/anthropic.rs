//! Anthropic Messages: `POST /v1/messages` (query ignored), `POST /v1/messages/count_tokens`, the model listing.

use std::collections::HashSet;

use http::HeaderMap;
use serde_json::{Value, json};

use super::reply::{
    ANTHROPIC_SIGNATURE, ARGUMENT_FRAGMENTS, Answer, Content, DEFAULT_COMPLETION_TOKENS, DEFAULT_CONTENT_CHUNKS,
    DEFAULT_PROMPT_TOKENS, Invalid, MOCK_MODELS, REASONING_TEXT, Turn, content_text, invalid, model_of, named_event,
    split_content, tool_arguments,
};

fn blocks(content: Option<&Value>) -> &[Value] {
    content.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn kind(block: &Value) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// Reads the last user turn: its `tool_result` blocks are tool results (content a string or text blocks).
pub fn turn(request: &Value) -> Turn {
    let messages = request.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let last_user = messages.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
    let content = last_user.and_then(|m| m.get("content"));
    let tool_results = blocks(content)
        .iter()
        .filter(|b| kind(b) == "tool_result")
        .map(|b| content_text(b.get("content"), &["text"]))
        .collect();
    let tools = request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let thinking = request.pointer("/thinking/type").and_then(Value::as_str);
    Turn {
        text: content_text(content, &["text"]),
        tool_results,
        tools,
        reasoning: matches!(thinking, Some("enabled" | "adaptive")),
    }
}

fn thinking_on(request: &Value) -> bool {
    matches!(request.pointer("/thinking/type").and_then(Value::as_str), Some("enabled" | "adaptive"))
}

/// What the real API rejects (see docs/test-contract.md): a missing `anthropic-version` header or `max_tokens`, no
/// messages, roles that do not alternate from `user`, empty text, tool results that answer nothing or do not come
/// first, tool uses left unanswered, non-object tool input, unsigned thinking, sampling settings with thinking, tools
/// without `input_schema`. `count_tokens` skips the `max_tokens` check.
pub fn validate(request: &Value, headers: &HeaderMap, count_tokens: bool) -> Result<(), Invalid> {
    if !headers.contains_key("anthropic-version") {
        invalid!("anthropic-version: header is required")
    }
    if !count_tokens && request.get("max_tokens").and_then(Value::as_u64).is_none_or(|n| n < 1) {
        invalid!("max_tokens: Field required")
    }
    let Some(messages) = request.get("messages").and_then(Value::as_array).filter(|m| !m.is_empty()) else {
        invalid!("messages: at least one message is required")
    };
    let mut previous_tool_uses: Vec<&str> = Vec::new();
    // `system`-role messages (a beta Claude Code uses for mid-conversation reminders) sit outside the alternation.
    let messages: Vec<&Value> =
        messages.iter().filter(|m| m.get("role").and_then(Value::as_str) != Some("system")).collect();
    for (i, m) in messages.iter().copied().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if role != expected {
            invalid!(
                "messages.{i}.role: roles must alternate between \"user\" and \"assistant\", starting with \"user\"; got {role:?}"
            )
        }
        let is_final_assistant = role == "assistant" && i + 1 == messages.len();
        match m.get("content") {
            Some(Value::String(s)) if s.is_empty() && !is_final_assistant => {
                invalid!(
                    "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
                )
            }
            Some(Value::String(_)) => {}
            Some(Value::Array(b)) if b.is_empty() && !is_final_assistant => {
                invalid!(
                    "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
                )
            }
            Some(Value::Array(_)) => {}
            _ => invalid!("messages.{i}.content: Field required"),
        }
        let content = blocks(m.get("content"));
        let mut answered: HashSet<&str> = HashSet::new();
        let mut seen_other = false;
        let mut tool_uses = Vec::new();
        for (j, b) in content.iter().enumerate() {
            match kind(b) {
                "text" => {
                    if b.get("text").and_then(Value::as_str).is_none_or(str::is_empty) {
                        invalid!("messages.{i}.content.{j}.text: text content blocks must be non-empty")
                    }
                    seen_other = true;
                }
                "tool_result" => {
                    if role != "user" {
                        invalid!("messages.{i}.content.{j}: tool_result blocks are only allowed in user messages")
                    }
                    let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or_default();
                    if !previous_tool_uses.contains(&id) {
                        invalid!(
                            "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. \
                             Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        )
                    }
                    if seen_other {
                        invalid!("messages.{i}.content.{j}: tool_result blocks must come first in the user message")
                    }
                    answered.insert(id);
                }
                "tool_use" => {
                    if role != "assistant" {
                        invalid!("messages.{i}.content.{j}: tool_use blocks are only allowed in assistant messages")
                    }
                    if !b.get("input").is_some_and(Value::is_object) {
                        invalid!("messages.{i}.content.{j}.tool_use.input: Input should be a valid dictionary")
                    }
                    let Some(id) = b.get("id").and_then(Value::as_str) else {
                        invalid!("messages.{i}.content.{j}.tool_use.id: Field required")
                    };
                    tool_uses.push(id);
                    seen_other = true;
                }
                "thinking" => {
                    if b.get("signature").and_then(Value::as_str).is_none_or(str::is_empty) {
                        invalid!("messages.{i}.content.{j}.thinking.signature: Field required")
                    }
                    seen_other = true;
                }
                "redacted_thinking" => {
                    if b.get("data").and_then(Value::as_str).is_none_or(str::is_empty) {
                        invalid!("messages.{i}.content.{j}.redacted_thinking.data: Field required")
                    }
                    seen_other = true;
                }
                "image" | "document" | "search_result" | "server_tool_use" | "web_search_tool_result" => {
                    seen_other = true
                }
                other => invalid!("messages.{i}.content.{j}.type: unknown content block type {other:?}"),
            }
        }
        if role == "user" && !previous_tool_uses.is_empty() {
            let missing: Vec<&str> = previous_tool_uses.iter().copied().filter(|id| !answered.contains(id)).collect();
            if !missing.is_empty() {
                invalid!(
                    "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. \
                     Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                    missing.join(", ")
                )
            }
        }
        previous_tool_uses = tool_uses;
    }
    if thinking_on(request) {
        if request.get("temperature").is_some_and(|t| t.as_f64() != Some(1.0)) {
            invalid!("temperature: may only be set to 1 when thinking is enabled")
        }
        if request.get("top_k").is_some_and(|v| !v.is_null()) {
            invalid!("top_k: is not compatible with thinking")
        }
        if request.pointer("/thinking/type").and_then(Value::as_str) == Some("enabled") {
            let budget = request.pointer("/thinking/budget_tokens").and_then(Value::as_u64).unwrap_or(0);
            let max = request.get("max_tokens").and_then(Value::as_u64).unwrap_or(u64::MAX);
            if budget < 1024 {
                invalid!("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
            }
            if !count_tokens && budget >= max {
                invalid!("max_tokens: must be greater than thinking.budget_tokens")
            }
        }
    }
    for (i, tool) in request.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if tool.get("name").and_then(Value::as_str).is_none() {
            invalid!("tools.{i}.name: Field required")
        }
        // Server tools (web search and the like) carry a `type` and no schema.
        if tool.get("type").is_none_or(|t| t == "custom") && !tool.get("input_schema").is_some_and(Value::is_object) {
            invalid!("tools.{i}.custom.input_schema: Field required")
        }
    }
    Ok(())
}

fn usage(output_tokens: u64) -> Value {
    json!({
        "input_tokens": DEFAULT_PROMPT_TOKENS,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    })
}

fn tool_use_id(seq: u64, i: usize) -> String {
    format!("toolu_mock_{seq}_{i}")
}

fn stop_reason(answer: &Answer) -> &'static str {
    if answer.calls_tools() { "tool_use" } else { "end_turn" }
}

/// The content blocks of the answer.
fn content(answer: &Answer, seq: u64) -> Vec<Value> {
    let mut out = Vec::new();
    if answer.reasoning {
        out.push(json!({"type": "thinking", "thinking": REASONING_TEXT, "signature": ANTHROPIC_SIGNATURE}));
    }
    match &answer.content {
        Content::Text(text) => out.push(json!({"type": "text", "text": text})),
        Content::ToolCalls(names) => out.extend(names.iter().enumerate().map(|(i, name)| {
            json!({"type": "tool_use", "id": tool_use_id(seq, i), "name": name, "input": tool_arguments(name)})
        })),
    }
    out
}

/// The non-streaming reply.
pub fn message(answer: &Answer, request: &Value, seq: u64) -> Value {
    json!({
        "id": format!("msg_mock_{seq}"),
        "type": "message",
        "role": "assistant",
        "model": model_of(request),
        "content": content(answer, seq),
        "stop_reason": stop_reason(answer),
        "stop_sequence": null,
        "usage": usage(DEFAULT_COMPLETION_TOKENS),
    })
}

/// The stream: `message_start`, `ping`, per block `content_block_start` / deltas / `content_block_stop`,
/// `message_delta` with the stop reason and output tokens, `message_stop`; every event with its `event:` line.
pub fn stream(answer: &Answer, request: &Value, seq: u64) -> Vec<String> {
    let mut start = message(answer, request, seq);
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    start["usage"] = usage(1);
    let mut out = vec![
        named_event("message_start", &json!({"type": "message_start", "message": start})),
        named_event("ping", &json!({"type": "ping"})),
    ];
    for (index, block) in content(answer, seq).into_iter().enumerate() {
        let delta = |delta: Value| {
            named_event("content_block_delta", &json!({"type": "content_block_delta", "index": index, "delta": delta}))
        };
        let (opening, deltas): (Value, Vec<String>) = match kind(&block) {
            "thinking" => (
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                vec![
                    delta(json!({"type": "thinking_delta", "thinking": REASONING_TEXT})),
                    delta(json!({"type": "signature_delta", "signature": ANTHROPIC_SIGNATURE})),
                ],
            ),
            "tool_use" => {
                let args = block["input"].to_string();
                let mut opening = block.clone();
                opening["input"] = json!({});
                let fragments = split_content(&args, ARGUMENT_FRAGMENTS);
                (
                    opening,
                    fragments.iter().map(|f| delta(json!({"type": "input_json_delta", "partial_json": f}))).collect(),
                )
            }
            _ => {
                let text = block["text"].as_str().unwrap_or_default();
                let pieces = split_content(text, DEFAULT_CONTENT_CHUNKS);
                (
                    json!({"type": "text", "text": ""}),
                    pieces.iter().map(|p| delta(json!({"type": "text_delta", "text": p}))).collect(),
                )
            }
        };
        out.push(named_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": opening}),
        ));
        out.extend(deltas);
        out.push(named_event("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
    }
    out.push(named_event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(answer), "stop_sequence": null},
                "usage": {"output_tokens": DEFAULT_COMPLETION_TOKENS}}),
    ));
    out.push(named_event("message_stop", &json!({"type": "message_stop"})));
    out
}

/// `POST /v1/messages/count_tokens`.
pub fn count_tokens() -> Value {
    json!({"input_tokens": DEFAULT_PROMPT_TOKENS})
}

/// The error type Anthropic names for `status`.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// An Anthropic error body for `status`.
pub fn error_body(status: u16, message: Option<&str>) -> Value {
    let message = message.map_or_else(|| format!("mock upstream error (status {status})"), str::to_owned);
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

/// The body of `GET /v1/models` asked with Anthropic headers.
pub fn models() -> Value {
    let data: Vec<Value> = MOCK_MODELS
        .iter()
        .map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-01-01T00:00:00Z"}))
        .collect();
    json!({"data": data, "has_more": false, "first_id": MOCK_MODELS.first(), "last_id": MOCK_MODELS.last()})
}
