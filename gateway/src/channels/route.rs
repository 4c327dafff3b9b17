//! The channel an agent picks for a reply (`message.send` `via`): which configured connector sends it, and
//! the customer's identity on that channel, found in the customer's identities (the identity graph) before
//! the message is stored. A pick that cannot reach the customer is refused, so nothing is stored.

use std::collections::HashMap;
use std::sync::Arc;

use omnigate_connectors::model::{Channel, CustomerId, Identity, IdentityKind};

use super::address::AddressBook;
use crate::bus::Route;
use crate::store::{ContextStore, StoreError, Via};

/// The channels an agent may pick for a reply.
pub const PICKABLE: [Channel; 2] = [Channel::SmsTwilio, Channel::WechatOa];

/// What the agent asked for: a channel by name, optionally one connector of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViaRequest {
    /// The channel's name (`sms_twilio`, `wechat_oa`).
    pub channel: String,
    /// A configured connector id of that channel; the first configured one when `None`.
    pub account: Option<String>,
}

/// Why a picked route cannot be used. Each maps to an `error` frame code.
#[derive(Debug, thiserror::Error)]
pub enum PickError {
    /// The channel is unknown or cannot carry an agent's reply.
    #[error("{0}")]
    Invalid(String),
    /// No connector of that channel (or not the named one) is configured.
    #[error("{0}")]
    NotConfigured(String),
    /// The customer has no identity this channel can reach.
    #[error("{0}")]
    NoAddress(String),
    /// The store could not be read; retry.
    #[error("temporarily unavailable: {0}")]
    Unavailable(#[from] StoreError),
}

impl PickError {
    /// The `code` of the error frame.
    pub fn code(&self) -> &'static str {
        match self {
            PickError::Invalid(_) => "invalid_request",
            PickError::NotConfigured(_) => "channel_not_configured",
            PickError::NoAddress(_) => "no_address_on_channel",
            PickError::Unavailable(_) => "unavailable",
        }
    }
}

/// Resolves agents' picks against the configured connectors and the customer's identities.
#[derive(Debug)]
pub struct RoutePicker {
    store: Arc<dyn ContextStore>,
    addresses: Arc<AddressBook>,
    /// The connector ids of each pickable channel, in configuration order.
    accounts: HashMap<Channel, Vec<String>>,
}

/// The channel named `name`, if it is one.
fn channel_named(name: &str) -> Option<Channel> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

/// The phone to text: a verified one first, else the first (identities come sorted).
pub fn pick_phone(identities: &[Identity]) -> Option<&Identity> {
    let mut phones = identities.iter().filter(|i| i.kind == IdentityKind::Phone);
    let first = phones.clone().next();
    phones.find(|i| i.verified).or(first)
}

impl RoutePicker {
    /// A picker over the configured connectors `(channel, account id)`.
    pub fn new(
        store: Arc<dyn ContextStore>,
        addresses: Arc<AddressBook>,
        connectors: impl IntoIterator<Item = (Channel, String)>,
    ) -> RoutePicker {
        let mut accounts: HashMap<Channel, Vec<String>> = HashMap::new();
        for (channel, account) in connectors {
            accounts.entry(channel).or_default().push(account);
        }
        RoutePicker {
            store,
            addresses,
            accounts,
        }
    }

