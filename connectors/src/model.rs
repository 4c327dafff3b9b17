//! The normalized message model (PROTOCOLS.md §5) shared by every channel.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct InvalidId {
    /// Which identifier.
    pub kind: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl $name {
            /// The prefix every generated id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate() -> Self {
                let mut buffer = uuid::Uuid::encode_buffer();
                Self([$prefix, uuid::Uuid::new_v4().simple().encode_lower(&mut buffer)].concat())
            }

            /// Checks an id received from outside: 1..=64 characters of `[A-Za-z0-9_-]`.
            ///
            /// # Errors
            /// [`InvalidId`] when it is empty, too long or has other characters.
            pub fn parse(raw: &str) -> Result<Self, InvalidId> {
                check_id(raw, $kind)?;
                Ok(Self(raw.to_owned()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(raw: String) -> Result<Self, InvalidId> {
                check_id(&raw, $kind)?;
                Ok(Self(raw))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

/// The bytes an id may hold (A-Z, a-z, 0-9, '_' and '-'), as a table: ids from frames are checked on every
/// relayed message, and one lookup per byte replaces up to five comparisons.
const ID_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        byte += 1;
    }
    table
};

fn check_id(raw: &str, kind: &'static str) -> Result<(), InvalidId> {
    if raw.is_empty() {
        return Err(InvalidId {
            kind,
            reason: "empty",
        });
    }
    if raw.len() > 64 {
        return Err(InvalidId {
            kind,
            reason: "longer than 64 characters",
        });
    }
    if !raw.bytes().all(|b| ID_BYTES[usize::from(b)]) {
        return Err(InvalidId {
            kind,
            reason: "only A-Z, a-z, 0-9, '_' and '-' are allowed",
        });
    }
    Ok(())
}

string_id!(
    /// One customer, across every channel and identity.
    CustomerId, "u_", "customer id"
);
string_id!(
    /// One conversation: an ordered event log between a customer and the contact center.
    ConversationId, "c_", "conversation id"
);
string_id!(
    /// One message within a conversation.
    MessageId, "m_", "message id"
);

/// The channel a message came in on or goes out through (PROTOCOLS.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Web chat widget (chat protocol v1).
    Web,
    /// Mobile app SDK (chat protocol v1 with app credentials).
    App,
    /// WeChat Official Account.
    WechatOa,
    /// WeChat Customer Service (WeCom kf).
    WechatKf,
    /// Twilio SMS.
    SmsTwilio,
    /// Aliyun SMS uplink.
    SmsAliyun,
    /// Tencent Cloud SMS uplink.
    SmsTencent,
    /// A phone call through the CTI webhook.
    Voice,
}

/// The media kind an agent's capacity is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Media {
    /// Web chat.
    Web,
    /// In-app chat.
    App,
    /// Both WeChat channels.
    Wechat,
    /// Every SMS channel.
    Sms,
    /// Telephony.
    Voice,
}

impl Channel {
    /// The wire name (`wechat_oa`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::App => "app",
            Self::WechatOa => "wechat_oa",
            Self::WechatKf => "wechat_kf",
            Self::SmsTwilio => "sms_twilio",
            Self::SmsAliyun => "sms_aliyun",
            Self::SmsTencent => "sms_tencent",
            Self::Voice => "voice",
        }
    }

    /// The media kind whose capacity this channel uses.
    pub fn media(self) -> Media {
        match self {
            Self::Web => Media::Web,
            Self::App => Media::App,
            Self::WechatOa | Self::WechatKf => Media::Wechat,
            Self::SmsTwilio | Self::SmsAliyun | Self::SmsTencent => Media::Sms,
            Self::Voice => Media::Voice,
        }
    }
}

impl Media {
    /// The name used in agent capacity configuration (`wechat`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::App => "app",
            Self::Wechat => "wechat",
            Self::Sms => "sms",
            Self::Voice => "voice",
        }
    }
}

/// The kind of an external identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// A web chat visitor id issued by the gateway.
    WebVisitor,
    /// The bank's own user id, from a signed app identity.
    AppUser,
    /// A WeChat OpenID (per official account).
    WechatOpenId,
    /// A WeChat UnionID (across the bank's accounts).
    WechatUnionId,
    /// A WeCom external user id.
    WecomExternalUser,
    /// A phone number in E.164.
    Phone,
}

/// An identity on one channel, e.g. an OpenID or an E.164 number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    /// What kind of identifier `value` is.
    pub kind: IdentityKind,
    /// The identifier, as the provider spells it.
    pub value: String,
    /// Whether the identity was proven (signed by the bank, or checked by the provider).
    pub verified: bool,
}

