//! Chat Completions request bodies ⇄ [`ChatRequest`].
//!
//! Decoding walks a parsed [`Value`] rather than typed structs so that every refusal names the offending field
//! (`messages[3].tool_calls[0].function.name must be a string`): this runs once per request, not per chunk.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use xai_core::ir::{
    ChatRequest, FileSource, ImageSource, Message, Part, Reasoning, ReasoningConfig, ResponseFormat, Role, Signature,
    SystemBlock, Tool, ToolCall, ToolChoice, ToolKind, ToolResult,
};
use xai_core::{Endpoint, GatewayError, Protocol};

const P: Protocol = Protocol::OpenAiChat;

fn bad(msg: impl Into<String>) -> GatewayError {
    GatewayError::BadRequest(msg.into())
}

/// A field that must be a string when present (`null` counts as absent).
fn opt_str<'a>(o: &'a Map<String, Value>, key: &str, path: &str) -> Result<Option<&'a str>, GatewayError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("`{path}{key}` must be a string"))),
    }
}

fn req_str<'a>(o: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a str, GatewayError> {
    opt_str(o, key, path)?.ok_or_else(|| bad(format!("`{path}{key}` is required")))
}

fn opt_u64(o: &Map<String, Value>, key: &str) -> Result<Option<u64>, GatewayError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| bad(format!("`{key}` must be a non-negative integer"))),
    }
}

fn opt_f64(o: &Map<String, Value>, key: &str) -> Result<Option<f64>, GatewayError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| bad(format!("`{key}` must be a number"))),
    }
}

fn opt_bool(o: &Map<String, Value>, key: &str, path: &str) -> Result<Option<bool>, GatewayError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(format!("`{path}{key}` must be a boolean"))),
    }
}

fn obj<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, GatewayError> {
    v.as_object().ok_or_else(|| bad(format!("`{path}` must be an object")))
}

fn arr<'a>(o: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a [Value], GatewayError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(bad(format!("`{path}{key}` must be an array"))),
    }
}

/// Decodes a Chat Completions client body.
pub fn decode_request(_endpoint: &Endpoint, body: &Bytes) -> Result<ChatRequest, GatewayError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("request body is not valid JSON: {e}")))?;
    let o = obj(&v, "request body")?;
    let model = req_str(o, "model", "")?;
    if model.is_empty() {
        return Err(bad("`model` must not be empty"));
    }
    let mut req = ChatRequest { model: model.to_string(), ..ChatRequest::default() };
    match o.get("messages") {
        Some(Value::Array(msgs)) => decode_messages(msgs, &mut req)?,
        Some(_) => return Err(bad("`messages` must be an array")),
        None => return Err(bad("you must provide a messages parameter")),
    }
    let tools = arr(o, "tools", "")?;
    for (i, t) in tools.iter().enumerate() {
        if let Some(tool) = decode_tool(t, i)? {
            req.tools.push(tool);
        }
    }
    // The deprecated `functions` list, only when no `tools` were given.
    if tools.is_empty() {
        for (i, f) in arr(o, "functions", "")?.iter().enumerate() {
            req.tools.push(decode_function(f, &format!("functions[{i}]."))?);
        }
    }
    req.tool_choice = match o.get("tool_choice") {
        None | Some(Value::Null) => match o.get("function_call") {
            None | Some(Value::Null) => None,
            Some(v) => Some(decode_tool_choice(v, "function_call")?),
        },
        Some(v) => Some(decode_tool_choice(v, "tool_choice")?),
    };
    req.parallel_tool_calls = opt_bool(o, "parallel_tool_calls", "")?;
    req.max_tokens = match opt_u64(o, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => opt_u64(o, "max_tokens")?,
    };
    req.temperature = opt_f64(o, "temperature")?;
    req.top_p = opt_f64(o, "top_p")?;
    req.top_k = opt_u64(o, "top_k")?;
    req.stop = match o.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str().map(str::to_string).ok_or_else(|| bad("`stop` must be a string or an array of strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("`stop` must be a string or an array of strings")),
    };
    req.stream = opt_bool(o, "stream", "")?.unwrap_or(false);
    req.reasoning = decode_reasoning(o)?;
    req.response_format = decode_response_format(o.get("response_format"))?;
    req.user = match opt_str(o, "user", "")? {
        Some(u) => Some(u.to_string()),
        None => opt_str(o, "safety_identifier", "")?.map(str::to_string),
    };
    Ok(req)
}

