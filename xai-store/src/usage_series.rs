//! Reading usage as series for anomaly detection ([`xai_core::anomaly`]): per account (its own traffic), the daily
//! totals of the trailing days and today from the `usage_daily` rollup, and the totals of the last three clock
//! hours from the `usage` records.
//!
//! Days are the `day` column as the usage writer stored it ([`xai_core::day::Day::of`] of each record's time).
//! Hours are bucketed with bounds computed here and compared in the column's own type: RFC 3339 text on SQLite
//! (the writer's fixed format sorts as time), `timestamptz` on Postgres (the text is cast).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use xai_core::anomaly::{AccountSeries, Totals};
use xai_core::day::Day;
use xai_core::usage::rfc3339;
use xai_core::{AccountId, Micros};

use crate::usage::UsageDb;

/// One account's totals on one day (own traffic, every model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DailyTotal {
    /// The account.
    pub account: AccountId,
    /// The day.
    pub day: Day,
    /// Cost.
    pub spend: Micros,
    /// Prompt plus completion tokens.
    pub tokens: u64,
}

/// One account's totals in one clock hour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HourlyTotal {
    /// The account.
    pub account: AccountId,
    /// Its path when the newest of these records was written.
    pub path: String,
    /// 0: two hours ago, 1: the last complete hour, 2: the current hour so far.
    pub slot: usize,
    /// Cost.
    pub spend: Micros,
    /// Prompt plus completion tokens.
    pub tokens: u64,
}

/// The start of the clock hour of `t` (UTC).
pub fn hour_start(t: SystemTime) -> SystemTime {
    let s = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(s - s % 3600)
}

const DAILY_SQLITE: &str = "SELECT account, day, SUM(cost), SUM(prompt + completion) FROM usage_daily \
    WHERE day >= $1 AND day <= $2 GROUP BY account, day";
const DAILY_POSTGRES: &str = "SELECT account, to_char(day, 'YYYY-MM-DD'), SUM(cost)::BIGINT, \
    SUM(prompt + completion)::BIGINT FROM usage_daily WHERE day >= $1::date AND day <= $2::date GROUP BY account, day";
/// `$1..$3`: the starts of the three hours; `$4`: now (records stamped later are not counted yet).
const HOURLY: &str = "SELECT account, MAX(account_path), \
    CASE WHEN time < $2 THEN 0 WHEN time < $3 THEN 1 ELSE 2 END AS slot, SUM(cost), \
    SUM(prompt_tokens + completion_tokens) FROM usage WHERE time >= $1 AND time <= $4 GROUP BY account, slot";

type DailyT = (i64, String, Option<i64>, Option<i64>);
type HourlyT = (i64, Option<String>, i64, Option<i64>, Option<i64>);

fn tokens(v: Option<i64>) -> u64 {
    u64::try_from(v.unwrap_or(0)).unwrap_or(0)
}

impl UsageDb {
    /// Daily totals per account for the days `from..=to`.
    pub async fn daily_totals(&self, from: Day, to: Day) -> Result<Vec<DailyTotal>, sqlx::Error> {
        let (a, b) = (from.to_string(), to.to_string());
        let rows: Vec<DailyT> = match self {
            UsageDb::Sqlite(p) => sqlx::query_as(DAILY_SQLITE).bind(a).bind(b).fetch_all(p).await?,
            UsageDb::Postgres(p) => sqlx::query_as(DAILY_POSTGRES).bind(a).bind(b).fetch_all(p).await?,
        };
        let mut out = Vec::with_capacity(rows.len());
        for (account, day, cost, tok) in rows {
            let day = day.parse::<Day>().map_err(|e| sqlx::Error::Decode(e.into()))?;
            out.push(DailyTotal {
                account: AccountId(u64::try_from(account).unwrap_or(0)),
                day,
                spend: Micros(cost.unwrap_or(0)),
                tokens: tokens(tok),
            });
        }
        Ok(out)
    }

