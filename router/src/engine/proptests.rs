//! Property tests over random event sequences (issue 3, "Tests"): capacity, single assignment, no task
//! lost, no priority inversion, no starvation.

use std::collections::{BTreeMap, HashMap};

use omnigate_config::{QueueConfig, StepConfig, TerminalAction};
use proptest::prelude::*;

use super::*;

const MAX_WAIT_MS: u64 = 240_000;
const WRAP_UP_MS: u64 = 15_000;
/// "loans" shares its agent pool with "general" (same skills, same policy) but has its own priority.
const QUEUES: [&str; 5] = ["general", "cards", "sos", "rr", "loans"];

fn routing() -> Routing {
    let mut cards = QueueConfig::named("cards");
    cards.skills = BTreeMap::from([("cards".to_owned(), 2)]);
    cards.priority = 1;
    cards.parallel_offers = 2;
    cards.no_reply_secs = Some(50);
    cards.steps = vec![
        StepConfig {
            after_secs: 0,
            min_proficiency: Some(4),
            ..StepConfig::default()
        },
        StepConfig {
            after_secs: 20,
            min_proficiency: Some(2),
            relax_optional: Some(true),
            ..StepConfig::default()
        },
        StepConfig {
            after_secs: 60,
            overflow: Some("general".to_owned()),
            ..StepConfig::default()
        },
    ];
    let mut sos = QueueConfig::named("sos");
    sos.emergency = true;
    sos.policy = SelectionPolicy::LeastOccupied;
    sos.max_length = Some(3);
    let mut rr = QueueConfig::named("rr");
    rr.policy = SelectionPolicy::RoundRobin;
    rr.steps = vec![StepConfig {
        after_secs: 150,
        terminal: Some(TerminalAction::Message),
        ..StepConfig::default()
    }];
    Routing {
        offer_timeout_secs: 10,
        offer_timeout_by_media: BTreeMap::from([("voice".to_owned(), 5)]),
        disconnect_grace_secs: 20,
        return_to_agent_secs: 30,
        max_consecutive_misses: 2,
        max_wait_secs: MAX_WAIT_MS / 1000,
        wrap_up_secs: WRAP_UP_MS / 1000,
        queues: vec![QueueConfig::named("general"), cards, sos, rr, {
            let mut loans = QueueConfig::named("loans");
            loans.priority = 2;
            loans
        }],
        ..Routing::default()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Arrive {
        queue: usize,
        voice: bool,
        priority: u8,
        mandarin: bool,
        optional: bool,
        preferred: Option<u8>,
        emergency: bool,
    },
    Accept(u8),
    Reject(u8),
    Complete(u8),
    Cancel(u8),
    Reply(u8),
    Presence(u8, u8),
    Connect(u8),
    Disconnect(u8),
    TransferQueue(u8, u8),
    TransferAgent(u8, u8),
    EndWrapUp(u8),
    Reskill(u8, u8),
    Reprioritize(u8, u8),
    Wait(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..QUEUES.len(), any::<bool>(), 0u8..3, any::<bool>(), any::<bool>(),
              proptest::option::weighted(0.2, 0u8..8), proptest::bool::weighted(0.1))
            .prop_map(|(queue, voice, priority, mandarin, optional, preferred, emergency)| Op::Arrive {
                queue, voice, priority, mandarin, optional, preferred, emergency
            }),
        4 => any::<u8>().prop_map(Op::Accept),
        2 => any::<u8>().prop_map(Op::Reject),
        3 => any::<u8>().prop_map(Op::Complete),
        1 => any::<u8>().prop_map(Op::Cancel),
        1 => any::<u8>().prop_map(Op::Reply),
        1 => (any::<u8>(), 0u8..3).prop_map(|(a, p)| Op::Presence(a, p)),
        1 => any::<u8>().prop_map(Op::Connect),
        1 => any::<u8>().prop_map(Op::Disconnect),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(t, q)| Op::TransferQueue(t, q)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(t, a)| Op::TransferAgent(t, a)),
        1 => any::<u8>().prop_map(Op::EndWrapUp),
        1 => (any::<u8>(), 0u8..=5).prop_map(|(a, level)| Op::Reskill(a, level)),
        1 => (any::<u8>(), 0u8..4).prop_map(|(t, p)| Op::Reprioritize(t, p)),
        4 => (1u32..90).prop_map(Op::Wait),
    ]
}

