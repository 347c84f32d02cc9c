//! Gemini `generateContent` bodies ⇄ [`ChatRequest`].

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use xai_core::ir::{
    ChatRequest, FileSource, ImageSource, Message, Part, ReasoningConfig, ResponseFormat, Role, SystemBlock, Tool,
    ToolChoice, ToolKind,
};
use xai_core::{Endpoint, EndpointKind, GatewayError, Protocol};

use super::parts::{PartsDecoder, arr, bad, boolean, count, field, json_schema_types, number, obj, string};
use super::{SKIP_SIGNATURE, mime_from_url};

/// Decodes a Gemini client body; the model comes from the path, `stream` from the endpoint.
pub fn decode_request(endpoint: &Endpoint, body: &[u8]) -> Result<ChatRequest, GatewayError> {
    let root: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::BadRequest(format!("Invalid JSON payload received: {e}")))?;
    let root = root.as_object().ok_or_else(|| bad("", "the request body must be a JSON object"))?;
    let model =
        endpoint.path_model.as_deref().ok_or_else(|| GatewayError::BadRequest("model missing in path".into()))?;
    let mut req = ChatRequest {
        model: model.strip_prefix("models/").unwrap_or(model).to_string(),
        stream: endpoint.kind == EndpointKind::StreamGenerateContent,
        ..ChatRequest::default()
    };

    if let Some(si) = field(root, "systemInstruction") {
        req.system = system(si)?;
    }

    let mut decoder = PartsDecoder::request();
    if let Some(contents) = field(root, "contents") {
        for (i, c) in arr(contents, "contents")?.iter().enumerate() {
            let path = format!("contents[{i}]");
            let c = obj(c, &path)?;
            let role = match field(c, "role") {
                None => Role::User,
                Some(r) => match string(r, &format!("{path}.role"))? {
                    "user" | "function" | "tool" | "" => Role::User,
                    "model" | "assistant" => Role::Assistant,
                    other => return Err(bad(&format!("{path}.role"), &format!("unknown role {other:?}"))),
                },
            };
            let mut parts = Vec::new();
            if let Some(ps) = field(c, "parts") {
                let ppath = format!("{path}.parts");
                decoder.decode(arr(ps, &ppath)?, &ppath, &mut parts)?;
            }
            req.messages.push(Message { role, parts });
        }
    }

    if let Some(tools) = field(root, "tools") {
        for (i, t) in arr(tools, "tools")?.iter().enumerate() {
            let path = format!("tools[{i}]");
            let Some(decls) = field(obj(t, &path)?, "functionDeclarations") else { continue };
            let dpath = format!("{path}.functionDeclarations");
            for (j, d) in arr(decls, &dpath)?.iter().enumerate() {
                req.tools.push(declaration(d, &format!("{dpath}[{j}]"))?);
            }
        }
    }

    if let Some(tc) = field(root, "toolConfig")
        && let Some(fcc) = field(obj(tc, "toolConfig")?, "functionCallingConfig")
    {
        req.tool_choice = tool_choice(fcc)?;
    }

    if let Some(g) = field(root, "generationConfig") {
        generation_config(g, &mut req)?;
    }
    Ok(req)
}

fn system(v: &Value) -> Result<Vec<SystemBlock>, GatewayError> {
    let text = |t: &str| SystemBlock { text: t.to_string(), cache: false };
    match v {
        Value::String(s) => Ok(vec![text(s)]),
        _ => {
            let si = obj(v, "systemInstruction")?;
            let mut out = Vec::new();
            if let Some(ps) = field(si, "parts") {
                for (i, p) in arr(ps, "systemInstruction.parts")?.iter().enumerate() {
                    let path = format!("systemInstruction.parts[{i}]");
                    if let Some(t) = field(obj(p, &path)?, "text") {
                        out.push(text(string(t, &format!("{path}.text"))?));
                    }
                }
            }
            Ok(out)
        }
    }
}

