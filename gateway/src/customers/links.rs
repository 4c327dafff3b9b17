//! An agent links an identity to the customer of a conversation they have, or unlinks one from it, with a
//! recorded reason. The bus checks the agent has the conversation; the store does the change.

use omnigate_connectors::model::{CustomerId, Identity};
use serde_json::{json, Value};

use crate::clock::unix_ms;
use crate::store::{ContextStore, GraphChange, StoreError};

/// Link or unlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityChange {
    /// Link the identity to the customer (moving it from whoever held it).
    Link,
    /// Unlink it from the customer (it gets a customer of its own).
    Unlink,
}

/// Why a link or unlink was refused.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Unlink of an identity the customer does not hold.
    #[error("the customer does not hold this identity")]
    NotHeld,
    /// The store failed; retry.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LinkError {
    /// The `code` of the error frame.
    pub fn code(&self) -> &'static str {
        match self {
            LinkError::NotHeld => "not_found",
            LinkError::Store(_) => "unavailable",
        }
    }
}

/// Applies the change for agent `agent` and answers the customer's identities and link history, for the
/// `ok` frame. Agents' links are assertions, not proofs: the identity is held unverified.
///
/// # Errors
/// [`LinkError::NotHeld`] when unlinking an identity the customer does not hold; [`LinkError::Store`].
pub async fn change_identity(
    store: &dyn ContextStore,
    customer: &CustomerId,
    change: IdentityChange,
    identity: Identity,
    agent: &str,
    reason: String,
) -> Result<Value, LinkError> {
    let record = GraphChange {
        actor: format!("agent:{agent}"),
        reason,
        at_ms: unix_ms(),
    };
    let identity = Identity {
        verified: false,
        ..identity
    };
    let (customer, fresh) = match change {
        IdentityChange::Link => (store.link_identity(customer, &identity, &record).await?, None),
        IdentityChange::Unlink => {
            let held = store.identities_of(customer).await?;
            if !held
                .iter()
                .any(|i| i.kind == identity.kind && i.value == identity.value)
            {
                return Err(LinkError::NotHeld);
            }
            let fresh = store
                .unlink_identity(&identity, &record)
                .await?
                .ok_or(LinkError::NotHeld)?;
            (store.canonical_customer(customer).await?, Some(fresh))
        }
    };
    let identities = store.identities_of(&customer).await?;
    let history = store.link_history(&customer).await?;
    Ok(json!({
        "customer_id": customer,
        "identities": identities,
        "history": history,
        "unlinked_to": fresh,
    }))
}
