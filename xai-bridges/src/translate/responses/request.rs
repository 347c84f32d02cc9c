//! Responses request bodies to and from [`ChatRequest`].

use bytes::Bytes;
use serde_json::{Map, Value, json};
use xai_core::ir::{
    ChatRequest, FileSource, ImageSource, Message, Part, Reasoning, ReasoningConfig, ResponseFormat, Role, Signature,
    SystemBlock, Tool, ToolCall, ToolChoice, ToolKind, ToolResult,
};
use xai_core::{Endpoint, GatewayError, Protocol};

const P: Protocol = Protocol::OpenAiResponses;

/// OpenAI refuses a smaller `max_output_tokens`.
const MIN_OUTPUT_TOKENS: u64 = 16;

fn bad(msg: impl Into<String>) -> GatewayError {
    GatewayError::BadRequest(msg.into())
}

type Obj = Map<String, Value>;

fn opt_str<'a>(o: &'a Obj, key: &str, at: &str) -> Result<Option<&'a str>, GatewayError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("`{at}{key}` must be a string"))),
    }
}

fn req_str<'a>(o: &'a Obj, key: &str, at: &str) -> Result<&'a str, GatewayError> {
    opt_str(o, key, at)?.ok_or_else(|| bad(format!("`{at}{key}` is required")))
}

fn opt_u64(o: &Obj, key: &str) -> Result<Option<u64>, GatewayError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| bad(format!("`{key}` must be a non-negative integer"))),
    }
}

fn opt_f64(o: &Obj, key: &str) -> Result<Option<f64>, GatewayError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| bad(format!("`{key}` must be a number"))),
    }
}

fn opt_bool(o: &Obj, key: &str, at: &str) -> Result<Option<bool>, GatewayError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(format!("`{at}{key}` must be a boolean"))),
    }
}

fn text(s: &str) -> Part {
    Part::Text { text: s.to_string(), cache: false }
}

fn default_parameters() -> Value {
    json!({"type": "object", "properties": {}})
}

/// Decodes a client's Responses body. `previous_response_id` is refused: the conversation state lives with
/// OpenAI, and this request goes to another protocol.
pub fn decode_request(_endpoint: &Endpoint, body: &[u8]) -> Result<ChatRequest, GatewayError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(o) = v else { return Err(bad("request body must be a JSON object")) };
    if let Some(prev) = opt_str(&o, "previous_response_id", "")?
        && !prev.is_empty()
    {
        return Err(bad(
            "`previous_response_id`: stateful responses are not supported across protocols; send the whole \
             conversation in `input` (with `store: false`)",
        ));
    }
    let mut req =
        ChatRequest { model: opt_str(&o, "model", "")?.unwrap_or_default().to_string(), ..Default::default() };
    if let Some(i) = opt_str(&o, "instructions", "")?
        && !i.is_empty()
    {
        req.system.push(SystemBlock { text: i.to_string(), cache: false });
    }
    match o.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => push_parts(&mut req.messages, Role::User, vec![text(s)]),
        Some(Value::Array(items)) => {
            let mut carried = None;
            for (i, item) in items.iter().enumerate() {
                decode_item(item, i, &mut req, &mut carried)?;
            }
        }
        Some(_) => return Err(bad("`input` must be a string or an array of items")),
    }
    match o.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tools)) => decode_tools(tools, "tools", &mut req.tools)?,
        Some(_) => return Err(bad("`tools` must be an array")),
    }
    req.tool_choice = decode_tool_choice(o.get("tool_choice"))?;
    req.parallel_tool_calls = opt_bool(&o, "parallel_tool_calls", "")?;
    req.max_tokens = opt_u64(&o, "max_output_tokens")?;
    req.temperature = opt_f64(&o, "temperature")?;
    req.top_p = opt_f64(&o, "top_p")?;
    req.stream = opt_bool(&o, "stream", "")?.unwrap_or(false);
    req.reasoning = decode_reasoning(o.get("reasoning"))?;
    req.response_format = match o.get("text") {
        None | Some(Value::Null) => None,
        Some(Value::Object(t)) => decode_format(t.get("format"))?,
        Some(_) => return Err(bad("`text` must be an object")),
    };
    req.user = match opt_str(&o, "user", "")? {
        Some(u) => Some(u.to_string()),
        None => opt_str(&o, "safety_identifier", "")?.map(str::to_string),
    };
    Ok(req)
}

