//! The signed CTI webhook (`cti-webhook/1`, PROTOCOLS.md §3.6): `POST /channels/cti/v1/events` in, and the
//! signed "connect agent" instruction out once an agent took a call.
//!
//! A call is a conversation of channel `voice`: every event (offered, IVR input, queued, answered, ended,
//! recording) is stored in it, in `seq` order, as a customer `message.created` with an event content plus its
//! raw body, so the agent sees the call in the same view as a chat. The call enters routing (voice capacity)
//! at `call.queued`, carrying the IVR input as routing attributes that the offer shows. Events after a `seq` gap wait in the
//! reorder buffer until the gap fills or `reorder_gap_ms` passes; a `webhook-id` seen before, or a `seq` already
//! applied, answers 200 without processing.

use std::collections::HashMap;
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
use omnigate_connectors::cti::wire::{CallEvent, ConnectAgent, CtiMessage};
use omnigate_connectors::cti::{normalize, CtiWebhook};
use omnigate_connectors::model::{Channel, ConversationId, Identity, IdentityKind};
use tokio::sync::{mpsc, Mutex};

use super::outbox::{backoff, Assignment};
use super::{ChannelHub, WebhookError};
use crate::clock::unix_ms;
use crate::shutdown::Shutdown;
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
}

#[derive(Debug)]
struct Call {
    caller: Identity,
}

#[derive(Debug)]
struct Calls {
    buffer: ReorderBuffer<Pending>,
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
        calls: Mutex::new(Calls {
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
    calls.seen.purge(now_ms);
    if !calls.seen.first_time(&msg.envelope.id, now_ms) {
        metrics::channel_inbound(Channel::Voice.as_str(), "duplicate");
        return Ok(ok());
    }
    let call_id = msg.envelope.call_id.clone();
    let seq = msg.envelope.seq;
    match calls.buffer.offer(&call_id, seq, Pending { msg, raw }, now_ms) {
        Offer::Duplicate | Offer::AlreadyBuffered => {
            metrics::channel_inbound(Channel::Voice.as_str(), "duplicate");
        }
        Offer::Buffered { waiting_for, .. } => {
            tracing::debug!(call_id, seq, waiting_for, "cti event held back behind a seq gap");
        }
        Offer::Apply(items) => {
            for pending in items {
                apply(&hub, cti, &mut calls, pending).await?;
            }
        }
    }
    Ok(ok())
}

/// Stores one call event, in order, in the call's conversation.
async fn apply(
    hub: &ChannelHub,
    cti: &CtiEndpoint,
    calls: &mut Calls,
    pending: Pending,
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
    calls.calls.insert(call_id.clone(), Call { caller });
    calls.by_conversation.insert(ack.conversation, call_id);
    Ok(())
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
        if calls.buffer.next_deadline().is_none_or(|d| d > now_ms) {
            continue;
        }
        for (call_id, items) in calls.buffer.expire(now_ms) {
            tracing::warn!(
                call_id,
                "cti seq gap not filled in time; applying the events held behind it"
            );
            for pending in items {
                if let Err(error) = apply(&hub, cti, &mut calls, pending).await {
                    tracing::error!(call_id, %error, "held-back cti event not stored");
                }
            }
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
    let Some(call_id) = cti
        .calls
        .lock()
        .await
        .by_conversation
        .get(&assignment.conversation)
        .cloned()
    else {
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
