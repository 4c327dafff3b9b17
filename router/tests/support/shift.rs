//! A seeded discrete-event simulation of a contact-center shift, driven only through the router's public
//! API. Shared by `tests/shift.rs` (fairness) and `benches/routing.rs` (CPU share).

// Shared by a test and a bench; each uses part of it.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use omnigate_config::{QueueConfig, Routing};
use omnigate_router::{
    AgentId, AgentSpec, Decision, Event, Media, Millis, Presence, Router, TaskId, TaskSpec,
};

/// Shape of a simulated shift.
#[derive(Debug, Clone)]
pub(crate) struct ShiftConfig {
    /// Agents, split evenly into `skills` groups; group g has skills g and g+1 (mod `skills`).
    pub(crate) agents: usize,
    /// Distinct skills; one queue per skill.
    pub(crate) skills: usize,
    /// Tasks arriving per second (Poisson).
    pub(crate) arrivals_per_sec: f64,
    /// Mean handle time (exponential).
    pub(crate) mean_handle_ms: f64,
    /// Delay before an agent answers an offer.
    pub(crate) answer_delay_ms: u64,
    /// Share of offers rejected.
    pub(crate) reject_rate: f64,
    /// Simulated time.
    pub(crate) duration_ms: u64,
    /// Random seed.
    pub(crate) seed: u64,
    /// Fold every decision into `ShiftReport::digest` (costs a `format!` per decision).
    pub(crate) digest: bool,
}

impl ShiftConfig {
    /// The shift: 8 hours, 300 agents, 4 skills, about 85% occupancy.
    pub(crate) fn eight_hours() -> ShiftConfig {
        let agents = 300;
        let mean_handle_ms = 240_000.0;
        ShiftConfig {
            agents,
            skills: 4,
            arrivals_per_sec: 0.85 * agents as f64 / (mean_handle_ms / 1000.0),
            mean_handle_ms,
            answer_delay_ms: 2_000,
            reject_rate: 0.03,
            duration_ms: 8 * 3_600_000,
            seed: 0x0b5e_55ed,
            digest: false,
        }
    }
}

