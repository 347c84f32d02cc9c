//! `xai accounts`: the account tree, each account's policy and its effective bounds.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

use crate::policy::{self, PolicyFlags};
use crate::render::{self, DASH, field, text};
use crate::request::ApiRequest;

/// Manage accounts: the tree of organisations, teams and users that own virtual keys.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum AccountsCommand {
    /// List the accounts in your scope, sorted by path
    List,
    /// Show the accounts in your scope as a tree
    Tree,
    /// Show one account with its policy
    Get {
        /// Account id
        id: u64,
    },
    /// Create an account (without --parent: a new root, which needs the root admin token)
    Create(CreateArgs),
    /// Change an account: name, parent (move), role, status or policy
    Update(UpdateArgs),
    /// Disable an account: it and its whole subtree are refused from the next request on
    Disable {
        /// Account id
        id: u64,
    },
    /// Show the effective policy of an account: every bound and the account that set it
    Effective {
        /// Account id
        id: u64,
    },
}

/// What an account may do in the admin API.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Its keys may use the admin API on the subtree below it
    Owner,
    /// Its keys may use the admin API on the subtree below it
    Admin,
    /// Its keys may call the gateway, not the admin API
    Member,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }
}

/// Whether an account may be used.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Requests are served
    Active,
    /// Requests of the account and its subtree are refused
    Disabled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }
}

/// `xai accounts create`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct CreateArgs {
    /// Name of the new account (unique among its siblings)
    pub name: String,
    /// Parent account id; leave out to create a root account
    #[arg(long, value_name = "ID")]
    pub parent: Option<u64>,
    /// Role of the account's keys in the admin API [default on the server: member]
    #[arg(long, value_enum)]
    pub role: Option<Role>,
    /// Initial status [default on the server: active]
    #[arg(long, value_enum)]
    pub status: Option<Status>,
    #[command(flatten)]
    pub policy: PolicyFlags,
}

/// `xai accounts update`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct UpdateArgs {
    /// Account id
    pub id: u64,
    /// New name
    #[arg(long)]
    pub name: Option<String>,
    /// Move the account under another parent
    #[arg(long, value_name = "ID")]
    pub parent: Option<u64>,
    /// New role
    #[arg(long, value_enum)]
    pub role: Option<Role>,
    /// New status
    #[arg(long, value_enum)]
    pub status: Option<Status>,
    #[command(flatten)]
    pub policy: PolicyFlags,
}

impl AccountsCommand {
    /// The admin API call for this command.
    pub fn request(&self) -> Result<ApiRequest, String> {
        Ok(match self {
            Self::List | Self::Tree => ApiRequest::get("/accounts"),
            Self::Get { id } => ApiRequest::get(format_args!("/accounts/{id}")),
            Self::Create(a) => {
                let mut body = Map::new();
                body.insert("name".into(), json!(a.name));
                body.insert("parent".into(), json!(a.parent));
                if let Some(r) = a.role {
                    body.insert("role".into(), json!(r.as_str()));
                }
                if let Some(s) = a.status {
                    body.insert("status".into(), json!(s.as_str()));
                }
                a.policy.write_to(&mut body)?;
                ApiRequest::post("/accounts", Value::Object(body))
            }
            Self::Update(a) => {
                let mut body = Map::new();
                if let Some(n) = &a.name {
                    body.insert("name".into(), json!(n));
                }
                if let Some(p) = a.parent {
                    body.insert("parent".into(), json!(p));
                }
                if let Some(r) = a.role {
                    body.insert("role".into(), json!(r.as_str()));
                }
                if let Some(s) = a.status {
                    body.insert("status".into(), json!(s.as_str()));
                }
                a.policy.write_to(&mut body)?;
                if body.is_empty() {
                    return Err("nothing to update: give at least one of --name, --parent, --role, --status \
                                or a policy flag"
                        .into());
                }
                ApiRequest::patch(format_args!("/accounts/{}", a.id), Value::Object(body))
            }
            Self::Disable { id } => ApiRequest::delete(format_args!("/accounts/{id}")),
            Self::Effective { id } => ApiRequest::get(format_args!("/accounts/{id}/effective")),
        })
    }

