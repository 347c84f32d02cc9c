//! Budgets end to end (issue 6): a real `xai-server` on its embedded SQLite default, the mock upstream answering
//! slowly so that concurrent requests overlap. Admission holds each request's upper-bound cost on the funds it draws
//! on; settlement replaces the hold with the metered cost. Also: prices through the admin API, unpriced models
//! refused by configuration, `x-ratelimit-*` headers, days in the configured time zone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use xai_tests::admin::{AdminApi, expect, id_of};
use xai_tests::client::{self, HttpResponse};
use xai_tests::fixtures::{assert_openai_error, chat_body, stream_body};
use xai_tests::harness::XaiServer;
use xai_tests::mock::{Behavior, MockUpstream};

const ROOT: &str = "admin-secret";
/// Output cap every request asks for: with the body size, the upper bound admission holds.
const MAX_TOKENS: u64 = 1000;
/// 1000 credits per million tokens: 1000 micro-credits per token, input and output alike.
const RATE: &str = "1000";

fn config(extra: &str) -> String {
    format!(
        r#"admin_token = "{ROOT}"

[routing]
attempt_timeout_ms = 5000
request_timeout_ms = 10000

[[providers]]
name = "mock"
protocol = "openai"
base_url = "{{{{MOCK}}}}/v1"
keys = ["sk-up-1"]
level = 1
models = ["gpt-*"]

[[accounts]]
name = "acme"
keys = ["sk-acme"]
role = "owner"

[pricing."gpt-4o-mini"]
input = {RATE}
output = {RATE}
{extra}
"#
    )
}

fn body(stream: bool) -> Value {
    let mut b = if stream { stream_body("gpt-4o-mini", "hello", true) } else { chat_body("gpt-4o-mini", "hello") };
    b["max_tokens"] = json!(MAX_TOKENS);
    b
}

/// The hold admission takes for `body`, in micro-credits: (⌈bytes / 4⌉ + max_tokens) tokens at 1000 µ each.
fn hold_of(body: &Value) -> i64 {
    let bytes = serde_json::to_vec(body).unwrap().len() as i64;
    ((bytes + 3) / 4 + MAX_TOKENS as i64) * 1000
}

