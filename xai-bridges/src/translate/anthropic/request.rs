//! Requests: a client's `/v1/messages` body → [`ChatRequest`], and [`ChatRequest`] → an Anthropic upstream body.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use xai_core::ir::{
    ChatRequest, FileSource, ImageSource, Message, Part, Reasoning, ReasoningConfig, ResponseFormat, Role, Signature,
    SystemBlock, Tool, ToolCall, ToolChoice, ToolKind, ToolResult,
};
use xai_core::{Endpoint, EndpointKind, GatewayError, Protocol};

use super::DEFAULT_MAX_TOKENS;

const ANTHROPIC: Protocol = Protocol::Anthropic;

fn bad(m: impl Into<String>) -> GatewayError {
    GatewayError::BadRequest(m.into())
}

/// A present, non-null field.
fn field<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn opt_str<'a>(o: &'a Map<String, Value>, key: &str, path: &str) -> Result<Option<&'a str>, GatewayError> {
    match field(o, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("{path}{key}: Input should be a valid string"))),
    }
}

fn req_str<'a>(o: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a str, GatewayError> {
    opt_str(o, key, path)?.ok_or_else(|| bad(format!("{path}{key}: Field required")))
}

fn opt_u64(o: &Map<String, Value>, key: &str, path: &str) -> Result<Option<u64>, GatewayError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| bad(format!("{path}{key}: Input should be a valid integer"))),
    }
}

fn opt_f64(o: &Map<String, Value>, key: &str, path: &str) -> Result<Option<f64>, GatewayError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| bad(format!("{path}{key}: Input should be a valid number"))),
    }
}

fn opt_bool(o: &Map<String, Value>, key: &str, path: &str) -> Result<Option<bool>, GatewayError> {
    match field(o, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(format!("{path}{key}: Input should be a valid boolean"))),
    }
}

fn as_obj<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, GatewayError> {
    v.as_object().ok_or_else(|| bad(format!("{path}: Input should be an object")))
}

fn as_arr<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, GatewayError> {
    v.as_array().ok_or_else(|| bad(format!("{path}: Input should be a valid list")))
}

/// Whether a block carries a `cache_control` marker.
fn cached(o: &Map<String, Value>) -> bool {
    field(o, "cache_control").is_some()
}

