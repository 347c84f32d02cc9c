//! Durable usage metering (DESIGN §4, §5): [`DurableMeter`] wraps an inner [`Meter`] (limits, reservations and
//! `recent` stay with it) and writes every usage record to SQL off the hot path.
//!
//! - [`Meter::record`] forwards to the inner meter and `try_send`s the record into a bounded queue; it never
//!   waits. When the queue is full (or the writer is gone) the record is appended to the spool instead.
//! - A writer task batches records (up to `batch_max` or `batch_wait`) and, in one transaction, inserts one `usage`
//!   row per record and upserts the `usage_daily` rollups of the rows it actually inserted.
//! - When the database fails, the batch goes to a local append-only spool (JSON lines, fsync'd) and further batches
//!   go straight there until a replay succeeds. Every `replay_interval` (and at every flush) the spool is replayed:
//!   inserts are idempotent by `request_id` (`ON CONFLICT DO NOTHING`, rollups only for newly inserted rows), so a
//!   crash between an insert and the spool's removal never double counts. Nothing is dropped.
//! - [`DurableMeter::flush_within`] (SIGTERM) drains the queue, attempts the spool, and reports what remains.
//!
//! Spool files, in the directory given at construction: `usage.spool` (appended), `usage.spool.replay` (being
//! replayed; left in place when a replay fails or the process dies, and replayed first next time) and
//! `usage.spool.rejected` (lines that could not be parsed, e.g. one torn by a crash mid-write; kept for an operator).
//!
//! Notes for operators and callers:
//! - One spool directory per gateway instance (two processes replaying one directory would race on its files).
//! - The overflow path (queue full) appends and fsyncs on the calling thread: a rare, short block instead of a
//!   dropped record. Size `queue` so that it only happens when the writer is stalled.
//! - `request_id` is the idempotency key: two different requests sharing one id (a client reusing
//!   `x-request-id`) are stored once. Rollups are per account, *requested* model and UTC day.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo};
use sqlx::{Encode, PgConnection, PgPool, Postgres, QueryBuilder, SqliteConnection, SqlitePool, Type};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use xai_core::day::Day;
use xai_core::error::GatewayError;
use xai_core::traits::{AdmitRequest, BoxFuture, Maybe, Meter, Reservation};
use xai_core::usage::{UsageRecord, rfc3339};

/// The usage tables for SQLite (migration 0002; also applied by the writer itself, idempotently).
pub const SQLITE_DDL: &str = include_str!("../migrations/sqlite/0002_usage.sql");
/// The usage tables for Postgres (migration 0002; also applied by the writer itself, idempotently).
pub const POSTGRES_DDL: &str = include_str!("../migrations/postgres/0002_usage.sql");

/// Rows per insert statement (SQLite: 27 binds each, 27 648 in all, under its 32 766 bind limit; Postgres binds one
/// array per column).
const CHUNK: usize = 1024;

/// The database usage is written to.
#[derive(Clone, Debug)]
pub enum UsageDb {
    /// Embedded SQLite.
    Sqlite(SqlitePool),
    /// Postgres (clusters).
    Postgres(PgPool),
}

/// Why a usage write failed.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// The database refused or is unreachable.
    #[error("usage database: {0}")]
    Db(#[from] sqlx::Error),
    /// The database did not answer in time.
    #[error("usage database: timed out")]
    Timeout,
    /// The spool could not be read or written.
    #[error("usage spool: {0}")]
    Io(#[from] io::Error),
}

/// One `usage` row: the flat, owned form of a [`UsageRecord`], also the spool's line format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// Request id (unique: the idempotency key of inserts).
    pub request_id: String,
    /// Arrival time, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Calling account.
    pub account: i64,
    /// Its path.
    pub account_path: String,
    /// Virtual key.
    pub key_id: i64,
    /// Client protocol.
    pub inbound_protocol: String,
    /// Provider of the last attempt.
    pub provider: Option<String>,
    /// Upstream key of the last attempt.
    pub upstream_key: Option<i64>,
    /// Model asked by the client.
    pub requested_model: String,
    /// Model sent upstream.
    pub upstream_model: Option<String>,
    /// Level of the last attempt.
    pub level: Option<i64>,
    /// End state (`ok`, `upstream_error`, …).
    pub status: String,
    /// HTTP status returned to the client.
    pub http_status: i32,
    /// Every attempt, as a JSON array.
    pub attempts: String,
    /// Total latency.
    pub latency_ms: i64,
    /// Time to first byte.
    pub ttft_ms: Option<i64>,
    /// Prompt tokens (all input).
    pub prompt_tokens: i64,
    /// Completion tokens (all output).
    pub completion_tokens: i64,
    /// Reasoning tokens.
    pub reasoning_tokens: i64,
    /// Cached input read.
    pub cached_tokens: i64,
    /// Cache write.
    pub cache_write_tokens: i64,
    /// Images.
    pub images: i64,
    /// Search calls.
    pub searches: i64,
    /// Cost, micro-credits.
    pub cost: i64,
    /// Counts are estimates.
    pub estimated: bool,
}

fn int(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

fn enum_str<T: Serialize>(t: &T) -> String {
    match serde_json::to_value(t) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(v) => v.to_string(),
        Err(_) => String::new(),
    }
}

impl From<&UsageRecord> for UsageRow {
    fn from(r: &UsageRecord) -> Self {
        let time_ms = r.time.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        UsageRow {
            request_id: r.request_id.0.to_string(),
            time_ms,
            account: int(r.account.0),
            account_path: r.account_path.to_string(),
            key_id: int(r.key.0),
            inbound_protocol: r.inbound_protocol.as_str().to_owned(),
            provider: r.provider.as_deref().map(str::to_owned),
            upstream_key: r.upstream_key.map(|k| i64::from(k.0)),
            requested_model: r.requested_model.to_string(),
            upstream_model: r.upstream_model.as_deref().map(str::to_owned),
            level: r.level.map(|l| i64::from(l.0)),
            status: enum_str(&r.status),
            http_status: i32::from(r.http_status),
            attempts: serde_json::to_string(&r.attempts).unwrap_or_else(|_| "[]".into()),
            latency_ms: int(r.latency_ms),
            ttft_ms: r.ttft_ms.map(int),
            prompt_tokens: int(r.usage.prompt_tokens),
            completion_tokens: int(r.usage.completion_tokens),
            reasoning_tokens: int(r.usage.reasoning_tokens),
            cached_tokens: int(r.usage.cached_tokens),
            cache_write_tokens: int(r.usage.cache_write_tokens),
            images: int(r.usage.images),
            searches: int(r.usage.searches),
            cost: r.cost.0,
            estimated: r.estimated,
        }
    }
}

impl UsageRow {
    fn time(&self) -> std::time::SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(self.time_ms).unwrap_or(0))
    }

    /// The day (in the gateway's time zone, UTC by default).
    fn day(&self) -> Day {
        Day::of(self.time())
    }
}

/// Sums of one `usage_daily` row.
#[derive(Default)]
struct Rollup {
    requests: i64,
    prompt: i64,
    completion: i64,
    reasoning: i64,
    cached: i64,
    cache_write: i64,
    images: i64,
    searches: i64,
    cost: i64,
}

