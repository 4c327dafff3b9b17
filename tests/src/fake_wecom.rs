//! A fake WeCom API on loopback for WeChat Customer Service, checking every request against PROTOCOLS.md §1.9:
//! `GET /cgi-bin/gettoken` (our CorpID and secret), `POST /cgi-bin/kf/sync_msg` (a token it issued, the
//! doorbell's sync token, our `open_kfid`, a limit within 1..=1000, the cursor it handed out last) and
//! `POST /cgi-bin/kf/send_msg` (a `msgid` of at most 32 characters of `[0-9A-Za-z_-]`, a documented body). It
//! also rings the gateway's doorbell as WeCom would (encrypted, `msg_signature`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use omnigate_connectors::wechat::crypto::{self, AesKey};
use omnigate_connectors::wechat::signature;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::{http_request, HttpResponse, TestGateway};

/// The CorpID.
pub const WECOM_CORP_ID: &str = "ww0123456789abcdef";
/// The kf application's secret.
pub const WECOM_SECRET: &str = "kf-secret-0123";
/// The callback token.
pub const WECOM_TOKEN: &str = "wecomtoken";
/// The callback EncodingAESKey.
pub const WECOM_AES_KEY: &str = "Gw8tVx3kQm7Zr2Lp9Nc4Hb6Jd1Fs5Ty0Ue3Wa8Xo2Ri";
/// The customer-service account.
pub const OPEN_KFID: &str = "wkAJ2GCAAAZSfhHCt7IFSvLKtMPxyJTw";
/// Messages per `sync_msg` page.
const PAGE: usize = 2;

#[derive(Debug, Default)]
struct FakeState {
    token: Option<String>,
    sync_token: String,
    messages: Vec<Value>,
    cursors_seen: Vec<Option<String>>,
    sent: Vec<Value>,
    violations: Vec<String>,
    uploads: Vec<crate::UploadedMedia>,
}

/// The fake WeCom API.
#[derive(Debug, Clone)]
pub struct FakeWecom {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn query_param(query: &Option<String>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl FakeWecom {
    /// Starts on a free loopback port.
    pub async fn start() -> FakeWecom {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let app = Router::new()
            .route("/cgi-bin/gettoken", get(gettoken))
            .route("/cgi-bin/kf/sync_msg", post(sync_msg))
            .route("/cgi-bin/kf/send_msg", post(send_msg))
            .route("/cgi-bin/media/upload", post(media_upload))
            .with_state(Arc::clone(&state));
        let addr = crate::http::serve_fake(app, "fake wecom").await;
        FakeWecom { addr, state }
    }

    /// The `api_base_url` to configure.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A customer (`external_userid`) writes `text`; the message waits for a pull.
    pub async fn customer_writes(&self, external_userid: &str, msgid: &str, text: &str) {
        self.state.lock().await.messages.push(json!({
            "msgid": msgid, "open_kfid": OPEN_KFID, "external_userid": external_userid,
            "send_time": now_secs(), "origin": 3, "msgtype": "text", "text": {"content": text},
        }));
    }

    /// The cursors the gateway pulled from, in order (`None`: the very first pull).
    pub async fn cursors_seen(&self) -> Vec<Option<String>> {
        self.state.lock().await.cursors_seen.clone()
    }

    /// Messages sent through `kf/send_msg`.
    pub async fn sent(&self) -> Vec<Value> {
        self.state.lock().await.sent.clone()
    }

    /// Temporary materials uploaded (WeCom's `media/upload`).
    pub async fn uploads(&self) -> Vec<crate::UploadedMedia> {
        self.state.lock().await.uploads.clone()
    }

    /// Requests that broke the protocol.
    pub async fn violations(&self) -> Vec<String> {
        self.state.lock().await.violations.clone()
    }

    /// Rings the gateway's doorbell for `account` with a fresh sync token, as WeCom does.
    pub async fn ring(&self, gateway: &TestGateway, account: &str) -> HttpResponse {
        let sync_token = format!("ENCApHxn{}", self.state.lock().await.cursors_seen.len());
        self.state.lock().await.sync_token = sync_token.clone();
        let xml = format!(
            "<xml><ToUserName><![CDATA[{WECOM_CORP_ID}]]></ToUserName><CreateTime>1763892000</CreateTime>\
             <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>\
             <Token><![CDATA[{sync_token}]]></Token><OpenKfId><![CDATA[{OPEN_KFID}]]></OpenKfId></xml>"
        );
        let (query, body) = encrypted(&xml);
        http_request(
            gateway.public,
            "POST",
            &format!("/channels/wecom/{account}?{query}"),
            &[("content-type", "text/xml")],
            body.as_bytes(),
        )
        .await
    }
}

/// The query and body of an encrypted WeCom callback carrying `xml`.
pub fn encrypted(xml: &str) -> (String, String) {
    let key = AesKey::from_encoding_aes_key(WECOM_AES_KEY).expect("key");
    let encrypt = crypto::encrypt(&key, b"fedcba9876543210", xml.as_bytes(), WECOM_CORP_ID);
    let sig = signature::msg_signature(WECOM_TOKEN, "1763892000", "nonce1", &encrypt);
    (
        format!("msg_signature={sig}&timestamp=1763892000&nonce=nonce1"),
        format!("<xml><ToUserName><![CDATA[{WECOM_CORP_ID}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID>1</AgentID></xml>"),
    )
}

fn violation(state: &mut FakeState, what: String) -> Response {
    state.violations.push(what.clone());
    (StatusCode::BAD_REQUEST, what).into_response()
}

async fn gettoken(State(state): State<Arc<Mutex<FakeState>>>, RawQuery(query): RawQuery) -> Response {
    let mut state = state.lock().await;
    if query_param(&query, "corpid").as_deref() != Some(WECOM_CORP_ID)
        || query_param(&query, "corpsecret").as_deref() != Some(WECOM_SECRET)
    {
        return violation(&mut state, format!("gettoken with {query:?}"));
    }
    let token = format!("WECOM_TOKEN_{}", state.cursors_seen.len());
    state.token = Some(token.clone());
    axum::Json(json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200}))
        .into_response()
}

