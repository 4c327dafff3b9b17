//! Every metric the gateway emits, defined once. Names are `omnigate_<thing>_<unit>`; counters end in
//! `_total`; labels come from small fixed sets, never ids.
#![allow(clippy::disallowed_macros)]

use std::sync::OnceLock;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter, Gauge,
    Histogram,
};

const WS_CONNECTIONS: &str = "omnigate_ws_connections";
const WS_FRAMES_RECEIVED: &str = "omnigate_ws_frames_received_total";
const WS_CLOSED: &str = "omnigate_ws_closed_total";
const MESSAGES: &str = "omnigate_messages_total";
const EVENTS_APPENDED: &str = "omnigate_events_appended_total";
const DUPLICATES: &str = "omnigate_duplicate_sends_total";
const INPUT_REJECTED: &str = "omnigate_input_rejected_total";
const ROUTING_DECISIONS: &str = "omnigate_routing_decisions_total";
const CONVERSATIONS_OPEN: &str = "omnigate_conversations_open";
const BUS_COMMAND_SECONDS: &str = "omnigate_bus_command_seconds";
const REPLAYED: &str = "omnigate_events_replayed_total";
const SLA_BREACHES: &str = "omnigate_sla_breaches_total";
const CHANNEL_INBOUND: &str = "omnigate_channel_inbound_total";
const CHANNEL_DELIVERY: &str = "omnigate_channel_delivery_updates_total";
const CHANNEL_TOKEN_REFRESHES: &str = "omnigate_channel_token_refreshes_total";
const CHANNEL_TOKEN_REFUSED: &str = "omnigate_channel_token_refused_total";
const PUSH_REQUESTS: &str = "omnigate_push_requests_total";
const CRM_LOOKUPS: &str = "omnigate_crm_lookups_total";
const RETENTION_SWEPT: &str = "omnigate_retention_swept_total";
const BUS_CONVERSATIONS: &str = "omnigate_bus_conversations";
const BUS_EVICTIONS: &str = "omnigate_bus_evictions_total";
const BUS_APPENDS_IN_FLIGHT: &str = "omnigate_bus_appends_in_flight";

/// The bucket bounds of every histogram (all are durations in seconds): 10 µs to 1 s, for bus commands that
/// take tens of microseconds on the embedded store and a Redis round trip or more on Redis.
pub(crate) const SECONDS_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0,
];

/// Handles of the metrics touched for every relayed message, resolved once: the macros look a metric up in
/// the recorder's registry (hashing its name and labels) at each call, which cost about 3% of the gateway's
/// CPU per relayed message (`docs/performance.md`, profile notes).
struct HotPath {
    frames_customer: Counter,
    frames_agent: Counter,
    messages_customer: Counter,
    messages_agent: Counter,
    messages_note: Counter,
    events_appended: Counter,
    bus_command: Histogram,
    appends_in_flight: Gauge,
}

/// Set once the process's recorder is installed (`telemetry::prometheus`); until then the macros are used, so
/// no handle is ever resolved against the no-op recorder.
static HOT_PATH: OnceLock<HotPath> = OnceLock::new();

/// Resolves the hot path's handles against the recorder installed now.
pub(crate) fn resolve_hot_path() {
    HOT_PATH.get_or_init(|| HotPath {
        frames_customer: counter!(WS_FRAMES_RECEIVED, "role" => "customer"),
        frames_agent: counter!(WS_FRAMES_RECEIVED, "role" => "agent"),
        messages_customer: counter!(MESSAGES, "sender" => "customer"),
        messages_agent: counter!(MESSAGES, "sender" => "agent"),
        messages_note: counter!(MESSAGES, "sender" => "note"),
        events_appended: counter!(EVENTS_APPENDED),
        bus_command: histogram!(BUS_COMMAND_SECONDS),
        appends_in_flight: gauge!(BUS_APPENDS_IN_FLIGHT),
    });
}

pub(crate) fn describe_all() {
    describe_counter!(
        PUSH_REQUESTS,
        "push.requested webhooks by outcome (sent, failed, no_device, dropped)"
    );
    describe_gauge!(WS_CONNECTIONS, "open websocket connections by role");
    describe_counter!(WS_FRAMES_RECEIVED, "websocket frames received by role");
    describe_counter!(WS_CLOSED, "websocket connections closed by role and close code");
    describe_counter!(MESSAGES, "messages stored by sender role");
    describe_counter!(EVENTS_APPENDED, "conversation events appended to the log");
    describe_counter!(DUPLICATES, "retried sends answered with the original ack");
    describe_counter!(INPUT_REJECTED, "inputs refused by reason");
    describe_counter!(ROUTING_DECISIONS, "routing decisions by kind");
    describe_gauge!(CONVERSATIONS_OPEN, "conversations not closed");
    describe_histogram!(BUS_COMMAND_SECONDS, "time the session bus spends on one command");
    describe_counter!(
        REPLAYED,
        "events replayed to a resuming or newly assigned connection"
    );
    describe_counter!(
        SLA_BREACHES,
        "waiting conversations that passed a service-level target"
    );
    describe_counter!(
        CHANNEL_INBOUND,
        "provider webhooks by channel and outcome (stored, duplicate, refused)"
    );
    describe_counter!(
        CHANNEL_DELIVERY,
        "delivery states of agents' channel messages (pending, retrying, sent, delivered, failed)"
    );
    describe_counter!(
        CHANNEL_TOKEN_REFRESHES,
        "provider access tokens fetched by channel"
    );
    describe_counter!(
        CHANNEL_TOKEN_REFUSED,
        "provider calls refused for a stale access token by channel"
    );
    describe_counter!(
        CRM_LOOKUPS,
        "customer profile lookups by outcome (cached, ok, error, timeout)"
    );
    describe_counter!(
        RETENTION_SWEPT,
        "data removed by the embedded store's retention sweep, by kind"
    );
    describe_gauge!(
        BUS_APPENDS_IN_FLIGHT,
        "messages the session bus has sent to the store and not yet had answered (pipelined appends)"
    );
    describe_gauge!(
        BUS_CONVERSATIONS,
        "conversations the session bus holds in memory (open and recently closed)"
    );
    describe_counter!(
        BUS_EVICTIONS,
        "closed conversations evicted from the session bus after their reopen window"
    );
}