fn declaration(v: &Value, path: &str) -> Result<Tool, GatewayError> {
    let d = obj(v, path)?;
    let name = string(field(d, "name").ok_or_else(|| bad(path, "name is required"))?, &format!("{path}.name"))?;
    let description = match field(d, "description") {
        Some(s) => Some(string(s, &format!("{path}.description"))?.to_string()),
        None => None,
    };
    let parameters = match (field(d, "parametersJsonSchema"), field(d, "parameters")) {
        (Some(s), _) => s.clone(),
        (None, Some(s)) => json_schema_types(s.clone()),
        (None, None) => json!({"type": "object", "properties": {}}),
    };
    if !parameters.is_object() {
        return Err(bad(&format!("{path}.parameters"), "expected a schema object"));
    }
    Ok(Tool {
        name: name.to_string(),
        description,
        parameters,
        strict: None,
        kind: ToolKind::Function,
        custom_format: None,
    })
}

fn tool_choice(v: &Value) -> Result<Option<ToolChoice>, GatewayError> {
    const PATH: &str = "toolConfig.functionCallingConfig";
    let c = obj(v, PATH)?;
    let allowed: Vec<&str> = match field(c, "allowedFunctionNames") {
        Some(a) => arr(a, &format!("{PATH}.allowedFunctionNames"))?
            .iter()
            .map(|n| string(n, &format!("{PATH}.allowedFunctionNames")))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let Some(mode) = field(c, "mode") else { return Ok(None) };
    Ok(match string(mode, &format!("{PATH}.mode"))?.to_ascii_uppercase().as_str() {
        "AUTO" | "VALIDATED" => Some(ToolChoice::Auto),
        "NONE" => Some(ToolChoice::None),
        "ANY" if allowed.len() == 1 => Some(ToolChoice::Tool(allowed[0].to_string())),
        "ANY" => Some(ToolChoice::Required),
        "MODE_UNSPECIFIED" => None,
        other => return Err(bad(&format!("{PATH}.mode"), &format!("unknown mode {other:?}"))),
    })
}

fn generation_config(v: &Value, req: &mut ChatRequest) -> Result<(), GatewayError> {
    const PATH: &str = "generationConfig";
    let g = obj(v, PATH)?;
    let p = |k: &str| format!("{PATH}.{k}");
    if let Some(t) = field(g, "temperature") {
        req.temperature = Some(number(t, &p("temperature"))?);
    }
    if let Some(t) = field(g, "topP") {
        req.top_p = Some(number(t, &p("topP"))?);
    }
    if let Some(t) = field(g, "topK") {
        req.top_k = Some(count(t, &p("topK"))?);
    }
    if let Some(t) = field(g, "maxOutputTokens") {
        req.max_tokens = Some(count(t, &p("maxOutputTokens"))?);
    }
    if let Some(s) = field(g, "stopSequences") {
        for x in arr(s, &p("stopSequences"))? {
            req.stop.push(string(x, &p("stopSequences"))?.to_string());
        }
    }
    let mime = match field(g, "responseMimeType") {
        Some(m) => Some(string(m, &p("responseMimeType"))?),
        None => None,
    };
    let schema = match (field(g, "responseJsonSchema"), field(g, "responseSchema")) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(s)) => Some(json_schema_types(s.clone())),
        (None, None) => None,
    };
    req.response_format = match (mime, schema) {
        (_, Some(schema)) => Some(ResponseFormat::JsonSchema { name: "response".into(), schema, strict: None }),
        (Some("application/json"), None) => Some(ResponseFormat::JsonObject),
        _ => None,
    };
    if let Some(tc) = field(g, "thinkingConfig") {
        let tc = obj(tc, &p("thinkingConfig"))?;
        let mut r = ReasoningConfig::default();
        if let Some(b) = field(tc, "includeThoughts") {
            r.include_thoughts = boolean(b, &p("thinkingConfig.includeThoughts"))?;
        }
        if let Some(b) = field(tc, "thinkingBudget") {
            // -1 asks for a dynamic budget: no number to carry.
            match b.as_i64() {
                Some(0) => r.disabled = true,
                Some(n) if n < 0 => {}
                _ => r.budget_tokens = Some(count(b, &p("thinkingConfig.thinkingBudget"))?),
            }
        }
        if let Some(l) = field(tc, "thinkingLevel") {
            let level = string(l, &p("thinkingConfig.thinkingLevel"))?.to_ascii_lowercase();
            if level != "thinking_level_unspecified" {
                r.effort = Some(level);
            }
        }
        req.reasoning = Some(r);
    }
    Ok(())
}

