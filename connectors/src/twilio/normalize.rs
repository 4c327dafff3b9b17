//! Pure conversion of an inbound Twilio SMS/MMS into [`InboundMessage`]s.

use crate::model::{Channel, Content, Identity, IdentityKind, InboundMessage, ReplyCapability};
use crate::twilio::wire::InboundSms;

/// `sms_twilio:<To>:msg:<MessageSid>`.
pub fn dedupe_key(sms: &InboundSms) -> String {
    format!("sms_twilio:{}:msg:{}", sms.to, sms.message_sid)
}

/// Normalizes one webhook. The model carries one content per message, so an MMS becomes the text (when present)
/// followed by one message per media item; the first keeps the bare [`dedupe_key`], media items append
/// `:media:<i>`. Retries give the same keys, so the set is deduplicated as a whole.
///
/// The sender is not `verified`: SMS sender ids can be spoofed, so an E.164 `From` alone does not prove who wrote.
pub fn to_inbound(sms: &InboundSms, raw: &str, received_at_ms: u64) -> Vec<InboundMessage> {
    let base = dedupe_key(sms);
    let make = |dedupe_key: String, external_message_id: String, content: Content| InboundMessage {
        channel: Channel::SmsTwilio,
        channel_account: sms.to.clone(),
        from: Identity {
            kind: IdentityKind::Phone,
            value: sms.from.clone(),
            verified: false,
        },
        proven_with: Vec::new(),
        external_message_id,
        dedupe_key,
        received_at_ms,
        provider_time_ms: None,
        content,
        reply_capability: ReplyCapability::Free,
        raw: raw.to_owned(),
    };
    let mut out = Vec::with_capacity(1 + sms.media.len());
    if !sms.body.is_empty() || sms.media.is_empty() {
        out.push(make(
            base.clone(),
            sms.message_sid.clone(),
            Content::Text {
                text: sms.body.clone(),
            },
        ));
    }
    for (i, media) in sms.media.iter().enumerate() {
        let key = if out.is_empty() {
            base.clone()
        } else {
            format!("{base}:media:{i}")
        };
        let kind = match media.content_type.as_deref().and_then(|m| m.split('/').next()) {
            Some("image") => "image",
            Some("audio") => "voice",
            Some("video") => "video",
            _ => "file",
        };
        out.push(make(
            key,
            sms.message_sid.clone(),
            Content::Media {
                kind: kind.to_owned(),
                provider_ref: media.url.clone(),
                mime: media.content_type.clone(),
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::wire::MediaItem;

    fn sms(body: &str, media: Vec<MediaItem>) -> InboundSms {
        InboundSms {
            message_sid: "MM1".into(),
            account_sid: "AC1".into(),
            messaging_service_sid: None,
            from: "+14155550123".into(),
            to: "+14155550100".into(),
            body: body.into(),
            media,
            num_segments: None,
        }
    }

    #[test]
    fn text_sms_is_one_free_message_keyed_by_message_sid() {
        let out = to_inbound(&sms("hi", vec![]), "raw", 7);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].dedupe_key, "sms_twilio:+14155550100:msg:MM1");
        assert_eq!(out[0].content, Content::Text { text: "hi".into() });
        assert_eq!(out[0].reply_capability, ReplyCapability::Free);
        assert_eq!(out[0].from.kind, IdentityKind::Phone);
        assert_eq!(out[0].raw, "raw");
    }

    #[test]
    fn mms_yields_text_then_media_with_distinct_stable_keys() {
        let media = vec![
            MediaItem {
                url: "https://m/0".into(),
                content_type: Some("image/jpeg".into()),
            },
            MediaItem {
                url: "https://m/1".into(),
                content_type: None,
            },
        ];
        let out = to_inbound(&sms("look", media.clone()), "", 0);
        let keys: Vec<_> = out.iter().map(|m| m.dedupe_key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "sms_twilio:+14155550100:msg:MM1",
                "sms_twilio:+14155550100:msg:MM1:media:0",
                "sms_twilio:+14155550100:msg:MM1:media:1"
            ]
        );
        assert_eq!(
            out[1].content,
            Content::Media {
                kind: "image".into(),
                provider_ref: "https://m/0".into(),
                mime: Some("image/jpeg".into())
            }
        );
        let only_media = to_inbound(&sms("", media), "", 0);
        assert_eq!(only_media.len(), 2);
        assert_eq!(only_media[0].dedupe_key, "sms_twilio:+14155550100:msg:MM1");
        assert_eq!(
            only_media[1].dedupe_key,
            "sms_twilio:+14155550100:msg:MM1:media:1"
        );
    }
}
