//! The two HTTP calls the generator makes, over a plain loopback socket: open a chat session and scrape
//! the gateway's metrics.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 request with `connection: close`; returns the status and the body (not chunked: the
/// gateway answers these with a content length).
async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head.split_whitespace().nth(1).context("no status")?.parse()?;
    Ok((status, body.to_owned()))
}

/// `POST /chat/v1/sessions` with `widget_key`: the customer's token.
///
/// # Errors
/// When the gateway refuses or answers something else than a token.
pub async fn open_session(addr: SocketAddr, widget_key: &str) -> anyhow::Result<String> {
    let body = serde_json::json!({"widget_key": widget_key}).to_string();
    let (status, body) = request(addr, "POST", "/chat/v1/sessions", &body).await?;
    if status != 200 {
        bail!("POST /chat/v1/sessions answered {status}: {body}");
    }
    let value: serde_json::Value = serde_json::from_str(&body)?;
    Ok(value["token"]
        .as_str()
        .context("no token in the session answer")?
        .to_owned())
}

/// The gateway's Prometheus metrics, as `(series, value)` for every `omnigate_*` sample.
///
/// # Errors
/// When the admin listener does not answer 200.
pub async fn scrape(admin: SocketAddr) -> anyhow::Result<Vec<(String, f64)>> {
    let (status, body) = request(admin, "GET", "/metrics", "").await?;
    if status != 200 {
        bail!("GET /metrics answered {status}");
    }
    Ok(parse_metrics(&body))
}

fn parse_metrics(body: &str) -> Vec<(String, f64)> {
    body.lines()
        .filter(|l| l.starts_with("omnigate_"))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_omnigate_samples_only() {
        let body = "# TYPE omnigate_messages_total counter\nomnigate_messages_total{role=\"customer\"} 12\nother 3\nomnigate_ws_connections{role=\"agent\"} 4\n";
        assert_eq!(
            parse_metrics(body),
            vec![
                ("omnigate_messages_total{role=\"customer\"}".to_owned(), 12.0),
                ("omnigate_ws_connections{role=\"agent\"}".to_owned(), 4.0)
            ]
        );
    }
}