/// A customer profile lookup ended (`outcome`: `cached`, `ok`, `error`, `timeout`).
pub fn crm_lookup(outcome: &'static str) {
    counter!(CRM_LOOKUPS, "outcome" => outcome).increment(1);
}

/// The embedded store's retention sweep removed `swept`.
pub fn retention_swept(swept: &crate::store::Swept) {
    for (kind, n) in [
        ("conversations", swept.conversations),
        ("idempotency_keys", swept.idempotency_keys),
        ("profiles", swept.profiles),
    ] {
        if n > 0 {
            counter!(RETENTION_SWEPT, "kind" => kind).increment(n as u64);
        }
    }
}

/// The session bus now holds `count` conversations in memory.
pub fn bus_conversations(count: usize) {
    gauge!(BUS_CONVERSATIONS).set(count as f64);
}

/// The session bus has `count` appends sent to the store and not yet answered.
pub fn bus_appends_in_flight(count: usize) {
    match HOT_PATH.get() {
        Some(hot) => hot.appends_in_flight.set(count as f64),
        None => gauge!(BUS_APPENDS_IN_FLIGHT).set(count as f64),
    }
}

/// The session bus evicted `count` closed conversations.
pub fn bus_evicted(count: usize) {
    counter!(BUS_EVICTIONS).increment(count as u64);
}

/// A socket opened (`role`: `customer` or `agent`).
pub fn ws_opened(role: &'static str) {
    gauge!(WS_CONNECTIONS, "role" => role).increment(1.0);
}

/// A socket closed with `code`.
pub fn ws_closed(role: &'static str, code: u16) {
    gauge!(WS_CONNECTIONS, "role" => role).decrement(1.0);
    counter!(WS_CLOSED, "role" => role, "code" => code.to_string()).increment(1);
}

/// A frame arrived.
pub fn ws_frame_received(role: &'static str) {
    match (HOT_PATH.get(), role) {
        (Some(hot), "customer") => hot.frames_customer.increment(1),
        (Some(hot), "agent") => hot.frames_agent.increment(1),
        _ => counter!(WS_FRAMES_RECEIVED, "role" => role).increment(1),
    }
}

/// A message was stored.
pub fn message_stored(sender: &'static str) {
    match (HOT_PATH.get(), sender) {
        (Some(hot), "customer") => hot.messages_customer.increment(1),
        (Some(hot), "agent") => hot.messages_agent.increment(1),
        (Some(hot), "note") => hot.messages_note.increment(1),
        _ => counter!(MESSAGES, "sender" => sender).increment(1),
    }
}

/// An event was appended to a conversation log.
pub fn event_appended() {
    match HOT_PATH.get() {
        Some(hot) => hot.events_appended.increment(1),
        None => counter!(EVENTS_APPENDED).increment(1),
    }
}

/// A retried send was answered from the idempotency record.
pub fn duplicate_send() {
    counter!(DUPLICATES).increment(1);
}

/// An input was refused (`reason` from a fixed set: `invalid_json`, `rate_limited`, ...).
pub fn input_rejected(reason: &'static str) {
    counter!(INPUT_REJECTED, "reason" => reason).increment(1);
}

/// The router decided something (`kind`: `offer`, `rescind`, `assigned`, `requeued`).
pub fn routing_decision(kind: &'static str) {
    counter!(ROUTING_DECISIONS, "kind" => kind).increment(1);
}

/// The number of open conversations changed.
pub fn conversations_open(count: usize) {
    gauge!(CONVERSATIONS_OPEN).set(count as f64);
}

/// One bus command took `seconds`.
pub fn bus_command(seconds: f64) {
    match HOT_PATH.get() {
        Some(hot) => hot.bus_command.record(seconds),
        None => histogram!(BUS_COMMAND_SECONDS).record(seconds),
    }
}

/// `count` events were replayed.
pub fn events_replayed(count: usize) {
    counter!(REPLAYED).increment(count as u64);
}

/// A waiting conversation passed a service-level target.
pub fn sla_breached() {
    counter!(SLA_BREACHES).increment(1);
}

/// A provider webhook was handled (`outcome`: `stored`, `duplicate`, `refused`).
pub fn channel_inbound(channel: &'static str, outcome: &'static str) {
    counter!(CHANNEL_INBOUND, "channel" => channel, "outcome" => outcome).increment(1);
}

/// An agent's channel message reached a delivery state (`pending`, `retrying`, `sent`, `delivered`, `failed`).
pub fn channel_delivery(channel: &'static str, state: &str) {
    counter!(CHANNEL_DELIVERY, "channel" => channel, "state" => state.to_owned()).increment(1);
}

/// An access token was fetched.
pub fn channel_token_refreshed(channel: &'static str) {
    counter!(CHANNEL_TOKEN_REFRESHES, "channel" => channel).increment(1);
}

/// A provider refused our access token (40001/42001).
pub fn channel_token_refused(channel: &'static str) {
    counter!(CHANNEL_TOKEN_REFUSED, "channel" => channel).increment(1);
}

/// A push request's outcome: `sent`, `failed`, `no_device` or `dropped`.
pub fn push_request(outcome: &'static str) {
    counter!(PUSH_REQUESTS, "outcome" => outcome).increment(1);
}
