//! Admin API, products: subscriptions, add-ons and cards; `/today` lists the funding sources in spending order with
//! their progress, and real priced traffic is charged to them in that order and counted in requests and tokens.

use std::time::Duration;

use serde_json::{Value, json};
use xai_tests::admin::{ADMIN_CONFIG, AdminApi, MOCK_REPLY_COST, assert_error, expect, id_of, str_of, utc_date};
use xai_tests::fixtures::{Gateway, chat_body};

/// Polls `/today` until `pred` holds (spending is recorded after the response); panics after 5 s.
async fn today_when(api: &AdminApi, account: u64, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let t = api.today(account).await;
        if pred(&t) {
            return t;
        }
        assert!(tokio::time::Instant::now() < deadline, "/today of {account} never got there; last: {t:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(kind, id, remaining)` of each source.
fn sources(today: &Value) -> Vec<(String, Option<u64>, String)> {
    today["sources"]
        .as_array()
        .unwrap_or_else(|| panic!("no sources in {today}"))
        .iter()
        .map(|s| (str_of(s, "kind").to_owned(), s.get("id").and_then(Value::as_u64), str_of(s, "remaining").to_owned()))
        .collect()
}

fn src(kind: &str, id: Option<u64>, remaining: &str) -> (String, Option<u64>, String) {
    (kind.to_owned(), id, remaining.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_fund_priced_traffic_in_spending_order() {
    let gw = Gateway::start_with(ADMIN_CONFIG).await;
    let api = AdminApi::root(&gw.server);
    let acme = id_of(&api.create_account("acme", None, json!({"rpd": 100})).await);
    api.credits(acme, "100").await;
    let (_, key) = api.new_key(acme).await;
    let products = format!("/accounts/{acme}/products");

    let sub = expect(
        &api.post(
            &products,
            &json!({"kind": "subscription", "daily_allowance": "3", "starts": utc_date(-1), "ends": utc_date(30)}),
        )
        .await,
        201,
        "subscription",
    );
    assert_eq!(sub["kind"], "subscription", "{sub}");
    assert_eq!((sub["daily_allowance"].clone(), sub["remaining"].clone()), (json!("3"), json!("3")), "{sub}");
    assert_eq!((sub["starts"].clone(), sub["ends"].clone()), (json!(utc_date(-1)), json!(utc_date(30))), "{sub}");
    assert_eq!(sub["active"], true, "{sub}");
    let late = expect(
        &api.post(&products, &json!({"kind": "addon", "credits": "5", "starts": utc_date(0), "ends": utc_date(10)}))
            .await,
        201,
        "addon ending later",
    );
    assert_eq!(
        (late["credits"].clone(), late["remaining"].clone(), late["active"].clone()),
        (json!("5"), json!("5"), json!(true))
    );
    let soon = expect(
        &api.post(&products, &json!({"kind": "addon", "credits": "4", "starts": utc_date(-2), "ends": utc_date(5)}))
            .await,
        201,
        "addon ending sooner",
    );
    let card_forever = expect(&api.post(&products, &json!({"kind": "card", "credits": "7"})).await, 201, "card");
    let card = expect(
        &api.post(&products, &json!({"kind": "card", "credits": "10", "expires": utc_date(60)})).await,
        201,
        "expiring card",
    );
    assert_eq!((card["kind"].clone(), card["expires"].clone()), (json!("card"), json!(utc_date(60))), "{card}");
    let future = expect(
        &api.post(&products, &json!({"kind": "addon", "credits": "50", "starts": utc_date(1), "ends": utc_date(3)}))
            .await,
        201,
        "future addon",
    );
    assert_eq!(future["active"], false, "not started yet: {future}");

    let listed = expect(&api.get(&products).await, 200, "list products");
    let ids: Vec<u64> = listed["products"].as_array().into_iter().flatten().map(id_of).collect();
    assert_eq!(ids.len(), 6, "{listed}");
    for p in [&sub, &late, &soon, &card_forever, &card, &future] {
        assert!(ids.contains(&id_of(p)), "product {} not listed: {listed}", id_of(p));
    }

    // Spending order: subscription, add-ons by earliest end, cards by earliest expiry, then the balance.
    let t = api.today(acme).await;
    assert_eq!(
        (t["account"].clone(), t["path"].clone(), t["date"].clone()),
        (json!(acme), json!("acme"), json!(utc_date(0)))
    );
    assert_eq!(
        sources(&t),
        [
            src("subscription", Some(id_of(&sub)), "3"),
            src("addon", Some(id_of(&soon)), "4"),
            src("addon", Some(id_of(&late)), "5"),
            src("card", Some(id_of(&card)), "10"),
            src("card", Some(id_of(&card_forever)), "7"),
            src("balance", None, "100"),
        ],
        "{t:#}"
    );
    assert_eq!(
        (t["sources"][0]["allowance"].clone(), t["sources"][0]["used"].clone()),
        (json!("3"), json!("0")),
        "{t}"
    );
    assert_eq!((t["requests"].clone(), t["spent"].clone()), (json!(0), json!("0")), "{t}");

    // One priced request (2 credits): the subscription's allowance goes first.
    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", "one")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let rec = gw.server.wait_usage(|r| r["requested_model"] == "gpt-4o-mini", Duration::from_secs(5)).await;
    assert_eq!(rec["cost"], MOCK_REPLY_COST, "the config's prices: {rec}");
    let t = today_when(&api, acme, |t| t["requests"] == 1).await;
    assert_eq!(t["sources"][0]["used"], "2", "{t:#}");
    assert_eq!(
        sources(&t),
        [
            src("subscription", Some(id_of(&sub)), "1"),
            src("addon", Some(id_of(&soon)), "4"),
            src("addon", Some(id_of(&late)), "5"),
            src("card", Some(id_of(&card)), "10"),
            src("card", Some(id_of(&card_forever)), "7"),
            src("balance", None, "100"),
        ],
        "{t:#}"
    );
    assert_eq!((t["prompt_tokens"].clone(), t["completion_tokens"].clone()), (json!(10), json!(5)), "{t}");
    assert_eq!(t["spent"], "2", "{t}");
    assert_eq!(t["limits"]["rpd"], json!({"limit": 100, "used": 1, "set_by": "acme"}), "{t}");

    // The second uses up the allowance and takes the rest from the add-on that ends first.
    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", "two")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let t = today_when(&api, acme, |t| t["requests"] == 2).await;
    assert_eq!((t["prompt_tokens"].clone(), t["completion_tokens"].clone()), (json!(20), json!(10)), "{t}");
    assert_eq!(t["spent"], "4", "{t}");
    let rest: Vec<_> = sources(&t).into_iter().filter(|s| s.0 != "subscription").collect();
    assert_eq!(
        rest,
        [
            src("addon", Some(id_of(&soon)), "3"),
            src("addon", Some(id_of(&late)), "5"),
            src("card", Some(id_of(&card)), "10"),
            src("card", Some(id_of(&card_forever)), "7"),
            src("balance", None, "100"),
        ],
        "the add-on ending first pays what the allowance did not cover: {t:#}"
    );
    assert_eq!(api.balance(acme).await, "100", "the products covered everything");
    assert_eq!(
        sources(&t),
        [
            src("subscription", Some(id_of(&sub)), "0"),
            src("addon", Some(id_of(&soon)), "3"),
            src("addon", Some(id_of(&late)), "5"),
            src("card", Some(id_of(&card)), "10"),
            src("card", Some(id_of(&card_forever)), "7"),
            src("balance", None, "100"),
        ],
        "a used-up subscription still shows its progress today: {t:#}"
    );
    assert_eq!((t["sources"][0]["used"].clone(), t["sources"][0]["allowance"].clone()), (json!("3"), json!("3")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn today_counts_the_subtree_and_falls_back_to_the_balance() {
    let gw = Gateway::start_with(ADMIN_CONFIG).await;
    let api = AdminApi::root(&gw.server);
    let acme = id_of(&api.create_account("acme", None, json!({})).await);
    let team = id_of(&api.create_account("team", Some(acme), json!({})).await);
    api.credits(acme, "50").await;
    api.credits(team, "10").await;
    let (_, key) = api.new_key(team).await;

    for i in 0..3 {
        let resp = gw.chat(&key, &chat_body("gpt-4o-mini", &format!("team {i}"))).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    // Unpriced traffic counts requests and tokens but costs nothing.
    let resp = gw.chat(&key, &chat_body("gpt-4o", "free")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    let t = today_when(&api, team, |t| t["requests"] == 4).await;
    assert_eq!((t["prompt_tokens"].clone(), t["completion_tokens"].clone()), (json!(40), json!(20)), "{t}");
    assert_eq!(t["spent"], "6", "{t}");
    assert_eq!(sources(&t), [src("balance", None, "4")], "no products: the balance pays: {t:#}");
    let parent = api.today(acme).await;
    assert_eq!(parent["requests"], 4, "the parent's day includes its subtree: {parent}");
    assert_eq!(parent["spent"], "6", "{parent}");
    assert_eq!(sources(&parent), [src("balance", None, "40")], "the parent's own balance is untouched: {parent:#}");

    // The spending shows in the ledger.
    let l = api.ledger(team).await;
    assert_eq!(l["balance"], "4", "{l}");
    let spends: Vec<&str> = l["ledger"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "spend")
        .map(|e| str_of(e, "amount"))
        .collect();
    assert_eq!(spends, ["2", "2", "2"], "{l}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_products_are_refused() {
    let gw = Gateway::start_with(ADMIN_CONFIG).await;
    let api = AdminApi::root(&gw.server);
    let acme = id_of(&api.create_account("acme", None, json!({})).await);
    let path = format!("/accounts/{acme}/products");
    for body in [
        json!({"kind": "subscription", "daily_allowance": "3", "starts": utc_date(5), "ends": utc_date(1)}),
        json!({"kind": "subscription", "daily_allowance": "0", "starts": utc_date(0), "ends": utc_date(1)}),
        json!({"kind": "subscription", "daily_allowance": 3, "starts": utc_date(0), "ends": utc_date(1)}),
        json!({"kind": "subscription", "daily_allowance": "3", "starts": "tomorrow", "ends": utc_date(1)}),
        json!({"kind": "subscription", "daily_allowance": "3"}),
        json!({"kind": "addon", "credits": "-5", "starts": utc_date(0), "ends": utc_date(1)}),
        json!({"kind": "card", "credits": "abc"}),
        json!({"kind": "card", "credits": "5", "expires": "2026-13-01"}),
        json!({"kind": "coupon", "credits": "5"}),
        json!({"kind": "card", "credits": "5", "colour": "red"}),
        json!({"credits": "5"}),
    ] {
        assert_error(&api.post(&path, &body).await, 400, "bad_request", &format!("POST products {body}"));
    }
    assert_eq!(expect(&api.get(&path).await, 200, "list")["products"], json!([]), "refusals added products");
    assert_error(
        &api.post("/accounts/9999/products", &json!({"kind": "card", "credits": "5"})).await,
        404,
        "not_found",
        "unknown account",
    );
    assert_error(&api.get("/accounts/9999/today").await, 404, "not_found", "today of unknown account");
}