/// Decodes a client's Anthropic Messages body. `max_tokens` is required on `/v1/messages` (as upstream does).
pub fn decode_request(endpoint: &Endpoint, body: &[u8]) -> Result<ChatRequest, GatewayError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("request body is not valid JSON: {e}")))?;
    let o = v.as_object().ok_or_else(|| bad("request body must be a JSON object"))?;
    let model = req_str(o, "model", "")?;
    if model.is_empty() {
        return Err(bad("model: must not be empty"));
    }
    let max_tokens = opt_u64(o, "max_tokens", "")?;
    if endpoint.kind == EndpointKind::Messages && max_tokens.is_none() {
        return Err(bad("max_tokens: Field required"));
    }
    let mut req = ChatRequest {
        model: model.to_string(),
        max_tokens,
        temperature: opt_f64(o, "temperature", "")?,
        top_p: opt_f64(o, "top_p", "")?,
        top_k: opt_u64(o, "top_k", "")?,
        stream: opt_bool(o, "stream", "")?.unwrap_or(false),
        ..ChatRequest::default()
    };
    if let Some(s) = field(o, "system") {
        req.system = decode_system(s)?;
    }
    let messages = field(o, "messages").ok_or_else(|| bad("messages: Field required"))?;
    req.messages = decode_messages(as_arr(messages, "messages")?, &mut req.system)?;
    if let Some(t) = field(o, "tools") {
        req.tools = decode_tools(as_arr(t, "tools")?)?;
    }
    if let Some(tc) = field(o, "tool_choice") {
        let (choice, parallel) = decode_tool_choice(as_obj(tc, "tool_choice")?)?;
        req.tool_choice = Some(choice);
        req.parallel_tool_calls = parallel;
    }
    if let Some(stop) = field(o, "stop_sequences") {
        for (i, s) in as_arr(stop, "stop_sequences")?.iter().enumerate() {
            let s = s.as_str().ok_or_else(|| bad(format!("stop_sequences.{i}: Input should be a valid string")))?;
            req.stop.push(s.to_string());
        }
    }
    let output_config = match field(o, "output_config") {
        Some(c) => Some(as_obj(c, "output_config")?),
        None => None,
    };
    if let Some(t) = field(o, "thinking") {
        req.reasoning = decode_thinking(as_obj(t, "thinking")?)?;
    }
    if let Some(effort) = output_config.map(|c| opt_str(c, "effort", "output_config.")).transpose()?.flatten() {
        let effort = if effort == "max" { "high" } else { effort };
        req.reasoning.get_or_insert_with(|| ReasoningConfig { include_thoughts: true, ..Default::default() }).effort =
            Some(effort.to_string());
    }
    // Structured output: GA `output_config.format`, or the beta `output_format`.
    let format = output_config.and_then(|c| field(c, "format")).or_else(|| field(o, "output_format"));
    if let Some(f) = format {
        let f = as_obj(f, "output_config.format")?;
        if opt_str(f, "type", "output_config.format.")? == Some("json_schema") {
            let schema = field(f, "schema").cloned().unwrap_or_else(|| json!({"type": "object"}));
            req.response_format =
                Some(ResponseFormat::JsonSchema { name: "output".into(), schema, strict: Some(true) });
        }
    }
    if let Some(m) = field(o, "metadata") {
        req.user = opt_str(as_obj(m, "metadata")?, "user_id", "metadata.")?.map(str::to_string);
    }
    Ok(req)
}

fn decode_system(v: &Value) -> Result<Vec<SystemBlock>, GatewayError> {
    match v {
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![SystemBlock { text: s.clone(), cache: false }]),
        Value::Array(blocks) => {
            let mut out = Vec::new();
            for (i, b) in blocks.iter().enumerate() {
                let path = format!("system.{i}.");
                let b = as_obj(b, &path[..path.len() - 1])?;
                if opt_str(b, "type", &path)?.unwrap_or("text") != "text" {
                    continue;
                }
                out.push(SystemBlock { text: req_str(b, "text", &path)?.to_string(), cache: cached(b) });
            }
            Ok(out)
        }
        _ => Err(bad("system: Input should be a valid string or a list of text blocks")),
    }
}

/// The messages; `system`-role messages (Claude Code's mid-conversation system reminders) join the system prompt.
fn decode_messages(msgs: &[Value], system: &mut Vec<SystemBlock>) -> Result<Vec<Message>, GatewayError> {
    // Tool names by call id, so results can name their tool (Gemini needs it).
    let mut names: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let path = format!("messages.{i}");
        let m = as_obj(m, &path)?;
        let role = match req_str(m, "role", &format!("{path}."))? {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "system" => {
                let content = field(m, "content").ok_or_else(|| bad(format!("{path}.content: Field required")))?;
                system.extend(decode_system(content)?);
                continue;
            }
            other => return Err(bad(format!("{path}.role: Input should be 'user' or 'assistant', got {other:?}"))),
        };
        let content = field(m, "content").ok_or_else(|| bad(format!("{path}.content: Field required")))?;
        let parts = match content {
            Value::String(s) => vec![Part::Text { text: s.clone(), cache: false }],
            Value::Array(blocks) => {
                let mut parts = Vec::with_capacity(blocks.len());
                for (j, b) in blocks.iter().enumerate() {
                    let bpath = format!("{path}.content.{j}");
                    if let Some(p) = decode_block(as_obj(b, &bpath)?, &bpath, &names)? {
                        if let Part::ToolCall(c) = &p {
                            names.insert(c.id.clone(), c.name.clone());
                        }
                        parts.push(p);
                    }
                }
                parts
            }
            _ => return Err(bad(format!("{path}.content: Input should be a valid string or a list of blocks"))),
        };
        out.push(Message { role, parts });
    }
    Ok(out)
}

