//! omnigate-loadtest: drives a running gateway over the network as a black box, next to a bare
//! tokio-tungstenite echo server as the physical baseline (issue 6).
//!
//! It depends on connectors' wire types only, never on the gateway: the gateway is a separate process it
//! starts from the `omnigate` binary with a generated configuration, and measures through procfs.
//!
//! Layout:
//! - `scenario.rs`: seeded TOML scenarios (`loadtest/scenarios/*.toml`)
//! - `server.rs`: the server process (gateway or echo), its configuration, procfs samples
//! - `echo.rs`: the echo server (4 KiB buffers)
//! - `proto.rs`: chat protocol v1 frames as a client sends and reads them
//! - `clients.rs`: customers, agents, echo and idle clients, one task per socket
//! - `tally.rs`: latency histogram and correctness counts
//! - `run.rs`: one run: timeline, samples, result
//! - `report.rs`: JSON, markdown, SVG plots, the multi-run summary for `docs/performance.md`
//! - `hooks.rs`, `senders.rs`, `keepalive.rs`: signed provider webhooks, the tasks that post them on
//!   keep-alive connections (mode `webhooks`)
//! - `sink.rs`: the providers' side the gateway calls back, and the bare axum JSON baseline
//! - `http.rs`, `rng.rs`: the two HTTP calls; a seeded generator

pub mod clients;
pub mod echo;
pub mod hooks;
pub mod http;
pub mod keepalive;
pub mod proto;
pub mod redis;
pub mod report;
pub mod rng;
pub mod run;
mod run_webhooks;
pub mod scenario;
pub mod senders;
pub mod server;
pub mod sink;
pub mod tally;
