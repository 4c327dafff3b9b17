//! Typed configuration of the omnigate gateway.
//!
//! Role: one `Config` tree, read once at startup. Sources, later overriding earlier: built-in defaults, the
//! TOML file, then `OMNIGATE_` environment variables with `__` between nesting levels
//! (`OMNIGATE_SERVER__PUBLIC_ADDR=0.0.0.0:8080`). Unknown keys are rejected; [`Config::validate`] reports every
//! problem at once. Nothing reads configuration after the gateway is built.
//!
//! Depends on nothing internal.
//!
//! Layout:
//! - `model.rs`: the `Config` tree and its defaults
//! - `channels.rs`: channel connectors and the outbox
//! - `app.rs`: the mobile app channel and its push webhook
//! - `customers.rs`: customer profiles (rules, tiers, CRM lookup) and retention
//! - `routing.rs`: queues, skills and routing policy (consumed by `omnigate-router`)
//! - `load.rs`: layering of file and environment
//! - `validate.rs`: whole-tree checks
//! - `error.rs`: `ConfigError`

mod app;
mod channels;
mod customers;
mod error;
mod load;
mod model;
mod routing;
mod validate;
pub use validate::CHANNELS;

pub use app::{App, Push};
pub use channels::{
    Channels, Cti, Outbox, SmsProvider, SmsUplink, TwilioAccount, WechatAccount, WecomAccount,
};
pub use customers::{Crm, CustomerRule, Customers, Retention, TierPolicy, IDENTITY_KINDS};
pub use error::{ConfigError, ValidationErrors};
pub use load::{load, load_from_str, DEFAULT_CONFIG_TOML};
pub use model::*;
pub use routing::*;
pub use secrecy::{ExposeSecret, SecretString};
