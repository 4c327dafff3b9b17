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
    /// Every media, in index order.
    pub const ALL: [Media; 5] = [Media::Web, Media::App, Media::Wechat, Media::Sms, Media::Voice];

    /// Dense index 0..5, for per-media arrays.
    pub fn index(self) -> usize {
        self as usize
    }

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
    /// Offers are accepted on the agent's behalf at once.
    pub auto_accept: bool,
}

impl AgentSpec {
    /// An agent with no skills, no capacity, a global cap of 1 and manual accept; add the rest with the
    /// `with_*` setters.
    pub fn new(id: AgentId) -> AgentSpec {
        AgentSpec {
            id,
            skills: BTreeMap::new(),
            capacity: BTreeMap::new(),
            max_total: 1,
            auto_accept: false,
        }
    }

    /// Adds a skill at a proficiency (1..=5).
    pub fn with_skill(mut self, skill: &str, proficiency: u8) -> AgentSpec {
        self.skills.insert(skill.to_owned(), proficiency);
        self
    }

    /// Sets the concurrent tasks of one media.
    pub fn with_capacity(mut self, media: Media, units: u32) -> AgentSpec {
        self.capacity.insert(media, units);
        self
    }

    /// Sets the cap across all media.
    pub fn with_max_total(mut self, max_total: u32) -> AgentSpec {
        self.max_total = max_total;
        self
    }

    /// Sets auto-accept.
    pub fn with_auto_accept(mut self, auto_accept: bool) -> AgentSpec {
        self.auto_accept = auto_accept;
        self
    }

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
            auto_accept: agent.auto_accept,
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
    /// Priority on top of the queue's (added to it; higher goes first).
    pub priority: u8,
    /// Skills required in addition to the queue's: skill → minimum proficiency.
    pub skills: BTreeMap<String, u8>,
    /// Skills wanted until a workflow step with `relax_optional` drops them: skill → minimum proficiency.
    pub optional_skills: BTreeMap<String, u8>,
    /// Routing attributes (`tier`, `language`, `complaint`, ...), carried into explanations.
    pub attributes: BTreeMap<String, String>,
    /// Offer to this agent first, until the given time.
    pub preferred_agent: Option<(AgentId, Millis)>,
    /// When the customer started waiting; kept across re-queues so the task keeps its age.
    pub enqueued_at: Millis,
    /// Emergency (fraud report, lost card): goes before every non-emergency task.
    pub emergency: bool,
    /// Longest wait in milliseconds before the task expires, overriding its queue's.
    pub max_wait_ms: Option<u64>,
    /// Service-level targets as ages in milliseconds; crossing one while waiting yields
    /// [`Decision::SlaBreached`].
    pub sla_ms: Vec<u64>,
}

impl TaskSpec {
    /// A task of priority 0 with no extra skills, attributes or preferences.
    pub fn new(id: TaskId, queue: &str, media: Media, enqueued_at: Millis) -> TaskSpec {
        TaskSpec {
            id,
            queue: queue.to_owned(),
            media,
            priority: 0,
            skills: BTreeMap::new(),
            optional_skills: BTreeMap::new(),
            attributes: BTreeMap::new(),
            preferred_agent: None,
            enqueued_at,
            emergency: false,
            max_wait_ms: None,
            sla_ms: Vec::new(),
        }
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: u8) -> TaskSpec {
        self.priority = priority;
        self
    }

    /// Requires a skill at a minimum proficiency.
    pub fn with_skill(mut self, skill: &str, min: u8) -> TaskSpec {
        self.skills.insert(skill.to_owned(), min);
        self
    }

    /// Wants a skill until the workflow relaxes optional skills.
    pub fn with_optional_skill(mut self, skill: &str, min: u8) -> TaskSpec {
        self.optional_skills.insert(skill.to_owned(), min);
        self
    }

    /// Sets an attribute.
    pub fn with_attribute(mut self, key: &str, value: &str) -> TaskSpec {
        self.attributes.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets the `tier` attribute (`vip`, `private_banking`, ...).
    pub fn with_tier(self, tier: &str) -> TaskSpec {
        self.with_attribute("tier", tier)
    }

    /// Sets the `language` attribute.
    pub fn with_language(self, language: &str) -> TaskSpec {
        self.with_attribute("language", language)
    }

    /// Sets the `complaint` attribute to `true`.
    pub fn complaint(self) -> TaskSpec {
        self.with_attribute("complaint", "true")
    }

    /// Prefers an agent (last agent, relationship manager) until `until`.
    pub fn with_preferred_agent(mut self, agent: AgentId, until: Millis) -> TaskSpec {
        self.preferred_agent = Some((agent, until));
        self
    }

    /// Marks the task as an emergency.
    pub fn emergency(mut self) -> TaskSpec {
        self.emergency = true;
        self
    }

    /// Sets the longest wait.
    pub fn with_max_wait_ms(mut self, ms: u64) -> TaskSpec {
        self.max_wait_ms = Some(ms);
        self
    }

    /// Adds a service-level target (an age in milliseconds).
    pub fn with_sla_ms(mut self, ms: u64) -> TaskSpec {
        self.sla_ms.push(ms);
        self
    }
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
    /// The agent finished wrap-up of a completed task; the slot is free.
    WrapUpEnded(TaskId),
    /// The assigned agent replied to the customer (stops the no-response timer).
    AgentReplied {
        /// The task.
        task: TaskId,
        /// The agent.
        agent: AgentId,
    },
    /// The task's priority changed; its score is recomputed at once.
    PriorityChanged {
        /// The task.
        task: TaskId,
        /// The new priority (on top of the queue's).
        priority: u8,
    },
    /// Time passed: expire offers, grace windows, wrap-ups and workflow steps due at or before `now`.
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
    /// Another agent accepted the same task first (parallel offers).
    TakenByOther,
}

/// Why an assigned task went back to a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequeueReason {
    /// The agent's socket stayed down past the grace window.
    AgentDisconnected,
    /// The agent transferred it to a queue.
    Transferred,
    /// The agent did not reply to the customer in time (no-response rule).
    NoReply,
}

