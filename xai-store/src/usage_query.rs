//! Reading usage back for the admin API's usage view (`GET /admin/v1/usage`): the most recent records, and
//! aggregates grouped by account, requested model, day or virtual key, as JSON or CSV.
//!
//! The aggregation is done twice, with one meaning: in SQL (`GROUP BY` over the `usage` table, SQLite and
//! Postgres, [`UsageDb::aggregate`]) and in Rust over records held in memory ([`aggregate`], for a gateway running
//! without a database). Everything after the grouping is shared: the roll-up to direct children
//! ([`rollup_children`]), the gap-free daily [`timeline`], ordering and `top` ([`report`]), and the CSV writer
//! ([`Csv`]).
//!
//! ```
//! use xai_store::usage_query::{GroupBy, UsageQuery, aggregate, report};
//! let q = UsageQuery::parse(Some("group_by=model&from=2026-11-01&to=2026-11-30")).unwrap();
//! assert_eq!(q.group_by, Some(GroupBy::Model));
//! let groups = aggregate(&[], &q.filter(None), GroupBy::Model);
//! let r = report(groups, &q, None);
//! assert_eq!(r.to_json()["rows"], serde_json::json!([]));
//! ```
//!
//! Days are the `day` column: [`Day::of`] the request's time, as the writer stored it; filters `from` and `to`
//! are inclusive. The account filter matches the recorded `account_path` (the account and its whole subtree), as
//! [`UsageDb::recent`] always has.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use sqlx::{QueryBuilder, Row};
use xai_core::Micros;
use xai_core::day::Day;

use crate::usage::{UsageDb, UsageRow};

const COLUMNS: &str = "request_id, time, account, account_path, key_id, inbound_protocol, provider, upstream_key, \
requested_model, upstream_model, level, status, CAST(http_status AS BIGINT) AS http_status, attempts, latency_ms, \
ttft_ms, prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens, cache_write_tokens, images, searches, cost";

/// The widest `from`..`to` range a query may span, in days (a daily timeline has one row per day).
pub const MAX_DAYS: i64 = 3_700;

/// The most records one query without `group_by` returns.
pub const MAX_LIMIT: usize = 10_000;

macro_rules! to_json {
    ($r:expr, $estimated:expr) => {{
        let r = $r;
        let s = |c: &str| r.try_get::<Option<String>, _>(c).ok().flatten();
        let i = |c: &str| r.try_get::<Option<i64>, _>(c).ok().flatten();
        let attempts: Value = s("attempts").and_then(|a| serde_json::from_str(&a).ok()).unwrap_or(Value::Array(vec![]));
        json!({
            "request_id": s("request_id"), "time": s("time"), "account": i("account"), "account_path": s("account_path"),
            "key": i("key_id"), "inbound_protocol": s("inbound_protocol"), "provider": s("provider"),
            "upstream_key": i("upstream_key"), "requested_model": s("requested_model"),
            "upstream_model": s("upstream_model"), "level": i("level"), "status": s("status"),
            "http_status": i("http_status"), "attempts": attempts, "latency_ms": i("latency_ms"), "ttft_ms": i("ttft_ms"),
            "prompt_tokens": i("prompt_tokens"), "completion_tokens": i("completion_tokens"),
            "reasoning_tokens": i("reasoning_tokens"), "cached_tokens": i("cached_tokens"),
            "cache_write_tokens": i("cache_write_tokens"), "images": i("images"), "searches": i("searches"),
            "cost": Micros(i("cost").unwrap_or(0)).to_string(), "estimated": $estimated,
        })
    }};
}

/// What usage rows are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupBy {
    /// The calling account (or, with `rollup=children`, the direct child it is under).
    Account,
    /// The model the client asked for.
    Model,
    /// The calendar day.
    Day,
    /// The virtual key.
    Key,
}

impl GroupBy {
    /// The name in the API (`account`, `model`, `day`, `key`).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Account => "account",
            GroupBy::Model => "model",
            GroupBy::Day => "day",
            GroupBy::Key => "key",
        }
    }
}

/// What rows are ranked by (descending).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// Cost (the default).
    #[default]
    Cost,
    /// Number of requests.
    Requests,
    /// Prompt plus completion tokens.
    Tokens,
}

/// The answer's encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// `application/json` (the default).
    #[default]
    Json,
    /// `text/csv` with a header line.
    Csv,
}

/// Which usage rows count. Every field is optional; all given ones must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageFilter {
    /// The account with this path and its whole subtree (matched on the recorded `account_path`).
    pub path: Option<String>,
    /// Requested model, exactly.
    pub model: Option<String>,
    /// Virtual key id.
    pub key: Option<i64>,
    /// First day, inclusive.
    pub from: Option<Day>,
    /// Last day, inclusive.
    pub to: Option<Day>,
}

impl UsageFilter {
    /// Whether `r` counts.
    pub fn matches(&self, r: &UsageRow) -> bool {
        let day = row_day(r);
        self.path.as_deref().is_none_or(|p| in_subtree(&r.account_path, p))
            && self.model.as_deref().is_none_or(|m| r.requested_model == m)
            && self.key.is_none_or(|k| r.key_id == k)
            && self.from.is_none_or(|f| day >= f)
            && self.to.is_none_or(|t| day <= t)
    }
}

/// Whether `path` is `parent` or below it.
fn in_subtree(path: &str, parent: &str) -> bool {
    path.strip_prefix(parent).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The day of a row, as the writer stores it in the `day` column.
fn row_day(r: &UsageRow) -> Day {
    Day::of(UNIX_EPOCH + Duration::from_millis(u64::try_from(r.time_ms).unwrap_or(0)))
}

/// The `LIKE` pattern of everything strictly below `path` (`\` escapes).
fn below(path: &str) -> String {
    format!("{}/%", path.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))
}

/// The sums of a group of usage rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    /// Requests.
    pub requests: i64,
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
}

impl Sums {
    /// The sums of one row.
    pub fn of(r: &UsageRow) -> Sums {
        Sums {
            requests: 1,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            reasoning_tokens: r.reasoning_tokens,
            cached_tokens: r.cached_tokens,
            cache_write_tokens: r.cache_write_tokens,
            images: r.images,
            searches: r.searches,
            cost: r.cost,
        }
    }

