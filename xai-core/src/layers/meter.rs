//! Layer 8, meter: wraps the response body and records usage exactly once: at the end of the stream, on an
//! error, or when the client goes away (billing what was produced). Settles the admission reservation.

use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http::Request;
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{AttemptLog, GatewayFuture, GatewayResponse, ReceivedAt, UsageProbe};
use crate::body::Body;
use crate::error::{BoxError, GatewayError};
use crate::ids::RequestId;
use crate::policy::Principal;
use crate::protocol::Endpoint;
use crate::routing::RoutePlan;
use crate::traits::{Meter, PolicyStore, RequestMeta, Reservation};
use crate::usage::{RecordStatus, UsageRecord};

/// Records every request that passed admission.
#[derive(Clone)]
pub struct MeterLayer {
    meter: Arc<dyn Meter>,
    store: Arc<dyn PolicyStore>,
}

impl std::fmt::Debug for MeterLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeterLayer")
    }
}

impl MeterLayer {
    /// Over a meter; prices come from the store.
    pub fn new(meter: Arc<dyn Meter>, store: Arc<dyn PolicyStore>) -> Self {
        Self { meter, store }
    }
}

impl<S> Layer<S> for MeterLayer {
    type Service = MeterService<S>;
    fn layer(&self, inner: S) -> MeterService<S> {
        MeterService { inner, meter: self.meter.clone(), store: self.store.clone() }
    }
}

/// The meter service.
#[derive(Clone)]
pub struct MeterService<S> {
    inner: S,
    meter: Arc<dyn Meter>,
    store: Arc<dyn PolicyStore>,
}

impl<S> std::fmt::Debug for MeterService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeterService")
    }
}

impl<S> Service<Request<Bytes>> for MeterService<S>
where
    S: Service<Request<Bytes>, Response = GatewayResponse, Error = GatewayError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = GatewayFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let log = AttemptLog::default();
        let x = req.extensions_mut();
        let reservation = x.remove::<Reservation>().unwrap_or_default();
        x.insert(log.clone());
        let ctx = match RecordCtx::new(x, reservation, log, self.meter.clone(), self.store.clone()) {
            Some(c) => c,
            None => return Box::pin(async { Err(GatewayError::Internal("meter before route".into())) }),
        };
        let rate = ctx.reservation.rate;
        Box::pin(async move {
            match inner.call(req).await {
                Ok(mut resp) => {
                    if let Some(rate) = rate {
                        rate_headers(resp.headers_mut(), &rate);
                    }
                    let probe = resp.extensions().get::<UsageProbe>().cloned().unwrap_or_default();
                    let status = resp.status().as_u16();
                    if resp.body().is_end_stream() {
                        RecordGuard { ctx, probe, http_status: status, ttft_ms: None }.finish(RecordStatus::Ok);
                        return Ok(resp);
                    }
                    Ok(resp.map(|b| {
                        MeteredBody {
                            inner: b,
                            guard: Some(RecordGuard { ctx, probe, http_status: status, ttft_ms: None }),
                        }
                        .boxed_unsync()
                    }))
                }
                Err(e) => {
                    let status = if e.origin() == crate::error::Origin::Upstream {
                        RecordStatus::UpstreamError
                    } else {
                        RecordStatus::Rejected
                    };
                    let guard = RecordGuard {
                        ctx,
                        probe: UsageProbe::default(),
                        http_status: e.status().as_u16(),
                        ttft_ms: None,
                    };
                    guard.finish(status);
                    Err(e)
                }
            }
        })
    }
}

/// OpenAI's `x-ratelimit-*` headers for the tightest request and token bounds the request met (per minute or per
/// day, whichever had less left; resets as durations such as `1s`, `6m0s`, `3h2m1s`).
pub fn rate_headers(h: &mut http::HeaderMap, rate: &crate::traits::RateInfo) {
    use http::HeaderValue;
    fn duration(secs: u64) -> String {
        match (secs / 3600, secs % 3600 / 60, secs % 60) {
            (0, 0, s) => format!("{s}s"),
            (0, m, s) => format!("{m}m{s}s"),
            (h, m, s) => format!("{h}h{m}m{s}s"),
        }
    }
    let mut put = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(name, v);
        }
    };
    if let Some((limit, remaining, reset)) = rate.requests {
        put("x-ratelimit-limit-requests", limit.to_string());
        put("x-ratelimit-remaining-requests", remaining.to_string());
        put("x-ratelimit-reset-requests", duration(reset));
    }
    if let Some((limit, remaining, reset)) = rate.tokens {
        put("x-ratelimit-limit-tokens", limit.to_string());
        put("x-ratelimit-remaining-tokens", remaining.to_string());
        put("x-ratelimit-reset-tokens", duration(reset));
    }
}

/// Everything needed to write the record, captured at request time.
struct RecordCtx {
    meter: Arc<dyn Meter>,
    store: Arc<dyn PolicyStore>,
    principal: Arc<Principal>,
    endpoint: Endpoint,
    request_id: RequestId,
    received: ReceivedAt,
    requested_model: Arc<str>,
    upstream_model: Arc<str>,
    body_len: usize,
    reservation: Reservation,
    log: AttemptLog,
}

