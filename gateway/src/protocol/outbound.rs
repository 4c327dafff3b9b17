//! Server frames. Every builder returns the JSON text, serialized once and shared by every recipient.

use omnigate_connectors::model::{Content, ConversationId, CustomerId};
use omnigate_connectors::time::rfc3339_ms_bytes;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::json_object::JsonObject;

use crate::clock::rfc3339;
use crate::store::{Actor, EventKind, StoredEvent, View};

/// A serialized frame, cheap to clone for fan-out.
pub type FrameText = axum::extract::ws::Utf8Bytes;

/// The envelope of every server frame: `{"op", "ref"?, "d"?}`.
#[derive(Serialize)]
struct Envelope<'a, D: Serialize> {
    op: &'a str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    d: Option<D>,
}

/// Serializes a frame straight into its text, without building a `Value` for the envelope.
fn write_frame<D: Serialize>(op: &str, reference: Option<&str>, d: Option<D>) -> FrameText {
    let mut out = Vec::with_capacity(256);
    let envelope = Envelope { op, reference, d };
    let written = serde_json::to_writer(&mut out, &envelope);
    frame_text(out, written)
}

/// A frame whose `d` is written field by field by `write_d`: the same JSON as [`write_frame`] gives for a
/// struct with those fields, for the frames of every relayed message (see `json_object.rs`).
fn write_frame_with(
    op: &'static str,
    reference: Option<&str>,
    write_d: impl FnOnce(&mut JsonObject<'_>) -> serde_json::Result<()>,
) -> FrameText {
    let mut out = Vec::with_capacity(384);
    let mut envelope = JsonObject::begin(&mut out);
    let written = (|| {
        envelope.literal_field("op", op);
        if let Some(reference) = reference {
            envelope.str_field("ref", reference);
        }
        let mut d = envelope.object("d");
        write_d(&mut d)?;
        d.end();
        Ok(())
    })();
    envelope.end();
    frame_text(out, written)
}

fn frame_text(out: Vec<u8>, written: serde_json::Result<()>) -> FrameText {
    if written.is_err() {
        // Only a `Serialize` impl that fails could get here; ours do not.
        return r#"{"op":"error","d":{"code":"internal","message":"frame not serializable"}}"#.into();
    }
    // serde_json writes UTF-8 only.
    String::from_utf8(out).unwrap_or_default().into()
}

fn frame(op: &str, reference: Option<&str>, d: Value) -> FrameText {
    write_frame(op, reference, (!d.is_null()).then_some(&d))
}

/// `error`: a refused frame; the connection stays open.
pub fn error(reference: Option<&str>, code: &str, message: &str) -> FrameText {
    frame("error", reference, json!({"code": code, "message": message}))
}

/// `customer.context`: the accepted conversation's customer across channels (recent conversations, open
/// complaints), sent to the agent right after the `ok` of `offer.accept`.
pub fn customer_context(d: Value) -> FrameText {
    frame("customer.context", None, d)
}

/// `pong`.
pub fn pong(reference: Option<&str>) -> FrameText {
    frame("pong", reference, Value::Null)
}

/// `ok`: an agent op (presence, accept, reject, close, transfer) succeeded.
pub fn ok(reference: Option<&str>, d: Value) -> FrameText {
    frame("ok", reference, d)
}

/// The `d` of the answer to `sms.segments`: how a draft would be split into SMS parts.
pub fn sms_segments(text: &str) -> Value {
    let info = omnigate_connectors::sms_segments::count(text);
    let (encoding, per_part) = match (info.encoding, info.segments) {
        (omnigate_connectors::sms_segments::Encoding::Gsm7, 1) => ("gsm7", 160),
        (omnigate_connectors::sms_segments::Encoding::Gsm7, _) => ("gsm7", 153),
        (omnigate_connectors::sms_segments::Encoding::Ucs2, 1) => ("ucs2", 70),
        (omnigate_connectors::sms_segments::Encoding::Ucs2, _) => ("ucs2", 67),
    };
    serde_json::json!({
        "encoding": encoding,
        "segments": info.segments,
        "units": info.units,
        "units_per_segment": per_part,
        "remaining_in_segment": info.remaining_in_segment,
    })
}

/// `ready`: the answer to `hello`.
pub fn ready(session_id: &str, heartbeat_ms: u64, resumed: bool, extra: Map<String, Value>) -> FrameText {
    let mut d = Map::new();
    d.insert("session_id".to_owned(), Value::from(session_id));
    d.insert("heartbeat_ms".to_owned(), Value::from(heartbeat_ms));
    d.insert("resumed".to_owned(), Value::from(resumed));
    d.extend(extra);
    frame("ready", None, Value::Object(d))
}

/// `message.ack`: the same `client_msg_id` always gets the same answer.
pub fn message_ack(
    reference: Option<&str>,
    conversation: &ConversationId,
    client_msg_id: &str,
    message_id: &str,
    seq: u64,
    at_ms: u64,
) -> FrameText {
    write_frame_with("message.ack", reference, |d| {
        d.str_field("conversation_id", conversation.as_str());
        d.str_field("client_msg_id", client_msg_id);
        d.str_field("message_id", message_id);
        d.field("seq", &seq)?;
        d.timestamp_field("created_at", &rfc3339_ms_bytes(at_ms));
        Ok(())
    })
}

/// `typing` relayed to the other side (never stored).
pub fn typing(conversation: &ConversationId, who: &str, state: &str) -> FrameText {
    frame(
        "typing",
        None,
        json!({"conversation_id": conversation, "from": who, "state": state}),
    )
}

/// `resync_required`: replay is not possible from the client's cursor; page the REST endpoint.
pub fn resync_required(conversation: &ConversationId, reason: &str, last_seq: u64) -> FrameText {
    frame(
        "resync_required",
        None,
        json!({"conversation_id": conversation, "reason": reason, "last_seq": last_seq}),
    )
}

/// `queue.position` to a waiting customer (never stored); the estimate is absent until the queue has history.
pub fn queue_position(
    conversation: &ConversationId,
    position: usize,
    estimated_wait_ms: Option<u64>,
) -> FrameText {
    frame(
        "queue.position",
        None,
        json!({"conversation_id": conversation, "position": position, "estimated_wait_ms": estimated_wait_ms}),
    )
}

/// `presence.updated` telling an agent it gets no offers until it sets itself available again.
pub fn not_routable(misses: u32) -> FrameText {
    frame(
        "presence.updated",
        None,
        json!({"state": "available", "routable": false, "reason": "missed_offers", "misses": misses}),
    )
}

/// `offer` to an agent.
pub fn offer(conversation: &ConversationId, details: Value, expires_in_ms: u64) -> FrameText {
    let mut d = json!({"conversation_id": conversation, "expires_in_ms": expires_in_ms});
    if let (Some(d), Value::Object(details)) = (d.as_object_mut(), details) {
        d.extend(details);
    }
    frame("offer", None, d)
}

/// `offer.rescinded` to an agent.
pub fn offer_rescinded(conversation: &ConversationId, reason: &str) -> FrameText {
    frame(
        "offer.rescinded",
        None,
        json!({"conversation_id": conversation, "reason": reason}),
    )
}

/// `conversation.assigned` to an agent: history (as `event` frames) follows.
pub fn assigned(conversation: &ConversationId, details: Value) -> FrameText {
    let mut d = json!({"conversation_id": conversation});
    if let (Some(d), Value::Object(details)) = (d.as_object_mut(), details) {
        d.extend(details);
    }
    frame("conversation.assigned", None, d)
}

/// `conversation.unassigned` to an agent: it no longer has the conversation.
pub fn unassigned(conversation: &ConversationId, reason: &str) -> FrameText {
    frame(
        "conversation.unassigned",
        None,
        json!({"conversation_id": conversation, "reason": reason}),
    )
}

/// `presence.updated` to an agent's sockets.
pub fn presence(state: &str, routable: bool) -> FrameText {
    frame(
        "presence.updated",
        None,
        json!({"state": state, "routable": routable}),
    )
}

/// The `d` of an `event` frame for one view. `read_position` is the watermark of a `read.updated` event already
/// translated into this view's numbering.
pub fn event_payload(
    conversation: &ConversationId,
    event: &StoredEvent,
    view: View,
    read_position: Option<u64>,
) -> Value {
    let seq = match view {
        View::Agent => event.seq,
        View::Customer => event.customer_seq.unwrap_or(0),
    };
    let mut d = Map::new();
    d.insert("conversation_id".to_owned(), json!(conversation));
    d.insert("seq".to_owned(), json!(seq));
    d.insert("at".to_owned(), json!(rfc3339(event.at_ms)));
    d.insert("actor".to_owned(), actor(&event.actor, view));
    match &event.kind {
        EventKind::Message {
            message_id,
            client_msg_id,
            content,
            via,
        } => {
            d.insert("type".to_owned(), json!("message.created"));
            let mut message = json!({
                "id": message_id,
                "sender": actor(&event.actor, view),
                "content": content,
                "created_at": d["at"],
            });
            if !client_msg_id.is_empty() {
                message["client_msg_id"] = json!(client_msg_id);
            }
            if let (Some(via), View::Agent) = (via, view) {
                message["via"] = json!(via);
            }
            d.insert("message".to_owned(), message);
        }
        EventKind::Read { reader, up_to_seq } => {
            d.insert("type".to_owned(), json!("read.updated"));
            d.insert("reader".to_owned(), json!(reader));
            d.insert("up_to_seq".to_owned(), json!(read_position.unwrap_or(*up_to_seq)));
        }
        EventKind::Closed { disposition } => {
            d.insert("type".to_owned(), json!("conversation.closed"));
            if view == View::Agent {
                d.insert("disposition".to_owned(), json!(disposition));
            }
        }
        EventKind::Assigned { agent_id, agent_name } => {
            d.insert("type".to_owned(), json!("conversation.assigned"));
            d.insert("agent_name".to_owned(), json!(agent_name));
            if view == View::Agent {
                d.insert("agent_id".to_owned(), json!(agent_id));
            }
        }
        other => {
            if let Ok(Value::Object(fields)) = serde_json::to_value(other) {
                d.extend(fields);
            }
        }
    }
    Value::Object(d)
}

/// An `event` frame.
pub fn event(payload: Value) -> FrameText {
    frame("event", None, payload)
}

/// The `event` frame of a stored event for one view: the same JSON as `event(event_payload(..))`, but a
/// message (the event of every relayed message) is serialized straight from the stored event, without a
/// `Value` tree.
pub fn event_frame(
    conversation: &ConversationId,
    event: &StoredEvent,
    view: View,
    read_position: Option<u64>,
) -> FrameText {
    let EventKind::Message {
        message_id,
        client_msg_id,
        content,
        via,
    } = &event.kind
    else {
        return self::event(event_payload(conversation, event, view, read_position));
    };
    let at = rfc3339_ms_bytes(event.at_ms);
    let seq = match view {
        View::Agent => event.seq,
        View::Customer => event.customer_seq.unwrap_or(0),
    };
    let actor = ActorView::new(&event.actor, view);
    write_frame_with("event", None, |d| {
        d.str_field("conversation_id", conversation.as_str());
        d.field("seq", &seq)?;
        d.timestamp_field("at", &at);
        actor.write(d.object("actor"));
        d.literal_field("type", "message.created");
        let mut message = d.object("message");
        message.str_field("id", message_id.as_str());
        actor.write(message.object("sender"));
        match content {
            // Every relayed chat message; the other kinds are rare enough for serde.
            Content::Text { text } => {
                let mut written = message.object("content");
                written.literal_field("type", "text");
                written.str_field("text", text);
                written.end();
            }
            other => message.field("content", other)?,
        }
        message.timestamp_field("created_at", &at);
        if !client_msg_id.is_empty() {
            message.str_field("client_msg_id", client_msg_id);
        }
        if let (Some(via), View::Agent) = (via, view) {
            message.field("via", via)?;
        }
        message.end();
        Ok(())
    })
}

/// An event's actor as one view sees it (the customer's view hides ids).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ActorView<'a> {
    Customer {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a CustomerId>,
    },
    Agent {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        name: &'a str,
    },
    System,
}

