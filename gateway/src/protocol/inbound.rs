use std::collections::BTreeMap;

use omnigate_connectors::model::{Content, IdentityKind};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::channels::ViaRequest;

/// Why a client frame was refused. Each maps to an `error` frame `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not UTF-8 JSON of the envelope shape.
    #[error("frame is not valid json: {0}")]
    InvalidJson(String),
    /// The `op` is not one this endpoint knows.
    #[error("unknown op {0:?}")]
    UnknownOp(String),
    /// The `d` payload does not fit the op.
    #[error("invalid {op} frame: {reason}")]
    InvalidFrame {
        /// The op.
        op: String,
        /// What is wrong.
        reason: String,
    },
}

impl FrameError {
    /// The `code` of the error frame.
    pub fn code(&self) -> &'static str {
        match self {
            FrameError::InvalidJson(_) => "invalid_json",
            FrameError::UnknownOp(_) => "unknown_op",
            FrameError::InvalidFrame { .. } => "invalid_frame",
        }
    }
}

/// A parsed client frame: its op and the client's correlation `ref`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    /// Echoed on the reply.
    pub reference: Option<String>,
    /// What the client asks.
    pub op: ClientOp,
}

/// Resume state sent in `hello`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    /// The session being resumed; a live connection on it is closed with 4009.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Conversation id → last `seq` received.
    #[serde(default)]
    pub cursors: BTreeMap<String, u64>,
}

/// Where an agent transfers a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTo {
    /// Another agent.
    Agent(String),
    /// A queue.
    Queue(String),
}

