//! Complete (non-streaming) Responses answers to and from [`ChatResponse`], and upstream error bodies.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use xai_core::ir::{ChatResponse, Part, Reasoning, Signature, ToolCall, ToolKind};
use xai_core::{Endpoint, GatewayError, Protocol, RequestMeta};

use super::{
    OutItem, OutResponse, OutSummary, OutText, OutUsage, REDACTED_CARRIER, SIG_CARRIER, WireItem, WireUsage,
    client_encrypted, finish_status, item_id, now_secs, pack_signature, response_id, wire_stop,
};

#[derive(Deserialize, Debug, Default)]
pub(crate) struct WireError {
    #[serde(default)]
    pub(crate) code: Option<Value>,
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(rename = "type", default)]
    pub(crate) ty: Option<String>,
}

impl WireError {
    /// The code as text (`rate_limit_exceeded`, …), else the error type, else `upstream_error`.
    pub(crate) fn code(&self) -> String {
        match &self.code {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => self.ty.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| "upstream_error".into()),
        }
    }

    pub(crate) fn message(&self) -> String {
        self.message.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| "upstream response failed".into())
    }
}

#[derive(Deserialize, Debug, Default)]
pub(crate) struct WireIncomplete {
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
pub(crate) struct WireResponse {
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) status: Option<String>,
    #[serde(default, deserialize_with = "super::lenient")]
    pub(crate) output: Option<Vec<WireItem>>,
    #[serde(default, deserialize_with = "super::lenient")]
    pub(crate) usage: Option<WireUsage>,
    #[serde(default, deserialize_with = "super::lenient")]
    pub(crate) error: Option<WireError>,
    #[serde(default, deserialize_with = "super::lenient")]
    pub(crate) incomplete_details: Option<WireIncomplete>,
}

/// One output item as IR content (`None` for hosted tool calls and other items without a counterpart), and
/// whether it was a refusal.
pub(crate) fn item_part(item: &WireItem) -> Option<(Part, bool)> {
    match item.ty.as_str() {
        "message" => {
            let (text, refused) = item.message_text();
            (!text.is_empty()).then_some((Part::Text { text, cache: false }, refused))
        }
        "reasoning" => Some((
            Part::Reasoning(Reasoning {
                text: item.reasoning_text(),
                signature: item
                    .encrypted_content
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .map(|s| pack_signature(item.id.as_deref(), s)),
                redacted: None,
                id: item.id.clone(),
            }),
            false,
        )),
        "function_call" | "custom_tool_call" => {
            let custom = item.ty == "custom_tool_call";
            let arguments = if custom {
                item.input.clone().unwrap_or_default()
            } else {
                match item.arguments.as_deref() {
                    Some(a) if !a.trim().is_empty() => a.to_string(),
                    _ => "{}".to_string(),
                }
            };
            let id = item.call_id.clone().or_else(|| item.id.clone()).unwrap_or_default();
            Some((
                Part::ToolCall(ToolCall {
                    id,
                    name: item.name.clone().unwrap_or_default(),
                    arguments,
                    kind: if custom { ToolKind::Custom } else { ToolKind::Function },
                    signature: None,
                }),
                false,
            ))
        }
        _ => None,
    }
}

/// Decodes a complete upstream response object.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, GatewayError> {
    let r: WireResponse = serde_json::from_slice(body)
        .map_err(|e| GatewayError::Internal(format!("upstream Responses answer is not a response object: {e}")))?;
    if r.status.as_deref() == Some("failed") {
        let e = r.error.unwrap_or_default();
        return Err(GatewayError::UpstreamRejected {
            status: http::StatusCode::BAD_GATEWAY,
            message: format!("{} ({})", e.message(), e.code()),
        });
    }
    let mut parts = Vec::new();
    let (mut has_tool, mut refused) = (false, false);
    for item in r.output.iter().flatten() {
        if let Some((part, refusal)) = item_part(item) {
            has_tool |= matches!(part, Part::ToolCall(_));
            refused |= refusal;
            parts.push(part);
        }
    }
    let reason = r.incomplete_details.as_ref().and_then(|d| d.reason.as_deref());
    Ok(ChatResponse {
        id: r.id.unwrap_or_default(),
        model: r.model.unwrap_or_default(),
        stop: wire_stop(r.status.as_deref(), reason, has_tool, refused),
        usage: r.usage.map(WireUsage::normalise).unwrap_or_default(),
        parts,
    })
}

