//! Cluster: several `xai-server` instances on one Postgres (and one Redis) behave as one gateway (DESIGN §5).
//! An admin change saved through one instance reaches every other within a second (Redis pub/sub with
//! `--redis-url`, Postgres LISTEN/NOTIFY without), limits are shared through Redis, and the state outlives every
//! instance.
//!
//! Each test creates its own database `xai_test_<random>` (Postgres at `XAI_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and its own Redis key prefix (`redis_prefix` in the config; Redis
//! at `XAI_TEST_REDIS`, default `redis://127.0.0.1:6379`), and removes both at the end, also when it fails. When
//! Postgres or Redis is unreachable the test is skipped with a message, except under `CI=true`, where it fails.
//! All instances of a test share one master key (`XAI_MASTER_KEY`), as the instances of a deployment do.

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;
use xai_tests::admin::{AdminApi, expect, id_of, str_of};
use xai_tests::client::HttpResponse;
use xai_tests::fixtures::{assert_openai_error, chat_body};
use xai_tests::harness::{TempDir, XaiServer};
use xai_tests::mock::Behavior;
use xai_tests::pg::{TestDatabase, random_hex, unavailable};
use xai_tests::{client, mock::MockUpstream};

/// How soon a change made on one instance must take effect on another (DESIGN §5).
const PROPAGATION: Duration = Duration::from_secs(1);
/// How long a test polls for a change at most, so a slow propagation is told apart from a missing one.
const POLL_BOUND: Duration = Duration::from_secs(5);
/// Polling interval.
const POLL_EVERY: Duration = Duration::from_millis(25);
/// The virtual key of the config's admin account `team` (role admin): the tests administer through it.
const TEAM_ADMIN_KEY: &str = "sk-team-admin";
/// The root admin token of the config.
const ROOT_TOKEN: &str = "admin-secret";

// ---------------------------------------------------------------------------------------------------------------
// Environment: a database and a Redis prefix per test, removed at the end.

