//! OpenAI Responses (`POST /v1/responses`, what the Codex CLI speaks) to and from the canonical IR.
//!
//! - [`request`]: client bodies → [`ChatRequest`](xai_core::ir::ChatRequest) and back out towards a Responses
//!   upstream (`store:false` with `include:["reasoning.encrypted_content"]`, so reasoning round-trips statelessly).
//! - [`response`]: complete response objects both ways.
//! - [`decoder`] and [`encoder`]: the upstream SSE decoder and the client SSE encoder (Codex: `output_item.done`
//!   is the truth for each item, `response.completed` must come with the full `output` and a usage object holding
//!   all five counts, failures are `response.failed` with a code Codex understands).
//!
//! `previous_response_id` cannot be honoured across protocols (the gateway keeps no response state): a
//! translated request carrying one is refused with 400.

pub mod decoder;
pub mod encoder;
pub mod request;
pub mod response;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use xai_core::ir::Signature;
use xai_core::{Protocol, Usage};

pub use decoder::ResponsesStreamDecoder;
pub use encoder::ResponsesStreamEncoder;
pub use request::{decode_request, encode_request};
pub use response::{decode_response, encode_response, error_message};

/// Wire usage of a response.
#[derive(Deserialize, Default, Clone, Copy, Debug)]
pub(crate) struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<InDetails>,
    #[serde(default)]
    output_tokens_details: Option<OutDetails>,
}

#[derive(Deserialize, Default, Clone, Copy, Debug)]
struct InDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

#[derive(Deserialize, Default, Clone, Copy, Debug)]
struct OutDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl WireUsage {
    /// Normalised counts (Responses already counts cached input in `input_tokens`, reasoning in `output_tokens`).
    pub(crate) fn normalise(self) -> Usage {
        Usage {
            prompt_tokens: self.input_tokens.unwrap_or(0),
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: self.input_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0),
            cache_write_tokens: self.input_tokens_details.and_then(|d| d.cache_write_tokens).unwrap_or(0),
            reasoning_tokens: self.output_tokens_details.and_then(|d| d.reasoning_tokens).unwrap_or(0),
            ..Usage::default()
        }
    }
}

/// Usage as written to a client: all five counts always present (Codex fails to parse a usage object missing any).
#[derive(Serialize, Debug)]
pub(crate) struct OutUsage {
    input_tokens: u64,
    input_tokens_details: OutInDetails,
    output_tokens: u64,
    output_tokens_details: OutOutDetails,
    total_tokens: u64,
}

#[derive(Serialize, Debug)]
struct OutInDetails {
    cached_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    cache_write_tokens: u64,
}

#[derive(Serialize, Debug)]
struct OutOutDetails {
    reasoning_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<&Usage> for OutUsage {
    fn from(u: &Usage) -> Self {
        OutUsage {
            input_tokens: u.prompt_tokens,
            input_tokens_details: OutInDetails {
                cached_tokens: u.cached_tokens,
                cache_write_tokens: u.cache_write_tokens,
            },
            output_tokens: u.completion_tokens,
            output_tokens_details: OutOutDetails { reasoning_tokens: u.reasoning_tokens },
            total_tokens: u.prompt_tokens + u.completion_tokens,
        }
    }
}

/// One content part of a message item (`output_text`, `refusal`, `input_text`, …).
#[derive(Deserialize, Debug, Default)]
pub(crate) struct WirePart {
    #[serde(default)]
    pub(crate) text: Option<String>,
    #[serde(default)]
    pub(crate) refusal: Option<String>,
}

/// One output item of a response (message, reasoning, function or custom tool call; others are skipped).
#[derive(Deserialize, Debug, Default)]
pub(crate) struct WireItem {
    #[serde(rename = "type", default)]
    pub(crate) ty: String,
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub(crate) call_id: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) arguments: Option<String>,
    #[serde(default)]
    pub(crate) input: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) content: Option<Vec<WirePart>>,
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) summary: Option<Vec<WirePart>>,
    #[serde(default)]
    pub(crate) encrypted_content: Option<String>,
}

impl WireItem {
    /// A message's visible text (output text and refusals, in order) and whether it held a refusal.
    pub(crate) fn message_text(&self) -> (String, bool) {
        let mut s = String::new();
        let mut refused = false;
        for p in self.content.iter().flatten() {
            if let Some(t) = &p.text {
                s.push_str(t);
            }
            if let Some(r) = &p.refusal {
                refused = true;
                s.push_str(r);
            }
        }
        (s, refused)
    }

