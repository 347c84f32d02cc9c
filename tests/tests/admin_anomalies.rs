//! Anomaly detection end to end (docs/anomalies.md): a real server, 14 days of deterministic usage history seeded
//! into its SQLite database, a spike today; `GET /admin/v1/anomalies` flags exactly the spiking account with the
//! numbers behind it; with `freeze_on_anomaly` the background scan disables it, its key is refused, and the audit
//! trail says why.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xai_tests::admin::{ADMIN_CONFIG, AdminApi, expect, id_of, str_of, utc_date};
use xai_tests::fixtures::{Gateway, chat_body};

/// Scans every second, so the freeze follows the policy change quickly. The hourly rules are unit-tested; here
/// their minimums are out of reach, so the test's own chat requests (2 credits each) never look like a spike.
const ANOMALIES: &str = r#"
[anomalies]
scan_every_secs = 1
min_hourly_spend = "1000000"
min_hourly_tokens = 1000000000
"#;

/// The admin suites' configuration (mock providers, prices) with the section above last.
fn config() -> String {
    format!("{ADMIN_CONFIG}\n{ANOMALIES}")
}

/// xorshift64*: the same history on every run.
struct Rng(u64);

impl Rng {
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        lo + (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % (hi - lo + 1) as u64) as i64
    }
}

const C: i64 = 1_000_000;

/// Daily spend in credits for days 14..=1 before today (oldest first), between 8 and 12.
fn history(seed: u64) -> Vec<i64> {
    let mut r = Rng(seed);
    (0..14).map(|_| r.between(8, 12)).collect()
}

