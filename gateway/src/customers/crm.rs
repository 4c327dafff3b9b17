//! The CRM lookup webhook: a POST signed like the CTI connector's webhooks (Standard Webhooks), carrying the
//! customer id and its known identities; the JSON answer is the profile.
//!
//! Request body: `{"customer_id": "u_…", "identities": [{"kind": "phone", "value": "+86…", "verified": true}]}`.
//! Answer: `200` with `{"tier"?, "tags"?, "language"?, "relationship_manager"?, "risk_flags"?}` (unknown fields
//! are ignored). Anything else is a failed lookup.

use std::time::Duration;

use omnigate_config::ExposeSecret;
use omnigate_connectors::cti::signature::{sign_headers, WebhookSecret};
use omnigate_connectors::model::{CustomerId, Identity};
use serde::{Deserialize, Serialize};

use crate::store::CustomerProfile;

/// Why a lookup gave nothing. The caller routes without the CRM's data either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrmError {
    /// The CRM did not answer within `timeout_ms`.
    #[error("crm did not answer within {0} ms")]
    Timeout(u64),
    /// The request could not be sent or the answer not read.
    #[error("crm unreachable: {0}")]
    Transport(String),
    /// The CRM answered with a non-success status.
    #[error("crm answered http {0}")]
    Status(u16),
    /// The answer is not a profile.
    #[error("crm answer is not a profile: {0}")]
    BadAnswer(String),
    /// The `[customers.crm]` section cannot be used; fix the configuration.
    #[error("customers.crm is misconfigured: {0}")]
    Misconfigured(String),
}

impl CrmError {
    /// The metric outcome of this failure.
    pub fn outcome(&self) -> &'static str {
        match self {
            CrmError::Timeout(_) => "timeout",
            _ => "error",
        }
    }
}

#[derive(Serialize)]
struct LookupRequest<'a> {
    customer_id: &'a CustomerId,
    identities: &'a [Identity],
}

/// The fields of an answer; everything else is ignored.
#[derive(Deserialize)]
struct LookupAnswer {
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    relationship_manager: Option<String>,
    #[serde(default)]
    risk_flags: Vec<String>,
}

/// A configured CRM webhook.
#[derive(Debug, Clone)]
pub struct CrmClient {
    url: String,
    secret: WebhookSecret,
    timeout: Duration,
    /// How long a good answer is reused.
    pub cache_ttl_ms: u64,
    http: reqwest::Client,
}

impl CrmClient {
    /// From `[customers.crm]`.
    ///
    /// # Errors
    /// [`CrmError::Misconfigured`] for a secret that is not `whsec_<base64>` or an HTTP client that cannot be
    /// built.
    pub fn from_config(config: &omnigate_config::Crm) -> Result<CrmClient, CrmError> {
        let secret = WebhookSecret::parse(config.secret.expose_secret())
            .map_err(|e| CrmError::Misconfigured(format!("secret: {e}")))?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| CrmError::Misconfigured(format!("http client: {e}")))?;
        Ok(CrmClient {
            url: config.url.clone(),
            secret,
            timeout,
            cache_ttl_ms: config.cache_ttl_secs.saturating_mul(1000),
            http,
        })
    }

    /// Asks the CRM about `customer`, within the configured timeout. `now_ms` stamps the answer (the cache's
    /// age) and signs the request.
    ///
    /// # Errors
    /// [`CrmError`] naming why nothing usable came back.
    pub async fn lookup(
        &self,
        customer: &CustomerId,
        identities: &[Identity],
        now_ms: u64,
    ) -> Result<CustomerProfile, CrmError> {
        let body = serde_json::to_vec(&LookupRequest {
            customer_id: customer,
            identities,
        })
        .map_err(|e| CrmError::BadAnswer(format!("request does not serialize: {e}")))?;
        let msg_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let timestamp = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        let mut request = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in sign_headers(std::slice::from_ref(&self.secret), &msg_id, timestamp, &body) {
            request = request.header(name, value);
        }
        let call = async {
            let response = request.body(body).send().await.map_err(|e| self.transport(&e))?;
            let status = response.status();
            if !status.is_success() {
                return Err(CrmError::Status(status.as_u16()));
            }
            let bytes = response.bytes().await.map_err(|e| self.transport(&e))?;
            serde_json::from_slice::<LookupAnswer>(&bytes).map_err(|e| CrmError::BadAnswer(e.to_string()))
        };
        // reqwest's own timeout bounds the request too; this one also bounds a body that trickles in.
        let answer = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| CrmError::Timeout(self.timeout_ms()))??;
        Ok(CustomerProfile {
            tier: answer.tier.filter(|t| !t.is_empty()),
            tags: answer.tags.into_iter().collect(),
            language: answer.language.filter(|l| !l.is_empty()),
            relationship_manager: answer.relationship_manager.filter(|r| !r.is_empty()),
            risk_flags: answer.risk_flags.into_iter().collect(),
            crm_fetched_at_ms: Some(now_ms),
        })
    }

    fn timeout_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
    }

    fn transport(&self, error: &reqwest::Error) -> CrmError {
        if error.is_timeout() {
            CrmError::Timeout(self.timeout_ms())
        } else {
            CrmError::Transport(error.to_string())
        }
    }
}
