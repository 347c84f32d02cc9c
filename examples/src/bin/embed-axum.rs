//! An existing axum service that embeds xai: its own routes stay as they are, and every AI route goes through
//! the xai-core stack (auth, ACL, model mapping, limits, failover, metering) with the in-memory stores.
//!
//! The upstream here is an in-process [`UpstreamClient`] (a toy model) so the example runs anywhere; a real
//! service passes a hyper client, as `xai-server` does.
//!
//! ```text
//! cargo run -p xai-examples --bin embed-axum               # serves on 127.0.0.1:3000
//! cargo run -p xai-examples --bin embed-axum -- --self-test  # starts, calls itself, checks, exits
//! ```
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use xai_core::memory::{Catalog, InMemoryKeyPool, InMemoryMeter, InMemoryPolicyStore, PoolConfig};
use xai_core::policy::{Account, ModelPattern, Policy, Role, Status, VirtualKey};
use xai_core::routing::{Provider, UpstreamKey};
use xai_core::traits::BoxFuture;
use xai_core::{
    AccountId, Body, BoxError, Gateway, GatewayConfig, KeyDigest, KeyId, Level, Meter, Micros, PolicyStore, Protocol,
    ProviderId, Secret, UpstreamClient, UpstreamKeyId, body,
};

/// A toy model answering OpenAI chat requests in-process: it echoes the model it was asked for.
#[derive(Debug)]
struct ToyModel;

impl UpstreamClient for ToyModel {
    fn send(&self, req: http::Request<Bytes>) -> BoxFuture<'static, Result<http::Response<Body>, BoxError>> {
        Box::pin(async move {
            let v: serde_json::Value = serde_json::from_slice(req.body())?;
            let reply = serde_json::json!({
                "id": "chatcmpl-toy", "object": "chat.completion", "created": 0, "model": v["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("toy answer from {}", v["model"])}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
            });
            Ok(http::Response::builder()
                .header("content-type", "application/json")
                .body(body::full(serde_json::to_vec(&reply)?))?)
        })
    }
}

/// The company's policy: one team whose key may use `gpt-4o*`, with `gpt-4o` mapped to the cheaper mini model.
fn catalog() -> Catalog {
    let pattern = |s: &str| ModelPattern::new(s).expect("valid glob");
    let team = Account {
        id: AccountId(1),
        parent: None,
        name: "team".into(),
        path: "team".into(),
        status: Status::Active,
        role: Role::Member,
        policy: Policy {
            allow_models: Some(vec![pattern("gpt-4o*")]),
            model_mapper: vec![(pattern("gpt-4o"), "gpt-4o-mini".into())],
            rpm: Some(100),
            ..Policy::default()
        },
        balance: Micros::ZERO,
    };
    let key = VirtualKey {
        id: KeyId(1),
        account: team.id,
        prefix: "team-…".into(),
        digest: KeyDigest::of("team-secret-key"),
        status: Status::Active,
        expires_at: None,
        policy: None,
    };
    let provider = Provider {
        id: ProviderId(1),
        name: "toy".into(),
        protocol: Protocol::OpenAiChat,
        base_url: "http://toy.invalid/v1".into(),
        models: vec![pattern("gpt-*")],
        level: Level(1),
        keys: vec![UpstreamKey { id: UpstreamKeyId(1), secret: Secret::new("toy-upstream-key".into()), weight: 1 }],
    };
    Catalog {
        accounts: vec![team],
        keys: vec![key],
        providers: vec![Arc::new(provider)],
        switch_over: HashMap::new(),
        prices: HashMap::new(),
    }
}

fn app(meter: Arc<InMemoryMeter>) -> Router {
    let store = Arc::new(InMemoryPolicyStore::new(catalog()).expect("consistent catalog"));
    let pool = Arc::new(InMemoryKeyPool::new(&store.route_table(), PoolConfig::default()));
    let gateway = Gateway {
        store,
        pool,
        meter,
        adapters: xai_bridges::adapters(),
        upstream: Arc::new(ToyModel),
        config: GatewayConfig::default(),
    };
    Router::new()
        // The service's own routes: untouched by xai.
        .route("/hello", get(|| async { "hello from the existing service" }))
        // Everything else (the AI endpoints) goes through the xai stack.
        .fallback_service(gateway.service::<axum::body::Body>())
}

async fn call(base: &str, path: &str, key: Option<&str>, body: &str) -> Result<(u16, String), BoxError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut b = http::Request::builder().uri(format!("{base}{path}"));
    if !body.is_empty() {
        b = b.method("POST").header("content-type", "application/json");
    }
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    let resp = client.request(b.body(Full::new(Bytes::from(body.to_string())))?).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

async fn self_test() -> Result<(), BoxError> {
    let meter = Arc::new(InMemoryMeter::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(axum::serve(listener, app(meter.clone())).into_future());

    let chat = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let (s, b) = call(&base, "/hello", None, "").await?;
    check(s == 200 && b.contains("existing service"), "own route is untouched", &b)?;
    let (s, b) = call(&base, "/v1/chat/completions", Some("team-secret-key"), chat).await?;
    check(s == 200 && b.contains("toy answer from \\\"gpt-4o-mini\\\""), "mapped gpt-4o → gpt-4o-mini", &b)?;
    let (s, b) = call(&base, "/v1/chat/completions", Some("wrong"), chat).await?;
    check(s == 401 && b.contains("invalid_api_key"), "unknown key refused in OpenAI's shape", &b)?;
    let (s, b) =
        call(&base, "/v1/chat/completions", Some("team-secret-key"), r#"{"model":"o3","messages":[]}"#).await?;
    check(s == 403 && b.contains("model_not_allowed"), "model outside the allowlist refused", &b)?;
    let records = meter.recent(10);
    check(
        records.len() == 1 && records[0].usage.prompt_tokens == 7 && records[0].usage.completion_tokens == 3,
        "one usage record with the upstream's counts",
        &format!("{} records", records.len()),
    )?;
    server.abort();
    println!("embed-axum self-test: 5 passed, 0 failed");
    Ok(())
}

fn check(ok: bool, what: &str, got: &str) -> Result<(), BoxError> {
    if ok {
        println!("ok: {what}");
        Ok(())
    } else {
        Err(format!("FAILED: {what}; got: {got}").into())
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    if std::env::args().any(|a| a == "--self-test") {
        return self_test().await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("embed-axum on http://127.0.0.1:3000 (try /hello, or POST /v1/chat/completions with key team-secret-key)");
    axum::serve(listener, app(Arc::new(InMemoryMeter::default()))).await?;
    Ok(())
}
