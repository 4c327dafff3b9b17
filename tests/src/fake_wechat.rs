//! A fake WeChat API on loopback that checks every request the gateway makes against PROTOCOLS.md §1.7–§1.8:
//! `POST /cgi-bin/stable_token` (JSON body with grant_type, appid, secret, force_refresh) and
//! `POST /cgi-bin/message/custom/send?access_token=…` (a token it issued and that is still valid, a JSON body
//! of a documented message type; an image's `media_id` one it issued) and
//! `POST /cgi-bin/media/upload?access_token=…&type=image` (a `multipart/form-data` body of exactly one part named
//! `media` with a file name, its length and an image content type). Anything else is a violation, recorded and
//! answered 400.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::Mutex;

/// What the fake answers to the next customer-service send (instead of checking the token and saying ok).
#[derive(Debug, Clone)]
pub enum SendScript {
    /// An HTTP status with an empty body (`500` for an outage).
    Status(u16),
    /// HTTP 200 with `{"errcode": code}` (`45015` window closed, `45047` quota, `-1` busy).
    Errcode(i64),
}

/// A temporary material the fake accepted.
#[derive(Debug, Clone)]
pub struct UploadedMedia {
    /// The media id it answered.
    pub media_id: String,
    /// The part's file name.
    pub file_name: String,
    /// The part's content type.
    pub content_type: String,
    /// The file.
    pub bytes: Vec<u8>,
}

/// A customer-service message the fake accepted.
#[derive(Debug, Clone)]
pub struct SentCustom {
    /// The access token it came with.
    pub access_token: String,
    /// The JSON body.
    pub body: Value,
}

#[derive(Debug, Default)]
struct FakeState {
    appid: String,
    secret: String,
    token_serial: u32,
    current_token: Option<String>,
    expired: Vec<String>,
    token_requests: Vec<Value>,
    send_attempts: u32,
    sent: Vec<SentCustom>,
    script: VecDeque<SendScript>,
    violations: Vec<String>,
    uploads: Vec<UploadedMedia>,
    upload_attempts: u32,
}

