//! The policy flags shared by `accounts create`, `accounts update` and `keys issue`, mapped 1:1 to the JSON fields
//! of the admin API. Every flag takes `none` to unset its field (sent as `null`).

use clap::Args;
use serde_json::{Map, Value, json};

use crate::args::{self, Amount, Setting};
use crate::render::{self, DASH, field, text};

/// Policy fields. A child's policy may only narrow its parent's: the server refuses a widening one (422) and names
/// the ancestor and the bound.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
#[command(next_help_heading = "Policy (each flag takes `none` to unset its field)")]
pub struct PolicyFlags {
    /// Models allowed, comma-separated globs, e.g. `gpt-4o*,claude-*` [json: allow_models]
    #[arg(long, value_name = "GLOBS", value_parser = |s: &str| Setting::parse_with(s, args::parse_list))]
    pub allow_models: Option<Setting<Vec<String>>>,

    /// Rewrite a model: GLOB=MODEL, repeatable, first match wins, e.g. 'gpt-3.5*=gpt-4o-mini' [json: model_mapper]
    #[arg(long = "model-map", value_name = "GLOB=MODEL",
          value_parser = |s: &str| Setting::parse_with(s, args::parse_model_rule))]
    pub model_map: Vec<Setting<(String, String)>>,

    /// Route models to a level: GLOB=LEVEL, repeatable, e.g. 'claude-*=2' [json: level_mapper]
    #[arg(long = "level-map", value_name = "GLOB=LEVEL",
          value_parser = |s: &str| Setting::parse_with(s, args::parse_level_rule))]
    pub level_map: Vec<Setting<(String, u64)>>,

    /// Default level (key pool tier) [json: level]
    #[arg(long, value_name = "N", value_parser = |s: &str| Setting::parse_with(s, args::parse_count))]
    pub level: Option<Setting<u64>>,

    /// Client IPs allowed, comma-separated CIDRs or addresses, e.g. `10.0.0.0/8` [json: allow_ips]
    #[arg(long, value_name = "CIDRS", value_parser = |s: &str| Setting::parse_with(s, args::parse_cidrs))]
    pub allow_ips: Option<Setting<Vec<String>>>,

    /// Endpoints allowed, comma-separated: chat, responses, messages, generate, count_tokens, models, embeddings
    /// [json: resources]
    #[arg(long, value_name = "LIST", value_parser = |s: &str| Setting::parse_with(s, args::parse_list))]
    pub resources: Option<Setting<Vec<String>>>,

    /// Requests per minute (this account and all below it) [json: rpm]
    #[arg(long, value_name = "N", value_parser = |s: &str| Setting::parse_with(s, args::parse_count))]
    pub rpm: Option<Setting<u64>>,

    /// Requests per day [json: rpd]
    #[arg(long, value_name = "N", value_parser = |s: &str| Setting::parse_with(s, args::parse_count))]
    pub rpd: Option<Setting<u64>>,

    /// Tokens per minute [json: tpm]
    #[arg(long, value_name = "N", value_parser = |s: &str| Setting::parse_with(s, args::parse_count))]
    pub tpm: Option<Setting<u64>>,

    /// Tokens per day [json: tpd]
    #[arg(long, value_name = "N", value_parser = |s: &str| Setting::parse_with(s, args::parse_count))]
    pub tpd: Option<Setting<u64>>,

    /// Credits per day, a decimal, e.g. 5.5 [json: daily_limit]
    #[arg(long, value_name = "CREDITS", value_parser = |s: &str| Setting::parse_with(s, Amount::parse))]
    pub daily_limit: Option<Setting<Amount>>,

    /// Limits for the models matching a glob: GLOB=BOUND:VALUE,..., repeatable, bounds rpm, rpd, tpm, tpd,
    /// daily_limit, e.g. 'gpt-4o*=rpm:10,daily_limit:5' [json: model_limits]
    #[arg(long = "model-limit", value_name = "GLOB=BOUNDS",
          value_parser = |s: &str| Setting::parse_with(s, args::parse_model_limit))]
    pub model_limit: Vec<Setting<(String, Map<String, Value>)>>,
}

impl PolicyFlags {
    /// Adds the given flags to a request body: absent flags are left out, `none` becomes `null`.
    pub fn write_to(&self, body: &mut Map<String, Value>) -> Result<(), String> {
        fn put<T>(body: &mut Map<String, Value>, name: &str, s: &Option<Setting<T>>, f: impl Fn(&T) -> Value) {
            match s {
                None => {}
                Some(Setting::Unset) => {
                    body.insert(name.into(), Value::Null);
                }
                Some(Setting::Set(v)) => {
                    body.insert(name.into(), f(v));
                }
            }
        }
        put(body, "allow_models", &self.allow_models, |v| json!(v));
        put(body, "model_mapper", &ordered("--model-map", &self.model_map)?, |rules| {
            Value::Object(rules.iter().map(|(g, m)| (g.clone(), json!(m))).collect())
        });
        put(body, "level_mapper", &ordered("--level-map", &self.level_map)?, |rules| {
            Value::Object(rules.iter().map(|(g, l)| (g.clone(), json!(l))).collect())
        });
        put(body, "level", &self.level, |v| json!(v));
        put(body, "allow_ips", &self.allow_ips, |v| json!(v));
        put(body, "resources", &self.resources, |v| json!(v));
        put(body, "rpm", &self.rpm, |v| json!(v));
        put(body, "rpd", &self.rpd, |v| json!(v));
        put(body, "tpm", &self.tpm, |v| json!(v));
        put(body, "tpd", &self.tpd, |v| json!(v));
        put(body, "daily_limit", &self.daily_limit, |v| json!(v.as_str()));
        put(body, "model_limits", &ordered("--model-limit", &self.model_limit)?, |rules| {
            Value::Object(rules.iter().map(|(g, b)| (g.clone(), Value::Object(b.clone()))).collect())
        });
        Ok(())
    }
}