    /// A reasoning item's text: its summaries joined by blank lines, else its raw `reasoning_text` content.
    pub(crate) fn reasoning_text(&self) -> String {
        let join = |parts: &[WirePart]| {
            let texts: Vec<&str> = parts.iter().filter_map(|p| p.text.as_deref()).collect();
            texts.join(SUMMARY_SEPARATOR)
        };
        let s = join(self.summary.as_deref().unwrap_or_default());
        if s.is_empty() { join(self.content.as_deref().unwrap_or_default()) } else { s }
    }
}

/// Reads a field that a proxy or a newer API version may shape differently as absent rather than failing the
/// whole event (a dropped `response.completed` would turn a good answer into a truncated one).
pub(crate) fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok()))
}

/// Id prefix of a reasoning item that only carries the signature of the tool call after it (Gemini
/// `thoughtSignature` on a `functionCall`), for the client to send back.
pub(crate) const SIG_CARRIER: &str = "rs_xaisig";

/// Id prefix of a reasoning item that carries Anthropic `redacted_thinking` data in its `encrypted_content`.
pub(crate) const REDACTED_CARRIER: &str = "rs_xairedact";

/// The IR signature of an upstream reasoning item: its `encrypted_content`, prefixed with the item id
/// (`rs_…:<encrypted_content>`). Replaying reasoning to OpenAI needs both, and clients of other protocols keep only
/// the opaque signature (an Anthropic `thinking` block has no id). Encrypted content is URL-safe base64, so the
/// first `:` always ends the id.
pub(crate) fn pack_signature(id: Option<&str>, encrypted: &str) -> Signature {
    match id {
        Some(id) if id.starts_with("rs_") && !id.contains(':') => {
            Signature::new(Protocol::OpenAiResponses, format!("{id}:{encrypted}"))
        }
        _ => Signature::new(Protocol::OpenAiResponses, encrypted),
    }
}

/// The item id (when packed) and the encrypted content of a Responses signature value.
pub(crate) fn unpack_signature(value: &str) -> (Option<&str>, &str) {
    match value.split_once(':') {
        Some((id, enc)) if id.starts_with("rs_") => (Some(id), enc),
        _ => (None, value),
    }
}

/// What goes in a client's `encrypted_content`: the bare encrypted content for a signature this protocol issued,
/// else the envelope.
pub(crate) fn client_encrypted(sig: &Signature) -> String {
    match sig.native_for(Protocol::OpenAiResponses) {
        Some(v) => unpack_signature(v).1.to_string(),
        None => sig.envelope(),
    }
}

/// Between the summary parts of one reasoning item, once joined into one IR text.
pub(crate) const SUMMARY_SEPARATOR: &str = "\n\n";

/// Seconds since the epoch, for `created_at`.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A fresh opaque suffix for ids the gateway makes (time and a process counter: unique, not secret).
pub(crate) fn fresh_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    format!("{t:016x}{n:08x}")
}

/// A `resp_…` id: the upstream id when already so shaped, else one made from it (or a fresh one).
pub(crate) fn response_id(upstream: Option<&str>) -> String {
    match upstream {
        Some(id) if id.starts_with("resp_") => id.to_string(),
        Some(id) if !id.is_empty() => {
            let clean: String = id.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
            if clean.is_empty() { format!("resp_{}", fresh_suffix()) } else { format!("resp_{clean}") }
        }
        _ => format!("resp_{}", fresh_suffix()),
    }
}

/// An item id `<prefix>_<response suffix>_<n>` tied to its response.
pub(crate) fn item_id(prefix: &str, resp_id: &str, n: usize) -> String {
    format!("{prefix}_{}_{n}", resp_id.strip_prefix("resp_").unwrap_or(resp_id))
}

/// The `response.failed` code for an IR error code: one Codex acts on (`rate_limit_exceeded` is retried after
/// the delay named in the message, `insufficient_quota` and `context_length_exceeded` stop the turn), else
/// `server_error`, which Codex retries.
pub(crate) fn client_error_code(code: &str) -> &'static str {
    match code {
        "rate_limit_exceeded" | "rate_limit_error" | "rate_limited" | "RESOURCE_EXHAUSTED" | "too_many_requests" => {
            "rate_limit_exceeded"
        }
        "insufficient_quota" | "quota_exhausted" | "billing_error" => "insufficient_quota",
        "context_length_exceeded" | "model_context_window_exceeded" | "request_too_large" => "context_length_exceeded",
        _ => "server_error",
    }
}

