//! Layer 10, attempt: one try against one upstream key. Encodes for the upstream (same protocol: passthrough,
//! only model and auth rewritten), sends, classifies the outcome, reports it to the key pool and hands back a
//! body that taps usage as it streams.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use pin_project_lite::pin_project;
use tower::Service;

use super::{GatewayConfig, GatewayResponse, ProbeState, UsageProbe};
use crate::body::{self, Body};
use crate::error::{BoxError, GatewayError};
use crate::protocol::Endpoint;
use crate::traits::{Adapters, BoxFuture, KeyPool, Lease, RequestMeta, StreamTap, UpstreamClient};
use crate::usage::Outcome;

/// What failover hands to an attempt.
#[derive(Debug, Clone)]
pub struct AttemptRequest {
    /// The client endpoint.
    pub endpoint: Endpoint,
    /// What decode extracted.
    pub meta: Arc<RequestMeta>,
    /// The client body.
    pub body: Bytes,
    /// Model name to send.
    pub upstream_model: Arc<str>,
    /// The key to use.
    pub lease: Lease,
    /// Client headers to forward (a fixed allowlist, chosen by failover).
    pub forward: HeaderMap,
    /// Until response headers.
    pub timeout: Duration,
}

/// Why an attempt did not produce a response.
#[derive(Debug)]
pub enum AttemptError {
    /// Another key may succeed.
    Retryable {
        /// Outcome reported to the pool.
        outcome: Outcome,
        /// Upstream status, if any.
        status: Option<StatusCode>,
    },
    /// No point in retrying (e.g. the request cannot be encoded).
    Fatal(GatewayError),
}

/// The attempt service: the innermost service of the stack.
#[derive(Clone)]
pub struct Attempt {
    pool: Arc<dyn KeyPool>,
    adapters: Adapters,
    upstream: Arc<dyn UpstreamClient>,
    cfg: GatewayConfig,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attempt")
    }
}

impl Attempt {
    /// Over a key pool, the adapters and an upstream client.
    pub fn new(
        pool: Arc<dyn KeyPool>,
        adapters: Adapters,
        upstream: Arc<dyn UpstreamClient>,
        cfg: GatewayConfig,
    ) -> Self {
        Self { pool, adapters, upstream, cfg }
    }
}

/// Only these client headers reach an upstream: protocol versions and betas, never cookies or client auth.
pub const FORWARDED_HEADERS: [&str; 4] =
    ["anthropic-version", "anthropic-beta", "openai-beta", "x-stainless-helper-method"];

impl Service<AttemptRequest> for Attempt {
    type Response = GatewayResponse;
    type Error = AttemptError;
    type Future = BoxFuture<'static, Result<GatewayResponse, AttemptError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), AttemptError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, a: AttemptRequest) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.run(a).await })
    }
}

impl Attempt {
    async fn run(self, a: AttemptRequest) -> Result<GatewayResponse, AttemptError> {
        let provider = &a.lease.provider;
        let key_id = a.lease.key.id;
        if provider.protocol != a.endpoint.protocol {
            return Err(AttemptError::Fatal(GatewayError::NotImplemented(format!(
                "translating {} requests to {} upstreams is not available yet",
                a.endpoint.protocol, provider.protocol
            ))));
        }
        let adapter = self
            .adapters
            .get(provider.protocol)
            .ok_or_else(|| {
                AttemptError::Fatal(GatewayError::NotImplemented(format!("no adapter for {}", provider.protocol)))
            })?
            .clone();
        let body = adapter.passthrough_request(&a.body, &a.meta, &a.upstream_model).map_err(AttemptError::Fatal)?;
        let path = adapter.upstream_path(&a.endpoint, &a.upstream_model, a.meta.stream);
        let mut uri = String::with_capacity(provider.base_url.len() + path.len());
        uri.push_str(&provider.base_url);
        uri.push_str(&path);
        let mut req = Request::post(uri).body(body).map_err(|_| {
            AttemptError::Fatal(GatewayError::Internal(format!("bad upstream URL for provider {}", provider.name)))
        })?;
        let h = req.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(if a.meta.stream { "text/event-stream" } else { "application/json" }),
        );
        for (k, v) in &a.forward {
            h.insert(k.clone(), v.clone());
        }
        adapter.authorize(a.lease.key.secret.expose(), h);