/// The rollups of the rows whose request ids are in `fresh` (each id counted once), in key order so concurrent
/// writers lock rollup rows in the same order.
fn rollups(rows: &[UsageRow], mut fresh: HashSet<String>) -> BTreeMap<(i64, &str, Day), Rollup> {
    let mut out: BTreeMap<(i64, &str, Day), Rollup> = BTreeMap::new();
    for r in rows {
        if !fresh.remove(&r.request_id) {
            continue;
        }
        let a = out.entry((r.account, r.requested_model.as_str(), r.day())).or_default();
        a.requests += 1;
        a.prompt = a.prompt.saturating_add(r.prompt_tokens);
        a.completion = a.completion.saturating_add(r.completion_tokens);
        a.reasoning = a.reasoning.saturating_add(r.reasoning_tokens);
        a.cached = a.cached.saturating_add(r.cached_tokens);
        a.cache_write = a.cache_write.saturating_add(r.cache_write_tokens);
        a.images = a.images.saturating_add(r.images);
        a.searches = a.searches.saturating_add(r.searches);
        a.cost = a.cost.saturating_add(r.cost);
    }
    out
}

// The statements' parts, as macros so that the SQLite and Postgres statements share them (`concat!`).
macro_rules! insert_usage {
    () => {
        "INSERT INTO usage (request_id, time, day, account, account_path, key_id, inbound_protocol, provider, \
         upstream_key, requested_model, upstream_model, level, status, http_status, attempts, latency_ms, ttft_ms, \
         prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens, cache_write_tokens, images, searches, \
         cost, estimated) "
    };
}
macro_rules! insert_usage_end {
    () => {
        " ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
    };
}
macro_rules! upsert_daily {
    () => {
        "INSERT INTO usage_daily (account, model, day, requests, prompt, completion, reasoning, cached, cache_write, \
         images, searches, cost) "
    };
}
macro_rules! upsert_daily_end {
    () => {
        " ON CONFLICT (account, model, day) DO UPDATE SET \
         requests = usage_daily.requests + excluded.requests, prompt = usage_daily.prompt + excluded.prompt, \
         completion = usage_daily.completion + excluded.completion, \
         reasoning = usage_daily.reasoning + excluded.reasoning, cached = usage_daily.cached + excluded.cached, \
         cache_write = usage_daily.cache_write + excluded.cache_write, images = usage_daily.images + excluded.images, \
         searches = usage_daily.searches + excluded.searches, cost = usage_daily.cost + excluded.cost"
    };
}
const INSERT_USAGE: &str = insert_usage!();
const INSERT_USAGE_END: &str = insert_usage_end!();
const UPSERT_DAILY: &str = upsert_daily!();
const UPSERT_DAILY_END: &str = upsert_daily_end!();

/// The statement sizes SQLite inserts use: a batch is cut into pieces of these sizes (largest first), so a
/// connection prepares and caches at most one statement per size. Cut to its exact length, every distinct batch
/// size was a statement of its own (up to 27 648 binds) to prepare and keep in sqlx's statement cache.
const SQLITE_PIECES: [usize; 11] = [1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1];

/// `items` cut into pieces of [`SQLITE_PIECES`] sizes, largest first.
fn pieces<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = SQLITE_PIECES.into_iter().find(|s| *s <= items.len())?;
        let (piece, rest) = items.split_at(size);
        items = rest;
        Some(piece)
    })
}

/// Inserts `rows` and their rollups on SQLite (in the caller's transaction); returns the number of rows newly
/// inserted.
async fn insert_sqlite(tx: &mut SqliteConnection, rows: &[UsageRow]) -> Result<u64, sqlx::Error> {
    let mut inserted: HashSet<String> = HashSet::with_capacity(rows.len());
    for piece in pieces(rows) {
        let mut qb = QueryBuilder::new(INSERT_USAGE);
        qb.push_values(piece, |mut b, r| {
            b.push_bind(r.request_id.as_str())
                .push_bind(rfc3339(r.time()))
                .push_bind(r.day().to_string())
                .push_bind(r.account)
                .push_bind(r.account_path.as_str())
                .push_bind(r.key_id)
                .push_bind(r.inbound_protocol.as_str())
                .push_bind(r.provider.as_deref())
                .push_bind(r.upstream_key)
                .push_bind(r.requested_model.as_str())
                .push_bind(r.upstream_model.as_deref())
                .push_bind(r.level)
                .push_bind(r.status.as_str())
                .push_bind(r.http_status)
                .push_bind(r.attempts.as_str())
                .push_bind(r.latency_ms)
                .push_bind(r.ttft_ms)
                .push_bind(r.prompt_tokens)
                .push_bind(r.completion_tokens)
                .push_bind(r.reasoning_tokens)
                .push_bind(r.cached_tokens)
                .push_bind(r.cache_write_tokens)
                .push_bind(r.images)
                .push_bind(r.searches)
                .push_bind(r.cost)
                .push_bind(r.estimated);
        });
        qb.push(INSERT_USAGE_END);
        let ids: Vec<String> = qb.build_query_scalar().fetch_all(&mut *tx).await?;
        inserted.extend(ids);
    }
    let n = inserted.len() as u64;
    let daily: Vec<_> = rollups(rows, inserted).into_iter().collect();
    for piece in pieces(&daily) {
        let mut qb = QueryBuilder::new(UPSERT_DAILY);
        qb.push_values(piece, |mut b, ((account, model, day), a)| {
            b.push_bind(*account)
                .push_bind(*model)
                .push_bind(day.to_string())
                .push_bind(a.requests)
                .push_bind(a.prompt)
                .push_bind(a.completion)
                .push_bind(a.reasoning)
                .push_bind(a.cached)
                .push_bind(a.cache_write)
                .push_bind(a.images)
                .push_bind(a.searches)
                .push_bind(a.cost);
        });
        qb.push(UPSERT_DAILY_END);
        qb.build().execute(&mut *tx).await?;
    }
    Ok(n)
}

/// 2000-01-01 (Postgres' epoch) in days since the Unix epoch.
const PG_EPOCH_DAYS: i64 = 10_957;

/// A `timestamptz` in Postgres' binary form (microseconds since 2000-01-01 UTC): no text to format or parse.
struct PgTimestamptz(i64);

impl PgTimestamptz {
    /// The instant of [`UsageRow::time`] (whole milliseconds; before the Unix epoch counts as the epoch). Beyond
    /// Postgres' range it stays out of range (refused there, as the text form was), never ±infinity.
    fn of(time_ms: i64) -> Self {
        let us = time_ms.max(0).checked_mul(1000).and_then(|us| us.checked_sub(PG_EPOCH_DAYS * 86_400_000_000));
        PgTimestamptz(us.unwrap_or(i64::MAX - 1))
    }
}

/// A `date` in Postgres' binary form (days since 2000-01-01).
struct PgDate(i32);

impl PgDate {
    /// Beyond Postgres' range it stays out of range (refused there), never ±infinity.
    fn of(day: Day) -> Self {
        PgDate(day.0.checked_sub(PG_EPOCH_DAYS).and_then(|d| i32::try_from(d).ok()).unwrap_or(i32::MAX - 1))
    }
}

impl Type<Postgres> for PgTimestamptz {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1184)) // timestamptz
    }
}

