//! The customer-service send API, media download / upload and access_token handling (PROTOCOLS.md §1.7, §1.8),
//! as pure request builders and response classifiers. The HTTP client and the single token owner live in the
//! gateway.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{FailureReason, SendFailure};

/// Path of the customer-service send API (append `?access_token=…`).
pub const CUSTOM_SEND_PATH: &str = "/cgi-bin/message/custom/send";
/// Path of the stable access_token API.
pub const STABLE_TOKEN_PATH: &str = "/cgi-bin/stable_token";

/// JSON body of a text customer-service message; `kf_account` sends it under a named agent identity.
pub fn custom_text(touser: &str, content: &str, kf_account: Option<&str>) -> Value {
    let mut body = json!({"touser": touser, "msgtype": "text", "text": {"content": content}});
    if let Some(account) = kf_account {
        body["customservice"] = json!({ "kf_account": account });
    }
    body
}

/// JSON body of an image customer-service message (`media_id` from the material upload API).
pub fn custom_image(touser: &str, media_id: &str) -> Value {
    json!({"touser": touser, "msgtype": "image", "image": {"media_id": media_id}})
}

/// JSON body of a stable_token request.
pub fn stable_token_request(appid: &str, secret: &str, force_refresh: bool) -> Value {
    json!({"grant_type": "client_credential", "appid": appid, "secret": secret, "force_refresh": force_refresh})
}

#[derive(Debug, Deserialize)]
struct ErrBody {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

/// Classifies a WeChat / WeCom API error code (`errmsg` is informative only: it carries a varying ` rid:` suffix).
///
/// 40001/40014/42001 (and WeCom's 40082/41001/42009 token codes) → refresh the token and retry once; 45015 →
/// window closed; 45047 → quota used up; -1 → busy, retry; 45009/45011/45033 → rate limited.
pub fn classify_errcode(errcode: i64, errmsg: &str) -> Result<(), SendFailure> {
    let reject = |reason| Err(SendFailure::rejected(errcode, errmsg, reason));
    match errcode {
        0 => Ok(()),
        40001 | 40014 | 42001 | 41001 | 40082 | 42009 => Err(SendFailure::token(errcode, errmsg)),
        -1 => Err(SendFailure::unavailable(format!(
            "wechat system busy (-1): {errmsg}"
        ))),
        45009 => Err(SendFailure::rate_limited(Duration::from_secs(3600))),
        45011 => Err(SendFailure::rate_limited(Duration::from_secs(60))),
        45033 => Err(SendFailure::rate_limited(Duration::from_secs(1))),
        45015 => reject(FailureReason::WindowClosed),
        45047 => reject(FailureReason::QuotaExhausted),
        43004 => reject(FailureReason::RecipientOptedOut),
        40003 | 95001 => reject(FailureReason::InvalidRecipient),
        95018 => reject(FailureReason::WindowClosed),
        40004 | 40005 | 40006 | 40007 | 44002 | 45002 | 40008 | 40058 => {
            reject(FailureReason::ContentRejected)
        }
        40013 | 40125 | 40164 | 48001 => reject(FailureReason::Misconfigured),
        _ => reject(FailureReason::Other),
    }
}

/// Reads a send response: the HTTP status first (5xx → retryable, 429 → rate limited), then `errcode`.
///
/// # Errors
/// A [`SendFailure`] telling the outbox what to do and the agent what happened.
pub fn parse_send_response(http_status: u16, body: &[u8]) -> Result<(), SendFailure> {
    if http_status == 429 {
        return Err(SendFailure::rate_limited(Duration::from_secs(1)));
    }
    if http_status >= 500 {
        return Err(SendFailure::unavailable(format!("http {http_status}")));
    }
    if !(200..300).contains(&http_status) {
        return Err(SendFailure::rejected(
            http_status,
            "unexpected http status",
            FailureReason::Other,
        ));
    }
    let parsed: ErrBody = serde_json::from_slice(body).map_err(SendFailure::malformed)?;
    classify_errcode(parsed.errcode, &parsed.errmsg)
}

/// Path of the temporary-media download API (`?access_token=…&media_id=…`), used to fetch inbound media on
/// demand.
pub const MEDIA_GET_PATH: &str = "/cgi-bin/media/get";
/// Path of the temporary-media upload API (`?access_token=…&type=image`, multipart field `media`).
pub const MEDIA_UPLOAD_PATH: &str = "/cgi-bin/media/upload";

/// The multipart body of a temporary-media upload: one part named `media` carrying the file (with its name,
/// length and content type, as the upload API expects), between `--boundary` lines; send it with
/// `Content-Type: multipart/form-data; boundary=<boundary>`. The boundary must not occur in `bytes` (use a
/// random one).
pub fn media_upload_body(boundary: &str, file_name: &str, mime: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(bytes.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"media\"; filename=\"{file_name}\"; filelength={}\r\nContent-Type: {mime}\r\n\r\n",
            bytes.len()
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// The query of a media upload of `kind` (`image`), without the access token.
pub fn media_upload_query(kind: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("type", kind)
        .finish()
}

/// The query of a media download (without the access token, which the token owner appends).
pub fn media_get_query(media_id: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("media_id", media_id)
        .finish()
}

/// Reads a media download. WeChat answers errors as JSON with status 200, so a JSON (or text) content type is an
/// error body, anything else is the file.
///
/// # Errors
/// The classified [`SendFailure`] (token codes → refresh and retry once; 40007 invalid media id → content
/// rejected).
pub fn parse_media_response(http_status: u16, content_type: &str, body: &[u8]) -> Result<(), SendFailure> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if matches!(essence.as_str(), "application/json" | "text/plain" | "text/json") {
        parse_send_response(http_status, body)?;
        return Err(SendFailure::malformed(
            "media download answered json without an error code",
        ));
    }
    if !(200..300).contains(&http_status) {
        return parse_send_response(http_status, body);
    }
    if body.is_empty() {
        return Err(SendFailure::malformed("empty media body"));
    }
    Ok(())
}

/// An uploaded temporary media.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UploadedMedia {
    /// `image`, `voice`, `video` or `thumb`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Use it in a customer-service message within 3 days.
    pub media_id: String,
    /// Unix seconds (WeCom sends it as a string, WeChat as a number).
    #[serde(default, deserialize_with = "number_or_string")]
    pub created_at: i64,
}

fn number_or_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| serde::de::Error::custom("created_at out of range")),
        Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        Value::Null => Ok(0),
        other => Err(serde::de::Error::custom(format!("created_at {other}"))),
    }
}

