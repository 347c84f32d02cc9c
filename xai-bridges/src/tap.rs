//! A passthrough stream tap for protocols whose events are forwarded unchanged: the bytes go out as they came (no
//! copy), a per-protocol [`Observer`] reads usage, failures and the terminal event on the side.

use bytes::{Bytes, BytesMut};
use xai_core::{StreamTap, Usage};

use crate::sse;

/// What a protocol reads from each event of its stream.
pub trait Observer: Send + 'static {
    /// Looks at one complete event.
    fn observe(&mut self, event: &[u8], st: &mut TapState);
    /// The error event to append when the stream ended without its terminal event.
    fn truncated(&self, message: &str) -> Bytes;
}

/// What observers maintain.
#[derive(Debug, Default, Clone)]
pub struct TapState {
    /// Usage the upstream reported.
    pub usage: Option<Usage>,
    /// Content events seen (the estimate of output tokens while usage is unknown).
    pub chunks: u64,
    /// The terminal event was seen.
    pub terminal: bool,
    /// An error was seen.
    pub failed: bool,
}

/// The tap.
#[derive(Debug)]
pub struct EventTap<O> {
    obs: O,
    st: TapState,
    carry: BytesMut,
    finished: bool,
}

impl<O: Observer> EventTap<O> {
    /// A tap with `obs`.
    pub fn new(obs: O) -> Self {
        Self { obs, st: TapState::default(), carry: BytesMut::new(), finished: false }
    }

    fn scan(&mut self, buf: &[u8]) -> usize {
        let mut at = 0;
        while let Some(len) = sse::event_end(&buf[at..]) {
            self.obs.observe(&buf[at..at + len], &mut self.st);
            at += len;
        }
        at
    }
}

impl<O: Observer> StreamTap for EventTap<O> {
    fn feed(&mut self, chunk: Bytes) -> Bytes {
        if self.carry.is_empty() {
            let used = self.scan(&chunk);
            self.carry.extend_from_slice(&chunk[used..]);
        } else {
            self.carry.extend_from_slice(&chunk);
            let buf = self.carry.split();
            let used = self.scan(&buf);
            self.carry.extend_from_slice(&buf[used..]);
        }
        chunk
    }

    fn finish(&mut self, upstream_error: Option<&str>) -> Bytes {
        if self.finished {
            return Bytes::new();
        }
        self.finished = true;
        if !self.carry.is_empty() {
            let rest = self.carry.split();
            self.obs.observe(&rest, &mut self.st);
        }
        if (!self.st.terminal || upstream_error.is_some()) && !self.st.failed {
            self.st.failed = true;
            return self.obs.truncated(upstream_error.unwrap_or("upstream stream ended before completion"));
        }
        Bytes::new()
    }

    fn usage(&self) -> (Usage, bool) {
        match self.st.usage {
            Some(u) => (u, true),
            None => (Usage { completion_tokens: self.st.chunks, ..Usage::default() }, false),
        }
    }

    fn failed(&self) -> bool {
        self.st.failed
    }
}
