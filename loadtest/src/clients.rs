//! The load clients, one task per socket: web chat customers and agents speaking chat protocol v1 to the
//! gateway, and plain echo clients for the baseline. Each returns its [`Tally`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use dashmap::DashMap;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep_until, timeout, Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::proto::{self, Frame, Stamp};
use crate::rng::SplitMix64;
use crate::scenario::{Load, LoadKind};
use crate::tally::{check_seq, now_us, Arrival, Arrivals, Tally};

/// A client socket.
type Ws = WebSocketStream<TcpStream>;

/// How long a client waits for `ready` or a set-up answer.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The run's timeline, in unix microseconds, published once every connection is ready.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    /// Sending starts.
    pub start_us: u64,
    /// Measuring starts (after the warm-up).
    pub measure_from_us: u64,
    /// Sending and measuring stop.
    pub stop_us: u64,
    /// Replies still missing now are lost.
    pub drain_until_us: u64,
}

impl Phases {
    /// Whether `at_us` falls in the measured window.
    pub fn in_window(&self, at_us: u64) -> bool {
        (self.measure_from_us..self.stop_us).contains(&at_us)
    }
}

/// What every client of a run shares.
#[derive(Debug)]
pub struct Ctx {
    /// The server's public address.
    pub addr: SocketAddr,
    /// Widget key for customer sessions.
    pub widget_key: String,
    /// The offered load (relay and churn).
    pub load: Option<Load>,
    /// Open loop: microseconds between two sends of one connection.
    pub interval_us: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Web chats per agent.
    pub capacity: usize,
    /// Mean microseconds between drops of one customer socket (churn), if any.
    pub customer_drop_mean_us: Option<f64>,
    /// Mean microseconds between drops of one agent socket (churn), if any.
    pub agent_drop_mean_us: Option<f64>,
    /// Caps concurrent connection set-ups.
    pub connect: Semaphore,
    /// Clients ready for traffic (customers: conversation assigned and answered once).
    pub ready: AtomicUsize,
    /// The timeline, once published.
    pub phases: watch::Receiver<Option<Phases>>,
    /// Set when agents and idle clients may leave.
    pub done: watch::Receiver<bool>,
    /// Conversation → agent index, to catch a conversation held by two agents.
    pub assignments: DashMap<String, usize>,
    /// Client failures already printed (the first few are shown on stderr).
    pub reported: AtomicUsize,
    /// Clients that ended with an error.
    pub gave_up: AtomicUsize,
    /// Whether agents answer customer messages (relay, churn) or only check them (webhooks).
    pub agents_reply: bool,
    /// Webhooks: distinct customer messages the agents received, so the run knows when they all arrived.
    pub received_total: AtomicU64,
}

impl Ctx {
    pub(crate) fn report(&self, who: &str, error: &anyhow::Error) {
        self.gave_up.fetch_add(1, Ordering::Relaxed);
        if self.reported.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("omnigate-loadtest: {who}: {error:#}");
        }
    }
}

/// Converts a unix-µs time to a tokio instant.
pub(crate) fn instant_at(at_us: u64) -> Instant {
    let now = now_us();
    Instant::now() + Duration::from_micros(at_us.saturating_sub(now))
}

async fn connect(addr: SocketAddr, path: &str) -> anyhow::Result<Ws> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{addr}{path}");
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(crate::echo::ws_config())).await?;
    Ok(ws)
}

/// What a read produced.
enum Incoming {
    Text(tokio_tungstenite::tungstenite::Utf8Bytes),
    /// The server closed with this code.
    Closed(u16),
    /// The socket ended without a close frame, or failed.
    Gone,
}

async fn next(ws: &mut Ws) -> Incoming {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Incoming::Text(text),
            Some(Ok(Message::Close(frame))) => {
                return Incoming::Closed(frame.map_or(1005, |f| u16::from(f.code)))
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Incoming::Gone,
        }
    }
}

async fn send(ws: &mut Ws, text: String) -> anyhow::Result<()> {
    ws.send(Message::text(text)).await?;
    Ok(())
}