fn agents() -> impl Strategy<Value = Vec<AgentSpec>> {
    proptest::collection::vec(
        (
            0u8..=5,
            any::<bool>(),
            1u32..=3,
            0u32..=1,
            1u32..=4,
            proptest::bool::weighted(0.15),
        ),
        1..7,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (cards, mandarin, web, voice, max_total, auto))| {
                let mut spec = AgentSpec::new(AgentId(format!("a{i}")))
                    .with_capacity(Media::Web, web)
                    .with_capacity(Media::Voice, voice)
                    .with_max_total(max_total)
                    .with_auto_accept(auto);
                if cards > 0 {
                    spec = spec.with_skill("cards", cards);
                }
                if mandarin {
                    spec = spec.with_skill("mandarin", 3);
                }
                spec
            })
            .collect()
    })
}

/// What the gateway would know, rebuilt only from events sent and decisions received.
#[derive(Default)]
struct Model {
    specs: HashMap<AgentId, AgentSpec>,
    load: HashMap<AgentId, [u32; 5]>,
    offers: BTreeMap<TaskId, Vec<AgentId>>,
    assigned: BTreeMap<TaskId, AgentId>,
    media: HashMap<TaskId, Media>,
    /// Live tasks: enqueued time and whether they were ever offered.
    live: BTreeMap<TaskId, (Millis, bool)>,
    /// Completed tasks whose slot is held for wrap-up: agent and the time it frees.
    wrapping: BTreeMap<TaskId, (AgentId, Millis)>,
    ended: usize,
}

impl Model {
    fn add(&mut self, agent: &AgentId, media: Media, delta: i32) -> Result<(), TestCaseError> {
        let spec = &self.specs[agent];
        let load = self.load.entry(agent.clone()).or_default();
        let m = media.index();
        load[m] = load[m]
            .checked_add_signed(delta)
            .ok_or_else(|| fail("negative load"))?;
        let total: u32 = load.iter().sum();
        let cap = spec.capacity.get(&media).copied().unwrap_or(0);
        prop_assert!(load[m] <= cap, "agent {agent} over {media:?} capacity: {load:?}");
        prop_assert!(
            total <= spec.max_total,
            "agent {agent} over its global cap: {load:?}"
        );
        Ok(())
    }

    /// Wrap-ups due by `now` free their slots (the router does so silently, before routing again).
    fn end_wrap_ups(&mut self, now: Millis) -> Result<(), TestCaseError> {
        let due: Vec<TaskId> = self
            .wrapping
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for task in due {
            let (agent, _) = self.wrapping.remove(&task).expect("listed");
            self.add(&agent, self.media[&task], -1)?;
        }
        Ok(())
    }

