//! OpenAI Responses: `POST /v1/responses` (what the Codex CLI speaks).

use std::collections::HashSet;

use serde_json::{Value, json};

use super::reply::{
    ARGUMENT_FRAGMENTS, Answer, Content, DEFAULT_COMPLETION_TOKENS, DEFAULT_CONTENT_CHUNKS, DEFAULT_PROMPT_TOKENS,
    Invalid, REASONING_TEXT, RESPONSES_SIGNATURE, Turn, content_text, invalid, model_of, named_event, split_content,
    tool_arguments, unix_secs,
};

fn items(request: &Value) -> &[Value] {
    request.get("input").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn kind(item: &Value) -> &str {
    // An "easy" input message has a role and no type.
    item.get("type").and_then(Value::as_str).unwrap_or(if item.get("role").is_some() { "message" } else { "" })
}

/// Reads the last user turn: trailing `function_call_output` items are tool results.
pub fn turn(request: &Value) -> Turn {
    let text = match request.get("input") {
        Some(Value::String(s)) => s.clone(),
        _ => items(request)
            .iter()
            .rev()
            .find(|i| kind(i) == "message" && i.get("role").and_then(Value::as_str) == Some("user"))
            .map(|m| content_text(m.get("content"), &["input_text", "text"]))
            .unwrap_or_default(),
    };
    let mut tool_results: Vec<String> = items(request)
        .iter()
        .rev()
        .take_while(|i| kind(i) == "function_call_output")
        .map(|i| content_text(i.get("output"), &["input_text", "output_text", "text"]))
        .collect();
    tool_results.reverse();
    let tools = request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    Turn { text, tool_results, tools, reasoning: request.get("reasoning").is_some_and(|r| !r.is_null()) }
}

/// What the real API rejects: no `input`, a `function_call_output` whose `call_id` no earlier `function_call` has
/// (unless the request continues a stored response), malformed function calls and reasoning items, function tools
/// without a top-level `name` (the Chat shape).
pub fn validate(request: &Value) -> Result<(), Invalid> {
    match request.get("input") {
        Some(Value::String(_)) => {}
        Some(Value::Array(a)) if !a.is_empty() => {}
        _ => invalid!("Missing required parameter: 'input'."),
    }
    let continues = request.get("previous_response_id").is_some_and(|v| !v.is_null());
    let mut calls: HashSet<&str> = HashSet::new();
    for (i, item) in items(request).iter().enumerate() {
        match kind(item) {
            "message"
                if !matches!(
                    item.get("role").and_then(Value::as_str),
                    Some("user" | "assistant" | "system" | "developer")
                ) =>
            {
                invalid!("Invalid value for 'input[{i}].role'.")
            }
            "function_call" => {
                let Some(call_id) = item.get("call_id").and_then(Value::as_str) else {
                    invalid!("Missing required parameter: 'input[{i}].call_id'.")
                };
                if item.get("name").and_then(Value::as_str).is_none() {
                    invalid!("Missing required parameter: 'input[{i}].name'.")
                }
                if !item.get("arguments").is_some_and(Value::is_string) {
                    invalid!("Invalid type for 'input[{i}].arguments': expected a string.")
                }
                calls.insert(call_id);
            }
            "function_call_output" => {
                let call_id = item.get("call_id").and_then(Value::as_str).unwrap_or_default();
                if !continues && !calls.contains(call_id) {
                    invalid!("No tool call found for function call output with call_id {call_id}.")
                }
                if item.get("output").is_none_or(Value::is_null) {
                    invalid!("Missing required parameter: 'input[{i}].output'.")
                }
            }
            "reasoning" if !item.get("summary").is_some_and(Value::is_array) => {
                invalid!("Missing required parameter: 'input[{i}].summary'.")
            }
            "" => invalid!("Missing required parameter: 'input[{i}].type'."),
            _ => {}
        }
    }
    for (i, tool) in request.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let t = tool.get("type").and_then(Value::as_str).unwrap_or_default();
        if matches!(t, "function" | "custom") && tool.get("name").and_then(Value::as_str).is_none() {
            invalid!("Missing required parameter: 'tools[{i}].name'.")
        }
    }
    Ok(())
}

fn usage() -> Value {
    json!({
        "input_tokens": DEFAULT_PROMPT_TOKENS,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": DEFAULT_COMPLETION_TOKENS,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": DEFAULT_PROMPT_TOKENS + DEFAULT_COMPLETION_TOKENS,
    })
}

/// The complete output items of the answer.
fn output(answer: &Answer, seq: u64) -> Vec<Value> {
    let mut out = Vec::new();
    if answer.reasoning {
        out.push(json!({
            "id": format!("rs_mock_{seq}"),
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": REASONING_TEXT}],
            "encrypted_content": RESPONSES_SIGNATURE,
        }));
    }
    match &answer.content {
        Content::Text(text) => out.push(json!({
            "id": format!("msg_mock_{seq}"),
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        })),
        Content::ToolCalls(names) => out.extend(names.iter().enumerate().map(|(i, name)| {
            json!({
                "id": format!("fc_mock_{seq}_{i}"),
                "type": "function_call",
                "status": "completed",
                "call_id": format!("call_mock_{seq}_{i}"),
                "name": name,
                "arguments": tool_arguments(name).to_string(),
            })
        })),
    }
    out
}

