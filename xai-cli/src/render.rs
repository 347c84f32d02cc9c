//! Turning admin API JSON into text for people: tables, key/value lists, and the formatting of single values.
//!
//! Rendering is lenient: a field the server did not send shows as `-`, so a newer server never breaks an older CLI.

use comfy_table::{CellAlignment, ContentArrangement, Table, TableStyle};
use serde_json::Value;

/// What stands for an absent or `null` value.
pub const DASH: &str = "-";

/// Header underlined, no other lines: reads well in a terminal and pastes cleanly.
const STYLE: TableStyle = TableStyle::new().header_separator(comfy_table::LineStyle::none().fill('-').junction(' '));

/// The width tables wrap to: `$COLUMNS` when set (shells export it), else 100.
fn width() -> u16 {
    if cfg!(test) {
        return 100; // tests render the same whatever the terminal running them
    }
    std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).filter(|w| *w >= 40).unwrap_or(100)
}

/// A table with a header row.
pub fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut t = Table::new();
    t.load_style(STYLE).set_content_arrangement(ContentArrangement::Dynamic).set_width(width()).set_header(header);
    // Columns are set apart by the (blank) delimiter and one space; no margin on the left.
    for c in t.column_iter_mut() {
        c.set_padding((0, 1));
    }
    t
}

/// Right-aligns the given columns (numbers, money).
pub fn align_right(t: &mut Table, columns: &[usize]) {
    for &i in columns {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// Keeps the given columns on one line (times, numbers): when the table is too wide, the other columns wrap.
pub fn no_wrap(t: &mut Table, columns: &[usize]) {
    for &i in columns {
        if let Some(c) = t.column_mut(i) {
            c.set_constraint(comfy_table::ColumnConstraint::ContentWidth);
        }
    }
}

/// A table as text, without trailing blanks.
pub fn finish(t: &Table) -> String {
    t.lines().map(|l| l.trim_end().to_owned()).collect::<Vec<_>>().join("\n")
}

/// A two-column list of fields and values.
pub fn fields<'a>(rows: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut t = Table::new();
    t.load_style(TableStyle::new()).set_content_arrangement(ContentArrangement::Dynamic).set_width(width());
    for (name, value) in rows {
        t.add_row(vec![format!("{name}:"), value]);
    }
    for c in t.column_iter_mut() {
        c.set_padding((0, 1));
    }
    finish(&t)
}

/// One value as text: `null` is `-`, strings without quotes, lists joined with commas, objects as `k=v` pairs.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => DASH.into(),
        Value::String(s) if s.is_empty() => DASH.into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) if a.is_empty() => "(none)".into(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(", "),
        Value::Object(o) if o.is_empty() => DASH.into(),
        Value::Object(o) => o.iter().map(|(k, v)| format!("{k}={}", text(v))).collect::<Vec<_>>().join(", "),
    }
}

/// The field `name` of an object as text (`-` when absent).
pub fn field(v: &Value, name: &str) -> String {
    v.get(name).map_or_else(|| DASH.into(), text)
}

/// A mapper object (`{"gpt-3.5*": "gpt-4o-mini"}`) as ordered `glob → target` lines.
pub fn mapper(v: &Value) -> String {
    match v.as_object() {
        Some(o) if !o.is_empty() => o.iter().map(|(k, v)| format!("{k} → {}", text(v))).collect::<Vec<_>>().join("\n"),
        _ => DASH.into(),
    }
}

/// A list field of an object, treating absent / `null` as unrestricted.
pub fn list_or_any(v: &Value, name: &str) -> String {
    match v.get(name) {
        None | Some(Value::Null) => "(any)".into(),
        Some(x) => text(x),
    }
}

/// The array at `name` (empty when absent).
pub fn array<'a>(v: &'a Value, name: &str) -> &'a [Value] {
    v.get(name).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// An RFC 3339 time shortened for a table: `2026-11-25T21:01:39.123Z` → `2026-11-25 21:01:39Z`.
