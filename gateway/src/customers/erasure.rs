//! Erasing a customer: its open conversations are closed and the bus forgets it, the store erases every
//! kind of data it holds about it (see [`crate::store::ErasureReport`], the one list of kinds), and the
//! audit log records who erased what and when, with counts, never content.

use omnigate_connectors::model::CustomerId;

use crate::bus::{Bus, BusError};
use crate::clock::unix_ms;
use crate::store::{AuditEntry, ContextStore, StoreError};

/// The audit action of an erasure.
pub const ERASED_ACTION: &str = "customer.erased";

/// Who asks to erase whom, and why.
#[derive(Debug, Clone)]
pub struct Erasure {
    /// The customer (a merged id erases its survivor).
    pub customer: CustomerId,
    /// Who asks, e.g. `admin:dpo-alice`.
    pub actor: String,
    /// Why, e.g. a request reference.
    pub reason: String,
}

/// Why an erasure failed. Nothing is audited unless the store erased.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// The customer is unknown (nothing held about it).
    #[error("unknown customer")]
    Unknown,
    /// The bus is stopping; retry.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The store failed; retry (erasure is idempotent).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Erases the customer and appends the audit entry, which it returns.
///
/// # Errors
/// [`EraseError::Unknown`] when the store holds nothing about the customer; [`EraseError::Bus`] or
/// [`EraseError::Store`] when a step fails (the steps before it are done; retry).
pub async fn erase_customer(
    bus: &Bus,
    store: &dyn ContextStore,
    erasure: Erasure,
) -> Result<AuditEntry, EraseError> {
    let customer = store.canonical_customer(&erasure.customer).await?;
    let conversations: Vec<_> = store
        .customer_conversations(&customer)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    if conversations.is_empty() && store.identities_of(&customer).await?.is_empty() {
        return Err(EraseError::Unknown);
    }
    let closed = bus.forget_customer(customer.clone(), conversations).await?;
    let counts = store.erase_customer(&customer).await?;
    let entry = AuditEntry {
        at_ms: unix_ms(),
        actor: erasure.actor,
        action: ERASED_ACTION.to_owned(),
        customer,
        reason: erasure.reason,
        counts,
    };
    store.append_audit(&entry).await?;
    tracing::info!(
        customer_id = %entry.customer,
        actor = %entry.actor,
        closed_conversations = closed,
        conversations = counts.conversations,
        events = counts.events,
        identities = counts.identities,
        "customer erased"
    );
    Ok(entry)
}
