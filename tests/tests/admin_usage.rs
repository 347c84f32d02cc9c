//! Admin API, usage analytics: `GET /admin/v1/usage?group_by=account|model|day|key` with filters, sub-account
//! rankings (`rollup=children`, `order`, `top`), the gap-free daily timeline, CSV export, scoping to an admin key's
//! subtree and 400s naming the bad parameter; on SQLite (the default) and with `--database-url memory`. The traffic
//! is real: chat requests through the gateway to the mock upstream.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use xai_tests::admin::{ADMIN_CONFIG, AdminApi, MOCK_REPLY_COST, admin_gateway, assert_error, expect, id_of, utc_date};
use xai_tests::fixtures::{Gateway, chat_body};
use xai_tests::harness::XaiServer;
use xai_tests::mock::MockUpstream;

/// The tree, its keys and the traffic sent through them.
struct Seeded {
    acme: u64,
    research: u64,
    nlp: u64,
    ops: u64,
    zeta: u64,
    /// Key ids: acme's, research's two, nlp's, ops's, zeta's.
    keys: BTreeMap<&'static str, u64>,
    /// An owner/admin key of `research`.
    research_admin: String,
}

const PRICED: &str = "gpt-4o-mini";
const FREE: &str = "gpt-4o";

/// acme (1 priced) → research (2 priced on r1, 1 free on r2) → nlp (3 priced); acme → ops (4 free); zeta (1 priced).
/// Each reply is 10 prompt + 5 completion tokens; a priced one costs [`MOCK_REPLY_COST`] (2) credits.
async fn seed(gw: &Gateway, api: &AdminApi) -> Seeded {
    assert_eq!(MOCK_REPLY_COST, "2");
    let acme = id_of(&api.create_account("acme", None, json!({})).await);
    let research = id_of(&api.create_account("research", Some(acme), json!({"role": "admin"})).await);
    let nlp = id_of(&api.create_account("nlp", Some(research), json!({})).await);
    let ops = id_of(&api.create_account("ops", Some(acme), json!({})).await);
    let zeta = id_of(&api.create_account("zeta", None, json!({})).await);
    // Ample credits: admission reserves an upper bound per request (its input and the default max_tokens).
    api.credits(acme, "100000").await;
    api.credits(zeta, "100000").await;
    for a in [research, ops] {
        api.credits(a, "20000").await;
    }
    api.credits(nlp, "10000").await;
    let mut keys = BTreeMap::new();
    let (research_admin_id, research_admin) = api.new_key(research).await;
    let plan: [(&str, u64, &str, usize); 6] = [
        ("a1", acme, PRICED, 1),
        ("r1", research, PRICED, 2),
        ("r2", research, FREE, 1),
        ("n1", nlp, PRICED, 3),
        ("o1", ops, FREE, 4),
        ("z1", zeta, PRICED, 1),
    ];
    for (name, account, model, n) in plan {
        let (id, key) = api.new_key(account).await;
        keys.insert(name, id);
        for i in 0..n {
            let resp = gw.chat(&key, &chat_body(model, &format!("{name} {i}"))).await;
            assert_eq!(resp.status, 200, "{name} {model}: {}", resp.text());
        }
    }
    assert!(!keys.values().any(|k| *k == research_admin_id));
    // Usage reaches the store after the response: wait for all 12 requests.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = expect(&api.get("/usage?group_by=model").await, 200, "group_by=model");
        if t["total"]["requests"] == 12 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "usage never reached 12 requests: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Seeded { acme, research, nlp, ops, zeta, keys, research_admin }
}

/// `(group value, requests, cost)` of each row, in order.
fn rows(v: &Value, key: &str) -> Vec<(String, i64, String)> {
    v["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows in {v}"))
        .iter()
        .map(|r| {
            let k = match &r[key] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k, r["requests"].as_i64().unwrap_or(-1), r["cost"].as_str().unwrap_or("?").to_owned())
        })
        .collect()
}

fn row(k: &str, requests: i64, cost: &str) -> (String, i64, String) {
    (k.to_owned(), requests, cost.to_owned())
}

async fn get(api: &AdminApi, q: &str) -> Value {
    expect(&api.get(&format!("/usage?{q}")).await, 200, q)
}

