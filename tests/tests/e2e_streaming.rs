//! Streams end to end: forwarded chunk by chunk, metered from the upstream's usage chunk (asked for on the client's
//! behalf and stripped again), and a client that leaves mid-stream.

use std::time::Duration;

use serde_json::Value;
use xai_tests::client::SseEvent;
use xai_tests::fixtures::{ACME_KEY, Gateway, chat_chunks, num, sse_events, stream_body, streamed_text, text};
use xai_tests::harness::USAGE_TIMEOUT;
use xai_tests::mock::Behavior;

const PIECES: [&str; 6] = ["Hel", "lo ", "from ", "the ", "slow ", "stream"];
const PROMPT_TOKENS: u64 = 21;
const COMPLETION_TOKENS: u64 = 9;

fn has_usage(chunk: &Value) -> bool {
    chunk.get("usage").is_some_and(|u| !u.is_null())
}

/// The scripted chunks and what the client received must agree chunk for chunk on what matters to a client.
fn assert_passed_through(sent: &[Value], received: &[Value]) {
    assert_eq!(received.len(), sent.len(), "chunk count\nsent: {sent:#?}\nreceived: {received:#?}");
    for (s, r) in sent.iter().zip(received) {
        assert_eq!(r["choices"], s["choices"], "chunk choices must pass through unchanged");
        assert_eq!(r["id"], s["id"], "chunk id must pass through unchanged");
        assert_eq!(r["object"], "chat.completion.chunk");
        if has_usage(s) {
            assert_eq!(r["usage"], s["usage"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_forwarded_chunk_by_chunk_and_metered() {
    let gw = Gateway::start().await;
    let chunks = chat_chunks("chatcmpl-slow", "gpt-4o", &PIECES, Some((PROMPT_TOKENS, COMPLETION_TOKENS)));
    let interval = Duration::from_millis(300);
    gw.mock_a.script(None, vec![Behavior::sse(sse_events(&chunks)).with_interval_ms(interval.as_millis() as u64)]);

    // The client does not ask for usage.
    let resp = gw.chat_stream(ACME_KEY, &stream_body("gpt-4o", "stream please", false)).await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("content-type").is_some_and(|c| c.starts_with("text/event-stream")),
        "{:?}",
        resp.header("content-type")
    );
    let sent_at = resp.sent_at;
    let mut sse = resp.sse();
    let mut events = Vec::new();
    let mut upstream_finished_at_first_content = None;
    while let Some(ev) = sse.next_event().await.expect("the stream must end cleanly") {
        let is_content = ev.json().and_then(|v| v.pointer("/choices/0/delta/content")?.as_str().map(|s| !s.is_empty()));
        if is_content == Some(true) && upstream_finished_at_first_content.is_none() {
            upstream_finished_at_first_content = Some(gw.mock_a.requests()[0].finished);
        }
        events.push(ev);
    }

    // Forwarded as it comes: the first content chunk arrived while the upstream was still sending.
    assert_eq!(
        upstream_finished_at_first_content,
        Some(false),
        "the first content chunk must arrive before the upstream finished"
    );
    let first = events.first().expect("events").at.duration_since(sent_at);
    let total = events.last().expect("events").at.duration_since(sent_at);
    let upstream_time = interval * (chunks.len() as u32); // pauses between every event incl. [DONE]
    assert!(total >= upstream_time - Duration::from_millis(150), "total {total:?} < upstream {upstream_time:?}");
    assert!(first < total / 3, "first chunk after {first:?} of {total:?}: the stream was buffered");
    let spaced = events.windows(2).filter(|w| w[1].at.duration_since(w[0].at) >= interval / 2).count();
    assert!(spaced >= chunks.len() - 2, "chunks must arrive spaced like the upstream sent them ({spaced} gaps)");

    // Passed through, minus the usage chunk the client did not ask for.
    assert!(events.last().is_some_and(SseEvent::is_done), "ends with [DONE]: {events:?}");
    let received: Vec<Value> = events.iter().filter(|e| !e.is_done()).map(|e| e.json().expect("JSON chunk")).collect();
    assert!(
        received.iter().all(|c| !has_usage(c) && c["choices"] != serde_json::json!([])),
        "no usage chunk: {received:#?}"
    );
    let sent_without_usage: Vec<Value> = chunks.iter().filter(|c| !has_usage(c)).cloned().collect();
    assert_passed_through(&sent_without_usage, &received);
    assert_eq!(streamed_text(&events), PIECES.concat());

    // Asked for usage on the client's behalf.
    let up = &gw.mock_a.requests()[0];
    assert_eq!(up.body["stream"], true);
    assert_eq!(up.body.pointer("/stream_options/include_usage"), Some(&Value::Bool(true)), "{}", up.body);

    let rec = gw.server.wait_usage(|r| r["requested_model"] == "gpt-4o", USAGE_TIMEOUT).await;
    assert_eq!(text(&rec, "status"), "ok", "{rec:#}");
    assert_eq!(num(&rec, "prompt_tokens"), PROMPT_TOKENS, "{rec:#}");
    assert_eq!(num(&rec, "completion_tokens"), COMPLETION_TOKENS, "{rec:#}");
    assert_ne!(rec["estimated"], true, "counts came from the upstream: {rec:#}");
    let ttft = num(&rec, "ttft_ms");
    let latency = num(&rec, "latency_ms");
    assert!(ttft < latency, "ttft {ttft} ms must be below the whole latency {latency} ms");
    assert!(latency >= (upstream_time.as_millis() as u64) - 150, "latency {latency} ms covers the whole stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_chunk_reaches_a_client_that_asked_for_it() {
    let gw = Gateway::start().await;
    let chunks = chat_chunks("chatcmpl-usage", "gpt-4o", &PIECES, Some((PROMPT_TOKENS, COMPLETION_TOKENS)));
    gw.mock_a.script(None, vec![Behavior::sse(sse_events(&chunks))]);

    let resp = gw.chat_stream(ACME_KEY, &stream_body("gpt-4o", "with usage", true)).await;
    assert_eq!(resp.status, 200);
    let events = resp.sse().collect().await.expect("the stream must end cleanly");
    assert!(events.last().is_some_and(SseEvent::is_done), "ends with [DONE]: {events:?}");
    let received: Vec<Value> = events.iter().filter(|e| !e.is_done()).map(|e| e.json().expect("JSON chunk")).collect();
    assert_passed_through(&chunks, &received);
    let usage: Vec<&Value> = received.iter().filter(|c| has_usage(c)).collect();
    assert_eq!(usage.len(), 1, "exactly one usage chunk: {received:#?}");
    assert_eq!(usage[0]["usage"]["prompt_tokens"], PROMPT_TOKENS);
    assert_eq!(usage[0]["usage"]["completion_tokens"], COMPLETION_TOKENS);
    assert_eq!(usage[0]["choices"], serde_json::json!([]));

    let rec = gw.server.wait_usage(|r| r["requested_model"] == "gpt-4o", USAGE_TIMEOUT).await;
    assert_eq!((num(&rec, "prompt_tokens"), num(&rec, "completion_tokens")), (PROMPT_TOKENS, COMPLETION_TOKENS));
    assert_eq!(text(&rec, "status"), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_mid_stream_cancels_upstream_and_is_billed() {
    let gw = Gateway::start().await;
    let pieces: Vec<String> = (0..12).map(|i| format!("part{i} ")).collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let chunks = chat_chunks("chatcmpl-leave", "gpt-4o", &pieces, Some((PROMPT_TOKENS, 40)));
    gw.mock_a.script(None, vec![Behavior::sse(sse_events(&chunks)).with_interval_ms(250)]);

    let resp = gw.chat_stream(ACME_KEY, &stream_body("gpt-4o", "I will leave", false)).await;
    assert_eq!(resp.status, 200);
    let mut sse = resp.sse();
    let mut content = String::new();
    while content.matches("part").count() < 3 {
        let ev = sse.next_event().await.expect("stream").expect("more events before the client leaves");
        content.push_str(
            ev.json()
                .and_then(|v| v.pointer("/choices/0/delta/content")?.as_str().map(str::to_owned))
                .as_deref()
                .unwrap_or(""),
        );
    }
    assert_eq!(content, "part0 part1 part2 ");
    sse.disconnect();

    // The gateway must let go of the upstream stream, well before the upstream would have finished (~3 s more).
    let log = gw
        .mock_a
        .wait_for("the upstream request to be cancelled", Duration::from_secs(5), |l| {
            l.first().is_some_and(|r| r.cancelled)
        })
        .await;
    assert!(!log[0].finished, "{:?}", log[0]);

    let rec = gw.server.wait_usage(|r| r["status"] == "client_disconnected", USAGE_TIMEOUT).await;
    assert_eq!(rec["estimated"], true, "a stream cut short has estimated counts: {rec:#}");
    assert!(num(&rec, "completion_tokens") > 0, "what was produced is billed: {rec:#}");
    assert!(num(&rec, "completion_tokens") < 40, "not the full upstream count, which never arrived: {rec:#}");
    assert_eq!(text(&rec, "requested_model"), "gpt-4o");
}
