//! Gemini: `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent` (SSE with `alt=sse`, else one
//! streamed JSON array), `:countTokens`, the same under `/v1/models/`, and `GET /v1beta/models`.

use serde_json::{Value, json};

use super::reply::{
    Answer, Content, DEFAULT_COMPLETION_TOKENS, DEFAULT_CONTENT_CHUNKS, DEFAULT_PROMPT_TOKENS, GEMINI_SIGNATURE,
    Invalid, MOCK_MODELS, REASONING_TEXT, Turn, invalid, split_content, tool_arguments,
};

/// What a `POST …/models/{model}:{action}` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `:generateContent`.
    Generate,
    /// `:streamGenerateContent`, as SSE when `sse` (`alt=sse`), else as one streamed JSON array.
    Stream {
        /// `alt=sse` was asked.
        sse: bool,
    },
    /// `:countTokens`.
    CountTokens,
}

/// Splits `/v1beta/models/{model}:{action}` (or `/v1/models/…`) into the model and the action.
pub fn parse_path<'a>(path: &'a str, query: Option<&str>) -> Option<(&'a str, Action)> {
    let rest = path.strip_prefix("/v1beta/models/").or_else(|| path.strip_prefix("/v1/models/"))?;
    let (model, action) = rest.rsplit_once(':')?;
    let action = match action {
        "generateContent" => Action::Generate,
        "streamGenerateContent" => {
            let sse = query.is_some_and(|q| q.split('&').any(|p| p == "alt=sse"));
            Action::Stream { sse }
        }
        "countTokens" => Action::CountTokens,
        _ => return None,
    };
    Some((model, action))
}

