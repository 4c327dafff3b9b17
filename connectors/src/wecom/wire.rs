//! `kf/sync_msg` and `kf/send_msg` request bodies and responses (PROTOCOLS.md §1.9).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{FailureReason, SendFailure};

/// Path of the pull API (append `?access_token=…`).
pub const SYNC_MSG_PATH: &str = "/cgi-bin/kf/sync_msg";
/// Path of the send API.
pub const SEND_MSG_PATH: &str = "/cgi-bin/kf/send_msg";
/// Most messages one pull may return.
pub const MAX_SYNC_LIMIT: u32 = 1000;
/// Largest text `send_msg` accepts, in bytes.
pub const MAX_TEXT_BYTES: usize = 2048;

/// Voice format asked of `sync_msg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiceFormat {
    /// AMR (0).
    Amr,
    /// Silk (1).
    Silk,
}

/// One `kf/sync_msg` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncMsgRequest {
    /// The persisted `next_cursor`; `None` on the very first pull (starts 3 days back).
    pub cursor: Option<String>,
    /// The doorbell's token (without it the rate limits are strict).
    pub token: Option<String>,
    /// Page size, clamped to 1..=1000.
    pub limit: u32,
    /// Voice format.
    pub voice_format: VoiceFormat,
    /// The customer-service account to pull.
    pub open_kfid: String,
}

impl SyncMsgRequest {
    /// A pull for `open_kfid` after a doorbell, at the largest page size.
    pub fn after_doorbell(cursor: Option<String>, token: &str, open_kfid: &str) -> Self {
        Self {
            cursor,
            token: Some(token.to_owned()),
            limit: MAX_SYNC_LIMIT,
            voice_format: VoiceFormat::Amr,
            open_kfid: open_kfid.to_owned(),
        }
    }

    /// The JSON body; `cursor` and `token` are omitted when absent.
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "limit": self.limit.clamp(1, MAX_SYNC_LIMIT),
            "voice_format": match self.voice_format { VoiceFormat::Amr => 0, VoiceFormat::Silk => 1 },
            "open_kfid": self.open_kfid,
        });
        if let Some(cursor) = &self.cursor {
            body["cursor"] = json!(cursor);
        }
        if let Some(token) = &self.token {
            body["token"] = json!(token);
        }
        body
    }

    /// The request that continues this pull after `response`, or `None` when `has_more` is 0. Persist
    /// `response.next_cursor` durably before processing the page.
    pub fn next(&self, response: &SyncMsgResponse) -> Option<Self> {
        response.has_more.then(|| Self {
            cursor: Some(response.next_cursor.clone()),
            ..self.clone()
        })
    }
}

/// A successful `kf/sync_msg` response.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SyncMsgResponse {
    /// Cursor for the next pull; persist it per `open_kfid`.
    #[serde(default)]
    pub next_cursor: String,
    /// Whether more messages are waiting.
    #[serde(default, deserialize_with = "int_bool")]
    pub has_more: bool,
    /// The messages, oldest first.
    #[serde(default)]
    pub msg_list: Vec<KfMessage>,
}

fn int_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => b,
        Value::Number(n) => n.as_i64().unwrap_or(0) != 0,
        _ => false,
    })
}

/// Who produced a pulled message (`origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// 3: the WeChat customer.
    Customer,
    /// 4: a system event.
    System,
    /// 5: an agent in the WeCom client.
    Servicer,
    /// Anything else.
    Other(i64),
}

impl From<i64> for Origin {
    fn from(code: i64) -> Self {
        match code {
            3 => Self::Customer,
            4 => Self::System,
            5 => Self::Servicer,
            other => Self::Other(other),
        }
    }
}

/// One item of `msg_list`. Type bodies are kept as JSON; [`KfMessage::body`] reads the one named by `msgtype`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KfMessage {
    /// The message id: the dedupe key.
    pub msgid: String,
    /// The customer-service account.
    #[serde(default)]
    pub open_kfid: String,
    /// The customer's external user id (absent on some system events).
    #[serde(default)]
    pub external_userid: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub send_time: i64,
    /// 3 customer, 4 system event, 5 agent.
    #[serde(default)]
    pub origin: i64,
    /// The agent who sent it (origin 5).
    #[serde(default)]
    pub servicer_userid: Option<String>,
    /// `text`, `image`, `voice`, `video`, `file`, `location`, `link`, `event`, …
    pub msgtype: String,
    #[serde(flatten)]
    bodies: serde_json::Map<String, Value>,
}

