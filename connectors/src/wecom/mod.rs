//! WeChat Customer Service (微信客服, WeCom kf): the encrypted callback is a doorbell, messages are pulled with
//! `kf/sync_msg`, replies go through `kf/send_msg` (PROTOCOLS.md §1.9).
//!
//! Entry points: [`KfCallback::verify_url`] (GET with an encrypted `echostr`), [`KfCallback::receive`] (POST
//! doorbell), [`wire::SyncMsgRequest`] / [`wire::SyncMsgResponse`] for the pull, [`normalize::to_inbound`], and
//! [`wire::send_text`] / [`wire::parse_send_response`] for replies.

pub mod normalize;
pub mod wire;

use crate::error::{InboundError, SignatureScheme};
use crate::wechat::crypto::{self, AesKey};
use crate::wechat::signature;
use crate::wechat::wire::{CallbackQuery, Fields};

/// Default body limit for callbacks.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// The callback settings of one WeCom application that receives kf events.
#[derive(Debug, Clone)]
pub struct KfCallback {
    /// The callback Token.
    pub token: String,
    /// The CorpID: the receive id at the end of every payload.
    pub corp_id: String,
    /// EncodingAESKeys, current first.
    pub keys: Vec<AesKey>,
    /// Body size limit in bytes.
    pub max_body_bytes: usize,
}

/// The kf doorbell: there is news for `open_kf_id`; pull it with `token` within 10 minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doorbell {
    /// The CorpID the callback was addressed to.
    pub to_user_name: String,
    /// Unix seconds.
    pub create_time: i64,
    /// The sync token, passed to `kf/sync_msg` (valid 10 minutes).
    pub token: String,
    /// The customer-service account with news.
    pub open_kf_id: String,
}

/// A verified, decrypted callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    /// `kf_msg_or_event`: pull with `kf/sync_msg`.
    KfMsgOrEvent(Doorbell),
    /// Any other callback the application receives (tolerated; the caller may ignore it).
    Other {
        /// `MsgType`.
        msg_type: String,
        /// `Event`, when it is an event.
        event: Option<String>,
        /// The decrypted payload.
        plaintext: String,
    },
}

impl KfCallback {
    /// Settings with one key and the default size limit.
    ///
    /// # Errors
    /// [`crypto::KeyError`] for a malformed EncodingAESKey.
    pub fn new(
        token: impl Into<String>,
        corp_id: impl Into<String>,
        encoding_aes_key: &str,
    ) -> Result<Self, crypto::KeyError> {
        Ok(Self {
            token: token.into(),
            corp_id: corp_id.into(),
            keys: vec![AesKey::from_encoding_aes_key(encoding_aes_key)?],
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        })
    }

    /// The GET URL check: verifies `msg_signature` over the encrypted `echostr`, decrypts it and returns the
    /// plaintext to answer with `200`.
    ///
    /// # Errors
    /// 403 for a missing or bad signature or a foreign CorpID; 400 for missing parameters or bad ciphertext.
    pub fn verify_url(&self, raw_query: &str) -> Result<String, InboundError> {
        let q = CallbackQuery::parse(raw_query);
        // Base64 never contains spaces: a '+' that reached us unencoded was turned into one by form decoding.
        let echostr = CallbackQuery::require(&q.echostr, "echostr")?.replace(' ', "+");
        self.check(&q, &echostr)?;
        Ok(crypto::decrypt_with_any(&self.keys, &echostr, &self.corp_id)?
            .1
            .msg)
    }

    fn check(&self, q: &CallbackQuery, encrypted: &str) -> Result<(), InboundError> {
        let given = q.msg_signature.as_deref().ok_or(InboundError::MissingSignature(
            SignatureScheme::WechatMsgSignature,
        ))?;
        signature::verify_msg_signature(
            &self.token,
            CallbackQuery::require(&q.timestamp, "timestamp")?,
            CallbackQuery::require(&q.nonce, "nonce")?,
            encrypted,
            given,
        )
    }