impl RecordCtx {
    fn new(
        x: &http::Extensions,
        reservation: Reservation,
        log: AttemptLog,
        meter: Arc<dyn Meter>,
        store: Arc<dyn PolicyStore>,
    ) -> Option<Self> {
        let meta = x.get::<RequestMeta>()?;
        Some(Self {
            meter,
            store,
            principal: x.get::<Arc<Principal>>()?.clone(),
            endpoint: x.get::<Endpoint>()?.clone(),
            request_id: x.get::<RequestId>().cloned().unwrap_or_else(RequestId::generate),
            received: x
                .get::<ReceivedAt>()
                .copied()
                .unwrap_or(ReceivedAt { instant: Instant::now(), time: std::time::SystemTime::now() }),
            requested_model: meta.model.clone(),
            upstream_model: x.get::<RoutePlan>()?.upstream_model.clone(),
            body_len: meta.body_len,
            reservation,
            log,
        })
    }
}

struct RecordGuard {
    ctx: RecordCtx,
    probe: UsageProbe,
    http_status: u16,
    ttft_ms: Option<u64>,
}

impl RecordGuard {
    fn finish(self, mut status: RecordStatus) {
        let c = self.ctx;
        let probe = self.probe.0.lock().clone();
        let mut usage = probe.usage;
        let estimated = !probe.reported;
        if estimated && usage.prompt_tokens == 0 && status != RecordStatus::Rejected && self.http_status < 400 {
            // The upstream never reported counts (cut stream): bill the input by size, the output by what passed.
            usage.prompt_tokens = (c.body_len as u64).div_ceil(4);
        }
        if status == RecordStatus::Ok && (probe.failed || self.http_status >= 400) {
            status = RecordStatus::UpstreamError;
        }
        let attempts = mem::take(&mut *c.log.0.lock());
        let last = attempts.last();
        let price = super::admit::price_of(&*c.store, Some(&c.upstream_model), &c.requested_model);
        let account = c.principal.account();
        let record = UsageRecord {
            request_id: c.request_id,
            time: c.received.time,
            account: account.id,
            account_path: account.path.clone(),
            chain: c.principal.chain_ids.clone(),
            key: c.principal.key.id,
            inbound_protocol: c.endpoint.protocol,
            provider: last.map(|a| a.provider.clone()),
            upstream_key: last.map(|a| a.upstream_key),
            requested_model: c.requested_model,
            upstream_model: Some(c.upstream_model),
            level: last.map(|a| a.level),
            status,
            http_status: self.http_status,
            latency_ms: c.received.instant.elapsed().as_millis() as u64,
            ttft_ms: self.ttft_ms,
            cost: price.map(|p| p.cost(&usage)).unwrap_or_default(),
            usage,
            estimated: estimated && usage.total() > 0,
            attempts,
        };
        // The access log: one line per metered request, every attempt in it (disable with a `warn` filter).
        if tracing::enabled!(target: "xai::access", tracing::Level::INFO) {
            let attempts: Vec<String> = record
                .attempts
                .iter()
                .map(|a| format!("{}/{}@{}:{}", a.provider, a.upstream_key, a.level, a.outcome))
                .collect();
            tracing::info!(
                target: "xai::access",
                request_id = %record.request_id,
                account = %record.account_path,
                model = %record.requested_model,
                upstream_model = record.upstream_model.as_deref().unwrap_or("-"),
                status = ?record.status,
                http_status = record.http_status,
                attempts = %attempts.join(","),
                prompt_tokens = usage.prompt_tokens,
                completion_tokens = usage.completion_tokens,
                estimated = record.estimated,
                latency_ms = record.latency_ms,
                "request"
            );
        }
        c.meter.record(record, c.reservation);
    }
}

pin_project! {
    /// The client-facing body: records usage once, when it ends, fails or is dropped.
    struct MeteredBody {
        #[pin]
        inner: Body,
        guard: Option<RecordGuard>,
    }

    impl PinnedDrop for MeteredBody {
        fn drop(this: Pin<&mut Self>) {
            if let Some(g) = this.project().guard.take() {
                g.finish(RecordStatus::ClientDisconnected);
            }
        }
    }
}

impl HttpBody for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let r = ready!(this.inner.as_mut().poll_frame(cx));
        match &r {
            Some(Ok(f)) => {
                if let Some(g) = this.guard.as_mut()
                    && g.ttft_ms.is_none()
                    && f.is_data()
                {
                    g.ttft_ms = Some(g.ctx.received.instant.elapsed().as_millis() as u64);
                }
                // Servers stop polling a body that says it ended: a one-frame body ends here.
                if this.inner.is_end_stream()
                    && let Some(g) = this.guard.take()
                {
                    g.finish(RecordStatus::Ok);
                }
            }
            Some(Err(_)) => {
                if let Some(g) = this.guard.take() {
                    g.finish(RecordStatus::UpstreamError);
                }
            }
            None => {
                if let Some(g) = this.guard.take() {
                    g.finish(RecordStatus::Ok);
                }
            }
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
