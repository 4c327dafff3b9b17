//! Pure conversion of pulled kf messages into [`InboundMessage`]s.

use crate::model::{Channel, Content, Identity, IdentityKind, InboundMessage};
use crate::wechat::normalize::Grant;
use crate::wechat::window::WindowPolicy;
use crate::wecom::wire::{KfMessage, Origin};

/// `wechat_kf:<open_kfid>:msg:<msgid>`.
pub fn dedupe_key(msg: &KfMessage) -> String {
    format!("wechat_kf:{}:msg:{}", msg.open_kfid, msg.msgid)
}

/// What an agent sees of a pulled message.
pub fn content(msg: &KfMessage) -> Content {
    let body = msg.body();
    let text = |field: &str| body[field].as_str().unwrap_or_default().to_owned();
    match msg.msgtype.as_str() {
        "text" => Content::Text {
            text: text("content"),
        },
        kind @ ("image" | "voice" | "video" | "file") => Content::Media {
            kind: kind.to_owned(),
            provider_ref: text("media_id"),
            mime: None,
        },
        "location" => Content::Location {
            latitude: body["latitude"].as_f64().unwrap_or_default(),
            longitude: body["longitude"].as_f64().unwrap_or_default(),
            label: [text("name"), text("address")]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        },
        "link" => Content::Link {
            title: text("title"),
            url: text("url"),
        },
        "event" => Content::Event {
            name: text("event_type"),
            detail: body["scene"].as_str().unwrap_or_default().to_owned(),
        },
        other => Content::Event {
            name: "unsupported_message".into(),
            detail: other.to_owned(),
        },
    }
}

/// Normalizes a pulled message from the customer (origin 3) or a system event (origin 4). Messages agents sent
/// from the WeCom client (origin 5), unknown origins and system events about no customer (e.g.
/// `servicer_status_change`) give `None`: they are not customer input.
pub fn to_inbound(msg: &KfMessage, received_at_ms: u64, policy: &WindowPolicy) -> Option<InboundMessage> {
    let grant = match msg.origin() {
        Origin::Customer => Grant::Message,
        Origin::System => Grant::None,
        Origin::Servicer | Origin::Other(_) => return None,
    };
    let external_user = msg
        .external_userid
        .clone()
        .or_else(|| msg.body()["external_userid"].as_str().map(str::to_owned))?;
    let provider_time_ms = u64::try_from(msg.send_time).ok().map(|s| s.saturating_mul(1000));
    Some(InboundMessage {
        channel: Channel::WechatKf,
        channel_account: msg.open_kfid.clone(),
        from: Identity {
            kind: IdentityKind::WecomExternalUser,
            value: external_user,
            verified: true,
        },
        proven_with: Vec::new(),
        external_message_id: msg.msgid.clone(),
        dedupe_key: dedupe_key(msg),
        received_at_ms,
        provider_time_ms,
        content: content(msg),
        reply_capability: policy.grant(grant, provider_time_ms.unwrap_or(received_at_ms)),
        raw: serde_json::to_string(&serde_json::json!({
            "msgid": msg.msgid, "open_kfid": msg.open_kfid, "external_userid": msg.external_userid,
            "send_time": msg.send_time, "origin": msg.origin, "msgtype": msg.msgtype, msg.msgtype.clone(): msg.body(),
        }))
        .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReplyCapability;
    use crate::wecom::wire::parse_sync_response;

    #[test]
    fn customer_messages_and_events_normalize_agent_echoes_do_not() {
        let page = r#"{"errcode":0,"next_cursor":"c","has_more":0,"msg_list":[
            {"msgid":"m1","open_kfid":"wk1","external_userid":"wm1","send_time":1700000000,"origin":3,"msgtype":"text","text":{"content":"退款"}},
            {"msgid":"m2","open_kfid":"wk1","external_userid":"wm1","send_time":1700000001,"origin":3,"msgtype":"location","location":{"latitude":23.1,"longitude":113.3,"name":"广州塔","address":"海珠区"}},
            {"msgid":"m3","open_kfid":"wk1","send_time":1700000002,"origin":4,"msgtype":"event","event":{"event_type":"enter_session","external_userid":"wm1","scene":"sc"}},
            {"msgid":"m4","open_kfid":"wk1","external_userid":"wm1","send_time":1700000003,"origin":5,"msgtype":"text","text":{"content":"agent"}},
            {"msgid":"m5","open_kfid":"wk1","external_userid":"wm1","send_time":1700000004,"origin":3,"msgtype":"file","file":{"media_id":"F"}}
        ]}"#;
        let resp = parse_sync_response(200, page.as_bytes()).unwrap();
        let policy = WindowPolicy::default();
        let out: Vec<_> = resp
            .msg_list
            .iter()
            .filter_map(|m| to_inbound(m, 5, &policy))
            .collect();
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].dedupe_key, "wechat_kf:wk1:msg:m1");
        assert_eq!(out[0].channel, Channel::WechatKf);
        assert_eq!(out[0].from.value, "wm1");
        assert_eq!(
            out[0].content,
            Content::Text {
                text: "退款".into()
            }
        );
        assert_eq!(
            out[0].reply_capability,
            ReplyCapability::Window {
                expires_at_ms: 1_700_000_000_000 + 48 * 3_600_000,
                remaining: 5
            }
        );
        assert_eq!(
            out[1].content,
            Content::Location {
                latitude: 23.1,
                longitude: 113.3,
                label: "广州塔 海珠区".into()
            }
        );
        assert_eq!(out[2].from.value, "wm1");
        assert_eq!(
            out[2].content,
            Content::Event {
                name: "enter_session".into(),
                detail: "sc".into()
            }
        );
        assert_eq!(
            out[3].content,
            Content::Media {
                kind: "file".into(),
                provider_ref: "F".into(),
                mime: None
            }
        );
        assert!(out[0].raw.contains("退款"));
    }
}
