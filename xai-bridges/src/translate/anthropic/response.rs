//! Complete (non-streaming) messages: an upstream answer → [`ChatResponse`], and back for a client.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use xai_core::ir::{ChatResponse, Part, Reasoning, Signature, ToolCall, ToolKind};
use xai_core::{Endpoint, GatewayError, Protocol, RequestMeta};

use super::{WireUsage, client_message_id, denormalise, stop_from_wire, stop_to_wire};

#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default, borrow)]
    content: Vec<WireBlock<'a>>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock<'a> {
    Text {
        #[serde(borrow)]
        text: Cow<'a, str>,
    },
    Thinking {
        #[serde(default, borrow)]
        thinking: Cow<'a, str>,
        #[serde(default, borrow)]
        signature: Cow<'a, str>,
    },
    RedactedThinking {
        #[serde(borrow)]
        data: Cow<'a, str>,
    },
    ToolUse {
        id: String,
        name: String,
        /// A `Value`: `RawValue` cannot be borrowed through an internally tagged enum.
        #[serde(default)]
        input: Option<Value>,
    },
    /// Server tools, their results and anything newer: no canonical form.
    #[serde(other)]
    Other,
}

/// Decodes a complete upstream message.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, GatewayError> {
    let m: WireMessage<'_> = serde_json::from_slice(body).map_err(|e| GatewayError::UpstreamUnavailable {
        message: format!("upstream answer is not a valid Anthropic message: {e}"),
        last_status: None,
        retry_after: None,
    })?;
    let mut parts = Vec::with_capacity(m.content.len());
    for b in m.content {
        match b {
            WireBlock::Text { text } => parts.push(Part::Text { text: text.into_owned(), cache: false }),
            WireBlock::Thinking { thinking, signature } => parts.push(Part::Reasoning(Reasoning {
                text: thinking.into_owned(),
                signature: (!signature.is_empty()).then(|| Signature::new(Protocol::Anthropic, signature)),
                ..Reasoning::default()
            })),
            WireBlock::RedactedThinking { data } => {
                parts.push(Part::Reasoning(Reasoning { redacted: Some(data.into_owned()), ..Reasoning::default() }))
            }
            WireBlock::ToolUse { id, name, input } => parts.push(Part::ToolCall(ToolCall {
                id,
                name,
                arguments: input
                    .filter(|v| !v.is_null())
                    .map_or_else(|| "{}".to_string(), |v| serde_json::to_string(&v).unwrap_or_else(|_| "{}".into())),
                kind: ToolKind::Function,
                signature: None,
            })),
            WireBlock::Other => {}
        }
    }
    Ok(ChatResponse {
        id: m.id.unwrap_or_default(),
        model: m.model.unwrap_or_default(),
        parts,
        stop: stop_from_wire(m.stop_reason.as_deref(), m.stop_sequence),
        usage: m.usage.normalise(),
    })
}

/// Tool input for a client: the arguments when they are a JSON object, else wrapped (Anthropic input is an object).
pub(super) fn client_tool_input(kind: ToolKind, arguments: &str) -> Value {
    if kind == ToolKind::Custom {
        return json!({"input": arguments});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ if arguments.trim().is_empty() => json!({}),
        _ => json!({"_raw": arguments}),
    }
}

/// Encodes a complete answer for an Anthropic client (`meta.model` is the model it asked for).
pub fn encode_response(resp: &ChatResponse, _endpoint: &Endpoint, meta: &RequestMeta) -> Bytes {
    let mut content = Vec::with_capacity(resp.parts.len());
    let mut saw_tool = false;
    for p in &resp.parts {
        match p {
            Part::Text { text, .. } => content.push(json!({"type": "text", "text": text})),
            Part::Reasoning(r) => {
                if let Some(data) = &r.redacted {
                    content.push(json!({"type": "redacted_thinking", "data": data}));
                } else if !r.text.is_empty() || r.signature.is_some() {
                    let sig = r.signature.as_ref().map(|s| s.for_client(Protocol::Anthropic)).unwrap_or_default();
                    content.push(json!({"type": "thinking", "thinking": r.text, "signature": sig}));
                }
            }
            Part::ToolCall(c) => {
                saw_tool = true;
                content.push(json!({
                    "type": "tool_use",
                    "id": c.id,
                    "name": c.name,
                    "input": client_tool_input(c.kind, &c.arguments),
                }));
            }
            Part::Image(_) | Part::File { .. } | Part::ToolResult(_) => {}
        }
    }
    let (stop_reason, stop_sequence) = stop_to_wire(&resp.stop, saw_tool);
    let [input, write, read, output] = denormalise(&resp.usage);
    let body = json!({
        "id": client_message_id(Some(&resp.id)),
        "type": "message",
        "role": "assistant",
        "model": &*meta.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": input,
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
            "output_tokens": output,
        },
    });
    serde_json::to_vec(&body).unwrap_or_default().into()
}

/// The message of an Anthropic error body (`{"type":"error","error":{"type","message"}}`).
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        error: Option<Inner>,
        #[serde(default)]
        message: Option<String>,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        message: Option<String>,
    }
    let b: Body = serde_json::from_slice(body).ok()?;
    b.error.and_then(|e| e.message).or(b.message).filter(|m| !m.is_empty())
}
