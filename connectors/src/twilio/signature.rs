//! `X-Twilio-Signature` validation (PROTOCOLS.md §2.2), matching twilio-python's `RequestValidator` 9.13.0.
//!
//! String to sign = the public URL Twilio requested + every POST parameter as `name + value`, names sorted in byte
//! order, the values of a repeated name sorted and de-duplicated. Signature = base64 HMAC-SHA1 keyed with the auth
//! token (or HMAC-SHA256 with a SharedKey secret when the settings header says so). Both the URL as given, without
//! its port and with the default port are accepted, like the reference validator.

use std::collections::{BTreeMap, BTreeSet};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::error::{InboundError, SignatureScheme};
use crate::util::{ct_eq, hex};

/// The request header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";
/// The header announcing the SharedKey HMAC-SHA256 mode.
pub const SETTINGS_HEADER: &str = "X-Twilio-Webhooks-Signature-Settings";

/// The MAC Twilio used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA1 keyed with the auth token (the documented scheme).
    HmacSha1,
    /// HMAC-SHA256 keyed with a SharedKey secret (seen only in the SDK source; opt-in).
    HmacSha256,
}

/// Parsed `X-Twilio-Webhooks-Signature-Settings: key=<id>,algorithm=HMAC_SHA256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureSettings {
    /// The SharedKey id.
    pub key_id: String,
    /// The announced algorithm.
    pub algorithm: Algorithm,
}

impl SignatureSettings {
    /// Parses the header value.
    ///
    /// # Errors
    /// [`InboundError::Malformed`] without a key or with an unknown algorithm.
    pub fn parse(header: &str) -> Result<Self, InboundError> {
        let mut key_id = None;
        let mut algorithm = None;
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("key", v)) => key_id = Some(v.trim().to_owned()),
                Some(("algorithm", v)) => {
                    algorithm = Some(match v.trim() {
                        "HMAC_SHA256" => Algorithm::HmacSha256,
                        "HMAC_SHA1" => Algorithm::HmacSha1,
                        other => {
                            return Err(InboundError::Malformed(format!(
                                "unknown twilio algorithm {other}"
                            )))
                        }
                    })
                }
                _ => {}
            }
        }
        Ok(Self {
            key_id: key_id.ok_or_else(|| InboundError::malformed("signature settings without key"))?,
            algorithm: algorithm.unwrap_or(Algorithm::HmacSha1),
        })
    }
}

/// The string Twilio signs for `url` and form `params` (in any order, repeats kept).
pub fn string_to_sign(url: &str, params: &[(String, String)]) -> String {
    let mut grouped: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        grouped.entry(name).or_default().insert(value);
    }
    let mut s = String::from(url);
    for (name, values) in grouped {
        for value in values {
            s.push_str(name);
            s.push_str(value);
        }
    }
    s
}

/// base64 of the MAC of `data` keyed with `key`.
pub fn sign(algorithm: Algorithm, key: &str, data: &str) -> String {
    match algorithm {
        Algorithm::HmacSha1 => {
            let mut mac =
                Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("hmac takes keys of any length");
            mac.update(data.as_bytes());
            STANDARD.encode(mac.finalize().into_bytes())
        }
        Algorithm::HmacSha256 => {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac takes keys of any length");
            mac.update(data.as_bytes());
            STANDARD.encode(mac.finalize().into_bytes())
        }
    }
}

/// The URL variants the reference validator accepts: as given, without its port, with the default port.
pub fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    // A port follows the last ':' unless that colon is inside an IPv6 literal.
    let port_colon = host_port.rfind(':').filter(|&i| !host_port[i..].contains(']'));
    let variant = match port_colon {
        Some(i) => format!("{scheme}://{userinfo}{}{tail}", &host_port[..i]),
        None => {
            let port = if scheme.eq_ignore_ascii_case("https") {
                443
            } else {
                80
            };
            format!("{scheme}://{userinfo}{host_port}:{port}{tail}")
        }
    };
    if variant != url {
        out.push(variant);
    }
    out
}