impl PgHasArrayType for PgTimestamptz {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1185)) // timestamptz[]
    }
}

impl Encode<'_, Postgres> for PgTimestamptz {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<'_, Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl Type<Postgres> for PgDate {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1082)) // date
    }
}

impl PgHasArrayType for PgDate {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1182)) // date[]
    }
}

impl Encode<'_, Postgres> for PgDate {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <i32 as Encode<'_, Postgres>>::encode_by_ref(&self.0, buf)
    }
}

/// The Postgres insert: one array per column, whatever the number of rows, so one prepared statement (and plan) is
/// reused and binding costs 26 parameters instead of 26 per row. `UNNEST` yields the rows in array order, so
/// duplicates of one `request_id` within a batch resolve as with `VALUES` (the first one is inserted).
const PG_INSERT_USAGE: &str = concat!(
    insert_usage!(),
    "SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::date[], $4::bigint[], $5::text[], $6::bigint[], \
     $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], $12::bigint[], $13::text[], $14::integer[], \
     $15::text[], $16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[], $21::bigint[], \
     $22::bigint[], $23::bigint[], $24::bigint[], $25::bigint[], $26::boolean[])",
    insert_usage_end!()
);
/// The Postgres rollup upsert, one array per column (the keys are distinct: one row per key).
const PG_UPSERT_DAILY: &str = concat!(
    upsert_daily!(),
    "SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::date[], $4::bigint[], $5::bigint[], $6::bigint[], \
     $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[])",
    upsert_daily_end!()
);