    /// Adds `o` (saturating, as the rollups do).
    pub fn add(&mut self, o: &Sums) {
        self.requests = self.requests.saturating_add(o.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(o.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(o.completion_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(o.reasoning_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(o.cached_tokens);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(o.cache_write_tokens);
        self.images = self.images.saturating_add(o.images);
        self.searches = self.searches.saturating_add(o.searches);
        self.cost = self.cost.saturating_add(o.cost);
    }

    /// Prompt plus completion tokens.
    pub fn tokens(&self) -> i64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    fn rank(&self, order: Order) -> i64 {
        match order {
            Order::Cost => self.cost,
            Order::Requests => self.requests,
            Order::Tokens => self.tokens(),
        }
    }

    /// The sum columns, in [`SUM_COLUMNS`] order (cost as a decimal credit string).
    fn fields(&self) -> [String; 9] {
        [
            self.requests.to_string(),
            self.prompt_tokens.to_string(),
            self.completion_tokens.to_string(),
            self.reasoning_tokens.to_string(),
            self.cached_tokens.to_string(),
            self.cache_write_tokens.to_string(),
            self.images.to_string(),
            self.searches.to_string(),
            Micros(self.cost).to_string(),
        ]
    }

    fn insert_into(&self, m: &mut Map<String, Value>) {
        for (name, v) in SUM_COLUMNS.iter().zip(self.fields()) {
            let v = if *name == "cost" { Value::String(v) } else { Value::from(v.parse::<i64>().unwrap_or(0)) };
            m.insert((*name).to_owned(), v);
        }
    }

    /// As a JSON object (cost as a decimal credit string).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        self.insert_into(&mut m);
        Value::Object(m)
    }
}

/// The names of the sum columns, in JSON and CSV.
pub const SUM_COLUMNS: [&str; 9] = [
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "images",
    "searches",
    "cost",
];

/// The value a group stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupKey {
    /// An account: its path (as recorded) and id (`None` when only known by path, e.g. a child rolled up from its
    /// descendants' traffic; see [`fill_account_ids`]).
    Account {
        /// Path.
        path: String,
        /// Id.
        id: Option<i64>,
    },
    /// A requested model.
    Model(String),
    /// A day.
    Day(Day),
    /// A virtual key id.
    Key(i64),
}

/// One group and its sums.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageGroup {
    /// What the rows have in common.
    pub key: GroupKey,
    /// Their sums.
    pub sums: Sums,
}

impl UsageGroup {
    fn key_fields(&self) -> Vec<String> {
        match &self.key {
            GroupKey::Account { path, id } => vec![id.map(|i| i.to_string()).unwrap_or_default(), path.clone()],
            GroupKey::Model(m) => vec![m.clone()],
            GroupKey::Day(d) => vec![d.to_string()],
            GroupKey::Key(k) => vec![k.to_string()],
        }
    }

    /// As a JSON object: the group value (`account` and `path`, `model`, `day` or `key`), then the sums.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        match &self.key {
            GroupKey::Account { path, id } => {
                m.insert("account".into(), id.map_or(Value::Null, Value::from));
                m.insert("path".into(), Value::from(path.as_str()));
            }
            GroupKey::Model(s) => drop(m.insert("model".into(), Value::from(s.as_str()))),
            GroupKey::Day(d) => drop(m.insert("day".into(), Value::from(d.to_string()))),
            GroupKey::Key(k) => drop(m.insert("key".into(), Value::from(*k))),
        }
        self.sums.insert_into(&mut m);
        Value::Object(m)
    }
}

