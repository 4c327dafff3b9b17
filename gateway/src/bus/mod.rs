//! The session bus: the one place where IO meets the router and the store.
//!
//! One actor task owns routing state and conversation summaries, so every routing change is atomic and
//! every conversation's events are appended, numbered and fanned out in one order. Sockets talk to it through
//! [`Bus`]; it answers each command and pushes [`Outbound`] items into each connection's bounded queue. A
//! connection that cannot keep up is told to close (1013) and resumes from its cursor: the log, not the
//! queue, is what guarantees delivery.
//!
//! Layout:
//! - `actor.rs`: the loop, command handling and fan-out
//! - `decisions.rs`: executing the router's decisions
//! - `conversation.rs`: the in-memory summary of one conversation
//! - `channel.rs`: channel connectors on the bus: inbound messages, the outbound hand-off, delivery states
//! - `push.rs`: telling the push worker about app customers' messages and acks
//! - `profile.rs`: customer profiles (rules, the CRM lookup off the loop) feeding routing
//! - `eviction.rs`: closed conversations leave memory after their reopen window
//! - `customer.rs`: customers across channels: linked conversations, whose customer, erasure

mod actor;
mod channel;
mod conversation;
mod customer;
mod decisions;
mod eviction;
mod pipeline;
mod profile;
mod push;

use std::collections::BTreeMap;
use std::sync::Arc;

use omnigate_connectors::model::{Channel, Content, ConversationId, CustomerId};
use omnigate_router::Router;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::protocol::{FrameText, TransferTo};
use crate::shutdown::Shutdown;
use crate::store::{ContextStore, ConversationStatus, View};

pub use actor::BusSettings;
pub use channel::{ChannelInbound, ChannelOutbound, DeliveryUpdate, OutboundJob, Route};

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Participant {
    /// A customer.
    Customer(CustomerId),
    /// An agent, by id.
    Agent(String),
}

impl Participant {
    /// The view of conversation logs this participant gets.
    pub fn view(&self) -> View {
        match self {
            Participant::Customer(_) => View::Customer,
            Participant::Agent(_) => View::Agent,
        }
    }
}

/// What the bus pushes to a connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A numbered event of a conversation, already rendered for this connection's view.
    Event {
        /// The conversation.
        conversation: ConversationId,
        /// Its position in this view.
        seq: u64,
        /// The `event` frame.
        frame: FrameText,
    },
    /// Any frame that is not numbered (offers, typing, queue position).
    Frame(FrameText),
    /// Start delivering this conversation, replaying everything after `after` from the log first.
    Track {
        /// The conversation.
        conversation: ConversationId,
        /// Position already delivered.
        after: u64,
    },
    /// Stop delivering this conversation.
    Untrack(ConversationId),
    /// Close the socket with this code.
    Close(u16, &'static str),
}

/// The bus's handle on one connection.
#[derive(Debug, Clone)]
pub struct ConnectionHandle {
    /// Process-unique connection id.
    pub id: u64,
    /// The session this connection serves.
    pub session_id: String,
    /// The connection's bounded queue. Items are boxed: tokio allocates a channel's first block of 32 slots
    /// up front, and 32 boxes (256 bytes) cost an idle connection about 1.8 KB less than 32 inline items.
    pub tx: mpsc::Sender<Box<Outbound>>,
    /// Cancelled when the connection must close because its queue overflowed.
    pub overflow: CancellationToken,
}

impl ConnectionHandle {
    /// Queues an item; a full queue marks the connection as lagging so it closes and resumes.
    /// Returns `false` when the connection is gone.
    pub fn push(&self, item: Outbound) -> bool {
        match self.tx.try_send(Box::new(item)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.cancel();
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// A conversation as listed to its participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    /// The conversation.
    pub id: ConversationId,
    /// The last position in the participant's view.
    pub last_seq: u64,
    /// Its status.
    pub status: ConversationStatus,
}

/// The answer to attaching a connection.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The session id (new, or the resumed one).
    pub session_id: String,
    /// Whether an earlier session of this participant was resumed.
    pub resumed: bool,
    /// The participant's conversations (customers: all not closed or recently closed; agents: assigned).
    pub conversations: Vec<ConversationSummary>,
    /// Extra `ready` fields (agents: name, presence, pending offers).
    pub ready_extra: serde_json::Map<String, Value>,
}

/// The answer to a stored message or note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendAck {
    /// The conversation.
    pub conversation: ConversationId,
    /// Our message id.
    pub message_id: String,
    /// Position in the sender's view.
    pub seq: u64,
    /// Unix ms when it was stored.
    pub at_ms: u64,
    /// Whether this was a retry answered from the original.
    pub duplicate: bool,
}

