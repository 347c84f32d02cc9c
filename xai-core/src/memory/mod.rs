//! In-memory implementations of the traits: the library works with no database at all.

mod key_pool;
mod meter;
mod policy_store;

pub use key_pool::{InMemoryKeyPool, KeyHealth, PoolConfig};
pub use meter::{FundState, InMemoryMeter, LiveUsage, Who, limit_nodes, limits_of, no_funds};
pub use policy_store::{Catalog, CatalogError, InMemoryPolicyStore};
