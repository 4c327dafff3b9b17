//! The one HTTP client every connector uses towards providers: rustls, per-request timeout, no redirects.

use std::time::Duration;

use omnigate_connectors::{ConnectorError, FailureReason, SendFailure};

/// A provider call that did not produce a response: retryable.
pub(crate) fn transport_failure(error: &reqwest::Error) -> SendFailure {
    SendFailure {
        error: ConnectorError::Unavailable(format!("provider request failed: {error}")),
        reason: FailureReason::ProviderUnavailable,
    }
}

/// POSTs a JSON body to a Tencent-style API (`{url}?access_token=…`, WeChat and WeCom) and returns the
/// response's status and body for the caller's parser.
///
/// # Errors
/// A transport failure (no response), which is retryable.
pub(crate) async fn post_json_with_token(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
) -> Result<(u16, axum::body::Bytes), SendFailure> {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("access_token", token)
        .finish();
    let response = client
        .post(format!("{url}?{query}"))
        .json(body)
        .send()
        .await
        .map_err(|e| transport_failure(&e))?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(|e| transport_failure(&e))?;
    Ok((status, bytes))
}

/// POSTs a file as multipart form data to a Tencent-style media upload API (`{url}?access_token=…&{query}`) and
/// returns the response's status and body for the caller's parser.
///
/// # Errors
/// A transport failure (no response), which is retryable.
pub(crate) async fn post_media_with_token(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    upload: &super::media::Upload,
) -> Result<(u16, axum::body::Bytes), SendFailure> {
    let token = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("access_token", token)
        .finish();
    let boundary = format!("omnigate{}", uuid::Uuid::new_v4().simple());
    let body = omnigate_connectors::wechat::api::media_upload_body(
        &boundary,
        &upload.file_name,
        &upload.mime,
        &upload.bytes,
    );
    let response = client
        .post(format!("{url}?{token}&{query}"))
        .header(
            http::header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| transport_failure(&e))?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(|e| transport_failure(&e))?;
    Ok((status, bytes))
}

/// Builds the client shared by all connectors.
///
/// # Errors
/// When the TLS backend cannot be initialised.
pub fn build(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("omnigate/", env!("CARGO_PKG_VERSION")))
        .build()
}