    fn apply(&mut self, now: Millis, decisions: &[Decision]) -> Result<(), TestCaseError> {
        for d in decisions {
            match d {
                Decision::Offer { task, agent, .. } => {
                    prop_assert!(self.live.contains_key(task), "offer of a dead task {task}");
                    prop_assert!(!self.assigned.contains_key(task), "offer of assigned task {task}");
                    let offers = self.offers.entry(task.clone()).or_default();
                    prop_assert!(!offers.contains(agent), "offered twice to {agent}");
                    offers.push(agent.clone());
                    self.live.get_mut(task).expect("live").1 = true;
                    self.add(agent, self.media[task], 1)?;
                }
                Decision::Rescind { task, agent, .. } => {
                    let offers = self.offers.entry(task.clone()).or_default();
                    let pos = offers.iter().position(|a| a == agent);
                    prop_assert!(pos.is_some(), "rescind of no offer {task} {agent}");
                    offers.remove(pos.expect("checked"));
                    self.add(agent, self.media[task], -1)?;
                }
                Decision::Assigned { task, agent } => {
                    prop_assert!(!self.assigned.contains_key(task), "task {task} assigned twice");
                    let offers = self.offers.remove(task).unwrap_or_default();
                    prop_assert_eq!(offers, vec![agent.clone()], "assigned without a sole offer");
                    self.assigned.insert(task.clone(), agent.clone());
                }
                Decision::Requeued { task, from, .. } => {
                    let holder = self.assigned.remove(task);
                    prop_assert_eq!(holder.as_ref(), Some(from));
                    self.add(from, self.media[task], -1)?;
                }
                Decision::Ended { task, .. } => {
                    // Refused at arrival (closed or full) or given up while waiting.
                    if self.live.remove(task).is_some() {
                        prop_assert!(!self.assigned.contains_key(task));
                        prop_assert!(self.offers.get(task).is_none_or(Vec::is_empty));
                    }
                    self.ended += 1;
                }
                Decision::Overflowed { task, .. } | Decision::SlaBreached { task, .. } => {
                    prop_assert!(self.live.contains_key(task));
                    prop_assert!(!self.assigned.contains_key(task));
                }
                Decision::AgentNotRoutable { .. } => {}
            }
        }
        // No starvation: a task never offered has taken its terminal step by its max wait.
        for (task, (enqueued, offered)) in &self.live {
            prop_assert!(
                *offered || now.since(*enqueued) < MAX_WAIT_MS,
                "task {task} starved: waiting since {enqueued:?} at {now:?}"
            );
        }
        Ok(())
    }
}

fn fail(msg: &str) -> TestCaseError {
    TestCaseError::fail(msg.to_owned())
}

/// No agent was offered a task while it was eligible for a waiting task of the same media with a better
/// key. Checked on the state after the event against every offer of the event.
fn inversions(r: &Router, now: Millis, decisions: &[Decision]) -> Result<(), TestCaseError> {
    for d in decisions {
        let Decision::Offer { task, agent, .. } = d else {
            continue;
        };
        let Some(&uid) = r.task_ix.get(task) else {
            continue;
        };
        let t = &r.tasks[&uid];
        let a = r.agent_ix[agent];
        let ag = &r.agents[a as usize];
        let (tier, score) = r.score(t);
        let offered = WaitKey { tier, score, uid };
        for (wuid, w) in &r.tasks {
            let Status::Waiting { bucket, key } = w.status else {
                continue;
            };
            let b = &r.buckets[bucket];
            if key < offered
                && b.media == t.spec.media
                && ag.queues.contains(&b.queue)
                && meets(&ag.skills, &b.req)
                && r.task_allows(now, w, bucket, a)
            {
                return Err(fail(&format!(
                    "priority inversion: {agent} offered {task} while eligible for better waiting {} (uid {wuid})",
                    w.spec.id
                )));
            }
        }
    }
    Ok(())
}

struct Harness {
    r: Router,
    m: Model,
    now: Millis,
    agents: Vec<AgentId>,
    next_task: u32,
}

impl Harness {
    fn send(&mut self, event: Event) -> Result<Option<Vec<Decision>>, TestCaseError> {
        let check_inversion = !matches!(event, Event::Transfer { .. });
        if matches!(event, Event::Tick) {
            self.m.end_wrap_ups(self.now)?;
        }
        match self.r.handle(self.now, event) {
            Ok(decisions) => {
                self.m.apply(self.now, &decisions)?;
                self.r.check_consistency(self.now).map_err(|e| fail(&e))?;
                if check_inversion {
                    inversions(&self.r, self.now, &decisions)?;
                }
                Ok(Some(decisions))
            }
            Err(_) => {
                self.r.check_consistency(self.now).map_err(|e| fail(&e))?;
                Ok(None)
            }
        }
    }

    fn wait(&mut self, ms: u64) -> Result<(), TestCaseError> {
        let target = self.now.plus_ms(ms);
        while let Some(at) = self.r.next_deadline().filter(|at| *at <= target) {
            self.now = self.now.max(at);
            self.send(Event::Tick)?;
        }
        self.now = target;
        self.m.apply(self.now, &[])
    }

