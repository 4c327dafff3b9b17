//! The push worker: decides when an app customer needs a push and POSTs the signed `push.requested` to the
//! bank's push service.
//!
//! The bus tells it, without waiting, of every customer-visible agent or system message in an app
//! conversation (and whether the customer had a live socket then) and of every customer ack. A message for a
//! customer without a socket is pushed at once; one sent to a live socket is pushed when no ack covers it
//! within `ack_timeout_ms`. Each message is pushed at most once; an ack cancels it. Deliveries run as tasks
//! on the shutdown tree, retried with backoff on 408, 429, 5xx and transport failures, so the worker and the
//! bus never wait on the push service.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use omnigate_config::{ExposeSecret, Outbox as RetryPolicy, Push as PushConfig};
use omnigate_connectors::cti::signature::{sign_headers, SecretError, WebhookSecret};
use omnigate_connectors::model::{ConversationId, CustomerId};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::channels::outbox::backoff;
use crate::clock::{rfc3339, unix_ms};
use crate::shutdown::Shutdown;
use crate::store::ContextStore;
use crate::telemetry::metrics;

/// Signals queued for the worker before new ones are dropped (and counted).
const QUEUE: usize = 4096;
/// Unacked messages remembered per conversation; older ones are forgotten (they only count in the badge).
const MAX_UNACKED: usize = 1000;

/// What the bus tells the push worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushSignal {
    /// A customer-visible agent or system message in an app conversation.
    Message {
        /// The customer it is for.
        customer: CustomerId,
        /// The conversation.
        conversation: ConversationId,
        /// Its position in the customer's view.
        seq: u64,
        /// The start of its text (empty for other content).
        preview: String,
        /// Whether the customer had a live socket when it was published.
        live: bool,
    },
    /// The customer acknowledged every event up to `seq` of the conversation.
    Acked {
        /// The conversation.
        conversation: ConversationId,
        /// Its position in the customer's view.
        seq: u64,
    },
}

/// The bus's side of the push worker. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct PushHandle {
    tx: mpsc::Sender<PushSignal>,
}

impl PushHandle {
    /// Passes a signal on; when the worker is behind, the signal is dropped, counted and logged.
    pub fn signal(&self, signal: PushSignal) {
        if let Err(error) = self.tx.try_send(signal) {
            metrics::push_request("dropped");
            tracing::warn!(%error, "push signal dropped: the push worker is behind");
        }
    }
}

/// Why the push worker cannot start (a configuration problem found at build).
#[derive(Debug, thiserror::Error)]
pub enum PushSetupError {
    /// The signing secret is not `whsec_` base64.
    #[error("channels.push.secret: {0}")]
    Secret(#[from] SecretError),
    /// The HTTP client cannot be built.
    #[error("push http client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What one delivery needs, shared by every delivery task.
#[derive(Debug)]
struct Sender {
    url: String,
    secrets: Vec<WebhookSecret>,
    include_preview: bool,
    retry: RetryPolicy,
    client: reqwest::Client,
    store: Arc<dyn ContextStore>,
}

/// One push to request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PushRequest {
    customer: CustomerId,
    conversation: ConversationId,
    seq: u64,
    preview: String,
    badge: usize,
}

#[derive(Debug)]
struct Pending {
    customer: CustomerId,
    acked: u64,
    /// Unacked message `seq` → (preview, already pushed).
    unacked: BTreeMap<u64, (String, bool)>,
}

/// The worker's decisions, kept apart from its IO so they can be tested with a paused clock.
#[derive(Debug, Default)]
struct Tracker {
    pending: HashMap<ConversationId, Pending>,
    timers: BTreeSet<(Instant, ConversationId, u64)>,
}

impl Tracker {
    /// Applies a signal; returns the push to request now, if any.
    fn on_signal(&mut self, signal: PushSignal, now: Instant, ack_timeout: Duration) -> Option<PushRequest> {
        match signal {
            PushSignal::Message {
                customer,
                conversation,
                seq,
                preview,
                live,
            } => {
                let entry = self
                    .pending
                    .entry(conversation.clone())
                    .or_insert_with(|| Pending {
                        customer,
                        acked: 0,
                        unacked: BTreeMap::new(),
                    });
                if seq <= entry.acked || entry.unacked.contains_key(&seq) {
                    return None;
                }
                entry.unacked.insert(seq, (preview, false));
                if entry.unacked.len() > MAX_UNACKED {
                    entry.unacked.pop_first();
                }
                if live {
                    self.timers.insert((now + ack_timeout, conversation, seq));
                    None
                } else {
                    self.request(&conversation, seq)
                }
            }
            PushSignal::Acked { conversation, seq } => {
                if let Some(entry) = self.pending.get_mut(&conversation) {
                    entry.acked = entry.acked.max(seq);
                    entry.unacked.retain(|s, _| *s > seq);
                    if entry.unacked.is_empty() {
                        self.pending.remove(&conversation);
                    }
                }
                None
            }
        }
    }

