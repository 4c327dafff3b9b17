//! [`Gateway`]: build (binds, fails fast), then run until a signal arrives.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use omnigate_config::{Config, ExposeSecret, Mode, StoreBackend};
use omnigate_router::{AgentSpec, Router};
use tokio::net::TcpListener;

use crate::app::{self, AppRegistry};
use crate::auth::{Claims, Role, TokenAuthority};
use crate::bus::{Bus, BusSettings, ChannelOutbound};
use crate::channels::{self, ChannelParts};
use crate::clock::unix_ms;
use crate::customers::Profiles;
use crate::http::{admin_app, public_app, AppState, Settings};
use crate::shutdown::Shutdown;
use crate::store::{sweep_until_stopped, ContextStore, MemoryStore, RedisSettings, RedisStore, Retention};
use crate::telemetry;

/// A built gateway: listeners bound, session bus running, not yet serving.
#[derive(Debug)]
pub struct Gateway {
    public: TcpListener,
    admin: TcpListener,
    public_addr: SocketAddr,
    admin_addr: SocketAddr,
    state: AppState,
    shutdown: Shutdown,
    grace: Duration,
    development: bool,
    agents: Vec<String>,
    widget_keys: Vec<String>,
    agent_token_ttl_secs: u64,
}

impl Gateway {
    /// Builds everything and binds both listeners (port 0 picks a free port).
    ///
    /// # Errors
    /// A listener cannot be bound, the store cannot be opened, or the routing configuration is unusable.
    pub async fn build(config: Config) -> anyhow::Result<Gateway> {
        let retention = Retention::from_config(&config.retention);
        let mut memory = None;
        let store: Arc<dyn ContextStore> = match config.store.backend {
            StoreBackend::Memory => {
                let store = Arc::new(MemoryStore::with_retention(retention));
                memory = Some(Arc::clone(&store));
                store
            }
            StoreBackend::Redis => Arc::new(
                RedisStore::connect(
                    RedisSettings::from_config(&config.store).with_retention(&config.retention),
                )
                .await
                .context("store.backend = \"redis\": redis must be reachable at start")?,
            ),
        };
        let router = Router::new(&config.routing).context("routing configuration")?;
        let agents = config
            .agents
            .iter()
            .map(|a| {
                let name = if a.name.is_empty() {
                    a.id.clone()
                } else {
                    a.name.clone()
                };
                Ok((a.id.clone(), name, AgentSpec::from_config(a)?))
            })
            .collect::<Result<Vec<_>, omnigate_router::RouterError>>()
            .context("agent configuration")?;
        let public = TcpListener::bind(config.server.public_addr)
            .await
            .with_context(|| format!("cannot bind the public listener on {}", config.server.public_addr))?;
        let admin = TcpListener::bind(config.server.admin_addr)
            .await
            .with_context(|| format!("cannot bind the admin listener on {}", config.server.admin_addr))?;
        let public_addr = public.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let base_url = if config.server.public_base_url.is_empty() {
            format!("http://{public_addr}")
        } else {
            config.server.public_base_url.clone()
        };
        let metrics = telemetry::prometheus();
        let shutdown = Shutdown::new();
        shutdown.spawn(telemetry::upkeep_until_stopped(
            metrics,
            telemetry::UPKEEP_EVERY,
            shutdown.root().clone(),
        ));
        if let Some(memory) = memory {
            let every = Duration::from_secs(config.retention.sweep_interval_secs);
            shutdown.spawn(sweep_until_stopped(memory, every, shutdown.root().clone()));
        }
        let (outbox_handle, outbox) = channels::outbox(Arc::clone(&store));
        let has_channels = !config.channels.wechat.is_empty()
            || !config.channels.twilio.is_empty()
            || !config.channels.sms_uplinks.is_empty()
            || !config.channels.wecom.is_empty()
            || config.channels.cti.is_some();
        let outbound: Option<Arc<dyn ChannelOutbound>> = has_channels.then(|| Arc::new(outbox_handle) as _);
        let apps = AppRegistry::from_config(&config.channels.app).context("mobile app configuration")?;
        let push = config
            .channels
            .push
            .as_ref()
            .map(|push| app::push::start(push, Arc::clone(&store), &shutdown))
            .transpose()
            .context("push webhook")?;
        let settings = BusSettings {
            reopen_window_ms: config.conversations.reopen_window_secs * 1000,
            default_queue: config.routing.default_queue.clone(),
            agents: agents.clone(),
            outbound,
            push,
            position_message_thresholds: config.routing.position_message_thresholds.clone(),
            position_message: config.routing.position_message.clone(),
            profiles: Arc::new(Profiles::from_config(&config.customers).context("customers configuration")?),
            evict_after_ms: (config
                .conversations
                .reopen_window_secs
                .max(config.routing.wrap_up_secs))
            .saturating_mul(1000),
            linked_preferred_agent_ms: config.conversations.linked_preferred_agent_secs * 1000,
        };
        let bus = Bus::start(settings, router, Arc::clone(&store), &shutdown);
        let tokens = TokenAuthority::new(&config.auth.jwt_secret);
        let hub = if has_channels {
            let built = channels::build(ChannelParts {
                config: &config.channels,
                bus: bus.clone(),
                store: Arc::clone(&store),
                outbox,
                shutdown: &shutdown,
                public_base_url: base_url.clone(),
                tokens: tokens.clone(),
            })
            .context("channel connectors")?;
            Some(built.hub)
        } else {
            None
        };
        let mut state = AppState::new(
            bus,
            store,
            tokens,
            Settings::from_config(&config, &base_url),
            shutdown.clone(),
        );
        state.channels = hub;
        state.apps = Arc::new(apps);
        Ok(Gateway {
            public,
            admin,
            public_addr,
            admin_addr,
            state,
            shutdown,
            grace: Duration::from_millis(config.server.shutdown_grace_ms),
            development: config.mode == Mode::Development
                && !config.auth.jwt_secret.expose_secret().is_empty(),
            agents: agents.into_iter().map(|(id, _, _)| id).collect(),
            widget_keys: config.webchat.widgets.iter().map(|w| w.key.clone()).collect(),
            agent_token_ttl_secs: config.auth.agent_token_ttl_secs,
        })
    }