impl<'a> ActorView<'a> {
    fn new(actor: &'a Actor, view: View) -> ActorView<'a> {
        let agent_view = view == View::Agent;
        match actor {
            Actor::Customer { id } => ActorView::Customer {
                id: agent_view.then_some(id),
            },
            Actor::Agent { id, name } => ActorView::Agent {
                id: agent_view.then_some(id.as_str()),
                name,
            },
            Actor::System => ActorView::System,
        }
    }

    /// Writes the same object as `Serialize` gives.
    fn write(&self, mut object: JsonObject<'_>) {
        match self {
            ActorView::Customer { id } => {
                object.literal_field("type", "customer");
                if let Some(id) = id {
                    object.str_field("id", id.as_str());
                }
            }
            ActorView::Agent { id, name } => {
                object.literal_field("type", "agent");
                if let Some(id) = id {
                    object.str_field("id", id);
                }
                object.str_field("name", name);
            }
            ActorView::System => object.literal_field("type", "system"),
        }
        object.end();
    }
}

fn actor(actor: &Actor, view: View) -> Value {
    serde_json::to_value(ActorView::new(actor, view)).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use omnigate_connectors::model::{Content, CustomerId, MessageId};

    use crate::store::Via;

    use super::*;

    fn message(actor: Actor, client_msg_id: &str, via: Option<Via>) -> StoredEvent {
        StoredEvent {
            seq: 12,
            customer_seq: Some(7),
            at_ms: 1_700_000_000_042,
            actor,
            kind: EventKind::Message {
                message_id: MessageId::generate(),
                client_msg_id: client_msg_id.into(),
                content: Content::Text {
                    text: "你好 \"quoted\"\n".into(),
                },
                via,
            },
        }
    }

    #[test]
    fn a_message_event_frame_is_the_same_json_as_its_payload_in_an_envelope() {
        let c = ConversationId::parse("c_1").unwrap();
        let via = Via {
            channel: omnigate_connectors::model::Channel::SmsTwilio,
            account: "main".into(),
        };
        let events = [
            message(
                Actor::Customer {
                    id: CustomerId::parse("cu_9").unwrap(),
                },
                "m-1",
                None,
            ),
            message(
                Actor::Agent {
                    id: "lin".into(),
                    name: "Lin".into(),
                },
                "",
                Some(via),
            ),
            message(Actor::System, "m-2", None),
        ];
        for event in &events {
            for view in [View::Agent, View::Customer] {
                let direct: Value = serde_json::from_str(&event_frame(&c, event, view, None)).unwrap();
                let through_value: Value =
                    serde_json::from_str(&self::event(event_payload(&c, event, view, None))).unwrap();
                assert_eq!(direct, through_value, "{view:?}");
                assert_eq!(direct["d"]["message"]["created_at"], "2023-11-14T22:13:20.042Z");
            }
        }
        let agent: Value = serde_json::from_str(&event_frame(&c, &events[1], View::Agent, None)).unwrap();
        assert_eq!(agent["d"]["message"]["via"]["account"], "main");
        let customer: Value =
            serde_json::from_str(&event_frame(&c, &events[1], View::Customer, None)).unwrap();
        assert!(customer["d"]["message"].get("via").is_none());
        assert!(customer["d"]["actor"].get("id").is_none());
        assert!(customer["d"]["message"].get("client_msg_id").is_none());
    }

    proptest::proptest! {
        /// The frames written field by field (`json_object.rs`) are the JSON the `Value` path gives, whatever
        /// the text, ids and names hold (quotes, control characters, any Unicode).
        #[test]
        fn written_frames_match_the_value_path(
            text in "\\PC*|[\"\\\\\u{0}-\u{1f}\u{7f}\u{2028}😀a]{0,40}",
            client_msg_id in "\\PC{0,12}",
            name in "\\PC{0,12}",
            reference in proptest::option::of("\\PC{0,8}"),
            seq in 0u64..u64::MAX,
        ) {
            let c = ConversationId::parse("c_1").unwrap();
            let actor = match seq % 3 {
                0 => Actor::Agent { id: name.clone(), name },
                1 => Actor::Customer { id: CustomerId::parse("cu_9").unwrap() },
                _ => Actor::System,
            };
            let mut event = message(actor, &client_msg_id, None);
            event.seq = seq;
            if let EventKind::Message { content, .. } = &mut event.kind {
                *content = Content::Text { text: text.clone() };
            }
            for view in [View::Agent, View::Customer] {
                let direct: Value = serde_json::from_str(&event_frame(&c, &event, view, None)).unwrap();
                let through_value: Value =
                    serde_json::from_str(&self::event(event_payload(&c, &event, view, None))).unwrap();
                proptest::prop_assert_eq!(direct, through_value);
            }
            let ack: Value =
                serde_json::from_str(&message_ack(reference.as_deref(), &c, &client_msg_id, &text, seq, 0)).unwrap();
            let mut expected = json!({"op": "message.ack", "d": {"conversation_id": "c_1",
                "client_msg_id": client_msg_id, "message_id": text, "seq": seq, "created_at": "1970-01-01T00:00:00.000Z"}});
            if let Some(reference) = reference {
                expected["ref"] = json!(reference);
            }
            proptest::prop_assert_eq!(ack, expected);
        }
    }

    #[test]
    fn frames_keep_their_envelope() {
        let c = ConversationId::parse("c_1").unwrap();
        let ack: Value = serde_json::from_str(&message_ack(Some("r1"), &c, "m-1", "msg_1", 3, 0)).unwrap();
        assert_eq!(
            ack,
            json!({"op": "message.ack", "ref": "r1", "d": {"conversation_id": "c_1", "client_msg_id": "m-1",
                "message_id": "msg_1", "seq": 3, "created_at": "1970-01-01T00:00:00.000Z"}})
        );
        let pong: Value = serde_json::from_str(&pong(None)).unwrap();
        assert_eq!(pong, json!({"op": "pong"}));
    }

    #[test]
    fn customer_view_hides_agent_internals() {
        let c = ConversationId::parse("c_1").unwrap();
        let closed = StoredEvent {
            seq: 9,
            customer_seq: Some(4),
            at_ms: 1_700_000_000_000,
            actor: Actor::Agent {
                id: "lin".into(),
                name: "Lin".into(),
            },
            kind: EventKind::Closed {
                disposition: "resolved".into(),
            },
        };
        let customer = event_payload(&c, &closed, View::Customer, None);
        assert_eq!(customer["seq"], 4);
        assert!(customer.get("disposition").is_none());
        assert!(customer["actor"].get("id").is_none());
        let agent = event_payload(&c, &closed, View::Agent, None);
        assert_eq!(
            (agent["seq"].as_u64(), agent["disposition"].as_str()),
            (Some(9), Some("resolved"))
        );
    }

    #[test]
    fn message_events_follow_the_protocol_shape() {
        let c = ConversationId::parse("c_1").unwrap();
        let e = StoredEvent {
            seq: 1,
            customer_seq: Some(1),
            at_ms: 0,
            actor: Actor::Customer {
                id: CustomerId::generate(),
            },
            kind: EventKind::Message {
                message_id: MessageId::parse("m_1").unwrap(),
                client_msg_id: "k".into(),
                content: Content::Text { text: "hi".into() },
                via: None,
            },
        };
        let text = event(event_payload(&c, &e, View::Customer, None));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["op"], "event");
        assert_eq!(v["d"]["type"], "message.created");
        assert_eq!(
            v["d"]["message"]["content"],
            json!({"type": "text", "text": "hi"})
        );
        assert_eq!(v["d"]["message"]["client_msg_id"], "k");
    }
}
