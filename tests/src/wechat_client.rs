//! Plays WeChat's side of the callback: signed pushes in plain or safe (AES) mode, as PROTOCOLS.md §1.3/§1.6
//! lays them out, built with the connectors' signature and crypto functions (themselves checked byte for byte
//! against the vectors).

use omnigate_connectors::wechat::crypto::{self, AesKey};
use omnigate_connectors::wechat::signature;

use crate::{http_request, HttpResponse, TestGateway};

/// The token, AES key and AppID of the gateway vectors (`wechat.gateway_vectors`).
pub const WECHAT_TOKEN: &str = "gatewaytoken";
/// EncodingAESKey of the gateway vectors (non-canonical base64).
pub const WECHAT_AES_KEY: &str = "Gw8tVx3kQm7Zr2Lp9Nc4Hb6Jd1Fs5Ty0Ue3Wa8Xo2Ri";
/// AppID of the gateway vectors.
pub const WECHAT_APPID: &str = "wx5f1e2d3c4b5a6978";
/// AppSecret the fake API accepts.
pub const WECHAT_SECRET: &str = "app-secret-0123";
/// The account's original id.
pub const WECHAT_ORIGINAL_ID: &str = "gh_0123456789ab";

/// How WeChat protects the push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plaintext body, `signature` only.
    Plain,
    /// `<Encrypt>` only, `msg_signature` over it.
    Safe,
}

/// A WeChat user's XML message (text).
pub fn text_xml(openid: &str, msg_id: u64, text: &str, create_time: i64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{WECHAT_ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{create_time}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{text}]]></Content>\
         <MsgId>{msg_id}</MsgId></xml>"
    )
}

/// A WeChat user's XML message (image).
pub fn image_xml(openid: &str, msg_id: u64, media_id: &str, create_time: i64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{WECHAT_ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{create_time}</CreateTime><MsgType><![CDATA[image]]></MsgType>\
         <PicUrl><![CDATA[http://mmbiz.example/pic]]></PicUrl><MediaId><![CDATA[{media_id}]]></MediaId>\
         <MsgId>{msg_id}</MsgId></xml>"
    )
}

/// The query and body of a push of `xml` at `timestamp`.
pub fn signed_push(xml: &str, mode: Mode, timestamp: i64, nonce: &str, openid: &str) -> (String, String) {
    let ts = timestamp.to_string();
    let sig = signature::signature(WECHAT_TOKEN, &ts, nonce);
    match mode {
        Mode::Plain => (
            format!("signature={sig}&timestamp={ts}&nonce={nonce}&openid={openid}"),
            xml.to_owned(),
        ),
        Mode::Safe => {
            let key = AesKey::from_encoding_aes_key(WECHAT_AES_KEY).expect("vector key");
            let encrypt = crypto::encrypt(&key, b"0123456789abcdef", xml.as_bytes(), WECHAT_APPID);
            let msg_signature = signature::msg_signature(WECHAT_TOKEN, &ts, nonce, &encrypt);
            (
                format!(
                    "signature={sig}&timestamp={ts}&nonce={nonce}&openid={openid}&encrypt_type=aes&msg_signature={msg_signature}"
                ),
                format!(
                    "<xml><ToUserName><![CDATA[{WECHAT_ORIGINAL_ID}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
                ),
            )
        }
    }
}

/// POSTs a push to `/channels/wechat/{account}` as WeChat would.
pub async fn push(gateway: &TestGateway, account: &str, xml: &str, mode: Mode, openid: &str) -> HttpResponse {
    let (query, body) = signed_push(xml, mode, 1_700_000_000, "n0nce", openid);
    http_request(
        gateway.public,
        "POST",
        &format!("/channels/wechat/{account}?{query}"),
        &[("content-type", "text/xml")],
        body.as_bytes(),
    )
    .await
}

/// The gateway's `[[channels.wechat]]` entry `main` for `fake` (started with [`WECHAT_APPID`] and
/// [`WECHAT_SECRET`]): safe mode with the vectors' token and key, a quota of 5 per 48 h window.
pub fn wechat_account(fake: &crate::FakeWechat) -> omnigate_config::WechatAccount {
    use omnigate_config::SecretString;
    omnigate_config::WechatAccount {
        id: "main".to_owned(),
        appid: WECHAT_APPID.to_owned(),
        app_secret: SecretString::from(WECHAT_SECRET.to_owned()),
        token: SecretString::from(WECHAT_TOKEN.to_owned()),
        encoding_aes_keys: vec![SecretString::from(WECHAT_AES_KEY.to_owned())],
        original_id: WECHAT_ORIGINAL_ID.to_owned(),
        queue: String::new(),
        api_base_url: fake.base_url(),
        message_quota: 5,
        message_window_secs: 48 * 3600,
        max_body_bytes: 64 * 1024,
        rate_per_second: 100,
    }
}