/// The policy fields of an account or key answer, as (field, text) rows in the order of the contract.
pub fn rows(v: &Value) -> Vec<(&'static str, String)> {
    let limits = match v.get("model_limits").and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(glob, b)| {
                let set: Vec<String> = b
                    .as_object()
                    .map(|o| o.iter().filter(|(_, x)| !x.is_null()).map(|(k, x)| format!("{k}={}", text(x))).collect())
                    .unwrap_or_default();
                format!("{glob}: {}", if set.is_empty() { DASH.into() } else { set.join(", ") })
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => DASH.into(),
    };
    vec![
        ("allow_models", render::list_or_any(v, "allow_models")),
        ("model_mapper", render::mapper(v.get("model_mapper").unwrap_or(&Value::Null))),
        ("level_mapper", render::mapper(v.get("level_mapper").unwrap_or(&Value::Null))),
        ("level", field(v, "level")),
        ("allow_ips", render::list_or_any(v, "allow_ips")),
        ("resources", render::list_or_any(v, "resources")),
        ("rpm", field(v, "rpm")),
        ("rpd", field(v, "rpd")),
        ("tpm", field(v, "tpm")),
        ("tpd", field(v, "tpd")),
        ("daily_limit", field(v, "daily_limit")),
        ("model_limits", limits),
    ]
}

/// Ordered `(glob, value)` rules, as a mapper object keeps them.
type Rules<T> = Vec<(String, T)>;

/// Folds a repeatable rule flag into one setting: no occurrence → absent, `none` alone → unset, else the rules in
/// the order given (a glob given twice is refused: which one should win would be a guess).
fn ordered<T: Clone + PartialEq>(
    flag: &str,
    items: &[Setting<(String, T)>],
) -> Result<Option<Setting<Rules<T>>>, String> {
    if items.is_empty() {
        return Ok(None);
    }
    if items.contains(&Setting::Unset) {
        if items.len() > 1 {
            return Err(format!("{flag} none unsets all rules and cannot be combined with other {flag} rules"));
        }
        return Ok(Some(Setting::Unset));
    }
    let mut rules: Rules<T> = Vec::with_capacity(items.len());
    for item in items {
        if let Setting::Set((glob, value)) = item {
            if rules.iter().any(|(g, _)| g == glob) {
                return Err(format!("{flag}: the glob {glob:?} is given twice"));
            }
            rules.push((glob.clone(), value.clone()));
        }
    }
    Ok(Some(Setting::Set(rules)))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Probe {
        #[command(flatten)]
        policy: PolicyFlags,
    }

    fn body(argv: &[&str]) -> Result<Value, String> {
        let p =
            Probe::try_parse_from(std::iter::once("probe").chain(argv.iter().copied())).map_err(|e| e.to_string())?;
        let mut m = Map::new();
        p.policy.write_to(&mut m)?;
        Ok(Value::Object(m))
    }

    #[test]
    fn every_flag_maps_to_its_field() {
        let b = body(&[
            "--allow-models=gpt-4o*,claude-*",
            "--model-map=gpt-3.5*=gpt-4o-mini",
            "--model-map=*=gpt-4o",
            "--level-map=claude-*=2",
            "--level=1",
            "--allow-ips=10.0.0.0/8",
            "--resources=chat,messages",
            "--rpm=60",
            "--rpd=1000",
            "--tpm=90000",
            "--tpd=1000000",
            "--daily-limit=5.5",
            "--model-limit=gpt-4o*=rpm:10",
        ])
        .unwrap();
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"allow_models":["gpt-4o*","claude-*"],"model_mapper":{"gpt-3.5*":"gpt-4o-mini","*":"gpt-4o"},"#
                .to_owned()
                + r#""level_mapper":{"claude-*":2},"level":1,"allow_ips":["10.0.0.0/8"],"resources":["chat","messages"],"#
                + r#""rpm":60,"rpd":1000,"tpm":90000,"tpd":1000000,"daily_limit":"5.5","model_limits":{"gpt-4o*":{"rpm":10}}}"#
        );
    }

    #[test]
    fn mapper_order_is_the_order_given() {
        let b = body(&["--model-map", "z*=a", "--model-map", "a*=z", "--model-map", "m*=m"]).unwrap();
        let keys: Vec<&String> = b["model_mapper"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["z*", "a*", "m*"]);
    }

    #[test]
    fn none_unsets_and_absent_is_left_out() {
        let b =
            body(&["--rpm", "none", "--model-map", "none", "--allow-models", "none", "--daily-limit", "none"]).unwrap();
        assert_eq!(b, json!({"allow_models": null, "model_mapper": null, "rpm": null, "daily_limit": null}));
        assert_eq!(body(&[]).unwrap(), json!({}));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        assert!(body(&["--rpm", "fast"]).unwrap_err().contains("not a whole number"));
        assert!(body(&["--daily-limit", "1.1234567"]).unwrap_err().contains("6 decimals"));
        assert!(body(&["--model-map", "gpt-4"]).unwrap_err().contains("GLOB=MODEL"));
        assert!(body(&["--allow-ips", "10.0.0.300"]).unwrap_err().contains("not an IP address"));
        assert!(body(&["--model-map", "none", "--model-map", "a=b"]).unwrap_err().contains("cannot be combined"));
        assert!(body(&["--level-map", "a=1", "--level-map", "a=2"]).unwrap_err().contains("given twice"));
    }
}
