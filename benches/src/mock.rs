//! A fast in-process mock of the OpenAI chat completions API and the Anthropic messages API, for the load
//! benchmark.
//!
//! It runs on its own tokio runtime on its own thread(s) (named [`MOCK_THREAD_NAME`], so the
//! benchmark can read their CPU time), answers instantly and does as little work as it can:
//!
//! - `POST /v1/chat/completions`: a ~1 KB `chat.completion` with `usage`, or, when the body
//!   has `"stream": true`, SSE: a role chunk, `chunks` content chunks, a finish chunk
//!   (`finish_reason: "stop"`), a `choices: []` usage chunk when
//!   `stream_options.include_usage`, then `data: [DONE]`. Each event is its own body frame.
//! - `POST /v1/messages`: the same reply in the Anthropic shape, so a passthrough and a translated
//!   Anthropic client get an equal amount of content: a `message` with `usage`, or, when streaming,
//!   `message_start`, `content_block_start`, `ping`, the same `chunks` text deltas (the same words),
//!   `content_block_stop`, `message_delta` (stop reason and usage), `message_stop`.
//! - `GET /v1/models`, `GET /healthz`.
//!
//! It counts requests, so the benchmark can check that a gateway sent exactly one upstream
//! request per client request (no retries, no caching).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::sync::oneshot;

/// Name of the mock's threads (at most 15 bytes: Linux truncates thread names).
pub const MOCK_THREAD_NAME: &str = "xb-mock";

/// Words the canned replies are made of.
const WORDS: &[&str] = &[
    "The",
    "gateway",
    "forwarded",
    "this",
    "request",
    "to",
    "a",
    "mock",
    "upstream",
    "that",
    "answers",
    "instantly",
    "so",
    "every",
    "microsecond",
    "you",
    "measure",
    "belongs",
    "to",
    "the",
    "proxy",
    "in",
    "between",
    "and",
    "its",
    "configuration.",
];

/// Settings of the mock.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Content chunks per streamed reply.
    pub chunks: usize,
    /// Tokio worker threads (1 = a current-thread runtime on one thread).
    pub workers: usize,
    /// Words in the non-streaming reply (96 gives a ~1 KB body).
    pub reply_words: usize,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self { chunks: 16, workers: 1, reply_words: 96 }
    }
}

/// Request counters of the mock.
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    chat: AtomicU64,
    messages: AtomicU64,
    stream: AtomicU64,
    bad: AtomicU64,
}

/// A copy of the mock's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MockStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// HTTP requests of any kind.
    pub requests: u64,
    /// Chat completions answered (streaming or not).
    pub chat: u64,
    /// Anthropic messages answered (streaming or not).
    pub messages: u64,
    /// Of chat and messages, streamed.
    pub stream: u64,
    /// Requests answered with an error (bad JSON, unknown route).
    pub bad: u64,
}

impl MockStats {
    /// Counter deltas `self - earlier`.
    pub fn since(&self, earlier: &MockStats) -> MockStats {
        MockStats {
            connections: self.connections - earlier.connections,
            requests: self.requests - earlier.requests,
            chat: self.chat - earlier.chat,
            messages: self.messages - earlier.messages,
            stream: self.stream - earlier.stream,
            bad: self.bad - earlier.bad,
        }
    }
}

#[derive(Debug)]
struct State {
    cfg: MockConfig,
    reply_text: String,
    reply_words: u64,
    seq: AtomicU64,
    counters: Counters,
}