/// Sends `hello` and reads `ready`: the session id, the heartbeat and the ready frame's conversations.
async fn hello(
    ws: &mut Ws,
    token: &str,
    resume: Option<(&str, &[(String, u64)])>,
) -> anyhow::Result<(String, u64, Vec<(String, u64)>, Vec<String>)> {
    send(ws, proto::hello(token, resume)).await?;
    loop {
        let text = match timeout(SETUP_TIMEOUT, next(ws))
            .await
            .context("no ready in time")?
        {
            Incoming::Text(text) => text,
            Incoming::Closed(code) => bail!("closed with {code} before ready"),
            Incoming::Gone => bail!("socket ended before ready"),
        };
        let frame = Frame::parse(&text)?;
        if frame.op == "ready" {
            let ready: proto::Ready<'_> = frame.payload()?;
            let conversations = ready
                .conversations
                .iter()
                .map(|c| (c.conversation_id.to_string(), c.last_seq))
                .collect();
            let offers = ready
                .offers
                .iter()
                .map(|c| c.conversation_id.to_string())
                .collect();
            return Ok((
                ready.session_id.to_string(),
                ready.heartbeat_ms,
                conversations,
                offers,
            ));
        }
    }
}

/// When a connection sends its next message.
#[derive(Debug)]
struct Schedule {
    kind: LoadKind,
    interval_us: f64,
    phase_us: f64,
    window: u32,
    /// Open loop: sends made so far in the traffic phase.
    n: u64,
    /// Closed loop: messages sent whose answer has not arrived.
    in_flight: u32,
}

impl Schedule {
    fn new(ctx: &Ctx, rng: &mut SplitMix64) -> Option<Schedule> {
        let load = ctx.load.as_ref()?;
        Some(Schedule {
            kind: load.kind,
            interval_us: ctx.interval_us,
            phase_us: rng.next_f64() * ctx.interval_us,
            window: load.window,
            n: 0,
            in_flight: 0,
        })
    }

    /// Open loop: the scheduled time of the next send, if before `stop`.
    fn due(&self, phases: &Phases) -> Option<u64> {
        if self.kind != LoadKind::Open {
            return None;
        }
        let at = phases.start_us as f64 + self.phase_us + self.n as f64 * self.interval_us;
        let at = at as u64;
        (at < phases.stop_us).then_some(at)
    }

    /// Closed loop: when to wake up to fill the window for the first time.
    fn opens_at(&self, phases: &Phases, now: u64) -> Option<u64> {
        (self.kind == LoadKind::Closed && now < phases.start_us).then_some(phases.start_us)
    }

    /// Closed loop: how many sends the window allows now.
    fn room(&self, phases: &Phases, now: u64) -> u32 {
        if self.kind != LoadKind::Closed || now < phases.start_us || now >= phases.stop_us {
            return 0;
        }
        self.window.saturating_sub(self.in_flight)
    }
}

/// A random exponential delay with mean `mean_us`.
fn exponential(rng: &mut SplitMix64, mean_us: f64) -> u64 {
    (-(1.0 - rng.next_f64()).ln() * mean_us) as u64
}

/// Records a message received at `now`, sent at `sent_us`.
fn delivered(tally: &mut Tally, phases: Option<&Phases>, now: u64, sent_us: u64) {
    tally.received += 1;
    if let Some(p) = phases {
        if p.in_window(now) {
            tally.delivered_in_window += 1;
        }
        if p.in_window(sent_us) {
            tally
                .latency
                .saturating_record(now.saturating_sub(sent_us).max(1));
        }
    }
}

