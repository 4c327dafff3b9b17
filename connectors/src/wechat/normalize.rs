//! Pure conversion of a [`PushMessage`] into the session bus's [`InboundMessage`] (PROTOCOLS.md §5).

use crate::model::{Channel, Content, Identity, IdentityKind, InboundMessage};
use crate::wechat::window::WindowPolicy;
use crate::wechat::wire::{PushKind, PushMessage, WechatEvent};

/// The channel-scoped dedupe key: `wechat_oa:<account>:msg:<MsgId>` for messages,
/// `wechat_oa:<account>:event:<FromUserName>|<CreateTime>|<Event>|<EventKey>` for events and anything without a
/// `MsgId` (identical across WeChat's retries, distinct for two events in the same second).
pub fn dedupe_key(msg: &PushMessage) -> String {
    let account = &msg.to_user_name;
    if let Some(id) = msg.msg_id() {
        return format!("wechat_oa:{account}:msg:{id}");
    }
    let (name, key) = match &msg.kind {
        PushKind::Event(e) => (e.name(), e.key()),
        PushKind::Unsupported { msg_type, .. } => (msg_type.as_str(), ""),
        // Every other kind carries a MsgId and returned above.
        _ => ("", ""),
    };
    format!(
        "wechat_oa:{account}:event:{}|{}|{name}|{key}",
        msg.from_user_name, msg.create_time
    )
}

/// What an agent sees of the push.
pub fn content(kind: &PushKind) -> Content {
    match kind {
        PushKind::Text { content, .. } => Content::Text {
            text: content.clone(),
        },
        PushKind::Image { media_id, .. } => Content::Media {
            kind: "image".into(),
            provider_ref: media_id.clone(),
            mime: None,
        },
        PushKind::Voice { media_id, format, .. } => Content::Media {
            kind: "voice".into(),
            provider_ref: media_id.clone(),
            mime: voice_mime(format),
        },
        PushKind::Video { media_id, .. } => Content::Media {
            kind: "video".into(),
            provider_ref: media_id.clone(),
            mime: Some("video/mp4".into()),
        },
        PushKind::Location {
            latitude,
            longitude,
            label,
            ..
        } => Content::Location {
            latitude: *latitude,
            longitude: *longitude,
            label: label.clone(),
        },
        PushKind::Link { title, url, .. } => Content::Link {
            title: title.clone(),
            url: url.clone(),
        },
        PushKind::Event(event) => Content::Event {
            name: event.name().to_owned(),
            detail: event.key().to_owned(),
        },
        PushKind::Unsupported { msg_type, .. } => Content::Event {
            name: "unsupported_message".into(),
            detail: msg_type.clone(),
        },
    }
}

fn voice_mime(format: &str) -> Option<String> {
    match format.to_ascii_lowercase().as_str() {
        "amr" => Some("audio/amr".into()),
        "speex" => Some("audio/speex".into()),
        "mp3" => Some("audio/mpeg".into()),
        _ => None,
    }
}

/// Normalizes a verified push. `raw` is the (decrypted) payload kept for audit, `received_at_ms` our clock.
pub fn to_inbound(
    msg: &PushMessage,
    raw: &str,
    received_at_ms: u64,
    policy: &WindowPolicy,
) -> InboundMessage {
    let provider_time_ms = u64::try_from(msg.create_time)
        .ok()
        .map(|s| s.saturating_mul(1000));
    let external_message_id = match (&msg.kind, msg.msg_id()) {
        (_, Some(id)) => id.to_string(),
        (PushKind::Event(e), None) => format!("{}|{}|{}", msg.create_time, e.name(), e.key()),
        (_, None) => msg.create_time.to_string(),
    };
    let window_start_ms = provider_time_ms.unwrap_or(received_at_ms);
    InboundMessage {
        channel: Channel::WechatOa,
        channel_account: msg.to_user_name.clone(),
        from: Identity {
            kind: IdentityKind::WechatOpenId,
            value: msg.from_user_name.clone(),
            verified: true,
        },
        proven_with: msg
            .union_id
            .iter()
            .map(|union_id| Identity {
                kind: IdentityKind::WechatUnionId,
                value: union_id.clone(),
                verified: true,
            })
            .collect(),
        external_message_id,
        dedupe_key: dedupe_key(msg),
        received_at_ms,
        provider_time_ms,
        content: content(&msg.kind),
        reply_capability: policy.grant(grant_kind(&msg.kind), window_start_ms),
        raw: raw.to_owned(),
    }
}

