//! Appends in flight. A plain message to a conversation the bus already holds (a websocket send, or a
//! provider's message with its `channel.received` record, appended one after the other by the same item) is
//! sent to the store without waiting for its answer, so the round trips of a remote store (Redis) overlap
//! instead of queueing behind each other. Nothing is acked or fanned out before the store answers.
//!
//! Order: a conversation has at most one append in flight; a second send to it first waits for the first's
//! answer ([`BusActor::settle_conversation`]). So each conversation's events are numbered, acked and told in
//! the order the bus took its sends, whatever the connection does meanwhile (a reconnection, or a script
//! reloaded after a Redis restart, can reorder requests in flight). Answers are taken in the order sent. Any
//! other command, timer or direct append first waits until every answer is in
//! ([`BusActor::settle_pipeline`]), so it sees the bus as if the sends had run one by one; so does a delivery
//! ack for a conversation with an append in flight (it is checked against the last numbered event).
//!
//! A pipelined send is checked when it is taken, and only what no pipelined answer can change is checked:
//! the conversation is in memory, open and past `new` (a customer's or a provider's message), or assigned to
//! the agent and not on a connector channel (an agent's; a WeChat or SMS reply goes to the outbox after its
//! answer, which appends its delivery state, so it runs alone to keep the outbox in the agent's order).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use futures_util::stream::{FuturesOrdered, StreamExt};
use omnigate_connectors::model::{Channel, Content, ConversationId, CustomerId, Identity};

use super::actor::{customer_message, BusActor};
use super::channel::received_event;
use super::{AgentBody, BusError, ChannelInbound, Command, Reply, Route, SendAck};
use crate::clock::unix_ms;
use crate::store::{Actor, Appended, ConversationStatus, EventKind, StoreError};
use crate::telemetry::metrics;

/// Appends sent and not yet answered, at most; the next waits for the oldest answer.
const MAX_IN_FLIGHT: usize = 256;

/// What a pipelined send does once the store has answered.
pub(super) enum Sent {
    Customer {
        id: ConversationId,
        actor: Actor,
        content: Content,
        attributes: BTreeMap<String, String>,
        reply: Reply<SendAck>,
    },
    Agent {
        agent: String,
        id: ConversationId,
        role: &'static str,
        route: Option<Route>,
        reply: Reply<SendAck>,
    },
    /// A provider's message: the customer's message, then its `channel.received` record, appended one after
    /// the other by the same item (`received` is the second append's answer, if it was sent).
    Channel {
        id: ConversationId,
        actor: Actor,
        content: Content,
        from: Identity,
        attributes: BTreeMap<String, String>,
        route: bool,
        /// Boxed: an answer is as large as a stored event, and the other sends have none.
        received: Option<Box<Result<Appended, StoreError>>>,
        reply: Reply<SendAck>,
    },
}

/// The store's answer to one pipelined append, with what follows it.
pub(super) struct Answer {
    stored: Result<Appended, StoreError>,
    sent: Sent,
}

type InFlight = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// The bus's appends in flight, oldest first.
///
/// In a mutex only so the bus stays `Sync` (its `&self` methods are held across awaits); it is reached only
/// through `&mut self`, with `get_mut`, so it is never locked.
#[derive(Default)]
pub(super) struct Pipeline {
    in_flight: tokio::sync::Mutex<FuturesOrdered<InFlight>>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let in_flight = self.in_flight.try_lock().map_or(0, |f| f.len());
        f.debug_struct("Pipeline").field("in_flight", &in_flight).finish()
    }
}

impl Pipeline {
    /// Whether an append is waiting for its answer.
    pub(super) fn is_busy(&mut self) -> bool {
        !self.queue().is_empty()
    }

    fn queue(&mut self) -> &mut FuturesOrdered<InFlight> {
        self.in_flight.get_mut()
    }

    /// The oldest answer, once it is in; pending forever when nothing is in flight (for `select!`).
    pub(super) async fn next_answer(&mut self) -> Answer {
        match self.queue().next().await {
            Some(answer) => {
                metrics::bus_appends_in_flight(self.queue().len());
                answer
            }
            None => std::future::pending().await,
        }
    }

    fn push(&mut self, append: InFlight) {
        let queue = self.queue();
        queue.push_back(append);
        metrics::bus_appends_in_flight(queue.len());
    }
}