/// A message's content, as every channel can express it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// An image, voice note, video or file held by the provider or our upload store.
    Media {
        /// `image`, `voice`, `video` or `file`.
        kind: String,
        /// Provider reference (MediaId, MediaUrl) or upload id.
        provider_ref: String,
        /// MIME type when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mime: Option<String>,
    },
    /// A shared location.
    Location {
        /// Latitude in degrees.
        latitude: f64,
        /// Longitude in degrees.
        longitude: f64,
        /// Label shown by the provider.
        #[serde(default)]
        label: String,
    },
    /// A shared link.
    Link {
        /// Title.
        title: String,
        /// Target URL.
        url: String,
    },
    /// A channel event (subscribe, menu click, call state).
    Event {
        /// Event name, e.g. `subscribe`, `CLICK`.
        name: String,
        /// Event key or detail.
        #[serde(default)]
        detail: String,
    },
}

/// How and until when the contact center may answer on the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ReplyCapability {
    /// Any time (web, app, SMS).
    Free,
    /// Within a window after the customer's last message (WeChat's 48 hours), with a message quota.
    Window {
        /// Unix milliseconds when the window closes.
        expires_at_ms: u64,
        /// Messages still allowed in this window.
        remaining: u32,
    },
}

/// One inbound message from any channel, as put on the session bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// The channel it came in on.
    pub channel: Channel,
    /// Our account on the channel (official account id, phone number, open_kfid, widget key).
    pub channel_account: String,
    /// Who sent it.
    pub from: Identity,
    /// Other identities the provider proved to be the same person as `from` (a WeChat UnionID beside the
    /// OpenID); the gateway links them (`ContextStore::resolve_verified`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proven_with: Vec<Identity>,
    /// The provider's id of the message (MsgId, MessageSid, client_msg_id).
    pub external_message_id: String,
    /// Channel- and account-scoped key that is equal for every retry of this message.
    pub dedupe_key: String,
    /// Unix milliseconds when we received it.
    pub received_at_ms: u64,
    /// Unix milliseconds the provider stamped, when it did.
    pub provider_time_ms: Option<u64>,
    /// What was said.
    pub content: Content,
    /// How we may answer.
    pub reply_capability: ReplyCapability,
    /// The original payload, kept for audit.
    pub raw: String,
}

/// One message an agent sends out through a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundMessage {
    /// Conversation it belongs to.
    pub conversation_id: ConversationId,
    /// Our id of the message (idempotency key towards providers that take one).
    pub message_id: MessageId,
    /// The channel to send through.
    pub channel: Channel,
    /// Our account on that channel.
    pub channel_account: String,
    /// The recipient.
    pub to: Identity,
    /// What to send.
    pub content: Content,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_at_the_edge() {
        assert!(ConversationId::parse("c_0123abc").is_ok());
        assert!(ConversationId::parse("").is_err());
        assert!(ConversationId::parse("c 1").is_err());
        assert!(ConversationId::parse(&"x".repeat(65)).is_err());
        let generated = ConversationId::generate();
        assert!(generated.as_str().starts_with(ConversationId::PREFIX));
        assert_eq!(ConversationId::parse(generated.as_str()), Ok(generated.clone()));
        let hex = &generated.as_str()[ConversationId::PREFIX.len()..];
        assert_eq!(hex.len(), 32);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{hex}"
        );
        assert_ne!(ConversationId::generate(), generated);
    }

    #[test]
    fn the_id_byte_table_allows_exactly_letters_digits_underscore_and_hyphen() {
        for b in 0..=u8::MAX {
            let allowed = b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
            assert_eq!(ID_BYTES[usize::from(b)], allowed, "{b:#x}");
        }
    }

    #[test]
    fn ids_deserialize_through_the_check() {
        assert!(serde_json::from_str::<MessageId>("\"m_ok\"").is_ok());
        assert!(serde_json::from_str::<MessageId>("\"m bad\"").is_err());
        assert_eq!(
            serde_json::to_string(&MessageId::parse("m_ok").unwrap()).unwrap(),
            "\"m_ok\""
        );
    }

    #[test]
    fn channels_map_to_capacity_media() {
        assert_eq!(Channel::WechatKf.media(), Media::Wechat);
        assert_eq!(Channel::SmsAliyun.media(), Media::Sms);
        assert_eq!(Channel::Voice.media().as_str(), "voice");
    }
}