/// Why the bus refused a command. Each maps to an `error` frame code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// No such conversation for this participant.
    #[error("conversation not found")]
    NotFound,
    /// The participant may not do this (not offered, not assigned).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// The conversation is closed and past its reopen window.
    #[error("conversation is closed")]
    Closed,
    /// The request is invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The agent is not configured.
    #[error("unknown agent")]
    UnknownAgent,
    /// The store or the bus cannot take work now; retry.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

impl BusError {
    /// The `code` of the error frame.
    pub fn code(&self) -> &'static str {
        match self {
            BusError::NotFound => "not_found",
            BusError::NotAllowed(_) => "not_allowed",
            BusError::Closed => "conversation_closed",
            BusError::Invalid(_) => "invalid_request",
            BusError::UnknownAgent => "unknown_agent",
            BusError::Unavailable(_) => "unavailable",
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, BusError>>;

/// A command to the bus actor.
#[derive(Debug)]
pub(crate) enum Command {
    Attach {
        who: Participant,
        resume_session: Option<String>,
        conn: ConnectionHandle,
        reply: Reply<Attached>,
    },
    Detach {
        who: Participant,
        conn_id: u64,
    },
    CustomerSend {
        customer: CustomerId,
        channel: Channel,
        queue: Option<String>,
        conversation: Option<ConversationId>,
        client_msg_id: String,
        content: Content,
        attributes: BTreeMap<String, String>,
        reply: Reply<SendAck>,
    },
    AgentSend {
        agent: String,
        conversation: ConversationId,
        client_msg_id: String,
        body: AgentBody,
        reply: Reply<SendAck>,
    },
    Typing {
        who: Participant,
        conversation: ConversationId,
        state: String,
    },
    Read {
        who: Participant,
        conversation: ConversationId,
        up_to: u64,
        reply: Reply<()>,
    },
    Delivered {
        who: Participant,
        conversation: ConversationId,
        seq: u64,
    },
    Presence {
        agent: String,
        state: String,
        reply: Reply<Value>,
    },
    Accept {
        agent: String,
        conversation: ConversationId,
        reply: Reply<Value>,
    },
    Reject {
        agent: String,
        conversation: ConversationId,
        reply: Reply<Value>,
    },
    Close {
        agent: String,
        conversation: ConversationId,
        disposition: String,
        reply: Reply<Value>,
    },
    WrapUpDone {
        agent: String,
        conversation: ConversationId,
        reply: Reply<Value>,
    },
    Transfer {
        agent: String,
        conversation: ConversationId,
        to: TransferTo,
        reason: String,
        reply: Reply<Value>,
    },
    Conversations {
        who: Participant,
        reply: Reply<Vec<ConversationSummary>>,
    },
    Access {
        who: Participant,
        conversation: ConversationId,
        reply: Reply<View>,
    },
    ChannelInbound {
        inbound: ChannelInbound,
        reply: Reply<SendAck>,
    },
    Delivery {
        conversation: ConversationId,
        update: DeliveryUpdate,
        reply: Reply<()>,
    },
    /// A CRM lookup the bus started has ended (`None`: nothing usable).
    ProfileAnswered {
        conversation: ConversationId,
        profile: Option<crate::store::CustomerProfile>,
    },
    /// How much the bus holds in memory (tests).
    #[cfg_attr(not(any(test, feature = "test-util")), allow(dead_code))]
    Held {
        reply: Reply<Held>,
    },
    CustomerOf {
        agent: String,
        conversation: ConversationId,
        reply: Reply<CustomerId>,
    },
    Forget {
        customer: CustomerId,
        conversations: Vec<ConversationId>,
        reply: Reply<usize>,
    },
}

/// What the bus holds in memory: it must not grow with closed conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Conversations (open, and closed within their reopen window).
    pub conversations: usize,
    /// Customers with a connection or a conversation held.
    pub customers: usize,
}

/// What an agent sends.
#[derive(Debug, Clone)]
pub(crate) enum AgentBody {
    Message(Content, Option<Route>),
    Note(String),
}

/// Handle to the session bus. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: mpsc::Sender<Command>,
}

