//! Anthropic Messages ⇄ canonical IR ([`xai_core::ir`], DESIGN §6).
//!
//! - [`decode_request`] reads what Claude Code and the SDKs send to `/v1/messages`;
//!   [`encode_request`] writes a body an Anthropic upstream accepts (alternating roles, `tool_result` first,
//!   no empty text, `max_tokens` always set, thinking only with a native signature).
//! - [`decode_response`] / [`encode_response`]: complete messages.
//! - [`AnthropicStreamDecoder`] reads an upstream SSE stream; [`AnthropicStreamEncoder`] writes one for a client,
//!   every event with its `event:` line (PROTOCOLS.md trap 1).

mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use xai_core::Usage;
use xai_core::ir::StopReason;

pub use request::{decode_request, encode_request};
pub use response::{decode_response, encode_response, error_message};
pub use stream::{AnthropicStreamDecoder, AnthropicStreamEncoder};

/// `max_tokens` sent upstream when the client gave none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 8192;

/// Anthropic usage as on the wire; `input_tokens` excludes both cache counts.
#[derive(Deserialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    server_tool_use: Option<ServerToolUse>,
}

#[derive(Deserialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
struct ServerToolUse {
    #[serde(default)]
    web_search_requests: Option<u64>,
}

impl WireUsage {
    /// Folds a later report in: `message_delta` output is cumulative, its input counts (when present) final.
    fn merge(&mut self, later: &WireUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later.cache_read_input_tokens.or(self.cache_read_input_tokens);
        self.server_tool_use = later.server_tool_use.or(self.server_tool_use);
    }

    fn normalise(&self) -> Usage {
        let write = self.cache_creation_input_tokens.unwrap_or(0);
        let read = self.cache_read_input_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: self.input_tokens.unwrap_or(0) + write + read,
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: read,
            cache_write_tokens: write,
            searches: self.server_tool_use.and_then(|s| s.web_search_requests).unwrap_or(0),
            ..Usage::default()
        }
    }
}

/// Canonical usage back to Anthropic's counts: (input excluding cache, cache write, cache read, output).
fn denormalise(u: &Usage) -> [u64; 4] {
    let input = u.prompt_tokens.saturating_sub(u.cached_tokens).saturating_sub(u.cache_write_tokens);
    [input, u.cache_write_tokens, u.cached_tokens, u.completion_tokens]
}

fn stop_from_wire(reason: Option<&str>, sequence: Option<String>) -> StopReason {
    match reason {
        Some("max_tokens" | "model_context_window_exceeded") => StopReason::MaxTokens,
        Some("stop_sequence") => StopReason::StopSequence(sequence),
        Some("tool_use") => StopReason::ToolUse,
        Some("pause_turn") => StopReason::PauseTurn,
        Some("refusal") => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    }
}

/// The wire stop reason and stop sequence; `saw_tool` reports `tool_use` whenever a tool was called (trap 5).
fn stop_to_wire(stop: &StopReason, saw_tool: bool) -> (&'static str, Option<&str>) {
    match stop {
        StopReason::MaxTokens => ("max_tokens", None),
        StopReason::ContentFilter => ("refusal", None),
        StopReason::PauseTurn => ("pause_turn", None),
        _ if saw_tool => ("tool_use", None),
        StopReason::ToolUse => ("tool_use", None),
        StopReason::StopSequence(s) => ("stop_sequence", s.as_deref()),
        StopReason::EndTurn => ("end_turn", None),
    }
}

/// A `msg_…` id for answers whose upstream id is missing or foreign-shaped.
fn new_message_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    // Mixed so that ids made in the same nanosecond still differ; not a secret, only unique.
    let mixed = (nanos ^ seq.rotate_left(40)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("msg_xai{nanos:016x}{mixed:016x}")
}

/// The id to show a client: the upstream's when it is Anthropic-shaped, else a fresh one.
fn client_message_id(id: Option<&str>) -> String {
    match id {
        Some(id) if id.starts_with("msg_") => id.to_string(),
        _ => new_message_id(),
    }
}

/// The Anthropic error `type` for a canonical stream error code.
fn error_type_for_code(code: &str) -> &'static str {
    match code {
        "overloaded" | "overloaded_error" | "server_overloaded" | "unavailable" => "overloaded_error",
        c if c.contains("rate_limit") || c == "resource_exhausted" || c == "insufficient_quota" => "rate_limit_error",
        "invalid_request_error" | "invalid_request" | "context_length_exceeded" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "request_too_large" => "request_too_large",
        _ => "api_error",
    }
}

/// The canonical stream error code for an Anthropic error `type`.
fn code_for_error_type(ty: &str) -> String {
    match ty {
        "overloaded_error" => "overloaded".into(),
        "rate_limit_error" => "rate_limit_exceeded".into(),
        other => other.to_string(),
    }
}
