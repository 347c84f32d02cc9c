//! Token usage, prices and usage records.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::ids::{AccountId, KeyId, Level, RequestId, UpstreamKeyId};
use crate::money::Micros;
use crate::protocol::Protocol;

/// Normalised token counts (PROTOCOLS.md, "Usage normalisation"): `prompt` includes cached reads and cache
/// writes; `completion` includes reasoning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// All input tokens.
    pub prompt_tokens: u64,
    /// All output tokens.
    pub completion_tokens: u64,
    /// Reasoning tokens (part of completion).
    pub reasoning_tokens: u64,
    /// Cached input read (part of prompt).
    pub cached_tokens: u64,
    /// Cache write (part of prompt).
    pub cache_write_tokens: u64,
    /// Images generated or billed.
    pub images: u64,
    /// Search calls.
    pub searches: u64,
}

impl Usage {
    /// Prompt + completion.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Prices of one model, in micro-credits per million tokens (or per unit for images and searches). In JSON: decimal
/// credit strings (`"0.15"`), unset optional rates omitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Uncached input.
    pub input: Micros,
    /// Output (non-reasoning).
    pub output: Micros,
    /// Cached input read; defaults to `input` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<Micros>,
    /// Cache write; defaults to `input` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<Micros>,
    /// Reasoning; defaults to `output` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Micros>,
    /// Per image.
    #[serde(default)]
    pub per_image: Micros,
    /// Per search call.
    #[serde(default)]
    pub per_search: Micros,
}

impl Price {
    /// The cost of `u` at these prices, rounded up to the micro-credit.
    pub fn cost(&self, u: &Usage) -> Micros {
        let per_m = |tokens: u64, price: Micros| tokens as i128 * price.0 as i128;
        let cached = u.cached_tokens.min(u.prompt_tokens);
        let write = u.cache_write_tokens.min(u.prompt_tokens - cached);
        let plain_in = u.prompt_tokens - cached - write;
        let reasoning = u.reasoning_tokens.min(u.completion_tokens);
        let plain_out = u.completion_tokens - reasoning;
        let tokens = per_m(plain_in, self.input)
            + per_m(cached, self.cached_input.unwrap_or(self.input))
            + per_m(write, self.cache_write.unwrap_or(self.input))
            + per_m(plain_out, self.output)
            + per_m(reasoning, self.reasoning.unwrap_or(self.output));
        let units = u.images as i128 * self.per_image.0 as i128 + u.searches as i128 * self.per_search.0 as i128;
        let micros = (tokens + 999_999) / 1_000_000 + units;
        Micros(micros.clamp(0, i64::MAX as i128) as i64)
    }
}

/// How an upstream attempt ended, as reported to the key pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Outcome {
    /// Answered (2xx), or a client error that is not the key's fault.
    Ok,
    /// 429; cool down for `retry_after_ms`.
    RateLimited {
        /// Cooldown asked by the upstream (or the default).
        retry_after_ms: u64,
    },
    /// The key's quota or billing is exhausted.
    QuotaExhausted,
    /// 401/403: the key is wrong or revoked upstream; disable it.
    AuthRejected,
    /// 5xx or 529.
    Overloaded,
    /// No answer in time.
    Timeout,
    /// Could not connect.
    ConnectError,
}

impl Outcome {
    /// Whether failover may try another key.
    pub fn is_retryable(self) -> bool {
        !matches!(self, Outcome::Ok)
    }

    /// Short name for logs and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::RateLimited { .. } => "rate_limited",
            Outcome::QuotaExhausted => "quota_exhausted",
            Outcome::AuthRejected => "auth_rejected",
            Outcome::Overloaded => "overloaded",
            Outcome::Timeout => "timeout",
            Outcome::ConnectError => "connect_error",
        }
    }
}

/// One upstream attempt of a request.
#[derive(Clone, Debug, Serialize)]
pub struct AttemptRecord {
    /// Provider name.
    pub provider: Arc<str>,
    /// Key id.
    pub upstream_key: UpstreamKeyId,
    /// Level.
    pub level: Level,
    /// Outcome.
    pub outcome: &'static str,
    /// Upstream HTTP status, when one was received.
    pub status: Option<u16>,
    /// Time until headers or failure.
    pub latency_ms: u64,
}

/// How a request ended, for the usage record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecordStatus {
    /// Completed.
    Ok,
    /// The upstream failed (before or during the response).
    UpstreamError,
    /// The client went away before the end.
    ClientDisconnected,
    /// Refused by the gateway after admission (deadline, …).
    Rejected,
}

/// One metered request (DESIGN §4).
#[derive(Clone, Debug, Serialize)]
pub struct UsageRecord {
    /// Request id.
    pub request_id: RequestId,
    /// When the request arrived.
    #[serde(serialize_with = "ser_time")]
    pub time: SystemTime,
    /// Calling account.
    pub account: AccountId,
    /// Its path.
    pub account_path: Arc<str>,
    /// The account path ids, root first (for aggregate counters); not serialised.
    #[serde(skip)]
    pub chain: Arc<[AccountId]>,
    /// Virtual key.
    pub key: KeyId,
    /// Client protocol.
    pub inbound_protocol: Protocol,
    /// Provider that served (last attempt).
    pub provider: Option<Arc<str>>,
    /// Upstream key of the last attempt.
    pub upstream_key: Option<UpstreamKeyId>,
    /// Model asked by the client.
    pub requested_model: Arc<str>,
    /// Model sent upstream.
    pub upstream_model: Option<Arc<str>>,
    /// Level of the last attempt.
    pub level: Option<Level>,
    /// End state.
    pub status: RecordStatus,
    /// HTTP status returned to the client.
    pub http_status: u16,
    /// Every attempt.
    pub attempts: Vec<AttemptRecord>,
    /// Total latency.
    pub latency_ms: u64,
    /// Time to the first byte of the body.
    pub ttft_ms: Option<u64>,
    /// Token counts.
    #[serde(flatten)]
    pub usage: Usage,
    /// Cost at the price table.
    pub cost: Micros,
    /// Counts are estimates (stream cut before the upstream reported usage).
    pub estimated: bool,
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&rfc3339(*t))
}

/// Formats a time as RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(1_764_102_896_123)), "2025-11-25T20:34:56.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn cost_splits_cached_and_reasoning() {
        let p = Price {
            input: Micros(2_000_000),
            output: Micros(8_000_000),
            cached_input: Some(Micros(500_000)),
            reasoning: None,
            ..Price::default()
        };
        let u = Usage {
            prompt_tokens: 1_000_000,
            cached_tokens: 400_000,
            completion_tokens: 100_000,
            reasoning_tokens: 50_000,
            ..Usage::default()
        };
        // 600k * 2 + 400k * 0.5 + 100k * 8 = 1.2 + 0.2 + 0.8 credits
        assert_eq!(p.cost(&u), Micros(2_200_000));
        // Rounds up: one token at 0.15/M costs one micro-credit, never zero.
        let cheap = Price { input: Micros(150_000), ..Price::default() };
        assert_eq!(cheap.cost(&Usage { prompt_tokens: 1, ..Usage::default() }), Micros(1));
        // Inconsistent counts never underflow.
        let odd = Usage {
            prompt_tokens: 1,
            cached_tokens: 5,
            cache_write_tokens: 5,
            completion_tokens: 1,
            reasoning_tokens: 9,
            ..Usage::default()
        };
        assert!(p.cost(&odd).0 > 0);
    }
}