/// What happened during the shift.
#[derive(Debug, Default)]
pub(crate) struct ShiftReport {
    /// Tasks that arrived.
    pub(crate) tasks: u64,
    /// Tasks assigned to an agent.
    pub(crate) assigned: u64,
    /// Tasks that ended without an agent.
    pub(crate) ended: u64,
    /// Calls to `Router::handle`.
    pub(crate) events: u64,
    /// Per agent: tasks assigned and handle time assigned (ms).
    pub(crate) work: BTreeMap<AgentId, (u64, u64)>,
    /// Skill group of each agent.
    pub(crate) group: BTreeMap<AgentId, usize>,
    /// Share of agent time spent on assigned work.
    pub(crate) occupancy: f64,
    /// Mean wait from arrival to assignment (ms).
    pub(crate) mean_wait_ms: f64,
    /// FNV-1a over the debug form of every decision with its time, when asked for.
    pub(crate) digest: u64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn exp(&mut self, mean: f64) -> f64 {
        -self.unit().ln() * mean
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Sim {
    Arrive,
    Answer { task: u64, agent: usize },
    Complete { task: u64 },
    Back { agent: usize },
}

/// The router configuration of the simulation: one queue per skill.
pub(crate) fn routing(skills: usize) -> Routing {
    Routing {
        queues: (0..skills)
            .map(|k| {
                let mut q = QueueConfig::named(&format!("q{k}"));
                q.skills = BTreeMap::from([(format!("s{k}"), 2)]);
                q
            })
            .collect(),
        default_queue: "q0".to_owned(),
        ..Routing::default()
    }
}

/// Runs the shift and reports the work each agent was given.
///
/// # Panics
/// If the router refuses an event the simulation sends in good faith: that is a router bug.
pub(crate) fn run(cfg: &ShiftConfig) -> ShiftReport {
    let mut router = Router::new(&routing(cfg.skills)).expect("valid routing");
    let mut rng = Rng(cfg.seed | 1);
    let mut report = ShiftReport {
        digest: 0xcbf2_9ce4_8422_2325,
        ..ShiftReport::default()
    };
    let ids: Vec<AgentId> = (0..cfg.agents).map(|i| AgentId(format!("agent{i:04}"))).collect();
    let index: HashMap<AgentId, usize> = ids.iter().cloned().enumerate().map(|(i, a)| (a, i)).collect();
    let send = |router: &mut Router, now: Millis, event: Event, report: &mut ShiftReport| {
        report.events += 1;
        router
            .handle(now, event)
            .expect("router accepts the simulation's events")
    };
    for (i, id) in ids.iter().enumerate() {
        let group = i % cfg.skills;
        let spec = AgentSpec::new(id.clone())
            .with_skill(&format!("s{group}"), 3)
            .with_skill(&format!("s{}", (group + 1) % cfg.skills), 3)
            .with_capacity(Media::Web, 1)
            .with_max_total(1);
        report.group.insert(id.clone(), group);
        report.work.insert(id.clone(), (0, 0));
        send(&mut router, Millis(0), Event::AgentRegistered(spec), &mut report);
        send(
            &mut router,
            Millis(0),
            Event::AgentConnected(id.clone()),
            &mut report,
        );
        send(
            &mut router,
            Millis(0),
            Event::PresenceChanged {
                agent: id.clone(),
                presence: Presence::Available,
            },
            &mut report,
        );
    }
    let mut events: BinaryHeap<Reverse<(u64, u64, Sim)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |events: &mut BinaryHeap<Reverse<(u64, u64, Sim)>>, at: u64, sim: Sim| {
        seq += 1;
        events.push(Reverse((at, seq, sim)));
    };
    let mean_gap_ms = 1000.0 / cfg.arrivals_per_sec;
    // Arrivals follow their own fractional clock so rates above 1,000/s keep their spacing.
    let mut arrival_clock = rng.exp(mean_gap_ms);
    push(&mut events, arrival_clock as u64, Sim::Arrive);
    let mut next_task = 0u64;
    let mut arrived_at: HashMap<u64, u64> = HashMap::new();
    let mut handle_ms: HashMap<u64, u64> = HashMap::new();
    let mut busy_ms = 0u64;
    let mut waited_ms = 0u64;
    loop {
        let next_sim = events.peek().map(|Reverse((at, _, _))| *at);
        let next_timer = router.next_deadline().map(|m| m.0);
        let (now, decisions) = match (next_sim, next_timer) {
            (None, None) => break,
            (Some(s), t) if t.is_none_or(|t| s < t) => {
                let Some(Reverse((now, _, sim))) = events.pop() else {
                    break;
                };
                let event = match sim {
                    Sim::Arrive => {
                        if now < cfg.duration_ms {
                            arrival_clock += rng.exp(mean_gap_ms);
                            push(&mut events, arrival_clock as u64, Sim::Arrive);
                        } else {
                            continue;
                        }
                        next_task += 1;
                        report.tasks += 1;
                        arrived_at.insert(next_task, now);
                        handle_ms.insert(next_task, rng.exp(cfg.mean_handle_ms).max(1.0) as u64);
                        let queue = format!("q{}", rng.below(cfg.skills));
                        let spec =
                            TaskSpec::new(TaskId(format!("t{next_task}")), &queue, Media::Web, Millis(now))
                                .with_priority(rng.below(3) as u8);
                        Event::TaskArrived(spec)
                    }
                    Sim::Answer { task, agent } => {
                        let (task_id, agent_id) = (TaskId(format!("t{task}")), ids[agent].clone());
                        if rng.unit() < cfg.reject_rate {
                            Event::OfferRejected {
                                task: task_id,
                                agent: agent_id,
                            }
                        } else {
                            Event::OfferAccepted {
                                task: task_id,
                                agent: agent_id,
                            }
                        }
                    }
                    Sim::Complete { task } => Event::TaskCompleted(TaskId(format!("t{task}"))),
                    Sim::Back { agent } => Event::PresenceChanged {
                        agent: ids[agent].clone(),
                        presence: Presence::Available,
                    },
                };
                (now, send(&mut router, Millis(now), event, &mut report))
            }
            (_, Some(t)) => (t, send(&mut router, Millis(t), Event::Tick, &mut report)),
            (Some(_), None) => unreachable!("covered by the arm above"),
        };
        for d in decisions {
            if cfg.digest {
                for byte in format!("{now}:{d:?};").bytes() {
                    report.digest = (report.digest ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
                }
            }
            match d {
                Decision::Offer { task, agent, .. } => {
                    let task: u64 = task.as_str()[1..].parse().expect("sim task id");
                    push(
                        &mut events,
                        now + cfg.answer_delay_ms,
                        Sim::Answer {
                            task,
                            agent: index[&agent],
                        },
                    );
                }
                Decision::Assigned { task, agent } => {
                    let n: u64 = task.as_str()[1..].parse().expect("sim task id");
                    let ms = handle_ms[&n];
                    report.assigned += 1;
                    waited_ms += now - arrived_at[&n];
                    let work = report.work.get_mut(&agent).expect("known agent");
                    work.0 += 1;
                    work.1 += ms;
                    // Only work inside the shift counts towards occupancy.
                    busy_ms += ms.min(cfg.duration_ms.saturating_sub(now));
                    push(&mut events, now + ms, Sim::Complete { task: n });
                }
                Decision::Ended { .. } => report.ended += 1,
                // The agent is told and sets itself available again a little later.
                Decision::AgentNotRoutable { agent, .. } => {
                    push(&mut events, now + 10_000, Sim::Back { agent: index[&agent] });
                }
                _ => {}
            }
        }
    }
    report.occupancy = busy_ms as f64 / (cfg.agents as f64 * cfg.duration_ms as f64);
    report.mean_wait_ms = waited_ms as f64 / report.assigned.max(1) as f64;
    report
}

/// Per skill group, max/min of the handle time assigned to its agents.
pub(crate) fn fairness(report: &ShiftReport) -> Vec<f64> {
    let mut groups: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for (agent, (_, ms)) in &report.work {
        groups.entry(report.group[agent]).or_default().push(*ms);
    }
    groups
        .values()
        .map(|work| {
            let max = *work.iter().max().expect("non-empty group") as f64;
            let min = *work.iter().min().expect("non-empty group") as f64;
            max / min.max(1.0)
        })
        .collect()
}
