//! The normalized, signed CTI webhook `cti-webhook/1` (PROTOCOLS.md §3.6): Standard Webhooks verification with a
//! ±300 s replay window, typed call events, per-call `seq` ordering, `webhook-id` idempotency, and the signer for
//! the gateway's outbound "connect agent" webhook.
//!
//! Entry points: [`CtiWebhook::receive`] (verify + parse), [`reorder::ReorderBuffer`], [`dedupe::SeenIds`],
//! [`normalize::to_inbound`], [`CtiWebhook::sign_connect_agent`].

pub mod dedupe;
pub mod normalize;
pub mod reorder;
pub mod signature;
pub mod wire;

use crate::error::InboundError;
use signature::{WebhookHeaders, WebhookSecret};
use wire::{ConnectAgent, CtiMessage};

/// Default body limit for call events.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// The CTI webhook settings.
#[derive(Debug, Clone)]
pub struct CtiWebhook {
    /// Secrets accepted on inbound events (current and, during a rotation, previous).
    pub inbound_secrets: Vec<WebhookSecret>,
    /// Secrets the outbound "connect agent" webhook is signed with (all of them, during a rotation).
    pub outbound_secrets: Vec<WebhookSecret>,
    /// The tenant events must belong to, when set.
    pub tenant: Option<String>,
    /// Body size limit.
    pub max_body_bytes: usize,
}

impl CtiWebhook {
    /// Settings using one secret in both directions.
    ///
    /// # Errors
    /// [`signature::SecretError`] for a malformed secret.
    pub fn new(secret: &str) -> Result<Self, signature::SecretError> {
        let secret = WebhookSecret::parse(secret)?;
        Ok(Self {
            inbound_secrets: vec![secret.clone()],
            outbound_secrets: vec![secret],
            tenant: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        })
    }

