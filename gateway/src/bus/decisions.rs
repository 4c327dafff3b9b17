//! Executing the router's decisions: offers, rescinds, assignments, re-queues and terminal outcomes become log
//! events and frames.

use std::collections::HashMap;

use omnigate_connectors::model::{Channel, Content, ConversationId, MessageId};
use omnigate_router::{
    Decision, EndReason, Event, Explanation, Outcome, RequeueReason, RescindReason, TaskId,
};
use serde_json::json;

use super::actor::{unavailable, BusActor};
use super::{BusError, Outbound};
use crate::clock::unix_ms;
use crate::protocol;
use crate::store::{Actor, ConversationStatus, EventKind, OfferExplanation};
use crate::telemetry::metrics;

/// How often waiting customers may be told their new position and estimated wait.
pub(super) const POSITION_PUSH_INTERVAL_MS: u64 = 500;

fn conversation_of(task: &TaskId) -> Option<ConversationId> {
    ConversationId::parse(task.as_str()).ok()
}

fn rescind_reason(reason: RescindReason) -> &'static str {
    match reason {
        RescindReason::Timeout => "timeout",
        RescindReason::Cancelled => "cancelled",
        RescindReason::AgentUnavailable => "agent_unavailable",
        RescindReason::TakenByOther => "taken",
    }
}

fn requeue_reason(reason: RequeueReason) -> &'static str {
    match reason {
        RequeueReason::AgentDisconnected => "agent_disconnected",
        RequeueReason::Transferred => "transferred",
        RequeueReason::NoReply => "no_reply",
    }
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Callback => "callback",
        Outcome::Message => "leave_message",
        Outcome::OutOfHours => "out_of_hours",
        Outcome::Expired => "expired",
    }
}

fn end_reason(reason: EndReason) -> &'static str {
    match reason {
        EndReason::WorkflowStep => "workflow_step",
        EndReason::MaxWait => "max_wait",
        EndReason::QueueFull => "queue_full",
        EndReason::Closed => "queue_closed",
    }
}

