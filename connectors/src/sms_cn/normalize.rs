//! Pure conversion of Chinese SMS uplinks into [`InboundMessage`]s, with E.164 normalization.

use sha2::{Digest, Sha256};

use crate::error::InboundError;
use crate::model::{Channel, Content, Identity, IdentityKind, InboundMessage, ReplyCapability};
use crate::sms_cn::wire::{AliyunUplink, TencentReply};
use crate::util::{days_from_civil, hex};

/// Normalizes a mobile number to E.164. A leading `+` is kept; `00` and a known `nationcode` become `+<code>`;
/// an 11-digit national number starting with 1 gets `+86`; `86` followed by such a number gets `+`.
///
/// # Errors
/// [`InboundError::Malformed`] for anything but digits (after removing spaces and dashes) or a length outside
/// E.164's 8..=15 digits.
pub fn to_e164(raw: &str, nationcode: Option<&str>) -> Result<String, InboundError> {
    let cleaned: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let (explicit, digits) = match cleaned.strip_prefix('+') {
        Some(rest) => (true, rest.to_owned()),
        None => match cleaned.strip_prefix("00") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, cleaned),
        },
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InboundError::Malformed(format!("not a phone number: {raw:?}")));
    }
    let code = nationcode
        .map(|c| c.trim_start_matches('+'))
        .filter(|c| !c.is_empty());
    if let Some(c) = code {
        if !c.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InboundError::Malformed(format!("not a country code: {c:?}")));
        }
    }
    let full = if explicit {
        digits
    } else if let Some(c) = code.filter(|c| !digits.starts_with(c) || digits.len() <= 11) {
        format!("{c}{}", digits.trim_start_matches('0'))
    } else if digits.len() == 11 && digits.starts_with('1') {
        format!("86{digits}")
    } else {
        digits
    };
    if !(8..=15).contains(&full.len()) {
        return Err(InboundError::Malformed(format!(
            "phone number of {} digits is not E.164",
            full.len()
        )));
    }
    Ok(format!("+{full}"))
}

/// Parses `YYYY-MM-DD HH:MM:SS` in China time (UTC+8, no DST) into unix milliseconds.
pub fn china_time_ms(s: &str) -> Option<u64> {
    let (date, time) = s.trim().split_once(' ')?;
    let mut d = date.split('-').map(str::parse::<u32>);
    let (y, mo, da) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':').map(str::parse::<u32>);
    let (h, mi, se) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, da);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(se) - 8 * 3600;
    u64::try_from(secs).ok().map(|s| s * 1000)
}

/// `sms_aliyun:<account>:seq:<sequence_id>`.
pub fn aliyun_dedupe_key(account: &str, item: &AliyunUplink) -> String {
    format!("sms_aliyun:{account}:seq:{}", item.sequence_id)
}

/// `sms_tencent:<account>:h:<sha256(mobile \n time \n text)>`: Tencent gives no id, and text is last so the
/// encoding is unambiguous.
pub fn tencent_dedupe_key(account: &str, reply: &TencentReply) -> String {
    let digest = Sha256::digest(format!("{}\n{}\n{}", reply.mobile, reply.time, reply.text).as_bytes());
    format!("sms_tencent:{account}:h:{}", hex(&digest))
}

/// The provider-specific parts of an uplink.
struct Uplink<'a> {
    channel: Channel,
    account: &'a str,
    from: String,
    external_message_id: String,
    dedupe_key: String,
    provider_time_ms: Option<u64>,
    text: &'a str,
    raw: String,
}

fn message(u: Uplink<'_>, received_at_ms: u64) -> InboundMessage {
    InboundMessage {
        channel: u.channel,
        channel_account: u.account.to_owned(),
        from: Identity {
            kind: IdentityKind::Phone,
            value: u.from,
            verified: false,
        },
        proven_with: Vec::new(),
        external_message_id: u.external_message_id,
        dedupe_key: u.dedupe_key,
        received_at_ms,
        provider_time_ms: u.provider_time_ms,
        content: Content::Text {
            text: u.text.to_owned(),
        },
        reply_capability: ReplyCapability::Free,
        raw: u.raw,
    }
}

/// Normalizes one Aliyun uplink; `account` is our configured account name (the dedupe and routing scope).
///
/// # Errors
/// [`InboundError::Malformed`] when the number cannot be made E.164.
pub fn aliyun_to_inbound(
    account: &str,
    item: &AliyunUplink,
    received_at_ms: u64,
) -> Result<InboundMessage, InboundError> {
    let raw = serde_json::json!({
        "phone_number": item.phone_number, "content": item.content, "send_time": item.send_time,
        "dest_code": item.dest_code, "sequence_id": item.sequence_id, "sign_name": item.sign_name,
    })
    .to_string();
    let uplink = Uplink {
        channel: Channel::SmsAliyun,
        account,
        from: to_e164(&item.phone_number, None)?,
        external_message_id: item.sequence_id.clone(),
        dedupe_key: aliyun_dedupe_key(account, item),
        provider_time_ms: china_time_ms(&item.send_time),
        text: &item.content,
        raw,
    };
    Ok(message(uplink, received_at_ms))
}

