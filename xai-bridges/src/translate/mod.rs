//! Cross-protocol translation (DESIGN §6): each protocol's decoders and encoders to and from the canonical IR
//! ([`xai_core::ir`]), and re-exports [`TranslateTap`], which turns an upstream stream of one protocol into a client stream
//! of another while reading usage on the way.

pub mod anthropic;
pub mod chat;
pub mod gemini;
pub mod responses;

use bytes::{Buf, BytesMut};
pub use xai_core::ir::TranslateTap;

use crate::sse;

/// Splits an SSE byte stream into complete events, carrying partial ones across chunks (decoders build on it).
#[derive(Debug, Default)]
pub struct SseSplitter {
    carry: BytesMut,
}

/// Longest partial event kept before the stream is declared broken (a runaway upstream).
pub const MAX_EVENT_BYTES: usize = 16 << 20;

impl SseSplitter {
    /// Feeds `chunk`; calls `each` with the `event:` name (when any) and `data:` payload of every complete event.
    /// Returns `false` when a partial event grew past [`MAX_EVENT_BYTES`].
    pub fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(Option<&[u8]>, &[u8])) -> bool {
        if self.carry.is_empty() {
            let used = events(chunk, 0, &mut each);
            self.carry.extend_from_slice(&chunk[used..]);
        } else {
            // The carry holds no separator, so the first search starts where one may straddle the old end (a
            // separator is at most 4 bytes): a long event is scanned once, not once per chunk.
            let seen = self.carry.len().saturating_sub(3);
            self.carry.extend_from_slice(chunk);
            let used = events(&self.carry, seen, &mut each);
            if used == self.carry.len() {
                self.carry.clear(); // keeps the allocation for the next partial event
            } else {
                self.carry.advance(used);
            }
        }
        self.carry.len() <= MAX_EVENT_BYTES
    }

    /// What is left after the last complete event (a final event without its blank line).
    pub fn rest(&mut self, mut each: impl FnMut(Option<&[u8]>, &[u8])) {
        let buf = std::mem::take(&mut self.carry);
        if let (name, Some(data)) = sse::parse(&buf) {
            each(name, &data);
        }
    }
}

/// Calls `each` for every complete event of `buf`, the first of which has no separator in its first `skip`
/// bytes; returns the bytes they span.
fn events(buf: &[u8], mut skip: usize, each: &mut impl FnMut(Option<&[u8]>, &[u8])) -> usize {
    let mut at = 0;
    while let Some(len) = sse::event_end(&buf[at + skip..]).map(|l| l + skip) {
        skip = 0;
        if let (name, Some(data)) = sse::parse(&buf[at..at + len]) {
            each(name, &data);
        }
        at += len;
    }
    at
}

#[cfg(test)]
mod cross_tests {
    //! Every recorded stream of every protocol, decoded by its adapter and re-encoded for a client of each other
    //! protocol; the client stream, read back by that protocol's own decoder, says the same thing.

    use xai_core::ir::{BlockKind, Delta, StopReason, StreamEvent};
    use xai_core::{Endpoint, EndpointKind, Protocol, RequestMeta, Usage};

    use crate::adapters;

    /// What a stream says: text, tool calls (name, arguments), stop reason, final usage; or its error code.
    #[derive(Debug, PartialEq)]
    struct Said {
        text: String,
        calls: Vec<(String, serde_json::Value)>,
        stop: Option<StopReason>,
        usage: Option<Usage>,
        error: bool,
    }

    fn said(events: &[StreamEvent]) -> Said {
        let mut s = Said { text: String::new(), calls: Vec::new(), stop: None, usage: None, error: false };
        let mut args = String::new();
        let mut in_call = false;
        for e in events {
            match e {
                StreamEvent::BlockStart { block: BlockKind::ToolCall { name, .. }, .. } => {
                    s.calls.push((name.clone(), serde_json::Value::Null));
                    args.clear();
                    in_call = true;
                }
                StreamEvent::Delta { delta: Delta::Text(t), .. } => s.text.push_str(t),
                StreamEvent::Delta { delta: Delta::ToolArgs(a), .. } => args.push_str(a),
                StreamEvent::BlockStop { .. } if in_call => {
                    let parsed = serde_json::from_str(if args.is_empty() { "{}" } else { &args }).unwrap();
                    s.calls.last_mut().unwrap().1 = parsed;
                    in_call = false;
                }
                StreamEvent::Usage(u) => s.usage = Some(*u),
                StreamEvent::Start { usage: Some(u), .. } => s.usage = Some(*u),
                StreamEvent::Finish { stop, usage } => {
                    s.stop = Some(stop.clone());
                    if usage.is_some() {
                        s.usage = *usage;
                    }
                }
                StreamEvent::Error { .. } => s.error = true,
                _ => {}
            }
        }
        s
    }

