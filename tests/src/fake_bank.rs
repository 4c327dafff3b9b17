//! The bank's backend and its app: the app's configuration, identity tokens signed like the bank's backend
//! signs them (HS256 with the shared secret, or RS256 with the test key pair), and app sessions.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use omnigate_config::{App, SecretString};
use serde_json::{json, Value};

use crate::{http_request, Customer, HttpResponse, TestGateway};

/// The app id.
pub const APP_ID: &str = "bank-ios";
/// The app credential.
pub const APP_KEY: &str = "bank-ios-app-key-0123456789";
/// The HS256 secret shared with the bank's backend.
pub const BANK_SECRET: &str = "bank-backend-identity-secret-0123456789";
/// The issuer the gateway expects.
pub const BANK_ISSUER: &str = "https://bank.example";
/// The audience the gateway expects.
pub const BANK_AUDIENCE: &str = "omnigate";
/// The bank's RS256 signing key (test only; see `gateway/src/app/testdata/README.md`).
const BANK_RS256_PRIVATE: &str = include_str!("../../gateway/src/app/testdata/bank_rs256_private.pem");
/// Its public key, configured on the gateway.
pub const BANK_RS256_PUBLIC: &str = include_str!("../../gateway/src/app/testdata/bank_rs256_public.pem");

/// The app's configuration: both an HS256 secret and an RS256 key, 300 s max age.
pub fn app_config() -> App {
    App {
        app_id: APP_ID.to_owned(),
        app_key: SecretString::from(APP_KEY.to_owned()),
        name: "Bank iOS".to_owned(),
        queue: "general".to_owned(),
        identity_hs256_secret: Some(SecretString::from(BANK_SECRET.to_owned())),
        identity_rs256_public_key_pem: Some(BANK_RS256_PUBLIC.to_owned()),
        identity_issuer: BANK_ISSUER.to_owned(),
        identity_audience: BANK_AUDIENCE.to_owned(),
        identity_max_age_secs: 300,
        identity_leeway_secs: 5,
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Valid claims for `sub`, issued now, expiring in 5 minutes; `extra` overrides or adds claims.
pub fn identity_claims(sub: &str, extra: Value) -> Value {
    let now = now_secs();
    let mut claims =
        json!({"sub": sub, "iss": BANK_ISSUER, "aud": BANK_AUDIENCE, "iat": now, "exp": now + 300});
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            claims.insert(k.clone(), v.clone());
        }
    }
    claims
}

/// An HS256 identity token signed with `secret`.
pub fn identity_token_hs256(claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("hs256 signs")
}

/// An RS256 identity token signed with the bank's test key.
pub fn identity_token_rs256(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(BANK_RS256_PRIVATE.as_bytes()).expect("test rsa key");
    encode(&Header::new(Algorithm::RS256), claims, &key).expect("rs256 signs")
}

/// `POST /chat/v1/sessions` in the app form.
pub async fn app_session(
    gateway: &TestGateway,
    app_id: &str,
    app_key: &str,
    identity_token: &str,
) -> HttpResponse {
    let body = json!({"app_id": app_id, "app_key": app_key, "identity_token": identity_token});
    http_request(
        gateway.public,
        "POST",
        "/chat/v1/sessions",
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

/// Opens an app session for the bank user `sub` (HS256) and connects; returns the customer and its id.
pub async fn app_customer(gateway: &TestGateway, sub: &str) -> (Customer, String) {
    let token = identity_token_hs256(&identity_claims(sub, json!({})), BANK_SECRET);
    let response = app_session(gateway, APP_ID, APP_KEY, &token).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    let token = body["token"].as_str().expect("token").to_owned();
    let customer_id = body["customer_id"].as_str().expect("customer_id").to_owned();
    (Customer::connect(gateway, &token, Value::Null).await, customer_id)
}

/// `POST` (or `DELETE`) `/chat/v1/devices` with `token` as bearer (none when empty).
pub async fn devices_request(
    gateway: &TestGateway,
    method: &str,
    bearer: &str,
    body: &Value,
) -> HttpResponse {
    let auth = format!("Bearer {bearer}");
    let mut headers = vec![("content-type", "application/json")];
    if !bearer.is_empty() {
        headers.push(("authorization", auth.as_str()));
    }
    http_request(
        gateway.public,
        method,
        "/chat/v1/devices",
        &headers,
        body.to_string().as_bytes(),
    )
    .await
}
