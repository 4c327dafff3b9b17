//! WeChat Official Account (公众号) server push: URL check, plain / compatible / safe mode, XML and JSON bodies,
//! normalization, passive replies, and the customer-service API's pure half (PROTOCOLS.md §1).
//!
//! Entry points: [`OfficialAccount::verify_url`] for the GET check, [`OfficialAccount::receive`] for a POST,
//! [`OfficialAccount::encrypted_reply`] for an encrypted passive reply; [`api`] for the send API and tokens.

pub mod api;
pub mod crypto;
pub mod normalize;
pub mod signature;
pub mod window;
pub mod wire;

use crate::error::{InboundError, SignatureScheme};
use crate::model::InboundMessage;
use crate::xml::cdata;

use crypto::AesKey;
use window::WindowPolicy;
use wire::{BodyFormat, CallbackQuery, Fields, PushMessage};

/// Default body limit: real pushes are a few KB (compatible mode about 3× a plain one).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// One Official Account as configured in the console.
#[derive(Debug, Clone)]
pub struct OfficialAccount {
    /// The Token pasted in the console.
    pub token: String,
    /// The AppID (the receive id at the end of every encrypted payload).
    pub appid: String,
    /// The original id (`gh_…`); when set, pushes addressed elsewhere are refused.
    pub original_id: Option<String>,
    /// EncodingAESKeys, current first, then the previous one during a rotation. Empty for plain mode only.
    pub keys: Vec<AesKey>,
    /// Body size limit in bytes.
    pub max_body_bytes: usize,
    /// Customer-service window sizes and quotas.
    pub window: WindowPolicy,
}

/// How a push was protected, and so how to reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// Plain mode: reply in plaintext.
    Plain,
    /// Compatible or safe mode: the reply must be encrypted with `keys[key_index]`.
    Aes {
        /// Index into [`OfficialAccount::keys`] of the key that decrypted the push.
        key_index: usize,
    },
}

/// A verified, decrypted and normalized push.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The typed push.
    pub message: PushMessage,
    /// The normalized message for the session bus (with its dedupe key).
    pub inbound: InboundMessage,
    /// How to protect a passive reply.
    pub encryption: Encryption,
    /// The account's data format, to answer in kind.
    pub format: BodyFormat,
    /// The request nonce, echoed in an encrypted reply.
    pub nonce: String,
}

