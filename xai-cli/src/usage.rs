//! `xai usage`: the most recent usage records, or usage grouped by account, model, day or key (rankings, daily
//! timelines), as a table, JSON or the server's CSV.

use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::args::parse_date;
use crate::render::{self, field};
use crate::request::ApiRequest;

/// What `--group-by` groups by.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// The calling account (with `--rollup children`: the direct children of `--account`, each with its subtree)
    Account,
    /// The model the client asked for
    Model,
    /// The day (every day of the range, also those without traffic)
    Day,
    /// The virtual key
    Key,
}

/// What `--rollup` rolls account rows up to.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollup {
    /// The direct children of the account (sub-account ranking)
    Children,
}

/// What `--order` ranks by.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Requests
    Requests,
    /// Prompt plus completion tokens
    Tokens,
    /// Cost
    Cost,
}

/// How `xai usage` prints the answer.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// A table for people
    #[default]
    Table,
    /// The server's JSON answer (as --json)
    Json,
    /// The server's CSV, verbatim
    Csv,
}

/// Show recent usage records (newest last), or usage grouped by account, model, day or key.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct UsageArgs {
    /// How many records to show (without --group-by)
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    /// Group by account, model, day or key (sums of requests, tokens and cost per group)
    #[arg(long, value_enum, value_name = "DIMENSION")]
    pub group_by: Option<GroupBy>,
    /// Only this account and its subtree (an account id)
    #[arg(long, value_name = "ID")]
    pub account: Option<u64>,
    /// Only requests for this model (as the client asked for it)
    #[arg(long)]
    pub model: Option<String>,
    /// Only requests made with this virtual key (a key id)
    #[arg(long, value_name = "ID")]
    pub key: Option<u64>,
    /// First day, inclusive (YYYY-MM-DD)
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub from: Option<String>,
    /// Last day, inclusive (YYYY-MM-DD)
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub to: Option<String>,
    /// With --group-by account: one row per direct child of --account (each with its whole subtree)
    #[arg(long, value_enum, requires = "group_by")]
    pub rollup: Option<Rollup>,
    /// Rank rows by requests, tokens or cost (descending; default cost, days ascending)
    #[arg(long, value_enum, requires = "group_by")]
    pub order: Option<Order>,
    /// Keep the first N rows
    #[arg(long, value_name = "N", requires = "group_by", value_parser = clap::value_parser!(u32).range(1..))]
    pub top: Option<u32>,
    /// Output: table, json (as --json) or csv (the server's CSV, verbatim)
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay as they are).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl UsageArgs {
    /// The admin API call for this command.
    pub fn request(&self) -> Result<ApiRequest, String> {
        if self.rollup.is_some() && self.group_by != Some(GroupBy::Account) {
            return Err("--rollup needs --group-by account".into());
        }
        let mut q: Vec<String> = Vec::new();
        match self.group_by {
            None => q.push(format!("limit={}", self.limit)),
            Some(g) => q.push(format!("group_by={}", value(g))),
        }
        if let Some(a) = self.account {
            q.push(format!("account={a}"));
        }
        if let Some(m) = &self.model {
            q.push(format!("model={}", encode(m)));
        }
        if let Some(k) = self.key {
            q.push(format!("key={k}"));
        }
        for (name, v) in [("from", &self.from), ("to", &self.to)] {
            if let Some(v) = v {
                q.push(format!("{name}={v}"));
            }
        }
        if let Some(r) = self.rollup {
            q.push(format!("rollup={}", value(r)));
        }
        if let Some(o) = self.order {
            q.push(format!("order={}", value(o)));
        }
        if let Some(n) = self.top {
            q.push(format!("top={n}"));
        }
        if self.format == Format::Csv {
            q.push("format=csv".into());
        }
        Ok(ApiRequest::get(format_args!("/usage?{}", q.join("&"))))
    }

    /// Whether the answer is printed as JSON (`--format json`).
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Whether the answer is printed as the server sent it (`--format csv`).
    pub fn raw(&self) -> bool {
        self.format == Format::Csv
    }

    /// The answer as text.
    pub fn render(&self, answer: &Value) -> String {
        if self.group_by.is_some() { groups(answer) } else { table(answer) }
    }
}

/// The name clap gives a value (what the server expects too).
fn value(v: impl ValueEnum) -> String {
    v.to_possible_value().map(|p| p.get_name().to_owned()).unwrap_or_default()
}

