//! Channel connectors: WeChat Official Accounts, Twilio SMS, and the outbound delivery outbox they share.
//!
//! Provider base URLs are configuration so tests point them at fake servers on loopback; secrets are
//! [`SecretString`]s. `docs/channels.md` says what to paste where in each provider's console.

use std::collections::BTreeSet;
use std::net::IpAddr;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::app::{App, Push};

/// Every channel connector the gateway mounts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Channels {
    /// WeChat Official Accounts, each served at `/channels/wechat/{id}`.
    pub wechat: Vec<WechatAccount>,
    /// Twilio accounts, each served at `/channels/twilio/{id}/sms` and `/channels/twilio/{id}/status`.
    pub twilio: Vec<TwilioAccount>,
    /// WeChat Customer Service (WeCom kf) applications, each served at `/channels/wecom/{id}`.
    pub wecom: Vec<WecomAccount>,
    /// Chinese SMS uplinks (Aliyun SmsUp, Tencent reply callbacks), each at
    /// `/channels/sms/{provider}/{id}/{path_token}`.
    pub sms_uplinks: Vec<SmsUplink>,
    /// The signed CTI webhook (`POST /channels/cti/v1/events`) and the outbound "connect agent" webhook.
    pub cti: Option<Cti>,
    /// Mobile apps opening chat sessions with app credentials and a signed end-user identity.
    pub app: Vec<App>,
    /// The push webhook for app customers who are not connected or did not ack in time.
    pub push: Option<Push>,
    /// Retries, backoff and dead-lettering of agents' replies.
    pub outbox: Outbox,
    /// How long an inbound webhook may wait for its message to be in the conversation log before answering
    /// 503 (so the provider retries); below WeChat's 5 s limit.
    pub ingest_deadline_ms: u64,
    /// Largest image an agent may upload (`POST /agent/v1/media`) to send on a channel; WeChat takes up to
    /// 10 MiB.
    pub media_max_bytes: usize,
}

impl Default for Channels {
    fn default() -> Self {
        Self {
            wechat: Vec::new(),
            twilio: Vec::new(),
            wecom: Vec::new(),
            sms_uplinks: Vec::new(),
            cti: None,
            app: Vec::new(),
            push: None,
            outbox: Outbox::default(),
            ingest_deadline_ms: 4_000,
            media_max_bytes: 2 * 1024 * 1024,
        }
    }
}

/// One WeChat Official Account (公众号).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatAccount {
    /// Path segment of the callback URL (`/channels/wechat/{id}`): `[A-Za-z0-9_-]`, 1..=64.
    pub id: String,
    /// The AppID (开发者ID).
    pub appid: String,
    /// The AppSecret, used to fetch access tokens.
    pub app_secret: SecretString,
    /// The Token pasted in the console's server configuration (令牌).
    pub token: SecretString,
    /// EncodingAESKeys (消息加解密密钥), current first, then the previous one during a rotation; empty for plain
    /// mode.
    #[serde(default)]
    pub encoding_aes_keys: Vec<SecretString>,
    /// The account's original id (`gh_…`); when set, pushes addressed to another account are refused.
    #[serde(default)]
    pub original_id: String,
    /// Queue new conversations from this account enter; the routing default when empty.
    #[serde(default)]
    pub queue: String,
    /// Base URL of the WeChat API.
    #[serde(default = "default_wechat_api")]
    pub api_base_url: String,
    /// Customer-service messages allowed per 48 h window after a customer message (WeChat changed 20 → 5).
    #[serde(default = "default_wechat_quota")]
    pub message_quota: u32,
    /// The window after a customer message, in seconds.
    #[serde(default = "default_wechat_window")]
    pub message_window_secs: u64,
    /// Largest accepted push body, in bytes.
    #[serde(default = "default_webhook_body")]
    pub max_body_bytes: usize,
    /// Customer-service API calls per second at most.
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
}

