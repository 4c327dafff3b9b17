use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a starting `redis-server` may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A `redis-server` of the test's own on a free loopback port, in a temporary directory, killed on drop.
/// It never touches the machine's Redis on 6379. It can be stopped (killed, as in a crash), restarted on the
/// same port, paused and resumed, so tests can inject faults.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    persistent: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server that keeps nothing on disk (`--save '' --appendonly no`).
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not answer within 10 s.
    pub async fn start() -> RedisServer {
        RedisServer::launch(false).await
    }

    /// Starts a server that writes every command to its append-only file before answering
    /// (`--appendonly yes --appendfsync always`), so a restart after [`RedisServer::stop`] keeps every
    /// acknowledged write, as a production deployment configured for it does.
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub async fn start_persistent() -> RedisServer {
        RedisServer::launch(true).await
    }

    async fn launch(persistent: bool) -> RedisServer {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("omnigate-redis-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory for redis-server");
        let mut server = RedisServer {
            port: 0,
            dir,
            persistent,
            child: None,
        };
        // Another process may take the free port between probing and binding; try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn_and_wait().await {
                return server;
            }
        }
        panic!("redis-server did not start; its log: {}", server.log());
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port it listens on (the same after a restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL, like a crash or a lost host) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.kill());
            drop(child.wait());
        }
    }

    /// Starts the server again on the same port and directory, waiting until it answers PING.
    ///
    /// # Panics
    /// When it does not come back within 10 s.
    pub async fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn_and_wait().await,
            "redis-server did not restart on port {}; its log: {}",
            self.port,
            self.log()
        );
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered, like a hung host or a
    /// network partition.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Unfreezes a paused server (SIGCONT); it then runs every command that queued up meanwhile.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Sends one command in inline form and returns the raw reply (e.g. `+PONG\r\n`), for tests that look
    /// at what the store wrote.
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub fn command(&self, inline: &str) -> String {
        self.try_command(inline)
            .unwrap_or_else(|e| panic!("redis {inline:?} on port {}: {e}", self.port))
    }

    fn try_command(&self, inline: &str) -> std::io::Result<String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(format!("{inline}\r\n").as_bytes())?;
        let mut buf = [0_u8; 4096];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        // The shell's own `kill`, so the harness needs no procps.
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill {signal} {pid}"))
            .status()
            .expect("sh");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Spawns `redis-server` on `self.port`; true once it answers PING, false if it exits first.
    async fn spawn_and_wait(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--logfile", "redis.log", "--daemonize", "no"]);
        if self.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed, and the Redis tests start their own: install it \
                 (Debian: apt-get install -y redis-server; CI's .ci/run does this)"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if self
                .try_command("PING")
                .is_ok_and(|reply| reply.starts_with("+PONG"))
            {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited || tokio::time::Instant::now() > deadline {
                self.stop();
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a paused server too.
        self.stop();
        drop(std::fs::remove_dir_all(&self.dir));
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