/// `GET /usage?group_by=…` as a table: the group value, requests, tokens, cost, and a total line.
pub fn groups(answer: &Value) -> String {
    let rows = render::array(answer, "rows");
    let by = answer.get("group_by").and_then(Value::as_str).unwrap_or("account");
    let key: &[&str] = match by {
        "account" => &["account", "path"],
        other => std::slice::from_ref(match other {
            "model" => &"model",
            "day" => &"day",
            _ => &"key",
        }),
    };
    let mut head: Vec<&str> = key.to_vec();
    head.extend(["requests", "prompt", "completion", "reasoning", "cached", "cost"]);
    let mut t = render::table(head);
    let sums = |r: &Value| {
        ["requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens", "cost"]
            .map(|c| field(r, c))
    };
    for r in rows {
        let mut cells: Vec<String> = key.iter().map(|k| field(r, k)).collect();
        cells.extend(sums(r));
        t.add_row(cells);
    }
    if let Some(total) = answer.get("total") {
        let mut cells = vec!["total".to_owned()];
        cells.extend(std::iter::repeat_n(String::new(), key.len() - 1));
        cells.extend(sums(total));
        t.add_row(cells);
    }
    let n = key.len();
    let numbers: Vec<usize> = (n..n + 6).collect();
    render::align_right(&mut t, &numbers);
    render::no_wrap(&mut t, &numbers);
    if rows.is_empty() {
        return format!("No usage in this range.\n{}", render::finish(&t));
    }
    render::finish(&t)
}