/// Encodes the canonical request for a Gemini upstream (the model and `alt=sse` go in the path).
pub fn encode_request(req: &ChatRequest) -> Result<Bytes, GatewayError> {
    let mut root = Map::new();

    let system: Vec<Value> =
        req.system.iter().filter(|s| !s.text.is_empty()).map(|s| json!({"text": s.text})).collect();
    if !system.is_empty() {
        root.insert("systemInstruction".into(), json!({"parts": system}));
    }

    // Function responses carry the tool's name: look it up from the call when the result has none.
    let names: HashMap<&str, &str> = req
        .messages
        .iter()
        .flat_map(|m| &m.parts)
        .filter_map(|p| match p {
            Part::ToolCall(c) => Some((c.id.as_str(), c.name.as_str())),
            _ => None,
        })
        .collect();

    let mut contents: Vec<(Role, Vec<Value>)> = Vec::new();
    for m in &req.messages {
        let parts = encode_parts(&m.parts, &names);
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some((role, prev)) if *role == m.role => prev.extend(parts),
            _ => contents.push((m.role, parts)),
        }
    }
    let contents: Vec<Value> = contents
        .into_iter()
        .map(|(role, mut parts)| {
            if role == Role::Assistant {
                sign_first_call(&mut parts);
            }
            json!({"role": if role == Role::User { "user" } else { "model" }, "parts": parts})
        })
        .collect();
    root.insert("contents".into(), Value::Array(contents));

    let decls: Vec<Value> = req.tools.iter().map(declaration_out).collect();
    if !decls.is_empty() {
        root.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    if let Some(choice) = &req.tool_choice {
        let config = match choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Tool(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        root.insert("toolConfig".into(), json!({"functionCallingConfig": config}));
    }

    let mut g = Map::new();
    if let Some(t) = req.temperature {
        g.insert("temperature".into(), json!(t));
    }
    if let Some(t) = req.top_p {
        g.insert("topP".into(), json!(t));
    }
    if let Some(t) = req.top_k {
        g.insert("topK".into(), json!(t));
    }
    if let Some(t) = req.max_tokens {
        g.insert("maxOutputTokens".into(), json!(t));
    }
    if !req.stop.is_empty() {
        g.insert("stopSequences".into(), json!(req.stop));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            g.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            g.insert("responseMimeType".into(), json!("application/json"));
            g.insert("responseJsonSchema".into(), clean_schema(schema));
        }
        None => {}
    }
    if let Some(r) = &req.reasoning {
        let mut tc = Map::new();
        if r.disabled {
            tc.insert("thinkingBudget".into(), json!(0));
        } else {
            if r.include_thoughts {
                tc.insert("includeThoughts".into(), json!(true));
            }
            if r.budget_tokens.is_some() || r.effort.is_some() {
                tc.insert("thinkingBudget".into(), json!(r.budget_or_default()));
            }
        }
        if !tc.is_empty() {
            g.insert("thinkingConfig".into(), Value::Object(tc));
        }
    }
    if !g.is_empty() {
        root.insert("generationConfig".into(), Value::Object(g));
    }
    serde_json::to_vec(&Value::Object(root)).map(Bytes::from).map_err(|e| GatewayError::Internal(e.to_string()))
}