impl OfficialAccount {
    /// A plain-mode account with default limits.
    pub fn new(token: impl Into<String>, appid: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            appid: appid.into(),
            original_id: None,
            keys: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            window: WindowPolicy::default(),
        }
    }

    /// Adds an EncodingAESKey (call again for the previous key during a rotation).
    ///
    /// # Errors
    /// [`crypto::KeyError`] for a malformed key.
    pub fn with_key(mut self, encoding_aes_key: &str) -> Result<Self, crypto::KeyError> {
        self.keys.push(AesKey::from_encoding_aes_key(encoding_aes_key)?);
        Ok(self)
    }

    /// Sets the original id pushes must be addressed to.
    pub fn with_original_id(mut self, original_id: impl Into<String>) -> Self {
        self.original_id = Some(original_id.into());
        self
    }

    /// The GET URL check: verifies `signature` and returns the body to answer with `200 text/plain` (the raw
    /// `echostr`).
    ///
    /// # Errors
    /// [`InboundError::MissingSignature`] / [`InboundError::BadSignature`] (403); [`InboundError::Malformed`]
    /// without timestamp, nonce or echostr (400).
    pub fn verify_url(&self, raw_query: &str) -> Result<String, InboundError> {
        let q = CallbackQuery::parse(raw_query);
        self.check_signature(&q)?;
        Ok(CallbackQuery::require(&q.echostr, "echostr")?.to_owned())
    }

    fn check_signature(&self, q: &CallbackQuery) -> Result<(), InboundError> {
        let given = q
            .signature
            .as_deref()
            .ok_or(InboundError::MissingSignature(SignatureScheme::WechatSignature))?;
        let timestamp = CallbackQuery::require(&q.timestamp, "timestamp")?;
        let nonce = CallbackQuery::require(&q.nonce, "nonce")?;
        signature::verify_signature(&self.token, timestamp, nonce, given)
    }

    /// A POST: checks `signature` (every mode) and, with `encrypt_type=aes`, `msg_signature` over `Encrypt`,
    /// decrypts (trying each key), checks the AppID and `ToUserName`, parses XML or JSON and normalizes.
    /// Answer [`wire::ACK_BODY`] (`success`) right after handing the message on.
    ///
    /// # Errors
    /// See [`InboundError::http_status`]: 403 for signatures and foreign recipients, 413 for size, 400 otherwise.
    pub fn receive(
        &self,
        raw_query: &str,
        body: &[u8],
        received_at_ms: u64,
    ) -> Result<Received, InboundError> {
        crate::util::check_size(body, self.max_body_bytes)?;
        let q = CallbackQuery::parse(raw_query);
        self.check_signature(&q)?;
        let outer = Fields::parse(body, self.max_body_bytes)?;
        let (fields, raw, encryption) = if q.is_encrypted() {
            let encrypt = outer.require("Encrypt")?;
            let given = q.msg_signature.as_deref().ok_or(InboundError::MissingSignature(
                SignatureScheme::WechatMsgSignature,
            ))?;
            // Both were required by check_signature above.
            let timestamp = q.timestamp.as_deref().unwrap_or_default();
            let nonce = q.nonce.as_deref().unwrap_or_default();
            signature::verify_msg_signature(&self.token, timestamp, nonce, encrypt, given)?;
            let (key_index, decrypted) = crypto::decrypt_with_any(&self.keys, encrypt, &self.appid)?;
            let inner = Fields::parse(decrypted.msg.as_bytes(), self.max_body_bytes)?;
            (inner, decrypted.msg, Encryption::Aes { key_index })
        } else {
            let raw =
                String::from_utf8(body.to_vec()).map_err(|_| InboundError::malformed("body is not utf-8"))?;
            (outer.clone(), raw, Encryption::Plain)
        };
        let message = PushMessage::from_fields(&fields)?;
        if let Some(expected) = &self.original_id {
            if &message.to_user_name != expected {
                return Err(InboundError::WrongRecipient {
                    expected: expected.clone(),
                    got: message.to_user_name.clone(),
                });
            }
        }
        let inbound = normalize::to_inbound(&message, &raw, received_at_ms, &self.window);
        Ok(Received {
            message,
            inbound,
            encryption,
            format: outer.format,
            nonce: q.nonce.unwrap_or_default(),
        })
    }

    /// The body of an encrypted passive reply (safe / compatible mode), byte-exact with WeChat's and wechatpy's
    /// layout. `random16` must be fresh random bytes in production; `timestamp` is now (unix seconds); `nonce` is
    /// the request's.
    ///
    /// # Panics
    /// When `key_index` is out of range of [`OfficialAccount::keys`] (use the index [`Self::receive`] returned).
    pub fn encrypted_reply(
        &self,
        key_index: usize,
        plaintext: &str,
        timestamp: i64,
        nonce: &str,
        random16: &[u8; 16],
        format: BodyFormat,
    ) -> String {
        let encrypt = crypto::encrypt(&self.keys[key_index], random16, plaintext.as_bytes(), &self.appid);
        let ts = timestamp.to_string();
        let msg_signature = signature::msg_signature(&self.token, &ts, nonce, &encrypt);
        encrypted_reply_body(&encrypt, &msg_signature, timestamp, nonce, format)
    }
}

