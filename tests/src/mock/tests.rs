//! The mock must be trustworthy: every behaviour is checked here against a real socket.

use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::client::{self, SseEvent};
use crate::fixtures::streamed_text;

const WAIT: Duration = Duration::from_secs(5);

fn chat(text: &str) -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}], "x_unknown": {"kept": [1, 2]}})
}

fn stream_chat(text: &str, include_usage: bool) -> Value {
    let mut b = chat(text);
    b["stream"] = json!(true);
    if include_usage {
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

async fn post(mock: &MockUpstream, key: &str, body: &Value) -> client::HttpResponse {
    client::post_json(&format!("{}/chat/completions", mock.v1_url()), Some(key), body).await
}

#[tokio::test]
async fn default_reply_and_log() {
    let mock = MockUpstream::start().await;
    let resp = post(&mock, "sk-up-1", &chat("hello there")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-mock-key"), Some("sk-up-1"));
    assert_eq!(resp.header("x-mock-request"), Some("1"));
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let body = resp.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o");
    assert_eq!(body["choices"][0]["message"]["content"], "mock reply: hello there");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"], json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}));

    let log = mock.wait_for("request finished", WAIT, |l| l.len() == 1 && l[0].finished).await;
    let r = &log[0];
    assert_eq!((r.seq, r.method.as_str(), r.path.as_str()), (1, "POST", "/v1/chat/completions"));
    assert_eq!(r.authorization.as_deref(), Some("Bearer sk-up-1"));
    assert_eq!(r.key.as_deref(), Some("sk-up-1"));
    assert_eq!(r.body, chat("hello there"));
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
    assert_eq!((r.status, r.cancelled, r.dropped, r.source.as_str()), (Some(200), false, false, "default"));
    assert!(r.received_ms > 1_600_000_000_000);
}

#[tokio::test]
async fn default_stream_with_and_without_usage() {
    let mock = MockUpstream::start().await;
    let url = format!("{}/chat/completions", mock.v1_url());
    for include_usage in [false, true] {
        let resp = client::post_json_stream(&url, Some("sk"), &stream_chat("stream me", include_usage)).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some("text/event-stream"));
        assert!(resp.header("content-length").is_none(), "streams are chunked");
        let events = resp.sse().collect().await.expect("clean end");
        assert_eq!(events.len(), 1 + 5 + 1 + usize::from(include_usage) + 1, "{events:?}");
        assert_eq!(events[0].json().unwrap()["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(streamed_text(&events), "mock reply: stream me");
        let finish = events.iter().filter_map(SseEvent::json).find(|e| e["choices"][0]["finish_reason"] == "stop");
        assert!(finish.is_some(), "a finish chunk");
        let usage: Vec<Value> = events.iter().filter_map(SseEvent::json).filter(|e| e["usage"].is_object()).collect();
        if include_usage {
            assert_eq!(usage.len(), 1);
            assert_eq!(usage[0]["choices"], json!([]));
            assert_eq!(usage[0]["usage"]["prompt_tokens"], 10);
            assert_eq!(usage[0]["usage"]["completion_tokens"], 5);
        } else {
            assert!(usage.is_empty());
        }
        assert!(events.last().unwrap().is_done());
    }
    let log = mock.wait_for("both finished", WAIT, |l| l.len() == 2 && l.iter().all(|r| r.finished)).await;
    assert!(log.iter().all(|r| r.is_stream() && !r.cancelled));
}

#[tokio::test]
async fn key_queue_then_shared_queue_then_default() {
    let mock = MockUpstream::start().await;
    mock.script(None, vec![Behavior::status(500)]);
    mock.script(Some("sk-up-2"), vec![Behavior::status(429).with_header("retry-after", "7")]);
    assert_eq!(mock.pending_behaviors(), 2);

    let a = post(&mock, "sk-up-2", &chat("a")).await; // its own queue first
    assert_eq!(a.status, 429);
    assert_eq!(a.header("retry-after"), Some("7"));
    assert_eq!(a.json()["error"]["code"], "rate_limit_exceeded");
    let b = post(&mock, "sk-up-2", &chat("b")).await; // then the shared one
    assert_eq!(b.status, 500);
    assert_eq!(b.json()["error"]["type"], "server_error");
    let c = post(&mock, "sk-up-2", &chat("c")).await; // then the default
    assert_eq!(c.status, 200);
    assert_eq!(mock.pending_behaviors(), 0);
    let sources: Vec<String> = mock.requests().into_iter().map(|r| r.source).collect();
    assert_eq!(sources, ["key", "shared", "default"]);

    // Another key's queue is not taken.
    mock.script(Some("sk-other"), vec![Behavior::status(503)]);
    assert_eq!(post(&mock, "sk-up-1", &chat("d")).await.status, 200);
    assert_eq!(mock.pending_behaviors(), 1);
}

#[tokio::test]
async fn scripted_body_status_and_headers() {
    let mock = MockUpstream::start().await;
    let custom = json!({"id": "x", "anything": [1, 2, 3]});
    mock.script(None, vec![Behavior::json(custom.clone()).with_status(201).with_header("x-extra", "yes")]);
    let resp = post(&mock, "k", &chat("q")).await;
    assert_eq!(resp.status, 201);
    assert_eq!(resp.header("x-extra"), Some("yes"));
    assert_eq!(resp.header("x-mock-key"), Some("k"));
    assert_eq!(resp.json(), custom);
}

#[tokio::test]
async fn sse_is_paced_chunk_by_chunk() {
    let mock = MockUpstream::start().await;
    let events: Vec<String> = (0..4).map(|i| format!("data: {{\"n\":{i}}}\n\n")).collect();
    mock.script(None, vec![Behavior::sse(events).with_interval_ms(150)]);
    let resp = client::post_json_stream(&format!("{}/chat/completions", mock.v1_url()), Some("k"), &chat("q")).await;
    let start = resp.sent_at;
    let events = resp.sse().collect().await.expect("clean end");
    let ns: Vec<i64> = events.iter().map(|e| e.json().unwrap()["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, [0, 1, 2, 3]);
    let first = events[0].at.duration_since(start);
    let last = events[3].at.duration_since(start);
    assert!(first < Duration::from_millis(120), "first chunk right away, got {first:?}");
    assert!(last >= Duration::from_millis(440), "three pauses of 150 ms, got {last:?}");
    for pair in events.windows(2) {
        assert!(pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(120), "{events:?}");
    }
}

#[tokio::test]
async fn delay_holds_the_headers() {
    let mock = MockUpstream::start().await;
    mock.script(None, vec![Behavior::ok().with_delay_ms(300)]);
    let t = Instant::now();
    let resp = post(&mock, "k", &chat("q")).await;
    assert_eq!(resp.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
}

#[tokio::test]
async fn drop_after_cuts_the_connection() {
    let mock = MockUpstream::start().await;
    mock.script(None, vec![Behavior::ok().with_drop_after(3)]);
    let resp =
        client::post_json_stream(&format!("{}/chat/completions", mock.v1_url()), Some("k"), &stream_chat("cut", false))
            .await;
    assert_eq!(resp.status, 200);
    let (events, _err) = resp.sse().collect().await.expect_err("the body must break off");
    assert_eq!(events.len(), 3, "{events:?}");
    let log = mock.wait_for("drop recorded", WAIT, |l| l.len() == 1 && l[0].dropped).await;
    assert!(!log[0].finished && !log[0].cancelled, "{:?}", log[0]);
}

#[tokio::test]
async fn client_leaving_a_stream_is_recorded_as_cancelled() {
    let mock = MockUpstream::start().await;
    mock.script(None, vec![Behavior::ok().with_interval_ms(200)]);
    let resp = client::post_json_stream(
        &format!("{}/chat/completions", mock.v1_url()),
        Some("k"),
        &stream_chat("leave", true),
    )
    .await;
    let mut sse = resp.sse();
    sse.next_event().await.unwrap().expect("first event");
    sse.next_event().await.unwrap().expect("second event");
    sse.disconnect();
    let log = mock.wait_for("cancelled", WAIT, |l| l.len() == 1 && l[0].cancelled).await;
    assert!(!log[0].finished && !log[0].dropped);
}

#[tokio::test]
async fn client_leaving_a_hang_or_a_delay_is_recorded_as_cancelled() {
    let mock = MockUpstream::start().await;
    mock.script(None, vec![Behavior::hang(), Behavior::ok().with_delay_ms(60_000)]);
    for _ in 0..2 {
        let url = format!("{}/chat/completions", mock.v1_url());
        let body = chat("wait");
        let n = mock.requests().len();
        let task = tokio::spawn(async move { client::post_json(&url, Some("k"), &body).await });
        mock.wait_for("request arrived", WAIT, |l| l.len() == n + 1).await;
        task.abort();
        let log = mock.wait_for("cancelled", WAIT, |l| l.len() == n + 1 && l[n].cancelled).await;
        assert_eq!(log[n].status, None);
        assert!(!log[n].finished);
    }
}

#[tokio::test]
async fn models_listing_does_not_take_scripts() {
    let mock = MockUpstream::start().await;
    mock.script(None, vec![Behavior::status(500)]);
    let resp = client::get(&format!("{}/models", mock.v1_url()), Some("k")).await;
    assert_eq!(resp.status, 200);
    let ids: Vec<String> =
        resp.json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    assert!(ids.contains(&"gpt-4o".to_owned()) && ids.contains(&"gpt-5".to_owned()), "{ids:?}");
    assert_eq!(mock.pending_behaviors(), 1);
    assert_eq!(mock.requests()[0].path, "/v1/models");
}

#[tokio::test]
async fn credentials_of_every_protocol_are_recognised() {
    let mock = MockUpstream::start().await;
    let url = format!("{}/v1/messages", mock.url());
    mock.script(None, vec![Behavior::json(json!({"type": "message"})); 3]);
    let r = client::send(Method::POST, &url, &[("x-api-key", "sk-ant")], "{}").await;
    assert_eq!(r.header("x-mock-key"), Some("sk-ant"));
    let r = client::send(Method::POST, &url, &[("x-goog-api-key", "g-1")], "{}").await;
    assert_eq!(r.header("x-mock-key"), Some("g-1"));
    let r = client::send(Method::POST, &format!("{url}?alt=sse&key=g-2"), &[], "not json").await;
    assert_eq!(r.header("x-mock-key"), Some("g-2"));
    let log = mock.requests();
    assert_eq!(log[2].raw_body.as_deref(), Some("not json"));
    assert_eq!(log[2].body, Value::Null);
    // Without a script, unknown paths get a 404 rather than a chat reply.
    let r = client::send(Method::POST, &format!("{}/v1/unknown", mock.url()), &[], "{}").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn control_api_over_http() {
    let mock = MockUpstream::start().await;
    let script =
        json!({"key": "sk-up-3", "behaviors": [{"status": 503}, {"sse": ["data: {\"a\":1}\n\n"], "interval_ms": 1}]});
    let r = client::post_json(&format!("{}/_mock/script", mock.url()), None, &script).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["queued"], 2);
    let bad = client::post_json(&format!("{}/_mock/script", mock.url()), None, &json!({"behaviors": 3})).await;
    assert_eq!(bad.status, 400);

    assert_eq!(post(&mock, "sk-up-3", &chat("x")).await.status, 503);
    let r = post(&mock, "sk-up-3", &chat("y")).await;
    assert_eq!(r.text(), "data: {\"a\":1}\n\n");

    let log = client::get(&format!("{}/_mock/requests", mock.url()), None).await.json();
    let reqs = log["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 2, "control calls are not logged: {log}");
    for field in ["seq", "method", "path", "authorization", "headers", "body", "received_ms", "finished", "cancelled"] {
        assert!(reqs[0].get(field).is_some(), "missing {field}: {}", reqs[0]);
    }
    assert_eq!(reqs[0]["status"], 503);
    assert_eq!(reqs[1]["body"]["messages"][0]["content"], "y");
    let parsed: RequestLog = serde_json::from_value(log.clone()).unwrap();
    assert_eq!(parsed.requests[1].seq, 2);

    mock.script(None, vec![Behavior::hang()]);
    let r = client::post_json(&format!("{}/_mock/reset", mock.url()), None, &json!({})).await;
    assert_eq!(r.status, 200);
    assert!(mock.requests().is_empty());
    assert_eq!(mock.pending_behaviors(), 0);
    // Sequence numbers keep counting after a reset, so late updates never hit a new entry.
    assert_eq!(post(&mock, "k", &chat("z")).await.header("x-mock-request"), Some("3"));
}

mod protocols;
