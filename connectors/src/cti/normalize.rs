//! Pure conversion of CTI events into [`InboundMessage`]s of channel `voice`: a call is a conversation, each event
//! a message in it.

use crate::cti::wire::{CallEvent, CtiMessage};
use crate::model::{Channel, Content, Identity, IdentityKind, InboundMessage, ReplyCapability};

/// `voice:<tenant>:evt:<id>` (`id` equals `webhook-id` and is stable across retries).
pub fn dedupe_key(msg: &CtiMessage) -> String {
    format!("voice:{}:evt:{}", msg.envelope.tenant, msg.envelope.id)
}

/// The caller's identity, known from `call.offered` (inbound: `from`; outbound: `to`).
pub fn caller_identity(event: &CallEvent) -> Option<Identity> {
    let CallEvent::Offered(o) = event else { return None };
    let number = if o.direction == "outbound" { &o.to } else { &o.from };
    Some(Identity {
        kind: IdentityKind::Phone,
        value: number.clone(),
        verified: false,
    })
}

/// A short, agent-readable detail of the event.
pub fn detail(event: &CallEvent) -> String {
    match event {
        CallEvent::Offered(o) => format!("{} call from {} to {}", o.direction, o.from, o.to),
        CallEvent::Ringing(r) => format!("ringing {} {}", r.target.kind, r.target.id),
        CallEvent::IvrInput(i) => {
            let input = i
                .digits
                .as_deref()
                .or(i.speech_text.as_deref())
                .unwrap_or_default();
            match &i.intent {
                Some(intent) => format!("menu {}: {input} (intent {intent})", i.menu),
                None => format!("menu {}: {input}", i.menu),
            }
        }
        CallEvent::Queued(q) => format!("queued in {}", q.queue),
        CallEvent::Answered(a) => match &a.agent_id {
            Some(agent) => format!("answered by {} {agent}", a.answered_by()),
            None => format!("answered by {}", a.answered_by()),
        },
        CallEvent::Transferred(t) => {
            let to = t.to.id.as_deref().or(t.to.number.as_deref()).unwrap_or_default();
            format!("{} transfer to {} {to}", t.kind, t.to.kind)
        }
        CallEvent::Held(h) | CallEvent::Resumed(h) => h.agent_id.clone().unwrap_or_default(),
        CallEvent::Ended(e) => format!("ended by {}: {}", e.hangup_by, e.cause),
        CallEvent::RecordingAvailable(r) => r.url.clone(),
        CallEvent::Unknown(kind) => kind.clone(),
    }
}

/// Normalizes a verified event. `caller` is the identity remembered from the call's `call.offered` (use
/// [`caller_identity`] on that event); `channel_account` is our telephony account or number. Calls take no text
/// replies, so the capability is a closed window.
pub fn to_inbound(
    msg: &CtiMessage,
    caller: &Identity,
    channel_account: &str,
    raw: &str,
    received_at_ms: u64,
) -> InboundMessage {
    InboundMessage {
        channel: Channel::Voice,
        channel_account: channel_account.to_owned(),
        from: caller.clone(),
        proven_with: Vec::new(),
        external_message_id: msg.envelope.id.clone(),
        dedupe_key: dedupe_key(msg),
        received_at_ms,
        provider_time_ms: msg.envelope.occurred_at_ms(),
        content: Content::Event {
            name: msg.envelope.kind.clone(),
            detail: detail(&msg.event),
        },
        reply_capability: ReplyCapability::Window {
            expires_at_ms: 0,
            remaining: 0,
        },
        raw: raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cti::wire::parse;
    use crate::util::{vectors, vstr};

    #[test]
    fn vector_call_normalizes_into_one_conversation() {
        let v = vectors();
        let events = v["cti_webhook_proposal"]["events"].as_array().unwrap();
        let raws: Vec<&str> = events.iter().map(|e| vstr(e, &["raw_body"])).collect();
        let msgs: Vec<CtiMessage> = raws
            .iter()
            .map(|r| parse(r.as_bytes(), 65_536).unwrap())
            .collect();
        let caller = caller_identity(&msgs[0].event).unwrap();
        assert_eq!(caller.value, "+8613800138000");
        assert_eq!(caller_identity(&msgs[1].event), None);
        let out: Vec<_> = msgs
            .iter()
            .zip(&raws)
            .map(|(m, r)| to_inbound(m, &caller, "+864000000000", r, 1))
            .collect();
        assert_eq!(out[0].dedupe_key, "voice:acme:evt:evt_01HF0000000000000000000001");
        assert_eq!(
            out[1].content,
            Content::Event {
                name: "call.ivr_input".into(),
                detail: "menu main: 2 (intent refund)".into()
            }
        );
        assert_eq!(
            out[2].content,
            Content::Event {
                name: "call.answered".into(),
                detail: "answered by agent agent-0042".into()
            }
        );
        assert_eq!(
            out[3].content,
            Content::Event {
                name: "call.ended".into(),
                detail: "ended by customer: normal_clearing".into()
            }
        );
        assert_eq!(out[3].provider_time_ms, Some(1_700_000_133_000));
        assert!(out
            .iter()
            .all(|m| m.channel == Channel::Voice && m.from == caller));
        assert_eq!(out[0].raw, raws[0]);
    }
}