/// One content block; `None` for blocks with no canonical form (server tools, citations…), which are skipped.
fn decode_block(
    b: &Map<String, Value>,
    path: &str,
    names: &HashMap<String, String>,
) -> Result<Option<Part>, GatewayError> {
    let p = format!("{path}.");
    let ty = req_str(b, "type", &p)?;
    Ok(Some(match ty {
        "text" => Part::Text { text: req_str(b, "text", &p)?.to_string(), cache: cached(b) },
        "image" => Part::Image(decode_image(b, &p)?),
        "document" => return decode_document(b, &p),
        "tool_use" => {
            let id = req_str(b, "id", &p)?;
            if id.is_empty() {
                return Err(bad(format!("{p}id: must not be empty")));
            }
            let arguments = match field(b, "input") {
                None => "{}".to_string(),
                Some(v) => serde_json::to_string(v).unwrap_or_else(|_| "{}".into()),
            };
            Part::ToolCall(ToolCall {
                id: id.to_string(),
                name: req_str(b, "name", &p)?.to_string(),
                arguments,
                kind: ToolKind::Function,
                signature: None,
            })
        }
        "tool_result" => {
            let call_id = req_str(b, "tool_use_id", &p)?;
            let mut content = Vec::new();
            match field(b, "content") {
                None => {}
                Some(Value::String(s)) => content.push(Part::Text { text: s.clone(), cache: false }),
                Some(Value::Array(blocks)) => {
                    for (k, inner) in blocks.iter().enumerate() {
                        let ipath = format!("{p}content.{k}");
                        let inner = as_obj(inner, &ipath)?;
                        // Only text, images and documents belong in a result; nested tool blocks are skipped.
                        if matches!(inner.get("type").and_then(Value::as_str), Some("text" | "image" | "document"))
                            && let Some(part) = decode_block(inner, &ipath, names)?
                        {
                            content.push(part);
                        }
                    }
                }
                Some(_) => return Err(bad(format!("{p}content: Input should be a valid string or a list of blocks"))),
            }
            Part::ToolResult(ToolResult {
                call_id: call_id.to_string(),
                name: names.get(call_id).cloned(),
                content,
                is_error: opt_bool(b, "is_error", &p)?.unwrap_or(false),
                kind: ToolKind::Function,
            })
        }
        "thinking" => {
            let signature =
                opt_str(b, "signature", &p)?.filter(|s| !s.is_empty()).map(|s| Signature::from_field(ANTHROPIC, s));
            Part::Reasoning(Reasoning {
                text: opt_str(b, "thinking", &p)?.unwrap_or_default().to_string(),
                signature,
                redacted: None,
                id: None,
            })
        }
        "redacted_thinking" => {
            Part::Reasoning(Reasoning { redacted: Some(req_str(b, "data", &p)?.to_string()), ..Reasoning::default() })
        }
        // server_tool_use, web_search_tool_result, mcp_*, container_upload, search_result, …
        _ => return Ok(None),
    }))
}

fn decode_image(b: &Map<String, Value>, p: &str) -> Result<ImageSource, GatewayError> {
    let src = field(b, "source").ok_or_else(|| bad(format!("{p}source: Field required")))?;
    let sp = format!("{p}source.");
    let src = as_obj(src, &sp[..sp.len() - 1])?;
    match req_str(src, "type", &sp)? {
        "base64" => Ok(ImageSource::Base64 {
            media_type: req_str(src, "media_type", &sp)?.to_string(),
            data: req_str(src, "data", &sp)?.to_string(),
        }),
        "url" => Ok(ImageSource::Url(req_str(src, "url", &sp)?.to_string())),
        other => Err(bad(format!("{sp}type: image source {other:?} is not supported across providers"))),
    }
}