fn credits(micros: i64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

fn micros(s: &str) -> i64 {
    let (i, f) = s.split_once('.').unwrap_or((s, ""));
    i.parse::<i64>().unwrap() * 1_000_000 + format!("{f:0<6}").parse::<i64>().unwrap()
}

async fn start(extra: &str, mock: &MockUpstream) -> XaiServer {
    XaiServer::builder(config(extra)).var("MOCK", mock.url()).start().await
}

async fn acme(api: &AdminApi) -> u64 {
    let accounts = api.accounts().await;
    id_of(accounts.iter().find(|a| a["path"] == "acme").expect("acme"))
}

/// Sends 20 requests at once on an account funded for 4 holds and a half; returns the statuses.
async fn burst(server: &XaiServer, stream: bool) -> Vec<(u16, String)> {
    let url = format!("{}/v1/chat/completions", server.url());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let b = body(stream);
                if stream {
                    let mut s = client::post_json_stream(&url, Some("sk-acme"), &b).await;
                    let status = s.status.as_u16();
                    let text = String::from_utf8_lossy(&s.read_to_end().await.unwrap_or_default()).into_owned();
                    (status, text)
                } else {
                    let r: HttpResponse = client::post_json(&url, Some("sk-acme"), &b).await;
                    (r.status.as_u16(), r.text())
                }
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn funded_for_four(stream: bool) {
    let mock = MockUpstream::start().await;
    // Slow answers: all 20 requests are in flight together.
    mock.script(None, (0..20).map(|_| Behavior::ok().with_delay_ms(400)).collect());
    let server = start("", &mock).await;
    let api = AdminApi::new(&server, Some(ROOT));
    let id = acme(&api).await;
    let hold = hold_of(&body(stream));
    api.credits(id, &credits(4 * hold + hold / 2)).await;

    let answers = burst(&server, stream).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 4, "funds for 4 holds admit 4: {answers:?}");
    for (status, text) in answers.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 429, "{text}");
        assert!(text.contains("insufficient credits: account acme has"), "{text}");
    }
    // Every admitted request is settled at its real (much smaller) cost; the balance never went below zero.
    let done = server
        .wait_usage_all(|rs| rs.iter().filter(|r| r["status"] == "ok").count() >= 4, Duration::from_secs(10))
        .await
        .into_iter()
        .filter(|r| r["status"] == "ok")
        .collect::<Vec<_>>();
    assert!(done.len() >= 4, "{done:?}");
    let spent: i64 = done.iter().map(|r| micros(r["cost"].as_str().unwrap())).sum();
    assert!(spent > 0 && spent < 4 * hold, "settled at the metered cost: {spent}");
    let balance = micros(&api.balance(id).await);
    assert_eq!(balance, 4 * hold + hold / 2 - spent);
    // What was held and not used is free again: the next request passes.
    let again =
        client::post_json(&format!("{}/v1/chat/completions", server.url()), Some("sk-acme"), &body(false)).await;
    assert_eq!(again.status, 200, "{}", again.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_on_funds_for_four_admit_four() {
    funded_for_four(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_with_streaming() {
    funded_for_four(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_through_the_admin_api_persist_and_bill() {
    let mock = MockUpstream::start().await;
    let dir = xai_tests::harness::TempDir::new("budgets-prices");
    let server = XaiServer::builder(config("")).var("MOCK", mock.url()).data_dir(dir.path()).start().await;
    let api = AdminApi::new(&server, Some(ROOT));
    let r =
        api.send_raw(http::Method::PUT, "/pricing/gpt-4o", r#"{"input":"2","output":"8","cached_input":"1"}"#).await;
    let v = expect(&r, 200, "set a price");
    assert_eq!(v["price"]["output"], "8", "{v}");
    let bad = api.send_raw(http::Method::PUT, "/pricing/gpt-4o", r#"{"input":"-1","output":"8"}"#).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    let list = expect(&api.get("/pricing").await, 200, "list prices");
    assert_eq!(list["prices"]["gpt-4o"]["input"], "2", "{list}");
    assert_eq!(list["unpriced"], "free");
    // A key of a non-root account cannot set prices.
    let denied =
        api.with_token("sk-acme").send_raw(http::Method::PUT, "/pricing/gpt-4o", r#"{"input":"0","output":"0"}"#).await;
    assert_eq!(denied.status, 403, "{}", denied.text());

    let resp = client::post_json(
        &format!("{}/v1/chat/completions", server.url()),
        Some("sk-acme"),
        &chat_body("gpt-4o", "hi"),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let rec = server.wait_usage(|r| r["requested_model"] == "gpt-4o", Duration::from_secs(5)).await;
    let u = &resp.json()["usage"];
    let expected = (u["prompt_tokens"].as_i64().unwrap() * 2_000_000
        + u["completion_tokens"].as_i64().unwrap() * 8_000_000
        + 999_999)
        / 1_000_000;
    assert_eq!(micros(rec["cost"].as_str().unwrap()), expected, "{rec}");

    // An API price overrides the file's; deleting it falls back to the file's.
    let over = api.send_raw(http::Method::PUT, "/pricing/gpt-4o-mini", r#"{"input":"5","output":"5"}"#).await;
    assert_eq!(expect(&over, 200, "override")["price"]["input"], "5");
    let back = expect(&api.delete("/pricing/gpt-4o-mini").await, 200, "delete the override");
    assert_eq!(back["price"]["input"], RATE, "the file's price again: {back}");

    // The price outlives a restart on the same data directory.
    drop(server);
    let server = XaiServer::builder(config("")).var("MOCK", mock.url()).data_dir(dir.path()).start().await;
    let api = AdminApi::new(&server, Some(ROOT));
    let list = expect(&api.get("/pricing").await, 200, "list prices");
    assert_eq!(list["prices"]["gpt-4o"]["output"], "8", "{list}");
    assert_eq!(list["prices"]["gpt-4o-mini"]["input"], RATE, "{list}");
    let gone = expect(&api.delete("/pricing/gpt-4o").await, 200, "delete");
    assert_eq!(gone["price"], Value::Null, "{gone}");
    assert_eq!(api.get("/pricing/gpt-4o").await.status, 404);
    assert_eq!(api.delete("/pricing/gpt-4o").await.status, 404, "nothing left to delete");
}

#[tokio::test]
async fn unpriced_models_are_refused_when_configured() {
    let mock = MockUpstream::start().await;
    let server = start("[billing]\nunpriced = \"refuse\"\n", &mock).await;
    let url = format!("{}/v1/chat/completions", server.url());
    let resp = client::post_json(&url, Some("sk-acme"), &chat_body("gpt-4.1", "hi")).await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    let err = assert_openai_error(&resp);
    assert!(err["message"].as_str().unwrap().contains("\"gpt-4.1\" has no price"), "{err}");
    assert_eq!(mock.requests().len(), 0, "nothing reached the upstream");
    let priced = client::post_json(&url, Some("sk-acme"), &chat_body("gpt-4o-mini", "hi")).await;
    assert_eq!(priced.status, 200, "{}", priced.text());
}

#[tokio::test]
async fn rate_limit_headers_and_refusals_name_the_bound_and_account() {
    let mock = MockUpstream::start().await;
    let server = start("", &mock).await;
    let api = AdminApi::new(&server, Some(ROOT));
    let id = acme(&api).await;
    let team = id_of(&api.create_account("team", Some(id), json!({"rpm": 3, "tpd": 1000000})).await);
    let (_, key) = api.new_key(team).await;
    let url = format!("{}/v1/chat/completions", server.url());
    for i in 0..3u64 {
        let resp = client::post_json(&url, Some(&key), &chat_body("gpt-4o-mini", "hi")).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(resp.header("x-ratelimit-remaining-requests"), Some((2 - i).to_string().as_str()));
        assert!(resp.header("x-ratelimit-reset-requests").is_some_and(|r| r.ends_with('s')));
        assert_eq!(resp.header("x-ratelimit-limit-tokens"), Some("1000000"));
        let left: u64 = resp.header("x-ratelimit-remaining-tokens").unwrap().parse().unwrap();
        assert!(left < 1_000_000);
    }
    let refused = client::post_json(&url, Some(&key), &chat_body("gpt-4o-mini", "hi")).await;
    assert_eq!(refused.status, 429);
    let err = assert_openai_error(&refused);
    assert!(err["message"].as_str().unwrap().contains("rpm 3 of account acme/team"), "{err}");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(refused.header("x-ratelimit-limit-requests"), Some("3"), "a refusal shows the bound that refused");
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));
}

#[tokio::test]
async fn days_start_at_midnight_in_the_configured_time_zone() {
    let mock = MockUpstream::start().await;
    // UTC+14 all year: its date is ahead of UTC's for 14 hours of every day.
    let server = start("[billing]\ntime_zone = \"Pacific/Kiritimati\"\n", &mock).await;
    let api = AdminApi::new(&server, Some(ROOT));
    let id = acme(&api).await;
    let today = api.today(id).await;
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 + 14 * 3600;
    let days = secs.div_euclid(86_400);
    let expected = civil(days);
    assert_eq!(today["date"], expected, "{today}");
    assert!(server.stderr().contains("days start at midnight Pacific/Kiritimati"));
    // A zone that does not exist is a configuration error.
    let bad = config("[billing]\ntime_zone = \"Mars/Olympus\"\n").replace("{{MOCK}}", "http://127.0.0.1:9");
    let out = xai_tests::harness::run_check(&bad).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown time zone"), "{out:?}");
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01), by Howard Hinnant's civil-from-days.
fn civil(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
