//! Routing benchmarks (issue 3); the figures and the command go to docs/performance.md, "Router".
//!
//! - `route_one_task/5000_agents_100_queues`: one `TaskArrived` that is offered at once (only that call is
//!   timed; the task is then cancelled, untimed, to keep the state steady);
//! - `capacity_freed/20000_waiting`: one `TaskCompleted` whose freed slot takes the best of 20,000 waiting
//!   tasks (only that call is timed; the offer is accepted and a new task queued, untimed);
//! - `shift/3000_tasks_per_sec`: the shift simulation of `tests/shift.rs` at 3,000 tasks/s for 10 simulated
//!   seconds; its time over 10 s is the share of one core.

// Criterion runs outside any tokio runtime; the wall clock of the benchmark is what we measure.
#![allow(clippy::disallowed_types)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use omnigate_config::{QueueConfig, Routing};
use omnigate_router::{
    AgentId, AgentSpec, Decision, Event, Media, Millis, Presence, Router, TaskId, TaskSpec,
};

#[path = "../tests/support/shift.rs"]
mod shift;

const SKILLS: usize = 20;
const QUEUES: usize = 100;
const AGENTS: usize = 5_000;

struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// 100 queues over 20 skills (60 need one skill, 40 need two), 5,000 agents with four skills each.
fn big_router(capacity: u32) -> Router {
    let queues = (0..QUEUES)
        .map(|q| {
            let mut cfg = QueueConfig::named(&format!("q{q}"));
            cfg.skills.insert(format!("s{}", q % SKILLS), 2);
            if q >= 60 {
                cfg.skills.insert(format!("s{}", (q * 7 + 3) % SKILLS), 1);
            }
            cfg.priority = (q % 3) as u8;
            cfg
        })
        .collect();
    let mut router = Router::new(&Routing {
        queues,
        default_queue: "q0".to_owned(),
        ..Routing::default()
    })
    .expect("valid routing");
    let mut rng = Lcg(42);
    for i in 0..AGENTS {
        let id = AgentId(format!("agent{i:05}"));
        let mut spec = AgentSpec::new(id.clone())
            .with_capacity(Media::Web, capacity)
            .with_max_total(capacity);
        for _ in 0..4 {
            spec = spec.with_skill(&format!("s{}", rng.below(SKILLS)), 1 + rng.below(5) as u8);
        }
        let t = Millis(i as u64);
        router.handle(t, Event::AgentRegistered(spec)).expect("register");
        router
            .handle(t, Event::AgentConnected(id.clone()))
            .expect("connect");
        router
            .handle(
                t,
                Event::PresenceChanged {
                    agent: id,
                    presence: Presence::Available,
                },
            )
            .expect("presence");
    }
    router
}

/// A queue whose skill most agents have at level 2 or more, so the task is routable.
fn task(n: u64, rng: &mut Lcg, now: Millis) -> TaskSpec {
    TaskSpec::new(
        TaskId(format!("t{n}")),
        &format!("q{}", rng.below(60)),
        Media::Web,
        now,
    )
    .with_priority(rng.below(3) as u8)
}

fn route_one_task(c: &mut Criterion) {
    let mut router = big_router(3);
    let mut rng = Lcg(7);
    let mut now = Millis(10_000);
    // Half of all capacity busy, so pools hold agents at every occupancy.
    for n in 0..(AGENTS as u64 * 3 / 2) {
        let decisions = router
            .handle(now, Event::TaskArrived(task(n, &mut rng, now)))
            .expect("arrive");
        for d in decisions {
            if let Decision::Offer { task, agent, .. } = d {
                router
                    .handle(now, Event::OfferAccepted { task, agent })
                    .expect("accept");
            }
        }
    }
    let mut n = 1_000_000u64;
    let mut offered = 0u64;
    c.bench_function("route_one_task/5000_agents_100_queues", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                now = now.plus_ms(1);
                let spec = task(n, &mut rng, now);
                let id = spec.id.clone();
                let start = Instant::now();
                let decisions = router.handle(now, Event::TaskArrived(spec)).expect("arrive");
                total += start.elapsed();
                offered += decisions.len() as u64;
                black_box(decisions);
                router.handle(now, Event::TaskCancelled(id)).expect("cancel");
            }
            total
        })
    });
    assert!(offered > 0, "the benchmark must route tasks");
}

fn capacity_freed(c: &mut Criterion) {
    let mut router = big_router(1);
    let mut rng = Lcg(11);
    let mut now = Millis(10_000);
    let mut assigned: VecDeque<TaskId> = VecDeque::new();
    let mut n = 0u64;
    // Fill every agent, then queue 20,000 more.
    while n as usize - assigned.len() < 20_000 {
        n += 1;
        now = now.plus_ms(1);
        let decisions = router
            .handle(now, Event::TaskArrived(task(n, &mut rng, now)))
            .expect("arrive");
        for d in decisions {
            if let Decision::Offer { task, agent, .. } = d {
                router
                    .handle(
                        now,
                        Event::OfferAccepted {
                            task: task.clone(),
                            agent,
                        },
                    )
                    .expect("accept");
                assigned.push_back(task);
            }
        }
    }
    let mut offers = 0u64;
    c.bench_function("capacity_freed/20000_waiting", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                now = now.plus_ms(1);
                let done = assigned.pop_front().expect("an assigned task");
                let start = Instant::now();
                let decisions = router.handle(now, Event::TaskCompleted(done)).expect("complete");
                total += start.elapsed();
                for d in decisions {
                    if let Decision::Offer { task, agent, .. } = d {
                        offers += 1;
                        router
                            .handle(
                                now,
                                Event::OfferAccepted {
                                    task: task.clone(),
                                    agent,
                                },
                            )
                            .expect("accept");
                        assigned.push_back(task);
                    }
                }
                n += 1;
                router
                    .handle(now, Event::TaskArrived(task(n, &mut rng, now)))
                    .expect("arrive");
            }
            total
        })
    });
    assert!(offers > 0, "freed capacity must take waiting tasks");
}

fn shift_at_3000_per_sec(c: &mut Criterion) {
    let agents = 300;
    let rate = 3_000.0;
    let cfg = shift::ShiftConfig {
        agents,
        skills: 4,
        arrivals_per_sec: rate,
        mean_handle_ms: 0.85 * agents as f64 / rate * 1000.0,
        answer_delay_ms: 1,
        reject_rate: 0.03,
        duration_ms: 10_000,
        seed: 3,
        digest: false,
    };
    let mut group = c.benchmark_group("shift");
    group.sample_size(10);
    let mut tasks = 0;
    group.bench_function("3000_tasks_per_sec_10s_simulated", |b| {
        b.iter(|| {
            let report = shift::run(&cfg);
            tasks = report.tasks;
            black_box(report)
        })
    });
    group.finish();
    eprintln!("shift: {tasks} tasks over 10 simulated seconds; CPU share of one core = median time / 10 s");
}

criterion_group!(benches, route_one_task, capacity_freed, shift_at_3000_per_sec);
criterion_main!(benches);
