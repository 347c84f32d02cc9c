//! A scriptable mock upstream speaking the four wire protocols (docs/test-contract.md, "The mock upstream").
//!
//! It binds 127.0.0.1:0 and answers OpenAI Chat (`POST /v1/chat/completions`), OpenAI Responses (`POST /v1/responses`),
//! Anthropic (`POST /v1/messages`, `/v1/messages/count_tokens`), Gemini (`POST /v1beta/models/{model}:generateContent`,
//! `:streamGenerateContent`, `:countTokens`, also under `/v1/models/`) and the model listings with protocol-native
//! default replies ([`reply`]: text, tool calls, reasoning), after checking each request as strictly as the real provider
//! would (a native 400 otherwise). It plays
//! scripted [`Behavior`]s (status sequences, delays, SSE chunks at a pace, a cut mid-stream, a hang) from FIFO queues,
//! one per upstream key plus a shared one. Every request is logged, including whether the peer went away before the
//! mock finished sending. The same control surface is served over HTTP under `/_mock/` for suites in other languages.
//!
//! ```no_run
//! # async fn demo() {
//! use xai_tests::mock::{Behavior, MockUpstream};
//! let mock = MockUpstream::start().await;
//! mock.script(Some("sk-up-1"), vec![Behavior::status(429).with_header("retry-after", "1")]);
//! // point a provider's base_url at format!("{}/v1", mock.url()), send traffic, then:
//! let log = mock.requests();
//! # let _ = log;
//! # }
//! ```
//!
//! Which requests take scripted behaviours: every method but `GET` (so a model listing never eats a script). A request
//! takes from its key's queue first, then from the shared queue, else gets the default reply.

pub mod anthropic;
mod behavior;
mod body;
pub mod chat;
pub mod endpoint;
pub mod gemini;
pub mod reply;
pub mod responses;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

pub use behavior::{Behavior, RecordedRequest, RequestLog, ScriptRequest};
use body::{MockBody, Tracker};
use endpoint::{Endpoint, Reply};

/// State shared by the handle and the connection tasks.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    next_seq: AtomicU64,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    shared_queue: VecDeque<Behavior>,
    key_queues: HashMap<String, VecDeque<Behavior>>,
    log: Vec<RecordedRequest>,
}

impl Shared {
    pub(crate) fn update(&self, seq: u64, f: impl FnOnce(&mut RecordedRequest)) {
        {
            let mut inner = self.inner.lock();
            if let Some(r) = inner.log.iter_mut().rev().find(|r| r.seq == seq) {
                f(r);
            }
        }
        self.changed.notify_waiters();
    }

    fn script(&self, key: Option<&str>, behaviors: Vec<Behavior>) -> usize {
        let n = behaviors.len();
        let mut inner = self.inner.lock();
        match key {
            Some(k) => inner.key_queues.entry(k.to_owned()).or_default().extend(behaviors),
            None => inner.shared_queue.extend(behaviors),
        }
        n
    }

    fn reset(&self) {
        let mut inner = self.inner.lock();
        inner.shared_queue.clear();
        inner.key_queues.clear();
        inner.log.clear();
    }

    /// Takes the behaviour for a request bearing `key`, and says where it came from.
    fn take(&self, key: Option<&str>) -> (Option<Behavior>, &'static str) {
        let mut inner = self.inner.lock();
        if let Some(b) = key.and_then(|k| inner.key_queues.get_mut(k)).and_then(VecDeque::pop_front) {
            return (Some(b), "key");
        }
        match inner.shared_queue.pop_front() {
            Some(b) => (Some(b), "shared"),
            None => (None, "default"),
        }
    }
}

/// A running mock upstream; stops serving (and drops every open connection) when dropped.
#[derive(Debug)]
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
        if std::thread::panicking() {
            // A failing test gets to see what the upstream saw.
            let log = self.requests();
            eprintln!("--- mock upstream {}: request log ({} requests) ---", self.addr, log.len());
            for r in log {
                eprintln!(
                    "#{} {} {} key={:?} model={:?} stream={} source={} status={:?} finished={} cancelled={} dropped={}",
                    r.seq,
                    r.method,
                    r.path,
                    r.key,
                    r.model(),
                    r.is_stream(),
                    r.source,
                    r.status,
                    r.finished,
                    r.cancelled,
                    r.dropped
                );
            }
        }
    }
}

impl MockUpstream {
    /// Starts a mock on 127.0.0.1 with a free port. Panics if it cannot bind (test support).
    pub async fn start() -> Self {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("mock upstream: cannot bind 127.0.0.1:0")
    }

    /// Starts a mock on `addr` (port 0 picks a free one). Needs a Tokio runtime.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`, what an OpenAI provider's `base_url` takes.
    pub fn v1_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// Appends behaviours to the queue of upstream key `key`, or to the shared queue.
    pub fn script(&self, key: Option<&str>, behaviors: Vec<Behavior>) {
        self.shared.script(key, behaviors);
    }

