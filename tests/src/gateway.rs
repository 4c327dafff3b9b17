use std::collections::BTreeMap;
use std::net::SocketAddr;

use std::sync::atomic::{AtomicU64, Ordering};

use omnigate_config::{AgentConfig, Config, StoreBackend};
use omnigate_gateway::shutdown::Shutdown;
use omnigate_gateway::Gateway;
use tokio::task::JoinHandle;

use crate::RedisServer;

static NEXT_PREFIX: AtomicU64 = AtomicU64::new(0);

/// A gateway running in this process on free loopback ports, with the demo configuration unless changed.
pub struct TestGateway {
    /// Public listener.
    pub public: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// The session bus, to look at what it holds in memory.
    pub bus: omnigate_gateway::bus::Bus,
    shutdown: Shutdown,
    tokens: BTreeMap<String, String>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The demo configuration on port 0, logs silent unless `TEST_LOG=1`.
pub fn test_config() -> Config {
    let env = BTreeMap::from([
        (
            "OMNIGATE_SERVER__PUBLIC_ADDR".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        ("OMNIGATE_SERVER__ADMIN_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
    ]);
    omnigate_config::load(None, &env).expect("demo configuration")
}

/// `count` agents named `agent-0..`, each able to take `capacity` web chats.
pub fn agents(count: usize, capacity: u32) -> Vec<AgentConfig> {
    (0..count)
        .map(|i| AgentConfig {
            id: format!("agent-{i}"),
            name: format!("Agent {i}"),
            skills: BTreeMap::new(),
            capacity: BTreeMap::from([("web".to_owned(), capacity)]),
            max_total: capacity,
            auto_accept: false,
        })
        .collect()
}

impl TestGateway {
    /// Starts with the demo configuration.
    pub async fn spawn() -> TestGateway {
        TestGateway::spawn_with(|_| {}).await
    }

    /// Starts on the Redis backend against `redis`, under a key prefix of its own, with a 500 ms command
    /// timeout so fault tests run quickly; `change` may alter the configuration further.
    pub async fn spawn_with_redis(redis: &RedisServer, change: impl FnOnce(&mut Config)) -> TestGateway {
        TestGateway::spawn_with_redis_url(redis.url(), change).await
    }

    /// As [`TestGateway::spawn_with_redis`], on the Redis at `url` (e.g. a [`crate::RedisGate`] in front of
    /// one).
    pub async fn spawn_with_redis_url(url: String, change: impl FnOnce(&mut Config)) -> TestGateway {
        let n = NEXT_PREFIX.fetch_add(1, Ordering::Relaxed);
        TestGateway::spawn_with(move |config| {
            config.store.backend = StoreBackend::Redis;
            config.store.redis_url = url;
            config.store.key_prefix = format!("t{}-{n}:", std::process::id());
            config.store.command_timeout_ms = 500;
            change(config);
        })
        .await
    }

    /// Starts on the Redis backend under the key prefix `prefix`, as [`TestGateway::spawn_with_redis`] does
    /// under a fresh one: a second gateway on the same prefix is the first one restarted.
    pub async fn spawn_with_redis_prefix(
        redis: &RedisServer,
        prefix: &str,
        change: impl FnOnce(&mut Config),
    ) -> TestGateway {
        let url = redis.url();
        let prefix = prefix.to_owned();
        TestGateway::spawn_with(move |config| {
            config.store.backend = StoreBackend::Redis;
            config.store.redis_url = url;
            config.store.key_prefix = prefix;
            config.store.command_timeout_ms = 500;
            change(config);
        })
        .await
    }

    /// A key prefix no other gateway in this test process uses, for [`TestGateway::spawn_with_redis_prefix`].
    pub fn fresh_prefix() -> String {
        let n = NEXT_PREFIX.fetch_add(1, Ordering::Relaxed);
        format!("t{}-{n}:", std::process::id())
    }

    /// Starts with the demo configuration changed by `change`.
    pub async fn spawn_with(change: impl FnOnce(&mut Config)) -> TestGateway {
        if std::env::var_os("TEST_LOG").is_some() {
            let config = test_config();
            omnigate_gateway::telemetry::init_logging(&config);
        }
        let mut config = test_config();
        change(&mut config);
        config.validate().expect("test configuration is valid");
        let agent_ids: Vec<String> = config.agents.iter().map(|a| a.id.clone()).collect();
        let gateway = Gateway::build(config).await.expect("gateway builds");
        let tokens = agent_ids
            .into_iter()
            .map(|id| (id.clone(), gateway.agent_token(&id)))
            .collect();
        let public = gateway.public_addr();
        let admin = gateway.admin_addr();
        let shutdown = gateway.shutdown();
        let bus = gateway.bus();
        #[allow(clippy::disallowed_methods)]
        // the harness runs the gateway as a whole; it is not one of its tasks
        let task = tokio::spawn(gateway.run_until_stopped(std::future::pending()));
        TestGateway {
            public,
            admin,
            bus,
            shutdown,
            tokens,
            task: Some(task),
        }
    }

    /// A valid token for a configured agent.
    pub fn agent_token(&self, agent: &str) -> String {
        self.tokens
            .get(agent)
            .cloned()
            .unwrap_or_else(|| panic!("no agent {agent} configured"))
    }

    /// `ws://…/path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.public)
    }

    /// Starts a graceful shutdown and waits for the gateway to finish.
    pub async fn stop(mut self) {
        self.shutdown.begin();
        if let Some(task) = self.task.take() {
            task.await.expect("gateway task").expect("gateway ran");
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.root().cancel();
    }
}