    /// Totals per account of the two clock hours before the one `now` is in, and of that hour up to `now`.
    pub async fn hourly_totals(&self, now: SystemTime) -> Result<Vec<HourlyTotal>, sqlx::Error> {
        let h0 = hour_start(now);
        let bounds = [h0 - Duration::from_secs(7200), h0 - Duration::from_secs(3600), h0, now].map(rfc3339);
        let rows: Vec<HourlyT> = match self {
            UsageDb::Sqlite(p) => {
                let mut q = sqlx::query_as(HOURLY);
                for b in &bounds {
                    q = q.bind(b.clone());
                }
                q.fetch_all(p).await?
            }
            UsageDb::Postgres(p) => {
                let sql = HOURLY
                    .replace("$1", "$1::timestamptz")
                    .replace("$2", "$2::timestamptz")
                    .replace("$3", "$3::timestamptz")
                    .replace("$4", "$4::timestamptz")
                    .replace("SUM(cost)", "SUM(cost)::BIGINT")
                    .replace("completion_tokens)", "completion_tokens)::BIGINT")
                    .replace("ELSE 2 END", "ELSE 2 END::BIGINT");
                let mut q = sqlx::query_as(&sql);
                for b in &bounds {
                    q = q.bind(b.clone());
                }
                q.fetch_all(p).await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(account, path, slot, cost, tok)| HourlyTotal {
                account: AccountId(u64::try_from(account).unwrap_or(0)),
                path: path.unwrap_or_default(),
                slot: usize::try_from(slot).unwrap_or(2).min(2),
                spend: Micros(cost.unwrap_or(0)),
                tokens: tokens(tok),
            })
            .collect())
    }

    /// The series of every account with traffic in the last `history_days` days before `today`, today, or the
    /// last three hours (own traffic; paths from the records, the caller may replace them with current ones).
    pub async fn anomaly_series(
        &self,
        today: Day,
        now: SystemTime,
        history_days: u32,
    ) -> Result<Vec<AccountSeries>, sqlx::Error> {
        let n = i64::from(history_days);
        let daily = self.daily_totals(Day(today.0 - n), today).await?;
        let hourly = self.hourly_totals(now).await?;
        Ok(build_series(today, history_days, &daily, &hourly))
    }
}

