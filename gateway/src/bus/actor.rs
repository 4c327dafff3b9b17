//! The bus actor: owns routing and conversation state; every command runs to completion before the next,
//! except that plain message sends overlap their store round trips (`pipeline.rs`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use omnigate_connectors::model::{Channel, Content, ConversationId, CustomerId, MessageId};
use omnigate_router::{AgentId, AgentSpec, Event, Media, Presence, Router, TaskId, TaskSpec, TransferTarget};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::conversation::Conversation;
use super::{
    AgentBody, Attached, BusError, Command, ConnectionHandle, ConversationSummary, Outbound, Participant,
    SendAck,
};
use crate::clock::{unix_ms, RouterClock};
use crate::id_map::IdMap;
use crate::protocol::{self, TransferTo};
use crate::shutdown::Shutdown;
use crate::store::{
    Actor, Appended, ContextStore, ConversationRecord, ConversationStatus, EventKind, NewEvent, StoredEvent,
    View,
};
use crate::telemetry::metrics;

/// Sessions remembered per participant so a reconnect can resume one.
const REMEMBERED_SESSIONS: usize = 16;
/// Characters of the last customer message shown in an offer.
const PREVIEW_CHARS: usize = 140;

/// What the bus needs from configuration.
#[derive(Debug, Clone)]
pub struct BusSettings {
    /// A customer message within this long after close reopens the conversation.
    pub reopen_window_ms: u64,
    /// Queue for conversations that name none.
    pub default_queue: String,
    /// Configured agents: id, display name and routing spec.
    pub agents: Vec<(String, String, AgentSpec)>,
    /// Where agents' messages on connector channels (WeChat, SMS) go; `None` when no connector is configured.
    pub outbound: Option<Arc<dyn super::ChannelOutbound>>,
    /// The push worker, when `[channels.push]` is configured (app conversations only).
    pub push: Option<crate::app::PushHandle>,
    /// Queue positions at which channel customers without live frames are messaged (descending order).
    pub position_message_thresholds: Vec<u32>,
    /// The position message template (`{position}`, `{minutes}`).
    pub position_message: String,
    /// Customer profiles: rules, tiers, the CRM lookup.
    pub profiles: Arc<crate::customers::Profiles>,
    /// A closed conversation leaves the bus's memory this long after its close (at least the reopen window
    /// and the wrap-up time); a later message reloads it from the store or starts a new one.
    pub evict_after_ms: u64,
    /// How long a new conversation linked to an open one prefers that one's agent.
    pub linked_preferred_agent_ms: u64,
}

#[derive(Debug)]
pub(super) struct AgentEntry {
    pub(super) name: String,
    pub(super) presence: Presence,
    pub(super) conns: Vec<ConnectionHandle>,
    pub(super) offers: BTreeSet<ConversationId>,
    pub(super) assigned: BTreeSet<ConversationId>,
    sessions: VecDeque<String>,
}

#[derive(Debug, Default)]
pub(super) struct CustomerEntry {
    pub(super) conns: Vec<ConnectionHandle>,
    pub(super) conversations: Vec<ConversationId>,
    sessions: VecDeque<String>,
}

/// An agent's send, checked and ready to append.
pub(super) struct AgentEvent {
    pub(super) event: NewEvent,
    pub(super) role: &'static str,
    pub(super) route: Option<super::Route>,
}

#[derive(Debug)]
pub(super) struct BusActor {
    pub(super) settings: BusSettings,
    pub(super) router: Router,
    pub(super) clock: RouterClock,
    pub(super) store: Arc<dyn ContextStore>,
    pub(super) agents: IdMap<String, AgentEntry>,
    pub(super) customers: IdMap<CustomerId, CustomerEntry>,
    pub(super) conversations: IdMap<ConversationId, Conversation>,
    pub(super) queued: BTreeSet<ConversationId>,
    /// Conversations not closed, for the gauge.
    open_conversations: usize,
    /// When waiting customers are next told their positions (set after a routing change).
    pub(super) positions_due: Option<omnigate_router::Millis>,
    /// The bus's own queue, for tasks that report back (CRM lookups); weak so the bus still stops when every
    /// handle is gone.
    pub(super) self_tx: mpsc::WeakSender<Command>,
    /// The shutdown tree, for those tasks.
    pub(super) shutdown: Option<Shutdown>,
    /// Closed conversations in order of when they may leave memory, with the `closed_at_ms` of the close
    /// that listed them.
    pub(super) evictions: VecDeque<(omnigate_router::Millis, ConversationId, u64)>,
    /// Appends sent to the store and not yet answered (`pipeline.rs`).
    pub(super) pipeline: super::pipeline::Pipeline,
}

pub(super) fn unavailable(error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(error.to_string())
}

fn presence_name(p: Presence) -> &'static str {
    match p {
        Presence::Available => "available",
        Presence::Away => "away",
        Presence::Offline => "offline",
    }
}

pub(super) fn media_of(channel: Channel) -> Media {
    match channel.media() {
        omnigate_connectors::model::Media::Web => Media::Web,
        omnigate_connectors::model::Media::App => Media::App,
        omnigate_connectors::model::Media::Wechat => Media::Wechat,
        omnigate_connectors::model::Media::Sms => Media::Sms,
        omnigate_connectors::model::Media::Voice => Media::Voice,
    }
}

