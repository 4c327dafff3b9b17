//! Chat protocol v1 as the generator speaks it: client frames built as text, server frames parsed into just
//! the fields a load client needs (borrowed, so a frame costs one pass of the JSON parser).

use std::borrow::Cow;

use omnigate_connectors::model::Content;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

/// A server frame: its op, `ref` and raw `d`.
#[derive(Debug, Deserialize)]
pub struct Frame<'a> {
    /// The op.
    #[serde(borrow)]
    pub op: Cow<'a, str>,
    /// The client's correlation ref, echoed on replies.
    #[serde(default, rename = "ref", borrow)]
    pub reference: Option<Cow<'a, str>>,
    /// The payload, parsed on demand with [`Frame::payload`].
    #[serde(default, borrow)]
    pub d: Option<&'a RawValue>,
}

impl<'a> Frame<'a> {
    /// Parses one text frame.
    ///
    /// # Errors
    /// When the text is not a JSON frame.
    pub fn parse(text: &'a str) -> serde_json::Result<Frame<'a>> {
        serde_json::from_str(text)
    }

    /// The payload as `T`.
    ///
    /// # Errors
    /// When `d` is missing or does not fit `T`.
    pub fn payload<T: Deserialize<'a>>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.d.map_or("null", |d| d.get()))
    }
}

/// The `d` of `ready`.
#[derive(Debug, Deserialize)]
pub struct Ready<'a> {
    /// The session to resume after a drop.
    #[serde(borrow)]
    pub session_id: Cow<'a, str>,
    /// Ping at least this often.
    pub heartbeat_ms: u64,
    /// Conversations (customers: theirs; agents: assigned).
    #[serde(default, borrow)]
    pub conversations: Vec<ConversationRef<'a>>,
    /// Agents: offers pending.
    #[serde(default, borrow)]
    pub offers: Vec<ConversationRef<'a>>,
}

/// Any payload naming a conversation.
#[derive(Debug, Deserialize)]
pub struct ConversationRef<'a> {
    /// The conversation.
    #[serde(borrow)]
    pub conversation_id: Cow<'a, str>,
    /// Its last position in the receiver's view (in `ready`).
    #[serde(default)]
    pub last_seq: u64,
}

/// The `d` of `event`.
#[derive(Debug, Deserialize)]
pub struct Event<'a> {
    /// The conversation.
    #[serde(borrow)]
    pub conversation_id: Cow<'a, str>,
    /// Gapless position in the receiver's view.
    pub seq: u64,
    /// `message.created`, `conversation.assigned`, …
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// Who caused it.
    #[serde(borrow)]
    pub actor: EventActor<'a>,
    /// The message of a `message.created` event.
    #[serde(default, borrow)]
    pub message: Option<EventMessage<'a>>,
}

/// The actor of an event.
#[derive(Debug, Deserialize)]
pub struct EventActor<'a> {
    /// `customer`, `agent` or `system`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
}

/// A message inside an event (or inside an echoed `message.send`).
#[derive(Debug, Deserialize)]
pub struct EventMessage<'a> {
    /// Its content.
    #[serde(borrow)]
    pub content: TextContent<'a>,
}

/// Text content (or a channel event's detail).
#[derive(Debug, Deserialize)]
pub struct TextContent<'a> {
    /// The text, when the content is text.
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    /// The detail, when the content is a channel event (a call's IVR input).
    #[serde(default, borrow)]
    pub detail: Option<Cow<'a, str>>,
}

/// The `d` of `message.ack`.
#[derive(Debug, Deserialize)]
pub struct MessageAck<'a> {
    /// The conversation the message went to.
    #[serde(borrow)]
    pub conversation_id: Cow<'a, str>,
    /// The sender's idempotency key.
    #[serde(borrow)]
    pub client_msg_id: Cow<'a, str>,
}

/// The `d` of `error`.
#[derive(Debug, Deserialize)]
pub struct ErrorD<'a> {
    /// Machine-readable code.
    #[serde(borrow)]
    pub code: Cow<'a, str>,
}

/// The `d` of a `message.send` as the echo server sends it back.
#[derive(Debug, Deserialize)]
pub struct EchoedSend<'a> {
    /// The content sent.
    #[serde(borrow)]
    pub content: TextContent<'a>,
}

/// `hello`, optionally resuming a session from per-conversation cursors.
pub fn hello(token: &str, resume: Option<(&str, &[(String, u64)])>) -> String {
    let mut d = json!({"token": token, "client": "omnigate-loadtest/1"});
    if let Some((session, cursors)) = resume {
        let cursors: serde_json::Map<String, serde_json::Value> =
            cursors.iter().map(|(c, s)| (c.clone(), json!(s))).collect();
        d["resume"] = json!({"session_id": session, "cursors": cursors});
    }
    json!({"op": "hello", "d": d}).to_string()
}

