//! In-memory implementations of the traits: the library works with no database at all.

mod key_pool;
mod meter;
mod policy_store;

pub use key_pool::{InMemoryKeyPool, KeyHealth, PoolConfig};
pub use meter::{InMemoryMeter, LiveUsage, Who, limit_nodes, limits_of};
pub use policy_store::{Catalog, CatalogError, InMemoryPolicyStore};