/// `GET /usage` as a table: time, account, model → upstream model, status, tokens, cost, attempts.
pub fn table(answer: &Value) -> String {
    let records = render::array(answer, "records");
    if records.is_empty() {
        return "No usage recorded yet.".into();
    }
    let mut t = render::table(["time (UTC)", "account", "model", "status", "in/out", "cost", "tries"]);
    for r in records {
        let requested = field(r, "requested_model");
        let model = match r.get("upstream_model").and_then(Value::as_str) {
            Some(up) if up != requested => format!("{requested} → {up}"),
            _ => requested,
        };
        let status = match (r.get("status").and_then(Value::as_str), r.get("http_status").and_then(Value::as_u64)) {
            (Some("ok"), _) | (Some(_), None) => field(r, "status"),
            (Some(s), Some(code)) => format!("{s} {code}"),
            (None, Some(code)) => code.to_string(),
            (None, None) => render::DASH.into(),
        };
        let estimated = if r.get("estimated").and_then(Value::as_bool) == Some(true) { " (est.)" } else { "" };
        let attempts = r.get("attempts").map_or_else(
            || render::DASH.into(),
            |a| a.as_array().map_or_else(|| render::text(a), |a| a.len().to_string()),
        );
        t.add_row(vec![
            render::short_time(r.get("time").unwrap_or(&Value::Null)),
            field(r, "account_path"),
            model,
            status,
            format!("{}/{}{estimated}", field(r, "prompt_tokens"), field(r, "completion_tokens")),
            field(r, "cost"),
            attempts,
        ]);
    }
    render::align_right(&mut t, &[4, 5, 6]);
    render::no_wrap(&mut t, &[0, 1, 3, 4, 5, 6]);
    render::finish(&t)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;

    #[derive(Parser, Debug)]
    struct Probe {
        #[command(flatten)]
        args: UsageArgs,
    }

    #[test]
    fn limit_goes_into_the_query() {
        let p = Probe::try_parse_from(["usage"]).unwrap();
        assert_eq!(p.args.request().unwrap(), ApiRequest::get("/usage?limit=20"));
        let p = Probe::try_parse_from(["usage", "--limit", "5"]).unwrap();
        assert_eq!(p.args.request().unwrap().path, "/admin/v1/usage?limit=5");
        assert!(Probe::try_parse_from(["usage", "--limit", "0"]).is_err());
    }

    #[test]
    fn grouped_queries() {
        let req = |argv: &[&str]| {
            Probe::try_parse_from(std::iter::once("usage").chain(argv.iter().copied())).map(|p| p.args.request())
        };
        assert_eq!(
            req(&["--group-by", "model", "--from", "2026-11-01", "--to", "2026-11-30", "--format", "csv"])
                .unwrap()
                .unwrap()
                .path,
            "/admin/v1/usage?group_by=model&from=2026-11-01&to=2026-11-30&format=csv"
        );
        assert_eq!(
            req(&[
                "--group-by",
                "account",
                "--account",
                "7",
                "--rollup",
                "children",
                "--order",
                "tokens",
                "--top",
                "3"
            ])
            .unwrap()
            .unwrap()
            .path,
            "/admin/v1/usage?group_by=account&account=7&rollup=children&order=tokens&top=3"
        );
        assert_eq!(
            req(&["--model", "a b&c/é", "--key", "4", "--limit", "5"]).unwrap().unwrap().path,
            "/admin/v1/usage?limit=5&model=a%20b%26c%2F%C3%A9&key=4"
        );
        assert!(req(&["--rollup", "children"]).is_err(), "--rollup needs --group-by");
        assert!(req(&["--top", "3"]).is_err() && req(&["--order", "cost"]).is_err());
        assert!(req(&["--group-by", "model", "--rollup", "children"]).unwrap().is_err());
        assert!(req(&["--group-by", "week"]).is_err());
        assert!(req(&["--group-by", "day", "--from", "2026-13-01"]).is_err());
        assert!(req(&["--group-by", "day", "--top", "0"]).is_err());
        assert!(req(&["--format", "xml"]).is_err());
    }

    #[test]
    fn groups_table() {
        let out = groups(&json!({"group_by": "account", "from": null, "to": null, "rows": [
            {"account": 2, "path": "acme/research", "requests": 6, "prompt_tokens": 60, "completion_tokens": 30,
             "reasoning_tokens": 0, "cached_tokens": 0, "cost": "12"},
            {"account": 1, "path": "acme", "requests": 1, "prompt_tokens": 10, "completion_tokens": 5,
             "reasoning_tokens": 0, "cached_tokens": 0, "cost": "2"}],
            "total": {"requests": 7, "prompt_tokens": 70, "completion_tokens": 35, "reasoning_tokens": 0,
                      "cached_tokens": 0, "cost": "14"}}));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert!(lines[0].starts_with("account") && lines[0].contains("path") && lines[0].contains("cost"), "{out}");
        assert!(lines[2].starts_with("2") && lines[2].contains("acme/research") && lines[2].ends_with("12"), "{out}");
        assert!(lines[4].starts_with("total") && lines[4].contains(" 7 ") && lines[4].ends_with("14"), "{out}");
        let out = groups(&json!({"group_by": "model", "rows": [], "total": {"requests": 0, "cost": "0"}}));
        assert!(out.starts_with("No usage") && out.contains("model"), "{out}");
    }

    #[test]
    fn records_table() {
        let out = table(&json!({"records": [
            {"request_id": "r1", "time": "2026-11-25T10:00:00.123Z", "account": 2, "account_path": "acme/research",
             "requested_model": "gpt-3.5-turbo", "upstream_model": "gpt-4o-mini", "status": "ok", "http_status": 200,
             "attempts": [{"outcome": "timeout"}, {"outcome": "ok"}], "prompt_tokens": 10, "completion_tokens": 5,
             "cost": "0.000005", "estimated": false},
            {"request_id": "r2", "time": "2026-11-25T10:00:01Z", "account": 2, "account_path": "acme/research",
             "requested_model": "gpt-4o", "upstream_model": "gpt-4o", "status": "upstream_error",
             "http_status": 502, "attempts": [{}, {}, {}], "prompt_tokens": 0, "completion_tokens": 0, "cost": "0"}]}));
        let lines: Vec<&str> = out.lines().collect();
        // In 100 columns the model column wraps after the arrow; everything else stays on one line.
        assert_eq!(lines.len(), 5, "{out}");
        assert!(lines[2].starts_with("11-25 10:00:00  acme/research  gpt-3.5-turbo →"), "{out}");
        assert!(lines[3].trim() == "gpt-4o-mini", "{out}");
        assert!(lines[2].contains("10/5") && lines[2].contains("0.000005") && lines[2].trim_end().ends_with('2'));
        assert!(lines[4].contains("upstream_error 502") && lines[4].trim_end().ends_with('3'), "{out}");
        assert!(!lines[4].contains("→"), "same model is not repeated");
        assert!(out.lines().all(|l| l.chars().count() <= 100), "{out}");
    }
}
