//! Layer 1, classify: the endpoint and inbound protocol from method and path, the request id, the arrival time.
//! Synchronous: no allocation beyond the extensions, no boxing.

use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use http::Request;
use tower::{Layer, Service};

use super::{ReceivedAt, UnknownEndpoint};
use crate::ids::RequestId;
use crate::protocol::Endpoint;

/// Inserts [`Endpoint`] (or [`UnknownEndpoint`]), [`RequestId`] and [`ReceivedAt`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ClassifyLayer;

impl<S> Layer<S> for ClassifyLayer {
    type Service = Classify<S>;
    fn layer(&self, inner: S) -> Classify<S> {
        Classify { inner }
    }
}

/// The classify service.
#[derive(Clone, Debug)]
pub struct Classify<S> {
    inner: S,
}

fn request_id(h: &http::HeaderMap) -> RequestId {
    // Keep a caller's id when it is short and printable, so traces join up; otherwise make one.
    match h.get("x-request-id").and_then(|v| v.to_str().ok()) {
        Some(s) if !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()) => RequestId(s.into()),
        _ => RequestId::generate(),
    }
}

impl<S, B> Service<Request<B>> for Classify<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = request_id(req.headers());
        let ext = match Endpoint::from_uri(req.method(), req.uri(), req.headers()) {
            Some(e) => Ok(e),
            None => Err(UnknownEndpoint(Endpoint::guess_protocol(req.uri().path(), req.headers()))),
        };
        let x = req.extensions_mut();
        x.insert(id);
        x.insert(ReceivedAt { instant: Instant::now(), time: SystemTime::now() });
        match ext {
            Ok(e) => {
                x.insert(e);
            }
            Err(u) => {
                x.insert(u);
            }
        }
        self.inner.call(req)
    }
}
