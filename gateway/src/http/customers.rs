//! The admin API on the admin listener (`Authorization: Bearer <auth.admin_token>`): a customer's identity
//! graph for an auditor, erasure of a customer, and the audit log.

use axum::extract::{Path, Query, State};
use axum::Json;
use http::HeaderMap;
use omnigate_config::ExposeSecret;
use omnigate_connectors::model::CustomerId;
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState, REQUEST_ID};
use crate::customers::{self, EraseError, Erasure};

/// The header naming who calls the admin API (recorded in the audit log).
pub(super) const ACTOR_HEADER: &str = "x-omnigate-actor";
/// Most audit entries one call returns.
const MAX_AUDIT: usize = 1_000;
/// Longest actor name and reason.
const MAX_TEXT: usize = 500;

fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Checks the bearer token in constant time; a disabled admin API refuses everyone.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let refused = || {
        tracing::warn!(
            request_id = request_id(headers),
            "admin api call refused: bad or missing token"
        );
        ApiError::Unauthorized("a valid admin bearer token is required".to_owned())
    };
    let expected = state.settings.admin_token.as_ref().ok_or_else(refused)?;
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(refused)?;
    let same: bool = expected.expose_secret().as_bytes().ct_eq(given.as_bytes()).into();
    if same {
        Ok(())
    } else {
        Err(refused())
    }
}

fn customer_id(raw: &str, headers: &HeaderMap) -> Result<CustomerId, ApiError> {
    CustomerId::parse(raw).map_err(|error| {
        tracing::warn!(request_id = request_id(headers), %error, "admin api: bad customer id");
        ApiError::BadRequest(error.to_string())
    })
}

/// `GET /admin/v1/customers/{id}`: the customer's identities, link history and conversations.
pub(super) async fn show_customer(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let asked = customer_id(&id, &headers)?;
    let store = &state.store;
    let customer = store.canonical_customer(&asked).await?;
    let identities = store.identities_of(&customer).await?;
    let history = store.link_history(&customer).await?;
    let conversations = store.customer_conversations(&customer).await?;
    if identities.is_empty() && history.is_empty() && conversations.is_empty() {
        return Err(ApiError::NotFound);
    }
    Ok(Json(json!({
        "customer_id": customer,
        "identities": identities,
        "link_history": history,
        "conversations": conversations,
    })))
}

/// The body of an erasure request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EraseBody {
    reason: String,
}

/// `DELETE /admin/v1/customers/{id}` with `X-Omnigate-Actor` and `{"reason": …}`: erases the customer and
/// answers the audit entry.
pub(super) async fn erase_customer(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<EraseBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let customer = customer_id(&id, &headers)?;
    let actor = headers
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|a| !a.is_empty() && a.len() <= MAX_TEXT)
        .ok_or_else(|| ApiError::BadRequest(format!("the {ACTOR_HEADER} header must name who asks")))?
        .to_owned();
    let Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if body.reason.trim().is_empty() || body.reason.chars().count() > MAX_TEXT {
        return Err(ApiError::BadRequest(format!(
            "reason must be 1..={MAX_TEXT} characters"
        )));
    }
    let erasure = Erasure {
        customer,
        actor: format!("admin:{actor}"),
        reason: body.reason,
    };
    match customers::erase_customer(&state.bus, &*state.store, erasure).await {
        Ok(entry) => Ok(Json(json!(entry))),
        Err(EraseError::Unknown) => Err(ApiError::NotFound),
        Err(error) => {
            tracing::error!(request_id = request_id(&headers), %error, "customer erasure failed");
            Err(ApiError::Unavailable(error.to_string()))
        }
    }
}

/// `?limit=` of the audit listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /admin/v1/audit?limit=N`: the last N audit entries (default and most 1000), oldest first.
pub(super) async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(MAX_AUDIT).min(MAX_AUDIT);
    let entries = state.store.audit_entries(limit).await?;
    Ok(Json(json!({"entries": entries})))
}
