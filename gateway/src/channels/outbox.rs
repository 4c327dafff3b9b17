//! The outbound outbox: agents' messages on connector channels, delivered through their provider with
//! retries (exponential backoff with jitter, on retryable failures only), a per-account pace, and a dead
//! letter the agent sees.
//!
//! Durability: the agent's message is in the conversation log before the agent's ack, and so is every delivery
//! state (`pending` → `retrying`… → `sent` | `failed`) as a `delivery.updated` event. The job itself is kept in
//! the store's outbox inbox ([`Inbox::Outbox`]) from before the ack (written alongside the `pending` state) with
//! its attempt count, updated after each failed attempt and released once the message is sent or
//! dead-lettered; a restarted gateway resumes every kept job with the attempts it already made. A crash between
//! the provider's acceptance and the release sends that message again on restart (the providers offer no
//! idempotency key); a graceful stop never does. Jobs are worked in one lane per conversation, so a customer
//! receives the replies in the order the agent wrote them, and a slow provider for one conversation does not
//! hold up the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use omnigate_config::Outbox as OutboxConfig;
use omnigate_connectors::model::{Channel, Content, ConversationId, OutboundMessage, ReplyCapability};
use omnigate_connectors::wechat::window;
use omnigate_connectors::{ConnectorError, FailureReason, SendFailure};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::address::{Address, AddressBook};
use super::connector::Connector;
use crate::bus::{Bus, ChannelOutbound, DeliveryUpdate, OutboundJob, Route};
use crate::clock::unix_ms;
use crate::shutdown::Shutdown;
use crate::store::{ContextStore, Inbox};
use crate::telemetry::metrics;

/// Jobs waiting for the dispatcher; the bus waits for room rather than drop one.
const QUEUE: usize = 4096;
/// Jobs waiting in one conversation's lane.
const LANE_QUEUE: usize = 256;
/// A lane with nothing to do for this long ends (a new job starts a new one).
const LANE_IDLE: Duration = Duration::from_secs(30);
/// Attempts to log a delivery state while the store is unavailable.
const REPORT_ATTEMPTS: u32 = 5;
/// Pause between attempts to load the kept jobs at start while the store is unavailable.
const RESUME_RETRY: Duration = Duration::from_millis(500);

/// A job as kept in the store until it is finished.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeptJob {
    conversation: ConversationId,
    message_id: omnigate_connectors::model::MessageId,
    channel: Channel,
    content: Content,
    /// Provider attempts already made.
    attempts: u32,
    /// Unix ms when it was queued (orders a conversation's jobs on resume).
    queued_at_ms: u64,
    /// The route the agent picked, so a resumed job goes out the same way (absent in records of older
    /// versions, which always answered through the conversation's channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    route: Option<Route>,
}

/// A job in the outbox's queues, with what it carries over from an earlier run.
#[derive(Debug, Clone)]
struct Queued {
    job: OutboundJob,
    attempts: u32,
    queued_at_ms: u64,
}

impl Queued {
    /// `<conversation>#<queued_at_ms>#<message_id>`: the job's key in the outbox inbox, sorting a
    /// conversation's jobs in the order they were queued.
    fn key(&self) -> String {
        format!(
            "{}#{:020}#{}",
            self.job.conversation, self.queued_at_ms, self.job.message_id
        )
    }

    fn kept(&self, attempts: u32) -> Result<String, serde_json::Error> {
        serde_json::to_string(&KeptJob {
            conversation: self.job.conversation.clone(),
            message_id: self.job.message_id.clone(),
            channel: self.job.channel,
            content: self.job.content.clone(),
            attempts,
            queued_at_ms: self.queued_at_ms,
            route: self.job.route.clone(),
        })
    }
}