/// Assembles per-account series from the totals (days without a row are zero), ordered by account id.
pub fn build_series(today: Day, history_days: u32, daily: &[DailyTotal], hourly: &[HourlyTotal]) -> Vec<AccountSeries> {
    let n = history_days as usize;
    let mut by: BTreeMap<AccountId, AccountSeries> = BTreeMap::new();
    fn entry(by: &mut BTreeMap<AccountId, AccountSeries>, a: AccountId, n: usize) -> &mut AccountSeries {
        by.entry(a).or_insert_with(|| AccountSeries {
            account: a,
            path: String::new(),
            daily: vec![Totals::default(); n],
            today: Totals::default(),
            hours: [Totals::default(); 3],
        })
    }
    for d in daily {
        let ago = today.0 - d.day.0;
        let t = Totals { spend: d.spend, tokens: d.tokens };
        if ago == 0 {
            entry(&mut by, d.account, n).today = t;
        } else if (1..=n as i64).contains(&ago) {
            entry(&mut by, d.account, n).daily[n - ago as usize] = t;
        }
    }
    for h in hourly {
        let s = entry(&mut by, h.account, n);
        s.hours[h.slot] = Totals { spend: h.spend, tokens: h.tokens };
        if s.path.is_empty() {
            s.path = h.path.clone();
        }
    }
    by.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::UsageRow;

    const HOUR: u64 = 3600;
    /// 2026-03-10T14:25:00Z: 25 minutes into an hour.
    const NOW: u64 = 1_773_152_700;

    fn row(n: &mut u64, account: i64, at: SystemTime, cost: i64, prompt: i64, completion: i64) -> UsageRow {
        *n += 1;
        UsageRow {
            request_id: format!("req-{n}"),
            time_ms: at.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64,
            account,
            account_path: format!("acme/a{account}"),
            key_id: 1,
            inbound_protocol: "openai".into(),
            provider: Some("p".into()),
            upstream_key: None,
            requested_model: if n.is_multiple_of(2) { "gpt-4o".into() } else { "gpt-4o-mini".into() },
            upstream_model: None,
            level: None,
            status: "ok".into(),
            http_status: 200,
            attempts: "[]".into(),
            latency_ms: 1,
            ttft_ms: None,
            prompt_tokens: prompt,
            completion_tokens: completion,
            reasoning_tokens: 7,
            cached_tokens: 0,
            cache_write_tokens: 0,
            images: 0,
            searches: 0,
            cost,
            estimated: false,
        }
    }

    /// A deterministic history: account 1 spends `10 + day` credits on each of the 14 days before today (two
    /// records a day, two models); account 2 only on odd days; plus three hours of records around `NOW`.
    fn seed() -> Vec<UsageRow> {
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        let mut n = 0;
        let mut rows = Vec::new();
        for d in 1..=16u64 {
            let at = now - Duration::from_secs(d * 86_400);
            let c = (10 + d as i64) * 1_000_000;
            rows.push(row(&mut n, 1, at, c / 2, 100, 50));
            rows.push(row(&mut n, 1, at + Duration::from_secs(60), c / 2, 100, 50));
            if !d.is_multiple_of(2) {
                rows.push(row(&mut n, 2, at, 1_000_000, 10, 10));
            }
        }
        let h0 = hour_start(now);
        // Two hours ago: 1 credit; last hour: 2 + 3 credits; this hour: 4 credits; a record after `now` is ignored.
        rows.push(row(&mut n, 1, h0 - Duration::from_secs(2 * HOUR - 1), 1_000_000, 1, 1));
        rows.push(row(&mut n, 1, h0 - Duration::from_secs(HOUR), 2_000_000, 2, 2));
        rows.push(row(&mut n, 1, h0 - Duration::from_millis(1), 3_000_000, 3, 3));
        rows.push(row(&mut n, 1, h0 + Duration::from_secs(60), 4_000_000, 4, 4));
        rows.push(row(&mut n, 1, now + Duration::from_secs(60), 9_000_000, 9, 9));
        // Three hours ago: outside the window (but today).
        rows.push(row(&mut n, 3, h0 - Duration::from_secs(2 * HOUR + 1), 5_000_000, 5, 5));
        rows
    }

    async fn check(db: UsageDb) {
        db.ensure_schema().await.unwrap();
        db.insert(&seed()).await.unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        let today = Day::of(now);
        let s = db.anomaly_series(today, now, 14).await.unwrap();
        assert_eq!(s.iter().map(|s| s.account.0).collect::<Vec<_>>(), [1, 2, 3]);
        let a1 = &s[0];
        assert_eq!(a1.path, "acme/a1");
        assert_eq!(a1.daily.len(), 14);
        // Oldest first: 14 days ago spent 24 credits, yesterday 11; models summed; tokens = prompt + completion.
        assert_eq!(a1.daily[0], Totals { spend: Micros(24_000_000), tokens: 300 });
        assert_eq!(a1.daily[13], Totals { spend: Micros(11_000_000), tokens: 300 });
        // Today: everything with today's day (also the record after `now`, which the rollup already holds).
        assert_eq!(a1.today.spend, Micros(19_000_000));
        assert_eq!(
            a1.hours,
            [
                Totals { spend: Micros(1_000_000), tokens: 2 },
                Totals { spend: Micros(5_000_000), tokens: 10 },
                Totals { spend: Micros(4_000_000), tokens: 8 },
            ]
        );
        let a2 = &s[1];
        let active: Vec<usize> = (0..14).filter(|i| a2.daily[*i].spend.0 > 0).collect();
        assert_eq!(active, [1, 3, 5, 7, 9, 11, 13], "odd days ago, missing days zero");
        assert_eq!((a2.today, a2.hours), (Totals::default(), [Totals::default(); 3]));
        assert_eq!((s[2].today.spend, s[2].hours), (Micros(5_000_000), [Totals::default(); 3]));
    }

    #[test]
    fn hours_start_on_the_clock() {
        let t = UNIX_EPOCH + Duration::from_secs(NOW);
        assert_eq!(hour_start(t), UNIX_EPOCH + Duration::from_secs(NOW - 25 * 60));
    }

    #[tokio::test]
    async fn sqlite_series() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("u.db").display());
        check(UsageDb::Sqlite(sqlx::SqlitePool::connect(&url).await.unwrap())).await;
    }

    #[tokio::test]
    async fn postgres_series() {
        let Some(t) = crate::testenv::TestDb::create().await else { return };
        let pool = sqlx::PgPool::connect(&t.url).await.unwrap();
        check(UsageDb::Postgres(pool.clone())).await;
        pool.close().await;
        t.drop_db().await;
    }
}
