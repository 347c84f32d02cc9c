//! No key material leaves the gateway: not in its logs (debug level, with failing and succeeding upstream calls),
//! not in the admin API, not in error messages, not in its database files.

use xai_tests::client;
use xai_tests::fixtures::{ACME_KEY, CONTRACT_CONFIG, Gateway, MOCK_A_KEYS, RESEARCH_KEY, chat_body};
use xai_tests::harness::{USAGE_TIMEOUT, XaiServer};
use xai_tests::mock::{Behavior, MockUpstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_material_in_logs_admin_answers_errors_or_the_database() {
    let mock_a = MockUpstream::start().await;
    let mock_b = MockUpstream::start().await;
    let server = XaiServer::builder(CONTRACT_CONFIG)
        .var("MOCK_A", mock_a.url())
        .var("MOCK_B", mock_b.url())
        .env("XAI_LOG", "debug")
        .start()
        .await;
    let gw = Gateway { server, mock_a, mock_b };
    // A rejected key, a rate-limited one, then successes and refusals of every kind.
    gw.mock_a.script(Some("sk-up-1"), vec![Behavior::status(401)]);
    gw.mock_a.script(Some("sk-up-2"), vec![Behavior::status(429)]);
    for i in 0..4 {
        let r = gw.chat(ACME_KEY, &chat_body("gpt-4o", &format!("s{i}"))).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut texts = Vec::new();
    for (key, model) in [(RESEARCH_KEY, "gpt-5"), ("sk-wrong-key-123", "gpt-4o"), (ACME_KEY, "nope-model")] {
        texts.push(gw.chat(key, &chat_body(model, "x")).await.text());
    }
    gw.server.wait_usage(|r| r["requested_model"] == "gpt-4o", USAGE_TIMEOUT).await;
    for path in ["/admin/v1/providers", "/admin/v1/upstream-keys", "/admin/v1/usage?limit=100", "/admin/v1/accounts"] {
        let r = client::get(&gw.url(path), Some("admin-secret")).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        texts.push(r.text());
    }
    texts.push(gw.server.stderr());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(gw.server.data_dir()).expect("data dir") {
        let p = entry.expect("entry").path();
        if p.is_file() {
            files.push(String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned());
        }
    }
    assert!(files.iter().any(|f| f.contains("v1:")), "the database (with its sealed upstream keys) was read");
    texts.extend(files);
    for t in &texts {
        for secret in MOCK_A_KEYS.iter().chain([&ACME_KEY, &RESEARCH_KEY, &"admin-secret", &"sk-wrong-key-123"]) {
            assert!(!t.contains(secret), "{secret} leaked into: {}", &t[..t.len().min(400)]);
        }
    }
}
