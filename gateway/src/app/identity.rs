//! Verifies the end-user identity token the bank's backend signs for its app (HS256 or RS256): signature,
//! issuer, audience, expiry, age; then the claims become verified identities (`sub` → `AppUser`, `phone` →
//! `Phone`). Pure: the time is passed in.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use omnigate_config::{App, ExposeSecret};
use omnigate_connectors::model::{Identity, IdentityKind};
use serde::Deserialize;

/// Longest accepted `sub` (the bank's user id).
const MAX_SUB_CHARS: usize = 128;

/// Why an identity token was refused; the message is the reason given to the app (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not a JWT, or its claims are not the expected JSON.
    #[error("identity_token is malformed: {0}")]
    Malformed(String),
    /// Signed with an algorithm this app is not configured for.
    #[error("identity_token algorithm {0} is not accepted for this app")]
    Algorithm(String),
    /// The signature does not verify with the app's key.
    #[error("identity_token signature is invalid")]
    BadSignature,
    /// `iss` is not the configured issuer.
    #[error("identity_token issuer is wrong")]
    WrongIssuer,
    /// `aud` is not the configured audience.
    #[error("identity_token audience is wrong")]
    WrongAudience,
    /// `exp` is past.
    #[error("identity_token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("identity_token is not valid yet")]
    NotYetValid,
    /// `iat` is older than the configured maximum age (or in the future).
    #[error("identity_token was issued too long ago (max age {0} s)")]
    TooOld(u64),
    /// A claim is missing or unusable.
    #[error("identity_token claim {0}")]
    Claim(&'static str),
}

impl IdentityError {
    /// A short fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            IdentityError::Malformed(_) => "identity_malformed",
            IdentityError::Algorithm(_) => "identity_algorithm",
            IdentityError::BadSignature => "identity_signature",
            IdentityError::WrongIssuer => "identity_issuer",
            IdentityError::WrongAudience => "identity_audience",
            IdentityError::Expired => "identity_expired",
            IdentityError::NotYetValid => "identity_not_yet_valid",
            IdentityError::TooOld(_) => "identity_too_old",
            IdentityError::Claim(_) => "identity_claim",
        }
    }
}

/// Why an app's verification keys could not be built (a configuration error, found at start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("channels.app {app_id:?}: identity_rs256_public_key_pem is not an RSA public key: {reason}")]
pub struct KeyError {
    /// The app.
    pub app_id: String,
    /// What the PEM parser said.
    pub reason: String,
}

#[derive(Debug, Deserialize)]
struct IdentityClaims {
    sub: Option<String>,
    exp: Option<u64>,
    iat: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    phone: Option<String>,
}

/// The identities a verified token vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The bank's user id, as a verified `AppUser` identity.
    pub app_user: Identity,
    /// The phone number the bank vouches for, as a verified `Phone` identity (E.164).
    pub phone: Option<Identity>,
}

/// Checks one app's identity tokens.
#[derive(Clone)]
pub struct IdentityVerifier {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    issuer: String,
    audience: String,
    max_age_secs: u64,
    leeway_secs: u64,
}

