//! `xai keys`: virtual keys, the credentials clients send to the gateway.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use crate::accounts;
use crate::args;
use crate::policy::{self, PolicyFlags};
use crate::render::{self, field};
use crate::request::ApiRequest;

/// Manage virtual keys: issue (shown once), list (prefixes only), revoke.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum KeysCommand {
    /// List the keys of an account (prefixes only: the keys themselves are never stored)
    List {
        /// Account id
        account: u64,
    },
    /// Show one key
    Get {
        /// Key id
        key_id: u64,
    },
    /// Issue a key for an account; the key is printed once and cannot be shown again
    Issue(Box<IssueArgs>),
    /// Revoke a key: refused from the next request on
    Revoke {
        /// Key id
        key_id: u64,
    },
    /// Show the effective policy of a key (its account's path and its own narrowing)
    Effective {
        /// Key id
        key_id: u64,
    },
}

/// `xai keys issue`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct IssueArgs {
    /// Account id the key belongs to
    pub account: u64,
    /// A name to recognise the key by (e.g. the service using it)
    #[arg(long)]
    pub name: Option<String>,
    /// Expiry, RFC 3339 (2027-01-01T00:00:00Z) or a date (midnight UTC)
    #[arg(long, value_name = "TIME", value_parser = args::parse_timestamp)]
    pub expires: Option<String>,
    #[command(flatten)]
    pub policy: PolicyFlags,
}

impl KeysCommand {
    /// The admin API call for this command.
    pub fn request(&self) -> Result<ApiRequest, String> {
        Ok(match self {
            Self::List { account } => ApiRequest::get(format_args!("/accounts/{account}/keys")),
            Self::Get { key_id } => ApiRequest::get(format_args!("/keys/{key_id}")),
            Self::Issue(a) => {
                let mut body = Map::new();
                if let Some(n) = &a.name {
                    body.insert("name".into(), json!(n));
                }
                if let Some(e) = &a.expires {
                    body.insert("expires_at".into(), json!(e));
                }
                a.policy.write_to(&mut body)?;
                ApiRequest::post(format_args!("/accounts/{}/keys", a.account), Value::Object(body))
            }
            Self::Revoke { key_id } => ApiRequest::delete(format_args!("/keys/{key_id}")),
            Self::Effective { key_id } => ApiRequest::get(format_args!("/keys/{key_id}/effective")),
        })
    }

    /// The answer as text.
    pub fn render(&self, answer: &Value) -> String {
        match self {
            Self::List { .. } => list(answer),
            Self::Get { .. } => key(answer),
            Self::Issue(_) => issued(answer),
            Self::Revoke { .. } => format!(
                "Revoked key #{} ({}): refused from the next request on.\n\n{}",
                field(answer, "id"),
                field(answer, "prefix"),
                key(answer)
            ),
            Self::Effective { .. } => accounts::effective(answer),
        }
    }
}

/// `GET /accounts/{id}/keys` as a table.
pub fn list(answer: &Value) -> String {
    let keys = render::array(answer, "keys");
    if keys.is_empty() {
        return "No keys.".into();
    }
    let mut t = render::table(["id", "prefix", "name", "status", "expires", "created"]);
    for k in keys {
        t.add_row(vec![
            field(k, "id"),
            prefix(k),
            field(k, "name"),
            field(k, "status"),
            k.get("expires_at").filter(|e| !e.is_null()).map_or_else(|| "never".into(), render::time),
            render::time(k.get("created_at").unwrap_or(&Value::Null)),
        ]);
    }
    render::align_right(&mut t, &[0]);
    render::no_wrap(&mut t, &[0, 1, 4, 5]);
    render::finish(&t)
}

/// `xai-AbC123…`: the prefix, marked as the start of something longer.
fn prefix(k: &Value) -> String {
    let p = field(k, "prefix");
    if p.ends_with('…') { p } else { format!("{p}…") }
}

/// One key (never the key itself) with its own policy.
pub fn key(k: &Value) -> String {
    let mut rows = vec![
        ("id", field(k, "id")),
        ("prefix", prefix(k)),
        ("account", field(k, "account")),
        ("name", field(k, "name")),
        ("status", field(k, "status")),
        ("expires", k.get("expires_at").filter(|e| !e.is_null()).map_or_else(|| "never".into(), render::time)),
        ("created", render::time(k.get("created_at").unwrap_or(&Value::Null))),
    ];
    rows.extend(policy::rows(k));
    render::fields(rows)
}

