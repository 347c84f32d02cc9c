//! Complete Gemini answers ⇄ [`ChatResponse`], and the chunk shape shared with the stream encoder.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use xai_core::ir::{ChatResponse, Part, StopReason};
use xai_core::{Endpoint, GatewayError, Protocol, RequestMeta};

use super::parts::{PartsDecoder, arr, field, obj};
use super::request::call_args;
use super::{OutUsage, WireUsage, finish_reason, is_native_id, new_response_id, stop_from_finish};

/// Decodes a complete upstream answer (`candidates[0]`, `usageMetadata`, `responseId`, `modelVersion`).
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, GatewayError> {
    let bad = |what: String| GatewayError::Internal(format!("unreadable Gemini answer: {what}"));
    let root: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let root = root.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
    if let Some(e) = field(root, "error") {
        return Err(upstream_error(e));
    }
    let str_of = |k: &str| field(root, k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut resp = ChatResponse { id: str_of("responseId"), model: str_of("modelVersion"), ..ChatResponse::default() };
    if let Some(u) = field(root, "usageMetadata") {
        resp.usage = serde_json::from_value::<WireUsage>(u.clone()).map_err(|e| bad(e.to_string()))?.normalise();
    }
    let candidate = match field(root, "candidates") {
        Some(c) => arr(c, "candidates").map_err(|e| bad(e.to_string()))?.first(),
        None => None,
    };
    let Some(candidate) = candidate else {
        // No candidate: the prompt itself was blocked (`promptFeedback.blockReason`).
        resp.stop = StopReason::ContentFilter;
        return Ok(resp);
    };
    let candidate = obj(candidate, "candidates[0]").map_err(|e| bad(e.to_string()))?;
    if let Some(content) = field(candidate, "content")
        && let Some(parts) = field(obj(content, "candidates[0].content").map_err(|e| bad(e.to_string()))?, "parts")
    {
        let path = "candidates[0].content.parts";
        let parts = arr(parts, path).map_err(|e| bad(e.to_string()))?;
        PartsDecoder::response(&resp.id).decode(parts, path, &mut resp.parts).map_err(|e| bad(e.to_string()))?;
    }
    let tool_seen = resp.parts.iter().any(|p| matches!(p, Part::ToolCall(_)));
    let reason = field(candidate, "finishReason").and_then(Value::as_str).unwrap_or("STOP");
    resp.stop = stop_from_finish(reason, tool_seen);
    Ok(resp)
}

/// An `{"error":{…}}` answered with a success status: re-rendered as the upstream's refusal.
fn upstream_error(e: &Value) -> GatewayError {
    let code = e.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok());
    let status = code.and_then(|c| http::StatusCode::from_u16(c).ok()).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let message = e.get("message").and_then(Value::as_str).unwrap_or("upstream error").to_string();
    GatewayError::UpstreamRejected { status, message }
}

/// The message of an upstream error body (`{"error":{"message"}}`, also inside the JSON-array stream form).
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = match &v {
        Value::Array(a) => a.iter().find_map(|x| x.get("error"))?,
        _ => v.get("error")?,
    };
    match e {
        Value::String(s) => Some(s.clone()),
        _ => e.get("message").and_then(Value::as_str).map(str::to_string),
    }
}

/// One `GenerateContentResponse`: a complete answer or a stream chunk.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OutChunk<'a> {
    pub(crate) candidates: [OutCandidate<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage_metadata: Option<OutUsage>,
    pub(crate) model_version: &'a str,
    pub(crate) response_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OutCandidate<'a> {
    pub(crate) content: OutContent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) finish_reason: Option<&'static str>,
    pub(crate) index: u32,
}

#[derive(Serialize)]
pub(crate) struct OutContent<'a> {
    pub(crate) role: &'static str,
    pub(crate) parts: &'a [OutPart<'a>],
}

/// A part for a Gemini client.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OutPart<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) thought: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) function_call: Option<OutCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) thought_signature: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
pub(crate) struct OutCall<'a> {
    pub(crate) name: &'a str,
    pub(crate) args: Value,
    pub(crate) id: &'a str,
}

/// A `responseId` for the client: the upstream's when it is Gemini-shaped.
pub(crate) fn client_response_id(id: &str) -> Cow<'_, str> {
    if is_native_id(id) { Cow::Borrowed(id) } else { Cow::Owned(new_response_id(id)) }
}

/// Encodes a complete answer for a Gemini client (the model echoed is the one it asked).
pub fn encode_response(resp: &ChatResponse, _endpoint: &Endpoint, meta: &RequestMeta) -> Bytes {
    let mut parts: Vec<OutPart<'_>> = Vec::with_capacity(resp.parts.len() + 1);
    // An empty signed reasoning is a signature that rode on the text part after it: put it back there.
    let mut pending: Option<String> = None;
    for p in &resp.parts {
        match p {
            Part::Text { text, .. } => {
                parts.push(OutPart {
                    text: Some(text),
                    thought_signature: pending.take().map(Cow::Owned),
                    ..OutPart::default()
                });
            }
            Part::Reasoning(r) => {
                flush(&mut parts, &mut pending);
                let sig = r.signature.as_ref().map(|s| s.for_client(Protocol::Gemini));
                if r.text.is_empty() {
                    pending = sig;
                } else {
                    parts.push(OutPart {
                        text: Some(&r.text),
                        thought: Some(true),
                        thought_signature: sig.map(Cow::Owned),
                        ..OutPart::default()
                    });
                }
            }
            Part::ToolCall(c) => {
                flush(&mut parts, &mut pending);
                parts.push(OutPart {
                    function_call: Some(OutCall { name: &c.name, args: call_args(&c.arguments, c.kind), id: &c.id }),
                    thought_signature: c.signature.as_ref().map(|s| Cow::Owned(s.for_client(Protocol::Gemini))),
                    ..OutPart::default()
                });
            }
            Part::Image(_) | Part::File { .. } | Part::ToolResult(_) => {}
        }
    }
    flush(&mut parts, &mut pending);
    let tool_seen = resp.parts.iter().any(|p| matches!(p, Part::ToolCall(_)));
    let stop = if tool_seen { &StopReason::ToolUse } else { &resp.stop };
    let id = client_response_id(&resp.id);
    let chunk = OutChunk {
        candidates: [OutCandidate {
            content: OutContent { role: "model", parts: &parts },
            finish_reason: Some(finish_reason(stop)),
            index: 0,
        }],
        usage_metadata: Some(OutUsage::from(&resp.usage)),
        model_version: &meta.model,
        response_id: &id,
    };
    serde_json::to_vec(&chunk).map(Bytes::from).unwrap_or_default()
}

/// A signature with no text part after it travels on an empty text part of its own.
fn flush<'a>(parts: &mut Vec<OutPart<'a>>, pending: &mut Option<String>) {
    if let Some(sig) = pending.take() {
        parts.push(OutPart { text: Some(""), thought_signature: Some(Cow::Owned(sig)), ..OutPart::default() });
    }
}