/// The hex SHA-256 of a raw body, as Twilio puts it in `bodySHA256`.
pub fn body_sha256(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

/// Checks a signature for `url` + `params` against every key (primary then secondary auth token during a
/// rotation) and every URL variant, in constant time per comparison.
///
/// # Errors
/// [`InboundError::BadSignature`] (403) when none matches.
pub fn verify(
    algorithm: Algorithm,
    keys: &[&str],
    url: &str,
    params: &[(String, String)],
    given: &str,
) -> Result<(), InboundError> {
    let mut matched = false;
    for variant in url_variants(url) {
        let data = string_to_sign(&variant, params);
        for key in keys {
            // No early exit: every candidate is computed and compared.
            matched |= ct_eq(sign(algorithm, key, &data).as_bytes(), given.trim().as_bytes());
        }
    }
    if matched {
        Ok(())
    } else {
        Err(InboundError::BadSignature(SignatureScheme::Twilio))
    }
}

/// Checks a non-form (JSON) webhook: the body must hash to the URL's `bodySHA256`, and the signature covers the
/// URL alone.
///
/// # Errors
/// [`InboundError::MissingSignature`] / [`InboundError::BadSignature`] with [`SignatureScheme::TwilioBodyHash`]
/// when the hash is absent or differs; [`InboundError::BadSignature`] for the URL signature.
pub fn verify_body_hash(
    algorithm: Algorithm,
    keys: &[&str],
    url: &str,
    body: &[u8],
    given: &str,
) -> Result<(), InboundError> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let declared = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "bodySHA256")
        .map(|(_, v)| v.into_owned())
        .ok_or(InboundError::MissingSignature(SignatureScheme::TwilioBodyHash))?;
    let body_ok = ct_eq(
        body_sha256(body).as_bytes(),
        declared.to_ascii_lowercase().as_bytes(),
    );
    let sig_ok = verify(algorithm, keys, url, &[], given).is_ok();
    if !sig_ok {
        return Err(InboundError::BadSignature(SignatureScheme::Twilio));
    }
    if !body_ok {
        return Err(InboundError::BadSignature(SignatureScheme::TwilioBodyHash));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{vectors, vstr};
    use proptest::prelude::*;

    fn params(v: &serde_json::Value) -> Vec<(String, String)> {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn every_form_vector_signs_byte_exact() {
        let v = vectors();
        for name in [
            "twilio_docs_example",
            "gateway_inbound_sms",
            "gateway_message_status_callback",
            "gateway_voice_status_callback",
            "gateway_gather_action_empty_value",
        ] {
            let case = &v["twilio"][name];
            let p = params(&case["params"]);
            let s = string_to_sign(vstr(case, &["url"]), &p);
            assert_eq!(s, vstr(case, &["string_to_sign"]), "{name}");
            let token = vstr(case, &["auth_token"]);
            assert_eq!(
                sign(Algorithm::HmacSha1, token, &s),
                vstr(case, &["expected_signature"]),
                "{name}"
            );
            verify(
                Algorithm::HmacSha1,
                &[token],
                vstr(case, &["url"]),
                &p,
                vstr(case, &["expected_signature"]),
            )
            .unwrap();
        }
    }

    #[test]
    fn default_port_variant_is_accepted() {
        let v = vectors();
        let case = &v["twilio"]["gateway_inbound_sms"];
        let also = vstr(case, &["also_valid_for_url"]).split(' ').next().unwrap();
        assert_eq!(also, "https://gateway.example.com:443/webhooks/twilio/sms");
        let p = params(&case["params"]);
        let sig = vstr(case, &["expected_signature"]);
        let token = vstr(case, &["auth_token"]);
        verify(Algorithm::HmacSha1, &[token], also, &p, sig).unwrap();
        // And a signature computed over the URL with the port validates a request seen without it.
        let with_port = sign(Algorithm::HmacSha1, token, &string_to_sign(also, &p));
        verify(
            Algorithm::HmacSha1,
            &[token],
            vstr(case, &["url"]),
            &p,
            &with_port,
        )
        .unwrap();
        assert!(verify(
            Algorithm::HmacSha1,
            &[token],
            "https://gateway.example.com:8443/webhooks/twilio/sms",
            &p,
            sig
        )
        .is_ok());
        assert!(verify(
            Algorithm::HmacSha1,
            &[token],
            "https://other.example.com/webhooks/twilio/sms",
            &p,
            sig
        )
        .is_err());
    }

    #[test]
    fn url_variants_handle_ports_userinfo_and_ipv6() {
        assert_eq!(
            url_variants("https://a.com/x?y=1"),
            ["https://a.com/x?y=1", "https://a.com:443/x?y=1"]
        );
        assert_eq!(
            url_variants("http://a.com:80"),
            ["http://a.com:80", "http://a.com"]
        );
        assert_eq!(
            url_variants("https://u:p@a.com/"),
            ["https://u:p@a.com/", "https://u:p@a.com:443/"]
        );
        assert_eq!(
            url_variants("https://[::1]/x"),
            ["https://[::1]/x", "https://[::1]:443/x"]
        );
        assert_eq!(url_variants("no-scheme"), ["no-scheme"]);
    }

    #[test]
    fn repeated_parameters_follow_the_reference_rule() {
        let v = vectors();
        let case = &v["twilio"]["repeated_parameter_rule"];
        let p: Vec<(String, String)> = case["params_in_wire_order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().unwrap().to_owned(),
                    pair[1].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let s = string_to_sign(vstr(case, &["url"]), &p);
        assert_eq!(s, vstr(case, &["string_to_sign"]));
        let token = vstr(&v, &["twilio", "gateway_inbound_sms", "auth_token"]);
        assert_eq!(
            sign(Algorithm::HmacSha1, token, &s),
            vstr(case, &["expected_signature"])
        );
        let mut dup = p.clone();
        dup.push(("MediaUrl".into(), "https://x/a".into()));
        assert_eq!(
            string_to_sign(vstr(case, &["url"]), &dup),
            s,
            "exact duplicates are dropped"
        );
    }

    #[test]
    fn json_body_variant_checks_the_hash_and_the_url() {
        let v = vectors();
        let case = &v["twilio"]["gateway_json_body_variant"];
        let body = vstr(case, &["raw_body"]).as_bytes();
        assert_eq!(body_sha256(body), vstr(case, &["body_sha256_hex"]));
        let token = vstr(case, &["auth_token"]);
        let url = vstr(case, &["url"]);
        let sig = vstr(case, &["expected_signature"]);
        assert_eq!(sign(Algorithm::HmacSha1, token, url), sig);
        verify_body_hash(Algorithm::HmacSha1, &[token], url, body, sig).unwrap();
        let tampered = vstr(case, &["raw_body"]).replace("example", "exampl3");
        assert_eq!(
            verify_body_hash(Algorithm::HmacSha1, &[token], url, tampered.as_bytes(), sig),
            Err(InboundError::BadSignature(SignatureScheme::TwilioBodyHash))
        );
        assert_eq!(
            verify_body_hash(
                Algorithm::HmacSha1,
                &[token],
                "https://gateway.example.com/webhooks/twilio/json",
                body,
                sig
            ),
            Err(InboundError::MissingSignature(SignatureScheme::TwilioBodyHash))
        );
    }

    #[test]
    fn shared_key_sha256_variant() {
        let v = vectors();
        let case = &v["twilio"]["shared_key_hmac_sha256_variant"];
        assert_eq!(vstr(case, &["params"]), "same as gateway_inbound_sms");
        let p = params(&v["twilio"]["gateway_inbound_sms"]["params"]);
        let s = string_to_sign(vstr(case, &["url"]), &p);
        assert_eq!(
            sign(Algorithm::HmacSha256, vstr(case, &["secret"]), &s),
            vstr(case, &["expected_signature"])
        );
        let header = vstr(case, &["header"])
            .split_once(": ")
            .unwrap()
            .1
            .replace("<sharedKeyId>", "SK1");
        let settings = SignatureSettings::parse(&header).unwrap();
        assert_eq!(
            settings,
            SignatureSettings {
                key_id: "SK1".into(),
                algorithm: Algorithm::HmacSha256
            }
        );
        assert!(SignatureSettings::parse("algorithm=HMAC_SHA256").is_err());
        assert!(SignatureSettings::parse("key=a,algorithm=MD5").is_err());
    }

    #[test]
    fn rotation_accepts_the_secondary_token() {
        let v = vectors();
        let case = &v["twilio"]["twilio_docs_example"];
        let p = params(&case["params"]);
        let sig = vstr(case, &["expected_signature"]);
        verify(
            Algorithm::HmacSha1,
            &["new-token", "12345"],
            vstr(case, &["url"]),
            &p,
            sig,
        )
        .unwrap();
        assert_eq!(
            verify(Algorithm::HmacSha1, &["new-token"], vstr(case, &["url"]), &p, sig)
                .unwrap_err()
                .http_status(),
            403
        );
    }

    proptest! {
        #[test]
        fn sign_then_verify_and_param_order_does_not_matter(
            mut p in proptest::collection::vec(("[A-Za-z]{1,6}", "\\PC{0,12}"), 0..8),
            token in "[a-f0-9]{32}",
        ) {
            let url = "https://gw.example.com/webhooks/twilio/sms?x=1";
            let sig = sign(Algorithm::HmacSha1, &token, &string_to_sign(url, &p));
            prop_assert!(verify(Algorithm::HmacSha1, &[&token], url, &p, &sig).is_ok());
            p.reverse();
            prop_assert!(verify(Algorithm::HmacSha1, &[&token], url, &p, &sig).is_ok());
            p.push(("Injected".into(), "1".into()));
            prop_assert!(verify(Algorithm::HmacSha1, &[&token], url, &p, &sig).is_err());
        }
    }
}