pub fn time(v: &Value) -> String {
    let Some(s) = v.as_str() else { return text(v) };
    let (head, zone) = match s.find(['Z', 'z', '+']).or_else(|| s.get(10..).and_then(|t| t.rfind('-').map(|i| i + 10)))
    {
        Some(i) if i > 10 => s.split_at(i),
        _ => (s, ""),
    };
    let head = head.split('.').next().unwrap_or(head).replacen('T', " ", 1);
    format!("{head}{}", zone.to_uppercase())
}

/// A UTC time in a narrow column: `2026-11-25T21:01:39.123Z` → `11-25 21:01:39` (other offsets as [`time`]).
pub fn short_time(v: &Value) -> String {
    match v.as_str() {
        Some(s) if s.len() >= 19 && (s.ends_with(['Z', 'z']) || s.ends_with("+00:00")) => {
            s.get(5..19).map_or_else(|| time(v), |t| t.replacen('T', " ", 1))
        }
        _ => time(v),
    }
}

/// A text progress bar of `used` out of `total`, e.g. `[####------] 40%`.
pub fn progress(used: f64, total: f64) -> String {
    if total.is_nan() || total <= 0.0 || !used.is_finite() {
        return DASH.into();
    }
    let ratio = (used / total).clamp(0.0, 1.0);
    let filled = (ratio * 10.0).round() as usize;
    format!("[{}{}] {:>3.0}%", "#".repeat(filled), "-".repeat(10 - filled), (used / total * 100.0).max(0.0))
}

/// A number from a JSON number or decimal string.
pub fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values() {
        assert_eq!(text(&json!(null)), "-");
        assert_eq!(text(&json!(["a", "b"])), "a, b");
        assert_eq!(text(&json!([])), "(none)");
        assert_eq!(text(&json!({"rpm": 10, "tpm": null})), "rpm=10, tpm=-");
        assert_eq!(text(&json!(true)), "yes");
        assert_eq!(mapper(&json!({"z*": "a", "a*": "z"})), "z* → a\na* → z", "order kept");
        assert_eq!(list_or_any(&json!({"allow_models": null}), "allow_models"), "(any)");
        assert_eq!(list_or_any(&json!({"allow_models": []}), "allow_models"), "(none)");
    }

    #[test]
    fn times() {
        assert_eq!(time(&json!("2026-11-25T21:01:39.123456Z")), "2026-11-25 21:01:39Z");
        assert_eq!(time(&json!("2026-11-25T21:01:39+02:00")), "2026-11-25 21:01:39+02:00");
        assert_eq!(time(&json!("2026-11-25T21:01:39.5-05:00")), "2026-11-25 21:01:39-05:00");
        assert_eq!(time(&json!("2026-11-25")), "2026-11-25");
        assert_eq!(time(&json!(null)), "-");
        assert_eq!(short_time(&json!("2026-11-25T21:01:39.123Z")), "11-25 21:01:39");
        assert_eq!(short_time(&json!("2026-11-25T21:01:39+00:00")), "11-25 21:01:39");
        assert_eq!(short_time(&json!("2026-11-25T21:01:39+02:00")), "2026-11-25 21:01:39+02:00");
    }

    #[test]
    fn bars() {
        assert_eq!(progress(2.5, 10.0), "[###-------]  25%");
        assert_eq!(progress(12.0, 10.0), "[##########] 120%");
        assert_eq!(progress(1.0, 0.0), "-");
    }

    #[test]
    fn tables_have_an_underlined_header() {
        let mut t = table(["id", "name"]);
        t.add_row(vec!["1", "acme"]);
        t.add_row(vec!["22", "acme/research"]);
        let out = finish(&t);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[0].contains("id") && lines[0].contains("name"));
        assert!(lines[1].trim_start().starts_with("--"));
        assert!(lines[3].contains("acme/research"));
    }
}
