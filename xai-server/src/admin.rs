//! The admin API. Built so far: usage records and upstream key health. The rest of the contract paths (accounts,
//! keys, credits, products, explain) belong to the control-plane work and answer 501 until then.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use xai_core::memory::InMemoryKeyPool;
use xai_core::{Body, Meter, body};

/// What the admin API needs.
#[derive(Clone)]
pub struct Admin {
    /// SHA-256 of the root admin token.
    pub token_digest: [u8; 32],
    /// Usage source.
    pub meter: Arc<dyn Meter>,
    /// Key health source.
    pub pool: Arc<InMemoryKeyPool>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admin")
    }
}

/// A JSON response.
pub fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(body::full(Bytes::from(serde_json::to_vec(v).unwrap_or_default())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The admin error shape `{"error":{"code","message"}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({"error": {"code": code, "message": message}}))
}

impl Admin {
    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(token) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let d: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        d.ct_eq(&self.token_digest).into()
    }

    /// Handles `/admin/v1/...`.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Body> {
        if !self.authorized(req) {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "admin API needs `Authorization: Bearer <admin token>`",
            );
        }
        let path = req.uri().path();
        match (req.method(), path) {
            (&http::Method::GET, "/admin/v1/usage") => {
                let limit = query(req.uri(), "limit").and_then(|v| v.parse::<usize>().ok()).unwrap_or(100).min(10_000);
                let records = self.meter.recent(limit);
                json(StatusCode::OK, &serde_json::json!({ "records": records }))
            }
            (&http::Method::GET, "/admin/v1/upstream-keys") => {
                json(StatusCode::OK, &serde_json::json!({ "keys": self.pool.health() }))
            }
            (_, p) if KNOWN.iter().any(|k| p.starts_with(k)) => error(
                StatusCode::NOT_IMPLEMENTED,
                "not_implemented",
                "this admin endpoint is part of the control plane, which this build does not include yet",
            ),
            _ => error(StatusCode::NOT_FOUND, "not_found", &format!("no admin endpoint {} {path}", req.method())),
        }
    }
}

const KNOWN: [&str; 6] = [
    "/admin/v1/accounts",
    "/admin/v1/keys",
    "/admin/v1/anomalies",
    "/admin/v1/providers",
    "/admin/v1/explain",
    "/admin/v1/upstream-keys/",
];

fn query<'a>(uri: &'a http::Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}
