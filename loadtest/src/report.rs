//! Results: one run's JSON, markdown table and latency plot; and the summary of many runs (medians, min–max,
//! ratios against the echo baseline of the same session) that becomes sections of `docs/performance.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::scenario::{LoadKind, Mode, Scenario, StoreKind};
use crate::server::Target;
use crate::tally::Tally;

/// Latency figures of a run, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
    /// `(nines, µs)` points of the percentile curve: nines = log10(1 / (1 − q)).
    pub curve: Vec<(f64, u64)>,
}

/// What procfs said about the server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerSummary {
    /// utime + stime spent in the measured window, seconds.
    pub cpu_secs_in_window: f64,
    /// Cores used on average in the window.
    pub cpu_utilization: f64,
    /// Server CPU per delivered message, µs.
    pub cpu_us_per_message: f64,
    /// RSS before any client connected, bytes.
    pub rss_before_bytes: u64,
    /// RSS at the end of the traffic (idle: while every connection was held), bytes.
    pub rss_after_bytes: u64,
    /// Idle: (held − before) / connections, bytes.
    pub rss_per_connection_bytes: f64,
    /// Connections that took part.
    pub connections: usize,
    /// Whether the server exited 0 on SIGTERM.
    pub clean_exit: bool,
    /// Times the server was preempted in the measured window (other processes wanted its core).
    #[serde(default)]
    pub preempted_in_window: u64,
    /// The machine's one-minute load average at the end of the window (2 cores here).
    #[serde(default)]
    pub load_average: f64,
}

/// Every correctness count of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Correctness {
    /// Distinct messages sent.
    pub sent: u64,
    /// Distinct messages received.
    pub received: u64,
    /// Round trips that never completed.
    pub lost: u64,
    /// Messages received twice.
    pub duplicated: u64,
    /// Messages received after a later one.
    pub reordered: u64,
    /// Gaps in event `seq`.
    pub seq_gaps: u64,
    /// Repeated event `seq`.
    pub seq_repeats: u64,
    /// Agent over capacity.
    pub over_capacity: u64,
    /// Conversation held by two agents.
    pub double_assigned: u64,
    /// Offers gone before they were accepted (legal).
    pub accept_refused: u64,
    /// Reconnections.
    pub reconnects: u64,
    /// Messages resent after a reconnect.
    pub resent: u64,
    /// Error frames and unexpected closes, by code.
    pub errors: BTreeMap<String, u64>,
}

/// One run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// `relay`, `idle` or `churn`.
    pub mode: Mode,
    /// `gateway` or `echo`.
    pub target: String,
    /// Scenario seed.
    pub seed: u64,
    /// Customer (or echo) connections.
    pub customers: usize,
    /// Agent connections.
    pub agents: usize,
    /// Measured seconds.
    pub duration_secs: f64,
    /// `open` or `closed` (relay and churn).
    pub load: Option<LoadKind>,
    /// Offered rate of an open loop, messages per second.
    pub offered_rate: f64,
    /// The gateway's context store.
    #[serde(default)]
    pub store: StoreKind,
    /// When the run started, unix seconds.
    pub started_at_unix: u64,
    /// Messages delivered per second in the measured window.
    pub throughput: f64,
    /// Messages delivered in the measured window.
    pub delivered: u64,
    /// One-way latency.
    pub latency_us: LatencySummary,
    /// Largest lateness of the loader against its schedule, µs (a large value means the loader, not the
    /// server, was the limit).
    pub max_send_lag_us: u64,
    /// 99th percentile of that lateness, µs.
    #[serde(default)]
    pub send_lag_p99_us: u64,
    /// Server CPU and memory.
    pub server: ServerSummary,
    /// Correctness counts.
    pub correctness: Correctness,
    /// Correctness rules broken (empty when passed).
    pub violations: Vec<String>,
    /// Whether every correctness rule held.
    pub passed: bool,
    /// The gateway's `omnigate_*` metrics at the end of the run.
    pub metrics: Vec<(String, f64)>,
    /// Webhooks: time from posting a webhook to the server's answer.
    #[serde(default)]
    pub answer_latency_us: LatencySummary,
    /// Webhooks: calls the gateway made to the loader's provider sink (access tokens, `agent.connect`).
    #[serde(default)]
    pub provider_callbacks: u64,
}

