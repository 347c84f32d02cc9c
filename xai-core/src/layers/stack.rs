//! The whole stack, assembled in DESIGN §2 order.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body::Body as HttpBody;
use tower::{Service, ServiceBuilder};

use super::acl::AclLayer;
use super::admit::AdmitLayer;
use super::attempt::Attempt;
use super::auth::AuthLayer;
use super::classify::ClassifyLayer;
use super::decode::DecodeLayer;
use super::failover::FailoverLayer;
use super::meter::MeterLayer;
use super::respond::RespondLayer;
use super::route::RouteLayer;
use super::{GatewayConfig, GatewayResponse};
use crate::error::BoxError;
use crate::traits::{Adapters, KeyPool, Meter, PolicyStore, UpstreamClient};

/// The parts of a gateway: the four extension points, the upstream transport and the tunables.
#[derive(Clone)]
pub struct Gateway {
    /// Accounts, keys, providers, prices.
    pub store: Arc<dyn PolicyStore>,
    /// Upstream keys.
    pub pool: Arc<dyn KeyPool>,
    /// Limits and usage.
    pub meter: Arc<dyn Meter>,
    /// Protocol adapters.
    pub adapters: Adapters,
    /// Transport to the providers.
    pub upstream: Arc<dyn UpstreamClient>,
    /// Tunables.
    pub config: GatewayConfig,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("adapters", &self.adapters)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The assembled stack: an infallible service from client requests to responses.
pub trait GatewayService<B>:
    Service<Request<B>, Response = GatewayResponse, Error = Infallible, Future: Send + 'static> + Clone + Send + 'static
{
}

impl<T, B> GatewayService<B> for T where
    T: Service<Request<B>, Response = GatewayResponse, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

impl Gateway {
    /// Builds the stack: classify → respond → auth → decode → acl → route → admit → meter → failover → attempt.
    pub fn service<B>(&self) -> impl GatewayService<B>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let c = &self.config;
        ServiceBuilder::new()
            .layer(ClassifyLayer)
            .layer(RespondLayer::new(self.adapters.clone()))
            .layer(AuthLayer::new(self.store.clone()))
            .layer(DecodeLayer::new(self.adapters.clone(), c.max_body_bytes))
            .layer(AclLayer)
            .layer(RouteLayer::new(self.store.clone(), self.adapters.clone()))
            .layer(AdmitLayer::new(self.meter.clone(), self.store.clone(), c))
            .layer(MeterLayer::new(self.meter.clone(), self.store.clone()))
            .layer(FailoverLayer::new(self.pool.clone(), *c))
            .service(Attempt::new(self.pool.clone(), self.adapters.clone(), self.upstream.clone(), *c))
    }
}