fn decode_document(b: &Map<String, Value>, p: &str) -> Result<Option<Part>, GatewayError> {
    let src = field(b, "source").ok_or_else(|| bad(format!("{p}source: Field required")))?;
    let sp = format!("{p}source.");
    let src = as_obj(src, &sp[..sp.len() - 1])?;
    Ok(Some(match req_str(src, "type", &sp)? {
        "base64" => Part::File {
            media_type: opt_str(src, "media_type", &sp)?.unwrap_or("application/pdf").to_string(),
            source: FileSource::Base64(req_str(src, "data", &sp)?.to_string()),
        },
        "url" => Part::File {
            media_type: opt_str(src, "media_type", &sp)?.unwrap_or("application/pdf").to_string(),
            source: FileSource::Url(req_str(src, "url", &sp)?.to_string()),
        },
        // Plain-text documents are text wherever they go.
        "text" => Part::Text { text: req_str(src, "data", &sp)?.to_string(), cache: cached(b) },
        "content" => {
            let mut text = String::new();
            if let Some(Value::Array(blocks)) = field(src, "content") {
                for blk in blocks.iter().filter_map(Value::as_object) {
                    if let Some(t) = blk.get("text").and_then(Value::as_str) {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(t);
                    }
                }
            } else if let Some(Value::String(s)) = field(src, "content") {
                text.push_str(s);
            }
            Part::Text { text, cache: cached(b) }
        }
        other => return Err(bad(format!("{sp}type: document source {other:?} is not supported across providers"))),
    }))
}

fn decode_tools(tools: &[Value]) -> Result<Vec<Tool>, GatewayError> {
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let p = format!("tools.{i}.");
        let t = as_obj(t, &p[..p.len() - 1])?;
        let schema = field(t, "input_schema");
        // Anthropic server tools (web_search_20250305, bash_20250124, …) carry a versioned `type` and no schema:
        // nothing another provider could run.
        let ty = opt_str(t, "type", &p)?;
        if schema.is_none() && ty.is_some_and(|ty| ty != "custom") {
            continue;
        }
        let parameters = match schema {
            Some(s @ Value::Object(_)) => s.clone(),
            Some(_) => return Err(bad(format!("{p}input_schema: Input should be an object"))),
            None => json!({"type": "object", "properties": {}}),
        };
        out.push(Tool {
            name: req_str(t, "name", &p)?.to_string(),
            description: opt_str(t, "description", &p)?.map(str::to_string),
            parameters,
            strict: opt_bool(t, "strict", &p)?,
            kind: ToolKind::Function,
            custom_format: None,
        });
    }
    Ok(out)
}

fn decode_tool_choice(tc: &Map<String, Value>) -> Result<(ToolChoice, Option<bool>), GatewayError> {
    let p = "tool_choice.";
    let choice = match req_str(tc, "type", p)? {
        "auto" => ToolChoice::Auto,
        "any" => ToolChoice::Required,
        "none" => ToolChoice::None,
        "tool" => ToolChoice::Tool(req_str(tc, "name", p)?.to_string()),
        other => {
            return Err(bad(format!(
                "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none', got {other:?}"
            )));
        }
    };
    let parallel = opt_bool(tc, "disable_parallel_tool_use", p)?.map(|d| !d);
    Ok((choice, parallel))
}

fn decode_thinking(t: &Map<String, Value>) -> Result<Option<ReasoningConfig>, GatewayError> {
    let p = "thinking.";
    let shown = opt_str(t, "display", p)? != Some("omitted");
    Ok(Some(match req_str(t, "type", p)? {
        "enabled" => ReasoningConfig {
            budget_tokens: opt_u64(t, "budget_tokens", p)?,
            include_thoughts: shown,
            ..Default::default()
        },
        "adaptive" => ReasoningConfig { include_thoughts: shown, ..Default::default() },
        "disabled" => ReasoningConfig { disabled: true, ..Default::default() },
        other => {
            return Err(bad(format!(
                "thinking.type: Input should be 'enabled', 'adaptive' or 'disabled', got {other:?}"
            )));
        }
    }))
}

