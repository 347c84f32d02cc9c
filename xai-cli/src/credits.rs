//! `xai credits`: moving credits down the tree and back, and the ledger that records every movement.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use crate::accounts;
use crate::args::{self, Amount};
use crate::render::{self, DASH, field};
use crate::request::ApiRequest;

/// Move credits between an account and its parent; show the ledger.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum CreditsCommand {
    /// Give credits from the parent's balance to an account (on a root account: mint them; root token only)
    Allocate(Transfer),
    /// Take unspent credits from an account back to its parent (on a root account: burn them)
    Reclaim(Transfer),
    /// Show an account's balance and every movement touching it, oldest first
    Ledger {
        /// Account id
        account: u64,
    },
}

/// An amount moved between an account and its parent.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Account id
    pub account: u64,
    /// Credits, a positive decimal with at most 6 decimals, e.g. 100 or 2.5
    #[arg(value_parser = args::parse_transfer, allow_hyphen_values = true)]
    pub amount: Amount,
    /// A note kept in the ledger
    #[arg(long)]
    pub note: Option<String>,
}

impl CreditsCommand {
    /// The admin API call for this command.
    pub fn request(&self) -> Result<ApiRequest, String> {
        let transfer = |t: &Transfer, sign: &str| {
            let mut body = Map::new();
            body.insert("amount".into(), json!(format!("{sign}{}", t.amount)));
            if let Some(n) = &t.note {
                body.insert("note".into(), json!(n));
            }
            ApiRequest::post(format_args!("/accounts/{}/credits", t.account), Value::Object(body))
        };
        Ok(match self {
            Self::Allocate(t) => transfer(t, ""),
            Self::Reclaim(t) => transfer(t, "-"),
            Self::Ledger { account } => ApiRequest::get(format_args!("/accounts/{account}/credits")),
        })
    }

    /// The answer as text.
    pub fn render(&self, answer: &Value) -> String {
        match self {
            Self::Allocate(_) | Self::Reclaim(_) => moved(answer),
            Self::Ledger { account } => ledger(*account, answer),
        }
    }
}

/// The answer of `POST /accounts/{id}/credits`: what moved, and both balances after it.
pub fn moved(answer: &Value) -> String {
    let null = Value::Null;
    let account = answer.get("account").unwrap_or(&null);
    let parent = answer.get("parent").filter(|p| !p.is_null());
    let entry = answer.get("entry").unwrap_or(&null);
    let amount = field(entry, "amount");
    let amount = amount.trim_start_matches('-');
    let who = accounts::name(account);
    let what = match (entry.get("kind").and_then(Value::as_str), parent) {
        (Some("mint"), _) => format!("Minted {amount} credits on {who}."),
        (Some("burn"), _) => format!("Burned {amount} credits of {who}."),
        (Some("reclaim"), Some(p)) => format!("Reclaimed {amount} credits from {who} to {}.", accounts::name(p)),
        (_, Some(p)) => format!("Allocated {amount} credits from {} to {who}.", accounts::name(p)),
        (kind, None) => format!("Moved {amount} credits ({}) on {who}.", kind.unwrap_or(DASH)),
    };
    let mut balances = vec![format!("{}: balance {}", field(account, "path"), field(account, "balance"))];
    if let Some(p) = parent {
        balances.push(format!("{}: balance {}", field(p, "path"), field(p, "balance")));
    }
    format!("{what}\n{}", balances.join("\n"))
}

