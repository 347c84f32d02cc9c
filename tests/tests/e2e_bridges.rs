//! The cross-protocol matrix: every client protocol (OpenAI Chat, OpenAI Responses, Anthropic, Gemini) against every
//! upstream protocol, through a real `xai-server` in front of the strict multi-protocol mock.
//!
//! One config, four providers on the same mock (`up-openai`, `up-responses`, `up-anthropic`, `up-gemini`, each serving
//! the model of its own name). Each test is one scenario run over all 16 (client, upstream) pairs; failures are
//! collected and reported together with the matrix, so one run shows the state of every pair.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};
use xai_tests::client::HttpResponse;
use xai_tests::fixtures::wire::{Entry, Mode, Reply, Streamed, ToolCall, Wire};
use xai_tests::harness::{USAGE_TIMEOUT, XaiServer};
use xai_tests::mock::reply::{ANTHROPIC_SIGNATURE, GEMINI_SIGNATURE, REASONING_TEXT, RESPONSES_SIGNATURE, Turn};
use xai_tests::mock::{Behavior, MockUpstream, anthropic, chat, gemini, responses};

const CONFIG: &str = r#"admin_token = "admin-secret"

[server]
max_body_bytes = 1048576
shutdown_grace_ms = 2000

[routing]
attempt_timeout_ms = 5000
request_timeout_ms = 15000
max_attempts = 3
backoff_base_ms = 1
backoff_max_ms = 10
default_retry_after_ms = 1

[[providers]]
name = "up-openai"
protocol = "openai"
base_url = "{{MOCK}}/v1"
keys = ["sk-up-openai"]
level = 1
models = ["up-openai"]

[[providers]]
name = "up-responses"
protocol = "openai-responses"
base_url = "{{MOCK}}/v1"
keys = ["sk-up-responses"]
level = 1
models = ["up-responses"]

[[providers]]
name = "up-anthropic"
protocol = "anthropic"
base_url = "{{MOCK}}"
keys = ["sk-up-anthropic"]
level = 1
models = ["up-anthropic"]

[[providers]]
name = "up-gemini"
protocol = "gemini"
base_url = "{{MOCK}}"
keys = ["sk-up-gemini"]
level = 1
models = ["up-gemini"]

[[accounts]]
name = "bridges"
keys = ["sk-bridges-client"]
allow_models = ["*"]
level = 1
"#;

const CLIENT_KEY: &str = "sk-bridges-client";

/// An upstream provider of the config.
#[derive(Debug, Clone, Copy)]
struct Upstream {
    wire: Wire,
    /// Provider name and the model it serves.
    name: &'static str,
    key: &'static str,
    /// What the path of a request it receives starts with.
    path: &'static str,
    /// The signature of its reasoning (none for Chat).
    signature: Option<&'static str>,
}

const UPSTREAMS: [Upstream; 4] = [
    Upstream {
        wire: Wire::Chat,
        name: "up-openai",
        key: "sk-up-openai",
        path: "/v1/chat/completions",
        signature: None,
    },
    Upstream {
        wire: Wire::Responses,
        name: "up-responses",
        key: "sk-up-responses",
        path: "/v1/responses",
        signature: Some(RESPONSES_SIGNATURE),
    },
    Upstream {
        wire: Wire::Anthropic,
        name: "up-anthropic",
        key: "sk-up-anthropic",
        path: "/v1/messages",
        signature: Some(ANTHROPIC_SIGNATURE),
    },
    Upstream {
        wire: Wire::Gemini,
        name: "up-gemini",
        key: "sk-up-gemini",
        path: "/v1beta/models/up-gemini:",
        signature: Some(GEMINI_SIGNATURE),
    },
];

type Check = Result<(), String>;

/// `Err(format!(…))` unless `cond`.
macro_rules! check {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(format!($($arg)*));
        }
    };
}

