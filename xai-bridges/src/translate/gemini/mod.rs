//! Gemini native (`:generateContent`, `:streamGenerateContent`) ⇄ the canonical IR ([`xai_core::ir`]).
//!
//! The model is in the URL path, not the body, and Gemini carries no tool-call ids: requests match function
//! responses to calls by name, so the decoders make stable ids with [`synth_call_id`](xai_core::ir::synth_call_id)
//! (seeded with the tool name and its position for requests, with `responseId` for answers).
//!
//! ## Where `thoughtSignature`s go
//! Gemini puts a `thoughtSignature` on any part. In the IR:
//! - on a `functionCall` part: the [`ToolCall`](xai_core::ir::ToolCall)'s own signature;
//! - on a `thought: true` part: the signature of the reasoning that part belongs to. Consecutive thought parts
//!   accumulate into one reasoning until a part carrying a signature closes it (this is also how streams send
//!   it: the thought text first, then an empty thought part holding the signature);
//! - on a plain text part: an **empty reasoning carrying the signature, right before the text**. Going back out
//!   (to a Gemini upstream or client) an empty signed reasoning is written on the text part that follows it, so
//!   `{text, thoughtSignature}` round-trips exactly.
//!
//! Towards an upstream, only Gemini-issued signatures are written; unsigned or foreign reasoning is dropped
//! (Gemini needs no thought text back). A model turn's first function call that has no Gemini signature gets
//! Google's documented placeholder (`skip_thought_signature_validator`), which Gemini 3 requires for calls
//! that came from another model. Towards a Gemini client, foreign signatures travel as
//! [`Signature::envelope`](xai_core::ir::Signature::envelope)s in `thoughtSignature`.
//!
//! - [`request`]: client body → [`ChatRequest`](xai_core::ir::ChatRequest) and back out to an upstream.
//! - [`response`]: complete answers, both ways.
//! - [`stream`]: the upstream stream decoder and the client stream encoder (SSE or JSON array).

mod parts;
pub mod request;
pub mod response;
pub mod stream;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use xai_core::Usage;
use xai_core::ir::StopReason;

pub use request::{decode_request, encode_request};
pub use response::{decode_response, encode_response, error_message};
pub use stream::{GeminiStreamDecoder, GeminiStreamEncoder};

/// The placeholder Gemini accepts instead of a real signature on a function call it did not issue.
pub(crate) const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// `usageMetadata`, as read from upstream answers and stream chunks.
#[derive(Deserialize, Default, Clone, Copy, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireUsage {
    #[serde(default)]
    prompt_token_count: Option<u64>,
    #[serde(default)]
    candidates_token_count: Option<u64>,
    #[serde(default)]
    thoughts_token_count: Option<u64>,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
}

impl WireUsage {
    /// Normalised (PROTOCOLS.md): completion = candidates + thoughts.
    pub(crate) fn normalise(self) -> Usage {
        let thoughts = self.thoughts_token_count.unwrap_or(0);
        Usage {
            prompt_tokens: self.prompt_token_count.unwrap_or(0),
            completion_tokens: self.candidates_token_count.unwrap_or(0) + thoughts,
            reasoning_tokens: thoughts,
            cached_tokens: self.cached_content_token_count.unwrap_or(0),
            ..Usage::default()
        }
    }
}

/// `usageMetadata` written for a Gemini client (the normalisation inverted).
#[derive(Serialize, Clone, Copy, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OutUsage {
    prompt_token_count: u64,
    candidates_token_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    thoughts_token_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    cached_content_token_count: u64,
    total_token_count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<&Usage> for OutUsage {
    fn from(u: &Usage) -> Self {
        OutUsage {
            prompt_token_count: u.prompt_tokens,
            candidates_token_count: u.completion_tokens.saturating_sub(u.reasoning_tokens),
            thoughts_token_count: u.reasoning_tokens,
            cached_content_token_count: u.cached_tokens,
            total_token_count: u.prompt_tokens + u.completion_tokens,
        }
    }
}