/// The parts of one turn for a Gemini upstream. Reasoning goes out only with a Gemini signature; an empty signed
/// reasoning (a signature that rode on a text part) is written on the part after it.
fn encode_parts(parts: &[Part], names: &HashMap<&str, &str>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(parts.len());
    let mut pending: Option<&str> = None;
    for p in parts {
        let mut v = match p {
            Part::Text { text, .. } if text.is_empty() => continue,
            Part::Text { text, .. } => json!({"text": text}),
            Part::Image(ImageSource::Base64 { media_type, data }) => {
                json!({"inlineData": {"mimeType": media_type, "data": data}})
            }
            Part::Image(ImageSource::Url(url)) => {
                json!({"fileData": {"mimeType": mime_from_url(url), "fileUri": url}})
            }
            Part::File { media_type, source: FileSource::Base64(data) } => {
                json!({"inlineData": {"mimeType": media_type, "data": data}})
            }
            Part::File { media_type, source: FileSource::Url(url) } => {
                json!({"fileData": {"mimeType": media_type, "fileUri": url}})
            }
            Part::ToolCall(c) => {
                let mut v = json!({"functionCall": {"name": c.name, "args": call_args(&c.arguments, c.kind)}});
                if let Some(sig) = c.signature.as_ref().and_then(|s| s.native_for(Protocol::Gemini)) {
                    v["thoughtSignature"] = json!(sig);
                }
                v
            }
            Part::ToolResult(r) => {
                let name = r.name.as_deref().or_else(|| names.get(r.call_id.as_str()).copied()).unwrap_or(&r.call_id);
                let text = r.text();
                let response = if r.is_error {
                    json!({"error": text})
                } else {
                    match serde_json::from_str::<Value>(&text) {
                        Ok(o @ Value::Object(_)) => o,
                        _ => json!({"result": text}),
                    }
                };
                out.push(json!({"functionResponse": {"name": name, "response": response}}));
                // Images returned by the tool follow its response in the same turn.
                out.extend(encode_parts(
                    &r.content.iter().filter(|p| !matches!(p, Part::Text { .. })).cloned().collect::<Vec<_>>(),
                    names,
                ));
                continue;
            }
            Part::Reasoning(r) => {
                let Some(sig) = r.signature.as_ref().and_then(|s| s.native_for(Protocol::Gemini)) else { continue };
                if r.text.is_empty() {
                    pending = Some(sig);
                    continue;
                }
                json!({"text": r.text, "thought": true, "thoughtSignature": sig})
            }
        };
        if let Some(sig) = pending
            && (v.get("text").is_some() || v.get("functionCall").is_some())
            && v.get("thoughtSignature").is_none()
        {
            v["thoughtSignature"] = json!(sig);
            pending = None;
        }
        out.push(v);
    }
    if let Some(sig) = pending
        && let Some(last) = out.iter_mut().rev().find(|v| v.get("text").is_some() || v.get("functionCall").is_some())
        && last.get("thoughtSignature").is_none()
    {
        last["thoughtSignature"] = json!(sig);
    }
    out
}

/// Gemini 3 rejects a model turn whose first function call has no signature: give calls from elsewhere the
/// documented placeholder.
fn sign_first_call(parts: &mut [Value]) {
    if let Some(first) = parts.iter_mut().find(|p| p.get("functionCall").is_some())
        && first.get("thoughtSignature").is_none()
    {
        first["thoughtSignature"] = json!(SKIP_SIGNATURE);
    }
}

/// `args` must be an object: custom (freeform) input and non-object JSON are wrapped as `{"input": …}`.
pub(crate) fn call_args(arguments: &str, kind: ToolKind) -> Value {
    if kind == ToolKind::Custom {
        return json!({"input": arguments});
    }
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(o @ Value::Object(_)) => o,
        Ok(other) => json!({"input": other}),
        Err(_) => json!({"input": arguments}),
    }
}

fn declaration_out(t: &Tool) -> Value {
    let mut d = Map::new();
    d.insert("name".into(), json!(t.name));
    if let Some(desc) = &t.description {
        d.insert("description".into(), json!(desc));
    }
    let params = match t.kind {
        // A freeform tool becomes a function taking its text as `input` (see `call_args`).
        ToolKind::Custom => {
            Some(json!({"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}))
        }
        ToolKind::Function if is_empty_object_schema(&t.parameters) => None,
        ToolKind::Function => Some(clean_schema(&t.parameters)),
    };
    if let Some(p) = params {
        // `parametersJsonSchema` takes full JSON Schema, unlike `parameters` (an OpenAPI subset that rejects
        // `additionalProperties`, `$ref`, …).
        d.insert("parametersJsonSchema".into(), p);
    }
    Value::Object(d)
}

fn is_empty_object_schema(s: &Value) -> bool {
    let Some(m) = s.as_object() else { return true };
    m.iter().all(|(k, v)| match k.as_str() {
        "type" => v == "object",
        "properties" => v.as_object().is_some_and(|p| p.is_empty()),
        "$schema" | "additionalProperties" => true,
        _ => false,
    })
}

/// Drops what `parametersJsonSchema` / `responseJsonSchema` have no use for (`$schema`, OpenAI's `strict`).
fn clean_schema(s: &Value) -> Value {
    let mut s = s.clone();
    if let Some(m) = s.as_object_mut() {
        m.remove("$schema");
        m.remove("strict");
    }
    s
}