/// Appends parts to the conversation, joining a turn of the same speaker (a reasoning item, its function calls
/// and the following message are one assistant turn; tool outputs and the next user text one user turn).
fn push_parts(messages: &mut Vec<Message>, role: Role, parts: Vec<Part>) {
    if parts.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some(last) if last.role == role => last.parts.extend(parts),
        _ => messages.push(Message { role, parts }),
    }
}

/// Decodes one input item. `carried` holds a tool-call signature from a carrier reasoning item (see
/// `super::SIG_CARRIER`) for the call right after it.
fn decode_item(
    item: &Value,
    i: usize,
    req: &mut ChatRequest,
    carried: &mut Option<Signature>,
) -> Result<(), GatewayError> {
    let pending = carried.take();
    let at = format!("input[{i}].");
    let Value::Object(it) = item else { return Err(bad(format!("`input[{i}]` must be an object"))) };
    let ty = match opt_str(it, "type", &at)? {
        Some(t) => t,
        None if it.contains_key("role") => "message",
        None => return Err(bad(format!("`input[{i}]` has neither `type` nor `role`"))),
    };
    match ty {
        "message" => {
            let role = req_str(it, "role", &at)?;
            let parts = decode_content(it.get("content"), &format!("{at}content"))?;
            match role {
                "user" => push_parts(&mut req.messages, Role::User, parts),
                "assistant" => push_parts(&mut req.messages, Role::Assistant, parts),
                "system" | "developer" => {
                    let mut s = String::new();
                    for p in &parts {
                        if let Part::Text { text, .. } = p {
                            if !s.is_empty() {
                                s.push('\n');
                            }
                            s.push_str(text);
                        }
                    }
                    if !s.is_empty() {
                        req.system.push(SystemBlock { text: s, cache: false });
                    }
                }
                other => {
                    return Err(bad(format!("`{at}role` {other:?} is not one of user, assistant, system, developer")));
                }
            }
        }
        "function_call" | "custom_tool_call" | "local_shell_call" => {
            let id = match opt_str(it, "call_id", &at)? {
                Some(c) if !c.is_empty() => c,
                _ => req_str(it, "id", &at).map_err(|_| bad(format!("`{at}call_id` is required")))?,
            };
            let (name, arguments, kind) = match ty {
                "function_call" => {
                    let args = opt_str(it, "arguments", &at)?.unwrap_or_default();
                    let args = if args.trim().is_empty() { "{}" } else { args };
                    (req_str(it, "name", &at)?.to_string(), args.to_string(), ToolKind::Function)
                }
                "custom_tool_call" => (
                    req_str(it, "name", &at)?.to_string(),
                    opt_str(it, "input", &at)?.unwrap_or_default().to_string(),
                    ToolKind::Custom,
                ),
                // A hosted shell call from an earlier OpenAI turn: kept as a call so that its output still answers
                // something.
                _ => (
                    "local_shell".to_string(),
                    it.get("action").map_or_else(|| "{}".to_string(), Value::to_string),
                    ToolKind::Function,
                ),
            };
            let call = ToolCall { id: id.to_string(), name, arguments, kind, signature: pending };
            push_parts(&mut req.messages, Role::Assistant, vec![Part::ToolCall(call)]);
        }
        "function_call_output" | "custom_tool_call_output" | "local_shell_call_output" => {
            let call_id = req_str(it, "call_id", &at)?;
            let content = match it.get("output") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(s)) => vec![text(s)],
                Some(Value::Array(_)) => decode_content(it.get("output"), &format!("{at}output"))?,
                Some(other) => vec![text(&other.to_string())],
            };
            let kind = if ty == "custom_tool_call_output" { ToolKind::Custom } else { ToolKind::Function };
            let result = ToolResult { call_id: call_id.to_string(), name: None, content, is_error: false, kind };
            push_parts(&mut req.messages, Role::User, vec![Part::ToolResult(result)]);
        }
        "reasoning" => {
            let mut texts = Vec::new();
            for key in ["summary", "content"] {
                match it.get(key) {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(parts)) => {
                        for p in parts {
                            if let Some(t) = p.get("text").and_then(Value::as_str) {
                                texts.push(t);
                            }
                        }
                    }
                    Some(_) => return Err(bad(format!("`{at}{key}` must be an array"))),
                }
                if !texts.is_empty() {
                    break;
                }
            }
            let signature =
                opt_str(it, "encrypted_content", &at)?.filter(|s| !s.is_empty()).map(|s| Signature::from_field(P, s));
            let id = opt_str(it, "id", &at)?;
            // Items the gateway wrote only to carry an opaque value back (see the stream encoder).
            if let Some(sig) = &signature
                && id.is_some_and(|id| id.starts_with(super::SIG_CARRIER))
            {
                *carried = Some(sig.clone());
                return Ok(());
            }
            if let Some(sig) = &signature
                && id.is_some_and(|id| id.starts_with(super::REDACTED_CARRIER))
            {
                let reasoning = Reasoning { redacted: Some(sig.value.clone()), ..Reasoning::default() };
                push_parts(&mut req.messages, Role::Assistant, vec![Part::Reasoning(reasoning)]);
                return Ok(());
            }
            let reasoning = Reasoning {
                text: texts.join(super::SUMMARY_SEPARATOR),
                signature,
                redacted: None,
                id: id.map(str::to_string),
            };
            push_parts(&mut req.messages, Role::Assistant, vec![Part::Reasoning(reasoning)]);
        }
        // Hosted tool calls (web search, file search, …), item references and compaction summaries have no
        // meaning for another provider.
        _ => {}
    }
    Ok(())
}