/// Reads a media upload response (WeChat's, and WeCom's of the same shape).
///
/// # Errors
/// The classified [`SendFailure`].
pub fn parse_upload_response(http_status: u16, body: &[u8]) -> Result<UploadedMedia, SendFailure> {
    parse_send_response(http_status, body)?;
    serde_json::from_slice(body).map_err(SendFailure::malformed)
}

/// A fetched access_token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccessToken {
    /// The token (reserve at least 512 characters of storage).
    pub access_token: String,
    /// Validity in seconds from the fetch.
    pub expires_in: u64,
}

/// Reads a `cgi-bin/token` or `stable_token` response.
///
/// # Errors
/// The classified [`SendFailure`] for an error body (e.g. 40013 invalid appid → misconfigured), or a malformed one.
pub fn parse_access_token(http_status: u16, body: &[u8]) -> Result<AccessToken, SendFailure> {
    parse_send_response(http_status, body)?;
    let token: AccessToken = serde_json::from_slice(body).map_err(SendFailure::malformed)?;
    if token.access_token.is_empty() || token.expires_in == 0 {
        return Err(SendFailure::malformed(
            "access_token response without token or expiry",
        ));
    }
    Ok(token)
}

/// What the token owner should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAction {
    /// The token is fresh: use it.
    Use,
    /// The token still works but is past the refresh point: use it and refresh in the background.
    UseAndRefresh,
    /// No usable token: refresh before sending.
    RefreshNow,
}

/// The single token owner's view of its token: refresh ahead of expiry (at `refresh_ratio` of the lifetime) and
/// at once after the provider refused it (40001/42001).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenState {
    token: Option<String>,
    obtained_at: u64,
    expires_at: u64,
    refresh_ratio: f64,
}

impl TokenState {
    /// An empty state that refreshes at 80 % of the token lifetime.
    pub fn new() -> Self {
        Self {
            token: None,
            obtained_at: 0,
            expires_at: 0,
            refresh_ratio: 0.8,
        }
    }