/// An output text part as written to a client.
#[derive(Serialize, Debug)]
pub(crate) struct OutText<'a> {
    #[serde(rename = "type")]
    pub(crate) ty: &'static str,
    pub(crate) text: &'a str,
    pub(crate) annotations: [(); 0],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) logprobs: Option<[(); 0]>,
}

impl<'a> OutText<'a> {
    pub(crate) fn output(text: &'a str) -> Self {
        OutText { ty: "output_text", text, annotations: [], logprobs: Some([]) }
    }
}

/// A reasoning summary part as written to a client.
#[derive(Serialize, Debug)]
pub(crate) struct OutSummary<'a> {
    #[serde(rename = "type")]
    pub(crate) ty: &'static str,
    pub(crate) text: &'a str,
}

impl<'a> OutSummary<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        OutSummary { ty: "summary_text", text }
    }
}

/// An output item as written to a client (in `output_item.added` / `.done` and in the response's `output`).
#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum OutItem<'a> {
    Message {
        id: &'a str,
        status: &'static str,
        role: &'static str,
        content: &'a [OutText<'a>],
    },
    Reasoning {
        id: &'a str,
        summary: &'a [OutSummary<'a>],
        #[serde(skip_serializing_if = "Option::is_none")]
        encrypted_content: Option<&'a str>,
    },
    FunctionCall {
        id: &'a str,
        status: &'static str,
        arguments: &'a str,
        call_id: &'a str,
        name: &'a str,
    },
    CustomToolCall {
        id: &'a str,
        status: &'static str,
        input: &'a str,
        call_id: &'a str,
        name: &'a str,
    },
}

/// `response.error` as written to a client.
#[derive(Serialize, Debug)]
pub(crate) struct OutError<'a> {
    pub(crate) code: &'a str,
    pub(crate) message: &'a str,
}

/// `response.incomplete_details` as written to a client.
#[derive(Serialize, Debug)]
pub(crate) struct OutIncomplete {
    pub(crate) reason: &'static str,
}

/// The response object, whether complete or inside a stream event.
#[derive(Serialize, Debug)]
pub(crate) struct OutResponse<'a, O: Serialize + ?Sized> {
    pub(crate) id: &'a str,
    pub(crate) object: &'static str,
    pub(crate) created_at: u64,
    pub(crate) status: &'static str,
    pub(crate) error: Option<OutError<'a>>,
    pub(crate) incomplete_details: Option<OutIncomplete>,
    pub(crate) instructions: Option<()>,
    pub(crate) metadata: Empty,
    pub(crate) model: &'a str,
    pub(crate) output: &'a O,
    pub(crate) parallel_tool_calls: bool,
    pub(crate) tool_choice: &'static str,
    pub(crate) tools: [(); 0],
    pub(crate) usage: Option<OutUsage>,
}

/// `{}`.
#[derive(Serialize, Debug, Default)]
pub(crate) struct Empty {}

impl<'a, O: Serialize + ?Sized> OutResponse<'a, O> {
    pub(crate) fn new(id: &'a str, created_at: u64, model: &'a str, status: &'static str, output: &'a O) -> Self {
        OutResponse {
            id,
            object: "response",
            created_at,
            status,
            error: None,
            incomplete_details: None,
            instructions: None,
            metadata: Empty {},
            model,
            output,
            parallel_tool_calls: true,
            tool_choice: "auto",
            tools: [],
            usage: None,
        }
    }
}

/// Status and incomplete reason of a finished response for a stop reason (tool calls always complete).
pub(crate) fn finish_status(stop: &xai_core::ir::StopReason, has_tool: bool) -> (&'static str, Option<OutIncomplete>) {
    use xai_core::ir::StopReason;
    match stop {
        _ if has_tool => ("completed", None),
        StopReason::MaxTokens => ("incomplete", Some(OutIncomplete { reason: "max_output_tokens" })),
        StopReason::ContentFilter => ("incomplete", Some(OutIncomplete { reason: "content_filter" })),
        _ => ("completed", None),
    }
}

/// The IR stop reason of a finished wire response.
pub(crate) fn wire_stop(
    status: Option<&str>,
    incomplete_reason: Option<&str>,
    has_tool: bool,
    refused: bool,
) -> xai_core::ir::StopReason {
    use xai_core::ir::StopReason;
    if status == Some("incomplete") {
        return match incomplete_reason {
            Some("content_filter") => StopReason::ContentFilter,
            _ => StopReason::MaxTokens,
        };
    }
    if has_tool {
        StopReason::ToolUse
    } else if refused {
        StopReason::ContentFilter
    } else {
        StopReason::EndTurn
    }
}
