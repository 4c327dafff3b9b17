//! Twilio SMS/MMS: `X-Twilio-Signature` validation over the public URL, form parsing with repeats, inbound
//! normalization, status callbacks and the Messages API's request and response (PROTOCOLS.md §2.1–§2.4).
//!
//! Entry points: [`TwilioWebhook::verify_form`] / [`TwilioWebhook::verify_json`] on raw requests,
//! [`TwilioWebhook::receive_sms`] and [`TwilioWebhook::receive_status`]; [`wire::SendRequest`] and
//! [`wire::parse_send_response`] for sending.

pub mod normalize;
pub mod signature;
pub mod wire;

use crate::error::{InboundError, SignatureScheme};
use crate::model::InboundMessage;
use signature::{Algorithm, SignatureSettings};
use wire::{Form, InboundSms, StatusCallback};

/// Default body limit: an SMS webhook is a few KB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// The TwiML answer meaning "no reply now" (`Content-Type: text/xml`).
pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

/// One Twilio account's webhook settings.
#[derive(Debug, Clone)]
pub struct TwilioWebhook {
    /// The public base URL Twilio calls (`https://gateway.example.com`), never the address seen behind a proxy.
    pub public_base_url: String,
    /// Auth tokens: the primary, then the secondary during a rotation.
    pub auth_tokens: Vec<String>,
    /// SharedKey secrets by key id, for the opt-in HMAC-SHA256 mode; empty disables that mode.
    pub shared_keys: Vec<(String, String)>,
    /// Our AccountSid; when set, webhooks of other accounts are refused.
    pub account_sid: Option<String>,
    /// Body size limit in bytes.
    pub max_body_bytes: usize,
}

/// The parts of a webhook request the signature depends on.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// The external path Twilio called (`/webhooks/twilio/sms`).
    pub path: &'a str,
    /// The raw query string without `?`, exactly as received.
    pub raw_query: Option<&'a str>,
    /// The raw body.
    pub body: &'a [u8],
    /// `X-Twilio-Signature`.
    pub signature: Option<&'a str>,
    /// `X-Twilio-Webhooks-Signature-Settings`.
    pub signature_settings: Option<&'a str>,
}

/// Joins the configured public base URL, the path and the raw query into the URL Twilio signed.
pub fn public_url(base: &str, path: &str, raw_query: Option<&str>) -> String {
    let mut url = base.trim_end_matches('/').to_owned();
    if !path.starts_with('/') {
        url.push('/');
    }
    url.push_str(path);
    if let Some(q) = raw_query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(q);
    }
    url
}

