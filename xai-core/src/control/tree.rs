//! Accounts: create, change, move, disable, list; effective policies.

use serde::{Deserialize, Serializer};

use super::{AccountView, AdminError, ControlPlane, Scope, State};
use crate::ids::AccountId;
use crate::money::Micros;
use crate::policy::wire::{PolicyPatch, patch, policy_json};
use crate::policy::{Account, EffectivePolicy, Policy, Role, Status, check_narrowing, effective_of};

/// `POST /admin/v1/accounts`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// Name among siblings.
    pub name: String,
    /// Parent (`None` = a new root).
    #[serde(default)]
    pub parent: Option<AccountId>,
    /// Role.
    #[serde(default)]
    pub role: Role,
    /// Status.
    #[serde(default)]
    pub status: Status,
    /// Policy fields.
    #[serde(flatten)]
    pub policy: PolicyPatch,
}

/// `PATCH /admin/v1/accounts/{id}`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    /// Rename.
    #[serde(default)]
    pub name: Option<String>,
    /// Move (`null` = make it a root: root admin only).
    #[serde(default, deserialize_with = "patch")]
    pub parent: Option<Option<AccountId>>,
    /// Role.
    #[serde(default)]
    pub role: Option<Role>,
    /// Status.
    #[serde(default)]
    pub status: Option<Status>,
    /// Policy fields.
    #[serde(flatten)]
    pub policy: PolicyPatch,
}

pub(crate) fn ser_account<S: Serializer>(a: &crate::policy::Account, s: S) -> Result<S::Ok, S::Error> {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), a.id.0.into());
    m.insert("name".into(), (*a.name).into());
    m.insert("path".into(), (*a.path).into());
    m.insert("parent".into(), a.parent.map_or(serde_json::Value::Null, |p| p.0.into()));
    m.insert("role".into(), serde_json::to_value(a.role).unwrap_or_default());
    m.insert("status".into(), serde_json::to_value(a.status).unwrap_or_default());
    m.insert("balance".into(), a.balance.to_string().into());
    m.extend(policy_json(&a.policy));
    s.collect_map(m)
}

fn valid_name(name: &str) -> Result<(), AdminError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.contains('/')
        && name.trim() == name
        && name.chars().all(|c| !c.is_control());
    if ok {
        Ok(())
    } else {
        Err(AdminError::BadRequest(format!(
            "invalid account name {name:?}: 1-64 characters, no '/', no surrounding spaces"
        )))
    }
}

impl State {
    fn sibling_clash(&self, parent: Option<AccountId>, name: &str, except: Option<AccountId>) -> bool {
        self.accounts.values().any(|a| a.parent == parent && &*a.name == name && Some(a.id) != except)
    }

    /// The effective policy inherited by a child of `parent` (empty for a root).
    pub(crate) fn inherited(&self, parent: Option<AccountId>) -> EffectivePolicy {
        parent.map(|p| effective_of(&self.chain(p))).unwrap_or_default()
    }

    fn check_policy(&self, parent: Option<AccountId>, p: &Policy) -> Result<(), AdminError> {
        check_narrowing(p, &self.inherited(parent)).map_err(|w| AdminError::Widening(w.to_string()))
    }
}

impl ControlPlane {
    /// Creates an account.
    pub fn create_account(&self, scope: Scope, new: NewAccount) -> Result<AccountView, AdminError> {
        self.change(|st| {
            valid_name(&new.name)?;
            match (scope, new.parent) {
                (Scope::Root, None) => {}
                (Scope::Subtree(_), None) => {
                    return Err(AdminError::Forbidden("only the root admin creates root accounts".into()));
                }
                (_, Some(p)) => {
                    st.account(p, scope)?;
                }
            }
            if st.sibling_clash(new.parent, &new.name, None) {
                return Err(AdminError::Conflict(format!("an account named {:?} already exists there", new.name)));
            }
            let mut policy = Policy::default();
            new.policy.apply(&mut policy).map_err(AdminError::BadRequest)?;
            st.check_policy(new.parent, &policy)?;
            let id = AccountId(st.next_account);
            st.next_account += 1;
            st.accounts.insert(
                id,
                Account {
                    id,
                    parent: new.parent,
                    name: new.name.as_str().into(),
                    path: "".into(),
                    status: new.status,
                    role: new.role,
                    policy,
                    balance: Micros::ZERO,
                },
            );
            Ok(st.view(id).expect("just inserted"))
        })
    }