/// `POST /cgi-bin/media/upload?access_token=…&type=image`: WeCom's temporary material, the same multipart shape
/// as WeChat's; its `created_at` is a string.
async fn media_upload(
    State(state): State<Arc<Mutex<FakeState>>>,
    RawQuery(query): RawQuery,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = state.lock().await;
    if query_param(&query, "access_token") != state.token {
        return violation(&mut state, "media/upload with a token never issued".to_owned());
    }
    if query_param(&query, "type").as_deref() != Some("image") {
        return violation(&mut state, format!("media/upload with {query:?}"));
    }
    let (file_name, content_type, bytes) = match crate::fake_wechat::parse_upload(&headers, &body) {
        Ok(part) => part,
        Err(what) => return violation(&mut state, what),
    };
    let media_id = format!("3a8asd892asd8asd{}", state.uploads.len() + 1);
    state.uploads.push(crate::UploadedMedia {
        media_id: media_id.clone(),
        file_name,
        content_type,
        bytes,
    });
    axum::Json(json!({"errcode": 0, "errmsg": "", "type": "image", "media_id": media_id, "created_at": now_secs().to_string()}))
        .into_response()
}

async fn sync_msg(
    State(state): State<Arc<Mutex<FakeState>>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut state = state.lock().await;
    if query_param(&query, "access_token") != state.token {
        return violation(&mut state, "sync_msg with a token never issued".to_owned());
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return violation(&mut state, "sync_msg body is not json".to_owned());
    };
    let limit = request["limit"].as_u64().unwrap_or(0);
    if request["open_kfid"] != OPEN_KFID
        || request["token"] != state.sync_token.as_str()
        || !(1..=1000).contains(&limit)
        || !matches!(request["voice_format"].as_u64(), Some(0 | 1))
    {
        return violation(&mut state, format!("sync_msg body {request}"));
    }
    let cursor = request["cursor"].as_str().map(str::to_owned);
    let start = match &cursor {
        None => 0,
        Some(c) => match c.strip_prefix("cur_").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => return violation(&mut state, format!("a cursor never handed out: {c}")),
        },
    };
    state.cursors_seen.push(cursor);
    let end = (start + PAGE).min(state.messages.len());
    let page: Vec<Value> = state.messages[start.min(end)..end].to_vec();
    let has_more = u8::from(end < state.messages.len());
    axum::Json(json!({"errcode": 0, "errmsg": "ok", "next_cursor": format!("cur_{end}"), "has_more": has_more, "msg_list": page}))
        .into_response()
}

async fn send_msg(
    State(state): State<Arc<Mutex<FakeState>>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut state = state.lock().await;
    if query_param(&query, "access_token") != state.token {
        return violation(&mut state, "send_msg with a token never issued".to_owned());
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return violation(&mut state, "send_msg body is not json".to_owned());
    };
    let msgid_ok = message["msgid"].as_str().is_some_and(|m| {
        m.len() <= 32
            && m.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    let uploaded = |media_id: &str| state.uploads.iter().any(|u| u.media_id == media_id);
    let content_ok = match message["msgtype"].as_str() {
        Some("text") => message["text"]["content"].is_string(),
        Some("image") => message["image"]["media_id"].as_str().is_some_and(uploaded),
        _ => false,
    };
    if !msgid_ok || message["open_kfid"] != OPEN_KFID || !message["touser"].is_string() || !content_ok {
        return violation(&mut state, format!("send_msg body {message}"));
    }
    let msgid = message["msgid"].clone();
    state.sent.push(message);
    axum::Json(json!({"errcode": 0, "errmsg": "ok", "msgid": msgid})).into_response()
}