    /// The answer as text.
    pub fn render(&self, answer: &Value) -> String {
        match self {
            Self::List => list(answer),
            Self::Tree => tree(answer),
            Self::Get { .. } => account(answer),
            Self::Create(_) => format!("Created account {}.\n\n{}", name(answer), account(answer)),
            Self::Update(_) => format!("Updated account {}.\n\n{}", name(answer), account(answer)),
            Self::Disable { .. } => format!(
                "Disabled account {}: it and its subtree are refused from the next request on.\n\n{}",
                name(answer),
                account(answer)
            ),
            Self::Effective { .. } => effective(answer),
        }
    }
}

/// `acme/research (#2)`.
pub fn name(account: &Value) -> String {
    format!("{} (#{})", field(account, "path"), field(account, "id"))
}

/// `GET /accounts` as a table.
pub fn list(answer: &Value) -> String {
    let accounts = render::array(answer, "accounts");
    if accounts.is_empty() {
        return "No accounts.".into();
    }
    let mut t = render::table(["id", "path", "role", "status", "balance", "rpm", "allow_models"]);
    for a in accounts {
        t.add_row(vec![
            field(a, "id"),
            field(a, "path"),
            field(a, "role"),
            field(a, "status"),
            field(a, "balance"),
            field(a, "rpm"),
            render::list_or_any(a, "allow_models"),
        ]);
    }
    render::align_right(&mut t, &[0, 4, 5]);
    render::finish(&t)
}

/// `GET /accounts` as an indented tree: children under their parent; an account whose parent is outside the
/// caller's scope is shown as a root.
pub fn tree(answer: &Value) -> String {
    let accounts = render::array(answer, "accounts");
    if accounts.is_empty() {
        return "No accounts.".into();
    }
    let id = |a: &Value| a.get("id").and_then(Value::as_u64);
    let parent = |a: &Value| a.get("parent").and_then(Value::as_u64);
    let known = |p: Option<u64>| p.is_some_and(|p| accounts.iter().any(|a| id(a) == Some(p)));
    let mut out = Vec::new();
    for root in accounts.iter().filter(|a| !known(parent(a))) {
        out.push(node_label(root, true));
        walk(accounts, id(root), "", &mut out);
    }
    out.join("\n")
}

fn walk(accounts: &[Value], parent: Option<u64>, indent: &str, out: &mut Vec<String>) {
    let Some(parent) = parent else { return };
    let children: Vec<&Value> =
        accounts.iter().filter(|a| a.get("parent").and_then(Value::as_u64) == Some(parent)).collect();
    for (i, child) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        out.push(format!("{indent}{}{}", if last { "└── " } else { "├── " }, node_label(child, false)));
        let deeper = format!("{indent}{}", if last { "    " } else { "│   " });
        walk(accounts, child.get("id").and_then(Value::as_u64), &deeper, out);
    }
}

fn node_label(a: &Value, root: bool) -> String {
    let label = if root { field(a, "path") } else { field(a, "name") };
    let mut notes = vec![format!("#{}", field(a, "id")), field(a, "role")];
    if let Some(b) = a.get("balance").filter(|b| !b.is_null()) {
        notes.push(format!("balance {}", text(b)));
    }
    if a.get("status").and_then(Value::as_str).is_some_and(|s| s != "active") {
        notes.push(field(a, "status").to_uppercase());
    }
    format!("{label}  ({})", notes.join(", "))
}

/// One account with its policy, as a field list.
pub fn account(a: &Value) -> String {
    let mut rows = vec![
        ("id", field(a, "id")),
        ("name", field(a, "name")),
        ("path", field(a, "path")),
        ("parent", a.get("parent").filter(|p| !p.is_null()).map_or_else(|| "(root)".into(), text)),
        ("role", field(a, "role")),
        ("status", field(a, "status")),
        ("balance", field(a, "balance")),
    ];
    rows.extend(policy::rows(a));
    render::fields(rows)
}