fn decode_reasoning(o: &Map<String, Value>) -> Result<Option<ReasoningConfig>, GatewayError> {
    if let Some(effort) = opt_str(o, "reasoning_effort", "")? {
        let disabled = effort == "none";
        return Ok(Some(ReasoningConfig {
            effort: (!disabled).then(|| effort.to_string()),
            include_thoughts: !disabled,
            disabled,
            ..ReasoningConfig::default()
        }));
    }
    // `thinking: {type: "enabled" | "disabled", budget_tokens}` (DeepSeek, Qwen, Doubao and other compatibles).
    if let Some(Value::Object(t)) = o.get("thinking") {
        let disabled = opt_str(t, "type", "thinking.")? == Some("disabled");
        return Ok(Some(ReasoningConfig {
            budget_tokens: opt_u64(t, "budget_tokens")?,
            include_thoughts: !disabled,
            disabled,
            ..ReasoningConfig::default()
        }));
    }
    Ok(None)
}

fn decode_response_format(v: Option<&Value>) -> Result<Option<ResponseFormat>, GatewayError> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    let o = obj(v, "response_format")?;
    match req_str(o, "type", "response_format.")? {
        "json_object" => Ok(Some(ResponseFormat::JsonObject)),
        "json_schema" => {
            let s = obj(o.get("json_schema").unwrap_or(&Value::Null), "response_format.json_schema")?;
            Ok(Some(ResponseFormat::JsonSchema {
                name: opt_str(s, "name", "response_format.json_schema.")?.unwrap_or("response").to_string(),
                schema: s.get("schema").cloned().unwrap_or_else(|| json!({})),
                strict: opt_bool(s, "strict", "response_format.json_schema.")?,
            }))
        }
        _ => Ok(None),
    }
}

fn decode_tool_choice(v: &Value, field: &str) -> Result<ToolChoice, GatewayError> {
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" | "any" => Ok(ToolChoice::Required),
            other => Err(bad(format!("`{field}` has an unknown value {other:?}"))),
        },
        Value::Object(o) => {
            // {type:"function", function:{name}}, {type:"custom", custom:{name}}, legacy {name},
            // {type:"allowed_tools", allowed_tools:{mode}}.
            let ty = opt_str(o, "type", &format!("{field}."))?.unwrap_or("function");
            if ty == "allowed_tools" {
                let mode = o.get("allowed_tools").and_then(|a| a.get("mode")).and_then(Value::as_str);
                return Ok(if mode == Some("required") { ToolChoice::Required } else { ToolChoice::Auto });
            }
            let inner = o.get(ty).and_then(Value::as_object).unwrap_or(o);
            let name = req_str(inner, "name", &format!("{field}.{ty}."))?;
            Ok(ToolChoice::Tool(name.to_string()))
        }
        _ => Err(bad(format!("`{field}` must be a string or an object"))),
    }
}

fn decode_function(f: &Value, path: &str) -> Result<Tool, GatewayError> {
    let f = obj(f, path.trim_end_matches('.'))?;
    Ok(Tool {
        name: req_str(f, "name", path)?.to_string(),
        description: opt_str(f, "description", path)?.map(str::to_string),
        parameters: match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p) => p.clone(),
        },
        strict: opt_bool(f, "strict", path)?,
        kind: ToolKind::Function,
        custom_format: None,
    })
}

fn decode_tool(t: &Value, i: usize) -> Result<Option<Tool>, GatewayError> {
    let path = format!("tools[{i}]");
    let o = obj(t, &path)?;
    match opt_str(o, "type", &format!("{path}."))?.unwrap_or("function") {
        "function" => {
            let f = o.get("function").ok_or_else(|| bad(format!("`{path}.function` is required")))?;
            decode_function(f, &format!("{path}.function.")).map(Some)
        }
        "custom" => {
            let c = obj(o.get("custom").unwrap_or(&Value::Null), &format!("{path}.custom"))?;
            let p = format!("{path}.custom.");
            Ok(Some(Tool {
                name: req_str(c, "name", &p)?.to_string(),
                description: opt_str(c, "description", &p)?.map(str::to_string),
                parameters: json!({"type": "object", "properties": {}}),
                strict: None,
                kind: ToolKind::Custom,
                custom_format: c.get("format").filter(|f| !f.is_null()).cloned(),
            }))
        }
        // Provider tools (web search, …) have no IR form: ignored like unknown fields.
        _ => Ok(None),
    }
}

