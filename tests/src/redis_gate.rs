//! [`RedisGate`]: a loopback proxy in front of a [`RedisServer`] that records every command its clients send
//! and can hold Redis's replies back, so a test sees what the gateway sends before anything is answered.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::RedisServer;

/// One command as sent: its name and arguments.
type RedisCommand = Vec<Vec<u8>>;

/// A proxy between the gateway and a [`RedisServer`]. Requests always go through at once; replies go
/// through unless held ([`RedisGate::hold_replies`]). Stops with the test (dropped).
pub struct RedisGate {
    port: u16,
    held: watch::Sender<bool>,
    sent: Arc<Mutex<Vec<RedisCommand>>>,
    accept: JoinHandle<()>,
}

impl RedisGate {
    /// Listens on a free loopback port and forwards every connection to `redis`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start(redis: &RedisServer) -> RedisGate {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("a loopback port for the redis gate");
        let port = listener.local_addr().expect("bound address").port();
        let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, redis.port()));
        let (held, _) = watch::channel(false);
        let sent = Arc::new(Mutex::new(Vec::new()));
        #[allow(clippy::disallowed_methods)] // a test proxy, not a gateway task
        let accept = tokio::spawn({
            let held = held.clone();
            let sent = Arc::clone(&sent);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    #[allow(clippy::disallowed_methods)] // a test proxy, not a gateway task
                    tokio::spawn(relay(client, server, held.subscribe(), Arc::clone(&sent)));
                }
            }
        });
        RedisGate {
            port,
            held,
            sent,
            accept,
        }
    }

    /// The gate's `redis://` URL, for the gateway's `[store]`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Replies from Redis wait at the gate from now on (requests still reach Redis and are run).
    pub fn hold_replies(&self) {
        self.held.send_replace(true);
    }

    /// Lets the held replies, and every later one, through.
    pub fn release_replies(&self) {
        self.held.send_replace(false);
    }

    /// Whether a command with an argument that `matches` was sent.
    pub async fn saw_argument(&self, matches: impl Fn(&[u8]) -> bool) -> bool {
        self.sent
            .lock()
            .await
            .iter()
            .any(|command| command.iter().any(|a| matches(a)))
    }
}

impl Drop for RedisGate {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Pumps one connection both ways until either side closes.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    mut held: watch::Receiver<bool>,
    sent: Arc<Mutex<Vec<RedisCommand>>>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = async move {
        let mut pending = Vec::new();
        let mut buf = vec![0_u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            while let Some((command, used)) = parse_command(&pending) {
                sent.lock().await.push(command);
                pending.drain(..used);
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let replies = async move {
        let mut buf = vec![0_u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if held.wait_for(|held| !held).await.is_err() {
                break;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(requests, replies);
}

/// The first whole RESP command in `bytes` (an array of bulk strings, as every client library sends) and
/// the bytes it takes; `None` until it has all arrived.
fn parse_command(bytes: &[u8]) -> Option<(RedisCommand, usize)> {
    let (count, mut at) = number_line(bytes, 0, b'*')?;
    let mut command = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, start) = number_line(bytes, at, b'$')?;
        let end = start + len;
        if bytes.len() < end + 2 {
            return None;
        }
        command.push(bytes[start..end].to_vec());
        at = end + 2;
    }
    Some((command, at))
}

/// `<prefix><digits>\r\n` at `at`: the number and where the next line starts.
fn number_line(bytes: &[u8], at: usize, prefix: u8) -> Option<(usize, usize)> {
    let rest = bytes.get(at..)?;
    assert!(
        rest.first().is_none_or(|&b| b == prefix),
        "the redis gate reads RESP arrays of bulk strings only"
    );
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    let number = std::str::from_utf8(&rest[1..end]).ok()?.parse().ok()?;
    Some((number, at + end + 2))
}

#[cfg(test)]
mod tests {
    use super::parse_command;

    #[test]
    fn a_command_is_read_once_it_has_all_arrived() {
        let bytes = b"*3\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n4\r\n*1\r\n$4\r\nPING\r\n";
        let (command, used) = parse_command(bytes).expect("a whole command");
        assert_eq!(command, [b"EVALSHA".to_vec(), b"ab".to_vec(), b"4".to_vec()]);
        assert_eq!(
            parse_command(&bytes[used..]).expect("the next").0,
            [b"PING".to_vec()]
        );
        for cut in 0..used {
            assert!(parse_command(&bytes[..cut]).is_none(), "cut at {cut}");
        }
    }
}