        let sent = tokio::time::timeout(a.timeout, self.upstream.send(req)).await;
        let resp = match sent {
            Err(_) => return Err(self.fail(key_id, Outcome::Timeout, None)),
            Ok(Err(e)) => {
                tracing::debug!(provider = %provider.name, upstream_key = %key_id, error = %e, "upstream transport error");
                return Err(self.fail(key_id, Outcome::ConnectError, None));
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let (parts, upstream_body) = resp.into_parts();
        if !status.is_success() {
            let bytes = read_limited(upstream_body, 1 << 20, a.timeout).await.unwrap_or_default();
            let outcome = adapter.classify_failure(status, &parts.headers, &bytes, self.cfg.default_retry_after);
            if outcome.is_retryable() {
                return Err(self.fail(key_id, outcome, Some(status)));
            }
            // A client error the upstream found in the request: hand it back unchanged (same protocol).
            self.pool.report(key_id, Outcome::Ok);
            let probe = UsageProbe(Arc::new(Mutex::new(ProbeState { failed: true, ..ProbeState::default() })));
            let mut r = Response::new(body::full(bytes));
            *r.status_mut() = status;
            copy_content_type(&parts.headers, r.headers_mut(), "application/json");
            r.extensions_mut().insert(probe);
            return Ok(r);
        }
        if a.meta.stream {
            self.pool.report(key_id, Outcome::Ok);
            let probe = UsageProbe::default();
            let tapped = TapBody {
                inner: upstream_body,
                tap: adapter.stream_tap(&a.meta),
                probe: probe.0.clone(),
                done: false,
                acc: Acc::Empty,
                yielded: false,
            };
            let mut r = Response::new(tapped.boxed_unsync());
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r.extensions_mut().insert(probe);
            return Ok(r);
        }
        // Non-streaming: read it all here, so that an upstream that drops mid-body can still be retried.
        let bytes = match read_limited(upstream_body, self.cfg.max_response_bytes as usize, a.timeout).await {
            Some(b) => b,
            None => return Err(self.fail(key_id, Outcome::ConnectError, Some(status))),
        };
        self.pool.report(key_id, Outcome::Ok);
        let usage = adapter.response_usage(&bytes);
        let probe = UsageProbe(Arc::new(Mutex::new(ProbeState {
            usage: usage.unwrap_or_default(),
            reported: usage.is_some(),
            failed: false,
        })));
        let mut r = Response::new(body::full(bytes));
        copy_content_type(&parts.headers, r.headers_mut(), "application/json");
        r.extensions_mut().insert(probe);
        Ok(r)
    }

    fn fail(&self, key: crate::ids::UpstreamKeyId, outcome: Outcome, status: Option<StatusCode>) -> AttemptError {
        self.pool.report(key, outcome);
        AttemptError::Retryable { outcome, status }
    }
}

fn copy_content_type(from: &HeaderMap, to: &mut HeaderMap, default: &'static str) {
    let v = from.get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static(default));
    to.insert(header::CONTENT_TYPE, v);
}

/// Reads a whole upstream body; `None` when it failed, was too large or took longer than `timeout`.
async fn read_limited(mut b: Body, limit: usize, timeout: Duration) -> Option<Bytes> {
    let collect = async move {
        let mut first: Option<Bytes> = None;
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = b.frame().await {
            let Ok(data) = frame.ok()?.into_data() else { continue };
            if first.as_ref().map_or(0, Bytes::len) + buf.len() + data.len() > limit {
                return None;
            }
            // One frame (the common case) is returned without a copy.
            match first.take() {
                None if buf.is_empty() => first = Some(data),
                Some(f) => {
                    buf.extend_from_slice(&f);
                    buf.extend_from_slice(&data);
                }
                None => buf.extend_from_slice(&data),
            }
        }
        Some(first.unwrap_or_else(|| buf.freeze()))
    };
    tokio::time::timeout(timeout.max(Duration::from_secs(1)), collect).await.ok().flatten()
}