// ---------------------------------------------------------------------------------------------------------------
// Encoding towards an Anthropic upstream.

/// Anthropic accepts tool ids matching `^[a-zA-Z0-9_-]+$`; ids from other providers are mapped onto that set
/// (the same way for a call and its result).
fn tool_id(id: &str) -> Cow<'_, str> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !id.is_empty() && id.chars().all(ok) {
        return Cow::Borrowed(id);
    }
    let mut s: String = id.chars().map(|c| if ok(c) { c } else { '_' }).collect();
    if s.is_empty() {
        s.push_str("toolu_");
    }
    Cow::Owned(s)
}

fn cache_control(v: &mut Value, cache: bool) {
    if cache && let Some(o) = v.as_object_mut() {
        o.insert("cache_control".into(), json!({"type": "ephemeral"}));
    }
}

fn image_block(img: &ImageSource) -> Value {
    match img {
        ImageSource::Base64 { media_type, data } => {
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
        }
        ImageSource::Url(url) => json!({"type": "image", "source": {"type": "url", "url": url}}),
    }
}

fn file_block(media_type: &str, source: &FileSource) -> Value {
    if media_type.starts_with("image/") {
        return image_block(&match source {
            FileSource::Base64(d) => ImageSource::Base64 { media_type: media_type.into(), data: d.clone() },
            FileSource::Url(u) => ImageSource::Url(u.clone()),
        });
    }
    match source {
        FileSource::Base64(data) => {
            // Anthropic takes inline documents as PDF or plain text only.
            if media_type != "application/pdf"
                && let Some(text) = base64_decode(data).and_then(|b| String::from_utf8(b).ok())
            {
                return json!({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}});
            }
            json!({"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}})
        }
        FileSource::Url(url) => json!({"type": "document", "source": {"type": "url", "url": url}}),
    }
}

/// Tool input must be a JSON object: arguments that are not one are wrapped.
fn tool_input(kind: ToolKind, arguments: &str) -> Value {
    if kind == ToolKind::Custom {
        return json!({"input": arguments});
    }
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"_raw": arguments}),
    }
}

/// The blocks of one IR part for an Anthropic upstream; `None` when the part cannot be sent.
fn encode_part(part: &Part) -> Option<Value> {
    Some(match part {
        Part::Text { text, cache } => {
            if text.is_empty() {
                return None;
            }
            let mut v = json!({"type": "text", "text": text});
            cache_control(&mut v, *cache);
            v
        }
        Part::Image(img) => image_block(img),
        Part::File { media_type, source } => file_block(media_type, source),
        Part::ToolCall(c) => {
            json!({"type": "tool_use", "id": tool_id(&c.id), "name": c.name, "input": tool_input(c.kind, &c.arguments)})
        }
        Part::ToolResult(r) => {
            let mut v = json!({"type": "tool_result", "tool_use_id": tool_id(&r.call_id)});
            let only_text = r.content.iter().all(|p| matches!(p, Part::Text { .. }));
            if only_text {
                let text = r.text();
                if !text.is_empty() {
                    v["content"] = Value::String(text);
                }
            } else {
                let blocks: Vec<Value> = r.content.iter().filter_map(encode_part).collect();
                if !blocks.is_empty() {
                    v["content"] = Value::Array(blocks);
                }
            }
            if r.is_error {
                v["is_error"] = Value::Bool(true);
            }
            v
        }
        Part::Reasoning(r) => {
            // Anthropic issued redacted data (the IR keeps it only for Anthropic): replay it unchanged.
            if let Some(data) = &r.redacted {
                return Some(json!({"type": "redacted_thinking", "data": data}));
            }
            // Unsigned or foreign-signed thinking would be rejected (trap 4): dropped.
            let sig = r.signature.as_ref()?.native_for(Protocol::Anthropic)?;
            json!({"type": "thinking", "thinking": r.text, "signature": sig})
        }
    })
}

