//! One websocket session: `hello` → `ready` → replay → live loop → close.

use std::future::Future;
use std::pin::Pin;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use omnigate_connectors::model::{ConversationId, CustomerId};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::limits::{Admission, TokenBucket};
use crate::auth::{self, TokenError};
use crate::bus::{ConnectionHandle, Outbound, Participant};
use crate::clock::unix_ms;
use crate::http::AppState;
use crate::id_map::IdMap;
use crate::protocol::{self, close, parse_frame, ClientOp, FrameText, Resume};
use crate::store::{EventKind, View};
use crate::telemetry::metrics;

/// Which endpoint a socket came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `/chat/v1/ws`.
    Customer,
    /// `/agent/v1/ws`.
    Agent,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Agent => "agent",
        }
    }
}

/// Most queued items delivered before a flush.
const FLUSH_BATCH: usize = 64;

/// Most frames already read from the socket handled before a flush.
const READ_BATCH: usize = 16;

/// The live loop's limits on what the client sends.
struct Input {
    /// Silence allowed before the session is closed (two heartbeats).
    heartbeat: Duration,
    /// When the session closes unless a frame arrives first.
    silence_deadline: Instant,
    bucket: TokenBucket,
    /// Frames refused by the rate limit so far.
    strikes: u32,
    /// Refusals after which the connection is closed.
    strike_limit: u32,
}

/// The socket could not be written; the session ends.
#[derive(Debug)]
pub(super) struct Gone;

/// A live session's state.
pub(super) struct Session {
    pub(super) state: AppState,
    pub(super) role: Role,
    pub(super) who: Participant,
    /// Widget key of a customer session (selects the queue).
    pub(super) widget_key: Option<String>,
    /// App id of a mobile app customer session (its conversations are channel `app`).
    pub(super) app_id: Option<String>,
    sink: SplitSink<WebSocket, Message>,
    /// Last position delivered per conversation, in this session's view.
    cursors: IdMap<ConversationId, u64>,
}

/// Runs one socket to its end. `admission` is `None` when a connection cap was hit: the socket is closed
/// with 4008 at once.
///
/// Not an `async fn`: the socket and the handshake's futures (hello, token check, attach, ready) go into an
/// allocation of their own that is freed once the session is live. An `async fn` would keep its arguments
/// and its largest await point in the connection's future for the connection's whole life, which is what an
/// idle connection costs (`docs/performance.md`, idle memory).
pub fn run(
    socket: WebSocket,
    state: AppState,
    role: Role,
    admission: Option<Admission>,
    request_id: String,
) -> impl Future<Output = ()> + Send {
    let conn_id = state.next_connection_id();
    let span = tracing::info_span!("ws", role = role.label(), conn_id, request_id = %request_id);
    let handshake: Pin<Box<dyn Future<Output = Result<LiveSession, u16>> + Send>> =
        Box::pin(handshake(socket, state, role, admission, conn_id));
    async move {
        metrics::ws_opened(role.label());
        let code = match handshake.await {
            Ok(live) => live.await,
            Err(code) => code,
        };
        metrics::ws_closed(role.label(), code);
        tracing::debug!(code, "websocket closed");
    }
    .instrument(span)
}

async fn send_close(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    drop(sink.send(Message::Close(Some(frame))).await);
    drop(sink.close().await);
}

/// A live session's whole remaining life, in one allocation sized for the live loop alone.
type LiveSession = Pin<Box<dyn Future<Output = u16> + Send>>;

/// A session past `hello` and `ready`, ready for its live loop.
struct Handshake {
    session: Session,
    stream: SplitStream<WebSocket>,
    rx: mpsc::Receiver<Box<Outbound>>,
    overflow: CancellationToken,
    resume: Resume,
    conversations: Vec<crate::bus::ConversationSummary>,
    /// Holds the connection's place under the connection caps.
    _admission: Admission,
}

