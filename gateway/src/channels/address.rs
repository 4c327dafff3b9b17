//! Where to answer each connector conversation: the channel account, the customer's identity on it, and the
//! reply window. Learnt from each inbound message; after a restart, read back from the log's
//! `channel.received` records.

use std::sync::Arc;

use dashmap::DashMap;
use omnigate_connectors::model::{Channel, ConversationId, Identity, IdentityKind, ReplyCapability};

use crate::store::{ContextStore, EventKind, StoreError, View};

/// How to reach the customer of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Address {
    /// The channel.
    pub channel: Channel,
    /// Our connector id.
    pub account: String,
    /// Our account as the provider names it (`open_kfid` for WeCom, which sends from it).
    pub channel_account: String,
    /// The customer's identity on the channel.
    pub to: Identity,
    /// What we may still send.
    pub capability: ReplyCapability,
}

/// The addresses of connector conversations.
#[derive(Debug, Default)]
pub struct AddressBook {
    known: DashMap<ConversationId, Address>,
    /// The latest address each sender identity wrote from, per channel: which of our accounts can reach it
    /// (an OpenID is only valid with the official account that issued it). Read when an agent picks a channel.
    senders: DashMap<(Channel, IdentityKind, String), Address>,
}

/// Log events read per page when recovering an address.
const PAGE: usize = 200;

impl AddressBook {
    /// Records the address an inbound message came from; the reply window is merged (a new customer message
    /// resets it, a shorter grant never shrinks an open one).
    pub fn learn(&self, conversation: &ConversationId, address: Address, now_ms: u64) {
        let mut entry = self
            .known
            .entry(conversation.clone())
            .or_insert_with(|| address.clone());
        let capability =
            omnigate_connectors::wechat::window::merge(&entry.capability, &address.capability, now_ms);
        *entry = Address {
            capability,
            ..address
        };
        let sender = entry.clone();
        drop(entry);
        self.senders
            .insert((sender.channel, sender.to.kind, sender.to.value.clone()), sender);
    }

    /// The latest address `identity` wrote from on `channel` since this gateway started.
    pub fn sender(&self, channel: Channel, identity: &Identity) -> Option<Address> {
        self.senders
            .get(&(channel, identity.kind, identity.value.clone()))
            .map(|a| a.clone())
    }

    /// The address of a conversation, from memory or else from its log.
    ///
    /// # Errors
    /// [`StoreError`] when the log cannot be read.
    pub async fn lookup(
        &self,
        conversation: &ConversationId,
        store: &Arc<dyn ContextStore>,
    ) -> Result<Option<Address>, StoreError> {
        if let Some(found) = self.known.get(conversation).map(|a| a.clone()) {
            return Ok(Some(found));
        }
        let mut after = 0;
        let mut last = None;
        loop {
            let page = store.events_after(conversation, View::Agent, after, PAGE).await?;
            for event in &page.events {
                after = event.seq;
                if let EventKind::ChannelReceived(record) = &event.kind {
                    last = Some(Address {
                        channel: record.channel,
                        account: record.account.clone(),
                        channel_account: record.channel_account.clone(),
                        to: record.from.clone(),
                        capability: record.reply_capability.clone(),
                    });
                }
            }
            if page.events.is_empty() || after >= page.last {
                break;
            }
        }
        if let Some(address) = &last {
            self.known.insert(conversation.clone(), address.clone());
        }
        Ok(last)
    }

    /// Replaces the reply capability after a send used it up or the provider said the window is closed.
    pub fn set_capability(&self, conversation: &ConversationId, capability: ReplyCapability) {
        if let Some(mut entry) = self.known.get_mut(conversation) {
            entry.capability = capability;
        }
    }
}
