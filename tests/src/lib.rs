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
//! - `fake_wechat.rs`: [`FakeWechat`], the WeChat API on loopback, checking every request
//! - `fake_twilio.rs`: [`FakeTwilio`], the Twilio Messages API on loopback, and signed Twilio webhooks
//! - `fake_cti.rs`: [`FakeCtiReceiver`] for the connect-agent webhook, and signed `cti-webhook/1` events
//! - `fake_wecom.rs`: [`FakeWecom`], the WeCom kf API on loopback, and its doorbell
//! - `wechat_client.rs`: WeChat's side of the callback (signed plain and safe-mode pushes)

mod client;
mod fake_cti;
mod fake_twilio;
mod fake_wechat;
mod fake_wecom;
mod gateway;
mod http;
mod redis;
mod wechat_client;

pub use client::{Agent, Customer, WsClient, RECV_TIMEOUT};
pub use fake_cti::{cti_event, post_cti_event, FakeCtiReceiver, CTI_SECRET, CTI_TENANT};
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
pub use wechat_client::{
    image_xml, push as wechat_push, signed_push, text_xml, Mode, WECHAT_AES_KEY, WECHAT_APPID,
    WECHAT_ORIGINAL_ID, WECHAT_SECRET, WECHAT_TOKEN,
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