/// The first `PREVIEW_CHARS` characters of `text`, as a slice of it.
fn preview(text: &str) -> &str {
    // A text of at most PREVIEW_CHARS bytes has at most as many characters.
    if text.len() <= PREVIEW_CHARS {
        return text;
    }
    text.char_indices()
        .nth(PREVIEW_CHARS)
        .map_or(text, |(end, _)| &text[..end])
}

/// A customer's message event, keyed by its `client_msg_id`.
pub(super) fn customer_message(customer: &CustomerId, client_msg_id: String, content: &Content) -> NewEvent {
    let key = ["customer:", customer.as_str(), ":", &client_msg_id].concat();
    let kind = EventKind::Message {
        message_id: MessageId::generate(),
        client_msg_id,
        content: content.clone(),
        via: None,
    };
    NewEvent::now(Actor::Customer { id: customer.clone() }, kind, Some(key))
}

impl BusActor {
    pub(super) fn new(settings: BusSettings, router: Router, store: Arc<dyn ContextStore>) -> BusActor {
        let agents = settings
            .agents
            .iter()
            .map(|(id, name, _)| {
                (
                    id.clone(),
                    AgentEntry {
                        name: name.clone(),
                        presence: Presence::Offline,
                        conns: Vec::new(),
                        offers: BTreeSet::new(),
                        assigned: BTreeSet::new(),
                        sessions: VecDeque::new(),
                    },
                )
            })
            .collect();
        BusActor {
            settings,
            router,
            clock: RouterClock::start(),
            store,
            agents,
            customers: IdMap::default(),
            conversations: IdMap::default(),
            queued: BTreeSet::new(),
            open_conversations: 0,
            positions_due: None,
            self_tx: mpsc::channel(1).0.downgrade(),
            shutdown: None,
            evictions: VecDeque::new(),
            pipeline: super::pipeline::Pipeline::default(),
        }
    }

