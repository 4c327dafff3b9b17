//! The server under test as a separate process: the gateway binary with a generated configuration, or this
//! binary's echo server. Its CPU time and resident memory are read from procfs.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context};

use crate::scenario::Scenario;

/// Which server a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The omnigate gateway.
    Gateway,
    /// The bare tokio-tungstenite echo server in this crate.
    Echo,
    /// A Node `ws@8` echo server (`loadtest/node-echo/echo.js`), the mainstream reference.
    Node,
    /// A bare axum JSON endpoint in this crate, the baseline of webhook ingest.
    Json,
}

impl Target {
    /// The name used in results and folders.
    pub fn name(self) -> &'static str {
        match self {
            Target::Gateway => "gateway",
            Target::Echo => "echo",
            Target::Node => "node",
            Target::Json => "axum-json",
        }
    }
}

/// A server process started for one run; stopped (and reaped) on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Public address (chat and agent websockets, or the echo socket).
    pub public: SocketAddr,
    /// Admin address (gateway only).
    pub admin: Option<SocketAddr>,
    /// The configuration file (gateway only), used to mint agent tokens.
    pub config: Option<PathBuf>,
    /// The gateway binary (gateway only).
    pub binary: PathBuf,
}

/// CPU time and memory of a process at one instant.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Times the process was preempted (`nonvoluntary_ctxt_switches`): how contended its CPU was.
    pub preempted: u64,
    /// The machine's one-minute load average.
    pub load_average: f64,
}

/// Lowest port of the range servers' ports are picked from.
const SERVER_PORTS_FROM: u16 = 10_000;

/// A free loopback port (bound, then released), below the kernel's ephemeral range: a run's thousands of
/// outgoing connections take ephemeral ports, and one of them took a port picked with `bind(0)` between
/// the probe and the server's own bind (the gateway then exited with "Address already in use").
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|low| *low > SERVER_PORTS_FROM + 1_000)
        .unwrap_or(32_768);
    let span = u64::from(ephemeral_from - SERVER_PORTS_FROM);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos() as u64)
        ^ u64::from(std::process::id()) << 32;
    let mut rng = crate::rng::SplitMix64::new(seed);
    for _ in 0..100 {
        let port = SERVER_PORTS_FROM + (rng.next_u64() % span) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return Ok(listener.local_addr()?);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Clock ticks per second of `/proc/PID/stat` times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Reads utime+stime from `/proc/PID/stat` and VmRSS from `/proc/PID/status`.
///
/// # Errors
/// When the process is gone or procfs is not as documented in proc(5).
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after its closing parenthesis are plain.
    let rest = stat.rsplit_once(')').context("malformed /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 3 (state) has index 0, so utime (14) and stime (15) are at 11 and 12.
    let ticks: u64 = fields.get(11).context("no utime")?.parse::<u64>()?
        + fields.get(12).context("no stime")?.parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    // Per thread: /proc/PID/status counts only the main thread, and tokio's workers are others.
    let preempted = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum();
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    Ok(ProcSample {
        cpu_secs: ticks as f64 / clock_ticks(),
        rss_bytes: rss_kb * 1024,
        preempted,
        load_average,
    })
}

/// Writes the gateway configuration for `scenario`: `base` (limits, widget, secret) plus one agent per
/// scenario agent, `lt-0 …`, each with `agent_capacity` web chats (webhooks: as many calls for the first
/// [`Scenario::voice_agents`], as many chats of every channel for the others), and in mode webhooks the channels whose callbacks go to the loader's provider sink at `sink`.
///
/// # Errors
/// When the file cannot be written.
pub fn write_gateway_config(
    base: &Path,
    scenario: &Scenario,
    sink: Option<&str>,
    redis_url: Option<&str>,
    out: &Path,
) -> anyhow::Result<()> {
    let mut text = std::fs::read_to_string(base).with_context(|| format!("read {}", base.display()))?;
    if let Some(url) = redis_url {
        text.push_str(&format!(
            "\n# The run's own redis-server (scenario store = \"redis\").\n[store]\nbackend = \"redis\"\nredis_url = \"{url}\"\n"
        ));
    }
    text.push_str("\n# Agents generated by omnigate-loadtest for this scenario.\n");
    for i in 0..scenario.agents {
        let c = scenario.agent_capacity;
        let capacity = if sink.is_none() {
            format!("{{ web = {c} }}")
        } else if i < scenario.voice_agents() {
            format!("{{ voice = {c} }}")
        } else {
            format!("{{ web = {c}, wechat = {c}, sms = {c} }}")
        };
        text.push_str(&format!(
            "[[agents]]\nid = \"{}\"\nname = \"Load {i}\"\ncapacity = {capacity}\nmax_total = {c}\n",
            agent_id(i)
        ));
    }
    if let Some(sink) = sink {
        text.push_str(&crate::hooks::channels_toml(sink));
    }
    std::fs::write(out, text).with_context(|| format!("write {}", out.display()))
}

/// The id of scenario agent `i`.
pub fn agent_id(i: usize) -> String {
    format!("lt-{i}")
}

/// `taskset -c CPU` in front of a command, when pinning was asked for.
pub(crate) fn pinned(program: &Path, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg(program);
            command
        }
        None => Command::new(program),
    }
}

