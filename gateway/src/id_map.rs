//! Hash maps keyed by ids the gateway generates itself (conversation and customer ids) or the bank issues
//! (agent ids), on the per-message path.
//!
//! std's SipHash is keyed to resist collision floods from keys an attacker chooses; these keys are random
//! UUIDs or configuration, so the maps use foldhash (still seeded per process), which hashes a 36-byte id
//! several times faster. Maps keyed by what a client or provider chooses (identities, idempotency keys, rate
//! limit windows) keep SipHash.

/// The hasher of [`IdMap`] and [`IdDashMap`]: foldhash, seeded randomly per process.
pub(crate) type IdHasher = foldhash::fast::RandomState;

/// A `HashMap` keyed by a gateway-generated or bank-issued id.
pub(crate) type IdMap<K, V> = std::collections::HashMap<K, V, IdHasher>;

/// A `DashMap` keyed by a gateway-generated or bank-issued id.
pub(crate) type IdDashMap<K, V> = dashmap::DashMap<K, V, IdHasher>;