fn decode_content(v: Option<&Value>, at: &str) -> Result<Vec<Part>, GatewayError> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(if s.is_empty() { Vec::new() } else { vec![text(s)] }),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(bad(format!("`{at}` must be a string or an array of content parts"))),
    };
    let mut parts = Vec::with_capacity(items.len());
    for (j, p) in items.iter().enumerate() {
        let at = format!("{at}[{j}].");
        let Value::Object(p) = p else { return Err(bad(format!("`{at}` must be an object"))) };
        match opt_str(p, "type", &at)?.unwrap_or("input_text") {
            "input_text" | "output_text" | "text" | "summary_text" | "reasoning_text" => {
                let t = req_str(p, "text", &at)?;
                if !t.is_empty() {
                    parts.push(text(t));
                }
            }
            "refusal" => {
                let t = req_str(p, "refusal", &at)?;
                if !t.is_empty() {
                    parts.push(text(t));
                }
            }
            "input_image" => {
                let url = match p.get("image_url") {
                    Some(Value::String(u)) => Some(u.as_str()),
                    Some(Value::Object(u)) => u.get("url").and_then(Value::as_str),
                    _ => None,
                };
                match url {
                    Some(u) => parts.push(Part::Image(ImageSource::from_url(u))),
                    None if p.get("file_id").is_some_and(|f| !f.is_null()) => {
                        return Err(bad(format!(
                            "`{at}file_id`: uploaded OpenAI files cannot be sent to this model; send `image_url`"
                        )));
                    }
                    None => return Err(bad(format!("`{at}image_url` is required"))),
                }
            }
            "input_file" => parts.push(decode_file(p, &at)?),
            // Audio and unknown parts: nothing another provider could take.
            _ => {}
        }
    }
    Ok(parts)
}

fn decode_file(p: &Obj, at: &str) -> Result<Part, GatewayError> {
    let filename = opt_str(p, "filename", at)?.unwrap_or_default();
    let guessed = || {
        let ext = filename.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
        match ext.as_str() {
            "txt" | "md" => "text/plain",
            "png" => "image/png",
            "jpg" | "jpeg" => "image/jpeg",
            "csv" => "text/csv",
            "json" => "application/json",
            _ => "application/pdf",
        }
        .to_string()
    };
    if let Some(data) = opt_str(p, "file_data", at)? {
        if let Some(rest) = data.strip_prefix("data:")
            && let Some((mime, b64)) = rest.split_once(";base64,")
        {
            return Ok(Part::File { media_type: mime.to_string(), source: FileSource::Base64(b64.to_string()) });
        }
        return Ok(Part::File { media_type: guessed(), source: FileSource::Base64(data.to_string()) });
    }
    if let Some(url) = opt_str(p, "file_url", at)? {
        return Ok(Part::File { media_type: guessed(), source: FileSource::Url(url.to_string()) });
    }
    if p.get("file_id").is_some_and(|f| !f.is_null()) {
        return Err(bad(format!(
            "`{at}file_id`: uploaded OpenAI files cannot be sent to this model; send `file_data` or `file_url`"
        )));
    }
    Err(bad(format!("`{at}file_data` or `{at}file_url` is required")))
}