    fn pick<T: Clone>(items: impl Iterator<Item = T>, i: u8) -> Option<T> {
        let items: Vec<T> = items.collect();
        (!items.is_empty()).then(|| items[usize::from(i) % items.len()].clone())
    }

    fn run(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Arrive {
                queue,
                voice,
                priority,
                mandarin,
                optional,
                preferred,
                emergency,
            } => {
                self.next_task += 1;
                let id = TaskId(format!("t{}", self.next_task));
                let media = if voice { Media::Voice } else { Media::Web };
                let mut spec =
                    TaskSpec::new(id.clone(), QUEUES[queue], media, self.now).with_priority(priority);
                if mandarin {
                    spec = spec.with_skill("mandarin", 2);
                }
                if optional {
                    spec = spec.with_optional_skill("cards", 5);
                }
                if let Some(p) = preferred {
                    let agent = self.agents[usize::from(p) % self.agents.len()].clone();
                    spec = spec.with_preferred_agent(agent, self.now.plus_ms(40_000));
                }
                if emergency {
                    spec = spec.emergency();
                }
                self.m.media.insert(id.clone(), media);
                self.m.live.insert(id.clone(), (self.now, false));
                self.send(Event::TaskArrived(spec))?;
            }
            Op::Accept(i) | Op::Reject(i) => {
                let pairs = self
                    .m
                    .offers
                    .iter()
                    .flat_map(|(t, agents)| agents.iter().map(move |a| (t.clone(), a.clone())));
                let Some((task, agent)) = Self::pick(pairs, i) else {
                    return Ok(());
                };
                if matches!(op, Op::Accept(_)) {
                    let d = self.send(Event::OfferAccepted { task, agent })?;
                    prop_assert!(d.is_some(), "a standing offer could not be accepted");
                } else {
                    let media = self.m.media[&task];
                    if let Some(list) = self.m.offers.get_mut(&task) {
                        list.retain(|a| *a != agent);
                    }
                    self.m.add(&agent, media, -1)?;
                    let d = self.send(Event::OfferRejected { task, agent })?;
                    prop_assert!(d.is_some(), "a standing offer could not be rejected");
                }
            }
            Op::Complete(i) => {
                let Some((task, agent)) = Self::pick(self.m.assigned.clone().into_iter(), i) else {
                    return Ok(());
                };
                self.m.assigned.remove(&task);
                self.m.live.remove(&task);
                self.m
                    .wrapping
                    .insert(task.clone(), (agent, self.now.plus_ms(WRAP_UP_MS)));
                let d = self.send(Event::TaskCompleted(task))?;
                prop_assert!(d.is_some(), "an assigned task could not complete");
            }
            Op::Cancel(i) => {
                let Some(task) = Self::pick(self.m.live.keys().cloned(), i) else {
                    return Ok(());
                };
                if let Some(agent) = self.m.assigned.remove(&task) {
                    self.m.add(&agent, self.m.media[&task], -1)?;
                }
                self.m.live.remove(&task);
                let d = self.send(Event::TaskCancelled(task))?;
                prop_assert!(d.is_some(), "a live task could not be cancelled");
            }
            Op::Reply(i) => {
                if let Some((task, agent)) = Self::pick(self.m.assigned.clone().into_iter(), i) {
                    self.send(Event::AgentReplied { task, agent })?;
                }
            }
            Op::Presence(a, p) => {
                let agent = self.agents[usize::from(a) % self.agents.len()].clone();
                let presence = [Presence::Available, Presence::Away, Presence::Offline][usize::from(p)];
                self.send(Event::PresenceChanged { agent, presence })?;
            }
            Op::Connect(a) => {
                let agent = self.agents[usize::from(a) % self.agents.len()].clone();
                self.send(Event::AgentConnected(agent))?;
            }
            Op::Disconnect(a) => {
                let agent = self.agents[usize::from(a) % self.agents.len()].clone();
                self.send(Event::AgentDisconnected(agent))?;
            }
            Op::TransferQueue(i, q) => {
                if let Some((task, from)) = Self::pick(self.m.assigned.clone().into_iter(), i) {
                    let to = TransferTarget::Queue(QUEUES[usize::from(q) % QUEUES.len()].to_owned());
                    self.send(Event::Transfer { task, from, to })?;
                }
            }
            Op::TransferAgent(i, a) => {
                if let Some((task, from)) = Self::pick(self.m.assigned.clone().into_iter(), i) {
                    let target = self.agents[usize::from(a) % self.agents.len()].clone();
                    let media = self.m.media[&task];
                    let event = Event::Transfer {
                        task: task.clone(),
                        from: from.clone(),
                        to: TransferTarget::Agent(target),
                    };
                    match self.r.handle(self.now, event) {
                        Ok(decisions) => {
                            self.m.assigned.remove(&task);
                            self.m.add(&from, media, -1)?;
                            self.m.apply(self.now, &decisions)?;
                        }
                        Err(_) => prop_assert_eq!(self.r.assignee(&task), Some(&from)),
                    }
                    self.r.check_consistency(self.now).map_err(|e| fail(&e))?;
                }
            }
            Op::EndWrapUp(i) => {
                let Some((task, (agent, _))) = Self::pick(self.m.wrapping.clone().into_iter(), i) else {
                    return Ok(());
                };
                self.m.wrapping.remove(&task);
                self.m.add(&agent, self.m.media[&task], -1)?;
                let d = self.send(Event::WrapUpEnded(task))?;
                prop_assert!(d.is_some(), "a wrap-up could not end");
            }
            Op::Reskill(a, level) => {
                let agent = self.agents[usize::from(a) % self.agents.len()].clone();
                let mut spec = self.m.specs[&agent].clone();
                spec.skills.remove("cards");
                if level > 0 {
                    spec.skills.insert("cards".to_owned(), level);
                }
                self.m.specs.insert(agent, spec.clone());
                let d = self.send(Event::AgentRegistered(spec))?;
                prop_assert!(d.is_some(), "re-registration refused");
            }
            Op::Reprioritize(i, priority) => {
                if let Some(task) = Self::pick(self.m.live.keys().cloned(), i) {
                    let d = self.send(Event::PriorityChanged { task, priority })?;
                    prop_assert!(d.is_some(), "a live task's priority could not change");
                }
            }
            Op::Wait(secs) => self.wait(u64::from(secs) * 1000)?,
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn random_event_sequences_keep_every_invariant(
        specs in agents(),
        online in proptest::collection::vec(any::<bool>(), 7),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut h = Harness {
            r: Router::new(&routing()).expect("valid routing"),
            m: Model::default(),
            now: Millis(1_000_000),
            agents: specs.iter().map(|s| s.id.clone()).collect(),
            next_task: 0,
        };
        for (spec, up) in specs.into_iter().zip(online) {
            let id = spec.id.clone();
            h.m.specs.insert(id.clone(), spec.clone());
            h.send(Event::AgentRegistered(spec))?;
            if up {
                h.send(Event::AgentConnected(id.clone()))?;
                h.send(Event::PresenceChanged { agent: id, presence: Presence::Available })?;
            }
        }
        for op in ops {
            h.run(op)?;
        }
        // Nothing is lost: once every timer has run its course, each task that is still known is assigned;
        // every other one completed, was cancelled, or ended with a reason.
        h.wait(2 * MAX_WAIT_MS + 60_000)?;
        h.wait(2 * MAX_WAIT_MS + 60_000)?;
        for task in h.m.live.keys() {
            prop_assert!(h.m.assigned.contains_key(task), "task {task} lost: neither assigned nor ended");
            prop_assert_eq!(h.r.assignee(task), h.m.assigned.get(task));
        }
        prop_assert!(h.m.offers.values().all(Vec::is_empty));
        prop_assert!(h.m.wrapping.is_empty(), "wrap-ups never ended");
    }
}
