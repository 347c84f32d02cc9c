//! The audit trail: an append-only list of who changed an account's standing and why (disabled or enabled through
//! the admin API, frozen by anomaly detection). Saved with the rest of the state; entries are never changed.

use std::time::SystemTime;

use serde::{Serialize, Serializer};

use super::{AdminError, ControlPlane, Scope, State, cluster_id};
use crate::anomaly::Flag;
use crate::ids::AccountId;
use crate::policy::Status;

/// The actor of entries written by anomaly detection.
pub const ANOMALY_ACTOR: &str = "system:anomaly";

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Id (unique across a cluster, increasing with time on each instance).
    pub id: u64,
    /// When.
    #[serde(serialize_with = "ser_time")]
    pub time: SystemTime,
    /// Who: `root`, `account:<path>` (an owner/admin key of that account), `system:anomaly`.
    pub actor: String,
    /// What: `account.disabled`, `account.enabled`, `account.frozen`.
    pub action: String,
    /// The account concerned.
    pub account: Option<AccountId>,
    /// The numbers and reasons (JSON).
    pub detail: serde_json::Value,
}

fn ser_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::usage::rfc3339(*t))
}

/// The actor name of an admin scope.
pub(crate) fn actor_of(st: &State, scope: Scope) -> String {
    match scope {
        Scope::Root => "root".into(),
        Scope::Subtree(a) => format!("account:{}", st.path_of(a)),
    }
}

impl State {
    pub(crate) fn push_audit(
        &mut self,
        actor: String,
        action: &str,
        account: Option<AccountId>,
        detail: serde_json::Value,
    ) {
        let e = AuditEntry {
            id: cluster_id(&mut self.next_audit, self.salt),
            time: SystemTime::now(),
            actor,
            action: action.into(),
            account,
            detail,
        };
        self.dirty.audit.insert(e.id);
        self.audit.push(e);
    }
}

impl ControlPlane {
    /// Records a status change made through the admin API (called after the change is applied).
    pub(crate) fn audit_status(&self, scope: Scope, id: AccountId, old: Status, new: Status) {
        if old == new {
            return;
        }
        let action = if new == Status::Disabled { "account.disabled" } else { "account.enabled" };
        let _ = self.change_quiet(|st| {
            let actor = actor_of(st, scope);
            let path = st.path_of(id);
            st.push_audit(actor, action, Some(id), serde_json::json!({ "path": path, "via": "admin_api" }));
            Ok(())
        });
    }

    /// Disables `id` because anomaly detection flagged it, with an audit entry carrying the flags. Returns
    /// `false` (and records nothing) when the account is already disabled: scanning again is harmless.
    pub fn freeze_for_anomaly(&self, id: AccountId, flags: &[Flag]) -> Result<bool, AdminError> {
        let active = self.read(|st| st.accounts.get(&id).map(|a| a.status == Status::Active));
        match active {
            None => return Err(AdminError::NotFound(format!("no account {id}"))),
            Some(false) => return Ok(false),
            Some(true) => {}
        }
        // Only the status changes: no policy check may stand in the way of a freeze.
        let old = self.change(|st| {
            let a = st.accounts.get_mut(&id).ok_or_else(|| AdminError::NotFound(format!("no account {id}")))?;
            Ok(std::mem::replace(&mut a.status, Status::Disabled))
        })?;
        if old == Status::Disabled {
            return Ok(false);
        }
        self.change_quiet(|st| {
            let path = st.path_of(id);
            let rules: Vec<&str> = flags.iter().map(|f| f.rule.as_str()).collect();
            let detail = serde_json::json!({
                "path": path,
                "reason": format!("anomaly detection flagged {}: {}", rules.join(", "),
                    flags.iter().map(|f| f.message.as_str()).collect::<Vec<_>>().join("; ")),
                "flags": flags,
            });
            st.push_audit(ANOMALY_ACTOR.into(), "account.frozen", Some(id), detail);
            Ok(())
        })?;
        Ok(true)
    }

    /// Whether `id`'s effective policy asks for a freeze on anomalies (the nearest account that sets it).
    pub fn freezes_on_anomaly(&self, id: AccountId) -> bool {
        self.effective(Scope::Root, id).is_ok_and(|(_, e)| e.freeze_on_anomaly.is_some_and(|b| b.value))
    }

