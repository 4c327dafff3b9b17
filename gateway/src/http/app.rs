//! The mobile app channel's REST side: `POST /chat/v1/sessions` with app credentials and the bank-signed
//! identity, and device registration `POST /chat/v1/devices` / `DELETE /chat/v1/devices`.

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use http::{HeaderMap, StatusCode};
use omnigate_connectors::model::CustomerId;
use serde::Deserialize;
use serde_json::{json, Value};

use super::chat::{bearer, request_id};
use super::{ApiError, AppState};
use crate::app::VerifiedIdentity;
use crate::auth::{Claims, Role};
use crate::bus::Participant;
use crate::clock::{rfc3339, unix_ms};
use crate::store::{ContextStore, Device, PushPlatform, StoreError};
use crate::telemetry::metrics;

/// Longest accepted device token (APNs tokens are 64 hex characters, FCM ones about 160).
const MAX_DEVICE_TOKEN: usize = 4096;

/// The app form of `POST /chat/v1/sessions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AppSessionRequest {
    app_id: String,
    app_key: String,
    identity_token: String,
}

/// The one place where an app's verified identities become a customer id.
///
/// Both identities are verified (the bank signed them), so they resolve together through the identity graph:
/// the phone the bank vouches for is linked to the same customer, and a later call from that number
/// resolves to it. A customer that held the phone only unverified loses it to this one; nothing is merged
/// on unverified data.
///
/// # Errors
/// [`StoreError`] when the store cannot answer.
pub async fn resolve_app_customer(
    store: &dyn ContextStore,
    identity: &VerifiedIdentity,
) -> Result<CustomerId, StoreError> {
    let mut identities = vec![identity.app_user.clone()];
    identities.extend(identity.phone.clone());
    store.resolve_verified(&identities).await
}

/// `POST /chat/v1/sessions` with `{app_id, app_key, identity_token}`.
pub(super) async fn create_app_session(
    state: &AppState,
    request: AppSessionRequest,
    headers: &HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let request_id = request_id(headers);
    // The app id is the caller's text: logged at most 64 characters long.
    let logged_app: String = request.app_id.chars().take(64).collect();
    let Some(app) = state.apps.authenticate(&request.app_id, &request.app_key) else {
        metrics::input_rejected("unknown_app");
        tracing::warn!(request_id, app_id = %logged_app, "app session refused: unknown app or wrong app_key");
        return Err(ApiError::Unauthorized("unknown app or wrong app_key".to_owned()));
    };
    let now_ms = unix_ms();
    let limit = state.settings.limits.sessions_per_widget_key_per_minute;
    if !state
        .session_rate
        .allow(&format!("app:{}", request.app_id), now_ms, limit)
    {
        metrics::input_rejected("session_rate");
        return Err(ApiError::RateLimited(format!(
            "more than {limit} sessions per minute for this app"
        )));
    }
    let now = now_ms / 1000;
    let identity = app
        .verifier
        .verify(&request.identity_token, now)
        .map_err(|error| {
            metrics::input_rejected(error.label());
            tracing::warn!(request_id, app_id = %logged_app, %error, "app session refused: identity token");
            ApiError::Unauthorized(error.to_string())
        })?;
    let customer = resolve_app_customer(&*state.store, &identity).await?;
    let exp = now + state.settings.customer_token_ttl_secs;
    let token = state.tokens.sign(&Claims {
        sub: customer.to_string(),
        role: Role::Customer,
        vid: None,
        wk: None,
        app: Some(request.app_id.clone()),
        iat: now,
        exp,
    });
    let conversations: Vec<Value> = state
        .bus
        .conversations(Participant::Customer(customer.clone()))
        .await?
        .into_iter()
        .map(|c| json!({"id": c.id, "last_seq": c.last_seq, "status": c.status}))
        .collect();
    tracing::info!(request_id, app_id = %logged_app, customer_id = %customer, "app session opened");
    Ok(Json(json!({
        "token": token,
        "expires_at": rfc3339(exp * 1000),
        "customer_id": customer,
        "app_id": request.app_id,
        "ws_url": format!("{}/chat/v1/ws", state.settings.public_ws_base),
        "conversations": conversations,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceRequest {
    platform: String,
    token: String,
    #[serde(default)]
    app_id: Option<String>,
}

/// The customer behind a bearer token of an app session, and its app.
fn app_customer(state: &AppState, headers: &HeaderMap) -> Result<(CustomerId, String), ApiError> {
    let token = bearer(headers)?;
    let claims = state
        .tokens
        .verify(token, Role::Customer, unix_ms() / 1000, 0)
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let customer =
        CustomerId::parse(&claims.sub).map_err(|_| ApiError::Unauthorized("invalid token".to_owned()))?;
    let app = claims
        .app
        .ok_or_else(|| ApiError::Unauthorized("devices need the token of an app session".to_owned()))?;
    Ok((customer, app))
}

fn parse_device(body: &[u8], session_app: &str) -> Result<Device, ApiError> {
    let request: DeviceRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid device request: {e}")))?;
    let platform = PushPlatform::parse(&request.platform).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "platform {:?} is not apns, fcm, hms or jpush",
            request.platform
        ))
    })?;
    let token = request.token.trim();
    if token.is_empty() || token.len() > MAX_DEVICE_TOKEN || token.chars().any(|c| c.is_control() || c == ' ')
    {
        return Err(ApiError::BadRequest(format!(
            "token must be 1..={MAX_DEVICE_TOKEN} characters without spaces"
        )));
    }
    let app_id = request.app_id.unwrap_or_else(|| session_app.to_owned());
    if app_id != session_app {
        return Err(ApiError::BadRequest(
            "app_id is not the app of this session".to_owned(),
        ));
    }
    Ok(Device {
        platform,
        token: token.to_owned(),
        app_id,
    })
}

/// `POST /chat/v1/devices {platform, token, app_id}`: registers the caller's device (idempotent).
pub(super) async fn register_device(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (customer, app) = app_customer(&state, &headers)?;
    let device = parse_device(&body, &app).inspect_err(|error| {
        metrics::input_rejected("bad_device");
        tracing::warn!(request_id = request_id(&headers), %error, "device registration refused");
    })?;
    state.store.register_device(&customer, &device).await?;
    Ok(Json(json!({
        "customer_id": customer,
        "platform": device.platform,
        "token": device.token,
        "app_id": device.app_id,
    })))
}

/// `DELETE /chat/v1/devices {platform, token}`: removes the caller's device; 404 when it is not theirs.
pub(super) async fn unregister_device(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let (customer, app) = app_customer(&state, &headers)?;
    let device = parse_device(&body, &app)?;
    if state
        .store
        .unregister_device(&customer, device.platform, &device.token)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
