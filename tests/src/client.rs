//! A tiny HTTP/1.1 client for tests: one connection per request (no pool, so nothing is shared between requests and a
//! test can cut its own connection), every wait bounded, streams read chunk by chunk with arrival times.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How long any single step (connect, headers, one chunk) may take before the test fails.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A complete response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("response body is not JSON ({e}); status {}, body: {}", self.status, self.text())
        })
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A response whose body is still arriving.
#[derive(Debug)]
pub struct StreamingResponse {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// When the request was sent.
    pub sent_at: Instant,
    /// When the response headers arrived.
    pub headers_at: Instant,
    body: Option<Incoming>,
    conn: JoinHandle<()>,
}

impl Drop for StreamingResponse {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl StreamingResponse {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next data chunk with its arrival time; `Ok(None)` at the end of the body, `Err` when the connection broke
    /// or the body was malformed. Panics when nothing arrives within [`STEP_TIMEOUT`].
    pub async fn next_chunk(&mut self) -> Result<Option<(Instant, Bytes)>, hyper::Error> {
        let Some(body) = self.body.as_mut() else { return Ok(None) };
        loop {
            let frame = tokio::time::timeout(STEP_TIMEOUT, body.frame())
                .await
                .unwrap_or_else(|_| panic!("no body chunk within {STEP_TIMEOUT:?}"));
            match frame {
                None => {
                    self.body = None;
                    return Ok(None);
                }
                Some(Err(e)) => {
                    self.body = None;
                    return Err(e);
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if data.is_empty() {
                            continue;
                        }
                        return Ok(Some((Instant::now(), data)));
                    }
                }
            }
        }
    }

    /// Reads the rest of the body.
    pub async fn read_to_end(&mut self) -> Result<Bytes, hyper::Error> {
        let mut all = BytesMut::new();
        while let Some((_, chunk)) = self.next_chunk().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all.freeze())
    }

    /// Goes away: closes the connection without reading further, as a client that gives up would.
    pub fn disconnect(mut self) {
        self.body = None;
        self.conn.abort();
    }

    /// Reads the body as server-sent events.
    pub fn sse(self) -> SseStream {
        SseStream { resp: self, buf: String::new(), done: false }
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// When the chunk that completed the event arrived.
    pub at: Instant,
}

impl SseEvent {
    /// The data as JSON (`None` for `[DONE]` or non-JSON data).
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.data).ok()
    }

    /// Whether this is OpenAI's end marker.
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }
}

/// Server-sent events parsed as they arrive.
#[derive(Debug)]
pub struct SseStream {
    resp: StreamingResponse,
    buf: String,
    done: bool,
}

impl SseStream {
    /// The underlying response (status, headers, times).
    pub fn response(&self) -> &StreamingResponse {
        &self.resp
    }

    fn take_event(&mut self, at: Instant) -> Option<SseEvent> {
        loop {
            let normalized = self.buf.replace("\r\n", "\n");
            if normalized.len() != self.buf.len() {
                self.buf = normalized;
            }
            let end = self.buf.find("\n\n")?;
            let raw: String = self.buf.drain(..end + 2).collect();
            let mut event = None;
            let mut data: Vec<&str> = Vec::new();
            for line in raw.lines() {
                if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                }
            }
            if data.is_empty() && event.is_none() {
                continue; // a comment or keep-alive
            }
            return Some(SseEvent { event, data: data.join("\n"), at });
        }
    }

    /// The next event; `Ok(None)` at a clean end of the body, `Err` when the connection broke first.
    pub async fn next_event(&mut self) -> Result<Option<SseEvent>, hyper::Error> {
        let mut at = Instant::now();
        loop {
            if let Some(ev) = self.take_event(at) {
                return Ok(Some(ev));
            }
            if self.done {
                return Ok(None);
            }
            match self.resp.next_chunk().await? {
                Some((t, chunk)) => {
                    at = t;
                    self.buf.push_str(&String::from_utf8_lossy(&chunk));
                }
                None => self.done = true,
            }
        }
    }

    /// Every remaining event until the body ends; `Err` (with the events so far) when the connection broke.
    pub async fn collect(&mut self) -> Result<Vec<SseEvent>, (Vec<SseEvent>, hyper::Error)> {
        let mut out = Vec::new();
        loop {
            match self.next_event().await {
                Ok(Some(ev)) => out.push(ev),
                Ok(None) => return Ok(out),
                Err(e) => return Err((out, e)),
            }
        }
    }

    /// Closes the connection mid-stream.
    pub fn disconnect(self) {
        self.resp.disconnect();
    }
}