/// `hello` → token check → attach → `ready`; on refusal, the socket is closed and the close code returned.
async fn handshake(
    socket: WebSocket,
    state: AppState,
    role: Role,
    admission: Option<Admission>,
    conn_id: u64,
) -> Result<LiveSession, u16> {
    let (mut sink, mut stream) = socket.split();
    let Some(admission) = admission else {
        metrics::input_rejected("connection_limit");
        tracing::warn!("connection refused: connection limit reached");
        send_close(&mut sink, close::RATE_LIMITED, "too many connections").await;
        return Err(close::RATE_LIMITED);
    };
    let limits = &state.settings.limits;
    let hello = match timeout(Duration::from_millis(limits.hello_timeout_ms), stream.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => parse_frame(text.as_str(), role == Role::Agent),
        _ => {
            send_close(&mut sink, close::PROTOCOL, "hello expected").await;
            return Err(close::PROTOCOL);
        }
    };
    let (token, resume) = match hello {
        Ok(frame) => match frame.op {
            ClientOp::Hello { token, resume, .. } => (token, resume),
            _ => {
                send_close(&mut sink, close::PROTOCOL, "the first frame must be hello").await;
                return Err(close::PROTOCOL);
            }
        },
        Err(error) => {
            let text = protocol::error(None, error.code(), &error.to_string());
            drop(sink.send(Message::Text(text)).await);
            send_close(&mut sink, close::PROTOCOL, "the first frame must be hello").await;
            return Err(close::PROTOCOL);
        }
    };
    let claims_role = match role {
        Role::Customer => auth::Role::Customer,
        Role::Agent => auth::Role::Agent,
    };
    let claims = match state.tokens.verify(&token, claims_role, unix_ms() / 1000, 0) {
        Ok(claims) => claims,
        Err(error) => {
            let code = match error {
                TokenError::Expired => close::TOKEN_EXPIRED,
                TokenError::Invalid => close::BAD_TOKEN,
            };
            metrics::input_rejected("bad_token");
            tracing::warn!(%error, "websocket token refused");
            send_close(&mut sink, code, &error.to_string()).await;
            return Err(code);
        }
    };
    let who = match role {
        Role::Customer => match CustomerId::parse(&claims.sub) {
            Ok(id) => Participant::Customer(id),
            Err(_) => {
                send_close(&mut sink, close::BAD_TOKEN, "invalid token").await;
                return Err(close::BAD_TOKEN);
            }
        },
        Role::Agent => Participant::Agent(claims.sub.clone()),
    };

    let (tx, rx) = mpsc::channel(limits.outbound_queue_frames);
    let overflow = CancellationToken::new();
    let handle = ConnectionHandle {
        id: conn_id,
        session_id: String::new(),
        tx,
        overflow: overflow.clone(),
    };
    let attached = match state
        .bus
        .attach(who.clone(), resume.session_id.clone(), handle)
        .await
    {
        Ok(attached) => attached,
        Err(error) => {
            tracing::warn!(%error, "attach refused");
            send_close(&mut sink, close::BAD_TOKEN, &error.to_string()).await;
            return Err(close::BAD_TOKEN);
        }
    };
    let mut conversations = Vec::new();
    for c in &attached.conversations {
        conversations
            .push(serde_json::json!({"conversation_id": c.id, "last_seq": c.last_seq, "status": c.status}));
    }
    let mut extra = attached.ready_extra.clone();
    extra.insert(
        "conversations".to_owned(),
        serde_json::Value::Array(conversations),
    );
    let ready = protocol::ready(&attached.session_id, limits.heartbeat_ms, attached.resumed, extra);
    let mut session = Session {
        state: state.clone(),
        role,
        who: who.clone(),
        widget_key: claims.wk,
        app_id: claims.app,
        sink,
        cursors: IdMap::default(),
    };
    if session.send(ready).await.is_err() {
        state.bus.detach(who, conn_id).await;
        return Err(1006);
    }
    let live = Handshake {
        session,
        stream,
        rx,
        overflow,
        resume,
        conversations: attached.conversations,
        _admission: admission,
    };
    Ok(Box::pin(live.run(conn_id)))
}

impl Handshake {
    /// The live loop; then the bus forgets the connection.
    async fn run(mut self, conn_id: u64) -> u16 {
        let code = self
            .session
            .live(
                self.stream,
                self.rx,
                self.overflow,
                &self.resume,
                &self.conversations,
            )
            .await;
        // Boxed: a bus command's future is large, and needed once, at the end.
        Box::pin(self.session.state.bus.detach(self.session.who.clone(), conn_id)).await;
        code
    }
}

impl Session {
    /// Queues a frame on the socket; it is written at the next flush (or once the write buffer fills).
    pub(super) async fn send(&mut self, frame: FrameText) -> Result<(), Gone> {
        self.sink.feed(Message::Text(frame)).await.map_err(|_| Gone)
    }