/// Inserts `rows` and their rollups on Postgres (in the caller's transaction); returns the number of rows newly
/// inserted.
async fn insert_chunk_pg(tx: &mut PgConnection, rows: &[UsageRow]) -> Result<u64, sqlx::Error> {
    fn col<'a, T>(rows: &'a [UsageRow], f: impl Fn(&'a UsageRow) -> T) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    let inserted: Vec<String> = sqlx::query_scalar(PG_INSERT_USAGE)
        .bind(col(rows, |r| r.request_id.as_str()))
        .bind(col(rows, |r| PgTimestamptz::of(r.time_ms)))
        .bind(col(rows, |r| PgDate::of(r.day())))
        .bind(col(rows, |r| r.account))
        .bind(col(rows, |r| r.account_path.as_str()))
        .bind(col(rows, |r| r.key_id))
        .bind(col(rows, |r| r.inbound_protocol.as_str()))
        .bind(col(rows, |r| r.provider.as_deref()))
        .bind(col(rows, |r| r.upstream_key))
        .bind(col(rows, |r| r.requested_model.as_str()))
        .bind(col(rows, |r| r.upstream_model.as_deref()))
        .bind(col(rows, |r| r.level))
        .bind(col(rows, |r| r.status.as_str()))
        .bind(col(rows, |r| r.http_status))
        .bind(col(rows, |r| r.attempts.as_str()))
        .bind(col(rows, |r| r.latency_ms))
        .bind(col(rows, |r| r.ttft_ms))
        .bind(col(rows, |r| r.prompt_tokens))
        .bind(col(rows, |r| r.completion_tokens))
        .bind(col(rows, |r| r.reasoning_tokens))
        .bind(col(rows, |r| r.cached_tokens))
        .bind(col(rows, |r| r.cache_write_tokens))
        .bind(col(rows, |r| r.images))
        .bind(col(rows, |r| r.searches))
        .bind(col(rows, |r| r.cost))
        .bind(col(rows, |r| r.estimated))
        .fetch_all(&mut *tx)
        .await?;
    let n = inserted.len() as u64;
    let daily = rollups(rows, inserted.into_iter().collect());
    if !daily.is_empty() {
        let len = daily.len();
        let (mut account, mut model, mut day) =
            (Vec::with_capacity(len), Vec::with_capacity(len), Vec::with_capacity(len));
        let mut sums: [Vec<i64>; 9] = std::array::from_fn(|_| Vec::with_capacity(len));
        for ((acc, m, d), a) in daily {
            account.push(acc);
            model.push(m);
            day.push(PgDate::of(d));
            let values = [
                a.requests,
                a.prompt,
                a.completion,
                a.reasoning,
                a.cached,
                a.cache_write,
                a.images,
                a.searches,
                a.cost,
            ];
            for (s, v) in sums.iter_mut().zip(values) {
                s.push(v);
            }
        }
        let mut q = sqlx::query(PG_UPSERT_DAILY).bind(account).bind(model).bind(day);
        for s in sums {
            q = q.bind(s);
        }
        q.execute(&mut *tx).await?;
    }
    Ok(n)
}

impl UsageDb {
    /// The database as the usage writer uses it: a SQLite file gets a connection of its own, so that the writer's
    /// page cache stays warm (in WAL mode a connection's cache is dropped whenever another connection wrote, and a
    /// pool hands out a different connection each time). Anything else is shared as it is.
    pub async fn for_writer(&self) -> UsageDb {
        let UsageDb::Sqlite(pool) = self else { return self.clone() };
        let opts = pool.connect_options();
        let file = opts.get_filename().to_string_lossy().into_owned();
        if file.is_empty() || file.contains(":memory:") {
            return self.clone();
        }
        match sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with((*opts).clone()).await {
            Ok(own) => UsageDb::Sqlite(own),
            Err(e) => {
                tracing::warn!(error = %e, "no connection of its own for the usage writer; sharing the pool");
                self.clone()
            }
        }
    }

    /// Creates the usage tables when missing (the same SQL as migration 0002).
    pub async fn ensure_schema(&self) -> Result<(), sqlx::Error> {
        match self {
            UsageDb::Sqlite(p) => sqlx::raw_sql(SQLITE_DDL).execute(p).await.map(drop),
            UsageDb::Postgres(p) => sqlx::raw_sql(POSTGRES_DDL).execute(p).await.map(drop),
        }
    }

    /// Inserts `rows` (idempotent by `request_id`) with their daily rollups, in one transaction (statements of
    /// [`CHUNK`] rows); returns how many rows were new. One commit per batch: every commit rewrites the pages it
    /// touched, so fewer, larger commits write less per row.
    pub async fn insert(&self, rows: &[UsageRow]) -> Result<u64, sqlx::Error> {
        let mut fresh = 0;
        match self {
            UsageDb::Sqlite(p) => {
                let mut tx = p.begin().await?;
                fresh += insert_sqlite(&mut tx, rows).await?;
                tx.commit().await?;
            }
            UsageDb::Postgres(p) => {
                let mut tx = p.begin().await?;
                for chunk in rows.chunks(CHUNK) {
                    fresh += insert_chunk_pg(&mut tx, chunk).await?;
                }
                tx.commit().await?;
            }
        }
        Ok(fresh)
    }
}

/// The spool: append-only JSON lines, fsync'd.
#[derive(Debug)]
struct Spool {
    dir: PathBuf,
    active: PathBuf,
    replay: PathBuf,
    rejected: PathBuf,
    /// Serialises appends and the active → replay rename.
    lock: Mutex<()>,
    /// Lines in `active` and `replay`.
    pending: AtomicU64,
}

fn count_lines(path: &Path) -> io::Result<u64> {
    match File::open(path) {
        Ok(f) => {
            let mut n = 0;
            for line in BufReader::new(f).split(b'\n') {
                n += u64::from(!line?.iter().all(u8::is_ascii_whitespace));
            }
            Ok(n)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Spool {
    fn open(dir: &Path) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let s = Spool {
            dir: dir.to_owned(),
            active: dir.join("usage.spool"),
            replay: dir.join("usage.spool.replay"),
            rejected: dir.join("usage.spool.rejected"),
            lock: Mutex::new(()),
            pending: AtomicU64::new(0),
        };
        let n = count_lines(&s.active)? + count_lines(&s.replay)?;
        s.pending.store(n, Ordering::Relaxed);
        Ok(s)
    }

    fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    fn sub_pending(&self, n: u64) {
        let _ = self.pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(p.saturating_sub(n)));
    }

    /// Appends `rows` as JSON lines and fsyncs.
    fn append(&self, rows: &[UsageRow]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(rows.len() * 512);
        for r in rows {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        let _g = self.lock.lock();
        let mut f = OpenOptions::new().create(true).read(true).append(true).open(&self.active)?;
        let len = f.metadata()?.len();
        if len > 0 {
            // A line torn by a crash mid-write must not swallow the next record.
            let mut last = [0u8];
            f.seek(SeekFrom::End(-1))?;
            f.read_exact(&mut last)?;
            if last[0] != b'\n' {
                buf.insert(0, b'\n');
            }
        }
        f.write_all(&buf)?;
        f.sync_data()?;
        if len == 0 {
            sync_dir(&self.dir);
        }
        self.pending.fetch_add(rows.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The file to replay: a replay left over, else the active spool renamed; `None` when nothing is spooled.
    fn take(&self) -> io::Result<Option<File>> {
        let _g = self.lock.lock();
        match File::open(&self.replay) {
            Ok(f) => return Ok(Some(f)),
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
        match fs::rename(&self.active, &self.replay) {
            Ok(()) => {
                sync_dir(&self.dir);
                File::open(&self.replay).map(Some)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads up to `max` records; returns them with the number of lines consumed (rejected lines included).
    fn read_chunk(&self, reader: &mut BufReader<File>, max: usize) -> io::Result<(Vec<UsageRow>, u64)> {
        let (mut rows, mut lines) = (Vec::new(), 0);
        let mut line = Vec::new();
        while rows.len() < max {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            lines += 1;
            match serde_json::from_slice::<UsageRow>(&line) {
                Ok(r) => rows.push(r),
                Err(e) => {
                    tracing::error!(error = %e, "usage spool: unreadable line moved to {}", self.rejected.display());
                    let mut f = OpenOptions::new().create(true).append(true).open(&self.rejected)?;
                    if line.last() != Some(&b'\n') {
                        line.push(b'\n');
                    }
                    f.write_all(&line)?;
                    f.sync_data()?;
                }
            }
        }
        Ok((rows, lines))
    }

    /// The replay file was fully written to the database.
    fn done(&self, lines: u64) -> io::Result<()> {
        fs::remove_file(&self.replay)?;
        sync_dir(&self.dir);
        self.sub_pending(lines);
        Ok(())
    }
}

/// Tuning of a [`DurableMeter`].
#[derive(Clone, Debug)]
pub struct DurableConfig {
    /// Queue capacity (records); beyond it, records go to the spool.
    pub queue: usize,
    /// Records per batch.
    pub batch_max: usize,
    /// How long a batch waits to fill.
    pub batch_wait: Duration,
    /// How often the spool is replayed while not empty.
    pub replay_interval: Duration,
    /// Bound of one database write; past it the batch is spooled.
    pub db_timeout: Duration,
    /// Bound of [`Meter::flush`].
    pub flush_timeout: Duration,
}

impl Default for DurableConfig {
    fn default() -> Self {
        Self {
            queue: 8192,
            batch_max: 1024,
            batch_wait: Duration::from_millis(200),
            replay_interval: Duration::from_secs(2),
            db_timeout: Duration::from_secs(5),
            flush_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters of a [`DurableMeter`] (totals since start, except `queued` and `pending_spool`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UsageStats {
    /// Records in the queue now.
    pub queued: u64,
    /// Rows inserted from the queue.
    pub written: u64,
    /// Records appended to the spool.
    pub spooled: u64,
    /// Records replayed from the spool into the database (duplicates included).
    pub replayed: u64,
    /// Records the database already had (skipped, not counted twice).
    pub duplicates: u64,
    /// Records in the spool now.
    pub pending_spool: u64,
}

/// What a flush achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FlushReport {
    /// Within the bound, every record queued before the flush reached the database or the spool (and the spool
    /// was attempted, unless the database failed during this very flush).
    pub complete: bool,
    /// Records still in the spool (replayed at the next start).
    pub pending_spool: u64,
}

enum Msg {
    Record(Box<UsageRecord>),
    Flush(oneshot::Sender<FlushReport>),
}

struct Shared {
    db: UsageDb,
    spool: Arc<Spool>,
    cfg: DurableConfig,
    schema_ready: AtomicBool,
    /// The last write or replay failed: batches go straight to the spool until a replay succeeds.
    down: AtomicBool,
    /// One replay at a time (the replayer task and flushes).
    replay_lock: tokio::sync::Mutex<()>,
    /// Records neither written nor spooled (the spool itself failed): retried with the next batch.
    stranded: Mutex<Vec<UsageRow>>,
    written: AtomicU64,
    spooled: AtomicU64,
    replayed: AtomicU64,
    duplicates: AtomicU64,
}

impl Shared {
    async fn insert(&self, rows: &[UsageRow]) -> Result<u64, UsageError> {
        let work = async {
            if !self.schema_ready.load(Ordering::Relaxed) {
                self.db.ensure_schema().await?;
                self.schema_ready.store(true, Ordering::Relaxed);
            }
            Ok::<_, UsageError>(self.db.insert(rows).await?)
        };
        tokio::time::timeout(self.cfg.db_timeout, work).await.map_err(|_| UsageError::Timeout)?
    }

    /// Spools from a synchronous caller; on failure the rows are kept in memory.
    fn spool_now(&self, rows: Vec<UsageRow>) {
        match self.spool.append(&rows) {
            Ok(()) => {
                self.spooled.fetch_add(rows.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, records = rows.len(), "usage spool write failed; keeping records in memory");
                self.stranded.lock().extend(rows);
            }
        }
    }

    async fn spool_rows(self: &Arc<Self>, rows: Vec<UsageRow>) {
        let me = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || me.spool_now(rows)).await {
            tracing::error!(error = %e, "usage spool task failed");
        }
    }

    /// Writes a batch, or spools it when the database fails or is known to be down (then the writer never waits
    /// on the database: the replayer finds out when it is back).
    async fn write(self: &Arc<Self>, mut rows: Vec<UsageRow>) {
        rows.append(&mut self.stranded.lock());
        if rows.is_empty() {
            return;
        }
        if !self.down.load(Ordering::Relaxed) {
            match self.insert(&rows).await {
                Ok(n) => {
                    self.written.fetch_add(n, Ordering::Relaxed);
                    self.duplicates.fetch_add(rows.len() as u64 - n, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, records = rows.len(), "usage write failed; spooling until the database is back");
                    self.down.store(true, Ordering::Relaxed);
                }
            }
        }
        self.spool_rows(rows).await;
    }

    /// Replays the spool into the database (one replay at a time); `Ok` when the spool is empty or a bounded number
    /// of rounds is done (records spooled meanwhile wait for the next one).
    async fn replay(self: &Arc<Self>) -> Result<(), UsageError> {
        let _one = self.replay_lock.lock().await;
        for _ in 0..4 {
            let spool = self.spool.clone();
            let Some(file) = tokio::task::spawn_blocking(move || spool.take()).await.map_err(io::Error::other)?? else {
                return Ok(());
            };
            let mut reader = BufReader::new(file);
            let mut total_lines = 0;
            loop {
                let spool = self.spool.clone();
                let (r, rows, lines) = tokio::task::spawn_blocking(move || {
                    let (rows, lines) = spool.read_chunk(&mut reader, CHUNK)?;
                    Ok::<_, io::Error>((reader, rows, lines))
                })
                .await
                .map_err(io::Error::other)??;
                reader = r;
                total_lines += lines;
                if rows.is_empty() && lines == 0 {
                    break;
                }
                if rows.is_empty() {
                    continue;
                }
                let fresh = self.insert(&rows).await?;
                self.replayed.fetch_add(rows.len() as u64, Ordering::Relaxed);
                self.duplicates.fetch_add(rows.len() as u64 - fresh, Ordering::Relaxed);
            }
            let spool = self.spool.clone();
            tokio::task::spawn_blocking(move || spool.done(total_lines)).await.map_err(io::Error::other)??;
            tracing::info!(records = total_lines, "usage spool replayed");
        }
        Ok(())
    }

    /// Replays; on success the database is known to be up again.
    async fn replay_logged(self: &Arc<Self>) {
        match self.replay().await {
            Ok(()) => self.down.store(false, Ordering::Relaxed),
            Err(e) => {
                self.down.store(true, Ordering::Relaxed);
                tracing::warn!(error = %e, pending = self.spool.pending(), "usage spool replay failed; will retry");
            }
        }
    }
}

fn take(m: Option<Msg>, batch: &mut Vec<UsageRow>, flushes: &mut Vec<oneshot::Sender<FlushReport>>, closed: &mut bool) {
    match m {
        Some(Msg::Record(r)) => batch.push(UsageRow::from(&*r)),
        Some(Msg::Flush(f)) => flushes.push(f),
        None => *closed = true,
    }
}

/// Drains the queue into batches; answers flushes once everything queued before them is written or spooled.
async fn writer(shared: Arc<Shared>, mut rx: mpsc::Receiver<Msg>) {
    let cfg = shared.cfg.clone();
    let mut closed = false;
    while !closed {
        let first = rx.recv().await;
        let mut batch = Vec::with_capacity(cfg.batch_max);
        let mut flushes = Vec::new();
        take(first, &mut batch, &mut flushes, &mut closed);
        let was_down = shared.down.load(Ordering::Relaxed);
        let deadline = Instant::now() + cfg.batch_wait;
        while !closed && batch.len() < cfg.batch_max {
            // A pending flush takes what is already queued, without waiting for more.
            let m = if flushes.is_empty() {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => break,
                }
            } else {
                match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            take(m, &mut batch, &mut flushes, &mut closed);
        }
        shared.write(batch).await;
        if flushes.is_empty() {
            continue;
        }
        // Drain whatever else is queued before answering.
        let mut rest = Vec::new();
        while let Ok(m) = rx.try_recv() {
            take(Some(m), &mut rest, &mut flushes, &mut closed);
            if rest.len() >= cfg.batch_max {
                shared.write(std::mem::take(&mut rest)).await;
            }
        }
        shared.write(rest).await;
        // Attempt the spool, unless this very flush just found the database failing (its records are safe in the
        // spool; a second wait on the database would only delay shutdown).
        let just_failed = !was_down && shared.down.load(Ordering::Relaxed);
        if shared.spool.pending() > 0 && !just_failed {
            shared.replay_logged().await;
        }
        let report = FlushReport { complete: shared.stranded.lock().is_empty(), pending_spool: shared.spool.pending() };
        for f in flushes {
            let _ = f.send(report);
        }
    }
}

/// Every `replay_interval`, replays the spool while it is not empty (or while the database is marked down);
/// ends when the meter is gone.
async fn replayer(shared: std::sync::Weak<Shared>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else { return };
        if !shared.stranded.lock().is_empty() {
            shared.write(Vec::new()).await;
        }
        if shared.spool.pending() > 0 || shared.down.load(Ordering::Relaxed) {
            shared.replay_logged().await;
        }
    }
}

/// A [`Meter`] that writes every usage record durably (see the module docs).
pub struct DurableMeter {
    inner: Arc<dyn Meter>,
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DurableMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableMeter").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl DurableMeter {
    /// Starts the writer (needs a Tokio runtime). `spool_dir` is created when missing; records spooled by an
    /// earlier run are replayed. The schema is applied now, or before the first write when the database is down.
    pub async fn start(
        inner: Arc<dyn Meter>,
        db: UsageDb,
        spool_dir: impl AsRef<Path>,
        cfg: DurableConfig,
    ) -> Result<DurableMeter, UsageError> {
        let dir = spool_dir.as_ref().to_owned();
        let spool = Arc::new(tokio::task::spawn_blocking(move || Spool::open(&dir)).await.map_err(io::Error::other)??);
        let db = db.for_writer().await;
        let schema_ready = match tokio::time::timeout(cfg.db_timeout, db.ensure_schema()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "usage schema not applied yet (database unreachable?); will retry");
                false
            }
            Err(_) => false,
        };
        if spool.pending() > 0 {
            tracing::info!(records = spool.pending(), "usage spool found; replaying");
        }
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let shared = Arc::new(Shared {
            db,
            spool,
            cfg,
            schema_ready: AtomicBool::new(schema_ready),
            down: AtomicBool::new(false),
            replay_lock: tokio::sync::Mutex::new(()),
            stranded: Mutex::new(Vec::new()),
            written: AtomicU64::new(0),
            spooled: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
        });
        tokio::spawn(writer(shared.clone(), rx));
        tokio::spawn(replayer(Arc::downgrade(&shared), shared.cfg.replay_interval));
        Ok(DurableMeter { inner, tx, shared })
    }

    /// Counters.
    pub fn stats(&self) -> UsageStats {
        let s = &self.shared;
        UsageStats {
            queued: (self.tx.max_capacity() - self.tx.capacity()) as u64,
            written: s.written.load(Ordering::Relaxed),
            spooled: s.spooled.load(Ordering::Relaxed),
            replayed: s.replayed.load(Ordering::Relaxed),
            duplicates: s.duplicates.load(Ordering::Relaxed),
            pending_spool: s.spool.pending(),
        }
    }

    /// Writes everything queued and attempts the spool, within `bound`; reports what remains spooled. Records
    /// not written by then stay queued or spooled (the spool is replayed at the next start).
    pub async fn flush_within(&self, bound: Duration) -> FlushReport {
        let deadline = Instant::now() + bound;
        let incomplete = || FlushReport { complete: false, pending_spool: self.shared.spool.pending() };
        let (tx, rx) = oneshot::channel();
        match tokio::time::timeout_at(deadline, self.tx.send(Msg::Flush(tx))).await {
            Ok(Ok(())) => {}
            _ => return incomplete(),
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(report)) => report,
            _ => incomplete(),
        }
    }
}

impl Meter for DurableMeter {
    fn admit<'a>(&'a self, req: &'a AdmitRequest<'a>) -> Maybe<'a, Result<Reservation, GatewayError>> {
        self.inner.admit(req)
    }

    fn record(&self, record: UsageRecord, reservation: Reservation) {
        self.inner.record(record.clone(), reservation);
        match self.tx.try_send(Msg::Record(Box::new(record))) {
            Ok(()) => {}
            Err(
                mpsc::error::TrySendError::Full(Msg::Record(r)) | mpsc::error::TrySendError::Closed(Msg::Record(r)),
            ) => {
                self.shared.spool_now(vec![UsageRow::from(&*r)]);
            }
            Err(_) => {}
        }
    }

    fn recent(&self, limit: usize) -> Vec<UsageRecord> {
        self.inner.recent(limit)
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.inner.flush().await;
            let report = self.flush_within(self.shared.cfg.flush_timeout).await;
            if report.complete && report.pending_spool == 0 {
                tracing::info!(stats = ?self.stats(), "usage flushed");
            } else {
                tracing::warn!(
                    complete = report.complete,
                    pending_spool = report.pending_spool,
                    "usage flush incomplete; spooled records are replayed at the next start"
                );
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::time::SystemTime;

    use sqlx::Row as _;
    use sqlx::postgres::PgPoolOptions;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinSet;
    use xai_core::ids::{AccountId, KeyId, Level, RequestId, UpstreamKeyId};
    use xai_core::memory::InMemoryMeter;
    use xai_core::money::Micros;
    use xai_core::protocol::Protocol;
    use xai_core::usage::{AttemptRecord, RecordStatus, Usage};

    use super::*;
    use crate::testenv::TestDb;

    const BASE: u64 = 1_764_000_000_000; // 2025-11-24T16:00:00Z

    fn rec(i: u64) -> UsageRecord {
        UsageRecord {
            request_id: RequestId::generate(),
            time: UNIX_EPOCH + Duration::from_millis(BASE + (i % 2) * 86_400_000 + i),
            account: AccountId(1 + i % 3),
            account_path: format!("root/a{}", 1 + i % 3).into(),
            chain: Arc::from(vec![AccountId(1 + i % 3)]),
            key: KeyId(7),
            inbound_protocol: Protocol::Anthropic,
            provider: Some("p1".into()),
            upstream_key: Some(UpstreamKeyId(3)),
            requested_model: if i.is_multiple_of(2) { "m-a" } else { "m-b" }.into(),
            upstream_model: Some("up".into()),
            level: Some(Level(1)),
            status: RecordStatus::Ok,
            http_status: 200,
            attempts: vec![AttemptRecord {
                provider: "p1".into(),
                upstream_key: UpstreamKeyId(3),
                level: Level(1),
                outcome: "ok",
                status: Some(200),
                latency_ms: 12,
            }],
            latency_ms: 40 + i,
            ttft_ms: Some(9),
            usage: Usage {
                prompt_tokens: 100 + i,
                completion_tokens: 10 + i,
                reasoning_tokens: i % 5,
                cached_tokens: i % 7,
                cache_write_tokens: i % 3,
                images: i % 2,
                searches: 1,
            },
            cost: Micros(1000 + i as i64),
            estimated: i.is_multiple_of(4),
        }
    }

    type Daily = Vec<(i64, String, String, [i64; 9])>;

    fn expected(records: &[UsageRecord]) -> Daily {
        let rows: Vec<UsageRow> = records.iter().map(UsageRow::from).collect();
        let fresh = rows.iter().map(|r| r.request_id.clone()).collect();
        rollups(&rows, fresh)
            .into_iter()
            .map(|((a, m, d), r)| {
                let v = [
                    r.requests,
                    r.prompt,
                    r.completion,
                    r.reasoning,
                    r.cached,
                    r.cache_write,
                    r.images,
                    r.searches,
                    r.cost,
                ];
                (a, m.to_owned(), d.to_string(), v)
            })
            .collect()
    }

    const DAILY_SQL: &str = "SELECT account, model, CAST(day AS TEXT), requests, prompt, completion, reasoning, \
        cached, cache_write, images, searches, cost FROM usage_daily ORDER BY 1, 2, 3";
    const COUNT_SQL: &str = "SELECT COUNT(*), COUNT(DISTINCT request_id) FROM usage";

    fn daily_of<R: sqlx::Row>(rows: Vec<R>) -> Daily
    where
        for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        usize: sqlx::ColumnIndex<R>,
    {
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), std::array::from_fn(|i| r.get::<i64, _>(i + 3)))).collect()
    }

    /// (rows, distinct request ids, daily rollups).
    async fn contents(db: &UsageDb) -> (i64, i64, Daily) {
        match db {
            UsageDb::Sqlite(p) => {
                let c = sqlx::query(COUNT_SQL).fetch_one(p).await.unwrap();
                (c.get(0), c.get(1), daily_of(sqlx::query(DAILY_SQL).fetch_all(p).await.unwrap()))
            }
            UsageDb::Postgres(p) => {
                let c = sqlx::query(COUNT_SQL).fetch_one(p).await.unwrap();
                (c.get(0), c.get(1), daily_of(sqlx::query(DAILY_SQL).fetch_all(p).await.unwrap()))
            }
        }
    }

    async fn assert_exact(db: &UsageDb, records: &[UsageRecord]) {
        let (rows, distinct, daily) = contents(db).await;
        assert_eq!((rows, distinct), (records.len() as i64, records.len() as i64));
        assert_eq!(daily, expected(records));
    }

    fn fast() -> DurableConfig {
        DurableConfig {
            queue: 1024,
            batch_max: 64,
            batch_wait: Duration::from_millis(20),
            replay_interval: Duration::from_millis(100),
            db_timeout: Duration::from_secs(2),
            flush_timeout: Duration::from_secs(10),
        }
    }

    async fn sqlite(dir: &Path) -> UsageDb {
        let opts = SqliteConnectOptions::new()
            .filename(dir.join("xai.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        UsageDb::Sqlite(SqlitePoolOptions::new().max_connections(2).connect_with(opts).await.unwrap())
    }

    async fn postgres(url: &str) -> UsageDb {
        let pool =
            PgPoolOptions::new().max_connections(2).acquire_timeout(Duration::from_secs(1)).connect(url).await.unwrap();
        UsageDb::Postgres(pool)
    }

    fn inner() -> Arc<dyn Meter> {
        Arc::new(InMemoryMeter::default())
    }

    /// N records → N rows, exact rollups, one row's every field; `recent` stays with the inner meter.
    async fn records_and_rollups(db: UsageDb, spool: &Path) {
        let m = DurableMeter::start(inner(), db.clone(), spool, fast()).await.unwrap();
        let records: Vec<UsageRecord> = (0..300).map(rec).collect();
        for r in &records {
            m.record(r.clone(), Reservation::default());
        }
        let report = m.flush_within(Duration::from_secs(10)).await;
        assert_eq!(report, FlushReport { complete: true, pending_spool: 0 });
        assert_exact(&db, &records).await;
        let s = m.stats();
        assert_eq!((s.written, s.spooled, s.duplicates, s.queued), (300, 0, 0, 0));
        assert_eq!(m.recent(5).len(), 5);

        let r = &records[4];
        let sql = "SELECT attempts, account_path, provider, upstream_key, level, status, http_status, latency_ms, \
                   ttft_ms, prompt_tokens, reasoning_tokens, cost, estimated, inbound_protocol, CAST(day AS TEXT) \
                   FROM usage WHERE request_id = $1";
        let fields = |attempts: String, path: String, provider: Option<String>, rest: [i64; 9], status: String| {
            let attempts: serde_json::Value = serde_json::from_str(&attempts).unwrap();
            assert_eq!(attempts[0]["outcome"], "ok");
            assert_eq!(attempts[0]["latency_ms"], 12);
            assert_eq!((path.as_str(), provider.as_deref(), status.as_str()), ("root/a2", Some("p1"), "ok"));
            assert_eq!(rest, [3, 1, 200, 44, 9, 104, 4, 1004, 1]);
        };
        match &db {
            UsageDb::Sqlite(p) => {
                let row = sqlx::query(sql).bind(r.request_id.0.as_ref()).fetch_one(p).await.unwrap();
                let rest = [3, 4, 6, 7, 8, 9, 10, 11].map(|i| row.get::<i64, _>(i));
                let est = i64::from(row.get::<bool, _>(12));
                let rest = [rest[0], rest[1], rest[2], rest[3], rest[4], rest[5], rest[6], rest[7], est];
                fields(row.get(0), row.get(1), row.get(2), rest, row.get(5));
                assert_eq!(
                    (row.get::<String, _>(13), row.get::<String, _>(14)),
                    ("anthropic".into(), "2025-11-24".into())
                );
            }
            UsageDb::Postgres(p) => {
                let row = sqlx::query(sql).bind(r.request_id.0.as_ref()).fetch_one(p).await.unwrap();
                let http = i64::from(row.get::<i32, _>(6));
                let [a, b, c, d, e, f, g] = [3, 4, 7, 8, 9, 10, 11].map(|i| row.get::<i64, _>(i));
                let est = i64::from(row.get::<bool, _>(12));
                fields(row.get(0), row.get(1), row.get(2), [a, b, http, c, d, e, f, g, est], row.get(5));
                assert_eq!(
                    (row.get::<String, _>(13), row.get::<String, _>(14)),
                    ("anthropic".into(), "2025-11-24".into())
                );
                // Every row's time and day, as the text the statements once bound (binary now).
                let stored: Vec<(String, String, String)> = sqlx::query_as(
                    "SELECT request_id, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
                     CAST(day AS TEXT) FROM usage",
                )
                .fetch_all(p)
                .await
                .unwrap();
                let want: HashMap<String, (String, String)> = records
                    .iter()
                    .map(UsageRow::from)
                    .map(|r| (r.request_id.clone(), (rfc3339(r.time()), r.day().to_string())))
                    .collect();
                assert_eq!(stored.len(), want.len());
                for (id, time, day) in stored {
                    assert_eq!(want[&id], (time, day), "{id}");
                }
            }
        }
    }

    /// A spool holding records the database already has (a crash between insert and spool removal): replayed
    /// without counting them twice, and the spool is removed.
    async fn spooled_duplicates_not_double_counted(db: UsageDb, spool: &Path) {
        let first: Vec<UsageRecord> = (0..10).map(rec).collect();
        {
            let m = DurableMeter::start(inner(), db.clone(), spool, fast()).await.unwrap();
            for r in &first {
                m.record(r.clone(), Reservation::default());
            }
            assert!(m.flush_within(Duration::from_secs(10)).await.complete);
        }
        let more: Vec<UsageRecord> = (10..15).map(rec).collect();
        let stale: Vec<UsageRow> = first[..5].iter().chain(&more).map(UsageRow::from).collect();
        Spool::open(spool).unwrap().append(&stale).unwrap();
        // Half of it already being replayed when the process died, the rest still in the active spool.
        fs::rename(spool.join("usage.spool"), spool.join("usage.spool.replay")).unwrap();
        Spool::open(spool).unwrap().append(&stale[..3]).unwrap();

        let m = DurableMeter::start(inner(), db.clone(), spool, fast()).await.unwrap();
        assert_eq!(m.stats().pending_spool, 13);
        let report = m.flush_within(Duration::from_secs(10)).await;
        assert_eq!(report, FlushReport { complete: true, pending_spool: 0 });
        let all: Vec<UsageRecord> = first.iter().chain(&more).cloned().collect();
        assert_exact(&db, &all).await;
        let s = m.stats();
        assert_eq!((s.replayed, s.duplicates), (13, 8));
        assert!(!spool.join("usage.spool").exists() && !spool.join("usage.spool.replay").exists());
    }

    #[tokio::test]
    async fn sqlite_records_and_rollups() {
        let dir = tempfile::tempdir().unwrap();
        records_and_rollups(sqlite(dir.path()).await, &dir.path().join("spool")).await;
    }

    #[tokio::test]
    async fn sqlite_spooled_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        spooled_duplicates_not_double_counted(sqlite(dir.path()).await, &dir.path().join("spool")).await;
    }

    /// A full queue sends records to the spool (the caller never waits); flush writes them all.
    #[tokio::test] // current-thread: the writer cannot run while `record` is called in a loop
    async fn sqlite_full_queue_spills_to_spool() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite(dir.path()).await;
        let cfg = DurableConfig { queue: 8, ..fast() };
        let m = DurableMeter::start(inner(), db.clone(), dir.path().join("spool"), cfg).await.unwrap();
        let records: Vec<UsageRecord> = (0..100).map(rec).collect();
        for r in &records {
            m.record(r.clone(), Reservation::default());
        }
        let s = m.stats();
        assert_eq!((s.queued, s.spooled, s.pending_spool), (8, 92, 92));
        let report = m.flush_within(Duration::from_secs(10)).await;
        assert_eq!(report, FlushReport { complete: true, pending_spool: 0 });
        assert_exact(&db, &records).await;
        let s = m.stats();
        assert_eq!((s.written, s.replayed, s.duplicates), (8, 92, 0));
    }

    /// A torn last line (crash mid-append) is set aside; the records around it are not lost.
    #[tokio::test]
    async fn sqlite_torn_spool_line() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let records: Vec<UsageRecord> = (0..4).map(rec).collect();
        let rows: Vec<UsageRow> = records.iter().map(UsageRow::from).collect();
        let s = Spool::open(&spool).unwrap();
        s.append(&rows[..2]).unwrap();
        OpenOptions::new()
            .append(true)
            .open(spool.join("usage.spool"))
            .unwrap()
            .write_all(b"{\"request_id\":\"x")
            .unwrap();
        s.append(&rows[2..]).unwrap();
        let db = sqlite(dir.path()).await;
        let m = DurableMeter::start(inner(), db.clone(), &spool, fast()).await.unwrap();
        assert!(m.flush_within(Duration::from_secs(10)).await.complete);
        assert_exact(&db, &records).await;
        let rejected = fs::read_to_string(spool.join("usage.spool.rejected")).unwrap();
        assert_eq!(rejected, "{\"request_id\":\"x\n");
    }

    #[tokio::test]
    async fn postgres_records_and_rollups() {
        let Some(t) = TestDb::create().await else { return };
        let dir = tempfile::tempdir().unwrap();
        records_and_rollups(postgres(&t.url).await, dir.path()).await;
        t.drop_db().await;
    }

    #[tokio::test]
    async fn postgres_spooled_duplicates() {
        let Some(t) = TestDb::create().await else { return };
        let dir = tempfile::tempdir().unwrap();
        spooled_duplicates_not_double_counted(postgres(&t.url).await, dir.path()).await;
        t.drop_db().await;
    }

    /// A TCP relay in front of Postgres that the test can cut and restore.
    struct Relay {
        addr: SocketAddr,
        target: SocketAddr,
        task: Option<tokio::task::JoinHandle<()>>,
    }

    impl Relay {
        async fn start(addr: SocketAddr, target: SocketAddr) -> Relay {
            Self::spawn(addr, target, true).await
        }

        /// Accepts connections and never answers: a database that hangs rather than refuses.
        async fn black_hole(&mut self) {
            self.stop().await;
            *self = Self::spawn(self.addr, self.target, false).await;
        }

        async fn spawn(addr: SocketAddr, target: SocketAddr, forward: bool) -> Relay {
            let listener = TcpListener::bind(addr).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let task = tokio::spawn(async move {
                let mut conns = JoinSet::new(); // dropped with the task: every relayed connection is cut
                loop {
                    let Ok((mut client, _)) = listener.accept().await else { continue };
                    conns.spawn(async move {
                        if !forward {
                            std::future::pending::<()>().await;
                        }
                        if let Ok(mut server) = TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    while conns.try_join_next().is_some() {}
                }
            });
            Relay { addr, target, task: Some(task) }
        }

        async fn stop(&mut self) {
            if let Some(t) = self.task.take() {
                t.abort();
                let _ = t.await;
            }
        }

        async fn restart(&mut self) {
            self.stop().await;
            *self = Relay::start(self.addr, self.target).await;
        }
    }

    /// `postgres://user@host:port/db` → `host:port` (loopback in tests).
    fn host_port(url: &str) -> String {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
    }

    async fn wait_for(what: &str, bound: Duration, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + bound;
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The database goes away: records spool and `record` stays fast; it comes back: everything is replayed,
    /// counted exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_database_cut_spools_and_replays() {
        let Some(t) = TestDb::create().await else { return };
        let hp = host_port(&t.url);
        let target: SocketAddr = tokio::net::lookup_host(hp.as_str()).await.unwrap().next().unwrap();
        let mut relay = Relay::start("127.0.0.1:0".parse().unwrap(), target).await;
        let via_relay = t.url.replacen(&hp, &relay.addr.to_string(), 1);
        let db = postgres(&via_relay).await;
        let direct = postgres(&t.url).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = DurableConfig { db_timeout: Duration::from_secs(1), ..fast() };
        let m = DurableMeter::start(inner(), db, dir.path(), cfg).await.unwrap();

        let records: Vec<UsageRecord> = (0..250).map(rec).collect();
        for r in &records[..50] {
            m.record(r.clone(), Reservation::default());
        }
        assert!(m.flush_within(Duration::from_secs(10)).await.complete);
        assert_exact(&direct, &records[..50]).await;

        relay.stop().await;
        let started = std::time::Instant::now();
        for r in &records[50..150] {
            m.record(r.clone(), Reservation::default());
        }
        assert!(started.elapsed() < Duration::from_millis(500), "record blocked: {:?}", started.elapsed());
        wait_for("records to spool", Duration::from_secs(15), || m.stats().spooled >= 100).await;
        assert_eq!(m.stats().pending_spool, 100);
        // Still down: a flush is bounded and reports what stays spooled.
        let report = m.flush_within(Duration::from_secs(5)).await;
        assert_eq!(report.pending_spool, 100);
        assert_exact(&direct, &records[..50]).await;

        relay.restart().await;
        for r in &records[150..] {
            m.record(r.clone(), Reservation::default());
        }
        wait_for("the spool to replay", Duration::from_secs(20), || m.stats().pending_spool == 0).await;
        let report = m.flush_within(Duration::from_secs(10)).await;
        assert_eq!(report, FlushReport { complete: true, pending_spool: 0 });
        assert_exact(&direct, &records).await;
        let s = m.stats();
        assert_eq!((s.written + s.replayed, s.duplicates, s.replayed), (250, 0, s.spooled));
        assert!(!dir.path().join("usage.spool").exists() && !dir.path().join("usage.spool.replay").exists());

        // The database hangs instead of refusing: writes give up after `db_timeout`, records spool, flush is bounded.
        relay.black_hole().await;
        let more: Vec<UsageRecord> = (250..270).map(rec).collect();
        let spooled = m.stats().spooled;
        let started = std::time::Instant::now();
        for r in &more {
            m.record(r.clone(), Reservation::default());
        }
        assert!(started.elapsed() < Duration::from_millis(500), "record blocked: {:?}", started.elapsed());
        wait_for("records to spool", Duration::from_secs(15), || m.stats().spooled >= spooled + 20).await;
        let started = std::time::Instant::now();
        let report = m.flush_within(Duration::from_secs(3)).await;
        assert!(started.elapsed() < Duration::from_millis(3500), "flush unbounded: {:?}", started.elapsed());
        assert_eq!(report.pending_spool, 20);
        relay.restart().await;
        wait_for("the spool to replay", Duration::from_secs(20), || m.stats().pending_spool == 0).await;
        let all: Vec<UsageRecord> = records.iter().chain(&more).cloned().collect();
        assert_exact(&direct, &all).await;
        assert_eq!(m.stats().duplicates, 0);
        drop(m);
        if let UsageDb::Postgres(p) = direct {
            p.close().await;
        }
        relay.stop().await;
        t.drop_db().await;
    }

    #[test]
    fn sqlite_statements_come_in_few_sizes() {
        for n in [0usize, 1, 3, 100, 950, 1024, 1025, 2049, 5000] {
            let items: Vec<usize> = (0..n).collect();
            let cut: Vec<&[usize]> = pieces(&items).collect();
            assert!(cut.iter().all(|p| SQLITE_PIECES.contains(&p.len())), "{n}: {:?}", cut.iter().map(|p| p.len()));
            assert_eq!(cut.concat(), items, "{n}: every item once, in order");
            // Largest first, so a batch takes at most one piece per size below the largest.
            assert!(cut.windows(2).all(|w| w[0].len() >= w[1].len()));
            assert!(cut.len() <= n / 1024 + SQLITE_PIECES.len(), "{n}: {} pieces", cut.len());
        }
    }

    #[test]
    fn row_time_and_day() {
        let r = UsageRow::from(&UsageRecord { time: UNIX_EPOCH + Duration::from_millis(BASE), ..rec(0) });
        assert_eq!(
            (r.day().to_string(), rfc3339(r.time())),
            ("2025-11-24".to_owned(), "2025-11-24T16:00:00.000Z".to_owned())
        );
        assert!(r.time() <= SystemTime::now());
        assert_eq!(host_port("postgres://postgres@127.0.0.1:5432/x"), "127.0.0.1:5432");
    }
}