async fn check(gw: &Gateway, api: &AdminApi) {
    let s = seed(gw, api).await;
    let k = |n: &str| s.keys[n].to_string();

    // By model: cost descending; every sum column; the total.
    let m = get(api, "group_by=model").await;
    assert_eq!(m["group_by"], "model");
    assert_eq!(rows(&m, "model"), [row(PRICED, 7, "14"), row(FREE, 5, "0")], "{m}");
    let top = &m["rows"][0];
    assert_eq!((top["prompt_tokens"].clone(), top["completion_tokens"].clone()), (json!(70), json!(35)), "{m}");
    for c in ["reasoning_tokens", "cached_tokens", "cache_write_tokens", "images", "searches"] {
        assert!(top[c].is_i64(), "{c} in {top}");
    }
    assert_eq!(m["total"]["requests"], 12);
    assert_eq!(m["total"]["cost"], "14");
    assert_eq!((m["total"]["prompt_tokens"].clone(), m["total"]["completion_tokens"].clone()), (json!(120), json!(60)));

    // Sub-account ranking: acme's direct children with their subtrees, plus acme's own traffic.
    let r = get(api, &format!("group_by=account&account={}&rollup=children", s.acme)).await;
    assert_eq!(rows(&r, "path"), [row("acme/research", 6, "10"), row("acme", 1, "2"), row("acme/ops", 4, "0")], "{r}");
    let ids: Vec<Value> = r["rows"].as_array().unwrap().iter().map(|x| x["account"].clone()).collect();
    assert_eq!(ids, [json!(s.research), json!(s.acme), json!(s.ops)], "{r}");
    assert_eq!((r["total"]["requests"].clone(), r["total"]["cost"].clone()), (json!(11), json!("12")), "{r}");
    let r = get(api, &format!("group_by=account&account={}&rollup=children&order=requests&top=2", s.acme)).await;
    assert_eq!(rows(&r, "path"), [row("acme/research", 6, "10"), row("acme/ops", 4, "0")], "{r}");
    assert_eq!(r["total"]["requests"], 11, "the total counts the rows cut by top: {r}");
    let r = get(api, &format!("group_by=account&account={}&rollup=children&order=tokens", s.acme)).await;
    assert_eq!(r["rows"][0]["path"], "acme/research", "{r}");
    // Roots ranked, without an account.
    let r = get(api, "group_by=account&rollup=children").await;
    assert_eq!(rows(&r, "path"), [row("acme", 11, "12"), row("zeta", 1, "2")], "{r}");
    assert_eq!(r["rows"][1]["account"], json!(s.zeta));

    // By exact account, under research: research and nlp, cost descending.
    let r = get(api, &format!("group_by=account&account={}", s.research)).await;
    assert_eq!(rows(&r, "path"), [row("acme/research/nlp", 3, "6"), row("acme/research", 3, "4")], "{r}");
    assert_eq!(r["rows"][0]["account"], json!(s.nlp));

    // By key, priced model only; one key.
    let r = get(api, &format!("group_by=key&model={PRICED}")).await;
    assert_eq!(
        rows(&r, "key"),
        [
            row(&k("n1"), 3, "6"),
            row(&k("r1"), 2, "4"),
            {
                let (a, z) = (s.keys["a1"], s.keys["z1"]);
                row(&a.min(z).to_string(), 1, "2")
            },
            row(&s.keys["a1"].max(s.keys["z1"]).to_string(), 1, "2")
        ],
        "{r}"
    );
    let r = get(api, &format!("group_by=account&key={}", k("o1"))).await;
    assert_eq!(rows(&r, "path"), [row("acme/ops", 4, "0")], "{r}");
    let r = get(api, &format!("group_by=model&model={FREE}&account={}", s.research)).await;
    assert_eq!(rows(&r, "model"), [row(FREE, 1, "0")], "{r}");

    // The daily timeline: every day of the range, zero where there was no traffic.
    let (from, to) = (utc_date(-2), utc_date(1));
    let d = get(api, &format!("group_by=day&from={from}&to={to}")).await;
    assert_eq!((d["from"].clone(), d["to"].clone()), (json!(from), json!(to)));
    let days: Vec<String> = rows(&d, "day").into_iter().map(|r| r.0).collect();
    assert_eq!(days, (-2..=1).map(utc_date).collect::<Vec<_>>(), "{d}");
    let requests: i64 = rows(&d, "day").iter().map(|r| r.1).sum();
    assert_eq!((requests, d["total"]["requests"].clone()), (12, json!(12)), "{d}");
    assert_eq!(d["rows"][0]["requests"], 0, "{d}");
    assert_eq!(d["rows"][3]["requests"], 0, "tomorrow: {d}");
    let none = get(api, &format!("group_by=model&from={to}&to={to}")).await;
    assert_eq!((none["rows"].clone(), none["total"]["requests"].clone()), (json!([]), json!(0)), "{none}");

    // CSV: a header line and the same rows; records too.
    let resp = api.get("/usage?group_by=model&format=csv").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.header("content-type").is_some_and(|c| c.starts_with("text/csv")), "{:?}", resp.headers);
    let text = resp.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "model,requests,prompt_tokens,completion_tokens,reasoning_tokens,cached_tokens,cache_write_tokens,images,\
             searches,cost",
            "gpt-4o-mini,7,70,35,0,0,0,0,0,14",
            "gpt-4o,5,50,25,0,0,0,0,0,0",
        ],
        "{text}"
    );
    assert!(text.ends_with("\r\n"), "RFC 4180 line ends");
    let resp = api.get(&format!("/usage?group_by=account&account={}&rollup=children&format=csv", s.acme)).await;
    let text = resp.text();
    assert_eq!(text.lines().nth(1), Some(format!("{},acme/research,6,60,30,0,0,0,0,0,10", s.research).as_str()));
    let resp = api.get("/usage?limit=3&format=csv").await;
    let text = resp.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("request_id,time,account,account_path,key,"), "{text}");
    assert!(lines[3].contains("zeta") && lines[3].contains(PRICED), "the newest record last: {text}");

    // Records without group_by work as before, now with filters.
    let rec = get(api, "limit=3").await;
    assert_eq!(rec["records"].as_array().map(Vec::len), Some(3), "{rec}");
    let rec = get(api, &format!("limit=100&account={}&model={PRICED}", s.research)).await;
    let paths: Vec<&str> =
        rec["records"].as_array().unwrap().iter().map(|r| r["account_path"].as_str().unwrap()).collect();
    assert_eq!(paths.len(), 5, "{rec}");
    assert!(paths.iter().all(|p| p.starts_with("acme/research")), "{paths:?}");

    // Scoping: research's admin key sees its subtree only.
    let sub = api.with_token(&s.research_admin);
    let r = get(&sub, "group_by=model").await;
    assert_eq!(rows(&r, "model"), [row(PRICED, 5, "10"), row(FREE, 1, "0")], "{r}");
    let r = get(&sub, "group_by=account&rollup=children").await;
    assert_eq!(rows(&r, "path"), [row("acme/research/nlp", 3, "6"), row("acme/research", 3, "4")], "{r}");
    let r = get(&sub, &format!("group_by=key&key={}", k("z1"))).await;
    assert_eq!(r["rows"], json!([]), "another tree's key shows nothing: {r}");
    for other in [s.acme, s.zeta, s.ops] {
        let resp = sub.get(&format!("/usage?group_by=model&account={other}")).await;
        assert!(matches!(resp.status.as_u16(), 403 | 404), "account {other} outside the subtree: {}", resp.text());
    }
    let recs = get(&sub, "limit=100").await;
    assert!(
        recs["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["account_path"].as_str().unwrap().starts_with("acme/research")),
        "{recs}"
    );
    let resp = api.get("/usage?group_by=model&account=999999").await;
    assert_error(&resp, 404, "not_found", "an unknown account");

    // Bad parameters: 400 naming the parameter.
    for (q, name) in [
        ("group_by=week", "group_by"),
        ("group_by=day&from=2026-13-01", "from"),
        ("group_by=day&from=2026-11-02&to=2026-11-01", "from"),
        ("group_by=model&top=0", "top"),
        ("group_by=model&order=price", "order"),
        ("group_by=model&rollup=children", "rollup"),
        ("group_by=model&account=x", "account"),
        ("group_by=model&colour=red", "colour"),
        ("format=xml", "format"),
        ("top=3", "top"),
    ] {
        let msg = assert_error(&api.get(&format!("/usage?{q}")).await, 400, "bad_request", q);
        assert!(msg.contains(name), "{q}: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_analytics_on_sqlite() {
    let (gw, api) = admin_gateway().await;
    check(&gw, &api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_analytics_in_memory() {
    let mock_a = MockUpstream::start().await;
    let mock_b = MockUpstream::start().await;
    let server = XaiServer::builder(ADMIN_CONFIG)
        .var("MOCK_A", mock_a.url())
        .var("MOCK_B", mock_b.url())
        .arg("--database-url")
        .arg("memory")
        .start()
        .await;
    let gw = Gateway { server, mock_a, mock_b };
    let api = AdminApi::root(&gw.server);
    check(&gw, &api).await;
}