/// A running mock upstream. Dropping it stops the server and joins its thread.
#[derive(Debug)]
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MockUpstream {
    /// Binds 127.0.0.1:0 and starts serving on a new thread.
    pub fn start(cfg: MockConfig) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let words: Vec<&str> = (0..cfg.reply_words.max(1)).map(|i| WORDS[i % WORDS.len()]).collect();
        let state = Arc::new(State {
            reply_text: words.join(" "),
            reply_words: words.len() as u64,
            cfg: cfg.clone(),
            seq: AtomicU64::new(1),
            counters: Counters::default(),
        });
        let mut builder = if cfg.workers <= 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(cfg.workers);
            b
        };
        let rt = builder.enable_all().thread_name(MOCK_THREAD_NAME).build()?;
        let (tx, rx) = oneshot::channel();
        let st = state.clone();
        let thread = std::thread::Builder::new().name(MOCK_THREAD_NAME.into()).spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("mock: cannot register listener: {e}");
                        return;
                    }
                };
                let accept = tokio::spawn(accept_loop(listener, st));
                let _ = rx.await;
                accept.abort();
            });
            // Dropping the runtime cancels the connection tasks.
            drop(rt);
        })?;
        Ok(Self { addr, state, shutdown: Some(tx), thread: Some(thread) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The OpenAI base URL of the mock: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The counters now.
    pub fn stats(&self) -> MockStats {
        let c = &self.state.counters;
        MockStats {
            connections: c.connections.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            chat: c.chat.load(Ordering::Relaxed),
            messages: c.messages.load(Ordering::Relaxed),
            stream: c.stream.load(Ordering::Relaxed),
            bad: c.bad.load(Ordering::Relaxed),
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, st: Arc<State>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                // e.g. EMFILE: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        st.counters.connections.fetch_add(1, Ordering::Relaxed);
        let st = st.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, st.clone()));
            // Resets by clients are expected (the benchmark closes its connections).
            let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// Response body: one buffer, or SSE events sent one frame each.
#[derive(Debug)]
enum MockBody {
    Once(Option<Bytes>),
    Sse(VecDeque<Bytes>),
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MockBody::Once(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Sse(frames) => Poll::Ready(frames.pop_front().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Once(b) => b.is_none(),
            MockBody::Sse(frames) => frames.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Once(Some(b)) => SizeHint::with_exact(b.len() as u64),
            MockBody::Once(None) => SizeHint::with_exact(0),
            MockBody::Sse(_) => SizeHint::default(),
        }
    }
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::Once(Some(body.into())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error_response(status: StatusCode, msg: &str) -> Response<MockBody> {
    let body = serde_json::json!({
        "error": {"message": msg, "type": "invalid_request_error", "param": null, "code": null}
    });
    json_response(status, body.to_string())
}

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

async fn handle(req: Request<Incoming>, st: Arc<State>) -> Result<Response<MockBody>, Infallible> {
    st.counters.requests.fetch_add(1, Ordering::Relaxed);
    let resp = match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => chat(req, &st).await,
        (&Method::POST, "/v1/messages") => messages(req, &st).await,
        (&Method::GET, "/v1/models") => json_response(
            StatusCode::OK,
            r#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1700000000,"owned_by":"mock"}]}"#,
        ),
        (&Method::GET, "/healthz") | (&Method::GET, "/health") => {
            let mut r = Response::new(MockBody::Once(Some(Bytes::from_static(b"ok"))));
            r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        _ => {
            st.counters.bad.fetch_add(1, Ordering::Relaxed);
            error_response(StatusCode::NOT_FOUND, "unknown route")
        }
    };
    Ok(resp)
}

/// Words in each streamed content chunk.
const WORDS_PER_CHUNK: usize = 3;

/// The text of content chunk `i` (the same in both protocols): ` w1 w2 w3`.
fn chunk_text(i: usize) -> String {
    let mut text = String::new();
    for j in 0..WORDS_PER_CHUNK {
        text.push(' ');
        text.push_str(WORDS[(i * WORDS_PER_CHUNK + j) % WORDS.len()]);
    }
    text
}

fn sse_response(frames: VecDeque<Bytes>) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::Sse(frames));
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

async fn chat(req: Request<Incoming>, st: &State) -> Response<MockBody> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            st.counters.bad.fetch_add(1, Ordering::Relaxed);
            return error_response(StatusCode::BAD_REQUEST, "could not read request body");
        }
    };
    let parsed: ChatRequest<'_> = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            st.counters.bad.fetch_add(1, Ordering::Relaxed);
            return error_response(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}"));
        }
    };
    st.counters.chat.fetch_add(1, Ordering::Relaxed);
    let stream = parsed.stream.unwrap_or(false);
    let include_usage = parsed.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    // JSON-escaped model name, quotes included.
    let model = serde_json::to_string(parsed.model.as_deref().unwrap_or("gpt-4o-mini"))
        .unwrap_or_else(|_| "\"gpt-4o-mini\"".into());
    let prompt_tokens = (body.len() as u64 / 4).max(1);
    let seq = st.seq.fetch_add(1, Ordering::Relaxed);
    let id = format!("chatcmpl-mock{seq:012}");
    let created = now_secs();

    if !stream {
        let ct = st.reply_words;
        let body = format!(
            concat!(
                r#"{{"id":"{id}","object":"chat.completion","created":{created},"model":{model},"#,
                r#""choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}","refusal":null,"annotations":[]}},"#,
                r#""logprobs":null,"finish_reason":"stop"}}],"#,
                r#""usage":{{"prompt_tokens":{pt},"completion_tokens":{ct},"total_tokens":{tt},"#,
                r#""prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"#,
                r#""completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}},"#,
                r#""service_tier":"default","system_fingerprint":"fp_mock"}}"#
            ),
            id = id,
            created = created,
            model = model,
            text = st.reply_text,
            pt = prompt_tokens,
            ct = ct,
            tt = prompt_tokens + ct,
        );
        return json_response(StatusCode::OK, body);
    }

    st.counters.stream.fetch_add(1, Ordering::Relaxed);
    let chunks = st.cfg.chunks;
    let head = format!(
        r#"{{"id":"{id}","object":"chat.completion.chunk","created":{created},"model":{model},"system_fingerprint":"fp_mock","#
    );
    let event = |rest: &str| Bytes::from(format!("data: {head}{rest}}}\n\n"));
    let mut frames = VecDeque::with_capacity(chunks + 4);
    frames.push_back(event(
        r#""choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]"#,
    ));
    let mut words = 0u64;
    for i in 0..chunks {
        let text = chunk_text(i);
        words += WORDS_PER_CHUNK as u64;
        frames.push_back(event(&format!(
            r#""choices":[{{"index":0,"delta":{{"content":"{text}"}},"logprobs":null,"finish_reason":null}}]"#
        )));
    }
    frames.push_back(event(r#""choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]"#));
    if include_usage {
        frames.push_back(event(&format!(
            r#""choices":[],"usage":{{"prompt_tokens":{prompt_tokens},"completion_tokens":{words},"total_tokens":{}}}"#,
            prompt_tokens + words
        )));
    }
    frames.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    sse_response(frames)
}

#[derive(Deserialize)]
struct MessagesRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
}

