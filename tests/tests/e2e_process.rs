//! The server as a process: health endpoints, graceful shutdown on SIGTERM, `xai-server check`.

use std::time::Duration;

use serde_json::Value;
use xai_tests::client::{self, SseEvent};
use xai_tests::fixtures::{ACME_KEY, CONTRACT_CONFIG, Gateway, chat_chunks, num, sse_events, stream_body, text};
use xai_tests::harness::{USAGE_TIMEOUT, XaiServer, run_check};
use xai_tests::mock::Behavior;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz() {
    let gw = Gateway::start().await;
    let health = client::get(&gw.url("/healthz"), None).await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.text().trim(), "ok");
    let ready = client::get(&gw.url("/readyz"), None).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
}

/// The value of one sample line of a Prometheus exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_answers_usage_writes_and_key_health() {
    let gw = Gateway::start().await;
    gw.mock_a.script(None, vec![Behavior::status(401)]);
    for i in 0..3 {
        let r = gw.chat(ACME_KEY, &xai_tests::fixtures::chat_body("gpt-4o", &format!("m{i}"))).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let refused = gw.chat("xai-not-a-key", &xai_tests::fixtures::chat_body("gpt-4o", "x")).await;
    assert_eq!(refused.status, 401);
    let m = tokio::time::timeout(USAGE_TIMEOUT, async {
        loop {
            let m = client::get(&gw.url("/metrics"), None).await;
            assert_eq!(m.status, 200);
            let t = m.text();
            if sample(&t, "xai_usage_written_total").unwrap_or(0.0) >= 3.0 {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("usage rows are written within the usage timeout");
    assert_eq!(sample(&m, r#"xai_responses_total{class="2xx"}"#), Some(3.0), "{m}");
    assert_eq!(sample(&m, r#"xai_responses_total{class="4xx"}"#), Some(1.0), "{m}");
    assert_eq!(sample(&m, "xai_usage_spool_pending"), Some(0.0), "{m}");
    // The upstream 401 disabled one key of mock-a; the others stayed healthy.
    let disabled: f64 = m
        .lines()
        .filter(|l| l.starts_with("xai_upstream_key_disabled{provider=\"mock-a\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(disabled, 1.0, "{m}");
    assert!(!m.contains("sk-up"), "no upstream key material in metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_stream_finish_then_exits_zero() {
    let mut gw = Gateway::start().await;
    let pieces = ["one ", "two ", "three ", "four ", "five ", "six"];
    let chunks = chat_chunks("chatcmpl-drain", "gpt-4o", &pieces, Some((12, 6)));
    gw.mock_a.script(None, vec![Behavior::sse(sse_events(&chunks)).with_interval_ms(300)]);

    let resp = gw.chat_stream(ACME_KEY, &stream_body("gpt-4o", "drain me", false)).await;
    assert_eq!(resp.status, 200);
    let mut sse = resp.sse();
    let first = sse.next_event().await.expect("stream").expect("first event");
    gw.server.sigterm();

    let mut events = vec![first];
    loop {
        match sse.next_event().await {
            Ok(Some(ev)) => events.push(ev),
            Ok(None) => break,
            Err(e) => panic!("the in-flight stream was cut by the shutdown after {} events: {e}", events.len()),
        }
    }
    let content: String = events
        .iter()
        .filter_map(SseEvent::json)
        .filter_map(|v| v.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_owned))
        .collect();
    assert_eq!(content, pieces.concat(), "the whole stream must arrive");
    assert!(events.last().is_some_and(SseEvent::is_done), "ends with [DONE]");
    assert!(gw.mock_a.requests()[0].finished, "the upstream stream ran to its end");

    let status = gw.server.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_flushed_on_sigterm() {
    let mut gw = Gateway::start().await;
    let resp = gw.chat(ACME_KEY, &xai_tests::fixtures::chat_body("gpt-4o", "remember me")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    gw.server.sigterm();
    let status = gw.server.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");

    // A new process on the same data dir reads what the first one flushed.
    let again = XaiServer::builder(CONTRACT_CONFIG)
        .var("MOCK_A", gw.mock_a.url())
        .var("MOCK_B", gw.mock_b.url())
        .data_dir(gw.server.data_dir())
        .start()
        .await;
    let rec = again.wait_usage(|r| r["requested_model"] == "gpt-4o", USAGE_TIMEOUT).await;
    assert_eq!(text(&rec, "status"), "ok");
    assert_eq!((num(&rec, "prompt_tokens"), num(&rec, "completion_tokens")), (10, 5));
}

fn output_text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Whether `report` points at line `line` in any usual way ("line 7", "xai.toml:7:", "7 | …").
fn names_line(report: &str, line: usize) -> bool {
    let lower = report.to_lowercase();
    lower.contains(&format!("line {line}"))
        || lower.contains(&format!(":{line}:"))
        || lower.lines().any(|l| l.trim_start().starts_with(&format!("{line} |")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_accepts_the_contract_config() {
    let config =
        CONTRACT_CONFIG.replace("{{MOCK_A}}", "http://127.0.0.1:9").replace("{{MOCK_B}}", "http://127.0.0.1:9");
    let out = run_check(&config).await;
    assert!(out.status.success(), "xai-server check rejected a valid config: {}", output_text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_field_of_the_wrong_type_and_its_line() {
    let config = "admin_token = \"admin-secret\"\n\n[routing]\nattempt_timeout_ms = 2000\nmax_attempts = \"six\"\n";
    //                line 1                        2   3          4                         5
    let out = run_check(config).await;
    let report = output_text(&out);
    assert!(!out.status.success(), "a bad config must fail the check: {report}");
    assert!(report.contains("max_attempts"), "the report must name the field: {report}");
    assert!(names_line(&report, 5), "the report must name line 5: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_an_unknown_field_and_its_line() {
    let config =
        CONTRACT_CONFIG.replace("{{MOCK_A}}", "http://127.0.0.1:9").replace("{{MOCK_B}}", "http://127.0.0.1:9");
    let line = config.lines().position(|l| l.starts_with("models = [\"gpt-*\"]")).expect("a models line") + 1;
    let config = config.replacen("models = [\"gpt-*\"]", "modles = [\"gpt-*\"]", 1);
    let out = run_check(&config).await;
    let report = output_text(&out);
    assert!(!out.status.success(), "a misspelt field must fail the check: {report}");
    assert!(report.contains("modles"), "the report must name the field: {report}");
    assert!(names_line(&report, line), "the report must name line {line}: {report}");
}
