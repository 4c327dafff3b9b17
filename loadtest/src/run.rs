//! One run of one scenario against one target: start the server, connect, drive the timeline, sample
//! procfs, stop the server, and return the result.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use dashmap::DashMap;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Duration};

use crate::clients::{self, Ctx, Phases};
use crate::redis::RedisServer;
use crate::report::{RunResult, ServerSummary};
use crate::scenario::{LoadKind, Mode, Scenario, StoreKind};
use crate::server::{self, ProcSample, Server, Target};
use crate::tally::{now_us, Tally};

/// The widget key of `loadtest/gateway.toml`.
pub const WIDGET_KEY: &str = "loadtest-widget-key";

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Gateway or echo baseline.
    pub target: Target,
    /// The `omnigate` binary.
    pub gateway_bin: PathBuf,
    /// The base gateway configuration (`loadtest/gateway.toml`).
    pub base_config: PathBuf,
    /// Where the result, the table, the plot and the server log go.
    pub out_dir: PathBuf,
    /// Pin the server to this CPU (`taskset -c`).
    pub server_cpu: Option<usize>,
    /// Pin the run's `redis-server` (scenarios with `store = "redis"`) to this CPU; by default it goes with
    /// the server.
    pub redis_cpu: Option<usize>,
    /// Loader runtime worker threads.
    pub threads: usize,
    /// Measure this many seconds instead of the scenario's `duration_secs` (the result says so).
    pub duration_secs: Option<f64>,
}

/// Runs one scenario and writes `result.json`, `result.md` and `latency.svg` into the output folder.
///
/// # Errors
/// When the server cannot be started or the run cannot be carried out at all; a run that completes with
/// correctness violations is an `Ok` result with `passed = false`.
pub fn run(options: &RunOptions) -> anyhow::Result<RunResult> {
    let mut scenario = Scenario::load(&options.scenario)?;
    if let Some(secs) = options.duration_secs {
        scenario.duration_secs = secs;
        scenario.check()?;
    }
    anyhow::ensure!(
        !(options.target != Target::Gateway && scenario.mode == Mode::Churn),
        "churn has no echo baseline: the echo server has no sessions to resume"
    );
    let target_fits = match scenario.mode {
        Mode::Webhooks => matches!(options.target, Target::Gateway | Target::Json),
        Mode::Relay | Mode::Idle | Mode::Churn => options.target != Target::Json,
    };
    anyhow::ensure!(
        target_fits,
        "webhooks run against the gateway or the axum-json baseline; the other modes against gateway, echo or node"
    );
    std::fs::create_dir_all(&options.out_dir)?;
    let log = options.out_dir.join("server.log");
    let starting = tokio::time::Instant::now();
    // Webhooks: the providers' side the gateway calls back (tokens, `agent.connect`) listens in this process.
    let sink = if scenario.mode == Mode::Webhooks && options.target == Target::Gateway {
        Some(std::net::TcpListener::bind("127.0.0.1:0")?)
    } else {
        None
    };
    let sink_url = match &sink {
        Some(listener) => Some(format!("http://{}", listener.local_addr()?)),
        None => None,
    };
    // Started before the gateway and stopped after it, so the gateway never sees its store go away.
    let redis = if scenario.store == StoreKind::Redis && options.target == Target::Gateway {
        Some(RedisServer::start(
            options.redis_cpu.or(options.server_cpu),
            &options.out_dir.join("redis.log"),
        )?)
    } else {
        None
    };
    let redis_url = redis.as_ref().map(RedisServer::url);
    let server = match options.target {
        Target::Gateway => {
            let config = options.out_dir.join("gateway.toml");
            server::write_gateway_config(
                &options.base_config,
                &scenario,
                sink_url.as_deref(),
                redis_url.as_deref(),
                &config,
            )?;
            Server::start_gateway(&options.gateway_bin, &config, options.server_cpu, &log)?
        }
        Target::Echo => Server::start_echo(options.server_cpu, &log)?,
        Target::Node => Server::start_node(options.server_cpu, &log)?,
        Target::Json => Server::start_json(options.server_cpu, &log)?,
    };
    let tokens = if options.target == Target::Gateway && scenario.mode != Mode::Idle {
        mint_tokens(&server, scenario.agents)?
    } else {
        Vec::new()
    };
    eprintln!(
        "omnigate-loadtest: server up and {} agent tokens minted in {:.1} s",
        tokens.len(),
        starting.elapsed().as_secs_f64()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads.max(1))
        .enable_all()
        .build()?;
    let started_at = now_us() / 1_000_000;
    let outcome = runtime.block_on(drive(&scenario, options.target, &server, tokens, sink));
    drop(runtime);
    let stopping = tokio::time::Instant::now();
    let clean_exit = server.stop()?;
    drop(redis);
    eprintln!(
        "omnigate-loadtest: server stopped in {:.1} s",
        stopping.elapsed().as_secs_f64()
    );
    let mut result = outcome?;
    result.started_at_unix = started_at;
    result.server.clean_exit = clean_exit;
    if !clean_exit {
        result
            .violations
            .push("server did not exit cleanly on SIGTERM".to_owned());
        result.passed = false;
    }
    crate::report::write_run(&result, &options.out_dir)?;
    Ok(result)
}

