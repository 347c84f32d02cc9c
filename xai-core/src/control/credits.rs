//! Credits: transfers between a parent and a child, with a ledger of every movement.

use std::time::SystemTime;

use serde::Serialize;

use super::{AccountView, AdminError, ControlPlane, Scope};
use crate::ids::AccountId;
use crate::money::Micros;
use crate::usage::rfc3339;

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Parent → child.
    Allocate,
    /// Child → parent.
    Reclaim,
    /// Created on a root account.
    Mint,
    /// Removed from a root account.
    Burn,
    /// Consumed by usage.
    Spend,
}

/// One movement of credits.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Sequence number.
    pub id: u64,
    /// When.
    #[serde(serialize_with = "ser_time")]
    pub time: SystemTime,
    /// From (None: minted, or spent).
    pub from: Option<AccountId>,
    /// To (None: burnt, or spent).
    pub to: Option<AccountId>,
    /// Amount, always positive.
    pub amount: Micros,
    /// Kind.
    pub kind: EntryKind,
    /// Free text.
    pub note: Option<String>,
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&rfc3339(*t))
}

/// The answer to a transfer.
#[derive(Debug, Clone, Serialize)]
pub struct Transfer {
    /// The account credited or debited.
    pub account: AccountView,
    /// Its parent after the move.
    pub parent: Option<AccountView>,
    /// The ledger entry.
    pub entry: Entry,
}

impl ControlPlane {
    /// Moves `amount` from the parent to `account` (negative: reclaims unspent credits to the parent). On a root
    /// account the root admin mints or burns. Never lets a balance go below zero.
    pub fn transfer(
        &self,
        scope: Scope,
        account: AccountId,
        amount: Micros,
        note: Option<String>,
    ) -> Result<Transfer, AdminError> {
        if amount.0 == 0 {
            return Err(AdminError::BadRequest("amount must not be zero".into()));
        }
        self.change_quiet(|st| {
            let a = st.writable(account, scope)?.clone();
            let now = SystemTime::now();
            let abs =
                Micros(amount.0.checked_abs().ok_or_else(|| AdminError::BadRequest("amount out of range".into()))?);
            let entry = match a.parent {
                None => {
                    if scope != Scope::Root {
                        return Err(AdminError::Forbidden("only the root admin mints or burns credits".into()));
                    }
                    if amount.0 < 0 && a.balance.0 < abs.0 {
                        return Err(AdminError::Invalid(format!(
                            "account {} has only {} credits",
                            st.path_of(account),
                            a.balance
                        )));
                    }
                    let new = a
                        .balance
                        .0
                        .checked_add(amount.0)
                        .ok_or_else(|| AdminError::Invalid("balance out of range".into()))?;
                    st.accounts.get_mut(&account).expect("exists").balance = Micros(new);
                    if amount.0 > 0 {
                        st.push_entry(None, Some(account), abs, EntryKind::Mint, note, now)
                    } else {
                        st.push_entry(Some(account), None, abs, EntryKind::Burn, note, now)
                    }
                }
                Some(parent) => {
                    let p = st.accounts.get(&parent).expect("parents exist").clone();
                    let (from, to, kind) = if amount.0 > 0 {
                        (p.clone(), a.clone(), EntryKind::Allocate)
                    } else {
                        (a.clone(), p.clone(), EntryKind::Reclaim)
                    };
                    if from.balance.0 < abs.0 {
                        return Err(AdminError::Invalid(format!(
                            "account {} has only {} unspent credits; cannot move {}",
                            st.path_of(from.id),
                            from.balance,
                            abs
                        )));
                    }
                    let to_new = to
                        .balance
                        .0
                        .checked_add(abs.0)
                        .ok_or_else(|| AdminError::Invalid("balance out of range".into()))?;
                    st.accounts.get_mut(&from.id).expect("exists").balance = Micros(from.balance.0 - abs.0);
                    st.accounts.get_mut(&to.id).expect("exists").balance = Micros(to_new);
                    st.push_entry(Some(from.id), Some(to.id), abs, kind, note, now)
                }
            };
            st.dirty.accounts.insert(account);
            if let Some(p) = a.parent {
                st.dirty.accounts.insert(p);
            }
            Ok(Transfer {
                account: st.view(account).expect("exists"),
                parent: a.parent.and_then(|p| st.view(p)),
                entry,
            })
        })
    }

    /// The balance and the movements touching an account, oldest first.
    pub fn ledger(&self, scope: Scope, account: AccountId) -> Result<(Micros, Vec<Entry>), AdminError> {
        self.read(|st| {
            let a = st.account(account, scope)?;
            let entries =
                st.ledger.iter().filter(|e| e.from == Some(account) || e.to == Some(account)).cloned().collect();
            Ok((a.balance, entries))
        })
    }

    /// The sum of all balances (for conservation checks).
    pub fn total_balance(&self) -> i128 {
        self.read(|st| st.accounts.values().map(|a| a.balance.0 as i128).sum())
    }

    /// Net credits minted minus burnt minus spent, from the ledger.
    pub fn ledger_net(&self) -> i128 {
        self.read(|st| {
            st.ledger
                .iter()
                .map(|e| match e.kind {
                    EntryKind::Mint => e.amount.0 as i128,
                    EntryKind::Burn | EntryKind::Spend => -(e.amount.0 as i128),
                    EntryKind::Allocate | EntryKind::Reclaim => 0,
                })
                .sum()
        })
    }
}
