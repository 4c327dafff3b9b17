//! `cti-webhook/1` envelope and typed call events (PROTOCOLS.md §3.6). Unknown types and fields are accepted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::InboundError;

/// The only `specversion` this module reads.
pub const SPEC_VERSION: &str = "cti-webhook/1";

/// Whether a request's `Content-Type` is JSON (`application/json`, parameters such as `charset` ignored).
pub fn is_json_content_type(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The fields every event carries.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Envelope {
    /// `cti-webhook/1`.
    pub specversion: String,
    /// Equals `webhook-id`: the idempotency key.
    pub id: String,
    /// `call.offered`, `call.answered`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The bank tenant.
    #[serde(default)]
    pub tenant: String,
    /// The adapter that sent it.
    #[serde(default)]
    pub source: String,
    /// Stable for the whole customer call, across transfers.
    pub call_id: String,
    /// Rises by 1 per event of the call, from 1.
    pub seq: u64,
    /// When it happened (RFC 3339, UTC, milliseconds).
    pub occurred_at: String,
    /// Everything else (the type's fields and unknown ones).
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl Envelope {
    /// `occurred_at` as unix milliseconds.
    pub fn occurred_at_ms(&self) -> Option<u64> {
        let t =
            time::OffsetDateTime::parse(&self.occurred_at, &time::format_description::well_known::Rfc3339)
                .ok()?;
        u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
    }
}

/// Who or what a call rings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `agent` or `endpoint`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The agent or endpoint id.
    pub id: String,
}

/// Where a transfer goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferTarget {
    /// `agent`, `queue` or `external`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Agent or queue id.
    #[serde(default)]
    pub id: Option<String>,
    /// External number.
    #[serde(default)]
    pub number: Option<String>,
}

/// `call.offered`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Offered {
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Caller (E.164).
    pub from: String,
    /// Called number.
    pub to: String,
    /// Caller name.
    #[serde(default)]
    pub caller_name: Option<String>,
    /// Trunk.
    #[serde(default)]
    pub trunk: Option<String>,
    /// Dialled number.
    #[serde(default)]
    pub did: Option<String>,
    /// Free attributes.
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// `call.ringing`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Ringing {
    /// Who rings.
    pub target: Target,
    /// Ring timeout.
    #[serde(default)]
    pub ring_timeout_ms: Option<u64>,
}

/// `call.ivr_input`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct IvrInput {
    /// The IVR menu.
    pub menu: String,
    /// DTMF digits.
    #[serde(default)]
    pub digits: Option<String>,
    /// Speech recognition result.
    #[serde(default)]
    pub speech_text: Option<String>,
    /// Recognized intent.
    #[serde(default)]
    pub intent: Option<String>,
    /// Intent confidence 0..1.
    #[serde(default)]
    pub confidence: Option<f64>,
    /// Recognized slots.
    #[serde(default)]
    pub slots: Map<String, Value>,
}

/// `call.queued`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Queued {
    /// Queue name.
    pub queue: String,
    /// Priority.
    #[serde(default)]
    pub priority: Option<i64>,
    /// Position.
    #[serde(default)]
    pub position: Option<u32>,
    /// Estimated wait.
    #[serde(default)]
    pub estimated_wait_ms: Option<u64>,
}

/// `call.answered`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Answered {
    /// `agent`, `ivr` or `voicemail`. Required by the table in §3.6, but the signed vector omits it; when absent
    /// it is `agent` if `agent_id` is present (see [`Answered::answered_by`]).
    #[serde(default, rename = "answered_by")]
    pub answered_by_field: Option<String>,
    /// The agent.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// The queue.
    #[serde(default)]
    pub queue: Option<String>,
    /// Time waited.
    #[serde(default)]
    pub wait_ms: Option<u64>,
    /// Leg.
    #[serde(default)]
    pub leg_id: Option<String>,
}

impl Answered {
    /// Who answered: the field, else `agent` when an agent id is given, else `unknown`.
    pub fn answered_by(&self) -> &str {
        match (&self.answered_by_field, &self.agent_id) {
            (Some(by), _) => by,
            (None, Some(_)) => "agent",
            (None, None) => "unknown",
        }
    }
}