/// Agent tokens from the gateway binary, up to 1,000 agents per `omnigate token` process.
fn mint_tokens(server: &Server, agents: usize) -> anyhow::Result<Vec<String>> {
    let ids: Vec<String> = (0..agents).map(server::agent_id).collect();
    let mut tokens = Vec::with_capacity(agents);
    for chunk in ids.chunks(1_000) {
        tokens.extend(server.agent_tokens(chunk)?);
    }
    Ok(tokens)
}

pub(crate) async fn wait_ready(ctx: &Ctx, want: usize, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let ready = ctx.ready.load(Ordering::Relaxed);
        if ready >= want {
            return true;
        }
        // A client that gave up during set-up will never be ready.
        if ready + ctx.gave_up.load(Ordering::Relaxed) >= want {
            return false;
        }
        sleep(Duration::from_millis(20)).await;
    }
    false
}

pub(crate) async fn join_all(tasks: &mut JoinSet<Tally>, total: &mut Tally, limit: Duration) {
    let collected = timeout(limit, async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(tally) => total.merge(&tally),
                Err(_) => total.error("client_task_panicked"),
            }
        }
    })
    .await;
    if collected.is_err() {
        let stuck = tasks.len() as u64;
        tasks.abort_all();
        *total.errors.entry("client_stuck".to_owned()).or_default() += stuck;
    }
}

/// Starts one task per agent token and waits until they are ready (or the set-up limit passes).
pub(crate) async fn start_agents(
    ctx: &Arc<Ctx>,
    tokens: Vec<String>,
    setup_limit: Duration,
) -> JoinSet<Tally> {
    let mut agents = JoinSet::new();
    let want = ctx.ready.load(Ordering::Relaxed) + tokens.len();
    for (i, token) in tokens.into_iter().enumerate() {
        agents.spawn(clients::agent(Arc::clone(ctx), i, token));
    }
    if !wait_ready(ctx, want, setup_limit).await {
        eprintln!("omnigate-loadtest: not every agent became ready");
    }
    agents
}

/// Waits until `want` clients are ready (or the set-up limit passes) and says how long it took.
pub(crate) async fn wait_clients(ctx: &Ctx, want: usize, setup_limit: Duration) {
    let setup = tokio::time::Instant::now();
    if !wait_ready(ctx, want, setup_limit).await {
        eprintln!(
            "omnigate-loadtest: only {} of {want} clients ready; running with them",
            ctx.ready.load(Ordering::Relaxed)
        );
    }
    eprintln!(
        "omnigate-loadtest: {} clients ready in {:.1} s",
        ctx.ready.load(Ordering::Relaxed),
        setup.elapsed().as_secs_f64()
    );
}

/// The run's timeline from now: traffic starts in 200 ms, measuring after the warm-up.
pub(crate) fn timeline(scenario: &Scenario) -> Phases {
    let start_us = now_us() + 200_000;
    let measure_from_us = start_us + (scenario.warmup_secs * 1e6) as u64;
    let stop_us = measure_from_us + (scenario.duration_secs * 1e6) as u64;
    Phases {
        start_us,
        measure_from_us,
        stop_us,
        drain_until_us: stop_us + (scenario.drain_secs * 1e6) as u64,
    }
}