    /// Gives the actor its own queue and the shutdown tree, for the tasks it starts.
    pub(super) fn with_runtime(mut self, self_tx: mpsc::WeakSender<Command>, shutdown: Shutdown) -> BusActor {
        self.self_tx = self_tx;
        self.shutdown = Some(shutdown);
        self
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Command>, stop: CancellationToken) {
        let now = self.clock.now();
        for (_, _, spec) in self.settings.agents.clone() {
            if let Err(error) = self.router.handle(now, Event::AgentRegistered(spec)) {
                tracing::error!(%error, "agent not registered with the router");
            }
        }
        loop {
            let router_due = self.router.next_deadline();
            let evict_due = self.evictions.front().map(|(at, _, _)| *at);
            let deadline = [router_due, self.positions_due, evict_due]
                .into_iter()
                .flatten()
                .min()
                .map(|at| self.clock.instant(at));
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                answer = self.pipeline.next_answer(), if self.pipeline.is_busy() => {
                    self.finish_pipelined(answer).await;
                }
                command = rx.recv() => match command {
                    Some(command) => {
                        let started = tokio::time::Instant::now();
                        if let Some(command) = self.try_pipeline(command).await {
                            if self.pipeline.is_busy() {
                                self.settle_pipeline().await;
                            }
                            self.handle(command).await;
                        }
                        metrics::bus_command(started.elapsed().as_secs_f64());
                    }
                    None => break,
                },
                () = async { if let Some(at) = deadline { tokio::time::sleep_until(at).await } }, if deadline.is_some() => {
                    if self.pipeline.is_busy() {
                        self.settle_pipeline().await;
                    }
                    let now = self.clock.now();
                    if router_due.is_some_and(|at| at <= now) {
                        self.route(Event::Tick).await;
                    }
                    if self.positions_due.is_some_and(|at| at <= now) {
                        self.push_positions().await;
                    }
                    if evict_due.is_some_and(|at| at <= now) {
                        self.evict_due(now);
                    }
                }
            }
        }
        // Sends already in the store's hands are still answered.
        if self.pipeline.is_busy() {
            self.settle_pipeline().await;
        }
        tracing::debug!("session bus stopped");
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Attach {
                who,
                resume_session,
                conn,
                reply,
            } => drop(reply.send(self.attach(who, resume_session, conn))),
            Command::Detach { who, conn_id } => self.detach(who, conn_id).await,
            Command::CustomerSend {
                customer,
                channel,
                queue,
                conversation,
                client_msg_id,
                content,
                attributes,
                reply,
            } => {
                // Stored unrouted first, so the widget's attributes are on a new conversation before it queues.
                let result = self
                    .customer_send(
                        customer,
                        channel,
                        queue,
                        conversation,
                        client_msg_id,
                        content,
                        false,
                    )
                    .await;
                self.customer_send_answered(result, attributes, reply).await;
            }
            Command::AgentSend {
                agent,
                conversation,
                client_msg_id,
                body,
                reply,
            } => {
                drop(reply.send(self.agent_send(agent, conversation, client_msg_id, body).await));
            }
            Command::Typing {
                who,
                conversation,
                state,
            } => self.typing(&who, &conversation, &state),
            Command::Read {
                who,
                conversation,
                up_to,
                reply,
            } => drop(reply.send(self.read(who, conversation, up_to).await)),
            Command::Delivered {
                who,
                conversation,
                seq,
            } => self.delivered(&who, &conversation, seq),
            Command::Presence { agent, state, reply } => drop(reply.send(self.presence(agent, &state).await)),
            Command::Accept {
                agent,
                conversation,
                reply,
            } => drop(reply.send(self.accept(agent, conversation).await)),
            Command::Reject {
                agent,
                conversation,
                reply,
            } => drop(reply.send(self.reject(agent, conversation).await)),
            Command::Close {
                agent,
                conversation,
                disposition,
                reply,
            } => {
                drop(reply.send(self.close(agent, conversation, disposition).await));
            }
            Command::Transfer {
                agent,
                conversation,
                to,
                reason,
                reply,
            } => {
                drop(reply.send(self.transfer(agent, conversation, to, reason).await));
            }
            Command::WrapUpDone {
                agent,
                conversation,
                reply,
            } => {
                drop(reply.send(self.wrap_up_done(agent, conversation).await));
            }
            Command::Conversations { who, reply } => drop(reply.send(Ok(self.summaries(&who)))),
            Command::Access {
                who,
                conversation,
                reply,
            } => {
                self.reload(&conversation).await;
                drop(reply.send(self.access(&who, &conversation)));
            }
            Command::ChannelInbound { inbound, reply } => {
                drop(reply.send(self.channel_inbound(inbound).await));
            }
            Command::Delivery {
                conversation,
                update,
                reply,
            } => drop(reply.send(self.delivery_updated(conversation, update).await)),
            Command::ProfileAnswered {
                conversation,
                profile,
            } => self.profile_answered(conversation, profile).await,
            Command::Held { reply } => drop(reply.send(Ok(self.held()))),
            Command::CustomerOf {
                agent,
                conversation,
                reply,
            } => drop(reply.send(self.customer_of(&agent, &conversation))),
            Command::Forget {
                customer,
                conversations,
                reply,
            } => drop(reply.send(Ok(self.forget(customer, conversations).await))),
        }
    }

    fn remember_session(sessions: &mut VecDeque<String>, requested: Option<String>) -> (String, bool) {
        if let Some(requested) = requested.filter(|s| sessions.contains(s)) {
            return (requested, true);
        }
        let session = format!("s_{}", uuid::Uuid::new_v4().simple());
        sessions.push_back(session.clone());
        if sessions.len() > REMEMBERED_SESSIONS {
            sessions.pop_front();
        }
        (session, false)
    }

    /// Closes live connections of the same session: the newer connection replaces them (4009).
    fn replace_session(conns: &mut Vec<ConnectionHandle>, session: &str) {
        conns.retain(|c| {
            if c.session_id == session {
                c.push(Outbound::Close(
                    protocol::close::REPLACED,
                    "session replaced by a newer connection",
                ));
                false
            } else {
                true
            }
        });
    }

    fn attach(
        &mut self,
        who: Participant,
        resume: Option<String>,
        mut conn: ConnectionHandle,
    ) -> Result<Attached, BusError> {
        let now = self.clock.now();
        match &who {
            Participant::Customer(customer) => {
                let entry = self.customers.entry(customer.clone()).or_default();
                let (session, resumed) = Self::remember_session(&mut entry.sessions, resume);
                Self::replace_session(&mut entry.conns, &session);
                conn.session_id = session.clone();
                entry.conns.push(conn);
                Ok(Attached {
                    session_id: session,
                    resumed,
                    conversations: self.summaries(&who),
                    ready_extra: Map::new(),
                })
            }
            Participant::Agent(agent) => {
                let entry = self.agents.get_mut(agent).ok_or(BusError::UnknownAgent)?;
                let (session, resumed) = Self::remember_session(&mut entry.sessions, resume);
                Self::replace_session(&mut entry.conns, &session);
                conn.session_id = session.clone();
                let first = entry.conns.is_empty();
                entry.conns.push(conn);
                let mut extra = Map::new();
                extra.insert("agent".to_owned(), json!({"id": agent, "name": entry.name}));
                extra.insert("presence".to_owned(), json!(presence_name(entry.presence)));
                let offers: Vec<ConversationId> = entry.offers.iter().cloned().collect();
                let offers: Vec<Value> = offers.iter().filter_map(|c| self.offer_details(c, now)).collect();
                extra.insert("offers".to_owned(), Value::Array(offers));
                if first {
                    let agent_id = AgentId(agent.clone());
                    if let Err(error) = self.router.handle(now, Event::AgentConnected(agent_id)) {
                        tracing::error!(%error, "router refused agent connection");
                    }
                }
                Ok(Attached {
                    session_id: session,
                    resumed,
                    conversations: self.summaries(&who),
                    ready_extra: extra,
                })
            }
        }
    }

    async fn detach(&mut self, who: Participant, conn_id: u64) {
        match who {
            Participant::Customer(customer) => {
                if let Some(entry) = self.customers.get_mut(&customer) {
                    entry.conns.retain(|c| c.id != conn_id);
                    // Nothing left to resume into: the entry goes, so memory does not keep every customer
                    // ever seen (its conversations left with eviction, `eviction.rs`).
                    if entry.conns.is_empty() && entry.conversations.is_empty() {
                        self.customers.remove(&customer);
                    }
                }
            }
            Participant::Agent(agent) => {
                let Some(entry) = self.agents.get_mut(&agent) else {
                    return;
                };
                let before = entry.conns.len();
                entry.conns.retain(|c| c.id != conn_id);
                if before > 0 && entry.conns.is_empty() {
                    self.route(Event::AgentDisconnected(AgentId(agent))).await;
                }
            }
        }
    }

    pub(super) fn summaries(&self, who: &Participant) -> Vec<ConversationSummary> {
        let ids: Vec<&ConversationId> = match who {
            Participant::Customer(customer) => self
                .customers
                .get(customer)
                .map(|e| e.conversations.iter().collect())
                .unwrap_or_default(),
            Participant::Agent(agent) => self
                .agents
                .get(agent)
                .map(|e| e.assigned.iter().collect())
                .unwrap_or_default(),
        };
        ids.into_iter()
            .filter_map(|id| self.conversations.get(id))
            .map(|c| ConversationSummary {
                id: c.record.id.clone(),
                last_seq: match who {
                    Participant::Customer(_) => c.last_customer_seq,
                    Participant::Agent(_) => c.last_seq,
                },
                status: c.record.status,
            })
            .collect()
    }

    fn access(&self, who: &Participant, conversation: &ConversationId) -> Result<View, BusError> {
        let conv = self.conversations.get(conversation).ok_or(BusError::NotFound)?;
        match who {
            Participant::Customer(customer) if conv.record.customer == *customer => Ok(View::Customer),
            Participant::Agent(agent) if conv.assigned_to(agent) => Ok(View::Agent),
            _ => Err(BusError::NotFound),
        }
    }

    /// Appends an event and fans it out to everyone who follows the conversation.
    pub(super) async fn append(
        &mut self,
        id: &ConversationId,
        actor: Actor,
        kind: EventKind,
        idempotency_key: Option<String>,
    ) -> Result<Appended, BusError> {
        self.append_event(id, NewEvent::now(actor, kind, idempotency_key))
            .await
    }

    /// [`Self::append`] of an event already built.
    pub(super) async fn append_event(
        &mut self,
        id: &ConversationId,
        event: NewEvent,
    ) -> Result<Appended, BusError> {
        // Pipelined appends were sent to the store before this one: they are told first, so everyone sees
        // each conversation's events in order.
        if self.pipeline.is_busy() {
            self.settle_pipeline().await;
        }
        let stored = self.store.append(id, event).await;
        self.record_appended(id, stored).await
    }

    /// What follows an append the store answered: the bus's positions, and the event's fan-out.
    pub(super) async fn record_appended(
        &mut self,
        id: &ConversationId,
        stored: Result<Appended, crate::store::StoreError>,
    ) -> Result<Appended, BusError> {
        let mut appended = stored.map_err(unavailable)?;
        // A duplicate past what the bus has seen was stored by an attempt that timed out after the store
        // applied it (e.g. a paused Redis that ran its queued scripts later): nobody was told of it yet, so
        // it counts as new here: it is published and its sender's side effects (routing, reopen) happen.
        if let Appended::Duplicate(event) = &appended {
            if self.conversations.get(id).is_some_and(|c| event.seq > c.last_seq) {
                appended = Appended::New(event.clone());
            }
        }
        if let Appended::New(event) = &appended {
            metrics::event_appended();
            if let Some(conv) = self.conversations.get_mut(id) {
                conv.last_seq = conv.last_seq.max(event.seq);
                conv.last_customer_seq = conv.last_customer_seq.max(event.customer_seq.unwrap_or(0));
            }
            self.publish(id, event).await;
        }
        Ok(appended)
    }

    async fn publish(&mut self, id: &ConversationId, event: &StoredEvent) {
        self.request_push(id, event);
        let Some(conv) = self.conversations.get(id) else {
            return;
        };
        if let Some(agent) = conv.record.agent.as_deref().filter(|a| conv.assigned_to(a)) {
            if let Some(entry) = self.agents.get(agent).filter(|e| !e.conns.is_empty()) {
                let frame = protocol::event_frame(id, event, View::Agent, None);
                for c in &entry.conns {
                    c.push(Outbound::Event {
                        conversation: id.clone(),
                        seq: event.seq,
                        frame: frame.clone(),
                    });
                }
            }
        }
        let Some(customer_seq) = event.customer_seq else {
            return;
        };
        let customer = conv.record.customer.clone();
        if self.customers.get(&customer).is_none_or(|e| e.conns.is_empty()) {
            // Nobody to tell now; the customer's devices replay from the log when they connect.
            return;
        }
        let read_position = match &event.kind {
            EventKind::Read { up_to_seq, .. } => self.store.customer_position(id, *up_to_seq).await.ok(),
            _ => None,
        };
        if let Some(entry) = self.customers.get(&customer) {
            let frame = protocol::event_frame(id, event, View::Customer, read_position);
            for c in &entry.conns {
                c.push(Outbound::Event {
                    conversation: id.clone(),
                    seq: customer_seq,
                    frame: frame.clone(),
                });
            }
        }
    }

    pub(super) async fn save(&self, id: &ConversationId) {
        if let Some(conv) = self.conversations.get(id) {
            if let Err(error) = self.store.save_conversation(&conv.record).await {
                tracing::warn!(conversation_id = %id, %error, "conversation summary not saved");
            }
        }
    }

    /// `route: false` stores the message without putting a new conversation into routing yet (a call is routed
    /// once it is queued, not while it is in the IVR).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn customer_send(
        &mut self,
        customer: CustomerId,
        channel: Channel,
        queue: Option<String>,
        requested: Option<ConversationId>,
        client_msg_id: String,
        content: Content,
        route: bool,
    ) -> Result<SendAck, BusError> {
        let now_ms = unix_ms();
        if let Some(id) = &requested {
            self.reload(id).await;
        }
        let target = self.customer_target(&customer, channel, requested, now_ms)?;
        let id = match target {
            Some(id) => id,
            None => self.create_conversation(&customer, channel, queue).await?,
        };
        let event = customer_message(&customer, client_msg_id, &content);
        let actor = event.actor.clone();
        let reopen = self.conversations.get(&id).is_some_and(|c| !c.is_open());
        let appended = self.append_event(&id, event).await?;
        self.customer_message_stored(id, actor, appended, &content, reopen, route)
            .await
    }

    /// What follows a customer's stored message: the offer's preview, a reopen or the queue, the sender's ack.
    pub(super) async fn customer_message_stored(
        &mut self,
        id: ConversationId,
        actor: Actor,
        appended: Appended,
        content: &Content,
        reopen: bool,
        route: bool,
    ) -> Result<SendAck, BusError> {
        let duplicate = matches!(appended, Appended::Duplicate(_));
        if duplicate {
            metrics::duplicate_send();
        } else {
            metrics::message_stored("customer");
            if let (Some(conv), Content::Text { text }) = (self.conversations.get_mut(&id), content) {
                conv.preview.clear();
                conv.preview.push_str(preview(text));
            }
            if reopen {
                self.reopen(&id, actor).await?;
            } else if route
                && self
                    .conversations
                    .get(&id)
                    .is_some_and(|c| c.record.status == ConversationStatus::New)
            {
                self.enqueue(&id).await;
            }
        }
        let event = appended.event();
        Ok(SendAck {
            conversation: id,
            message_id: match &event.kind {
                EventKind::Message { message_id, .. } => message_id.to_string(),
                _ => String::new(),
            },
            seq: event.customer_seq.unwrap_or(event.seq),
            at_ms: event.at_ms,
            duplicate,
        })
    }

    /// The conversation a customer's message goes to: the one named (if it is theirs and open or within the
    /// reopen window), else their latest on the channel that is; `None` starts a new one.
    pub(super) fn customer_target(
        &self,
        customer: &CustomerId,
        channel: Channel,
        requested: Option<ConversationId>,
        now_ms: u64,
    ) -> Result<Option<ConversationId>, BusError> {
        let window = self.settings.reopen_window_ms;
        let target = match requested {
            Some(id) => {
                let conv = self
                    .conversations
                    .get(&id)
                    .filter(|c| c.record.customer == *customer)
                    .ok_or(BusError::NotFound)?;
                if !conv.is_open() && now_ms.saturating_sub(conv.record.closed_at_ms.unwrap_or(0)) > window {
                    return Err(BusError::Closed);
                }
                Some(id)
            }
            None => self
                .customers
                .get(customer)
                .and_then(|entry| {
                    entry.conversations.iter().rev().find(|id| {
                        self.conversations.get(*id).is_some_and(|c| {
                            c.record.channel == channel
                                && (c.is_open()
                                    || now_ms.saturating_sub(c.record.closed_at_ms.unwrap_or(0)) <= window)
                        })
                    })
                })
                .cloned(),
        };
        Ok(target)
    }

    async fn create_conversation(
        &mut self,
        customer: &CustomerId,
        channel: Channel,
        queue: Option<String>,
    ) -> Result<ConversationId, BusError> {
        let id = ConversationId::generate();
        let queue = queue.unwrap_or_else(|| self.settings.default_queue.clone());
        let record = ConversationRecord {
            id: id.clone(),
            customer: customer.clone(),
            channel,
            queue: queue.clone(),
            status: ConversationStatus::New,
            agent: None,
            created_at_ms: unix_ms(),
            closed_at_ms: None,
        };
        self.conversations.insert(id.clone(), Conversation::new(record));
        self.customers
            .entry(customer.clone())
            .or_default()
            .conversations
            .push(id.clone());
        let created = self
            .append(
                &id,
                Actor::Customer { id: customer.clone() },
                EventKind::Created { channel, queue },
                None,
            )
            .await;
        if let Err(error) = created {
            self.conversations.remove(&id);
            if let Some(entry) = self.customers.get_mut(customer) {
                entry.conversations.retain(|c| *c != id);
            }
            return Err(error);
        }
        self.save(&id).await;
        self.open_conversations += 1;
        metrics::conversations_open(self.open_conversations);
        metrics::bus_conversations(self.conversations.len());
        self.link_to_open(customer, &id).await;
        Ok(id)
    }

    async fn reopen(&mut self, id: &ConversationId, actor: Actor) -> Result<(), BusError> {
        if let Some(conv) = self.conversations.get_mut(id) {
            conv.record.status = ConversationStatus::New;
            conv.record.closed_at_ms = None;
            // Looked at again: the CRM's answer may have expired, the attributes changed.
            conv.profile_state = super::conversation::ProfileState::Unknown;
        }
        self.open_conversations += 1;
        metrics::conversations_open(self.open_conversations);
        self.append(id, actor, EventKind::Reopened, None).await?;
        self.enqueue(id).await;
        Ok(())
    }

    /// Puts a conversation into routing: logs `queued`, then lets the router decide.
    pub(super) async fn enqueue(&mut self, id: &ConversationId) {
        if !self.profile_ready(id).await {
            // Routed when the CRM lookup answers or fails (`profile.rs`), at most its timeout from now.
            return;
        }
        let linked_agent = self.linked_agent(id);
        let Some(conv) = self.conversations.get_mut(id) else {
            return;
        };
        conv.record.status = ConversationStatus::Queued;
        let queue = conv.record.queue.clone();
        let attributes = conv.attributes.clone();
        let now = self.clock.now();
        let preferred = match (conv.last_agent.clone(), linked_agent) {
            (Some(a), _) => Some((AgentId(a), now.plus_ms(self.settings.reopen_window_ms))),
            (None, Some(a)) => Some((AgentId(a), now.plus_ms(self.settings.linked_preferred_agent_ms))),
            (None, None) => None,
        };
        let mut spec = TaskSpec::new(TaskId(id.to_string()), &queue, media_of(conv.record.channel), now);
        if let Some((agent, until)) = preferred {
            spec = spec.with_preferred_agent(agent, until);
        }
        for (key, value) in &attributes {
            spec = spec.with_attribute(key, value);
        }
        let spec = self.with_profile(id, spec, now);
        self.queued.insert(id.clone());
        if let Err(error) = self
            .append(id, Actor::System, EventKind::Queued { queue }, None)
            .await
        {
            tracing::warn!(conversation_id = %id, %error, "queued event not logged");
        }
        self.save(id).await;
        self.route(Event::TaskArrived(spec)).await;
    }

    async fn agent_send(
        &mut self,
        agent: String,
        id: ConversationId,
        client_msg_id: String,
        body: AgentBody,
    ) -> Result<SendAck, BusError> {
        let send = self.agent_event(&agent, &id, client_msg_id, body)?;
        let appended = self.append_event(&id, send.event).await?;
        self.agent_message_stored(agent, id, appended, send.role, send.route)
            .await
    }

    /// The event an agent's send appends, once the conversation is known to be theirs.
    pub(super) fn agent_event(
        &self,
        agent: &str,
        id: &ConversationId,
        client_msg_id: String,
        body: AgentBody,
    ) -> Result<AgentEvent, BusError> {
        let conv = self.conversations.get(id).ok_or(BusError::NotFound)?;
        if !conv.assigned_to(agent) {
            return Err(if conv.record.agent.as_deref() == Some(agent) || conv.is_open() {
                BusError::NotAllowed("the conversation is not assigned to you".to_owned())
            } else {
                BusError::Closed
            });
        }
        let name = self.agents.get(agent).map(|a| a.name.clone()).unwrap_or_default();
        let key = ["agent:", agent, ":", &client_msg_id].concat();
        let (kind, role, route) = match body {
            AgentBody::Message(content, route) => (
                EventKind::Message {
                    message_id: MessageId::generate(),
                    client_msg_id,
                    content,
                    via: route.as_ref().map(|r| r.via.clone()),
                },
                "agent",
                route,
            ),
            AgentBody::Note(text) => (
                EventKind::Note {
                    message_id: MessageId::generate(),
                    client_msg_id,
                    text,
                },
                "note",
                None,
            ),
        };
        let actor = Actor::Agent {
            id: agent.to_owned(),
            name,
        };
        Ok(AgentEvent {
            event: NewEvent::now(actor, kind, Some(key)),
            role,
            route,
        })
    }

    /// What follows an agent's stored message or note: the router's reply timer, the channel's outbox, the ack.
    pub(super) async fn agent_message_stored(
        &mut self,
        agent: String,
        id: ConversationId,
        appended: Appended,
        role: &'static str,
        route: Option<super::Route>,
    ) -> Result<SendAck, BusError> {
        let duplicate = matches!(appended, Appended::Duplicate(_));
        if duplicate {
            metrics::duplicate_send();
        } else {
            metrics::message_stored(role);
            if role == "agent" {
                // A reply stops the router's no-response timer for this conversation.
                self.route(Event::AgentReplied {
                    task: TaskId(id.to_string()),
                    agent: AgentId(agent),
                })
                .await;
            }
            if let EventKind::Message {
                message_id, content, ..
            } = &appended.event().kind
            {
                self.hand_to_channel(&id, message_id.clone(), content.clone(), route)
                    .await;
            }
        }
        let event = appended.event();
        let message_id = match &event.kind {
            EventKind::Message { message_id, .. } | EventKind::Note { message_id, .. } => {
                message_id.to_string()
            }
            _ => String::new(),
        };
        Ok(SendAck {
            conversation: id,
            message_id,
            seq: event.seq,
            at_ms: event.at_ms,
            duplicate,
        })
    }

    pub(super) fn typing(&self, who: &Participant, id: &ConversationId, state: &str) {
        let Ok(view) = self.access(who, id) else { return };
        let Some(conv) = self.conversations.get(id) else {
            return;
        };
        let (targets, from) = match view {
            View::Customer => (
                conv.record
                    .agent
                    .as_ref()
                    .filter(|a| conv.assigned_to(a))
                    .and_then(|a| self.agents.get(a))
                    .map(|a| &a.conns),
                "customer",
            ),
            View::Agent => (
                self.customers.get(&conv.record.customer).map(|c| &c.conns),
                "agent",
            ),
        };
        let frame = protocol::typing(id, from, state);
        for c in targets.into_iter().flatten() {
            c.push(Outbound::Frame(frame.clone()));
        }
    }

    async fn read(&mut self, who: Participant, id: ConversationId, up_to: u64) -> Result<(), BusError> {
        let view = self.access(&who, &id)?;
        let conv = self.conversations.get(&id).ok_or(BusError::NotFound)?;
        let (seq, previous, reader) = match view {
            View::Customer => {
                if up_to > conv.last_customer_seq {
                    return Err(BusError::Invalid(format!(
                        "up_to_seq {up_to} is beyond the last event {}",
                        conv.last_customer_seq
                    )));
                }
                let seq = self
                    .store
                    .agent_position(&id, up_to)
                    .await
                    .map_err(unavailable)?
                    .unwrap_or(0);
                (seq, conv.customer_read, "customer")
            }
            View::Agent => {
                if up_to > conv.last_seq {
                    return Err(BusError::Invalid(format!(
                        "up_to_seq {up_to} is beyond the last event {}",
                        conv.last_seq
                    )));
                }
                (up_to, conv.agent_read, "agent")
            }
        };
        if seq <= previous {
            return Ok(());
        }
        let actor = match &who {
            Participant::Customer(id) => Actor::Customer { id: id.clone() },
            Participant::Agent(agent) => Actor::Agent {
                id: agent.clone(),
                name: self.agents.get(agent).map(|a| a.name.clone()).unwrap_or_default(),
            },
        };
        self.append(
            &id,
            actor,
            EventKind::Read {
                reader: reader.to_owned(),
                up_to_seq: seq,
            },
            None,
        )
        .await?;
        if view == View::Customer {
            // Read implies received: it cancels pending pushes like an ack.
            self.push_acked(&id, up_to);
        }
        if let Some(conv) = self.conversations.get_mut(&id) {
            match view {
                View::Customer => conv.customer_read = seq,
                View::Agent => conv.agent_read = seq,
            }
        }
        Ok(())
    }

    pub(super) fn delivered(&mut self, who: &Participant, id: &ConversationId, seq: u64) {
        let Ok(view) = self.access(who, id) else { return };
        let mut acked = None;
        if let Some(conv) = self.conversations.get_mut(id) {
            match view {
                View::Customer => {
                    conv.customer_delivered = conv.customer_delivered.max(seq.min(conv.last_customer_seq));
                    acked = Some(conv.customer_delivered);
                }
                View::Agent => conv.agent_delivered = conv.agent_delivered.max(seq.min(conv.last_seq)),
            }
        }
        if let Some(acked) = acked {
            self.push_acked(id, acked);
        }
    }

    async fn presence(&mut self, agent: String, state: &str) -> Result<Value, BusError> {
        let presence = match state {
            "available" => Presence::Available,
            "away" => Presence::Away,
            "offline" => Presence::Offline,
            other => {
                return Err(BusError::Invalid(format!(
                    "presence {other:?} is not available, away or offline"
                )))
            }
        };
        let entry = self.agents.get_mut(&agent).ok_or(BusError::UnknownAgent)?;
        entry.presence = presence;
        let frame = protocol::presence(state, presence == Presence::Available);
        for c in &entry.conns {
            c.push(Outbound::Frame(frame.clone()));
        }
        self.route(Event::PresenceChanged {
            agent: AgentId(agent),
            presence,
        })
        .await;
        Ok(json!({"state": state}))
    }

    /// Adds routing attributes to a conversation and, when `route` is set and it has not been routed yet,
    /// puts it into its queue.
    pub(super) async fn add_attributes_and_route(
        &mut self,
        id: &ConversationId,
        attributes: BTreeMap<String, String>,
        route: bool,
    ) {
        let unrouted = match self.conversations.get_mut(id) {
            Some(conv) => {
                conv.attributes.extend(attributes);
                conv.record.status == ConversationStatus::New
            }
            None => false,
        };
        if route && unrouted {
            self.enqueue(id).await;
        }
    }

    pub(super) fn open_conversation_closed(&mut self) {
        self.open_conversations = self.open_conversations.saturating_sub(1);
        metrics::conversations_open(self.open_conversations);
    }

    async fn wrap_up_done(&mut self, agent: String, id: ConversationId) -> Result<Value, BusError> {
        let conv = self.conversations.get(&id).ok_or(BusError::NotFound)?;
        if conv.is_open() || conv.last_agent.as_deref() != Some(agent.as_str()) {
            return Err(BusError::NotAllowed(
                "you are not wrapping up this conversation".to_owned(),
            ));
        }
        self.route_checked(Event::WrapUpEnded(TaskId(id.to_string())))
            .await?;
        Ok(json!({"conversation_id": id}))
    }

    fn require_offer(&self, agent: &str, id: &ConversationId) -> Result<(), BusError> {
        let holds = self
            .conversations
            .get(id)
            .and_then(|c| c.offer.as_ref())
            .is_some_and(|(a, _)| a == agent);
        if holds {
            Ok(())
        } else {
            Err(BusError::NotAllowed(
                "no pending offer of this conversation".to_owned(),
            ))
        }
    }

    async fn accept(&mut self, agent: String, id: ConversationId) -> Result<Value, BusError> {
        self.require_offer(&agent, &id)?;
        self.route_checked(Event::OfferAccepted {
            task: TaskId(id.to_string()),
            agent: AgentId(agent),
        })
        .await?;
        let customer = self.conversations.get(&id).map(|c| c.record.customer.clone());
        Ok(json!({"conversation_id": id, "customer_id": customer}))
    }

    async fn reject(&mut self, agent: String, id: ConversationId) -> Result<Value, BusError> {
        self.require_offer(&agent, &id)?;
        self.withdraw_offer(&id, &agent, "rejected").await;
        self.route_checked(Event::OfferRejected {
            task: TaskId(id.to_string()),
            agent: AgentId(agent),
        })
        .await?;
        Ok(json!({"conversation_id": id}))
    }

    async fn close(
        &mut self,
        agent: String,
        id: ConversationId,
        disposition: String,
    ) -> Result<Value, BusError> {
        let conv = self.conversations.get(&id).ok_or(BusError::NotFound)?;
        if !conv.assigned_to(&agent) {
            return Err(BusError::NotAllowed(
                "the conversation is not assigned to you".to_owned(),
            ));
        }
        let name = self
            .agents
            .get(&agent)
            .map(|a| a.name.clone())
            .unwrap_or_default();
        self.append(
            &id,
            Actor::Agent {
                id: agent.clone(),
                name,
            },
            EventKind::Closed { disposition },
            None,
        )
        .await?;
        if let Some(conv) = self.conversations.get_mut(&id) {
            conv.record.status = ConversationStatus::Closed;
            conv.record.closed_at_ms = Some(unix_ms());
            conv.record.agent = None;
            conv.last_agent = Some(agent.clone());
        }
        self.release_agent(&agent, &id, None);
        self.save(&id).await;
        self.schedule_eviction(&id);
        self.route_checked(Event::TaskCompleted(TaskId(id.to_string())))
            .await?;
        self.open_conversation_closed();
        Ok(json!({"conversation_id": id}))
    }

    async fn transfer(
        &mut self,
        agent: String,
        id: ConversationId,
        to: TransferTo,
        reason: String,
    ) -> Result<Value, BusError> {
        let conv = self.conversations.get(&id).ok_or(BusError::NotFound)?;
        if !conv.assigned_to(&agent) {
            return Err(BusError::NotAllowed(
                "the conversation is not assigned to you".to_owned(),
            ));
        }
        let (target, to_agent_id, to_queue) = match to {
            TransferTo::Agent(target) => {
                if !self.agents.contains_key(&target) {
                    return Err(BusError::Invalid(format!("unknown agent {target:?}")));
                }
                (TransferTarget::Agent(AgentId(target.clone())), Some(target), None)
            }
            TransferTo::Queue(queue) => (TransferTarget::Queue(queue.clone()), None, Some(queue)),
        };
        let (decisions, explanations) = self
            .router
            .handle_explained(
                self.clock.now(),
                Event::Transfer {
                    task: TaskId(id.to_string()),
                    from: AgentId(agent.clone()),
                    to: target,
                },
            )
            .map_err(|e| BusError::Invalid(e.to_string()))?;
        let name = self
            .agents
            .get(&agent)
            .map(|a| a.name.clone())
            .unwrap_or_default();
        let kind = EventKind::Transferred {
            from_agent_id: agent.clone(),
            to_agent_id,
            to_queue: to_queue.clone(),
            reason,
        };
        if let Err(error) = self
            .append(
                &id,
                Actor::Agent {
                    id: agent.clone(),
                    name,
                },
                kind,
                None,
            )
            .await
        {
            tracing::warn!(conversation_id = %id, %error, "transfer not logged");
        }
        if let Some(conv) = self.conversations.get_mut(&id) {
            conv.record.status = ConversationStatus::Queued;
            conv.record.agent = None;
            conv.last_agent = Some(agent.clone());
            if let Some(queue) = to_queue {
                conv.record.queue = queue;
            }
        }
        self.queued.insert(id.clone());
        self.release_agent(&agent, &id, Some("transferred"));
        self.apply(decisions, explanations).await;
        self.save(&id).await;
        Ok(json!({"conversation_id": id}))
    }

    /// Removes a conversation from an agent's sockets.
    pub(super) fn release_agent(&mut self, agent: &str, id: &ConversationId, reason: Option<&str>) {
        let Some(entry) = self.agents.get_mut(agent) else {
            return;
        };
        entry.assigned.remove(id);
        for c in &entry.conns {
            if let Some(reason) = reason {
                c.push(Outbound::Frame(protocol::unassigned(id, reason)));
            }
            c.push(Outbound::Untrack(id.clone()));
        }
    }

    pub(super) fn offer_details(&self, id: &ConversationId, now: omnigate_router::Millis) -> Option<Value> {
        let conv = self.conversations.get(id)?;
        let (_, expires_at) = conv.offer.as_ref()?;
        Some(json!({
            "conversation_id": id,
            "channel": conv.record.channel,
            "queue": conv.record.queue,
            "customer_id": conv.record.customer,
            "preview": conv.preview,
            "attributes": conv.attributes,
            "customer_profile": conv.profile.for_agents(),
            "linked_conversation_id": conv.linked,
            "expires_in_ms": expires_at.since(now),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preview_is_the_first_characters_of_the_text() {
        assert_eq!(preview("hi"), "hi");
        let ascii = "a".repeat(PREVIEW_CHARS + 5);
        assert_eq!(preview(&ascii), &ascii[..PREVIEW_CHARS]);
        for text in [
            "你好".repeat(PREVIEW_CHARS),
            "é😀x".repeat(60),
            "x".repeat(PREVIEW_CHARS),
        ] {
            let expected: String = text.chars().take(PREVIEW_CHARS).collect();
            assert_eq!(preview(&text), expected);
        }
    }
}
