//! Admin API, products: subscriptions, add-ons and cards; `/today` lists the funding sources in spending order with
//! their progress, and real priced traffic is charged to them in that order and counted in requests and tokens.

use std::time::Duration;

use serde_json::{Value, json};
use xai_tests::admin::{AdminApi, MOCK_REPLY_COST, admin_gateway, assert_error, expect, id_of, str_of, utc_date};
use xai_tests::fixtures::chat_body;

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

/// The [`sources`] expected of `(kind, product)` in this order with these `remaining` amounts, then the balance.
fn spending_order(
    products: &[(&str, &Value)],
    remaining: &[&str],
    balance: &str,
) -> Vec<(String, Option<u64>, String)> {
    assert_eq!(products.len(), remaining.len(), "one remaining amount per product");
    let products = products.iter().zip(remaining).map(|((kind, p), left)| src(kind, Some(id_of(p)), left));
    products.chain([src("balance", None, balance)]).collect()
}

/// An add-on of `credits` running from today plus `starts` to today plus `ends` (days).
fn addon(credits: &str, starts: i64, ends: i64) -> Value {
    json!({"kind": "addon", "credits": credits, "starts": utc_date(starts), "ends": utc_date(ends)})
}

/// `POST /accounts/{account}/products` (201): the product.
async fn add_product(api: &AdminApi, account: u64, body: Value, what: &str) -> Value {
    expect(&api.post(&format!("/accounts/{account}/products"), &body).await, 201, what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_fund_priced_traffic_in_spending_order() {
    let (gw, api) = admin_gateway().await;
    let acme = id_of(&api.create_account("acme", None, json!({"rpd": 100})).await);
    api.credits(acme, "100").await;
    let (_, key) = api.new_key(acme).await;

    let sub = add_product(
        &api,
        acme,
        json!({"kind": "subscription", "daily_allowance": "3", "starts": utc_date(-1), "ends": utc_date(30)}),
        "subscription",
    )
    .await;
    assert_eq!(sub["kind"], "subscription", "{sub}");
    assert_eq!((sub["daily_allowance"].clone(), sub["remaining"].clone()), (json!("3"), json!("3")), "{sub}");
    assert_eq!((sub["starts"].clone(), sub["ends"].clone()), (json!(utc_date(-1)), json!(utc_date(30))), "{sub}");
    assert_eq!(sub["active"], true, "{sub}");
    let late = add_product(&api, acme, addon("5", 0, 10), "addon ending later").await;
    assert_eq!(
        (late["credits"].clone(), late["remaining"].clone(), late["active"].clone()),
        (json!("5"), json!("5"), json!(true))
    );
    let soon = add_product(&api, acme, addon("4", -2, 5), "addon ending sooner").await;
    let card_forever = add_product(&api, acme, json!({"kind": "card", "credits": "7"}), "card").await;
    let card =
        add_product(&api, acme, json!({"kind": "card", "credits": "10", "expires": utc_date(60)}), "expiring card")
            .await;
    assert_eq!((card["kind"].clone(), card["expires"].clone()), (json!("card"), json!(utc_date(60))), "{card}");
    let future = add_product(&api, acme, addon("50", 1, 3), "future addon").await;
    assert_eq!(future["active"], false, "not started yet: {future}");

    let listed = expect(&api.get(&format!("/accounts/{acme}/products")).await, 200, "list products");
    let ids: Vec<u64> = listed["products"].as_array().into_iter().flatten().map(id_of).collect();
    assert_eq!(ids.len(), 6, "{listed}");
    for p in [&sub, &late, &soon, &card_forever, &card, &future] {
        assert!(ids.contains(&id_of(p)), "product {} not listed: {listed}", id_of(p));
    }

    // Spending order: subscription, add-ons by earliest end, cards by earliest expiry, then the balance.
    let order = [("subscription", &sub), ("addon", &soon), ("addon", &late), ("card", &card), ("card", &card_forever)];
    let t = api.today(acme).await;
    assert_eq!(
        (t["account"].clone(), t["path"].clone(), t["date"].clone()),
        (json!(acme), json!("acme"), json!(utc_date(0)))
    );
    assert_eq!(sources(&t), spending_order(&order, &["3", "4", "5", "10", "7"], "100"), "{t:#}");
    assert_eq!(
        (t["sources"][0]["allowance"].clone(), t["sources"][0]["used"].clone()),
        (json!("3"), json!("0")),
        "{t}"
    );
    assert_eq!((t["requests"].clone(), t["spent"].clone()), (json!(0), json!("0")), "{t}");

    // One priced request (2 credits): the subscription's allowance goes first.
    let resp = gw.chat(&key, &capped(chat_body("gpt-4o-mini", "one"))).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let rec = gw.server.wait_usage(|r| r["requested_model"] == "gpt-4o-mini", Duration::from_secs(5)).await;
    assert_eq!(rec["cost"], MOCK_REPLY_COST, "the config's prices: {rec}");
    let t = api.today_when(acme, |t| t["requests"] == 1).await;
    assert_eq!(t["sources"][0]["used"], "2", "{t:#}");
    assert_eq!(sources(&t), spending_order(&order, &["1", "4", "5", "10", "7"], "100"), "{t:#}");
    assert_eq!((t["prompt_tokens"].clone(), t["completion_tokens"].clone()), (json!(10), json!(5)), "{t}");
    assert_eq!(t["spent"], "2", "{t}");
    assert_eq!(t["limits"]["rpd"], json!({"limit": 100, "used": 1, "set_by": "acme"}), "{t}");

    // The second uses up the allowance and takes the rest from the add-on that ends first.
    let resp = gw.chat(&key, &capped(chat_body("gpt-4o-mini", "two"))).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let t = api.today_when(acme, |t| t["requests"] == 2).await;
    assert_eq!((t["prompt_tokens"].clone(), t["completion_tokens"].clone()), (json!(20), json!(10)), "{t}");
    assert_eq!(t["spent"], "4", "{t}");
    let rest: Vec<_> = sources(&t).into_iter().filter(|s| s.0 != "subscription").collect();
    assert_eq!(
        rest,
        spending_order(&order[1..], &["3", "5", "10", "7"], "100"),
        "the add-on ending first pays what the allowance did not cover: {t:#}"
    );
    assert_eq!(api.balance(acme).await, "100", "the products covered everything");
    assert_eq!(
        sources(&t),
        spending_order(&order, &["0", "3", "5", "10", "7"], "100"),
        "a used-up subscription still shows its progress today: {t:#}"
    );
    assert_eq!((t["sources"][0]["used"].clone(), t["sources"][0]["allowance"].clone()), (json!("3"), json!("3")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn today_counts_the_subtree_and_falls_back_to_the_balance() {
    let (gw, api) = admin_gateway().await;
    let acme = id_of(&api.create_account("acme", None, json!({})).await);
    let team = id_of(&api.create_account("team", Some(acme), json!({})).await);
    api.credits(acme, "50").await;
    api.credits(team, "10").await;
    let (_, key) = api.new_key(team).await;

    for i in 0..3 {
        let resp = gw.chat(&key, &capped(chat_body("gpt-4o-mini", &format!("team {i}")))).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    // Unpriced traffic counts requests and tokens but costs nothing.
    let resp = gw.chat(&key, &chat_body("gpt-4o", "free")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    let t = api.today_when(team, |t| t["requests"] == 4).await;
    assert_eq!((t["prompt_tokens"].clone(), t["completion_tokens"].clone()), (json!(40), json!(20)), "{t}");
    assert_eq!(t["spent"], "6", "{t}");
    assert_eq!(sources(&t), [src("balance", None, "4")], "no products: the balance pays: {t:#}");
    let parent = api.today(acme).await;
    assert_eq!(parent["requests"], 4, "the parent's day includes its subtree: {parent}");
    assert_eq!(parent["spent"], "6", "{parent}");
    assert_eq!(sources(&parent), [src("balance", None, "40")], "the parent's own balance is untouched: {parent:#}");

    // The spending shows in the ledger: one spend entry per account and day, updated as requests are billed.
    let l = api.ledger(team).await;
    assert_eq!(l["balance"], "4", "{l}");
    let spends: Vec<&str> = l["ledger"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "spend")
        .map(|e| str_of(e, "amount"))
        .collect();
    assert_eq!(spends, ["6"], "three 2-credit requests in one day's entry: {l}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_products_are_refused() {
    let (_gw, api) = admin_gateway().await;
    let acme = id_of(&api.create_account("acme", None, json!({})).await);
    let path = format!("/accounts/{acme}/products");
    for body in [
        json!({"kind": "subscription", "daily_allowance": "3", "starts": utc_date(5), "ends": utc_date(1)}),
        json!({"kind": "subscription", "daily_allowance": "0", "starts": utc_date(0), "ends": utc_date(1)}),
        json!({"kind": "subscription", "daily_allowance": 3, "starts": utc_date(0), "ends": utc_date(1)}),
        json!({"kind": "subscription", "daily_allowance": "3", "starts": "tomorrow", "ends": utc_date(1)}),
        json!({"kind": "subscription", "daily_allowance": "3"}),
        addon("-5", 0, 1),
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

/// A request with an output cap: admission holds its upper-bound cost (input estimate and this cap at the model's
/// prices) on the funds, so an uncapped request (4096 output tokens assumed) would need far more than it costs.
fn capped(mut body: serde_json::Value) -> serde_json::Value {
    body["max_tokens"] = serde_json::json!(8);
    body
}
