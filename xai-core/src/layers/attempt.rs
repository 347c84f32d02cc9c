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
use crate::ir::{ChatRequest, Part, TranslateTap};
use crate::protocol::{Endpoint, EndpointKind, Protocol};
use crate::traits::{Adapters, BoxFuture, KeyPool, Lease, ProtocolAdapter, RequestMeta, StreamTap, UpstreamClient};
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
        let adapter = self.adapter(provider.protocol)?;
        if needs_translation(&a.endpoint, provider.protocol) {
            let client = self.adapter(a.endpoint.protocol)?;
            return self.run_translated(a, client, adapter).await;
        }
        let body = adapter.passthrough_request(&a.body, &a.meta, &a.upstream_model).map_err(AttemptError::Fatal)?;
        let path = adapter.upstream_path(&a.endpoint, &a.upstream_model, a.meta.stream);
        let req = self.upstream_request(&a, &*adapter, &path, body, true)?;
        let resp = self.send(&a, req).await?;
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

    fn adapter(&self, p: crate::protocol::Protocol) -> Result<Arc<dyn ProtocolAdapter>, AttemptError> {
        self.adapters
            .get(p)
            .cloned()
            .ok_or_else(|| AttemptError::Fatal(GatewayError::NotImplemented(format!("no adapter for {p}"))))
    }

    /// The upstream HTTP request: URL, content negotiation, forwarded headers (passthrough only) and credential.
    fn upstream_request(
        &self,
        a: &AttemptRequest,
        adapter: &dyn ProtocolAdapter,
        path: &str,
        body: Bytes,
        forward: bool,
    ) -> Result<Request<Bytes>, AttemptError> {
        let provider = &a.lease.provider;
        let mut uri = String::with_capacity(provider.base_url.len() + path.len());
        uri.push_str(&provider.base_url);
        uri.push_str(path);
        let mut req = Request::post(uri).body(body).map_err(|_| {
            AttemptError::Fatal(GatewayError::Internal(format!("bad upstream URL for provider {}", provider.name)))
        })?;
        let h = req.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(if a.meta.stream { "text/event-stream" } else { "application/json" }),
        );
        if forward {
            for (k, v) in &a.forward {
                h.append(k.clone(), v.clone());
            }
        }
        adapter.authorize(a.lease.key.secret.expose(), h);
        Ok(req)
    }

    /// Sends, mapping a timeout or transport failure to a retryable error reported to the pool.
    async fn send(&self, a: &AttemptRequest, req: Request<Bytes>) -> Result<Response<Body>, AttemptError> {
        let key_id = a.lease.key.id;
        match tokio::time::timeout(a.timeout, self.upstream.send(req)).await {
            Err(_) => Err(self.fail(key_id, Outcome::Timeout, None)),
            Ok(Err(e)) => {
                tracing::debug!(provider = %a.lease.provider.name, upstream_key = %key_id, error = %e, "upstream transport error");
                Err(self.fail(key_id, Outcome::ConnectError, None))
            }
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// A request whose upstream speaks another protocol than the client (or a Gemini JSON-array stream): the
    /// client body is decoded into the canonical IR and encoded for the upstream; the answer comes back the same
    /// way (whole, or event by event through a [`TranslateTap`]).
    async fn run_translated(
        self,
        a: AttemptRequest,
        client: Arc<dyn ProtocolAdapter>,
        upstream: Arc<dyn ProtocolAdapter>,
    ) -> Result<GatewayResponse, AttemptError> {
        let key_id = a.lease.key.id;
        let mut ir = client.decode_request(&a.endpoint, &a.body).map_err(AttemptError::Fatal)?;
        if matches!(a.endpoint.kind, EndpointKind::CountTokens | EndpointKind::GeminiCountTokens) {
            // No protocol counts another's tokens: answer with the gateway's own estimate, without an upstream call.
            return Ok(count_tokens_answer(a.endpoint.protocol, estimate_tokens(&ir)));
        }
        ir.model = a.upstream_model.to_string();
        ir.stream = a.meta.stream;
        let body = upstream.encode_request(&ir).map_err(AttemptError::Fatal)?;
        let p = upstream.protocol();
        let up_endpoint = Endpoint {
            kind: match p {
                Protocol::OpenAiChat => EndpointKind::ChatCompletions,
                Protocol::OpenAiResponses => EndpointKind::Responses,
                Protocol::Anthropic => EndpointKind::Messages,
                Protocol::Gemini if a.meta.stream => EndpointKind::StreamGenerateContent,
                Protocol::Gemini => EndpointKind::GenerateContent,
            },
            protocol: p,
            path_model: None,
            sse: true,
        };
        let path = upstream.upstream_path(&up_endpoint, &a.upstream_model, a.meta.stream);
        let req = self.upstream_request(&a, &*upstream, &path, body, p == a.endpoint.protocol)?;
        let resp = self.send(&a, req).await?;
        let status = resp.status();
        let (parts, upstream_body) = resp.into_parts();
        if !status.is_success() {
            let bytes = read_limited(upstream_body, 1 << 20, a.timeout).await.unwrap_or_default();
            let outcome = upstream.classify_failure(status, &parts.headers, &bytes, self.cfg.default_retry_after);
            if outcome.is_retryable() {
                return Err(self.fail(key_id, outcome, Some(status)));
            }
            // The upstream refused the request itself: its status and message, in the client's protocol.
            self.pool.report(key_id, Outcome::Ok);
            let message =
                upstream.error_message(&bytes).unwrap_or_else(|| format!("the upstream answered {}", status.as_u16()));
            let err = GatewayError::UpstreamRejected { status, message };
            let probe = UsageProbe(Arc::new(Mutex::new(ProbeState { failed: true, ..ProbeState::default() })));
            let mut r = Response::new(body::full(client.error_body(&err)));
            *r.status_mut() = status;
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r.extensions_mut().insert(probe);
            return Ok(r);
        }
        if a.meta.stream {
            let (Some(decoder), Some(encoder)) =
                (upstream.stream_decoder(), client.stream_encoder(&a.endpoint, &a.meta))
            else {
                return Err(AttemptError::Fatal(GatewayError::NotImplemented(format!(
                    "streaming from {} upstreams to {} clients is not available",
                    p, a.endpoint.protocol
                ))));
            };
            self.pool.report(key_id, Outcome::Ok);
            let probe = UsageProbe::default();
            let tapped = TapBody {
                inner: upstream_body,
                tap: Box::new(TranslateTap::new(decoder, encoder)),
                probe: probe.0.clone(),
                done: false,
                acc: Acc::Empty,
                yielded: false,
            };
            let mut r = Response::new(tapped.boxed_unsync());
            let h = r.headers_mut();
            let ctype = if a.endpoint.protocol == Protocol::Gemini && !a.endpoint.sse {
                "application/json"
            } else {
                "text/event-stream"
            };
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r.extensions_mut().insert(probe);
            return Ok(r);
        }
        let bytes = match read_limited(upstream_body, self.cfg.max_response_bytes as usize, a.timeout).await {
            Some(b) => b,
            None => return Err(self.fail(key_id, Outcome::ConnectError, Some(status))),
        };
        let decoded = match upstream.decode_response(&bytes) {
            Ok(d) => d,
            Err(e) => {
                // A 200 the upstream's own protocol cannot read: the key's provider is misbehaving.
                tracing::info!(provider = %a.lease.provider.name, error = %e, "upstream answer could not be decoded");
                return Err(self.fail(key_id, Outcome::Overloaded, Some(status)));
            }
        };
        self.pool.report(key_id, Outcome::Ok);
        let out = client.encode_response(&decoded, &a.endpoint, &a.meta);
        let probe =
            UsageProbe(Arc::new(Mutex::new(ProbeState { usage: decoded.usage, reported: true, failed: false })));
        let mut r = Response::new(body::full(out));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r.extensions_mut().insert(probe);
        Ok(r)
    }

    fn fail(&self, key: crate::ids::UpstreamKeyId, outcome: Outcome, status: Option<StatusCode>) -> AttemptError {
        self.pool.report(key, outcome);
        AttemptError::Retryable { outcome, status }
    }
}

/// Whether a request must go through the IR: the upstream speaks another protocol, or a Gemini client wants the
/// JSON-array stream (upstreams are always asked for SSE).
pub fn needs_translation(endpoint: &Endpoint, upstream: Protocol) -> bool {
    endpoint.protocol != upstream
        || (endpoint.protocol == Protocol::Gemini
            && endpoint.kind == EndpointKind::StreamGenerateContent
            && !endpoint.sse)
}

/// The gateway's own input-token estimate for a count-tokens call across protocols: ~4 bytes of text per token,
/// plus a few tokens per message and tool (the order of magnitude every tokenizer gives for English and code).
pub fn estimate_tokens(req: &ChatRequest) -> u64 {
    let mut bytes = 0usize;
    let mut items = 0usize;
    for s in &req.system {
        bytes += s.text.len();
        items += 1;
    }
    for m in &req.messages {
        items += 1;
        for p in &m.parts {
            bytes += match p {
                Part::Text { text, .. } => text.len(),
                Part::ToolCall(c) => c.name.len() + c.arguments.len(),
                Part::ToolResult(r) => r.text().len(),
                Part::Reasoning(r) => r.text.len(),
                Part::Image(_) => 340 * 4, // a typical tile's token cost
                Part::File { .. } => 0,
            };
        }
    }
    for t in &req.tools {
        items += 1;
        bytes += t.name.len() + t.description.as_ref().map_or(0, String::len) + t.parameters.to_string().len();
    }
    (bytes as u64).div_ceil(4) + 4 * items as u64
}

fn count_tokens_answer(p: Protocol, n: u64) -> GatewayResponse {
    let json = match p {
        Protocol::Gemini => format!("{{\"totalTokens\":{n}}}"),
        _ => format!("{{\"input_tokens\":{n}}}"),
    };
    let mut r = Response::new(body::full(Bytes::from(json)));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.extensions_mut().insert(UsageProbe::default());
    r
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Message, Role, SystemBlock};

    #[test]
    fn translation_is_needed_across_protocols_and_for_gemini_arrays() {
        let e = |protocol, kind, sse| Endpoint { kind, protocol, path_model: None, sse };
        let chat = e(Protocol::OpenAiChat, EndpointKind::ChatCompletions, false);
        assert!(!needs_translation(&chat, Protocol::OpenAiChat));
        assert!(needs_translation(&chat, Protocol::Anthropic));
        let sse = e(Protocol::Gemini, EndpointKind::StreamGenerateContent, true);
        assert!(!needs_translation(&sse, Protocol::Gemini));
        let array = e(Protocol::Gemini, EndpointKind::StreamGenerateContent, false);
        assert!(needs_translation(&array, Protocol::Gemini));
        let whole = e(Protocol::Gemini, EndpointKind::GenerateContent, false);
        assert!(!needs_translation(&whole, Protocol::Gemini));
    }

    #[test]
    fn token_estimate_grows_with_the_text() {
        let req = |text: &str| ChatRequest {
            system: vec![SystemBlock { text: "be brief".into(), cache: false }],
            messages: vec![Message { role: Role::User, parts: vec![Part::Text { text: text.into(), cache: false }] }],
            ..ChatRequest::default()
        };
        let short = estimate_tokens(&req("hi"));
        let long = estimate_tokens(&req(&"word ".repeat(400)));
        // (8 + 2) bytes / 4 rounded up, plus 4 per system block and message.
        assert_eq!(short, 3 + 8);
        assert_eq!(long, (8u64 + 2000).div_ceil(4) + 8);
    }
}