fn latency(h: &hdrhistogram::Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary::default();
    }
    let curve = (0..=80)
        .map(|i| {
            let nines = f64::from(i) * 0.05;
            let q = 1.0 - 10f64.powf(-nines);
            (nines, h.value_at_quantile(q.min(1.0)))
        })
        .collect();
    LatencySummary {
        count: h.len(),
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        mean: h.mean(),
        curve,
    }
}

impl RunResult {
    /// Assembles a result from the merged tally.
    pub fn new(
        scenario: &Scenario,
        target: Target,
        tally: &Tally,
        throughput: f64,
        server: ServerSummary,
        metrics: Vec<(String, f64)>,
    ) -> RunResult {
        let violations = tally.violations();
        RunResult {
            scenario: scenario.name.clone(),
            mode: scenario.mode,
            target: target.name().to_owned(),
            seed: scenario.seed,
            customers: scenario.customers,
            agents: if target == Target::Gateway {
                scenario.agents
            } else {
                0
            },
            duration_secs: scenario.duration_secs,
            load: scenario.load.as_ref().map(|l| l.kind),
            offered_rate: scenario
                .load
                .as_ref()
                .filter(|l| l.kind == LoadKind::Open)
                .map_or(0.0, |l| l.rate),
            store: scenario.store,
            started_at_unix: 0,
            throughput,
            delivered: tally.delivered_in_window,
            latency_us: latency(&tally.latency),
            max_send_lag_us: tally.max_send_lag_us,
            send_lag_p99_us: if tally.send_lags.is_empty() {
                0
            } else {
                tally.send_lags.value_at_quantile(0.99)
            },
            server,
            correctness: Correctness {
                sent: tally.sent,
                received: tally.received,
                lost: tally.lost,
                duplicated: tally.duplicated,
                reordered: tally.reordered,
                seq_gaps: tally.seq_gaps,
                seq_repeats: tally.seq_repeats,
                over_capacity: tally.over_capacity,
                double_assigned: tally.double_assigned,
                accept_refused: tally.accept_refused,
                reconnects: tally.reconnects,
                resent: tally.resent,
                errors: tally.errors.clone(),
            },
            passed: violations.is_empty(),
            violations,
            metrics,
            answer_latency_us: latency(&tally.answer_latency),
            provider_callbacks: 0,
        }
    }