fn cut(text: &str) -> String {
    if text.chars().count() > 500 {
        format!("{}…", text.chars().take(500).collect::<String>())
    } else {
        text.to_owned()
    }
}

/// The server, the mock behind all four providers, and request helpers that turn every failure into a message.
struct Bridges {
    server: XaiServer,
    mock: MockUpstream,
    /// What the streams did that clients tolerate but the provider would not do, for the matrix notes.
    notes: parking_lot::Mutex<Vec<String>>,
}

impl Bridges {
    async fn start() -> Self {
        let mock = MockUpstream::start().await;
        let server = XaiServer::builder(CONFIG).var("MOCK", mock.url()).start().await;
        Self { server, mock, notes: parking_lot::Mutex::new(Vec::new()) }
    }

    /// What the mock said about the last request it got from `up`, for failure messages.
    fn upstream_note(&self, up: &Upstream, since: usize) -> String {
        let log = self.mock.requests();
        match log.iter().skip(since).rev().find(|r| r.key.as_deref() == Some(up.key)) {
            Some(r) => match &r.rejected {
                Some(why) => format!(" [the strict mock rejected the upstream request: {why}]"),
                None => format!(" [upstream answered {:?} to {}]", r.status, r.path),
            },
            None => " [nothing reached the upstream]".into(),
        }
    }

    /// A non-streaming request; `Err` unless 200 with a well-formed reply.
    async fn unary(
        &self,
        client: Wire,
        up: &Upstream,
        history: &[Entry],
        tools: &[&str],
        reasoning: bool,
    ) -> Result<(Reply, HttpResponse), String> {
        let since = self.mock.requests().len();
        let body = client.request(up.name, history, tools, reasoning, Mode::Unary);
        let resp = client.send(&self.server.url(), CLIENT_KEY, up.name, &body, Mode::Unary).await;
        if resp.status != 200 {
            return Err(format!("status {}: {}{}", resp.status, cut(&resp.text()), self.upstream_note(up, since)));
        }
        let json: Value =
            serde_json::from_slice(&resp.body).map_err(|e| format!("not JSON ({e}): {}", cut(&resp.text())))?;
        let reply = client.parse_reply(&json).map_err(|e| format!("malformed reply: {e}"))?;
        self.reached(up, since)?;
        Ok((reply, resp))
    }

    /// A streaming request read to its end; `Err` unless 200, well framed, terminated, without an error.
    async fn stream(
        &self,
        client: Wire,
        up: &Upstream,
        history: &[Entry],
        tools: &[&str],
        reasoning: bool,
        mode: Mode,
    ) -> Result<(Reply, Option<String>), String> {
        let since = self.mock.requests().len();
        let body = client.request(up.name, history, tools, reasoning, mode);
        let mut resp = client.open(&self.server.url(), CLIENT_KEY, up.name, &body, mode).await;
        if resp.status != 200 {
            let text = resp.read_to_end().await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
            return Err(format!("{mode:?}: status {}: {}{}", resp.status, cut(&text), self.upstream_note(up, since)));
        }
        let request_id = resp.header("x-request-id").map(str::to_owned);
        let content_type = resp.header("content-type").unwrap_or_default().to_owned();
        let expected = if mode == Mode::JsonArray { "application/json" } else { "text/event-stream" };
        check!(content_type.starts_with(expected), "{mode:?}: content-type {content_type:?}, expected {expected}");
        let streamed = client.read_stream(resp, mode).await;
        check_clean(&streamed, mode)?;
        self.reached(up, since)?;
        self.notes.lock().extend(streamed.notes.iter().map(|n| format!("{client} -> {}: {n}", up.name)));
        Ok((streamed.reply, request_id))
    }

