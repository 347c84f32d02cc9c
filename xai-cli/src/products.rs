//! `xai products`: subscriptions, add-ons and prepaid cards, and today's view of an account's quota.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::args::{self, Amount};
use crate::render::{self, DASH, field, number};
use crate::request::ApiRequest;

/// Sell products to an account and see what it has left today.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum ProductsCommand {
    /// List an account's products
    List {
        /// Account id
        account: u64,
    },
    /// Add a product to an account: subscription, addon or card
    Add(AddArgs),
    /// Today's quota of an account: each source with its progress, requests, tokens and limits
    Today {
        /// Account id
        account: u64,
    },
}

/// `xai products add ACCOUNT KIND …`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct AddArgs {
    /// Account id
    pub account: u64,
    #[command(subcommand)]
    pub product: Product,
}

/// A product to add. Spending order: today's subscription allowance, add-ons (earliest end first), cards
/// (earliest expiry first), then the allocated balance.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Product {
    /// A daily allowance that resets each day between two dates
    Subscription {
        /// Credits per day
        #[arg(long, value_name = "CREDITS", value_parser = Amount::parse_positive)]
        daily_allowance: Amount,
        /// First day, YYYY-MM-DD
        #[arg(long, value_name = "DATE", value_parser = args::parse_date)]
        starts: String,
        /// Last day, YYYY-MM-DD
        #[arg(long, value_name = "DATE", value_parser = args::parse_date)]
        ends: String,
    },
    /// Extra credits usable between two dates
    Addon {
        /// Credits
        #[arg(long, value_name = "CREDITS", value_parser = Amount::parse_positive)]
        credits: Amount,
        /// First day, YYYY-MM-DD
        #[arg(long, value_name = "DATE", value_parser = args::parse_date)]
        starts: String,
        /// Last day, YYYY-MM-DD
        #[arg(long, value_name = "DATE", value_parser = args::parse_date)]
        ends: String,
    },
    /// Prepaid pay-as-you-go credits, optionally expiring
    Card {
        /// Credits
        #[arg(long, value_name = "CREDITS", value_parser = Amount::parse_positive)]
        credits: Amount,
        /// Expiry date, YYYY-MM-DD (never when left out)
        #[arg(long, value_name = "DATE", value_parser = args::parse_date)]
        expires: Option<String>,
    },
}

impl ProductsCommand {
    /// The admin API call for this command.
    pub fn request(&self) -> Result<ApiRequest, String> {
        Ok(match self {
            Self::List { account } => ApiRequest::get(format_args!("/accounts/{account}/products")),
            Self::Today { account } => ApiRequest::get(format_args!("/accounts/{account}/today")),
            Self::Add(AddArgs { account, product }) => {
                let window = |starts: &str, ends: &str| {
                    // Dates as YYYY-MM-DD compare as strings.
                    if ends < starts { Err(format!("--ends {ends} is before --starts {starts}")) } else { Ok(()) }
                };
                let body = match product {
                    Product::Subscription { daily_allowance, starts, ends } => {
                        window(starts, ends)?;
                        json!({"kind": "subscription", "daily_allowance": daily_allowance.as_str(),
                               "starts": starts, "ends": ends})
                    }
                    Product::Addon { credits, starts, ends } => {
                        window(starts, ends)?;
                        json!({"kind": "addon", "credits": credits.as_str(), "starts": starts, "ends": ends})
                    }
                    Product::Card { credits, expires: Some(d) } => {
                        json!({"kind": "card", "credits": credits.as_str(), "expires": d})
                    }
                    Product::Card { credits, expires: None } => json!({"kind": "card", "credits": credits.as_str()}),
                };
                ApiRequest::post(format_args!("/accounts/{account}/products"), body)
            }
        })
    }

