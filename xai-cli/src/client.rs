//! Sends an [`ApiRequest`] to the server: the only I/O of the CLI besides printing.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::args::Secret;
use crate::request::ApiRequest;

/// How long to wait for a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a whole answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The server could not be asked: bad URL, refused connection, timeout. Never contains the token.
#[derive(Debug)]
pub struct TransportError {
    server: String,
    detail: String,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not reach the xai server at {}: {}", self.server, self.detail)
    }
}

impl std::error::Error for TransportError {}

/// A validated `--server` URL: scheme and authority, plus an optional path prefix (a gateway behind a proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    base: String,
}

impl ServerUrl {
    /// Parses `http://host:port[/prefix]` or `https://…`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_end_matches('/');
        let uri: Uri = s.parse().map_err(|_| format!("{s:?} is not a URL (e.g. http://127.0.0.1:8080)"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(format!("{s:?}: the server URL must start with http:// or https://")),
        }
        if uri.authority().is_none() {
            return Err(format!("{s:?}: the server URL needs a host"));
        }
        if uri.query().is_some() {
            return Err(format!("{s:?}: the server URL must not have a query"));
        }
        Ok(Self { base: s.to_owned() })
    }

    /// The full URL of a request path.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

/// The HTTP(S) client of one CLI run.
pub struct AdminClient {
    server: ServerUrl,
    token: Secret,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminClient").field("server", &self.server).field("token", &self.token).finish()
    }
}

impl AdminClient {
    /// A client for one server and token; TLS with the Web PKI roots (rustls, no OpenSSL).
    pub fn new(server: ServerUrl, token: Secret) -> Result<Self, TransportError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| TransportError { server: server.to_string(), detail: format!("TLS setup failed: {e}") })?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let http = Client::builder(TokioExecutor::new()).build(https);
        Ok(Self { server, token, http })
    }

    /// Sends a request; answers the status and the whole body.
    pub async fn send(&self, req: &ApiRequest) -> Result<(StatusCode, Bytes), TransportError> {
        let fail = |detail: String| TransportError { server: self.server.to_string(), detail };
        let body = match &req.body {
            Some(v) => Bytes::from(serde_json::to_vec(v).map_err(|e| fail(e.to_string()))?),
            None => Bytes::new(),
        };
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", self.token.expose()))
            // The message must not quote the token: say only what is wrong with it.
            .map_err(|_| fail("the token contains characters that cannot be sent in an HTTP header".into()))?;
        auth.set_sensitive(true);
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(self.server.join(&req.path))
            .header(header::AUTHORIZATION, auth)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, concat!("xai-cli/", env!("CARGO_PKG_VERSION")));
        if req.body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder.body(Full::new(body)).map_err(|e| fail(format!("bad request: {e}")))?;
        let exchange = async {
            let resp = self.http.request(request).await.map_err(|e| fail(root_cause(&e)))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| fail(root_cause(&e)))?.to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| fail(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())))?
    }
}

/// The innermost cause ("Connection refused (os error 111)"), which says more than "client error (Connect)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let s = ServerUrl::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(s.join("/admin/v1/accounts"), "http://127.0.0.1:8080/admin/v1/accounts");
        let s = ServerUrl::parse("https://gw.example.com/xai").unwrap();
        assert_eq!(s.join("/admin/v1/usage?limit=5"), "https://gw.example.com/xai/admin/v1/usage?limit=5");
        assert!(ServerUrl::parse("127.0.0.1:8080").is_err());
        assert!(ServerUrl::parse("ftp://x").is_err());
        assert!(ServerUrl::parse("http://x/?a=b").is_err());
    }

    /// A one-shot HTTP/1.1 server on loopback: answers `reply` to the first request and hands back what it read.
    async fn one_shot(reply: &'static str) -> (ServerUrl, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = ServerUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = sock.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                        })
                        .map_or(0, |v| v.parse::<usize>().unwrap());
                    if seen.len() >= end + 4 + len || n == 0 {
                        break;
                    }
                }
            }
            sock.write_all(reply.as_bytes()).await.unwrap();
            sock.shutdown().await.unwrap();
            String::from_utf8(seen).unwrap()
        });
        (url, task)
    }

    #[tokio::test]
    async fn sends_method_path_token_and_json() {
        let (url, seen) =
            one_shot("HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 8\r\n\r\n{\"id\":9}")
                .await;
        let client = AdminClient::new(url, Secret::new("admin-secret")).unwrap();
        let req = ApiRequest::post("/accounts", serde_json::json!({"name": "acme", "parent": null}));
        let (status, body) = client.send(&req).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::CREATED, &b"{\"id\":9}"[..]));
        let seen = seen.await.unwrap();
        assert!(seen.starts_with("POST /admin/v1/accounts HTTP/1.1\r\n"), "{seen}");
        let lower = seen.to_ascii_lowercase();
        assert!(lower.contains("authorization: bearer admin-secret\r\n"), "{seen}");
        assert!(lower.contains("content-type: application/json\r\n"), "{seen}");
        assert!(seen.ends_with("\r\n\r\n{\"name\":\"acme\",\"parent\":null}"), "{seen}");
    }

    #[tokio::test]
    async fn error_answers_come_back_as_status_and_body() {
        let body = r#"{"error":{"code":"not_found","message":"no account 99"}}"#;
        let reply: &'static str = Box::leak(
            format!("HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_boxed_str(),
        );
        let (url, _seen) = one_shot(reply).await;
        let client = AdminClient::new(url, Secret::new("t")).unwrap();
        let (status, bytes) = client.send(&ApiRequest::get("/accounts/99")).await.unwrap();
        let e = crate::request::read_answer(status, &bytes).unwrap_err();
        assert_eq!(e.to_string(), "no account 99 (HTTP 404 not_found)");
    }

    #[tokio::test]
    async fn refused_connection_names_the_server_not_the_token() {
        // Port 1 on loopback: nothing listens there, so the connection is refused at once.
        let server = ServerUrl::parse("http://127.0.0.1:1").unwrap();
        let client = AdminClient::new(server, Secret::new("tok-SECRET")).unwrap();
        let e = client.send(&ApiRequest::get("/accounts")).await.unwrap_err().to_string();
        assert!(e.starts_with("could not reach the xai server at http://127.0.0.1:1: "), "{e}");
        assert!(!e.contains("tok-SECRET"));
        assert!(!format!("{client:?}").contains("tok-SECRET"));
    }
}
