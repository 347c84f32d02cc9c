//! Layer 7, admit: reserves an upper-bound estimate on the caller and every ancestor through the [`Meter`].

use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use tower::{Layer, Service};

use super::{GatewayConfig, GatewayFuture, GatewayResponse};
use crate::error::GatewayError;
use crate::policy::Principal;
use crate::traits::{AdmitRequest, Meter, RequestMeta};

/// Inserts the [`crate::traits::Reservation`].
#[derive(Clone)]
pub struct AdmitLayer {
    meter: Arc<dyn Meter>,
    default_max_tokens: u64,
}

impl std::fmt::Debug for AdmitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdmitLayer")
    }
}

impl AdmitLayer {
    /// Over a meter.
    pub fn new(meter: Arc<dyn Meter>, cfg: &GatewayConfig) -> Self {
        Self { meter, default_max_tokens: cfg.default_max_tokens }
    }
}

impl<S> Layer<S> for AdmitLayer {
    type Service = Admit<S>;
    fn layer(&self, inner: S) -> Admit<S> {
        Admit { inner, meter: self.meter.clone(), default_max_tokens: self.default_max_tokens }
    }
}

/// The admit service.
#[derive(Clone)]
pub struct Admit<S> {
    inner: S,
    meter: Arc<dyn Meter>,
    default_max_tokens: u64,
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
        let dmt = self.default_max_tokens;
        Box::pin(async move {
            let x = req.extensions();
            let (Some(p), Some(meta)) = (x.get::<Arc<Principal>>().cloned(), x.get::<RequestMeta>()) else {
                return Err(GatewayError::Internal("admit before route".into()));
            };
            let model = meta.model.clone();
            let resolution = x.get::<Arc<crate::policy::ModelResolution>>().cloned();
            let ask = AdmitRequest {
                principal: &p,
                model: &model,
                estimate_tokens: estimate_tokens(meta, dmt),
                resolution: resolution.as_deref(),
            };
            let reservation = meter.admit(&ask).get().await?;
            req.extensions_mut().insert(reservation);
            inner.call(req).await
        })
    }
}