/// Maps a `finishReason` (a tool call seen turns `STOP` into [`StopReason::ToolUse`], trap 5).
pub(crate) fn stop_from_finish(reason: &str, tool_seen: bool) -> StopReason {
    match reason {
        "MAX_TOKENS" => StopReason::MaxTokens,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT" => StopReason::ContentFilter,
        _ if tool_seen => StopReason::ToolUse,
        _ => StopReason::EndTurn,
    }
}

/// The `finishReason` of a stop reason (tool use is `STOP` on this wire).
pub(crate) fn finish_reason(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::MaxTokens => "MAX_TOKENS",
        StopReason::ContentFilter => "SAFETY",
        _ => "STOP",
    }
}

/// The IR error code of an upstream error `status` (the inverse of [`error_status`] on the codes it knows).
pub(crate) fn code_from_status(status: Option<&str>, code: Option<i64>) -> String {
    match (status, code) {
        (Some("RESOURCE_EXHAUSTED"), _) | (None, Some(429)) => "rate_limit_exceeded".into(),
        (Some("UNAVAILABLE"), _) | (None, Some(503)) => "overloaded".into(),
        (Some("DEADLINE_EXCEEDED"), _) | (None, Some(504)) => "timeout".into(),
        (Some("INVALID_ARGUMENT"), _) | (None, Some(400)) => "invalid_request_error".into(),
        (Some("INTERNAL"), _) | (None, _) => "api_error".into(),
        (Some(s), _) => s.to_ascii_lowercase(),
    }
}

/// The HTTP code and Gemini `status` for an IR error code.
pub(crate) fn error_status(code: &str) -> (u16, &'static str) {
    match code {
        "rate_limit_exceeded" | "rate_limited" | "rate_limit_error" | "insufficient_quota" | "resource_exhausted" => {
            (429, "RESOURCE_EXHAUSTED")
        }
        "overloaded" | "overloaded_error" | "unavailable" => (503, "UNAVAILABLE"),
        "timeout" | "deadline_exceeded" => (504, "DEADLINE_EXCEEDED"),
        "invalid_request_error" | "invalid_argument" | "context_length_exceeded" => (400, "INVALID_ARGUMENT"),
        "permission_denied" | "permission_error" => (403, "PERMISSION_DENIED"),
        "not_found" | "not_found_error" | "model_not_found" => (404, "NOT_FOUND"),
        _ => (500, "INTERNAL"),
    }
}

/// `{"error":{"code","message","status"}}` for a Gemini client.
#[derive(Serialize)]
pub(crate) struct OutError<'a> {
    error: OutErrorBody<'a>,
}

#[derive(Serialize)]
struct OutErrorBody<'a> {
    code: u16,
    message: &'a str,
    status: &'static str,
}

impl<'a> OutError<'a> {
    pub(crate) fn new(message: &'a str, code: &str) -> Self {
        let (code, status) = error_status(code);
        OutError { error: OutErrorBody { code, message, status } }
    }
}

/// Whether an id looks like Gemini's `responseId` (not another protocol's `chatcmpl-`, `resp_`, `msg_`).
pub(crate) fn is_native_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with("chatcmpl-")
        && !id.starts_with("resp_")
        && !id.starts_with("msg_")
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A Gemini-shaped `responseId` (23 URL-safe characters), unique per process and stable for a given `seed`
/// only within one call.
pub(crate) fn new_response_id(seed: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let fnv = |salt: u64| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
        for b in seed.bytes().chain(nanos.to_le_bytes()).chain(n.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    let mut x = fnv(1) ^ fnv(2).rotate_left(29);
    let mut out = String::with_capacity(23);
    for _ in 0..23 {
        // splitmix64: six well-mixed bits per character.
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.push(ALPHABET[((z ^ (z >> 31)) >> 58) as usize] as char);
    }
    out
}

/// Guesses an image MIME type from a URL's extension (Gemini `fileData` wants one).
pub(crate) fn mime_from_url(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url).to_ascii_lowercase();
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("heif") => "image/heif",
        _ => "image/jpeg",
    }
}
