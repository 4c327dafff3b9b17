//! A fake CRM profile webhook on loopback: checks every request's Standard Webhooks signature (the scheme of
//! `customers.crm`), its JSON body (`customer_id`, `identities`), and answers as scripted.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use omnigate_connectors::cti::signature::{verify, WebhookHeaders, WebhookSecret};
use serde_json::Value;
use tokio::sync::Mutex;

/// The secret the fake shares with the gateway.
pub const CRM_SECRET: &str = "whsec_Y3JtLXByb2ZpbGUtc2VjcmV0LTAxMjM0NQ==";

/// How the fake answers.
#[derive(Debug, Clone)]
pub enum CrmScript {
    /// `200` with this profile JSON.
    Answer(Value),
    /// `500`.
    Fail,
    /// Never answers (holds the request open).
    Hang,
}

#[derive(Debug)]
struct FakeState {
    script: CrmScript,
    requests: Vec<Value>,
    violations: Vec<String>,
}

/// The fake CRM.
#[derive(Debug, Clone)]
pub struct FakeCrm {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl FakeCrm {
    /// Starts on a free loopback port, answering with `script`.
    pub async fn start(script: CrmScript) -> FakeCrm {
        let state = Arc::new(Mutex::new(FakeState {
            script,
            requests: Vec::new(),
            violations: Vec::new(),
        }));
        let app = Router::new()
            .route("/profile", post(profile))
            .with_state(Arc::clone(&state));
        let addr = crate::http::serve_fake(app, "fake crm").await;
        FakeCrm { addr, state }
    }

    /// The `customers.crm.url` to configure.
    pub fn url(&self) -> String {
        format!("http://{}/profile", self.addr)
    }

    /// Answers later requests with `script`.
    pub async fn set_script(&self, script: CrmScript) {
        self.state.lock().await.script = script;
    }

    /// The bodies of the well-signed requests received, in order.
    pub async fn requests(&self) -> Vec<Value> {
        self.state.lock().await.requests.clone()
    }

    /// What was wrong with requests (bad signatures, bodies); empty when every request was right.
    pub async fn violations(&self) -> Vec<String> {
        self.state.lock().await.violations.clone()
    }
}

async fn profile(State(state): State<Arc<Mutex<FakeState>>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let secret = WebhookSecret::parse(CRM_SECRET).expect("secret");
    let signed = WebhookHeaders {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let script = {
        let mut state = state.lock().await;
        if let Err(error) = verify(&[secret], &signed, &body, now) {
            state.violations.push(format!("signature: {error}"));
            return StatusCode::UNAUTHORIZED.into_response();
        }
        if header("content-type") != Some("application/json") {
            state
                .violations
                .push("content-type is not application/json".to_owned());
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(json)
                if json["customer_id"].as_str().is_some_and(|c| c.starts_with("u_"))
                    && json["identities"].is_array() =>
            {
                state.requests.push(json);
            }
            _ => {
                state
                    .violations
                    .push(format!("body: {}", String::from_utf8_lossy(&body)));
                return StatusCode::BAD_REQUEST.into_response();
            }
        }
        state.script.clone()
    };
    match script {
        CrmScript::Answer(profile) => Json(profile).into_response(),
        CrmScript::Fail => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        CrmScript::Hang => {
            std::future::pending::<()>().await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}
