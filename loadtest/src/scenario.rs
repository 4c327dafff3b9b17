//! Seeded scenario files (`loadtest/scenarios/*.toml`): what to run, how hard and for how long.

use std::path::Path;

use anyhow::{ensure, Context};
use serde::{Deserialize, Serialize};

/// The traffic pattern of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Customers send, agents accept offers and answer every message; against the echo server each message
    /// simply comes back.
    Relay,
    /// Hold connections open without traffic and read the server's resident memory.
    Idle,
    /// Relay traffic while customers and agents drop their sockets and resume from their cursors.
    Churn,
    /// Signed provider webhooks (WeChat safe mode, Twilio SMS, CTI) at a fixed rate or closed loop; agents
    /// accept the conversations they open and check every accepted webhook arrived once, in order.
    Webhooks,
}

/// How messages are offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadKind {
    /// A fixed schedule per conversation (seeded phase), independent of how fast the server answers. Latency
    /// is measured from the actual send; how late each send left against its schedule is reported
    /// separately (tokio timers have millisecond resolution, which would otherwise count as latency).
    Open,
    /// Each conversation keeps `window` messages outstanding: the highest rate the pair sustains.
    Closed,
}

/// The offered load.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Open or closed loop.
    pub kind: LoadKind,
    /// Open loop: relayed messages per second over all conversations (a customer message and its agent's
    /// reply count as two; against the echo server each echoed message counts as one).
    #[serde(default)]
    pub rate: f64,
    /// Closed loop: messages in flight per conversation.
    #[serde(default = "default_window")]
    pub window: u32,
    /// Bytes of padding added to each customer message text (the text carries ids and a timestamp).
    #[serde(default)]
    pub padding: usize,
    /// A client sends a cumulative `ack` after this many received events.
    #[serde(default = "default_ack_every")]
    pub ack_every: u32,
}

fn default_window() -> u32 {
    1
}

fn default_ack_every() -> u32 {
    8
}

/// Reconnect storm settings (mode `churn`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Customer sockets dropped (without a close frame) and resumed per second, over all customers.
    #[serde(default)]
    pub customer_drops_per_sec: f64,
    /// Agent sockets dropped and resumed per second, over all agents.
    #[serde(default)]
    pub agent_drops_per_sec: f64,
}

/// The webhook mix (mode `webhooks`): senders are split between the providers by these weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhooks {
    /// Weight of WeChat Official Account senders (safe mode: signed and AES-encrypted XML).
    #[serde(default = "one")]
    pub wechat: u32,
    /// Weight of Twilio SMS senders (form body, `X-Twilio-Signature`).
    #[serde(default = "one")]
    pub twilio: u32,
    /// Weight of CTI callers (`cti-webhook/1`, Standard Webhooks signature).
    #[serde(default = "one")]
    pub cti: u32,
    /// Every `retry_every`-th webhook of a sender is posted twice, as a provider retry (0: never). The
    /// gateway must store it once.
    #[serde(default)]
    pub retry_every: u32,
    /// Agents log in only after the measured window (then accept every conversation and check it from the
    /// log): the window measures ingest alone (verify, decrypt, dedupe, store, enqueue), with no websocket
    /// delivery in it.
    #[serde(default)]
    pub agents_after_window: bool,
}

fn one() -> u32 {
    1
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            wechat: 1,
            twilio: 1,
            cti: 1,
            agents_after_window: false,
            retry_every: 0,
        }
    }
}

/// One scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports and output folders.
    pub name: String,
    /// What the scenario is for.
    #[serde(default)]
    pub description: String,
    /// Traffic pattern.
    pub mode: Mode,
    /// Seeds every random choice (send phases, drop times).
    pub seed: u64,
    /// Customer connections (one conversation each); echo connections against the echo server.
    pub customers: usize,
    /// Agent connections (unused against the echo server and in `idle`).
    #[serde(default)]
    pub agents: usize,
    /// Web chats each agent may hold (`capacity.web` and `max_total` in the generated gateway config).
    #[serde(default = "default_capacity")]
    pub agent_capacity: u32,
    /// Seconds of traffic after the warm-up that are measured.
    pub duration_secs: f64,
    /// Seconds of traffic before measuring starts.
    #[serde(default = "default_warmup")]
    pub warmup_secs: f64,
    /// Longest wait for outstanding replies after sending stops; anything still missing is lost.
    #[serde(default = "default_drain")]
    pub drain_secs: f64,
    /// Connections opened at once during set-up.
    #[serde(default = "default_connect_concurrency")]
    pub connect_concurrency: usize,
    /// Seconds the idle connections are held before memory is read.
    #[serde(default = "default_settle")]
    pub settle_secs: f64,
    /// Offered load (relay and churn).
    pub load: Option<Load>,
    /// Reconnect storm (churn).
    #[serde(default)]
    pub churn: Churn,
    /// Webhook mix (webhooks).
    #[serde(default)]
    pub webhooks: Webhooks,
    /// The gateway's context store: `memory` (embedded, the default) or `redis` (a `redis-server` of the run's
    /// own, started on a free loopback port and pinned where `--redis-cpu` says, by default with the gateway).
    #[serde(default)]
    pub store: StoreKind,
}

/// Which context store the gateway runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// The embedded store.
    #[default]
    Memory,
    /// A `redis-server` started for the run.
    Redis,
}

