//! Customer profiles: rules that fill them from what a conversation shows, the tiers' routing policy, and
//! the optional CRM lookup webhook.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::validate::CHANNELS;

/// Identity kinds a rule may match, as they are spelled in JSON.
pub const IDENTITY_KINDS: &[&str] = &[
    "web_visitor",
    "app_user",
    "wechat_open_id",
    "wechat_union_id",
    "wecom_external_user",
    "phone",
];

/// Channel names a rule may match besides the media kinds of [`CHANNELS`].
const CHANNEL_NAMES: &[&str] = &[
    "web",
    "app",
    "wechat_oa",
    "wechat_kf",
    "sms_twilio",
    "sms_aliyun",
    "sms_tencent",
    "voice",
];

/// `[customers]`: how a conversation's customer profile is filled and how it feeds routing.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Customers {
    /// Rules applied in order to every conversation entering routing; each matching rule adds to the profile.
    pub rules: Vec<CustomerRule>,
    /// Routing policy per tier (`vip`, `private_banking`, ...).
    pub tiers: BTreeMap<String, TierPolicy>,
    /// How long a conversation waits for its relationship manager before other agents may get it.
    pub relationship_manager_window_secs: u64,
    /// The CRM lookup webhook; no lookup when absent.
    pub crm: Option<Crm>,
}

impl Default for Customers {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            tiers: BTreeMap::new(),
            relationship_manager_window_secs: 60,
            crm: None,
        }
    }
}

/// One `[[customers.rules]]` entry: every condition given must hold; the rule then sets what it names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CustomerRule {
    /// Condition: the conversation's sender identity is of this kind (`phone`, `app_user`, ...).
    pub identity_kind: Option<String>,
    /// Condition: the sender identity's value starts with this (e.g. `+8613800`).
    pub identity_prefix: Option<String>,
    /// Condition: the conversation's media kind (`web`, `app`, `wechat`, `sms`, `voice`) or channel
    /// (`wechat_oa`, `sms_twilio`, ...).
    pub channel: Option<String>,
    /// Condition: the conversation carries these attributes (a widget's, a call's IVR input).
    pub attributes: BTreeMap<String, String>,
    /// Sets the tier.
    pub tier: Option<String>,
    /// Adds tags.
    pub tags: Vec<String>,
    /// Sets the preferred language.
    pub language: Option<String>,
    /// Adds risk flags.
    pub risk_flags: Vec<String>,
    /// Sets the relationship manager (an agent id).
    pub relationship_manager: Option<String>,
}

/// `[customers.tiers.<name>]`: what a tier changes in routing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierPolicy {
    /// Priority added to the task (on top of the queue's; higher goes first).
    pub priority: u8,
    /// Skills an agent must have to be offered the customer's conversations.
    pub skills: Vec<String>,
}

/// `[customers.crm]`: a signed POST per customer whose answer fills the profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Crm {
    /// Where to POST (`https://crm.bank.example/omnigate/profile`).
    pub url: String,
    /// Standard Webhooks signing secret (`whsec_<base64>`), shared with the CRM.
    pub secret: SecretString,
    /// Longest wait for an answer; routing goes ahead without it after this.
    pub timeout_ms: u64,
    /// A good answer is reused this long before the CRM is asked again (kept in the store, shared by every
    /// gateway process).
    pub cache_ttl_secs: u64,
}

impl Default for Crm {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret: SecretString::from(String::new()),
            timeout_ms: 800,
            cache_ttl_secs: 3600,
        }
    }
}

impl Customers {
    /// Reports every problem of the section; `agents` are the configured agent ids.
    pub(crate) fn check(&self, agents: &[&str], problem: &mut impl FnMut(String)) {
        for (i, rule) in self.rules.iter().enumerate() {
            let name = format!("customers.rules[{i}]");
            if let Some(kind) = &rule.identity_kind {
                if !IDENTITY_KINDS.contains(&kind.as_str()) {
                    problem(format!(
                        "{name}: identity_kind {kind:?} is not one of {IDENTITY_KINDS:?}"
                    ));
                }
            }
            if rule.identity_prefix.is_some() && rule.identity_kind.is_none() {
                problem(format!("{name}: identity_prefix needs identity_kind"));
            }
            if let Some(channel) = &rule.channel {
                if !CHANNELS.contains(&channel.as_str()) && !CHANNEL_NAMES.contains(&channel.as_str()) {
                    problem(format!("{name}: unknown channel {channel:?}"));
                }
            }
            if rule.identity_kind.is_none() && rule.channel.is_none() && rule.attributes.is_empty() {
                problem(format!(
                    "{name}: matches every conversation; give identity_kind, channel or attributes"
                ));
            }
            if rule.tier.is_none()
                && rule.tags.is_empty()
                && rule.language.is_none()
                && rule.risk_flags.is_empty()
                && rule.relationship_manager.is_none()
            {
                problem(format!("{name}: sets nothing"));
            }
            if let Some(tier) = &rule.tier {
                if !self.tiers.contains_key(tier) {
                    problem(format!(
                        "{name}: tier {tier:?} has no [customers.tiers.{tier}] section"
                    ));
                }
            }
            if let Some(rm) = &rule.relationship_manager {
                if !agents.contains(&rm.as_str()) {
                    problem(format!(
                        "{name}: relationship_manager {rm:?} is not a configured agent"
                    ));
                }
            }
        }
        for (tier, policy) in &self.tiers {
            if policy.skills.iter().any(|s| s.trim().is_empty()) {
                problem(format!("customers.tiers.{tier}: empty skill name"));
            }
        }
        if let Some(crm) = &self.crm {
            if !(crm.url.starts_with("http://") || crm.url.starts_with("https://")) {
                problem(format!(
                    "customers.crm.url {:?} must be an http:// or https:// URL",
                    crm.url
                ));
            }
            if crm.secret.expose_secret().trim().is_empty() {
                problem("customers.crm.secret is empty: the CRM could not check our requests".to_owned());
            }
            if crm.timeout_ms == 0 || crm.timeout_ms > 10_000 {
                problem(format!(
                    "customers.crm.timeout_ms {} must be between 1 and 10000: routing waits up to this long",
                    crm.timeout_ms
                ));
            }
        }
    }
}