    /// A markdown table of the run.
    pub fn markdown(&self) -> String {
        let l = &self.latency_us;
        let c = &self.correctness;
        let s = &self.server;
        let mut out = format!(
            "### {} against {} ({:?}, seed {})\n\n| figure | value |\n|---|---|\n",
            self.scenario, self.target, self.mode, self.seed
        );
        let rows: Vec<(&str, String)> = vec![
            (
                "connections",
                format!("{} customers, {} agents", self.customers, self.agents),
            ),
            (
                "offered",
                match self.load {
                    Some(LoadKind::Open) => format!("{:.0} msg/s open loop", self.offered_rate),
                    Some(LoadKind::Closed) => "closed loop".to_owned(),
                    None => "none".to_owned(),
                },
            ),
            (
                "delivered",
                format!(
                    "{:.0} msg/s ({} in {:.0} s)",
                    self.throughput, self.delivered, self.duration_secs
                ),
            ),
            (
                "latency p50 / p99 / p99.9 / max",
                format!("{} / {} / {} / {} µs", l.p50, l.p99, l.p999, l.max),
            ),
            ("webhook answer p50 / p99 / max", {
                let a = &self.answer_latency_us;
                format!("{} / {} / {} µs", a.p50, a.p99, a.max)
            }),
            (
                "server CPU",
                format!(
                    "{:.2} cores, {:.1} µs per message",
                    s.cpu_utilization, s.cpu_us_per_message
                ),
            ),
            (
                "server RSS",
                format!(
                    "{:.1} MiB → {:.1} MiB",
                    mib(s.rss_before_bytes),
                    mib(s.rss_after_bytes)
                ),
            ),
            (
                "RSS per connection",
                format!("{:.0} B", s.rss_per_connection_bytes),
            ),
            (
                "lost / duplicated / reordered",
                format!("{} / {} / {}", c.lost, c.duplicated, c.reordered),
            ),
            (
                "seq gaps / repeats",
                format!("{} / {}", c.seq_gaps, c.seq_repeats),
            ),
            (
                "over capacity / assigned twice",
                format!("{} / {}", c.over_capacity, c.double_assigned),
            ),
            ("reconnects / resent", format!("{} / {}", c.reconnects, c.resent)),
            (
                "machine load / server preempted",
                format!("{:.2} / {} times", s.load_average, s.preempted_in_window),
            ),
            (
                "loader send lag p99 / max",
                format!("{} / {} µs", self.send_lag_p99_us, self.max_send_lag_us),
            ),
            (
                "verdict",
                if self.passed {
                    "passed".to_owned()
                } else {
                    format!("FAILED: {}", self.violations.join("; "))
                },
            ),
        ];
        for (name, value) in rows {
            let _ = writeln!(out, "| {name} | {value} |");
        }
        out
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Writes `result.json`, `result.md` and (when there is latency) `latency.svg` into `dir`.
///
/// # Errors
/// When a file cannot be written.
pub fn write_run(result: &RunResult, dir: &Path) -> anyhow::Result<()> {
    std::fs::write(dir.join("result.json"), serde_json::to_string_pretty(result)?)?;
    std::fs::write(dir.join("result.md"), result.markdown())?;
    if result.latency_us.count > 0 {
        let label = format!("{} ({})", result.target, result.scenario);
        plot(
            &dir.join("latency.svg"),
            &result.scenario,
            &[(label, &result.latency_us.curve)],
        )?;
    }
    Ok(())
}

/// Plots percentile curves (x: percentile on a nines scale, y: µs on a log scale) into an SVG file.
///
/// # Errors
/// When the file cannot be drawn.
pub fn plot(path: &Path, title: &str, series: &[(String, &Vec<(f64, u64)>)]) -> anyhow::Result<()> {
    let max = series
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .max()
        .unwrap_or(1)
        .max(10);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}: one-way latency by percentile"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..4f64, (1f64..(max as f64 * 1.5)).log_scale())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("µs")
        .x_labels(5)
        .x_label_formatter(&|x| {
            let p = format!("{:.3}", 100.0 - 100.0 * 10f64.powf(-x));
            p.trim_end_matches('0').trim_end_matches('.').to_owned()
        })
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let colors = [BLUE, RED, GREEN, MAGENTA, BLACK];
    for (i, (name, curve)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(
                curve.iter().map(|(x, y)| (*x, (*y).max(1) as f64)),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Reads every `result.json` under `dirs`.
///
/// # Errors
/// When a file cannot be read or parsed.
pub fn read_results(dirs: &[std::path::PathBuf]) -> anyhow::Result<Vec<RunResult>> {
    let mut out = Vec::new();
    for dir in dirs {
        let path = dir.join("result.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        out.push(serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?);
    }
    Ok(out)
}

/// Median, min and max of a set of values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Values.
    pub n: usize,
}

impl Spread {
    /// The spread of `values`.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        }
    }

    fn show(&self, digits: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = digits
        )
    }
}

/// One scenario against one target over the session's runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Group {
    /// Scenario name.
    pub scenario: String,
    /// Mode.
    pub mode: Option<Mode>,
    /// `gateway` or `echo`.
    pub target: String,
    /// Runs.
    pub runs: usize,
    /// Runs that passed every correctness rule.
    pub passed: usize,
    /// Delivered messages per second.
    pub throughput: Spread,
    /// p50, µs.
    pub p50: Spread,
    /// p99, µs.
    pub p99: Spread,
    /// p99.9, µs.
    pub p999: Spread,
    /// Server CPU per message, µs.
    pub cpu_us_per_message: Spread,
    /// Server cores used.
    pub cpu_utilization: Spread,
    /// Idle RSS per connection, bytes.
    pub rss_per_connection: Spread,
    /// Connections.
    pub connections: usize,
    /// Offered rate (open loop).
    pub offered_rate: f64,
    /// Load kind.
    pub load: Option<LoadKind>,
    /// The gateway's context store.
    #[serde(default)]
    pub store: StoreKind,
    /// Sum of lost + duplicated + reordered over the runs.
    pub violations: u64,
    /// Reconnects over the runs.
    pub reconnects: u64,
    /// Largest loader lag over the runs, µs.
    pub max_send_lag_us: u64,
    /// The machine's load average at the end of each window.
    #[serde(default)]
    pub load_average: Spread,
    /// Webhooks: answer latency p50, µs.
    #[serde(default)]
    pub answer_p50: Spread,
    /// Webhooks: answer latency p99, µs.
    #[serde(default)]
    pub answer_p99: Spread,
}

/// Groups results by scenario and target.
pub fn group(results: &[RunResult]) -> Vec<Group> {
    let mut map: BTreeMap<(String, String), Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        map.entry((r.scenario.clone(), r.target.clone()))
            .or_default()
            .push(r);
    }
    map.into_iter()
        .map(|((scenario, target), runs)| Group {
            scenario,
            mode: runs.first().map(|r| r.mode),
            target,
            runs: runs.len(),
            passed: runs.iter().filter(|r| r.passed).count(),
            throughput: Spread::of(runs.iter().map(|r| r.throughput)),
            p50: Spread::of(runs.iter().map(|r| r.latency_us.p50 as f64)),
            p99: Spread::of(runs.iter().map(|r| r.latency_us.p99 as f64)),
            p999: Spread::of(runs.iter().map(|r| r.latency_us.p999 as f64)),
            cpu_us_per_message: Spread::of(runs.iter().map(|r| r.server.cpu_us_per_message)),
            cpu_utilization: Spread::of(runs.iter().map(|r| r.server.cpu_utilization)),
            rss_per_connection: Spread::of(runs.iter().map(|r| r.server.rss_per_connection_bytes)),
            connections: runs.first().map_or(0, |r| r.server.connections),
            offered_rate: runs.first().map_or(0.0, |r| r.offered_rate),
            load: runs.first().and_then(|r| r.load),
            store: runs.first().map(|r| r.store).unwrap_or_default(),
            violations: runs
                .iter()
                .map(|r| r.correctness.lost + r.correctness.duplicated + r.correctness.reordered)
                .sum(),
            reconnects: runs.iter().map(|r| r.correctness.reconnects).sum(),
            max_send_lag_us: runs.iter().map(|r| r.max_send_lag_us).max().unwrap_or(0),
            load_average: Spread::of(runs.iter().map(|r| r.server.load_average)),
            answer_p50: Spread::of(runs.iter().map(|r| r.answer_latency_us.p50 as f64)),
            answer_p99: Spread::of(runs.iter().map(|r| r.answer_latency_us.p99 as f64)),
        })
        .collect()
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "n/a".to_owned()
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// Renders the "Relay, idle memory and churn" section from grouped results (webhook runs are left out); `plots`
/// are the latency plots (relative to `docs/`) to link.
pub fn relay_section(groups: &[Group], plots: &[(String, String)]) -> String {
    let find = |scenario: &str, target: &str| {
        groups
            .iter()
            .find(|g| g.scenario == scenario && g.target == target)
    };
    let mut out = String::from("## Relay, idle memory and churn\n\n");
    out.push_str(
        "Medians over the session's runs, with min–max in parentheses; ratios are gateway ÷ echo baseline of \
         the same session. Latency is one-way (send → receipt by the other party, clocks of one machine) in µs; a relayed \
         message is a customer message reaching its agent or an agent reply reaching its customer.\n\n",
    );
    let mut targets = String::from("### Targets\n\n| target | measured | verdict |\n|---|---|---|\n");
    // Throughput and CPU (closed loop).
    let mut table = String::from(
        "### Relay throughput and server CPU (closed loop)\n\n| scenario | target | runs (passed) | connections | msg/s delivered | server µs CPU/msg | server cores | one server core, projected msg/s | machine load |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut any = false;
    for g in groups
        .iter()
        .filter(|g| g.load == Some(LoadKind::Closed) && g.mode == Some(Mode::Relay))
    {
        any = true;
        let _ = writeln!(
            table,
            "| {} | {} | {} ({}) | {} | {} | {} | {} | {:.0} | {} |",
            g.scenario,
            g.target,
            g.runs,
            g.passed,
            g.connections,
            g.throughput.show(0),
            g.cpu_us_per_message.show(1),
            g.cpu_utilization.show(2),
            1e6 / g.cpu_us_per_message.median.max(1e-9),
            g.load_average.show(1)
        );
        if g.target == "gateway" {
            if let Some(e) = find(&g.scenario, "echo") {
                let t = g.throughput.median / e.throughput.median.max(1e-9);
                let c = g.cpu_us_per_message.median / e.cpu_us_per_message.median.max(1e-9);
                let _ = writeln!(
                    table,
                    "| {} | **ratio** | | | {} | {} | | {} | |",
                    g.scenario,
                    ratio(g.throughput.median, e.throughput.median),
                    ratio(g.cpu_us_per_message.median, e.cpu_us_per_message.median),
                    ratio(e.cpu_us_per_message.median, g.cpu_us_per_message.median)
                );
                let projected = e.cpu_us_per_message.median / g.cpu_us_per_message.median.max(1e-9);
                let saturated = g.cpu_utilization.median >= 0.9 && e.cpu_utilization.median >= 0.9;
                let _ = writeln!(
                    targets,
                    "| relay throughput ≥ 0.5× echo ({}) | {t:.2}× delivered{}; {projected:.2}× projected to one saturated server core each | {} |",
                    g.scenario,
                    if saturated { "" } else { " (servers not saturated: the loader's core was the limit)" },
                    verdict(projected >= 0.5 && (!saturated || t >= 0.5))
                );
                let _ = writeln!(
                    targets,
                    "| server CPU per relayed message ≤ 2× echo ({}) | {c:.2}× | {} |",
                    g.scenario,
                    verdict(c <= 2.0)
                );
            }
        }
    }
    if any {
        out.push_str(&table);
        out.push('\n');
    }
    // Latency (open loop).
    let mut table = String::from(
        "### Latency at a fixed offered rate (open loop)\n\n| scenario | target | runs (passed) | offered msg/s | delivered msg/s | p50 | p99 | p99.9 | server µs CPU/msg | loader max lag µs | machine load |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    any = false;
    for g in groups
        .iter()
        .filter(|g| g.load == Some(LoadKind::Open) && g.mode == Some(Mode::Relay))
    {
        any = true;
        let _ = writeln!(
            table,
            "| {} | {} | {} ({}) | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            g.scenario,
            g.target,
            g.runs,
            g.passed,
            g.offered_rate,
            g.throughput.show(0),
            g.p50.show(0),
            g.p99.show(0),
            g.p999.show(0),
            g.cpu_us_per_message.show(1),
            g.max_send_lag_us,
            g.load_average.show(1)
        );
        if g.target == "gateway" {
            let (limit_us, store) = match g.store {
                StoreKind::Memory => (2000.0, "embedded store"),
                StoreKind::Redis => (5000.0, "Redis"),
            };
            let _ = writeln!(
                targets,
                "| p99 ≤ {} ms at {:.0} msg/s, {store} ({}) | {:.0} µs | {} |",
                limit_us / 1000.0,
                g.offered_rate,
                g.scenario,
                g.p99.median,
                verdict(g.p99.median <= limit_us)
            );
        }
    }
    if any {
        out.push_str(&table);
        out.push('\n');
    }
    // Idle memory.
    let mut table = String::from(
        "### Idle memory per connection\n\n| scenario | target | runs (passed) | connections | RSS per connection (bytes) |\n|---|---|---|---|---|\n",
    );
    any = false;
    for g in groups.iter().filter(|g| g.mode == Some(Mode::Idle)) {
        any = true;
        let _ = writeln!(
            table,
            "| {} | {} | {} ({}) | {} | {} |",
            g.scenario,
            g.target,
            g.runs,
            g.passed,
            g.connections,
            g.rss_per_connection.show(0)
        );
        if g.target == "gateway" {
            if let Some(e) = find(&g.scenario, "echo") {
                let r = g.rss_per_connection.median / e.rss_per_connection.median.max(1e-9);
                let _ = writeln!(
                    table,
                    "| {} | **ratio** | | | {} |",
                    g.scenario,
                    ratio(g.rss_per_connection.median, e.rss_per_connection.median)
                );
                let _ = writeln!(
                    targets,
                    "| idle memory per customer connection ≤ 2× echo ({}) | {r:.2}× ({:.0} B vs {:.0} B) | {} |",
                    g.scenario,
                    g.rss_per_connection.median,
                    e.rss_per_connection.median,
                    verdict(r <= 2.0)
                );
            }
        }
    }
    if any {
        out.push_str(&table);
        out.push('\n');
    }
    // Churn.
    let mut table = String::from(
        "### Reconnect storm with resume (churn)\n\n| scenario | runs (passed) | delivered msg/s | reconnects (all runs) | p50 | p99 | p99.9 |\n|---|---|---|---|---|---|---|\n",
    );
    any = false;
    for g in groups.iter().filter(|g| g.mode == Some(Mode::Churn)) {
        any = true;
        let _ = writeln!(
            table,
            "| {} | {} ({}) | {} | {} | {} | {} | {} |",
            g.scenario,
            g.runs,
            g.passed,
            g.throughput.show(0),
            g.reconnects,
            g.p50.show(0),
            g.p99.show(0),
            g.p999.show(0)
        );
    }
    if any {
        out.push_str(&table);
        out.push('\n');
    }
    let relay_groups = groups.iter().filter(|g| g.mode != Some(Mode::Webhooks));
    let runs: usize = relay_groups.clone().map(|g| g.runs).sum();
    let passed: usize = relay_groups.clone().map(|g| g.passed).sum();
    let bad: u64 = relay_groups.map(|g| g.violations).sum();
    let _ = writeln!(
        targets,
        "| zero loss, duplication, reordering; no agent over capacity (every run) | {passed} of {runs} runs passed; {bad} messages lost, duplicated or reordered | {} |",
        verdict(passed == runs)
    );
    out.push_str(&targets);
    out.push('\n');
    for (title, path) in plots {
        let _ = writeln!(out, "![{title}]({path})\n");
    }
    out
}

/// Renders the "Webhook ingest" section from the webhook runs among `groups`, or `None` without any.
pub fn webhooks_section(groups: &[Group]) -> Option<String> {
    let find = |scenario: &str, target: &str| {
        groups
            .iter()
            .find(|g| g.scenario == scenario && g.target == target)
    };
    // Webhooks.
    let mut out = String::from(
        "## Webhook ingest\n\nMedians over the session's runs, with min–max in parentheses; ratios are gateway ÷ the bare \
         axum JSON endpoint of the same session. Latencies in µs.\n\n",
    );
    let mut targets = String::from("### Targets\n\n| target | measured | verdict |\n|---|---|---|\n");
    let mut table = String::from(
        "### Throughput, latency and server CPU\n\n| scenario | target | runs (passed) | senders | webhooks/s answered | answer p50 | answer p99 | to agent p99 | server µs CPU/webhook | one server core, projected webhooks/s | machine load |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut any = false;
    for g in groups.iter().filter(|g| g.mode == Some(Mode::Webhooks)) {
        any = true;
        let _ = writeln!(
            table,
            "| {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {:.0} | {} |",
            g.scenario,
            g.target,
            g.runs,
            g.passed,
            g.connections,
            g.throughput.show(0),
            g.answer_p50.show(0),
            g.answer_p99.show(0),
            g.p99.show(0),
            g.cpu_us_per_message.show(1),
            1e6 / g.cpu_us_per_message.median.max(1e-9),
            g.load_average.show(1)
        );
        if g.target == "gateway" {
            if let Some(b) = find(&g.scenario, "axum-json") {
                let projected = b.cpu_us_per_message.median / g.cpu_us_per_message.median.max(1e-9);
                let _ = writeln!(
                    table,
                    "| {} | **ratio** | | | {} | | | | {} | {} | |",
                    g.scenario,
                    ratio(g.throughput.median, b.throughput.median),
                    ratio(g.cpu_us_per_message.median, b.cpu_us_per_message.median),
                    ratio(b.cpu_us_per_message.median, g.cpu_us_per_message.median)
                );
                let _ = writeln!(
                    targets,
                    "| webhook ingest ≥ 0.5× a bare axum JSON endpoint ({}) | {:.2}× answered; {projected:.2}× projected to one saturated server core each | {} |",
                    g.scenario,
                    g.throughput.median / b.throughput.median.max(1e-9),
                    verdict(projected >= 0.5)
                );
            }
        }
    }
    if !any {
        return None;
    }
    out.push_str(&table);
    out.push('\n');
    let webhook_groups = groups.iter().filter(|g| g.mode == Some(Mode::Webhooks));
    let runs: usize = webhook_groups.clone().map(|g| g.runs).sum();
    let passed: usize = webhook_groups.clone().map(|g| g.passed).sum();
    let bad: u64 = webhook_groups.map(|g| g.violations).sum();
    let _ = writeln!(
        targets,
        "| every webhook answered 2xx reaches an agent exactly once, in order (every run) | {passed} of {runs} runs passed; {bad} webhooks lost, duplicated or reordered | {} |",
        verdict(passed == runs)
    );
    out.push_str(&targets);
    Some(out)
}

/// Replaces (or appends) the level-2 sections named in `sections` in the markdown file at `path`, keeping
/// every other section as it is. A section given with an empty body is removed.
///
/// # Errors
/// When the file cannot be read or written.
pub fn replace_sections(path: &Path, title: &str, sections: &[(&str, String)]) -> anyhow::Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_else(|_| format!("# {title}\n"));
    let mut parts: Vec<(Option<String>, String)> = Vec::new();
    for line in existing.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            parts.push((Some(heading.trim().to_owned()), format!("{line}\n")));
        } else if let Some(last) = parts.last_mut() {
            last.1.push_str(line);
            last.1.push('\n');
        } else {
            parts.push((None, format!("{line}\n")));
        }
    }
    for (heading, body) in sections {
        if body.is_empty() {
            parts.retain(|(h, _)| h.as_deref() != Some(*heading));
            continue;
        }
        let body = if body.ends_with("\n\n") {
            body.clone()
        } else {
            format!("{}\n", body.trim_end()) + "\n"
        };
        match parts.iter_mut().find(|(h, _)| h.as_deref() == Some(*heading)) {
            Some(part) => part.1 = body,
            None => {
                if let Some(last) = parts.last_mut() {
                    if !last.1.ends_with("\n\n") {
                        last.1.push('\n');
                    }
                }
                parts.push((Some((*heading).to_owned()), body));
            }
        }
    }
    let text: String = parts.into_iter().map(|(_, body)| body).collect();
    std::fs::write(path, text.trim_end().to_owned() + "\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_median_and_range() {
        let s = Spread::of([3.0, 1.0, 2.0, 10.0, 4.0]);
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 10.0, 5));
        assert_eq!(Spread::of([1.0, 2.0]).median, 1.5);
    }
}