/// Publishes the timeline and samples the server at the start and the end of the measured window.
pub(crate) async fn measure_window(
    phases_tx: &watch::Sender<Option<Phases>>,
    phases: Phases,
    server: &Server,
) -> anyhow::Result<(ProcSample, ProcSample)> {
    phases_tx.send(Some(phases))?;
    sleep(Duration::from_micros(
        phases.measure_from_us.saturating_sub(now_us()),
    ))
    .await;
    let at_start = server.sample()?;
    sleep(Duration::from_micros(phases.stop_us.saturating_sub(now_us()))).await;
    let at_stop = server.sample()?;
    Ok((at_start, at_stop))
}

/// The server's CPU and memory over a measured window in which `counted` messages (or webhooks) were counted.
pub(crate) fn window_summary(
    samples: [ProcSample; 4],
    window_secs: f64,
    counted: u64,
    connections: usize,
) -> ServerSummary {
    let [before, at_start, at_stop, after] = samples;
    let cpu = at_stop.cpu_secs - at_start.cpu_secs;
    ServerSummary {
        cpu_secs_in_window: cpu,
        cpu_utilization: cpu / window_secs,
        cpu_us_per_message: if counted > 0 {
            cpu * 1e6 / counted as f64
        } else {
            0.0
        },
        rss_before_bytes: before.rss_bytes,
        rss_after_bytes: after.rss_bytes.max(at_stop.rss_bytes),
        rss_per_connection_bytes: 0.0,
        connections,
        clean_exit: true,
        preempted_in_window: at_stop.preempted.saturating_sub(at_start.preempted),
        load_average: at_stop.load_average,
    }
}

