//! A minimal HTTP/1.1 client on one keep-alive connection, as a provider's webhook sender holds one: write a
//! request, read the status line, the headers and a `content-length` body. Enough for the gateway's and the
//! baseline's answers, which always carry a length (or are 204).

use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::hooks::Request;

/// Longest response head or body accepted (the answers here are a few bytes).
const MAX_RESPONSE: usize = 64 * 1024;

/// One keep-alive connection.
#[derive(Debug)]
pub struct KeepAlive {
    stream: BufReader<TcpStream>,
    host: String,
    head: Vec<u8>,
    line: String,
    closed: bool,
}

impl KeepAlive {
    /// Connects (with `TCP_NODELAY`, as providers' HTTP clients do).
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<KeepAlive> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(KeepAlive {
            stream: BufReader::new(stream),
            host: addr.to_string(),
            head: Vec::with_capacity(512),
            line: String::new(),
            closed: false,
        })
    }

    /// Whether the server said it closes the connection after the last response.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// POSTs `request` and returns the response status; the body is read and dropped.
    ///
    /// # Errors
    /// When the connection fails or the answer is not HTTP/1.1 with a length.
    pub async fn post(&mut self, request: &Request) -> anyhow::Result<u16> {
        self.head.clear();
        self.head.extend_from_slice(b"POST ");
        self.head.extend_from_slice(request.target.as_bytes());
        self.head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        self.head.extend_from_slice(self.host.as_bytes());
        for (name, value) in &request.headers {
            self.head.extend_from_slice(b"\r\n");
            self.head.extend_from_slice(name.as_bytes());
            self.head.extend_from_slice(b": ");
            self.head.extend_from_slice(value.as_bytes());
        }
        self.head
            .extend_from_slice(format!("\r\ncontent-length: {}\r\n\r\n", request.body.len()).as_bytes());
        self.head.extend_from_slice(&request.body);
        let socket = self.stream.get_mut();
        socket.write_all(&self.head).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> anyhow::Result<u16> {
        self.line.clear();
        if self.stream.read_line(&mut self.line).await? == 0 {
            bail!("connection closed before a response");
        }
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .context("no status in the response line")?
            .parse()
            .context("status is not a number")?;
        let mut length = None;
        let mut close = false;
        let mut head_bytes = self.line.len();
        loop {
            self.line.clear();
            let n = self.stream.read_line(&mut self.line).await?;
            head_bytes += n;
            if n == 0 {
                bail!("connection closed inside the response head");
            }
            if head_bytes > MAX_RESPONSE {
                bail!("response head over {MAX_RESPONSE} bytes");
            }
            let line = self.line.trim_end();
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                bail!("malformed response header {line:?}");
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().context("bad content-length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                bail!("chunked responses are not expected here");
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
        let length = match (status, length) {
            (204 | 304, _) => 0,
            (_, Some(n)) if n <= MAX_RESPONSE => n,
            (_, Some(n)) => bail!("response body of {n} bytes"),
            (_, None) => bail!("response without content-length"),
        };
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        self.closed = close;
        Ok(status)
    }
}
