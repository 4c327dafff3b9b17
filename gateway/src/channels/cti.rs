//! The signed CTI webhook (`cti-webhook/1`, PROTOCOLS.md §3.6): `POST /channels/cti/v1/events` in, and the
//! signed "connect agent" instruction out once an agent took a call.
//!
//! A call is a conversation of channel `voice`: every event (offered, IVR input, queued, answered, ended,
//! recording) is stored in it, in `seq` order, as a customer `message.created` with an event content plus its
//! raw body, so the agent sees the call in the same view as a chat. The call enters routing (voice capacity)
//! at `call.queued`, carrying the IVR input as routing attributes that the offer shows. Events after a `seq` gap wait in the
//! reorder buffer until the gap fills or `reorder_gap_ms` passes; a `webhook-id` seen before, or a `seq` already
//! applied, answers 2xx without processing.
//!
//! Nothing answered 2xx is lost: every new event is kept in the store's CTI inbox ([`Inbox::Cti`]) before the
//! answer, and released once it is in its conversation. A store that cannot keep it gets a 503, so the
//! telephony platform retries. An event whose conversation write fails after that stays first in its call's
//! ready queue and is retried (in order) by the gap timer; a restarted gateway loads the kept events and resumes
//! each call's order from them before it takes a new event.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::HeaderMap;
use omnigate_config::{Cti as CtiConfig, ExposeSecret, Outbox as OutboxConfig};
use omnigate_connectors::cti::dedupe::SeenIds;
use omnigate_connectors::cti::reorder::{Offer, ReorderBuffer};
use omnigate_connectors::cti::signature::{
    WebhookHeaders, WebhookSecret, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use omnigate_connectors::cti::wire::{self, CallEvent, ConnectAgent, CtiMessage, Transferred};
use omnigate_connectors::cti::{normalize, CtiWebhook};
use omnigate_connectors::model::{Channel, ConversationId, Identity, IdentityKind};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Mutex};

use super::outbox::{backoff, Assignment};
use super::{ChannelHub, WebhookError};
use crate::clock::unix_ms;
use crate::protocol::TransferTo;
use crate::shutdown::Shutdown;
use crate::store::Inbox;
use crate::telemetry::metrics;

/// The connector id voice conversations are stored under.
pub const ACCOUNT: &str = "cti";
/// `webhook-id`s remembered (PROTOCOLS.md §3.6 asks for at least 24 h).
const SEEN_RETENTION_MS: u64 = 24 * 3600 * 1000;
/// How often the reorder buffer's gap deadlines are checked.
const EXPIRY_TICK: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Pending {
    msg: CtiMessage,
    raw: String,
    /// Its record in the store's CTI inbox, released once applied.
    key: String,
}

/// An accepted event as held in the store until it is applied: the raw body (verified when it arrived) and
/// the call's last applied `seq` when it was held, from which a restarted gateway resumes the call's order.
#[derive(Debug, Serialize, Deserialize)]
struct HeldEvent {
    call_id: String,
    seq: u64,
    after: u64,
    raw: String,
    /// The caller, when an earlier event of the call named it (later events do not).
    #[serde(default)]
    caller: Option<Identity>,
}

#[derive(Debug)]
struct Call {
    caller: Identity,
    /// The agent the telephony system was last told to connect.
    agent: Option<String>,
}

#[derive(Debug)]
struct Calls {
    /// Whether the held events of the previous run were loaded into `buffer`.
    resumed: bool,
    buffer: ReorderBuffer<Pending>,
    /// Events released in order by the buffer whose store write failed: retried, in order, before anything
    /// later of the same call.
    ready: HashMap<String, VecDeque<Pending>>,
    seen: SeenIds,
    calls: HashMap<String, Call>,
    by_conversation: HashMap<ConversationId, String>,
}

/// The CTI webhook's state.
#[derive(Debug)]
pub struct CtiEndpoint {
    webhook: CtiWebhook,
    tenant: String,
    queue: Option<String>,
    connect_url: String,
    max_body_bytes: usize,
    calls: Mutex<Calls>,
}