/// Writes the job's record with `attempts` made; a failure is logged (the job goes on from memory).
async fn keep(store: &dyn ContextStore, queued: &Queued, attempts: u32) {
    let result = match queued.kept(attempts) {
        Ok(value) => store
            .hold(Inbox::Outbox, &queued.key(), &value)
            .await
            .map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    if let Err(error) = result {
        tracing::warn!(conversation_id = %queued.job.conversation, %error, "outbox job not kept; it lives in memory only");
    }
}

/// The snake_case name of a failure reason, as logged and shown to agents.
pub fn reason_name(reason: FailureReason) -> &'static str {
    match reason {
        FailureReason::AccessTokenInvalid => "access_token_invalid",
        FailureReason::WindowClosed => "window_closed",
        FailureReason::QuotaExhausted => "quota_exhausted",
        FailureReason::RateLimited => "rate_limited",
        FailureReason::ProviderUnavailable => "provider_unavailable",
        FailureReason::InvalidRecipient => "invalid_recipient",
        FailureReason::RecipientOptedOut => "recipient_opted_out",
        FailureReason::ContentRejected => "content_rejected",
        FailureReason::Misconfigured => "misconfigured",
        FailureReason::Other => "rejected",
    }
}

/// The delay before retry number `attempt` (1-based): `base · 2^(attempt-1)` capped at `max`, of which a
/// random half is jitter; at least what the provider asked for.
pub fn backoff(config: &OutboxConfig, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let exp = config
        .retry_base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(30))
        .min(config.retry_max_ms);
    let delay = exp / 2 + ((exp / 2) as f64 * jitter.clamp(0.0, 1.0)) as u64;
    Duration::from_millis(delay).max(retry_after.unwrap_or_default())
}

/// A conversation an agent took, for channels that must act on it (a call is connected to the agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The conversation.
    pub conversation: ConversationId,
    /// Its channel.
    pub channel: Channel,
    /// The agent.
    pub agent: String,
}

/// The bus's side of the outbox: keep and queue jobs, count SMS segments, pass on assignments.
#[derive(Debug, Clone)]
pub struct OutboxHandle {
    tx: mpsc::Sender<Queued>,
    assignments: mpsc::Sender<Assignment>,
    store: Arc<dyn ContextStore>,
}

#[async_trait]
impl ChannelOutbound for OutboxHandle {
    fn handles(&self, channel: Channel) -> bool {
        // Web and app customers read the log over their socket; an agent's text on a call stays in the log.
        !matches!(channel, Channel::Web | Channel::App | Channel::Voice)
    }

    fn segments(&self, channel: Channel, content: &Content) -> Option<u32> {
        match (channel.media(), content) {
            (omnigate_connectors::model::Media::Sms, Content::Text { text }) => {
                Some(omnigate_connectors::sms_segments::count(text).segments as u32)
            }
            _ => None,
        }
    }

    async fn submit(&self, job: OutboundJob) {
        let queued = Queued {
            job,
            attempts: 0,
            queued_at_ms: unix_ms(),
        };
        keep(&*self.store, &queued, 0).await;
        if let Err(error) = self.tx.send(queued).await {
            // Only at shutdown: the job is kept and resumed by the next start.
            tracing::warn!(conversation_id = %error.0.job.conversation, "outbox stopped; message left pending");
        }
    }

    async fn assigned(&self, conversation: ConversationId, channel: Channel, agent: String) {
        let assignment = Assignment {
            conversation,
            channel,
            agent,
        };
        if self.assignments.send(assignment).await.is_err() {
            tracing::debug!("no channel acts on assignments");
        }
    }
}

/// Spaces the calls to one provider account.
#[derive(Debug)]
struct Pace {
    next: Mutex<Instant>,
    interval: Duration,
}

impl Pace {
    async fn wait(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// A sent message's provider id, for status callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRecord {
    /// The conversation.
    pub conversation: ConversationId,
    /// The agent's message.
    pub message_id: omnigate_connectors::model::MessageId,
    /// The channel.
    pub channel: Channel,
}

/// Everything a lane needs.
#[derive(Debug)]
struct Context {
    bus: Bus,
    store: Arc<dyn ContextStore>,
    addresses: Arc<AddressBook>,
    connectors: HashMap<(Channel, String), (Arc<dyn Connector>, Pace)>,
    sent: Arc<dashmap::DashMap<String, SentRecord>>,
    config: OutboxConfig,
    stop: CancellationToken,
}

/// The outbox before it is started: the bus needs its handle before the outbox can have the bus.
#[derive(Debug)]
pub struct Outbox {
    rx: mpsc::Receiver<Queued>,
    assignments: Option<mpsc::Receiver<Assignment>>,
}

/// A new outbox keeping its jobs in `store`: the handle for the bus, and the receivers to start once the bus
/// runs.
pub fn outbox(store: Arc<dyn ContextStore>) -> (OutboxHandle, Outbox) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let (assignments_tx, assignments) = mpsc::channel(QUEUE);
    (
        OutboxHandle {
            tx,
            assignments: assignments_tx,
            store,
        },
        Outbox {
            rx,
            assignments: Some(assignments),
        },
    )
}

