//! A customer's registered app device: where the bank's push service can reach them.

use serde::{Deserialize, Serialize};

/// The push service a device token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushPlatform {
    /// Apple Push Notification service.
    Apns,
    /// Firebase Cloud Messaging.
    Fcm,
    /// Huawei Mobile Services Push Kit.
    Hms,
    /// JPush (极光推送).
    Jpush,
}

impl PushPlatform {
    /// The wire name (`apns`).
    pub fn as_str(self) -> &'static str {
        match self {
            PushPlatform::Apns => "apns",
            PushPlatform::Fcm => "fcm",
            PushPlatform::Hms => "hms",
            PushPlatform::Jpush => "jpush",
        }
    }

    /// Parses a wire name.
    pub fn parse(raw: &str) -> Option<PushPlatform> {
        match raw {
            "apns" => Some(PushPlatform::Apns),
            "fcm" => Some(PushPlatform::Fcm),
            "hms" => Some(PushPlatform::Hms),
            "jpush" => Some(PushPlatform::Jpush),
            _ => None,
        }
    }
}

/// One registered device. A `(platform, token)` pair belongs to at most one customer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Device {
    /// Its push service.
    pub platform: PushPlatform,
    /// The push token the platform gave the app.
    pub token: String,
    /// The app it runs.
    pub app_id: String,
}
