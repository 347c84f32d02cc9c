//! Gemini `parts` → IR parts, shared by the request and answer decoders, and the JSON field helpers they use.
//!
//! Fields are read in camelCase (what google-genai sends) and, when absent, in snake_case (the REST API accepts
//! both). Errors name the offending field by its path.

use std::borrow::Cow;

use serde_json::{Map, Value};
use xai_core::GatewayError;
use xai_core::Protocol;
use xai_core::ir::{
    FileSource, ImageSource, Part, Reasoning, Signature, ToolCall, ToolKind, ToolResult, synth_call_id,
};

/// A JSON object's field by its camelCase name, or its snake_case spelling; `null` counts as absent.
pub(crate) fn field<'a>(obj: &'a Map<String, Value>, camel: &str) -> Option<&'a Value> {
    let v = match obj.get(camel) {
        Some(v) => Some(v),
        None if camel.bytes().any(|b| b.is_ascii_uppercase()) => obj.get(&snake(camel)),
        None => None,
    };
    v.filter(|v| !v.is_null())
}

fn snake(camel: &str) -> String {
    let mut s = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            s.push('_');
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

/// A 400 naming the field.
pub(crate) fn bad(path: &str, what: &str) -> GatewayError {
    GatewayError::BadRequest(format!("Invalid value at '{path}': {what}"))
}

pub(crate) fn obj<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, GatewayError> {
    v.as_object().ok_or_else(|| bad(path, "expected an object"))
}

pub(crate) fn arr<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, GatewayError> {
    v.as_array().ok_or_else(|| bad(path, "expected an array"))
}

pub(crate) fn string<'a>(v: &'a Value, path: &str) -> Result<&'a str, GatewayError> {
    v.as_str().ok_or_else(|| bad(path, "expected a string"))
}

pub(crate) fn boolean(v: &Value, path: &str) -> Result<bool, GatewayError> {
    v.as_bool().ok_or_else(|| bad(path, "expected a boolean"))
}

pub(crate) fn number(v: &Value, path: &str) -> Result<f64, GatewayError> {
    v.as_f64().ok_or_else(|| bad(path, "expected a number"))
}

/// A non-negative integer (accepting `40.0`, and the int64-as-string form of proto JSON).
pub(crate) fn count(v: &Value, path: &str) -> Result<u64, GatewayError> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    if let Some(f) = v.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 1e18) {
        return Ok(f as u64);
    }
    v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| bad(path, "expected a non-negative integer"))
}

