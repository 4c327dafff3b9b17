//! `RedisStore` against a bare redis-rs client sending the same commands on one multiplexed connection
//! (issue 5's benchmark; figures in `docs/performance.md`).
//!
//! Two mixes: `Append`, one relayed message as the bus stores it (an append with an idempotency key), and
//! `AppendAndReplay`, the same plus one replay of the last ten events in the customer's view. The bare client sends the same two EVALSHA
//! commands with hand-formatted arguments and leaves the replies undecoded: the floor for this command
//! mix. Rounds alternate between the two, in the same process against the same `redis-server` (started
//! here on a free loopback port, without persistence), so machine noise hits both alike.
//!
//! Run: `cargo bench -p omnigate-gateway --features test-util --bench redis_store`
//! (`-- --quick` for a short smoke run).

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use omnigate_connectors::model::{Content, ConversationId, CustomerId, MessageId};
use omnigate_gateway::store::redis_scripts::{APPEND_LUA, PAGE_LUA};
use omnigate_gateway::store::{
    Actor, ContextStore, EventKind, NewEvent, RedisSettings, RedisStore, StoredEvent, View,
};
use redis::aio::ConnectionManager;
use redis::Script;
use tokio::time::Instant;

/// Callers in flight at once (web chats relaying concurrently through one gateway).
const CONCURRENCY: usize = 16;
/// Operations per caller per round.
const PER_CALLER: usize = 200;
/// Text of every message (a typical chat line).
const TEXT: &str = "I was charged twice for the same card payment yesterday, can you check?";

/// What one operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    /// One append: the hot path, what a relayed message costs.
    Append,
    /// One append, then one replay of the last ten events in the customer's view.
    AppendAndReplay,
}

impl Mix {
    fn replays(self) -> bool {
        self == Mix::AppendAndReplay
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.0.kill());
        drop(self.0.wait());
    }
}