/// Builds the endpoint from configuration.
///
/// # Errors
/// A secret that is not `whsec_` + base64.
pub fn endpoint(config: &CtiConfig) -> anyhow::Result<CtiEndpoint> {
    let parse = |s: &omnigate_config::SecretString| {
        WebhookSecret::parse(s.expose_secret()).map_err(|e| anyhow::anyhow!("channels.cti secret: {e}"))
    };
    let current = parse(&config.secret)?;
    let mut webhook = CtiWebhook {
        inbound_secrets: vec![current.clone()],
        outbound_secrets: vec![current],
        tenant: Some(config.tenant.clone()),
        max_body_bytes: config.max_body_bytes,
    };
    if let Some(previous) = &config.previous_secret {
        webhook.inbound_secrets.push(parse(previous)?);
    }
    Ok(CtiEndpoint {
        webhook,
        tenant: config.tenant.clone(),
        queue: Some(config.queue.clone()).filter(|q| !q.is_empty()),
        connect_url: config.connect_url.clone(),
        max_body_bytes: config.max_body_bytes,
        calls: Mutex::new(Calls {
            resumed: false,
            ready: HashMap::new(),
            buffer: ReorderBuffer::new(config.reorder_gap_ms),
            seen: SeenIds::new(SEEN_RETENTION_MS),
            calls: HashMap::new(),
            by_conversation: HashMap::new(),
        }),
    })
}

fn ok() -> Response {
    http::StatusCode::NO_CONTENT.into_response()
}

