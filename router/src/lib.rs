//! The pure routing engine of omnigate.
//!
//! Role: decide which agent is offered which conversation ("task"), given skills, priority, capacity and
//! presence. The gateway feeds [`Event`]s with the current time and executes the returned [`Decision`]s; it
//! calls [`Router::handle`] with [`Event::Tick`] at [`Router::next_deadline`]. Nothing here reads a clock or
//! does IO, so tests and property tests need no runtime.
//!
//! Must never depend on tokio, hyper, redis, `omnigate-connectors` or `omnigate-gateway`.
//!
//! Layout:
//! - `model.rs`: ids, time, task and agent specs, events and decisions
//! - `engine.rs`: the `Router` state machine and its indexes (`engine/tests.rs`: unit tests,
//!   `engine/proptests.rs`: property tests over random event sequences)
//! - `calendar.rs`: business hours and holidays
//! - `hash.rs`: a fast hasher for the router's maps
//! - `error.rs`: `RouterError`
//! - `tests/shift.rs`: seeded 8-hour shift (fairness); `tests/bank_example.rs`: the docs' worked example
//! - `benches/routing.rs`: criterion benchmarks (figures in `docs/performance.md`)
//!
//! The rules are described in `docs/routing.md`.

#![warn(missing_docs)]

mod calendar;
mod engine;
mod error;
mod hash;
mod model;

pub use engine::Router;
pub use error::RouterError;
pub use model::*;