/// Function and custom tools; a `namespace` tool's inner tools are flattened; hosted tools (web search, local
/// shell, …) are skipped, since another provider cannot run them.
fn decode_tools(tools: &[Value], at: &str, out: &mut Vec<Tool>) -> Result<(), GatewayError> {
    for (i, t) in tools.iter().enumerate() {
        let at = format!("{at}[{i}].");
        let Value::Object(t) = t else { return Err(bad(format!("`{at}` must be an object"))) };
        match opt_str(t, "type", &at)?.unwrap_or("function") {
            "function" => {
                // Tolerates the Chat Completions nesting `{type, function: {name, …}}`.
                let f = match t.get("function") {
                    Some(Value::Object(f)) if !t.contains_key("name") => f,
                    _ => t,
                };
                let parameters = match f.get("parameters") {
                    None | Some(Value::Null) => default_parameters(),
                    Some(p @ Value::Object(_)) => p.clone(),
                    Some(_) => return Err(bad(format!("`{at}parameters` must be an object"))),
                };
                out.push(Tool {
                    name: req_str(f, "name", &at)?.to_string(),
                    description: opt_str(f, "description", &at)?.map(str::to_string),
                    parameters,
                    strict: opt_bool(f, "strict", &at)?,
                    kind: ToolKind::Function,
                    custom_format: None,
                });
            }
            "custom" => out.push(Tool {
                name: req_str(t, "name", &at)?.to_string(),
                description: opt_str(t, "description", &at)?.map(str::to_string),
                parameters: default_parameters(),
                strict: None,
                kind: ToolKind::Custom,
                custom_format: t.get("format").filter(|f| !f.is_null()).cloned(),
            }),
            "namespace" => {
                if let Some(Value::Array(inner)) = t.get("tools") {
                    decode_tools(inner, &format!("{at}tools"), out)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn decode_tool_choice(v: Option<&Value>) -> Result<Option<ToolChoice>, GatewayError> {
    Ok(match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(bad(format!("`tool_choice` {other:?} is not one of auto, none, required"))),
        }),
        Some(Value::Object(o)) => match opt_str(o, "type", "tool_choice.")? {
            Some("function" | "custom") => Some(ToolChoice::Tool(req_str(o, "name", "tool_choice.")?.to_string())),
            Some("allowed_tools") => match opt_str(o, "mode", "tool_choice.")? {
                Some("required") => Some(ToolChoice::Required),
                _ => Some(ToolChoice::Auto),
            },
            Some("none") => Some(ToolChoice::None),
            Some("auto") => Some(ToolChoice::Auto),
            Some("required") => Some(ToolChoice::Required),
            // A hosted tool (web search, …) that is not offered across protocols.
            _ => Some(ToolChoice::Auto),
        },
        Some(_) => return Err(bad("`tool_choice` must be a string or an object")),
    })
}

fn decode_reasoning(v: Option<&Value>) -> Result<Option<ReasoningConfig>, GatewayError> {
    let o = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(bad("`reasoning` must be an object")),
    };
    let effort = opt_str(o, "effort", "reasoning.")?;
    let summary = match opt_str(o, "summary", "reasoning.")? {
        Some(s) => Some(s),
        None => opt_str(o, "generate_summary", "reasoning.")?,
    };
    if effort.is_none() && summary.is_none() {
        // `{"effort": null, "summary": null}` (as OpenAI echoes it) asks for nothing.
        return Ok(None);
    }
    Ok(Some(ReasoningConfig {
        effort: effort.filter(|e| *e != "none").map(str::to_string),
        budget_tokens: None,
        include_thoughts: summary.is_some_and(|s| s != "none"),
        disabled: effort == Some("none"),
    }))
}

fn decode_format(v: Option<&Value>) -> Result<Option<ResponseFormat>, GatewayError> {
    let o = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(bad("`text.format` must be an object")),
    };
    Ok(match opt_str(o, "type", "text.format.")? {
        Some("json_schema") => Some(ResponseFormat::JsonSchema {
            name: opt_str(o, "name", "text.format.")?.unwrap_or("response").to_string(),
            schema: match o.get("schema") {
                Some(s @ Value::Object(_)) => s.clone(),
                _ => return Err(bad("`text.format.schema` must be an object")),
            },
            strict: opt_bool(o, "strict", "text.format.")?,
        }),
        Some("json_object") => Some(ResponseFormat::JsonObject),
        Some("text") | None => None,
        Some(other) => {
            return Err(bad(format!("`text.format.type` {other:?} is not one of text, json_object, json_schema")));
        }
    })
}