impl KfMessage {
    /// The type-specific body (`text`, `image`, `event`…), `Null` when absent.
    pub fn body(&self) -> &Value {
        self.bodies.get(&self.msgtype).unwrap_or(&Value::Null)
    }

    /// Who produced it.
    pub fn origin(&self) -> Origin {
        Origin::from(self.origin)
    }
}

/// Reads a `kf/sync_msg` response.
///
/// # Errors
/// The classified [`SendFailure`] for HTTP or `errcode` failures (token codes → refresh and retry once).
pub fn parse_sync_response(http_status: u16, body: &[u8]) -> Result<SyncMsgResponse, SendFailure> {
    check(http_status, body)?;
    serde_json::from_slice(body).map_err(SendFailure::malformed)
}

/// WeCom shares the Official Account's error codes and HTTP handling.
fn check(http_status: u16, body: &[u8]) -> Result<(), SendFailure> {
    crate::wechat::api::parse_send_response(http_status, body)
}

/// Why a `send_msg` body could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendMsgError {
    /// `msgid` is not 1..=32 bytes of `[0-9a-zA-Z_-]` (WeCom answers 40058).
    #[error("kf msgid must be 1..=32 characters of [0-9a-zA-Z_-]")]
    BadMsgId,
    /// The text exceeds 2048 bytes.
    #[error("kf text of {0} bytes exceeds 2048")]
    TextTooLong(usize),
}

impl From<SendMsgError> for SendFailure {
    fn from(e: SendMsgError) -> Self {
        SendFailure::rejected("local", &e.to_string(), FailureReason::ContentRejected)
    }
}

fn check_msgid(msgid: &str) -> Result<(), SendMsgError> {
    let ok = (1..=32).contains(&msgid.len())
        && msgid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SendMsgError::BadMsgId)
    }
}

/// A `kf/send_msg` text body. `msgid` is our idempotency key (echoed back); use a compact form of our message id.
///
/// # Errors
/// [`SendMsgError`] for a bad `msgid` or text over 2048 bytes.
pub fn send_text(
    touser: &str,
    open_kfid: &str,
    msgid: Option<&str>,
    content: &str,
) -> Result<Value, SendMsgError> {
    if content.len() > MAX_TEXT_BYTES {
        return Err(SendMsgError::TextTooLong(content.len()));
    }
    send_body(touser, open_kfid, msgid, "text", json!({ "content": content }))
}

/// A `kf/send_msg` image body (`media_id` from the WeCom media upload).
///
/// # Errors
/// [`SendMsgError::BadMsgId`].
pub fn send_image(
    touser: &str,
    open_kfid: &str,
    msgid: Option<&str>,
    media_id: &str,
) -> Result<Value, SendMsgError> {
    send_body(touser, open_kfid, msgid, "image", json!({ "media_id": media_id }))
}

fn send_body(
    touser: &str,
    open_kfid: &str,
    msgid: Option<&str>,
    msgtype: &str,
    body: Value,
) -> Result<Value, SendMsgError> {
    let mut out = json!({"touser": touser, "open_kfid": open_kfid, "msgtype": msgtype});
    if let Some(id) = msgid {
        check_msgid(id)?;
        out["msgid"] = json!(id);
    }
    out[msgtype] = body;
    Ok(out)
}