/// `POST /v1/messages`: the chat reply in the Anthropic shape (the same words, the same chunks).
async fn messages(req: Request<Incoming>, st: &State) -> Response<MockBody> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            st.counters.bad.fetch_add(1, Ordering::Relaxed);
            return error_response(StatusCode::BAD_REQUEST, "could not read request body");
        }
    };
    let parsed: MessagesRequest<'_> = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            st.counters.bad.fetch_add(1, Ordering::Relaxed);
            return error_response(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}"));
        }
    };
    st.counters.messages.fetch_add(1, Ordering::Relaxed);
    let model = serde_json::to_string(parsed.model.as_deref().unwrap_or("claude-mock"))
        .unwrap_or_else(|_| "\"claude-mock\"".into());
    let input = (body.len() as u64 / 4).max(1);
    let id = format!("msg_mock{:012}", st.seq.fetch_add(1, Ordering::Relaxed));
    if !parsed.stream.unwrap_or(false) {
        let body = format!(
            concat!(
                r#"{{"id":"{id}","type":"message","role":"assistant","model":{model},"#,
                r#""content":[{{"type":"text","text":"{text}"}}],"stop_reason":"end_turn","stop_sequence":null,"#,
                r#""usage":{{"input_tokens":{input},"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":{output}}}}}"#
            ),
            id = id,
            model = model,
            text = st.reply_text,
            input = input,
            output = st.reply_words,
        );
        return json_response(StatusCode::OK, body);
    }

    st.counters.stream.fetch_add(1, Ordering::Relaxed);
    let chunks = st.cfg.chunks;
    let event = |name: &str, data: &str| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
    let mut frames = VecDeque::with_capacity(chunks + 6);
    frames.push_back(event(
        "message_start",
        &format!(
            concat!(
                r#"{{"type":"message_start","message":{{"id":"{id}","type":"message","role":"assistant","model":{model},"#,
                r#""content":[],"stop_reason":null,"stop_sequence":null,"#,
                r#""usage":{{"input_tokens":{input},"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}}}}"#
            ),
            id = id,
            model = model,
            input = input,
        ),
    ));
    frames.push_back(event(
        "content_block_start",
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    ));
    frames.push_back(event("ping", r#"{"type":"ping"}"#));
    for i in 0..chunks {
        frames.push_back(event(
            "content_block_delta",
            &format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{}"}}}}"#,
                chunk_text(i)
            ),
        ));
    }
    frames.push_back(event("content_block_stop", r#"{"type":"content_block_stop","index":0}"#));
    frames.push_back(event(
        "message_delta",
        &format!(
            r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{}}}}}"#,
            chunks * WORDS_PER_CHUNK
        ),
    ));
    frames.push_back(event("message_stop", r#"{"type":"message_stop"}"#));
    sse_response(frames)
}
