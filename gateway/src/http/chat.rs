//! Chat protocol v1 over REST, and the websocket upgrades.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::response::Response;
use axum::Json;
use http::HeaderMap;
use omnigate_connectors::model::{ConversationId, CustomerId, Identity, IdentityKind};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState, REQUEST_ID};
use crate::auth::{Claims, Role};
use crate::bus::Participant;
use crate::clock::{rfc3339, unix_ms};
use crate::protocol;
use crate::store::View;
use crate::telemetry::metrics;
use crate::ws;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRequest {
    widget_key: String,
    /// The current (or recently expired) token, to continue as the same visitor.
    #[serde(default)]
    refresh_token: Option<String>,
}

/// `POST /chat/v1/sessions`: widget key → short-lived token, visitor id, ws url, open conversations; or, with
/// `app_id`, the mobile app form (`http/app.rs`).
pub(super) async fn create_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid session request: {e}")))?;
    if value.get("app_id").is_some() {
        let request: super::app::AppSessionRequest = serde_json::from_value(value)
            .map_err(|e| ApiError::BadRequest(format!("invalid app session request: {e}")))?;
        return super::app::create_app_session(&state, request, &headers).await;
    }
    let request: SessionRequest = serde_json::from_value(value)
        .map_err(|e| ApiError::BadRequest(format!("invalid session request: {e}")))?;
    if !state.settings.widgets.contains_key(&request.widget_key) {
        metrics::input_rejected("unknown_widget_key");
        return Err(ApiError::Unauthorized("unknown widget key".to_owned()));
    }
    let now_ms = unix_ms();
    let limit = state.settings.limits.sessions_per_widget_key_per_minute;
    if !state.session_rate.allow(&request.widget_key, now_ms, limit) {
        metrics::input_rejected("session_rate");
        return Err(ApiError::RateLimited(format!(
            "more than {limit} sessions per minute for this widget key"
        )));
    }
    let now = now_ms / 1000;
    let (customer, visitor) = match &request.refresh_token {
        Some(token) => {
            let claims = state
                .tokens
                .verify(
                    token,
                    Role::Customer,
                    now,
                    state.settings.customer_refresh_window_secs,
                )
                .map_err(|e| ApiError::Unauthorized(format!("refresh_token: {e}")))?;
            if claims.wk.as_deref() != Some(request.widget_key.as_str()) {
                return Err(ApiError::Unauthorized(
                    "refresh_token belongs to another widget".to_owned(),
                ));
            }
            let customer = CustomerId::parse(&claims.sub)
                .map_err(|_| ApiError::Unauthorized("refresh_token: invalid token".to_owned()))?;
            (customer, claims.vid.unwrap_or_default())
        }
        None => {
            let visitor = format!("v_{}", uuid::Uuid::new_v4().simple());
            let identity = Identity {
                kind: IdentityKind::WebVisitor,
                value: visitor.clone(),
                verified: false,
            };
            (state.store.resolve_customer(&identity).await?, visitor)
        }
    };
    let exp = now + state.settings.customer_token_ttl_secs;
    let claims = Claims {
        sub: customer.to_string(),
        role: Role::Customer,
        vid: Some(visitor.clone()),
        wk: Some(request.widget_key.clone()),
        app: None,
        iat: now,
        exp,
    };
    let token = state.tokens.sign(&claims);
    let conversations: Vec<Value> = state
        .bus
        .conversations(Participant::Customer(customer.clone()))
        .await?
        .into_iter()
        .map(|c| json!({"id": c.id, "last_seq": c.last_seq, "status": c.status}))
        .collect();
    Ok(Json(json!({
        "token": token,
        "expires_at": rfc3339(exp * 1000),
        "visitor_id": visitor,
        "customer_id": customer,
        "ws_url": format!("{}/chat/v1/ws", state.settings.public_ws_base),
        "conversations": conversations,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    #[serde(default)]
    after_seq: u64,
    #[serde(default)]
    limit: Option<usize>,
}

pub(super) fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::Unauthorized("an Authorization: Bearer token is required".to_owned()))
}

/// `GET /chat/v1/conversations/{id}/events?after_seq=N`: pages the log in the caller's view.
pub(super) async fn conversation_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let token = bearer(&headers)?;
    let now = unix_ms() / 1000;
    let who = match state.tokens.verify(token, Role::Customer, now, 0) {
        Ok(claims) => Participant::Customer(
            CustomerId::parse(&claims.sub).map_err(|_| ApiError::Unauthorized("invalid token".to_owned()))?,
        ),
        Err(_) => {
            let claims = state
                .tokens
                .verify(token, Role::Agent, now, 0)
                .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
            Participant::Agent(claims.sub)
        }
    };
    let id = ConversationId::parse(&id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let view = state.bus.access(who, id.clone()).await?;
    let max = state.settings.limits.events_page_max;
    let limit = query.limit.unwrap_or(max).clamp(1, max);
    let page = state
        .store
        .events_after(&id, view, query.after_seq, limit)
        .await?;
    let mut events = Vec::with_capacity(page.events.len());
    let mut last_returned = query.after_seq;
    for event in &page.events {
        let read_position = match (&event.kind, view) {
            (crate::store::EventKind::Read { up_to_seq, .. }, View::Customer) => {
                state.store.customer_position(&id, *up_to_seq).await.ok()
            }
            _ => None,
        };
        let payload = protocol::event_payload(&id, event, view, read_position);
        last_returned = payload["seq"].as_u64().unwrap_or(last_returned);
        events.push(payload);
    }
    Ok(Json(json!({
        "conversation_id": id,
        "events": events,
        "last_seq": page.last,
        "has_more": last_returned < page.last,
    })))
}

pub(super) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn upgrade(
    state: AppState,
    upgrade: WebSocketUpgrade,
    peer: SocketAddr,
    headers: &HeaderMap,
    role: ws::Role,
) -> Response {
    let limits = &state.settings.limits;
    let admission = state.connection_limits.admit(peer.ip());
    let request_id = request_id(headers);
    let tracked = state.shutdown.clone();
    upgrade
        .read_buffer_size(limits.ws_read_buffer_bytes)
        .write_buffer_size(limits.ws_write_buffer_bytes)
        .max_write_buffer_size(limits.ws_write_buffer_bytes.max(limits.max_frame_bytes) * 4)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_upgrade(move |socket| {
            tracked.track_connection(ws::run(socket, state, role, admission, request_id))
        })
}

/// `GET /chat/v1/ws`: a customer's socket.
pub(super) async fn customer_socket(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    socket: WebSocketUpgrade,
) -> Response {
    upgrade(state, socket, peer, &headers, ws::Role::Customer)
}

/// `GET /agent/v1/ws`: an agent's socket.
pub(super) async fn agent_socket(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    socket: WebSocketUpgrade,
) -> Response {
    upgrade(state, socket, peer, &headers, ws::Role::Agent)
}

/// Any other path.
pub(super) async fn not_found() -> ApiError {
    ApiError::NotFound
}
