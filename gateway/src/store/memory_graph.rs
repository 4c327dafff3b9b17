//! The embedded store's identity graph: plain data the memory backend changes under one lock, so every
//! resolution, link, unlink, merge and erasure is one critical section.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use omnigate_connectors::model::{ConversationId, CustomerId, Identity, IdentityKind};

use super::{AuditEntry, GraphChange, LinkAction, LinkRecord};

type Key = (IdentityKind, String);

fn key(identity: &Identity) -> Key {
    (identity.kind, identity.value.clone())
}

/// How many redirects a lookup follows before it calls the chain broken (merges add one each).
const MAX_REDIRECTS: usize = 64;

#[derive(Debug, Default)]
pub(super) struct Graph {
    owners: HashMap<Key, CustomerId>,
    customers: HashMap<CustomerId, Node>,
    redirects: HashMap<CustomerId, CustomerId>,
    audit: Vec<AuditEntry>,
}

#[derive(Debug, Default)]
struct Node {
    /// Identity → whether this customer holds it verified.
    identities: BTreeMap<Key, bool>,
    links: Vec<LinkRecord>,
    /// `(created_at_ms, id)`, each conversation once.
    conversations: BTreeSet<(u64, ConversationId)>,
    /// Merged customer ids that redirect here.
    aliases: BTreeSet<CustomerId>,
}

/// What erasing a customer removed from the graph; the conversations are the caller's to delete.
#[derive(Debug, Default)]
pub(super) struct Erased {
    pub(super) identities: u64,
    pub(super) link_records: u64,
    pub(super) conversations: Vec<ConversationId>,
    pub(super) merged_ids: u64,
}

fn record(
    action: LinkAction,
    identity: Option<&Identity>,
    other: Option<&CustomerId>,
    change: &GraphChange,
) -> LinkRecord {
    LinkRecord {
        action,
        identity: identity.cloned(),
        other: other.cloned(),
        change: change.clone(),
    }
}

impl Graph {
    pub(super) fn canonical(&self, customer: &CustomerId) -> CustomerId {
        let mut current = customer;
        for _ in 0..MAX_REDIRECTS {
            match self.redirects.get(current) {
                Some(next) => current = next,
                None => break,
            }
        }
        current.clone()
    }

    fn owner(&self, key: &Key) -> Option<CustomerId> {
        self.owners.get(key).map(|c| self.canonical(c))
    }

    fn held_verified(&self, customer: &CustomerId, key: &Key) -> bool {
        self.customers
            .get(customer)
            .and_then(|n| n.identities.get(key))
            .copied()
            .unwrap_or(false)
    }

    fn attach(&mut self, customer: &CustomerId, identity: &Identity, verified: bool) {
        let key = key(identity);
        self.owners.insert(key.clone(), customer.clone());
        let held = self
            .customers
            .entry(customer.clone())
            .or_default()
            .identities
            .entry(key)
            .or_insert(verified);
        *held |= verified;
    }

    fn detach(&mut self, customer: &CustomerId, identity: &Identity) {
        if let Some(node) = self.customers.get_mut(customer) {
            node.identities.remove(&key(identity));
        }
    }

    fn log(&mut self, customer: &CustomerId, entry: LinkRecord) {
        self.customers
            .entry(customer.clone())
            .or_default()
            .links
            .push(entry);
    }

    pub(super) fn resolve(&mut self, identity: &Identity) -> CustomerId {
        if let Some(owner) = self.owner(&key(identity)) {
            return owner;
        }
        let customer = CustomerId::generate();
        self.attach(&customer, identity, identity.verified);
        customer
    }

    pub(super) fn resolve_verified(
        &mut self,
        identities: &[Identity],
        change: &GraphChange,
    ) -> Option<CustomerId> {
        let verified: Vec<&Identity> = identities.iter().filter(|i| i.verified).collect();
        if verified.is_empty() {
            return identities.first().map(|i| self.resolve(i));
        }
        let mut survivor: Option<CustomerId> = None;
        let mut merged: Vec<CustomerId> = Vec::new();
        for identity in &verified {
            let key = key(identity);
            let Some(owner) = self.owner(&key) else { continue };
            if !self.held_verified(&owner, &key) {
                continue;
            }
            match &survivor {
                None => survivor = Some(owner),
                Some(s) if *s != owner && !merged.contains(&owner) => merged.push(owner),
                Some(_) => {}
            }
        }
        let survivor = survivor.unwrap_or_else(CustomerId::generate);
        for from in merged {
            self.merge(&from, &survivor, change);
        }
        for identity in verified {
            match self.owner(&key(identity)) {
                Some(owner) if owner == survivor => {}
                Some(previous) => {
                    self.detach(&previous, identity);
                    self.log(
                        &previous,
                        record(LinkAction::Claimed, Some(identity), Some(&survivor), change),
                    );
                    self.log(
                        &survivor,
                        record(LinkAction::Claimed, Some(identity), Some(&previous), change),
                    );
                }
                None => {}
            }
            self.attach(&survivor, identity, true);
        }
        Some(survivor)
    }

