//! Two small axum servers for the `webhooks` mode:
//! - the **provider sink**, in the loader's process: it plays the providers' side that the gateway calls back
//!   (WeChat access tokens, the telephony platform's `agent.connect` receiver, and answers for replies, which
//!   agents do not send in this mode) and counts what it gets;
//! - the **bare axum JSON endpoint**, the baseline of webhook ingest: parse a JSON body, answer 200 — served
//!   by `omnigate-loadtest json-server ADDR` as a separate process, like the echo server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::hooks::JSON_PATH;

/// What the provider sink received.
#[derive(Debug, Default)]
pub struct SinkCounts {
    /// Access-token requests (WeChat).
    pub tokens: AtomicU64,
    /// `agent.connect` instructions (CTI).
    pub connects: AtomicU64,
    /// Requests to anything else (replies are not expected in this mode).
    pub unexpected: AtomicU64,
}

/// Serves the provider sink on `listener` until `stop` turns true.
///
/// # Errors
/// When serving fails.
pub async fn serve_sink(
    listener: TcpListener,
    counts: Arc<SinkCounts>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/cgi-bin/stable_token", post(token))
        .route("/cgi-bin/token", get(token))
        .route("/cti/connect", post(connect))
        .fallback(unexpected)
        .with_state(counts);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        })
        .await?;
    Ok(())
}

async fn token(State(counts): State<Arc<SinkCounts>>) -> Json<Value> {
    counts.tokens.fetch_add(1, Ordering::Relaxed);
    Json(json!({"access_token": "loadtest-access-token", "expires_in": 7200}))
}

async fn connect(State(counts): State<Arc<SinkCounts>>) -> StatusCode {
    counts.connects.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

async fn unexpected(State(counts): State<Arc<SinkCounts>>, uri: Uri) -> StatusCode {
    if counts.unexpected.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("omnigate-loadtest: provider sink: unexpected request to {uri}");
    }
    StatusCode::NOT_FOUND
}

/// Serves the bare axum JSON endpoint (`POST /ingest`: parse the JSON body, answer `{"ok":true}`) on `addr`
/// until SIGTERM or Ctrl-C.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve_json(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let app = Router::new().route(JSON_PATH, post(ingest));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
    Ok(())
}

async fn ingest(Json(body): Json<Value>) -> Json<Value> {
    Json(json!({"ok": body.is_object()}))
}
