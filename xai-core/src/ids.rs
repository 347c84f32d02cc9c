//! Typed identifiers used across crate boundaries.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! int_id {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

int_id!(
    /// An account in the tree (company, department, team, person).
    AccountId(u64)
);
int_id!(
    /// A virtual key issued to an account.
    KeyId(u64)
);
int_id!(
    /// A routing level: a set of upstream key pools of the same tier. Lower is preferred.
    Level(u32)
);
int_id!(
    /// An upstream provider (a base URL, a protocol and its keys).
    ProviderId(u32)
);
int_id!(
    /// One upstream credential of a provider; never the credential itself.
    UpstreamKeyId(u32)
);

/// A request id, echoed as `x-request-id`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub std::sync::Arc<str>);

impl RequestId {
    /// A fresh request id: `req_` + 24 hex digits, the first 12 the milliseconds since the Unix epoch and the
    /// other 12 random (48 bits). Ids sort by time, so the usage table's unique index on them grows at its end
    /// instead of touching a random page per insert.
    pub fn generate() -> Self {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let r: u64 = rand::random();
        let mut b = [0u8; 12];
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        b[6..].copy_from_slice(&r.to_be_bytes()[2..]);
        let mut s = String::with_capacity(28);
        s.push_str("req_");
        s.push_str(&hex::encode(b));
        Self(s.into())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
