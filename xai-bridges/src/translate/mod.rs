//! Cross-protocol translation (DESIGN §6): each protocol's decoders and encoders to and from the canonical IR
//! ([`xai_core::ir`]), and [`TranslateTap`], which turns an upstream stream of one protocol into a client stream
//! of another while reading usage on the way.

pub mod anthropic;
pub mod chat;
pub mod gemini;
pub mod responses;

use bytes::{Bytes, BytesMut};
use xai_core::StreamTap;
use xai_core::Usage;
use xai_core::ir::{StreamDecoder, StreamEncoder, StreamEvent};

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
        let mut on = |ev: &[u8]| {
            if let Some(data) = sse::data(ev) {
                each(sse::event_name(ev), &data);
            }
        };
        if self.carry.is_empty() {
            let mut at = 0;
            while let Some(len) = sse::event_end(&chunk[at..]) {
                on(&chunk[at..at + len]);
                at += len;
            }
            self.carry.extend_from_slice(&chunk[at..]);
        } else {
            self.carry.extend_from_slice(chunk);
            let buf = std::mem::take(&mut self.carry);
            let mut at = 0;
            while let Some(len) = sse::event_end(&buf[at..]) {
                on(&buf[at..at + len]);
                at += len;
            }
            self.carry.extend_from_slice(&buf[at..]);
        }
        self.carry.len() <= MAX_EVENT_BYTES
    }

    /// What is left after the last complete event (a final event without its blank line).
    pub fn rest(&mut self, mut each: impl FnMut(Option<&[u8]>, &[u8])) {
        let buf = std::mem::take(&mut self.carry);
        if let Some(data) = sse::data(&buf) {
            each(sse::event_name(&buf), &data);
        }
    }
}

/// A [`StreamTap`] that decodes an upstream stream into IR events and encodes them for the client.
pub struct TranslateTap {
    decoder: Box<dyn StreamDecoder>,
    encoder: Box<dyn StreamEncoder>,
    events: Vec<StreamEvent>,
    out: Vec<u8>,
    usage: Usage,
    reported: bool,
    /// Content deltas seen: the output estimate while usage is unknown.
    deltas: u64,
    failed: bool,
    finished: bool,
}

impl std::fmt::Debug for TranslateTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranslateTap").field("usage", &self.usage).field("failed", &self.failed).finish()
    }
}

impl TranslateTap {
    /// Joins a decoder of the upstream protocol and an encoder of the client protocol.
    pub fn new(decoder: Box<dyn StreamDecoder>, encoder: Box<dyn StreamEncoder>) -> Self {
        Self {
            decoder,
            encoder,
            events: Vec::new(),
            out: Vec::new(),
            usage: Usage::default(),
            reported: false,
            deltas: 0,
            failed: false,
            finished: false,
        }
    }

    fn drain(&mut self) -> Bytes {
        for ev in self.events.drain(..) {
            match &ev {
                StreamEvent::Start { usage: Some(u), .. } | StreamEvent::Usage(u) => {
                    self.usage = *u;
                    self.reported = true;
                }
                StreamEvent::Finish { usage, .. } => {
                    if let Some(u) = usage {
                        self.usage = *u;
                        self.reported = true;
                    }
                    self.finished = true;
                }
                StreamEvent::Error { .. } => {
                    self.failed = true;
                    self.finished = true;
                }
                StreamEvent::Delta { .. } => self.deltas += 1,
                _ => {}
            }
            self.encoder.encode(&ev, &mut self.out);
        }
        Bytes::from(std::mem::take(&mut self.out))
    }
}

impl StreamTap for TranslateTap {
    fn feed(&mut self, chunk: Bytes) -> Bytes {
        if self.finished {
            return Bytes::new();
        }
        self.decoder.feed(&chunk, &mut self.events);
        self.drain()
    }

    fn finish(&mut self, upstream_error: Option<&str>) -> Bytes {
        if self.finished {
            return Bytes::new();
        }
        self.decoder.finish(upstream_error, &mut self.events);
        let out = self.drain();
        if !self.finished {
            // A decoder that broke its contract: never end a client stream cleanly without a terminal event.
            self.events.push(StreamEvent::Error {
                message: "upstream stream ended without its terminal event".into(),
                code: "stream_truncated".into(),
            });
            let mut all = out.to_vec();
            all.extend_from_slice(&self.drain());
            return all.into();
        }
        out
    }

    fn usage(&self) -> (Usage, bool) {
        if self.reported { (self.usage, true) } else { (Usage { completion_tokens: self.deltas, ..self.usage }, false) }
    }

    fn failed(&self) -> bool {
        self.failed
    }
}