    /// Every request received so far (control requests excluded), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.inner.lock().log.clone()
    }

    /// The behaviours still queued (shared queue plus every key's), i.e. not consumed by any request.
    pub fn pending_behaviors(&self) -> usize {
        let inner = self.shared.inner.lock();
        inner.shared_queue.len() + inner.key_queues.values().map(VecDeque::len).sum::<usize>()
    }

    /// Clears the queues and the request log (sequence numbers keep counting).
    pub fn reset(&self) {
        self.shared.reset();
        self.shared.changed.notify_waiters();
    }

    /// Waits until `pred` holds for the request log and returns the log; panics after `timeout` with the log.
    pub async fn wait_for<F>(&self, what: &str, timeout: Duration, pred: F) -> Vec<RecordedRequest>
    where
        F: Fn(&[RecordedRequest]) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let log = self.requests();
            if pred(&log) {
                return log;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let log = self.requests();
                if pred(&log) {
                    return log;
                }
                panic!(
                    "mock upstream {}: timed out after {timeout:?} waiting for {what}; request log:\n{}",
                    self.addr,
                    serde_json::to_string_pretty(&log).unwrap_or_default()
                );
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Dropping this set (when the task is aborted) aborts every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    // Out of descriptors and the like: back off briefly rather than spin.
                    Err(_) => { tokio::time::sleep(Duration::from_millis(5)).await; continue; }
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(shared.clone(), req));
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::full(serde_json::to_vec(value).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<MockBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if parts.uri.path().starts_with("/_mock/") {
        return Ok(control(&shared, &parts.method, parts.uri.path(), &bytes));
    }
    Ok(upstream(shared, parts, bytes).await)
}

fn control(shared: &Shared, method: &Method, path: &str, body: &[u8]) -> Response<MockBody> {
    match (method, path) {
        (&Method::POST, "/_mock/script") => match serde_json::from_slice::<ScriptRequest>(body) {
            Ok(s) => {
                let queued = shared.script(s.key.as_deref(), s.behaviors);
                json_response(StatusCode::OK, &json!({"ok": true, "queued": queued}))
            }
            Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({"error": format!("bad script: {e}")})),
        },
        (&Method::GET, "/_mock/requests") => {
            let log = RequestLog { requests: shared.inner.lock().log.clone() };
            json_response(StatusCode::OK, &serde_json::to_value(log).unwrap_or_default())
        }
        (&Method::POST, "/_mock/reset") => {
            shared.reset();
            shared.changed.notify_waiters();
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": format!("no control endpoint {method} {path}")})),
    }
}

/// The credential a request carries, wherever its protocol puts it.
fn credential(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(auth) = header("authorization") {
        let token = match auth.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim().to_owned(),
            _ => auth,
        };
        return Some(token);
    }
    header("x-api-key")
        .or_else(|| header("x-goog-api-key"))
        .or_else(|| query?.split('&').find_map(|pair| pair.strip_prefix("key=").map(str::to_owned)))
}

fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_owned()).and_modify(|v| *v = format!("{v}, {value}")).or_insert(value);
    }
    out
}

async fn upstream(shared: Arc<Shared>, parts: http::request::Parts, bytes: Bytes) -> Response<MockBody> {
    let path = parts.uri.path_and_query().map(|pq| pq.as_str().to_owned()).unwrap_or_else(|| "/".into());
    let key = credential(&parts.headers, parts.uri.query());
    let (body, raw_body) = if bytes.is_empty() {
        (Value::Null, None)
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => (v, None),
            Err(_) => (Value::Null, Some(String::from_utf8_lossy(&bytes).into_owned())),
        }
    };
    let seq = shared.next_seq.fetch_add(1, Ordering::SeqCst) + 1;
    let (behavior, source) = if parts.method == Method::GET { (None, "default") } else { shared.take(key.as_deref()) };
    let record = RecordedRequest {
        seq,
        method: parts.method.to_string(),
        path,
        authorization: parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned),
        key: key.clone(),
        headers: header_map(&parts.headers),
        body: body.clone(),
        raw_body,
        received_ms: reply::unix_millis(),
        source: source.to_owned(),
        status: None,
        finished: false,
        cancelled: false,
        dropped: false,
        rejected: None,
    };
    shared.inner.lock().log.push(record);
    shared.changed.notify_waiters();
    // From here on, dropping the tracker unsettled (the peer left while we delay, hang or stream) marks the request
    // cancelled.
    let tracker = Tracker::new(shared.clone(), seq);
    let behavior = behavior.unwrap_or_default();

    if let Some(ms) = behavior.delay_ms.filter(|ms| *ms > 0) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if behavior.hang {
        std::future::pending::<()>().await;
    }

    let endpoint = Endpoint::classify(&parts.method, parts.uri.path(), parts.uri.query(), &parts.headers);
    let scripted_status = behavior.status.unwrap_or(200);
    let reply = if let Some(sse) = &behavior.sse {
        Reply {
            status: scripted_status,
            chunks: sse.iter().map(|e| Bytes::from(e.clone())).collect(),
            streaming: true,
            content_type: "text/event-stream",
            rejected: None,
        }
    } else if let Some(b) = &behavior.body {
        Reply::json(scripted_status, b)
    } else if !(200..300).contains(&scripted_status) {
        endpoint.error_reply(scripted_status)
    } else {
        let mut reply = endpoint.default_reply(&body, &parts.headers, seq);
        if reply.status == 200 {
            reply.status = scripted_status;
        }
        reply
    };
    let Reply { status, chunks, streaming, content_type, rejected } = reply;
    if rejected.is_some() {
        shared.update(seq, |r| r.rejected = rejected);
    }

    tracker.set_status(status);
    let mut resp = Response::new(MockBody::tracked(
        chunks,
        streaming,
        behavior.interval_ms.map(Duration::from_millis),
        behavior.drop_after,
        tracker,
    ));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if streaming && content_type == "text/event-stream" {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    if let Some(k) = key.as_deref().and_then(|k| HeaderValue::from_str(k).ok()) {
        headers.insert("x-mock-key", k);
    }
    headers.insert("x-mock-request", HeaderValue::from(seq));
    for (name, value) in &behavior.headers {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
            headers.insert(name, value);
        }
    }
    resp
}

#[cfg(test)]
mod tests;