/// The answer of `POST /accounts/{id}/keys`: the key, once, set apart so it is hard to miss.
pub fn issued(k: &Value) -> String {
    let secret = k.get("key").and_then(Value::as_str).unwrap_or("(the server sent no key)");
    let name = k.get("name").and_then(Value::as_str).map(|n| format!(" {n:?}")).unwrap_or_default();
    let expires = k.get("expires_at").filter(|e| !e.is_null()).map_or_else(|| "never".into(), render::time);
    format!(
        "Issued key #{id}{name} for account #{account} (expires: {expires}).\n\n    {secret}\n\n\
         WARNING: copy this key now. It is shown only this once: the server keeps a digest, not the key.\n\
         Lost keys cannot be recovered; revoke them with `xai keys revoke {id}` and issue a new one.",
        id = field(k, "id"),
        account = field(k, "account"),
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use http::Method;

    use super::*;

    #[derive(Parser, Debug)]
    struct Probe {
        #[command(subcommand)]
        cmd: KeysCommand,
    }

    fn req(argv: &[&str]) -> Result<ApiRequest, String> {
        let p =
            Probe::try_parse_from(std::iter::once("keys").chain(argv.iter().copied())).map_err(|e| e.to_string())?;
        p.cmd.request()
    }

    #[test]
    fn paths() {
        assert_eq!(req(&["list", "2"]).unwrap(), ApiRequest::get("/accounts/2/keys"));
        assert_eq!(req(&["get", "7"]).unwrap(), ApiRequest::get("/keys/7"));
        assert_eq!(req(&["revoke", "7"]).unwrap(), ApiRequest::delete("/keys/7"));
        assert_eq!(req(&["effective", "7"]).unwrap(), ApiRequest::get("/keys/7/effective"));
    }

    #[test]
    fn issue_sends_name_expiry_and_policy() {
        let r = req(&[
            "issue",
            "2",
            "--name",
            "ci",
            "--expires",
            "2027-01-01",
            "--allow-models",
            "gpt-4o-mini",
            "--rpm",
            "10",
        ])
        .unwrap();
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.path, "/admin/v1/accounts/2/keys");
        assert_eq!(
            r.body.unwrap(),
            json!({"name": "ci", "expires_at": "2027-01-01T00:00:00Z", "allow_models": ["gpt-4o-mini"], "rpm": 10})
        );
        assert_eq!(req(&["issue", "2"]).unwrap().body.unwrap(), json!({}));
        assert!(req(&["issue", "2", "--expires", "soon"]).unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn issued_key_is_shown_with_a_warning() {
        let k = json!({"id": 7, "key": "xai-0123456789abcdefghijABCDEFGHIJklmnopqrstuvwxy", "prefix": "xai-012345",
            "account": 2, "name": "ci", "status": "active", "expires_at": null, "created_at": "2026-11-25T10:00:00Z"});
        let out = issued(&k);
        assert!(out.contains("\n    xai-0123456789abcdefghijABCDEFGHIJklmnopqrstuvwxy\n"), "{out}");
        assert!(out.contains("shown only this once"));
        assert!(out.starts_with("Issued key #7 \"ci\" for account #2 (expires: never)."));
    }

    #[test]
    fn list_shows_prefixes() {
        let out = list(&json!({"keys": [
            {"id": 7, "prefix": "xai-012345", "account": 2, "name": "ci", "status": "active",
             "expires_at": "2027-01-01T00:00:00Z", "created_at": "2026-11-25T10:00:00.5Z"},
            {"id": 8, "prefix": "xai-abcdef", "account": 2, "name": null, "status": "revoked",
             "expires_at": null, "created_at": "2026-11-25T11:00:00Z"}]}));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[2].contains("xai-012345…") && lines[2].contains("2027-01-01 00:00:00Z"), "{out}");
        assert!(lines[3].contains("revoked") && lines[3].contains("never"), "{out}");
        assert_eq!(list(&json!({"keys": []})), "No keys.");
    }
}
