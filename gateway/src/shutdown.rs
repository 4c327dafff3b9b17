//! The one shutdown tree: a root token and a tracker for every task the gateway spawns.
//!
//! Shutdown runs in two phases. `ingress` (a child of `root`) stops the listeners and closes every socket with
//! 1012 so clients reconnect elsewhere; once connections have drained, `root` stops the session bus, so a message
//! that was in flight when the signal came is still acknowledged or refused, never dropped silently.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cancellation tokens and the task tracker of one gateway.
#[derive(Debug, Clone)]
pub struct Shutdown {
    root: CancellationToken,
    ingress: CancellationToken,
    tracker: TaskTracker,
    connections: TaskTracker,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A fresh tree.
    pub fn new() -> Shutdown {
        let root = CancellationToken::new();
        let ingress = root.child_token();
        Shutdown {
            root,
            ingress,
            tracker: TaskTracker::new(),
            connections: TaskTracker::new(),
        }
    }

    /// Cancelled when listeners and sockets must stop.
    pub fn ingress(&self) -> &CancellationToken {
        &self.ingress
    }

    /// Cancelled when everything, the session bus included, must stop.
    pub fn root(&self) -> &CancellationToken {
        &self.root
    }

    /// Spawns a background task that belongs to the tree.
    #[allow(clippy::disallowed_methods)]
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Wraps a connection's future so shutdown can wait for it.
    pub fn track_connection<F: Future>(&self, connection: F) -> impl Future<Output = F::Output> {
        self.connections.track_future(connection)
    }

    /// Starts the first phase: stop accepting, close sockets.
    pub fn begin(&self) {
        self.ingress.cancel();
    }

    /// Waits for every connection, then stops the rest and waits for it, all within `grace`.
    /// Returns `false` when the grace period ran out first.
    pub async fn drain(&self, grace: std::time::Duration) -> bool {
        self.ingress.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        self.connections.close();
        let connections_done = tokio::time::timeout_at(deadline, self.connections.wait())
            .await
            .is_ok();
        self.root.cancel();
        self.tracker.close();
        let tasks_done = tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_ok();
        connections_done && tasks_done
    }
}

/// Runs `tick` now and then every `every` until `stop` is cancelled: the loop of each periodic chore on the
/// shutdown tree (the embedded store's retention sweep, the metrics recorder's upkeep). A tick that runs late
/// delays the next one rather than bunching them.
pub async fn every_until_stopped(
    every: std::time::Duration,
    stop: CancellationToken,
    mut tick: impl FnMut(),
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => tick(),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("sigint received, shutting down"),
        () = terminate => tracing::info!("sigterm received, shutting down"),
    }
}