    /// A POST callback: verifies `msg_signature` over `Encrypt`, decrypts, checks the CorpID and reads the event.
    /// Answer `success` at once and pull in the background.
    ///
    /// # Errors
    /// As [`InboundError::http_status`] says: 403 signature / CorpID, 413 size, 400 malformed.
    pub fn receive(&self, raw_query: &str, body: &[u8]) -> Result<Callback, InboundError> {
        crate::util::check_size(body, self.max_body_bytes)?;
        let q = CallbackQuery::parse(raw_query);
        let outer = Fields::parse(body, self.max_body_bytes)?;
        let encrypt = outer.require("Encrypt")?;
        self.check(&q, encrypt)?;
        let (_, decrypted) = crypto::decrypt_with_any(&self.keys, encrypt, &self.corp_id)?;
        let inner = Fields::parse(decrypted.msg.as_bytes(), self.max_body_bytes)?;
        let msg_type = inner.require("MsgType")?;
        let event = inner.get("Event");
        if msg_type == "event" && event == Some("kf_msg_or_event") {
            return Ok(Callback::KfMsgOrEvent(Doorbell {
                to_user_name: inner.require("ToUserName")?.to_owned(),
                create_time: inner
                    .require("CreateTime")?
                    .trim()
                    .parse()
                    .map_err(|_| InboundError::malformed("CreateTime is not an integer"))?,
                token: inner.require("Token")?.to_owned(),
                open_kf_id: inner.require("OpenKfId")?.to_owned(),
            }));
        }
        Ok(Callback::Other {
            msg_type: msg_type.to_owned(),
            event: event.map(str::to_owned),
            plaintext: decrypted.msg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{hex, vectors, vstr};

    fn callback(v: &serde_json::Value) -> KfCallback {
        let w = &v["wechat"]["wecom_callback_vectors"];
        KfCallback::new(
            vstr(w, &["token"]),
            vstr(w, &["receive_id_corpid"]),
            vstr(w, &["encoding_aes_key"]),
        )
        .unwrap()
    }

    fn enc(s: &str) -> String {
        url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }

    #[test]
    fn url_verification_decrypts_echostr() {
        let v = vectors();
        let u = &v["wechat"]["wecom_callback_vectors"]["url_verification"];
        let query = format!(
            "msg_signature={}&timestamp={}&nonce={}&echostr={}",
            vstr(u, &["msg_signature"]),
            vstr(u, &["timestamp"]),
            vstr(u, &["nonce"]),
            enc(vstr(u, &["echostr"]))
        );
        let cb = callback(&v);
        assert_eq!(
            cb.verify_url(&query).unwrap(),
            vstr(u, &["expected_response_body"])
        );
        let d = crypto::decrypt(&cb.keys[0], vstr(u, &["echostr"]), &cb.corp_id).unwrap();
        assert_eq!(hex(&d.random16), vstr(u, &["expected_random16_hex"]));
        // An echostr whose '+' arrived unencoded still verifies.
        let raw_plus = query.replace(&enc(vstr(u, &["echostr"])), vstr(u, &["echostr"]));
        assert_eq!(
            cb.verify_url(&raw_plus).unwrap(),
            vstr(u, &["expected_response_body"])
        );
        let tampered = query.replace("nonce=437374425", "nonce=437374426");
        assert_eq!(cb.verify_url(&tampered).unwrap_err().http_status(), 403);
    }

    #[test]
    fn inbound_post_decrypts_to_the_expected_plaintext() {
        let v = vectors();
        let p = &v["wechat"]["wecom_callback_vectors"]["inbound_post"];
        let cb = callback(&v);
        let query = format!(
            "msg_signature={}&timestamp={}&nonce={}",
            vstr(p, &["msg_signature"]),
            vstr(p, &["timestamp"]),
            vstr(p, &["nonce"])
        );
        let body = format!(
            "<xml><ToUserName><![CDATA[wx49f0ab532d5d035a]]></ToUserName><Encrypt><![CDATA[{}]]></Encrypt><AgentID>1</AgentID></xml>",
            vstr(p, &["encrypt"])
        );
        match cb.receive(&query, body.as_bytes()).unwrap() {
            Callback::Other {
                msg_type,
                event,
                plaintext,
            } => {
                assert_eq!(msg_type, "text");
                assert_eq!(event, None);
                assert_eq!(plaintext, vstr(p, &["expected_plaintext"]));
            }
            other => panic!("unexpected {other:?}"),
        }
        let d = crypto::decrypt(&cb.keys[0], vstr(p, &["encrypt"]), &cb.corp_id).unwrap();
        assert_eq!(d.pad as u64, p["expected_pkcs7_pad"].as_u64().unwrap());
        let mut wrong_corp = cb.clone();
        wrong_corp.corp_id = "ww0000".into();
        assert!(matches!(
            wrong_corp.receive(&query, body.as_bytes()),
            Err(InboundError::WrongRecipient { .. })
        ));
    }

    #[test]
    fn kf_doorbell_encrypts_byte_exact_and_yields_token_and_open_kfid() {
        let v = vectors();
        let k = &v["wechat"]["wecom_callback_vectors"]["kf_msg_or_event_callback"];
        let cb = callback(&v);
        let random16: [u8; 16] = vstr(k, &["random16"]).as_bytes().try_into().unwrap();
        let encrypt = crypto::encrypt(
            &cb.keys[0],
            &random16,
            vstr(k, &["plaintext_xml"]).as_bytes(),
            &cb.corp_id,
        );
        assert_eq!(encrypt, vstr(k, &["expected_encrypt"]));
        assert_eq!(
            signature::msg_signature(&cb.token, vstr(k, &["timestamp"]), vstr(k, &["nonce"]), &encrypt),
            vstr(k, &["expected_msg_signature"])
        );
        let query = format!(
            "msg_signature={}&timestamp={}&nonce={}",
            vstr(k, &["expected_msg_signature"]),
            vstr(k, &["timestamp"]),
            vstr(k, &["nonce"])
        );
        let got = cb.receive(&query, vstr(k, &["example_body"]).as_bytes()).unwrap();
        let Callback::KfMsgOrEvent(bell) = got else {
            panic!("not a doorbell: {got:?}")
        };
        assert_eq!(bell.token, vstr(k, &["then_call", "json", "token"]));
        assert_eq!(bell.open_kf_id, vstr(k, &["then_call", "json", "open_kfid"]));
        assert_eq!(bell.to_user_name, cb.corp_id);
        assert_eq!(bell.create_time, 1_700_000_000);
        let tampered = vstr(k, &["example_body"]).replacen("/o81u2WY", "/o81u2WZ", 1);
        assert_eq!(
            cb.receive(&query, tampered.as_bytes()).unwrap_err(),
            InboundError::BadSignature(SignatureScheme::WechatMsgSignature)
        );
        let no_sig = query.replace("msg_signature=", "x=");
        assert_eq!(
            cb.receive(&no_sig, vstr(k, &["example_body"]).as_bytes())
                .unwrap_err()
                .http_status(),
            403
        );
    }
}
