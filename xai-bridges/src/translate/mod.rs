//! Cross-protocol translation (DESIGN §6): each protocol's decoders and encoders to and from the canonical IR
//! ([`xai_core::ir`]), and re-exports [`TranslateTap`], which turns an upstream stream of one protocol into a client stream
//! of another while reading usage on the way.

pub mod anthropic;
pub mod chat;
pub mod gemini;
pub mod responses;

use bytes::BytesMut;
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