impl Server {
    /// Starts the gateway binary with `config` on free loopback ports and waits until it is ready.
    ///
    /// # Errors
    /// When it does not start or does not become ready within 30 seconds.
    pub fn start_gateway(
        binary: &Path,
        config: &Path,
        cpu: Option<usize>,
        log: &Path,
    ) -> anyhow::Result<Server> {
        ensure!(
            binary.is_file(),
            "gateway binary {} not found (build omnigate-gateway first)",
            binary.display()
        );
        let public = free_port()?;
        let admin = free_port()?;
        let log_file = std::fs::File::create(log)?;
        let child = pinned(binary, cpu)
            .arg("--config")
            .arg(config)
            .env("OMNIGATE_SERVER__PUBLIC_ADDR", public.to_string())
            .env("OMNIGATE_SERVER__ADMIN_ADDR", admin.to_string())
            // Twilio signs the URL it posts to; the gateway rebuilds it from this base.
            .env("OMNIGATE_SERVER__PUBLIC_BASE_URL", format!("http://{public}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let mut server = Server {
            child,
            public,
            admin: Some(admin),
            config: Some(config.to_owned()),
            binary: binary.to_owned(),
        };
        server.wait_listening(public)?;
        server.wait_listening(admin)?;
        Ok(server)
    }

    /// Starts `omnigate-loadtest echo-server` (this binary) on a free loopback port.
    ///
    /// # Errors
    /// When it does not start or does not listen within 30 seconds.
    pub fn start_echo(cpu: Option<usize>, log: &Path) -> anyhow::Result<Server> {
        Server::start_own("echo-server", cpu, log)
    }

    /// Starts `omnigate-loadtest json-server` (this binary), the bare axum JSON endpoint, on a free loopback
    /// port.
    ///
    /// # Errors
    /// When it does not start or does not listen within 30 seconds.
    pub fn start_json(cpu: Option<usize>, log: &Path) -> anyhow::Result<Server> {
        Server::start_own("json-server", cpu, log)
    }

    fn start_own(command: &str, cpu: Option<usize>, log: &Path) -> anyhow::Result<Server> {
        let me = std::env::current_exe()?;
        let public = free_port()?;
        let log_file = std::fs::File::create(log)?;
        let child = pinned(&me, cpu)
            .arg(command)
            .arg(public.to_string())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()?;
        let mut server = Server {
            child,
            public,
            admin: None,
            config: None,
            binary: me,
        };
        server.wait_listening(public)?;
        Ok(server)
    }

    /// Starts `node loadtest/node-echo/echo.js` (after `npm install` in that folder) on a free loopback port.
    ///
    /// # Errors
    /// When node or the `ws` package is missing, or it does not listen within 30 seconds.
    pub fn start_node(cpu: Option<usize>, log: &Path) -> anyhow::Result<Server> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node-echo");
        ensure!(
            dir.join("node_modules/ws").is_dir(),
            "run `npm install` in {} first",
            dir.display()
        );
        let public = free_port()?;
        let log_file = std::fs::File::create(log)?;
        let child = pinned(Path::new("node"), cpu)
            .arg(dir.join("echo.js"))
            .arg(public.to_string())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("start node")?;
        let mut server = Server {
            child,
            public,
            admin: None,
            config: None,
            binary: PathBuf::from("node"),
        };
        server.wait_listening(public)?;
        Ok(server)
    }

    fn wait_listening(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait()? {
                bail!("server exited during start-up with {status}");
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("server did not listen on {addr} within 30 s")
    }

    /// The server's pid (taskset execs the program, so it is the server's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time and RSS now.
    ///
    /// # Errors
    /// When procfs cannot be read.
    pub fn sample(&self) -> anyhow::Result<ProcSample> {
        sample(self.pid())
    }

    /// Mints tokens for agents `ids` with one `omnigate --config … token --agent ID …` process.
    ///
    /// # Errors
    /// When the command fails or prints another number of tokens.
    pub fn agent_tokens(&self, ids: &[String]) -> anyhow::Result<Vec<String>> {
        let config = self.config.as_ref().context("only the gateway mints tokens")?;
        let mut command = Command::new(&self.binary);
        command.arg("--config").arg(config).arg("token");
        for id in ids {
            command.args(["--agent", id]);
        }
        let output = command.output()?;
        ensure!(
            output.status.success(),
            "tokens for {} agents: {}",
            ids.len(),
            String::from_utf8_lossy(&output.stderr)
        );
        let tokens: Vec<String> = String::from_utf8(output.stdout)?
            .lines()
            .map(str::to_owned)
            .collect();
        ensure!(
            tokens.len() == ids.len(),
            "asked for {} tokens, got {}",
            ids.len(),
            tokens.len()
        );
        Ok(tokens)
    }

    /// SIGTERM, then up to 15 s for a graceful exit, then SIGKILL. Returns whether it exited cleanly.
    ///
    /// # Errors
    /// When the process cannot be signalled or waited for.
    pub fn stop(mut self) -> anyhow::Result<bool> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> anyhow::Result<bool> {
        if self.child.try_wait()?.is_some() {
            return Ok(false);
        }
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        for _ in 0..150 {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.success());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child.kill()?;
        self.child.wait()?;
        Ok(false)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            drop(self.child.kill());
            drop(self.child.wait());
        }
    }
}
