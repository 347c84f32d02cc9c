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
                // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d: compare the canonical form.
                Some(ClientAddr(addr)) if policy.allows_ip(addr.ip().to_canonical()) => {}
                Some(ClientAddr(addr)) => {
                    return Err(GatewayError::forbidden(
                        "ip_not_allowed",
                        format!("client address {} is not allowed for {owner}", addr.ip().to_canonical()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AccountId, KeyId};
    use crate::money::Micros;
    use crate::policy::{Account, Policy, Role, VirtualKey};
    use crate::protocol::{EndpointKind, Protocol};
    use crate::secret::KeyDigest;

    fn principal(policy: Policy) -> Principal {
        let a = Arc::new(Account {
            id: AccountId(1),
            parent: None,
            name: "a".into(),
            path: "a".into(),
            status: Status::Active,
            role: Role::Member,
            policy,
            balance: Micros::ZERO,
        });
        let k = VirtualKey {
            id: KeyId(1),
            account: a.id,
            prefix: "xai-k".into(),
            digest: KeyDigest::of("k"),
            status: Status::Active,
            expires_at: None,
            policy: None,
        };
        Principal::new(Arc::new(k), vec![a])
    }

    #[test]
    fn ip_allowlists_see_through_ipv4_mapped_addresses() {
        let p = principal(Policy { allow_ips: Some(vec!["10.0.0.0/8".parse().unwrap()]), ..Policy::default() });
        let e = Endpoint {
            kind: EndpointKind::ChatCompletions,
            protocol: Protocol::OpenAiChat,
            path_model: None,
            sse: false,
        };
        let at = |s: &str| Some(ClientAddr(s.parse().unwrap()));
        assert!(check(&p, &e, at("10.1.2.3:5000"), SystemTime::now()).is_ok());
        assert!(check(&p, &e, at("[::ffff:10.1.2.3]:5000"), SystemTime::now()).is_ok());
        let refused = check(&p, &e, at("[::ffff:192.168.1.1]:5000"), SystemTime::now()).unwrap_err();
        assert!(refused.to_string().contains("192.168.1.1 is not allowed for account a"), "{refused}");
        assert_eq!(check(&p, &e, None, SystemTime::now()).unwrap_err().status(), 403);
    }
}