impl Bus {
    /// Starts the bus actor on the shutdown tree. It stops when the tree's root is cancelled.
    pub fn start(
        settings: BusSettings,
        router: Router,
        store: Arc<dyn ContextStore>,
        shutdown: &Shutdown,
    ) -> Bus {
        let (tx, rx) = mpsc::channel(4096);
        let actor =
            actor::BusActor::new(settings, router, store).with_runtime(tx.downgrade(), shutdown.clone());
        let stop = shutdown.root().clone();
        shutdown.spawn(actor.run(rx, stop));
        Bus { tx }
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, BusError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| BusError::Unavailable("session bus stopped".to_owned()))?;
        answer
            .await
            .map_err(|_| BusError::Unavailable("session bus stopped".to_owned()))?
    }

    async fn tell(&self, command: Command) {
        // The bus only stops at shutdown, after every connection has closed.
        drop(self.tx.send(command).await);
    }

    /// Attaches a connection; the bus starts pushing to it.
    ///
    /// # Errors
    /// [`BusError::UnknownAgent`] for an agent that is not configured.
    pub async fn attach(
        &self,
        who: Participant,
        resume_session: Option<String>,
        conn: ConnectionHandle,
    ) -> Result<Attached, BusError> {
        self.call(|reply| Command::Attach {
            who,
            resume_session,
            conn,
            reply,
        })
        .await
    }

    /// Detaches a closed connection.
    pub async fn detach(&self, who: Participant, conn_id: u64) {
        self.tell(Command::Detach { who, conn_id }).await;
    }

    /// Stores a customer's message, creating or reopening the conversation as needed.
    ///
    /// # Errors
    /// [`BusError`] naming why it was refused.
    #[allow(clippy::too_many_arguments)]
    pub async fn customer_send(
        &self,
        customer: CustomerId,
        channel: Channel,
        queue: Option<String>,
        conversation: Option<ConversationId>,
        client_msg_id: String,
        content: Content,
        attributes: BTreeMap<String, String>,
    ) -> Result<SendAck, BusError> {
        self.call(|reply| Command::CustomerSend {
            customer,
            channel,
            queue,
            conversation,
            client_msg_id,
            content,
            attributes,
            reply,
        })
        .await
    }

    /// Stores an agent's message; on a connector channel it is handed to the outbox, through `route` when the
    /// agent picked one (recorded with the message) and else through the conversation's own channel.
    ///
    /// # Errors
    /// [`BusError::NotAllowed`] unless the conversation is assigned to the agent.
    pub async fn agent_message(
        &self,
        agent: String,
        conversation: ConversationId,
        client_msg_id: String,
        content: Content,
        route: Option<Route>,
    ) -> Result<SendAck, BusError> {
        self.call(|reply| Command::AgentSend {
            agent,
            conversation,
            client_msg_id,
            body: AgentBody::Message(content, route),
            reply,
        })
        .await
    }

    /// Stores an agent's internal note.
    ///
    /// # Errors
    /// [`BusError::NotAllowed`] unless the conversation is assigned to the agent.
    pub async fn agent_note(
        &self,
        agent: String,
        conversation: ConversationId,
        client_msg_id: String,
        text: String,
    ) -> Result<SendAck, BusError> {
        self.call(|reply| Command::AgentSend {
            agent,
            conversation,
            client_msg_id,
            body: AgentBody::Note(text),
            reply,
        })
        .await
    }

    /// Relays a typing indicator.
    pub async fn typing(&self, who: Participant, conversation: ConversationId, state: String) {
        self.tell(Command::Typing {
            who,
            conversation,
            state,
        })
        .await;
    }

    /// Moves the participant's read watermark.
    ///
    /// # Errors
    /// [`BusError::NotFound`] / [`BusError::Invalid`].
    pub async fn read(
        &self,
        who: Participant,
        conversation: ConversationId,
        up_to: u64,
    ) -> Result<(), BusError> {
        self.call(|reply| Command::Read {
            who,
            conversation,
            up_to,
            reply,
        })
        .await
    }

    /// Records a cumulative delivery ack.
    pub async fn delivered(&self, who: Participant, conversation: ConversationId, seq: u64) {
        self.tell(Command::Delivered {
            who,
            conversation,
            seq,
        })
        .await;
    }

    /// Sets an agent's presence.
    ///
    /// # Errors
    /// [`BusError::Invalid`] for an unknown state.
    pub async fn presence(&self, agent: String, state: String) -> Result<Value, BusError> {
        self.call(|reply| Command::Presence { agent, state, reply }).await
    }

    /// Accepts an offer.
    ///
    /// # Errors
    /// [`BusError::NotAllowed`] when the agent holds no such offer.
    pub async fn accept(&self, agent: String, conversation: ConversationId) -> Result<Value, BusError> {
        self.call(|reply| Command::Accept {
            agent,
            conversation,
            reply,
        })
        .await
    }

    /// Rejects an offer.
    ///
    /// # Errors
    /// [`BusError::NotAllowed`] when the agent holds no such offer.
    pub async fn reject(&self, agent: String, conversation: ConversationId) -> Result<Value, BusError> {
        self.call(|reply| Command::Reject {
            agent,
            conversation,
            reply,
        })
        .await
    }

    /// Closes an assigned conversation.
    ///
    /// # Errors
    /// [`BusError::NotAllowed`] unless it is assigned to the agent.
    pub async fn close(
        &self,
        agent: String,
        conversation: ConversationId,
        disposition: String,
    ) -> Result<Value, BusError> {
        self.call(|reply| Command::Close {
            agent,
            conversation,
            disposition,
            reply,
        })
        .await
    }

    /// Ends the agent's wrap-up of a conversation it closed, freeing the slot.
    ///
    /// # Errors
    /// [`BusError::NotAllowed`] unless the agent closed it and is still wrapping it up.
    pub async fn wrap_up_done(&self, agent: String, conversation: ConversationId) -> Result<Value, BusError> {
        self.call(|reply| Command::WrapUpDone {
            agent,
            conversation,
            reply,
        })
        .await
    }

    /// Transfers an assigned conversation.
    ///
    /// # Errors
    /// [`BusError::NotAllowed`] unless it is assigned to the agent; [`BusError::Invalid`] for a bad target.
    pub async fn transfer(
        &self,
        agent: String,
        conversation: ConversationId,
        to: TransferTo,
        reason: String,
    ) -> Result<Value, BusError> {
        self.call(|reply| Command::Transfer {
            agent,
            conversation,
            to,
            reason,
            reply,
        })
        .await
    }

    /// The participant's conversations.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the bus stopped.
    pub async fn conversations(&self, who: Participant) -> Result<Vec<ConversationSummary>, BusError> {
        self.call(|reply| Command::Conversations { who, reply }).await
    }

    /// Stores a message that arrived through a channel connector, with its raw payload for audit; a
    /// provider's retry (same dedupe key) answers the original ack.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the store cannot take it: answer the provider 5xx so it retries.
    pub async fn channel_inbound(&self, inbound: ChannelInbound) -> Result<SendAck, BusError> {
        self.call(|reply| Command::ChannelInbound { inbound, reply })
            .await
    }

    /// Logs a delivery state change of an agent's message (the agent sees it as a `delivery.updated` event).
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the store cannot take it.
    pub async fn delivery_updated(
        &self,
        conversation: ConversationId,
        update: DeliveryUpdate,
    ) -> Result<(), BusError> {
        self.call(|reply| Command::Delivery {
            conversation,
            update,
            reply,
        })
        .await
    }

    /// How many conversations and customers the bus holds in memory.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the bus stopped.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn held(&self) -> Result<Held, BusError> {
        self.call(|reply| Command::Held { reply }).await
    }

    /// The customer of a conversation the agent is offered or assigned.
    ///
    /// # Errors
    /// [`BusError::NotFound`], or [`BusError::NotAllowed`] when the agent has no offer or assignment of it.
    pub async fn customer_of(
        &self,
        agent: String,
        conversation: ConversationId,
    ) -> Result<CustomerId, BusError> {
        self.call(|reply| Command::CustomerOf {
            agent,
            conversation,
            reply,
        })
        .await
    }

    /// Closes the open ones of an erased customer's conversations (disposition `erased`), then forgets
    /// them and the customer (its sockets close with 4010). Returns how many were open.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the bus stopped.
    pub async fn forget_customer(
        &self,
        customer: CustomerId,
        conversations: Vec<ConversationId>,
    ) -> Result<usize, BusError> {
        self.call(|reply| Command::Forget {
            customer,
            conversations,
            reply,
        })
        .await
    }

    /// Which view of the conversation the participant may read.
    ///
    /// # Errors
    /// [`BusError::NotFound`] when it may not read it at all.
    pub async fn access(&self, who: Participant, conversation: ConversationId) -> Result<View, BusError> {
        self.call(|reply| Command::Access {
            who,
            conversation,
            reply,
        })
        .await
    }
}