    /// Changes an account (rename, move, role, status, policy). A status change is written to the audit trail.
    pub fn update_account(&self, scope: Scope, id: AccountId, p: AccountPatch) -> Result<AccountView, AdminError> {
        let new_status = p.status;
        let (view, old) = self.update_account_inner(scope, id, p)?;
        if let Some(new) = new_status {
            self.audit_status(scope, id, old, new);
        }
        Ok(view)
    }

    /// [`ControlPlane::update_account`] without the audit entry; also returns the status before the change.
    fn update_account_inner(
        &self,
        scope: Scope,
        id: AccountId,
        p: AccountPatch,
    ) -> Result<(AccountView, Status), AdminError> {
        self.change(|st| {
            let mut a = st.writable(id, scope)?.clone();
            let old = a.status;
            if let Some(name) = &p.name {
                valid_name(name)?;
                a.name = name.as_str().into();
            }
            if let Some(parent) = p.parent {
                match (scope, parent) {
                    (Scope::Subtree(_), None) => {
                        return Err(AdminError::Forbidden("only the root admin makes root accounts".into()));
                    }
                    (_, Some(np)) => {
                        st.account(np, scope)?;
                        if st.is_within(np, id) {
                            return Err(AdminError::Invalid(format!(
                                "cannot move {} under its own descendant {}",
                                st.path_of(id),
                                st.path_of(np)
                            )));
                        }
                    }
                    (Scope::Root, None) => {}
                }
                a.parent = parent;
            }
            if let Some(r) = p.role {
                a.role = r;
            }
            if let Some(s) = p.status {
                a.status = s;
            }
            p.policy.apply(&mut a.policy).map_err(AdminError::BadRequest)?;
            if st.sibling_clash(a.parent, &a.name, Some(id)) {
                return Err(AdminError::Conflict(format!("an account named {:?} already exists there", a.name)));
            }
            st.check_policy(a.parent, &a.policy)?;
            st.accounts.insert(id, a);
            Ok((st.view(id).expect("exists"), old))
        })
    }

    /// Disables an account (its whole subtree is refused from the next request on).
    pub fn disable_account(&self, scope: Scope, id: AccountId) -> Result<AccountView, AdminError> {
        self.update_account(scope, id, AccountPatch { status: Some(Status::Disabled), ..AccountPatch::default() })
    }

    /// One account.
    pub fn account(&self, scope: Scope, id: AccountId) -> Result<AccountView, AdminError> {
        self.read(|st| {
            st.account(id, scope)?;
            Ok(st.view(id).expect("exists"))
        })
    }

    /// Every account in scope, sorted by path.
    pub fn accounts(&self, scope: Scope) -> Vec<AccountView> {
        self.read(|st| {
            let mut v: Vec<AccountView> =
                st.accounts.keys().filter(|id| st.account(**id, scope).is_ok()).filter_map(|id| st.view(*id)).collect();
            v.sort_by(|a, b| a.account.path.cmp(&b.account.path));
            v
        })
    }

    /// The effective policy of an account.
    pub fn effective(&self, scope: Scope, id: AccountId) -> Result<(AccountView, EffectivePolicy), AdminError> {
        self.read(|st| {
            st.account(id, scope)?;
            Ok((st.view(id).expect("exists"), effective_of(&st.chain(id))))
        })
    }
}