fn is_tool_result(b: &Value) -> bool {
    b.get("type").and_then(Value::as_str) == Some("tool_result")
}

fn block_type(b: &Value) -> Option<&str> {
    b.get("type").and_then(Value::as_str)
}

/// Messages with strictly alternating roles, `tool_result` blocks first in each user turn, no empty blocks.
fn encode_messages(msgs: &[Message]) -> Vec<(Role, Vec<Value>)> {
    let mut out: Vec<(Role, Vec<Value>)> = Vec::with_capacity(msgs.len());
    for m in msgs {
        let blocks: Vec<Value> = m.parts.iter().filter_map(encode_part).collect();
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((role, prev)) if *role == m.role => prev.extend(blocks),
            _ => out.push((m.role, blocks)),
        }
    }
    for (role, blocks) in &mut out {
        if *role == Role::User && blocks.iter().any(is_tool_result) {
            // Stable: results keep their order, other content follows them.
            let (mut results, rest): (Vec<Value>, Vec<Value>) =
                std::mem::take(blocks).into_iter().partition(is_tool_result);
            results.extend(rest);
            *blocks = results;
        }
    }
    out
}

/// With thinking on, Anthropic wants the assistant turn that a trailing tool result answers to open with a
/// thinking block: reasoning from another provider was dropped, so thinking must be turned off then.
fn thinking_fits(messages: &[(Role, Vec<Value>)]) -> bool {
    let Some(((Role::User, last), before)) = messages.split_last() else { return true };
    if !last.iter().any(is_tool_result) {
        return true;
    }
    match before.last() {
        Some((Role::Assistant, blocks)) => {
            !blocks.iter().any(|b| block_type(b) == Some("tool_use"))
                || matches!(blocks.first().and_then(block_type), Some("thinking" | "redacted_thinking"))
        }
        _ => true,
    }
}