fn median(v: &[i64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    (v[v.len() / 2 - 1] + v[v.len() / 2]) as f64 / 2.0
}

/// Seeds `usage_daily` rows (two models a day) as the usage writer would have: `(account, days ago, credits)`,
/// with 1 000 prompt and 500 completion tokens per credit.
async fn seed(db: &std::path::Path, rows: &[(u64, i64, i64)]) {
    let url = format!("sqlite://{}", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open the server's database");
    for &(account, ago, credits) in rows {
        for (model, share) in [("gpt-4o", credits / 2), ("gpt-4o-mini", credits - credits / 2)] {
            sqlx::query(
                "INSERT INTO usage_daily (account, model, day, requests, prompt, completion, cost) \
                 VALUES ($1, $2, $3, 10, $4, $5, $6)",
            )
            .bind(account as i64)
            .bind(model)
            .bind(utc_date(-ago))
            .bind(share * 1000)
            .bind(share * 500)
            .bind(share * C)
            .execute(&pool)
            .await
            .expect("seed usage_daily");
        }
    }
    pool.close().await;
}

async fn anomalies(api: &AdminApi, query: &str) -> Vec<Value> {
    let v = expect(&api.get(&format!("/anomalies{query}")).await, 200, "GET /anomalies");
    v["anomalies"].as_array().unwrap_or_else(|| panic!("{v}")).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spiking_account_is_flagged_frozen_and_audited() {
    let gw = Gateway::start_with(&config()).await;
    let api = AdminApi::root(&gw.server);
    let acme = id_of(&api.create_account("acme", None, json!({"role": "owner", "allow_models": ["gpt-*"]})).await);
    let steady = id_of(&api.create_account("steady", Some(acme), json!({})).await);
    let spiky = id_of(&api.create_account("spiky", Some(acme), json!({})).await);
    let fresh = id_of(&api.create_account("fresh", Some(acme), json!({})).await);
    let (_, steady_key) = api.new_key(steady).await;
    let (_, spiky_key) = api.new_key(spiky).await;
    let (_, owner_key) = api.new_key(acme).await;

    // 14 days each: steady and spiky within 8-12 credits a day; today steady spends 10, spiky 200. `fresh` has
    // only 3 days of history and spends 500 today: no baseline yet, not flagged.
    let (hs, hp) = (history(1), history(2));
    let mut rows = Vec::new();
    for (i, (s, p)) in hs.iter().zip(&hp).enumerate() {
        let ago = 14 - i as i64;
        rows.push((steady, ago, *s));
        rows.push((spiky, ago, *p));
        if ago <= 3 {
            rows.push((fresh, ago, 10));
        }
    }
    rows.extend([(steady, 0, 10), (spiky, 0, 200), (fresh, 0, 500)]);
    seed(&gw.server.data_dir().join("xai.db"), &rows).await;

    let list = anomalies(&api, "").await;
    let flagged: Vec<(u64, &str)> = list.iter().map(|f| (f["account"].as_u64().unwrap(), str_of(f, "rule"))).collect();
    assert_eq!(flagged, [(spiky, "daily_spend"), (spiky, "daily_tokens")], "{list:?}");
    let f = &list[0];
    assert_eq!((str_of(f, "path"), str_of(f, "window"), str_of(f, "unit")), ("acme/spiky", "today", "credits"));
    assert_eq!(f["value"], 200.0);
    let med = median(&hp);
    assert_eq!(f["baseline"].as_f64(), Some(med));
    let mad = median(&hp.iter().map(|v| ((*v as f64 - med).abs() * 2.0) as i64).collect::<Vec<_>>()) / 2.0;
    assert_eq!(f["mad"].as_f64(), Some(mad));
    let scale = (1.4826 * mad).max(0.1 * med).max(0.1);
    assert!((f["scale"].as_f64().unwrap() - scale).abs() < 1e-9, "{f}");
    let z = (200.0 - med) / scale;
    assert!((f["score"].as_f64().unwrap() - z).abs() < 1e-3, "{f}: z = {z}");
    assert_eq!((f["threshold"].as_f64(), f["history_days"].as_u64()), (Some(3.5), Some(14)));
    assert!(str_of(f, "message").contains("200 credits"), "{f}");
    assert_eq!((f["frozen"].as_bool(), f["freeze_on_anomaly"].as_bool()), (Some(false), Some(false)));
    assert_eq!(list[1]["value"], 300_000.0, "tokens: prompt + completion");

    // Filtered and scoped: an owner key of acme sees it; `?account=` narrows.
    let owner = api.with_token(&owner_key);
    assert_eq!(anomalies(&owner, &format!("?account={spiky}")).await.len(), 2);
    assert!(anomalies(&owner, &format!("?account={steady}")).await.is_empty());

    // Nothing is frozen without the policy (the spiking account's key is left unused: its spend stays 200).
    assert_eq!(gw.chat(&steady_key, &chat_body("gpt-4o", "before")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(str_of(&api.account(spiky).await, "status"), "active");

    // The policy on the parent: inherited by both children; only the flagged one is frozen.
    api.patch_account(acme, json!({"freeze_on_anomaly": true})).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while str_of(&api.account(spiky).await, "status") != "disabled" {
        assert!(Instant::now() < deadline, "the scan did not freeze acme/spiky:\n{}", gw.server.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = gw.chat(&spiky_key, &chat_body("gpt-4o", "after")).await;
    assert!(resp.status == 401 || resp.status == 403, "a frozen account: {} {}", resp.status, resp.text());
    assert_eq!(gw.chat(&steady_key, &chat_body("gpt-4o", "still fine")).await.status, 200);
    assert_eq!(str_of(&api.account(fresh).await, "status"), "active");

    // The audit trail says why, once (later scans find it disabled and add nothing).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let trail = expect(&api.get(&format!("/audit?account={spiky}")).await, 200, "GET /audit");
    let entries = trail["entries"].as_array().unwrap_or_else(|| panic!("{trail}"));
    assert_eq!(entries.len(), 1, "{trail}");
    let e = &entries[0];
    assert_eq!((str_of(e, "actor"), str_of(e, "action")), ("system:anomaly", "account.frozen"));
    assert_eq!(e["account"], json!(spiky));
    assert!(str_of(&e["detail"], "reason").contains("daily_spend"), "{e}");
    assert_eq!(e["detail"]["flags"][0]["value"], 200.0);
    assert_eq!(e["detail"]["flags"][0]["baseline"].as_f64(), Some(med));
    let listed = anomalies(&api, "").await;
    assert_eq!(listed[0]["frozen"], true, "{listed:?}");

    // Enabling it again through the API is audited too, with the actor.
    api.patch_account(acme, json!({"freeze_on_anomaly": false})).await;
    api.patch_account(spiky, json!({"status": "active"})).await;
    let trail = expect(&owner.get("/audit").await, 200, "GET /audit as the owner");
    let actions: Vec<(&str, &str)> =
        trail["entries"].as_array().unwrap().iter().map(|e| (str_of(e, "actor"), str_of(e, "action"))).collect();
    assert_eq!(actions, [("root", "account.enabled"), ("system:anomaly", "account.frozen")], "{trail}");
    expect(&api.post("/anomalies", &json!({})).await, 400, "POST /anomalies");
}