/// Every op a client may send.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientOp {
    /// First frame: authenticate, optionally resume.
    Hello {
        /// The token.
        token: String,
        /// Client name/version, for logs.
        client: String,
        /// Resume state.
        resume: Resume,
    },
    /// Cumulative delivery ack.
    Ack {
        /// Conversation.
        conversation_id: String,
        /// Everything up to this `seq` was received.
        seq: u64,
    },
    /// Send a message (idempotent on `client_msg_id`).
    MessageSend {
        /// Conversation; customers may omit it to continue their open one or start one.
        conversation_id: Option<String>,
        /// Idempotency key.
        client_msg_id: String,
        /// Content.
        content: Content,
        /// Agents: the channel to send the reply through instead of the conversation's own.
        via: Option<ViaRequest>,
    },
    /// Agents: an internal note.
    NoteSend {
        /// Conversation.
        conversation_id: String,
        /// Idempotency key.
        client_msg_id: String,
        /// The note.
        text: String,
    },
    /// Typing indicator (ephemeral).
    Typing {
        /// Conversation.
        conversation_id: String,
        /// `start` or `stop`.
        state: String,
    },
    /// Read watermark.
    Read {
        /// Conversation.
        conversation_id: String,
        /// Read up to this `seq` (in the sender's view).
        up_to_seq: u64,
    },
    /// Heartbeat.
    Ping,
    /// Agents: how many SMS parts a draft reply takes (GSM-7 or UCS-2), before sending it.
    SmsSegments {
        /// The draft.
        text: String,
    },
    /// Agents: set presence.
    PresenceSet {
        /// `available`, `away` or `offline`.
        state: String,
    },
    /// Agents: accept an offer.
    OfferAccept {
        /// Conversation.
        conversation_id: String,
    },
    /// Agents: reject an offer.
    OfferReject {
        /// Conversation.
        conversation_id: String,
    },
    /// Agents: wrap-up of a closed conversation is done; its capacity slot is free.
    WrapUpDone {
        /// Conversation.
        conversation_id: String,
    },
    /// Agents: close with a disposition code.
    Close {
        /// Conversation.
        conversation_id: String,
        /// Disposition code.
        disposition: String,
    },
    /// Agents: link an identity to the customer of a conversation they are offered or assigned.
    CustomerLink {
        /// Conversation.
        conversation_id: String,
        /// The identity's kind.
        kind: IdentityKind,
        /// The identity's value.
        value: String,
        /// Why (required, recorded in the customer's link history).
        reason: String,
    },
    /// Agents: unlink an identity from that customer (it gets a customer of its own).
    CustomerUnlink {
        /// Conversation.
        conversation_id: String,
        /// The identity's kind.
        kind: IdentityKind,
        /// The identity's value.
        value: String,
        /// Why (required, recorded in the customer's link history).
        reason: String,
    },
    /// Agents: transfer.
    Transfer {
        /// Conversation.
        conversation_id: String,
        /// Target.
        to: TransferTo,
        /// Reason, recorded in the log.
        reason: String,
    },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    op: String,
    #[serde(default, rename = "ref")]
    reference: Option<String>,
    #[serde(default, borrow)]
    d: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HelloD {
    token: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    resume: Option<Resume>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckD {
    conversation_id: String,
    seq: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendD {
    #[serde(default)]
    conversation_id: Option<String>,
    client_msg_id: String,
    content: Content,
    #[serde(default)]
    via: Option<ViaD>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ViaD {
    channel: String,
    #[serde(default)]
    account: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentsD {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteD {
    conversation_id: String,
    client_msg_id: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypingD {
    conversation_id: String,
    state: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadD {
    conversation_id: String,
    up_to_seq: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceD {
    state: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConversationD {
    conversation_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseD {
    conversation_id: String,
    #[serde(default)]
    disposition: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityD {
    kind: IdentityKind,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkD {
    conversation_id: String,
    identity: IdentityD,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferD {
    conversation_id: String,
    #[serde(default)]
    to_agent: Option<String>,
    #[serde(default)]
    to_queue: Option<String>,
    #[serde(default)]
    reason: String,
}

fn payload<'a, T: Deserialize<'a>>(op: &str, d: Option<&'a RawValue>) -> Result<T, FrameError> {
    let raw = d.map_or("null", RawValue::get);
    serde_json::from_str(raw).map_err(|e| FrameError::InvalidFrame {
        op: op.to_owned(),
        reason: e.to_string(),
    })
}

/// Parses one text frame. `agent` selects the agent endpoint's op set (customers cannot send agent ops).
///
/// # Errors
/// [`FrameError`] naming what is wrong.
pub fn parse_frame(text: &str, agent: bool) -> Result<ClientFrame, FrameError> {
    let envelope: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| FrameError::InvalidJson(e.to_string()))?;
    let op = envelope.op.as_str();
    let d = envelope.d;
    if envelope.reference.as_ref().is_some_and(|r| r.len() > 64) {
        return Err(FrameError::InvalidFrame {
            op: op.to_owned(),
            reason: "ref is longer than 64 bytes".to_owned(),
        });
    }
    let parsed = match op {
        "hello" => {
            let h: HelloD = payload(op, d)?;
            ClientOp::Hello {
                token: h.token,
                client: h.client,
                resume: h.resume.unwrap_or_default(),
            }
        }
        "ack" => {
            let a: AckD = payload(op, d)?;
            ClientOp::Ack {
                conversation_id: a.conversation_id,
                seq: a.seq,
            }
        }
        "message.send" => {
            let s: SendD = payload(op, d)?;
            if agent && s.conversation_id.is_none() {
                return Err(FrameError::InvalidFrame {
                    op: op.to_owned(),
                    reason: "conversation_id is required".to_owned(),
                });
            }
            if !agent && s.via.is_some() {
                return Err(FrameError::InvalidFrame {
                    op: op.to_owned(),
                    reason: "via is for agents only".to_owned(),
                });
            }
            ClientOp::MessageSend {
                conversation_id: s.conversation_id,
                client_msg_id: s.client_msg_id,
                content: s.content,
                via: s.via.map(|v| ViaRequest {
                    channel: v.channel,
                    account: v.account,
                }),
            }
        }
        "typing" => {
            let t: TypingD = payload(op, d)?;
            if !matches!(t.state.as_str(), "start" | "stop") {
                return Err(FrameError::InvalidFrame {
                    op: op.to_owned(),
                    reason: "state must be start or stop".to_owned(),
                });
            }
            ClientOp::Typing {
                conversation_id: t.conversation_id,
                state: t.state,
            }
        }
        "read" => {
            let r: ReadD = payload(op, d)?;
            ClientOp::Read {
                conversation_id: r.conversation_id,
                up_to_seq: r.up_to_seq,
            }
        }
        "ping" => ClientOp::Ping,
        _ if !agent => return Err(FrameError::UnknownOp(truncate(op))),
        "note.send" => {
            let n: NoteD = payload(op, d)?;
            ClientOp::NoteSend {
                conversation_id: n.conversation_id,
                client_msg_id: n.client_msg_id,
                text: n.text,
            }
        }
        "sms.segments" => ClientOp::SmsSegments {
            text: payload::<SegmentsD>(op, d)?.text,
        },
        "presence.set" => {
            let p: PresenceD = payload(op, d)?;
            ClientOp::PresenceSet { state: p.state }
        }
        "offer.accept" => ClientOp::OfferAccept {
            conversation_id: payload::<ConversationD>(op, d)?.conversation_id,
        },
        "offer.reject" => ClientOp::OfferReject {
            conversation_id: payload::<ConversationD>(op, d)?.conversation_id,
        },
        "wrapup.done" => ClientOp::WrapUpDone {
            conversation_id: payload::<ConversationD>(op, d)?.conversation_id,
        },
        "conversation.close" => {
            let c: CloseD = payload(op, d)?;
            ClientOp::Close {
                conversation_id: c.conversation_id,
                disposition: c.disposition,
            }
        }
        "conversation.transfer" => {
            let t: TransferD = payload(op, d)?;
            let to = match (t.to_agent, t.to_queue) {
                (Some(agent), None) => TransferTo::Agent(agent),
                (None, Some(queue)) => TransferTo::Queue(queue),
                _ => {
                    return Err(FrameError::InvalidFrame {
                        op: op.to_owned(),
                        reason: "exactly one of to_agent and to_queue is required".to_owned(),
                    })
                }
            };
            ClientOp::Transfer {
                conversation_id: t.conversation_id,
                to,
                reason: t.reason,
            }
        }
        "customer.link" | "customer.unlink" => {
            let l: LinkD = payload(op, d)?;
            if op == "customer.link" {
                ClientOp::CustomerLink {
                    conversation_id: l.conversation_id,
                    kind: l.identity.kind,
                    value: l.identity.value,
                    reason: l.reason,
                }
            } else {
                ClientOp::CustomerUnlink {
                    conversation_id: l.conversation_id,
                    kind: l.identity.kind,
                    value: l.identity.value,
                    reason: l.reason,
                }
            }
        }
        _ => return Err(FrameError::UnknownOp(truncate(op))),
    };
    Ok(ClientFrame {
        reference: envelope.reference,
        op: parsed,
    })
}

fn truncate(op: &str) -> String {
    op.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_links_are_agent_ops_with_a_typed_identity() {
        let link = r#"{"op":"customer.link","ref":"r9","d":{"conversation_id":"c_1","identity":{"kind":"phone","value":"+8613800138000"},"reason":"stated"}}"#;
        let frame = parse_frame(link, true).unwrap();
        let ClientOp::CustomerLink {
            kind, value, reason, ..
        } = frame.op
        else {
            panic!("not a link")
        };
        assert_eq!(
            (kind, value.as_str(), reason.as_str()),
            (IdentityKind::Phone, "+8613800138000", "stated")
        );
        let unlink = link.replace("customer.link", "customer.unlink");
        assert!(matches!(
            parse_frame(&unlink, true).unwrap().op,
            ClientOp::CustomerUnlink { .. }
        ));
        assert!(
            matches!(parse_frame(link, false), Err(FrameError::UnknownOp(_))),
            "customers cannot link"
        );
        let bad_kind = link.replace("\"phone\"", "\"passport\"");
        assert!(matches!(
            parse_frame(&bad_kind, true),
            Err(FrameError::InvalidFrame { .. })
        ));
    }

    #[test]
    fn parses_the_protocol_examples() {
        let hello = r#"{"op":"hello","d":{"token":"eyJ","client":"web/1.4.0","resume":{"session_id":"s_9","cursors":{"conv_1":41}}}}"#;
        let frame = parse_frame(hello, false).unwrap();
        let ClientOp::Hello { resume, .. } = frame.op else {
            panic!("not hello")
        };
        assert_eq!(resume.cursors.get("conv_1"), Some(&41));
        let send = r#"{"op":"message.send","ref":"r1","d":{"conversation_id":"conv_1","client_msg_id":"01HF","content":{"type":"text","text":"where is my order?"}}}"#;
        let frame = parse_frame(send, false).unwrap();
        assert_eq!(frame.reference.as_deref(), Some("r1"));
        assert!(matches!(
            frame.op,
            ClientOp::MessageSend {
                content: Content::Text { .. },
                ..
            }
        ));
        assert_eq!(parse_frame(r#"{"op":"ping"}"#, false).unwrap().op, ClientOp::Ping);
    }

    #[test]
    fn only_agents_pick_a_reply_channel() {
        let send = r#"{"op":"message.send","d":{"conversation_id":"c_1","client_msg_id":"k","content":{"type":"text","text":"t"},"via":{"channel":"sms_twilio","account":"us"}}}"#;
        match parse_frame(send, true).unwrap().op {
            ClientOp::MessageSend { via, .. } => assert_eq!(
                via,
                Some(ViaRequest {
                    channel: "sms_twilio".to_owned(),
                    account: Some("us".to_owned()),
                })
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_frame(send, false).unwrap_err().code(), "invalid_frame");
        let extra = send.replace(r#""account":"us""#, r#""to":"+8613800138000""#);
        assert_eq!(parse_frame(&extra, true).unwrap_err().code(), "invalid_frame");
    }

    #[test]
    fn refuses_bad_frames_with_their_codes() {
        assert_eq!(
            parse_frame("{not json", false).unwrap_err().code(),
            "invalid_json"
        );
        assert_eq!(
            parse_frame(r#"{"op":"fly"}"#, false).unwrap_err().code(),
            "unknown_op"
        );
        assert_eq!(
            parse_frame(r#"{"op":"offer.accept","d":{"conversation_id":"c"}}"#, false)
                .unwrap_err()
                .code(),
            "unknown_op"
        );
        assert_eq!(
            parse_frame(r#"{"op":"ack","d":{"seq":"x"}}"#, false)
                .unwrap_err()
                .code(),
            "invalid_frame"
        );
        assert_eq!(
            parse_frame(
                r#"{"op":"conversation.transfer","d":{"conversation_id":"c"}}"#,
                true
            )
            .unwrap_err()
            .code(),
            "invalid_frame"
        );
        assert_eq!(
            parse_frame(
                r#"{"op":"message.send","d":{"client_msg_id":"x","content":{"type":"text","text":"t"}}}"#,
                true
            )
            .unwrap_err()
            .code(),
            "invalid_frame"
        );
    }

    #[test]
    fn only_agents_count_sms_segments() {
        let frame = r#"{"op":"sms.segments","ref":"s1","d":{"text":"hello"}}"#;
        assert!(matches!(
            parse_frame(frame, true).unwrap().op,
            ClientOp::SmsSegments { ref text } if text == "hello"
        ));
        assert!(matches!(parse_frame(frame, false), Err(FrameError::UnknownOp(_))));
        assert!(parse_frame(r#"{"op":"sms.segments","d":{}}"#, true).is_err());
    }
}