/// Encodes the canonical request for an Anthropic upstream.
pub fn encode_request(req: &ChatRequest) -> Result<Bytes, GatewayError> {
    let messages = encode_messages(&req.messages);
    let mut body = Map::new();
    body.insert("model".into(), Value::String(req.model.clone()));

    let forced_tool =
        !req.tools.is_empty() && matches!(req.tool_choice, Some(ToolChoice::Required | ToolChoice::Tool(_)));
    // Thinking is incompatible with forced tool use and with an unsigned tool loop: the tools win.
    let mut budget = match &req.reasoning {
        Some(r) if !r.disabled && !forced_tool && thinking_fits(&messages) => Some(r.budget_or_default().max(1024)),
        _ => None,
    };
    let mut max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).max(1);
    if let Some(b) = budget.as_mut()
        && *b >= max_tokens
    {
        // max_tokens must exceed the budget: split a large cap, else grow it by the budget.
        if max_tokens / 2 >= 1024 {
            *b = max_tokens / 2;
        } else {
            max_tokens += *b;
        }
    }
    body.insert("max_tokens".into(), max_tokens.into());

    let mut system: Vec<(&str, bool)> =
        req.system.iter().filter(|b| !b.text.is_empty()).map(|b| (b.text.as_str(), b.cache)).collect();
    if req.response_format == Some(ResponseFormat::JsonObject) {
        system.push(("Respond with a single valid JSON object and nothing else.", false));
    }
    match system.as_slice() {
        [] => {}
        [(text, false)] => {
            body.insert("system".into(), Value::String((*text).to_string()));
        }
        blocks => {
            let blocks = blocks
                .iter()
                .map(|(text, cache)| {
                    let mut v = json!({"type": "text", "text": text});
                    cache_control(&mut v, *cache);
                    v
                })
                .collect();
            body.insert("system".into(), Value::Array(blocks));
        }
    }

    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(role, content)| {
            json!({"role": if role == Role::User { "user" } else { "assistant" }, "content": content})
        })
        .collect();
    body.insert("messages".into(), Value::Array(messages));

    if !req.tools.is_empty() {
        let tools = req.tools.iter().map(encode_tool).collect();
        body.insert("tools".into(), Value::Array(tools));
        let mut choice = match &req.tool_choice {
            None | Some(ToolChoice::Auto) => json!({"type": "auto"}),
            Some(ToolChoice::Required) => json!({"type": "any"}),
            Some(ToolChoice::None) => json!({"type": "none"}),
            Some(ToolChoice::Tool(name)) => json!({"type": "tool", "name": name}),
        };
        let parallel_off = req.parallel_tool_calls == Some(false) && req.tool_choice != Some(ToolChoice::None);
        if parallel_off {
            choice["disable_parallel_tool_use"] = Value::Bool(true);
        }
        if req.tool_choice.is_some() || parallel_off {
            body.insert("tool_choice".into(), choice);
        }
    }

    match budget {
        Some(b) => {
            body.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": b}));
            // With thinking, temperature and top_k must not be set and top_p only within [0.95, 1].
            if let Some(p) = req.top_p.filter(|p| *p >= 0.95) {
                body.insert("top_p".into(), p.into());
            }
        }
        None => {
            if req.reasoning.as_ref().is_some_and(|r| r.disabled) {
                body.insert("thinking".into(), json!({"type": "disabled"}));
            }
            if let Some(t) = req.temperature {
                body.insert("temperature".into(), t.clamp(0.0, 1.0).into());
            }
            if let Some(p) = req.top_p {
                body.insert("top_p".into(), p.into());
            }
            if let Some(k) = req.top_k {
                body.insert("top_k".into(), k.into());
            }
        }
    }
    // Anthropic rejects whitespace-only stop sequences.
    let stop: Vec<&str> = req.stop.iter().map(String::as_str).filter(|s| !s.trim().is_empty()).collect();
    if !stop.is_empty() {
        body.insert("stop_sequences".into(), json!(stop));
    }
    if let Some(ResponseFormat::JsonSchema { schema, .. }) = &req.response_format {
        body.insert("output_config".into(), json!({"format": {"type": "json_schema", "schema": schema}}));
    }
    if let Some(user) = &req.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if req.stream {
        body.insert("stream".into(), Value::Bool(true));
    }
    serde_json::to_vec(&Value::Object(body))
        .map(Bytes::from)
        .map_err(|e| GatewayError::Internal(format!("encoding an Anthropic request: {e}")))
}

fn encode_tool(t: &Tool) -> Value {
    let schema = match (t.kind, &t.parameters) {
        (ToolKind::Custom, _) => json!({
            "type": "object",
            "properties": {"input": {"type": "string", "description": "The raw input of the tool."}},
            "required": ["input"],
        }),
        (_, Value::Object(o)) if o.contains_key("type") => t.parameters.clone(),
        (_, Value::Object(o)) => {
            let mut o = o.clone();
            o.insert("type".into(), "object".into());
            Value::Object(o)
        }
        _ => json!({"type": "object", "properties": {}}),
    };
    let mut v = json!({"name": t.name, "input_schema": schema});
    if let Some(d) = t.description.as_deref().filter(|d| !d.is_empty()) {
        v["description"] = Value::String(d.to_string());
    }
    v
}

/// Standard or URL-safe base64, padded or not; `None` when not base64.
pub(super) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let bytes = bytes.strip_suffix(b"==").or_else(|| bytes.strip_suffix(b"=")).unwrap_or(&bytes);
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}