/// What the started outbox works with.
#[derive(Debug)]
pub struct OutboxParts {
    /// The session bus, to log delivery states.
    pub bus: Bus,
    /// The store, to recover addresses from the log.
    pub store: Arc<dyn ContextStore>,
    /// Where each conversation is answered.
    pub addresses: Arc<AddressBook>,
    /// The senders, one per configured account.
    pub connectors: Vec<Arc<dyn Connector>>,
    /// Provider message ids of sent messages, read by status callbacks.
    pub sent: Arc<dashmap::DashMap<String, SentRecord>>,
    /// Retry settings.
    pub config: OutboxConfig,
}

impl Outbox {
    /// Takes the assignments for the channel that connects calls; when nobody takes them, they are dropped
    /// with the outbox (the bus then only logs that no channel acts on them).
    pub fn take_assignments(&mut self) -> Option<mpsc::Receiver<Assignment>> {
        self.assignments.take()
    }

    /// Starts the dispatcher on the shutdown tree; it first resumes the jobs a previous run kept.
    pub fn start(self, parts: OutboxParts, shutdown: &Shutdown) {
        let connectors = parts
            .connectors
            .into_iter()
            .map(|c| {
                let pace = Pace {
                    next: Mutex::new(Instant::now()),
                    interval: c.min_interval(),
                };
                ((c.channel(), c.account().to_owned()), (c, pace))
            })
            .collect();
        let context = Arc::new(Context {
            bus: parts.bus,
            store: parts.store,
            addresses: parts.addresses,
            connectors,
            sent: parts.sent,
            config: parts.config,
            stop: shutdown.root().clone(),
        });
        shutdown.spawn(dispatch(self.rx, context, shutdown.clone()));
    }
}

/// The jobs a previous run kept and did not finish, in their conversations' order; retried until the store
/// answers (new jobs wait in the queue meanwhile) or the gateway stops.
async fn kept_jobs(context: &Context) -> Option<Vec<Queued>> {
    loop {
        match context.store.held(Inbox::Outbox).await {
            Ok(records) => {
                let jobs: Vec<Queued> = records
                    .into_iter()
                    .filter_map(|record| match serde_json::from_str::<KeptJob>(&record.value) {
                        Ok(kept) => Some(Queued {
                            job: OutboundJob {
                                conversation: kept.conversation,
                                message_id: kept.message_id,
                                channel: kept.channel,
                                content: kept.content,
                                route: kept.route,
                            },
                            attempts: kept.attempts,
                            queued_at_ms: kept.queued_at_ms,
                        }),
                        Err(error) => {
                            tracing::error!(key = record.key, %error, "kept outbox job unreadable; skipped");
                            None
                        }
                    })
                    .collect();
                if !jobs.is_empty() {
                    tracing::info!(jobs = jobs.len(), "resuming kept outbox jobs");
                }
                return Some(jobs);
            }
            Err(error) => {
                tracing::warn!(%error, "kept outbox jobs not loaded yet");
                tokio::select! {
                    () = context.stop.cancelled() => return None,
                    () = tokio::time::sleep(RESUME_RETRY) => {}
                }
            }
        }
    }
}

async fn dispatch(mut rx: mpsc::Receiver<Queued>, context: Arc<Context>, shutdown: Shutdown) {
    let mut lanes: HashMap<ConversationId, mpsc::Sender<Queued>> = HashMap::new();
    let Some(kept) = kept_jobs(&context).await else {
        return;
    };
    let mut kept = kept.into_iter();
    loop {
        let job = match kept.next() {
            Some(job) => job,
            None => tokio::select! {
                biased;
                () = context.stop.cancelled() => break,
                job = rx.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
            },
        };
        let conversation = job.job.conversation.clone();
        let mut job = Some(job);
        if let Some(lane) = lanes.get(&conversation) {
            if let Some(j) = job.take() {
                if let Err(mpsc::error::SendError(j)) = lane.send(j).await {
                    job = Some(j);
                }
            }
        }
        if let Some(job) = job {
            let (tx, lane_rx) = mpsc::channel(LANE_QUEUE);
            // A fresh channel has room for one job.
            drop(tx.try_send(job));
            lanes.insert(conversation, tx);
            shutdown.spawn(lane(lane_rx, Arc::clone(&context)));
        }
        lanes.retain(|_, tx| !tx.is_closed());
    }
}