fn classify(tally: &mut Tally, arrival: Arrival) -> bool {
    match arrival {
        Arrival::InOrder => true,
        Arrival::Reordered => {
            tally.reordered += 1;
            true
        }
        Arrival::Duplicate => {
            tally.duplicated += 1;
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Customers

struct Customer {
    idx: u32,
    token: String,
    session_id: String,
    heartbeat_ms: u64,
    conversation: Option<String>,
    cursor: u64,
    next_k: u64,
    next_ref: u64,
    /// Unacknowledged sends, by message number: resent as they were after a reconnect.
    outbox: BTreeMap<u64, String>,
    replies: Arrivals,
    unacked_events: u32,
    padding: usize,
    ack_every: u32,
}

impl Customer {
    async fn send_message(&mut self, ws: &mut Ws, sent_us: u64, tally: &mut Tally) -> anyhow::Result<()> {
        let k = self.next_k;
        self.next_k += 1;
        self.next_ref += 1;
        let stamp = Stamp {
            conversation: self.idx,
            k,
            sent_us,
        };
        let frame = proto::message_send(
            &format!("r{}", self.next_ref),
            self.conversation.as_deref(),
            &format!("m-{k}"),
            &proto::customer_text(stamp, self.padding),
        );
        self.outbox.insert(k, frame.clone());
        tally.sent += 1;
        send(ws, frame).await
    }

    /// Handles one frame; returns whether a reply arrived (a closed-loop slot freed).
    async fn handle(
        &mut self,
        ws: &mut Ws,
        text: &str,
        phases: Option<&Phases>,
        tally: &mut Tally,
    ) -> anyhow::Result<bool> {
        let frame = Frame::parse(text)?;
        match frame.op.as_ref() {
            "message.ack" => {
                let ack: proto::MessageAck<'_> = frame.payload()?;
                if let Some(k) = ack.client_msg_id.strip_prefix("m-").and_then(|k| k.parse().ok()) {
                    self.outbox.remove(&k);
                }
                if self.conversation.is_none() {
                    self.conversation = Some(ack.conversation_id.to_string());
                }
            }
            "event" => {
                let event: proto::Event<'_> = frame.payload()?;
                if self.conversation.is_none() {
                    self.conversation = Some(event.conversation_id.to_string());
                }
                self.cursor = check_seq(self.cursor, event.seq, tally);
                self.unacked_events += 1;
                if self.unacked_events >= self.ack_every {
                    self.unacked_events = 0;
                    send(ws, proto::ack(&event.conversation_id, self.cursor)).await?;
                }
                if event.kind == "message.created" && event.actor.kind == "agent" {
                    let text = event
                        .message
                        .as_ref()
                        .and_then(|m| m.content.text.as_deref())
                        .unwrap_or("");
                    let Some((stamp, reply_sent)) = proto::parse_reply_text(text) else {
                        tally.error("unexpected_agent_text");
                        return Ok(false);
                    };
                    if stamp.conversation != self.idx {
                        tally.error("misrouted_reply");
                        return Ok(false);
                    }
                    if classify(tally, self.replies.record(stamp.k)) {
                        delivered(tally, phases, now_us(), reply_sent);
                        return Ok(true);
                    }
                }
            }
            "error" => {
                let error: proto::ErrorD<'_> = frame.payload()?;
                tally.error(error.code.to_string());
            }
            "resync_required" => tally.error("resync_required"),
            _ => {}
        }
        Ok(false)
    }

    async fn resume(&mut self, ctx: &Ctx, tally: &mut Tally) -> anyhow::Result<Ws> {
        let mut last = None;
        for attempt in 0..10u64 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            match self.try_resume(ctx, tally).await {
                Ok(ws) => return Ok(ws),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("resume failed")))
    }

    async fn try_resume(&mut self, ctx: &Ctx, tally: &mut Tally) -> anyhow::Result<Ws> {
        let mut ws = connect(ctx.addr, "/chat/v1/ws").await?;
        let cursors: Vec<(String, u64)> = self
            .conversation
            .iter()
            .map(|c| (c.clone(), self.cursor))
            .collect();
        let (session, heartbeat, _, _) =
            hello(&mut ws, &self.token, Some((&self.session_id, &cursors))).await?;
        self.session_id = session;
        self.heartbeat_ms = heartbeat;
        tally.reconnects += 1;
        for frame in self.outbox.values() {
            tally.resent += 1;
            send(&mut ws, frame.clone()).await?;
        }
        Ok(ws)
    }
}

/// A web chat customer: opens a session, starts a conversation, waits for an agent's first answer, then
/// sends on schedule and checks every reply; with churn it drops its socket and resumes.
pub async fn customer(ctx: Arc<Ctx>, idx: u32) -> Tally {
    let mut tally = Tally::default();
    if let Err(error) = customer_run(&ctx, idx, &mut tally).await {
        ctx.report(&format!("customer {idx}"), &error);
        tally.error("customer_failed");
    }
    tally
}

async fn customer_run(ctx: &Ctx, idx: u32, tally: &mut Tally) -> anyhow::Result<()> {
    let load = ctx.load.clone().context("relay needs a load")?;
    let mut rng = SplitMix64::new(ctx.seed ^ (u64::from(idx) << 20) ^ 0xc057);
    let permit = ctx.connect.acquire().await?;
    let setup = async {
        let token = crate::http::open_session(ctx.addr, &ctx.widget_key).await?;
        let mut ws = connect(ctx.addr, "/chat/v1/ws").await?;
        let (session, heartbeat, _, _) = hello(&mut ws, &token, None).await?;
        anyhow::Ok((token, ws, session, heartbeat))
    };
    let (token, mut ws, session_id, heartbeat_ms) = match setup.await {
        Ok(v) => v,
        Err(e) => {
            tally.setup_failures += 1;
            return Err(e);
        }
    };
    drop(permit);
    let mut me = Customer {
        idx,
        token,
        session_id,
        heartbeat_ms,
        conversation: None,
        cursor: 0,
        next_k: 0,
        next_ref: 0,
        outbox: BTreeMap::new(),
        replies: Arrivals::default(),
        unacked_events: 0,
        padding: load.padding,
        ack_every: load.ack_every,
    };
    me.send_message(&mut ws, now_us(), tally).await?;
    let mut schedule = Schedule::new(ctx, &mut rng).context("no load")?;
    let mut phases_rx = ctx.phases.clone();
    let mut phases: Option<Phases> = *phases_rx.borrow();
    let mut signalled = false;
    let mut next_ping = Instant::now() + Duration::from_millis(me.heartbeat_ms);
    let mut next_drop: Option<u64> = None;
    let far = Instant::now() + Duration::from_secs(86_400);
    loop {
        if !signalled && me.replies.has(0) {
            signalled = true;
            ctx.ready.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(p) = &phases {
            let now = now_us();
            // Closed loop: fill the window.
            let room = if signalled { schedule.room(p, now) } else { 0 };
            for _ in 0..room {
                schedule.in_flight += 1;
                me.send_message(&mut ws, now_us(), tally).await?;
            }
            if now >= p.stop_us && schedule.due(p).is_none() && me.replies.distinct() == me.next_k {
                break;
            }
            if next_drop.is_none() {
                if let Some(mean) = ctx.customer_drop_mean_us {
                    next_drop = Some(p.start_us + exponential(&mut rng, mean));
                }
            }
        }
        let due = phases
            .as_ref()
            .filter(|_| signalled)
            .and_then(|p| schedule.due(p).or_else(|| schedule.opens_at(p, now_us())));
        let drop_at = match (&phases, next_drop) {
            (Some(p), Some(at)) if at < p.stop_us => Some(at),
            _ => None,
        };
        // Wake at the end of sending to notice that every reply is in, else at the end of the drain.
        let drain = phases.as_ref().map_or(far, |p| {
            if now_us() < p.stop_us {
                instant_at(p.stop_us)
            } else {
                instant_at(p.drain_until_us)
            }
        });
        tokio::select! {
            biased;
            incoming = next(&mut ws) => match incoming {
                Incoming::Text(text) => {
                    if me.handle(&mut ws, &text, phases.as_ref(), tally).await? {
                        schedule.in_flight = schedule.in_flight.saturating_sub(1);
                    }
                }
                Incoming::Closed(code) => {
                    if code != 1013 {
                        tally.error(format!("customer_closed_{code}"));
                    }
                    ws = me.resume(ctx, tally).await?;
                }
                Incoming::Gone => {
                    tally.error("customer_socket_lost");
                    ws = me.resume(ctx, tally).await?;
                }
            },
            () = sleep_until(due.map_or(far, instant_at)), if due.is_some() => {
                if schedule.kind == LoadKind::Open {
                    let now = now_us();
                    tally.send_lag(now.saturating_sub(due.unwrap_or_default()));
                    schedule.n += 1;
                    me.send_message(&mut ws, now, tally).await?;
                }
            }
            () = sleep_until(drop_at.map_or(far, instant_at)), if drop_at.is_some() => {
                // A killed client: no close frame.
                drop(ws);
                let mean = ctx.customer_drop_mean_us.unwrap_or(1e12);
                next_drop = Some(now_us() + exponential(&mut rng, mean));
                ws = me.resume(ctx, tally).await?;
            }
            () = sleep_until(next_ping) => {
                next_ping = Instant::now() + Duration::from_millis(me.heartbeat_ms);
                send(&mut ws, proto::ping()).await?;
            }
            changed = phases_rx.changed(), if phases.is_none() => {
                changed?;
                phases = *phases_rx.borrow();
            }
            () = sleep_until(drain), if phases.is_some() => {
                if phases.is_some_and(|p| now_us() >= p.drain_until_us) {
                    break;
                }
            }
        }
    }
    tally.lost += me.next_k - me.replies.distinct();
    drop(ws.close(None).await);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Agents

#[derive(Default)]
struct AgentConversation {
    cursor: u64,
    arrivals: Arrivals,
    /// Unacknowledged replies by customer message number.
    outbox: BTreeMap<u64, String>,
    unacked_events: u32,
}

struct Agent {
    idx: usize,
    token: String,
    session_id: String,
    heartbeat_ms: u64,
    conversations: HashMap<String, AgentConversation>,
    accepts: HashSet<String>,
    next_ref: u64,
    ack_every: u32,
    presence_ok: bool,
}

impl Agent {
    fn reference(&mut self, prefix: &str) -> String {
        self.next_ref += 1;
        format!("{prefix}{}", self.next_ref)
    }

    async fn accept(&mut self, ws: &mut Ws, conversation: &str) -> anyhow::Result<()> {
        let reference = self.reference("a");
        self.accepts.insert(reference.clone());
        send(
            ws,
            proto::conversation_op("offer.accept", &reference, conversation),
        )
        .await
    }

    fn assigned(&mut self, ctx: &Ctx, conversation: &str, cursor: u64, tally: &mut Tally) {
        if self.conversations.contains_key(conversation) {
            return;
        }
        self.conversations.insert(
            conversation.to_owned(),
            AgentConversation {
                cursor,
                ..AgentConversation::default()
            },
        );
        if self.conversations.len() > ctx.capacity {
            tally.over_capacity += 1;
        }
        if let Some(previous) = ctx.assignments.insert(conversation.to_owned(), self.idx) {
            if previous != self.idx {
                tally.double_assigned += 1;
            }
        }
    }

    async fn handle(
        &mut self,
        ctx: &Ctx,
        ws: &mut Ws,
        text: &str,
        phases: Option<&Phases>,
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        let frame = Frame::parse(text)?;
        match frame.op.as_ref() {
            "offer" => {
                let offer: proto::ConversationRef<'_> = frame.payload()?;
                self.accept(ws, &offer.conversation_id).await?;
            }
            "ok" => {
                if let Some(reference) = frame.reference.as_deref() {
                    self.accepts.remove(reference);
                    if reference.starts_with('p') {
                        self.presence_ok = true;
                    }
                }
            }
            "error" => {
                let error: proto::ErrorD<'_> = frame.payload()?;
                match frame.reference.as_deref() {
                    Some(r) if self.accepts.remove(r) => tally.accept_refused += 1,
                    _ => tally.error(error.code.to_string()),
                }
            }
            "conversation.assigned" => {
                let assigned: proto::ConversationRef<'_> = frame.payload()?;
                self.assigned(ctx, &assigned.conversation_id, 0, tally);
            }
            "conversation.unassigned" => {
                let unassigned: proto::ConversationRef<'_> = frame.payload()?;
                self.conversations.remove(unassigned.conversation_id.as_ref());
                ctx.assignments
                    .remove_if(unassigned.conversation_id.as_ref(), |_, a| *a == self.idx);
                tally.error("conversation_unassigned");
            }
            "message.ack" => {
                let ack: proto::MessageAck<'_> = frame.payload()?;
                let k = ack
                    .client_msg_id
                    .rsplit_once('-')
                    .and_then(|(_, k)| k.parse::<u64>().ok());
                if let (Some(c), Some(k)) = (self.conversations.get_mut(ack.conversation_id.as_ref()), k) {
                    c.outbox.remove(&k);
                }
            }
            "event" => {
                let event: proto::Event<'_> = frame.payload()?;
                let ack_every = self.ack_every;
                let Some(c) = self.conversations.get_mut(event.conversation_id.as_ref()) else {
                    return Ok(());
                };
                c.cursor = check_seq(c.cursor, event.seq, tally);
                c.unacked_events += 1;
                if c.unacked_events >= ack_every {
                    c.unacked_events = 0;
                    send(ws, proto::ack(&event.conversation_id, c.cursor)).await?;
                }
                if event.kind != "message.created" || event.actor.kind != "customer" {
                    return Ok(());
                }
                let content = event.message.as_ref().map(|m| &m.content);
                let text = content.and_then(|c| c.text.as_deref());
                // A call's IVR input carries the stamp as its speech text, shown in the event's detail.
                let detail = content
                    .and_then(|c| c.detail.as_deref())
                    .and_then(crate::hooks::stamp_in_detail);
                let Some(stamp) = text.or(detail).and_then(proto::parse_customer_text) else {
                    // A call's other events (offered, queued) carry no stamp.
                    if ctx.agents_reply || text.is_some() {
                        tally.error("unexpected_customer_text");
                    }
                    return Ok(());
                };
                if !classify(tally, c.arrivals.record(stamp.k)) {
                    return Ok(());
                }
                let now = now_us();
                // The opening message (k = 0) waited for routing; it is not a relay latency.
                if stamp.k > 0 {
                    delivered(tally, phases, now, stamp.sent_us);
                } else {
                    tally.received += 1;
                }
                if !ctx.agents_reply {
                    ctx.received_total.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                self.next_ref += 1;
                let frame = proto::message_send(
                    &format!("s{}", self.next_ref),
                    Some(&event.conversation_id),
                    &format!("r-{}-{}", stamp.conversation, stamp.k),
                    &proto::reply_text(stamp, now),
                );
                c.outbox.insert(stamp.k, frame.clone());
                tally.sent += 1;
                send(ws, frame).await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn resume(&mut self, ctx: &Ctx, tally: &mut Tally) -> anyhow::Result<Ws> {
        let mut last = None;
        for attempt in 0..10u64 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            match self.try_resume(ctx, tally).await {
                Ok(ws) => return Ok(ws),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("resume failed")))
    }

    async fn try_resume(&mut self, ctx: &Ctx, tally: &mut Tally) -> anyhow::Result<Ws> {
        let mut ws = connect(ctx.addr, "/agent/v1/ws").await?;
        let cursors: Vec<(String, u64)> = self
            .conversations
            .iter()
            .map(|(id, c)| (id.clone(), c.cursor))
            .collect();
        let token = self.token.clone();
        let session = self.session_id.clone();
        let (session, heartbeat, conversations, offers) =
            hello(&mut ws, &token, Some((&session, &cursors))).await?;
        self.session_id = session;
        self.heartbeat_ms = heartbeat;
        tally.reconnects += 1;
        for (id, last_seq) in conversations {
            self.assigned(ctx, &id, last_seq, tally);
        }
        let reference = self.reference("p");
        send(&mut ws, proto::presence(&reference, "available")).await?;
        for offer in offers {
            self.accept(&mut ws, &offer).await?;
        }
        let pending: Vec<String> = self
            .conversations
            .values()
            .flat_map(|c| c.outbox.values().cloned())
            .collect();
        for frame in pending {
            tally.resent += 1;
            send(&mut ws, frame).await?;
        }
        Ok(ws)
    }
}

/// An agent: goes available, accepts every offer and answers every customer message at once, checking
/// order and its capacity; with churn it drops its socket and resumes.
pub async fn agent(ctx: Arc<Ctx>, idx: usize, token: String) -> Tally {
    let mut tally = Tally::default();
    if let Err(error) = agent_run(&ctx, idx, token, &mut tally).await {
        ctx.report(&format!("agent {idx}"), &error);
        tally.error("agent_failed");
    }
    tally
}

async fn agent_run(ctx: &Ctx, idx: usize, token: String, tally: &mut Tally) -> anyhow::Result<()> {
    let mut rng = SplitMix64::new(ctx.seed ^ ((idx as u64) << 24) ^ 0xa9e7);
    let permit = ctx.connect.acquire().await?;
    let setup = async {
        let mut ws = connect(ctx.addr, "/agent/v1/ws").await?;
        let (session, heartbeat, _, _) = hello(&mut ws, &token, None).await?;
        send(&mut ws, proto::presence("p0", "available")).await?;
        anyhow::Ok((ws, session, heartbeat))
    };
    let (mut ws, session_id, heartbeat_ms) = match setup.await {
        Ok(v) => v,
        Err(e) => {
            tally.setup_failures += 1;
            return Err(e);
        }
    };
    drop(permit);
    let mut me = Agent {
        idx,
        token,
        session_id,
        heartbeat_ms,
        conversations: HashMap::new(),
        accepts: HashSet::new(),
        next_ref: 0,
        ack_every: ctx.load.as_ref().map_or(8, |l| l.ack_every),
        presence_ok: false,
    };
    let mut signalled = false;
    let mut phases_rx = ctx.phases.clone();
    let mut phases: Option<Phases> = *phases_rx.borrow();
    let mut done = ctx.done.clone();
    let mut next_ping = Instant::now() + Duration::from_millis(me.heartbeat_ms);
    let mut next_drop: Option<u64> = None;
    let far = Instant::now() + Duration::from_secs(86_400);
    loop {
        if !signalled && me.presence_ok {
            signalled = true;
            ctx.ready.fetch_add(1, Ordering::Relaxed);
        }
        if let (Some(p), None, Some(mean)) = (&phases, next_drop, ctx.agent_drop_mean_us) {
            next_drop = Some(p.start_us + exponential(&mut rng, mean));
        }
        let drop_at = match (&phases, next_drop) {
            (Some(p), Some(at)) if at < p.stop_us => Some(at),
            _ => None,
        };
        tokio::select! {
            biased;
            incoming = next(&mut ws) => match incoming {
                Incoming::Text(text) => me.handle(ctx, &mut ws, &text, phases.as_ref(), tally).await?,
                Incoming::Closed(code) => {
                    if code != 1013 {
                        tally.error(format!("agent_closed_{code}"));
                    }
                    ws = me.resume(ctx, tally).await?;
                }
                Incoming::Gone => {
                    tally.error("agent_socket_lost");
                    ws = me.resume(ctx, tally).await?;
                }
            },
            () = sleep_until(drop_at.map_or(far, instant_at)), if drop_at.is_some() => {
                drop(ws);
                let mean = ctx.agent_drop_mean_us.unwrap_or(1e12);
                next_drop = Some(now_us() + exponential(&mut rng, mean));
                ws = me.resume(ctx, tally).await?;
            }
            () = sleep_until(next_ping) => {
                next_ping = Instant::now() + Duration::from_millis(me.heartbeat_ms);
                send(&mut ws, proto::ping()).await?;
            }
            changed = phases_rx.changed(), if phases.is_none() => {
                changed?;
                phases = *phases_rx.borrow();
            }
            changed = done.changed() => {
                changed?;
                if *done.borrow() {
                    break;
                }
            }
        }
    }
    drop(ws.close(None).await);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Echo baseline

/// An echo client: sends the same `message.send` frames a customer would, on the same schedule, and checks
/// that each comes back once and in order.
pub async fn echo(ctx: Arc<Ctx>, idx: u32) -> Tally {
    let mut tally = Tally::default();
    if let Err(error) = echo_run(&ctx, idx, &mut tally).await {
        ctx.report(&format!("echo client {idx}"), &error);
        tally.error("echo_client_failed");
    }
    tally
}

async fn echo_run(ctx: &Ctx, idx: u32, tally: &mut Tally) -> anyhow::Result<()> {
    let load = ctx.load.clone().context("relay needs a load")?;
    let mut rng = SplitMix64::new(ctx.seed ^ (u64::from(idx) << 20) ^ 0xc057);
    let permit = ctx.connect.acquire().await?;
    let mut ws = match connect(ctx.addr, "/").await {
        Ok(ws) => ws,
        Err(e) => {
            tally.setup_failures += 1;
            return Err(e);
        }
    };
    drop(permit);
    ctx.ready.fetch_add(1, Ordering::Relaxed);
    let mut schedule = Schedule::new(ctx, &mut rng).context("no load")?;
    let mut arrivals = Arrivals::default();
    let mut next_k = 0u64;
    let mut phases_rx = ctx.phases.clone();
    let mut phases: Option<Phases> = *phases_rx.borrow();
    let far = Instant::now() + Duration::from_secs(86_400);
    loop {
        if let Some(p) = &phases {
            let now = now_us();
            for _ in 0..schedule.room(p, now) {
                schedule.in_flight += 1;
                echo_send(&mut ws, idx, &mut next_k, now_us(), load.padding, tally).await?;
            }
            if now >= p.stop_us && schedule.due(p).is_none() && arrivals.distinct() == next_k {
                break;
            }
        }
        let due = phases
            .as_ref()
            .and_then(|p| schedule.due(p).or_else(|| schedule.opens_at(p, now_us())));
        // Wake at the end of sending to notice that every reply is in, else at the end of the drain.
        let drain = phases.as_ref().map_or(far, |p| {
            if now_us() < p.stop_us {
                instant_at(p.stop_us)
            } else {
                instant_at(p.drain_until_us)
            }
        });
        tokio::select! {
            biased;
            incoming = next(&mut ws) => match incoming {
                Incoming::Text(text) => {
                    let frame = Frame::parse(&text)?;
                    let echoed: proto::EchoedSend<'_> = frame.payload()?;
                    let stamp = echoed
                        .content
                        .text
                        .as_deref()
                        .and_then(proto::parse_customer_text)
                        .context("echo of something not sent")?;
                    if classify(tally, arrivals.record(stamp.k)) {
                        schedule.in_flight = schedule.in_flight.saturating_sub(1);
                        delivered(tally, phases.as_ref(), now_us(), stamp.sent_us);
                    }
                }
                Incoming::Closed(code) => bail!("echo server closed with {code}"),
                Incoming::Gone => bail!("echo server went away"),
            },
            () = sleep_until(due.map_or(far, instant_at)), if due.is_some() && schedule.kind == LoadKind::Open => {
                let now = now_us();
                tally.send_lag(now.saturating_sub(due.unwrap_or_default()));
                schedule.n += 1;
                echo_send(&mut ws, idx, &mut next_k, now, load.padding, tally).await?;
            }
            () = sleep_until(due.map_or(far, instant_at)), if due.is_some() && schedule.kind == LoadKind::Closed => {}
            changed = phases_rx.changed(), if phases.is_none() => {
                changed?;
                phases = *phases_rx.borrow();
            }
            () = sleep_until(drain), if phases.is_some() => {
                if phases.is_some_and(|p| now_us() >= p.drain_until_us) {
                    break;
                }
            }
        }
    }
    tally.lost += next_k - arrivals.distinct();
    drop(ws.close(None).await);
    Ok(())
}

async fn echo_send(
    ws: &mut Ws,
    idx: u32,
    next_k: &mut u64,
    sent_us: u64,
    padding: usize,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let k = *next_k;
    *next_k += 1;
    tally.sent += 1;
    let stamp = Stamp {
        conversation: idx,
        k,
        sent_us,
    };
    let frame = proto::message_send(
        "r",
        None,
        &format!("m-{k}"),
        &proto::customer_text(stamp, padding),
    );
    send(ws, frame).await
}

// ---------------------------------------------------------------------------------------------------------
// Idle

/// An idle connection: a customer session (`POST /chat/v1/sessions`, `hello`, `ready`) against the gateway,
/// or a bare websocket against the echo server; it pings on the heartbeat until told to leave.
pub async fn idle(ctx: Arc<Ctx>, gateway: bool) -> Tally {
    let mut tally = Tally::default();
    if let Err(error) = idle_run(&ctx, gateway).await {
        ctx.report("idle client", &error);
        tally.setup_failures += 1;
    }
    tally
}

async fn idle_run(ctx: &Ctx, gateway: bool) -> anyhow::Result<()> {
    let permit = ctx.connect.acquire().await?;
    let (mut ws, heartbeat_ms) = if gateway {
        let token = crate::http::open_session(ctx.addr, &ctx.widget_key).await?;
        let mut ws = connect(ctx.addr, "/chat/v1/ws").await?;
        let (_, heartbeat, _, _) = hello(&mut ws, &token, None).await?;
        (ws, heartbeat)
    } else {
        (connect(ctx.addr, "/").await?, 25_000)
    };
    drop(permit);
    ctx.ready.fetch_add(1, Ordering::Relaxed);
    let mut done = ctx.done.clone();
    let mut next_ping = Instant::now() + Duration::from_millis(heartbeat_ms);
    loop {
        tokio::select! {
            incoming = next(&mut ws) => match incoming {
                Incoming::Text(_) => {}
                Incoming::Closed(code) => bail!("closed with {code} while idle"),
                Incoming::Gone => bail!("socket lost while idle"),
            },
            () = sleep_until(next_ping), if gateway => {
                next_ping = Instant::now() + Duration::from_millis(heartbeat_ms);
                send(&mut ws, proto::ping()).await?;
            }
            changed = done.changed() => {
                changed?;
                if *done.borrow() {
                    break;
                }
            }
        }
    }
    drop(ws.close(None).await);
    Ok(())
}