/// Groups the rows that pass `filter` by `by`, in key order. Account groups are by id, with the greatest recorded
/// path (as SQL's `MAX(account_path)`).
pub fn aggregate<'a>(
    rows: impl IntoIterator<Item = &'a UsageRow>,
    filter: &UsageFilter,
    by: GroupBy,
) -> Vec<UsageGroup> {
    let mut accounts: BTreeMap<i64, (String, Sums)> = BTreeMap::new();
    let mut other: BTreeMap<GroupKey, Sums> = BTreeMap::new();
    for r in rows.into_iter().filter(|r| filter.matches(r)) {
        let key = match by {
            GroupBy::Account => {
                let (path, sums) = accounts.entry(r.account).or_default();
                if *path < r.account_path {
                    path.clone_from(&r.account_path);
                }
                sums.add(&Sums::of(r));
                continue;
            }
            GroupBy::Model => GroupKey::Model(r.requested_model.clone()),
            GroupBy::Day => GroupKey::Day(row_day(r)),
            GroupBy::Key => GroupKey::Key(r.key_id),
        };
        other.entry(key).or_default().add(&Sums::of(r));
    }
    let mut out: Vec<UsageGroup> = accounts
        .into_iter()
        .map(|(id, (path, sums))| UsageGroup { key: GroupKey::Account { path, id: Some(id) }, sums })
        .chain(other.into_iter().map(|(key, sums)| UsageGroup { key, sums }))
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Rolls account groups up to the direct children of `parent` (a path; `None`: the root accounts): each child's row
/// sums its whole subtree, and `parent`'s own traffic keeps a row of its own. Groups outside `parent` are dropped;
/// other keys pass through. A child known only through its descendants has no id (see [`fill_account_ids`]).
pub fn rollup_children(groups: Vec<UsageGroup>, parent: Option<&str>) -> Vec<UsageGroup> {
    let mut out: BTreeMap<String, (Option<i64>, Sums)> = BTreeMap::new();
    let mut rest = Vec::new();
    for g in groups {
        let GroupKey::Account { path, id } = &g.key else {
            rest.push(g);
            continue;
        };
        let child = match parent {
            Some(p) if path == p => p.to_owned(),
            Some(p) => match path.strip_prefix(p).and_then(|r| r.strip_prefix('/')) {
                Some(below) => format!("{p}/{}", below.split('/').next().unwrap_or_default()),
                None => continue,
            },
            None => path.split('/').next().unwrap_or_default().to_owned(),
        };
        let e = out.entry(child.clone()).or_default();
        if child == *path && id.is_some() {
            e.0 = *id;
        }
        e.1.add(&g.sums);
    }
    rest.extend(out.into_iter().map(|(path, (id, sums))| UsageGroup { key: GroupKey::Account { path, id }, sums }));
    rest
}

/// Gives account groups without an id the id `ids` has for their path.
pub fn fill_account_ids(groups: &mut [UsageGroup], ids: &HashMap<String, i64>) {
    for g in groups {
        if let GroupKey::Account { path, id: id @ None } = &mut g.key {
            *id = ids.get(path.as_str()).copied();
        }
    }
}

/// The daily timeline: `groups` (by day) with a zero row for every day without traffic, from `from` (else the first
/// day with traffic) to `to` (else the last), ascending.
pub fn timeline(groups: Vec<UsageGroup>, from: Option<Day>, to: Option<Day>) -> Vec<UsageGroup> {
    let mut days: BTreeMap<Day, Sums> = BTreeMap::new();
    let mut rest = Vec::new();
    for g in groups {
        match g.key {
            GroupKey::Day(d) => days.entry(d).or_default().add(&g.sums),
            _ => rest.push(g),
        }
    }
    let first = from.or_else(|| days.keys().next().copied());
    let last = to.or_else(|| days.keys().next_back().copied());
    if let (Some(first), Some(last)) = (first, last) {
        // Bounded by the query's validation (at most MAX_DAYS); the guard keeps a direct caller from looping long.
        let last = Day(last.0.min(first.0 + MAX_DAYS));
        for d in first.0..=last.0 {
            days.entry(Day(d)).or_default();
        }
    }
    rest.extend(days.into_iter().map(|(d, sums)| UsageGroup { key: GroupKey::Day(d), sums }));
    rest
}

/// A parsed `GET /admin/v1/usage` query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageQuery {
    /// `group_by` (none: the most recent records).
    pub group_by: Option<GroupBy>,
    /// `account`: this account and its subtree.
    pub account: Option<u64>,
    /// `model`: the requested model.
    pub model: Option<String>,
    /// `key`: the virtual key id.
    pub key: Option<u64>,
    /// `from`: first day, inclusive.
    pub from: Option<Day>,
    /// `to`: last day, inclusive.
    pub to: Option<Day>,
    /// `rollup=children`: account rows are the direct children of the account (each with its subtree).
    pub rollup_children: bool,
    /// `order`: ranking (none: cost, or day ascending for `group_by=day`).
    pub order: Option<Order>,
    /// `top`: keep the first N rows.
    pub top: Option<usize>,
    /// `limit`: how many records without `group_by` (default 100, at most [`MAX_LIMIT`]; unreadable: the default).
    pub limit: usize,
    /// `format`.
    pub format: Format,
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

impl UsageQuery {
    /// Parses a query string; the error names the parameter at fault.
    pub fn parse(query: Option<&str>) -> Result<UsageQuery, String> {
        let mut q = UsageQuery { limit: 100, ..UsageQuery::default() };
        let mut seen = std::collections::HashSet::new();
        for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).ok_or_else(|| format!("parameter {name:?} is not valid URL encoding"))?;
            let v = decode(raw).ok_or_else(|| format!("`{name}`: not valid URL encoding"))?;
            if !seen.insert(name.clone()) {
                return Err(format!("`{name}` is given twice"));
            }
            let id = |what: &str| -> Result<u64, String> {
                v.parse().map_err(|_| format!("`{name}`: {v:?} is not a {what} id"))
            };
            let day = || -> Result<Day, String> { v.parse::<Day>().map_err(|e| format!("`{name}`: {e}")) };
            match name.as_str() {
                // Kept lenient, as it always was.
                "limit" => q.limit = v.parse::<usize>().unwrap_or(100).min(MAX_LIMIT),
                "group_by" => {
                    q.group_by = Some(match v.as_str() {
                        "account" => GroupBy::Account,
                        "model" => GroupBy::Model,
                        "day" => GroupBy::Day,
                        "key" => GroupBy::Key,
                        _ => return Err(format!("`group_by`: {v:?} is not one of account, model, day, key")),
                    })
                }
                "account" => q.account = Some(id("account")?),
                "key" => q.key = Some(id("key")?),
                "model" if v.is_empty() => return Err("`model`: empty".into()),
                "model" => q.model = Some(v.clone()),
                "from" => q.from = Some(day()?),
                "to" => q.to = Some(day()?),
                "rollup" if v == "children" => q.rollup_children = true,
                "rollup" => return Err(format!("`rollup`: {v:?} is not `children`")),
                "order" => {
                    q.order = Some(match v.as_str() {
                        "cost" => Order::Cost,
                        "requests" => Order::Requests,
                        "tokens" => Order::Tokens,
                        _ => return Err(format!("`order`: {v:?} is not one of requests, tokens, cost")),
                    })
                }
                "top" => match v.parse::<usize>() {
                    Ok(n) if n > 0 => q.top = Some(n),
                    _ => return Err(format!("`top`: {v:?} is not a positive whole number")),
                },
                "format" => {
                    q.format = match v.as_str() {
                        "json" => Format::Json,
                        "csv" => Format::Csv,
                        _ => return Err(format!("`format`: {v:?} is not one of json, csv")),
                    }
                }
                _ => {
                    return Err(format!(
                        "unknown parameter `{name}` (known: group_by, account, model, key, from, to, rollup, order, \
                         top, format, limit)"
                    ));
                }
            }
        }
        if let (Some(f), Some(t)) = (q.from, q.to) {
            if f > t {
                return Err(format!("`from` ({f}) is after `to` ({t})"));
            }
            if t.0 - f.0 >= MAX_DAYS {
                return Err(format!("`from`..`to` spans more than {MAX_DAYS} days"));
            }
        }
        if q.group_by.is_none() {
            for (given, name) in [(q.rollup_children, "rollup"), (q.order.is_some(), "order"), (q.top.is_some(), "top")]
            {
                if given {
                    return Err(format!("`{name}` needs `group_by`"));
                }
            }
        }
        if q.rollup_children && q.group_by != Some(GroupBy::Account) {
            return Err("`rollup` needs `group_by=account`".into());
        }
        Ok(q)
    }

    /// The filter of this query, the account's (or the caller's) subtree given as `path`.
    pub fn filter(&self, path: Option<String>) -> UsageFilter {
        UsageFilter {
            path,
            model: self.model.clone(),
            key: self.key.map(|k| i64::try_from(k).unwrap_or(i64::MAX)),
            from: self.from,
            to: self.to,
        }
    }
}