    /// The answer as text.
    pub fn render(&self, answer: &Value) -> String {
        match self {
            Self::List { .. } => list(answer),
            Self::Add(a) => format!(
                "Added product #{} to account #{}.\n\n{}",
                field(answer, "id"),
                a.account,
                list(&json!({ "products": [answer] }))
            ),
            Self::Today { .. } => today(answer),
        }
    }
}

const HEADER: [&str; 6] = ["id", "kind", "amount", "remaining", "valid", "active"];

fn row(p: &Value) -> Vec<String> {
    let amount = match p.get("daily_allowance").filter(|v| !v.is_null()) {
        Some(d) => format!("{}/day", render::text(d)),
        None => field(p, "credits"),
    };
    let has = |k: &str| p.get(k).is_some_and(|v| !v.is_null());
    let valid = if has("starts") || has("ends") {
        format!("{} → {}", field(p, "starts"), field(p, "ends"))
    } else if has("expires") {
        format!("until {}", field(p, "expires"))
    } else {
        "no expiry".into()
    };
    vec![field(p, "id"), field(p, "kind"), amount, field(p, "remaining"), valid, field(p, "active")]
}

/// `GET /accounts/{id}/products` as a table.
pub fn list(answer: &Value) -> String {
    let products = render::array(answer, "products");
    if products.is_empty() {
        return "No products.".into();
    }
    let mut t = render::table(HEADER);
    for p in products {
        t.add_row(row(p));
    }
    render::align_right(&mut t, &[0, 2, 3]);
    render::finish(&t)
}

