//! Standard Webhooks signing and verification for `cti-webhook/1` (PROTOCOLS.md §3.6).
//!
//! `webhook-signature` = space-separated `v1,<base64 HMAC-SHA256(key, id + "." + timestamp + "." + raw body)>`
//! entries, `key` = base64 of the secret after `whsec_`. Computed over the raw bytes, compared in constant time,
//! accepted when any entry matches any configured secret, rejected when the timestamp is more than 300 s away.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{InboundError, SignatureScheme};
use crate::util::ct_eq;

/// Header with the message id (identical on every retry).
pub const ID_HEADER: &str = "webhook-id";
/// Header with the delivery time in unix seconds.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Header with the signatures.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// Allowed clock skew between sender and receiver, in seconds.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook secret must be base64 (optionally prefixed with whsec_) of at least 16 bytes")]
pub struct SecretError;

/// A decoded signing secret.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    /// Decodes `whsec_<base64>` (the prefix is optional).
    ///
    /// # Errors
    /// [`SecretError`] for bad base64 or fewer than 16 key bytes.
    pub fn parse(secret: &str) -> Result<Self, SecretError> {
        let b64 = secret.trim().strip_prefix("whsec_").unwrap_or(secret.trim());
        let key = STANDARD.decode(b64).map_err(|_| SecretError)?;
        if key.len() < 16 {
            return Err(SecretError);
        }
        Ok(Self(key))
    }

    /// The raw key bytes.
    pub fn key(&self) -> &[u8] {
        &self.0
    }

    /// The bare base64 signature (without `v1,`) of one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("hmac takes keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        STANDARD.encode(mac.finalize().into_bytes())
    }
}

/// The three Standard Webhooks headers of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookHeaders<'a> {
    /// `webhook-id`.
    pub id: Option<&'a str>,
    /// `webhook-timestamp`.
    pub timestamp: Option<&'a str>,
    /// `webhook-signature`.
    pub signature: Option<&'a str>,
}

