//! The passthrough tap of an OpenAI Chat stream: forwards events as they come (zero-copy when a chunk holds whole
//! events and nothing is dropped), reads usage from the usage chunk, drops that chunk when the client did not ask
//! for it, and turns a stream that ends without `[DONE]` into an error event (PROTOCOLS.md trap 7).

use bytes::{Bytes, BytesMut};
use memchr::memmem;
use serde::Deserialize;
use serde::de::IgnoredAny;
use xai_core::{StreamTap, Usage};

use super::{OaUsage, error_json};
use crate::sse;

/// See the module docs.
#[derive(Debug)]
pub struct ChatStreamTap {
    client_wants_usage: bool,
    carry: BytesMut,
    usage: Option<Usage>,
    chunks: u64,
    done: bool,
    failed: bool,
    finished: bool,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    usage: Option<OaUsage>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

enum Verdict {
    Keep,
    Drop,
}

impl ChatStreamTap {
    /// A tap; `client_wants_usage` keeps the usage-only chunk.
    pub fn new(client_wants_usage: bool) -> Self {
        Self {
            client_wants_usage,
            carry: BytesMut::new(),
            usage: None,
            chunks: 0,
            done: false,
            failed: false,
            finished: false,
        }
    }

    fn inspect(&mut self, event: &[u8]) -> Verdict {
        let Some(payload) = sse::data(event) else { return Verdict::Keep };
        let payload = payload.as_ref();
        if payload.trim_ascii() == b"[DONE]" {
            self.done = true;
            return Verdict::Keep;
        }
        let has_usage = memmem::find(payload, b"\"usage\"").is_some();
        let has_error = memmem::find(payload, b"\"error\"").is_some();
        if !has_usage && !has_error {
            self.chunks += 1;
            return Verdict::Keep;
        }
        let Ok(c) = serde_json::from_slice::<Chunk>(payload) else {
            self.chunks += 1;
            return Verdict::Keep;
        };
        if c.error.is_some() {
            self.failed = true;
            return Verdict::Keep;
        }
        let usage_only = c.choices.as_ref().is_some_and(Vec::is_empty);
        if let Some(u) = c.usage {
            // Ignore `usage: null` (handled by Option) and zero placeholders some providers send early.
            let u = Usage::from(u);
            if u.total() > 0 || usage_only {
                self.usage = Some(u);
            }
        }
        if !usage_only {
            self.chunks += 1;
        }
        if usage_only && c.usage.is_some() && !self.client_wants_usage { Verdict::Drop } else { Verdict::Keep }
    }
}

impl StreamTap for ChatStreamTap {
    fn feed(&mut self, chunk: Bytes) -> Bytes {
        let data = if self.carry.is_empty() {
            chunk
        } else {
            self.carry.extend_from_slice(&chunk);
            self.carry.split().freeze()
        };
        let mut at = 0;
        let mut out: Option<BytesMut> = None; // only allocated when an event is dropped
        while let Some(len) = sse::event_end(&data[at..]) {
            let ev = at..at + len;
            match self.inspect(&data[ev.clone()]) {
                Verdict::Keep => {
                    if let Some(o) = out.as_mut() {
                        o.extend_from_slice(&data[ev.clone()]);
                    }
                }
                Verdict::Drop => {
                    out.get_or_insert_with(|| BytesMut::from(&data[..ev.start]));
                }
            }
            at = ev.end;
        }
        if at < data.len() {
            self.carry.extend_from_slice(&data[at..]);
        }
        match out {
            Some(o) => o.freeze(),
            None => data.slice(..at),
        }
    }

    fn finish(&mut self, upstream_error: Option<&str>) -> Bytes {
        if self.finished {
            return Bytes::new();
        }
        self.finished = true;
        let mut out = BytesMut::new();
        if !self.carry.is_empty() {
            // A last event without its blank line: still an event.
            let rest = self.carry.split().freeze();
            if let Verdict::Keep = self.inspect(&rest) {
                out.extend_from_slice(&rest);
                out.extend_from_slice(b"\n\n");
            }
        }
        if !self.done && !self.failed {
            self.failed = true;
            let msg = upstream_error.unwrap_or("upstream stream ended before completion");
            out.extend_from_slice(
                format!("data: {}\n\n", error_json(msg, "server_error", "upstream_stream_truncated")).as_bytes(),
            );
        }
        out.freeze()
    }

