//! Criterion benchmark of what the request path calls on the meter per request (issue 6 item 7): `Meter::admit`
//! then `Meter::record` (with the reservation admit returned) for a principal on a three-level account tree,
//! every level with rpm, rpd, tpm, tpd and a daily credit limit. Arms, measured in one run:
//!
//! - `meter/off`: a meter that does nothing (admit returns `Reservation::default()`, record drops the record).
//! - `meter/memory`: `InMemoryMeter` (limits and the recent log; what xai-server runs with `DATABASE_URL=memory`).
//! - `meter/budget`: the same with funds on the request (the paying account's balance is held, then settled).
//! - `meter/durable-sqlite`: `DurableMeter` over the embedded SQLite (temp dir) wrapping `InMemoryMeter`: the
//!   record is also queued for the writer task, which batches it into SQLite on another thread. After each
//!   sample the queue is flushed outside the timed region, so records never overflow into the spool.
//!
//! Every arm builds the same record (a clone with a fresh request id), so differences are the meter's own cost.
//!
//!   cargo bench -p xai-benches --bench metering

use std::hint::black_box;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::runtime::Runtime;
use xai_core::error::GatewayError;
use xai_core::memory::InMemoryMeter;
use xai_core::traits::{AdmitRequest, BoxFuture, Funds, Maybe, Meter, Reservation};
use xai_core::usage::UsageRecord;
use xai_core::{Account, AccountId, KeyDigest, KeyId, Micros, Policy, Principal, RequestId, Role, Status, VirtualKey};
use xai_store::usage::{DurableConfig, DurableMeter, UsageDb};

/// Metering off.
struct NoMeter;

impl Meter for NoMeter {
    fn admit<'a>(&'a self, _req: &'a AdmitRequest<'a>) -> Maybe<'a, Result<Reservation, GatewayError>> {
        Maybe::Ready(Ok(Reservation::default()))
    }
    fn record(&self, record: UsageRecord, reservation: Reservation) {
        drop((record, reservation));
    }
    fn recent(&self, _limit: usize) -> Vec<UsageRecord> {
        Vec::new()
    }
    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Bounds far above what the run reaches, so every request is admitted and every counter is charged.
fn limited() -> Policy {
    Policy {
        rpm: Some(1 << 40),
        rpd: Some(1 << 40),
        tpm: Some(1 << 50),
        tpd: Some(1 << 50),
        daily_limit: Some(Micros(1 << 55)),
        ..Policy::default()
    }
}

fn account(id: u64, parent: Option<u64>, path: &str, role: Role) -> Arc<Account> {
    Arc::new(Account {
        id: AccountId(id),
        parent: parent.map(AccountId),
        name: path.rsplit('/').next().unwrap_or(path).into(),
        path: path.into(),
        status: Status::Active,
        role,
        policy: limited(),
        balance: Micros::ZERO,
    })
}

/// company / department / person, every level bounded.
fn principal() -> Principal {
    let chain = vec![
        account(1, None, "acme", Role::Owner),
        account(2, Some(1), "acme/research", Role::Admin),
        account(3, Some(2), "acme/research/alice", Role::Member),
    ];
    let key = Arc::new(VirtualKey {
        id: KeyId(7),
        account: AccountId(3),
        prefix: "xai-bench".into(),
        digest: KeyDigest::of("sk-bench"),
        status: Status::Active,
        expires_at: None,
        policy: None,
    });
    Principal::new(key, chain)
}

fn template() -> UsageRecord {
    let mut r = xai_benches::usagegen::record(1, SystemTime::now());
    r.account = AccountId(3);
    r.account_path = "acme/research/alice".into();
    r.chain = Arc::from(vec![AccountId(1), AccountId(2), AccountId(3)]);
    r.key = KeyId(7);
    r.requested_model = "gpt-4o-mini".into();
    r
}

fn ready<T>(rt: &Runtime, m: Maybe<'_, T>) -> T {
    match m {
        Maybe::Ready(t) => t,
        Maybe::Pending(f) => rt.block_on(f),
    }
}

/// `iters` requests: admit, then record the usage with the reservation.
fn requests(rt: &Runtime, meter: &dyn Meter, req: &AdmitRequest<'_>, tpl: &UsageRecord, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let reservation = ready(rt, meter.admit(black_box(req))).expect("admitted");
        let mut record = tpl.clone();
        record.request_id = RequestId::generate();
        meter.record(record, reservation);
    }
    start.elapsed()
}

async fn sqlite(dir: &std::path::Path) -> UsageDb {
    // The options xai-server's SqlStore uses.
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}?mode=rwc", dir.join("xai.db").display()))
        .expect("sqlite url")
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));
    UsageDb::Sqlite(SqlitePoolOptions::new().max_connections(8).connect_with(opts).await.expect("sqlite"))
}

fn bench_meter(c: &mut Criterion) {
    // The writer task runs on its own worker thread, as in xai-server.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let p = principal();
    let tpl = template();
    let req = AdmitRequest {
        principal: &p,
        model: "gpt-4o-mini",
        estimate_tokens: 1200,
        resolution: None,
        cost: Micros(900),
        funds: None,
    };
    let funded = AdmitRequest {
        funds: Some(Funds { account: AccountId(1), available: Micros(1 << 60), applied: 0, generation: 0 }),
        ..req
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let durable = rt.block_on(async {
        let cfg = DurableConfig { queue: 1 << 18, ..DurableConfig::default() };
        DurableMeter::start(Arc::new(InMemoryMeter::default()), sqlite(dir.path()).await, dir.path().join("spool"), cfg)
            .await
            .expect("durable meter")
    });
    let off = NoMeter;
    let memory = InMemoryMeter::default();
    let budget = InMemoryMeter::default();

    let mut g = c.benchmark_group("meter");
    g.bench_function("off", |b| b.iter_custom(|n| requests(&rt, &off, &req, &tpl, n)));
    g.bench_function("memory", |b| b.iter_custom(|n| requests(&rt, &memory, &req, &tpl, n)));
    g.bench_function("budget", |b| b.iter_custom(|n| requests(&rt, &budget, &funded, &tpl, n)));
    g.bench_function("durable-sqlite", |b| {
        b.iter_custom(|n| {
            let t = requests(&rt, &durable, &req, &tpl, n);
            // Outside the timed region: the writer catches up, so the queue never overflows into the spool.
            let report = rt.block_on(durable.flush_within(Duration::from_secs(120)));
            assert!(report.complete, "flush incomplete");
            t
        })
    });
    g.finish();
    let stats = durable.stats();
    eprintln!("durable-sqlite: {stats:?}");
    assert_eq!(stats.spooled, 0, "records overflowed into the spool");
}

criterion_group!(benches, bench_meter);
criterion_main!(benches);
