//! Layer 9, failover: walks the [`RoutePlan`]: the next healthy key of the level, then the switch-over level,
//! for retryable failures only (connect error, timeout, 429, 5xx, quota), all before the first byte reached the
//! client, within an overall deadline and an attempt budget. Every attempt is logged and recorded.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use tower::{Layer, Service};

use super::attempt::{AttemptError, AttemptRequest, FORWARDED_HEADERS};
use super::{AttemptLog, GatewayConfig, GatewayFuture, GatewayResponse};
use crate::error::GatewayError;
use crate::ids::{RequestId, UpstreamKeyId};
use crate::protocol::Endpoint;
use crate::routing::RoutePlan;
use crate::traits::{KeyPool, RequestMeta};
use crate::usage::{AttemptRecord, Outcome};

/// Retries across keys and levels.
#[derive(Clone)]
pub struct FailoverLayer {
    pool: Arc<dyn KeyPool>,
    cfg: GatewayConfig,
}

impl std::fmt::Debug for FailoverLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FailoverLayer")
    }
}

impl FailoverLayer {
    /// Over a key pool.
    pub fn new(pool: Arc<dyn KeyPool>, cfg: GatewayConfig) -> Self {
        Self { pool, cfg }
    }
}

impl<S> Layer<S> for FailoverLayer {
    type Service = Failover<S>;
    fn layer(&self, inner: S) -> Failover<S> {
        Failover { inner, pool: self.pool.clone(), cfg: self.cfg }
    }
}

/// The failover service.
#[derive(Clone)]
pub struct Failover<S> {
    inner: S,
    pool: Arc<dyn KeyPool>,
    cfg: GatewayConfig,
}

impl<S> std::fmt::Debug for Failover<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Failover")
    }
}

impl<S> Service<Request<Bytes>> for Failover<S>
where
    S: Service<AttemptRequest, Response = GatewayResponse, Error = AttemptError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = GatewayFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let inner = self.inner.clone();
        let pool = self.pool.clone();
        let cfg = self.cfg;
        Box::pin(run(inner, pool, cfg, req))
    }
}

async fn run<S>(
    mut inner: S,
    pool: Arc<dyn KeyPool>,
    cfg: GatewayConfig,
    req: Request<Bytes>,
) -> Result<GatewayResponse, GatewayError>
where
    S: Service<AttemptRequest, Response = GatewayResponse, Error = AttemptError>,
{
    let started = Instant::now();
    let deadline = started + cfg.request_timeout;
    let (parts, body) = req.into_parts();
    let x = &parts.extensions;
    let (Some(plan), Some(endpoint), Some(meta)) = (x.get::<RoutePlan>(), x.get::<Endpoint>(), x.get::<RequestMeta>())
    else {
        return Err(GatewayError::Internal("failover before route".into()));
    };
    let log = x.get::<AttemptLog>().cloned().unwrap_or_default();
    let rid = x.get::<RequestId>().map_or("-", |r| &*r.0).to_string();
    let meta = Arc::new(meta.clone());
    let mut forward = HeaderMap::new();
    for name in FORWARDED_HEADERS {
        // Every value: Claude Code sends `anthropic-beta` more than once.
        for v in parts.headers.get_all(name) {
            forward.append(name, v.clone());
        }
    }

    let mut tried: Vec<UpstreamKeyId> = Vec::new();
    let mut last: Option<(Outcome, Option<StatusCode>)> = None;
    let mut cooling: Option<Duration> = None;
    'levels: for &level in &plan.levels {
        loop {
            if tried.len() as u32 >= cfg.max_attempts {
                break 'levels;
            }
            let lease = match pool.pick(level, &plan.upstream_model, &tried) {
                Ok(l) => l,
                Err(ex) => {
                    if let Some(ra) = ex.retry_after {
                        cooling = Some(cooling.map_or(ra, |c| c.min(ra)));
                    }
                    continue 'levels;
                }
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(GatewayError::Timeout(cfg.request_timeout));
            }
            tried.push(lease.key.id);
            let provider = lease.provider.name.clone();
            let key_id = lease.key.id;
            let a = AttemptRequest {
                endpoint: endpoint.clone(),
                meta: meta.clone(),
                body: body.clone(),
                upstream_model: plan.upstream_model.clone(),
                lease,
                forward: forward.clone(),
                timeout: cfg.attempt_timeout.min(deadline - now),
            };
            let res = inner.call(a).await;
            let latency_ms = now.elapsed().as_millis() as u64;
            let (outcome, status) = match &res {
                Ok(r) => (Outcome::Ok, Some(r.status())),
                Err(AttemptError::Retryable { outcome, status }) => (*outcome, *status),
                Err(AttemptError::Fatal(_)) => (Outcome::Ok, None),
            };
            log.0.lock().push(AttemptRecord {
                provider: provider.clone(),
                upstream_key: key_id,
                level,
                outcome: outcome.as_str(),
                status: status.map(|s| s.as_u16()),
                latency_ms,
            });
            match res {
                Ok(r) => {
                    if tried.len() > 1 {
                        tracing::info!(request_id = %rid, %provider, upstream_key = %key_id, %level, attempts = tried.len(), "served after failover");
                    }
                    return Ok(r);
                }
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Retryable { outcome, status }) => {
                    tracing::info!(
                        request_id = %rid, %provider, upstream_key = %key_id, %level,
                        outcome = outcome.as_str(), status = status.map(|s| s.as_u16()), latency_ms,
                        "upstream attempt failed; trying the next key"
                    );
                    last = Some((outcome, status));
                }
            }
        }
    }
    let model = &plan.upstream_model;
    Err(match last {
        Some((outcome, status)) => GatewayError::UpstreamUnavailable {
            message: format!(
                "no upstream could serve model {model:?}: {} attempt(s) failed, the last with {}{}",
                tried.len(),
                outcome.as_str(),
                status.map(|s| format!(" (HTTP {})", s.as_u16())).unwrap_or_default()
            ),
            last_status: match outcome {
                Outcome::RateLimited { .. } | Outcome::QuotaExhausted => Some(StatusCode::TOO_MANY_REQUESTS),
                _ => status,
            },
            retry_after: cooling.or(match outcome {
                Outcome::RateLimited { retry_after_ms } => Some(Duration::from_millis(retry_after_ms)),
                _ => None,
            }),
        },
        None if cooling.is_some() => GatewayError::UpstreamUnavailable {
            message: format!("every upstream key for model {model:?} is rate-limited or cooling down"),
            last_status: Some(StatusCode::TOO_MANY_REQUESTS),
            retry_after: cooling,
        },
        None => GatewayError::UpstreamUnavailable {
            message: format!("no healthy upstream key for model {model:?}"),
            last_status: None,
            retry_after: None,
        },
    })
}
