//! HTTP: the public app (chat REST, websocket upgrades) and the admin app (health, readiness, metrics).
//!
//! Layout:
//! - `state.rs`: [`AppState`] shared by every handler and socket
//! - `error.rs`: [`ApiError`], the one mapping of errors to responses
//! - `chat.rs`: `POST /chat/v1/sessions`, `GET /chat/v1/conversations/{id}/events`, the websocket upgrades
//! - `app.rs`: the mobile app: sessions with app credentials and a signed identity, `/chat/v1/devices`
//! - `admin.rs`: `/healthz`, `/readyz`, `/metrics`
//! - `customers.rs`: the admin API: `/admin/v1/customers/{id}` (read, erase), `/admin/v1/audit`
//!
//! The channel webhooks (`/channels/…`) come from [`crate::channels::routes`].

mod admin;
mod app;
mod chat;
mod customers;
mod error;
mod state;

use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use http::{HeaderName, Request};
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use app::resolve_app_customer;
pub use error::ApiError;
pub use state::{AppState, Settings};

/// The header carrying each request's id (set when the client did not send one).
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id)
}

/// The public listener's routes.
pub fn public_app(state: AppState) -> Router {
    let timeout = Duration::from_millis(state.settings.request_timeout_ms);
    let body_limit = state.settings.max_body_bytes;
    let channels = state
        .channels
        .clone()
        .map(crate::channels::routes)
        .unwrap_or_default();
    let media = state
        .channels
        .clone()
        .map(crate::channels::media_routes)
        .unwrap_or_default();
    Router::new()
        .route("/chat/v1/sessions", post(chat::create_session))
        .route(
            "/chat/v1/conversations/{id}/events",
            get(chat::conversation_events),
        )
        .route(
            "/chat/v1/devices",
            post(app::register_device).delete(app::unregister_device),
        )
        .route("/chat/v1/ws", get(chat::customer_socket))
        .route("/agent/v1/ws", get(chat::agent_socket))
        .fallback(chat::not_found)
        .with_state(state)
        .merge(channels)
        .layer(RequestBodyLimitLayer::new(body_limit))
        .merge(media)
        .layer(
            // The whole stack as one layer of the router: each `Router::layer` boxes every route once more,
            // and a request clones each of those boxes on its way in (a profile of webhook ingest showed five
            // such clones per request). Outermost first: the request id is set before the span that logs it.
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(TimeoutLayer::with_status_code(
                    http::StatusCode::REQUEST_TIMEOUT,
                    timeout,
                )),
        )
}

/// The admin listener's routes.
pub fn admin_app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(admin::metrics))
        .route(
            "/admin/v1/customers/{id}",
            get(customers::show_customer).delete(customers::erase_customer),
        )
        .route("/admin/v1/audit", get(customers::audit))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
}
