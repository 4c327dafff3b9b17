//! The mobile app channel: app credentials, how each app's signed end-user identity is verified, and the push
//! webhook that wakes an app whose customer is not connected.
//!
//! `docs/channels.md` ("Mobile app") says what the bank's backend signs and what the app sends.

use std::collections::BTreeSet;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// One mobile app allowed to open chat sessions (`[[channels.app]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// The app's public id, sent as `app_id`: `[A-Za-z0-9_-]`, 1..=64.
    pub app_id: String,
    /// The app credential, sent as `app_key` (at least 16 characters); compared in constant time.
    pub app_key: SecretString,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Queue new conversations from this app enter; the routing default when empty.
    #[serde(default)]
    pub queue: String,
    /// HS256 secret shared with the bank's backend that signs identity tokens (at least 32 bytes).
    #[serde(default)]
    pub identity_hs256_secret: Option<SecretString>,
    /// RS256 public key (PEM, `-----BEGIN PUBLIC KEY-----` or `-----BEGIN RSA PUBLIC KEY-----`) of the bank's
    /// backend that signs identity tokens.
    #[serde(default)]
    pub identity_rs256_public_key_pem: Option<String>,
    /// The `iss` every identity token must carry.
    pub identity_issuer: String,
    /// The `aud` every identity token must carry (e.g. `omnigate` or the app id).
    pub identity_audience: String,
    /// Oldest accepted identity token, by its `iat`, in seconds.
    #[serde(default = "default_max_age")]
    pub identity_max_age_secs: u64,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_leeway")]
    pub identity_leeway_secs: u64,
}

fn default_max_age() -> u64 {
    300
}

fn default_leeway() -> u64 {
    30
}

/// The push webhook (`[channels.push]`): `push.requested` for app customers without a live socket, or who
/// did not ack a message in time, signed like the CTI webhook (Standard Webhooks).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Push {
    /// Where the gateway POSTs `push.requested` (the bank's push service).
    pub url: String,
    /// The Standard Webhooks secret (`whsec_` + base64) the requests are signed with.
    pub secret: SecretString,
    /// Whether the payload carries a preview of the message text (off: only a count and the conversation).
    #[serde(default)]
    pub include_preview: bool,
    /// How long a message may stay unacknowledged on a live socket before a push is requested.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_ms: u64,
    /// Attempts per push request on 408, 429, 5xx or no answer.
    #[serde(default = "default_push_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter.
    #[serde(default = "default_push_retry_base")]
    pub retry_base_ms: u64,
    /// Longest retry delay.
    #[serde(default = "default_push_retry_max")]
    pub retry_max_ms: u64,
    /// Timeout of one request.
    #[serde(default = "default_push_timeout")]
    pub request_timeout_ms: u64,
}

fn default_ack_timeout() -> u64 {
    10_000
}

fn default_push_attempts() -> u32 {
    5
}

fn default_push_retry_base() -> u64 {
    1_000
}

fn default_push_retry_max() -> u64 {
    60_000
}

fn default_push_timeout() -> u64 {
    5_000
}

fn valid_app_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks the apps and the push webhook, reporting each problem through `problem`.
pub(crate) fn check(apps: &[App], push: Option<&Push>, problem: &mut impl FnMut(String)) {
    let mut ids = BTreeSet::new();
    for app in apps {
        let name = format!("channels.app {:?}", app.app_id);
        if !valid_app_id(&app.app_id) {
            problem(format!(
                "{name}: app_id must be 1..=64 characters of [A-Za-z0-9_-]"
            ));
        }
        if !ids.insert(app.app_id.as_str()) {
            problem(format!("{name}: app_id is used twice"));
        }
        if app.app_key.expose_secret().len() < 16 {
            problem(format!("{name}: app_key must be at least 16 characters"));
        }
        let hs256 = app
            .identity_hs256_secret
            .as_ref()
            .map(|s| s.expose_secret().len());
        let rs256 = app.identity_rs256_public_key_pem.as_deref();
        if hs256.is_none() && rs256.is_none() {
            problem(format!(
                "{name}: set identity_hs256_secret or identity_rs256_public_key_pem (or both)"
            ));
        }
        if hs256.is_some_and(|len| len < 32) {
            problem(format!("{name}: identity_hs256_secret must be at least 32 bytes"));
        }
        if rs256.is_some_and(|pem| !pem.trim_start().starts_with("-----BEGIN ")) {
            problem(format!(
                "{name}: identity_rs256_public_key_pem must be a PEM public key"
            ));
        }
        if app.identity_issuer.is_empty() || app.identity_audience.is_empty() {
            problem(format!(
                "{name}: identity_issuer and identity_audience must be set"
            ));
        }
        if app.identity_max_age_secs == 0 {
            problem(format!("{name}: identity_max_age_secs must be positive"));
        }
    }
    if let Some(push) = push {
        if !(push.url.starts_with("https://") || push.url.starts_with("http://")) {
            problem("channels.push.url must start with https:// or http://".to_owned());
        }
        let secret = push.secret.expose_secret();
        if !secret.starts_with("whsec_") || secret.len() < 20 {
            problem("channels.push.secret must be a whsec_ Standard Webhooks secret".to_owned());
        }
        if push.ack_timeout_ms == 0
            || push.max_attempts == 0
            || push.retry_base_ms == 0
            || push.request_timeout_ms == 0
        {
            problem(
                "channels.push: ack_timeout_ms, max_attempts, retry_base_ms and request_timeout_ms must be \
                 positive"
                    .to_owned(),
            );
        }
        if push.retry_max_ms < push.retry_base_ms {
            problem("channels.push: retry_max_ms must be at least retry_base_ms".to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load_from_str;

    const BASE: &str = r#"
[auth]
jwt_secret = "0123456789abcdef0123456789abcdef"
"#;

    #[test]
    fn apps_and_push_load_with_defaults() {
        let toml = format!(
            r#"{BASE}
[[channels.app]]
app_id = "bank-ios"
app_key = "0123456789abcdef-key"
identity_hs256_secret = "0123456789abcdef0123456789abcdef"
identity_issuer = "https://bank.example"
identity_audience = "omnigate"
[channels.push]
url = "https://push.bank.example/omnigate"
secret = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
"#
        );
        let config = load_from_str(Some(&toml), &Default::default()).unwrap();
        let app = &config.channels.app[0];
        assert_eq!((app.identity_max_age_secs, app.identity_leeway_secs), (300, 30));
        let push = config.channels.push.unwrap();
        assert_eq!((push.ack_timeout_ms, push.include_preview), (10_000, false));
    }

    #[test]
    fn every_app_and_push_problem_is_reported() {
        let toml = format!(
            r#"{BASE}
[[channels.app]]
app_id = "a/b"
app_key = "short"
identity_issuer = ""
identity_audience = "omnigate"
identity_max_age_secs = 0
[[channels.app]]
app_id = "x"
app_key = "0123456789abcdef-key"
identity_hs256_secret = "short"
identity_rs256_public_key_pem = "not a pem"
identity_issuer = "i"
identity_audience = "a"
[channels.push]
url = "ftp://x"
secret = "nope"
ack_timeout_ms = 0
"#
        );
        let err = load_from_str(Some(&toml), &Default::default())
            .unwrap_err()
            .to_string();
        for needle in [
            "a/b",
            "app_key must be at least 16",
            "set identity_hs256_secret or identity_rs256_public_key_pem",
            "identity_hs256_secret must be at least 32",
            "PEM public key",
            "identity_issuer and identity_audience",
            "identity_max_age_secs",
            "channels.push.url",
            "channels.push.secret",
            "ack_timeout_ms",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
    }
}