    /// The pushes whose ack timeout passed by `now`.
    fn due(&mut self, now: Instant) -> Vec<PushRequest> {
        let mut out = Vec::new();
        while let Some(first) = self.timers.first().cloned() {
            if first.0 > now {
                break;
            }
            self.timers.pop_first();
            out.extend(self.request(&first.1, first.2));
        }
        out
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _, _)| *at)
    }

    /// Marks the message pushed and builds its request, unless it was acked or pushed already.
    fn request(&mut self, conversation: &ConversationId, seq: u64) -> Option<PushRequest> {
        let entry = self.pending.get_mut(conversation)?;
        let (preview, pushed) = entry.unacked.get_mut(&seq)?;
        if *pushed {
            return None;
        }
        *pushed = true;
        let preview = preview.clone();
        let customer = entry.customer.clone();
        let badge = self
            .pending
            .values()
            .filter(|p| p.customer == customer)
            .map(|p| p.unacked.len())
            .sum();
        Some(PushRequest {
            customer,
            conversation: conversation.clone(),
            seq,
            preview,
            badge,
        })
    }
}

/// Starts the worker on the shutdown tree.
///
/// # Errors
/// [`PushSetupError`] for a bad secret or when the HTTP client cannot be built.
pub fn start(
    config: &PushConfig,
    store: Arc<dyn ContextStore>,
    shutdown: &Shutdown,
) -> Result<PushHandle, PushSetupError> {
    let secrets = vec![WebhookSecret::parse(config.secret.expose_secret())?];
    let client = crate::channels::http_client::build(Duration::from_millis(config.request_timeout_ms))?;
    let sender = Arc::new(Sender {
        url: config.url.clone(),
        secrets,
        include_preview: config.include_preview,
        retry: RetryPolicy {
            max_attempts: config.max_attempts,
            retry_base_ms: config.retry_base_ms,
            retry_max_ms: config.retry_max_ms,
            request_timeout_ms: config.request_timeout_ms,
        },
        client,
        store,
    });
    let (tx, rx) = mpsc::channel(QUEUE);
    let ack_timeout = Duration::from_millis(config.ack_timeout_ms);
    shutdown.spawn(run(rx, sender, ack_timeout, shutdown.clone()));
    Ok(PushHandle { tx })
}

async fn run(
    mut rx: mpsc::Receiver<PushSignal>,
    sender: Arc<Sender>,
    ack_timeout: Duration,
    shutdown: Shutdown,
) {
    let stop = shutdown.root().clone();
    let mut tracker = Tracker::default();
    loop {
        let next = tracker.next_deadline();
        let requests = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            signal = rx.recv() => match signal {
                Some(signal) => tracker.on_signal(signal, Instant::now(), ack_timeout).into_iter().collect(),
                None => return,
            },
            () = async { if let Some(at) = next { tokio::time::sleep_until(at).await } }, if next.is_some() => {
                tracker.due(Instant::now())
            }
        };
        for request in requests {
            let sender = Arc::clone(&sender);
            let stop = stop.clone();
            shutdown.spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = deliver(&sender, request) => {}
                }
            });
        }
    }
}

/// The `push.requested` body.
fn body(request: &PushRequest, id: &str, devices: &[crate::store::Device], include_preview: bool) -> String {
    let mut body = json!({
        "type": "push.requested",
        "id": id,
        "customer_id": request.customer,
        "conversation_id": request.conversation,
        "seq": request.seq,
        "badge": request.badge,
        "collapse_key": format!("conversation:{}", request.conversation),
        "devices": devices,
        "created_at": rfc3339(unix_ms()),
    });
    if include_preview && !request.preview.is_empty() {
        body["preview"] = json!(request.preview);
    }
    body.to_string()
}