async fn lane(mut rx: mpsc::Receiver<Queued>, context: Arc<Context>) {
    loop {
        let next = tokio::select! {
            biased;
            () = context.stop.cancelled() => return,
            next = tokio::time::timeout(LANE_IDLE, rx.recv()) => next,
        };
        match next {
            Ok(Some(job)) => work(&context, job).await,
            Ok(None) => return,
            Err(_) => {
                // Idle: refuse new jobs (the dispatcher opens a new lane), then finish what got in.
                rx.close();
                while let Some(job) = rx.recv().await {
                    work(&context, job).await;
                }
                return;
            }
        }
    }
}

/// Delivers one job; once it is sent or dead-lettered its kept record is released (also when the final state
/// could not be logged: a sent message must not be sent again by the next start).
async fn work(context: &Context, queued: Queued) {
    if deliver(context, &queued).await == Outcome::Interrupted {
        return;
    }
    if let Err(error) = context.store.release(Inbox::Outbox, &queued.key()).await {
        // Resumed by the next start: sent again, or dead-lettered again.
        tracing::warn!(conversation_id = %queued.job.conversation, %error, "finished outbox job not released");
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Sent or dead-lettered.
    Finished,
    /// The gateway is stopping: the job stays kept for the next start.
    Interrupted,
}

fn update(job: &OutboundJob, state: &str, attempt: u32) -> DeliveryUpdate {
    DeliveryUpdate {
        message_id: job.message_id.clone(),
        channel: job.channel,
        state: state.to_owned(),
        attempt,
        reason: None,
        detail: String::new(),
        provider_message_id: None,
        segments: None,
    }
}

fn failed(job: &OutboundJob, attempt: u32, failure: &SendFailure) -> DeliveryUpdate {
    let provider = match &failure.error {
        ConnectorError::Rejected { code, message } => format!(" (provider {code}: {message})"),
        other => format!(" ({other})"),
    };
    DeliveryUpdate {
        reason: Some(reason_name(failure.reason).to_owned()),
        detail: format!("{}{provider}", dead_letter_text(failure.reason)),
        ..update(job, "failed", attempt)
    }
}

/// What the agent reads about a dead letter: the connectors' sentences for transient reasons promise a retry,
/// which a dead letter no longer makes.
fn dead_letter_text(reason: FailureReason) -> &'static str {
    match reason {
        FailureReason::ProviderUnavailable
        | FailureReason::RateLimited
        | FailureReason::AccessTokenInvalid => {
            "the message was not delivered: the provider did not accept it in time; send it again later"
        }
        other => other.agent_message(),
    }
}

/// Whether a channel has a send API we implement. Aliyun and Tencent SMS uplinks only receive; web and app
/// chats are read over the customer's socket; a call's text stays in the log.
pub fn has_outbound(channel: Channel) -> bool {
    matches!(
        channel,
        Channel::WechatOa | Channel::WechatKf | Channel::SmsTwilio
    )
}

/// The dead letter of a reply on a conversation whose channel cannot send: the agent is told to pick another.
fn no_outbound(job: &OutboundJob, channel: Channel) -> DeliveryUpdate {
    DeliveryUpdate {
        reason: Some("no_outbound".to_owned()),
        detail: format!(
            "the {} channel has no outbound API: send the reply again with via set to another channel the \
             customer can be reached on (e.g. {{\"channel\":\"sms_twilio\"}})",
            channel.as_str()
        ),
        ..update(job, "failed", 0)
    }
}

fn refusal(reason: FailureReason, detail: &str) -> SendFailure {
    SendFailure {
        error: ConnectorError::Rejected {
            code: reason_name(reason).to_owned(),
            message: detail.to_owned(),
        },
        reason,
    }
}