/// Text parts of a string-or-parts content (system, developer): `(text, cached)`.
fn content_texts(c: Option<&Value>, path: &str) -> Result<Vec<(String, bool)>, GatewayError> {
    match c {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![(s.clone(), false)]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                let pp = format!("{path}.content[{j}]");
                let po = obj(p, &pp)?;
                if let Some(text) = opt_str(po, "text", &format!("{pp}."))? {
                    out.push((text.to_string(), po.contains_key("cache_control")));
                }
            }
            Ok(out)
        }
        Some(_) => Err(bad(format!("`{path}.content` must be a string or an array of parts"))),
    }
}

/// Parts of user (or tool) content: text, images, files; audio is not translatable and is skipped.
fn content_parts(c: Option<&Value>, path: &str) -> Result<Vec<Part>, GatewayError> {
    let parts = match c {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![Part::Text { text: s.clone(), cache: false }]),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(bad(format!("`{path}.content` must be a string or an array of parts"))),
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let pp = format!("{path}.content[{j}]");
        let po = obj(p, &pp)?;
        let dot = format!("{pp}.");
        match opt_str(po, "type", &dot)?.unwrap_or("text") {
            "text" | "refusal" | "input_text" => {
                let text = match opt_str(po, "text", &dot)? {
                    Some(t) => t,
                    None => req_str(po, "refusal", &dot)?,
                };
                out.push(Part::Text { text: text.to_string(), cache: po.contains_key("cache_control") });
            }
            "image_url" => {
                let url = match po.get("image_url") {
                    Some(Value::String(u)) => u.as_str(),
                    Some(Value::Object(i)) => req_str(i, "url", &format!("{pp}.image_url."))?,
                    _ => return Err(bad(format!("`{pp}.image_url` must be an object with a url"))),
                };
                out.push(Part::Image(ImageSource::from_url(url)));
            }
            "file" => {
                let f = obj(po.get("file").unwrap_or(&Value::Null), &format!("{pp}.file"))?;
                let fp = format!("{pp}.file.");
                let filename = opt_str(f, "filename", &fp)?;
                if let Some(data) = opt_str(f, "file_data", &fp)? {
                    let (media_type, data) = match ImageSource::from_url(data) {
                        ImageSource::Base64 { media_type, data } => (media_type, data),
                        ImageSource::Url(raw) => (media_type_of(filename), raw),
                    };
                    out.push(Part::File { media_type, source: FileSource::Base64(data) });
                } else if let Some(id) = opt_str(f, "file_id", &fp)? {
                    out.push(Part::File { media_type: media_type_of(filename), source: FileSource::Url(id.into()) });
                } else {
                    return Err(bad(format!("`{pp}.file` needs file_data or file_id")));
                }
            }
            // input_audio and anything newer: nothing to translate it into.
            _ => {}
        }
    }
    Ok(out)
}

fn media_type_of(filename: Option<&str>) -> String {
    let ext = filename.and_then(|f| f.rsplit_once('.')).map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain",
        Some("md") => "text/markdown",
        Some("csv") => "text/csv",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        _ => "application/octet-stream",
    }
    .to_string()
}

fn decode_messages(msgs: &[Value], req: &mut ChatRequest) -> Result<(), GatewayError> {
    // Whether the last IR message is a User message made of tool results (consecutive tool messages merge).
    let mut in_tool_results = false;
    for (i, m) in msgs.iter().enumerate() {
        let path = format!("messages[{i}]");
        let o = obj(m, &path)?;
        let dot = format!("{path}.");
        let role = req_str(o, "role", &dot)?;
        let was_tool = std::mem::replace(&mut in_tool_results, false);
        match role {
            "system" | "developer" => {
                for (text, cache) in content_texts(o.get("content"), &path)? {
                    req.system.push(SystemBlock { text, cache });
                }
                // A system message between tool results does not end the tool turn.
                in_tool_results = was_tool;
            }
            "user" => {
                let parts = content_parts(o.get("content"), &path)?;
                req.messages.push(Message { role: Role::User, parts });
            }
            "assistant" => req.messages.push(decode_assistant(o, &path)?),
            "tool" | "function" => {
                let (call_id, name) = if role == "tool" {
                    (req_str(o, "tool_call_id", &dot)?, None)
                } else {
                    // Legacy function results answer a legacy `function_call`, whose id is its name.
                    let n = req_str(o, "name", &dot)?;
                    (n, Some(n.to_string()))
                };
                let result = ToolResult {
                    call_id: call_id.to_string(),
                    name,
                    content: content_parts(o.get("content"), &path)?,
                    is_error: false,
                    kind: ToolKind::Function,
                };
                match req.messages.last_mut() {
                    Some(last) if was_tool => last.parts.push(Part::ToolResult(result)),
                    _ => req.messages.push(Message { role: Role::User, parts: vec![Part::ToolResult(result)] }),
                }
                in_tool_results = true;
            }
            other => return Err(bad(format!("`{dot}role` has an unknown value {other:?}"))),
        }
    }
    Ok(())
}

