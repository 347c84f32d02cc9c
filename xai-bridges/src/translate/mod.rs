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
