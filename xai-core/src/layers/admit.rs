//! Layer 7, admit: reserves an upper-bound estimate on the caller and every ancestor through the [`Meter`].

use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use tower::{Layer, Service};

use super::{GatewayConfig, GatewayFuture, GatewayResponse, Unpriced};
use crate::error::GatewayError;
use crate::money::Micros;
use crate::policy::Principal;
use crate::traits::{AdmitRequest, Meter, PolicyStore, RequestMeta};
use crate::usage::Price;

/// Inserts the [`crate::traits::Reservation`].
#[derive(Clone)]
pub struct AdmitLayer {
    meter: Arc<dyn Meter>,
    store: Arc<dyn PolicyStore>,
    default_max_tokens: u64,
    unpriced: Unpriced,
}

impl std::fmt::Debug for AdmitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdmitLayer")
    }
}

impl AdmitLayer {
    /// Over a meter, with prices from `store`.
    pub fn new(meter: Arc<dyn Meter>, store: Arc<dyn PolicyStore>, cfg: &GatewayConfig) -> Self {
        Self { meter, store, default_max_tokens: cfg.default_max_tokens, unpriced: cfg.unpriced }
    }
}

impl<S> Layer<S> for AdmitLayer {
    type Service = Admit<S>;
    fn layer(&self, inner: S) -> Admit<S> {
        Admit {
            inner,
            meter: self.meter.clone(),
            store: self.store.clone(),
            default_max_tokens: self.default_max_tokens,
            unpriced: self.unpriced,
        }
    }
}

/// The admit service.
#[derive(Clone)]
pub struct Admit<S> {
    inner: S,
    meter: Arc<dyn Meter>,
    store: Arc<dyn PolicyStore>,
    default_max_tokens: u64,
    unpriced: Unpriced,
}

impl<S> std::fmt::Debug for Admit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admit")
    }
}

/// Upper bound of the tokens a request may use: its input (≈ 1 token per 4 bytes, over-counting JSON syntax on
/// purpose) plus its output cap.
pub fn estimate_tokens(meta: &RequestMeta, default_max_tokens: u64) -> u64 {
    (meta.body_len as u64).div_ceil(4) + meta.max_tokens.unwrap_or(default_max_tokens)
}

/// Upper bound of a request's cost: its input estimate at the dearest input rate (plain, cached or cache write)
/// and its output cap at the dearest output rate (plain or reasoning). Images and search calls are not
/// estimated (they are billed at settlement).
pub fn estimate_cost(price: &Price, meta: &RequestMeta, default_max_tokens: u64) -> Micros {
    let input = (meta.body_len as u64).div_ceil(4) as i128;
    let output = meta.max_tokens.unwrap_or(default_max_tokens) as i128;
    let in_rate = [Some(price.input), price.cached_input, price.cache_write].into_iter().flatten().map(|m| m.0).max();
    let out_rate = [Some(price.output), price.reasoning].into_iter().flatten().map(|m| m.0).max();
    let per_m = input * in_rate.unwrap_or(0) as i128 + output * out_rate.unwrap_or(0) as i128;
    let micros = (per_m + 999_999) / 1_000_000;
    Micros(micros.clamp(0, i64::MAX as i128) as i64)
}

/// The price a request is billed at: the upstream model's, else the requested model's (what settlement uses).
pub fn price_of(store: &dyn PolicyStore, upstream: Option<&str>, requested: &str) -> Option<Price> {
    upstream.and_then(|m| store.price(m)).or_else(|| store.price(requested))
}

impl<S> Service<Request<Bytes>> for Admit<S>
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
        let meter = self.meter.clone();
        let store = self.store.clone();
        let dmt = self.default_max_tokens;
        let unpriced = self.unpriced;
        Box::pin(async move {
            let x = req.extensions();
            let (Some(p), Some(meta)) = (x.get::<Arc<Principal>>().cloned(), x.get::<RequestMeta>()) else {
                return Err(GatewayError::Internal("admit before route".into()));
            };
            let model = meta.model.clone();
            let resolution = x.get::<Arc<crate::policy::ModelResolution>>().cloned();
            let upstream = resolution.as_deref().map(|r| &*r.upstream_model);
            let cost = match price_of(&*store, upstream, &model) {
                Some(price) => estimate_cost(&price, meta, dmt),
                None => match unpriced {
                    Unpriced::Refuse => {
                        return Err(GatewayError::forbidden(
                            "model_not_priced",
                            format!(
                                "model {:?} has no price and this gateway refuses unpriced models; an operator sets \
                                 one with [pricing.\"{}\"] or PUT /admin/v1/pricing/{{model}}",
                                upstream.unwrap_or(&model),
                                upstream.unwrap_or(&model)
                            ),
                        ));
                    }
                    Unpriced::Free => {
                        unpriced_served(upstream.unwrap_or(&model));
                        Micros::ZERO
                    }
                },
            };
            let ask = AdmitRequest {
                principal: &p,
                model: &model,
                estimate_tokens: estimate_tokens(meta, dmt),
                resolution: resolution.as_deref(),
                cost,
                funds: None,
            };
            let reservation = meter.admit(&ask).get().await?;
            req.extensions_mut().insert(reservation);
            inner.call(req).await
        })
    }
}

/// Requests served at zero cost because their model has no price, in all (a metric) and once per model in the log.
pub static UNPRICED_REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn unpriced_served(model: &str) {
    use std::sync::atomic::Ordering;
    UNPRICED_REQUESTS.fetch_add(1, Ordering::Relaxed);
    static SEEN: std::sync::LazyLock<parking_lot::Mutex<std::collections::HashSet<String>>> =
        std::sync::LazyLock::new(Default::default);
    let mut seen = SEEN.lock();
    if seen.len() < 1024 && seen.insert(model.to_string()) {
        tracing::warn!(
            model,
            "model has no price: its requests are billed at zero ([billing] unpriced = \"free\"); set a price or \
             unpriced = \"refuse\""
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_bounds_every_split_of_the_same_counts() {
        let price = Price {
            input: Micros(2_000_000),
            output: Micros(8_000_000),
            cached_input: Some(Micros(500_000)),
            cache_write: Some(Micros(2_500_000)),
            reasoning: Some(Micros(10_000_000)),
            ..Price::default()
        };
        let meta = RequestMeta {
            model: "m".into(),
            stream: false,
            include_usage: false,
            max_tokens: Some(1000),
            body_len: 4000,
            spans: Default::default(),
        };
        let bound = estimate_cost(&price, &meta, 4096);
        // 1000 input tokens at 2.5 (cache write) + 1000 output at 10 (reasoning), per million.
        assert_eq!(bound, Micros(12_500));
        for cached in [0, 500, 1000] {
            for reasoning in [0, 400, 1000] {
                let u = crate::usage::Usage {
                    prompt_tokens: 1000,
                    cached_tokens: cached,
                    cache_write_tokens: 1000 - cached,
                    completion_tokens: 1000,
                    reasoning_tokens: reasoning,
                    ..Default::default()
                };
                assert!(price.cost(&u) <= bound, "{u:?}");
            }
        }
        let no_cap = RequestMeta { max_tokens: None, ..meta };
        assert_eq!(estimate_cost(&price, &no_cap, 100), Micros(2_500 + 1_000));
    }
}
