//! Criterion benchmark of the streaming hot path: what the gateway spends per upstream chunk when it forwards a
//! stream unchanged (the passthrough [`StreamTap`] of the upstream's protocol, which only reads usage on the side)
//! and when it translates it for a client of another protocol ([`TranslateTap`]: the upstream's decoder into IR
//! events, the client's encoder out of them).
//!
//! Each upstream stream is a recorded fixture from `shared/fixtures`, cut into [`CHUNK`]-byte reads (so events
//! straddle reads, as they do on a socket) and fed chunk by chunk to a fresh tap, then `finish`ed. The taps are
//! built through the adapters, exactly as the attempt layer builds them.
//!
//! One group per upstream stream, one function per client, so criterion prints them side by side:
//!
//! - `bridge/<upstream>/passthrough`: the upstream protocol's own tap (the baseline).
//! - `bridge/<upstream>/to-<client>`: a `TranslateTap` from the upstream protocol to `client`.
//!
//! The time is per stream; the throughput line is per chunk (`elem/s`), and the chunk count is printed with the
//! group. Read the ratio translated ÷ passthrough within one run (a 2-core shared machine is noisy).
//!
//!   cargo bench -p xai-benches --bench bridge
//!   cargo bench -p xai-benches --bench bridge -- openai-chat     # one upstream
//!   cargo bench -p xai-benches --bench bridge -- --quick         # a rough figure in seconds

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use xai_core::ir::TranslateTap;
use xai_core::{Adapters, BodySpans, Endpoint, EndpointKind, Protocol, RequestMeta, StreamTap};

/// Bytes per upstream read: a socket read of a streaming reply is a few hundred bytes to a few KB.
const CHUNK: usize = 512;

/// The upstream streams: (protocol, fixture, name of the group).
const STREAMS: &[(Protocol, &str, &str)] = &[
    (Protocol::OpenAiChat, "openai-chat/stream-text-include-usage.sse", "openai-chat"),
    (Protocol::Anthropic, "anthropic/stream-text.sse", "anthropic"),
    (Protocol::OpenAiResponses, "openai-responses/stream-text.sse", "openai-responses"),
    (Protocol::Gemini, "gemini/stream-text.sse", "gemini"),
];

fn fixtures_dir() -> PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates =
        [here.join("../../shared/fixtures"), here.join("../shared/fixtures"), "/work/shared/fixtures".into()];
    candidates.into_iter().find(|p| p.is_dir()).expect("shared/fixtures not found beside the repository")
}

fn chunks(path: &str) -> Vec<Bytes> {
    let file = fixtures_dir().join(path);
    let all = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let all = Bytes::from(all);
    (0..all.len()).step_by(CHUNK).map(|at| all.slice(at..(at + CHUNK).min(all.len()))).collect()
}

/// What a streaming client of `protocol` asked (usage included, as Claude Code and Codex ask).
fn meta() -> RequestMeta {
    RequestMeta {
        model: Arc::from("bench-model"),
        stream: true,
        include_usage: true,
        max_tokens: Some(1024),
        body_len: 512,
        spans: BodySpans::default(),
    }
}

fn endpoint(client: Protocol) -> Endpoint {
    let kind = match client {
        Protocol::OpenAiChat => EndpointKind::ChatCompletions,
        Protocol::OpenAiResponses => EndpointKind::Responses,
        Protocol::Anthropic => EndpointKind::Messages,
        _ => EndpointKind::StreamGenerateContent,
    };
    Endpoint { kind, protocol: client, path_model: Some("bench-model".into()), sse: true }
}

fn short(p: Protocol) -> &'static str {
    match p {
        Protocol::OpenAiChat => "chat",
        Protocol::OpenAiResponses => "responses",
        Protocol::Anthropic => "anthropic",
        _ => "gemini",
    }
}

/// Feeds every chunk and finishes; returns the bytes written (so nothing is optimised away, and as a sanity check).
fn run(mut tap: Box<dyn StreamTap>, chunks: &[Bytes]) -> usize {
    let mut n = 0;
    for c in chunks {
        n += black_box(tap.feed(c.clone())).len();
    }
    n += tap.finish(None).len();
    assert!(!tap.failed(), "the stream must go through cleanly");
    n
}

fn bench(c: &mut Criterion) {
    let adapters: Adapters = xai_bridges::adapters();
    let meta = meta();
    for &(upstream, fixture, name) in STREAMS {
        let chunks = chunks(fixture);
        let bytes: usize = chunks.iter().map(Bytes::len).sum();
        let up = adapters.get(upstream).expect("upstream adapter");
        let mut g = c.benchmark_group(format!("bridge/{name}"));
        g.throughput(Throughput::Elements(chunks.len() as u64));
        g.warm_up_time(Duration::from_millis(500));
        g.measurement_time(Duration::from_secs(2));
        eprintln!("bridge/{name}: {fixture}, {bytes} bytes in {} chunks of ≤ {CHUNK} B", chunks.len());

        g.bench_function("passthrough", |b| b.iter(|| run(up.stream_tap(&meta), &chunks)));
        for client in Protocol::ALL.into_iter().filter(|&p| p != upstream) {
            let down = adapters.get(client).expect("client adapter");
            let ep = endpoint(client);
            let new_tap = || -> Box<dyn StreamTap> {
                let dec = up.stream_decoder().expect("decoder");
                let enc = down.stream_encoder(&ep, &meta).expect("encoder");
                Box::new(TranslateTap::new(dec, enc))
            };
            assert!(run(new_tap(), &chunks) > 0, "{name} → {}: no output", short(client));
            g.bench_function(format!("to-{}", short(client)), |b| b.iter(|| run(new_tap(), &chunks)));
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
