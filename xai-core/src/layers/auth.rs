//! Layer 3, auth: reads the credential where the client's protocol puts it, digests it and resolves the
//! principal (cached by the store). The body is not touched before this succeeds.

use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tower::{Layer, Service};

use super::{GatewayFuture, GatewayResponse};
use crate::error::GatewayError;
use crate::protocol::{Endpoint, Protocol};
use crate::secret::KeyDigest;
use crate::traits::PolicyStore;

/// Resolves the caller into an `Arc<Principal>` request extension.
#[derive(Clone)]
pub struct AuthLayer {
    store: Arc<dyn PolicyStore>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthLayer")
    }
}

impl AuthLayer {
    /// Over a policy store.
    pub fn new(store: Arc<dyn PolicyStore>) -> Self {
        Self { store }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, store: self.store.clone() }
    }
}

/// The auth service.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    store: Arc<dyn PolicyStore>,
}

impl<S> std::fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth")
    }
}

/// The presented credential, looked up in the places each protocol uses (own protocol's place first).
pub fn credential<B>(req: &Request<B>, protocol: Protocol) -> Option<&str> {
    let h = req.headers();
    let bearer = || {
        h.get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
    };
    let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    let query = || req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("key=")));
    let found = match protocol {
        Protocol::Anthropic => header("x-api-key").or_else(bearer),
        Protocol::Gemini => header("x-goog-api-key").or_else(query).or_else(bearer),
        _ => bearer().or_else(|| header("x-api-key")),
    };
    found.filter(|k| !k.is_empty())
}

impl<S, B> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = GatewayResponse, Error = GatewayError> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = GatewayFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let protocol = req.extensions().get::<Endpoint>().map_or(Protocol::OpenAiChat, |e| e.protocol);
        let digest = credential(&req, protocol).map(KeyDigest::of);
        let store = self.store.clone();
        Box::pin(async move {
            let digest = digest.ok_or(GatewayError::Unauthorized(
                "missing API key: send it as `Authorization: Bearer <key>` (or x-api-key / x-goog-api-key)",
            ))?;
            let principal = store
                .principal(&digest)
                .get()
                .await
                .map_err(|e| GatewayError::UpstreamUnavailable {
                    message: e.to_string(),
                    last_status: None,
                    retry_after: None,
                })?
                .ok_or(GatewayError::Unauthorized("invalid API key"))?;
            req.extensions_mut().insert(principal);
            inner.call(req).await
        })
    }
}
