//! `xai usage`: the most recent usage records.

use clap::Args;
use serde_json::Value;

use crate::render::{self, field};
use crate::request::ApiRequest;

/// Show recent usage records, newest last.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct UsageArgs {
    /// How many records to show
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
}

impl UsageArgs {
    /// The admin API call for this command.
    pub fn request(&self) -> Result<ApiRequest, String> {
        Ok(ApiRequest::get(format_args!("/usage?limit={}", self.limit)))
    }

    /// The answer as text.
    pub fn render(&self, answer: &Value) -> String {
        table(answer)
    }
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