async fn drive(
    scenario: &Scenario,
    target: Target,
    server: &Server,
    tokens: Vec<String>,
    sink: Option<std::net::TcpListener>,
) -> anyhow::Result<RunResult> {
    let (phases_tx, phases_rx) = watch::channel(None);
    let (done_tx, done_rx) = watch::channel(false);
    let gateway = target == Target::Gateway;
    // A relayed customer message and its reply count as two; a webhook or an echo as one.
    let relayed_per_send = if gateway && scenario.mode != Mode::Webhooks {
        2.0
    } else {
        1.0
    };
    let interval_us = scenario.load.as_ref().map_or(0.0, |l| {
        if l.kind == LoadKind::Open {
            1e6 * scenario.customers as f64 * relayed_per_send / l.rate
        } else {
            0.0
        }
    });
    let mean = |per_sec: f64, count: usize| (per_sec > 0.0).then(|| 1e6 * count as f64 / per_sec);
    let ctx = Arc::new(Ctx {
        addr: server.public,
        widget_key: WIDGET_KEY.to_owned(),
        load: scenario.load.clone(),
        interval_us,
        seed: scenario.seed,
        capacity: scenario.agent_capacity as usize,
        customer_drop_mean_us: mean(scenario.churn.customer_drops_per_sec, scenario.customers),
        agent_drop_mean_us: mean(scenario.churn.agent_drops_per_sec, scenario.agents),
        connect: Semaphore::new(scenario.connect_concurrency),
        ready: AtomicUsize::new(0),
        phases: phases_rx,
        done: done_rx,
        assignments: DashMap::new(),
        reported: AtomicUsize::new(0),
        gave_up: AtomicUsize::new(0),
        agents_reply: scenario.mode != Mode::Webhooks,
        received_total: AtomicU64::new(0),
    });
    let setup_limit = Duration::from_secs_f64(30.0 + scenario.customers as f64 / 100.0);
    let mut total = Tally::default();
    let before = server.sample()?;
    if scenario.mode == Mode::Idle {
        return idle(scenario, target, server, ctx, done_tx, before, setup_limit).await;
    }
    if scenario.mode == Mode::Webhooks {
        let run = crate::run_webhooks::WebhookRun {
            scenario,
            target,
            server,
            ctx,
            tokens,
            phases_tx,
            done_tx,
            sink,
            before,
            setup_limit,
        };
        return run.drive().await;
    }
    let mut agents = if gateway {
        start_agents(&ctx, tokens, setup_limit).await
    } else {
        JoinSet::new()
    };
    let mut customers = JoinSet::new();
    for i in 0..scenario.customers as u32 {
        if gateway {
            customers.spawn(clients::customer(Arc::clone(&ctx), i));
        } else {
            customers.spawn(clients::echo(Arc::clone(&ctx), i));
        }
    }
    let want = scenario.customers + if gateway { scenario.agents } else { 0 };
    wait_clients(&ctx, want, setup_limit).await;
    let (at_start, at_stop) = measure_window(&phases_tx, timeline(scenario), server).await?;
    join_all(
        &mut customers,
        &mut total,
        Duration::from_secs_f64(scenario.drain_secs + 15.0),
    )
    .await;
    done_tx.send(true)?;
    join_all(&mut agents, &mut total, Duration::from_secs(15)).await;
    let metrics = match server.admin {
        Some(admin) => crate::http::scrape(admin).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let after = server.sample()?;
    let delivered = total.delivered_in_window;
    let window = scenario.duration_secs;
    let server_summary = window_summary([before, at_start, at_stop, after], window, delivered, want);
    let mut result = RunResult::new(
        scenario,
        target,
        &total,
        delivered as f64 / window,
        server_summary,
        metrics,
    );
    if delivered == 0 {
        result
            .violations
            .push("nothing was delivered in the measured window".to_owned());
        result.passed = false;
    }
    Ok(result)
}

#[allow(clippy::too_many_arguments)]
async fn idle(
    scenario: &Scenario,
    target: Target,
    server: &Server,
    ctx: Arc<Ctx>,
    done_tx: watch::Sender<bool>,
    before: ProcSample,
    setup_limit: Duration,
) -> anyhow::Result<RunResult> {
    let gateway = target == Target::Gateway;
    let mut total = Tally::default();
    let mut clients = JoinSet::new();
    for _ in 0..scenario.customers {
        clients.spawn(clients::idle(Arc::clone(&ctx), gateway));
    }
    let setup = tokio::time::Instant::now();
    if !wait_ready(&ctx, scenario.customers, setup_limit).await {
        eprintln!("omnigate-loadtest: not every idle connection was set up");
    }
    eprintln!(
        "omnigate-loadtest: {} connections set up in {:.1} s",
        ctx.ready.load(Ordering::Relaxed),
        setup.elapsed().as_secs_f64()
    );
    sleep(Duration::from_secs_f64(scenario.settle_secs)).await;
    let held = server.sample()?;
    let connections = ctx.ready.load(Ordering::Relaxed);
    sleep(Duration::from_secs_f64(scenario.duration_secs)).await;
    let end = server.sample()?;
    done_tx.send(true)?;
    let closing = tokio::time::Instant::now();
    join_all(&mut clients, &mut total, Duration::from_secs(30)).await;
    eprintln!(
        "omnigate-loadtest: connections closed in {:.1} s",
        closing.elapsed().as_secs_f64()
    );
    let metrics = match server.admin {
        Some(admin) => crate::http::scrape(admin).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let rss = held.rss_bytes.max(end.rss_bytes);
    let server_summary = ServerSummary {
        cpu_secs_in_window: end.cpu_secs - held.cpu_secs,
        cpu_utilization: (end.cpu_secs - held.cpu_secs) / scenario.duration_secs,
        cpu_us_per_message: 0.0,
        rss_before_bytes: before.rss_bytes,
        rss_after_bytes: rss,
        rss_per_connection_bytes: rss.saturating_sub(before.rss_bytes) as f64 / connections.max(1) as f64,
        connections,
        clean_exit: true,
        preempted_in_window: end.preempted.saturating_sub(held.preempted),
        load_average: end.load_average,
    };
    let mut result = RunResult::new(scenario, target, &total, 0.0, server_summary, metrics);
    if connections < scenario.customers {
        result.violations.push(format!(
            "only {connections} of {} connections were held",
            scenario.customers
        ));
        result.passed = false;
    }
    Ok(result)
}

/// The default output folder of a run: `target/loadtest/<scenario>-<target>-<unix seconds>`.
pub fn default_out_dir(root: &Path, scenario: &Path, target: Target) -> anyhow::Result<PathBuf> {
    let name = scenario
        .file_stem()
        .context("scenario path has no file name")?
        .to_string_lossy();
    Ok(root.join(format!("{name}-{}-{}", target.name(), now_us() / 1_000_000)))
}