    fn merge(&mut self, from: &CustomerId, into: &CustomerId, change: &GraphChange) {
        let node = self.customers.remove(from).unwrap_or_default();
        for (key, verified) in &node.identities {
            self.owners.insert(key.clone(), into.clone());
            let held = self
                .customers
                .entry(into.clone())
                .or_default()
                .identities
                .entry(key.clone())
                .or_insert(*verified);
            *held |= *verified;
        }
        let target = self.customers.entry(into.clone()).or_default();
        target.conversations.extend(node.conversations);
        target.links.extend(node.links);
        target
            .links
            .push(record(LinkAction::MergedFrom, None, Some(from), change));
        target.aliases.extend(node.aliases);
        target.aliases.insert(from.clone());
        self.redirects.insert(from.clone(), into.clone());
    }

    pub(super) fn link(
        &mut self,
        customer: &CustomerId,
        identity: &Identity,
        change: &GraphChange,
    ) -> CustomerId {
        let target = self.canonical(customer);
        let previous = self.owner(&key(identity)).filter(|p| *p != target);
        if let Some(previous) = &previous {
            self.detach(previous, identity);
            self.log(
                previous,
                record(LinkAction::Unlinked, Some(identity), Some(&target), change),
            );
        }
        self.attach(&target, identity, identity.verified);
        self.log(
            &target,
            record(LinkAction::Linked, Some(identity), previous.as_ref(), change),
        );
        target
    }

    pub(super) fn unlink(&mut self, identity: &Identity, change: &GraphChange) -> Option<CustomerId> {
        let previous = self.owner(&key(identity))?;
        let verified = self.held_verified(&previous, &key(identity));
        let fresh = CustomerId::generate();
        self.detach(&previous, identity);
        self.log(
            &previous,
            record(LinkAction::Unlinked, Some(identity), Some(&fresh), change),
        );
        self.attach(&fresh, identity, verified);
        self.log(
            &fresh,
            record(LinkAction::Linked, Some(identity), Some(&previous), change),
        );
        Some(fresh)
    }

    pub(super) fn identities_of(&self, customer: &CustomerId) -> Vec<Identity> {
        self.customers
            .get(&self.canonical(customer))
            .map(|n| {
                n.identities
                    .iter()
                    .map(|((kind, value), verified)| Identity {
                        kind: *kind,
                        value: value.clone(),
                        verified: *verified,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn link_history(&self, customer: &CustomerId) -> Vec<LinkRecord> {
        self.customers
            .get(&self.canonical(customer))
            .map(|n| n.links.clone())
            .unwrap_or_default()
    }

    pub(super) fn add_conversation(
        &mut self,
        customer: &CustomerId,
        created_at_ms: u64,
        id: &ConversationId,
    ) {
        let customer = self.canonical(customer);
        let node = self.customers.entry(customer).or_default();
        if !node.conversations.iter().any(|(_, c)| c == id) {
            node.conversations.insert((created_at_ms, id.clone()));
        }
    }

    /// Newest first.
    pub(super) fn conversations_of(&self, customer: &CustomerId) -> Vec<ConversationId> {
        self.customers
            .get(&self.canonical(customer))
            .map(|n| n.conversations.iter().rev().map(|(_, id)| id.clone()).collect())
            .unwrap_or_default()
    }

    pub(super) fn erase(&mut self, customer: &CustomerId) -> Erased {
        let customer = self.canonical(customer);
        let Some(node) = self.customers.remove(&customer) else {
            return Erased::default();
        };
        for key in node.identities.keys() {
            self.owners.remove(key);
        }
        for alias in &node.aliases {
            self.redirects.remove(alias);
        }
        Erased {
            identities: node.identities.len() as u64,
            link_records: node.links.len() as u64,
            conversations: node.conversations.into_iter().map(|(_, id)| id).collect(),
            merged_ids: node.aliases.len() as u64,
        }
    }

    pub(super) fn append_audit(&mut self, entry: &AuditEntry) {
        self.audit.push(entry.clone());
    }

    pub(super) fn audit_entries(&self, limit: usize) -> Vec<AuditEntry> {
        self.audit[self.audit.len().saturating_sub(limit)..].to_vec()
    }
}
