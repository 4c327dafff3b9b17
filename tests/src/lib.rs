//! Test harness for omnigate's end-to-end tests: a gateway on port 0, customers and agents as real websocket
//! clients, and a minimal HTTP client.
//!
//! Depends on everything; nothing depends on it.
//!
//! Layout:
//! - `gateway.rs`: [`TestGateway`]
//! - `client.rs`: [`WsClient`], [`Customer`], [`Agent`]
//! - `http.rs`: [`http_request`]
//! - `redis.rs`: [`RedisServer`], a `redis-server` of the test's own
//! - `redis_gate.rs`: [`RedisGate`], a proxy in front of it that logs commands and can hold replies
//! - `fake_wechat.rs`: [`FakeWechat`], the WeChat API on loopback, checking every request
//! - `fake_twilio.rs`: [`FakeTwilio`], the Twilio Messages API on loopback, and signed Twilio webhooks
//! - `fake_crm.rs`: [`FakeCrm`], the CRM profile webhook on loopback, checking signatures
//! - `fake_cti.rs`: [`FakeCtiReceiver`] for the connect-agent webhook, and signed `cti-webhook/1` events
//! - `fake_push.rs`: [`FakePush`], the bank's push service on loopback, checking every signed `push.requested`
//! - `fake_bank.rs`: the bank's app config, its signed identity tokens, app sessions and device calls
//! - `fake_wecom.rs`: [`FakeWecom`], the WeCom kf API on loopback, and its doorbell
//! - `wechat_client.rs`: WeChat's side of the callback (signed plain and safe-mode pushes)

mod client;
mod fake_bank;
mod fake_crm;
mod fake_cti;
mod fake_push;
mod fake_twilio;
mod fake_wechat;
mod fake_wecom;
mod gateway;
mod http;
mod redis;
mod redis_gate;
mod wechat_client;

pub use client::{Agent, Customer, WsClient, RECV_TIMEOUT};
pub use fake_bank::{
    app_config, app_customer, app_session, devices_request, identity_claims, identity_token_hs256,
    identity_token_rs256, APP_ID, APP_KEY, BANK_AUDIENCE, BANK_ISSUER, BANK_RS256_PUBLIC, BANK_SECRET,
};
pub use fake_crm::{CrmScript, FakeCrm, CRM_SECRET};
pub use fake_cti::{cti_event, post_cti_event, FakeCtiReceiver, CTI_SECRET, CTI_TENANT};
pub use fake_push::{FakePush, PUSH_SECRET};
pub use fake_twilio::{
    twilio_webhook, FakeTwilio, TwilioScript, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_NUMBER,
};
pub use fake_wechat::{FakeWechat, SendScript, SentCustom, UploadedMedia, FAKE_JPEG};
pub use fake_wecom::{
    encrypted as wecom_encrypted, FakeWecom, OPEN_KFID, WECOM_AES_KEY, WECOM_CORP_ID, WECOM_SECRET,
    WECOM_TOKEN,
};
pub use gateway::{agents, test_config, TestGateway};
pub use http::{http_request, HttpResponse};
pub use redis::RedisServer;
pub use redis_gate::RedisGate;
pub use wechat_client::{
    image_xml, push as wechat_push, signed_push, text_xml, wechat_account, Mode, WECHAT_AES_KEY,
    WECHAT_APPID, WECHAT_ORIGINAL_ID, WECHAT_SECRET, WECHAT_TOKEN,
};

/// Waits until `$cond` holds, polling every 10 ms, failing after 10 s. Never a fixed sleep.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $($msg:tt)+) => {{
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if $cond {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                panic!($($msg)+);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }};
}
