//! Metering throughput: usage records/s into the embedded SQLite and into Postgres (issue 6 item 7).
//!
//! Two paths per database, each cell on empty usage tables:
//! - `direct`: `UsageDb::insert` with batches of 1, 16, 64 and 256 rows (one transaction per batch: the rows and
//!   their daily rollups). A cell stops after `--max-secs` (batch 1 on Postgres is slow) or `--records` rows.
//! - `meter`: end to end through `DurableMeter::record` (what the gateway calls per request; an inner
//!   `InMemoryMeter`, `DurableConfig::default()` as xai-server uses), records/s from the first `record` to the
//!   completion of `flush_within`. The producer waits while the queue is 3/4 full, so this measures the writer's
//!   sustained rate, not the spool's (`spooled` must stay 0).
//!
//! Rounds alternate the cell order; the table shows medians, and ratios against batch 1 of the same database
//! are medians of same-round ratios. Postgres is skipped (with a message) when unreachable.
//!
//!   cargo run --release -p xai-benches --bin meterbench -- --records 50000

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use xai_benches::scratch::{ScratchDb, median};
use xai_core::memory::InMemoryMeter;
use xai_core::traits::{Meter, Reservation};
use xai_store::secrets::MasterKey;
use xai_store::sql::SqlStore;
use xai_store::usage::{DurableConfig, DurableMeter, UsageDb, UsageRow};

#[derive(Parser, Debug)]
#[command(name = "meterbench", about = "Usage records/s into SQLite and Postgres, direct batches and end to end")]
struct Args {
    /// Records per cell (the end-to-end cells write all of them).
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    records: usize,
    /// Rounds (alternating the cell order); medians are reported.
    #[arg(long, value_name = "N", default_value_t = 3)]
    rounds: usize,
    /// Bound of one direct cell, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    max_secs: f64,
    /// Batch sizes of the direct cells.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    batches: Vec<usize>,
    /// Admin URL of Postgres (a database `xai_bench_<random>` is created there and dropped at the end).
    #[arg(
        long,
        value_name = "URL",
        env = "XAI_TEST_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
    /// Skip Postgres.
    #[arg(long)]
    no_postgres: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// `UsageDb::insert` with this many rows per call.
    Direct(usize),
    /// `DurableMeter::record` + `flush_within`.
    Meter,
}

struct Backend {
    name: &'static str,
    db: UsageDb,
}

impl Backend {
    async fn clear(&self) -> Result<(), sqlx::Error> {
        match &self.db {
            UsageDb::Sqlite(p) => {
                sqlx::raw_sql("DELETE FROM usage; DELETE FROM usage_daily;").execute(p).await.map(drop)?
            }
            UsageDb::Postgres(p) => sqlx::raw_sql("TRUNCATE usage, usage_daily").execute(p).await.map(drop)?,
        }
        Ok(())
    }

    async fn count(&self) -> Result<i64, sqlx::Error> {
        match &self.db {
            UsageDb::Sqlite(p) => sqlx::query_scalar("SELECT COUNT(*) FROM usage").fetch_one(p).await,
            UsageDb::Postgres(p) => sqlx::query_scalar("SELECT COUNT(*) FROM usage").fetch_one(p).await,
        }
    }
}

/// One measured cell.
#[derive(Clone, Copy, Debug)]
struct Cell {
    records: usize,
    secs: f64,
    spooled: u64,
}

impl Cell {
    fn rate(&self) -> f64 {
        self.records as f64 / self.secs
    }
}