    /// Delivers what the bus has already queued (at most a bounded batch), then writes everything out at once:
    /// an ack and the events it caused leave in one write instead of one syscall each.
    async fn flush_ready(
        &mut self,
        rx: &mut mpsc::Receiver<Box<Outbound>>,
    ) -> Result<Option<(u16, &'static str)>, Gone> {
        if let Some(close) = self.deliver_ready(rx).await? {
            return Ok(Some(close));
        }
        self.sink.flush().await.map_err(|_| Gone)?;
        Ok(None)
    }

    /// Delivers what the bus has already queued, at most [`FLUSH_BATCH`] items, without writing it out.
    async fn deliver_ready(
        &mut self,
        rx: &mut mpsc::Receiver<Box<Outbound>>,
    ) -> Result<Option<(u16, &'static str)>, Gone> {
        for _ in 0..FLUSH_BATCH {
            let Ok(item) = rx.try_recv() else { break };
            if let Some(close) = self.deliver(*item).await? {
                return Ok(Some(close));
            }
        }
        Ok(None)
    }

    async fn close(&mut self, code: u16, reason: &str) -> u16 {
        send_close(&mut self.sink, code, reason).await;
        code
    }

    async fn live(
        &mut self,
        mut stream: SplitStream<WebSocket>,
        mut rx: mpsc::Receiver<Box<Outbound>>,
        overflow: CancellationToken,
        resume: &Resume,
        conversations: &[crate::bus::ConversationSummary],
    ) -> u16 {
        for summary in conversations {
            let cursor = resume
                .cursors
                .get(summary.id.as_str())
                .copied()
                .unwrap_or(summary.last_seq)
                .min(summary.last_seq);
            self.cursors.insert(summary.id.clone(), cursor);
            if cursor < summary.last_seq && Box::pin(self.backfill(&summary.id)).await.is_err() {
                return 1006;
            }
        }
        let limits = &self.state.settings.limits;
        let started = Instant::now();
        let heartbeat = Duration::from_millis(limits.heartbeat_ms * 2);
        let mut input = Input {
            heartbeat,
            silence_deadline: started + heartbeat,
            bucket: TokenBucket::new(limits.frames_per_second, limits.frame_burst, started),
            strikes: 0,
            strike_limit: limits.rate_limit_strikes,
        };
        let ingress = self.state.shutdown.ingress().clone();
        // One timer for the session, not one per frame: a timer made inside the loop is registered and
        // unregistered again at every frame. A frame only moves `silence_deadline`; the timer catches up with
        // it when it fires. Boxed, so the live loop's future stays as small as it was (idle memory).
        let mut silence = Box::pin(sleep_until(input.silence_deadline));
        loop {
            match self.flush_ready(&mut rx).await {
                Ok(None) => {}
                Ok(Some((code, reason))) => return self.close(code, reason).await,
                Err(Gone) => return 1006,
            }
            let mut read = tokio::select! {
                () = ingress.cancelled() => return self.close(close::RESTART, "server restarting").await,
                () = overflow.cancelled() => return self.close(close::TRY_AGAIN_LATER, "too far behind; resume").await,
                () = &mut silence => {
                    if Instant::now() < input.silence_deadline {
                        silence.as_mut().reset(input.silence_deadline);
                        continue;
                    }
                    return self.close(close::PROTOCOL, "heartbeat timeout").await;
                }
                item = rx.recv() => {
                    let Some(item) = item else { return self.close(close::RESTART, "session bus stopped").await };
                    match self.deliver(*item).await {
                        Ok(None) => continue,
                        Ok(Some((code, reason))) => return self.close(code, reason).await,
                        Err(Gone) => return 1006,
                    }
                }
                read = stream.next() => read,
            };
            // Frames that arrived together are handled together, and what they caused leaves in one write at the
            // next flush (a client with several frames in flight otherwise costs a write per frame). What the
            // bus queued for one frame is delivered before the next frame is handled: the order on the socket
            // is the one an immediate flush would have given.
            for handled in 1..=READ_BATCH {
                if let Some(code) = self.on_read(read, &mut input).await {
                    return code;
                }
                if handled == READ_BATCH {
                    break;
                }
                match self.deliver_ready(&mut rx).await {
                    Ok(None) => {}
                    Ok(Some((code, reason))) => return self.close(code, reason).await,
                    Err(Gone) => return 1006,
                }
                match stream.next().now_or_never() {
                    Some(next) => read = next,
                    None => break,
                }
            }
        }
    }

