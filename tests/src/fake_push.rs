//! The bank's push service on loopback: receives the gateway's signed `push.requested` webhooks and checks
//! each one: the three Standard Webhooks headers, a `v1` signature over `id.timestamp.body` with the shared
//! secret, a timestamp within 300 s, a JSON body whose `id` is the `webhook-id`, and the payload fields.
//! It can be told to answer 503 to the next requests, to exercise retries.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use omnigate_connectors::cti::signature::WebhookSecret;
use serde_json::Value;
use tokio::sync::Mutex;

/// The push webhook's shared secret in tests.
pub const PUSH_SECRET: &str = "whsec_cHVzaC1zZWNyZXQtZm9yLXRlc3RzLTAxMjM0NTY3";

#[derive(Debug, Default)]
struct PushState {
    pushes: Vec<Value>,
    /// Every `webhook-id` received, failed attempts included.
    attempts: Vec<String>,
    violations: Vec<String>,
    fail_next: usize,
}

/// Receives `push.requested`.
#[derive(Debug, Clone)]
pub struct FakePush {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<PushState>>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl FakePush {
    /// Starts on a free loopback port.
    pub async fn start() -> FakePush {
        let state = Arc::new(Mutex::new(PushState::default()));
        let app = Router::new()
            .route("/push", post(receive))
            .with_state(Arc::clone(&state));
        let addr = crate::http::serve_fake(app, "fake push").await;
        FakePush { addr, state }
    }

    /// The `url` to configure.
    pub fn url(&self) -> String {
        format!("http://{}/push", self.addr)
    }

    /// Answers 503 to the next `n` requests (they are counted as attempts, not pushes).
    pub async fn fail_next(&self, n: usize) {
        self.state.lock().await.fail_next = n;
    }

    /// Pushes accepted so far (their JSON bodies).
    pub async fn pushes(&self) -> Vec<Value> {
        self.state.lock().await.pushes.clone()
    }

    /// The `webhook-id` of every request, refused ones included.
    pub async fn attempts(&self) -> Vec<String> {
        self.state.lock().await.attempts.clone()
    }

    /// Requests that broke the protocol.
    pub async fn violations(&self) -> Vec<String> {
        self.state.lock().await.violations.clone()
    }
}

fn check(headers: &HeaderMap, body: &[u8]) -> Result<(String, Value), String> {
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
    let secret = WebhookSecret::parse(PUSH_SECRET).map_err(|e| e.to_string())?;
    let expected = format!("v1,{}", secret.sign(id, timestamp, body));
    if !header("webhook-signature")?.split(' ').any(|s| s == expected) {
        return Err("no v1 signature matches".to_owned());
    }
    if !header("content-type")?.starts_with("application/json") {
        return Err("not json".to_owned());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let conversation = value["conversation_id"].as_str().unwrap_or_default();
    let devices_ok = value["devices"].as_array().is_some_and(|d| {
        !d.is_empty()
            && d.iter()
                .all(|x| x["platform"].is_string() && x["token"].is_string() && x["app_id"].is_string())
    });
    if value["id"] != id
        || value["type"] != "push.requested"
        || !value["customer_id"].is_string()
        || conversation.is_empty()
        || !value["seq"].is_u64()
        || value["badge"].as_u64().unwrap_or(0) == 0
        || value["collapse_key"] != format!("conversation:{conversation}").as_str()
        || !value["created_at"].is_string()
        || !devices_ok
    {
        return Err(format!("bad push payload {value}"));
    }
    Ok((id.to_owned(), value))
}

async fn receive(State(state): State<Arc<Mutex<PushState>>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut state = state.lock().await;
    match check(&headers, &body) {
        Ok((id, value)) => {
            state.attempts.push(id);
            if state.fail_next > 0 {
                state.fail_next -= 1;
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            state.pushes.push(value);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(what) => {
            state.violations.push(what.clone());
            (StatusCode::UNAUTHORIZED, what).into_response()
        }
    }
}