/// `[retention]`: how long data is kept, per kind; `0` keeps it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// A closed conversation's log (transcript, with the channels' raw payloads, which live in the log) and
    /// summary are deleted this long after the close; a reopen cancels it. `0` keeps them (on Redis the
    /// store's `conversation_ttl_secs` still applies).
    pub closed_conversation_secs: u64,
    /// A closed conversation's idempotency keys are deleted this long after the close (retries come within
    /// minutes); `0` keeps them as long as the log.
    pub idempotency_after_close_secs: u64,
    /// Customer profiles (cached CRM answers included) are deleted this long after their last save.
    pub profile_secs: u64,
    /// How often the embedded store sweeps out expired data (Redis expires keys by itself).
    pub sweep_interval_secs: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            closed_conversation_secs: 7_776_000,
            idempotency_after_close_secs: 86_400,
            profile_secs: 0,
            sweep_interval_secs: 60,
        }
    }
}

impl Retention {
    /// Reports every problem of the section.
    pub(crate) fn check(&self, problem: &mut impl FnMut(String)) {
        if self.sweep_interval_secs == 0 {
            problem("retention.sweep_interval_secs must be positive".to_owned());
        }
        if self.closed_conversation_secs > 0
            && self.idempotency_after_close_secs > self.closed_conversation_secs
        {
            problem(format!(
                "retention.idempotency_after_close_secs {} outlives closed_conversation_secs {}",
                self.idempotency_after_close_secs, self.closed_conversation_secs
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(customers: &Customers, agents: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        customers.check(agents, &mut |p| out.push(p));
        out
    }

    #[test]
    fn a_good_rule_and_tier_pass() {
        let customers = Customers {
            rules: vec![CustomerRule {
                identity_kind: Some("phone".into()),
                identity_prefix: Some("+8613800".into()),
                tier: Some("vip".into()),
                relationship_manager: Some("alice".into()),
                ..CustomerRule::default()
            }],
            tiers: BTreeMap::from([(
                "vip".to_owned(),
                TierPolicy {
                    priority: 5,
                    skills: vec!["vip".into()],
                },
            )]),
            ..Customers::default()
        };
        assert_eq!(problems(&customers, &["alice"]), Vec::<String>::new());
    }

    #[test]
    fn every_problem_of_rules_and_crm_is_reported() {
        let customers = Customers {
            rules: vec![
                CustomerRule {
                    identity_kind: Some("fax".into()),
                    tier: Some("gold".into()),
                    ..CustomerRule::default()
                },
                CustomerRule {
                    channel: Some("pigeon".into()),
                    relationship_manager: Some("nobody".into()),
                    ..CustomerRule::default()
                },
                CustomerRule::default(),
            ],
            crm: Some(Crm {
                url: "crm.local".into(),
                timeout_ms: 0,
                ..Crm::default()
            }),
            ..Customers::default()
        };
        let found = problems(&customers, &["alice"]);
        for expected in [
            "identity_kind \"fax\"",
            "tier \"gold\" has no",
            "unknown channel \"pigeon\"",
            "\"nobody\" is not a configured agent",
            "matches every conversation",
            "sets nothing",
            "customers.crm.url",
            "customers.crm.secret is empty",
            "customers.crm.timeout_ms 0",
        ] {
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "{expected:?} not in {found:#?}"
            );
        }
    }

    #[test]
    fn the_commented_example_in_the_demo_file_loads_and_validates() {
        let demo = crate::DEFAULT_CONFIG_TOML;
        let start = demo
            .find("# [customers]")
            .expect("customers example in the demo file");
        let example: String = demo[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# ").or_else(|| l.strip_prefix('#')))
            .filter(|l| !l.starts_with("An optional CRM") && !l.starts_with("slow or failing"))
            .map(|l| l.replace("whsec_...", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
            .collect::<Vec<_>>()
            .join("\n");
        let text = format!("{demo}\n{example}\n");
        let config = crate::load_from_str(Some(&text), &std::collections::BTreeMap::new()).expect("loads");
        config.validate().expect("the example is valid");
        assert_eq!(config.customers.rules.len(), 2);
        assert_eq!(config.customers.tiers["vip"].priority, 5);
        assert!(config.customers.crm.is_some());
        assert_eq!(config.retention.idempotency_after_close_secs, 86_400);
    }

    #[test]
    fn retention_checks_its_interval_and_the_idempotency_window() {
        let mut out = Vec::new();
        Retention {
            closed_conversation_secs: 10,
            idempotency_after_close_secs: 20,
            profile_secs: 0,
            sweep_interval_secs: 0,
        }
        .check(&mut |p| out.push(p));
        assert_eq!(out.len(), 2, "{out:?}");
    }
}
