//! A fake Twilio REST API on loopback that checks every request against PROTOCOLS.md §2.4:
//! `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, Basic auth `AccountSid:AuthToken`, a form body with
//! `To` (E.164), `From` (our number), `Body` and our `StatusCallback`, and nothing undocumented. It also plays
//! Twilio's webhooks: signed inbound SMS and status callbacks.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use omnigate_connectors::twilio::signature::{sign, string_to_sign, Algorithm};
use serde_json::json;
use tokio::sync::Mutex;

use crate::{http_request, HttpResponse, TestGateway};

/// The fake's account.
pub const TWILIO_ACCOUNT_SID: &str = "ACa1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
/// Its auth token.
pub const TWILIO_AUTH_TOKEN: &str = "twilio-auth-token-0123";
/// Our Twilio number.
pub const TWILIO_NUMBER: &str = "+14155550100";

/// What the fake answers to the next send instead of accepting it.
#[derive(Debug, Clone)]
pub enum TwilioScript {
    /// An HTTP status with a Twilio error body (`500`; `400` with code `21211` invalid `To`).
    Error(u16, u32),
    /// Accept the message, but answer only after this many milliseconds (a timeout on the gateway's side).
    SlowAccept(u64),
}

#[derive(Debug, Default)]
struct FakeState {
    expected_callback: String,
    attempts: u32,
    sent: Vec<Vec<(String, String)>>,
    script: VecDeque<TwilioScript>,
    violations: Vec<String>,
}

/// The fake Twilio API.
#[derive(Debug, Clone)]
pub struct FakeTwilio {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl FakeTwilio {
    /// Starts on a free loopback port.
    pub async fn start() -> FakeTwilio {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let app = Router::new()
            .route("/2010-04-01/Accounts/{sid}/Messages.json", post(messages))
            .fallback(unknown)
            .with_state(Arc::clone(&state));
        let addr = crate::http::serve_fake(app, "fake twilio").await;
        FakeTwilio { addr, state }
    }

    /// The gateway's `[[channels.twilio]]` entry `us` for this fake: the test account, token and number.
    pub fn account(&self) -> omnigate_config::TwilioAccount {
        omnigate_config::TwilioAccount {
            id: "us".to_owned(),
            account_sid: TWILIO_ACCOUNT_SID.to_owned(),
            auth_token: omnigate_config::SecretString::from(TWILIO_AUTH_TOKEN.to_owned()),
            secondary_auth_token: None,
            from: TWILIO_NUMBER.to_owned(),
            messaging_service_sid: String::new(),
            queue: String::new(),
            api_base_url: self.base_url(),
            max_body_bytes: 64 * 1024,
            rate_per_second: 100,
        }
    }

    /// The `api_base_url` to configure.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `StatusCallback` every send must carry.
    pub async fn expect_status_callback(&self, url: &str) {
        self.state.lock().await.expected_callback = url.to_owned();
    }

    /// Answers the next sends with these, in order.
    pub async fn script(&self, responses: impl IntoIterator<Item = TwilioScript>) {
        self.state.lock().await.script.extend(responses);
    }

    /// Accepted messages' forms, in order.
    pub async fn sent(&self) -> Vec<Vec<(String, String)>> {
        self.state.lock().await.sent.clone()
    }

    /// Send requests received.
    pub async fn attempts(&self) -> u32 {
        self.state.lock().await.attempts
    }

    /// Requests that broke the protocol.
    pub async fn violations(&self) -> Vec<String> {
        self.state.lock().await.violations.clone()
    }
}

fn violation(state: &mut FakeState, what: String) -> Response {
    state.violations.push(what.clone());
    (StatusCode::BAD_REQUEST, what).into_response()
}

fn is_e164(number: &str) -> bool {
    number
        .strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

async fn messages(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = state.lock().await;
    state.attempts += 1;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{TWILIO_ACCOUNT_SID}:{TWILIO_AUTH_TOKEN}"));
    if sid != TWILIO_ACCOUNT_SID
        || headers.get("authorization").and_then(|v| v.to_str().ok())
            != Some(format!("Basic {basic}").as_str())
    {
        state
            .violations
            .push(format!("bad account or basic auth for {sid}"));
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"code": 20003, "message": "Authenticate", "status": 401})),
        )
            .into_response();
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/x-www-form-urlencoded")
    {
        return violation(&mut state, "messages without a form content type".to_owned());
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if let Some((name, _)) = form.iter().find(|(k, _)| {
        ![
            "To",
            "From",
            "MessagingServiceSid",
            "Body",
            "MediaUrl",
            "StatusCallback",
        ]
        .contains(&k.as_str())
    }) {
        return violation(&mut state, format!("undocumented field {name}"));
    }
    if !get("To").is_some_and(|to| is_e164(&to)) || get("From").as_deref() != Some(TWILIO_NUMBER) {
        return violation(&mut state, format!("bad To or From: {form:?}"));
    }
    if get("Body").is_none_or(|b| b.is_empty()) && get("MediaUrl").is_none() {
        return violation(&mut state, "neither Body nor MediaUrl".to_owned());
    }
    if get("StatusCallback").as_deref() != Some(state.expected_callback.as_str()) {
        return violation(&mut state, format!("StatusCallback {:?}", get("StatusCallback")));
    }
    let delay = match state.script.pop_front() {
        Some(TwilioScript::Error(status, code)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (
                status,
                axum::Json(json!({"code": code, "message": "scripted", "status": status.as_u16()})),
            )
                .into_response();
        }
        Some(TwilioScript::SlowAccept(ms)) => Some(ms),
        None => None,
    };
    state.sent.push(form);
    let sid = format!("SM{:032x}", state.sent.len());
    drop(state);
    if let Some(ms) = delay {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    (
        StatusCode::CREATED,
        axum::Json(
            json!({"sid": sid, "status": "queued", "num_segments": "1", "account_sid": TWILIO_ACCOUNT_SID}),
        ),
    )
        .into_response()
}

async fn unknown(State(state): State<Arc<Mutex<FakeState>>>, uri: axum::http::Uri) -> Response {
    let mut state = state.lock().await;
    violation(&mut state, format!("unexpected request to {uri}"))
}

/// POSTs a Twilio webhook to the gateway's `path`, signed with `token` over the gateway's URL as Twilio would.
pub async fn twilio_webhook(
    gateway: &TestGateway,
    path: &str,
    params: &[(&str, &str)],
    token: &str,
) -> HttpResponse {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let url = format!("http://{}{path}", gateway.public);
    let signature = sign(Algorithm::HmacSha1, token, &string_to_sign(&url, &params));
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    http_request(
        gateway.public,
        "POST",
        path,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-twilio-signature", signature.as_str()),
        ],
        body.as_bytes(),
    )
    .await
}
