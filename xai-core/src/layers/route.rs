//! Layer 6, route: walks the model name from the caller to the root (allowlists and mappers, cached by exact
//! name per principal), picks the level and builds the [`RoutePlan`]. Also answers model lists, which are the
//! same decision taken for every known model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use http::{HeaderValue, Request, Response, header};
use tower::{Layer, Service};

use super::GatewayResponse;
use crate::body;
use crate::error::GatewayError;
use crate::policy::{ModelResolution, Principal};
use crate::protocol::{Endpoint, EndpointKind};
use crate::routing::{PlanError, RoutePlan, RouteTable};
use crate::traits::{Adapters, ModelInfo, PolicyStore, RequestMeta};

/// Inserts [`RoutePlan`].
#[derive(Clone)]
pub struct RouteLayer {
    store: Arc<dyn PolicyStore>,
    adapters: Adapters,
}

impl std::fmt::Debug for RouteLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteLayer")
    }
}

impl RouteLayer {
    /// Over the store's route table.
    pub fn new(store: Arc<dyn PolicyStore>, adapters: Adapters) -> Self {
        Self { store, adapters }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;
    fn layer(&self, inner: S) -> Route<S> {
        Route { inner, store: self.store.clone(), adapters: self.adapters.clone() }
    }
}

/// The route service.
#[derive(Clone)]
pub struct Route<S> {
    inner: S,
    store: Arc<dyn PolicyStore>,
    adapters: Adapters,
}

impl<S> std::fmt::Debug for Route<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Route")
    }
}

/// The route step: resolution along the path, then the plan over the table.
pub fn plan(p: &Principal, table: &RouteTable, model: &str) -> Result<(Arc<ModelResolution>, RoutePlan), GatewayError> {
    let r = p.resolve_model(model)?;
    let plan = table.plan(&r).map_err(|e| match e {
        PlanError::NotServed => GatewayError::ModelNotFound(r.upstream_model.to_string()),
        PlanError::LevelRefused(l) => p.level_refusal(l).into(),
    })?;
    Ok((r, plan))
}

/// The models `p` may use: exact names providers declare and priced models, each kept when the route step
/// would accept it.
pub fn visible_models(p: &Principal, store: &dyn PolicyStore) -> Vec<ModelInfo> {
    let table = store.route_table();
    let mut names: BTreeMap<Arc<str>, ()> = BTreeMap::new();
    for pr in table.providers() {
        for m in pr.models.iter().filter(|m| m.is_exact()) {
            names.insert(m.as_str().into(), ());
        }
    }
    for m in store.priced_models() {
        names.insert(m, ());
    }
    names
        .into_keys()
        .filter_map(|name| {
            let (_, plan) = plan(p, &table, &name).ok()?;
            let owner = table
                .providers_at(plan.levels[0])
                .find(|pr| pr.serves(&plan.upstream_model))
                .map_or_else(|| Arc::from("xai"), |pr| pr.name.clone());
            Some(ModelInfo { id: name, owned_by: owner })
        })
        .collect()
}

impl<S> Service<Request<bytes::Bytes>> for Route<S>
where
    S: Service<Request<bytes::Bytes>, Response = GatewayResponse, Error = GatewayError>,
{
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = Either<Ready<Result<GatewayResponse, GatewayError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<bytes::Bytes>) -> Self::Future {
        let x = req.extensions();
        let (Some(p), Some(e)) = (x.get::<Arc<Principal>>(), x.get::<Endpoint>()) else {
            return Either::Left(ready(Err(GatewayError::Internal("route before auth".into()))));
        };
        if e.kind == EndpointKind::Models {
            let models = visible_models(p, &*self.store);
            let out = match self.adapters.get(e.protocol) {
                Some(a) => {
                    let mut r = Response::new(body::full(a.models_body(&models)));
                    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    Ok(r)
                }
                None => Err(GatewayError::NotImplemented(format!("{} model lists", e.protocol))),
            };
            return Either::Left(ready(out));
        }
        let Some(meta) = x.get::<RequestMeta>() else {
            return Either::Left(ready(Err(GatewayError::Internal("route before decode".into()))));
        };
        match plan(p, &self.store.route_table(), &meta.model) {
            Ok((resolution, plan)) => {
                req.extensions_mut().insert(resolution);
                req.extensions_mut().insert(plan);
                Either::Right(self.inner.call(req))
            }
            Err(e) => Either::Left(ready(Err(e))),
        }
    }
}
