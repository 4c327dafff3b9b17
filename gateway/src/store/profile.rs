//! A customer's profile: what routing and agents know about the customer beyond the conversation.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Tier, tags, language, relationship manager and risk flags of one customer. Stored per customer (filled
/// by the CRM lookup, cached with the time of the answer); config rules add to it per conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerProfile {
    /// `standard`, `vip`, `private_banking`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Free-form labels shown to the agent.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tags: BTreeSet<String>,
    /// Preferred language (`zh`, `en`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The agent id of the customer's relationship manager (preferred in routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationship_manager: Option<String>,
    /// Risk flags shown to the agent (`fraud_watch`, `pep`, ...).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub risk_flags: BTreeSet<String>,
    /// Unix ms of the CRM answer this profile holds, if it came from the CRM (the cache's age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_fetched_at_ms: Option<u64>,
}

impl CustomerProfile {
    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.tier.is_none()
            && self.tags.is_empty()
            && self.language.is_none()
            && self.relationship_manager.is_none()
            && self.risk_flags.is_empty()
    }

    /// Lays `over` on top of this profile: its single values win where it has them, its tags and risk flags
    /// are added.
    pub fn overlay(&mut self, over: &CustomerProfile) {
        if over.tier.is_some() {
            self.tier.clone_from(&over.tier);
        }
        if over.language.is_some() {
            self.language.clone_from(&over.language);
        }
        if over.relationship_manager.is_some() {
            self.relationship_manager.clone_from(&over.relationship_manager);
        }
        self.tags.extend(over.tags.iter().cloned());
        self.risk_flags.extend(over.risk_flags.iter().cloned());
        if over.crm_fetched_at_ms.is_some() {
            self.crm_fetched_at_ms = over.crm_fetched_at_ms;
        }
    }

    /// The fields agents see (offer, accept), without the cache bookkeeping.
    pub fn for_agents(&self) -> serde_json::Value {
        serde_json::json!({
            "tier": self.tier,
            "tags": self.tags,
            "language": self.language,
            "relationship_manager": self.relationship_manager,
            "risk_flags": self.risk_flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlay_replaces_single_values_and_adds_sets() {
        let mut base = CustomerProfile {
            tier: Some("standard".into()),
            tags: BTreeSet::from(["a".to_owned()]),
            language: Some("zh".into()),
            ..CustomerProfile::default()
        };
        base.overlay(&CustomerProfile {
            tier: Some("vip".into()),
            tags: BTreeSet::from(["b".to_owned()]),
            risk_flags: BTreeSet::from(["pep".to_owned()]),
            ..CustomerProfile::default()
        });
        assert_eq!(base.tier.as_deref(), Some("vip"));
        assert_eq!(base.language.as_deref(), Some("zh"));
        assert_eq!(base.tags.len(), 2);
        assert!(base.risk_flags.contains("pep"));
        assert!(!base.is_empty());
        assert!(CustomerProfile::default().is_empty());
    }
}
