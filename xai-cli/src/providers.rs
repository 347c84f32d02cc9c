//! `xai providers`: the upstream providers and the health of their keys (never the key material).

use clap::Subcommand;
use serde_json::Value;

use crate::render::{self, field};
use crate::request::ApiRequest;

/// Show upstream providers and their keys' health.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum ProvidersCommand {
    /// List the upstream providers: protocol, level, models and how many keys
    List,
    /// Show the health of every upstream key: cooldowns, failures, disabled keys
    Keys,
    /// Use a key again that was disabled after an upstream rejected it (on every instance); root only
    EnableKey {
        /// Upstream key id (see `xai providers keys`)
        id: u64,
    },
}

impl ProvidersCommand {
    /// The admin API call for this command.
    pub fn request(&self) -> Result<ApiRequest, String> {
        Ok(match self {
            Self::List => ApiRequest::get("/providers"),
            Self::Keys => ApiRequest::get("/upstream-keys"),
            Self::EnableKey { id } => {
                ApiRequest::post(format_args!("/upstream-keys/{id}/enable"), serde_json::json!({}))
            }
        })
    }

    /// The answer as text.
    pub fn render(&self, answer: &Value) -> String {
        match self {
            Self::List => list(answer),
            Self::Keys => keys(answer),
            Self::EnableKey { id } => format!(
                "upstream key {id} enabled{}",
                if answer.get("disabled") == Some(&Value::Bool(false)) { "" } else { " (check `xai providers keys`)" }
            ),
        }
    }
}

/// `GET /providers` as a table.
pub fn list(answer: &Value) -> String {
    let providers = render::array(answer, "providers");
    if providers.is_empty() {
        return "No providers.".into();
    }
    let mut t = render::table(["id", "name", "protocol", "level", "models", "keys", "base_url"]);
    for p in providers {
        let keys = p.get("keys").and_then(Value::as_array).map_or_else(|| field(p, "keys"), |k| k.len().to_string());
        t.add_row(vec![
            field(p, "id"),
            field(p, "name"),
            field(p, "protocol"),
            field(p, "level"),
            field(p, "models"),
            keys,
            field(p, "base_url"),
        ]);
    }
    render::align_right(&mut t, &[0, 3, 5]);
    render::finish(&t)
}

/// `GET /upstream-keys` as a table.
pub fn keys(answer: &Value) -> String {
    let keys = render::array(answer, "keys");
    if keys.is_empty() {
        return "No upstream keys.".into();
    }
    let mut t = render::table(["id", "provider", "level", "state", "failures"]);
    for k in keys {
        let cooldown = k.get("cooldown_ms").and_then(Value::as_u64).unwrap_or(0);
        let state = if k.get("disabled").and_then(Value::as_bool) == Some(true) {
            "disabled".to_owned()
        } else if cooldown > 0 {
            format!("cooling down {:.1} s", cooldown as f64 / 1000.0)
        } else {
            "ready".to_owned()
        };
        t.add_row(vec![field(k, "id"), field(k, "provider"), field(k, "level"), state, field(k, "failures")]);
    }
    render::align_right(&mut t, &[0, 2, 4]);
    render::finish(&t)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn requests() {
        assert_eq!(ProvidersCommand::List.request().unwrap(), ApiRequest::get("/providers"));
        assert_eq!(ProvidersCommand::Keys.request().unwrap().path, "/admin/v1/upstream-keys");
    }

    #[test]
    fn provider_table_counts_keys() {
        let out = list(&json!({"providers": [
            {"id": 1, "name": "openai", "protocol": "openai", "base_url": "https://api.openai.com/v1", "level": 1,
             "models": ["gpt-*", "o*"], "keys": [{"id": 1}, {"id": 2}]}]}));
        let row = out.lines().nth(2).unwrap();
        for cell in ["openai", "gpt-*, o*", "2", "https://api.openai.com/v1"] {
            assert!(row.contains(cell), "{out}");
        }
    }

    #[test]
    fn key_health_states() {
        let out = keys(&json!({"keys": [
            {"id": 1, "provider": "openai", "level": 1, "disabled": false, "cooldown_ms": 0, "failures": 0},
            {"id": 2, "provider": "openai", "level": 1, "disabled": false, "cooldown_ms": 4500, "failures": 2},
            {"id": 3, "provider": "openai", "level": 1, "disabled": true, "cooldown_ms": 0, "failures": 9}]}));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[2].contains("ready"));
        assert!(lines[3].contains("cooling down 4.5 s"), "{out}");
        assert!(lines[4].contains("disabled"));
    }
}
