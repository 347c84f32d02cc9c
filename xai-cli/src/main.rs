//! `xai`: the admin CLI of the xai gateway, a client of its admin API (`/admin/v1`, see docs/admin-api.md).
//!
//! Each command is turned into a plain [`request::ApiRequest`] (method, path, JSON body) without I/O, sent by
//! [`client::AdminClient`], and its JSON answer rendered as a table for people or printed as is with `--json`.
//!
//! ```text
//! xai --server http://127.0.0.1:8080 --token admin-secret accounts tree
//! XAI_TOKEN=admin-secret xai credits allocate 2 100 --note "Q4"
//! xai explain --account 2 --model gpt-5 || echo "refused (exit $?)"
//! ```
#![forbid(unsafe_code)]

mod accounts;
mod args;
mod client;
mod credits;
mod explain;
mod keys;
mod policy;
mod pricing;
mod products;
mod providers;
mod render;
mod request;
mod usage;

use std::io::{self, Read, Write};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::Value;

use crate::accounts::AccountsCommand;
use crate::args::Secret;
use crate::client::{AdminClient, ServerUrl};
use crate::credits::CreditsCommand;
use crate::explain::ExplainArgs;
use crate::keys::KeysCommand;
use crate::pricing::PricingCommand;
use crate::products::ProductsCommand;
use crate::providers::ProvidersCommand;
use crate::request::ApiRequest;
use crate::usage::UsageArgs;

/// Exit code on success.
const OK: u8 = 0;
/// Exit code when the server refused the request (an API error).
const API_ERROR: u8 = 1;
/// Exit code on a usage error or when the server could not be reached.
const USAGE_OR_CONNECTION: u8 = 2;

const GLOBAL: &str = "Global options";

const AFTER_HELP: &str = "\
Exit codes:
  0  success (for `explain`: the request would be allowed)
  1  the server answered with an error, printed as `error: <message> (HTTP <status> <code>)`
  2  usage error, or the server could not be reached
  3  `explain` only: the request would be refused

Money is in credits, written as decimals (\"12.5\", at most 6 decimals) and sent as strings.
Every policy flag takes `none` to unset its field. Use --json for scripts: it prints the server's answer as is.";

/// Admin CLI of the xai AI gateway: accounts, virtual keys, credits, products, providers, usage and policy
/// decisions, over the gateway's admin API.
#[derive(Parser, Debug)]
#[command(name = "xai", version, after_help = AFTER_HELP)]
struct Cli {
    /// Base URL of the xai server
    #[arg(long, global = true, help_heading = GLOBAL, env = "XAI_SERVER", hide_env_values = true, default_value = "http://127.0.0.1:8080", value_name = "URL",
          value_parser = ServerUrl::parse)]
    server: ServerUrl,

    /// Admin credential: the root admin token, or a virtual key of an owner/admin account (acts on its subtree)
    #[arg(long, global = true, help_heading = GLOBAL, env = "XAI_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<Secret>,

    /// Print the server's JSON answer (pretty) instead of a table, for scripts
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Accounts: list, tree, get, create, update, disable, effective policy
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Virtual keys: list, get, issue, revoke, effective policy
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Credits: allocate to a child, reclaim from it, show the ledger
    #[command(subcommand, after_help = "Amounts are positive decimals; reclaim sends the negated amount.")]
    Credits(CreditsCommand),
    /// Products: subscriptions, add-ons, prepaid cards, and today's quota
    #[command(subcommand)]
    Products(ProductsCommand),
    /// Upstream providers and the health of their keys
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// Prices per model (credits per million tokens): list, set, delete
    #[command(subcommand)]
    Pricing(PricingCommand),
    /// Usage: recent records (newest last), or grouped by account, model, day or key; table, JSON or CSV
    Usage(UsageArgs),
    /// Explain the decision for a caller, model and endpoint, step by step (exit 0 allowed, 3 refused)
    #[command(after_help = "Exit code: 0 when the request would be allowed, 3 when it would be refused \
                            (also with --json), 1 on an API error.")]
    Explain(ExplainArgs),
}

impl Command {
    fn request(&self) -> Result<ApiRequest, String> {
        match self {
            Self::Accounts(c) => c.request(),
            Self::Keys(c) => c.request(),
            Self::Credits(c) => c.request(),
            Self::Products(c) => c.request(),
            Self::Providers(c) => c.request(),
            Self::Pricing(c) => c.request(),
            Self::Usage(c) => c.request(),
            Self::Explain(c) => c.request(),
        }
    }

    fn render(&self, answer: &Value) -> String {
        match self {
            Self::Accounts(c) => c.render(answer),
            Self::Keys(c) => c.render(answer),
            Self::Credits(c) => c.render(answer),
            Self::Products(c) => c.render(answer),
            Self::Providers(c) => c.render(answer),
            Self::Pricing(c) => c.render(answer),
            Self::Usage(c) => c.render(answer),
            Self::Explain(c) => c.render(answer),
        }
    }

    /// Whether the answer is printed as JSON although `--json` is not given (`usage --format json`).
    fn json(&self) -> bool {
        matches!(self, Self::Usage(c) if c.json())
    }

