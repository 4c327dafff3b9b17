//! Twilio wire types: form bodies with repeats, inbound SMS/MMS, status callbacks and the Messages API
//! (PROTOCOLS.md §2.1, §2.3, §2.4).

use std::time::Duration;

use serde::Deserialize;

use crate::error::{FailureReason, InboundError, SendFailure};

/// An `application/x-www-form-urlencoded` body in wire order, repeated names kept (needed for the signature).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    /// Parses a raw form body (`+` is a space, `%XX` decoded), strictly: a value that does not decode to UTF-8
    /// is refused rather than replaced, since the signature covers the exact decoded text.
    ///
    /// # Errors
    /// [`InboundError::Malformed`] when a decoded name or value is not UTF-8.
    pub fn parse(body: &[u8]) -> Result<Self, InboundError> {
        let decode = |raw: &[u8]| {
            let spaced: Vec<u8> = raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
            String::from_utf8(percent_decode(&spaced))
                .map_err(|_| InboundError::malformed("form body is not utf-8"))
        };
        let mut pairs = Vec::new();
        for part in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let mut halves = part.splitn(2, |&b| b == b'=');
            let name = decode(halves.next().unwrap_or_default())?;
            let value = decode(halves.next().unwrap_or_default())?;
            pairs.push((name, value));
        }
        Ok(Self(pairs))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, required.
    ///
    /// # Errors
    /// [`InboundError::Malformed`] when absent.
    pub fn require(&self, name: &str) -> Result<&str, InboundError> {
        self.get(name)
            .ok_or_else(|| InboundError::Malformed(format!("form field {name} is missing")))
    }
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                // Two hex digits make at most 255.
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// One media item of an MMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaItem {
    /// `MediaUrl{i}` (fetch it with the account's credentials).
    pub url: String,
    /// `MediaContentType{i}`.
    pub content_type: Option<String>,
}

/// An inbound SMS or MMS webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundSms {
    /// `MessageSid` (SM… or MM…): the dedupe key.
    pub message_sid: String,
    /// `AccountSid`.
    pub account_sid: String,
    /// `MessagingServiceSid`, when a Messaging Service is used.
    pub messaging_service_sid: Option<String>,
    /// `From` (E.164, or `whatsapp:+…` on other channels).
    pub from: String,
    /// `To`: our number.
    pub to: String,
    /// `Body`.
    pub body: String,
    /// `MediaUrl{i}` / `MediaContentType{i}` for i < `NumMedia`.
    pub media: Vec<MediaItem>,
    /// `NumSegments`.
    pub num_segments: Option<u32>,
}

impl InboundSms {
    /// Reads the fields we use; every other parameter is ignored (Twilio adds new ones without notice).
    ///
    /// # Errors
    /// [`InboundError::Malformed`] without `MessageSid`, `AccountSid`, `From` or `To`, or with a bad `NumMedia`.
    pub fn from_form(form: &Form) -> Result<Self, InboundError> {
        let num_media: usize = match form.get("NumMedia") {
            None | Some("") => 0,
            Some(n) => n
                .parse()
                .map_err(|_| InboundError::malformed("NumMedia is not a number"))?,
        };
        // Twilio allows at most 10 media per message; a larger count is not a Twilio request.
        if num_media > 10 {
            return Err(InboundError::malformed("NumMedia above 10"));
        }
        let media = (0..num_media)
            .map(|i| {
                Ok(MediaItem {
                    url: form.require(&format!("MediaUrl{i}"))?.to_owned(),
                    content_type: form.get(&format!("MediaContentType{i}")).map(str::to_owned),
                })
            })
            .collect::<Result<_, InboundError>>()?;
        Ok(Self {
            message_sid: form.require("MessageSid")?.to_owned(),
            account_sid: form.require("AccountSid")?.to_owned(),
            messaging_service_sid: form.get("MessagingServiceSid").map(str::to_owned),
            from: form.require("From")?.to_owned(),
            to: form.require("To")?.to_owned(),
            body: form.get("Body").unwrap_or_default().to_owned(),
            media,
            num_segments: form.get("NumSegments").and_then(|n| n.parse().ok()),
        })
    }
}

/// `MessageStatus` of an outbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageStatus {
    /// `queued`.
    Queued,
    /// `accepted` (Messaging Service).
    Accepted,
    /// `scheduled`.
    Scheduled,
    /// `sending`.
    Sending,
    /// `sent`.
    Sent,
    /// `delivered`.
    Delivered,
    /// `undelivered`.
    Undelivered,
    /// `failed`.
    Failed,
    /// `read` (WhatsApp, RCS).
    Read,
    /// `partially_delivered`.
    PartiallyDelivered,
    /// `canceled`.
    Canceled,
    /// `receiving` / `received` (inbound).
    Received,
    /// Anything new.
    Other(String),
}

