//! Layer 2, respond: the only place where a [`GatewayError`] becomes HTTP, in the client's own protocol; also
//! echoes `x-request-id` and logs the outcome of failed requests.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, header};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{GatewayResponse, UnknownEndpoint};
use crate::body::{self, Body};
use crate::error::GatewayError;
use crate::ids::RequestId;
use crate::protocol::{Endpoint, Protocol};
use crate::traits::Adapters;

/// Renders errors with the adapters of each protocol.
#[derive(Clone, Debug)]
pub struct RespondLayer {
    adapters: Adapters,
}

impl RespondLayer {
    /// A layer rendering errors with `adapters`.
    pub fn new(adapters: Adapters) -> Self {
        Self { adapters }
    }
}

impl<S> Layer<S> for RespondLayer {
    type Service = Respond<S>;
    fn layer(&self, inner: S) -> Respond<S> {
        Respond { inner, adapters: self.adapters.clone() }
    }
}

/// The respond service.
#[derive(Clone, Debug)]
pub struct Respond<S> {
    inner: S,
    adapters: Adapters,
}

/// Renders `err` as a response in `protocol`.
pub fn render(adapters: &Adapters, protocol: Protocol, err: &GatewayError) -> Response<Body> {
    let bytes = match adapters.get(protocol).or_else(|| adapters.get(Protocol::OpenAiChat)) {
        Some(a) => a.error_body(err),
        None => bytes::Bytes::from(format!("{{\"error\":{{\"message\":{:?}}}}}", err.to_string())),
    };
    let mut r = Response::new(body::full(bytes));
    *r.status_mut() = err.status();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(ra) = err.retry_after() {
        let secs = ra.as_secs() + u64::from(ra.subsec_nanos() > 0);
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        h.insert("retry-after-ms", HeaderValue::from(ra.as_millis() as u64));
    }
    // The bound that refused, as OpenAI's headers show it: nothing left until the reset.
    if let GatewayError::RateLimited { bound: Some(b), retry_after, .. } = err {
        let reset = retry_after.map_or(0, |r| r.as_secs().max(1));
        let rate = match *b {
            crate::error::RateBound::Requests(n) => {
                crate::traits::RateInfo { requests: Some((n, 0, reset)), tokens: None }
            }
            crate::error::RateBound::Tokens(n) => {
                crate::traits::RateInfo { requests: None, tokens: Some((n, 0, reset)) }
            }
        };
        super::meter::rate_headers(h, &rate);
    }
    // Clients retry what we say is retryable; OpenAI's SDKs read this header.
    h.insert("x-should-retry", HeaderValue::from_static(if err.is_retryable() { "true" } else { "false" }));
    r
}

impl<S, B> Service<Request<B>> for Respond<S>
where
    S: Service<Request<B>, Response = GatewayResponse, Error = GatewayError>,
{
    type Response = GatewayResponse;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Inner layers are always ready (they hold no capacity); an error here would be a bug upstream of us.
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let id = req.extensions().get::<RequestId>().cloned();
        let (protocol, known) = match req.extensions().get::<Endpoint>() {
            Some(e) => (e.protocol, true),
            None => (req.extensions().get::<UnknownEndpoint>().map_or(Protocol::OpenAiChat, |u| u.0), false),
        };
        let state = if known {
            State::Inner { fut: self.inner.call(req) }
        } else {
            let err = GatewayError::NotFound(format!("{} {}", req.method(), req.uri().path()));
            State::Ready { resp: Some(render(&self.adapters, protocol, &err)) }
        };
        ResponseFuture { state, adapters: self.adapters.clone(), protocol, id }
    }
}

pin_project! {
    /// Response future of [`Respond`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        adapters: Adapters,
        protocol: Protocol,
        id: Option<RequestId>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] fut: F },
        Ready { resp: Option<GatewayResponse> },
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<GatewayResponse, GatewayError>>,
{
    type Output = Result<GatewayResponse, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = match this.state.project() {
            StateProj::Inner { fut } => match fut.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(r)) => r,
                Poll::Ready(Err(e)) => {
                    let id = this.id.as_ref().map(|i| &*i.0).unwrap_or("-");
                    if e.status().is_server_error() {
                        tracing::warn!(request_id = id, kind = e.kind(), status = e.status().as_u16(), error = %e, "request failed");
                    } else {
                        tracing::debug!(request_id = id, kind = e.kind(), status = e.status().as_u16(), error = %e, "request refused");
                    }
                    render(this.adapters, *this.protocol, &e)
                }
            },
            StateProj::Ready { resp } => resp.take().expect("polled after completion"),
        };
        if let Some(id) = this.id
            && let Ok(v) = HeaderValue::from_str(&id.0)
        {
            resp.headers_mut().insert("x-request-id", v);
        }
        Poll::Ready(Ok(resp))
    }
}