    /// Whether a successful answer is printed as the server sent it (`usage --format csv`).
    fn raw(&self) -> bool {
        matches!(self, Self::Usage(c) if c.raw())
    }

    /// The exit code of a successful call: only `explain` has a verdict of its own.
    fn exit_code(&self, answer: &Value) -> u8 {
        match self {
            Self::Explain(_) => explain::exit_code(answer),
            _ => OK,
        }
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The subcommand path (`accounts update`), so that a later usage error shows that command's usage line.
    let mut path = Vec::new();
    let mut m = &matches;
    while let Some((name, sub)) = m.subcommand() {
        path.push(name.to_owned());
        m = sub;
    }
    ExitCode::from(run(cli, &path))
}

/// A usage error found after parsing: printed like clap's own, with the usage of the subcommand at `path`; exit 2.
fn usage_error(path: &[String], kind: clap::error::ErrorKind, message: impl std::fmt::Display) -> ! {
    let mut cmd = Cli::command();
    cmd.build();
    for name in path {
        match cmd.find_subcommand(name) {
            Some(sub) => cmd = sub.clone(),
            None => break,
        }
    }
    cmd.error(kind, message).exit()
}

fn run(mut cli: Cli, path: &[String]) -> u8 {
    if let Command::Explain(a) = cli.command {
        cli.command = match a.resolve_key(|| {
            let mut s = String::new();
            io::stdin().read_to_string(&mut s).map(|_| s)
        }) {
            Ok(a) => Command::Explain(a),
            Err(e) => usage_error(path, clap::error::ErrorKind::ValueValidation, e),
        };
    }
    let request = match cli.command.request() {
        Ok(r) => r,
        Err(e) => usage_error(path, clap::error::ErrorKind::ArgumentConflict, e),
    };
    let Some(token) = cli.token.clone() else {
        usage_error(
            path,
            clap::error::ErrorKind::MissingRequiredArgument,
            "no admin token: pass --token TOKEN or set XAI_TOKEN",
        )
    };

    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return USAGE_OR_CONNECTION;
        }
    };
    let exchange = runtime.block_on(async {
        let client = AdminClient::new(cli.server.clone(), token)?;
        client.send(&request).await
    });
    let (status, body) = match exchange {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return USAGE_OR_CONNECTION;
        }
    };
    // `usage --format csv`: the server's CSV, verbatim.
    if cli.command.raw() && status.is_success() {
        let mut out = io::stdout().lock();
        let _ = out.write_all(&body).and_then(|()| out.flush());
        return OK;
    }
    let answer = match request::read_answer(status, &body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return API_ERROR;
        }
    };

    let text = if cli.json || cli.command.json() {
        serde_json::to_string_pretty(&answer).unwrap_or_else(|_| answer.to_string())
    } else {
        cli.command.render(&answer)
    };
    print(&text);
    cli.command.exit_code(&answer)
}

/// Prints to stdout; a closed pipe (`xai usage | head`) is not an error worth a panic.
fn print(text: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("xai").chain(argv.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_anywhere() {
        let cli = parse(&["accounts", "list", "--json", "--server", "http://10.0.0.1:9000", "--token", "t"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.server.to_string(), "http://10.0.0.1:9000");
        assert_eq!(cli.token.unwrap().expose(), "t");
        assert!(parse(&["--server", "localhost:8080", "providers", "list"]).is_err());
    }

    #[test]
    fn every_group_builds_its_request() {
        let path = |argv: &[&str]| parse(argv).unwrap().command.request().unwrap().path;
        assert_eq!(path(&["accounts", "list"]), "/admin/v1/accounts");
        assert_eq!(path(&["keys", "list", "2"]), "/admin/v1/accounts/2/keys");
        assert_eq!(path(&["credits", "ledger", "2"]), "/admin/v1/accounts/2/credits");
        assert_eq!(path(&["products", "today", "2"]), "/admin/v1/accounts/2/today");
        assert_eq!(path(&["providers", "list"]), "/admin/v1/providers");
        assert_eq!(path(&["usage", "--limit", "3"]), "/admin/v1/usage?limit=3");
        assert_eq!(path(&["explain", "--account", "1", "--model", "m"]), "/admin/v1/explain");
    }

    #[test]
    fn usage_errors_exit_2() {
        let e = parse(&["accounts", "get"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = parse(&["credits", "allocate", "2", "-5"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("must not be negative"), "{e}");
    }

    #[test]
    fn token_stays_out_of_debug_output() {
        let cli = parse(&["--token", "super-secret-token", "accounts", "list"]).unwrap();
        assert!(!format!("{cli:?}").contains("super-secret-token"));
    }

    #[test]
    fn explain_exit_codes() {
        let cli = parse(&["explain", "--account", "1", "--model", "m"]).unwrap();
        assert_eq!(cli.command.exit_code(&serde_json::json!({"allowed": true})), 0);
        assert_eq!(cli.command.exit_code(&serde_json::json!({"allowed": false})), 3);
        let cli = parse(&["accounts", "list"]).unwrap();
        assert_eq!(cli.command.exit_code(&serde_json::json!({})), 0);
    }
}
