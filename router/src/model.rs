//! Values exchanged with the router: ids, time, specs, events and decisions.

use std::collections::BTreeMap;
use std::fmt;

use crate::RouterError;

/// A point in time in milliseconds on the caller's clock. The router only compares and adds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + ms`, saturating.
    pub fn plus_ms(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

name_id!(
    /// A routed unit of work: one conversation.
    TaskId
);
name_id!(
    /// An agent.
    AgentId
);

/// The media kind capacity is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Media {
    /// Web chat.
    Web,
    /// In-app chat.
    App,
    /// WeChat (both channels).
    Wechat,
    /// SMS.
    Sms,
    /// A phone call.
    Voice,
}

impl Media {
    /// Parses the configuration name (`web`, `app`, `wechat`, `sms`, `voice`).
    ///
    /// # Errors
    /// [`RouterError::Config`] for any other name.
    pub fn parse(name: &str) -> Result<Media, RouterError> {
        Ok(match name {
            "web" => Media::Web,
            "app" => Media::App,
            "wechat" => Media::Wechat,
            "sms" => Media::Sms,
            "voice" => Media::Voice,
            other => return Err(RouterError::Config(format!("unknown media {other:?}"))),
        })
    }
}

/// An agent as the router sees it: skills and capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    /// The agent.
    pub id: AgentId,
    /// Skill → proficiency 1..=5.
    pub skills: BTreeMap<String, u8>,
    /// Media → concurrent tasks of that media.
    pub capacity: BTreeMap<Media, u32>,
    /// Concurrent tasks across all media.
    pub max_total: u32,
}

impl AgentSpec {
    /// Builds the spec from the agent's configuration.
    ///
    /// # Errors
    /// [`RouterError::Config`] when the capacity names an unknown media.
    pub fn from_config(agent: &omnigate_config::AgentConfig) -> Result<AgentSpec, RouterError> {
        let capacity = agent
            .capacity
            .iter()
            .map(|(media, units)| Ok((Media::parse(media)?, *units)))
            .collect::<Result<_, RouterError>>()?;
        Ok(AgentSpec {
            id: AgentId(agent.id.clone()),
            skills: agent.skills.clone(),
            capacity,
            max_total: agent.max_total,
        })
    }
}

/// A task entering routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// The task.
    pub id: TaskId,
    /// The queue it enters.
    pub queue: String,
    /// Its media, for capacity.
    pub media: Media,
    /// Priority on top of the queue's (higher goes first).
    pub priority: u8,
    /// Skills required in addition to the queue's: skill → minimum proficiency.
    pub skills: BTreeMap<String, u8>,
    /// Routing attributes (tier, language, complaint flag).
    pub attributes: BTreeMap<String, String>,
    /// Offer to this agent first, until the given time.
    pub preferred_agent: Option<(AgentId, Millis)>,
    /// When the customer started waiting; kept across re-queues so the task keeps its age.
    pub enqueued_at: Millis,
}

/// Whether an agent wants work. Separate from socket liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Takes offers.
    Available,
    /// Keeps its conversations, takes no new offers.
    Away,
    /// Logged out.
    Offline,
}

/// Where a transfer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    /// Offer to this agent only.
    Agent(AgentId),
    /// Re-queue into this queue, keeping the task's age.
    Queue(String),
}

/// Something that happened, fed to [`crate::Router::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An agent exists (from configuration); it starts disconnected and offline.
    AgentRegistered(AgentSpec),
    /// The agent's socket is up.
    AgentConnected(AgentId),
    /// The agent's last socket dropped: no new offers; its conversations are re-queued after the grace window.
    AgentDisconnected(AgentId),
    /// The agent changed presence.
    PresenceChanged {
        /// The agent.
        agent: AgentId,
        /// The new presence.
        presence: Presence,
    },
    /// A conversation needs an agent.
    TaskArrived(TaskSpec),
    /// A waiting or offered task is gone (the customer left, the conversation closed).
    TaskCancelled(TaskId),
    /// The agent accepted its offer.
    OfferAccepted {
        /// The task.
        task: TaskId,
        /// The agent.
        agent: AgentId,
    },
    /// The agent rejected its offer.
    OfferRejected {
        /// The task.
        task: TaskId,
        /// The agent.
        agent: AgentId,
    },
    /// The assigned agent finished the task; its capacity is free.
    TaskCompleted(TaskId),
    /// The assigned agent hands the task on.
    Transfer {
        /// The task.
        task: TaskId,
        /// The agent it is assigned to now.
        from: AgentId,
        /// Where it goes.
        to: TransferTarget,
    },
    /// Time passed: expire offers and grace windows due at or before `now`.
    Tick,
}

/// Why an offer was withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescindReason {
    /// The agent did not answer in time.
    Timeout,
    /// The task was cancelled.
    Cancelled,
    /// The agent went away, offline or disconnected.
    AgentUnavailable,
}

/// Why an assigned task went back to a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequeueReason {
    /// The agent's socket stayed down past the grace window.
    AgentDisconnected,
    /// The agent transferred it to a queue.
    Transferred,
}

/// What the gateway must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Offer the task to the agent; the offer lapses at `expires_at`.
    Offer {
        /// The task.
        task: TaskId,
        /// The agent.
        agent: AgentId,
        /// When the offer times out.
        expires_at: Millis,
    },
    /// Withdraw a pending offer.
    Rescind {
        /// The task.
        task: TaskId,
        /// The agent.
        agent: AgentId,
        /// Why.
        reason: RescindReason,
    },
    /// The task is now the agent's.
    Assigned {
        /// The task.
        task: TaskId,
        /// The agent.
        agent: AgentId,
    },
    /// The task left its agent and waits again with its original age.
    Requeued {
        /// The task.
        task: TaskId,
        /// The agent it left.
        from: AgentId,
        /// Why.
        reason: RequeueReason,
    },
}