    /// The request went to `up` (not another provider) in its protocol.
    fn reached(&self, up: &Upstream, since: usize) -> Check {
        let log = self.mock.requests();
        let mine: Vec<_> = log.iter().skip(since).filter(|r| r.key.as_deref() == Some(up.key)).collect();
        check!(!mine.is_empty(), "nothing reached upstream {}", up.name);
        check!(
            mine.iter().all(|r| r.path.starts_with(up.path)),
            "upstream {} got {:?}, expected paths under {}",
            up.name,
            mine.iter().map(|r| &r.path).collect::<Vec<_>>(),
            up.path
        );
        Ok(())
    }

    /// Polls the usage records for `request_id` (bounded) and checks its counts.
    async fn usage_of(&self, request_id: &str, client: Wire, up: &Upstream) -> Check {
        let deadline = tokio::time::Instant::now() + USAGE_TIMEOUT;
        let record = loop {
            let records = self.server.admin_usage("admin-secret").await;
            if let Some(r) = records.into_iter().find(|r| r["request_id"] == request_id) {
                break r;
            }
            check!(tokio::time::Instant::now() < deadline, "no usage record for request {request_id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        check!(
            record["provider"] == up.name,
            "usage record provider {}, expected {}: {record}",
            record["provider"],
            up.name
        );
        check!(record["status"] == "ok", "usage record status {}: {record}", record["status"]);
        let inbound = match client {
            Wire::Chat => "openai",
            Wire::Responses => "openai-responses",
            Wire::Anthropic => "anthropic",
            Wire::Gemini => "gemini",
        };
        check!(
            record["inbound_protocol"] == inbound,
            "usage record inbound_protocol {}, expected {inbound}",
            record["inbound_protocol"]
        );
        check!(
            record["prompt_tokens"] == 10 && record["completion_tokens"] == 5,
            "usage record counts prompt {} completion {} (expected 10 / 5) for a {client} client: {record}",
            record["prompt_tokens"],
            record["completion_tokens"]
        );
        Ok(())
    }
}

fn check_clean(s: &Streamed, mode: Mode) -> Check {
    check!(s.problems.is_empty(), "{mode:?}: framing problems {:#?}", s.problems);
    check!(
        s.error.is_none(),
        "{mode:?}: the stream carried an error: {}",
        s.error.as_ref().map(Value::to_string).unwrap_or_default()
    );
    check!(!s.broken, "{mode:?}: the connection broke mid-stream");
    check!(s.terminal, "{mode:?}: no terminal event (the client would take a truncated answer as complete)");
    Ok(())
}

fn check_text(client: Wire, reply: &Reply, expected: &str) -> Check {
    check!(reply.text == expected, "text {:?}, expected {expected:?}", reply.text);
    check!(reply.stop.as_deref() == Some(client.text_stop()), "stop {:?}, expected {}", reply.stop, client.text_stop());
    check!(reply.usage == Some((10, 5)), "usage {:?}, expected prompt 10 / completion 5", reply.usage);
    Ok(())
}

fn check_calls(client: Wire, reply: &Reply, names: &[&str]) -> Check {
    let got: Vec<&str> = reply.tool_calls.iter().map(|c| c.name.as_str()).collect();
    check!(got == names, "tool calls {got:?}, expected {names:?} (reply {reply:?})");
    for call in &reply.tool_calls {
        let expected = json!({"arg": format!("{}-value", call.name)});
        check!(call.arguments == expected, "{} arguments {}, expected {expected}", call.name, call.arguments);
        if client != Wire::Gemini {
            check!(call.id.as_deref().is_some_and(|id| !id.is_empty()), "tool call without an id: {call:?}");
        }
    }
    if client != Wire::Gemini && reply.tool_calls.len() > 1 {
        check!(reply.tool_calls[0].id != reply.tool_calls[1].id, "parallel calls share an id: {:?}", reply.tool_calls);
    }
    check!(reply.stop.as_deref() == Some(client.tool_stop()), "stop {:?}, expected {}", reply.stop, client.tool_stop());
    Ok(())
}

/// The results of one scenario over the 16 pairs.
struct Matrix {
    scenario: &'static str,
    failures: BTreeMap<(usize, usize), Vec<String>>,
    notes: Vec<String>,
}

fn index_of(wire: Wire) -> usize {
    Wire::ALL.iter().position(|w| *w == wire).unwrap_or(0)
}

impl Matrix {
    fn new(scenario: &'static str) -> Self {
        Self { scenario, failures: BTreeMap::new(), notes: Vec::new() }
    }

