//! The customer-service window: how long and how many messages we may send after a customer action
//! (PROTOCOLS.md §1.7). The numbers are configuration because WeChat changed them (20 → 5 per 48 h).

use crate::error::FailureReason;
use crate::model::ReplyCapability;
use crate::wechat::normalize::Grant;

/// The window sizes and quotas; [`Default`] is the current documentation (5 messages in 48 h after a user
/// message, 3 messages in 1 minute after a follow, menu click or scan).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPolicy {
    /// Window after a user message, in seconds.
    pub message_window_secs: u64,
    /// Messages allowed in that window.
    pub message_quota: u32,
    /// Window after a follow, click or scan, in seconds.
    pub interaction_window_secs: u64,
    /// Messages allowed in that window.
    pub interaction_quota: u32,
}

impl Default for WindowPolicy {
    fn default() -> Self {
        Self {
            message_window_secs: 48 * 3600,
            message_quota: 5,
            interaction_window_secs: 60,
            interaction_quota: 3,
        }
    }
}

impl WindowPolicy {
    /// The capability a customer action at `at_ms` grants.
    pub fn grant(&self, grant: Grant, at_ms: u64) -> ReplyCapability {
        let (secs, remaining) = match grant {
            Grant::Message => (self.message_window_secs, self.message_quota),
            Grant::Interaction => (self.interaction_window_secs, self.interaction_quota),
            Grant::None => (0, 0),
        };
        ReplyCapability::Window {
            expires_at_ms: at_ms.saturating_add(secs.saturating_mul(1000)),
            remaining,
        }
    }
}

/// Combines the current capability with a newly granted one: a grant that lasts longer (a new customer message)
/// resets the budget; a shorter grant (a menu click inside an open 48 h window) leaves an open window as it is and
/// only applies once the current window is closed or used up.
pub fn merge(current: &ReplyCapability, granted: &ReplyCapability, now_ms: u64) -> ReplyCapability {
    match (current, granted) {
        (ReplyCapability::Free, _) | (_, ReplyCapability::Free) => ReplyCapability::Free,
        (
            ReplyCapability::Window {
                expires_at_ms: cur_exp,
                remaining: cur_rem,
            },
            ReplyCapability::Window {
                expires_at_ms: new_exp,
                remaining: _,
            },
        ) => {
            let current_open = *cur_exp > now_ms && *cur_rem > 0;
            if current_open && new_exp <= cur_exp {
                // Conservative: an open window is never extended by a weaker grant, so we never over-promise
                // (the provider's 45047 would catch it, but the agent should not see it).
                current.clone()
            } else {
                granted.clone()
            }
        }
    }
}

/// Checks whether a send is allowed at `now_ms` and, if so, returns the capability after it.
///
/// # Errors
/// [`FailureReason::WindowClosed`] after expiry, [`FailureReason::QuotaExhausted`] with no messages left: block
/// the send and show the agent, instead of letting the provider answer 45015/45047.
pub fn consume(cap: &ReplyCapability, now_ms: u64) -> Result<ReplyCapability, FailureReason> {
    match cap {
        ReplyCapability::Free => Ok(ReplyCapability::Free),
        ReplyCapability::Window {
            expires_at_ms,
            remaining,
        } => {
            if now_ms >= *expires_at_ms {
                Err(FailureReason::WindowClosed)
            } else if *remaining == 0 {
                Err(FailureReason::QuotaExhausted)
            } else {
                Ok(ReplyCapability::Window {
                    expires_at_ms: *expires_at_ms,
                    remaining: remaining - 1,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H48: u64 = 48 * 3_600_000;

    #[test]
    fn quota_is_configurable_and_counts_down() {
        let policy = WindowPolicy {
            message_quota: 20,
            ..WindowPolicy::default()
        };
        let mut cap = policy.grant(Grant::Message, 1_000);
        for _ in 0..20 {
            cap = consume(&cap, 2_000).unwrap();
        }
        assert_eq!(consume(&cap, 2_000), Err(FailureReason::QuotaExhausted));
    }

    #[test]
    fn window_closes_after_48h() {
        let cap = WindowPolicy::default().grant(Grant::Message, 1_000);
        assert!(consume(&cap, 1_000 + H48 - 1).is_ok());
        assert_eq!(consume(&cap, 1_000 + H48), Err(FailureReason::WindowClosed));
        assert_eq!(
            consume(&ReplyCapability::Free, u64::MAX),
            Ok(ReplyCapability::Free)
        );
    }

    #[test]
    fn a_new_message_resets_and_a_click_does_not_shrink() {
        let policy = WindowPolicy::default();
        let open = ReplyCapability::Window {
            expires_at_ms: H48,
            remaining: 1,
        };
        let click = policy.grant(Grant::Interaction, 10);
        let merged = merge(&open, &click, 10);
        assert_eq!(merged, open);
        let used_up = ReplyCapability::Window {
            expires_at_ms: H48,
            remaining: 0,
        };
        assert_eq!(merge(&used_up, &click, 10), click);
        let message = policy.grant(Grant::Message, 20);
        assert_eq!(merge(&merged, &message, 20), message);
        let closed = ReplyCapability::Window {
            expires_at_ms: 5,
            remaining: 5,
        };
        assert_eq!(merge(&closed, &click, 10), click);
        assert_eq!(merge(&open, &policy.grant(Grant::None, 10), 10), open);
    }
}