    /// Verifies the raw request at `now` (unix seconds), then parses it and checks that the body's `id` equals
    /// `webhook-id` and the tenant is ours.
    ///
    /// # Errors
    /// 413 over the limit (checked first), 401 for signature and replay failures, 403 for another tenant, 400 for
    /// a malformed body or an `id` that differs from `webhook-id`.
    pub fn receive(
        &self,
        headers: &WebhookHeaders<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<CtiMessage, InboundError> {
        crate::util::check_size(body, self.max_body_bytes)?;
        let id = signature::verify(&self.inbound_secrets, headers, body, now)?;
        let msg = wire::parse(body, self.max_body_bytes)?;
        if msg.envelope.id != id {
            return Err(InboundError::malformed("body id differs from webhook-id"));
        }
        if let Some(tenant) = &self.tenant {
            if &msg.envelope.tenant != tenant {
                return Err(InboundError::WrongRecipient {
                    expected: tenant.clone(),
                    got: msg.envelope.tenant.clone(),
                });
            }
        }
        Ok(msg)
    }

    /// The body and signed headers of a "connect agent" request; `now` is the delivery time (unix seconds).
    pub fn sign_connect_agent(&self, cmd: &ConnectAgent, now: i64) -> (String, [(&'static str, String); 3]) {
        let body = cmd.to_body();
        let headers = signature::sign_headers(&self.outbound_secrets, &cmd.id, now, body.as_bytes());
        (body, headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cti::reorder::{Offer, ReorderBuffer};
    use crate::util::{vectors, vstr};

    fn headers(e: &serde_json::Value) -> WebhookHeaders<'_> {
        WebhookHeaders {
            id: e["headers"]["webhook-id"].as_str(),
            timestamp: e["headers"]["webhook-timestamp"].as_str(),
            signature: e["headers"]["webhook-signature"].as_str(),
        }
    }

    #[test]
    fn vector_events_are_received_and_ordered() {
        let v = vectors();
        let mut hook = CtiWebhook::new(vstr(&v, &["cti_webhook_proposal", "secret"])).unwrap();
        hook.tenant = Some("acme".into());
        let mut buffer = ReorderBuffer::new(5_000);
        let mut applied = Vec::new();
        for e in v["cti_webhook_proposal"]["events"].as_array().unwrap() {
            let now: i64 = headers(e).timestamp.unwrap().parse().unwrap();
            let msg = hook
                .receive(&headers(e), vstr(e, &["raw_body"]).as_bytes(), now)
                .unwrap();
            let seq = msg.envelope.seq;
            if let Offer::Apply(items) = buffer.offer(&msg.envelope.call_id, seq, seq, (now as u64) * 1000) {
                applied.extend(items);
            }
        }
        // seq 3 and 5 never arrive: 4 and 6 wait for their gaps and are released in order.
        assert_eq!(applied, vec![1, 2]);
        while let Some(deadline) = buffer.next_deadline() {
            for (_, items) in buffer.expire(deadline) {
                applied.extend(items);
            }
        }
        assert_eq!(applied, vec![1, 2, 4, 6]);
    }

    #[test]
    fn tamper_stale_id_mismatch_and_tenant_are_refused() {
        let v = vectors();
        let cti = &v["cti_webhook_proposal"];
        let hook = CtiWebhook::new(vstr(cti, &["secret"])).unwrap();
        let e = &cti["events"][0];
        let tampered = vstr(cti, &["tamper_check", "raw_body_modified"]);
        assert_eq!(
            hook.receive(&headers(e), tampered.as_bytes(), 1_700_000_000)
                .unwrap_err()
                .http_status(),
            401
        );
        assert_eq!(
            hook.receive(&headers(e), vstr(e, &["raw_body"]).as_bytes(), 1_700_000_301)
                .unwrap_err()
                .http_status(),
            401
        );
        let other_tenant = CtiWebhook {
            tenant: Some("globex".into()),
            ..hook.clone()
        };
        assert_eq!(
            other_tenant
                .receive(&headers(e), vstr(e, &["raw_body"]).as_bytes(), 1_700_000_000)
                .unwrap_err()
                .http_status(),
            403
        );
        // Signed correctly, but the body claims another id than the header.
        let secret = &hook.inbound_secrets;
        let body = vstr(e, &["raw_body"]);
        let signed = signature::sign_headers(secret, "evt_other", 1_700_000_000, body.as_bytes());
        let h = WebhookHeaders {
            id: Some(&signed[0].1),
            timestamp: Some(&signed[1].1),
            signature: Some(&signed[2].1),
        };
        assert_eq!(
            hook.receive(&h, body.as_bytes(), 1_700_000_000)
                .unwrap_err()
                .http_status(),
            400
        );
        let mut small = hook.clone();
        small.max_body_bytes = 8;
        assert_eq!(
            small
                .receive(&headers(e), body.as_bytes(), 1_700_000_000)
                .unwrap_err()
                .http_status(),
            413
        );
    }

    #[test]
    fn connect_agent_is_signed_so_the_receiver_verifies_it() {
        let v = vectors();
        let hook = CtiWebhook::new(vstr(&v, &["cti_webhook_proposal", "secret"])).unwrap();
        let cmd = ConnectAgent {
            id: "cmd_01".into(),
            tenant: "acme".into(),
            call_id: "call_7f3c".into(),
            agent_id: "agent-0042".into(),
            endpoint: None,
            decided_at_ms: 1_700_000_041_000,
        };
        let (body, signed) = hook.sign_connect_agent(&cmd, 1_700_000_041);
        let h = WebhookHeaders {
            id: Some(&signed[0].1),
            timestamp: Some(&signed[1].1),
            signature: Some(&signed[2].1),
        };
        assert_eq!(
            signature::verify(&hook.inbound_secrets, &h, body.as_bytes(), 1_700_000_041).unwrap(),
            "cmd_01"
        );
        let parsed = wire::parse(body.as_bytes(), 4096);
        assert!(
            parsed.is_err(),
            "agent.connect has no seq: it is an instruction, not a call event"
        );
    }
}