impl MessageStatus {
    /// Parses Twilio's spelling.
    pub fn parse(s: &str) -> Self {
        match s {
            "queued" => Self::Queued,
            "accepted" => Self::Accepted,
            "scheduled" => Self::Scheduled,
            "sending" => Self::Sending,
            "sent" => Self::Sent,
            "delivered" => Self::Delivered,
            "undelivered" => Self::Undelivered,
            "failed" => Self::Failed,
            "read" => Self::Read,
            "partially_delivered" => Self::PartiallyDelivered,
            "canceled" => Self::Canceled,
            "receiving" | "received" => Self::Received,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Progress rank: callbacks arrive out of order, so a status only replaces one of lower rank.
    pub fn rank(&self) -> u8 {
        match self {
            Self::Queued | Self::Accepted | Self::Scheduled | Self::Other(_) | Self::Received => 0,
            Self::Sending => 1,
            Self::Sent => 2,
            Self::PartiallyDelivered => 3,
            Self::Delivered | Self::Undelivered | Self::Failed | Self::Canceled => 4,
            Self::Read => 5,
        }
    }

    /// Whether moving from `self` to `next` is progress (regressions and repeats are ignored).
    pub fn advances_to(&self, next: &Self) -> bool {
        next.rank() > self.rank()
    }

    /// Whether the message will not be delivered (the agent should see it).
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Undelivered | Self::Failed | Self::Canceled)
    }
}

/// A message status callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCallback {
    /// `MessageSid`.
    pub message_sid: String,
    /// `AccountSid`.
    pub account_sid: String,
    /// `MessageStatus`.
    pub status: MessageStatus,
    /// `ErrorCode` on failed / undelivered (e.g. 30003 unreachable handset).
    pub error_code: Option<u32>,
    /// `From`.
    pub from: Option<String>,
    /// `To`.
    pub to: Option<String>,
}

impl StatusCallback {
    /// Reads a status callback form.
    ///
    /// # Errors
    /// [`InboundError::Malformed`] without `MessageSid`, `AccountSid` or a status.
    pub fn from_form(form: &Form) -> Result<Self, InboundError> {
        let status = form
            .get("MessageStatus")
            .or_else(|| form.get("SmsStatus"))
            .ok_or_else(|| InboundError::malformed("MessageStatus is missing"))?;
        Ok(Self {
            message_sid: form.require("MessageSid")?.to_owned(),
            account_sid: form.require("AccountSid")?.to_owned(),
            status: MessageStatus::parse(status),
            error_code: form.get("ErrorCode").and_then(|c| c.parse().ok()),
            from: form.get("From").map(str::to_owned),
            to: form.get("To").map(str::to_owned),
        })
    }
}

/// Who sends an outbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A number of ours (`From`).
    From(String),
    /// A Messaging Service (`MessagingServiceSid`) for pooled senders.
    MessagingService(String),
}

/// A `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    /// Recipient (E.164).
    pub to: String,
    /// Sender.
    pub sender: Sender,
    /// Text.
    pub body: String,
    /// Media URLs (repeated `MediaUrl`).
    pub media_urls: Vec<String>,
    /// Where Twilio posts status callbacks.
    pub status_callback: Option<String>,
}

impl SendRequest {
    /// The path under the API base URL.
    pub fn path(account_sid: &str) -> String {
        format!("/2010-04-01/Accounts/{account_sid}/Messages.json")
    }

    /// The form body, fields in the order To, From / MessagingServiceSid, Body, MediaUrl…, StatusCallback.
    pub fn to_form(&self) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        s.append_pair("To", &self.to);
        match &self.sender {
            Sender::From(from) => s.append_pair("From", from),
            Sender::MessagingService(sid) => s.append_pair("MessagingServiceSid", sid),
        };
        if !self.body.is_empty() {
            s.append_pair("Body", &self.body);
        }
        for url in &self.media_urls {
            s.append_pair("MediaUrl", url);
        }
        if let Some(cb) = &self.status_callback {
            s.append_pair("StatusCallback", cb);
        }
        s.finish()
    }
}

/// The accepted message (`201`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SentMessage {
    /// `sid`: match later status callbacks with it.
    pub sid: String,
    /// Initial `status` (`queued` or `accepted`).
    pub status: String,
    /// `num_segments`, as a string in Twilio's JSON.
    #[serde(default)]
    pub num_segments: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    code: Option<u32>,
    #[serde(default)]
    message: String,
}

