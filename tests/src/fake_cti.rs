//! The telephony side of the CTI webhook (PROTOCOLS.md §3.6): signs `cti-webhook/1` events for the gateway,
//! and receives the gateway's `agent.connect` instructions on loopback, checking each one: the three Standard
//! Webhooks headers, a `v1` signature over `id.timestamp.body` with the shared secret, a timestamp within
//! 300 s, a JSON body whose `id` is the `webhook-id`, and the envelope fields.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use omnigate_connectors::cti::signature::{sign_headers, WebhookSecret};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::{http_request, HttpResponse, TestGateway};

/// The shared secret of the vectors (bytes 0..31).
pub const CTI_SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The tenant.
pub const CTI_TENANT: &str = "acme";

#[derive(Debug, Default)]
struct ReceiverState {
    connects: Vec<Value>,
    violations: Vec<String>,
}

/// Receives `agent.connect` instructions.
#[derive(Debug, Clone)]
pub struct FakeCtiReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl FakeCtiReceiver {
    /// Starts on a free loopback port.
    pub async fn start() -> FakeCtiReceiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = Router::new()
            .route("/connect", post(connect))
            .with_state(Arc::clone(&state));
        let addr = crate::http::serve_fake(app, "fake cti").await;
        FakeCtiReceiver { addr, state }
    }

    /// The gateway's `[channels.cti]` for this receiver: the vectors' secret and tenant, a 3 s reorder gap.
    pub fn config(&self) -> omnigate_config::Cti {
        omnigate_config::Cti {
            secret: omnigate_config::SecretString::from(CTI_SECRET.to_owned()),
            previous_secret: None,
            tenant: CTI_TENANT.to_owned(),
            connect_url: self.url(),
            queue: String::new(),
            reorder_gap_ms: 3_000,
            max_body_bytes: 64 * 1024,
        }
    }

    /// The URL the gateway posts `agent.connect` to.
    pub fn url(&self) -> String {
        format!("http://{}/connect", self.addr)
    }

    /// Instructions accepted so far (their JSON bodies).
    pub async fn connects(&self) -> Vec<Value> {
        self.state.lock().await.connects.clone()
    }

    /// Requests that broke the protocol.
    pub async fn violations(&self) -> Vec<String> {
        self.state.lock().await.violations.clone()
    }
}

fn check(headers: &HeaderMap, body: &[u8]) -> Result<Value, String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(format!("missing {name}"))
    };
    let id = header("webhook-id")?;
    let timestamp: i64 = header("webhook-timestamp")?
        .parse()
        .map_err(|_| "webhook-timestamp is not a number".to_owned())?;
    if (now_secs() - timestamp).abs() > 300 {
        return Err(format!("webhook-timestamp {timestamp} is outside 300 s"));
    }
    let secret = WebhookSecret::parse(CTI_SECRET).map_err(|e| e.to_string())?;
    let expected = format!("v1,{}", secret.sign(id, timestamp, body));
    if !header("webhook-signature")?.split(' ').any(|s| s == expected) {
        return Err("no v1 signature matches".to_owned());
    }
    if !header("content-type")?.starts_with("application/json") {
        return Err("not json".to_owned());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if value["id"] != id
        || value["specversion"] != "cti-webhook/1"
        || value["type"] != "agent.connect"
        || value["tenant"] != CTI_TENANT
        || !value["call_id"].is_string()
        || !value["agent_id"].is_string()
    {
        return Err(format!("bad envelope {value}"));
    }
    Ok(value)
}

async fn connect(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = state.lock().await;
    match check(&headers, &body) {
        Ok(value) => {
            state.connects.push(value);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(what) => {
            state.violations.push(what.clone());
            (StatusCode::UNAUTHORIZED, what).into_response()
        }
    }
}

/// A `cti-webhook/1` event body of `kind` for `call_id`, with the type's fields as a JSON object text.
pub fn cti_event(id: &str, kind: &str, call_id: &str, seq: u64, fields: &str) -> String {
    let mut value: Value = serde_json::from_str(fields).expect("fields are a json object");
    let envelope = serde_json::json!({
        "specversion": "cti-webhook/1", "id": id, "type": kind, "tenant": CTI_TENANT, "source": "test-adapter",
        "call_id": call_id, "seq": seq, "occurred_at": "2026-11-23T10:00:00.000Z",
    });
    if let (Some(object), Value::Object(env)) = (value.as_object_mut(), envelope) {
        object.extend(env);
    }
    value.to_string()
}

/// POSTs an event to the gateway signed with `secret` at `timestamp` (unix seconds; `None` for now).
pub async fn post_cti_event(
    gateway: &TestGateway,
    id: &str,
    body: &str,
    secret: &str,
    timestamp: Option<i64>,
) -> HttpResponse {
    let secret = WebhookSecret::parse(secret).expect("secret");
    let headers = sign_headers(&[secret], id, timestamp.unwrap_or_else(now_secs), body.as_bytes());
    let mut all: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    all.push(("content-type", "application/json"));
    http_request(
        gateway.public,
        "POST",
        "/channels/cti/v1/events",
        &all,
        body.as_bytes(),
    )
    .await
}