async fn run_direct(b: &Backend, rows: &[UsageRow], batch: usize, bound: Duration) -> Result<Cell, String> {
    b.clear().await.map_err(|e| format!("{}: clear: {e}", b.name))?;
    let start = Instant::now();
    let mut done = 0;
    for chunk in rows.chunks(batch) {
        let fresh = b.db.insert(chunk).await.map_err(|e| format!("{}: insert: {e}", b.name))?;
        if fresh != chunk.len() as u64 {
            return Err(format!("{}: {} of {} rows new", b.name, fresh, chunk.len()));
        }
        done += chunk.len();
        if start.elapsed() >= bound {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let n = b.count().await.map_err(|e| format!("{}: count: {e}", b.name))?;
    if n != done as i64 {
        return Err(format!("{}: {n} rows stored, {done} inserted", b.name));
    }
    Ok(Cell { records: done, secs, spooled: 0 })
}

async fn run_meter(b: &Backend, n: usize, now: SystemTime) -> Result<Cell, String> {
    b.clear().await.map_err(|e| format!("{}: clear: {e}", b.name))?;
    let spool = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cfg = DurableConfig::default();
    let high = cfg.queue as u64 * 3 / 4;
    let meter = DurableMeter::start(Arc::new(InMemoryMeter::default()), b.db.clone(), spool.path(), cfg)
        .await
        .map_err(|e| format!("{}: start: {e}", b.name))?;
    // Generated before the clock starts: the gateway has the record in hand when it calls `record`.
    let records: Vec<_> = (0..n as u64).map(|i| xai_benches::usagegen::record(i, now)).collect();
    let start = Instant::now();
    for r in records {
        while meter.stats().queued >= high {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        meter.record(r, Reservation::default());
    }
    let report = meter.flush_within(Duration::from_secs(120)).await;
    let secs = start.elapsed().as_secs_f64();
    let stats = meter.stats();
    if !report.complete || stats.written + stats.spooled != n as u64 {
        return Err(format!("{}: flush incomplete: {report:?}, {stats:?}", b.name));
    }
    let stored = b.count().await.map_err(|e| format!("{}: count: {e}", b.name))?;
    if stored != n as i64 {
        return Err(format!("{}: {stored} rows stored, {n} recorded", b.name));
    }
    Ok(Cell { records: n, secs, spooled: stats.spooled })
}

async fn sqlite_backend(dir: &std::path::Path) -> Result<Backend, String> {
    // What xai-server opens: the store's connection options and every migration (the usage indexes included).
    let url = format!("sqlite://{}?mode=rwc", dir.join("xai.db").display());
    let store = SqlStore::connect(&url, MasterKey::generate()).await.map_err(|e| e.to_string())?;
    let pool = store.sqlite_pool().cloned().ok_or("no SQLite pool")?;
    Ok(Backend { name: "sqlite", db: UsageDb::Sqlite(pool) })
}

/// A scratch database opened as xai-server opens it: the store's pool (16 connections, 3 s acquire bound) and
/// every migration; `Ok(None)` when Postgres is unreachable.
async fn postgres_backend(admin: &str) -> Result<Option<(Backend, ScratchDb)>, String> {
    let Some(scratch) = ScratchDb::create(admin).await? else { return Ok(None) };
    let store = SqlStore::connect(&scratch.url, MasterKey::generate())
        .await
        .map_err(|e| format!("connect {}: {e}", scratch.name))?;
    let db = UsageDb::Postgres(store.postgres_pool().cloned().ok_or("no Postgres pool")?);
    Ok(Some((Backend { name: "postgres", db }, scratch)))
}

async fn run(args: &Args) -> Result<(), String> {
    let now = SystemTime::now();
    let rows: Vec<UsageRow> =
        (0..args.records as u64).map(|i| UsageRow::from(&xai_benches::usagegen::record(i, now))).collect();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut backends = vec![sqlite_backend(dir.path()).await?];
    let mut scratch = None;
    if !args.no_postgres
        && let Some((b, db)) = postgres_backend(&args.postgres).await?
    {
        backends.push(b);
        scratch = Some(db);
    }
    let result = measure(args, &backends, &rows, now).await;
    for b in &backends {
        match &b.db {
            UsageDb::Sqlite(p) => p.close().await,
            UsageDb::Postgres(p) => p.close().await,
        }
    }
    if let Some(db) = scratch {
        db.drop_db().await;
    }
    result
}

async fn measure(args: &Args, backends: &[Backend], rows: &[UsageRow], now: SystemTime) -> Result<(), String> {
    let bound = Duration::from_secs_f64(args.max_secs);
    let mut cells: Vec<(usize, Path)> = Vec::new();
    for bi in 0..backends.len() {
        cells.extend(args.batches.iter().map(|&n| (bi, Path::Direct(n))));
        cells.push((bi, Path::Meter));
    }
    // results[cell][round]
    let mut results: Vec<Vec<Cell>> = vec![Vec::new(); cells.len()];
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..cells.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for ci in order {
            let (bi, path) = cells[ci];
            let b = &backends[bi];
            let cell = match path {
                Path::Direct(n) => run_direct(b, rows, n, bound).await?,
                Path::Meter => run_meter(b, args.records, now).await?,
            };
            eprintln!(
                "round {}: {:<8} {:<12} {:>7} records in {:>6.2} s = {:>8.0} records/s",
                round + 1,
                b.name,
                label(path),
                cell.records,
                cell.secs,
                cell.rate()
            );
            results[ci].push(cell);
        }
    }

    println!(
        "\n{} records per cell, {} rounds (medians; ratios: medians of same-round ratios)\n",
        args.records, args.rounds
    );
    println!("| database | path | records/cell | records/s | × batch 1 | spooled |");
    println!("|---|---|---:|---:|---:|---:|");
    for (ci, &(bi, path)) in cells.iter().enumerate() {
        let base = cells.iter().position(|&(b, p)| b == bi && p == Path::Direct(1));
        let ratio =
            base.map(|bj| median(results[ci].iter().zip(&results[bj]).map(|(c, one)| c.rate() / one.rate()).collect()));
        println!(
            "| {} | {} | {:.0} | {:.0} | {} | {} |",
            backends[bi].name,
            label(path),
            median(results[ci].iter().map(|c| c.records as f64).collect()),
            median(results[ci].iter().map(Cell::rate).collect()),
            ratio.map_or("–".into(), |r| format!("{r:.1}")),
            results[ci].iter().map(|c| c.spooled).sum::<u64>(),
        );
    }
    Ok(())
}

fn label(p: Path) -> String {
    match p {
        Path::Direct(n) => format!("insert ×{n}"),
        Path::Meter => "DurableMeter".into(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.records == 0 || args.rounds == 0 || args.batches.contains(&0) {
        eprintln!("meterbench: --records, --rounds and --batches must be positive");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meterbench: runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meterbench: {e}");
            ExitCode::FAILURE
        }
    }
}