/// An effective-policy answer (of an account or a key) as a table: bound, value, set by.
pub fn effective(answer: &Value) -> String {
    let account = match answer.get("path").filter(|p| !p.is_null()) {
        Some(p) => format!("{} (#{})", text(p), field(answer, "account")),
        None => format!("account #{}", field(answer, "account")),
    };
    let whom = match answer.get("key").filter(|k| !k.is_null()) {
        Some(k) => format!("key #{} of {account}", text(k)),
        None => account,
    };
    let mut t = render::table(["bound", "value", "set by"]);
    if let Some(bounds) = answer.get("effective").and_then(Value::as_object) {
        for (bound, v) in bounds {
            match v {
                Value::Array(entries) if entries.is_empty() => {
                    t.add_row(vec![bound.clone(), "(any)".into(), DASH.into()]);
                }
                Value::Array(entries) => {
                    for e in entries {
                        t.add_row(vec![bound.clone(), field(e, "value"), set_by(e.get("set_by"))]);
                    }
                }
                Value::Object(_) if v.get("value").is_some() => {
                    t.add_row(vec![bound.clone(), field(v, "value"), set_by(v.get("set_by"))]);
                }
                Value::Null => {
                    t.add_row(vec![bound.clone(), "(no limit)".into(), DASH.into()]);
                }
                other => {
                    t.add_row(vec![bound.clone(), text(other), DASH.into()]);
                }
            }
        }
    }
    format!("Effective policy of {whom}:\n\n{}", render::finish(&t))
}

