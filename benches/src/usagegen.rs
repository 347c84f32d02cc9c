//! Realistic usage records for the metering benchmarks (`meterbench`, benches/metering.rs): accounts spread over
//! a tree, several models and providers, varying token counts, statuses and retries (like the store tests' `rec`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use xai_core::usage::{AttemptRecord, RecordStatus, Usage, UsageRecord};
use xai_core::{AccountId, KeyId, Level, Micros, Protocol, RequestId, UpstreamKeyId};

const MODELS: [(&str, &str, &str); 5] = [
    ("gpt-4o-mini", "gpt-4o-mini", "openai"),
    ("gpt-4o", "gpt-4o-2024-08-06", "openai"),
    ("claude-3-5-sonnet", "claude-3-5-sonnet-20241022", "anthropic"),
    ("claude-haiku", "claude-3-5-haiku-20241022", "anthropic"),
    ("deepseek-chat", "deepseek-chat", "deepseek"),
];

/// A cheap deterministic mix of `i` (so token counts look random but runs are reproducible).
fn mix(i: u64) -> u64 {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 17
}

/// The `i`-th record: one of 60 accounts (3 levels: company / 5 departments / people), one of 5 models, tokens
/// between a few dozen and ~8 000, a retry on one request in 20, an upstream error on one in 50, spread over the
/// last ~28 hours (so the daily rollups see two UTC days).
pub fn record(i: u64, now: SystemTime) -> UsageRecord {
    let h = mix(i);
    let person = 3 + h % 60;
    let dept = 2 + (person % 5) * 100;
    let (model, upstream, provider) = MODELS[(h >> 8) as usize % MODELS.len()];
    let prompt = 50 + (h >> 12) % 8000;
    let completion = 10 + (h >> 24) % 1500;
    let retried = i % 20 == 7;
    let failed = i % 50 == 13;
    let mut attempts = Vec::with_capacity(2);
    if retried {
        attempts.push(AttemptRecord {
            provider: provider.into(),
            upstream_key: UpstreamKeyId(1 + ((h >> 40) % 8) as u32),
            level: Level(1),
            outcome: "rate_limited",
            status: Some(429),
            latency_ms: 30 + (h >> 44) % 50,
        });
    }
    attempts.push(AttemptRecord {
        provider: provider.into(),
        upstream_key: UpstreamKeyId(1 + ((h >> 36) % 8) as u32),
        level: Level(1 + u32::from(retried)),
        outcome: if failed { "upstream_error" } else { "ok" },
        status: Some(if failed { 502 } else { 200 }),
        latency_ms: 200 + (h >> 20) % 4000,
    });
    UsageRecord {
        request_id: RequestId::generate(),
        time: now - Duration::from_millis((h >> 30) % 100_000_000),
        account: AccountId(person),
        account_path: format!("acme/d{dept}/u{person}").into(),
        chain: Arc::from(vec![AccountId(1), AccountId(dept), AccountId(person)]),
        key: KeyId(1000 + person),
        inbound_protocol: if i.is_multiple_of(3) { Protocol::Anthropic } else { Protocol::OpenAiChat },
        provider: Some(provider.into()),
        upstream_key: Some(UpstreamKeyId(1 + ((h >> 36) % 8) as u32)),
        requested_model: model.into(),
        upstream_model: Some(upstream.into()),
        level: Some(Level(1)),
        status: if failed { RecordStatus::UpstreamError } else { RecordStatus::Ok },
        http_status: if failed { 502 } else { 200 },
        attempts,
        latency_ms: 250 + (h >> 20) % 4000,
        ttft_ms: i.is_multiple_of(2).then_some(80 + (h >> 16) % 400),
        usage: Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            reasoning_tokens: if i.is_multiple_of(4) { completion / 3 } else { 0 },
            cached_tokens: if i.is_multiple_of(3) { prompt / 2 } else { 0 },
            cache_write_tokens: if i.is_multiple_of(7) { prompt / 4 } else { 0 },
            images: u64::from(i.is_multiple_of(40)),
            searches: u64::from(i.is_multiple_of(25)),
        },
        cost: Micros((prompt * 150 + completion * 600) as i64 / 1000),
        estimated: i.is_multiple_of(30),
    }
}