/// `POST /channels/cti/v1/events`.
pub(super) async fn events(
    State(hub): State<Arc<ChannelHub>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebhookError> {
    let cti = hub.cti.as_ref().ok_or(WebhookError::UnknownAccount)?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = WebhookHeaders {
        id: header(ID_HEADER),
        timestamp: header(TIMESTAMP_HEADER),
        signature: header(SIGNATURE_HEADER),
    };
    let now_ms = unix_ms();
    let msg = cti
        .webhook
        .receive(&signed, &body, (now_ms / 1000) as i64)
        .map_err(|e| WebhookError::refused(Channel::Voice, e))?;
    // Verified JSON is UTF-8.
    let raw = String::from_utf8_lossy(&body).into_owned();
    let mut calls = cti.calls.lock().await;
    resume(&hub, cti, &mut calls).await?;
    calls.seen.purge(now_ms);
    if !calls.seen.first_time(&msg.envelope.id, now_ms) {
        metrics::channel_inbound(Channel::Voice.as_str(), "duplicate");
        return Ok(ok());
    }
    let call_id = msg.envelope.call_id.clone();
    let seq = msg.envelope.seq;
    let after = calls.buffer.call(&call_id).map_or(0, |c| c.last_applied());
    if seq <= after {
        metrics::channel_inbound(Channel::Voice.as_str(), "duplicate");
        return Ok(ok());
    }
    // Durable before the 2xx: once the telephony platform is told "accepted" it never sends the event again,
    // so the event must survive a failed store write and a restart from here on.
    let key = held_key(&call_id, seq);
    let held = HeldEvent {
        call_id: call_id.clone(),
        seq,
        after,
        raw,
        caller: calls.calls.get(&call_id).map(|c| c.caller.clone()),
    };
    let value = serde_json::to_string(&held).map_err(|e| WebhookError::Unavailable(e.to_string()))?;
    if let Err(error) = hub.store.hold(Inbox::Cti, &key, &value).await {
        calls.seen.forget(&msg.envelope.id);
        tracing::warn!(call_id, seq, %error, "cti event not kept; the telephony platform will retry");
        return Err(WebhookError::Unavailable(error.to_string()));
    }
    let pending = Pending {
        msg,
        raw: held.raw,
        key,
    };
    offer(&hub, cti, &mut calls, pending, now_ms).await;
    Ok(ok())
}

/// `<call_id>#<seq>`: the event's key in the CTI inbox.
fn held_key(call_id: &str, seq: u64) -> String {
    format!("{call_id}#{seq:020}")
}

/// Puts a kept event into its call's order and applies what became ready. A store failure while applying
/// leaves the event (kept) at the head of its call's ready queue, retried by the gap timer.
async fn offer(hub: &ChannelHub, cti: &CtiEndpoint, calls: &mut Calls, pending: Pending, now_ms: u64) {
    let call_id = pending.msg.envelope.call_id.clone();
    let seq = pending.msg.envelope.seq;
    match calls.buffer.offer(&call_id, seq, pending, now_ms) {
        Offer::Duplicate | Offer::AlreadyBuffered => {
            metrics::channel_inbound(Channel::Voice.as_str(), "duplicate");
        }
        Offer::Buffered { waiting_for, .. } => {
            tracing::debug!(call_id, seq, waiting_for, "cti event held back behind a seq gap");
        }
        Offer::Apply(items) => {
            calls.ready.entry(call_id.clone()).or_default().extend(items);
            drain(hub, cti, calls, &call_id).await;
        }
    }
}

/// Applies a call's ready events in order, releasing each from the store once applied; stops at the first
/// that cannot be stored (it stays first, and kept).
async fn drain(hub: &ChannelHub, cti: &CtiEndpoint, calls: &mut Calls, call_id: &str) {
    while let Some(pending) = calls.ready.get_mut(call_id).and_then(VecDeque::pop_front) {
        let seq = pending.msg.envelope.seq;
        match apply(hub, cti, calls, &pending).await {
            Ok(()) => {
                if let Err(error) = hub.store.release(Inbox::Cti, &pending.key).await {
                    // Applying is idempotent: a restart applies it again as a duplicate.
                    tracing::warn!(call_id, seq, %error, "applied cti event not released");
                }
            }
            Err(error) => {
                tracing::warn!(call_id, seq, %error, "cti event not stored yet; kept and retried");
                if let Some(queue) = calls.ready.get_mut(call_id) {
                    queue.push_front(pending);
                }
                return;
            }
        }
    }
    calls.ready.remove(call_id);
}

/// Once per process, before any event is taken: loads the events the previous run kept but did not apply,
/// and puts them back in their calls' order (each call resumes after the lowest `seq` its held events saw
/// applied, so nothing held is taken for a duplicate; an event applied twice is stored once).
///
/// # Errors
/// The store cannot list them: events cannot be taken in order yet (the caller answers 5xx).
async fn resume(hub: &ChannelHub, cti: &CtiEndpoint, calls: &mut Calls) -> Result<(), WebhookError> {
    if calls.resumed {
        return Ok(());
    }
    let held = hub
        .store
        .held(Inbox::Cti)
        .await
        .map_err(|e| WebhookError::Unavailable(e.to_string()))?;
    let mut events = Vec::new();
    for record in held {
        let parsed = serde_json::from_str::<HeldEvent>(&record.value)
            .map_err(|e| e.to_string())
            .and_then(|h| {
                wire::parse(h.raw.as_bytes(), cti.max_body_bytes.max(h.raw.len()))
                    .map(|msg| (h, msg))
                    .map_err(|e| e.to_string())
            });
        match parsed {
            Ok((held, msg)) => events.push((record.key, held, msg)),
            Err(error) => tracing::error!(key = record.key, %error, "held cti event unreadable; skipped"),
        }
    }
    let mut start: HashMap<String, u64> = HashMap::new();
    for (_, held, _) in &events {
        let after = start.entry(held.call_id.clone()).or_insert(held.after);
        *after = (*after).min(held.after);
    }
    for (call_id, after) in &start {
        calls.buffer.resume(call_id, *after);
    }
    for (_, held, _) in &events {
        if let Some(caller) = &held.caller {
            calls.calls.entry(held.call_id.clone()).or_insert_with(|| Call {
                caller: caller.clone(),
                agent: None,
            });
        }
    }
    calls.resumed = true;
    if !events.is_empty() {
        tracing::info!(
            events = events.len(),
            calls = start.len(),
            "resuming kept cti events"
        );
    }
    let now_ms = unix_ms();
    for (key, held, msg) in events {
        let pending = Pending {
            msg,
            raw: held.raw,
            key,
        };
        offer(hub, cti, calls, pending, now_ms).await;
    }
    Ok(())
}

/// Stores one call event, in order, in the call's conversation.
async fn apply(
    hub: &ChannelHub,
    cti: &CtiEndpoint,
    calls: &mut Calls,
    pending: &Pending,
) -> Result<(), WebhookError> {
    let call_id = pending.msg.envelope.call_id.clone();
    let caller = normalize::caller_identity(&pending.msg.event)
        .or_else(|| calls.calls.get(&call_id).map(|c| c.caller.clone()))
        // The offer was lost behind an expired gap: the call still gets a conversation of its own.
        .unwrap_or_else(|| Identity {
            kind: IdentityKind::Phone,
            value: format!("call:{call_id}"),
            verified: false,
        });
    let inbound = normalize::to_inbound(&pending.msg, &caller, &cti.tenant, &pending.raw, unix_ms());
    // A call waits in the IVR unrouted; `call.queued` puts it into routing, with the IVR's digits and intent as
    // routing attributes. A call that ends before it is queued is never offered.
    let route = matches!(pending.msg.event, CallEvent::Queued(_));
    let attributes = pending.msg.event.routing_attributes();
    let ack = hub
        .ingest_with(ACCOUNT, cti.queue.clone(), inbound, attributes, route)
        .await?;
    calls
        .calls
        .entry(call_id.clone())
        .and_modify(|call| call.caller = caller.clone())
        .or_insert(Call { caller, agent: None });
    calls
        .by_conversation
        .insert(ack.conversation.clone(), call_id.clone());
    // Applied once: a re-applied event (a retry, a restart) is a duplicate and must not move the call again.
    if let (CallEvent::Transferred(transfer), false) = (&pending.msg.event, ack.duplicate) {
        reroute(hub, calls, &call_id, ack.conversation, transfer).await;
    }
    Ok(())
}

/// A transfer on the telephony side moves the call's conversation in routing too: requeued to the target
/// queue, or offered to the target agent, who then sees it and is connected like any assignee. A transfer to an
/// external number leaves routing as it is.
async fn reroute(
    hub: &ChannelHub,
    calls: &Calls,
    call_id: &str,
    conversation: ConversationId,
    transfer: &Transferred,
) {
    let to = match (transfer.to.kind.as_str(), transfer.to.id.clone()) {
        ("agent", Some(agent)) => TransferTo::Agent(agent),
        ("queue", Some(queue)) => TransferTo::Queue(queue),
        (kind, _) => {
            tracing::info!(call_id, kind, "call transferred outside routing");
            return;
        }
    };
    let from = transfer
        .from_agent_id
        .clone()
        .or_else(|| calls.calls.get(call_id).and_then(|c| c.agent.clone()));
    let Some(from) = from else {
        tracing::warn!(call_id, conversation_id = %conversation, "call transferred but no agent had it; not re-routed");
        return;
    };
    let reason = format!("call.transferred ({})", transfer.kind);
    match hub
        .bus
        .transfer(from.clone(), conversation.clone(), to, reason)
        .await
    {
        Ok(_) => {
            tracing::info!(call_id, conversation_id = %conversation, from, "call re-routed after a transfer")
        }
        Err(error) => {
            tracing::warn!(call_id, conversation_id = %conversation, from, %error, "call transfer not re-routed");
        }
    }
}

/// Applies events whose gap deadline passed, until shutdown.
async fn expire_gaps(hub: Arc<ChannelHub>, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EXPIRY_TICK) => {}
        }
        let Some(cti) = hub.cti.as_ref() else { return };
        let now_ms = unix_ms();
        let mut calls = cti.calls.lock().await;
        if let Err(error) = resume(&hub, cti, &mut calls).await {
            tracing::warn!(%error, "kept cti events not resumed yet");
            continue;
        }
        // Events released earlier whose store write failed, in order, before anything newer.
        let stuck: Vec<String> = calls.ready.keys().cloned().collect();
        for call_id in stuck {
            drain(&hub, cti, &mut calls, &call_id).await;
        }
        if calls.buffer.next_deadline().is_none_or(|d| d > now_ms) {
            continue;
        }
        for (call_id, items) in calls.buffer.expire(now_ms) {
            tracing::warn!(
                call_id,
                "cti seq gap not filled in time; applying the events held behind it"
            );
            calls.ready.entry(call_id.clone()).or_default().extend(items);
            drain(&hub, cti, &mut calls, &call_id).await;
        }
    }
}

