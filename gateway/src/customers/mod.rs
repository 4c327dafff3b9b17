//! Customers across channels, above the store's identity graph: profiles for routing (config rules, the
//! tiers' routing policy, the CRM lookup), the `customer.context` an agent gets on accept, agents' link and
//! unlink of identities, and erasure with its audit entry.
//!
//! The session bus asks [`Profiles`] what to know about a conversation's customer when the conversation
//! enters routing. Rules are pure and answer at once; the CRM lookup is IO, so the bus never awaits it: it
//! runs on the shutdown tree and reports back, bounded by its timeout (`bus/profile.rs`).
//!
//! Layout:
//! - `rules.rs`: `[[customers.rules]]` matching (pure)
//! - `crm.rs`: the signed CRM webhook client
//! - `context.rs`: the customer's recent conversations and open complaints as a frame
//! - `links.rs`: an agent links or unlinks an identity of a conversation's customer
//! - `erasure.rs`: erase a customer everywhere (bus, store) and audit it

mod context;
mod crm;
mod erasure;
mod links;
mod rules;

use std::collections::BTreeMap;

use omnigate_connectors::model::{Channel, Identity};

use crate::store::CustomerProfile;

pub use context::{context_frame, render_context, HistorySettings};
pub use crm::{CrmClient, CrmError};
pub use erasure::{erase_customer, EraseError, Erasure, ERASED_ACTION};
pub use links::{change_identity, IdentityChange, LinkError};
pub use rules::{ProfileRules, RuleContext};

/// What a tier changes in routing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierRouting {
    /// Priority added to the task.
    pub priority: u8,
    /// Skills required of the agent.
    pub skills: Vec<String>,
}

/// Everything the bus needs to build and use customer profiles.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    rules: ProfileRules,
    tiers: BTreeMap<String, TierRouting>,
    /// How long the relationship manager is preferred.
    pub relationship_manager_window_ms: u64,
    /// The CRM lookup, when configured.
    pub crm: Option<CrmClient>,
}

impl Profiles {
    /// From the `[customers]` section.
    ///
    /// # Errors
    /// [`CrmError::Misconfigured`] for an unusable CRM secret or HTTP client.
    pub fn from_config(config: &omnigate_config::Customers) -> Result<Profiles, CrmError> {
        Ok(Profiles {
            rules: ProfileRules::new(config.rules.clone()),
            tiers: config
                .tiers
                .iter()
                .map(|(name, t)| {
                    (
                        name.clone(),
                        TierRouting {
                            priority: t.priority,
                            skills: t.skills.clone(),
                        },
                    )
                })
                .collect(),
            relationship_manager_window_ms: config.relationship_manager_window_secs * 1000,
            crm: config.crm.as_ref().map(CrmClient::from_config).transpose()?,
        })
    }

    /// The profile the rules give a conversation.
    pub fn from_rules(
        &self,
        channel: Channel,
        identity: Option<&Identity>,
        attributes: &BTreeMap<String, String>,
    ) -> CustomerProfile {
        self.rules.apply(&RuleContext {
            channel,
            identity,
            attributes,
        })
    }

    /// The routing policy of a profile's tier (none for an unknown or missing tier).
    pub fn tier_routing(&self, profile: &CustomerProfile) -> TierRouting {
        profile
            .tier
            .as_ref()
            .and_then(|t| self.tiers.get(t))
            .cloned()
            .unwrap_or_default()
    }

    /// Whether the CRM must be asked: it is configured and `stored` holds no answer younger than its cache TTL.
    pub fn needs_lookup(&self, stored: Option<&CustomerProfile>, now_ms: u64) -> bool {
        let Some(crm) = &self.crm else { return false };
        let fetched = stored.and_then(|p| p.crm_fetched_at_ms);
        fetched.is_none_or(|at| now_ms.saturating_sub(at) >= crm.cache_ttl_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_crm(cache_ttl_secs: u64) -> Profiles {
        let config = omnigate_config::Customers {
            crm: Some(omnigate_config::Crm {
                url: "http://127.0.0.1:9/crm".into(),
                secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned().into(),
                timeout_ms: 100,
                cache_ttl_secs,
            }),
            ..omnigate_config::Customers::default()
        };
        Profiles::from_config(&config).expect("profiles")
    }

    #[test]
    fn the_crm_is_asked_without_a_fresh_answer_only() {
        let profiles = with_crm(60);
        let fresh = CustomerProfile {
            crm_fetched_at_ms: Some(1_000),
            ..CustomerProfile::default()
        };
        assert!(profiles.needs_lookup(None, 1_000));
        assert!(profiles.needs_lookup(Some(&CustomerProfile::default()), 1_000));
        assert!(!profiles.needs_lookup(Some(&fresh), 60_999));
        assert!(profiles.needs_lookup(Some(&fresh), 61_000));
        assert!(!Profiles::default().needs_lookup(None, 0), "no CRM, no lookup");
    }

    #[test]
    fn a_tier_maps_to_its_routing_policy() {
        let config = omnigate_config::Customers {
            tiers: BTreeMap::from([(
                "vip".to_owned(),
                omnigate_config::TierPolicy {
                    priority: 5,
                    skills: vec!["vip".into()],
                },
            )]),
            ..omnigate_config::Customers::default()
        };
        let profiles = Profiles::from_config(&config).unwrap();
        let vip = CustomerProfile {
            tier: Some("vip".into()),
            ..CustomerProfile::default()
        };
        assert_eq!(profiles.tier_routing(&vip).priority, 5);
        assert_eq!(profiles.tier_routing(&vip).skills, vec!["vip".to_owned()]);
        assert_eq!(
            profiles.tier_routing(&CustomerProfile::default()),
            TierRouting::default()
        );
    }
}