/// The fake WeChat API server.
#[derive(Debug, Clone)]
pub struct FakeWechat {
    /// Where it listens (`http://` + this is the `api_base_url`).
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl FakeWechat {
    /// Starts on a free loopback port; it accepts tokens only for `appid` and `secret`.
    pub async fn start(appid: &str, secret: &str) -> FakeWechat {
        let state = Arc::new(Mutex::new(FakeState {
            appid: appid.to_owned(),
            secret: secret.to_owned(),
            ..FakeState::default()
        }));
        let app = Router::new()
            .route("/cgi-bin/stable_token", post(stable_token))
            .route("/cgi-bin/message/custom/send", post(custom_send))
            .route("/cgi-bin/media/get", axum::routing::get(media_get))
            .route("/cgi-bin/media/upload", post(media_upload))
            .fallback(unknown)
            .with_state(Arc::clone(&state));
        let addr = crate::http::serve_fake(app, "fake wechat").await;
        FakeWechat { addr, state }
    }

    /// The `api_base_url` to configure.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next sends with these, in order, before behaving normally again.
    pub async fn script(&self, responses: impl IntoIterator<Item = SendScript>) {
        self.state.lock().await.script.extend(responses);
    }

    /// Makes the current token expired: sends with it get 42001 until a new one is fetched.
    pub async fn expire_token(&self) {
        let mut state = self.state.lock().await;
        if let Some(token) = state.current_token.take() {
            state.expired.push(token);
        }
    }

    /// Messages accepted so far.
    pub async fn sent(&self) -> Vec<SentCustom> {
        self.state.lock().await.sent.clone()
    }

    /// Send requests received (accepted or not).
    pub async fn send_attempts(&self) -> u32 {
        self.state.lock().await.send_attempts
    }

    /// Token requests received (their JSON bodies).
    pub async fn token_requests(&self) -> Vec<Value> {
        self.state.lock().await.token_requests.clone()
    }

    /// Media uploads accepted so far.
    pub async fn uploads(&self) -> Vec<UploadedMedia> {
        self.state.lock().await.uploads.clone()
    }

    /// Upload requests received (accepted or not).
    pub async fn upload_attempts(&self) -> u32 {
        self.state.lock().await.upload_attempts
    }

    /// Requests that broke the protocol.
    pub async fn violations(&self) -> Vec<String> {
        self.state.lock().await.violations.clone()
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn violation(state: &mut FakeState, what: String) -> Response {
    state.violations.push(what.clone());
    (StatusCode::BAD_REQUEST, what).into_response()
}

async fn stable_token(
    State(state): State<Arc<Mutex<FakeState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = state.lock().await;
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return violation(&mut state, "stable_token body is not json".to_owned());
    };
    if !is_json(&headers) {
        return violation(&mut state, "stable_token without a json content type".to_owned());
    }
    state.token_requests.push(request.clone());
    if request["grant_type"] != "client_credential" || !request["force_refresh"].is_boolean() {
        return violation(&mut state, format!("stable_token body {request}"));
    }
    if request["appid"] != state.appid.as_str() || request["secret"] != state.secret.as_str() {
        return axum::Json(json!({"errcode": 40013, "errmsg": "invalid appid rid: fake"})).into_response();
    }
    let force = request["force_refresh"] == true;
    if state.current_token.is_none() || force {
        state.token_serial += 1;
        let token = format!("ACCESS_TOKEN_{}", state.token_serial);
        if let Some(old) = state.current_token.replace(token) {
            state.expired.push(old);
        }
    }
    let token = state.current_token.clone().unwrap_or_default();
    axum::Json(json!({"access_token": token, "expires_in": 7200})).into_response()
}

fn check_message(body: &Value) -> Result<(), String> {
    if body["touser"].as_str().is_none_or(str::is_empty) {
        return Err(format!("custom/send without touser: {body}"));
    }
    match body["msgtype"].as_str() {
        Some("text") if body["text"]["content"].is_string() => Ok(()),
        Some("image") if body["image"]["media_id"].is_string() => Ok(()),
        _ => Err(format!("custom/send with an undocumented body: {body}")),
    }
}

async fn custom_send(
    State(state): State<Arc<Mutex<FakeState>>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = state.lock().await;
    state.send_attempts += 1;
    let token = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned());
    let Some(token) = token else {
        return violation(&mut state, "custom/send without access_token".to_owned());
    };
    if !is_json(&headers) {
        return violation(&mut state, "custom/send without a json content type".to_owned());
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return violation(&mut state, "custom/send body is not json".to_owned());
    };
    if let Err(what) = check_message(&message) {
        return violation(&mut state, what);
    }
    if let Some(media_id) = message["image"]["media_id"].as_str() {
        if media_id != "MEDIA_1" && !state.uploads.iter().any(|u| u.media_id == media_id) {
            return violation(
                &mut state,
                format!("custom/send of an image never uploaded: {media_id}"),
            );
        }
    }
    if let Some(script) = state.script.pop_front() {
        return match script {
            SendScript::Status(status) => StatusCode::from_u16(status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                .into_response(),
            SendScript::Errcode(code) => {
                axum::Json(json!({"errcode": code, "errmsg": format!("scripted rid: {code}")}))
                    .into_response()
            }
        };
    }
    if state.expired.contains(&token) {
        return axum::Json(json!({"errcode": 42001, "errmsg": "access_token expired rid: fake"}))
            .into_response();
    }
    if state.current_token.as_deref() != Some(token.as_str()) {
        return violation(
            &mut state,
            format!("custom/send with a token never issued: {token}"),
        );
    }
    state.sent.push(SentCustom {
        access_token: token,
        body: message,
    });
    axum::Json(json!({"errcode": 0, "errmsg": "ok"})).into_response()
}

/// The bytes [`FakeWechat`] serves for media id `MEDIA_1` (a JPEG header).
pub const FAKE_JPEG: &[u8] = b"\xff\xd8\xff\xe0fake-jpeg";

/// `GET /cgi-bin/media/get?access_token=…&media_id=…`: the file for `MEDIA_1`, WeChat's JSON error (status 200)
/// for any other id, as PROTOCOLS.md and the docs describe.
async fn media_get(State(state): State<Arc<Mutex<FakeState>>>, RawQuery(query): RawQuery) -> Response {
    let mut state = state.lock().await;
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if param("access_token").is_none() || param("access_token") != state.current_token {
        return violation(&mut state, "media/get with a token never issued".to_owned());
    }
    match param("media_id").as_deref() {
        Some("MEDIA_1") => ([("content-type", "image/jpeg")], FAKE_JPEG).into_response(),
        Some(_) => {
            axum::Json(json!({"errcode": 40007, "errmsg": "invalid media_id rid: fake"})).into_response()
        }
        None => violation(&mut state, "media/get without media_id".to_owned()),
    }
}

/// Reads a `multipart/form-data` body that must hold exactly one part, named `media`, with a file name, its
/// `filelength` and an image content type: answers (file name, content type, bytes).
pub(crate) fn parse_upload(headers: &HeaderMap, body: &[u8]) -> Result<(String, String, Vec<u8>), String> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .filter(|b| !b.is_empty())
        .ok_or(format!("media/upload content type {content_type:?}"))?;
    let opening = format!("--{boundary}\r\n");
    let closing = format!("\r\n--{boundary}--\r\n");
    let inner = body
        .strip_prefix(opening.as_bytes())
        .and_then(|rest| rest.strip_suffix(closing.as_bytes()))
        .ok_or("media/upload body is not one part between its boundaries")?;
    let split = inner
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("media/upload part has no header end")?;
    let head = std::str::from_utf8(&inner[..split]).map_err(|_| "part headers are not utf-8")?;
    let file = inner[split + 4..].to_vec();
    if file.windows(boundary.len()).any(|w| w == boundary.as_bytes()) {
        return Err("media/upload holds more than one part".to_owned());
    }
    let mut disposition = None;
    let mut part_type = None;
    for line in head.split("\r\n") {
        let (name, value) = line.split_once(": ").ok_or(format!("part header {line:?}"))?;
        match name.to_ascii_lowercase().as_str() {
            "content-disposition" => disposition = Some(value.to_owned()),
            "content-type" => part_type = Some(value.to_owned()),
            other => return Err(format!("unexpected part header {other}")),
        }
    }
    let disposition = disposition.ok_or("part without content-disposition")?;
    let param = |key: &str| {
        disposition
            .split("; ")
            .find_map(|p| p.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim_matches('"').to_owned())
    };
    if !disposition.starts_with("form-data;") || param("name").as_deref() != Some("media") {
        return Err(format!("part is not the form field media: {disposition}"));
    }
    let file_name = param("filename")
        .filter(|f| !f.is_empty())
        .ok_or("part without a file name")?;
    if param("filelength") != Some(file.len().to_string()) {
        return Err(format!("filelength does not match the {} bytes sent", file.len()));
    }
    let part_type = part_type
        .filter(|t| t.starts_with("image/"))
        .ok_or("part is not an image")?;
    if file.is_empty() {
        return Err("empty file".to_owned());
    }
    Ok((file_name, part_type, file))
}

/// `POST /cgi-bin/media/upload?access_token=…&type=image`: a temporary material, checked as WeChat's docs
/// describe it; 42001 for an expired token.
async fn media_upload(
    State(state): State<Arc<Mutex<FakeState>>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = state.lock().await;
    state.upload_attempts += 1;
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let Some(token) = param("access_token") else {
        return violation(&mut state, "media/upload without access_token".to_owned());
    };
    if param("type").as_deref() != Some("image") {
        return violation(&mut state, format!("media/upload type {:?}", param("type")));
    }
    let (file_name, content_type, bytes) = match parse_upload(&headers, &body) {
        Ok(part) => part,
        Err(what) => return violation(&mut state, what),
    };
    if state.expired.contains(&token) {
        return axum::Json(json!({"errcode": 42001, "errmsg": "access_token expired rid: fake"}))
            .into_response();
    }
    if state.current_token.as_deref() != Some(token.as_str()) {
        return violation(
            &mut state,
            format!("media/upload with a token never issued: {token}"),
        );
    }
    let media_id = format!("UPLOADED_{}", state.uploads.len() + 1);
    state.uploads.push(UploadedMedia {
        media_id: media_id.clone(),
        file_name,
        content_type,
        bytes,
    });
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    axum::Json(json!({"type": "image", "media_id": media_id, "created_at": created_at})).into_response()
}

async fn unknown(State(state): State<Arc<Mutex<FakeState>>>, uri: axum::http::Uri) -> Response {
    let mut state = state.lock().await;
    violation(&mut state, format!("unexpected request to {uri}"))
}
