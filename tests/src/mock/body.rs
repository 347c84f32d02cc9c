//! The mock's response body: chunks sent one by one, paced, optionally cut, and a tracker that tells the request log
//! whether the body was handed over completely, cut on purpose, or dropped early because the peer went away.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::Shared;

/// Settles one request's log entry exactly once; dropping it unsettled means the peer went away.
#[derive(Debug)]
pub(crate) struct Tracker {
    shared: Arc<Shared>,
    seq: u64,
    settled: bool,
}

impl Tracker {
    pub(crate) fn new(shared: Arc<Shared>, seq: u64) -> Self {
        Self { shared, seq, settled: false }
    }

    pub(crate) fn set_status(&self, status: u16) {
        self.shared.update(self.seq, |r| r.status = Some(status));
    }

    fn finish(&mut self) {
        if !self.settled {
            self.settled = true;
            self.shared.update(self.seq, |r| r.finished = true);
        }
    }

    fn dropped(&mut self) {
        if !self.settled {
            self.settled = true;
            self.shared.update(self.seq, |r| r.dropped = true);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.update(self.seq, |r| r.cancelled = true);
        }
    }
}

/// A body of pre-built chunks, paced by `interval` and cut after `drop_after` chunks.
#[derive(Debug)]
pub(crate) struct MockBody {
    chunks: VecDeque<Bytes>,
    interval: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
    sent: usize,
    drop_after: Option<usize>,
    flushed_before_cut: bool,
    /// Streams are sent chunked; single bodies with a content length.
    exact_len: bool,
    tracker: Option<Tracker>,
}

impl MockBody {
    /// A complete body, sent at once with a content length (control API replies, untracked).
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            chunks: VecDeque::from([bytes.into()]),
            interval: None,
            sleep: None,
            sent: 0,
            drop_after: None,
            flushed_before_cut: false,
            exact_len: true,
            tracker: None,
        }
    }

    /// A tracked body of `chunks`; `streaming` bodies are sent without a content length.
    pub(crate) fn tracked(
        chunks: Vec<Bytes>,
        streaming: bool,
        interval: Option<Duration>,
        drop_after: Option<usize>,
        tracker: Tracker,
    ) -> Self {
        Self {
            chunks: chunks.into(),
            interval: interval.filter(|d| !d.is_zero()),
            sleep: None,
            sent: 0,
            drop_after,
            flushed_before_cut: false,
            exact_len: !streaming && drop_after.is_none(),
            tracker: Some(tracker),
        }
    }

    fn cut_now(&self) -> bool {
        self.drop_after.is_some_and(|limit| self.sent >= limit)
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.cut_now() {
            // Let the connection flush what was sent before cutting it (hyper drops its write buffer on a body
            // error); a short pause, not a synchronisation.
            if !this.flushed_before_cut {
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(20))));
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
                this.flushed_before_cut = true;
            }
            if let Some(t) = this.tracker.as_mut() {
                t.dropped();
            }
            // An error from the body makes hyper close the connection without finishing the message.
            return Poll::Ready(Some(Err(io::Error::other("mock upstream: drop_after reached"))));
        }
        if this.chunks.is_empty() {
            if let Some(t) = this.tracker.as_mut() {
                t.finish();
            }
            return Poll::Ready(None);
        }
        if this.sent > 0
            && let Some(interval) = this.interval
        {
            let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
            ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
        }
        let chunk = this.chunks.pop_front().unwrap_or_default();
        this.sent += 1;
        if this.chunks.is_empty()
            && !this.cut_now()
            && let Some(t) = this.tracker.as_mut()
        {
            // Handed the last byte to the connection: hyper may not poll again once `is_end_stream` says so.
            t.finish();
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && !self.cut_now()
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact_len {
            SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
        } else {
            SizeHint::default()
        }
    }
}
