//! A `redis-server` of the run's own, for scenarios with `store = "redis"`: started on a free loopback port
//! with nothing kept on disk, pinned where `--redis-cpu` says (by default with the gateway), and killed when
//! the run ends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::server::{free_port, pinned};

/// A running `redis-server`; killed on drop.
pub struct RedisServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl RedisServer {
    /// Starts `redis-server` from `PATH` (on `cpu` when given) and waits until it answers `PING`.
    ///
    /// # Errors
    /// When `redis-server` is missing or does not answer within 10 seconds.
    pub fn start(cpu: Option<usize>, log: &Path) -> anyhow::Result<RedisServer> {
        let addr = free_port()?;
        let log_file = std::fs::File::create(log)?;
        let child = pinned(Path::new("redis-server"), cpu)
            .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("start redis-server (install it, e.g. apt-get install redis-server)")?;
        let mut server = RedisServer { child, addr };
        // 200 tries 50 ms apart: about 10 seconds.
        for _ in 0..200 {
            if server.child.try_wait()?.is_some() {
                bail!("redis-server exited at start; see {}", log.display());
            }
            if ping(addr) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Dropping `server` kills the child.
        bail!("redis-server did not answer PING on {addr} within 10 s")
    }

    /// The URL the gateway connects to.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }
}

fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let mut answer = [0u8; 7];
    stream.set_read_timeout(Some(Duration::from_millis(500))).is_ok()
        && stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }
}