pin_project! {
    /// The upstream stream as the client sees it: every chunk goes through the protocol's [`StreamTap`], which
    /// reads usage and may drop or append events; the [`UsageProbe`] is updated after each chunk.
    ///
    /// Chunks that are already available are coalesced into one frame: when the upstream has nothing more at
    /// once, the body yields to the scheduler a single time (letting the client connection task decode what it
    /// has read) before sending what it holds. Under load this turns one write per SSE event into one write per
    /// upstream read; a sparse stream (a model emitting tokens) is delayed by one scheduling round at most.
    pub struct TapBody {
        #[pin]
        inner: Body,
        tap: Box<dyn StreamTap>,
        probe: Arc<Mutex<ProbeState>>,
        done: bool,
        acc: Acc,
        yielded: bool,
    }
}

/// Output held for coalescing: a single chunk is kept without a copy.
#[derive(Debug, Default)]
enum Acc {
    #[default]
    Empty,
    One(Bytes),
    Many(bytes::BytesMut),
}

/// Coalescing stops at this size (one write of a reasonable size).
const COALESCE_MAX: usize = 64 * 1024;

impl Acc {
    fn push(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        *self = match std::mem::take(self) {
            Acc::Empty => Acc::One(b),
            Acc::One(first) => {
                let mut m = bytes::BytesMut::with_capacity(first.len() + b.len());
                m.extend_from_slice(&first);
                m.extend_from_slice(&b);
                Acc::Many(m)
            }
            Acc::Many(mut m) => {
                m.extend_from_slice(&b);
                Acc::Many(m)
            }
        };
    }

    fn len(&self) -> usize {
        match self {
            Acc::Empty => 0,
            Acc::One(b) => b.len(),
            Acc::Many(m) => m.len(),
        }
    }

    fn take(&mut self) -> Option<Bytes> {
        match std::mem::take(self) {
            Acc::Empty => None,
            Acc::One(b) => Some(b),
            Acc::Many(m) => Some(m.freeze()),
        }
    }
}

impl TapBody {
    fn sync_probe(tap: &dyn StreamTap, probe: &Mutex<ProbeState>) {
        let (usage, reported) = tap.usage();
        let mut p = probe.lock();
        p.usage = usage;
        p.reported = reported;
        p.failed = tap.failed();
    }
}

impl HttpBody for TapBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(this.acc.take().map(|b| Ok(Frame::data(b))));
            }
            let out = match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.tap.feed(data),
                    Err(_) => continue, // trailers: nothing for SSE clients
                },
                Poll::Ready(Some(Err(e))) => {
                    *this.done = true;
                    tracing::debug!(error = %e, "upstream stream failed");
                    this.tap.finish(Some("upstream connection lost mid-stream"))
                }
                Poll::Ready(None) => {
                    *this.done = true;
                    this.tap.finish(None)
                }
                Poll::Pending => {
                    if this.acc.len() == 0 {
                        *this.yielded = false;
                        return Poll::Pending;
                    }
                    if !*this.yielded {
                        // Let the upstream connection task hand over what it already read, then come back.
                        *this.yielded = true;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    *this.yielded = false;
                    return Poll::Ready(this.acc.take().map(|b| Ok(Frame::data(b))));
                }
            };
            Self::sync_probe(&**this.tap, this.probe);
            this.acc.push(out);
            if this.acc.len() >= COALESCE_MAX {
                return Poll::Ready(this.acc.take().map(|b| Ok(Frame::data(b))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.acc.len() == 0
    }
}