impl BusActor {
    /// Runs a command that needs nothing from the store but its append, without waiting for the store; gives
    /// back any other command, to be run alone once every answer is in.
    pub(super) async fn try_pipeline(&mut self, command: Command) -> Option<Command> {
        let target = match &command {
            Command::CustomerSend {
                customer,
                channel,
                conversation,
                ..
            } => self.pipelined_customer_target(customer, *channel, conversation.as_ref()),
            Command::AgentSend {
                agent,
                conversation,
                body,
                ..
            } => self
                .pipelined_agent_send(agent, conversation, body)
                .then(|| conversation.clone()),
            Command::ChannelInbound { inbound, .. } => {
                self.pipelined_customer_target(&inbound.customer, inbound.message.channel, None)
            }
            Command::Typing {
                who,
                conversation,
                state,
            } => {
                self.typing(who, conversation, state);
                return None;
            }
            Command::Delivered {
                who,
                conversation,
                seq,
            } => {
                // Checked against the last numbered event: an answer in flight may number what is acked.
                self.settle_conversation(conversation).await;
                self.delivered(who, conversation, *seq);
                return None;
            }
            _ => None,
        };
        let Some(id) = target else {
            return Some(command);
        };
        // Only what another send's answer cannot change was checked, so it still holds after this.
        self.settle_conversation(&id).await;
        let store = Arc::clone(&self.store);
        let conversation = id.clone();
        let append: InFlight = match command {
            Command::CustomerSend {
                customer,
                client_msg_id,
                content,
                attributes,
                reply,
                ..
            } => {
                let event = customer_message(&customer, client_msg_id, &content);
                let sent = Sent::Customer {
                    id: id.clone(),
                    actor: event.actor.clone(),
                    content,
                    attributes,
                    reply,
                };
                Box::pin(async move {
                    let stored = store.append(&conversation, event).await;
                    Answer { stored, sent }
                })
            }
            Command::AgentSend {
                agent,
                client_msg_id,
                body,
                reply,
                ..
            } => {
                let send = match self.agent_event(&agent, &id, client_msg_id, body) {
                    Ok(send) => send,
                    Err(error) => {
                        drop(reply.send(Err(error)));
                        return None;
                    }
                };
                let event = send.event;
                let sent = Sent::Agent {
                    agent,
                    id: id.clone(),
                    role: send.role,
                    route: send.route,
                    reply,
                };
                Box::pin(async move {
                    let stored = store.append(&conversation, event).await;
                    Answer { stored, sent }
                })
            }
            Command::ChannelInbound { inbound, reply } => {
                let ChannelInbound {
                    customer,
                    account,
                    message,
                    attributes,
                    route,
                    ..
                } = inbound;
                let event = customer_message(&customer, message.dedupe_key.clone(), &message.content);
                let mut sent = Sent::Channel {
                    id: id.clone(),
                    actor: event.actor.clone(),
                    content: message.content.clone(),
                    from: message.from.clone(),
                    attributes,
                    route,
                    received: None,
                    reply,
                };
                Box::pin(async move {
                    let stored = store.append(&conversation, event).await;
                    // The record names the message as stored (a retry's is the original's).
                    let stored_id = match &stored {
                        Ok(appended) => match &appended.event().kind {
                            EventKind::Message { message_id, .. } => Some(message_id.clone()),
                            _ => None,
                        },
                        Err(_) => None,
                    };
                    if let (Some(message_id), Sent::Channel { received, .. }) = (stored_id, &mut sent) {
                        let record = received_event(customer, account, message, message_id);
                        *received = Some(Box::new(store.append(&conversation, record).await));
                    }
                    Answer { stored, sent }
                })
            }
            other => return Some(other),
        };
        self.send_pipelined(id, append).await;
        None
    }

    /// The conversation a customer's send can be pipelined to: one it names or would go to that the bus holds,
    /// open and routed (so the answer needs no reload, reopen or queueing).
    fn pipelined_customer_target(
        &self,
        customer: &CustomerId,
        channel: Channel,
        requested: Option<&ConversationId>,
    ) -> Option<ConversationId> {
        if requested.is_some_and(|id| !self.conversations.contains_key(id)) {
            return None;
        }
        self.customer_target(customer, channel, requested.cloned(), unix_ms())
            .ok()
            .flatten()
            .filter(|id| {
                self.conversations
                    .get(id)
                    .is_some_and(|c| c.is_open() && c.record.status != ConversationStatus::New)
            })
    }

    /// Whether an agent's send can be pipelined: the conversation is assigned to them and the answer hands
    /// nothing to a connector's outbox.
    fn pipelined_agent_send(&self, agent: &str, conversation: &ConversationId, body: &AgentBody) -> bool {
        let on_connector = |channel| {
            self.settings
                .outbound
                .as_ref()
                .is_some_and(|o| o.handles(channel))
        };
        self.conversations.get(conversation).is_some_and(|c| {
            c.assigned_to(agent)
                && match body {
                    AgentBody::Note(_) => true,
                    AgentBody::Message(_, None) => !on_connector(c.record.channel),
                    AgentBody::Message(_, Some(_)) => false,
                }
        })
    }