/// An aggregate answer: the rows, their total, and the query's range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageReport {
    /// What the rows are grouped by.
    pub group_by: GroupBy,
    /// First day asked for.
    pub from: Option<Day>,
    /// Last day asked for.
    pub to: Option<Day>,
    /// The rows, ordered (and cut to `top`).
    pub rows: Vec<UsageGroup>,
    /// The sums over every matching row (also those cut by `top`).
    pub total: Sums,
}

/// Turns the groups of `q.group_by` into the answer: rolled up to the direct children of `parent` (a path; `None`:
/// the roots) with `rollup=children`, a gap-free timeline for `group_by=day`, then ordered (day ascending for days
/// unless `order` is given; otherwise the `order` measure descending, then the group value) and cut to `top`.
pub fn report(groups: Vec<UsageGroup>, q: &UsageQuery, parent: Option<&str>) -> UsageReport {
    let group_by = q.group_by.unwrap_or(GroupBy::Account);
    let mut rows = match group_by {
        GroupBy::Account if q.rollup_children => rollup_children(groups, parent),
        GroupBy::Day => timeline(groups, q.from, q.to),
        _ => groups,
    };
    let mut total = Sums::default();
    for r in &rows {
        total.add(&r.sums);
    }
    match (group_by, q.order) {
        (GroupBy::Day, None) => rows.sort_by(|a, b| a.key.cmp(&b.key)),
        (_, order) => {
            let order = order.unwrap_or_default();
            rows.sort_by(|a, b| b.sums.rank(order).cmp(&a.sums.rank(order)).then_with(|| a.key.cmp(&b.key)))
        }
    }
    if let Some(n) = q.top {
        rows.truncate(n);
    }
    UsageReport { group_by, from: q.from, to: q.to, rows, total }
}

impl UsageReport {
    /// `{"group_by", "from", "to", "rows": [...], "total": {...}}`.
    pub fn to_json(&self) -> Value {
        json!({
            "group_by": self.group_by.as_str(),
            "from": self.from.map(|d| d.to_string()),
            "to": self.to.map(|d| d.to_string()),
            "rows": self.rows.iter().map(UsageGroup::to_json).collect::<Vec<_>>(),
            "total": self.total.to_json(),
        })
    }

    /// A header line (the group columns, then [`SUM_COLUMNS`]) and one line per row; no total line.
    pub fn to_csv(&self) -> String {
        let mut csv = Csv::default();
        let head: &[&str] = match self.group_by {
            GroupBy::Account => &["account", "path"],
            GroupBy::Model => &["model"],
            GroupBy::Day => &["day"],
            GroupBy::Key => &["key"],
        };
        csv.row(head.iter().chain(SUM_COLUMNS.iter()).copied());
        for r in &self.rows {
            let mut fields = r.key_fields();
            fields.extend(r.sums.fields());
            csv.row(fields.iter().map(String::as_str));
        }
        csv.finish()
    }
}

/// The columns of a usage record in CSV, in order (`attempts` as its JSON text).
pub const RECORD_COLUMNS: [&str; 25] = [
    "request_id",
    "time",
    "account",
    "account_path",
    "key",
    "inbound_protocol",
    "provider",
    "upstream_key",
    "requested_model",
    "upstream_model",
    "level",
    "status",
    "http_status",
    "attempts",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "images",
    "searches",
    "cost",
    "estimated",
];

/// Usage records (JSON objects, as in the records view) as CSV: a header line of [`RECORD_COLUMNS`], one line per
/// record; absent and null fields are empty, strings as they are, other values as JSON text.
pub fn records_csv(records: &[Value]) -> String {
    let mut csv = Csv::default();
    csv.row(RECORD_COLUMNS);
    for r in records {
        let fields: Vec<String> = RECORD_COLUMNS
            .iter()
            .map(|c| match r.get(*c) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            })
            .collect();
        csv.row(fields.iter().map(String::as_str));
    }
    csv.finish()
}

/// A CSV writer (RFC 4180): fields are separated by commas, lines end in CRLF, and a field containing a comma, a
/// quote, CR or LF is quoted with its quotes doubled.
#[derive(Clone, Debug, Default)]
pub struct Csv {
    out: String,
}

impl Csv {
    /// Appends one line.
    pub fn row<'a>(&mut self, fields: impl IntoIterator<Item = &'a str>) {
        for (i, f) in fields.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            if f.contains([',', '"', '\r', '\n']) {
                self.out.push('"');
                self.out.push_str(&f.replace('"', "\"\""));
                self.out.push('"');
            } else {
                self.out.push_str(f);
            }
        }
        self.out.push_str("\r\n");
    }

    /// The text written.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Appends `WHERE …` for `filter` to a query; `$date` is the cast a day text needs (`::date` on Postgres).
macro_rules! push_filter {
    ($qb:expr, $filter:expr, $date:literal) => {{
        let f: &UsageFilter = $filter;
        $qb.push(" WHERE 1 = 1");
        if let Some(p) = &f.path {
            $qb.push(" AND (account_path = ")
                .push_bind(p.clone())
                .push(" OR account_path LIKE ")
                .push_bind(below(p))
                .push(" ESCAPE '\\')");
        }
        if let Some(m) = &f.model {
            $qb.push(" AND requested_model = ").push_bind(m.clone());
        }
        if let Some(k) = f.key {
            $qb.push(" AND key_id = ").push_bind(k);
        }
        if let Some(d) = f.from {
            $qb.push(" AND day >= ").push_bind(d.to_string()).push($date);
        }
        if let Some(d) = f.to {
            $qb.push(" AND day <= ").push_bind(d.to_string()).push($date);
        }
    }};
}

