//! The upstream transport: a pooled hyper client, HTTPS through rustls (webpki roots, no OpenSSL), HTTP/1.1 and
//! HTTP/2 by ALPN.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use xai_core::traits::BoxFuture;
use xai_core::{Body, BoxError, UpstreamClient};

/// A hyper-based [`UpstreamClient`].
#[derive(Clone, Debug)]
pub struct HyperUpstream {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HyperUpstream {
    /// A client with a connect timeout; idle connections are kept for reuse.
    pub fn new(connect_timeout: Duration) -> Result<Self, BoxError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(https);
        Ok(Self { client })
    }
}

impl UpstreamClient for HyperUpstream {
    fn send(&self, req: http::Request<Bytes>) -> BoxFuture<'static, Result<http::Response<Body>, BoxError>> {
        let fut = self.client.request(req.map(Full::new));
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|b| b.map_err(BoxError::from).boxed_unsync()))
        })
    }
}