/// Headers for an outbound request signed with every secret in `secrets` (several during a rotation).
pub fn sign_headers(
    secrets: &[WebhookSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let signature = secrets
        .iter()
        .map(|s| format!("v1,{}", s.sign(msg_id, timestamp, body)))
        .collect::<Vec<_>>()
        .join(" ");
    [
        (ID_HEADER, msg_id.to_owned()),
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (SIGNATURE_HEADER, signature),
    ]
}

/// Verifies a request against any of `secrets` at `now` (unix seconds) and returns its `webhook-id`.
///
/// The signature is checked before the timestamp so that nothing about an unauthenticated request is trusted.
///
/// # Errors
/// [`InboundError::MissingSignature`] without the headers, [`InboundError::Malformed`] for a non-numeric
/// timestamp, [`InboundError::BadSignature`] when no `v1` entry matches, [`InboundError::Stale`] outside ±300 s;
/// all but `Malformed` answer 401.
pub fn verify<'a>(
    secrets: &[WebhookSecret],
    headers: &WebhookHeaders<'a>,
    body: &[u8],
    now: i64,
) -> Result<&'a str, InboundError> {
    let missing = InboundError::MissingSignature(SignatureScheme::StandardWebhooks);
    let (Some(id), Some(ts), Some(sig)) = (headers.id, headers.timestamp, headers.signature) else {
        return Err(missing);
    };
    let timestamp: i64 = ts
        .trim()
        .parse()
        .map_err(|_| InboundError::malformed("webhook-timestamp is not an integer"))?;
    let mut matched = false;
    for secret in secrets {
        let expected = secret.sign(id, timestamp, body);
        for entry in sig.split_whitespace() {
            if let Some(given) = entry.strip_prefix("v1,") {
                matched |= ct_eq(expected.as_bytes(), given.as_bytes());
            }
        }
    }
    if !matched {
        return Err(InboundError::BadSignature(SignatureScheme::StandardWebhooks));
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(InboundError::Stale {
            timestamp,
            now,
            window_secs: TOLERANCE_SECS,
        });
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{hex, vectors, vstr};
    use proptest::prelude::*;

    fn secret(v: &serde_json::Value) -> WebhookSecret {
        WebhookSecret::parse(vstr(v, &["cti_webhook_proposal", "secret"])).unwrap()
    }

    fn headers(event: &serde_json::Value) -> WebhookHeaders<'_> {
        WebhookHeaders {
            id: event["headers"]["webhook-id"].as_str(),
            timestamp: event["headers"]["webhook-timestamp"].as_str(),
            signature: event["headers"]["webhook-signature"].as_str(),
        }
    }

    #[test]
    fn secret_decodes_to_bytes_0_to_31() {
        let v = vectors();
        assert_eq!(
            hex(secret(&v).key()),
            vstr(&v, &["cti_webhook_proposal", "secret_key_hex"])
        );
        assert!(WebhookSecret::parse("whsec_!!").is_err());
        assert!(WebhookSecret::parse("whsec_AAAA").is_err());
    }

    #[test]
    fn every_event_signature_matches_and_verifies() {
        let v = vectors();
        let s = secret(&v);
        for event in v["cti_webhook_proposal"]["events"].as_array().unwrap() {
            let h = headers(event);
            let body = vstr(event, &["raw_body"]).as_bytes();
            let ts: i64 = h.timestamp.unwrap().parse().unwrap();
            assert_eq!(
                format!("{}.{}.{}", h.id.unwrap(), ts, vstr(event, &["raw_body"])),
                vstr(event, &["signed_content"])
            );
            assert_eq!(
                format!("v1,{}", s.sign(h.id.unwrap(), ts, body)),
                h.signature.unwrap()
            );
            assert_eq!(
                verify(std::slice::from_ref(&s), &h, body, ts + 10).unwrap(),
                h.id.unwrap()
            );
            let signed = sign_headers(std::slice::from_ref(&s), h.id.unwrap(), ts, body);
            assert_eq!(signed[2].1, h.signature.unwrap());
        }
    }

    #[test]
    fn tampered_body_is_rejected_with_401() {
        let v = vectors();
        let cti = &v["cti_webhook_proposal"];
        let event = &cti["events"][0];
        let err = verify(
            &[secret(&v)],
            &headers(event),
            vstr(cti, &["tamper_check", "raw_body_modified"]).as_bytes(),
            1_700_000_000,
        )
        .unwrap_err();
        assert_eq!(err, InboundError::BadSignature(SignatureScheme::StandardWebhooks));
        assert_eq!(err.http_status(), 401);
        assert!(vstr(cti, &["tamper_check", "expect"]).ends_with("401"));
    }

    #[test]
    fn replay_window_is_300_seconds_with_an_injected_clock() {
        let v = vectors();
        let event = &v["cti_webhook_proposal"]["events"][0];
        let body = vstr(event, &["raw_body"]).as_bytes();
        let s = [secret(&v)];
        assert!(verify(&s, &headers(event), body, 1_700_000_300).is_ok());
        assert!(verify(&s, &headers(event), body, 1_699_999_700).is_ok());
        let stale = verify(&s, &headers(event), body, 1_700_000_301).unwrap_err();
        assert!(matches!(
            stale,
            InboundError::Stale {
                timestamp: 1_700_000_000,
                ..
            }
        ));
        assert_eq!(stale.http_status(), 401);
        assert!(verify(&s, &headers(event), body, 1_699_999_699).is_err());
    }

    #[test]
    fn multiple_entries_and_rotation() {
        let v = vectors();
        let event = &v["cti_webhook_proposal"]["events"][1];
        let body = vstr(event, &["raw_body"]).as_bytes();
        let real = headers(event).signature.unwrap();
        let combined = format!("v1,AAAA v2,ignored {real}");
        let h = WebhookHeaders {
            signature: Some(&combined),
            ..headers(event)
        };
        let old = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert!(verify(&[old.clone(), secret(&v)], &h, body, 1_700_000_005).is_ok());
        assert!(verify(&[old], &h, body, 1_700_000_005).is_err());
        let none = WebhookHeaders { signature: None, ..h };
        assert_eq!(
            verify(&[secret(&v)], &none, body, 0).unwrap_err().http_status(),
            401
        );
        let bad_ts = WebhookHeaders {
            timestamp: Some("soon"),
            ..h
        };
        assert_eq!(
            verify(&[secret(&v)], &bad_ts, body, 0).unwrap_err().http_status(),
            400
        );
    }

    proptest! {
        #[test]
        fn sign_then_verify(body in proptest::collection::vec(any::<u8>(), 0..512), ts in 0i64..4_000_000_000, skew in -300i64..=300, id in "[a-zA-Z0-9_]{1,40}") {
            let s = WebhookSecret::parse("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
            let signed = sign_headers(std::slice::from_ref(&s), &id, ts, &body);
            let h = WebhookHeaders { id: Some(&signed[0].1), timestamp: Some(&signed[1].1), signature: Some(&signed[2].1) };
            prop_assert!(verify(std::slice::from_ref(&s), &h, &body, ts + skew).is_ok());
            let mut tampered = body.clone();
            tampered.push(b'x');
            prop_assert!(verify(std::slice::from_ref(&s), &h, &tampered, ts).is_err());
        }
    }
}