    fn usage(&self) -> (Usage, bool) {
        match self.usage {
            Some(u) => (u, true),
            None => (Usage { completion_tokens: self.chunks, ..Usage::default() }, false),
        }
    }

    fn failed(&self) -> bool {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture(name: &str) -> Bytes {
        std::fs::read(crate::fixtures_dir().join("openai-chat").join(name)).unwrap().into()
    }

    /// Feeds `src` in pieces of `step` bytes.
    fn run(src: &Bytes, step: usize, wants: bool) -> (Vec<u8>, ChatStreamTap) {
        let mut t = ChatStreamTap::new(wants);
        let mut out = Vec::new();
        for piece in src.chunks(step.max(1)) {
            out.extend_from_slice(&t.feed(Bytes::copy_from_slice(piece)));
        }
        out.extend_from_slice(&t.finish(None));
        (out, t)
    }

    fn expected_usage(src: &[u8]) -> (u64, u64) {
        let text = std::str::from_utf8(src).unwrap();
        let last = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .filter(|v| v["usage"].is_object())
            .last()
            .unwrap();
        (last["usage"]["prompt_tokens"].as_u64().unwrap(), last["usage"]["completion_tokens"].as_u64().unwrap())
    }

    #[test]
    fn every_fixture_passes_through_with_usage() {
        for name in [
            "stream-text-include-usage.sse",
            "stream-tool-call-include-usage.sse",
            "stream-parallel-tool-calls-include-usage.sse",
            "stream-n3-choices-include-usage.sse",
            "stream-refusal-include-usage.sse",
            "stream-logprobs-include-usage.sse",
            "stream-finish-length-include-usage.sse",
        ] {
            let src = fixture(name);
            let (prompt, completion) = expected_usage(&src);
            for step in [1, 7, 64, src.len()] {
                let (out, t) = run(&src, step, true);
                assert_eq!(out, src.to_vec(), "{name} step {step}: client wanted usage, stream must be unchanged");
                let (u, reported) = t.usage();
                assert!(reported && !t.failed(), "{name}");
                assert_eq!((u.prompt_tokens, u.completion_tokens), (prompt, completion), "{name}");
            }
            // Client did not ask: the usage chunk is gone, everything else identical, usage still read.
            let (out, t) = run(&src, 13, false);
            let text = String::from_utf8(out).unwrap();
            assert!(!text.contains("\"choices\":[]"), "{name}");
            assert!(text.ends_with("data: [DONE]\n\n"), "{name}");
            assert_eq!(text.len() + 1, src.len() - usage_event_len(&src) + 1, "{name}");
            assert_eq!(t.usage().0.completion_tokens, completion);
        }
    }

    fn usage_event_len(src: &[u8]) -> usize {
        std::str::from_utf8(src)
            .unwrap()
            .split_inclusive("\n\n")
            .filter(|e| e.contains("\"choices\":[]"))
            .map(str::len)
            .sum()
    }

    #[test]
    fn stream_without_usage_is_estimated() {
        let src = fixture("stream-text-no-usage.sse");
        let (out, t) = run(&src, 5, false);
        assert_eq!(out, src.to_vec());
        let (u, reported) = t.usage();
        assert!(!reported);
        let data_events = std::str::from_utf8(&src).unwrap().matches("data: {").count() as u64;
        assert_eq!(u.completion_tokens, data_events);
    }

    #[test]
    fn truncated_stream_becomes_an_error_event() {
        let src = fixture("stream-text-include-usage.sse");
        let cut = &src[..src.len() / 2];
        let (out, t) = run(&Bytes::copy_from_slice(cut), 9, true);
        let text = String::from_utf8(out).unwrap();
        let last = text.trim_end().rsplit("\n\n").next().unwrap();
        let v: serde_json::Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(v["error"]["code"], "upstream_stream_truncated");
        assert!(t.failed());
        assert!(!text.contains("[DONE]"));
        assert!(t.usage().0.completion_tokens > 0);
    }

    #[test]
    fn upstream_error_event_is_forwarded_not_doubled() {
        let src = Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"boom\"}}\n\n",
        );
        let (out, t) = run(&src, 4, false);
        assert_eq!(out, src.to_vec());
        assert!(t.failed());
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600), step in 1usize..50) {
            let (_out, t) = run(&Bytes::from(bytes), step, false);
            let _ = t.usage();
        }
    }
}