/// `{"account": 1, "path": "acme"}` → `acme (#1)`; a key's own bound → `key #7`.
fn set_by(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => DASH.into(),
        Some(s) if s.get("account").is_some_and(|a| !a.is_null()) => {
            format!("{} (#{})", field(s, "path"), field(s, "account"))
        }
        Some(s) if s.get("path").is_some() => field(s, "path"),
        Some(s) if s.get("key").is_some() => format!("key #{}", field(s, "key")),
        Some(s) => text(s),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use http::Method;

    use super::*;

    #[derive(Parser, Debug)]
    struct Probe {
        #[command(subcommand)]
        cmd: AccountsCommand,
    }

    fn req(argv: &[&str]) -> Result<ApiRequest, String> {
        let p = Probe::try_parse_from(std::iter::once("accounts").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        p.cmd.request()
    }

    fn sample() -> Value {
        json!({"accounts": [
            {"id": 1, "name": "acme", "path": "acme", "parent": null, "role": "owner", "status": "active",
             "balance": "1000", "allow_models": ["*"], "rpm": 600},
            {"id": 2, "name": "research", "path": "acme/research", "parent": 1, "role": "member",
             "status": "active", "balance": "250", "allow_models": ["gpt-4o*"], "rpm": 60},
            {"id": 4, "name": "vision", "path": "acme/research/vision", "parent": 2, "role": "member",
             "status": "disabled", "balance": "0", "allow_models": null, "rpm": null},
            {"id": 3, "name": "sales", "path": "acme/sales", "parent": 1, "role": "admin", "status": "active",
             "balance": "50", "allow_models": null, "rpm": null}
        ]})
    }

    #[test]
    fn reads_are_gets() {
        assert_eq!(req(&["list"]).unwrap(), ApiRequest::get("/accounts"));
        assert_eq!(req(&["tree"]).unwrap().path, "/admin/v1/accounts");
        assert_eq!(req(&["get", "7"]).unwrap().path, "/admin/v1/accounts/7");
        assert_eq!(req(&["effective", "7"]).unwrap().path, "/admin/v1/accounts/7/effective");
        let d = req(&["disable", "7"]).unwrap();
        assert_eq!((d.method, d.path.as_str(), d.body), (Method::DELETE, "/admin/v1/accounts/7", None));
        assert!(req(&["get", "acme"]).is_err(), "ids are numbers");
    }

    #[test]
    fn create_sends_name_parent_role_and_policy() {
        let r = req(&[
            "create",
            "research",
            "--parent",
            "1",
            "--role",
            "admin",
            "--rpm",
            "60",
            "--allow-models",
            "gpt-4o*",
        ])
        .unwrap();
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.path, "/admin/v1/accounts");
        assert_eq!(
            r.body.unwrap(),
            json!({"name": "research", "parent": 1, "role": "admin", "allow_models": ["gpt-4o*"], "rpm": 60})
        );
        let root = req(&["create", "acme"]).unwrap();
        assert_eq!(root.body.unwrap(), json!({"name": "acme", "parent": null}));
        assert!(req(&["create", "x", "--role", "god"]).is_err());
    }

    #[test]
    fn update_sends_only_what_changes() {
        let r = req(&["update", "2", "--status", "disabled", "--rpm", "none", "--daily-limit", "5.5", "--parent", "3"])
            .unwrap();
        assert_eq!(r.method, Method::PATCH);
        assert_eq!(r.path, "/admin/v1/accounts/2");
        assert_eq!(r.body.unwrap(), json!({"parent": 3, "status": "disabled", "rpm": null, "daily_limit": "5.5"}));
        assert!(req(&["update", "2"]).unwrap_err().contains("nothing to update"));
    }

    #[test]
    fn list_renders_a_table() {
        let out = list(&sample());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 6, "{out}");
        for h in ["id", "path", "role", "status", "balance", "rpm", "allow_models"] {
            assert!(lines[0].contains(h), "{out}");
        }
        assert!(lines[3].contains("acme/research") && lines[3].contains("gpt-4o*") && lines[3].contains("60"));
        assert!(lines[4].contains("acme/research/vision") && lines[4].contains("(any)"), "{out}");
        assert!(out.lines().all(|l| l.chars().count() <= 100));
        assert_eq!(list(&json!({"accounts": []})), "No accounts.");
    }

    #[test]
    fn tree_nests_children() {
        let out = tree(&sample());
        assert_eq!(
            out,
            "acme  (#1, owner, balance 1000)\n\
             ├── research  (#2, member, balance 250)\n\
             │   └── vision  (#4, member, balance 0, DISABLED)\n\
             └── sales  (#3, admin, balance 50)"
        );
        // An admin key sees its subtree only: the top of that subtree has a parent outside the list.
        let scoped = json!({"accounts": [sample()["accounts"][1], sample()["accounts"][2]]});
        assert!(tree(&scoped).starts_with("acme/research  (#2"), "{}", tree(&scoped));
    }

    #[test]
    fn account_shows_policy_in_order() {
        let a = json!({"id": 2, "name": "research", "path": "acme/research", "parent": 1, "role": "member",
            "status": "active", "balance": "250", "allow_models": ["gpt-4o*"],
            "model_mapper": {"gpt-3.5*": "gpt-4o-mini", "*": "gpt-4o"}, "level_mapper": {}, "level": 1,
            "allow_ips": null, "resources": ["chat"], "rpm": 60, "rpd": null, "tpm": null, "tpd": null,
            "daily_limit": "5", "model_limits": {"gpt-4o*": {"rpm": 10, "rpd": null}}});
        let out = account(&a);
        assert!(out.contains("path:") && out.contains("acme/research"));
        let m = out.find("gpt-3.5* → gpt-4o-mini").unwrap();
        assert!(m < out.find("* → gpt-4o").unwrap());
        assert!(out.contains("gpt-4o*: rpm=10"), "{out}");
        assert!(out.lines().any(|l| l.contains("allow_ips:") && l.contains("(any)")), "{out}");
    }

    #[test]
    fn effective_lists_each_bound_with_its_setter() {
        let e = json!({"account": 2, "path": "acme/research", "effective": {
            "allow_models": [
                {"value": ["gpt-4o*"], "set_by": {"account": 2, "path": "acme/research"}},
                {"value": ["*"], "set_by": {"account": 1, "path": "acme"}}],
            "allow_ips": [], "resources": [],
            "levels": {"value": [1, 2], "set_by": {"account": 1, "path": "acme"}},
            "rpm": {"value": 60, "set_by": {"account": 2, "path": "acme/research"}},
            "rpd": null, "tpm": null, "tpd": null, "daily_limit": null}});
        let out = effective(&e);
        assert!(out.starts_with("Effective policy of acme/research (#2):"), "{out}");
        let row = |needle: &str| out.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{out}"));
        assert!(row("gpt-4o*").contains("acme/research (#2)"));
        assert!(out.lines().any(|l| l.contains("allow_models") && l.contains("acme (#1)")), "{out}");
        assert!(row("levels").contains("1, 2") && row("levels").contains("acme (#1)"));
        assert!(row("rpd").contains("(no limit)"));
        assert!(row("allow_ips").contains("(any)"));
    }

    #[test]
    fn effective_of_a_key() {
        let e = json!({"key": 3, "account": 3, "effective": {
            "allow_models": [{"value": ["gpt-4o-mini"], "set_by": {"account": null, "path": "key xai-ha9He5"}}],
            "rpm": {"value": 5, "set_by": {"key": 3}}}});
        let out = effective(&e);
        assert!(out.starts_with("Effective policy of key #3 of account #3:"), "{out}");
        assert!(out.lines().any(|l| l.contains("gpt-4o-mini") && l.trim_end().ends_with("key xai-ha9He5")), "{out}");
        assert!(out.lines().any(|l| l.contains("rpm") && l.trim_end().ends_with("key #3")), "{out}");
    }
}