/// One Twilio account sending and receiving SMS on one number (or messaging service).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioAccount {
    /// Path segment of the webhook URLs (`/channels/twilio/{id}/sms`): `[A-Za-z0-9_-]`, 1..=64.
    pub id: String,
    /// The AccountSid (`AC…`); webhooks of other accounts are refused.
    pub account_sid: String,
    /// The primary auth token: Basic auth of the Messages API and the key of `X-Twilio-Signature`.
    pub auth_token: SecretString,
    /// The secondary auth token, also accepted on webhooks during a rotation.
    #[serde(default)]
    pub secondary_auth_token: Option<SecretString>,
    /// The sending number (E.164); or set `messaging_service_sid`.
    #[serde(default)]
    pub from: String,
    /// The Messaging Service (`MG…`) that sends instead of `from`.
    #[serde(default)]
    pub messaging_service_sid: String,
    /// Queue new conversations from this number enter; the routing default when empty.
    #[serde(default)]
    pub queue: String,
    /// Base URL of the Twilio REST API.
    #[serde(default = "default_twilio_api")]
    pub api_base_url: String,
    /// Largest accepted webhook body, in bytes.
    #[serde(default = "default_webhook_body")]
    pub max_body_bytes: usize,
    /// Messages API calls per second at most.
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
}

/// One WeCom application receiving WeChat Customer Service (微信客服) callbacks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WecomAccount {
    /// Path segment of the callback URL (`/channels/wecom/{id}`): `[A-Za-z0-9_-]`, 1..=64.
    pub id: String,
    /// The CorpID (企业ID).
    pub corp_id: String,
    /// The customer-service application's Secret, used to fetch access tokens.
    pub secret: SecretString,
    /// The callback Token.
    pub token: SecretString,
    /// The callback EncodingAESKey.
    pub encoding_aes_key: SecretString,
    /// Queue new conversations enter; the routing default when empty.
    #[serde(default)]
    pub queue: String,
    /// Base URL of the WeCom API.
    #[serde(default = "default_wecom_api")]
    pub api_base_url: String,
    /// Messages allowed per 48 h window after a customer message.
    #[serde(default = "default_wechat_quota")]
    pub message_quota: u32,
    /// Largest accepted callback body, in bytes.
    #[serde(default = "default_webhook_body")]
    pub max_body_bytes: usize,
    /// API calls per second at most.
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
}

fn default_wecom_api() -> String {
    "https://qyapi.weixin.qq.com".to_owned()
}

/// Which provider posts an SMS uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsProvider {
    /// Aliyun SMS "HTTP batch push" of uplink messages.
    Aliyun,
    /// Tencent Cloud SMS reply callback.
    Tencent,
}

/// One SMS uplink callback. The providers sign nothing, so the URL carries an unguessable token and the peer
/// address may be limited to the provider's published ranges.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsUplink {
    /// Path segment (`/channels/sms/{provider}/{id}/…`): `[A-Za-z0-9_-]`, 1..=64.
    pub id: String,
    /// `aliyun` or `tencent`.
    pub provider: SmsProvider,
    /// The secret last path segment, at least 24 characters of `[A-Za-z0-9_-]`.
    pub path_token: SecretString,
    /// Peer addresses allowed to post (the TCP peer: put the provider's egress ranges here only when no proxy
    /// stands in front of the gateway); empty allows any.
    #[serde(default)]
    pub allowed_ips: Vec<IpAddr>,
    /// Queue new conversations enter; the routing default when empty.
    #[serde(default)]
    pub queue: String,
    /// Largest accepted body, in bytes.
    #[serde(default = "default_webhook_body")]
    pub max_body_bytes: usize,
}

/// The telephony system's side: `cti-webhook/1` events in, "connect agent" instructions out (PROTOCOLS.md §3.6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cti {
    /// The Standard Webhooks secret (`whsec_` + base64), shared with the telephony adapter; signs both
    /// directions.
    pub secret: SecretString,
    /// The previous secret, still accepted on inbound events during a rotation.
    #[serde(default)]
    pub previous_secret: Option<SecretString>,
    /// The tenant every event must carry.
    pub tenant: String,
    /// Where the gateway POSTs the signed `agent.connect` instruction once an agent took a call.
    pub connect_url: String,
    /// Queue new calls enter; the routing default when empty.
    #[serde(default)]
    pub queue: String,
    /// How long events after a `seq` gap wait for the missing one before they are applied anyway.
    #[serde(default = "default_reorder_gap")]
    pub reorder_gap_ms: u64,
    /// Largest accepted event body, in bytes.
    #[serde(default = "default_webhook_body")]
    pub max_body_bytes: usize,
}

fn default_reorder_gap() -> u64 {
    3_000
}

/// Delivery of agents' replies through the providers.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Outbox {
    /// Attempts per message before it is dead-lettered (retryable failures only; a permanent refusal
    /// dead-letters at once).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter.
    pub retry_base_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// Timeout of one provider request.
    pub request_timeout_ms: u64,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
            request_timeout_ms: 10_000,
        }
    }
}

fn default_wechat_api() -> String {
    "https://api.weixin.qq.com".to_owned()
}