/// Reads a Messages API response. `retry_after` is the `Retry-After` header, if any.
///
/// 2xx → the message; 429 (or code 20429) → rate limited; 5xx → unavailable; 401/403 → misconfigured; 21211/21614
/// → invalid recipient; 21610 → opted out (STOP); 21617 and other content codes → content rejected; other 4xx →
/// rejected.
///
/// # Errors
/// The classified [`SendFailure`].
pub fn parse_send_response(
    http_status: u16,
    body: &[u8],
    retry_after: Option<&str>,
) -> Result<SentMessage, SendFailure> {
    if (200..300).contains(&http_status) {
        return serde_json::from_slice(body).map_err(SendFailure::malformed);
    }
    let err: Option<ApiError> = serde_json::from_slice(body).ok();
    let code = err.as_ref().and_then(|e| e.code);
    let message = err.as_ref().map(|e| e.message.as_str()).unwrap_or_default();
    if http_status == 429 || code == Some(20429) {
        let secs = retry_after.and_then(|r| r.trim().parse().ok()).unwrap_or(1);
        return Err(SendFailure::rate_limited(Duration::from_secs(secs)));
    }
    if http_status >= 500 {
        return Err(SendFailure::unavailable(format!(
            "twilio http {http_status}: {message}"
        )));
    }
    let reason = match (http_status, code) {
        (401 | 403, _) | (_, Some(20003 | 20404 | 21606 | 21408 | 21659)) => FailureReason::Misconfigured,
        (_, Some(21211 | 21614 | 21612)) => FailureReason::InvalidRecipient,
        (_, Some(21610)) => FailureReason::RecipientOptedOut,
        (_, Some(21617 | 21602 | 21619 | 21620 | 21621)) => FailureReason::ContentRejected,
        _ => FailureReason::Other,
    };
    let code_text = code.map_or_else(|| http_status.to_string(), |c| c.to_string());
    Err(SendFailure::rejected(code_text, message, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ConnectorError;
    use crate::util::{vectors, vstr};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn serialized_forms_parse_back_in_order_with_repeats(pairs in proptest::collection::vec(("\\PC{0,8}", "\\PC{0,16}"), 0..10)) {
            let mut s = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &pairs {
                s.append_pair(k, v);
            }
            let parsed = Form::parse(s.finish().as_bytes()).unwrap();

            prop_assert_eq!(parsed.0, pairs);
        }
    }

    #[test]
    fn raw_form_body_parses_to_the_vector_params() {
        let v = vectors();
        let case = &v["twilio"]["gateway_inbound_sms"];
        let form = Form::parse(vstr(case, &["raw_body_form_urlencoded"]).as_bytes()).unwrap();
        let expected = case["params"].as_object().unwrap();
        assert_eq!(form.0.len(), expected.len());
        for (k, val) in expected {
            assert_eq!(form.get(k), val.as_str(), "{k}");
        }
        assert_eq!(
            form.get("Body"),
            Some("Hi, I need help with order #1234 & a refund = 50% off? 谢谢 😀")
        );
    }

    #[test]
    fn repeats_are_kept_and_invalid_utf8_is_refused() {
        let form =
            Form::parse(b"MediaUrl=https%3A%2F%2Fx%2Fb&MediaUrl=https%3A%2F%2Fx%2Fa&Body=two+pics").unwrap();
        assert_eq!(form.0.iter().filter(|(k, _)| k == "MediaUrl").count(), 2);
        assert!(Form::parse(b"Body=%FF%FE").is_err());
        assert_eq!(
            Form::parse(b"Body=%EF%BF%BD").unwrap().get("Body"),
            Some("\u{FFFD}")
        );
    }

    #[test]
    fn inbound_sms_and_mms_read_the_fields() {
        let v = vectors();
        let raw = vstr(&v, &["twilio", "gateway_inbound_sms", "raw_body_form_urlencoded"]);
        let sms = InboundSms::from_form(&Form::parse(raw.as_bytes()).unwrap()).unwrap();
        assert_eq!(sms.message_sid, "SM0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
        assert_eq!(sms.from, "+14155550123");
        assert_eq!(sms.to, "+14155550100");
        assert!(sms.media.is_empty());
        assert_eq!(sms.num_segments, Some(1));
        let mms = Form::parse(
            b"MessageSid=MM1&AccountSid=AC1&From=%2B1&To=%2B2&NumMedia=2&MediaUrl0=https%3A%2F%2Fm%2F0&MediaContentType0=image%2Fjpeg&MediaUrl1=https%3A%2F%2Fm%2F1",
        )
        .unwrap();
        let mms = InboundSms::from_form(&mms).unwrap();
        assert_eq!(mms.media.len(), 2);
        assert_eq!(mms.media[0].content_type.as_deref(), Some("image/jpeg"));
        assert_eq!(mms.media[1].content_type, None);
        let broken = Form::parse(b"MessageSid=MM1&AccountSid=AC1&From=a&To=b&NumMedia=1").unwrap();
        assert_eq!(InboundSms::from_form(&broken).unwrap_err().http_status(), 400);
    }

    #[test]
    fn status_callback_reads_the_vector_and_only_moves_forward() {
        let v = vectors();
        let case = &v["twilio"]["gateway_message_status_callback"];
        let pairs: Vec<(String, String)> = case["params"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let cb = StatusCallback::from_form(&Form(pairs)).unwrap();
        assert_eq!(cb.message_sid, "SM0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d");
        assert_eq!(cb.status, MessageStatus::Undelivered);
        assert_eq!(cb.error_code, Some(30003));
        assert!(cb.status.is_failure());
        assert!(MessageStatus::Sent.advances_to(&MessageStatus::Delivered));
        assert!(!MessageStatus::Delivered.advances_to(&MessageStatus::Sent));
        assert!(!MessageStatus::Delivered.advances_to(&MessageStatus::Delivered));
        assert!(MessageStatus::Delivered.advances_to(&MessageStatus::Read));
        assert_eq!(
            MessageStatus::parse("brand_new"),
            MessageStatus::Other("brand_new".into())
        );
    }

    #[test]
    fn send_form_matches_the_documented_body() {
        let req = SendRequest {
            to: "+14155550123".into(),
            sender: Sender::From("+14155550100".into()),
            body: "Hello".into(),
            media_urls: vec![],
            status_callback: Some("https://gw.example.com/webhooks/twilio/sms-status".into()),
        };
        assert_eq!(
            req.to_form(),
            "To=%2B14155550123&From=%2B14155550100&Body=Hello&StatusCallback=https%3A%2F%2Fgw.example.com%2Fwebhooks%2Ftwilio%2Fsms-status"
        );
        let pooled = SendRequest {
            sender: Sender::MessagingService("MG1".into()),
            body: "a b&c".into(),
            media_urls: vec!["https://m/1".into(), "https://m/2".into()],
            status_callback: None,
            ..req
        };
        assert_eq!(
            pooled.to_form(),
            "To=%2B14155550123&MessagingServiceSid=MG1&Body=a+b%26c&MediaUrl=https%3A%2F%2Fm%2F1&MediaUrl=https%3A%2F%2Fm%2F2"
        );
        assert_eq!(SendRequest::path("AC1"), "/2010-04-01/Accounts/AC1/Messages.json");
    }

    #[test]
    fn send_responses_are_classified() {
        let ok = parse_send_response(
            201,
            br#"{"sid":"SM1","status":"queued","num_segments":"1","extra":true}"#,
            None,
        )
        .unwrap();
        assert_eq!(ok.sid, "SM1");
        let limited = parse_send_response(429, br#"{"code":20429,"message":"Too Many Requests"}"#, Some("7"))
            .unwrap_err();
        assert_eq!(
            limited.error,
            ConnectorError::RateLimited {
                retry_after: Duration::from_secs(7)
            }
        );
        let invalid = parse_send_response(
            400,
            br#"{"code":21211,"message":"Invalid 'To' Phone Number","status":400}"#,
            None,
        )
        .unwrap_err();
        assert_eq!(invalid.reason, FailureReason::InvalidRecipient);
        assert!(matches!(invalid.error, ConnectorError::Rejected { ref code, .. } if code == "21211"));
        let stop = parse_send_response(
            400,
            br#"{"code":21610,"message":"Attempt to send to unsubscribed recipient"}"#,
            None,
        )
        .unwrap_err();
        assert_eq!(stop.reason, FailureReason::RecipientOptedOut);
        assert!(!stop.error.is_retryable());
        let down = parse_send_response(503, b"<html>", None).unwrap_err();
        assert!(down.error.is_retryable());
        assert_eq!(
            parse_send_response(401, b"{}", None).unwrap_err().reason,
            FailureReason::Misconfigured
        );
        assert_eq!(
            parse_send_response(201, b"{", None).unwrap_err().error,
            ConnectorError::Malformed("EOF while parsing an object at line 1 column 1".into())
        );
    }
}