const SUMS_SQL: &str = "COUNT(*) AS requests, CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
    CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, \
    CAST(SUM(reasoning_tokens) AS BIGINT) AS reasoning_tokens, CAST(SUM(cached_tokens) AS BIGINT) AS cached_tokens, \
    CAST(SUM(cache_write_tokens) AS BIGINT) AS cache_write_tokens, CAST(SUM(images) AS BIGINT) AS images, \
    CAST(SUM(searches) AS BIGINT) AS searches, CAST(SUM(cost) AS BIGINT) AS cost";

/// `SELECT <group columns>, <sums> FROM usage` for `by`, and its `GROUP BY`.
fn group_sql(by: GroupBy) -> (&'static str, &'static str) {
    match by {
        GroupBy::Account => ("account AS g_int, MAX(account_path) AS g_text", " GROUP BY account"),
        GroupBy::Model => ("requested_model AS g_text", " GROUP BY requested_model"),
        GroupBy::Day => ("CAST(day AS TEXT) AS g_text", " GROUP BY day"),
        GroupBy::Key => ("key_id AS g_int", " GROUP BY key_id"),
    }
}

macro_rules! group_of {
    ($r:expr, $by:expr) => {{
        let r = $r;
        let n = |c: &str| r.try_get::<Option<i64>, _>(c).map(Option::unwrap_or_default);
        let sums = Sums {
            requests: n("requests")?,
            prompt_tokens: n("prompt_tokens")?,
            completion_tokens: n("completion_tokens")?,
            reasoning_tokens: n("reasoning_tokens")?,
            cached_tokens: n("cached_tokens")?,
            cache_write_tokens: n("cache_write_tokens")?,
            images: n("images")?,
            searches: n("searches")?,
            cost: n("cost")?,
        };
        let key = match $by {
            GroupBy::Account => GroupKey::Account { path: r.try_get("g_text")?, id: Some(r.try_get("g_int")?) },
            GroupBy::Model => GroupKey::Model(r.try_get("g_text")?),
            GroupBy::Day => {
                let d: String = r.try_get("g_text")?;
                GroupKey::Day(d.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))?)
            }
            GroupBy::Key => GroupKey::Key(r.try_get("g_int")?),
        };
        Ok::<UsageGroup, sqlx::Error>(UsageGroup { key, sums })
    }};
}

impl UsageDb {
    /// The last `limit` records (oldest first), optionally only those of the accounts under `path_prefix`
    /// (the account itself and its subtree).
    pub async fn recent(&self, limit: i64, path_prefix: Option<&str>) -> Result<Vec<Value>, sqlx::Error> {
        let filter = UsageFilter { path: path_prefix.map(str::to_owned), ..UsageFilter::default() };
        self.records(limit, &filter).await
    }