/// Reads a `kf/send_msg` response and returns the echoed `msgid`.
///
/// # Errors
/// The classified [`SendFailure`] (95018 session state invalid and 45015 → window closed, token codes → refresh).
pub fn parse_send_response(http_status: u16, body: &[u8]) -> Result<String, SendFailure> {
    check(http_status, body)?;
    #[derive(Deserialize)]
    struct Sent {
        #[serde(default)]
        msgid: String,
    }
    let sent: Sent = serde_json::from_slice(body).map_err(SendFailure::malformed)?;
    Ok(sent.msgid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{vectors, vstr};

    #[test]
    fn doorbell_implies_the_documented_sync_call() {
        let v = vectors();
        let then = &v["wechat"]["wecom_callback_vectors"]["kf_msg_or_event_callback"]["then_call"];
        assert_eq!(
            vstr(then, &["url"]),
            format!("https://qyapi.weixin.qq.com{SYNC_MSG_PATH}?access_token=ACCESS_TOKEN")
        );
        let json = &then["json"];
        let first = SyncMsgRequest::after_doorbell(None, vstr(json, &["token"]), vstr(json, &["open_kfid"]));
        let mut expected = json.clone();
        expected.as_object_mut().unwrap().remove("cursor");
        assert_eq!(first.to_json(), expected);
        let later = SyncMsgRequest {
            cursor: Some("4gw7MepFLfgF2VC5npN".into()),
            ..first
        };
        assert_eq!(later.to_json()["cursor"], "4gw7MepFLfgF2VC5npN");
        assert_eq!(later.to_json()["limit"], 1000);
    }

    const PAGE: &str = r#"{"errcode":0,"errmsg":"ok","next_cursor":"4gw7MepFLfgF2VC5npN","has_more":1,"msg_list":[
        {"msgid":"from_msgid_4622416642169452483","open_kfid":"wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q","external_userid":"wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw","send_time":1615478585,"origin":3,"msgtype":"text","text":{"content":"你好","menu_id":"101"}},
        {"msgid":"m2","open_kfid":"wk1","external_userid":"wm1","send_time":1615478590,"origin":3,"msgtype":"image","image":{"media_id":"2iSLeVyqzk4eX0IB5kTi9Ljfa2rt9dwfq5WKRQ4Nvvgw"}},
        {"msgid":"m3","open_kfid":"wk1","send_time":1615478600,"origin":4,"msgtype":"event","event":{"event_type":"enter_session","open_kfid":"wk1","external_userid":"wm1","scene":"123","welcome_code":"aaaaaa"}},
        {"msgid":"m4","open_kfid":"wk1","external_userid":"wm1","send_time":1615478610,"origin":5,"servicer_userid":"zhangsan","msgtype":"text","text":{"content":"agent"},"future_field":1}
    ]}"#;

    #[test]
    fn sync_response_parses_and_continues_while_has_more() {
        let resp = parse_sync_response(200, PAGE.as_bytes()).unwrap();
        assert_eq!(resp.next_cursor, "4gw7MepFLfgF2VC5npN");
        assert!(resp.has_more);
        assert_eq!(resp.msg_list.len(), 4);
        assert_eq!(resp.msg_list[0].body()["content"], "你好");
        assert_eq!(resp.msg_list[2].origin(), Origin::System);
        assert_eq!(resp.msg_list[3].origin(), Origin::Servicer);
        let req = SyncMsgRequest::after_doorbell(None, "T", "wk1");
        let next = req.next(&resp).unwrap();
        assert_eq!(next.cursor.as_deref(), Some("4gw7MepFLfgF2VC5npN"));
        let last = SyncMsgResponse {
            has_more: false,
            ..resp
        };
        assert_eq!(next.next(&last), None);
        let expired =
            parse_sync_response(200, br#"{"errcode":42001,"errmsg":"access_token expired"}"#).unwrap_err();
        assert!(expired.reason.refresh_token_and_retry());
        assert!(parse_sync_response(503, b"").unwrap_err().error.is_retryable());
    }

    #[test]
    fn send_bodies_and_responses() {
        let body = send_text("wm1", "wk1", Some("m_0123abc"), "您好").unwrap();
        assert_eq!(
            body,
            json!({"touser":"wm1","open_kfid":"wk1","msgid":"m_0123abc","msgtype":"text","text":{"content":"您好"}})
        );
        assert_eq!(
            send_image("wm1", "wk1", None, "MID").unwrap()["image"]["media_id"],
            "MID"
        );
        assert_eq!(
            send_text("wm1", "wk1", Some(&"a".repeat(33)), "x"),
            Err(SendMsgError::BadMsgId)
        );
        assert_eq!(
            send_text("wm1", "wk1", Some("bad id"), "x"),
            Err(SendMsgError::BadMsgId)
        );
        assert_eq!(
            send_text("wm1", "wk1", None, &"字".repeat(683)),
            Err(SendMsgError::TextTooLong(2049))
        );
        assert_eq!(
            parse_send_response(200, br#"{"errcode":0,"errmsg":"ok","msgid":"m_0123abc"}"#).unwrap(),
            "m_0123abc"
        );
        let state = parse_send_response(
            200,
            br#"{"errcode":95018,"errmsg":"send msg session status invalid"}"#,
        )
        .unwrap_err();
        assert_eq!(state.reason, FailureReason::WindowClosed);
        assert!(!state.error.is_retryable());
        let f: SendFailure = SendMsgError::BadMsgId.into();
        assert_eq!(f.reason, FailureReason::ContentRejected);
    }
}