/// How routing of a task ended without an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Offer the customer a call back.
    Callback,
    /// Invite the customer to leave a message.
    Message,
    /// Reply with the opening hours.
    OutOfHours,
    /// The task expired.
    Expired,
}

impl From<omnigate_config::TerminalAction> for Outcome {
    fn from(action: omnigate_config::TerminalAction) -> Outcome {
        match action {
            omnigate_config::TerminalAction::Callback => Outcome::Callback,
            omnigate_config::TerminalAction::Message => Outcome::Message,
            omnigate_config::TerminalAction::OutOfHours => Outcome::OutOfHours,
            omnigate_config::TerminalAction::Expire => Outcome::Expired,
        }
    }
}

/// Why routing of a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The queue's workflow reached a terminal step.
    WorkflowStep,
    /// The task waited its maximum time.
    MaxWait,
    /// The queue was at its maximum length.
    QueueFull,
    /// The queue was closed (outside business hours or a holiday).
    Closed,
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
    /// Routing of the task ended without an agent; the router forgets it. Tell the customer the outcome.
    Ended {
        /// The task.
        task: TaskId,
        /// What the customer is offered.
        outcome: Outcome,
        /// Why.
        reason: EndReason,
    },
    /// A workflow step moved the waiting task to another queue; it keeps its age.
    Overflowed {
        /// The task.
        task: TaskId,
        /// The queue it left.
        from: String,
        /// The queue it is in now.
        to: String,
    },
    /// The agent missed this many offers in a row and is no longer offered work until it sets its presence
    /// to available again. Tell the agent.
    AgentNotRoutable {
        /// The agent.
        agent: AgentId,
        /// Consecutive missed offers.
        misses: u32,
    },
    /// A waiting task passed one of its service-level targets.
    SlaBreached {
        /// The task.
        task: TaskId,
        /// The target crossed, as an age in milliseconds.
        target_ms: u64,
    },
}

/// Why an offer went where it did: the record that accompanies each [`Decision::Offer`] batch in
/// [`crate::Router::handle_explained`]. Counts are cheap; only the first few candidates are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The task offered.
    pub task: TaskId,
    /// Its queue at the time.
    pub queue: String,
    /// Its score in milliseconds: enqueued time − priority × offset − boosts; lower goes first.
    pub score: i64,
    /// Whether it was in the emergency tier.
    pub emergency: bool,
    /// The workflow step in force (index into the queue's steps; 0 when it has none).
    pub step: usize,
    /// What started the search.
    pub trigger: Trigger,
    /// How the agents were ordered.
    pub policy: omnigate_config::SelectionPolicy,
    /// Agents looked at.
    pub agents_scanned: u32,
    /// Agents skipped for lack of a skill or proficiency.
    pub skipped_skills: u32,
    /// Agents skipped for lack of capacity in this media.
    pub skipped_capacity: u32,
    /// Agents skipped because they rejected or missed this task before.
    pub skipped_excluded: u32,
    /// Waiting tasks looked at (when an agent freed capacity).
    pub tasks_scanned: u32,
    /// The first few agents looked at (at most 5), in the order of the queue's policy, with what was found.
    pub candidates: Vec<Candidate>,
    /// The agents offered the task, best first.
    pub chosen: Vec<AgentId>,
    /// In plain words, the rule that decided.
    pub why: String,
}

/// One agent looked at while routing a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The agent.
    pub agent: AgentId,
    /// What was found.
    pub verdict: Verdict,
}

/// Why a candidate agent was or was not offered the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Offered the task.
    Chosen,
    /// Offered the task as its preferred agent.
    ChosenPreferred,
    /// No room for the task's media (or a call in progress, or the unit kept for a call).
    NoRoom,
    /// Lacks a required skill or proficiency.
    MissingSkill,
    /// Rejected or missed this task before.
    Excluded,
}

/// What started a routing search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The task started waiting (arrival, re-queue, workflow step): the best agent for it was sought.
    TaskWaiting,
    /// The agent had free capacity: the best waiting task for it was sought.
    CapacityFreed(AgentId),
    /// The task was transferred to this agent.
    Transfer,
}

/// A waiting task's place in its queue, for the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingTask {
    /// The task.
    pub task: TaskId,
    /// 1-based position among the waiting tasks of its queue.
    pub position: usize,
    /// Estimated milliseconds until it is offered: its position times the queue's recent interval between
    /// offers; `None` until the queue has made two offers.
    pub estimated_wait_ms: Option<u64>,
}