    /// The audit entries this instance holds (those written since it started, plus restored ones), newest
    /// first, optionally of one account, within the scope.
    pub fn audit(&self, scope: Scope, account: Option<AccountId>, limit: usize) -> Result<Vec<AuditEntry>, AdminError> {
        self.read(|st| {
            if let Some(a) = account {
                st.account(a, scope)?;
            }
            Ok(st
                .audit
                .iter()
                .rev()
                .filter(|e| account.is_none_or(|a| e.account == Some(a)))
                .filter(|e| match (scope, e.account) {
                    (Scope::Root, _) => true,
                    (Scope::Subtree(_), Some(a)) => st.account(a, scope).is_ok(),
                    (Scope::Subtree(_), None) => false,
                })
                .take(limit)
                .cloned()
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::{AccountSeries, AnomalyConfig, Totals, evaluate};
    use crate::control::NewAccount;
    use crate::memory::Catalog;
    use crate::money::Micros;
    use crate::policy::Role;
    use crate::policy::wire::PolicyPatch;

    fn account(cp: &ControlPlane, name: &str, parent: Option<AccountId>, policy: &str) -> AccountId {
        let policy: PolicyPatch = serde_json::from_str(policy).unwrap();
        let new = NewAccount { name: name.into(), parent, role: Role::Member, status: Status::Active, policy };
        cp.create_account(Scope::Root, new).unwrap().account.id
    }

    fn flags(id: AccountId) -> Vec<Flag> {
        let day = |c: i64| Totals { spend: Micros(c * 1_000_000), tokens: 0 };
        let s = AccountSeries {
            account: id,
            path: "acme/bot".into(),
            daily: vec![day(10); 14],
            today: day(100),
            hours: [Totals::default(); 3],
        };
        evaluate(&AnomalyConfig::default(), &s)
    }

    #[test]
    fn freeze_is_recorded_once_and_saved() {
        let cp = ControlPlane::new(Catalog::default()).unwrap();
        let root = account(&cp, "acme", None, r#"{"freeze_on_anomaly": true}"#);
        let bot = account(&cp, "bot", Some(root), "{}");
        let human = account(&cp, "human", Some(root), r#"{"freeze_on_anomaly": false}"#);
        assert!(cp.freezes_on_anomaly(bot), "inherited from acme");
        assert!(!cp.freezes_on_anomaly(human), "the nearest setting wins");
        let (_, eff) = cp.effective(Scope::Root, human).unwrap();
        assert_eq!(eff.freeze_on_anomaly.unwrap().set_by.path.as_ref(), "acme/human");
        cp.take_changes();

        assert!(cp.freeze_for_anomaly(bot, &flags(bot)).unwrap());
        assert_eq!(cp.account(Scope::Root, bot).unwrap().account.status, Status::Disabled);
        assert!(!cp.freeze_for_anomaly(bot, &flags(bot)).unwrap(), "already disabled: nothing new");
        let trail = cp.audit(Scope::Root, Some(bot), 10).unwrap();
        assert_eq!(trail.len(), 1);
        assert_eq!((trail[0].actor.as_str(), trail[0].action.as_str()), (ANOMALY_ACTOR, "account.frozen"));
        assert_eq!(trail[0].detail["flags"][0]["rule"], "daily_spend");
        assert_eq!(trail[0].detail["flags"][0]["value"], 100.0);
        assert!(trail[0].detail["reason"].as_str().unwrap().contains("daily_spend"));
        let c = cp.take_changes();
        assert_eq!((c.accounts.len(), c.audit.len()), (1, 1), "the status and the entry are saved together");
        assert!(cp.take_changes().is_empty());

        // Through the admin API: enabling and disabling are recorded with the actor.
        let patch: crate::control::AccountPatch = serde_json::from_str(r#"{"status": "active"}"#).unwrap();
        cp.update_account(Scope::Subtree(root), bot, patch).unwrap();
        cp.disable_account(Scope::Root, human).unwrap();
        let all = cp.audit(Scope::Root, None, 10).unwrap();
        let seen: Vec<(&str, &str)> = all.iter().map(|e| (e.actor.as_str(), e.action.as_str())).collect();
        assert_eq!(
            seen,
            [("root", "account.disabled"), ("account:acme", "account.enabled"), (ANOMALY_ACTOR, "account.frozen")]
        );
        // Scoped: an admin of `bot`'s subtree sees only entries of accounts within it.
        assert_eq!(cp.audit(Scope::Subtree(bot), None, 10).unwrap().len(), 2);
        assert!(cp.audit(Scope::Subtree(bot), Some(human), 10).is_err());
        // A rename is no status change: no entry.
        let patch: crate::control::AccountPatch = serde_json::from_str(r#"{"name": "robot"}"#).unwrap();
        cp.update_account(Scope::Root, bot, patch).unwrap();
        assert_eq!(cp.audit(Scope::Root, None, 10).unwrap().len(), 3);
    }
}