async fn report(context: &Context, job: &OutboundJob, update: DeliveryUpdate) {
    metrics::channel_delivery(job.channel.as_str(), &update.state);
    for attempt in 1..=REPORT_ATTEMPTS {
        match context
            .bus
            .delivery_updated(job.conversation.clone(), update.clone())
            .await
        {
            Ok(()) => return,
            Err(error) if attempt == REPORT_ATTEMPTS => {
                tracing::error!(conversation_id = %job.conversation, state = %update.state, %error, "delivery state not logged");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await,
        }
    }
}

#[tracing::instrument(skip_all, fields(conversation_id = %queued.job.conversation, channel = queued.job.channel.as_str()))]
async fn deliver(context: &Context, queued: &Queued) -> Outcome {
    let job = &queued.job;
    let address = match &job.route {
        // A route the agent picked: the provider enforces its own reply rules (WeChat's 48-hour window).
        Some(route) => Address {
            channel: route.via.channel,
            account: route.via.account.clone(),
            channel_account: String::new(),
            to: route.to.clone(),
            capability: ReplyCapability::Free,
        },
        None => match context.addresses.lookup(&job.conversation, &context.store).await {
            Ok(Some(address)) => address,
            Ok(None) => {
                let failure = refusal(
                    FailureReason::Misconfigured,
                    "no channel address for this conversation",
                );
                report(context, job, failed(job, 0, &failure)).await;
                return Outcome::Finished;
            }
            Err(error) => {
                let failure = refusal(FailureReason::ProviderUnavailable, &error.to_string());
                report(context, job, failed(job, 0, &failure)).await;
                return Outcome::Finished;
            }
        },
    };
    if !has_outbound(address.channel) {
        report(context, job, no_outbound(job, address.channel)).await;
        return Outcome::Finished;
    }
    let Some((connector, pace)) = context
        .connectors
        .get(&(address.channel, address.account.clone()))
    else {
        let failure = refusal(
            FailureReason::Misconfigured,
            "the channel account is not configured",
        );
        report(context, job, failed(job, 0, &failure)).await;
        return Outcome::Finished;
    };
    // The conversation's own reply window is only tracked for replies through its own address.
    let own_address = job.route.is_none();
    // Block a send the provider would refuse (45015/45047) and say why, rather than spend a call on it.
    let after_send = match window::consume(&address.capability, unix_ms()) {
        Ok(next) => next,
        Err(reason) => {
            let failure = refusal(reason, "the reply window allows no more messages");
            report(context, job, failed(job, 0, &failure)).await;
            return Outcome::Finished;
        }
    };
    let message = OutboundMessage {
        conversation_id: job.conversation.clone(),
        message_id: job.message_id.clone(),
        channel: address.channel,
        channel_account: address.channel_account.clone(),
        to: address.to.clone(),
        content: job.content.clone(),
    };
    let mut attempt = queued.attempts;
    loop {
        attempt += 1;
        pace.wait().await;
        match connector.send(&message).await {
            Ok(receipt) => {
                if own_address {
                    context.addresses.set_capability(&job.conversation, after_send);
                }
                if let Some(sid) = &receipt.provider_message_id {
                    context.sent.insert(
                        sid.clone(),
                        SentRecord {
                            conversation: job.conversation.clone(),
                            message_id: job.message_id.clone(),
                            channel: job.channel,
                        },
                    );
                }
                let sent = DeliveryUpdate {
                    provider_message_id: receipt.provider_message_id,
                    ..update(job, "sent", attempt)
                };
                report(context, job, sent).await;
                return Outcome::Finished;
            }
            Err(failure) if failure.error.is_retryable() && attempt < context.config.max_attempts => {
                let retry_after = match failure.error {
                    ConnectorError::RateLimited { retry_after } => Some(retry_after),
                    _ => None,
                };
                let delay = backoff(&context.config, attempt, retry_after, rand::thread_rng().gen());
                tracing::info!(attempt, delay_ms = delay.as_millis() as u64, error = %failure.error, "provider send failed; retrying");
                let retrying = DeliveryUpdate {
                    reason: Some(reason_name(failure.reason).to_owned()),
                    detail: failure.error.to_string(),
                    ..update(job, "retrying", attempt)
                };
                keep(&*context.store, queued, attempt).await;
                report(context, job, retrying).await;
                tokio::select! {
                    () = context.stop.cancelled() => return Outcome::Interrupted,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(failure) => {
                tracing::warn!(attempt, error = %failure.error, "message dead-lettered");
                if own_address
                    && matches!(
                        failure.reason,
                        FailureReason::WindowClosed | FailureReason::QuotaExhausted
                    )
                {
                    let closed = ReplyCapability::Window {
                        expires_at_ms: 0,
                        remaining: 0,
                    };
                    let closed = if failure.reason == FailureReason::QuotaExhausted {
                        match &address.capability {
                            ReplyCapability::Window { expires_at_ms, .. } => ReplyCapability::Window {
                                expires_at_ms: *expires_at_ms,
                                remaining: 0,
                            },
                            ReplyCapability::Free => ReplyCapability::Free,
                        }
                    } else {
                        closed
                    };
                    context.addresses.set_capability(&job.conversation, closed);
                }
                report(context, job, failed(job, attempt, &failure)).await;
                return Outcome::Finished;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_half_jitter_and_honours_retry_after() {
        let config = OutboxConfig {
            max_attempts: 8,
            retry_base_ms: 1_000,
            retry_max_ms: 10_000,
            request_timeout_ms: 1_000,
        };
        assert_eq!(backoff(&config, 1, None, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(&config, 1, None, 1.0), Duration::from_millis(1_000));
        assert_eq!(backoff(&config, 3, None, 1.0), Duration::from_millis(4_000));
        assert_eq!(backoff(&config, 10, None, 1.0), Duration::from_millis(10_000));
        assert_eq!(backoff(&config, 64, None, 0.5), Duration::from_millis(7_500));
        assert_eq!(
            backoff(&config, 1, Some(Duration::from_secs(60)), 0.0),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn dead_letters_never_promise_a_retry() {
        for reason in [
            FailureReason::ProviderUnavailable,
            FailureReason::RateLimited,
            FailureReason::AccessTokenInvalid,
        ] {
            assert!(!dead_letter_text(reason).contains("retried"), "{reason:?}");
        }
        assert_eq!(
            dead_letter_text(FailureReason::WindowClosed),
            FailureReason::WindowClosed.agent_message()
        );
    }

    #[test]
    fn kept_jobs_carry_the_picked_route_and_older_records_still_read() {
        use omnigate_connectors::model::{Identity, IdentityKind, MessageId};
        let route = Route {
            via: crate::store::Via {
                channel: Channel::SmsTwilio,
                account: "us".to_owned(),
            },
            to: Identity {
                kind: IdentityKind::Phone,
                value: "+8613800138000".to_owned(),
                verified: false,
            },
        };
        let queued = Queued {
            job: OutboundJob {
                conversation: ConversationId::parse("c_1").unwrap(),
                message_id: MessageId::parse("m_1").unwrap(),
                channel: Channel::SmsTwilio,
                content: Content::Text { text: "hi".into() },
                route: Some(route.clone()),
            },
            attempts: 0,
            queued_at_ms: 7,
        };
        let kept: KeptJob = serde_json::from_str(&queued.kept(2).unwrap()).unwrap();
        assert_eq!((kept.route, kept.attempts), (Some(route), 2));
        let older = r#"{"conversation":"c_1","message_id":"m_1","channel":"wechat_oa","content":{"type":"text","text":"hi"},"attempts":1,"queued_at_ms":7}"#;
        assert_eq!(serde_json::from_str::<KeptJob>(older).unwrap().route, None);
    }

    #[test]
    fn only_channels_with_a_send_api_have_outbound() {
        for channel in [
            Channel::SmsAliyun,
            Channel::SmsTencent,
            Channel::Web,
            Channel::App,
            Channel::Voice,
        ] {
            assert!(!has_outbound(channel), "{channel:?}");
        }
        for channel in [Channel::SmsTwilio, Channel::WechatOa, Channel::WechatKf] {
            assert!(has_outbound(channel), "{channel:?}");
        }
    }

    #[test]
    fn reasons_have_stable_names() {
        assert_eq!(reason_name(FailureReason::WindowClosed), "window_closed");
        assert_eq!(reason_name(FailureReason::QuotaExhausted), "quota_exhausted");
        assert_eq!(reason_name(FailureReason::Other), "rejected");
    }
}
