//! Requests the gateway must refuse, each in OpenAI's error shape and without reaching the upstream.

use http::Method;
use serde_json::json;
use xai_tests::client;
use xai_tests::fixtures::{ACME_KEY, Gateway, MOCK_A_KEYS, RESEARCH_KEY, assert_openai_error, chat_body, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_virtual_key_is_401_without_echoing_the_secret() {
    let gw = Gateway::start().await;
    let secret = "sk-unknown-5f3c9e1a7b";
    let resp = gw.chat(secret, &chat_body("gpt-4o", "hi")).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_openai_error(&resp);
    assert!(!resp.text().contains(secret), "the presented key must not be echoed: {}", resp.text());

    let anonymous = client::post_json(&gw.url("/v1/chat/completions"), None, &chat_body("gpt-4o", "hi")).await;
    assert_eq!(anonymous.status, 401, "no credential at all: {}", anonymous.text());
    assert_openai_error(&anonymous);

    assert!(gw.mock_a.requests().is_empty() && gw.mock_b.requests().is_empty(), "nothing may reach an upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_outside_a_childs_allow_models_is_403() {
    let gw = Gateway::start().await;
    let resp = gw.chat(RESEARCH_KEY, &chat_body("gpt-5", "hi")).await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_openai_error(&resp);
    assert!(gw.mock_a.requests().is_empty() && gw.mock_b.requests().is_empty(), "nothing may reach an upstream");

    // The same key may use what its allow_models grants, and the parent may use gpt-5.
    let ok = gw.chat(RESEARCH_KEY, &chat_body("gpt-4o-mini", "allowed")).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["choices"][0]["message"]["content"], "mock reply: allowed");
    let parent = gw.chat(ACME_KEY, &chat_body("gpt-5", "parent")).await;
    assert_eq!(parent.status, 200, "{}", parent.text());
    let models: Vec<_> = gw.mock_a.requests().iter().map(|r| r.model().map(str::to_owned)).collect();
    assert_eq!(models, [Some("gpt-4o-mini".to_owned()), Some("gpt-5".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400_in_openai_shape() {
    let gw = Gateway::start().await;
    let auth = format!("Bearer {ACME_KEY}");
    let resp = client::send(
        Method::POST,
        &gw.url("/v1/chat/completions"),
        &[("authorization", &auth), ("content-type", "application/json")],
        r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}"#,
    )
    .await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    let err = assert_openai_error(&resp);
    assert_eq!(text(&err, "type"), "invalid_request_error", "{err}");
    assert!(gw.mock_a.requests().is_empty(), "nothing may reach the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_max_body_bytes_is_413_and_one_below_passes() {
    let gw = Gateway::start().await;
    // server.max_body_bytes = 65536 in the contract config.
    let big = chat_body("gpt-4o", &"x".repeat(70_000));
    let resp = gw.chat(ACME_KEY, &big).await;
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_openai_error(&resp);
    assert!(gw.mock_a.requests().is_empty(), "nothing may reach the upstream");

    let text = "y".repeat(60_000);
    let fits = gw.chat(ACME_KEY, &chat_body("gpt-4o", &text)).await;
    assert_eq!(fits.status, 200, "a 60 kB body is within the limit: {}", fits.text());
    let log = gw.mock_a.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].body["messages"][0]["content"], json!(text), "the body must arrive intact");
    assert!(MOCK_A_KEYS.contains(&log[0].key.as_deref().unwrap_or("")), "{:?}", log[0].key);
}