fn response(request: &Value, seq: u64, status: &str, output: Vec<Value>, usage: Value) -> Value {
    json!({
        "id": format!("resp_mock_{seq}"),
        "object": "response",
        "created_at": unix_secs(),
        "status": status,
        "model": model_of(request),
        "output": output,
        "usage": usage,
        "error": null,
        "incomplete_details": null,
        "parallel_tool_calls": true,
        "tool_choice": request.get("tool_choice").cloned().unwrap_or(json!("auto")),
        "tools": request.get("tools").cloned().unwrap_or(json!([])),
    })
}

/// The non-streaming reply.
pub fn reply(answer: &Answer, request: &Value, seq: u64) -> Value {
    response(request, seq, "completed", output(answer, seq), usage())
}

/// The stream: `response.created`, `response.in_progress`, per item `output_item.added`, its parts and deltas and
/// `.done` events, `output_item.done`; then `response.completed` with every item and the usage. Every event has an
/// `event:` line equal to its `type` and a `sequence_number` from 0.
pub fn stream(answer: &Answer, request: &Value, seq: u64) -> Vec<String> {
    let mut events: Vec<Value> = Vec::new();
    let in_progress = response(request, seq, "in_progress", vec![], Value::Null);
    events.push(json!({"type": "response.created", "response": in_progress}));
    events.push(json!({"type": "response.in_progress", "response": in_progress}));
    let items = output(answer, seq);
    for (output_index, item) in items.iter().enumerate() {
        let item_id = item["id"].clone();
        let mut added = item.clone();
        match item["type"].as_str().unwrap_or_default() {
            "reasoning" => {
                added["summary"] = json!([]);
                events.push(json!({"type": "response.output_item.added", "output_index": output_index, "item": added}));
                let ids = json!({"item_id": item_id, "output_index": output_index, "summary_index": 0});
                let with = |mut v: Value| {
                    merge(&mut v, &ids);
                    v
                };
                events.push(with(json!({"type": "response.reasoning_summary_part.added",
                                        "part": {"type": "summary_text", "text": ""}})));
                events.push(with(json!({"type": "response.reasoning_summary_text.delta", "delta": REASONING_TEXT})));
                events.push(with(json!({"type": "response.reasoning_summary_text.done", "text": REASONING_TEXT})));
                events.push(with(json!({"type": "response.reasoning_summary_part.done",
                                        "part": {"type": "summary_text", "text": REASONING_TEXT}})));
            }
            "message" => {
                added["status"] = json!("in_progress");
                added["content"] = json!([]);
                events.push(json!({"type": "response.output_item.added", "output_index": output_index, "item": added}));
                let ids = json!({"item_id": item_id, "output_index": output_index, "content_index": 0});
                let with = |mut v: Value| {
                    merge(&mut v, &ids);
                    v
                };
                let text = item["content"][0]["text"].as_str().unwrap_or_default();
                events.push(with(json!({"type": "response.content_part.added",
                                        "part": {"type": "output_text", "text": "", "annotations": []}})));
                for piece in split_content(text, DEFAULT_CONTENT_CHUNKS) {
                    events.push(with(json!({"type": "response.output_text.delta", "delta": piece})));
                }
                events.push(with(json!({"type": "response.output_text.done", "text": text})));
                events.push(with(json!({"type": "response.content_part.done", "part": item["content"][0]})));
            }
            _ => {
                added["status"] = json!("in_progress");
                added["arguments"] = json!("");
                events.push(json!({"type": "response.output_item.added", "output_index": output_index, "item": added}));
                let args = item["arguments"].as_str().unwrap_or_default();
                for piece in split_content(args, ARGUMENT_FRAGMENTS) {
                    events.push(json!({"type": "response.function_call_arguments.delta", "item_id": item_id,
                                       "output_index": output_index, "delta": piece}));
                }
                events.push(json!({"type": "response.function_call_arguments.done", "item_id": item_id,
                                   "output_index": output_index, "arguments": args}));
            }
        }
        events.push(json!({"type": "response.output_item.done", "output_index": output_index, "item": item}));
    }
    events.push(json!({"type": "response.completed", "response": response(request, seq, "completed", items, usage())}));
    events
        .into_iter()
        .enumerate()
        .map(|(n, mut e)| {
            e["sequence_number"] = json!(n);
            let name = e["type"].as_str().unwrap_or_default().to_owned();
            named_event(&name, &e)
        })
        .collect()
}

fn merge(into: &mut Value, from: &Value) {
    if let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in from {
            into.insert(k.clone(), v.clone());
        }
    }
}