    fn record(&mut self, client: Wire, up: &Upstream, what: &str, result: Check) {
        let cell = self.failures.entry((index_of(client), index_of(up.wire))).or_default();
        if let Err(e) = result {
            cell.push(format!("{what}: {e}"));
        }
    }

    fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Prints the matrix (with `gw`'s stream notes) and panics with every failure when there is one.
    fn finish(mut self, gw: &Bridges) {
        let mut seen = std::collections::BTreeSet::new();
        let stream_notes: Vec<String> = gw.notes.lock().drain(..).filter(|n| seen.insert(n.clone())).collect();
        self.notes.extend(stream_notes);
        let mut out = format!("\n== {} ==\nclient \\ upstream", self.scenario);
        for up in &UPSTREAMS {
            let _ = write!(out, " | {:>12}", up.name);
        }
        out.push('\n');
        for (ci, client) in Wire::ALL.iter().enumerate() {
            let _ = write!(out, "{client:>17}");
            for ui in 0..UPSTREAMS.len() {
                let cell = match self.failures.get(&(ci, ui)) {
                    None => "-",
                    Some(f) if f.is_empty() => "ok",
                    Some(_) => "FAIL",
                };
                let _ = write!(out, " | {cell:>12}");
            }
            out.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        let mut failed = 0;
        for ((ci, ui), fails) in &self.failures {
            for f in fails {
                failed += 1;
                let _ = writeln!(out, "FAIL {} -> {}: {f}", Wire::ALL[*ci], UPSTREAMS[*ui].name);
            }
        }
        eprintln!("{out}");
        assert!(failed == 0, "{}: {failed} failures{out}", self.scenario);
    }
}

fn pairs() -> impl Iterator<Item = (Wire, Upstream)> {
    Wire::ALL.into_iter().flat_map(|c| UPSTREAMS.into_iter().map(move |u| (c, u)))
}

fn said(client: Wire, up: &Upstream, reply: &Reply, results: &[&str]) -> Check {
    check!(reply.text.starts_with("tool said: "), "text {:?}, expected `tool said: …`", reply.text);
    for r in results {
        check!(reply.text.contains(r), "text {:?} lost the result {r:?}", reply.text);
    }
    if client == up.wire {
        let expected = if client == Wire::Gemini {
            results.iter().map(|r| format!(r#"{{"result":"{r}"}}"#)).collect::<Vec<_>>().join("; ")
        } else {
            results.join("; ")
        };
        check!(reply.text == format!("tool said: {expected}"), "text {:?}", reply.text);
    }
    check!(reply.stop.as_deref() == Some(client.text_stop()), "stop {:?}", reply.stop);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_replies() {
    let gw = Bridges::start().await;
    let mut m = Matrix::new("(a) non-streaming text");
    for (client, up) in pairs() {
        let prompt = format!("hello from {client} to {}", up.name);
        let result = match gw.unary(client, &up, &[Entry::User(prompt.clone())], &[], false).await {
            Ok((reply, _)) => check_text(client, &reply, &format!("mock reply: {prompt}")),
            Err(e) => Err(e),
        };
        m.record(client, &up, "text", result);
    }
    m.finish(&gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_streamed_text() {
    let gw = Bridges::start().await;
    let mut m = Matrix::new("(b) streaming text");
    for (client, up) in pairs() {
        for &mode in client.stream_modes() {
            let prompt = format!("stream from {client} to {}", up.name);
            let result = match gw.stream(client, &up, &[Entry::User(prompt.clone())], &[], false, mode).await {
                Ok((reply, _)) => check_text(client, &reply, &format!("mock reply: {prompt}")),
                Err(e) => Err(e),
            };
            m.record(client, &up, &format!("{mode:?}"), result);
        }
        if client == Wire::Chat {
            m.record(client, &up, "no usage chunk unless asked", chat_without_usage(&gw, &up).await);
        }
    }
    m.finish(&gw);
}

/// A Chat client that does not ask for `include_usage` gets no usage chunk, whatever the upstream.
async fn chat_without_usage(gw: &Bridges, up: &Upstream) -> Check {
    let mut body = Wire::Chat.request(up.name, &[Entry::User("no usage".into())], &[], false, Mode::Sse);
    body.as_object_mut().map(|b| b.remove("stream_options"));
    let resp = Wire::Chat.open(&gw.server.url(), CLIENT_KEY, up.name, &body, Mode::Sse).await;
    check!(resp.status == 200, "status {}", resp.status);
    let streamed = Wire::Chat.read_stream(resp, Mode::Sse).await;
    check_clean(&streamed, Mode::Sse)?;
    check!(streamed.reply.text == "mock reply: no usage", "text {:?}", streamed.reply.text);
    check!(streamed.reply.usage.is_none(), "a usage chunk the client did not ask for: {:?}", streamed.reply.usage);
    Ok(())
}

/// One tool round trip in `mode`: the call, then the results back, then `tool said: …`.
async fn tool_round_trip(gw: &Bridges, client: Wire, up: &Upstream, mode: Mode, tools: &[&str], prompt: &str) -> Check {
    let history = vec![Entry::User(prompt.to_owned())];
    let reply = match mode {
        Mode::Unary => gw.unary(client, up, &history, tools, false).await?.0,
        _ => gw.stream(client, up, &history, tools, false, mode).await?.0,
    };
    check_calls(client, &reply, tools)?;
    let outputs: Vec<String> = tools.iter().map(|t| format!("{t}-result-{}", up.name)).collect();
    let results: Vec<(ToolCall, String)> = reply.tool_calls.iter().cloned().zip(outputs.iter().cloned()).collect();
    let mut history = history;
    history.push(Entry::Assistant(reply));
    history.push(Entry::ToolResults(results));
    let answer = match mode {
        Mode::Unary => gw.unary(client, up, &history, tools, false).await.map_err(|e| format!("second turn: {e}"))?.0,
        _ => gw.stream(client, up, &history, tools, false, mode).await.map_err(|e| format!("second turn: {e}"))?.0,
    };
    let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    said(client, up, &answer, &outputs).map_err(|e| format!("second turn: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_tool_call_and_result() {
    let gw = Bridges::start().await;
    let mut m = Matrix::new("(c) a tool call and its result");
    for (client, up) in pairs() {
        for mode in [Mode::Unary, Mode::Sse] {
            let result =
                tool_round_trip(&gw, client, &up, mode, &["get_weather"], "weather? use_tool:get_weather").await;
            m.record(client, &up, &format!("{mode:?}"), result);
        }
    }
    m.finish(&gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_parallel_tool_calls() {
    let gw = Bridges::start().await;
    let mut m = Matrix::new("(d) parallel tool calls");
    for (client, up) in pairs() {
        for mode in [Mode::Unary, Mode::Sse] {
            let tools = ["get_weather", "get_time"];
            let result = tool_round_trip(&gw, client, &up, mode, &tools, "both: use_tools:get_weather,get_time").await;
            m.record(client, &up, &format!("{mode:?}"), result);
        }
    }
    m.finish(&gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_reasoning_round_trip() {
    let gw = Bridges::start().await;
    let mut m = Matrix::new("(e) reasoning round trip");
    for (client, up) in pairs() {
        for mode in [Mode::Unary, Mode::Sse] {
            let first = vec![Entry::User("think first".into())];
            let turn = match mode {
                Mode::Unary => gw.unary(client, &up, &first, &[], true).await.map(|r| r.0),
                _ => gw.stream(client, &up, &first, &[], true, mode).await.map(|r| r.0),
            };
            let reply = match turn {
                Ok(r) => r,
                Err(e) => {
                    m.record(client, &up, &format!("{mode:?} first turn"), Err(e));
                    continue;
                }
            };
            let received = (|| -> Check {
                check_text(client, &reply, "mock reply: think first")?;
                check!(
                    reply.reasoning.as_deref() == Some(REASONING_TEXT),
                    "reasoning {:?}, expected {REASONING_TEXT:?}",
                    reply.reasoning
                );
                if client == up.wire {
                    check!(
                        reply.signature.as_deref() == up.signature,
                        "signature {:?}, expected {:?}",
                        reply.signature,
                        up.signature
                    );
                } else if carries_signature(client, &up) {
                    check!(
                        reply.signature.as_deref().is_some_and(|s| !s.is_empty()),
                        "a signed upstream's reasoning reached the {client} client without a signature"
                    );
                }
                Ok(())
            })();
            m.record(client, &up, &format!("{mode:?} reasoning received"), received);

            let history =
                vec![Entry::User("think first".into()), Entry::Assistant(reply.clone()), Entry::User("again".into())];
            let since = gw.mock.requests().len();
            let second = match mode {
                Mode::Unary => gw.unary(client, &up, &history, &[], true).await.map(|r| r.0),
                _ => gw.stream(client, &up, &history, &[], true, mode).await.map(|r| r.0),
            };
            let sent_back = gw
                .mock
                .requests()
                .into_iter()
                .skip(since)
                .find(|r| r.key.as_deref() == Some(up.key))
                .map(|r| r.body.to_string())
                .unwrap_or_default();
            let signature_back = up.signature.is_some_and(|s| sent_back.contains(s));
            let result = second.and_then(|r| {
                check!(r.text == "mock reply: again", "second turn text {:?}", r.text);
                if (client == up.wire && up.signature.is_some()) || carries_signature(client, &up) {
                    check!(
                        signature_back,
                        "the upstream did not get its signature {:?} back: {}",
                        up.signature,
                        cut(&sent_back)
                    );
                }
                Ok(())
            });
            if client == Wire::Chat && up.signature.is_some() && mode == Mode::Unary {
                let back = if signature_back { "came back" } else { "did not come back (Chat has no field for it)" };
                m.note(format!("{client} -> {}: the upstream's signature {back}", up.name));
            }
            m.record(client, &up, &format!("{mode:?} second turn"), result);
        }
    }
    m.finish(&gw);
}

/// Whether the client's protocol has a place for a signed upstream's reasoning signature (Chat has none), so it must
/// reach the client and come back to the upstream on the next turn.
fn carries_signature(client: Wire, up: &Upstream) -> bool {
    client != up.wire && client != Wire::Chat && up.signature.is_some()
}

/// The first events of the upstream's default stream for a text answer, before any finish or terminal event.
fn stream_prefix(up: Wire, model: &str) -> Vec<String> {
    let answer = Turn { text: "this will break".into(), ..Turn::default() }.answer();
    let request = json!({"model": model});
    let (mut events, keep) = match up {
        Wire::Chat => (chat::stream(&answer, &request, 1), 3),
        Wire::Responses => (responses::stream(&answer, &request, 1), 5),
        Wire::Anthropic => (anthropic::stream(&answer, &request, 1), 4),
        Wire::Gemini => (gemini::stream_sse(&answer, model, 1), 2),
    };
    events.truncate(keep);
    events
}

/// A native upstream stream that starts well and then fails with a 500-class error event.
fn failing_stream(up: Wire, model: &str) -> Vec<String> {
    let answer = Turn { text: "this will break".into(), ..Turn::default() }.answer();
    let request = json!({"model": model});
    let message = "mock upstream exploded mid-stream";
    match up {
        Wire::Chat => {
            let mut events = chat::stream(&answer, &request, 1);
            events.truncate(3);
            let err = json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}});
            events.push(format!("data: {err}\n\n"));
            events
        }
        Wire::Responses => {
            let mut events = responses::stream(&answer, &request, 1);
            events.truncate(5);
            let failed = json!({"type": "response.failed", "sequence_number": 5, "response": {
                "id": "resp_mock_1", "object": "response", "status": "failed", "model": model, "output": [],
                "error": {"code": "server_error", "message": message}, "usage": null, "incomplete_details": null}});
            events.push(format!("event: response.failed\ndata: {failed}\n\n"));
            events
        }
        Wire::Anthropic => {
            let mut events = anthropic::stream(&answer, &request, 1);
            events.truncate(4);
            let err = json!({"type": "error", "error": {"type": "api_error", "message": message}});
            events.push(format!("event: error\ndata: {err}\n\n"));
            events
        }
        Wire::Gemini => {
            let mut events = gemini::stream_sse(&answer, model, 1);
            events.truncate(2);
            let err = json!({"error": {"code": 500, "message": message, "status": "INTERNAL"}});
            events.push(format!("data: {err}\r\n\r\n"));
            events
        }
    }
}

/// `Err` when a scripted behaviour was not consumed (the request never reached the upstream); drops it so it cannot
/// answer a later check.
fn consumed(gw: &Bridges, what: &str) -> Check {
    if gw.mock.pending_behaviors() > 0 {
        gw.mock.reset();
        return Err(format!("{what} never reached the upstream"));
    }
    Ok(())
}

/// An upstream error status reaches the client with the same status in the client's error shape.
async fn error_status(gw: &Bridges, client: Wire, up: &Upstream, status: u16, mode: Mode) -> Check {
    let mut behavior = Behavior::status(status);
    if status == 429 {
        behavior = behavior.with_header("retry-after-ms", "1");
    }
    gw.mock.script(Some(up.key), vec![behavior]);
    let body = client.request(up.name, &[Entry::User("fail please".into())], &[], false, mode);
    let mut resp = client.open(&gw.server.url(), CLIENT_KEY, up.name, &body, mode).await;
    let text = resp.read_to_end().await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    consumed(gw, &format!("the scripted {status}"))?;
    check!(resp.status == status, "status {}, expected {status}: {}", resp.status, cut(&text));
    let json: Value =
        serde_json::from_str(&text).map_err(|e| format!("error body is not JSON ({e}): {}", cut(&text)))?;
    client.error_message(status, &json).map(|_| ())
}

/// A 200 stream that fails midway reaches the client as its protocol's stream error, never as a clean finish.
async fn mid_stream_error(gw: &Bridges, client: Wire, up: &Upstream, mode: Mode) -> Check {
    gw.mock.script(Some(up.key), vec![Behavior::sse(failing_stream(up.wire, up.name))]);
    let body = client.request(up.name, &[Entry::User("stream and fail".into())], &[], false, mode);
    let mut resp = client.open(&gw.server.url(), CLIENT_KEY, up.name, &body, mode).await;
    consumed(gw, &format!("the scripted stream (the client got status {})", resp.status))?;
    if resp.status != 200 {
        // Acceptable only as a native error response.
        let text = resp.read_to_end().await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| format!("status {} and not JSON ({e}): {}", resp.status, cut(&text)))?;
        return client.error_message(resp.status.as_u16(), &json).map(|_| ());
    }
    let streamed = client.read_stream(resp, mode).await;
    check!(!streamed.terminal, "the failed stream ended with a clean terminal event: {:?}", streamed.reply);
    let Some(err) = &streamed.error else {
        return Err(format!(
            "no error event in the client's protocol (broken: {}, problems {:?})",
            streamed.broken, streamed.problems
        ));
    };
    match client {
        Wire::Responses => {
            check!(err["type"] == "response.failed", "Responses clients need response.failed, got {err}")
        }
        Wire::Anthropic => {
            check!(err["type"] == "error" && err["error"]["type"].is_string(), "Anthropic error event {err}")
        }
        Wire::Chat => check!(err["error"]["message"].is_string(), "Chat error chunk {err}"),
        Wire::Gemini => {
            check!(err["error"]["message"].is_string() && err["error"]["code"].is_number(), "Gemini error chunk {err}")
        }
    }
    Ok(())
}

/// An upstream stream that stops early, cleanly (the body ends without its terminal event) or by a cut connection
/// (`abrupt`), reaches the client as a failure: an error event or a broken body, never a clean finish.
async fn truncated_stream(gw: &Bridges, client: Wire, up: &Upstream, mode: Mode, abrupt: bool) -> Check {
    let behavior =
        if abrupt { Behavior::ok().with_drop_after(3) } else { Behavior::sse(stream_prefix(up.wire, up.name)) };
    gw.mock.script(Some(up.key), vec![behavior]);
    let body = client.request(up.name, &[Entry::User("stream and stop".into())], &[], false, mode);
    let mut resp = client.open(&gw.server.url(), CLIENT_KEY, up.name, &body, mode).await;
    consumed(gw, &format!("the scripted stream (the client got status {})", resp.status))?;
    if resp.status != 200 {
        let text = resp.read_to_end().await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| format!("status {} and not JSON ({e}): {}", resp.status, cut(&text)))?;
        return client.error_message(resp.status.as_u16(), &json).map(|_| ());
    }
    let streamed = client.read_stream(resp, mode).await;
    check!(!streamed.terminal, "the truncated stream ended with a clean terminal event: {:?}", streamed.reply.text);
    check!(
        streamed.error.is_some() || streamed.broken,
        "the truncated stream closed cleanly without an error: the client takes {:?} as the complete answer",
        streamed.reply.text
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_upstream_errors_in_the_clients_shape() {
    let gw = Bridges::start().await;
    let mut m = Matrix::new("(f) upstream errors in the client's shape");
    for (client, up) in pairs() {
        m.record(client, &up, "upstream 400", error_status(&gw, client, &up, 400, Mode::Unary).await);
        m.record(client, &up, "upstream 429, keys exhausted", error_status(&gw, client, &up, 429, Mode::Sse).await);
        for &mode in client.stream_modes() {
            m.record(
                client,
                &up,
                &format!("500 mid-stream ({mode:?})"),
                mid_stream_error(&gw, client, &up, mode).await,
            );
            let result = truncated_stream(&gw, client, &up, mode, false).await;
            m.record(client, &up, &format!("upstream stream ends without its terminal event ({mode:?})"), result);
            let result = truncated_stream(&gw, client, &up, mode, true).await;
            m.record(client, &up, &format!("upstream connection cut mid-stream ({mode:?})"), result);
        }
        gw.mock.reset();
    }
    m.finish(&gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g_usage_records() {
    let gw = Bridges::start().await;
    let mut m = Matrix::new("(g) usage records");
    for (client, up) in pairs() {
        let history = [Entry::User(format!("meter {client} to {}", up.name))];
        let unary = match gw.unary(client, &up, &history, &[], false).await {
            Ok((_, resp)) => match resp.header("x-request-id") {
                Some(id) => gw.usage_of(id, client, &up).await,
                None => Err("no x-request-id header".into()),
            },
            Err(e) => Err(e),
        };
        m.record(client, &up, "unary", unary);
        let streamed = match gw.stream(client, &up, &history, &[], false, Mode::Sse).await {
            Ok((_, Some(id))) => gw.usage_of(&id, client, &up).await,
            Ok((_, None)) => Err("no x-request-id header".into()),
            Err(e) => Err(e),
        };
        m.record(client, &up, "stream", streamed);
    }
    m.finish(&gw);
}
