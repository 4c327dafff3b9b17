//! WeChat's SHA-1 signatures: `signature` (token, timestamp, nonce) and `msg_signature` (plus `Encrypt`).
//!
//! Both sort their inputs in byte order, concatenate them without separator and hex the SHA-1 (PROTOCOLS.md §1.2,
//! §1.6). WeCom uses the same `msg_signature`.

use sha1::{Digest, Sha1};

use crate::error::{InboundError, SignatureScheme};
use crate::util::{ct_eq, hex};

/// Lowercase hex SHA-1 of `parts` sorted in byte order and concatenated.
pub fn sorted_sha1(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    let mut hasher = Sha1::new();
    for part in sorted {
        hasher.update(part.as_bytes());
    }
    hex(&hasher.finalize())
}

/// The `signature` WeChat puts on every request: SHA-1 of the sorted token, timestamp and nonce.
pub fn signature(token: &str, timestamp: &str, nonce: &str) -> String {
    sorted_sha1(&[token, timestamp, nonce])
}

/// The safe-mode `msg_signature`: SHA-1 of the sorted token, timestamp, nonce and `Encrypt` value.
pub fn msg_signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    sorted_sha1(&[token, timestamp, nonce, encrypt])
}

/// Checks `given` (from the query) against `signature(token, timestamp, nonce)` in constant time.
///
/// # Errors
/// [`InboundError::BadSignature`] when it does not match (403).
pub fn verify_signature(token: &str, timestamp: &str, nonce: &str, given: &str) -> Result<(), InboundError> {
    let expected = signature(token, timestamp, nonce);
    if ct_eq(expected.as_bytes(), given.to_ascii_lowercase().as_bytes()) {
        Ok(())
    } else {
        Err(InboundError::BadSignature(SignatureScheme::WechatSignature))
    }
}

/// Checks `given` against `msg_signature(token, timestamp, nonce, encrypt)` in constant time.
///
/// # Errors
/// [`InboundError::BadSignature`] when it does not match (403).
pub fn verify_msg_signature(
    token: &str,
    timestamp: &str,
    nonce: &str,
    encrypt: &str,
    given: &str,
) -> Result<(), InboundError> {
    let expected = msg_signature(token, timestamp, nonce, encrypt);
    if ct_eq(expected.as_bytes(), given.to_ascii_lowercase().as_bytes()) {
        Ok(())
    } else {
        Err(InboundError::BadSignature(SignatureScheme::WechatMsgSignature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{vectors, vstr};

    #[test]
    fn official_url_check_and_plain_post_signatures() {
        let v = vectors();
        let doc = &v["wechat"]["official_doc_vectors"];
        let token = vstr(doc, &["token"]);
        let url = &doc["url_verification"];
        assert_eq!(
            signature(token, vstr(url, &["timestamp"]), vstr(url, &["nonce"])),
            vstr(url, &["expected_signature"])
        );
        let post = &doc["plain_mode_post"];
        assert_eq!(
            signature(token, vstr(post, &["timestamp"]), vstr(post, &["nonce"])),
            vstr(post, &["expected_signature"])
        );
        let safe = &doc["safe_mode_inbound"];
        assert_eq!(
            signature(token, vstr(safe, &["timestamp"]), vstr(safe, &["nonce"])),
            vstr(safe, &["expected_signature"])
        );
    }

    #[test]
    fn gateway_url_check_signature_and_its_negative() {
        let v = vectors();
        let g = &v["wechat"]["gateway_url_verification"];
        let (token, ts) = (vstr(g, &["token"]), vstr(g, &["timestamp"]));
        let mut parts = [token, ts, vstr(g, &["nonce"])];
        parts.sort_unstable();
        assert_eq!(parts.concat(), vstr(g, &["sorted_concatenation"]));
        assert_eq!(
            signature(token, ts, vstr(g, &["nonce"])),
            vstr(g, &["expected_signature"])
        );
        let negative = vstr(g, &["negative", "signature_with_nonce_n0nce2"]);
        assert_eq!(signature(token, ts, "n0nce2"), negative);
        let err = verify_signature(token, ts, vstr(g, &["nonce"]), negative).unwrap_err();
        assert_eq!(err.http_status(), 403);
    }

    #[test]
    fn msg_signature_of_every_encrypted_vector() {
        let v = vectors();
        let doc = &v["wechat"]["official_doc_vectors"];
        let safe = &doc["safe_mode_inbound"];
        assert_eq!(
            msg_signature(
                vstr(doc, &["token"]),
                vstr(safe, &["timestamp"]),
                vstr(safe, &["nonce"]),
                vstr(safe, &["body", "Encrypt"])
            ),
            vstr(safe, &["expected_msg_signature"])
        );
        let reply = &doc["safe_mode_reply"];
        assert_eq!(
            msg_signature(
                vstr(doc, &["token"]),
                vstr(reply, &["timestamp"]),
                vstr(reply, &["nonce"]),
                vstr(reply, &["expected_encrypt"])
            ),
            vstr(reply, &["expected_msg_signature"])
        );
        let gw = &v["wechat"]["gateway_vectors"];
        for case in gw["padding_edge_cases"].as_array().unwrap() {
            assert_eq!(
                msg_signature(
                    vstr(gw, &["token"]),
                    vstr(case, &["timestamp"]),
                    vstr(case, &["nonce"]),
                    vstr(case, &["expected_encrypt"])
                ),
                vstr(case, &["expected_msg_signature"])
            );
        }
    }
}
