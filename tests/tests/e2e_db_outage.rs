//! Usage is written off the hot path (DESIGN §4, §5): while the database is unreachable, usage records go to the
//! local append-only spool (`<data dir>/spool/usage/`) and are replayed when it returns; requests keep being served
//! meanwhile, and no record is lost or counted twice.
//!
//! The server reaches Postgres through a TCP relay the test controls: [`Relay::cut`] aborts every relayed connection
//! and refuses new ones (accepts and drops them at once) until [`Relay::restore`]. The usage table is read over a
//! direct connection to Postgres, never through the relay.
//!
//! Each test creates its own database `xai_test_<random>` (Postgres at `XAI_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and drops it at the end, also when it fails. When Postgres is
//! unreachable the test is skipped with a message, except under `CI=true`, where it fails.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{Connection, Row};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use xai_tests::client;
use xai_tests::fixtures::chat_body;
use xai_tests::harness::{TempDir, XaiServer};
use xai_tests::mock::MockUpstream;
use xai_tests::pg::TestDatabase;

/// The virtual key of the config's account.
const KEY: &str = "sk-outage";
/// How long one request may take, database or not: the hot path never waits on the database.
const REQUEST_BOUND: Duration = Duration::from_secs(2);
/// How long records may take to reach the database once it is back (replay interval 2 s, write timeout 5 s).
const REPLAY_BOUND: Duration = Duration::from_secs(20);
/// How long records may take to reach the spool once the database is gone.
const SPOOL_BOUND: Duration = Duration::from_secs(15);
/// The server's drain grace (`shutdown_grace_ms`).
const GRACE: Duration = Duration::from_secs(3);
/// Polling interval.
const POLL_EVERY: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------------------------------
// Environment: a database per test, dropped at the end.

/// `postgres://user@host:port/db` → (`postgres://user@`, `host:port`, `db`).
fn split_url(url: &str) -> (String, String, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (user, rest) = rest.rsplit_once('@').map_or(("", rest), |(u, r)| (u, r));
    let (host_port, db) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let prefix = if user.is_empty() { format!("{scheme}://") } else { format!("{scheme}://{user}@") };
    let host_port = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5432") };
    (prefix, host_port, db.split('?').next().unwrap_or(db).to_owned())
}

/// A database of its own for one test; dropped on drop (declare it before the servers, so they are killed first).
#[derive(Debug)]
struct Env {
    /// The test's database (dropped with the `Env`).
    db: TestDatabase,
    /// Where Postgres listens.
    postgres: SocketAddr,
    /// `postgres://…@` of the admin URL.
    url_prefix: String,
}

