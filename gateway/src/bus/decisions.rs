//! Executing the router's decisions: offers, rescinds, assignments and re-queues become log events and frames.

use omnigate_connectors::model::ConversationId;
use omnigate_router::{Decision, Event, RequeueReason, RescindReason};
use serde_json::json;

use super::actor::{unavailable, BusActor};
use super::{BusError, Outbound};
use crate::protocol;
use crate::store::{Actor, ConversationStatus, EventKind};
use crate::telemetry::metrics;

fn conversation_of(task: &omnigate_router::TaskId) -> Option<ConversationId> {
    ConversationId::parse(task.as_str()).ok()
}

impl BusActor {
    /// Feeds the router an event it must accept (time, presence); a refusal is logged.
    pub(super) async fn route(&mut self, event: Event) {
        if let Err(error) = self.route_checked(event).await {
            tracing::error!(%error, "router refused an event");
        }
    }

    /// Feeds the router an event that a client asked for; a refusal goes back to the client.
    pub(super) async fn route_checked(&mut self, event: Event) -> Result<(), BusError> {
        let decisions = self
            .router
            .handle(self.clock.now(), event)
            .map_err(|e| BusError::NotAllowed(e.to_string()))?;
        self.apply(decisions).await;
        Ok(())
    }

    pub(super) async fn apply(&mut self, decisions: Vec<Decision>) {
        for decision in decisions {
            let result = match decision {
                Decision::Offer {
                    task,
                    agent,
                    expires_at,
                } => {
                    metrics::routing_decision("offer");
                    match conversation_of(&task) {
                        Some(id) => self.offer(id, agent.0, expires_at).await,
                        None => Ok(()),
                    }
                }
                Decision::Rescind { task, agent, reason } => {
                    metrics::routing_decision("rescind");
                    let reason = match reason {
                        RescindReason::Timeout => "timeout",
                        RescindReason::Cancelled => "cancelled",
                        RescindReason::AgentUnavailable => "agent_unavailable",
                    };
                    if let Some(id) = conversation_of(&task) {
                        self.withdraw_offer(&id, agent.as_str(), reason).await;
                    }
                    Ok(())
                }
                Decision::Assigned { task, agent } => {
                    metrics::routing_decision("assigned");
                    match conversation_of(&task) {
                        Some(id) => self.assign(id, agent.0).await,
                        None => Ok(()),
                    }
                }
                Decision::Requeued { task, from, reason } => {
                    metrics::routing_decision("requeued");
                    match conversation_of(&task) {
                        Some(id) => self.requeued(id, from.0, reason).await,
                        None => Ok(()),
                    }
                }
            };
            if let Err(error) = result {
                tracing::error!(%error, "routing decision not fully applied");
            }
        }
        self.push_positions();
    }

    async fn offer(
        &mut self,
        id: ConversationId,
        agent: String,
        expires_at: omnigate_router::Millis,
    ) -> Result<(), BusError> {
        let now = self.clock.now();
        let Some(conv) = self.conversations.get_mut(&id) else {
            return Ok(());
        };
        conv.offer = Some((agent.clone(), expires_at));
        conv.record.status = ConversationStatus::Offered;
        self.queued.remove(&id);
        if let Some(details) = self.offer_details(&id, now) {
            if let Some(entry) = self.agents.get_mut(&agent) {
                entry.offers.insert(id.clone());
                let frame = protocol::offer(&id, details, expires_at.since(now));
                for c in &entry.conns {
                    c.push(Outbound::Frame(frame.clone()));
                }
            }
        }
        self.append(&id, Actor::System, EventKind::Offered { agent_id: agent }, None)
            .await?;
        Ok(())
    }