/// `GET /accounts/{id}/today`: sources in spending order with progress, the day's traffic, and the limits.
pub fn today(answer: &Value) -> String {
    let mut out =
        vec![format!("{} (#{}) on {}", field(answer, "path"), field(answer, "account"), field(answer, "date"))];

    let sources = render::array(answer, "sources");
    if sources.is_empty() {
        out.push("No credit sources.".into());
    } else {
        let mut t = render::table(["source", "id", "allowance", "used", "remaining", "progress"]);
        for s in sources {
            let used = number(s.get("used"));
            let allowance = number(s.get("allowance"));
            let progress = match (used, allowance) {
                (Some(u), Some(a)) => render::progress(u, a),
                _ => String::new(),
            };
            t.add_row(vec![
                field(s, "kind"),
                field(s, "id"),
                field(s, "allowance"),
                field(s, "used"),
                field(s, "remaining"),
                progress,
            ]);
        }
        render::align_right(&mut t, &[1, 2, 3, 4]);
        out.push(render::finish(&t));
    }

    out.push(format!(
        "requests {} · prompt tokens {} · completion tokens {} · spent {}",
        field(answer, "requests"),
        field(answer, "prompt_tokens"),
        field(answer, "completion_tokens"),
        field(answer, "spent")
    ));

    if let Some(limits) = answer.get("limits").and_then(Value::as_object) {
        let mut t = render::table(["bound", "used", "limit", "progress", "set by"]);
        for (bound, l) in limits {
            if l.is_null() {
                t.add_row(vec![bound.clone(), DASH.into(), "(no limit)".into(), String::new(), DASH.into()]);
                continue;
            }
            let progress = match (number(l.get("used")), number(l.get("limit"))) {
                (Some(u), Some(m)) => render::progress(u, m),
                _ => String::new(),
            };
            t.add_row(vec![bound.clone(), field(l, "used"), field(l, "limit"), progress, field(l, "set_by")]);
        }
        render::align_right(&mut t, &[1, 2]);
        out.push(render::finish(&t));
    }
    out.join("\n\n")
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use http::Method;

    use super::*;

    #[derive(Parser, Debug)]
    struct Probe {
        #[command(subcommand)]
        cmd: ProductsCommand,
    }

    fn req(argv: &[&str]) -> Result<ApiRequest, String> {
        let p = Probe::try_parse_from(std::iter::once("products").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        p.cmd.request()
    }

    #[test]
    fn gets() {
        assert_eq!(req(&["list", "2"]).unwrap(), ApiRequest::get("/accounts/2/products"));
        assert_eq!(req(&["today", "2"]).unwrap(), ApiRequest::get("/accounts/2/today"));
    }

    #[test]
    fn add_each_kind() {
        let r = req(&[
            "add",
            "2",
            "subscription",
            "--daily-allowance",
            "10",
            "--starts",
            "2026-11-01",
            "--ends",
            "2026-12-01",
        ])
        .unwrap();
        assert_eq!((r.method.clone(), r.path.as_str()), (Method::POST, "/admin/v1/accounts/2/products"));
        assert_eq!(
            r.body.unwrap(),
            json!({"kind": "subscription", "daily_allowance": "10", "starts": "2026-11-01", "ends": "2026-12-01"})
        );
        let r =
            req(&["add", "2", "addon", "--credits", "50", "--starts", "2026-11-01", "--ends", "2026-11-30"]).unwrap();
        assert_eq!(
            r.body.unwrap(),
            json!({"kind": "addon", "credits": "50", "starts": "2026-11-01", "ends": "2026-11-30"})
        );
        let r = req(&["add", "2", "card", "--credits", "100", "--expires", "2027-01-01"]).unwrap();
        assert_eq!(r.body.unwrap(), json!({"kind": "card", "credits": "100", "expires": "2027-01-01"}));
        let r = req(&["add", "2", "card", "--credits", "100"]).unwrap();
        assert_eq!(r.body.unwrap(), json!({"kind": "card", "credits": "100"}));
    }

    #[test]
    fn add_checks_locally() {
        assert!(req(&["add", "2", "card"]).is_err(), "--credits is required");
        assert!(req(&["add", "2", "card", "--credits", "-1"]).is_err());
        assert!(req(&["add", "2", "card", "--credits", "5", "--expires", "2027-02-30"]).is_err());
        let e = req(&["add", "2", "addon", "--credits", "5", "--starts", "2026-12-01", "--ends", "2026-11-01"]);
        assert!(e.unwrap_err().contains("before --starts"));
    }

    #[test]
    fn list_table() {
        let out = list(&json!({"products": [
            {"id": 1, "kind": "subscription", "daily_allowance": "10", "remaining": "7.5",
             "starts": "2026-11-01", "ends": "2026-12-01", "active": true},
            {"id": 3, "kind": "card", "credits": "100", "remaining": "100", "expires": null, "active": true}]}));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[2].contains("10/day") && lines[2].contains("2026-11-01 → 2026-12-01"), "{out}");
        assert!(lines[3].contains("no expiry") && lines[3].contains("yes"), "{out}");
    }

    #[test]
    fn today_view() {
        let t = json!({"account": 2, "path": "acme/research", "date": "2026-11-25",
            "sources": [{"kind": "subscription", "id": 1, "allowance": "10", "used": "2.5", "remaining": "7.5"},
                        {"kind": "addon", "id": 2, "remaining": "50"}, {"kind": "card", "id": 3, "remaining": "100"},
                        {"kind": "balance", "remaining": "250"}],
            "requests": 12, "prompt_tokens": 1200, "completion_tokens": 300, "spent": "2.5",
            "limits": {"rpm": {"limit": 60, "used": 3, "set_by": "acme/research"}, "rpd": null, "tpm": null,
                       "tpd": null, "daily_limit": null}});
        let out = today(&t);
        assert!(out.starts_with("acme/research (#2) on 2026-11-25\n"), "{out}");
        let line = |needle: &str| out.lines().find(|l| l.trim_start().starts_with(needle)).unwrap();
        assert!(line("subscription").contains("[###-------]  25%"), "{out}");
        assert!(line("balance").contains("250"));
        assert!(out.contains("requests 12 · prompt tokens 1200 · completion tokens 300 · spent 2.5"));
        assert!(line("rpm").contains("[#---------]   5%") && line("rpm").contains("acme/research"), "{out}");
        assert!(line("daily_limit").contains("(no limit)"));
    }
}