/// `message.send` of a text; `conversation` is `None` for a customer's first message.
pub fn message_send(reference: &str, conversation: Option<&str>, client_msg_id: &str, text: &str) -> String {
    let content = Content::Text {
        text: text.to_owned(),
    };
    let mut d = json!({"client_msg_id": client_msg_id, "content": content});
    if let Some(conversation) = conversation {
        d["conversation_id"] = json!(conversation);
    }
    json!({"op": "message.send", "ref": reference, "d": d}).to_string()
}

/// A cumulative delivery `ack`.
pub fn ack(conversation: &str, seq: u64) -> String {
    json!({"op": "ack", "d": {"conversation_id": conversation, "seq": seq}}).to_string()
}

/// An agent op on one conversation (`offer.accept`).
pub fn conversation_op(op: &str, reference: &str, conversation: &str) -> String {
    json!({"op": op, "ref": reference, "d": {"conversation_id": conversation}}).to_string()
}

/// `presence.set`.
pub fn presence(reference: &str, state: &str) -> String {
    json!({"op": "presence.set", "ref": reference, "d": {"state": state}}).to_string()
}

/// `ping`.
pub fn ping() -> String {
    r#"{"op":"ping"}"#.to_owned()
}

/// What a load message's text carries: which conversation, which message, and when it was meant to leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The conversation's index in the scenario.
    pub conversation: u32,
    /// The message's number within the conversation (0 opens it).
    pub k: u64,
    /// Scheduled send time, unix microseconds.
    pub sent_us: u64,
}

/// The text of customer message `stamp`, padded.
pub fn customer_text(stamp: Stamp, padding: usize) -> String {
    let mut text = format!("m {} {} {} ", stamp.conversation, stamp.k, stamp.sent_us);
    text.extend(std::iter::repeat_n('x', padding.max(1)));
    text
}

/// The text of an agent's reply to customer message `stamp`, sent at `sent_us`.
pub fn reply_text(stamp: Stamp, sent_us: u64) -> String {
    format!(
        "r {} {} {} {}",
        stamp.conversation, stamp.k, stamp.sent_us, sent_us
    )
}

/// Reads a customer text (`m …`): the stamp.
pub fn parse_customer_text(text: &str) -> Option<Stamp> {
    let mut parts = text.strip_prefix("m ")?.split(' ');
    Some(Stamp {
        conversation: parts.next()?.parse().ok()?,
        k: parts.next()?.parse().ok()?,
        sent_us: parts.next()?.parse().ok()?,
    })
}

/// Reads a reply text (`r …`): the customer message's stamp and the reply's send time.
pub fn parse_reply_text(text: &str) -> Option<(Stamp, u64)> {
    let mut parts = text.strip_prefix("r ")?.split(' ');
    let stamp = Stamp {
        conversation: parts.next()?.parse().ok()?,
        k: parts.next()?.parse().ok()?,
        sent_us: parts.next()?.parse().ok()?,
    };
    Some((stamp, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_round_trip() {
        let stamp = Stamp {
            conversation: 7,
            k: 42,
            sent_us: 1_700_000_000_123_456,
        };
        let text = customer_text(stamp, 16);
        assert_eq!(parse_customer_text(&text), Some(stamp));
        assert_eq!(parse_reply_text(&reply_text(stamp, 99)), Some((stamp, 99)));
        assert_eq!(parse_customer_text("r 1 2 3 4"), None);
        assert_eq!(parse_reply_text("m 1 2 3 x"), None);
    }

    #[test]
    fn parses_the_gateways_frames() {
        // The gateway serializes object keys in sorted order, so `d` comes before `op`.
        let event = r#"{"d":{"actor":{"id":"a","name":"A","type":"agent"},"at":"2026","conversation_id":"c_1","message":{"content":{"text":"r 1 2 3 4","type":"text"},"created_at":"x","id":"m_1","sender":{"type":"agent"}},"seq":5,"type":"message.created"},"op":"event"}"#;
        let frame = Frame::parse(event).unwrap();
        assert_eq!(frame.op, "event");
        let d: Event<'_> = frame.payload().unwrap();
        assert_eq!(
            (d.seq, d.kind.as_ref(), d.actor.kind.as_ref()),
            (5, "message.created", "agent")
        );
        assert_eq!(d.message.unwrap().content.text.as_deref(), Some("r 1 2 3 4"));
        let ready = r#"{"d":{"conversations":[{"conversation_id":"c_1","last_seq":3,"status":"assigned"}],"heartbeat_ms":25000,"resumed":false,"session_id":"s_1"},"op":"ready"}"#;
        let ready: Ready<'_> = Frame::parse(ready).unwrap().payload().unwrap();
        assert_eq!((ready.session_id.as_ref(), ready.conversations.len()), ("s_1", 1));
        let sent = message_send("r1", Some("c_1"), "m-1", "hi");
        let echoed: EchoedSend<'_> = Frame::parse(&sent).unwrap().payload().unwrap();
        assert_eq!(echoed.content.text.as_deref(), Some("hi"));
    }
}