/// `call.transferred`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Transferred {
    /// `blind`, `attended`, `queue` or `external`.
    pub kind: String,
    /// Destination.
    pub to: TransferTarget,
    /// Transferring agent.
    #[serde(default)]
    pub from_agent_id: Option<String>,
    /// New leg.
    #[serde(default)]
    pub new_leg_id: Option<String>,
}

/// `call.held` / `call.resumed`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HoldChange {
    /// The agent.
    #[serde(default)]
    pub agent_id: Option<String>,
}

/// `call.ended`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Ended {
    /// `customer`, `agent` or `system`.
    pub hangup_by: String,
    /// `normal_clearing`, `busy`, `no_answer`, `abandoned_in_queue`, …
    pub cause: String,
    /// Q.850 cause.
    #[serde(default)]
    pub q850_cause: Option<u16>,
    /// SIP status.
    #[serde(default)]
    pub sip_code: Option<u16>,
    /// Talk time.
    #[serde(default)]
    pub talk_ms: Option<u64>,
    /// Total time.
    #[serde(default)]
    pub total_ms: Option<u64>,
}

/// `call.recording_available`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RecordingAvailable {
    /// Recording id.
    pub recording_id: String,
    /// Short-lived or authenticated URL.
    pub url: String,
    /// Duration.
    pub duration_ms: u64,
    /// Format (`wav`, `mp3`…).
    pub format: String,
    /// Channel count.
    #[serde(default)]
    pub channels: Option<u8>,
    /// Hex SHA-256 of the file.
    #[serde(default)]
    pub sha256: Option<String>,
    /// When the URL expires.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// A typed call event.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// `call.offered`.
    Offered(Offered),
    /// `call.ringing`.
    Ringing(Ringing),
    /// `call.ivr_input`.
    IvrInput(IvrInput),
    /// `call.queued`.
    Queued(Queued),
    /// `call.answered`.
    Answered(Answered),
    /// `call.transferred`.
    Transferred(Transferred),
    /// `call.held`.
    Held(HoldChange),
    /// `call.resumed`.
    Resumed(HoldChange),
    /// `call.ended`.
    Ended(Ended),
    /// `call.recording_available`.
    RecordingAvailable(RecordingAvailable),
    /// A type this version does not know: accepted and ignored (forward compatibility).
    Unknown(String),
}

/// A parsed webhook body.
#[derive(Debug, Clone, PartialEq)]
pub struct CtiMessage {
    /// The envelope.
    pub envelope: Envelope,
    /// The typed event.
    pub event: CallEvent,
}

/// Parses a verified raw body (size-checked first).
///
/// # Errors
/// 413 over `limit`; 400 for invalid JSON, another `specversion`, missing envelope fields, a known type missing
/// its required fields, or an `ivr_input` with neither digits nor speech.
pub fn parse(body: &[u8], limit: usize) -> Result<CtiMessage, InboundError> {
    crate::util::check_size(body, limit)?;
    let value: Value =
        serde_json::from_slice(body).map_err(|e| InboundError::Malformed(format!("json: {e}")))?;
    let envelope: Envelope =
        Envelope::deserialize(&value).map_err(|e| InboundError::Malformed(format!("envelope: {e}")))?;
    if envelope.specversion != SPEC_VERSION {
        return Err(InboundError::Malformed(format!(
            "unsupported specversion {}",
            envelope.specversion
        )));
    }
    if envelope.seq == 0 {
        return Err(InboundError::malformed("seq starts at 1"));
    }
    fn typed<T: serde::de::DeserializeOwned>(value: &Value, kind: &str) -> Result<T, InboundError> {
        T::deserialize(value).map_err(|e| InboundError::Malformed(format!("{kind}: {e}")))
    }
    let kind = envelope.kind.as_str();
    let event = match kind {
        "call.offered" => CallEvent::Offered(typed(&value, kind)?),
        "call.ringing" => CallEvent::Ringing(typed(&value, kind)?),
        "call.ivr_input" => {
            let input: IvrInput = typed(&value, kind)?;
            if input.digits.is_none() && input.speech_text.is_none() {
                return Err(InboundError::malformed(
                    "call.ivr_input needs digits or speech_text",
                ));
            }
            CallEvent::IvrInput(input)
        }
        "call.queued" => CallEvent::Queued(typed(&value, kind)?),
        "call.answered" => CallEvent::Answered(typed(&value, kind)?),
        "call.transferred" => CallEvent::Transferred(typed(&value, kind)?),
        "call.held" => CallEvent::Held(typed(&value, kind)?),
        "call.resumed" => CallEvent::Resumed(typed(&value, kind)?),
        "call.ended" => CallEvent::Ended(typed(&value, kind)?),
        "call.recording_available" => CallEvent::RecordingAvailable(typed(&value, kind)?),
        other => CallEvent::Unknown(other.to_owned()),
    };
    Ok(CtiMessage { envelope, event })
}

