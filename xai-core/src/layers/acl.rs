//! Layer 5, acl: key and account status, key expiry, client IP and endpoint resource, checked at every policy on
//! the path (the key's, the caller's, each ancestor's). The model allowlist is checked by route's walk, because
//! mapping and allowlists interleave along the path.

use std::task::{Context, Poll};
use std::time::SystemTime;

use futures::future::{Either, Ready, ready};
use http::Request;
use tower::{Layer, Service};

use super::{ClientAddr, GatewayResponse};
use crate::error::GatewayError;
use crate::policy::{Principal, Status};
use crate::protocol::Endpoint;
use std::sync::Arc;

/// Refuses what the path does not allow.
#[derive(Clone, Copy, Debug, Default)]
pub struct AclLayer;

impl<S> Layer<S> for AclLayer {
    type Service = Acl<S>;
    fn layer(&self, inner: S) -> Acl<S> {
        Acl { inner }
    }
}

/// The acl service.
#[derive(Clone, Debug)]
pub struct Acl<S> {
    inner: S,
}

/// The access check itself (also used by explain and tests).
pub fn check(
    p: &Principal,
    endpoint: &Endpoint,
    client: Option<ClientAddr>,
    now: SystemTime,
) -> Result<(), GatewayError> {
    if p.key.status != Status::Active {
        return Err(GatewayError::Unauthorized("API key revoked"));
    }
    if p.key.expires_at.is_some_and(|t| t <= now) {
        return Err(GatewayError::Unauthorized("API key expired"));
    }
    if let Some(a) = p.chain.iter().find(|a| a.status != Status::Active) {
        return Err(GatewayError::forbidden("account_disabled", format!("account {} is disabled", a.path)));
    }
    let resource = endpoint.kind.resource();
    for (owner, policy) in p.policies() {
        if policy.allow_ips.is_some() {
            match client {
                Some(ClientAddr(addr)) if policy.allows_ip(addr.ip()) => {}
                Some(ClientAddr(addr)) => {
                    return Err(GatewayError::forbidden(
                        "ip_not_allowed",
                        format!("client address {} is not allowed for {owner}", addr.ip()),
                    ));
                }
                None => {
                    return Err(GatewayError::forbidden(
                        "ip_not_allowed",
                        format!("client address unknown; {owner} restricts addresses"),
                    ));
                }
            }
        }
        if !policy.allows_resource(resource) {
            return Err(GatewayError::forbidden(
                "resource_not_allowed",
                format!("endpoint {resource:?} is not allowed for {owner}"),
            ));
        }
    }
    Ok(())
}

impl<S, B> Service<Request<B>> for Acl<S>
where
    S: Service<Request<B>, Response = GatewayResponse, Error = GatewayError>,
{
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = Either<Ready<Result<GatewayResponse, GatewayError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let x = req.extensions();
        let verdict = match (x.get::<Arc<Principal>>(), x.get::<Endpoint>()) {
            (Some(p), Some(e)) => check(p, e, x.get::<ClientAddr>().copied(), SystemTime::now()),
            _ => Err(GatewayError::Internal("acl before auth".into())),
        };
        match verdict {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(e) => Either::Left(ready(Err(e))),
        }
    }
}
