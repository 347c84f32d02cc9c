//! The HTTP server: accept loop, dispatch of operational and admin paths, the gateway stack for everything
//! else, and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;
use xai_core::layers::ClientAddr;
use xai_core::{Body, GatewayService, Meter, PolicyStore, body};

use crate::admin::Admin;

/// Everything a connection needs.
pub struct App<S> {
    /// The gateway stack.
    pub gateway: S,
    /// Admin API.
    pub admin: Admin,
    /// For readiness.
    pub store: Arc<dyn PolicyStore>,
    /// The database, when state is durable (readiness pings it).
    pub sql: Option<Arc<xai_store::sql::SqlStore>>,
    /// For the final flush.
    pub meter: Arc<dyn Meter>,
    /// `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

fn text(status: StatusCode, s: &'static str) -> Response<Body> {
    let mut r = Response::new(body::full(Bytes::from_static(s.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

async fn dispatch<S>(
    app: Arc<App<S>>,
    remote: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible>
where
    S: GatewayService<Incoming>,
{
    let path = req.uri().path();
    if path == "/healthz" {
        return Ok(text(StatusCode::OK, "ok"));
    }
    if path == "/readyz" {
        let db_ok = match &app.sql {
            Some(sql) => tokio::time::timeout(Duration::from_secs(2), sql.ping()).await.unwrap_or(false),
            None => true,
        };
        return Ok(if db_ok && app.store.ready().await {
            text(StatusCode::OK, "ready")
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, "store unreachable")
        });
    }
    if path == "/metrics" && req.method() == http::Method::GET {
        let mut r = Response::new(body::full(Bytes::from(app.metrics.render())));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
        return Ok(r);
    }
    if path.starts_with("/admin/") {
        return Ok(app.admin.handle(req).await);
    }
    req.extensions_mut().insert(ClientAddr(remote));
    let resp = app.gateway.clone().oneshot(req).await;
    if let Ok(r) = &resp {
        app.metrics.response(r.status());
    }
    resp
}

/// Serves until `shutdown` resolves, then drains in-flight requests for at most `grace` and flushes usage.
pub async fn serve<S>(
    listener: TcpListener,
    app: App<S>,
    grace: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) where
    S: GatewayService<Incoming> + Sync,
{
    let app = Arc::new(app);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let svc = hyper::service::service_fn(move |req| dispatch(app.clone(), remote, req));
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                let watched = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = watched.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
    app.meter.flush().await;
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