impl CallEvent {
    /// Routing attributes this event contributes (IVR menu, digits, intent and slots; the queue).
    pub fn routing_attributes(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match self {
            Self::IvrInput(i) => {
                out.insert("ivr.menu".to_owned(), i.menu.clone());
                if let Some(d) = &i.digits {
                    out.insert("ivr.digits".to_owned(), d.clone());
                }
                if let Some(s) = &i.speech_text {
                    out.insert("ivr.speech_text".to_owned(), s.clone());
                }
                if let Some(intent) = &i.intent {
                    out.insert("ivr.intent".to_owned(), intent.clone());
                }
                if let Some(c) = i.confidence {
                    out.insert("ivr.confidence".to_owned(), c.to_string());
                }
                for (k, v) in &i.slots {
                    let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    out.insert(format!("ivr.slot.{k}"), text);
                }
            }
            Self::Queued(q) => {
                out.insert("queue".to_owned(), q.queue.clone());
            }
            Self::Offered(o) => {
                for (k, v) in &o.attributes {
                    let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    out.insert(format!("call.{k}"), text);
                }
            }
            _ => {}
        }
        out
    }
}

/// The gateway's outbound "connect agent" instruction to the telephony adapter, signed like inbound events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectAgent {
    /// Unique id of this instruction (the `webhook-id`).
    pub id: String,
    /// The bank tenant.
    pub tenant: String,
    /// The call to connect.
    pub call_id: String,
    /// The agent chosen by the router.
    pub agent_id: String,
    /// Where to ring the agent (SIP URI, extension), when the adapter does not know it.
    pub endpoint: Option<String>,
    /// When the decision was made, unix milliseconds.
    pub decided_at_ms: u64,
}

impl ConnectAgent {
    /// The JSON body, type `agent.connect`, in the same envelope style as inbound events.
    pub fn to_body(&self) -> String {
        let mut body = serde_json::json!({
            "specversion": SPEC_VERSION,
            "id": self.id,
            "type": "agent.connect",
            "tenant": self.tenant,
            "source": "omnigate",
            "call_id": self.call_id,
            "occurred_at": rfc3339_ms(self.decided_at_ms),
            "agent_id": self.agent_id,
        });
        if let Some(endpoint) = &self.endpoint {
            body["endpoint"] = Value::from(endpoint.as_str());
        }
        body.to_string()
    }
}