fn decode_assistant(o: &Map<String, Value>, path: &str) -> Result<Message, GatewayError> {
    let dot = format!("{path}.");
    let mut parts = Vec::new();
    let details = arr(o, "reasoning_details", &dot)?;
    if !details.is_empty() {
        for (j, d) in details.iter().enumerate() {
            let dp = format!("{path}.reasoning_details[{j}].");
            let d = obj(d, dp.trim_end_matches('.'))?;
            let id = opt_str(d, "id", &dp)?.map(str::to_string);
            match opt_str(d, "type", &dp)? {
                Some("reasoning.encrypted") => parts.push(Part::Reasoning(Reasoning {
                    redacted: opt_str(d, "data", &dp)?.map(str::to_string),
                    id,
                    ..Reasoning::default()
                })),
                _ => {
                    let text = match opt_str(d, "text", &dp)? {
                        Some(t) => t,
                        None => opt_str(d, "summary", &dp)?.unwrap_or(""),
                    };
                    let signature =
                        opt_str(d, "signature", &dp)?.filter(|s| !s.is_empty()).map(|s| Signature::from_field(P, s));
                    parts.push(Part::Reasoning(Reasoning { text: text.to_string(), signature, redacted: None, id }));
                }
            }
        }
    } else {
        let text = match opt_str(o, "reasoning_content", &dot)? {
            Some(t) => Some(t),
            None => opt_str(o, "reasoning", &dot).ok().flatten(),
        };
        if let Some(text) = text.filter(|t| !t.is_empty()) {
            parts.push(Part::Reasoning(Reasoning { text: text.to_string(), ..Reasoning::default() }));
        }
    }
    for p in content_parts(o.get("content"), path)? {
        if !matches!(&p, Part::Text { text, .. } if text.is_empty()) {
            parts.push(p);
        }
    }
    if let Some(Value::String(r)) = o.get("refusal")
        && !r.is_empty()
    {
        parts.push(Part::Text { text: r.clone(), cache: false });
    }
    for (j, tc) in arr(o, "tool_calls", &dot)?.iter().enumerate() {
        parts.push(Part::ToolCall(decode_tool_call(tc, &format!("{path}.tool_calls[{j}]"))?));
    }
    if let Some(Value::Object(fc)) = o.get("function_call") {
        let name = req_str(fc, "name", &format!("{dot}function_call."))?;
        parts.push(Part::ToolCall(ToolCall {
            id: name.to_string(),
            name: name.to_string(),
            arguments: arguments_text(fc.get("arguments")),
            ..ToolCall::default()
        }));
    }
    Ok(Message { role: Role::Assistant, parts })
}

/// Tool-call arguments as a JSON text: a string as is (`"{}"` when empty), an object serialised.
fn arguments_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(v @ Value::Object(_)) => v.to_string(),
        _ => "{}".to_string(),
    }
}

fn decode_tool_call(tc: &Value, path: &str) -> Result<ToolCall, GatewayError> {
    let o = obj(tc, path)?;
    let dot = format!("{path}.");
    let id = req_str(o, "id", &dot)?;
    if id.is_empty() {
        return Err(bad(format!("`{dot}id` must not be empty")));
    }
    let signature = o
        .get("extra_content")
        .and_then(|e| e.get("google"))
        .and_then(|g| g.get("thought_signature"))
        .and_then(Value::as_str)
        .map(|s| Signature::from_field(P, s));
    let (kind, name, arguments) = if opt_str(o, "type", &dot)? == Some("custom") {
        let c = obj(o.get("custom").unwrap_or(&Value::Null), &format!("{dot}custom"))?;
        let cp = format!("{dot}custom.");
        let input = opt_str(c, "input", &cp)?.unwrap_or("");
        (ToolKind::Custom, req_str(c, "name", &cp)?, input.to_string())
    } else {
        let f = obj(o.get("function").unwrap_or(&Value::Null), &format!("{dot}function"))?;
        let fp = format!("{dot}function.");
        (ToolKind::Function, req_str(f, "name", &fp)?, arguments_text(f.get("arguments")))
    };
    Ok(ToolCall { id: id.to_string(), name: name.to_string(), arguments, kind, signature })
}