    /// The last `limit` records that pass `filter`, oldest first, as JSON objects of the records view.
    pub async fn records(&self, limit: i64, filter: &UsageFilter) -> Result<Vec<Value>, sqlx::Error> {
        let head = format!("SELECT {COLUMNS}, estimated FROM usage");
        let mut rows: Vec<Value> = match self {
            UsageDb::Sqlite(pool) => {
                let mut qb = QueryBuilder::new(head);
                push_filter!(qb, filter, "");
                qb.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
                qb.build()
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|r| to_json!(r, r.try_get::<i64, _>("estimated").unwrap_or(0) != 0))
                    .collect()
            }
            UsageDb::Postgres(pool) => {
                let mut qb = QueryBuilder::new(head);
                push_filter!(qb, filter, "::date");
                qb.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
                qb.build()
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|r| to_json!(r, r.try_get::<bool, _>("estimated").unwrap_or(false)))
                    .collect()
            }
        };
        rows.reverse();
        Ok(rows)
    }

    /// The rows that pass `filter`, grouped by `by` with SQL `GROUP BY`, in key order: the same groups as
    /// [`aggregate`] over the same rows.
    pub async fn aggregate(&self, filter: &UsageFilter, by: GroupBy) -> Result<Vec<UsageGroup>, sqlx::Error> {
        let (select, group) = group_sql(by);
        let head = format!("SELECT {select}, {SUMS_SQL} FROM usage");
        let mut out = match self {
            UsageDb::Sqlite(pool) => {
                let mut qb = QueryBuilder::new(head);
                push_filter!(qb, filter, "");
                qb.push(group);
                qb.build().fetch_all(pool).await?.iter().map(|r| group_of!(r, by)).collect::<Result<Vec<_>, _>>()?
            }
            UsageDb::Postgres(pool) => {
                let mut qb = QueryBuilder::new(head);
                push_filter!(qb, filter, "::date");
                qb.push(group);
                qb.build().fetch_all(pool).await?.iter().map(|r| group_of!(r, by)).collect::<Result<Vec<_>, _>>()?
            }
        };
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::testenv::TestDb;

    /// 2026-11-20T00:00:00Z.
    const BASE_MS: i64 = 1_763_596_800_000;
    const DAY_MS: i64 = 86_400_000;

    /// Accounts (id, path) of the seeded tree: `acme/ops` (4) has no traffic of its own; `a_c` and `abc` catch an
    /// unescaped `_`; `acmex` an unanchored prefix.
    const ACCOUNTS: [(i64, &str); 9] = [
        (1, "acme"),
        (2, "acme/research"),
        (3, "acme/research/nlp"),
        (10, "acme/ops/x"),
        (6, "a_c"),
        (7, "a_c/d"),
        (8, "abc/d"),
        (9, "acmex"),
        (11, "other"),
    ];
    const MODELS: [&str; 3] = ["gpt-4o", "gpt-4o-mini", "odd, \"quoted\"\nmodel"];
    /// Day offsets from BASE_MS: nothing on day 2.
    const DAYS: [i64; 4] = [0, 1, 3, 4];

    /// A deterministic history of 150 rows (a fixed linear congruential sequence).
    fn seeded() -> Vec<UsageRow> {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((x >> 33) % n) as i64
        };
        (0..150)
            .map(|i| {
                let (account, path) = ACCOUNTS[next(ACCOUNTS.len() as u64) as usize];
                let day = DAYS[next(DAYS.len() as u64) as usize];
                UsageRow {
                    request_id: format!("req-{i}"),
                    time_ms: BASE_MS + day * DAY_MS + next(DAY_MS as u64),
                    account,
                    account_path: path.into(),
                    key_id: account * 10 + next(2),
                    inbound_protocol: "openai".into(),
                    provider: Some("p".into()),
                    upstream_key: Some(1),
                    requested_model: MODELS[next(MODELS.len() as u64) as usize].into(),
                    upstream_model: None,
                    level: Some(1),
                    status: "ok".into(),
                    http_status: 200,
                    attempts: "[]".into(),
                    latency_ms: 5,
                    ttft_ms: None,
                    prompt_tokens: 10 + next(1000),
                    completion_tokens: next(500),
                    reasoning_tokens: next(50),
                    cached_tokens: next(30),
                    cache_write_tokens: next(20),
                    images: next(2),
                    searches: next(3),
                    cost: next(5_000_000),
                    estimated: false,
                }
            })
            .collect()
    }

    /// Sums per group value as text, computed the plain way: one pass, no shared code with the module.
    type Expected = BTreeMap<String, [i64; 9]>;

    struct Case {
        path: Option<&'static str>,
        model: Option<&'static str>,
        key: Option<i64>,
        from: Option<i64>,
        to: Option<i64>,
    }

    const CASES: [Case; 9] = [
        Case { path: None, model: None, key: None, from: None, to: None },
        Case { path: Some("acme"), model: None, key: None, from: None, to: None },
        Case { path: Some("acme/research"), model: None, key: None, from: None, to: None },
        Case { path: Some("a_c"), model: None, key: None, from: None, to: None },
        Case { path: None, model: Some("gpt-4o"), key: None, from: None, to: None },
        Case { path: None, model: None, key: Some(21), from: None, to: None },
        Case { path: None, model: None, key: None, from: Some(1), to: Some(3) },
        Case { path: Some("acme"), model: Some("gpt-4o-mini"), key: None, from: Some(3), to: None },
        Case { path: None, model: Some(MODELS[2]), key: None, from: None, to: Some(0) },
    ];

    fn day_text(offset: i64) -> String {
        Day::of(UNIX_EPOCH + Duration::from_millis((BASE_MS + offset * DAY_MS) as u64)).to_string()
    }

    fn expected(rows: &[UsageRow], c: &Case, by: GroupBy) -> Expected {
        let mut out = Expected::new();
        for r in rows {
            let offset = (r.time_ms - BASE_MS).div_euclid(DAY_MS);
            let under = |p: &str| r.account_path == p || r.account_path.starts_with(&format!("{p}/"));
            if c.path.is_some_and(|p| !under(p))
                || c.model.is_some_and(|m| r.requested_model != m)
                || c.key.is_some_and(|k| r.key_id != k)
                || c.from.is_some_and(|f| offset < f)
                || c.to.is_some_and(|t| offset > t)
            {
                continue;
            }
            let key = match by {
                GroupBy::Account => format!("{} {}", r.account, r.account_path),
                GroupBy::Model => r.requested_model.clone(),
                GroupBy::Day => day_text(offset),
                GroupBy::Key => r.key_id.to_string(),
            };
            let e = out.entry(key).or_default();
            let add = [
                1,
                r.prompt_tokens,
                r.completion_tokens,
                r.reasoning_tokens,
                r.cached_tokens,
                r.cache_write_tokens,
                r.images,
                r.searches,
                r.cost,
            ];
            for (a, b) in e.iter_mut().zip(add) {
                *a += b;
            }
        }
        out
    }

    fn as_expected(groups: &[UsageGroup]) -> Expected {
        groups
            .iter()
            .map(|g| {
                let key = match &g.key {
                    GroupKey::Account { path, id } => format!("{} {path}", id.expect("an account group has its id")),
                    GroupKey::Model(m) => m.clone(),
                    GroupKey::Day(d) => d.to_string(),
                    GroupKey::Key(k) => k.to_string(),
                };
                let s = g.sums;
                let v = [
                    s.requests,
                    s.prompt_tokens,
                    s.completion_tokens,
                    s.reasoning_tokens,
                    s.cached_tokens,
                    s.cache_write_tokens,
                    s.images,
                    s.searches,
                    s.cost,
                ];
                (key, v)
            })
            .collect()
    }

    fn filter_of(c: &Case) -> UsageFilter {
        let day = |o: i64| day_text(o).parse::<Day>().unwrap();
        UsageFilter {
            path: c.path.map(str::to_owned),
            model: c.model.map(str::to_owned),
            key: c.key,
            from: c.from.map(day),
            to: c.to.map(day),
        }
    }

    const ALL: [GroupBy; 4] = [GroupBy::Account, GroupBy::Model, GroupBy::Day, GroupBy::Key];

    /// Every grouping under every filter, in memory and (when given) in SQL, against the plain computation.
    async fn every_grouping(db: Option<&UsageDb>) {
        let rows = seeded();
        let mut nonempty = 0;
        for (i, c) in CASES.iter().enumerate() {
            for by in ALL {
                let want = expected(&rows, c, by);
                nonempty += usize::from(!want.is_empty());
                let f = filter_of(c);
                let mem = aggregate(&rows, &f, by);
                assert_eq!(as_expected(&mem), want, "memory, case {i}, by {by:?}");
                let keys: Vec<&GroupKey> = mem.iter().map(|g| &g.key).collect();
                assert!(keys.windows(2).all(|w| w[0] < w[1]), "key order, case {i}, by {by:?}");
                if let Some(db) = db {
                    let sql = db.aggregate(&f, by).await.unwrap();
                    assert_eq!(sql, mem, "SQL and memory agree, case {i}, by {by:?}");
                }
            }
        }
        assert!(nonempty >= 30, "the seeded cases must exercise real groups ({nonempty})");
        // The `_` of `a_c` is literal: abc/d is not under it.
        let under = aggregate(&rows, &filter_of(&CASES[3]), GroupBy::Account);
        let paths: BTreeSet<&str> = under
            .iter()
            .map(|g| if let GroupKey::Account { path, .. } = &g.key { path.as_str() } else { "" })
            .collect();
        assert_eq!(paths, BTreeSet::from(["a_c", "a_c/d"]));
    }

    async fn sqlite() -> UsageDb {
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
        let db = UsageDb::Sqlite(pool);
        db.ensure_schema().await.unwrap();
        db
    }

    #[tokio::test]
    async fn groups_in_memory() {
        every_grouping(None).await;
    }

    #[tokio::test]
    async fn groups_in_sqlite() {
        let db = sqlite().await;
        assert_eq!(db.insert(&seeded()).await.unwrap(), 150);
        every_grouping(Some(&db)).await;
        records_filtered(&db).await;
    }

    #[tokio::test]
    async fn groups_in_postgres() {
        let Some(t) = TestDb::create().await else { return };
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&t.url).await.unwrap();
        let db = UsageDb::Postgres(pool);
        db.ensure_schema().await.unwrap();
        assert_eq!(db.insert(&seeded()).await.unwrap(), 150);
        every_grouping(Some(&db)).await;
        records_filtered(&db).await;
        if let UsageDb::Postgres(p) = db {
            p.close().await;
        }
        t.drop_db().await;
    }

    /// Records with filters: the last N of the matching rows, oldest first.
    async fn records_filtered(db: &UsageDb) {
        let rows = seeded();
        let c = &CASES[7];
        let want: Vec<String> = rows
            .iter()
            .filter(|r| !expected(std::slice::from_ref(*r), c, GroupBy::Model).is_empty())
            .map(|r| r.request_id.clone())
            .collect();
        assert!(want.len() >= 3, "{want:?}");
        let got = db.records(3, &filter_of(c)).await.unwrap();
        let ids: Vec<&str> = got.iter().map(|r| r["request_id"].as_str().unwrap()).collect();
        assert_eq!(ids, want[want.len() - 3..]);
        let all = db.records(1000, &filter_of(c)).await.unwrap();
        assert_eq!(all.len(), want.len());
    }

    fn parse(q: &str) -> UsageQuery {
        UsageQuery::parse(Some(q)).unwrap_or_else(|e| panic!("{q}: {e}"))
    }

    #[test]
    fn rollup_to_children_ranks_subtrees() {
        let rows = seeded();
        let q = parse("group_by=account&rollup=children&account=1");
        let groups = aggregate(&rows, &q.filter(Some("acme".into())), GroupBy::Account);
        let mut r = report(groups, &q, Some("acme"));
        let ids = HashMap::from([("acme/ops".to_owned(), 4)]);
        fill_account_ids(&mut r.rows, &ids);
        // Plain: each child's subtree (and acme's own traffic).
        let sum = |p: &dyn Fn(&str) -> bool| -> Sums {
            let mut s = Sums::default();
            for x in rows.iter().filter(|x| p(&x.account_path)) {
                s.add(&Sums::of(x));
            }
            s
        };
        let mut want = vec![
            (Some(1), "acme", sum(&|p| p == "acme")),
            (Some(2), "acme/research", sum(&|p| p.starts_with("acme/research"))),
            (Some(4), "acme/ops", sum(&|p| p.starts_with("acme/ops/"))),
        ];
        want.sort_by_key(|w| std::cmp::Reverse(w.2.cost));
        let got: Vec<(Option<i64>, &str, Sums)> = r
            .rows
            .iter()
            .map(|g| match &g.key {
                GroupKey::Account { path, id } => (*id, path.as_str(), g.sums),
                k => panic!("{k:?}"),
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(r.total, sum(&|p| p == "acme" || p.starts_with("acme/")));
        let json = r.to_json();
        assert_eq!(json["group_by"], "account");
        assert_eq!(json["rows"][0]["path"], want[0].1);
        assert_eq!(json["rows"][0]["cost"], Micros(want[0].2.cost).to_string());

        // Ranked by requests, top 2; the total still counts everything.
        let q = parse("group_by=account&rollup=children&order=requests&top=2");
        let all = aggregate(&rows, &q.filter(None), GroupBy::Account);
        let r = report(all, &q, None);
        let roots = ["acme", "a_c", "abc", "acmex", "other"];
        let mut want: Vec<(i64, &str)> = roots
            .iter()
            .map(|root| (sum(&|p| p == *root || p.starts_with(&format!("{root}/"))).requests, *root))
            .collect();
        want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        let got: Vec<(i64, &str)> = r
            .rows
            .iter()
            .map(|g| match &g.key {
                GroupKey::Account { path, .. } => (g.sums.requests, path.as_str()),
                k => panic!("{k:?}"),
            })
            .collect();
        assert_eq!(got, want[..2]);
        assert_eq!(r.total.requests, 150);
    }

    #[test]
    fn timeline_has_no_gaps() {
        let rows = seeded();
        let (from, to) = (day_text(-1), day_text(5));
        let q = parse(&format!("group_by=day&from={from}&to={to}"));
        let r = report(aggregate(&rows, &q.filter(None), GroupBy::Day), &q, None);
        let days: Vec<String> = r.rows.iter().map(|g| g.to_json()["day"].as_str().unwrap().to_owned()).collect();
        assert_eq!(days, (-1..=5).map(day_text).collect::<Vec<_>>());
        let requests: Vec<i64> = r.rows.iter().map(|g| g.sums.requests).collect();
        assert_eq!((requests[0], requests[3], requests[6]), (0, 0, 0), "{requests:?}");
        assert!(requests.iter().filter(|n| **n > 0).count() == 4, "{requests:?}");
        assert_eq!(r.total.requests, 150);
        // Without bounds: from the first to the last day with traffic, the gap filled.
        let q = parse("group_by=day");
        let r = report(aggregate(&rows, &q.filter(None), GroupBy::Day), &q, None);
        assert_eq!(r.rows.len(), 5);
        assert_eq!(r.rows[2].sums, Sums::default());
        // Ranked days when asked.
        let q = parse("group_by=day&order=cost&top=1");
        let r = report(aggregate(&rows, &q.filter(None), GroupBy::Day), &q, None);
        let best = (0..5).map(|o| expected(&rows, &CASES[0], GroupBy::Day).get(&day_text(o)).map_or(0, |v| v[8])).max();
        assert_eq!(Some(r.rows[0].sums.cost), best);
    }

    /// A plain RFC 4180 reader for the tests.
    fn read_csv(text: &str) -> Vec<Vec<String>> {
        let mut rows = vec![];
        let mut row = vec![];
        let mut field = String::new();
        let mut chars = text.chars().peekable();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => field.push(c),
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut field)),
                (false, '\r') => assert_eq!(chars.next(), Some('\n'), "CR only before LF outside quotes"),
                (false, '\n') => panic!("bare LF outside quotes in {text:?}"),
                (false, c) => field.push(c),
            }
            if !quoted && (c == '\r' || chars.peek().is_none()) {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
        }
        rows
    }

    #[test]
    fn csv_quotes_awkward_fields() {
        let awkward = ["plain", "", "a,b", "say \"hi\"", "two\nlines", "cr\rhere", "\"", ",", "ünïcödé ✓", " pad "];
        let mut csv = Csv::default();
        csv.row(awkward);
        csv.row(["x", "y"]);
        let text = csv.finish();
        assert_eq!(
            text,
            "plain,,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\"cr\rhere\",\"\"\"\",\",\",ünïcödé ✓, pad \r\nx,y\r\n"
        );
        let back = read_csv(&text);
        assert_eq!(back, vec![awkward.map(str::to_owned).to_vec(), vec!["x".to_owned(), "y".to_owned()]]);
    }

    #[test]
    fn report_and_records_as_csv() {
        let rows = seeded();
        let q = parse("group_by=model&format=csv");
        let r = report(aggregate(&rows, &q.filter(None), GroupBy::Model), &q, None);
        let back = read_csv(&r.to_csv());
        assert_eq!(
            back[0],
            [
                "model",
                "requests",
                "prompt_tokens",
                "completion_tokens",
                "reasoning_tokens",
                "cached_tokens",
                "cache_write_tokens",
                "images",
                "searches",
                "cost"
            ]
        );
        assert_eq!(back.len(), 1 + MODELS.len());
        let want = expected(&rows, &CASES[0], GroupBy::Model);
        for line in &back[1..] {
            let v = want.get(&line[0]).unwrap_or_else(|| panic!("unknown model {:?}", line[0]));
            assert_eq!(line[1], v[0].to_string());
            assert_eq!(line[9], Micros(v[8]).to_string());
        }
        let q = parse("group_by=account");
        let r = report(aggregate(&rows, &q.filter(Some("a_c".into())), GroupBy::Account), &q, None);
        let back = read_csv(&r.to_csv());
        assert_eq!(&back[0][..3], ["account", "path", "requests"]);
        assert!(back[1..].iter().all(|l| l[1].starts_with("a_c") && l[0].parse::<i64>().is_ok()), "{back:?}");

        let records =
            vec![json!({"request_id": "r,1", "time": "2026-11-25T10:00:00.000Z", "account": 2, "account_path": "a/b",
                   "key": 3, "attempts": [{"outcome": "ok"}], "cost": "1.5", "estimated": false, "ttft_ms": null})];
        let back = read_csv(&records_csv(&records));
        assert_eq!(back[0], RECORD_COLUMNS);
        let line = &back[1];
        let col = |n: &str| line[RECORD_COLUMNS.iter().position(|c| *c == n).unwrap()].as_str();
        assert_eq!((col("request_id"), col("key"), col("cost")), ("r,1", "3", "1.5"));
        assert_eq!((col("attempts"), col("ttft_ms"), col("provider")), ("[{\"outcome\":\"ok\"}]", "", ""));
    }

    #[test]
    fn query_parameters() {
        let q = parse(
            "group_by=account&account=7&model=gpt%2D4o+x&key=3&from=2026-11-01&to=2026-11-30&rollup=children&order=tokens&top=5&format=csv",
        );
        assert_eq!(q.group_by, Some(GroupBy::Account));
        assert_eq!((q.account, q.key, q.model.as_deref()), (Some(7), Some(3), Some("gpt-4o x")));
        assert_eq!(
            (q.from.unwrap().to_string(), q.to.unwrap().to_string()),
            ("2026-11-01".into(), "2026-11-30".into())
        );
        assert!(q.rollup_children);
        assert_eq!((q.order, q.top, q.format), (Some(Order::Tokens), Some(5), Format::Csv));
        // `limit` stays as lenient as before.
        assert_eq!(parse("limit=5").limit, 5);
        assert_eq!(parse("limit=abc").limit, 100);
        assert_eq!(parse("limit=99999").limit, MAX_LIMIT);
        assert_eq!(UsageQuery::parse(None).unwrap().limit, 100);
        for (bad, names) in [
            ("group_by=week", "`group_by`"),
            ("group_by=day&from=2026-13-01", "`from`"),
            ("group_by=day&to=yesterday", "`to`"),
            ("group_by=day&from=2026-11-02&to=2026-11-01", "`from`"),
            ("group_by=day&from=2000-01-01&to=2026-11-01", "`from`"),
            ("group_by=model&account=abc", "`account`"),
            ("group_by=model&key=-1", "`key`"),
            ("group_by=model&top=0", "`top`"),
            ("group_by=model&order=price", "`order`"),
            ("group_by=model&rollup=children", "`rollup`"),
            ("group_by=account&rollup=parents", "`rollup`"),
            ("top=3", "`top`"),
            ("order=cost", "`order`"),
            ("format=xml", "`format`"),
            ("group_by=model&colour=red", "`colour`"),
            ("group_by=model&model=", "`model`"),
            ("group_by=model&model=%zz", "`model`"),
            ("group_by=model&group_by=day", "`group_by`"),
        ] {
            let e = UsageQuery::parse(Some(bad)).expect_err(bad);
            assert!(e.contains(names), "{bad}: {e}");
        }
    }
}
