//! The `omnigate-loadtest` command line; see the library docs for the layout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};

use omnigate_loadtest::run::{self, RunOptions};
use omnigate_loadtest::scenario::Mode;
use omnigate_loadtest::server::Target;
use omnigate_loadtest::{echo, report};

const USAGE: &str = "usage: omnigate-loadtest COMMAND
  run SCENARIO [--target gateway|echo|node|axum-json] [--out DIR] [--server-cpu N] [--threads N]
               [--redis-cpu N] [--gateway-bin PATH] [--base-config PATH] [--duration SECS]
                     run one scenario; exit 1 when a correctness rule is broken
  echo-baseline SCENARIO [options of run]
                     the same scenario against the bare echo server
  smoke [options of run]
                     loadtest/scenarios/smoke.toml against the gateway (CI)
  echo-server ADDR   serve the echo baseline on ADDR until SIGTERM
  json-server ADDR   serve the bare axum JSON endpoint (webhook baseline) on ADDR until SIGTERM
  summarize --doc PATH --method PATH --plots DIR [--notes PATH] DIR...
                     medians, min-max and ratios of the runs in DIR... into PATH's sections";

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("omnigate-loadtest: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn real_main() -> anyhow::Result<bool> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        bail!("{USAGE}");
    };
    match command.as_str() {
        "run" | "echo-baseline" => {
            let (scenario, rest) = rest
                .split_first()
                .with_context(|| format!("missing SCENARIO\n{USAGE}"))?;
            let target = if command == "echo-baseline" {
                Target::Echo
            } else {
                Target::Gateway
            };
            run_command(Path::new(scenario), target, rest)
        }
        "smoke" => run_command(&crate_dir().join("scenarios/smoke.toml"), Target::Gateway, rest),
        "echo-server" => {
            let addr = rest
                .first()
                .with_context(|| format!("missing ADDR\n{USAGE}"))?
                .parse()?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(echo::serve(addr))?;
            Ok(true)
        }
        "json-server" => {
            let addr = rest
                .first()
                .with_context(|| format!("missing ADDR\n{USAGE}"))?
                .parse()?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(omnigate_loadtest::sink::serve_json(addr))?;
            Ok(true)
        }
        "summarize" => summarize(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(true)
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

fn run_command(scenario: &Path, mut target: Target, args: &[String]) -> anyhow::Result<bool> {
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().context("binary has no folder")?.to_owned();
    let mut options = RunOptions {
        scenario: scenario.to_owned(),
        target,
        gateway_bin: bin_dir.join("omnigate"),
        base_config: crate_dir().join("gateway.toml"),
        out_dir: PathBuf::new(),
        server_cpu: None,
        redis_cpu: None,
        duration_secs: None,
        threads: std::thread::available_parallelism().map_or(1, usize::from),
    };
    let mut out = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--target" => {
                target = match value()?.as_str() {
                    "gateway" => Target::Gateway,
                    "echo" => Target::Echo,
                    "node" => Target::Node,
                    "axum-json" => Target::Json,
                    other => bail!("unknown target {other:?}"),
                };
                options.target = target;
            }
            "--out" => out = Some(PathBuf::from(value()?)),
            "--server-cpu" => options.server_cpu = Some(value()?.parse()?),
            "--redis-cpu" => options.redis_cpu = Some(value()?.parse()?),
            "--threads" => options.threads = value()?.parse()?,
            "--gateway-bin" => options.gateway_bin = PathBuf::from(value()?),
            "--base-config" => options.base_config = PathBuf::from(value()?),
            "--duration" => options.duration_secs = Some(value()?.parse()?),
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    let root = bin_dir.parent().unwrap_or(&bin_dir).join("loadtest");
    options.out_dir = match out {
        Some(out) => out,
        None => run::default_out_dir(&root, scenario, options.target)?,
    };
    let result = run::run(&options)?;
    println!("{}", result.markdown());
    println!("results in {}", options.out_dir.display());
    if !result.passed {
        eprintln!("omnigate-loadtest: run FAILED: {}", result.violations.join("; "));
    }
    Ok(result.passed)
}

fn summarize(args: &[String]) -> anyhow::Result<bool> {
    let mut doc = None;
    let mut method = None;
    let mut plots = None;
    let mut notes = None;
    let mut dirs = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--doc" => doc = it.next().map(PathBuf::from),
            "--method" => method = it.next().map(PathBuf::from),
            "--plots" => plots = it.next().map(PathBuf::from),
            "--notes" => notes = it.next().map(PathBuf::from),
            dir => dirs.push(PathBuf::from(dir)),
        }
    }
    let doc = doc.with_context(|| format!("--doc is required\n{USAGE}"))?;
    let method = method.with_context(|| format!("--method is required\n{USAGE}"))?;
    let plots = plots.with_context(|| format!("--plots is required\n{USAGE}"))?;
    let results = report::read_results(&dirs)?;
    if let Some(parent) = doc.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let groups = report::group(&results);
    std::fs::create_dir_all(&plots)?;
    std::fs::write(plots.join("summary.json"), serde_json::to_string_pretty(&groups)?)?;
    // One plot per open-loop relay scenario: the median-p99 run of each target.
    let doc_dir = doc.parent().unwrap_or(Path::new("."));
    let mut links = Vec::new();
    let mut scenarios: Vec<&str> = results
        .iter()
        .filter(|r| r.latency_us.count > 0)
        .map(|r| r.scenario.as_str())
        .collect();
    scenarios.sort_unstable();
    scenarios.dedup();
    for scenario in scenarios {
        let mut series = Vec::new();
        for target in ["echo", "gateway", "node"] {
            let mut runs: Vec<&report::RunResult> = results
                .iter()
                .filter(|r| r.scenario == scenario && r.target == target && r.latency_us.count > 0)
                .collect();
            runs.sort_by_key(|r| r.latency_us.p99);
            if let Some(median) = runs.get(runs.len() / 2) {
                series.push((format!("{target} (median-p99 run)"), &median.latency_us.curve));
            }
        }
        let file = plots.join(format!("{scenario}-latency.svg"));
        report::plot(&file, scenario, &series)?;
        links.push((format!("{scenario} latency"), relative(doc_dir, &file)));
    }
    let method_text =
        std::fs::read_to_string(&method).with_context(|| format!("read {}", method.display()))?;
    let mut relay = report::relay_section(&groups, &links);
    if let Some(notes) = notes {
        relay
            .push_str(&std::fs::read_to_string(&notes).with_context(|| format!("read {}", notes.display()))?);
    }
    // Each section is replaced only when this session measured it, so a webhooks-only report keeps the
    // relay figures (and their method) of an earlier session, and the other way round.
    let has_relay = results.iter().any(|r| r.mode != Mode::Webhooks);
    let mut sections = Vec::new();
    if has_relay {
        sections.push(("Method", method_text.clone()));
        sections.push(("Relay, idle memory and churn", relay));
    }
    if let Some(webhooks) = report::webhooks_section(&groups) {
        if has_relay {
            // The report's own method covers its webhook runs: an earlier webhooks-only method goes.
            sections.push(("Method of the webhook runs", String::new()));
        } else {
            let method = method_text.replacen("## Method", "## Method of the webhook runs", 1);
            sections.push(("Method of the webhook runs", method));
        }
        sections.push(("Webhook ingest", webhooks));
    }
    report::replace_sections(&doc, "Performance", &sections)?;
    println!("wrote {}", doc.display());
    Ok(results.iter().all(|r| r.passed))
}

/// `path` relative to `base` when both are under the current folder (for links inside the repository).
fn relative(base: &Path, path: &Path) -> String {
    let depth = base
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count();
    let mut out = "../".repeat(depth);
    out.push_str(&path.to_string_lossy());
    out
}
