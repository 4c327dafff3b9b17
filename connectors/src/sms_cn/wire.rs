//! Aliyun SmsUp "HTTP batch push" and Tencent Cloud SMS reply / report callbacks (PROTOCOLS.md §2.5).
//!
//! Neither provider signs its requests: the gateway protects these routes with a secret path token and an optional
//! source-IP allowlist before calling in here.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::InboundError;

/// The body Aliyun expects on success (only a numeric `code` is checked; any non-200 status triggers retries).
pub const ALIYUN_SUCCESS_BODY: &str = r#"{"code":0,"msg":"接收成功"}"#;
/// The body Tencent expects on success.
pub const TENCENT_SUCCESS_BODY: &str = r#"{"result":0,"errmsg":"OK"}"#;

/// One Aliyun uplink message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AliyunUplink {
    /// The sender's number, usually national (`138…`).
    pub phone_number: String,
    /// The text.
    #[serde(default)]
    pub content: String,
    /// Carrier time in China time without zone, `YYYY-MM-DD HH:MM:SS`.
    #[serde(default)]
    pub send_time: String,
    /// Extension code identifying which of our sends the user replied to.
    #[serde(default)]
    pub dest_code: String,
    /// The dedupe key (a number in older pages, a string in newer ones).
    #[serde(deserialize_with = "string_or_number")]
    pub sequence_id: String,
    /// Signature name (older pages only).
    #[serde(default)]
    pub sign_name: Option<String>,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) if !s.is_empty() => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "sequence_id must be a string or number, got {other}"
        ))),
    }
}

/// Parses Aliyun's batched JSON array (size-checked first).
///
/// # Errors
/// 413 over `limit`; 400 for anything but an array of uplink objects.
pub fn parse_aliyun(body: &[u8], limit: usize) -> Result<Vec<AliyunUplink>, InboundError> {
    crate::util::check_size(body, limit)?;
    serde_json::from_slice(body).map_err(|e| InboundError::Malformed(format!("aliyun uplink: {e}")))
}

/// Tencent's reply callback.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TencentReply {
    /// Extension code.
    #[serde(default)]
    pub extend: String,
    /// The sender's national number.
    pub mobile: String,
    /// Country code without `+` (`86`).
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub nationcode: Option<String>,
    /// Signature name.
    #[serde(default)]
    pub sign: String,
    /// The text.
    #[serde(default)]
    pub text: String,
    /// Unix seconds (a number in the docs; a numeric string is accepted too).
    #[serde(deserialize_with = "int_or_numeric_string")]
    pub time: i64,
}

fn int_or_numeric_string<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| serde::de::Error::custom("time is not an integer")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom("time is not an integer")),
        other => Err(serde::de::Error::custom(format!(
            "time must be an integer, got {other}"
        ))),
    }
}

fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// Parses Tencent's reply callback object.
///
/// # Errors
/// 413 over `limit`; 400 for anything else than the documented object.
pub fn parse_tencent_reply(body: &[u8], limit: usize) -> Result<TencentReply, InboundError> {
    crate::util::check_size(body, limit)?;
    serde_json::from_slice(body).map_err(|e| InboundError::Malformed(format!("tencent reply: {e}")))
}

/// One entry of Tencent's delivery-report callback (a JSON array).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TencentReport {
    /// `user_receive_time` as sent (`YYYY-MM-DD HH:MM:SS`, China time).
    #[serde(default)]
    pub user_receive_time: String,
    /// Country code.
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub nationcode: Option<String>,
    /// National number.
    pub mobile: String,
    /// `SUCCESS` or `FAIL`.
    pub report_status: String,
    /// Error code text.
    #[serde(default)]
    pub errmsg: String,
    /// Human description.
    #[serde(default)]
    pub description: String,
    /// The send's SerialNo.
    pub sid: String,
}

impl TencentReport {
    /// Whether the handset received the message.
    pub fn delivered(&self) -> bool {
        self.report_status.eq_ignore_ascii_case("SUCCESS")
    }
}

/// Parses Tencent's delivery-report array.
///
/// # Errors
/// 413 over `limit`; 400 for anything else than an array of reports.
pub fn parse_tencent_reports(body: &[u8], limit: usize) -> Result<Vec<TencentReport>, InboundError> {
    crate::util::check_size(body, limit)?;
    serde_json::from_slice(body).map_err(|e| InboundError::Malformed(format!("tencent report: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliyun_accepts_numeric_and_string_sequence_ids() {
        let body = r#"[{"phone_number":"13811112222","content":"内容","send_time":"2017-09-01 00:00:00","dest_code":"1234","sequence_id":1234567890,"sign_name":"签名"},
                      {"phone_number":"13811113333","content":"TD","send_time":"2017-09-01 00:00:01","dest_code":"","sequence_id":"1234567891","extra":1}]"#;
        let items = parse_aliyun(body.as_bytes(), 4096).unwrap();
        assert_eq!(items[0].sequence_id, "1234567890");
        assert_eq!(items[1].sequence_id, "1234567891");
        assert_eq!(items[0].sign_name.as_deref(), Some("签名"));
        assert!(parse_aliyun(br#"{"phone_number":"1"}"#, 4096).is_err());
        assert!(parse_aliyun(br#"[{"phone_number":"1","sequence_id":null}]"#, 4096).is_err());
        assert_eq!(parse_aliyun(&[b' '; 10], 5).unwrap_err().http_status(), 413);
    }

    #[test]
    fn tencent_reply_and_reports_parse() {
        let r = parse_tencent_reply(
            r#"{"extend":"","mobile":"13800138000","nationcode":"86","sign":"短信签名","text":"用户回复的内容","time":1457336869}"#.as_bytes(),
            4096,
        )
        .unwrap();
        assert_eq!(r.time, 1_457_336_869);
        assert_eq!(r.nationcode.as_deref(), Some("86"));
        let reports = parse_tencent_reports(
            br#"[{"user_receive_time":"2015-10-17 08:03:04","nationcode":"86","mobile":"13xxxxxxxxx","report_status":"SUCCESS","errmsg":"DELIVRD","description":"ok","sid":"x1"}]"#,
            4096,
        )
        .unwrap();
        assert!(reports[0].delivered());
        assert!(parse_tencent_reply(b"[]", 4096).is_err());
        let string_time =
            parse_tencent_reply(br#"{"mobile":"13800138000","time":"1457336869"}"#, 4096).unwrap();
        assert_eq!(string_time.time, 1_457_336_869);
        assert!(parse_tencent_reply(br#"{"mobile":"13800138000","time":"soon"}"#, 4096).is_err());
    }

    #[test]
    fn success_bodies_are_what_the_providers_check() {
        let a: Value = serde_json::from_str(ALIYUN_SUCCESS_BODY).unwrap();
        assert!(a["code"].is_number());
        assert_eq!(a["msg"], "接收成功");
        let t: Value = serde_json::from_str(TENCENT_SUCCESS_BODY).unwrap();
        assert_eq!(t["result"], 0);
        assert_eq!(t["errmsg"], "OK");
    }
}
