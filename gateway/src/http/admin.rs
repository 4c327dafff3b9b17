use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use http::StatusCode;
use serde_json::json;

use super::AppState;
use crate::telemetry;

/// Liveness: the process answers.
pub(super) async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: not draining, and the store answers.
pub(super) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.shutdown.ingress().is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        );
    }
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "degraded", "store": error.to_string()})),
        ),
    }
}

/// Prometheus text exposition.
pub(super) async fn metrics() -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::prometheus().render(),
    )
}