/// The outcome of a batch: the messages, and the positions of items that could not be normalized (log them and
/// still answer success, or Aliyun retries the whole batch for nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct AliyunBatch {
    /// Normalized messages in batch order.
    pub messages: Vec<InboundMessage>,
    /// `(index, why)` of refused items.
    pub refused: Vec<(usize, InboundError)>,
}

/// Normalizes a whole Aliyun batch.
pub fn aliyun_batch(account: &str, items: &[AliyunUplink], received_at_ms: u64) -> AliyunBatch {
    let mut batch = AliyunBatch {
        messages: Vec::with_capacity(items.len()),
        refused: Vec::new(),
    };
    for (i, item) in items.iter().enumerate() {
        match aliyun_to_inbound(account, item, received_at_ms) {
            Ok(m) => batch.messages.push(m),
            Err(e) => batch.refused.push((i, e)),
        }
    }
    batch
}

/// Normalizes a Tencent reply; `raw` is the request body kept for audit.
///
/// # Errors
/// [`InboundError::Malformed`] when the number cannot be made E.164.
pub fn tencent_to_inbound(
    account: &str,
    reply: &TencentReply,
    raw: &str,
    received_at_ms: u64,
) -> Result<InboundMessage, InboundError> {
    let key = tencent_dedupe_key(account, reply);
    let external = key.rsplit(':').next().unwrap_or_default().to_owned();
    let uplink = Uplink {
        channel: Channel::SmsTencent,
        account,
        from: to_e164(&reply.mobile, reply.nationcode.as_deref().or(Some("86")))?,
        external_message_id: external,
        dedupe_key: key,
        provider_time_ms: u64::try_from(reply.time).ok().map(|s| s * 1000),
        text: &reply.text,
        raw: raw.to_owned(),
    };
    Ok(message(uplink, received_at_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sms_cn::wire::{parse_aliyun, parse_tencent_reply};

    #[test]
    fn numbers_become_e164() {
        assert_eq!(to_e164("13800138000", None).unwrap(), "+8613800138000");
        assert_eq!(to_e164("8613800138000", None).unwrap(), "+8613800138000");
        assert_eq!(to_e164("+86 138-0013-8000", None).unwrap(), "+8613800138000");
        assert_eq!(to_e164("008613800138000", None).unwrap(), "+8613800138000");
        assert_eq!(to_e164("13800138000", Some("86")).unwrap(), "+8613800138000");
        assert_eq!(to_e164("91234567", Some("852")).unwrap(), "+85291234567");
        assert!(to_e164("1381111****", None).is_err());
        assert!(to_e164("123", None).is_err());
        assert!(to_e164("", None).is_err());
        assert!(to_e164("13800138000", Some("8x")).is_err());
    }

    #[test]
    fn china_time_is_utc_plus_8() {
        assert_eq!(china_time_ms("2017-09-01 00:00:00"), Some(1_504_195_200_000));
        assert_eq!(china_time_ms("2017-13-01 00:00:00"), None);
        assert_eq!(china_time_ms("yesterday"), None);
    }

    #[test]
    fn aliyun_batch_normalizes_and_reports_refused_items() {
        let body = r#"[{"phone_number":"13811112222","content":"退订","send_time":"2017-09-01 00:00:00","dest_code":"1234","sequence_id":1234567890},
                      {"phone_number":"1381111****","content":"x","send_time":"","dest_code":"","sequence_id":"7"}]"#;
        let items = parse_aliyun(body.as_bytes(), 4096).unwrap();
        let batch = aliyun_batch("bank-cn", &items, 9);
        assert_eq!(batch.messages.len(), 1);
        assert_eq!(batch.refused.len(), 1);
        assert_eq!(batch.refused[0].0, 1);
        let m = &batch.messages[0];
        assert_eq!(m.dedupe_key, "sms_aliyun:bank-cn:seq:1234567890");
        assert_eq!(m.from.value, "+8613811112222");
        assert_eq!(m.provider_time_ms, Some(1_504_195_200_000));
        assert_eq!(
            m.content,
            Content::Text {
                text: "退订".into()
            }
        );
        assert_eq!(m.channel, Channel::SmsAliyun);
    }

    #[test]
    fn tencent_reply_normalizes_with_a_content_hash_key() {
        let raw = r#"{"extend":"","mobile":"13800138000","nationcode":"86","sign":"签名","text":"用户回复的内容","time":1457336869}"#;
        let reply = parse_tencent_reply(raw.as_bytes(), 4096).unwrap();
        let m = tencent_to_inbound("bank-tc", &reply, raw, 1).unwrap();
        assert_eq!(m.from.value, "+8613800138000");
        assert_eq!(m.provider_time_ms, Some(1_457_336_869_000));
        assert!(m.dedupe_key.starts_with("sms_tencent:bank-tc:h:"));
        assert_eq!(m.dedupe_key.len(), "sms_tencent:bank-tc:h:".len() + 64);
        assert_eq!(m.raw, raw);
        let retry = tencent_to_inbound("bank-tc", &reply, raw, 2).unwrap();
        assert_eq!(retry.dedupe_key, m.dedupe_key);
        let other = TencentReply {
            text: "另一条".into(),
            ..reply
        };
        assert_ne!(
            tencent_to_inbound("bank-tc", &other, raw, 1).unwrap().dedupe_key,
            m.dedupe_key
        );
    }
}