fn redis_url() -> String {
    std::env::var("XAI_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `host:port` of a `redis://host:port[/db]` URL.
fn redis_addr(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// One Redis command over a fresh connection (RESP2); answers simple strings, integers, bulk strings and flat arrays
/// of those as a list of strings.
async fn redis_command(args: &[&str]) -> Result<Vec<String>, String> {
    let run = async {
        let stream = TcpStream::connect(redis_addr(&redis_url())).await.map_err(|e| e.to_string())?;
        let mut stream = BufReader::new(stream);
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.get_mut().write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut line = String::new();
        stream.read_line(&mut line).await.map_err(|e| e.to_string())?;
        let (kind, rest) = line.trim_end().split_at_checked(1).ok_or("empty reply")?;
        let (count, in_array) = match kind {
            "+" | ":" => return Ok(vec![rest.to_owned()]),
            "-" => return Err(format!("redis error: {rest}")),
            "$" => (1, false),
            "*" => (rest.parse::<i64>().map_err(|e| e.to_string())?, true),
            other => return Err(format!("unexpected reply {other:?}")),
        };
        let mut out = Vec::new();
        for _ in 0..count.max(0) {
            let len_line = if in_array {
                let mut l = String::new();
                stream.read_line(&mut l).await.map_err(|e| e.to_string())?;
                l
            } else {
                line.clone()
            };
            let l = len_line.trim_end();
            if let Some(n) = l.strip_prefix(':') {
                out.push(n.to_owned());
                continue;
            }
            let len: i64 = l
                .strip_prefix('$')
                .ok_or(format!("unexpected element {l:?}"))?
                .parse()
                .map_err(|e| format!("bad length in {l:?}: {e}"))?;
            if len < 0 {
                continue;
            }
            let mut buf = vec![0u8; len as usize + 2];
            stream.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            buf.truncate(len as usize);
            out.push(String::from_utf8_lossy(&buf).into_owned());
        }
        Ok(out)
    };
    tokio::time::timeout(Duration::from_secs(5), run).await.map_err(|_| "no answer within 5 s".to_owned())?
}

/// Every Redis key under `prefix`.
async fn redis_keys(prefix: &str) -> Vec<String> {
    redis_command(&["KEYS", &format!("{prefix}*")]).await.unwrap_or_else(|e| panic!("redis KEYS {prefix}*: {e}"))
}

/// What a test set up outside the servers; removed on drop (the database dropped, the Redis keys deleted), also when
/// the test fails. Declare it before the servers so that they are killed first.
#[derive(Debug)]
struct Env {
    /// The database of this test (dropped after the Redis keys).
    db: TestDatabase,
    /// `Some(prefix)` when the test uses Redis.
    redis_prefix: Option<String>,
    /// The master key every instance shares.
    master_key: String,
}

impl Env {
    /// A fresh database and, with `redis`, a Redis prefix; `None` (skipped) when one of them is unreachable.
    async fn create(redis: bool) -> Option<Env> {
        let redis_prefix = if redis {
            if let Err(e) = redis_command(&["PING"]).await {
                unavailable(&format!("Redis at {}", redis_url()), &e)?;
            }
            Some(format!("xai-test-{}:", random_hex()))
        } else {
            None
        };
        let db = TestDatabase::create().await?;
        let master_key = format!("{}{}", random_hex(), "0".repeat(52));
        Some(Env { db, redis_prefix, master_key })
    }

    async fn cleanup(redis_prefix: Option<String>) {
        if let Some(prefix) = redis_prefix
            && let Ok(keys) = redis_command(&["KEYS", &format!("{prefix}*")]).await
            && !keys.is_empty()
        {
            let mut args = vec!["DEL"];
            args.extend(keys.iter().map(String::as_str));
            let _ = redis_command(&args).await;
        }
    }

    /// A server of this cluster: `--database-url`, `--redis-url` when the test uses Redis, the shared master key.
    async fn server(&self, config: &str, mock: &MockUpstream) -> XaiServer {
        self.server_in(config, mock, None).await
    }

    /// [`Env::server`] on a given data directory.
    async fn server_in(&self, config: &str, mock: &MockUpstream, data_dir: Option<&TempDir>) -> XaiServer {
        let mut b = XaiServer::builder(config)
            .var("MOCK", mock.url())
            .arg("--database-url")
            .arg(&self.db.url)
            .env("XAI_MASTER_KEY", &self.master_key);
        if self.redis_prefix.is_some() {
            b = b.arg("--redis-url").arg(redis_url());
        }
        if let Some(dir) = data_dir {
            b = b.data_dir(dir.path());
        }
        b.start().await
    }

    /// The config of every instance: one mock provider serving `gpt-*`, an admin account `team` with the key
    /// [`TEAM_ADMIN_KEY`], prices for `gpt-4o-mini` (the mock's reply costs 2 credits), and `redis_prefix` when the
    /// test uses Redis.
    fn config(&self) -> String {
        let prefix = self.redis_prefix.as_deref().map(|p| format!("redis_prefix = \"{p}\"\n")).unwrap_or_default();
        format!(
            r#"admin_token = "{ROOT_TOKEN}"
{prefix}
[server]
shutdown_grace_ms = 3000

[routing]
attempt_timeout_ms = 2000
request_timeout_ms = 10000

[[providers]]
name = "mock"
protocol = "openai"
base_url = "{{{{MOCK}}}}/v1"
keys = ["sk-up-1"]
level = 1
models = ["gpt-*"]

[[accounts]]
name = "team"
keys = ["{TEAM_ADMIN_KEY}"]
role = "admin"
allow_models = ["gpt-*"]

[pricing."gpt-4o-mini"]
input = 100000.0
output = 200000.0
"#
        )
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let prefix = self.redis_prefix.take();
        // Drop runs inside the test's runtime, which cannot be blocked on: clean up from a thread of its own.
        let cleaned =
            std::thread::spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(Env::cleanup(prefix)),
                Err(e) => eprintln!("cluster test: no runtime for the cleanup: {e}"),
            });
        let _ = cleaned.join();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers.

/// `POST /v1/chat/completions` on `server` with `key`.
/// Capped at 8 output tokens: admission holds the request's upper-bound cost on the funds it draws on.
async fn chat(server: &XaiServer, key: &str, model: &str, text: &str) -> HttpResponse {
    let mut body = chat_body(model, text);
    body["max_tokens"] = json!(8);
    client::post_json(&format!("{}/v1/chat/completions", server.url()), Some(key), &body).await
}

/// Sends `send()` every [`POLL_EVERY`] until it answers `target` (anything else than `before` fails the test at
/// once); returns how long after `since` the first request answered `target` was sent. Fails after [`POLL_BOUND`].
async fn time_until<F, Fut>(what: &str, since: Instant, target: u16, before: u16, mut send: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = HttpResponse>,
{
    let deadline = since + POLL_BOUND;
    loop {
        let sent = Instant::now();
        let resp = send().await;
        if resp.status == target {
            return sent.saturating_duration_since(since);
        }
        assert_eq!(resp.status, before, "{what}: while waiting for {target}: {}", resp.text());
        assert!(
            Instant::now() < deadline,
            "{what}: still {before} {POLL_BOUND:?} after the change (expected {target} within {PROPAGATION:?})"
        );
        // Propagation is asynchronous by design: poll, bounded by the deadline above.
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// [`time_until`], then asserts the change took effect within [`PROPAGATION`].
async fn within_propagation<F, Fut>(what: &str, since: Instant, target: u16, before: u16, send: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = HttpResponse>,
{
    let took = time_until(what, since, target, before, send).await;
    // Printed for the record (`--nocapture`): the measured sync latency, with the poll interval as resolution.
    eprintln!("propagation: {what}: {took:?}");
    assert!(took <= PROPAGATION, "{what}: took {took:?}, more than {PROPAGATION:?}");
}

/// The id of the account at `path`, through the root token.
async fn account_id(server: &XaiServer, path: &str) -> u64 {
    let accounts = AdminApi::new(server, Some(ROOT_TOKEN)).accounts().await;
    let a = accounts.iter().find(|a| a["path"] == path).unwrap_or_else(|| panic!("no account {path}: {accounts:#?}"));
    id_of(a)
}

/// Stops a server with SIGTERM and waits for it to exit cleanly (its last state is saved on the way out).
async fn stop(server: &mut XaiServer, name: &str) {
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "instance {name} exited with {status}:\n{}", server.stderr());
}

// ---------------------------------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_on_one_instance_reach_the_other_within_a_second() {
    let Some(env) = Env::create(true).await else { return };
    let mock = MockUpstream::start().await;
    let config = env.config();
    let a = env.server(&config, &mock).await;
    let b = env.server(&config, &mock).await;
    let on_a = AdminApi::new(&a, Some(TEAM_ADMIN_KEY));
    let on_b = AdminApi::new(&b, Some(TEAM_ADMIN_KEY));
    let team = account_id(&a, "team").await;
    assert_eq!(account_id(&b, "team").await, team, "both instances imported the one `team`");

    // A new account and a key, through A: the key works on B within a second.
    let alice = id_of(&on_a.create_account("alice", Some(team), json!({"allow_models": ["gpt-*"]})).await);
    let issued = on_a.issue_key(alice, json!({"name": "k1"})).await;
    let since = Instant::now();
    let (k1_id, k1) = (id_of(&issued), str_of(&issued, "key").to_owned());
    within_propagation("a key issued on A, used on B", since, 200, 401, || chat(&b, &k1, "gpt-4o", "hello b")).await;
    let resp = chat(&b, &k1, "gpt-4o", "again").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "mock reply: again");
    let shown = expect(&on_b.get(&format!("/keys/{k1_id}")).await, 200, "GET the key on B");
    assert_eq!((shown["account"].clone(), shown["status"].clone()), (json!(alice), json!("active")), "{shown}");

    // A second key, then revoke the first on A: B refuses it within a second and keeps serving the second.
    let (_, k2) = on_a.new_key(alice).await;
    let since = Instant::now();
    within_propagation("a second key issued on A, used on B", since, 200, 401, || chat(&b, &k2, "gpt-4o", "k2")).await;
    let revoked = expect(&on_a.delete(&format!("/keys/{k1_id}")).await, 200, "revoke on A");
    assert_eq!(revoked["status"], "revoked", "{revoked}");
    let since = Instant::now();
    within_propagation("a key revoked on A, used on B", since, 401, 200, || chat(&b, &k1, "gpt-4o", "revoked")).await;
    assert_openai_error(&chat(&b, &k1, "gpt-4o", "still revoked").await);
    let resp = chat(&b, &k2, "gpt-4o", "k2 still").await;
    assert_eq!(resp.status, 200, "revoking one key leaves the other: {}", resp.text());

    // Narrow allow_models on A: B refuses the model within a second, and still serves the allowed one.
    on_a.patch_account(alice, json!({"allow_models": ["gpt-4o-mini"]})).await;
    let since = Instant::now();
    within_propagation("allow_models narrowed on A, used on B", since, 403, 200, || {
        chat(&b, &k2, "gpt-4o", "narrowed")
    })
    .await;
    assert_openai_error(&chat(&b, &k2, "gpt-4o", "still narrowed").await);
    let resp = chat(&b, &k2, "gpt-4o-mini", "allowed").await;
    assert_eq!(resp.status, 200, "gpt-4o-mini is still allowed: {}", resp.text());

    // And the other way round: a change made on B (after B took A's changes) reaches A, with ids that do not clash.
    let bob = on_b.create_account("bob", Some(team), json!({})).await;
    assert_ne!(id_of(&bob), alice, "B allocated a fresh account id: {bob}");
    let (k3_id, k3) = on_b.new_key(id_of(&bob)).await;
    let since = Instant::now();
    within_propagation("a key issued on B, used on A", since, 200, 401, || chat(&a, &k3, "gpt-4o", "on a")).await;
    assert_ne!(k3_id, k1_id, "B allocated a fresh key id");
    let paths = |list: Vec<Value>| list.iter().map(|x| str_of(x, "path").to_owned()).collect::<Vec<_>>();
    let root_a = AdminApi::new(&a, Some(ROOT_TOKEN));
    let root_b = AdminApi::new(&b, Some(ROOT_TOKEN));
    assert_eq!(paths(root_a.accounts().await), paths(root_b.accounts().await), "both instances list one tree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_is_shared_by_the_instances() {
    let Some(env) = Env::create(true).await else { return };
    let prefix = env.redis_prefix.clone().unwrap_or_default();
    let mock = MockUpstream::start().await;
    let config = env.config();
    let a = env.server(&config, &mock).await;
    let b = env.server(&config, &mock).await;
    let on_a = AdminApi::new(&a, Some(TEAM_ADMIN_KEY));
    let team = account_id(&a, "team").await;
    let burst = id_of(&on_a.create_account("burst", Some(team), json!({"rpm": 20})).await);
    let (_, key) = on_a.new_key(burst).await;
    // Wait until B knows the key without spending a request of the minute: B's explain finds it.
    let root_b = AdminApi::new(&b, Some(ROOT_TOKEN));
    let explain = json!({"key": key, "model": "gpt-4o"});
    let since = Instant::now();
    time_until("the key issued on A, explained on B", since, 200, 404, || root_b.post("/explain", &explain)).await;

    let started = Instant::now();
    let mut outcomes = Vec::new();
    for i in 0..25 {
        let (name, server) = if i % 2 == 0 { ("A", &a) } else { ("B", &b) };
        let resp = chat(server, &key, "gpt-4o", &format!("r{i}")).await;
        outcomes.push((i, name, resp));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(50), "the 25 requests took {took:?}: not within one minute's window");
    let summary: Vec<String> = outcomes.iter().map(|(i, n, r)| format!("#{i} {n}: {}", r.status.as_u16())).collect();
    let ok = outcomes.iter().filter(|(_, _, r)| r.status == 200).count();
    assert_eq!(ok, 20, "rpm 20 across A and B: exactly 20 succeed; got {summary:?}");
    for (i, name, resp) in outcomes.iter().filter(|(_, _, r)| r.status != 200) {
        assert_eq!(resp.status, 429, "request #{i} on {name}: {}", resp.text());
        let err = assert_openai_error(resp);
        let msg = err["message"].as_str().unwrap_or_default();
        assert!(msg.contains("team/burst"), "request #{i} on {name}: the refusal names the account path: {msg:?}");
    }
    assert!(
        outcomes[20..].iter().any(|(_, n, r)| *n == "A" && r.status == 429)
            && outcomes[20..].iter().any(|(_, n, r)| *n == "B" && r.status == 429),
        "both instances refuse once the shared minute is used up: {summary:?}"
    );
    assert_eq!(mock.requests().len(), 20, "refused requests never reach the upstream");
    let keys = redis_keys(&prefix).await;
    assert!(!keys.is_empty(), "the shared counters live under the configured redis_prefix {prefix:?}; none there");
}

/// `"12.345"` credits in micro-credits.
fn micros(s: &str) -> i64 {
    let (i, f) = s.split_once('.').unwrap_or((s, ""));
    i.parse::<i64>().unwrap() * 1_000_000 + format!("{f:0<6}").parse::<i64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funds_for_four_admit_four_across_two_instances_and_every_spend_is_saved() {
    let Some(env) = Env::create(true).await else { return };
    let mock = MockUpstream::start().await;
    // Slow answers: the 20 requests are in flight together on both instances.
    mock.script(None, (0..24).map(|_| Behavior::ok().with_delay_ms(500)).collect());
    let config = env.config();
    let a = env.server(&config, &mock).await;
    let b = env.server(&config, &mock).await;
    let root_a = AdminApi::new(&a, Some(ROOT_TOKEN));
    let team = account_id(&a, "team").await;
    let wallet = id_of(&root_a.create_account("wallet", Some(team), json!({})).await);
    let (_, key) = root_a.new_key(wallet).await;
    let body = || {
        let mut b = chat_body("gpt-4o-mini", "x");
        b["max_tokens"] = json!(8);
        b
    };
    // The hold of one request: ⌈bytes / 4⌉ input tokens at 0.1 credits, 8 output tokens at 0.2 credits.
    let bytes = serde_json::to_vec(&body()).unwrap().len() as i64;
    let hold = (bytes + 3) / 4 * 100_000 + 8 * 200_000;
    let funds = 4 * hold + hold / 2;
    let credits = |m: i64| format!("{}.{:06}", m / 1_000_000, m % 1_000_000);
    root_a.credits(team, &credits(funds)).await;
    root_a.credits(wallet, &credits(funds)).await;
    // B knows the key and the wallet's balance once its explain finds the key (the same change feed).
    let root_b = AdminApi::new(&b, Some(ROOT_TOKEN));
    let explain = json!({"key": key, "model": "gpt-4o-mini"});
    time_until("the key issued on A, explained on B", Instant::now(), 200, 404, || root_b.post("/explain", &explain))
        .await;
    let since = Instant::now();
    while micros(&root_b.balance(wallet).await) != funds {
        assert!(since.elapsed() < POLL_BOUND, "B never saw the wallet's credits");
        tokio::time::sleep(POLL_EVERY).await;
    }

    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let url = if i % 2 == 0 { a.url() } else { b.url() };
            let (key, body) = (key.clone(), body());
            tokio::spawn(
                async move { client::post_json(&format!("{url}/v1/chat/completions"), Some(&key), &body).await },
            )
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        ok,
        4,
        "funds for four admit four across A and B: {:?}",
        answers.iter().map(|r| r.text()).collect::<Vec<_>>()
    );
    for r in answers.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 429);
        let msg = assert_openai_error(r)["message"].as_str().unwrap_or_default().to_owned();
        assert!(msg.contains("insufficient credits: account team/wallet"), "{msg}");
    }
    // Each reply costs 2 credits (10 prompt tokens at 0.1, 5 completion tokens at 0.2).
    let spent: i64 = 4 * 2_000_000;
    // Both instances save their spending; a third instance started afterwards reads every spend back.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let c = env.server(&config, &mock).await;
    let balance = micros(&AdminApi::new(&c, Some(ROOT_TOKEN)).balance(wallet).await);
    assert_eq!(balance, funds - spent, "no instance's spending is lost in the database");

    // Reclaim what is left: B refuses; a card added on A funds the wallet on B within the propagation bound.
    root_a.credits(wallet, &format!("-{}", credits(balance))).await;
    let (url_b, capped) = (format!("{}/v1/chat/completions", b.url()), body());
    let on_b = || client::post_json(&url_b, Some(&key), &capped);
    time_until("the reclaim made on A, seen on B", Instant::now(), 429, 200, on_b).await;
    let card = root_a.post(&format!("/accounts/{wallet}/products"), &json!({"kind": "card", "credits": "50"})).await;
    expect(&card, 201, "a card on A");
    within_propagation("a card added on A funds requests on B", Instant::now(), 200, 429, on_b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_changes_travel_through_postgres() {
    let Some(env) = Env::create(false).await else { return };
    let mock = MockUpstream::start().await;
    let config = env.config();
    let a = env.server(&config, &mock).await;
    let b = env.server(&config, &mock).await;
    let on_a = AdminApi::new(&a, Some(TEAM_ADMIN_KEY));
    let team = account_id(&a, "team").await;
    let carol = id_of(&on_a.create_account("carol", Some(team), json!({})).await);
    let (kid, key) = on_a.new_key(carol).await;
    let since = Instant::now();
    within_propagation("a key issued on A, used on B (LISTEN/NOTIFY)", since, 200, 401, || {
        chat(&b, &key, "gpt-4o", "via postgres")
    })
    .await;
    expect(&on_a.delete(&format!("/keys/{kid}")).await, 200, "revoke on A");
    let since = Instant::now();
    within_propagation("a key revoked on A, used on B (LISTEN/NOTIFY)", since, 401, 200, || {
        chat(&b, &key, "gpt-4o", "revoked")
    })
    .await;
}

/// `xai_catalog_loads_total{source="…"}` of `server`.
async fn catalog_loads(server: &XaiServer, source: &str) -> u64 {
    let m = client::get(&format!("{}/metrics", server.url()), None).await;
    let line = format!("xai_catalog_loads_total{{source=\"{source}\"}} ");
    let text = m.text();
    let found = text.lines().find_map(|l| l.strip_prefix(line.as_str()));
    found.unwrap_or_else(|| panic!("no {line} in /metrics:\n{text}")).trim().parse().unwrap()
}

/// Polls until `server` has taken the catalog `n` times in all (from Redis or the database), bounded.
async fn catalog_loads_reach(server: &XaiServer, n: u64) -> (u64, u64) {
    let deadline = Instant::now() + POLL_BOUND;
    loop {
        let (r, d) = (catalog_loads(server, "redis").await, catalog_loads(server, "database").await);
        if r + d >= n {
            return (r, d);
        }
        assert!(Instant::now() < deadline, "only {} catalog loads after {POLL_BOUND:?} (expected {n})", r + d);
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_is_read_through_redis_and_the_database_only_when_it_changed() {
    let Some(env) = Env::create(true).await else { return };
    let mock = MockUpstream::start().await;
    let config = env.config();
    let a = env.server(&config, &mock).await;
    let b = env.server(&config, &mock).await;
    let on_a = AdminApi::new(&a, Some(TEAM_ADMIN_KEY));
    let team = account_id(&a, "team").await;
    assert!(b.stderr().contains("memory → Redis → database"), "B names its read path:\n{}", b.stderr());

    // An account and a key on A: the catalog changed, so B reads the database (and fills Redis).
    let dana = id_of(&on_a.create_account("dana", Some(team), json!({"allow_models": ["gpt-*"]})).await);
    let (_, key) = on_a.new_key(dana).await;
    let since = Instant::now();
    within_propagation("a key issued on A, used on B", since, 200, 401, || chat(&b, &key, "gpt-4o", "hi")).await;
    let (r0, d0) = catalog_loads_reach(&b, 2).await;
    assert!(d0 >= 1, "B read the changed catalog from the database (redis {r0}, database {d0})");

    // A price change is announced but leaves the catalog's version: B takes the catalog from Redis.
    let root_a = AdminApi::new(&a, Some(ROOT_TOKEN));
    let put = root_a.send_raw(http::Method::PUT, "/pricing/gpt-4o", r#"{"input":"1","output":"2"}"#).await;
    expect(&put, 200, "set a price on A");
    let (r1, d1) = catalog_loads_reach(&b, r0 + d0 + 1).await;
    assert_eq!((r1, d1), (r0 + 1, d0), "B's reload after an announcement that changed no account or key");
    let resp = chat(&b, &key, "gpt-4o", "still served");
    assert_eq!(resp.await.status, 200, "the cached catalog serves the key");

    // A model mapping changed on A replaces what B resolved and cached for the exact model name.
    let model_on_b = || async { chat(&b, &key, "gpt-4o", "which model").await.json()["model"].clone() };
    assert_eq!(model_on_b().await, "gpt-4o", "B resolved (and cached) gpt-4o as itself");
    on_a.patch_account(dana, json!({"model_mapper": {"gpt-4o": "gpt-4o-mini"}})).await;
    let since = Instant::now();
    while model_on_b().await != "gpt-4o-mini" {
        assert!(since.elapsed() < POLL_BOUND, "B still maps gpt-4o to itself {POLL_BOUND:?} after the change");
        tokio::time::sleep(POLL_EVERY).await;
    }
    let took = since.elapsed();
    assert!(took <= PROPAGATION, "a mapping changed on A took {took:?} to reach B");
    on_a.patch_account(dana, json!({"model_mapper": {}})).await;
    let (r1, d1) = catalog_loads_reach(&b, r1 + d1 + 2).await;

    // A policy change raises the version again: B must not serve the old policy from Redis.
    on_a.patch_account(dana, json!({"allow_models": ["gpt-4o-mini"]})).await;
    let since = Instant::now();
    within_propagation("allow_models narrowed on A, seen on B", since, 403, 200, || chat(&b, &key, "gpt-4o", "x"))
        .await;
    let (_, d2) = catalog_loads_reach(&b, r1 + d1 + 1).await;
    assert_eq!(d2, d1 + 1, "the changed catalog was read from the database");

    // Redis holds the catalog sealed: neither the upstream key nor the virtual key is readable there.
    let prefix = env.redis_prefix.clone().unwrap_or_default();
    let blob = redis_command(&["HGET", &format!("{prefix}catalog"), "blob"]).await.unwrap();
    let blob = blob.concat();
    assert!(blob.len() > 100 && !blob.starts_with('{'), "a sealed copy is in Redis");
    for secret in ["sk-up-1", key.as_str(), TEAM_ADMIN_KEY, "dana"] {
        assert!(!blob.contains(secret), "{secret} readable in Redis");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_outlives_every_instance() {
    let Some(env) = Env::create(false).await else { return };
    let mock = MockUpstream::start().await;
    let config = env.config();
    let mut a = env.server(&config, &mock).await;
    let mut b = env.server(&config, &mock).await;
    let root = AdminApi::new(&a, Some(ROOT_TOKEN));
    let on_a = AdminApi::new(&a, Some(TEAM_ADMIN_KEY));
    let team = account_id(&a, "team").await;
    let dave = id_of(&on_a.create_account("dave", Some(team), json!({})).await);
    let (_, key) = on_a.new_key(dave).await;
    let (gone_id, gone) = on_a.new_key(dave).await;
    expect(&on_a.delete(&format!("/keys/{gone_id}")).await, 200, "revoke");
    // Credits: the root mints 100 to team, team allocates 30 to dave.
    root.credits(team, "100").await;
    let moved = on_a.credits(dave, "30").await;
    assert_eq!((moved["account"]["balance"].clone(), moved["parent"]["balance"].clone()), (json!("30"), json!("70")));
    // B sees the allocation within a second (before that, B would bill dave's traffic against an empty balance).
    let on_b = AdminApi::new(&b, Some(TEAM_ADMIN_KEY));
    let since = Instant::now();
    let deadline = since + POLL_BOUND;
    while on_b.balance(dave).await != "30" {
        assert!(Instant::now() < deadline, "B never saw dave's allocation: {}", on_b.account(dave).await);
        // Propagation is asynchronous by design: poll, bounded by the deadline above.
        tokio::time::sleep(POLL_EVERY).await;
    }
    assert!(since.elapsed() <= PROPAGATION, "the allocation took {:?} to reach B", since.elapsed());
    // dave spends 2 credits on B.
    let resp = chat(&b, &key, "gpt-4o-mini", "spend").await;
    assert_eq!(resp.status, 200, "the key issued on A works on B: {}", resp.text());
    let deadline = Instant::now() + POLL_BOUND;
    while on_b.balance(dave).await != "28" {
        assert!(
            Instant::now() < deadline,
            "dave's balance on B after spending 2 of 30: {}; B's ledger of dave: {}; B's today: {}",
            on_b.balance(dave).await,
            on_b.ledger(dave).await,
            on_b.today(dave).await
        );
        // Spending is booked after the response: poll, bounded by the deadline above.
        tokio::time::sleep(POLL_EVERY).await;
    }

    stop(&mut b, "B").await;
    stop(&mut a, "A").await;
    drop((a, b));

    // A new instance with a data dir of its own: everything comes from the database.
    let dir = TempDir::new("xai-cluster-c");
    let c = env.server_in(&config, &mock, Some(&dir)).await;
    let resp = chat(&c, &key, "gpt-4o", "after restart").await;
    assert_eq!(resp.status, 200, "the key works on a new instance: {}", resp.text());
    let resp = chat(&c, &gone, "gpt-4o", "revoked after restart").await;
    assert_eq!(resp.status, 401, "the revoked key stays revoked: {}", resp.text());
    let on_c = AdminApi::new(&c, Some(ROOT_TOKEN));
    let dave_c = on_c.account(dave).await;
    assert_eq!(dave_c["path"], "team/dave", "{dave_c}");
    assert_eq!(on_c.balance(team).await, "70", "team's balance after allocating 30 of 100");
    assert_eq!(on_c.balance(dave).await, "28", "dave's balance: 30 allocated on A, 2 spent on B");
    let ledger = on_c.ledger(dave).await;
    let kinds: Vec<&str> =
        ledger["ledger"].as_array().into_iter().flatten().filter_map(|e| e["kind"].as_str()).collect();
    assert!(
        kinds.contains(&"allocate") && kinds.contains(&"spend"),
        "dave's ledger (allocated on A, spent on B): {ledger}"
    );
    let ledger = on_c.ledger(team).await;
    let kinds: Vec<&str> =
        ledger["ledger"].as_array().into_iter().flatten().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["mint", "allocate"], "team's ledger: {ledger}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_key_rate_limited_on_one_instance_cools_on_every_instance() {
    let Some(env) = Env::create(true).await else { return };
    let mock = MockUpstream::start().await;
    let config = env.config();
    let a = env.server(&config, &mock).await;
    let b = env.server(&config, &mock).await;
    // Warm both instances up (the pool feed's subscription is established at start).
    for s in [&a, &b] {
        let r = chat(s, TEAM_ADMIN_KEY, "gpt-4o", "warm").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    mock.reset();
    mock.script(Some("sk-up-1"), vec![xai_tests::mock::Behavior::status(429).with_header("retry-after", "30")]);
    let on_a = chat(&a, TEAM_ADMIN_KEY, "gpt-4o", "limited").await;
    assert_ne!(on_a.status, 200, "A saw the upstream 429 on its only key: {}", on_a.text());
    let since = Instant::now();
    let mut served = 0;
    // B learns of the cooldown from A: it answers without spending a request on the cooling key.
    loop {
        let on_b = chat(&b, TEAM_ADMIN_KEY, "gpt-4o", "after").await;
        if on_b.status == 200 {
            served += 1;
        } else {
            assert!(on_b.status == 429 || on_b.status == 503, "{}", on_b.text());
            break;
        }
        assert!(since.elapsed() < PROPAGATION, "B still used the key A saw rate limited after {:?}", since.elapsed());
        tokio::time::sleep(POLL_EVERY).await;
    }
    let reached = mock.requests().into_iter().filter(|r| r.body.to_string().contains("after")).count();
    assert_eq!(reached, served, "B's refusal came from the shared cooldown, not from the upstream");
}