    /// Stores a freshly fetched token at `now` (unix seconds).
    pub fn store(&mut self, token: AccessToken, now: u64) {
        self.token = Some(token.access_token);
        self.obtained_at = now;
        self.expires_at = now.saturating_add(token.expires_in);
    }

    /// Forgets the token after the provider refused it.
    pub fn invalidate(&mut self) {
        self.token = None;
    }

    /// The token, if one is held and not expired at `now`.
    pub fn token(&self, now: u64) -> Option<&str> {
        self.token.as_deref().filter(|_| now < self.expires_at)
    }

    /// What to do at `now` (unix seconds).
    pub fn action(&self, now: u64) -> TokenAction {
        if self.token(now).is_none() {
            return TokenAction::RefreshNow;
        }
        let lifetime = self.expires_at - self.obtained_at;
        // Lifetimes are a few hours, far inside f64's exact integer range.
        let refresh_at = self.obtained_at + (lifetime as f64 * self.refresh_ratio) as u64;
        if now >= refresh_at {
            TokenAction::UseAndRefresh
        } else {
            TokenAction::Use
        }
    }
}

impl Default for TokenState {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ConnectorError;
    use crate::util::vectors;

    #[test]
    fn send_bodies_match_the_documented_shapes() {
        let v = vectors();
        let ex = &v["wechat"]["custom_send_examples"];
        assert_eq!(
            custom_text("oGw_user_openid_000000000001", "您好，请问有什么可以帮您？", None),
            ex["text"]
        );
        assert_eq!(
            custom_image("oGw_user_openid_000000000001", "MEDIA_ID"),
            ex["image"]
        );
        assert_eq!(
            custom_text("oGw_user_openid_000000000001", "hi", Some("agent01@gh_account")),
            ex["text_as_named_kf_account"]
        );
    }

    #[test]
    fn documented_responses_are_classified() {
        let v = vectors();
        let ex = &v["wechat"]["custom_send_examples"];
        let body = |x: &Value| serde_json::to_vec(x).unwrap();
        assert_eq!(parse_send_response(200, &body(&ex["ok_response"])), Ok(()));
        let errs = &ex["error_responses"];
        for code in ["40001", "42001"] {
            let f = parse_send_response(200, &body(&errs[code])).unwrap_err();
            assert!(f.reason.refresh_token_and_retry(), "{code}");
            assert!(f.error.is_retryable());
        }
        let f = parse_send_response(200, &body(&errs["45015"])).unwrap_err();
        assert_eq!(f.reason, FailureReason::WindowClosed);
        assert!(!f.error.is_retryable());
        assert!(matches!(f.error, ConnectorError::Rejected { ref code, .. } if code == "45015"));
        let f = parse_send_response(200, &body(&errs["45047"])).unwrap_err();
        assert_eq!(f.reason, FailureReason::QuotaExhausted);
        assert!(!f.error.is_retryable());
    }