    fn decode(p: Protocol, bytes: &[u8]) -> Vec<StreamEvent> {
        let mut d = adapters().get(p).unwrap().stream_decoder().expect("every protocol decodes streams");
        let mut out = Vec::new();
        for chunk in bytes.chunks(97) {
            d.feed(chunk, &mut out);
        }
        d.finish(None, &mut out);
        out
    }

    fn client_endpoint(p: Protocol) -> Endpoint {
        let kind = match p {
            Protocol::OpenAiChat => EndpointKind::ChatCompletions,
            Protocol::OpenAiResponses => EndpointKind::Responses,
            Protocol::Anthropic => EndpointKind::Messages,
            _ => EndpointKind::StreamGenerateContent,
        };
        Endpoint { kind, protocol: p, path_model: Some("m".into()), sse: true }
    }

    /// Stop reasons as the poorest wire can tell them apart (Responses and Gemini merge some).
    fn coarse(s: &Option<StopReason>) -> &'static str {
        match s {
            Some(StopReason::ToolUse) => "tool",
            Some(StopReason::MaxTokens) => "length",
            Some(StopReason::ContentFilter) => "filter",
            Some(_) => "end",
            None => "none",
        }
    }

    #[test]
    fn every_fixture_says_the_same_in_every_other_protocol() {
        let dirs = [
            ("openai-chat", Protocol::OpenAiChat),
            ("openai-responses", Protocol::OpenAiResponses),
            ("anthropic", Protocol::Anthropic),
            ("gemini", Protocol::Gemini),
        ];
        let (mut checked, mut failed_streams, mut pairs) = (0, 0, 0);
        for (dir, from) in dirs {
            let mut files: Vec<_> = std::fs::read_dir(crate::fixtures_dir().join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "sse"))
                .collect();
            files.sort();
            for f in files {
                let original = said(&decode(from, &std::fs::read(&f).unwrap()));
                for (_, to) in dirs {
                    if to == from {
                        continue;
                    }
                    pairs += 1;
                    let meta = RequestMeta {
                        model: "m".into(),
                        stream: true,
                        include_usage: true,
                        max_tokens: None,
                        body_len: 0,
                        spans: Default::default(),
                    };
                    let decoder = adapters().get(from).unwrap().stream_decoder().unwrap();
                    let encoder = adapters().get(to).unwrap().stream_encoder(&client_endpoint(to), &meta).unwrap();
                    let mut tap = super::TranslateTap::new(decoder, encoder);
                    let mut client = Vec::new();
                    let bytes = std::fs::read(&f).unwrap();
                    for chunk in bytes.chunks(97) {
                        client.extend_from_slice(&xai_core::StreamTap::feed(
                            &mut tap,
                            bytes::Bytes::copy_from_slice(chunk),
                        ));
                    }
                    client.extend_from_slice(&xai_core::StreamTap::finish(&mut tap, None));
                    let again = said(&decode(to, &client));
                    let what = format!("{} → {to}", f.display());
                    assert_eq!(again.error, original.error, "{what}: error");
                    if original.error {
                        failed_streams += 1;
                        continue;
                    }
                    assert_eq!(again.text, original.text, "{what}: text");
                    assert_eq!(again.calls, original.calls, "{what}: tool calls");
                    assert_eq!(coarse(&again.stop), coarse(&original.stop), "{what}: stop reason");
                    let (a, o) = (again.usage.unwrap_or_default(), original.usage.unwrap_or_default());
                    assert_eq!(
                        (a.prompt_tokens, a.completion_tokens, a.cached_tokens),
                        (o.prompt_tokens, o.completion_tokens, o.cached_tokens),
                        "{what}: usage"
                    );
                    checked += 1;
                }
            }
        }
        // 26 recorded streams × 3 other protocols; the one recorded failure (Responses rate limit) stays a failure.
        assert_eq!((pairs, checked, failed_streams), (78, 75, 3));
    }
}