fn default_twilio_api() -> String {
    "https://api.twilio.com".to_owned()
}

fn default_wechat_quota() -> u32 {
    5
}

fn default_wechat_window() -> u64 {
    48 * 3600
}

fn default_webhook_body() -> usize {
    64 * 1024
}

fn default_rate() -> u32 {
    20
}

fn valid_path_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks an account id used in a URL path, and that no other account of its kind has it.
fn check_id<'a>(name: &str, id: &'a str, ids: &mut BTreeSet<&'a str>, problem: &mut impl FnMut(String)) {
    if !valid_path_id(id) {
        problem(format!("{name}: id must be 1..=64 characters of [A-Za-z0-9_-]"));
    }
    if !ids.insert(id) {
        problem(format!("{name}: id is used twice"));
    }
}

fn valid_base_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

impl Channels {
    /// Checks the channel settings, reporting each problem through `problem`.
    pub(crate) fn check(&self, problem: &mut impl FnMut(String)) {
        if self.media_max_bytes == 0 || self.media_max_bytes > 10 * 1024 * 1024 {
            problem(
                "channels.media_max_bytes must be between 1 and 10485760 (WeChat's image limit)".to_owned(),
            );
        }
        let mut ids = BTreeSet::new();
        for account in &self.wechat {
            let name = format!("channels.wechat {:?}", account.id);
            check_id(&name, &account.id, &mut ids, problem);
            if account.appid.is_empty() {
                problem(format!("{name}: appid must be set"));
            }
            if account.token.expose_secret().is_empty() {
                problem(format!("{name}: token must be set"));
            }
            if account.app_secret.expose_secret().is_empty() {
                problem(format!("{name}: app_secret must be set"));
            }
            for key in &account.encoding_aes_keys {
                let key = key.expose_secret();
                if key.len() != 43 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    problem(format!(
                        "{name}: every encoding_aes_key must be 43 characters of [A-Za-z0-9]"
                    ));
                }
            }
            if !valid_base_url(&account.api_base_url) {
                problem(format!(
                    "{name}: api_base_url must start with https:// or http://"
                ));
            }
            if account.message_quota == 0 || account.message_window_secs == 0 {
                problem(format!(
                    "{name}: message_quota and message_window_secs must be positive"
                ));
            }
            if account.max_body_bytes == 0 || account.rate_per_second == 0 {
                problem(format!(
                    "{name}: max_body_bytes and rate_per_second must be positive"
                ));
            }
        }
        let mut ids = BTreeSet::new();
        for account in &self.twilio {
            let name = format!("channels.twilio {:?}", account.id);
            check_id(&name, &account.id, &mut ids, problem);
            if !account.account_sid.starts_with("AC") {
                problem(format!("{name}: account_sid must start with AC"));
            }
            if account.auth_token.expose_secret().is_empty() {
                problem(format!("{name}: auth_token must be set"));
            }
            if account.from.is_empty() == account.messaging_service_sid.is_empty() {
                problem(format!(
                    "{name}: set exactly one of from and messaging_service_sid"
                ));
            }
            if !valid_base_url(&account.api_base_url) {
                problem(format!(
                    "{name}: api_base_url must start with https:// or http://"
                ));
            }
            if account.max_body_bytes == 0 || account.rate_per_second == 0 {
                problem(format!(
                    "{name}: max_body_bytes and rate_per_second must be positive"
                ));
            }
        }
        let mut ids = BTreeSet::new();
        for account in &self.wecom {
            let name = format!("channels.wecom {:?}", account.id);
            check_id(&name, &account.id, &mut ids, problem);
            if account.corp_id.is_empty()
                || account.secret.expose_secret().is_empty()
                || account.token.expose_secret().is_empty()
            {
                problem(format!("{name}: corp_id, secret and token must be set"));
            }
            let key = account.encoding_aes_key.expose_secret();
            if key.len() != 43 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
                problem(format!(
                    "{name}: encoding_aes_key must be 43 characters of [A-Za-z0-9]"
                ));
            }
            if !valid_base_url(&account.api_base_url) {
                problem(format!(
                    "{name}: api_base_url must start with https:// or http://"
                ));
            }
            if account.message_quota == 0 || account.max_body_bytes == 0 || account.rate_per_second == 0 {
                problem(format!(
                    "{name}: message_quota, max_body_bytes and rate_per_second must be positive"
                ));
            }
        }
        let mut ids = BTreeSet::new();
        for uplink in &self.sms_uplinks {
            let name = format!("channels.sms_uplinks {:?}", uplink.id);
            check_id(&name, &uplink.id, &mut ids, problem);
            let token = uplink.path_token.expose_secret();
            if token.len() < 24 || !valid_path_id(token) {
                problem(format!(
                    "{name}: path_token must be 24..=64 characters of [A-Za-z0-9_-]"
                ));
            }
            if uplink.max_body_bytes == 0 {
                problem(format!("{name}: max_body_bytes must be positive"));
            }
        }
        if let Some(cti) = &self.cti {
            let secret = cti.secret.expose_secret();
            if !secret.starts_with("whsec_") || secret.len() < 20 {
                problem("channels.cti.secret must be a whsec_ Standard Webhooks secret".to_owned());
            }
            if cti.tenant.is_empty() {
                problem("channels.cti.tenant must be set".to_owned());
            }
            if !valid_base_url(&cti.connect_url) {
                problem("channels.cti.connect_url must start with https:// or http://".to_owned());
            }
            if cti.reorder_gap_ms == 0 || cti.max_body_bytes == 0 {
                problem("channels.cti: reorder_gap_ms and max_body_bytes must be positive".to_owned());
            }
        }
        crate::app::check(&self.app, self.push.as_ref(), problem);
        let o = &self.outbox;
        if o.max_attempts == 0 || o.retry_base_ms == 0 || o.request_timeout_ms == 0 {
            problem(
                "channels.outbox: max_attempts, retry_base_ms and request_timeout_ms must be positive"
                    .to_owned(),
            );
        }
        if o.retry_max_ms < o.retry_base_ms {
            problem("channels.outbox: retry_max_ms must be at least retry_base_ms".to_owned());
        }
        if self.ingest_deadline_ms == 0 || self.ingest_deadline_ms >= 5_000 {
            problem(
                "channels.ingest_deadline_ms must be within 1..5000 (WeChat waits 5 s at most)".to_owned(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load_from_str;

    #[test]
    fn channel_accounts_load_with_defaults_and_are_checked() {
        let toml = r#"
[auth]
jwt_secret = "0123456789abcdef0123456789abcdef"
[[channels.wechat]]
id = "main"
appid = "wx5f1e2d3c4b5a6978"
app_secret = "s"
token = "gatewaytoken"
encoding_aes_keys = ["Gw8tVx3kQm7Zr2Lp9Nc4Hb6Jd1Fs5Ty0Ue3Wa8Xo2Ri"]
[[channels.twilio]]
id = "us"
account_sid = "ACa1"
auth_token = "t"
from = "+14155550100"
"#;
        let config = load_from_str(Some(toml), &Default::default()).unwrap();
        let wechat = &config.channels.wechat[0];
        assert_eq!(wechat.api_base_url, "https://api.weixin.qq.com");
        assert_eq!(wechat.message_quota, 5);
        assert_eq!(config.channels.twilio[0].api_base_url, "https://api.twilio.com");
        assert_eq!(config.channels.outbox.max_attempts, 8);
        assert_eq!(config.channels.media_max_bytes, 2 * 1024 * 1024);

        let bad = r#"
[auth]
jwt_secret = "0123456789abcdef0123456789abcdef"
[[channels.wechat]]
id = "a/b"
appid = ""
app_secret = ""
token = ""
encoding_aes_keys = ["short"]
[[channels.twilio]]
id = "us"
account_sid = "XX"
auth_token = "t"
"#;
        let err = load_from_str(Some(bad), &Default::default())
            .unwrap_err()
            .to_string();
        for needle in [
            "a/b",
            "appid",
            "token must be set",
            "encoding_aes_key",
            "AC",
            "exactly one",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
        let unknown = "[channels]\nsurprise = 1\n";
        assert!(load_from_str(Some(unknown), &Default::default()).is_err());
    }

    #[test]
    fn the_media_upload_limit_stays_within_what_wechat_takes() {
        let toml = |bytes: usize| {
            format!("[auth]\njwt_secret = \"0123456789abcdef0123456789abcdef\"\n[channels]\nmedia_max_bytes = {bytes}\n")
        };
        let config = load_from_str(Some(&toml(1_000_000)), &Default::default()).unwrap();
        assert_eq!(config.channels.media_max_bytes, 1_000_000);
        for bad in [0, 10 * 1024 * 1024 + 1] {
            let error = load_from_str(Some(&toml(bad)), &Default::default())
                .unwrap_err()
                .to_string();
            assert!(error.contains("media_max_bytes"), "{error}");
        }
    }
}