    /// The public listener's address.
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The session bus (tests look at what it holds in memory).
    #[cfg(feature = "test-util")]
    pub fn bus(&self) -> crate::bus::Bus {
        self.state.bus.clone()
    }

    /// The shutdown tree; `begin()` on it stops the gateway like a signal would.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Mints a token for a configured agent, as `omnigate token --agent ID` does.
    pub fn agent_token(&self, agent: &str) -> String {
        mint_agent_token(&self.state.tokens, agent, self.agent_token_ttl_secs)
    }

    /// Logs where the gateway listens; in development also how to connect, agent tokens included.
    pub fn log_startup(&self) {
        tracing::info!(public = %self.public_addr, admin = %self.admin_addr, "omnigate listening");
        if !self.development {
            return;
        }
        for key in &self.widget_keys {
            tracing::info!(
                "customer: POST http://{}/chat/v1/sessions with {{\"widget_key\":\"{key}\"}}, then open the ws_url it returns",
                self.public_addr
            );
        }
        for agent in &self.agents {
            tracing::info!(agent = %agent, token = %self.agent_token(agent), "agent: connect to ws://{}/agent/v1/ws and send hello with this token", self.public_addr);
        }
    }

    /// Serves until `signal` resolves (or the shutdown tree is started), then drains: stop accepting, close
    /// sockets with 1012, wait for them and the bus within `shutdown_grace_ms`.
    ///
    /// # Errors
    /// Never for a clean stop; a listener failure is logged.
    pub async fn run_until_stopped(self, signal: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let ingress = self.shutdown.ingress().clone();
        let root = self.shutdown.root().clone();
        // Small frames must leave at once: without TCP_NODELAY the second write of a message waits for the
        // peer's delayed ACK (about 40 ms on Linux), which dominated relay latency.
        let public_listener = self.public.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::warn!(%error, "cannot set TCP_NODELAY");
            }
        });
        let public = axum::serve(
            public_listener,
            public_app(self.state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(ingress.clone().cancelled_owned());
        let admin = axum::serve(self.admin, admin_app(self.state.clone()))
            .with_graceful_shutdown(root.cancelled_owned());
        self.shutdown.spawn(async move {
            if let Err(error) = public.await {
                tracing::error!(%error, "public listener failed");
            }
        });
        self.shutdown.spawn(async move {
            if let Err(error) = admin.await {
                tracing::error!(%error, "admin listener failed");
            }
        });
        tokio::select! {
            () = signal => {}
            () = ingress.cancelled() => {}
        }
        tracing::info!(grace_ms = self.grace.as_millis() as u64, "draining");
        if self.shutdown.drain(self.grace).await {
            tracing::info!("stopped cleanly");
        } else {
            tracing::warn!("grace period ran out; stopping with work still in flight");
        }
        Ok(())
    }
}

/// Mints an agent token valid for `ttl_secs`.
pub fn mint_agent_token(tokens: &TokenAuthority, agent: &str, ttl_secs: u64) -> String {
    let now = unix_ms() / 1000;
    tokens.sign(&Claims {
        sub: agent.to_owned(),
        role: Role::Agent,
        vid: None,
        wk: None,
        app: None,
        iat: now,
        exp: now + ttl_secs,
    })
}

/// Tokens for configured agents, in the order asked (the `omnigate token` command).
///
/// # Errors
/// When an id is not a configured agent.
pub fn mint_agent_tokens(config: &omnigate_config::Config, agents: &[String]) -> anyhow::Result<Vec<String>> {
    let known: std::collections::HashSet<&str> = config.agents.iter().map(|a| a.id.as_str()).collect();
    let tokens = TokenAuthority::new(&config.auth.jwt_secret);
    agents
        .iter()
        .map(|agent| {
            anyhow::ensure!(
                known.contains(agent.as_str()),
                "no agent {agent:?} in the configuration"
            );
            Ok(mint_agent_token(&tokens, agent, config.auth.agent_token_ttl_secs))
        })
        .collect()
}