/// Encodes a complete answer for a Responses client, echoing the model the client asked.
pub fn encode_response(resp: &ChatResponse, _endpoint: &Endpoint, meta: &RequestMeta) -> Bytes {
    let id = response_id(Some(&resp.id));
    let mut output: Vec<Box<RawValue>> = Vec::with_capacity(resp.parts.len());
    let push = |output: &mut Vec<Box<RawValue>>, item: &OutItem<'_>| {
        if let Ok(raw) = serde_json::to_string(item).and_then(RawValue::from_string) {
            output.push(raw);
        }
    };
    let mut has_tool = false;
    for p in &resp.parts {
        let n = output.len();
        match p {
            Part::Text { text, .. } => {
                let content = [OutText::output(text)];
                let item_id = item_id("msg", &id, n);
                push(
                    &mut output,
                    &OutItem::Message { id: &item_id, status: "completed", role: "assistant", content: &content },
                );
            }
            Part::Reasoning(Reasoning { redacted: Some(data), .. }) => {
                let carrier = item_id(REDACTED_CARRIER, &id, n);
                let value = client_encrypted(&Signature::new(Protocol::Anthropic, data.as_str()));
                push(&mut output, &OutItem::Reasoning { id: &carrier, summary: &[], encrypted_content: Some(&value) });
            }
            Part::Reasoning(r) => {
                let item_id = match &r.id {
                    Some(rid) if rid.starts_with("rs_") => rid.clone(),
                    _ => item_id("rs", &id, n),
                };
                let summary = [OutSummary::new(&r.text)];
                let summary: &[OutSummary<'_>] = if r.text.is_empty() { &[] } else { &summary };
                let sig = r.signature.as_ref().map(client_encrypted);
                push(&mut output, &OutItem::Reasoning { id: &item_id, summary, encrypted_content: sig.as_deref() });
            }
            Part::ToolCall(c) => {
                has_tool = true;
                if let Some(sig) = &c.signature {
                    // See the stream encoder: the call's signature rides in a reasoning item just before it.
                    let carrier = item_id(SIG_CARRIER, &id, n);
                    let value = client_encrypted(sig);
                    push(
                        &mut output,
                        &OutItem::Reasoning { id: &carrier, summary: &[], encrypted_content: Some(&value) },
                    );
                }
                let n = output.len();
                match c.kind {
                    ToolKind::Function => {
                        let item_id = item_id("fc", &id, n);
                        let arguments = if c.arguments.is_empty() { "{}" } else { &c.arguments };
                        push(
                            &mut output,
                            &OutItem::FunctionCall {
                                id: &item_id,
                                status: "completed",
                                arguments,
                                call_id: &c.id,
                                name: &c.name,
                            },
                        );
                    }
                    ToolKind::Custom => {
                        let item_id = item_id("ctc", &id, n);
                        push(
                            &mut output,
                            &OutItem::CustomToolCall {
                                id: &item_id,
                                status: "completed",
                                input: &c.arguments,
                                call_id: &c.id,
                                name: &c.name,
                            },
                        );
                    }
                }
            }
            Part::Image(_) | Part::File { .. } | Part::ToolResult(_) => {}
        }
    }
    let (status, incomplete) = finish_status(&resp.stop, has_tool);
    let mut out = OutResponse::new(&id, now_secs(), &meta.model, status, output.as_slice());
    out.incomplete_details = incomplete;
    out.usage = Some(OutUsage::from(&resp.usage));
    serde_json::to_vec(&out).map(Bytes::from).unwrap_or_default()
}

/// The message of an upstream error body: `{"error":{"message",…}}`, or a failed response object.
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct E {
        #[serde(default)]
        error: Option<WireError>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        response: Option<WireResponse>,
    }
    let e: E = serde_json::from_slice(body).ok()?;
    e.error
        .and_then(|e| e.message)
        .or(e.message)
        .or_else(|| e.response.and_then(|r| r.error).and_then(|e| e.message))
        .filter(|m| !m.is_empty())
}