async fn deliver(sender: &Sender, request: PushRequest) {
    let conversation_id = request.conversation.to_string();
    let devices = match sender.store.devices(&request.customer).await {
        Ok(devices) => devices,
        Err(error) => {
            metrics::push_request("failed");
            tracing::warn!(conversation_id, %error, "push not requested: devices unreadable");
            return;
        }
    };
    if devices.is_empty() {
        metrics::push_request("no_device");
        tracing::debug!(conversation_id, "no push: the customer registered no device");
        return;
    }
    // One id for every attempt, so the push service can drop repeats; signed afresh at each attempt.
    let id = format!("push_{}", uuid::Uuid::new_v4().simple());
    let payload = body(&request, &id, &devices, sender.include_preview);
    for attempt in 1..=sender.retry.max_attempts {
        let headers = sign_headers(
            &sender.secrets,
            &id,
            (unix_ms() / 1000) as i64,
            payload.as_bytes(),
        );
        let mut post = sender
            .client
            .post(&sender.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(payload.clone());
        for (name, value) in headers {
            post = post.header(name, value);
        }
        let outcome = match post.send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    metrics::push_request("sent");
                    tracing::info!(conversation_id, seq = request.seq, "push requested");
                    return;
                }
                if !(status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429) {
                    metrics::push_request("failed");
                    tracing::error!(
                        conversation_id,
                        status = status.as_u16(),
                        "push service refused the request"
                    );
                    return;
                }
                format!("http {status}")
            }
            Err(error) => error.to_string(),
        };
        if attempt == sender.retry.max_attempts {
            break;
        }
        tracing::warn!(conversation_id, attempt, error = %outcome, "push request not delivered; retrying");
        tokio::time::sleep(backoff(&sender.retry, attempt, None, rand::random())).await;
    }
    metrics::push_request("failed");
    tracing::error!(conversation_id, "push request dropped after every attempt");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(conversation: &ConversationId, seq: u64, live: bool) -> PushSignal {
        PushSignal::Message {
            customer: CustomerId::parse("u_alice").unwrap(),
            conversation: conversation.clone(),
            seq,
            preview: format!("m{seq}"),
            live,
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn a_message_without_a_socket_is_pushed_once_at_once() {
        let mut t = Tracker::default();
        let c = ConversationId::parse("c_1").unwrap();
        let now = Instant::now();
        let first = t.on_signal(message(&c, 3, false), now, TIMEOUT).unwrap();
        assert_eq!((first.seq, first.badge, first.preview.as_str()), (3, 1, "m3"));
        assert_eq!(t.on_signal(message(&c, 3, false), now, TIMEOUT), None, "once");
        let second = t.on_signal(message(&c, 4, false), now, TIMEOUT).unwrap();
        assert_eq!(second.badge, 2, "badge counts unacked messages");
        assert!(t.due(now + TIMEOUT * 2).is_empty());
    }

    #[test]
    fn a_live_message_is_pushed_only_when_not_acked_in_time() {
        let mut t = Tracker::default();
        let c = ConversationId::parse("c_1").unwrap();
        let now = Instant::now();
        assert_eq!(t.on_signal(message(&c, 1, true), now, TIMEOUT), None);
        assert_eq!(t.on_signal(message(&c, 2, true), now, TIMEOUT), None);
        assert!(t.due(now + TIMEOUT - Duration::from_millis(1)).is_empty());
        t.on_signal(
            PushSignal::Acked {
                conversation: c.clone(),
                seq: 1,
            },
            now,
            TIMEOUT,
        );
        let due = t.due(now + TIMEOUT);
        assert_eq!(due.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2]);
        assert_eq!(due[0].badge, 1);
        // An ack covering everything clears the conversation; a stale message is ignored.
        t.on_signal(
            PushSignal::Acked {
                conversation: c.clone(),
                seq: 2,
            },
            now,
            TIMEOUT,
        );
        assert!(t.pending.is_empty());
    }
}