/// Lays out an encrypted reply: the XML layout of the docs and wechatpy, or the JSON object of JSON accounts.
pub fn encrypted_reply_body(
    encrypt: &str,
    msg_signature: &str,
    timestamp: i64,
    nonce: &str,
    format: BodyFormat,
) -> String {
    match format {
        BodyFormat::Xml => format!(
            "<xml>\n<Encrypt>{}</Encrypt>\n<MsgSignature>{}</MsgSignature>\n<TimeStamp>{timestamp}</TimeStamp>\n\
             <Nonce>{}</Nonce>\n</xml>",
            cdata(encrypt),
            cdata(msg_signature),
            cdata(nonce)
        ),
        BodyFormat::Json => format!(
            "{{\"Encrypt\":{},\"MsgSignature\":{},\"TimeStamp\":{timestamp},\"Nonce\":{}}}",
            serde_json::Value::from(encrypt),
            serde_json::Value::from(msg_signature),
            serde_json::Value::from(nonce)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Content;
    use crate::util::{vectors, vstr};
    use proptest::prelude::*;

    fn gateway_account(v: &serde_json::Value) -> OfficialAccount {
        let gw = &v["wechat"]["gateway_vectors"];
        OfficialAccount::new(vstr(gw, &["token"]), vstr(gw, &["appid"]))
            .with_key(vstr(gw, &["encoding_aes_key"]))
            .unwrap()
            .with_original_id("gh_0123456789ab")
    }

    #[test]
    fn official_url_check_echoes_echostr() {
        let v = vectors();
        let doc = &v["wechat"]["official_doc_vectors"];
        let u = &doc["url_verification"];
        let account = OfficialAccount::new(vstr(doc, &["token"]), "wx");
        let query = format!(
            "signature={}&timestamp={}&nonce={}&echostr={}",
            vstr(u, &["expected_signature"]),
            vstr(u, &["timestamp"]),
            vstr(u, &["nonce"]),
            vstr(u, &["echostr"])
        );
        assert_eq!(
            account.verify_url(&query).unwrap(),
            vstr(u, &["expected_response_body"])
        );
    }

    #[test]
    fn gateway_url_check_answers_the_exact_body_and_rejects_a_bad_signature() {
        let v = vectors();
        let g = &v["wechat"]["gateway_url_verification"];
        let account = OfficialAccount::new(vstr(g, &["token"]), "wx");
        let query = vstr(g, &["request"]).split_once('?').unwrap().1;
        assert_eq!(
            account.verify_url(query).unwrap(),
            vstr(g, &["expected_response", "body"])
        );
        assert_eq!(g["expected_response"]["status"], 200);
        let bad = query.replace(
            vstr(g, &["expected_signature"]),
            vstr(g, &["negative", "signature_with_nonce_n0nce2"]),
        );
        assert_eq!(account.verify_url(&bad).unwrap_err().http_status(), 403);
        let missing = query.replace("signature=", "sig=");
        assert_eq!(
            account.verify_url(&missing),
            Err(InboundError::MissingSignature(SignatureScheme::WechatSignature))
        );
    }

    #[test]
    fn gateway_safe_mode_request_verifies_decrypts_and_normalizes() {
        let v = vectors();
        let s = &v["wechat"]["gateway_vectors"]["safe_mode_inbound_text"];
        let req = &s["request"];
        let query = vstr(req, &["path_and_query"]).split_once('?').unwrap().1;
        let got = gateway_account(&v)
            .receive(query, vstr(req, &["body"]).as_bytes(), 1_700_000_000_123)
            .unwrap();
        assert_eq!(got.encryption, Encryption::Aes { key_index: 0 });
        assert_eq!(got.format, BodyFormat::Xml);
        assert_eq!(got.nonce, "n0nce");
        assert_eq!(got.inbound.raw, vstr(s, &["plaintext_xml"]));
        assert_eq!(
            got.inbound.content,
            Content::Text {
                text: "你好，我要退款 order#42 & <test>".into()
            }
        );
        assert_eq!(got.inbound.from.value, vstr(s, &["openid"]));
        assert_eq!(
            format!("MsgId={}", got.inbound.external_message_id),
            vstr(s, &["dedupe_key"])
        );
        assert_eq!(
            got.inbound.dedupe_key,
            "wechat_oa:gh_0123456789ab:msg:24300000000000001"
        );
    }

    #[test]
    fn tampered_encrypt_is_rejected_by_msg_signature() {
        let v = vectors();
        let req = &v["wechat"]["gateway_vectors"]["safe_mode_inbound_text"]["request"];
        let query = vstr(req, &["path_and_query"]).split_once('?').unwrap().1;
        let body = vstr(req, &["body"]).replacen("e1QO5Qe5", "e1QO5Qe6", 1);
        let err = gateway_account(&v)
            .receive(query, body.as_bytes(), 0)
            .unwrap_err();
        assert_eq!(
            err,
            InboundError::BadSignature(SignatureScheme::WechatMsgSignature)
        );
        assert_eq!(err.http_status(), 403);
        let no_msg_sig = query.replace("&msg_signature=", "&x=");
        assert_eq!(
            gateway_account(&v)
                .receive(&no_msg_sig, vstr(req, &["body"]).as_bytes(), 0)
                .unwrap_err(),
            InboundError::MissingSignature(SignatureScheme::WechatMsgSignature)
        );
    }

    #[test]
    fn wrong_appid_and_wrong_account_are_refused() {
        let v = vectors();
        let req = &v["wechat"]["gateway_vectors"]["safe_mode_inbound_text"]["request"];
        let query = vstr(req, &["path_and_query"]).split_once('?').unwrap().1;
        let mut account = gateway_account(&v);
        account.appid = "wx0000000000000000".into();
        assert!(matches!(
            account.receive(query, vstr(req, &["body"]).as_bytes(), 0),
            Err(InboundError::WrongRecipient { .. })
        ));
        let other = gateway_account(&v).with_original_id("gh_someone_else");
        assert_eq!(
            other
                .receive(query, vstr(req, &["body"]).as_bytes(), 0)
                .unwrap_err()
                .http_status(),
            403
        );
    }

    #[test]
    fn official_json_safe_mode_inbound_is_received() {
        let v = vectors();
        let doc = &v["wechat"]["official_doc_vectors"];
        let s = &doc["safe_mode_inbound"];
        assert_eq!(vstr(s, &["body_format"]), "json");
        let account = OfficialAccount::new(vstr(doc, &["token"]), vstr(s, &["appid"]))
            .with_key(vstr(s, &["encoding_aes_key"]))
            .unwrap()
            .with_original_id("gh_97417a04a28d");
        let query = format!(
            "signature={}&timestamp={}&nonce={}&openid={}&encrypt_type=aes&msg_signature={}",
            vstr(s, &["expected_signature"]),
            vstr(s, &["timestamp"]),
            vstr(s, &["nonce"]),
            vstr(s, &["openid"]),
            vstr(s, &["expected_msg_signature"])
        );
        let body = serde_json::to_vec(&s["body"]).unwrap();
        let got = account.receive(&query, &body, 0).unwrap();
        assert_eq!(got.format, BodyFormat::Json);
        assert_eq!(got.inbound.raw, vstr(s, &["expected_plaintext"]));
        assert_eq!(
            got.inbound.content,
            Content::Event {
                name: "debug_demo".into(),
                detail: String::new()
            }
        );
        assert_eq!(
            got.inbound.dedupe_key,
            "wechat_oa:gh_97417a04a28d:event:o9AgO5Kd5ggOC-bXrbNODIiE3bGY|1714112445|debug_demo|"
        );
    }

    #[test]
    fn official_json_reply_matches() {
        let v = vectors();
        let doc = &v["wechat"]["official_doc_vectors"];
        let r = &doc["safe_mode_reply"];
        let account = OfficialAccount::new(vstr(doc, &["token"]), vstr(r, &["appid"]))
            .with_key(vstr(r, &["encoding_aes_key"]))
            .unwrap();
        let ts: i64 = vstr(r, &["timestamp"]).parse().unwrap();
        let random16: [u8; 16] = vstr(r, &["random16"]).as_bytes().try_into().unwrap();
        let body = account.encrypted_reply(
            0,
            vstr(r, &["plaintext"]),
            ts,
            vstr(r, &["nonce"]),
            &random16,
            BodyFormat::Json,
        );
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed, r["expected_reply_body_json"]);
    }

    #[test]
    fn gateway_passive_reply_is_byte_exact() {
        let v = vectors();
        let s = &v["wechat"]["gateway_vectors"]["safe_mode_passive_reply_text"];
        let random16: [u8; 16] = vstr(s, &["random16"]).as_bytes().try_into().unwrap();
        let ts: i64 = vstr(s, &["timestamp"]).parse().unwrap();
        let body = gateway_account(&v).encrypted_reply(
            0,
            vstr(s, &["plaintext_xml"]),
            ts,
            vstr(s, &["nonce"]),
            &random16,
            BodyFormat::Xml,
        );
        assert_eq!(body, vstr(s, &["expected_response_body"]));
        let k = &gateway_account(&v).keys[0];
        let encrypt = crypto::encrypt(
            k,
            &random16,
            vstr(s, &["plaintext_xml"]).as_bytes(),
            "wx5f1e2d3c4b5a6978",
        );
        assert_eq!(encrypt, vstr(s, &["expected_encrypt"]));
        assert_eq!(
            signature::msg_signature("gatewaytoken", "1700000001", "n0nce", &encrypt),
            vstr(s, &["expected_msg_signature"])
        );
        let d = crypto::decrypt(k, &encrypt, "wx5f1e2d3c4b5a6978").unwrap();
        assert_eq!(d.pad as u64, s["pkcs7_pad"].as_u64().unwrap());
        assert_eq!(
            (20 + d.msg.len() + d.receive_id.len()) as u64,
            s["fullstr_bytes"].as_u64().unwrap()
        );
        assert_eq!(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &encrypt)
                .unwrap()
                .len() as u64,
            s["ciphertext_bytes"].as_u64().unwrap()
        );
    }

    #[test]
    fn plain_mode_post_is_received_and_checked() {
        let v = vectors();
        let doc = &v["wechat"]["official_doc_vectors"];
        let p = &doc["plain_mode_post"];
        let account = OfficialAccount::new(vstr(doc, &["token"]), "wx");
        let query = format!(
            "signature={}&timestamp={}&nonce={}",
            vstr(p, &["expected_signature"]),
            vstr(p, &["timestamp"]),
            vstr(p, &["nonce"])
        );
        let body = "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>\n<FromUserName><![CDATA[oGw_user_openid_000000000001]]></FromUserName>\n<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[你好]]></Content><MsgId>24300000000000001</MsgId></xml>";
        let got = account.receive(&query, body.as_bytes(), 0).unwrap();
        assert_eq!(got.encryption, Encryption::Plain);
        assert_eq!(got.inbound.raw, body);
        let wrong = query.replace("nonce=", "nonce=1");
        assert_eq!(
            account
                .receive(&wrong, body.as_bytes(), 0)
                .unwrap_err()
                .http_status(),
            403
        );
        let mut small = account.clone();
        small.max_body_bytes = 16;
        assert_eq!(
            small
                .receive(&query, body.as_bytes(), 0)
                .unwrap_err()
                .http_status(),
            413
        );
        let xxe =
            r#"<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Content>&e;</Content></xml>"#;
        assert!(matches!(
            account.receive(&query, xxe.as_bytes(), 0),
            Err(InboundError::UnsafeXml(_))
        ));
    }

    #[test]
    fn compatible_mode_uses_the_encrypted_part() {
        let v = vectors();
        let s = &v["wechat"]["gateway_vectors"]["safe_mode_inbound_text"];
        let req = &s["request"];
        let query = vstr(req, &["path_and_query"]).split_once('?').unwrap().1;
        let compat = format!(
            "<xml><ToUserName>gh_0123456789ab</ToUserName><FromUserName>forged</FromUserName><CreateTime>1</CreateTime>\
             <MsgType>text</MsgType><Content>forged</Content><MsgId>1</MsgId><Encrypt>{}</Encrypt></xml>",
            vstr(s, &["expected_encrypt"])
        );
        let got = gateway_account(&v).receive(query, compat.as_bytes(), 0).unwrap();
        assert_eq!(got.inbound.from.value, "oGw_user_openid_000000000001");
    }

    proptest! {
        #[test]
        fn reply_encrypt_then_receive_round_trips(text in "[^\\x00]{0,200}", r in any::<[u8; 16]>(), ts in 1_600_000_000i64..1_900_000_000) {
            let v = vectors();
            let account = gateway_account(&v);
            let inner = format!(
                "<xml><ToUserName>gh_0123456789ab</ToUserName><FromUserName>oUser</FromUserName><CreateTime>{ts}</CreateTime><MsgType>text</MsgType><Content>{}</Content><MsgId>9</MsgId></xml>",
                cdata(&text)
            );
            let body = account.encrypted_reply(0, &inner, ts, "n", &r, BodyFormat::Xml);
            let doc = crate::xml::parse_flat(body.as_bytes(), 1 << 20).unwrap();
            let sig = signature::signature(&account.token, &ts.to_string(), "n");
            let query = format!("signature={sig}&timestamp={ts}&nonce=n&encrypt_type=aes&msg_signature={}", doc.require("MsgSignature").unwrap());
            let got = account.receive(&query, body.as_bytes(), 0).unwrap();
            prop_assert_eq!(got.inbound.content, Content::Text { text });
        }
    }
}
