//! Customer profiles on the bus: a conversation entering routing gets its customer's profile (config rules
//! over the stored profile, which caches the CRM's answer), and the profile shapes its routing task.
//!
//! The bus never awaits the CRM. When the stored profile holds no fresh CRM answer, the lookup runs on the
//! shutdown tree and the conversation waits, unrouted, until the answer or the failure comes back as a
//! command (at most the CRM timeout later); then it is routed with whatever is known.

use omnigate_connectors::model::{ConversationId, CustomerId, Identity};
use omnigate_router::{AgentId, Millis, TaskSpec};
use std::sync::Arc;

use super::actor::BusActor;
use super::conversation::ProfileState;
use super::Command;
use crate::clock::unix_ms;
use crate::customers::CrmClient;
use crate::store::{ContextStore, CustomerProfile};
use crate::telemetry::metrics;

impl BusActor {
    /// Whether the conversation's profile is ready for routing; when not, a lookup was started (or runs) and
    /// [`Command::ProfileAnswered`] routes it later.
    pub(super) async fn profile_ready(&mut self, id: &ConversationId) -> bool {
        let Some(conv) = self.conversations.get(id) else {
            return true;
        };
        match conv.profile_state {
            ProfileState::Ready => return true,
            ProfileState::Pending => return false,
            ProfileState::Unknown => {}
        }
        let customer = conv.record.customer.clone();
        let identities: Vec<Identity> = conv.identity.iter().cloned().collect();
        let stored = match self.store.load_profile(&customer).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(conversation_id = %id, %error, "customer profile not loaded; routing without it");
                None
            }
        };
        let profiles = Arc::clone(&self.settings.profiles);
        if let Some(crm) = profiles.crm.clone() {
            if profiles.needs_lookup(stored.as_ref(), unix_ms()) {
                if self.start_lookup(id, crm, customer, identities, stored.clone()) {
                    if let Some(conv) = self.conversations.get_mut(id) {
                        conv.profile_state = ProfileState::Pending;
                    }
                    return false;
                }
            } else {
                metrics::crm_lookup("cached");
            }
        }
        self.set_profile(id, stored.as_ref());
        true
    }

    /// Runs the CRM lookup on the shutdown tree; it reports back with [`Command::ProfileAnswered`]. `false`
    /// when it cannot start (the bus is stopping).
    fn start_lookup(
        &self,
        id: &ConversationId,
        crm: CrmClient,
        customer: CustomerId,
        identities: Vec<Identity>,
        stale: Option<CustomerProfile>,
    ) -> bool {
        let (Some(tx), Some(shutdown)) = (self.self_tx.upgrade(), self.shutdown.clone()) else {
            return false;
        };
        let store: Arc<dyn ContextStore> = Arc::clone(&self.store);
        let conversation = id.clone();
        shutdown.spawn(async move {
            let profile = match crm.lookup(&customer, &identities, unix_ms()).await {
                Ok(fresh) => {
                    metrics::crm_lookup("ok");
                    if let Err(error) = store.save_profile(&customer, &fresh).await {
                        tracing::warn!(conversation_id = %conversation, %error, "crm answer not cached");
                    }
                    Some(fresh)
                }
                Err(error) => {
                    metrics::crm_lookup(error.outcome());
                    tracing::warn!(
                        conversation_id = %conversation,
                        %error,
                        "crm lookup failed; routing without its data"
                    );
                    stale
                }
            };
            // The bus only stops at shutdown; then nothing waits for this answer.
            drop(
                tx.send(Command::ProfileAnswered {
                    conversation,
                    profile,
                })
                .await,
            );
        });
        true
    }

    /// A CRM lookup ended: route the conversation that waited for it.
    pub(super) async fn profile_answered(&mut self, id: ConversationId, profile: Option<CustomerProfile>) {
        let waiting = self
            .conversations
            .get(&id)
            .is_some_and(|c| c.profile_state == ProfileState::Pending);
        if !waiting {
            return;
        }
        self.set_profile(&id, profile.as_ref());
        let unrouted = self
            .conversations
            .get(&id)
            .is_some_and(|c| c.record.status == crate::store::ConversationStatus::New);
        if unrouted {
            self.enqueue(&id).await;
        }
    }

    /// The conversation's profile: what the rules say about it, overlaid with the stored (CRM) profile.
    fn set_profile(&mut self, id: &ConversationId, stored: Option<&CustomerProfile>) {
        let Some(conv) = self.conversations.get_mut(id) else {
            return;
        };
        let mut profile =
            self.settings
                .profiles
                .from_rules(conv.record.channel, conv.identity.as_ref(), &conv.attributes);
        if let Some(stored) = stored {
            profile.overlay(stored);
        }
        conv.profile = profile;
        conv.profile_state = ProfileState::Ready;
    }

    /// Adds what the conversation's profile means for routing to its task: the tier's priority and skills,
    /// tier and language as attributes, and the relationship manager as the preferred agent (unless the task
    /// already prefers its last agent).
    pub(super) fn with_profile(&self, id: &ConversationId, mut spec: TaskSpec, now: Millis) -> TaskSpec {
        let Some(conv) = self.conversations.get(id) else {
            return spec;
        };
        let profile = &conv.profile;
        let tier = self.settings.profiles.tier_routing(profile);
        spec.priority = spec.priority.saturating_add(tier.priority);
        for skill in &tier.skills {
            spec = spec.with_skill(skill, 1);
        }
        if let Some(t) = &profile.tier {
            spec = spec.with_tier(t);
        }
        if let Some(language) = &profile.language {
            spec = spec.with_language(language);
        }
        if spec.preferred_agent.is_none() {
            if let Some(rm) = profile
                .relationship_manager
                .as_ref()
                .filter(|rm| self.agents.contains_key(rm.as_str()))
            {
                let until = now.plus_ms(self.settings.profiles.relationship_manager_window_ms);
                spec = spec.with_preferred_agent(AgentId(rm.clone()), until);
            }
        }
        spec
    }
}