/// Encodes a request for a Responses upstream: stateless (`store:false`) and asking for encrypted reasoning, so
/// that reasoning can be replayed on the next turn. Only reasoning this protocol signed goes back, with its id.
pub fn encode_request(req: &ChatRequest) -> Result<Bytes, GatewayError> {
    let mut o = Map::new();
    o.insert("model".into(), req.model.clone().into());
    if !req.system.is_empty() {
        let texts: Vec<&str> = req.system.iter().map(|b| b.text.as_str()).collect();
        o.insert("instructions".into(), texts.join("\n\n").into());
    }
    let mut input = Vec::new();
    for m in &req.messages {
        encode_message(m, &mut input);
    }
    o.insert("input".into(), input.into());
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req.tools.iter().map(encode_tool).collect();
        o.insert("tools".into(), tools.into());
    }
    if let Some(tc) = &req.tool_choice {
        let v = match tc {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => {
                let custom = req.tools.iter().any(|t| &t.name == name && t.kind == ToolKind::Custom);
                json!({"type": if custom { "custom" } else { "function" }, "name": name})
            }
        };
        o.insert("tool_choice".into(), v);
    }
    if let Some(p) = req.parallel_tool_calls {
        o.insert("parallel_tool_calls".into(), p.into());
    }
    if let Some(m) = req.max_tokens {
        o.insert("max_output_tokens".into(), m.max(MIN_OUTPUT_TOKENS).into());
    }
    let reasoning_model = is_reasoning_model(&req.model);
    // Reasoning models refuse sampling parameters other than their defaults.
    if !reasoning_model {
        if let Some(t) = req.temperature {
            o.insert("temperature".into(), t.into());
        }
        if let Some(t) = req.top_p {
            o.insert("top_p".into(), t.into());
        }
    }
    if let Some(r) = &req.reasoning
        && !r.disabled
    {
        let mut ro = Map::new();
        ro.insert("effort".into(), r.effort_or_default().into());
        if r.include_thoughts {
            ro.insert("summary".into(), "auto".into());
        }
        o.insert("reasoning".into(), ro.into());
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            o.insert("text".into(), json!({"format": {"type": "json_object"}}));
        }
        Some(ResponseFormat::JsonSchema { name, schema, strict }) => {
            let mut f = json!({"type": "json_schema", "name": name, "schema": schema});
            if let Some(s) = strict {
                f["strict"] = (*s).into();
            }
            o.insert("text".into(), json!({ "format": f }));
        }
        None => {}
    }
    if let Some(u) = &req.user {
        o.insert("user".into(), u.clone().into());
    }
    o.insert("store".into(), false.into());
    // Encrypted reasoning is what lets reasoning round-trip without stored state; models without reasoning refuse
    // to be asked for it ("Encrypted content is not supported with this model").
    let replays_reasoning =
        req.messages.iter().flat_map(|m| &m.parts).any(
            |p| matches!(p, Part::Reasoning(r) if r.signature.as_ref().is_some_and(|s| s.native_for(P).is_some())),
        );
    let wants_reasoning = req.reasoning.as_ref().is_some_and(|r| !r.disabled);
    if reasoning_model || wants_reasoning || replays_reasoning {
        o.insert("include".into(), json!(["reasoning.encrypted_content"]));
    }
    o.insert("stream".into(), req.stream.into());
    serde_json::to_vec(&Value::Object(o))
        .map(Bytes::from)
        .map_err(|e| GatewayError::Internal(format!("encoding a Responses request: {e}")))
}

/// OpenAI reasoning models (o-series, GPT-5 except its chat variants, Codex models), by name: they reason whether
/// asked or not, and take no sampling parameters.
pub(crate) fn is_reasoning_model(model: &str) -> bool {
    let m = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
    let o_series = m.len() >= 2 && m.starts_with('o') && m.as_bytes()[1].is_ascii_digit();
    o_series || (m.starts_with("gpt-5") && !m.contains("chat")) || m.contains("codex")
}