impl std::fmt::Debug for IdentityVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityVerifier")
            .field("hs256", &self.hs256.is_some())
            .field("rs256", &self.rs256.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// Whether `raw` is an E.164 number: `+`, then 8..=15 digits, the first not 0.
pub fn is_e164(raw: &str) -> bool {
    let Some(digits) = raw.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

impl IdentityVerifier {
    /// Builds from an app's configuration.
    ///
    /// # Errors
    /// [`KeyError`] when the RS256 PEM is not an RSA public key.
    pub fn from_config(app: &App) -> Result<IdentityVerifier, KeyError> {
        let hs256 = app
            .identity_hs256_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes()));
        let rs256 = app
            .identity_rs256_public_key_pem
            .as_ref()
            .map(|pem| {
                DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| KeyError {
                    app_id: app.app_id.clone(),
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        Ok(IdentityVerifier {
            hs256,
            rs256,
            issuer: app.identity_issuer.clone(),
            audience: app.identity_audience.clone(),
            max_age_secs: app.identity_max_age_secs,
            leeway_secs: app.identity_leeway_secs,
        })
    }

    /// Verifies `token` at `now` (unix seconds).
    ///
    /// # Errors
    /// [`IdentityError`] naming the first check that failed.
    pub fn verify(&self, token: &str, now: u64) -> Result<VerifiedIdentity, IdentityError> {
        let header = decode_header(token).map_err(|e| IdentityError::Malformed(e.to_string()))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rs256.as_ref(),
            _ => None,
        }
        .ok_or_else(|| IdentityError::Algorithm(format!("{:?}", header.alg)))?;
        let mut validation = Validation::new(header.alg);
        // Times are checked below against the `now` passed in, so tests need no real clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        // `iss` and `aud` are only checked when present unless required.
        validation.set_required_spec_claims(&["iss", "aud"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let claims = decode::<IdentityClaims>(token, key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => IdentityError::BadSignature,
                ErrorKind::InvalidIssuer => IdentityError::WrongIssuer,
                ErrorKind::InvalidAudience => IdentityError::WrongAudience,
                ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => IdentityError::WrongIssuer,
                ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => IdentityError::WrongAudience,
                ErrorKind::InvalidAlgorithm => IdentityError::Algorithm(format!("{:?}", header.alg)),
                _ => IdentityError::Malformed(e.to_string()),
            })?
            .claims;
        let leeway = self.leeway_secs;
        let exp = claims.exp.ok_or(IdentityError::Claim("exp is required"))?;
        if exp.saturating_add(leeway) <= now {
            return Err(IdentityError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(IdentityError::NotYetValid);
        }
        let iat = claims.iat.ok_or(IdentityError::Claim("iat is required"))?;
        if iat > now.saturating_add(leeway)
            || now.saturating_sub(iat) > self.max_age_secs.saturating_add(leeway)
        {
            return Err(IdentityError::TooOld(self.max_age_secs));
        }
        let sub = claims.sub.ok_or(IdentityError::Claim("sub is required"))?;
        if sub.is_empty() || sub.chars().count() > MAX_SUB_CHARS || sub.chars().any(char::is_control) {
            return Err(IdentityError::Claim(
                "sub must be 1..=128 characters without control characters",
            ));
        }
        let phone = match claims.phone {
            None => None,
            Some(phone) if is_e164(&phone) => Some(Identity {
                kind: IdentityKind::Phone,
                value: phone,
                verified: true,
            }),
            Some(_) => {
                return Err(IdentityError::Claim(
                    "phone must be an E.164 number (+8613800138000)",
                ))
            }
        };
        Ok(VerifiedIdentity {
            app_user: Identity {
                kind: IdentityKind::AppUser,
                value: sub,
                verified: true,
            },
            phone,
        })
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use omnigate_config::SecretString;
    use serde_json::{json, Value};

    use super::*;

    const SECRET: &str = "bank-backend-secret-0123456789abcdef";
    const NOW: u64 = 1_700_000_000;

    fn app() -> App {
        App {
            app_id: "bank-ios".into(),
            app_key: SecretString::from("0123456789abcdef-key".to_owned()),
            name: String::new(),
            queue: String::new(),
            identity_hs256_secret: Some(SecretString::from(SECRET.to_owned())),
            identity_rs256_public_key_pem: None,
            identity_issuer: "https://bank.example".into(),
            identity_audience: "omnigate".into(),
            identity_max_age_secs: 300,
            identity_leeway_secs: 30,
        }
    }

    fn claims() -> Value {
        json!({"sub": "cust-42", "iss": "https://bank.example", "aud": "omnigate", "iat": NOW, "exp": NOW + 600})
    }

    fn sign(claims: &Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn verify(claims: &Value) -> Result<VerifiedIdentity, IdentityError> {
        IdentityVerifier::from_config(&app())
            .unwrap()
            .verify(&sign(claims, SECRET), NOW)
    }

    #[test]
    fn a_valid_token_gives_verified_app_user_and_phone() {
        let mut c = claims();
        c["phone"] = json!("+8613800138000");
        let id = verify(&c).unwrap();
        assert_eq!(id.app_user.kind, IdentityKind::AppUser);
        assert_eq!(id.app_user.value, "cust-42");
        assert!(id.app_user.verified);
        assert_eq!(id.phone.unwrap().value, "+8613800138000");
    }

    #[test]
    fn each_broken_rule_has_its_reason() {
        let with = |key: &str, value: Value| {
            let mut c = claims();
            c[key] = value;
            verify(&c)
        };
        assert_eq!(with("aud", json!("other")), Err(IdentityError::WrongAudience));
        assert_eq!(
            with("iss", json!("https://evil.example")),
            Err(IdentityError::WrongIssuer)
        );
        assert_eq!(with("exp", json!(NOW - 31)), Err(IdentityError::Expired));
        assert!(with("exp", json!(NOW - 29)).is_ok(), "within the leeway");
        assert_eq!(with("iat", json!(NOW - 400)), Err(IdentityError::TooOld(300)));
        assert_eq!(with("nbf", json!(NOW + 100)), Err(IdentityError::NotYetValid));
        assert!(matches!(
            with("phone", json!("13800138000")),
            Err(IdentityError::Claim(_))
        ));
        assert!(matches!(with("sub", json!("")), Err(IdentityError::Claim(_))));
        let mut no_iss = claims();
        no_iss.as_object_mut().unwrap().remove("iss");
        assert_eq!(verify(&no_iss), Err(IdentityError::WrongIssuer));
        let mut no_iat = claims();
        no_iat.as_object_mut().unwrap().remove("iat");
        assert_eq!(verify(&no_iat), Err(IdentityError::Claim("iat is required")));
        let mut no_aud = claims();
        no_aud.as_object_mut().unwrap().remove("aud");
        assert_eq!(verify(&no_aud), Err(IdentityError::WrongAudience));
        let verifier = IdentityVerifier::from_config(&app()).unwrap();
        assert_eq!(
            verifier.verify(&sign(&claims(), "another-secret-0123456789abcdefgh"), NOW),
            Err(IdentityError::BadSignature)
        );
        assert!(matches!(
            verifier.verify("nope", NOW),
            Err(IdentityError::Malformed(_))
        ));
    }

    #[test]
    fn rs256_tokens_verify_with_the_public_key_and_hs256_is_refused_without_a_secret() {
        let mut config = app();
        config.identity_hs256_secret = None;
        config.identity_rs256_public_key_pem =
            Some(include_str!("testdata/bank_rs256_public.pem").to_owned());
        let verifier = IdentityVerifier::from_config(&config).unwrap();
        let private = EncodingKey::from_rsa_pem(include_bytes!("testdata/bank_rs256_private.pem")).unwrap();
        let token = encode(&Header::new(Algorithm::RS256), &claims(), &private).unwrap();
        assert_eq!(verifier.verify(&token, NOW).unwrap().app_user.value, "cust-42");
        // An HS256 token (e.g. signed with the public key as secret, the classic confusion) is refused.
        let confused = sign(&claims(), include_str!("testdata/bank_rs256_public.pem"));
        assert!(matches!(
            verifier.verify(&confused, NOW),
            Err(IdentityError::Algorithm(_))
        ));
        config.identity_rs256_public_key_pem = Some("-----BEGIN PUBLIC KEY-----\nnope\n".to_owned());
        assert!(IdentityVerifier::from_config(&config).is_err());
    }

    #[test]
    fn e164_is_checked() {
        assert!(is_e164("+14155550100"));
        assert!(!is_e164("+0123456789"));
        assert!(!is_e164("14155550100"));
        assert!(!is_e164("+1415"));
        assert!(!is_e164("+1415555010a"));
    }
}