impl Env {
    /// A fresh database; `None` (skipped) when Postgres is unreachable outside CI.
    async fn create() -> Option<Env> {
        let db = TestDatabase::create().await?;
        let (url_prefix, host_port, _) = split_url(&db.url);
        let postgres = tokio::net::lookup_host(host_port.as_str())
            .await
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("cannot resolve {host_port}"));
        Some(Env { db, postgres, url_prefix })
    }

    /// The URL of this test's database through `relay`.
    fn url_via(&self, relay: &Relay) -> String {
        format!("{}{}/{}", self.url_prefix, relay.addr, self.db.name)
    }

    /// (rows, distinct request ids, every request id, sum of `usage_daily.requests`) of the usage tables, read
    /// over a direct connection; `None` while the tables do not exist yet.
    async fn usage(&self) -> Option<(i64, i64, BTreeSet<String>, i64)> {
        let mut conn = sqlx::PgConnection::connect(&self.db.url)
            .await
            .unwrap_or_else(|e| panic!("direct connection to {}: {e}", self.db.url));
        let counts = sqlx::query("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM usage").fetch_one(&mut conn).await;
        let Ok(counts) = counts else {
            let _ = conn.close().await;
            return None;
        };
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT request_id FROM usage").fetch_all(&mut conn).await.expect("SELECT request_id");
        let daily: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(requests), 0)::BIGINT FROM usage_daily")
            .fetch_one(&mut conn)
            .await
            .expect("SELECT SUM(requests) FROM usage_daily");
        let _ = conn.close().await;
        Some((counts.get(0), counts.get(1), ids.into_iter().collect(), daily))
    }

    /// Polls [`Env::usage`] until the table holds exactly `expected` (a row each, no duplicate, rollups counting
    /// each once); returns how long it took. Fails after `bound` with what the table holds.
    async fn wait_rows(&self, expected: &BTreeSet<String>, bound: Duration, server: &XaiServer) -> Duration {
        let since = Instant::now();
        let n = expected.len() as i64;
        loop {
            let seen = self.usage().await;
            if let Some((rows, distinct, ids, daily)) = &seen {
                assert!(*rows <= n, "more usage rows than requests: {rows} rows for {n} requests");
                if *rows == n {
                    assert_eq!(*distinct, n, "{n} rows but only {distinct} distinct request ids");
                    assert_eq!(&ids, &expected, "the usage rows are not the requests that were served");
                    assert_eq!(*daily, n, "usage_daily counts {daily} requests for {n} rows (double count?)");
                    return since.elapsed();
                }
            }
            let have = seen.as_ref().map_or(-1, |s| s.0);
            assert!(
                since.elapsed() < bound,
                "the usage table holds {have} rows, not {n}, {bound:?} on; spool: {:?}\nserver stderr:\n{}",
                spool_ids(server.data_dir()),
                server.stderr()
            );
            // Usage is written asynchronously: poll, bounded above.
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The relay.

/// A TCP relay in front of Postgres: `cut()` aborts every relayed connection and refuses new ones (accepts and
/// drops them at once) until `restore()`. Stops (cutting everything) on drop.
#[derive(Debug)]
struct Relay {
    addr: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    /// Connections refused while cut.
    refused: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("relay address");
        let cut = Arc::new(watch::Sender::new(false));
        let refused = Arc::new(AtomicU64::new(0));
        let (cut2, refused2) = (cut.clone(), refused.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                if *cut2.borrow() {
                    refused2.fetch_add(1, Ordering::Relaxed);
                    drop(client);
                    continue;
                }
                let mut cut_rx = cut2.subscribe();
                tokio::spawn(async move {
                    let mut client = client;
                    let relay = async {
                        if let Ok(mut server) = TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    };
                    // Ends on a cut, or when the relay is gone (the sender dropped): both streams are dropped.
                    tokio::select! {
                        () = relay => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay { addr, cut, refused, task }
    }

    /// Aborts every live connection and refuses new ones.
    fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Relays new connections again.
    fn restore(&self) {
        self.cut.send_replace(false);
    }

    /// Connections refused while cut so far.
    fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.cut.send_replace(true);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers.

/// One mock provider serving `gpt-*`, one account with [`KEY`], a [`GRACE`] drain.
fn config() -> String {
    format!(
        r#"admin_token = "admin-secret"

[server]
shutdown_grace_ms = {grace}

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
keys = ["{KEY}"]
allow_models = ["gpt-*"]
"#,
        grace = GRACE.as_millis()
    )
}

/// A server on `db_url` (no Redis), on `data_dir` when given.
async fn server(mock: &MockUpstream, db_url: &str, data_dir: Option<&Path>) -> XaiServer {
    let mut b = XaiServer::builder(config()).var("MOCK", mock.url()).arg("--database-url").arg(db_url);
    if let Some(dir) = data_dir {
        b = b.data_dir(dir);
    }
    b.start().await
}

/// Sends `n` chat requests one after the other, each of which must answer 200 within [`REQUEST_BOUND`]; returns
/// their request ids (`x-request-id`) and the slowest request's time.
async fn serve_requests(server: &XaiServer, what: &str, n: usize) -> (Vec<String>, Duration) {
    let url = format!("{}/v1/chat/completions", server.url());
    let mut ids = Vec::with_capacity(n);
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let body = chat_body("gpt-4o-mini", &format!("{what} {i}"));
        let started = Instant::now();
        let resp = tokio::time::timeout(REQUEST_BOUND, client::post_json(&url, Some(KEY), &body))
            .await
            .unwrap_or_else(|_| panic!("{what} #{i}: no answer within {REQUEST_BOUND:?}\n{}", server.stderr()));
        let took = started.elapsed();
        slowest = slowest.max(took);
        assert_eq!(resp.status, 200, "{what} #{i}: {}", resp.text());
        assert_eq!(resp.json()["choices"][0]["message"]["content"], format!("mock reply: {what} {i}"));
        let id = resp.header("x-request-id").unwrap_or_else(|| panic!("{what} #{i}: no x-request-id")).to_owned();
        ids.push(id);
    }
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), n, "{what}: request ids are not distinct: {ids:?}");
    (ids, slowest)
}

/// The spool's files under `data_dir`: `usage.spool.replay` (being replayed), then `usage.spool` (appended). In
/// this order, a concurrent rename of the second to the first can make a reader miss records, never see one twice.
fn spool_files(data_dir: &Path) -> [std::path::PathBuf; 2] {
    let dir = data_dir.join("spool").join("usage");
    [dir.join("usage.spool.replay"), dir.join("usage.spool")]
}

/// The request ids of every record in the spool (see [`spool_files`] for the order).
fn spool_ids(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for file in spool_files(data_dir) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: unreadable spool line ({e}): {line}", file.display()));
            let id = v["request_id"].as_str().unwrap_or_else(|| panic!("spool line without request_id: {line}"));
            out.push(id.to_owned());
        }
    }
    out
}

/// Polls the spool until it holds exactly the records of `ids`; returns how long it took. Fails after
/// [`SPOOL_BOUND`].
async fn wait_spooled(server: &XaiServer, ids: &[String]) -> Duration {
    let since = Instant::now();
    let expected: BTreeSet<&String> = ids.iter().collect();
    loop {
        let spooled = spool_ids(server.data_dir());
        let seen: BTreeSet<&String> = spooled.iter().collect();
        assert!(seen.len() == spooled.len(), "the spool holds a record twice: {spooled:?}");
        assert!(seen.is_subset(&expected), "the spool holds records of other requests: {spooled:?} vs {ids:?}");
        if seen == expected {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < SPOOL_BOUND,
            "{} of {} records in the spool {SPOOL_BOUND:?} after the cut\nserver stderr:\n{}",
            seen.len(),
            ids.len(),
            server.stderr()
        );
        // Records are spooled asynchronously: poll, bounded above.
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// SIGTERM, then the exit status must be 0; returns how long the exit took.
async fn stop(server: &mut XaiServer, bound: Duration) -> Duration {
    let since = Instant::now();
    server.sigterm();
    let status = server.wait_exit(bound).await;
    let took = since.elapsed();
    assert!(status.success(), "xai-server exited with {status}:\n{}", server.stderr());
    took
}

// ---------------------------------------------------------------------------------------------------------------
// Tests.

/// 30 requests with the database up, 40 with it cut (each answered within 2 s, the records spooled), then the
/// database back: all 70 records in Postgres, once each; SIGTERM exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_cut_spools_usage_and_replays_it_when_back() {
    let Some(env) = Env::create().await else { return };
    let relay = Relay::start(env.postgres).await;
    let mock = MockUpstream::start().await;
    let mut server = server(&mock, &env.url_via(&relay), None).await;

    let (before, slowest_up) = serve_requests(&server, "up", 30).await;
    let expected: BTreeSet<String> = before.iter().cloned().collect();
    let took = env.wait_rows(&expected, Duration::from_secs(10), &server).await;
    eprintln!("30 requests with the database up: slowest {slowest_up:?}; in Postgres after {took:?}");

    relay.cut();
    let since_cut = Instant::now();
    let (during, slowest_cut) = serve_requests(&server, "cut", 40).await;
    let served = since_cut.elapsed();
    let took = wait_spooled(&server, &during).await;
    eprintln!(
        "40 requests with the database cut: slowest {slowest_cut:?}, all in {served:?}; spooled {took:?} later \
         ({} connections refused)",
        relay.refused()
    );
    assert!(relay.refused() > 0, "the server never tried the database during the cut");
    let (rows, ..) = env.usage().await.expect("usage table");
    assert_eq!(rows, 30, "nothing reached Postgres during the cut");
    let spooled_bytes: u64 =
        spool_files(server.data_dir()).iter().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum();
    assert!(spooled_bytes > 0, "the spool file is empty");

    relay.restore();
    let all: BTreeSet<String> = before.iter().chain(&during).cloned().collect();
    let took = env.wait_rows(&all, REPLAY_BOUND, &server).await;
    eprintln!("database restored: all 70 records in Postgres after {took:?}");
    // The replay removes its files once done; wait for that, then the table must still hold exactly 70.
    let since = Instant::now();
    while !spool_ids(server.data_dir()).is_empty() {
        assert!(since.elapsed() < SPOOL_BOUND, "the spool still holds {:?}", spool_ids(server.data_dir()));
        // Removal follows the insert: poll, bounded above.
        tokio::time::sleep(POLL_EVERY).await;
    }
    env.wait_rows(&all, Duration::ZERO, &server).await;

    let took = stop(&mut server, Duration::from_secs(15)).await;
    eprintln!("SIGTERM → exit 0 in {took:?}");
    env.wait_rows(&all, Duration::ZERO, &server).await;
}

/// 20 requests with the database cut, then SIGTERM while still cut: exit 0 within the grace, the 20 records in the
/// spool; a new server on the same data dir with the database back writes them, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_spooled_at_shutdown_reach_the_database_after_a_restart() {
    let Some(env) = Env::create().await else { return };
    let relay = Relay::start(env.postgres).await;
    let mock = MockUpstream::start().await;
    let data = TempDir::new("xai-db-outage");
    let mut first = server(&mock, &env.url_via(&relay), Some(data.path())).await;

    relay.cut();
    let (ids, slowest) = serve_requests(&first, "cut", 20).await;
    let took = stop(&mut first, GRACE + Duration::from_secs(12)).await;
    eprintln!("20 requests with the database cut: slowest {slowest:?}; SIGTERM → exit 0 in {took:?}");
    assert!(took < GRACE, "SIGTERM with the database cut: exit took {took:?}, more than the {GRACE:?} grace");
    let mut spooled = spool_ids(data.path());
    spooled.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(spooled, expected, "the spool after the shutdown holds the 20 records, once each");
    let (rows, ..) = env.usage().await.expect("usage table (created at start-up)");
    assert_eq!(rows, 0, "nothing reached Postgres during the cut");
    drop(first);

    relay.restore();
    let mut second = server(&mock, &env.url_via(&relay), Some(data.path())).await;
    let expected: BTreeSet<String> = ids.into_iter().collect();
    let took = env.wait_rows(&expected, REPLAY_BOUND, &second).await;
    eprintln!("restarted with the database back: the 20 records in Postgres after {took:?}");
    let since = Instant::now();
    while !spool_ids(data.path()).is_empty() {
        assert!(since.elapsed() < SPOOL_BOUND, "the spool still holds {:?}", spool_ids(data.path()));
        // Removal follows the insert: poll, bounded above.
        tokio::time::sleep(POLL_EVERY).await;
    }
    let took = stop(&mut second, Duration::from_secs(15)).await;
    eprintln!("SIGTERM → exit 0 in {took:?}");
    env.wait_rows(&expected, Duration::ZERO, &second).await;
}