    /// Sends `append` (the appends of one send, to conversation `id`) to the store now and keeps its
    /// answer's place in line.
    async fn send_pipelined(&mut self, id: ConversationId, mut append: InFlight) {
        if self.pipeline.queue().len() >= MAX_IN_FLIGHT {
            let answer = self.pipeline.next_answer().await;
            self.finish_pipelined(answer).await;
        }
        // Counted until its answer is finished (`finish_pipelined`), including the at-once answer below.
        if let Some(conv) = self.conversations.get_mut(&id) {
            conv.appends_in_flight += 1;
        }
        match std::future::poll_fn(|cx| Poll::Ready(append.as_mut().poll(cx))).await {
            // The embedded store answers at once: nothing to keep in line.
            Poll::Ready(answer) if !self.pipeline.is_busy() => self.finish_pipelined(answer).await,
            Poll::Ready(answer) => self.pipeline.push(Box::pin(std::future::ready(answer))),
            Poll::Pending => self.pipeline.push(append),
        }
    }

    /// Takes answers until none of conversation `id`'s appends is in flight (answers come in order, so this
    /// takes only those sent up to its last one).
    pub(super) async fn settle_conversation(&mut self, id: &ConversationId) {
        while self.pipeline.is_busy()
            && self
                .conversations
                .get(id)
                .is_some_and(|c| c.appends_in_flight > 0)
        {
            let answer = self.pipeline.next_answer().await;
            self.finish_pipelined(answer).await;
        }
    }

    /// Acks and fans out one answered append, as the unpipelined send would have.
    pub(super) async fn finish_pipelined(&mut self, answer: Answer) {
        let Answer { stored, sent } = answer;
        let (Sent::Customer { id, .. } | Sent::Agent { id, .. } | Sent::Channel { id, .. }) = &sent;
        if let Some(conv) = self.conversations.get_mut(id) {
            conv.appends_in_flight = conv.appends_in_flight.saturating_sub(1);
        }
        match sent {
            Sent::Customer {
                id,
                actor,
                content,
                attributes,
                reply,
            } => {
                let result = match self.record_appended(&id, stored).await {
                    Ok(appended) => {
                        self.customer_message_stored(id, actor, appended, &content, false, false)
                            .await
                    }
                    Err(error) => Err(error),
                };
                self.customer_send_answered(result, attributes, reply).await;
            }
            Sent::Agent {
                agent,
                id,
                role,
                route,
                reply,
            } => {
                let result = match self.record_appended(&id, stored).await {
                    Ok(appended) => self.agent_message_stored(agent, id, appended, role, route).await,
                    Err(error) => Err(error),
                };
                drop(reply.send(result));
            }
            Sent::Channel {
                id,
                actor,
                content,
                from,
                attributes,
                route,
                received,
                reply,
            } => {
                let result = self
                    .channel_message_stored(id, actor, stored, &content, from, attributes, route, received)
                    .await;
                drop(reply.send(result));
            }
        }
    }

    /// What follows a provider's pipelined message, as `channel_inbound` does it: the message, the identity
    /// it came from, its attributes, then its `channel.received` record.
    #[allow(clippy::too_many_arguments)]
    async fn channel_message_stored(
        &mut self,
        id: ConversationId,
        actor: Actor,
        stored: Result<Appended, StoreError>,
        content: &Content,
        from: Identity,
        attributes: BTreeMap<String, String>,
        route: bool,
        received: Option<Box<Result<Appended, StoreError>>>,
    ) -> Result<SendAck, BusError> {
        let appended = self.record_appended(&id, stored).await?;
        let ack = self
            .customer_message_stored(id, actor, appended, content, false, false)
            .await?;
        if let Some(conv) = self.conversations.get_mut(&ack.conversation) {
            conv.identity.get_or_insert(from);
        }
        self.add_attributes_and_route(&ack.conversation, attributes, route)
            .await;
        let received = received.map_or_else(
            || {
                Err(StoreError::Corrupt(
                    "stored message has no id for its channel record".to_owned(),
                ))
            },
            |received| *received,
        );
        self.record_appended(&ack.conversation, received).await?;
        Ok(ack)
    }

    /// Takes every answer still in flight, oldest first. Boxed: an answer's follow-up may append, and an
    /// append settles the pipeline first.
    pub(super) fn settle_pipeline(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            while self.pipeline.is_busy() {
                let answer = self.pipeline.next_answer().await;
                self.finish_pipelined(answer).await;
            }
        })
    }

    /// A customer's send is answered: routing attributes are added (and a new conversation routed), then the
    /// sender gets the ack or the error.
    pub(super) async fn customer_send_answered(
        &mut self,
        result: Result<SendAck, BusError>,
        attributes: BTreeMap<String, String>,
        reply: Reply<SendAck>,
    ) {
        if let Ok(ack) = &result {
            self.add_attributes_and_route(&ack.conversation, attributes, true)
                .await;
        }
        drop(reply.send(result));
    }
}
