//! `xai pricing`: the price table (credits per million tokens; per unit for images and search calls).

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use crate::render::{self, field};
use crate::request::ApiRequest;

/// Show and change the price table.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum PricingCommand {
    /// List every price and what happens to models without one
    List,
    /// Set the price of a model or pattern (`gpt-4o`, `claude-*`); root only; overrides the config file's
    Set(SetArgs),
    /// Remove a price set through the API (the config file's price, if any, applies again); root only
    Delete {
        /// Model or pattern
        model: String,
    },
}

/// `xai pricing set`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct SetArgs {
    /// Model or pattern
    pub model: String,
    /// Input, credits per million tokens
    #[arg(long)]
    pub input: String,
    /// Output, credits per million tokens
    #[arg(long)]
    pub output: String,
    /// Cached input read (default: the input price)
    #[arg(long)]
    pub cached_input: Option<String>,
    /// Cache write (default: the input price)
    #[arg(long)]
    pub cache_write: Option<String>,
    /// Reasoning (default: the output price)
    #[arg(long)]
    pub reasoning: Option<String>,
    /// Per image
    #[arg(long)]
    pub per_image: Option<String>,
    /// Per search call
    #[arg(long)]
    pub per_search: Option<String>,
}

/// A model name as one path segment (`/` and `%` escaped; `*` is fine in a path).
fn segment(model: &str) -> String {
    model.replace('%', "%25").replace('/', "%2F").replace(' ', "%20").replace('?', "%3F").replace('#', "%23")
}

impl PricingCommand {
    /// The admin API call for this command.
    pub fn request(&self) -> Result<ApiRequest, String> {
        Ok(match self {
            Self::List => ApiRequest::get("/pricing"),
            Self::Set(a) => {
                let mut body = Map::new();
                body.insert("input".into(), json!(a.input));
                body.insert("output".into(), json!(a.output));
                for (name, v) in [
                    ("cached_input", &a.cached_input),
                    ("cache_write", &a.cache_write),
                    ("reasoning", &a.reasoning),
                    ("per_image", &a.per_image),
                    ("per_search", &a.per_search),
                ] {
                    if let Some(v) = v {
                        body.insert(name.into(), json!(v));
                    }
                }
                ApiRequest::put(format_args!("/pricing/{}", segment(&a.model)), Value::Object(body))
            }
            Self::Delete { model } => ApiRequest::delete(format_args!("/pricing/{}", segment(model))),
        })
    }

    /// The answer as text.
    pub fn render(&self, answer: &Value) -> String {
        match self {
            Self::List => list(answer),
            Self::Set(_) | Self::Delete { .. } => match answer.get("price") {
                Some(Value::Null) | None => format!("{}: no price", field(answer, "model")),
                Some(p) => {
                    let mut one = Map::new();
                    one.insert(field(answer, "model"), p.clone());
                    list(&json!({ "prices": one }))
                }
            },
        }
    }
}

/// `GET /pricing` as a table.
pub fn list(answer: &Value) -> String {
    let Some(prices) = answer.get("prices").and_then(Value::as_object).filter(|p| !p.is_empty()) else {
        return "No prices.".into();
    };
    let mut t = render::table(["model", "input", "output", "cached in", "cache write", "reasoning", "image", "search"]);
    for (model, p) in prices {
        let or = |k: &str, d: &str| p.get(k).map_or_else(|| format!("({})", field(p, d)), render::text);
        t.add_row(vec![
            model.clone(),
            field(p, "input"),
            field(p, "output"),
            or("cached_input", "input"),
            or("cache_write", "input"),
            or("reasoning", "output"),
            field(p, "per_image"),
            field(p, "per_search"),
        ]);
    }
    render::align_right(&mut t, &[1, 2, 3, 4, 5, 6, 7]);
    let mut out = render::finish(&t);
    if let Some(u) = answer.get("unpriced").and_then(Value::as_str) {
        out.push_str(&format!("\nModels without a price: {u}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn set_sends_only_what_was_given_and_escapes_the_model() {
        let set = PricingCommand::Set(SetArgs {
            model: "vendor/model x".into(),
            input: "2.5".into(),
            output: "10".into(),
            cached_input: Some("1.25".into()),
            cache_write: None,
            reasoning: None,
            per_image: None,
            per_search: None,
        });
        let r = set.request().unwrap();
        assert_eq!(r.method, Method::PUT);
        assert_eq!(r.path, "/admin/v1/pricing/vendor%2Fmodel%20x");
        assert_eq!(r.body, Some(json!({"input": "2.5", "output": "10", "cached_input": "1.25"})));
        let d = PricingCommand::Delete { model: "claude-*".into() }.request().unwrap();
        assert_eq!((d.method, d.path.as_str()), (Method::DELETE, "/admin/v1/pricing/claude-*"));
    }

    #[test]
    fn the_table_shows_defaults_in_parentheses() {
        let answer = json!({"unpriced": "refuse", "prices": {"gpt-4o": {"input": "2.5", "output": "10", "per_image": "0", "per_search": "0"}}});
        let text = list(&answer);
        assert!(text.contains("gpt-4o") && text.contains("(2.5)") && text.contains("(10)"), "{text}");
        assert!(text.ends_with("Models without a price: refuse"), "{text}");
        assert_eq!(list(&json!({"prices": {}})), "No prices.");
    }
}
