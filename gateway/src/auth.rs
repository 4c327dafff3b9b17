//! Tokens: HS256 JWTs for customers (chat protocol v1, at most 15 minutes) and agents.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use omnigate_config::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Who a token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A customer on web chat or the app.
    Customer,
    /// An agent.
    Agent,
}

/// The claims of every omnigate token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Customer id or agent id.
    pub sub: String,
    /// The role.
    pub role: Role,
    /// Web visitor id (customers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vid: Option<String>,
    /// Widget key the session was opened with (customers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wk: Option<String>,
    /// App id the session was opened with (customers of the mobile app channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expiry, unix seconds.
    pub exp: u64,
}

/// Why a token was refused; maps to close code 4001 or 4002.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Bad signature, malformed, or the wrong role.
    #[error("invalid token")]
    Invalid,
    /// Well-formed and signed by us, but expired.
    #[error("token expired")]
    Expired,
}

/// Signs and checks tokens with the configured secret.
#[derive(Clone)]
pub struct TokenAuthority {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenAuthority(..)")
    }
}

impl TokenAuthority {
    /// Builds from the HS256 secret.
    pub fn new(secret: &SecretString) -> TokenAuthority {
        let bytes = secret.expose_secret().as_bytes();
        TokenAuthority {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
        }
    }

    /// Signs claims.
    ///
    /// # Panics
    /// Never in practice: HS256 signing of a serializable struct cannot fail.
    pub fn sign(&self, claims: &Claims) -> String {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding).expect("hs256 signing cannot fail")
    }

    /// Verifies a token for `role` at `now` (unix seconds). `leeway_secs` accepts tokens expired that long ago
    /// (used only to refresh a customer session).
    ///
    /// # Errors
    /// [`TokenError::Expired`] or [`TokenError::Invalid`].
    pub fn verify(&self, token: &str, role: Role, now: u64, leeway_secs: u64) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let claims = decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| TokenError::Invalid)?
            .claims;
        if claims.role != role {
            return Err(TokenError::Invalid);
        }
        if claims.exp.saturating_add(leeway_secs) <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority() -> TokenAuthority {
        TokenAuthority::new(&SecretString::from(
            "a-test-secret-that-is-long-enough-0000".to_owned(),
        ))
    }

    fn claims(role: Role, exp: u64) -> Claims {
        Claims {
            sub: "lin".into(),
            role,
            vid: None,
            wk: None,
            app: None,
            iat: 0,
            exp,
        }
    }

    #[test]
    fn a_token_verifies_only_for_its_role_and_lifetime() {
        let a = authority();
        let token = a.sign(&claims(Role::Agent, 100));
        assert_eq!(a.verify(&token, Role::Agent, 99, 0).unwrap().sub, "lin");
        assert_eq!(a.verify(&token, Role::Customer, 99, 0), Err(TokenError::Invalid));
        assert_eq!(a.verify(&token, Role::Agent, 100, 0), Err(TokenError::Expired));
        assert!(a.verify(&token, Role::Agent, 150, 60).is_ok());
    }

    #[test]
    fn a_token_from_another_secret_or_tampered_is_invalid() {
        let other = TokenAuthority::new(&SecretString::from(
            "another-secret-that-is-long-enough-00".to_owned(),
        ));
        let token = other.sign(&claims(Role::Agent, 100));
        assert_eq!(
            authority().verify(&token, Role::Agent, 1, 0),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            authority().verify("not.a.jwt", Role::Agent, 1, 0),
            Err(TokenError::Invalid)
        );
    }
}