fn default_capacity() -> u32 {
    10
}

fn default_warmup() -> f64 {
    1.0
}

fn default_drain() -> f64 {
    10.0
}

fn default_connect_concurrency() -> usize {
    64
}

fn default_settle() -> f64 {
    2.0
}

impl Scenario {
    /// Webhooks: how many of the agents take calls only (the first ones); the others take chats only, since
    /// an agent on a call is offered no chat (`routing.voice_exclusive`). Shared out by the senders' weights.
    pub fn voice_agents(&self) -> usize {
        let w = &self.webhooks;
        let total = w.wechat + w.twilio + w.cti;
        if self.mode != Mode::Webhooks || w.cti == 0 || total == 0 {
            return 0;
        }
        let share = (self.agents as f64 * f64::from(w.cti) / f64::from(total)).round() as usize;
        share.clamp(1, self.agents)
    }

    /// Reads and checks a scenario file.
    ///
    /// # Errors
    /// When the file cannot be read, is not a scenario, or asks for something the generator cannot do.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let scenario: Scenario =
            toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        scenario.check()?;
        Ok(scenario)
    }

    /// Checks the rules a scenario must follow.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn check(&self) -> anyhow::Result<()> {
        ensure!(self.customers > 0, "customers must be positive");
        ensure!(
            self.duration_secs > 0.0 && self.duration_secs <= 3600.0,
            "duration_secs must be within (0, 3600]"
        );
        ensure!(
            self.warmup_secs >= 0.0 && self.drain_secs >= 0.0,
            "warmup and drain must not be negative"
        );
        ensure!(
            self.connect_concurrency > 0,
            "connect_concurrency must be positive"
        );
        if matches!(self.mode, Mode::Relay | Mode::Churn | Mode::Webhooks) {
            let load = self
                .load
                .as_ref()
                .context("relay, churn and webhooks scenarios need a [load] table")?;
            match load.kind {
                LoadKind::Open => ensure!(load.rate > 0.0, "an open-loop load needs a positive rate"),
                LoadKind::Closed => ensure!(load.window > 0, "a closed-loop load needs a positive window"),
            }
            ensure!(load.ack_every > 0, "ack_every must be positive");
            ensure!(self.agents > 0, "relay, churn and webhooks scenarios need agents");
            ensure!(
                self.agents as u64 * u64::from(self.agent_capacity) >= self.customers as u64,
                "agents × agent_capacity must cover every customer's conversation"
            );
        }
        if self.mode == Mode::Webhooks {
            let w = &self.webhooks;
            let total = w.wechat + w.twilio + w.cti;
            ensure!(total > 0, "a webhooks scenario needs a positive weight");
            let callers = (0..self.customers as u32)
                .filter(|i| i % total >= w.wechat + w.twilio)
                .count() as u64;
            let chatters = self.customers as u64 - callers;
            let voice_agents = self.voice_agents() as u64;
            let cap = u64::from(self.agent_capacity);
            ensure!(
                voice_agents * cap >= callers && (self.agents as u64 - voice_agents) * cap >= chatters,
                "voice agents × agent_capacity must cover the callers and the other agents' seats the chats \
                 (calls are exclusive: an agent on a call takes no chat)"
            );
        }
        if self.mode == Mode::Churn {
            ensure!(
                self.churn.customer_drops_per_sec > 0.0 || self.churn.agent_drops_per_sec > 0.0,
                "a churn scenario needs drops"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Scenario> {
        let scenario: Scenario = toml::from_str(text)?;
        scenario.check()?;
        Ok(scenario)
    }

    #[test]
    fn webhooks_split_agents_between_calls_and_chats() {
        let base = r#"
name = "w"
mode = "webhooks"
seed = 1
customers = 150
agents = 12
agent_capacity = 16
duration_secs = 1
[load]
kind = "open"
rate = 100.0
"#;
        let scenario = parse(base).unwrap();
        // 50 of 150 senders call: a third of the agents (4 × 16 seats) take calls, 8 × 16 take the 100 chats.
        assert_eq!(scenario.voice_agents(), 4);
        let short = base.replace("agents = 12", "agents = 10");
        assert!(parse(&short).unwrap_err().to_string().contains("voice agents"));
        let chats_only = format!("{base}[webhooks]\ncti = 0\n");
        assert_eq!(parse(&chats_only).unwrap().voice_agents(), 0);
        let no_weight = format!("{base}[webhooks]\nwechat = 0\ntwilio = 0\ncti = 0\n");
        assert!(parse(&no_weight).unwrap_err().to_string().contains("weight"));
    }

    #[test]
    fn refuses_too_few_agent_seats_and_loads_without_rate() {
        let base = r#"
name = "x"
mode = "relay"
seed = 1
customers = 100
agents = 2
agent_capacity = 10
duration_secs = 1
"#;
        let short = format!("{base}[load]\nkind = \"open\"\nrate = 10.0\n");
        assert!(parse(&short).unwrap_err().to_string().contains("agent_capacity"));
        let no_rate = base.replace("agents = 2", "agents = 10") + "[load]\nkind = \"open\"\n";
        assert!(parse(&no_rate).unwrap_err().to_string().contains("rate"));
        let fine = base.replace("agents = 2", "agents = 10") + "[load]\nkind = \"closed\"\nwindow = 2\n";
        assert_eq!(parse(&fine).unwrap().load.unwrap().window, 2);
    }
}