fn start_redis() -> (Server, String) {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (apt-get install -y redis-server)");
    let server = Server(child);
    for _ in 0..500 {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return (server, format!("redis://127.0.0.1:{port}/0"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("redis-server did not start on {port}");
}

fn message(customer: &CustomerId, i: usize) -> NewEvent {
    NewEvent {
        at_ms: 1_700_000_000_000 + i as u64,
        actor: Actor::Customer { id: customer.clone() },
        kind: EventKind::Message {
            message_id: MessageId::generate(),
            client_msg_id: format!("m-{i}"),
            content: Content::Text {
                text: TEXT.to_owned(),
            },
            via: None,
        },
        idempotency_key: Some(format!("customer:{customer}:m-{i}")),
    }
}

async fn store_caller(store: Arc<RedisStore>, mix: Mix, ops: usize) {
    let conversation = ConversationId::generate();
    let customer = CustomerId::generate();
    for i in 0..ops {
        let appended = store
            .append(&conversation, message(&customer, i))
            .await
            .expect("append");
        if !mix.replays() {
            continue;
        }
        let after = appended.event().customer_seq.unwrap_or(0).saturating_sub(10);
        let page = store
            .events_after(&conversation, View::Customer, after, 10)
            .await
            .expect("page");
        assert!(!page.events.is_empty());
    }
}

async fn bare_caller(conn: ConnectionManager, append: Arc<Script>, page: Arc<Script>, mix: Mix, ops: usize) {
    let mut conn = conn;
    let conversation = ConversationId::generate();
    let customer = CustomerId::generate();
    for i in 0..ops {
        // Formatted per message, as a client serving many conversations must.
        let keys =
            ["log", "cidx", "idem", "closed"].map(|part| format!("bare:conv:{{{conversation}}}:{part}"));
        // The same bytes the store sends, formatted by hand.
        let body = format!(
            r#""at_ms":{},"actor":{{"type":"customer","id":"{customer}"}},"kind":{{"type":"message.created","message_id":"{}","client_msg_id":"m-{i}","content":{{"type":"text","text":"{TEXT}"}}}}}}"#,
            1_700_000_000_000 + i as u64,
            MessageId::generate(),
        );
        let (_, _, _, _): (u8, u64, u64, Vec<u8>) = append
            .key(&keys[0])
            .key(&keys[1])
            .key(&keys[2])
            .key(&keys[3])
            .arg(format!("customer:{customer}:m-{i}"))
            .arg("1")
            .arg(body)
            .arg(0)
            .invoke_async(&mut conn)
            .await
            .expect("bare append");
        if !mix.replays() {
            continue;
        }
        let after = i.saturating_sub(9);
        let events: Vec<Vec<u8>> = page
            .key(&keys[0])
            .key(&keys[1])
            .arg("customer")
            .arg(after)
            .arg(10)
            .invoke_async(&mut conn)
            .await
            .expect("bare page");
        assert!(events.len() > 1);
    }
}

/// Operations per second of one round of `CONCURRENCY` callers.
async fn round<F>(caller: impl Fn() -> F) -> f64
where
    F: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    join_all((0..CONCURRENCY).map(|_| caller())).await;
    (CONCURRENCY * PER_CALLER) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 15 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (_server, url) = start_redis();
        let store = Arc::new(
            RedisStore::connect(RedisSettings {
                url: url.clone(),
                key_prefix: "store:".to_owned(),
                connect_timeout: Duration::from_secs(2),
                command_timeout: Duration::from_secs(2),
                conversation_ttl_secs: 0,
                identity_ttl_secs: 0,
                retention: Default::default(),
            })
            .await
            .expect("store connects"),
        );
        let client = redis::Client::open(url.as_str()).expect("url");
        let bare = ConnectionManager::new(client).await.expect("bare connects");
        let append = Arc::new(Script::new(APPEND_LUA));
        let page = Arc::new(Script::new(PAGE_LUA));
        let mut results = Vec::new();
        for mix in [Mix::Append, Mix::AppendAndReplay] {
            let run_bare = || {
                bare_caller(
                    bare.clone(),
                    Arc::clone(&append),
                    Arc::clone(&page),
                    mix,
                    PER_CALLER,
                )
            };
            let run_store = || store_caller(Arc::clone(&store), mix, PER_CALLER);
            // Warm up both (script cache, allocator, connections).
            round(run_bare).await;
            round(run_store).await;
            let (mut bare_rates, mut store_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for r in 0..rounds {
                // Alternate which goes first, so drift and warm caches favour neither.
                let (bare_rate, store_rate) = if r % 2 == 0 {
                    let bare_rate = round(run_bare).await;
                    (bare_rate, round(run_store).await)
                } else {
                    let store_rate = round(run_store).await;
                    (round(run_bare).await, store_rate)
                };
                bare_rates.push(bare_rate);
                store_rates.push(store_rate);
                ratios.push(store_rate / bare_rate);
            }
            results.push((mix, median(bare_rates), median(store_rates), median(ratios)));
        }
        let mut check = bare.clone();
        // The bare client wrote what the store writes: its events decode as stored events.
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("bare:conv:*:log")
            .query_async(&mut check)
            .await
            .expect("keys");
        let raw: Vec<u8> = redis::cmd("LINDEX")
            .arg(&keys[0])
            .arg(0)
            .query_async(&mut check)
            .await
            .expect("lindex");
        serde_json::from_slice::<StoredEvent>(&raw)
            .expect("the bare client's events decode like the store's");

        println!("redis_store: {rounds} rounds x {CONCURRENCY} callers x {PER_CALLER} ops, medians");
        println!(
            "{:<16} {:>11} {:>12} {:>22}",
            "mix", "bare ops/s", "store ops/s", "store/bare (per round)"
        );
        for (mix, bare_rate, store_rate, ratio) in results {
            println!(
                "{:<16} {bare_rate:>11.0} {store_rate:>12.0} {ratio:>22.2}",
                format!("{mix:?}")
            );
        }
    });
}