fn contents(request: &Value) -> &[Value] {
    request.get("contents").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn parts(content: &Value) -> &[Value] {
    content.get("parts").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// Reads the last user turn: its `functionResponse` parts are tool results (each response as compact JSON).
pub fn turn(request: &Value) -> Turn {
    let last_user = contents(request).iter().rev().find(|c| c.get("role").and_then(Value::as_str) == Some("user"));
    let user_parts = last_user.map(parts).unwrap_or_default();
    let text = user_parts
        .iter()
        .filter(|p| p.get("thought").and_then(Value::as_bool) != Some(true))
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    let tool_results = user_parts
        .iter()
        .filter_map(|p| p.get("functionResponse"))
        .map(|r| r.get("response").cloned().unwrap_or(Value::Null).to_string())
        .collect();
    let tools = request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|t| t.get("functionDeclarations").and_then(Value::as_array).into_iter().flatten())
        .filter_map(|d| d.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let reasoning =
        ["/generationConfig/thinkingConfig/includeThoughts", "/generationConfig/thinkingConfig/include_thoughts"]
            .iter()
            .any(|p| request.pointer(p).and_then(Value::as_bool) == Some(true));
    Turn { text, tool_results, tools, reasoning }
}

/// What the real API rejects: no model in the path, no contents, roles other than `user` / `model`, empty parts, a
/// `functionResponse` without a name, `functionCall` args that are not an object.
pub fn validate(model: &str, request: &Value) -> Result<(), Invalid> {
    if model.is_empty() {
        invalid!("model name is required in the path (models/{{model}}:action)")
    }
    let Some(contents) = request.get("contents").and_then(Value::as_array).filter(|c| !c.is_empty()) else {
        invalid!("* GenerateContentRequest.contents: contents is not specified")
    };
    for (i, c) in contents.iter().enumerate() {
        let role = c.get("role").and_then(Value::as_str).unwrap_or_default();
        if !matches!(role, "user" | "model") {
            invalid!("Please use a valid role: user, model. (contents[{i}].role is {role:?})")
        }
        let parts = parts(c);
        if parts.is_empty() {
            invalid!("* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
        }
        for (j, p) in parts.iter().enumerate() {
            if let Some(r) = p.get("functionResponse")
                && r.get("name").and_then(Value::as_str).is_none_or(str::is_empty)
            {
                invalid!(
                    "* GenerateContentRequest.contents[{i}].parts[{j}].function_response.name: Name cannot be empty."
                )
            }
            if let Some(call) = p.get("functionCall") {
                if call.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                    invalid!(
                        "* GenerateContentRequest.contents[{i}].parts[{j}].function_call.name: Name cannot be empty."
                    )
                }
                if call.get("args").is_some_and(|a| !a.is_object()) {
                    invalid!("* GenerateContentRequest.contents[{i}].parts[{j}].function_call.args: must be an object")
                }
            }
        }
    }
    Ok(())
}

fn usage(candidates: Option<u64>) -> Value {
    let mut u = json!({"promptTokenCount": DEFAULT_PROMPT_TOKENS, "totalTokenCount": DEFAULT_PROMPT_TOKENS});
    if let Some(n) = candidates {
        u["candidatesTokenCount"] = json!(n);
        u["totalTokenCount"] = json!(DEFAULT_PROMPT_TOKENS + n);
    }
    u
}

fn thought_part() -> Value {
    json!({"text": REASONING_TEXT, "thought": true, "thoughtSignature": GEMINI_SIGNATURE})
}

fn call_parts(names: &[String]) -> Vec<Value> {
    names.iter().map(|name| json!({"functionCall": {"name": name, "args": tool_arguments(name)}})).collect()
}

fn chunk(model: &str, seq: u64, parts: Vec<Value>, finish: bool, usage: Value) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    if finish {
        candidate["finishReason"] = json!("STOP");
    }
    json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": format!("mock-{seq}")})
}

/// The non-streaming reply.
pub fn reply(answer: &Answer, model: &str, seq: u64) -> Value {
    let mut parts = Vec::new();
    if answer.reasoning {
        parts.push(thought_part());
    }
    match &answer.content {
        Content::Text(text) => parts.push(json!({"text": text})),
        Content::ToolCalls(names) => parts.extend(call_parts(names)),
    }
    chunk(model, seq, parts, true, usage(Some(DEFAULT_COMPLETION_TOKENS)))
}

/// The stream's chunks: the thought part alone, then 5 text chunks (the last with `finishReason: STOP`) or one chunk
/// with every whole `functionCall` and `STOP`. `usageMetadata` is a running total; the last chunk has the full counts.
pub fn stream_chunks(answer: &Answer, model: &str, seq: u64) -> Vec<Value> {
    let mut out = Vec::new();
    if answer.reasoning {
        out.push(chunk(model, seq, vec![thought_part()], false, usage(None)));
    }
    match &answer.content {
        Content::Text(text) => {
            let pieces = split_content(text, DEFAULT_CONTENT_CHUNKS);
            let last = pieces.len() - 1;
            for (i, piece) in pieces.into_iter().enumerate() {
                let u = if i == last { usage(Some(DEFAULT_COMPLETION_TOKENS)) } else { usage(Some(i as u64 + 1)) };
                out.push(chunk(model, seq, vec![json!({"text": piece})], i == last, u));
            }
        }
        Content::ToolCalls(names) => {
            out.push(chunk(model, seq, call_parts(names), true, usage(Some(DEFAULT_COMPLETION_TOKENS))));
        }
    }
    out
}

/// The stream as SSE events (`data: ` lines only).
pub fn stream_sse(answer: &Answer, model: &str, seq: u64) -> Vec<String> {
    stream_chunks(answer, model, seq).iter().map(|c| format!("data: {c}\r\n\r\n")).collect()
}

/// The stream as the pieces of one JSON array, each sent as its own chunk: `[{…}`, `,\r\n{…}`, …, `]`.
pub fn stream_array(answer: &Answer, model: &str, seq: u64) -> Vec<String> {
    let mut out: Vec<String> = stream_chunks(answer, model, seq)
        .iter()
        .enumerate()
        .map(|(i, c)| if i == 0 { format!("[{c}") } else { format!(",\r\n{c}") })
        .collect();
    out.push("]".into());
    out
}

/// `:countTokens`.
pub fn count_tokens() -> Value {
    json!({"totalTokens": DEFAULT_PROMPT_TOKENS})
}

/// The status name Gemini gives `status`.
pub fn status_name(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        s if s >= 500 => "INTERNAL",
        _ => "INVALID_ARGUMENT",
    }
}

/// A Gemini error body for `status`.
pub fn error_body(status: u16, message: Option<&str>) -> Value {
    let message = message.map_or_else(|| format!("mock upstream error (status {status})"), str::to_owned);
    json!({"error": {"code": status, "message": message, "status": status_name(status)}})
}

/// The body of `GET /v1beta/models`.
pub fn models() -> Value {
    let models: Vec<Value> = MOCK_MODELS
        .iter()
        .map(|id| {
            json!({"name": format!("models/{id}"), "displayName": id, "inputTokenLimit": 1_048_576,
                   "outputTokenLimit": 65_536,
                   "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"]})
        })
        .collect();
    json!({"models": models})
}
