use std::collections::BTreeMap;

use serde::Deserialize;

/// One agent the gateway knows: identity, skills and capacity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Stable agent id (the `sub` of the agent's token).
    pub id: String,
    /// Display name shown to customers.
    #[serde(default)]
    pub name: String,
    /// Skill name → proficiency 1..=5.
    #[serde(default)]
    pub skills: BTreeMap<String, u8>,
    /// Channel (`web`, `app`, `wechat`, `sms`, `voice`) → concurrent conversations on that channel.
    #[serde(default)]
    pub capacity: BTreeMap<String, u32>,
    /// Cap across all channels together.
    #[serde(default = "default_max_total")]
    pub max_total: u32,
}

fn default_max_total() -> u32 {
    5
}

/// Queues and routing policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Routing {
    /// Queue for conversations whose channel or widget names none.
    pub default_queue: String,
    /// How long an agent has to accept an offer.
    pub offer_timeout_secs: u64,
    /// Seconds of waiting one priority level is worth (Genesys: 60).
    pub priority_offset_secs: u64,
    /// How long an agent whose socket dropped keeps its conversations before they are re-queued.
    pub disconnect_grace_secs: u64,
    /// The queues.
    pub queues: Vec<QueueConfig>,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            default_queue: "general".to_owned(),
            offer_timeout_secs: 30,
            priority_offset_secs: 60,
            disconnect_grace_secs: 60,
            queues: vec![QueueConfig {
                name: "general".to_owned(),
                skills: BTreeMap::new(),
                priority: 0,
            }],
        }
    }
}

/// One queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Queue name, referenced by widgets and transfers.
    pub name: String,
    /// Skill name → minimum proficiency an agent needs to take this queue's tasks.
    #[serde(default)]
    pub skills: BTreeMap<String, u8>,
    /// Priority of this queue's tasks (higher goes first).
    #[serde(default)]
    pub priority: u8,
}
