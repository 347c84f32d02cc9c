//! Layer 4, decode: reads the body under the size limit and extracts only what routing needs
//! ([`RequestMeta`]). The full IR is built later, and only when the upstream speaks another protocol.

use std::mem;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body::Body as HttpBody;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::{Layer, Service};

use super::{GatewayFuture, GatewayResponse};
use crate::error::{BoxError, GatewayError};
use crate::protocol::{Endpoint, EndpointKind};
use crate::traits::{Adapters, RequestMeta};

/// Buffers the body (`Request<B>` → `Request<Bytes>`) and inserts [`RequestMeta`].
#[derive(Clone, Debug)]
pub struct DecodeLayer {
    adapters: Adapters,
    max_body_bytes: u64,
}

impl DecodeLayer {
    /// With the protocol adapters and the body limit.
    pub fn new(adapters: Adapters, max_body_bytes: u64) -> Self {
        Self { adapters, max_body_bytes }
    }
}

impl<S> Layer<S> for DecodeLayer {
    type Service = Decode<S>;
    fn layer(&self, inner: S) -> Decode<S> {
        Decode { inner, adapters: self.adapters.clone(), limit: self.max_body_bytes }
    }
}

/// The decode service.
#[derive(Clone, Debug)]
pub struct Decode<S> {
    inner: S,
    adapters: Adapters,
    limit: u64,
}

impl<S, B> Service<Request<B>> for Decode<S>
where
    S: Service<Request<Bytes>, Response = GatewayResponse, Error = GatewayError> + Clone + Send + 'static,
    S::Future: Send,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = GatewayFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let adapters = self.adapters.clone();
        let limit = self.limit;
        Box::pin(async move {
            let endpoint = req
                .extensions()
                .get::<Endpoint>()
                .cloned()
                .ok_or_else(|| GatewayError::Internal("decode before classify".into()))?;
            let (parts, body) = req.into_parts();
            if endpoint.kind == EndpointKind::Models {
                return inner.call(Request::from_parts(parts, Bytes::new())).await;
            }
            let declared = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit) {
                return Err(GatewayError::PayloadTooLarge { limit });
            }
            let bytes = Limited::new(body, limit as usize).collect().await.map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    GatewayError::PayloadTooLarge { limit }
                } else {
                    GatewayError::BadRequest("could not read the request body".into())
                }
            })?;
            let bytes = bytes.to_bytes();
            let adapter = adapters.get(endpoint.protocol).ok_or_else(|| {
                GatewayError::NotImplemented(format!("{} clients are not served by this gateway", endpoint.protocol))
            })?;
            let meta: RequestMeta = adapter.inspect(&endpoint, &bytes)?;
            let mut req = Request::from_parts(parts, bytes);
            req.extensions_mut().insert(meta);
            inner.call(req).await
        })
    }
}
