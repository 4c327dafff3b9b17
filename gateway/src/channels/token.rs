//! The WeChat access_token owner (PROTOCOLS.md §1.8): one task per account holds the token, refreshes it ahead
//! of expiry (at 80 % of its lifetime) and on demand after the API refused it (40001/42001). Every sender asks
//! this task; nothing else ever fetches a token, since each fetch invalidates the previous token.

use std::time::Duration;

use omnigate_config::{ExposeSecret, SecretString};
use omnigate_connectors::wechat::api::{self, TokenAction, TokenState};
use omnigate_connectors::{ConnectorError, FailureReason, SendFailure};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::http_client::transport_failure;
use crate::clock::unix_ms;
use crate::shutdown::Shutdown;
use crate::telemetry::metrics;

enum Request {
    /// The current token (fetching one first when none is usable).
    Get(oneshot::Sender<Result<String, SendFailure>>),
    /// The API refused this token: replace it unless that already happened, then answer the new one.
    Refused(String, oneshot::Sender<Result<String, SendFailure>>),
}

/// A handle on one account's token owner. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TokenManager {
    tx: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Request::Get(_) => "Get",
            Request::Refused(..) => "Refused",
        })
    }
}

fn stopped() -> SendFailure {
    SendFailure {
        error: ConnectorError::Unavailable("access token owner stopped".to_owned()),
        reason: FailureReason::ProviderUnavailable,
    }
}

/// Where an account's tokens come from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// WeChat Official Account: `POST /cgi-bin/stable_token` with the AppID and AppSecret.
    WechatStable {
        /// AppID.
        appid: String,
        /// AppSecret.
        secret: SecretString,
    },
    /// WeCom: `GET /cgi-bin/gettoken?corpid=…&corpsecret=…`.
    Wecom {
        /// CorpID.
        corp_id: String,
        /// The customer-service application's secret.
        secret: SecretString,
    },
}

struct Owner {
    client: reqwest::Client,
    base: String,
    source: TokenSource,
    channel: &'static str,
    state: TokenState,
}

impl Owner {
    /// `POST /cgi-bin/stable_token`: without `force_refresh` it answers the current token, so a token another
    /// fetch replaced is picked up without rotating it again.
    async fn fetch(&mut self, force_refresh: bool) -> Result<String, SendFailure> {
        let request = match &self.source {
            TokenSource::WechatStable { appid, secret } => self
                .client
                .post(format!("{}{}", self.base, api::STABLE_TOKEN_PATH))
                .json(&api::stable_token_request(
                    appid,
                    secret.expose_secret(),
                    force_refresh,
                )),
            // gettoken has no force flag: a refused token is replaced by asking again.
            TokenSource::Wecom { corp_id, secret } => self.client.get(format!(
                "{}/cgi-bin/gettoken?{}",
                self.base,
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("corpid", corp_id)
                    .append_pair("corpsecret", secret.expose_secret())
                    .finish()
            )),
        };
        let response = request.send().await.map_err(|e| transport_failure(&e))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| transport_failure(&e))?;
        let token = api::parse_access_token(status, &bytes)?;
        metrics::channel_token_refreshed(self.channel);
        let value = token.access_token.clone();
        self.state.store(token, unix_ms() / 1000);
        Ok(value)
    }

    async fn current(&mut self) -> Result<String, SendFailure> {
        let now = unix_ms() / 1000;
        match (self.state.action(now), self.state.token(now)) {
            (TokenAction::Use | TokenAction::UseAndRefresh, Some(token)) => Ok(token.to_owned()),
            _ => self.fetch(false).await,
        }
    }

    async fn refused(&mut self, refused: &str) -> Result<String, SendFailure> {
        let now = unix_ms() / 1000;
        if let Some(current) = self.state.token(now).filter(|t| *t != refused) {
            return Ok(current.to_owned());
        }
        self.state.invalidate();
        let fresh = self.fetch(false).await?;
        if fresh != refused || matches!(self.source, TokenSource::Wecom { .. }) {
            return Ok(fresh);
        }
        self.fetch(true).await
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Request>, stop: CancellationToken) {
        loop {
            let now = unix_ms() / 1000;
            let refresh_due = self.state.action(now) == TokenAction::UseAndRefresh;
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                request = rx.recv() => match request {
                    Some(Request::Get(reply)) => drop(reply.send(self.current().await)),
                    Some(Request::Refused(token, reply)) => drop(reply.send(self.refused(&token).await)),
                    None => break,
                },
                // Past 80 % of the lifetime: refresh ahead, checked every second so tests with short
                // lifetimes and real deployments behave alike.
                () = tokio::time::sleep(Duration::from_secs(1)), if refresh_due => {
                    if let Err(error) = self.fetch(false).await {
                        tracing::warn!(error = %error.error, "access token refresh ahead of expiry failed");
                    }
                }
            }
        }
    }
}

impl TokenManager {
    /// Starts the owner task for one account on the shutdown tree; `api_base_url` is the provider's API base and
    /// `channel` the metrics label.
    pub fn start(
        client: reqwest::Client,
        api_base_url: &str,
        source: TokenSource,
        channel: &'static str,
        shutdown: &Shutdown,
    ) -> TokenManager {
        let (tx, rx) = mpsc::channel(256);
        let owner = Owner {
            client,
            base: api_base_url.trim_end_matches('/').to_owned(),
            source,
            channel,
            state: TokenState::new(),
        };
        shutdown.spawn(owner.run(rx, shutdown.root().clone()));
        TokenManager { tx }
    }

    /// The current token.
    ///
    /// # Errors
    /// The classified failure of the token fetch.
    pub async fn get(&self) -> Result<String, SendFailure> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Request::Get(reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Reports that the API refused `token`; answers the replacement.
    ///
    /// # Errors
    /// The classified failure of the token fetch.
    pub async fn refused(&self, token: String) -> Result<String, SendFailure> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request::Refused(token, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}