pub use crate::time::rfc3339_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{vectors, vstr};

    const LIMIT: usize = 64 * 1024;

    #[test]
    fn the_four_vector_events_parse_into_types() {
        let v = vectors();
        let events: Vec<CtiMessage> = v["cti_webhook_proposal"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| parse(vstr(e, &["raw_body"]).as_bytes(), LIMIT).unwrap())
            .collect();
        assert_eq!(events[0].envelope.id, "evt_01HF0000000000000000000001");
        assert_eq!(events[0].envelope.occurred_at_ms(), Some(1_700_000_000_000));
        let CallEvent::Offered(o) = &events[0].event else {
            panic!()
        };
        assert_eq!(
            (o.direction.as_str(), o.from.as_str(), o.trunk.as_deref()),
            ("inbound", "+8613800138000", Some("sip-trunk-1"))
        );
        assert!(
            events[0].envelope.fields.contains_key("channel"),
            "unknown fields are kept, not refused"
        );
        let CallEvent::IvrInput(i) = &events[1].event else {
            panic!()
        };
        assert_eq!(
            (i.digits.as_deref(), i.intent.as_deref(), i.confidence),
            (Some("2"), Some("refund"), Some(0.91))
        );
        let attrs = events[1].event.routing_attributes();
        assert_eq!(attrs["ivr.intent"], "refund");
        assert_eq!(attrs["ivr.digits"], "2");
        let CallEvent::Answered(a) = &events[2].event else {
            panic!()
        };
        assert_eq!(
            (a.answered_by(), a.agent_id.as_deref(), a.wait_ms),
            ("agent", Some("agent-0042"), Some(31_500))
        );
        assert_eq!(events[2].envelope.seq, 4);
        let CallEvent::Ended(e) = &events[3].event else {
            panic!()
        };
        assert_eq!(
            (e.hangup_by.as_str(), e.cause.as_str(), e.talk_ms),
            ("customer", "normal_clearing", Some(91_000))
        );
    }

    #[test]
    fn vector_content_type_is_json() {
        let v = vectors();
        for e in v["cti_webhook_proposal"]["events"].as_array().unwrap() {
            assert!(is_json_content_type(vstr(e, &["headers", "content-type"])));
        }
        assert!(is_json_content_type("application/json; charset=utf-8"));
        assert!(!is_json_content_type("text/plain"));
    }

    fn body(kind: &str, extra: &str) -> String {
        format!(
            r#"{{"specversion":"cti-webhook/1","id":"e1","type":"{kind}","tenant":"acme","source":"s","call_id":"c1","seq":3,"occurred_at":"2023-11-14T22:13:20.250Z"{extra}}}"#
        )
    }

    #[test]
    fn the_other_types_parse_and_unknown_types_are_accepted() {
        let p = |kind: &str, extra: &str| parse(body(kind, extra).as_bytes(), LIMIT).unwrap().event;
        assert!(
            matches!(p("call.ringing", r#","target":{"type":"agent","id":"a1"},"ring_timeout_ms":20000"#), CallEvent::Ringing(r) if r.target.id == "a1")
        );
        assert!(
            matches!(p("call.queued", r#","queue":"vip","position":2"#), CallEvent::Queued(q) if q.position == Some(2))
        );
        assert!(matches!(
            p("call.transferred", r#","kind":"blind","to":{"type":"external","number":"+8610"}"#),
            CallEvent::Transferred(t) if t.to.number.as_deref() == Some("+8610")
        ));
        assert!(matches!(p("call.held", ""), CallEvent::Held(_)));
        assert!(
            matches!(p("call.resumed", r#","agent_id":"a1""#), CallEvent::Resumed(h) if h.agent_id.is_some())
        );
        assert!(matches!(
            p("call.recording_available", r#","recording_id":"r1","url":"https://r","duration_ms":1000,"format":"wav""#),
            CallEvent::RecordingAvailable(r) if r.format == "wav"
        ));
        assert_eq!(
            p("call.whispered", r#","new":true"#),
            CallEvent::Unknown("call.whispered".into())
        );
        let env = parse(body("call.held", "").as_bytes(), LIMIT).unwrap().envelope;
        assert_eq!(env.occurred_at_ms(), Some(1_700_000_000_250));
    }

    #[test]
    fn invalid_bodies_are_400_or_413() {
        let bad = |b: &str| parse(b.as_bytes(), LIMIT).unwrap_err().http_status();
        assert_eq!(bad(&body("call.ivr_input", r#","menu":"main""#)), 400);
        assert_eq!(bad(&body("call.queued", "")), 400);
        assert_eq!(
            bad(&body("call.held", "").replace("cti-webhook/1", "cti-webhook/2")),
            400
        );
        assert_eq!(
            bad(&body("call.held", "").replace(r#""seq":3"#, r#""seq":0"#)),
            400
        );
        assert_eq!(bad("[]"), 400);
        assert_eq!(
            parse(body("call.held", "").as_bytes(), 10)
                .unwrap_err()
                .http_status(),
            413
        );
    }

    #[test]
    fn connect_agent_body_is_an_envelope() {
        let c = ConnectAgent {
            id: "cmd_1".into(),
            tenant: "acme".into(),
            call_id: "call_7f3c".into(),
            agent_id: "agent-0042".into(),
            endpoint: Some("sip:0042@pbx".into()),
            decided_at_ms: 1_700_000_042_007,
        };
        let v: Value = serde_json::from_str(&c.to_body()).unwrap();
        assert_eq!(v["type"], "agent.connect");
        assert_eq!(v["occurred_at"], "2023-11-14T22:14:02.007Z");
        assert_eq!(v["endpoint"], "sip:0042@pbx");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }
}