fn explanation(e: Explanation) -> OfferExplanation {
    OfferExplanation {
        why: e.why,
        queue: e.queue,
        score: e.score,
        emergency: e.emergency,
        step: e.step,
        agents_scanned: e.agents_scanned,
        skipped_skills: e.skipped_skills,
        skipped_capacity: e.skipped_capacity,
        skipped_excluded: e.skipped_excluded,
        tasks_scanned: e.tasks_scanned,
        chosen: e.chosen.into_iter().map(|a| a.0).collect(),
    }
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
        let (decisions, explanations) = self
            .router
            .handle_explained(self.clock.now(), event)
            .map_err(|e| BusError::NotAllowed(e.to_string()))?;
        self.apply(decisions, explanations).await;
        Ok(())
    }

    pub(super) async fn apply(&mut self, decisions: Vec<Decision>, explanations: Vec<Explanation>) {
        let mut explanations: HashMap<TaskId, Explanation> =
            explanations.into_iter().map(|e| (e.task.clone(), e)).collect();
        for decision in decisions {
            if let Err(error) = self.apply_one(decision, &mut explanations).await {
                tracing::error!(%error, "routing decision not fully applied");
            }
        }
        self.schedule_position_push();
    }

    async fn apply_one(
        &mut self,
        decision: Decision,
        explanations: &mut HashMap<TaskId, Explanation>,
    ) -> Result<(), BusError> {
        match decision {
            Decision::Offer {
                task,
                agent,
                expires_at,
            } => {
                metrics::routing_decision("offer");
                let why = explanations.remove(&task).map(explanation);
                if let Some(id) = conversation_of(&task) {
                    self.offer(id, agent.0, expires_at, why).await?;
                }
            }
            Decision::Rescind { task, agent, reason } => {
                metrics::routing_decision("rescind");
                if let Some(id) = conversation_of(&task) {
                    self.withdraw_offer(&id, agent.as_str(), rescind_reason(reason))
                        .await;
                }
            }
            Decision::Assigned { task, agent } => {
                metrics::routing_decision("assigned");
                if let Some(id) = conversation_of(&task) {
                    self.assign(id, agent.0).await?;
                }
            }
            Decision::Requeued { task, from, reason } => {
                metrics::routing_decision("requeued");
                if let Some(id) = conversation_of(&task) {
                    self.requeued(id, from.0, reason).await?;
                }
            }
            Decision::Ended {
                task,
                outcome,
                reason,
            } => {
                metrics::routing_decision("ended");
                if let Some(id) = conversation_of(&task) {
                    self.ended(id, outcome, reason).await?;
                }
            }
            Decision::Overflowed { task, from, to } => {
                metrics::routing_decision("overflowed");
                if let Some(id) = conversation_of(&task) {
                    if let Some(conv) = self.conversations.get_mut(&id) {
                        conv.record.queue = to.clone();
                    }
                    tracing::info!(conversation_id = %id, from = %from, to = %to, "conversation overflowed");
                    self.append(&id, Actor::System, EventKind::Queued { queue: to }, None)
                        .await?;
                    self.save(&id).await;
                }
            }
            Decision::AgentNotRoutable { agent, misses } => {
                metrics::routing_decision("agent_not_routable");
                tracing::warn!(agent = %agent, misses, "agent missed offers in a row; no new offers until available again");
                if let Some(entry) = self.agents.get(agent.as_str()) {
                    let frame = protocol::not_routable(misses);
                    for c in &entry.conns {
                        c.push(Outbound::Frame(frame.clone()));
                    }
                }
            }
            Decision::SlaBreached { task, target_ms } => {
                metrics::sla_breached();
                if let Some(id) = conversation_of(&task) {
                    tracing::warn!(conversation_id = %id, target_ms, "waiting conversation passed a service-level target");
                }
            }
        }
        Ok(())
    }

    async fn offer(
        &mut self,
        id: ConversationId,
        agent: String,
        expires_at: omnigate_router::Millis,
        explanation: Option<OfferExplanation>,
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
        self.append(
            &id,
            Actor::System,
            EventKind::Offered {
                agent_id: agent,
                explanation,
            },
            None,
        )
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
        conv.position_message_at = None;
        let details = json!({
            "channel": conv.record.channel,
            "queue": conv.record.queue,
            "customer_id": conv.record.customer,
            "customer_profile": conv.profile.for_agents(),
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
        let reason = requeue_reason(reason);
        if let Some(conv) = self.conversations.get_mut(&id) {
            conv.record.status = ConversationStatus::Queued;
            conv.record.agent = None;
            conv.last_agent = Some(from.clone());
        }
        self.queued.insert(id.clone());
        self.release_agent(&from, &id, Some(reason));
        let kind = EventKind::Requeued {
            agent_id: from,
            reason: reason.to_owned(),
        };
        self.append(&id, Actor::System, kind, None).await?;
        self.save(&id).await;
        Ok(())
    }

    /// Routing ended without an agent: the customer is told the outcome and the conversation closes (a new
    /// message within the reopen window routes it again).
    async fn ended(
        &mut self,
        id: ConversationId,
        outcome: Outcome,
        reason: EndReason,
    ) -> Result<(), BusError> {
        let Some(conv) = self.conversations.get_mut(&id) else {
            return Ok(());
        };
        if let Some((agent, _)) = conv.offer.take() {
            if let Some(entry) = self.agents.get_mut(&agent) {
                entry.offers.remove(&id);
            }
        }
        conv.record.status = ConversationStatus::Closed;
        conv.record.closed_at_ms = Some(unix_ms());
        conv.told_position = None;
        conv.position_message_at = None;
        self.queued.remove(&id);
        self.open_conversation_closed();
        let kind = EventKind::RoutingEnded {
            outcome: outcome_name(outcome).to_owned(),
            reason: end_reason(reason).to_owned(),
        };
        self.schedule_eviction(&id);
        self.append(&id, Actor::System, kind, None).await?;
        self.save(&id).await;
        Ok(())
    }

    /// Asks for a position push soon, unless one is already due.
    fn schedule_position_push(&mut self) {
        if self.positions_due.is_none() {
            self.positions_due = Some(self.clock.now().plus_ms(POSITION_PUSH_INTERVAL_MS));
        }
    }

    /// Tells each waiting customer of a changed queue its position and estimated wait, when they changed.
    pub(super) async fn push_positions(&mut self) {
        self.positions_due = None;
        let mut messages = Vec::new();
        for queue in self.router.take_changed_queues() {
            let Ok(waiting) = self.router.waiting(&queue) else {
                continue;
            };
            for task in waiting {
                let Some(id) = conversation_of(&task.task) else {
                    continue;
                };
                let Some(conv) = self.conversations.get_mut(&id) else {
                    continue;
                };
                let told = Some((task.position, task.estimated_wait_ms));
                if conv.told_position == told {
                    continue;
                }
                conv.told_position = told;
                if let Some(entry) = self.customers.get(&conv.record.customer) {
                    let frame = protocol::queue_position(&id, task.position, task.estimated_wait_ms);
                    for c in &entry.conns {
                        c.push(Outbound::Frame(frame.clone()));
                    }
                }
                let live_frames = matches!(conv.record.channel, Channel::Web | Channel::App);
                let crossed = position_threshold_crossed(
                    &self.settings.position_message_thresholds,
                    task.position,
                    conv.position_message_at,
                );
                if let (false, Some(threshold)) = (live_frames, crossed) {
                    conv.position_message_at = Some(threshold);
                    let text = position_text(
                        &self.settings.position_message,
                        task.position,
                        task.estimated_wait_ms,
                    );
                    messages.push((id, text));
                }
            }
        }
        for (id, text) in messages {
            self.send_system_message(&id, text).await;
        }
    }

    /// Stores a message from the contact center itself (not an agent) and hands it to the conversation's channel.
    async fn send_system_message(&mut self, id: &ConversationId, text: String) {
        let message_id = MessageId::generate();
        let content = Content::Text { text };
        let kind = EventKind::Message {
            message_id: message_id.clone(),
            client_msg_id: String::new(),
            content: content.clone(),
            via: None,
        };
        match self.append(id, Actor::System, kind, None).await {
            Ok(_) => self.hand_to_channel(id, message_id, content, None).await,
            Err(error) => tracing::warn!(conversation_id = %id, %error, "position message not stored"),
        }
    }
}

/// The threshold a customer's new `position` reaches for the first time in this wait, if any: the smallest
/// threshold at or above it that is below the last one messaged.
fn position_threshold_crossed(thresholds: &[u32], position: usize, last: Option<u32>) -> Option<u32> {
    thresholds
        .iter()
        .copied()
        .filter(|t| position <= *t as usize && last.is_none_or(|l| *t < l))
        .min()
}

/// Fills in the position message template.
fn position_text(template: &str, position: usize, estimated_wait_ms: Option<u64>) -> String {
    let minutes =
        estimated_wait_ms.map_or_else(|| "a few".to_owned(), |ms| ms.div_ceil(60_000).max(1).to_string());
    template
        .replace("{position}", &position.to_string())
        .replace("{minutes}", &minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_threshold_is_messaged_once_as_the_queue_moves_up() {
        let t = [10, 3, 1];
        assert_eq!(position_threshold_crossed(&t, 12, None), None);
        assert_eq!(position_threshold_crossed(&t, 8, None), Some(10));
        assert_eq!(position_threshold_crossed(&t, 7, Some(10)), None);
        assert_eq!(position_threshold_crossed(&t, 2, Some(10)), Some(3));
        assert_eq!(position_threshold_crossed(&t, 1, Some(3)), Some(1));
        assert_eq!(position_threshold_crossed(&t, 1, Some(1)), None);
        assert_eq!(position_threshold_crossed(&[], 1, None), None);
    }

    #[test]
    fn the_template_gets_position_and_minutes() {
        assert_eq!(
            position_text("#{position}, {minutes} min", 3, Some(61_000)),
            "#3, 2 min"
        );
        assert_eq!(
            position_text("#{position}, {minutes} min", 1, None),
            "#1, a few min"
        );
    }
}