/// Which customer-service window a push opens (PROTOCOLS.md §1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// A user message: the 48 h window with the full quota.
    Message,
    /// A follow, menu click or QR scan: a short window with a small quota.
    Interaction,
    /// Nothing (unfollow, VIEW, location reports, unknown events).
    None,
}

/// The window a push grants.
pub fn grant_kind(kind: &PushKind) -> Grant {
    match kind {
        PushKind::Event(
            WechatEvent::Subscribe { .. } | WechatEvent::Click { .. } | WechatEvent::Scan { .. },
        ) => Grant::Interaction,
        PushKind::Event(_) => Grant::None,
        _ => Grant::Message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReplyCapability;
    use crate::wechat::wire::Fields;
    use crate::xml::cdata;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn text_round_trips_and_keys_follow_msg_id(text in "[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\u{fffe}\\u{ffff}]{0,200}", id in any::<u64>(), ts in 0i64..4_000_000_000) {
            let xml = format!(
                "<xml><ToUserName>gh_a</ToUserName><FromUserName>o1</FromUserName><CreateTime>{}</CreateTime><MsgType>text</MsgType><Content>{}</Content><MsgId>{}</MsgId></xml>",
                ts, cdata(&text), id
            );
            let m = PushMessage::from_fields(&Fields::parse(xml.as_bytes(), 1 << 20).unwrap()).unwrap();
            let inbound = to_inbound(&m, &xml, 0, &WindowPolicy::default());
            prop_assert_eq!(inbound.content, Content::Text { text });
            prop_assert_eq!(inbound.dedupe_key, format!("wechat_oa:gh_a:msg:{}", id));
            prop_assert_eq!(inbound.provider_time_ms, Some(ts as u64 * 1000));
        }
    }

    fn msg(inner: &str) -> PushMessage {
        let xml = format!(
            "<xml><ToUserName>gh_0123456789ab</ToUserName><FromUserName>oUser</FromUserName>\
             <CreateTime>1700000000</CreateTime>{inner}</xml>"
        );
        PushMessage::from_fields(&Fields::parse(xml.as_bytes(), 4096).unwrap()).unwrap()
    }

    #[test]
    fn a_union_id_in_the_push_is_proven_with_the_open_id() {
        let policy = WindowPolicy::default();
        let with =
            msg("<MsgType>text</MsgType><Content>x</Content><MsgId>1</MsgId><UnionId>oU_union</UnionId>");
        let inbound = to_inbound(&with, "", 0, &policy);
        assert_eq!(
            inbound.proven_with,
            vec![Identity {
                kind: IdentityKind::WechatUnionId,
                value: "oU_union".to_owned(),
                verified: true,
            }]
        );
        let without = msg("<MsgType>text</MsgType><Content>x</Content><MsgId>1</MsgId>");
        assert!(to_inbound(&without, "", 0, &policy).proven_with.is_empty());
    }

    #[test]
    fn message_dedupe_key_uses_msg_id_with_channel_and_account() {
        let m = msg("<MsgType>text</MsgType><Content>x</Content><MsgId>24300000000000001</MsgId>");
        assert_eq!(dedupe_key(&m), "wechat_oa:gh_0123456789ab:msg:24300000000000001");
    }

    #[test]
    fn event_dedupe_keys_separate_two_events_in_one_second() {
        let sub = msg("<MsgType>event</MsgType><Event>subscribe</Event><EventKey>qrscene_9</EventKey>");
        let loc = msg(
            "<MsgType>event</MsgType><Event>LOCATION</Event><Latitude>1</Latitude><Longitude>2</Longitude>",
        );
        assert_eq!(
            dedupe_key(&sub),
            "wechat_oa:gh_0123456789ab:event:oUser|1700000000|subscribe|qrscene_9"
        );
        assert_eq!(
            dedupe_key(&loc),
            "wechat_oa:gh_0123456789ab:event:oUser|1700000000|LOCATION|"
        );
        assert_ne!(dedupe_key(&sub), dedupe_key(&loc));
        let click = msg("<MsgType>event</MsgType><Event>CLICK</Event><EventKey>K</EventKey>");
        assert_eq!(dedupe_key(&click), dedupe_key(&click.clone()));
    }

    #[test]
    fn text_message_normalizes_with_a_48h_window() {
        let m = msg("<MsgType>text</MsgType><Content>退款</Content><MsgId>1</MsgId>");
        let inbound = to_inbound(&m, "<raw/>", 1_700_000_000_500, &WindowPolicy::default());
        assert_eq!(inbound.channel, Channel::WechatOa);
        assert_eq!(inbound.channel_account, "gh_0123456789ab");
        assert_eq!(inbound.from.value, "oUser");
        assert_eq!(inbound.external_message_id, "1");
        assert_eq!(inbound.provider_time_ms, Some(1_700_000_000_000));
        assert_eq!(
            inbound.content,
            Content::Text {
                text: "退款".into()
            }
        );
        assert_eq!(
            inbound.reply_capability,
            ReplyCapability::Window {
                expires_at_ms: 1_700_000_000_000 + 48 * 3_600_000,
                remaining: 5
            }
        );
        assert_eq!(inbound.raw, "<raw/>");
    }

    #[test]
    fn events_and_media_normalize() {
        let policy = WindowPolicy::default();
        let click = to_inbound(
            &msg("<MsgType>event</MsgType><Event>CLICK</Event><EventKey>K</EventKey>"),
            "",
            0,
            &policy,
        );
        assert_eq!(
            click.content,
            Content::Event {
                name: "CLICK".into(),
                detail: "K".into()
            }
        );
        assert_eq!(
            click.reply_capability,
            ReplyCapability::Window {
                expires_at_ms: 1_700_000_060_000,
                remaining: 3
            }
        );
        let unsub = to_inbound(
            &msg("<MsgType>event</MsgType><Event>unsubscribe</Event>"),
            "",
            0,
            &policy,
        );
        assert_eq!(
            unsub.reply_capability,
            ReplyCapability::Window {
                expires_at_ms: 1_700_000_000_000,
                remaining: 0
            }
        );
        let view = to_inbound(
            &msg("<MsgType>event</MsgType><Event>VIEW</Event><EventKey>https://b</EventKey>"),
            "",
            0,
            &policy,
        );
        assert_eq!(
            view.content,
            Content::Event {
                name: "VIEW".into(),
                detail: "https://b".into()
            }
        );
        let voice = to_inbound(
            &msg("<MsgType>voice</MsgType><MediaId>V</MediaId><Format>amr</Format><MsgId>2</MsgId>"),
            "",
            0,
            &policy,
        );
        assert_eq!(
            voice.content,
            Content::Media {
                kind: "voice".into(),
                provider_ref: "V".into(),
                mime: Some("audio/amr".into())
            }
        );
        let link = to_inbound(
            &msg("<MsgType>link</MsgType><Title>T</Title><Url>https://l</Url><MsgId>3</MsgId>"),
            "",
            0,
            &policy,
        );
        assert_eq!(
            link.content,
            Content::Link {
                title: "T".into(),
                url: "https://l".into()
            }
        );
        let loc = to_inbound(
            &msg("<MsgType>location</MsgType><Location_X>1.5</Location_X><Location_Y>2.5</Location_Y><Label>L</Label><MsgId>4</MsgId>"),
            "",
            0,
            &policy,
        );
        assert_eq!(
            loc.content,
            Content::Location {
                latitude: 1.5,
                longitude: 2.5,
                label: "L".into()
            }
        );
        let image = to_inbound(
            &msg("<MsgType>image</MsgType><MediaId>I</MediaId><MsgId>5</MsgId>"),
            "",
            0,
            &policy,
        );
        assert!(matches!(image.content, Content::Media { ref kind, .. } if kind == "image"));
        let video = to_inbound(
            &msg("<MsgType>video</MsgType><MediaId>M</MediaId><MsgId>6</MsgId>"),
            "",
            0,
            &policy,
        );
        assert!(matches!(video.content, Content::Media { ref kind, .. } if kind == "video"));
    }
}