    /// The route of a reply to `customer` through the channel the agent picked.
    ///
    /// # Errors
    /// [`PickError`]: an unknown or unpickable channel, no such connector, no address of the customer on
    /// that channel, or a store that cannot be read.
    pub async fn pick(&self, customer: &CustomerId, via: &ViaRequest) -> Result<Route, PickError> {
        let channel = channel_named(&via.channel)
            .ok_or_else(|| PickError::Invalid(format!("unknown channel {:?}", truncate(&via.channel))))?;
        if !PICKABLE.contains(&channel) {
            return Err(PickError::Invalid(format!(
                "a reply cannot be sent through {}; pick sms_twilio or wechat_oa",
                channel.as_str()
            )));
        }
        let configured = self.accounts.get(&channel).map(Vec::as_slice).unwrap_or_default();
        let allowed: Vec<&String> = match &via.account {
            Some(account) => configured.iter().filter(|a| *a == account).collect(),
            None => configured.iter().collect(),
        };
        if allowed.is_empty() {
            return Err(PickError::NotConfigured(match &via.account {
                Some(account) => format!(
                    "no {} connector {:?} is configured",
                    channel.as_str(),
                    truncate(account)
                ),
                None => format!("no {} connector is configured", channel.as_str()),
            }));
        }
        let customer = self.store.canonical_customer(customer).await?;
        let identities = self.store.identities_of(&customer).await?;
        match channel {
            Channel::WechatOa => self.pick_openid(&customer, &identities, &allowed).await,
            _ => {
                let phone = pick_phone(&identities).ok_or_else(|| {
                    PickError::NoAddress("the customer has no phone number to text".to_owned())
                })?;
                Ok(Route {
                    via: Via {
                        channel,
                        account: allowed[0].clone(),
                    },
                    to: phone.clone(),
                })
            }
        }
    }

    /// An OpenID of the customer's that one of `allowed` accounts received a push from (an OpenID is only
    /// valid with the official account that issued it): the address it last wrote from, or else the newest
    /// such WeChat conversation's address.
    async fn pick_openid(
        &self,
        customer: &CustomerId,
        identities: &[Identity],
        allowed: &[&String],
    ) -> Result<Route, PickError> {
        let openids: Vec<&str> = identities
            .iter()
            .filter(|i| i.kind == IdentityKind::WechatOpenId)
            .map(|i| i.value.as_str())
            .collect();
        // An OpenID that wrote to us since the start (also one the agent linked to this customer from another).
        for identity in identities.iter().filter(|i| i.kind == IdentityKind::WechatOpenId) {
            if let Some(address) = self
                .addresses
                .sender(Channel::WechatOa, identity)
                .filter(|a| allowed.iter().any(|account| **account == a.account))
            {
                return Ok(Route {
                    via: Via {
                        channel: Channel::WechatOa,
                        account: address.account,
                    },
                    to: address.to,
                });
            }
        }
        // Else, after a restart, the newest of the customer's own WeChat conversations.
        if !openids.is_empty() {
            for record in self.store.customer_conversations(customer).await? {
                if record.channel != Channel::WechatOa {
                    continue;
                }
                let Some(address) = self.addresses.lookup(&record.id, &self.store).await? else {
                    continue;
                };
                if address.to.kind == IdentityKind::WechatOpenId
                    && openids.contains(&address.to.value.as_str())
                    && allowed.iter().any(|a| **a == address.account)
                {
                    return Ok(Route {
                        via: Via {
                            channel: Channel::WechatOa,
                            account: address.account,
                        },
                        to: address.to,
                    });
                }
            }
        }
        Err(PickError::NoAddress(
            "the customer has no OpenID of a configured official account".to_owned(),
        ))
    }
}

fn truncate(raw: &str) -> String {
    raw.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(value: &str, verified: bool) -> Identity {
        Identity {
            kind: IdentityKind::Phone,
            value: value.to_owned(),
            verified,
        }
    }

    #[test]
    fn a_verified_phone_is_preferred_and_any_phone_is_taken_otherwise() {
        let visitor = Identity {
            kind: IdentityKind::WebVisitor,
            value: "v1".to_owned(),
            verified: false,
        };
        let ids = [
            visitor.clone(),
            phone("+8613800000001", false),
            phone("+8613800000002", true),
        ];
        assert_eq!(pick_phone(&ids), Some(&ids[2]));
        let ids = [visitor.clone(), phone("+8613800000001", false)];
        assert_eq!(pick_phone(&ids), Some(&ids[1]));
        assert_eq!(pick_phone(&[visitor]), None);
    }

    #[test]
    fn channels_are_named_as_on_the_wire() {
        assert_eq!(channel_named("sms_twilio"), Some(Channel::SmsTwilio));
        assert_eq!(channel_named("wechat_oa"), Some(Channel::WechatOa));
        assert_eq!(channel_named("carrier_pigeon"), None);
    }
}