/// OpenAI reasoning models (o-series, gpt-5) refuse `max_tokens`, sampling parameters and `stop`.
fn is_openai_reasoning_model(model: &str) -> bool {
    let m = model.rsplit('/').next().unwrap_or(model);
    let b = m.as_bytes();
    (b.len() >= 2 && b[0] == b'o' && b[1].is_ascii_digit()) || m.starts_with("gpt-5")
}

/// OpenAI models that refuse `reasoning_effort`.
fn is_openai_non_reasoning_model(model: &str) -> bool {
    let m = model.rsplit('/').next().unwrap_or(model);
    ["gpt-4", "gpt-3.5", "chatgpt-"].iter().any(|p| m.starts_with(p))
}

/// Encodes the canonical request for a Chat Completions upstream (`req.model` is the upstream model).
pub fn encode_request(req: &ChatRequest) -> Result<Bytes, GatewayError> {
    let reasoning_model = is_openai_reasoning_model(&req.model);
    let mut messages: Vec<Value> = Vec::with_capacity(req.messages.len() + 1);
    if !req.system.is_empty() {
        let text: Vec<&str> = req.system.iter().map(|s| s.text.as_str()).collect();
        messages.push(json!({"role": "system", "content": text.join("\n\n")}));
    }
    for m in &req.messages {
        match m.role {
            Role::User => encode_user(&m.parts, &mut messages),
            Role::Assistant => messages.push(encode_assistant(&m.parts)),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), req.model.clone().into());
    out.insert("messages".into(), messages.into());
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req.tools.iter().map(encode_tool).collect();
        out.insert("tools".into(), tools.into());
        if let Some(tc) = &req.tool_choice {
            let v = match tc {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Tool(name) => {
                    if req.tools.iter().any(|t| &t.name == name && t.kind == ToolKind::Custom) {
                        json!({"type": "custom", "custom": {"name": name}})
                    } else {
                        json!({"type": "function", "function": {"name": name}})
                    }
                }
            };
            out.insert("tool_choice".into(), v);
        }
        // OpenAI refuses `parallel_tool_calls` (and `tool_choice`) when no tools are given.
        if let Some(p) = req.parallel_tool_calls {
            out.insert("parallel_tool_calls".into(), p.into());
        }
    }
    if let Some(n) = req.max_tokens {
        let key = if reasoning_model { "max_completion_tokens" } else { "max_tokens" };
        out.insert(key.into(), n.into());
    }
    if !reasoning_model {
        if let Some(t) = req.temperature {
            out.insert("temperature".into(), t.into());
        }
        if let Some(p) = req.top_p {
            out.insert("top_p".into(), p.into());
        }
        if !req.stop.is_empty() {
            // OpenAI takes at most 4 stop sequences.
            let stop: Vec<&str> = req.stop.iter().take(4).map(String::as_str).collect();
            out.insert("stop".into(), stop.into());
        }
    }
    // top_k: OpenAI refuses unknown top-level arguments, and Chat has no such parameter.
    if let Some(r) = &req.reasoning
        && !r.disabled
        && (r.effort.is_some() || r.budget_tokens.is_some() || r.include_thoughts)
        && !is_openai_non_reasoning_model(&req.model)
    {
        out.insert("reasoning_effort".into(), r.effort_or_default().into());
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            out.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(ResponseFormat::JsonSchema { name, schema, strict }) => {
            let mut s = json!({"name": name, "schema": schema});
            if let Some(st) = strict {
                s["strict"] = (*st).into();
            }
            out.insert("response_format".into(), json!({"type": "json_schema", "json_schema": s}));
        }
        None => {}
    }
    if req.stream {
        out.insert("stream".into(), true.into());
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(u) = &req.user {
        out.insert("user".into(), u.clone().into());
    }
    serde_json::to_vec(&Value::Object(out)).map(Bytes::from).map_err(|e| GatewayError::Internal(e.to_string()))
}