/// Sends a request and returns once the response headers arrived.
pub async fn open(method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> StreamingResponse {
    let uri: Uri = url.parse().unwrap_or_else(|e| panic!("bad url {url}: {e}"));
    let authority = uri.authority().unwrap_or_else(|| panic!("url without host: {url}")).to_string();
    let path = uri.path_and_query().map(|pq| pq.as_str().to_owned()).unwrap_or_else(|| "/".into());
    let stream = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(&authority))
        .await
        .unwrap_or_else(|_| panic!("connect to {authority} timed out"))
        .unwrap_or_else(|e| panic!("connect to {authority}: {e}"));
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap_or_else(|e| panic!("handshake with {authority}: {e}"));
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder().method(method.clone()).uri(path).header(header::HOST, &authority);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(body.into())).unwrap_or_else(|e| panic!("bad request: {e}"));
    let sent_at = Instant::now();
    let resp = tokio::time::timeout(STEP_TIMEOUT, sender.send_request(req))
        .await
        .unwrap_or_else(|_| panic!("{method} {url}: no response headers within {STEP_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let headers_at = Instant::now();
    let (parts, body) = resp.into_parts();
    StreamingResponse { status: parts.status, headers: parts.headers, sent_at, headers_at, body: Some(body), conn }
}

/// Sends a request and reads the whole response. Panics if the body breaks off.
pub async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> HttpResponse {
    let mut resp = open(method.clone(), url, headers, body).await;
    let body = resp.read_to_end().await.unwrap_or_else(|e| panic!("{method} {url}: body broke off: {e}"));
    HttpResponse { status: resp.status, headers: resp.headers.clone(), body }
}

/// The `authorization` header value of an optional bearer token.
pub fn bearer_auth(token: Option<&str>) -> Option<String> {
    token.map(|t| format!("Bearer {t}"))
}

/// Request headers: `content-type: application/json` when `json`, then `authorization: AUTH` when there is one
/// (see [`bearer_auth`]).
pub fn request_headers(auth: Option<&str>, json: bool) -> Vec<(&'static str, &str)> {
    let content_type = json.then_some(("content-type", "application/json"));
    content_type.into_iter().chain(auth.map(|a| ("authorization", a))).collect()
}

/// `GET url` with optional bearer token.
pub async fn get(url: &str, bearer: Option<&str>) -> HttpResponse {
    let auth = bearer_auth(bearer);
    send(Method::GET, url, &request_headers(auth.as_deref(), false), Bytes::new()).await
}

/// `POST url` with a JSON body and optional bearer token.
pub async fn post_json(url: &str, bearer: Option<&str>, body: &Value) -> HttpResponse {
    let auth = bearer_auth(bearer);
    send(Method::POST, url, &request_headers(auth.as_deref(), true), serde_json::to_vec(body).unwrap_or_default()).await
}

/// `POST url` with a JSON body; returns once the headers arrived, to read the body as a stream.
pub async fn post_json_stream(url: &str, bearer: Option<&str>, body: &Value) -> StreamingResponse {
    let auth = bearer_auth(bearer);
    open(Method::POST, url, &request_headers(auth.as_deref(), true), serde_json::to_vec(body).unwrap_or_default()).await
}