    #[test]
    fn busy_5xx_and_rate_limits_are_retryable() {
        let busy = parse_send_response(200, br#"{"errcode":-1,"errmsg":"system error rid: 1"}"#).unwrap_err();
        assert_eq!(busy.reason, FailureReason::ProviderUnavailable);
        assert!(busy.error.is_retryable());
        assert!(parse_send_response(502, b"<html>")
            .unwrap_err()
            .error
            .is_retryable());
        let limited = parse_send_response(
            200,
            br#"{"errcode":45011,"errmsg":"api minute-quota reach limit"}"#,
        )
        .unwrap_err();
        assert_eq!(
            limited.error,
            ConnectorError::RateLimited {
                retry_after: Duration::from_secs(60)
            }
        );
        assert_eq!(
            parse_send_response(429, b"").unwrap_err().reason,
            FailureReason::RateLimited
        );
        assert!(!parse_send_response(200, b"not json")
            .unwrap_err()
            .error
            .is_retryable());
        assert_eq!(
            classify_errcode(40014, "").unwrap_err().reason,
            FailureReason::AccessTokenInvalid
        );
        assert_eq!(
            classify_errcode(99999, "").unwrap_err().reason,
            FailureReason::Other
        );
    }

    #[test]
    fn media_download_errors_come_as_json_with_status_200() {
        assert_eq!(media_get_query("M 1+2"), "media_id=M+1%2B2");
        assert_eq!(parse_media_response(200, "image/jpeg", b"\xff\xd8"), Ok(()));
        let expired = parse_media_response(
            200,
            "application/json; charset=utf-8",
            br#"{"errcode":42001,"errmsg":"x"}"#,
        )
        .unwrap_err();
        assert!(expired.reason.refresh_token_and_retry());
        let bad_id = parse_media_response(
            200,
            "text/plain",
            br#"{"errcode":40007,"errmsg":"invalid media_id"}"#,
        );
        assert_eq!(bad_id.unwrap_err().reason, FailureReason::ContentRejected);
        assert!(parse_media_response(200, "application/json", br#"{"errcode":0}"#).is_err());
        assert!(parse_media_response(502, "text/html", b"bad gateway")
            .unwrap_err()
            .error
            .is_retryable());
        assert!(parse_media_response(200, "image/png", b"").is_err());
    }

    #[test]
    fn the_upload_body_is_one_media_part() {
        let body = media_upload_body("b0und", "up_1.jpg", "image/jpeg", b"\xff\xd8\xffjpeg");
        let mut expected = b"--b0und\r\nContent-Disposition: form-data; name=\"media\"; filename=\"up_1.jpg\"; filelength=7\r\nContent-Type: image/jpeg\r\n\r\n".to_vec();
        expected.extend_from_slice(b"\xff\xd8\xffjpeg\r\n--b0und--\r\n");
        assert_eq!(body, expected);
        assert_eq!(media_upload_query("image"), "type=image");
    }

    #[test]
    fn a_wecom_upload_response_with_a_string_time_parses() {
        let uploaded = parse_upload_response(
            200,
            br#"{"errcode":0,"errmsg":"","type":"image","media_id":"1G6nrLmr5EC3","created_at":"1380000000"}"#,
        )
        .unwrap();
        assert_eq!(
            (uploaded.media_id.as_str(), uploaded.created_at),
            ("1G6nrLmr5EC3", 1_380_000_000)
        );
    }

    #[test]
    fn media_upload_response_parses() {
        let up = parse_upload_response(
            200,
            br#"{"type":"image","media_id":"MID","created_at":1700000000}"#,
        )
        .unwrap();
        assert_eq!(
            up,
            UploadedMedia {
                kind: "image".into(),
                media_id: "MID".into(),
                created_at: 1_700_000_000
            }
        );
        let err =
            parse_upload_response(200, br#"{"errcode":40004,"errmsg":"invalid media type"}"#).unwrap_err();
        assert_eq!(err.reason, FailureReason::ContentRejected);
        assert!(parse_upload_response(200, br#"{"errcode":0}"#).is_err());
    }

    #[test]
    fn access_token_responses_parse() {
        let t = parse_access_token(200, br#"{"access_token":"ACCESS","expires_in":7200}"#).unwrap();
        assert_eq!(
            t,
            AccessToken {
                access_token: "ACCESS".into(),
                expires_in: 7200
            }
        );
        let e = parse_access_token(200, br#"{"errcode":40013,"errmsg":"invalid appid"}"#).unwrap_err();
        assert_eq!(e.reason, FailureReason::Misconfigured);
        assert!(parse_access_token(200, br#"{"access_token":"","expires_in":7200}"#).is_err());
        assert_eq!(
            stable_token_request("wx1", "s", false)["grant_type"],
            "client_credential"
        );
    }

    #[test]
    fn token_state_refreshes_ahead_of_expiry_and_after_refusal() {
        let mut state = TokenState::new();
        assert_eq!(state.action(0), TokenAction::RefreshNow);
        state.store(
            AccessToken {
                access_token: "T".into(),
                expires_in: 7200,
            },
            1_000,
        );
        assert_eq!(state.action(1_000), TokenAction::Use);
        assert_eq!(state.token(1_000), Some("T"));
        assert_eq!(state.action(1_000 + 5_759), TokenAction::Use);
        assert_eq!(state.action(1_000 + 5_760), TokenAction::UseAndRefresh);
        assert_eq!(state.action(1_000 + 7_200), TokenAction::RefreshNow);
        state.invalidate();
        assert_eq!(state.action(1_001), TokenAction::RefreshNow);
    }
}