    /// Handles one read from the socket: a frame, or the end of the stream. Answers the code the session
    /// ended with, if it did.
    async fn on_read(
        &mut self,
        read: Option<Result<Message, axum::Error>>,
        input: &mut Input,
    ) -> Option<u16> {
        let now = Instant::now();
        input.silence_deadline = now + input.heartbeat;
        let text = match read {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                metrics::input_rejected("binary_frame");
                tracing::warn!("binary frame refused");
                let refusal = protocol::error(None, "invalid_frame", "binary frames are not supported");
                return self.send(refusal).await.err().map(|Gone| 1006);
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return None,
            Some(Ok(Message::Close(_))) | None => return Some(1000),
            Some(Err(error)) => {
                metrics::input_rejected("frame_error");
                tracing::warn!(%error, "websocket read failed");
                return Some(self.close(close::TOO_BIG, "frame too large or malformed").await);
            }
        };
        metrics::ws_frame_received(self.role.label());
        if !input.bucket.allow(now) {
            input.strikes += 1;
            metrics::input_rejected("rate_limited");
            if input.strikes >= input.strike_limit {
                tracing::warn!(strikes = input.strikes, "closing a flooding connection");
                return Some(self.close(close::RATE_LIMITED, "rate limited").await);
            }
            let refusal = protocol::error(None, "rate_limited", "too many frames; slow down");
            return self.send(refusal).await.err().map(|Gone| 1006);
        }
        // Boxed: a client op's future is large and short-lived; the idle loop should not carry it.
        Box::pin(self.handle_text(text.as_str()))
            .await
            .err()
            .map(|Gone| 1006)
    }

    /// Delivers one item from the bus; returns a close code when the bus asks to close.
    async fn deliver(&mut self, item: Outbound) -> Result<Option<(u16, &'static str)>, Gone> {
        match item {
            Outbound::Frame(frame) => self.send(frame).await?,
            Outbound::Event {
                conversation,
                seq,
                frame,
            } => {
                let cursor = match self.cursors.get(&conversation) {
                    Some(cursor) => *cursor,
                    // Agents follow only what they were assigned; customers follow their new conversations.
                    None if self.role == Role::Agent => return Ok(None),
                    None => 0,
                };
                if seq <= cursor {
                    return Ok(None);
                }
                self.cursors.insert(conversation.clone(), cursor);
                if seq > cursor + 1 {
                    Box::pin(self.backfill(&conversation)).await?;
                    if self.cursors.get(&conversation).copied().unwrap_or(0) >= seq {
                        return Ok(None);
                    }
                }
                self.send(frame).await?;
                self.cursors.insert(conversation, seq);
            }
            Outbound::Track { conversation, after } => {
                self.cursors.insert(conversation.clone(), after);
                Box::pin(self.backfill(&conversation)).await?;
            }
            Outbound::Untrack(conversation) => {
                self.cursors.remove(&conversation);
            }
            Outbound::Close(code, reason) => return Ok(Some((code, reason))),
        }
        Ok(None)
    }

    /// Replays from the log everything after this session's cursor, or asks the client to resync over REST
    /// when that is more than `replay_max_events`.
    async fn backfill(&mut self, conversation: &ConversationId) -> Result<(), Gone> {
        let view = self.who.view();
        let after = self.cursors.get(conversation).copied().unwrap_or(0);
        let max = self.state.settings.limits.replay_max_events;
        let page = match self
            .state
            .store
            .events_after(conversation, view, after, max + 1)
            .await
        {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(conversation_id = %conversation, %error, "replay failed");
                return self
                    .send(protocol::resync_required(
                        conversation,
                        "store_unavailable",
                        after,
                    ))
                    .await;
            }
        };
        if page.events.len() > max {
            self.cursors.insert(conversation.clone(), page.last);
            return self
                .send(protocol::resync_required(
                    conversation,
                    "too_far_behind",
                    page.last,
                ))
                .await;
        }
        let count = page.events.len();
        for event in page.events {
            let read_position = match (&event.kind, view) {
                (EventKind::Read { up_to_seq, .. }, View::Customer) => self
                    .state
                    .store
                    .customer_position(conversation, *up_to_seq)
                    .await
                    .ok(),
                _ => None,
            };
            let seq = match view {
                View::Agent => event.seq,
                View::Customer => event.customer_seq.unwrap_or(0),
            };
            self.send(protocol::event_frame(conversation, &event, view, read_position))
                .await?;
            self.cursors.insert(conversation.clone(), seq);
        }
        metrics::events_replayed(count);
        Ok(())
    }
}