/// Tells the telephony system which agent took each call, signed like the inbound events.
async fn connect_agents(
    mut rx: mpsc::Receiver<Assignment>,
    hub: Arc<ChannelHub>,
    client: reqwest::Client,
    config: OutboxConfig,
    shutdown: Shutdown,
) {
    let stop = shutdown.root().clone();
    loop {
        let assignment = tokio::select! {
            () = stop.cancelled() => return,
            next = rx.recv() => match next {
                Some(a) => a,
                None => return,
            },
        };
        if assignment.channel != Channel::Voice {
            continue;
        }
        let hub = Arc::clone(&hub);
        let client = client.clone();
        let config = config.clone();
        let stop = stop.clone();
        shutdown.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = connect_one(&hub, &client, &config, assignment) => {}
            }
        });
    }
}

async fn connect_one(
    hub: &ChannelHub,
    client: &reqwest::Client,
    config: &OutboxConfig,
    assignment: Assignment,
) {
    let Some(cti) = hub.cti.as_ref() else { return };
    let call_id = {
        let mut calls = cti.calls.lock().await;
        let call_id = calls.by_conversation.get(&assignment.conversation).cloned();
        if let Some(call) = call_id.as_ref().and_then(|id| calls.calls.get_mut(id)) {
            call.agent = Some(assignment.agent.clone());
        }
        call_id
    };
    let Some(call_id) = call_id else {
        tracing::warn!(conversation_id = %assignment.conversation, "assigned voice conversation has no call");
        return;
    };
    let command = ConnectAgent {
        id: format!("cmd_{}", uuid::Uuid::new_v4().simple()),
        tenant: cti.tenant.clone(),
        call_id: call_id.clone(),
        agent_id: assignment.agent.clone(),
        endpoint: None,
        decided_at_ms: unix_ms(),
    };
    for attempt in 1..=config.max_attempts {
        // Signed at each delivery: `webhook-timestamp` is the attempt's time; `webhook-id` stays the same.
        let (body, headers) = cti
            .webhook
            .sign_connect_agent(&command, (unix_ms() / 1000) as i64);
        let mut request = client
            .post(&cti.connect_url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let outcome = match request.send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    metrics::channel_delivery(Channel::Voice.as_str(), "sent");
                    tracing::info!(call_id, agent = %assignment.agent, "telephony told to connect the agent");
                    return;
                }
                // §3.6: 408, 429 and 5xx are retried; other statuses are permanent.
                if !(status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429) {
                    metrics::channel_delivery(Channel::Voice.as_str(), "failed");
                    tracing::error!(
                        call_id,
                        status = status.as_u16(),
                        "telephony refused the connect instruction"
                    );
                    return;
                }
                format!("http {status}")
            }
            Err(error) => error.to_string(),
        };
        tracing::warn!(call_id, attempt, error = %outcome, "connect instruction not delivered; retrying");
        tokio::time::sleep(backoff(config, attempt, None, rand::random())).await;
    }
    metrics::channel_delivery(Channel::Voice.as_str(), "failed");
    tracing::error!(call_id, "connect instruction dead-lettered after every attempt");
}

/// Starts the gap timer and the connect-agent worker.
pub(super) fn start(
    hub: &Arc<ChannelHub>,
    assignments: mpsc::Receiver<Assignment>,
    client: reqwest::Client,
    config: OutboxConfig,
    shutdown: &Shutdown,
) {
    shutdown.spawn(expire_gaps(Arc::clone(hub), shutdown.root().clone()));
    shutdown.spawn(connect_agents(
        assignments,
        Arc::clone(hub),
        client,
        config,
        shutdown.clone(),
    ));
}