/// `GET /accounts/{id}/credits` as the balance and a table of movements, each signed from the account's side.
pub fn ledger(account: u64, answer: &Value) -> String {
    let head = format!("Balance of account #{account}: {}", field(answer, "balance"));
    let entries = render::array(answer, "ledger");
    if entries.is_empty() {
        return format!("{head}\nNo movements.");
    }
    let mut t = render::table(["id", "time", "kind", "from", "to", "change", "note"]);
    for e in entries {
        let amount = field(e, "amount");
        let to_us = e.get("to").and_then(Value::as_u64) == Some(account);
        let from_us = e.get("from").and_then(Value::as_u64) == Some(account);
        let zero = amount.bytes().all(|b| matches!(b, b'0' | b'.' | b'-'));
        let change = match (to_us, from_us, amount.strip_prefix('-')) {
            _ if zero => amount.trim_start_matches('-').to_owned(),
            (true, false, None) | (false, true, Some(_)) => format!("+{}", amount.trim_start_matches('-')),
            (false, true, None) | (true, false, Some(_)) => format!("-{}", amount.trim_start_matches('-')),
            _ => amount,
        };
        let end = |k: &str| e.get(k).and_then(Value::as_u64).map_or_else(|| DASH.into(), |id| format!("#{id}"));
        t.add_row(vec![
            field(e, "id"),
            render::time(e.get("time").unwrap_or(&Value::Null)),
            field(e, "kind"),
            end("from"),
            end("to"),
            change,
            field(e, "note"),
        ]);
    }
    render::align_right(&mut t, &[0, 5]);
    render::no_wrap(&mut t, &[0, 1, 5]);
    format!("{head}\n\n{}", render::finish(&t))
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use http::Method;

    use super::*;

    #[derive(Parser, Debug)]
    struct Probe {
        #[command(subcommand)]
        cmd: CreditsCommand,
    }

    fn req(argv: &[&str]) -> Result<ApiRequest, String> {
        let p =
            Probe::try_parse_from(std::iter::once("credits").chain(argv.iter().copied())).map_err(|e| e.to_string())?;
        p.cmd.request()
    }

    #[test]
    fn allocate_passes_the_amount_as_a_string() {
        let r = req(&["allocate", "2", "100.5", "--note", "Q4 budget"]).unwrap();
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.path, "/admin/v1/accounts/2/credits");
        assert_eq!(r.body.unwrap(), json!({"amount": "100.5", "note": "Q4 budget"}));
    }

    #[test]
    fn reclaim_negates() {
        let r = req(&["reclaim", "2", "40"]).unwrap();
        assert_eq!(r.body.unwrap(), json!({"amount": "-40"}));
    }

    #[test]
    fn negative_and_malformed_amounts_are_refused_locally() {
        let e = req(&["allocate", "2", "-5"]).unwrap_err();
        assert!(e.contains("must not be negative") && e.contains("xai credits reclaim"), "{e}");
        assert!(req(&["reclaim", "2", "-5"]).unwrap_err().contains("must not be negative"));
        assert!(req(&["allocate", "2", "0"]).unwrap_err().contains("greater than zero"));
        assert!(req(&["allocate", "2", "1.0000001"]).unwrap_err().contains("6 decimals"));
        assert!(req(&["allocate", "2", "1e6"]).unwrap_err().contains("not an amount"));
    }

    #[test]
    fn ledger_is_a_get() {
        assert_eq!(req(&["ledger", "2"]).unwrap(), ApiRequest::get("/accounts/2/credits"));
    }

    #[test]
    fn moved_says_what_and_both_balances() {
        let a = json!({
            "account": {"id": 2, "path": "acme/research", "balance": "350"},
            "parent": {"id": 1, "path": "acme", "balance": "650"},
            "entry": {"id": 9, "from": 1, "to": 2, "amount": "100", "kind": "allocate", "note": null}});
        assert_eq!(
            moved(&a),
            "Allocated 100 credits from acme (#1) to acme/research (#2).\n\
             acme/research: balance 350\nacme: balance 650"
        );
        let minted = json!({"account": {"id": 1, "path": "acme", "balance": "1000"}, "parent": null,
            "entry": {"from": null, "to": 1, "amount": "1000", "kind": "mint"}});
        assert_eq!(moved(&minted), "Minted 1000 credits on acme (#1).\nacme: balance 1000");
        let back = json!({"account": {"id": 2, "path": "acme/research", "balance": "310"},
            "parent": {"id": 1, "path": "acme", "balance": "690"},
            "entry": {"from": 2, "to": 1, "amount": "40", "kind": "reclaim"}});
        assert!(moved(&back).starts_with("Reclaimed 40 credits from acme/research (#2) to acme (#1)."));
    }

    #[test]
    fn ledger_signs_each_movement_from_the_accounts_side() {
        let l = json!({"balance": "310", "ledger": [
            {"id": 9, "time": "2026-11-25T10:00:00Z", "from": 1, "to": 2, "amount": "350", "kind": "allocate",
             "note": "Q4"},
            {"id": 12, "time": "2026-11-25T11:00:00Z", "from": 2, "to": 1, "amount": "40", "kind": "reclaim",
             "note": null},
            {"id": 13, "time": "2026-11-25T12:00:00Z", "from": 2, "to": null, "amount": "0.25", "kind": "spend",
             "note": null}]});
        let out = ledger(2, &l);
        assert!(out.starts_with("Balance of account #2: 310\n\n"), "{out}");
        let row = |id: &str| out.lines().find(|l| l.trim_start().starts_with(id)).unwrap();
        assert!(row("9 ").contains("+350") && row("9 ").contains("Q4"), "{out}");
        assert!(row("12 ").contains("-40") && row("12 ").contains("#2") && row("12 ").contains("#1"), "{out}");
        assert!(row("13 ").contains("-0.25"), "{out}");
        let unfunded = json!({"balance": "0", "ledger": [{"id": 4, "from": 2, "to": null, "amount": "0",
            "kind": "spend"}]});
        let out = ledger(2, &unfunded);
        assert!(out.lines().last().unwrap().contains(" 0 ") && !out.contains("-0"), "{out}");
        assert_eq!(ledger(2, &json!({"balance": "0", "ledger": []})), "Balance of account #2: 0\nNo movements.");
    }
}
