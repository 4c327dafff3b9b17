//! One run of a `webhooks` scenario: the provider sink, agents that accept and check, senders posting signed
//! webhooks (or plain JSON against the axum baseline), and the wait until every accepted webhook reached an
//! agent.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, Duration};

use crate::clients::{Ctx, Phases};
use crate::hooks::Provider;
use crate::report::RunResult;
use crate::run::{join_all, measure_window, start_agents, timeline, wait_clients, window_summary};
use crate::scenario::Scenario;
use crate::senders;
use crate::server::{ProcSample, Server, Target};
use crate::sink::{self, SinkCounts};
use crate::tally::{now_us, Tally};

/// Everything a webhooks run needs from the common set-up.
pub(crate) struct WebhookRun<'a> {
    pub(crate) scenario: &'a Scenario,
    pub(crate) target: Target,
    pub(crate) server: &'a Server,
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) tokens: Vec<String>,
    pub(crate) phases_tx: watch::Sender<Option<Phases>>,
    pub(crate) done_tx: watch::Sender<bool>,
    pub(crate) sink: Option<std::net::TcpListener>,
    pub(crate) before: ProcSample,
    pub(crate) setup_limit: Duration,
}

impl WebhookRun<'_> {
    pub(crate) async fn drive(self) -> anyhow::Result<RunResult> {
        let WebhookRun {
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
        } = self;
        let gateway = target == Target::Gateway;
        let counts = Arc::new(SinkCounts::default());
        let (stop_sink, sink_stopped) = watch::channel(false);
        let mut background = JoinSet::new();
        if let Some(listener) = sink {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            background.spawn(sink::serve_sink(listener, Arc::clone(&counts), sink_stopped));
        }
        let mut total = Tally::default();
        let late_agents = gateway && scenario.webhooks.agents_after_window;
        let (mut agents, mut tokens) = if gateway && !late_agents {
            (start_agents(&ctx, tokens, setup_limit).await, Vec::new())
        } else {
            (JoinSet::new(), tokens)
        };
        let mix = Arc::new(scenario.webhooks.clone());
        let mut senders = JoinSet::new();
        for i in 0..scenario.customers as u32 {
            let provider = if gateway {
                senders::provider_of(&mix, i)
            } else {
                Provider::Json
            };
            senders.spawn(senders::sender(Arc::clone(&ctx), Arc::clone(&mix), provider, i));
        }
        let want = scenario.customers
            + if gateway && !late_agents {
                scenario.agents
            } else {
                0
            };
        wait_clients(&ctx, want, setup_limit).await;
        let phases = timeline(scenario);
        let (at_start, at_stop) = measure_window(&phases_tx, phases, server).await?;
        join_all(
            &mut senders,
            &mut total,
            Duration::from_secs_f64(scenario.drain_secs + 15.0),
        )
        .await;
        if late_agents {
            // Ingest measured; now the agents log in and take the queued conversations with their backlog.
            agents = start_agents(&ctx, std::mem::take(&mut tokens), setup_limit).await;
        }
        if gateway {
            // Every webhook answered 2xx must reach an agent; wait for the stragglers up to the drain limit.
            while ctx.received_total.load(Ordering::Relaxed) < total.sent && now_us() < phases.drain_until_us
            {
                sleep(Duration::from_millis(20)).await;
            }
        }
        done_tx.send(true)?;
        join_all(&mut agents, &mut total, Duration::from_secs(15)).await;
        if gateway {
            // Accepted webhooks that no agent saw (the agents count each message once, first copies only).
            total.lost += total.sent.saturating_sub(total.received);
        }
        let metrics = match server.admin {
            Some(admin) => crate::http::scrape(admin).await.unwrap_or_default(),
            None => Vec::new(),
        };
        stop_sink.send(true)?;
        while let Some(joined) = background.join_next().await {
            if !matches!(joined, Ok(Ok(()))) {
                total.error("provider_sink_failed");
            }
        }
        let unexpected = counts.unexpected.load(Ordering::Relaxed);
        if unexpected > 0 {
            *total
                .errors
                .entry("provider_sink_unexpected_requests".to_owned())
                .or_default() += unexpected;
        }
        let after = server.sample()?;
        let answered = total.answered_in_window;
        let window = scenario.duration_secs;
        let server_summary = window_summary([before, at_start, at_stop, after], window, answered, want);
        let mut result = RunResult::new(
            scenario,
            target,
            &total,
            answered as f64 / window,
            server_summary,
            metrics,
        );
        result.delivered = answered;
        result.provider_callbacks =
            counts.tokens.load(Ordering::Relaxed) + counts.connects.load(Ordering::Relaxed);
        if answered == 0 {
            result
                .violations
                .push("no webhook was answered in the measured window".to_owned());
            result.passed = false;
        }
        Ok(result)
    }
}