impl TwilioWebhook {
    /// Settings with one auth token and the default limit.
    pub fn new(public_base_url: impl Into<String>, auth_token: impl Into<String>) -> Self {
        Self {
            public_base_url: public_base_url.into(),
            auth_tokens: vec![auth_token.into()],
            shared_keys: Vec::new(),
            account_sid: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// The URL Twilio signed for `req`.
    pub fn url_for(&self, req: &SignedRequest<'_>) -> String {
        public_url(&self.public_base_url, req.path, req.raw_query)
    }

    fn keys(&self, req: &SignedRequest<'_>) -> Result<(Algorithm, Vec<&str>), InboundError> {
        let Some(header) = req.signature_settings else {
            return Ok((
                Algorithm::HmacSha1,
                self.auth_tokens.iter().map(String::as_str).collect(),
            ));
        };
        let settings = SignatureSettings::parse(header)?;
        let secret = self
            .shared_keys
            .iter()
            .find(|(id, _)| *id == settings.key_id)
            .map(|(_, secret)| secret.as_str())
            .ok_or(InboundError::BadSignature(SignatureScheme::Twilio))?;
        Ok((settings.algorithm, vec![secret]))
    }

    /// Verifies a form webhook over every parameter received and returns the parsed form.
    ///
    /// # Errors
    /// 413 over the size limit; 403 for a missing or bad signature; 400 for a body that is not UTF-8.
    pub fn verify_form(&self, req: &SignedRequest<'_>) -> Result<Form, InboundError> {
        crate::util::check_size(req.body, self.max_body_bytes)?;
        let given = req
            .signature
            .ok_or(InboundError::MissingSignature(SignatureScheme::Twilio))?;
        let form = Form::parse(req.body)?;
        let (algorithm, keys) = self.keys(req)?;
        signature::verify(algorithm, &keys, &self.url_for(req), &form.0, given)?;
        Ok(form)
    }

    /// Verifies a non-form (JSON) webhook: `bodySHA256` in the URL and the signature over the URL.
    ///
    /// # Errors
    /// 413 over the size limit; 403 for a missing or bad signature or body hash.
    pub fn verify_json(&self, req: &SignedRequest<'_>) -> Result<(), InboundError> {
        crate::util::check_size(req.body, self.max_body_bytes)?;
        let given = req
            .signature
            .ok_or(InboundError::MissingSignature(SignatureScheme::Twilio))?;
        let (algorithm, keys) = self.keys(req)?;
        signature::verify_body_hash(algorithm, &keys, &self.url_for(req), req.body, given)
    }

    fn check_account(&self, account_sid: &str) -> Result<(), InboundError> {
        match &self.account_sid {
            Some(expected) if expected != account_sid => Err(InboundError::WrongRecipient {
                expected: expected.clone(),
                got: account_sid.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// An inbound SMS/MMS webhook: verify, parse, check the account, normalize. Answer [`EMPTY_TWIML`].
    ///
    /// # Errors
    /// As [`Self::verify_form`]; 403 for another AccountSid; 400 for missing fields.
    pub fn receive_sms(
        &self,
        req: &SignedRequest<'_>,
        received_at_ms: u64,
    ) -> Result<(InboundSms, Vec<InboundMessage>), InboundError> {
        let form = self.verify_form(req)?;
        let sms = InboundSms::from_form(&form)?;
        self.check_account(&sms.account_sid)?;
        // verify_form proved the body is UTF-8 form data.
        let raw = String::from_utf8_lossy(req.body);
        let messages = normalize::to_inbound(&sms, &raw, received_at_ms);
        Ok((sms, messages))
    }

    /// A message status callback: verify, parse, check the account.
    ///
    /// # Errors
    /// As [`Self::receive_sms`].
    pub fn receive_status(&self, req: &SignedRequest<'_>) -> Result<StatusCallback, InboundError> {
        let form = self.verify_form(req)?;
        let cb = StatusCallback::from_form(&form)?;
        self.check_account(&cb.account_sid)?;
        Ok(cb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Content;
    use crate::util::{vectors, vstr};

    fn gateway(v: &serde_json::Value) -> TwilioWebhook {
        let mut hook = TwilioWebhook::new(
            "https://gateway.example.com/",
            vstr(v, &["twilio", "gateway_inbound_sms", "auth_token"]),
        );
        hook.account_sid = Some("ACa1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1".into());
        hook
    }

    fn sms_request<'a>(v: &'a serde_json::Value, body: &'a [u8]) -> SignedRequest<'a> {
        SignedRequest {
            path: "/webhooks/twilio/sms",
            raw_query: None,
            body,
            signature: Some(vstr(v, &["twilio", "gateway_inbound_sms", "expected_signature"])),
            signature_settings: None,
        }
    }

    #[test]
    fn url_is_rebuilt_from_the_public_base() {
        assert_eq!(
            public_url("https://gw.example.com/", "/a/b", Some("x=1&y=2")),
            "https://gw.example.com/a/b?x=1&y=2"
        );
        assert_eq!(
            public_url("https://gw.example.com", "a", Some("")),
            "https://gw.example.com/a"
        );
    }

    #[test]
    fn gateway_sms_raw_body_parses_validates_and_normalizes() {
        let v = vectors();
        let raw = vstr(&v, &["twilio", "gateway_inbound_sms", "raw_body_form_urlencoded"]);
        let hook = gateway(&v);
        let req = sms_request(&v, raw.as_bytes());
        assert_eq!(
            hook.url_for(&req),
            vstr(&v, &["twilio", "gateway_inbound_sms", "url"])
        );
        let (sms, msgs) = hook.receive_sms(&req, 42).unwrap();
        assert_eq!(sms.message_sid, "SM0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
        assert_eq!(msgs.len(), 1);
        assert_eq!(
            msgs[0].dedupe_key,
            "sms_twilio:+14155550100:msg:SM0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"
        );
        assert_eq!(
            msgs[0].content,
            Content::Text {
                text: "Hi, I need help with order #1234 & a refund = 50% off? 谢谢 😀".into()
            }
        );
        assert_eq!(msgs[0].raw, raw);
    }

    #[test]
    fn tampered_body_and_missing_signature_fail() {
        let v = vectors();
        assert_eq!(
            v["twilio"]["gateway_inbound_sms"]["tampered_body_must_fail"],
            true
        );
        let raw = vstr(&v, &["twilio", "gateway_inbound_sms", "raw_body_form_urlencoded"])
            .replace("50%25", "60%25");
        let hook = gateway(&v);
        let err = hook.receive_sms(&sms_request(&v, raw.as_bytes()), 0).unwrap_err();
        assert_eq!(err, InboundError::BadSignature(SignatureScheme::Twilio));
        let unsigned = SignedRequest {
            signature: None,
            ..sms_request(&v, raw.as_bytes())
        };
        assert_eq!(hook.verify_form(&unsigned).unwrap_err().http_status(), 403);
        let mut small = hook.clone();
        small.max_body_bytes = 10;
        assert_eq!(
            small
                .verify_form(&sms_request(&v, raw.as_bytes()))
                .unwrap_err()
                .http_status(),
            413
        );
    }

    #[test]
    fn behind_a_proxy_the_internal_url_would_fail() {
        let v = vectors();
        let raw = vstr(&v, &["twilio", "gateway_inbound_sms", "raw_body_form_urlencoded"]);
        let mut internal = gateway(&v);
        internal.public_base_url = "http://10.0.0.5:8080".into();
        assert!(internal.verify_form(&sms_request(&v, raw.as_bytes())).is_err());
        let mut with_port = gateway(&v);
        with_port.public_base_url = "https://gateway.example.com:443".into();
        assert!(with_port.verify_form(&sms_request(&v, raw.as_bytes())).is_ok());
    }

    #[test]
    fn other_accounts_are_refused() {
        let v = vectors();
        let raw = vstr(&v, &["twilio", "gateway_inbound_sms", "raw_body_form_urlencoded"]);
        let mut hook = gateway(&v);
        hook.account_sid = Some("AC000".into());
        assert_eq!(
            hook.receive_sms(&sms_request(&v, raw.as_bytes()), 0)
                .unwrap_err()
                .http_status(),
            403
        );
    }

    #[test]
    fn status_callback_with_query_string_validates() {
        let v = vectors();
        let case = &v["twilio"]["gateway_message_status_callback"];
        let body: String = {
            let mut s = url::form_urlencoded::Serializer::new(String::new());
            for (k, val) in case["params"].as_object().unwrap() {
                s.append_pair(k, val.as_str().unwrap());
            }
            s.finish()
        };
        let req = SignedRequest {
            path: "/webhooks/twilio/sms-status",
            raw_query: Some("tenant=acme"),
            body: body.as_bytes(),
            signature: Some(vstr(case, &["expected_signature"])),
            signature_settings: None,
        };
        let cb = gateway(&v).receive_status(&req).unwrap();
        assert_eq!(cb.error_code, Some(30003));
        let no_query = SignedRequest {
            raw_query: None,
            ..req
        };
        assert!(gateway(&v).receive_status(&no_query).is_err());
    }

    #[test]
    fn json_variant_and_shared_key_mode_through_the_webhook() {
        let v = vectors();
        let j = &v["twilio"]["gateway_json_body_variant"];
        let hook = gateway(&v);
        let url = vstr(j, &["url"]);
        let (path, query) = url
            .trim_start_matches("https://gateway.example.com")
            .split_once('?')
            .unwrap();
        let req = SignedRequest {
            path,
            raw_query: Some(query),
            body: vstr(j, &["raw_body"]).as_bytes(),
            signature: Some(vstr(j, &["expected_signature"])),
            signature_settings: None,
        };
        hook.verify_json(&req).unwrap();
        let tampered = SignedRequest { body: b"{}", ..req };
        assert_eq!(hook.verify_json(&tampered).unwrap_err().http_status(), 403);

        let sk = &v["twilio"]["shared_key_hmac_sha256_variant"];
        let raw = vstr(&v, &["twilio", "gateway_inbound_sms", "raw_body_form_urlencoded"]);
        let settings = "key=SK1,algorithm=HMAC_SHA256";
        let signed = SignedRequest {
            signature: Some(vstr(sk, &["expected_signature"])),
            signature_settings: Some(settings),
            ..sms_request(&v, raw.as_bytes())
        };
        assert_eq!(
            hook.verify_form(&signed).unwrap_err(),
            InboundError::BadSignature(SignatureScheme::Twilio)
        );
        let mut opted_in = hook.clone();
        opted_in.shared_keys = vec![("SK1".into(), vstr(sk, &["secret"]).into())];
        opted_in.verify_form(&signed).unwrap();
    }
}
