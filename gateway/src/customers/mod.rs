//! Customers across channels, above the store's identity graph: the `customer.context` an agent gets on
//! accept, agents' link and unlink of identities, and erasure with its audit entry.
//!
//! Layout:
//! - `context.rs`: the customer's recent conversations and open complaints as a frame
//! - `links.rs`: an agent links or unlinks an identity of a conversation's customer
//! - `erasure.rs`: erase a customer everywhere (bus, store) and audit it

mod context;
mod erasure;
mod links;

pub use context::{context_frame, render_context, HistorySettings};
pub use erasure::{erase_customer, EraseError, Erasure, ERASED_ACTION};
pub use links::{change_identity, IdentityChange, LinkError};