    /// Records that an agent no longer holds an offer and tells its sockets.
    pub(super) async fn withdraw_offer(&mut self, id: &ConversationId, agent: &str, reason: &str) {
        if let Some(entry) = self.agents.get_mut(agent) {
            if entry.offers.remove(id) && reason != "rejected" {
                let frame = protocol::offer_rescinded(id, reason);
                for c in &entry.conns {
                    c.push(Outbound::Frame(frame.clone()));
                }
            }
        }
        let Some(conv) = self.conversations.get_mut(id) else {
            return;
        };
        if conv.offer.as_ref().is_some_and(|(a, _)| a == agent) {
            conv.offer = None;
            if conv.record.status == ConversationStatus::Offered {
                conv.record.status = ConversationStatus::Queued;
                self.queued.insert(id.clone());
            }
        }
        let kind = EventKind::OfferWithdrawn {
            agent_id: agent.to_owned(),
            reason: reason.to_owned(),
        };
        if let Err(error) = self.append(id, Actor::System, kind, None).await {
            tracing::warn!(conversation_id = %id, %error, "offer withdrawal not logged");
        }
    }

    async fn assign(&mut self, id: ConversationId, agent: String) -> Result<(), BusError> {
        let name = self
            .agents
            .get(&agent)
            .map(|a| a.name.clone())
            .unwrap_or_default();
        let Some(conv) = self.conversations.get_mut(&id) else {
            return Ok(());
        };
        conv.offer = None;
        conv.record.status = ConversationStatus::Assigned;
        conv.record.agent = Some(agent.clone());
        conv.last_agent = Some(agent.clone());
        conv.told_position = None;
        let details = json!({
            "channel": conv.record.channel,
            "queue": conv.record.queue,
            "customer_id": conv.record.customer,
            "last_seq": conv.last_seq,
        });
        self.queued.remove(&id);
        if let Some(entry) = self.agents.get_mut(&agent) {
            entry.offers.remove(&id);
            entry.assigned.insert(id.clone());
            let frame = protocol::assigned(&id, details);
            for c in &entry.conns {
                c.push(Outbound::Frame(frame.clone()));
                c.push(Outbound::Track {
                    conversation: id.clone(),
                    after: 0,
                });
            }
        }
        let kind = EventKind::Assigned {
            agent_id: agent.clone(),
            agent_name: name,
        };
        self.append(&id, Actor::System, kind, None).await?;
        self.channel_assigned(&id, &agent).await;
        if let Some(conv) = self.conversations.get(&id) {
            self.store
                .save_conversation(&conv.record)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn requeued(
        &mut self,
        id: ConversationId,
        from: String,
        reason: RequeueReason,
    ) -> Result<(), BusError> {
        if reason == RequeueReason::Transferred {
            // The transfer itself was logged with its target and reason.
            return Ok(());
        }
        if let Some(conv) = self.conversations.get_mut(&id) {
            conv.record.status = ConversationStatus::Queued;
            conv.record.agent = None;
            conv.last_agent = Some(from.clone());
        }
        self.queued.insert(id.clone());
        self.release_agent(&from, &id, Some("agent_disconnected"));
        let kind = EventKind::Requeued {
            agent_id: from,
            reason: "agent_disconnected".to_owned(),
        };
        self.append(&id, Actor::System, kind, None).await?;
        Ok(())
    }

    /// Tells each waiting customer its queue position when it changed.
    fn push_positions(&mut self) {
        let queued: Vec<ConversationId> = self.queued.iter().cloned().collect();
        for id in queued {
            let position = self
                .router
                .queue_position(&omnigate_router::TaskId(id.to_string()));
            let Some(conv) = self.conversations.get_mut(&id) else {
                continue;
            };
            if position.is_none() || conv.told_position == position {
                continue;
            }
            conv.told_position = position;
            let customer = conv.record.customer.clone();
            if let (Some(entry), Some(position)) = (self.customers.get(&customer), position) {
                let frame = protocol::queue_position(&id, position);
                for c in &entry.conns {
                    c.push(Outbound::Frame(frame.clone()));
                }
            }
        }
    }
}
