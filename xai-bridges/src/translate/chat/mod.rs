//! OpenAI Chat Completions ⇄ the canonical IR ([`xai_core::ir`]).
//!
//! Also the dialect of OpenAI-compatible providers (DeepSeek and the like): their visible reasoning arrives in
//! `reasoning_content` (stream deltas `delta.reasoning_content`) and is decoded as unsigned reasoning.
//!
//! Chat Completions has no field for opaque reasoning proofs. To let a Chat client carry another provider's
//! signatures across turns, answers also hold OpenRouter-style `reasoning_details`
//! (`[{type:"reasoning.text", text, signature, id}, {type:"reasoning.encrypted", data}]`, extra fields that the
//! official SDKs keep), and tool calls carry a Gemini `thoughtSignature` in `extra_content.google.thought_signature`
//! (Gemini's own OpenAI compatibility shape). Requests read both back.
//!
//! - [`request`]: client body → [`ChatRequest`](xai_core::ir::ChatRequest) and back out to an upstream.
//! - [`response`]: complete answers, both ways.
//! - [`stream`]: the upstream stream decoder and the client stream encoder.

pub mod request;
pub mod response;
pub mod stream;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use xai_core::Usage;
use xai_core::ir::StopReason;

pub use request::{decode_request, encode_request};
pub use response::{decode_response, encode_response, error_message};
pub use stream::{ChatStreamDecoder, ChatStreamEncoder};

/// Maps an OpenAI `finish_reason` to the IR (unknown reasons are a natural end).
pub(crate) fn stop_from_finish(reason: &str) -> StopReason {
    match reason {
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    }
}

/// The OpenAI `finish_reason` of an IR stop; a tool call seen anywhere in the answer wins (trap 5).
pub(crate) fn finish_reason(stop: &StopReason, saw_tool_call: bool) -> &'static str {
    if saw_tool_call {
        return "tool_calls";
    }
    match stop {
        StopReason::EndTurn | StopReason::StopSequence(_) | StopReason::PauseTurn => "stop",
        StopReason::MaxTokens => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::ContentFilter => "content_filter",
    }
}

/// OpenAI's usage object as written to clients: cached ⊂ prompt, reasoning ⊂ completion, as the IR counts.
#[derive(serde::Serialize)]
pub(crate) struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: CachedOut,
    completion_tokens_details: ReasoningOut,
}

#[derive(serde::Serialize)]
struct CachedOut {
    cached_tokens: u64,
}

#[derive(serde::Serialize)]
struct ReasoningOut {
    reasoning_tokens: u64,
}

impl From<&Usage> for UsageOut {
    fn from(u: &Usage) -> Self {
        UsageOut {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total(),
            prompt_tokens_details: CachedOut { cached_tokens: u.cached_tokens },
            completion_tokens_details: ReasoningOut { reasoning_tokens: u.reasoning_tokens },
        }
    }
}

/// Usage from an OpenAI usage object (`None` for `null` or a non-object; zero placeholders are the caller's call).
pub(crate) fn usage_from(v: &serde_json::Value) -> Option<Usage> {
    let o = v.as_object()?;
    let n = |v: Option<&serde_json::Value>| v.and_then(serde_json::Value::as_u64).unwrap_or(0);
    let u = Usage {
        prompt_tokens: n(o.get("prompt_tokens")),
        completion_tokens: n(o.get("completion_tokens")),
        cached_tokens: n(o.get("prompt_tokens_details").and_then(|d| d.get("cached_tokens"))),
        reasoning_tokens: n(o.get("completion_tokens_details").and_then(|d| d.get("reasoning_tokens"))),
        ..Usage::default()
    };
    Some(u)
}

/// Unix seconds now (`created`).
pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A `chatcmpl-…` id: the upstream id when it already has that shape, else one derived from it (stable), else a
/// fresh one.
pub(crate) fn completion_id(upstream: Option<&str>) -> String {
    match upstream {
        Some(id) if id.starts_with("chatcmpl-") => id.to_string(),
        Some(id) if !id.is_empty() => format!("chatcmpl-{id}"),
        _ => {
            static SEQ: AtomicU64 = AtomicU64::new(0);
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            format!("chatcmpl-xai{nanos:x}{seq:x}")
        }
    }
}
