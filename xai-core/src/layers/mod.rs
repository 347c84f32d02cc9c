//! The Tower layers of the request path, outermost first (DESIGN §2). See the crate docs for the order and the
//! request-extension table.

pub mod acl;
pub mod admit;
pub mod attempt;
pub mod auth;
pub mod classify;
pub mod decode;
pub mod failover;
pub mod meter;
pub mod respond;
pub mod route;
mod stack;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

pub use stack::{Gateway, GatewayService};

use crate::body::Body;
use crate::error::GatewayError;
use crate::protocol::Protocol;
use crate::traits::BoxFuture;
use crate::usage::{AttemptRecord, Usage};

/// The response type of every inner layer.
pub type GatewayResponse = http::Response<Body>;
/// The future type of the inner layers that do I/O.
pub type GatewayFuture = BoxFuture<'static, Result<GatewayResponse, GatewayError>>;

/// The client's socket address; inserted by the server before the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// When the request arrived; inserted by classify.
#[derive(Clone, Copy, Debug)]
pub struct ReceivedAt {
    /// Monotonic.
    pub instant: Instant,
    /// Wall clock.
    pub time: SystemTime,
}

/// A path the gateway does not serve, with the protocol to answer in; inserted by classify instead of an
/// [`crate::protocol::Endpoint`].
#[derive(Clone, Copy, Debug)]
pub struct UnknownEndpoint(pub Protocol);

/// Every upstream attempt of the request; created by meter, appended by failover.
#[derive(Clone, Debug, Default)]
pub struct AttemptLog(pub Arc<Mutex<Vec<AttemptRecord>>>);

/// What the attempt's body learns while streaming; inserted into the response by attempt, read by meter.
#[derive(Clone, Debug, Default)]
pub struct UsageProbe(pub Arc<Mutex<ProbeState>>);

/// The state behind a [`UsageProbe`].
#[derive(Clone, Debug, Default)]
pub struct ProbeState {
    /// Counts so far.
    pub usage: Usage,
    /// Whether `usage` came from the upstream (else it is an estimate).
    pub reported: bool,
    /// The upstream failed (error event, truncated stream, non-2xx passed through).
    pub failed: bool,
}

/// Tunables of the request path.
#[derive(Clone, Copy, Debug)]
pub struct GatewayConfig {
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// Per attempt, until response headers.
    pub attempt_timeout: Duration,
    /// Overall deadline across attempts (until response headers).
    pub request_timeout: Duration,
    /// Most attempts per request, across levels.
    pub max_attempts: u32,
    /// Cooldown after a 429 without `retry-after`.
    pub default_retry_after: Duration,
    /// Output tokens assumed for admission when the request sets no cap.
    pub default_max_tokens: u64,
    /// Largest upstream non-streaming body accepted.
    pub max_response_bytes: u64,
    /// What happens to a request for a model without a price.
    pub unpriced: Unpriced,
}

/// What the gateway does with a request for a model that has no price (config `[billing] unpriced`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unpriced {
    /// Serve it at zero cost; counted in `xai_unpriced_requests_total` and logged once per model.
    #[default]
    Free,
    /// Refuse it (403 `model_not_priced`, in the client's protocol).
    Refuse,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 << 20,
            attempt_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(600),
            max_attempts: 6,
            default_retry_after: Duration::from_secs(5),
            default_max_tokens: 4096,
            max_response_bytes: 64 << 20,
            unpriced: Unpriced::Free,
        }
    }
}