fn encode_tool(t: &Tool) -> Value {
    let mut o = Map::new();
    match t.kind {
        ToolKind::Function => {
            o.insert("type".into(), "function".into());
            o.insert("name".into(), t.name.clone().into());
            if let Some(d) = &t.description {
                o.insert("description".into(), d.clone().into());
            }
            o.insert("parameters".into(), t.parameters.clone());
            if let Some(s) = t.strict {
                o.insert("strict".into(), s.into());
            }
        }
        ToolKind::Custom => {
            o.insert("type".into(), "custom".into());
            o.insert("name".into(), t.name.clone().into());
            if let Some(d) = &t.description {
                o.insert("description".into(), d.clone().into());
            }
            if let Some(f) = &t.custom_format {
                o.insert("format".into(), f.clone());
            }
        }
    }
    o.into()
}

fn file_value(media_type: &str, source: &FileSource) -> Value {
    match source {
        FileSource::Base64(data) => {
            let ext = media_type.rsplit('/').next().unwrap_or("bin");
            json!({"type": "input_file", "filename": format!("document.{ext}"), "file_data": format!("data:{media_type};base64,{data}")})
        }
        FileSource::Url(url) => json!({"type": "input_file", "file_url": url}),
    }
}

fn flush_message(role: &str, content: &mut Vec<Value>, input: &mut Vec<Value>) {
    if !content.is_empty() {
        input.push(json!({"type": "message", "role": role, "content": std::mem::take(content)}));
    }
}

fn encode_message(m: &Message, input: &mut Vec<Value>) {
    let mut content = Vec::new();
    match m.role {
        Role::User => {
            for p in &m.parts {
                match p {
                    Part::Text { text, .. } => content.push(json!({"type": "input_text", "text": text})),
                    Part::Image(img) => content.push(json!({"type": "input_image", "image_url": img.to_url()})),
                    Part::File { media_type, source } => content.push(file_value(media_type, source)),
                    Part::ToolResult(r) => {
                        flush_message("user", &mut content, input);
                        input.push(encode_tool_result(r));
                    }
                    Part::ToolCall(_) | Part::Reasoning(_) => {}
                }
            }
            flush_message("user", &mut content, input);
        }
        Role::Assistant => {
            for p in &m.parts {
                match p {
                    Part::Text { text, .. } => {
                        content.push(json!({"type": "output_text", "text": text, "annotations": []}));
                    }
                    Part::ToolCall(c) => {
                        flush_message("assistant", &mut content, input);
                        input.push(match c.kind {
                            ToolKind::Function => json!({"type": "function_call", "call_id": c.id, "name": c.name,
                                "arguments": if c.arguments.is_empty() { "{}" } else { &c.arguments }}),
                            ToolKind::Custom => json!({"type": "custom_tool_call", "call_id": c.id, "name": c.name,
                                "input": c.arguments}),
                        });
                    }
                    Part::Reasoning(r) => {
                        // Reasoning signed elsewhere (or unsigned) cannot be verified by OpenAI: dropped.
                        let native = r.signature.as_ref().and_then(|s| s.native_for(P)).map(super::unpack_signature);
                        if let Some((packed_id, sig)) = native
                            && let Some(id) = packed_id.or(r.id.as_deref())
                        {
                            flush_message("assistant", &mut content, input);
                            let summary = if r.text.is_empty() {
                                json!([])
                            } else {
                                json!([{"type": "summary_text", "text": r.text}])
                            };
                            input.push(
                                json!({"type": "reasoning", "id": id, "summary": summary, "encrypted_content": sig}),
                            );
                        }
                    }
                    Part::Image(_) | Part::File { .. } | Part::ToolResult(_) => {}
                }
            }
            flush_message("assistant", &mut content, input);
        }
    }
}

fn encode_tool_result(r: &ToolResult) -> Value {
    let only_text = r.content.iter().all(|p| matches!(p, Part::Text { .. }));
    let output = if only_text || r.kind == ToolKind::Custom {
        Value::String(r.text())
    } else {
        let parts: Vec<Value> = r
            .content
            .iter()
            .filter_map(|p| match p {
                Part::Text { text, .. } => Some(json!({"type": "input_text", "text": text})),
                Part::Image(img) => Some(json!({"type": "input_image", "image_url": img.to_url()})),
                Part::File { media_type, source } => Some(file_value(media_type, source)),
                _ => None,
            })
            .collect();
        parts.into()
    };
    let ty = if r.kind == ToolKind::Custom { "custom_tool_call_output" } else { "function_call_output" };
    json!({"type": ty, "call_id": r.call_id, "output": output})
}