fn encode_tool(t: &Tool) -> Value {
    match t.kind {
        ToolKind::Function => {
            let mut f = json!({"name": t.name, "parameters": t.parameters});
            if let Some(d) = &t.description {
                f["description"] = d.clone().into();
            }
            if let Some(s) = t.strict {
                f["strict"] = s.into();
            }
            json!({"type": "function", "function": f})
        }
        ToolKind::Custom => {
            let mut c = json!({"name": t.name});
            if let Some(d) = &t.description {
                c["description"] = d.clone().into();
            }
            if let Some(f) = &t.custom_format {
                c["format"] = f.clone();
            }
            json!({"type": "custom", "custom": c})
        }
    }
}

fn encode_content_part(p: &Part, out: &mut Vec<Value>) {
    match p {
        Part::Text { text, .. } => out.push(json!({"type": "text", "text": text})),
        Part::Image(src) => out.push(json!({"type": "image_url", "image_url": {"url": src.to_url()}})),
        Part::File { media_type, source: FileSource::Base64(data) } => {
            let ext = media_type.rsplit('/').next().unwrap_or("bin");
            out.push(json!({"type": "file", "file": {
                "file_data": format!("data:{media_type};base64,{data}"),
                "filename": format!("document.{ext}"),
            }}));
        }
        Part::File { source: FileSource::Url(id), .. } if id.starts_with("file-") => {
            out.push(json!({"type": "file", "file": {"file_id": id}}));
        }
        // Chat takes no file URLs: described in text so the model knows it is there.
        Part::File { media_type, source: FileSource::Url(url) } => {
            out.push(json!({"type": "text", "text": format!("[file {media_type}: {url}]")}));
        }
        Part::ToolCall(_) | Part::ToolResult(_) | Part::Reasoning(_) => {}
    }
}

/// A user turn: its tool results become `tool` messages first (Chat's shape), then the rest as a user message.
fn encode_user(parts: &[Part], messages: &mut Vec<Value>) {
    let mut rest: Vec<Value> = Vec::new();
    for p in parts {
        if let Part::ToolResult(r) = p {
            let mut text = r.text();
            if r.is_error {
                text = if text.is_empty() { "Error".into() } else { format!("Error: {text}") };
            }
            messages.push(json!({"role": "tool", "tool_call_id": r.call_id, "content": text}));
            // Tool messages take text only: a result's images follow in the user message.
            for c in r.content.iter().filter(|c| !matches!(c, Part::Text { .. })) {
                encode_content_part(c, &mut rest);
            }
        } else {
            encode_content_part(p, &mut rest);
        }
    }
    let has_results = parts.iter().any(|p| matches!(p, Part::ToolResult(_)));
    if rest.is_empty() && has_results {
        return;
    }
    let content = match rest.as_slice() {
        [] => Value::String(String::new()),
        [one] if one["type"] == "text" => one["text"].clone(),
        _ => Value::Array(rest),
    };
    messages.push(json!({"role": "user", "content": content}));
}

fn encode_assistant(parts: &[Part]) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut details: Vec<Value> = Vec::new();
    let mut calls: Vec<Value> = Vec::new();
    for p in parts {
        match p {
            Part::Text { text: t, .. } => text.push_str(t),
            Part::Reasoning(r) => match &r.signature {
                // Unsigned reasoning (DeepSeek style) goes back as is; signed reasoning only to its issuer.
                None if r.redacted.is_none() => reasoning.push_str(&r.text),
                Some(sig) => {
                    if let Some(native) = sig.native_for(P) {
                        reasoning.push_str(&r.text);
                        details.push(json!({"type": "reasoning.text", "text": r.text, "signature": native}));
                    }
                }
                None => {}
            },
            Part::ToolCall(c) => {
                let mut v = match c.kind {
                    ToolKind::Function => json!({"id": c.id, "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments}}),
                    ToolKind::Custom => json!({"id": c.id, "type": "custom",
                        "custom": {"name": c.name, "input": c.arguments}}),
                };
                if let Some(sig) = c.signature.as_ref().and_then(|s| s.native_for(P)) {
                    v["extra_content"] = json!({"google": {"thought_signature": sig}});
                }
                calls.push(v);
            }
            Part::Image(_) | Part::File { .. } | Part::ToolResult(_) => {}
        }
    }
    let mut m = json!({"role": "assistant"});
    m["content"] = if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() };
    if !calls.is_empty() {
        m["tool_calls"] = calls.into();
    }
    if !reasoning.is_empty() {
        m["reasoning_content"] = reasoning.into();
    }
    if !details.is_empty() {
        m["reasoning_details"] = details.into();
    }
    m
}
