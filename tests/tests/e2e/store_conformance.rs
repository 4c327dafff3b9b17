//! The context store's conformance suite against the Redis backend, on a `redis-server` of the test's own
//! (the memory backend runs the same suite in the gateway's unit tests).

use std::sync::Arc;
use std::time::Duration;

use omnigate_gateway::store::{testsuite, ContextStore, RedisSettings, RedisStore, StoreError};
use omnigate_tests::RedisServer;

fn settings(redis: &RedisServer, prefix: &str) -> RedisSettings {
    RedisSettings {
        url: redis.url(),
        key_prefix: prefix.to_owned(),
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(2),
        conversation_ttl_secs: 3600,
        identity_ttl_secs: 3600,
        retention: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_conformance_suite() {
    let redis = RedisServer::start().await;
    let store = RedisStore::connect(settings(&redis, "conformance:"))
        .await
        .expect("connects");
    testsuite::run(Arc::new(store)).await;

    // Every key is under the prefix and expires (TTLs from the settings).
    assert_eq!(redis.command("KEYS og:*"), "*0\r\n", "nothing outside the prefix");
    let keys = redis.command("KEYS conformance:conv:*:log");
    let log_key = keys
        .lines()
        .find(|l| l.starts_with("conformance:conv:{"))
        .unwrap_or_else(|| panic!("no log key in {keys}"))
        .to_owned();
    let ttl = redis.command(&format!("TTL {log_key}"));
    let ttl: i64 = ttl.trim().trim_start_matches(':').parse().expect("integer reply");
    assert!(ttl > 0 && ttl <= 3600, "log TTL {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_prefixes_on_one_server_do_not_see_each_other() {
    let redis = RedisServer::start().await;
    let a = RedisStore::connect(settings(&redis, "a:")).await.expect("a");
    let b = RedisStore::connect(settings(&redis, "b:")).await.expect("b");
    let identity = omnigate_connectors::model::Identity {
        kind: omnigate_connectors::model::IdentityKind::AppUser,
        value: "u-1".to_owned(),
        verified: true,
    };
    let in_a = a.resolve_customer(&identity).await.unwrap();
    let in_b = b.resolve_customer(&identity).await.unwrap();
    assert_ne!(in_a, in_b);
    assert_eq!(a.resolve_customer(&identity).await.unwrap(), in_a);
}

#[tokio::test]
async fn connecting_to_a_dead_port_fails_fast_with_unavailable() {
    let mut redis = RedisServer::start().await;
    redis.stop();
    let started = tokio::time::Instant::now();
    let error = RedisStore::connect(RedisSettings {
        connect_timeout: Duration::from_millis(500),
        ..settings(&redis, "dead:")
    })
    .await
    .expect_err("nothing listens");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_paused_redis_makes_calls_fail_within_the_command_timeout_then_recovers() {
    let redis = RedisServer::start().await;
    let store = RedisStore::connect(RedisSettings {
        command_timeout: Duration::from_millis(200),
        ..settings(&redis, "paused:")
    })
    .await
    .expect("connects");
    store.ping().await.expect("answers");
    redis.pause();
    let started = tokio::time::Instant::now();
    let error = store.ping().await.expect_err("a paused redis does not answer");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "bounded by the command timeout, took {:?}",
        started.elapsed()
    );
    redis.resume();
    omnigate_tests::assert_eventually!(store.ping().await.is_ok(), "the store answers again after resume");
}

#[tokio::test]
async fn a_restarted_redis_is_found_again_without_help() {
    let mut redis = RedisServer::start_persistent().await;
    let store = RedisStore::connect(settings(&redis, "restart:"))
        .await
        .expect("connects");
    store.ping().await.expect("answers");
    redis.stop();
    assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));
    redis.restart().await;
    omnigate_tests::assert_eventually!(store.ping().await.is_ok(), "the store reconnects by itself");
}

#[tokio::test]
async fn a_redis_that_lost_its_data_is_reported_as_corrupt_not_ready() {
    // Without persistence a restart empties Redis: the logs this gateway numbers from are gone, and
    // readiness must say so rather than let appends start again from seq 1 unnoticed.
    let mut redis = RedisServer::start().await;
    let store = RedisStore::connect(settings(&redis, "lost:"))
        .await
        .expect("connects");
    let other = RedisStore::connect(settings(&redis, "lost:"))
        .await
        .expect("a second gateway");
    store.ping().await.expect("answers");
    other.ping().await.expect("a second gateway shares the epoch");
    redis.restart().await;
    omnigate_tests::assert_eventually!(
        matches!(store.ping().await, Err(StoreError::Corrupt(_))),
        "a lost epoch is reported as corrupt once redis answers again"
    );
    let fresh = RedisStore::connect(settings(&redis, "lost:"))
        .await
        .expect("a restarted gateway");
    fresh
        .ping()
        .await
        .expect("a gateway started after the loss is ready");
    assert!(
        matches!(store.ping().await, Err(StoreError::Corrupt(_))),
        "the old gateway stays not ready: its state refers to lost logs"
    );
    assert_eq!(redis.command("FLUSHALL"), "+OK\r\n");
    assert!(
        matches!(fresh.ping().await, Err(StoreError::Corrupt(_))),
        "a flush is a loss too"
    );
}