/// Lower-cases OpenAPI-style `type` names (`"OBJECT"`, `"STRING"`: google-genai sends them upper-case) so the
/// schema is JSON Schema for other protocols.
pub(crate) fn json_schema_types(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    match x {
                        Value::String(s) if k == "type" && s.bytes().any(|b| b.is_ascii_uppercase()) => {
                            *s = s.to_ascii_lowercase();
                        }
                        Value::Array(a) if k == "type" => {
                            for t in a {
                                if let Value::String(s) = t {
                                    *s = s.to_ascii_lowercase();
                                }
                            }
                        }
                        _ => walk(x),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// Decodes parts of one turn after another, keeping what spans turns: the call count (for synthesised ids) and
/// the calls still waiting for a function response (matched by name, as Gemini does).
pub(crate) struct PartsDecoder<'s> {
    /// Seed of synthesised call ids: `None` in requests (then the tool name is the seed).
    seed: Option<&'s str>,
    calls: usize,
    waiting: Vec<(String, String)>,
    /// Answers merge adjacent text parts, like the stream decoder does with text chunks.
    merge_text: bool,
}

impl<'s> PartsDecoder<'s> {
    /// For a client request.
    pub(crate) fn request() -> Self {
        Self { seed: None, calls: 0, waiting: Vec::new(), merge_text: false }
    }

    /// For an upstream answer whose `responseId` is `seed`.
    pub(crate) fn response(seed: &'s str) -> Self {
        Self { seed: Some(seed), calls: 0, waiting: Vec::new(), merge_text: true }
    }

    /// The id of the next call without one.
    pub(crate) fn call_id(seed: Option<&str>, name: &str, index: usize) -> String {
        match seed {
            Some(s) => synth_call_id(s, index),
            None => synth_call_id(&format!("gemini:{name}"), index),
        }
    }

    /// Appends the IR parts of `parts` (the array at `path`) to `out`.
    pub(crate) fn decode(&mut self, parts: &[Value], path: &str, out: &mut Vec<Part>) -> Result<(), GatewayError> {
        for (i, p) in parts.iter().enumerate() {
            let path = format!("{path}[{i}]");
            let p = obj(p, &path)?;
            let sig = match field(p, "thoughtSignature") {
                Some(s) => {
                    Some(Signature::from_field(Protocol::Gemini, string(s, &format!("{path}.thoughtSignature"))?))
                }
                None => None,
            };
            let thought = match field(p, "thought") {
                Some(t) => boolean(t, &format!("{path}.thought"))?,
                None => false,
            };
            if let Some(fc) = field(p, "functionCall") {
                let call = self.call(fc, &format!("{path}.functionCall"), sig)?;
                out.push(Part::ToolCall(call));
            } else if let Some(fr) = field(p, "functionResponse") {
                let result = self.result(fr, &format!("{path}.functionResponse"))?;
                out.push(Part::ToolResult(result));
            } else if let Some(d) = field(p, "inlineData") {
                out.push(inline_data(d, &format!("{path}.inlineData"))?);
            } else if let Some(d) = field(p, "fileData") {
                out.push(file_data(d, &format!("{path}.fileData"))?);
            } else if let Some(t) = field(p, "text").or(thought.then_some(&Value::Null)) {
                let text = if t.is_null() { "" } else { string(t, &format!("{path}.text"))? };
                if thought {
                    push_thought(out, text, sig);
                } else {
                    if let Some(sig) = sig {
                        out.push(Part::Reasoning(Reasoning { signature: Some(sig), ..Reasoning::default() }));
                    }
                    push_text(out, text, self.merge_text);
                }
            } else if let Some(sig) = sig {
                // A part holding only a signature: it belongs to the reasoning before it.
                push_thought(out, "", Some(sig));
            }
        }
        Ok(())
    }

    fn call(&mut self, v: &Value, path: &str, signature: Option<Signature>) -> Result<ToolCall, GatewayError> {
        let fc = obj(v, path)?;
        let name = string(field(fc, "name").ok_or_else(|| bad(path, "name is required"))?, &format!("{path}.name"))?;
        let arguments = match field(fc, "args") {
            Some(a @ Value::Object(_)) => a.to_string(),
            Some(_) => return Err(bad(&format!("{path}.args"), "expected an object")),
            None => "{}".to_string(),
        };
        let index = self.calls;
        self.calls += 1;
        let id = match field(fc, "id") {
            Some(id) => string(id, &format!("{path}.id"))?.to_string(),
            None => Self::call_id(self.seed, name, index),
        };
        self.waiting.push((name.to_string(), id.clone()));
        Ok(ToolCall { id, name: name.to_string(), arguments, kind: ToolKind::Function, signature })
    }

    fn result(&mut self, v: &Value, path: &str) -> Result<ToolResult, GatewayError> {
        let fr = obj(v, path)?;
        let name = string(field(fr, "name").ok_or_else(|| bad(path, "name is required"))?, &format!("{path}.name"))?;
        let given = match field(fr, "id") {
            Some(id) => Some(string(id, &format!("{path}.id"))?),
            None => None,
        };
        // Gemini matches responses to calls by name: the earliest unanswered call of that name.
        let at = match given {
            Some(id) => self.waiting.iter().position(|(_, i)| i == id),
            None => self.waiting.iter().position(|(n, _)| n == name),
        };
        let matched = at.map(|at| self.waiting.remove(at).1);
        let call_id = match (given, matched) {
            (Some(id), _) => id.to_string(),
            (None, Some(id)) => id,
            (None, None) => synth_call_id(&format!("gemini-response:{name}"), self.calls),
        };
        let response = field(fr, "response");
        let (text, is_error) = match response {
            Some(Value::Object(m)) if m.len() == 1 && m.contains_key("error") => match &m["error"] {
                Value::String(s) => (s.clone(), true),
                other => (other.to_string(), true),
            },
            Some(r) => (r.to_string(), false),
            None => ("{}".to_string(), false),
        };
        let mut content = vec![Part::Text { text, cache: false }];
        // Gemini 3 multimodal function responses: `functionResponse.parts[{inlineData|fileData}]`.
        if let Some(ps) = field(fr, "parts") {
            for (i, p) in arr(ps, &format!("{path}.parts"))?.iter().enumerate() {
                let ppath = format!("{path}.parts[{i}]");
                let p = obj(p, &ppath)?;
                if let Some(d) = field(p, "inlineData") {
                    content.push(inline_data(d, &format!("{ppath}.inlineData"))?);
                } else if let Some(d) = field(p, "fileData") {
                    content.push(file_data(d, &format!("{ppath}.fileData"))?);
                }
            }
        }
        Ok(ToolResult { call_id, name: Some(name.to_string()), content, is_error, kind: ToolKind::Function })
    }
}

/// A thought part: continues the reasoning before it while that one is unsigned (a signature closes it).
fn push_thought(out: &mut Vec<Part>, text: &str, sig: Option<Signature>) {
    if let Some(Part::Reasoning(r)) = out.last_mut()
        && r.signature.is_none()
        && r.redacted.is_none()
    {
        r.text.push_str(text);
        r.signature = sig;
        return;
    }
    if text.is_empty() && sig.is_none() {
        return;
    }
    out.push(Part::Reasoning(Reasoning { text: text.to_string(), signature: sig, ..Reasoning::default() }));
}

fn push_text(out: &mut Vec<Part>, text: &str, merge: bool) {
    if merge {
        if text.is_empty() {
            return;
        }
        if let Some(Part::Text { text: prev, .. }) = out.last_mut() {
            prev.push_str(text);
            return;
        }
    }
    out.push(Part::Text { text: text.to_string(), cache: false });
}

fn mime_and<'a>(v: &'a Value, path: &str, data_key: &str) -> Result<(Cow<'a, str>, &'a str), GatewayError> {
    let d = obj(v, path)?;
    let mime = match field(d, "mimeType") {
        Some(m) => Cow::Borrowed(string(m, &format!("{path}.mimeType"))?),
        None => Cow::Borrowed(""),
    };
    let data = string(
        field(d, data_key).ok_or_else(|| bad(path, &format!("{data_key} is required")))?,
        &format!("{path}.{data_key}"),
    )?;
    Ok((mime, data))
}

fn inline_data(v: &Value, path: &str) -> Result<Part, GatewayError> {
    let (mime, data) = mime_and(v, path, "data")?;
    if mime.is_empty() {
        return Err(bad(&format!("{path}.mimeType"), "mimeType is required"));
    }
    Ok(if mime.starts_with("image/") {
        Part::Image(ImageSource::Base64 { media_type: mime.into_owned(), data: data.to_string() })
    } else {
        Part::File { media_type: mime.into_owned(), source: FileSource::Base64(data.to_string()) }
    })
}

fn file_data(v: &Value, path: &str) -> Result<Part, GatewayError> {
    let (mime, uri) = mime_and(v, path, "fileUri")?;
    Ok(if mime.starts_with("image/") {
        Part::Image(ImageSource::Url(uri.to_string()))
    } else {
        Part::File { media_type: mime.into_owned(), source: FileSource::Url(uri.to_string()) }
    })
}
