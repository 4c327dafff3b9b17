//! `[[customers.rules]]`: what a conversation shows (sender identity, channel, attributes) → profile fields.

use std::collections::BTreeMap;

use omnigate_config::CustomerRule;
use omnigate_connectors::model::{Channel, Identity};

use crate::store::CustomerProfile;

/// What rules look at.
#[derive(Debug, Clone, Copy)]
pub struct RuleContext<'a> {
    /// The conversation's channel.
    pub channel: Channel,
    /// The identity the conversation's sender wrote from, when the channel gives one.
    pub identity: Option<&'a Identity>,
    /// The conversation's routing attributes.
    pub attributes: &'a BTreeMap<String, String>,
}

/// The configured rules, in order.
#[derive(Debug, Clone, Default)]
pub struct ProfileRules(Vec<CustomerRule>);

impl ProfileRules {
    /// Rules as configured (validated by the config crate).
    pub fn new(rules: Vec<CustomerRule>) -> ProfileRules {
        ProfileRules(rules)
    }

    /// Applies every matching rule in order: later rules override single values, tags and flags add up.
    pub fn apply(&self, ctx: &RuleContext<'_>) -> CustomerProfile {
        let mut profile = CustomerProfile::default();
        for rule in self.0.iter().filter(|r| matches(r, ctx)) {
            profile.overlay(&CustomerProfile {
                tier: rule.tier.clone(),
                tags: rule.tags.iter().cloned().collect(),
                language: rule.language.clone(),
                relationship_manager: rule.relationship_manager.clone(),
                risk_flags: rule.risk_flags.iter().cloned().collect(),
                crm_fetched_at_ms: None,
            });
        }
        profile
    }
}

fn kind_name(identity: &Identity) -> String {
    serde_json::to_value(identity.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn matches(rule: &CustomerRule, ctx: &RuleContext<'_>) -> bool {
    if let Some(kind) = &rule.identity_kind {
        let Some(identity) = ctx.identity else {
            return false;
        };
        if kind_name(identity) != *kind {
            return false;
        }
        if rule
            .identity_prefix
            .as_ref()
            .is_some_and(|p| !identity.value.starts_with(p.as_str()))
        {
            return false;
        }
    }
    if let Some(channel) = &rule.channel {
        let media = serde_json::to_value(ctx.channel.media()).ok();
        let media = media.as_ref().and_then(|m| m.as_str()).unwrap_or_default();
        if ctx.channel.as_str() != channel && media != channel {
            return false;
        }
    }
    rule.attributes
        .iter()
        .all(|(k, v)| ctx.attributes.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use omnigate_connectors::model::IdentityKind;

    use super::*;

    fn phone(value: &str) -> Identity {
        Identity {
            kind: IdentityKind::Phone,
            value: value.to_owned(),
            verified: true,
        }
    }

    fn rules() -> ProfileRules {
        ProfileRules::new(vec![
            CustomerRule {
                identity_kind: Some("phone".into()),
                identity_prefix: Some("+8613800".into()),
                tier: Some("vip".into()),
                tags: vec!["caller".into()],
                ..CustomerRule::default()
            },
            CustomerRule {
                channel: Some("web".into()),
                attributes: BTreeMap::from([("segment".to_owned(), "private".to_owned())]),
                tier: Some("private_banking".into()),
                risk_flags: vec!["pep".into()],
                ..CustomerRule::default()
            },
        ])
    }

    #[test]
    fn identity_kind_and_prefix_must_both_match() {
        let none = BTreeMap::new();
        let vip = phone("+8613800001111");
        let ctx = RuleContext {
            channel: Channel::SmsTwilio,
            identity: Some(&vip),
            attributes: &none,
        };
        let profile = rules().apply(&ctx);
        assert_eq!(profile.tier.as_deref(), Some("vip"));
        assert!(profile.tags.contains("caller"));
        let other = phone("+8613900001111");
        let ctx = RuleContext {
            identity: Some(&other),
            ..ctx
        };
        assert!(rules().apply(&ctx).is_empty());
        let ctx = RuleContext {
            identity: None,
            ..ctx
        };
        assert!(rules().apply(&ctx).is_empty(), "no identity, no identity rule");
    }

    #[test]
    fn channel_and_attributes_match_together_and_later_rules_win() {
        let private = BTreeMap::from([("segment".to_owned(), "private".to_owned())]);
        let vip = phone("+8613800001111");
        let ctx = RuleContext {
            channel: Channel::Web,
            identity: Some(&vip),
            attributes: &private,
        };
        let profile = rules().apply(&ctx);
        assert_eq!(profile.tier.as_deref(), Some("private_banking"));
        assert!(profile.tags.contains("caller") && profile.risk_flags.contains("pep"));
        let ctx = RuleContext {
            channel: Channel::SmsAliyun,
            ..ctx
        };
        assert_eq!(rules().apply(&ctx).tier.as_deref(), Some("vip"));
    }
}
