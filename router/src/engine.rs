//! The routing state machine.
//!
//! Indexes, so that one event costs about the same with 5 or 5,000 agents:
//! - each queue has a *pool*: the routable agents that serve it and have room under their global cap,
//!   ordered by the queue's selection key (longest idle, least occupied or round robin, then longest idle);
//!   queues with the same loosest skill levels and policy share one pool;
//! - waiting tasks sit in *buckets*, one per (queue, media, effective skill requirement), ordered by
//!   (emergency tier, score, arrival); an agent that frees capacity looks only at the head of the buckets of
//!   the queues it serves;
//! - timers (offer expiry, workflow steps, no-reply, wrap-up, disconnect grace) sit in one ordered set, so
//!   [`Router::next_deadline`] is its first entry.
//!
//! After every event the router restores one invariant, checked by [`Router::check_consistency`]: no
//! routable agent with room is eligible for a waiting task. Agents whose capacity freed are served first
//! (each takes its best-scored eligible task), then tasks that started waiting, best score first, take the
//! best agent of their queue. That order is what rules out priority inversion.

use std::collections::{BTreeMap, BTreeSet};
use std::mem;

use omnigate_config::{Routing, SelectionPolicy};

use crate::calendar::Calendar;
use crate::hash::FxHashMap;
use crate::{
    AgentId, AgentSpec, Candidate, Decision, EndReason, Event, Explanation, Media, Millis, Outcome, Presence,
    RequeueReason, RescindReason, RouterError, TaskId, TaskSpec, TransferTarget, Trigger, Verdict,
    WaitingTask,
};

type AgentIx = u32;
type TaskUid = u64;
/// Sorted (skill id, minimum proficiency) pairs.
type Req = Vec<(u16, u8)>;

/// Order of waiting tasks: emergencies first, then lower score, then arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct WaitKey {
    tier: u8,
    score: i64,
    uid: TaskUid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Offer { task: TaskUid, agent: AgentIx },
    Wake(TaskUid),
    NoReply(TaskUid),
    WrapUp(TaskUid),
    Grace(AgentIx),
}

#[derive(Debug)]
struct Step {
    after_ms: u64,
    min_proficiency: Option<u8>,
    preferred: Option<bool>,
    relax: Option<bool>,
    overflow: Option<usize>,
    terminal: Option<Outcome>,
}

#[derive(Debug)]
struct Queue {
    name: String,
    /// The configured skill levels.
    skills: Vec<(u16, u8)>,
    /// The loosest levels any step allows: who may ever serve this queue.
    min_level: Req,
    priority: u8,
    emergency: bool,
    policy: SelectionPolicy,
    parallel: usize,
    auto_accept: bool,
    max_length: Option<u32>,
    when_full: Outcome,
    /// 0 = no limit.
    max_wait_ms: u64,
    no_reply_ms: Option<u64>,
    calendar: Calendar,
    when_closed: Outcome,
    steps: Vec<Step>,
    /// Index of this queue's pool, shared with every queue of the same loosest levels and policy.
    pool: usize,
    buckets: Vec<usize>,
    waiting: usize,
    last_offer_at: Option<Millis>,
    offer_interval_ms: Option<f64>,
    changed: bool,
}

/// Routable agents with room who meet a requirement, ordered by a policy.
#[derive(Debug)]
struct Pool {
    policy: SelectionPolicy,
    /// (policy key, idle since, agent).
    members: BTreeSet<(u64, u64, AgentIx)>,
}

#[derive(Debug)]
struct Bucket {
    queue: usize,
    media: Media,
    req: Req,
    tasks: BTreeSet<WaitKey>,
}

/// The values an agent was inserted into its pools with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PoolKey {
    occupancy: u64,
    rr: u64,
    idle: u64,
}

#[derive(Debug)]
struct Agent {
    spec: AgentSpec,
    skills: Vec<u8>,
    cap: [u32; 5],
    load: [u32; 5],
    total: u32,
    connected: bool,
    presence: Presence,
    misses: u32,
    disabled: bool,
    disconnected_at: Option<Millis>,
    idle_since: Millis,
    rr: u64,
    queues: Vec<usize>,
    /// The distinct pools of those queues.
    pools: Vec<usize>,
    pooled: Option<PoolKey>,
    offers: Vec<TaskUid>,
    assigned: Vec<TaskUid>,
    /// Tasks that named this agent as preferred (may be stale; pruned on use).
    preferred_by: Vec<TaskUid>,
}

#[derive(Debug, Clone, Copy)]
struct Stance {
    min_proficiency: Option<u8>,
    preferred: bool,
    relaxed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    /// In a bucket (or, transiently inside one event, about to be).
    Waiting {
        bucket: usize,
        key: WaitKey,
    },
    /// Not indexed: being moved between states inside one event.
    Limbo,
    Offered {
        offers: Vec<(AgentIx, Millis)>,
    },
    Assigned {
        agent: AgentIx,
        no_reply_at: Option<Millis>,
    },
    WrapUp {
        agent: AgentIx,
        until: Millis,
    },
}

#[derive(Debug)]
struct Task {
    spec: TaskSpec,
    queue: usize,
    skills: Req,
    optional: Req,
    boost_ms: u64,
    step: usize,
    stance: Stance,
    status: Status,
    excluded: Vec<AgentIx>,
    /// Workflow age is `now - wait_base`: time spent waiting or offered, not assigned.
    wait_base: Millis,
    /// Waiting time frozen while assigned.
    waited_ms: u64,
    wake_at: Option<Millis>,
    sla_next: usize,
    preferred: Option<(AgentIx, Millis)>,
}

#[derive(Debug, Default, Clone)]
struct ScanStats {
    agents: u32,
    skills: u32,
    capacity: u32,
    excluded: u32,
    tasks: u32,
    /// The first agents looked at and what was found, only when explaining.
    candidates: Vec<(AgentIx, Verdict)>,
}

/// How many scanned agents an explanation names.
const EXPLAINED_CANDIDATES: usize = 5;

impl ScanStats {
    fn note(&mut self, explain: bool, a: AgentIx, verdict: Verdict) {
        if explain && self.candidates.len() < EXPLAINED_CANDIDATES {
            self.candidates.push((a, verdict));
        }
    }
}

/// The routing engine. Feed it events with the current time; execute its decisions in order.
///
/// `now` is compared and added only, except for business hours and holidays, which read it as Unix
/// milliseconds (UTC); give it that clock when queues have hours.
#[derive(Debug)]
pub struct Router {
    offer_timeout_ms: [u64; 5],
    priority_offset_ms: u64,
    grace_ms: u64,
    boost_ms: u64,
    return_ms: u64,
    max_misses: u32,
    wrap_up_ms: u64,
    voice_exclusive: bool,
    skills: FxHashMap<String, u16>,
    queues: Vec<Queue>,
    queue_ix: FxHashMap<String, usize>,
    pools: Vec<Pool>,
    buckets: Vec<Bucket>,
    /// Buckets by (queue, media); the few of each are told apart by their requirement.
    bucket_ix: FxHashMap<(usize, Media), Vec<usize>>,
    agents: Vec<Agent>,
    agent_ix: FxHashMap<AgentId, AgentIx>,
    tasks: FxHashMap<TaskUid, Task>,
    task_ix: FxHashMap<TaskId, TaskUid>,
    timers: BTreeSet<(Millis, Timer)>,
    next_uid: u64,
    rr_counter: u64,
    dirty_agents: Vec<AgentIx>,
    dirty_tasks: Vec<TaskUid>,
    explain: bool,
    explanations: Vec<Explanation>,
    /// Queues whose waiting order changed since the last `take_changed_queues`.
    changed: Vec<usize>,
    scratch_agents: Vec<AgentIx>,
    scratch_keys: Vec<WaitKey>,
}

fn meets(skills: &[u8], req: &[(u16, u8)]) -> bool {
    req.iter()
        .all(|&(s, l)| skills.get(usize::from(s)).copied().unwrap_or(0) >= l)
}

fn merge_req(req: &mut Req, extra: &[(u16, u8)]) {
    for &(s, l) in extra {
        match req.iter_mut().find(|(rs, _)| *rs == s) {
            Some(entry) => entry.1 = entry.1.max(l),
            None => req.push((s, l)),
        }
    }
    req.sort_unstable();
}

fn policy_name(policy: SelectionPolicy) -> &'static str {
    match policy {
        SelectionPolicy::LongestIdle => "longest idle",
        SelectionPolicy::LeastOccupied => "least occupied, then longest idle",
        SelectionPolicy::RoundRobin => "round robin, then longest idle",
    }
}

impl Router {
    /// Builds an empty router from the routing configuration.
    ///
    /// # Errors
    /// [`RouterError::Config`] when the configuration is unusable (zero offer timeout, unknown overflow
    /// queue, malformed hours or holidays, unknown media).
    pub fn new(config: &Routing) -> Result<Router, RouterError> {
        if config.offer_timeout_secs == 0 {
            return Err(RouterError::Config(
                "offer_timeout_secs must be positive".to_owned(),
            ));
        }
        let mut offer_timeout_ms = [config.offer_timeout_secs * 1000; 5];
        for (media, secs) in &config.offer_timeout_by_media {
            if *secs == 0 {
                return Err(RouterError::Config(format!(
                    "offer timeout of {media} must be positive"
                )));
            }
            offer_timeout_ms[Media::parse(media)?.index()] = secs * 1000;
        }
        let queue_ix: FxHashMap<String, usize> = config
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| (q.name.clone(), i))
            .collect();
        let mut router = Router {
            offer_timeout_ms,
            priority_offset_ms: config.priority_offset_secs * 1000,
            grace_ms: config.disconnect_grace_secs * 1000,
            boost_ms: config.requeue_boost_secs * 1000,
            return_ms: config.return_to_agent_secs * 1000,
            max_misses: config.max_consecutive_misses,
            wrap_up_ms: config.wrap_up_secs * 1000,
            voice_exclusive: config.voice_exclusive,
            skills: FxHashMap::default(),
            queues: Vec::with_capacity(config.queues.len()),
            queue_ix,
            pools: Vec::new(),
            buckets: Vec::new(),
            bucket_ix: FxHashMap::default(),
            agents: Vec::new(),
            agent_ix: FxHashMap::default(),
            tasks: FxHashMap::default(),
            task_ix: FxHashMap::default(),
            timers: BTreeSet::new(),
            next_uid: 0,
            rr_counter: 0,
            dirty_agents: Vec::new(),
            dirty_tasks: Vec::new(),
            explain: false,
            explanations: Vec::new(),
            changed: Vec::new(),
            scratch_agents: Vec::new(),
            scratch_keys: Vec::new(),
        };
        let mut pool_ix: FxHashMap<(Req, SelectionPolicy), usize> = FxHashMap::default();
        for q in &config.queues {
            let mut skills: Vec<(u16, u8)> = q
                .skills
                .iter()
                .map(|(name, level)| (router.skill_id(name), *level))
                .collect();
            skills.sort_unstable();
            let mut steps = Vec::with_capacity(q.steps.len());
            for s in &q.steps {
                let overflow = match &s.overflow {
                    Some(name) => Some(*router.queue_ix.get(name).ok_or_else(|| {
                        RouterError::Config(format!("queue {:?} overflows to unknown queue {name:?}", q.name))
                    })?),
                    None => None,
                };
                steps.push(Step {
                    after_ms: s.after_secs * 1000,
                    min_proficiency: s.min_proficiency,
                    preferred: s.preferred_agent,
                    relax: s.relax_optional,
                    overflow,
                    terminal: s.terminal.map(Outcome::from),
                });
            }
            let loosest = steps.iter().filter_map(|s| s.min_proficiency).min();
            let min_level: Req = skills
                .iter()
                .map(|&(s, l)| (s, loosest.map_or(l, |m| m.min(l))))
                .collect();
            let pool = match pool_ix.get(&(min_level.clone(), q.policy)) {
                Some(&p) => p,
                None => {
                    router.pools.push(Pool {
                        policy: q.policy,
                        members: BTreeSet::new(),
                    });
                    pool_ix.insert((min_level.clone(), q.policy), router.pools.len() - 1);
                    router.pools.len() - 1
                }
            };
            let max_wait_secs = q.max_wait_secs.unwrap_or(config.max_wait_secs);
            router.queues.push(Queue {
                name: q.name.clone(),
                skills,
                min_level,
                priority: q.priority,
                emergency: q.emergency,
                policy: q.policy,
                parallel: q.parallel_offers.max(1) as usize,
                auto_accept: q.auto_accept,
                max_length: q.max_length,
                when_full: q.when_full.into(),
                max_wait_ms: max_wait_secs * 1000,
                no_reply_ms: q.no_reply_secs.map(|s| s * 1000),
                calendar: Calendar::new(&q.hours, &q.holidays, config.utc_offset_minutes)?,
                when_closed: q.when_closed.into(),
                steps,
                pool,
                buckets: Vec::new(),
                waiting: 0,
                last_offer_at: None,
                offer_interval_ms: None,
                changed: false,
            });
        }
        Ok(router)
    }

    /// Applies one event at time `now` and returns what the gateway must do, in order.
    ///
    /// # Errors
    /// The event is refused and the state is unchanged (unknown ids, an offer that no longer stands, ...).
    pub fn handle(&mut self, now: Millis, event: Event) -> Result<Vec<Decision>, RouterError> {
        self.explain = false;
        self.apply(now, event)
    }

    /// As [`Router::handle`], and also returns one [`Explanation`] per task offered: the candidates
    /// considered, the ones chosen and the rule that chose them.
    ///
    /// # Errors
    /// As [`Router::handle`].
    pub fn handle_explained(
        &mut self,
        now: Millis,
        event: Event,
    ) -> Result<(Vec<Decision>, Vec<Explanation>), RouterError> {
        self.explain = true;
        let result = self.apply(now, event);
        self.explain = false;
        let explanations = mem::take(&mut self.explanations);
        result.map(|decisions| (decisions, explanations))
    }

    /// The earliest time at which [`Event::Tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// 1-based position of a waiting task among the waiting tasks of its queue, if it is waiting.
    pub fn queue_position(&self, task: &TaskId) -> Option<usize> {
        let uid = self.task_ix.get(task)?;
        let t = self.tasks.get(uid)?;
        let Status::Waiting { key, .. } = t.status else {
            return None;
        };
        let ahead: usize = self.queues[t.queue]
            .buckets
            .iter()
            .map(|&b| self.buckets[b].tasks.range(..key).count())
            .sum();
        Some(ahead + 1)
    }

    /// Estimated milliseconds until a waiting task is offered: its position times the recent interval
    /// between offers of its queue. `None` if it is not waiting or the queue has no history yet.
    pub fn estimated_wait(&self, task: &TaskId) -> Option<u64> {
        let position = self.queue_position(task)?;
        let t = self.tasks.get(self.task_ix.get(task)?)?;
        self.queues[t.queue]
            .offer_interval_ms
            .map(|ms| (ms * position as f64) as u64)
    }

    /// Every waiting task of a queue in order, with its position and estimated wait.
    ///
    /// # Errors
    /// [`RouterError::UnknownQueue`].
    pub fn waiting(&self, queue: &str) -> Result<Vec<WaitingTask>, RouterError> {
        let q = *self
            .queue_ix
            .get(queue)
            .ok_or_else(|| RouterError::UnknownQueue(queue.to_owned()))?;
        let queue = &self.queues[q];
        let mut keys: Vec<WaitKey> = queue
            .buckets
            .iter()
            .flat_map(|&b| self.buckets[b].tasks.iter().copied())
            .collect();
        keys.sort_unstable();
        Ok(keys
            .iter()
            .enumerate()
            .filter_map(|(i, key)| {
                Some(WaitingTask {
                    task: self.tasks.get(&key.uid)?.spec.id.clone(),
                    position: i + 1,
                    estimated_wait_ms: queue.offer_interval_ms.map(|ms| (ms * (i + 1) as f64) as u64),
                })
            })
            .collect())
    }

    /// Names of the queues whose waiting tasks changed (one arrived, left, or moved) since the last call:
    /// the queues whose positions and estimated waits the gateway should push to customers again.
    pub fn take_changed_queues(&mut self) -> Vec<String> {
        let changed = mem::take(&mut self.changed);
        changed
            .into_iter()
            .map(|q| {
                self.queues[q].changed = false;
                self.queues[q].name.clone()
            })
            .collect()
    }

    /// The agent a task is assigned to, if it is.
    pub fn assignee(&self, task: &TaskId) -> Option<&AgentId> {
        let t = self.tasks.get(self.task_ix.get(task)?)?;
        match t.status {
            Status::Assigned { agent, .. } => Some(&self.agents[agent as usize].spec.id),
            _ => None,
        }
    }

    /// Number of tasks waiting in a queue (not offered, not assigned).
    pub fn waiting_len(&self, queue: &str) -> Option<usize> {
        self.queue_ix.get(queue).map(|&q| self.queues[q].waiting)
    }

    /// Whether the agent will be offered work: connected, available, under its miss limit and with room.
    pub fn is_routable(&self, agent: &AgentId) -> bool {
        self.agent_ix.get(agent).is_some_and(|&a| self.routable(a))
    }

    /// Checks every internal invariant by brute force (O(agents × tasks)): loads match the tasks held, no
    /// agent is over capacity, the indexes match the states, and no routable agent with room is eligible
    /// for a waiting task. For tests and debugging.
    ///
    /// # Errors
    /// A description of the first broken invariant.
    pub fn check_consistency(&self, now: Millis) -> Result<(), String> {
        let mut load = vec![[0u32; 5]; self.agents.len()];
        for (uid, t) in &self.tasks {
            let m = t.spec.media.index();
            match &t.status {
                Status::Waiting { bucket, key } => {
                    if !self.buckets[*bucket].tasks.contains(key) || key.uid != *uid {
                        return Err(format!("waiting task {} is not indexed", t.spec.id));
                    }
                }
                Status::Limbo => return Err(format!("task {} left in limbo", t.spec.id)),
                Status::Offered { offers } => {
                    if offers.is_empty() {
                        return Err(format!("task {} offered to nobody", t.spec.id));
                    }
                    for (a, _) in offers {
                        load[*a as usize][m] += 1;
                    }
                }
                Status::Assigned { agent, .. } | Status::WrapUp { agent, .. } => {
                    load[*agent as usize][m] += 1
                }
            }
        }
        let indexed: usize = self.buckets.iter().map(|b| b.tasks.len()).sum();
        let waiting = self
            .tasks
            .values()
            .filter(|t| matches!(t.status, Status::Waiting { .. }))
            .count();
        if indexed != waiting {
            return Err(format!("{indexed} tasks indexed but {waiting} waiting"));
        }
        for (i, a) in self.agents.iter().enumerate() {
            if load[i] != a.load || a.total != a.load.iter().sum::<u32>() {
                return Err(format!(
                    "agent {} load {:?} but holds {:?}",
                    a.spec.id, a.load, load[i]
                ));
            }
            if a.total > a.spec.max_total || (0..5).any(|m| a.load[m] > a.cap[m]) {
                return Err(format!("agent {} over capacity: {:?}", a.spec.id, a.load));
            }
            let ix = i as AgentIx;
            if a.pooled.is_some() != self.routable(ix) {
                return Err(format!("agent {} pool membership is stale", a.spec.id));
            }
            if !self.routable(ix) {
                continue;
            }
            for (uid, t) in &self.tasks {
                let Status::Waiting { bucket, .. } = t.status else {
                    continue;
                };
                let b = &self.buckets[bucket];
                if a.queues.contains(&b.queue)
                    && self.can_take(a, b.media)
                    && meets(&a.skills, &b.req)
                    && self.task_allows(now, t, bucket, ix)
                {
                    return Err(format!(
                        "agent {} has room and is eligible for waiting task {} (uid {uid})",
                        a.spec.id, t.spec.id
                    ));
                }
            }
        }
        Ok(())
    }

    fn skill_id(&mut self, name: &str) -> u16 {
        if let Some(&id) = self.skills.get(name) {
            return id;
        }
        let id = self.skills.len() as u16;
        self.skills.insert(name.to_owned(), id);
        id
    }

    fn req_of(&mut self, skills: &BTreeMap<String, u8>) -> Req {
        let mut req: Req = skills.iter().map(|(n, l)| (self.skill_id(n), *l)).collect();
        req.sort_unstable();
        req
    }

    fn agent_of(&self, id: &AgentId) -> Result<AgentIx, RouterError> {
        self.agent_ix
            .get(id)
            .copied()
            .ok_or_else(|| RouterError::UnknownAgent(id.clone()))
    }

    fn task_of(&self, id: &TaskId) -> Result<TaskUid, RouterError> {
        self.task_ix
            .get(id)
            .copied()
            .ok_or_else(|| RouterError::UnknownTask(id.clone()))
    }

    fn task(&mut self, uid: TaskUid) -> &mut Task {
        // Every uid passed around inside one event was looked up from the live map.
        self.tasks.get_mut(&uid).expect("live task uid")
    }

    fn present(&self, a: AgentIx) -> bool {
        let a = &self.agents[a as usize];
        a.connected && a.presence == Presence::Available && !a.disabled
    }

    fn routable(&self, a: AgentIx) -> bool {
        self.present(a) && {
            let a = &self.agents[a as usize];
            a.total < a.spec.max_total
        }
    }

    fn can_take(&self, a: &Agent, media: Media) -> bool {
        let m = media.index();
        if a.load[m] >= a.cap[m] || a.total >= a.spec.max_total {
            return false;
        }
        if self.voice_exclusive && media != Media::Voice {
            let voice = Media::Voice.index();
            // No new chats during a call, and chats leave one unit of the global cap for a call.
            if a.load[voice] > 0
                || (a.cap[voice] > 0 && a.spec.max_total > 1 && a.total + 1 >= a.spec.max_total)
            {
                return false;
            }
        }
        true
    }

    /// The preferred agent the task waits for, if its window, the workflow and that agent allow.
    fn preferred_holder(&self, now: Millis, t: &Task, bucket: usize) -> Option<AgentIx> {
        let (p, until) = t.preferred?;
        (t.stance.preferred
            && now < until
            && !t.excluded.contains(&p)
            && self.present(p)
            && meets(&self.agents[p as usize].skills, &self.buckets[bucket].req))
        .then_some(p)
    }

    fn task_allows(&self, now: Millis, t: &Task, bucket: usize, a: AgentIx) -> bool {
        !t.excluded.contains(&a) && self.preferred_holder(now, t, bucket).is_none_or(|p| p == a)
    }

    fn pool_key(policy: SelectionPolicy, k: PoolKey, a: AgentIx) -> (u64, u64, AgentIx) {
        let primary = match policy {
            SelectionPolicy::LongestIdle => 0,
            SelectionPolicy::LeastOccupied => k.occupancy,
            SelectionPolicy::RoundRobin => k.rr,
        };
        (primary, k.idle, a)
    }

    /// Puts the agent in, out of, or back into its queues' pools after any change of its state.
    fn sync_agent(&mut self, a: AgentIx) {
        let want = self.routable(a).then(|| {
            let ag = &self.agents[a as usize];
            PoolKey {
                occupancy: u64::from(ag.total) * 1000 / u64::from(ag.spec.max_total.max(1)),
                rr: ag.rr,
                idle: ag.idle_since.0,
            }
        });
        let ag = &mut self.agents[a as usize];
        if ag.pooled == want {
            return;
        }
        let old = mem::replace(&mut ag.pooled, want);
        for &p in &ag.pools {
            let pool = &mut self.pools[p];
            if let Some(old) = old {
                pool.members.remove(&Self::pool_key(pool.policy, old, a));
            }
            if let Some(new) = want {
                pool.members.insert(Self::pool_key(pool.policy, new, a));
            }
        }
    }

    fn schedule(&mut self, at: Millis, timer: Timer) {
        self.timers.insert((at, timer));
    }

    fn unschedule(&mut self, at: Millis, timer: Timer) {
        self.timers.remove(&(at, timer));
    }

    fn apply(&mut self, now: Millis, event: Event) -> Result<Vec<Decision>, RouterError> {
        let mut out = Vec::new();
        self.dirty_agents.clear();
        self.dirty_tasks.clear();
        self.explanations.clear();
        match event {
            Event::AgentRegistered(spec) => self.register(now, spec),
            Event::AgentConnected(id) => {
                let a = self.agent_of(&id)?;
                let agent = &mut self.agents[a as usize];
                agent.connected = true;
                if let Some(at) = agent.disconnected_at.take() {
                    self.unschedule(at.plus_ms(self.grace_ms), Timer::Grace(a));
                }
                self.agent_changed(a);
            }
            Event::AgentDisconnected(id) => {
                let a = self.agent_of(&id)?;
                let agent = &mut self.agents[a as usize];
                agent.connected = false;
                if !agent.assigned.is_empty() && agent.disconnected_at.is_none() {
                    agent.disconnected_at = Some(now);
                    self.schedule(now.plus_ms(self.grace_ms), Timer::Grace(a));
                }
                self.agent_lost(now, a, &mut out);
            }
            Event::PresenceChanged { agent: id, presence } => {
                let a = self.agent_of(&id)?;
                let agent = &mut self.agents[a as usize];
                let was = agent.presence;
                agent.presence = presence;
                if presence == Presence::Available {
                    agent.misses = 0;
                    agent.disabled = false;
                    if was != Presence::Available {
                        agent.idle_since = now;
                    }
                    self.agent_changed(a);
                } else {
                    self.agent_lost(now, a, &mut out);
                }
            }
            Event::TaskArrived(spec) => self.arrive(now, spec, &mut out)?,
            Event::TaskCancelled(id) => {
                let uid = self.task_of(&id)?;
                self.cancel(now, uid, &mut out);
            }
            Event::OfferAccepted { task, agent } => {
                let (uid, a) = self.offer_of(&task, &agent)?;
                self.accept(now, uid, a, &mut out);
            }
            Event::OfferRejected { task, agent } => {
                let (uid, a) = self.offer_of(&task, &agent)?;
                self.miss(now, uid, a, false, &mut out);
            }
            Event::TaskCompleted(id) => {
                let uid = self.task_of(&id)?;
                let Status::Assigned { agent, no_reply_at } = self.tasks[&uid].status else {
                    return Err(RouterError::UnknownTask(id));
                };
                if let Some(at) = no_reply_at {
                    self.unschedule(at, Timer::NoReply(uid));
                }
                if self.wrap_up_ms > 0 {
                    // The slot stays held, but the task is no longer the agent's conversation (nothing to
                    // re-queue if its socket drops).
                    self.agents[agent as usize].assigned.retain(|o| *o != uid);
                    let until = now.plus_ms(self.wrap_up_ms);
                    self.task(uid).status = Status::WrapUp { agent, until };
                    self.schedule(until, Timer::WrapUp(uid));
                } else {
                    self.finish(now, uid, agent);
                }
            }
            Event::WrapUpEnded(id) => {
                let uid = self.task_of(&id)?;
                let Status::WrapUp { agent, until } = self.tasks[&uid].status else {
                    return Err(RouterError::NotInWrapUp(id));
                };
                self.unschedule(until, Timer::WrapUp(uid));
                self.finish(now, uid, agent);
            }
            Event::AgentReplied { task, agent } => {
                let uid = self.task_of(&task)?;
                let a = self.agent_of(&agent)?;
                match self.tasks[&uid].status {
                    Status::Assigned {
                        agent: holder,
                        no_reply_at,
                    } if holder == a => {
                        if let Some(at) = no_reply_at {
                            self.unschedule(at, Timer::NoReply(uid));
                        }
                        self.task(uid).status = Status::Assigned {
                            agent: a,
                            no_reply_at: None,
                        };
                    }
                    _ => return Err(RouterError::NotAssigned { task, agent }),
                }
            }
            Event::PriorityChanged { task, priority } => {
                let uid = self.task_of(&task)?;
                self.task(uid).spec.priority = priority;
                if matches!(self.tasks[&uid].status, Status::Waiting { .. }) {
                    self.unbucket(uid);
                    self.rebucket(now, uid, &mut out);
                }
            }
            Event::Transfer { task, from, to } => self.transfer(now, task, from, to, &mut out)?,
            Event::Tick => self.tick(now, &mut out),
        }
        self.settle(now, &mut out);
        Ok(out)
    }

    fn register(&mut self, now: Millis, spec: AgentSpec) {
        let mut skills = Vec::new();
        for (name, level) in &spec.skills {
            let id = usize::from(self.skill_id(name));
            if skills.len() <= id {
                skills.resize(id + 1, 0);
            }
            skills[id] = *level;
        }
        let mut cap = [0u32; 5];
        for (media, units) in &spec.capacity {
            cap[media.index()] = *units;
        }
        let queues: Vec<usize> = self
            .queues
            .iter()
            .enumerate()
            .filter(|(_, q)| meets(&skills, &q.min_level))
            .map(|(i, _)| i)
            .collect();
        let mut pools: Vec<usize> = queues.iter().map(|&q| self.queues[q].pool).collect();
        pools.sort_unstable();
        pools.dedup();
        let a = match self.agent_ix.get(&spec.id) {
            Some(&a) => {
                // Leave the pools under the old queue list, then rejoin under the new one.
                let agent = &mut self.agents[a as usize];
                let disabled = mem::replace(&mut agent.disabled, true);
                self.sync_agent(a);
                let agent = &mut self.agents[a as usize];
                agent.disabled = disabled;
                agent.spec = spec;
                agent.skills = skills;
                agent.cap = cap;
                agent.queues = queues;
                agent.pools = pools;
                a
            }
            None => {
                let a = self.agents.len() as AgentIx;
                self.agent_ix.insert(spec.id.clone(), a);
                self.agents.push(Agent {
                    spec,
                    skills,
                    cap,
                    load: [0; 5],
                    total: 0,
                    connected: false,
                    presence: Presence::Offline,
                    misses: 0,
                    disabled: false,
                    disconnected_at: None,
                    idle_since: now,
                    rr: 0,
                    queues,
                    pools,
                    pooled: None,
                    offers: Vec::new(),
                    assigned: Vec::new(),
                    preferred_by: Vec::new(),
                });
                a
            }
        };
        self.agent_changed(a);
    }

    /// The agent may have become able to take work, or its eligibility as a preferred agent changed.
    fn agent_changed(&mut self, a: AgentIx) {
        self.sync_agent(a);
        self.dirty_agents.push(a);
        self.touch_preferring(a);
    }

    /// Tasks waiting for this agent as preferred must be reconsidered by everyone.
    fn touch_preferring(&mut self, a: AgentIx) {
        let mut list = mem::take(&mut self.agents[a as usize].preferred_by);
        list.retain(|uid| {
            self.tasks.get(uid).is_some_and(|t| {
                matches!(t.status, Status::Waiting { .. }) && t.preferred.is_some_and(|(p, _)| p == a)
            })
        });
        self.dirty_tasks.extend_from_slice(&list);
        self.agents[a as usize].preferred_by = list;
    }

    /// The agent went away, offline or disconnected: its pending offers go elsewhere.
    fn agent_lost(&mut self, now: Millis, a: AgentIx, out: &mut Vec<Decision>) {
        self.sync_agent(a);
        self.touch_preferring(a);
        self.rescind_offers_of(now, a, RescindReason::AgentUnavailable, out);
    }

    fn offer_of(&self, task: &TaskId, agent: &AgentId) -> Result<(TaskUid, AgentIx), RouterError> {
        let no_offer = || RouterError::NoSuchOffer {
            task: task.clone(),
            agent: agent.clone(),
        };
        let uid = self.task_ix.get(task).copied().ok_or_else(no_offer)?;
        let a = self.agent_ix.get(agent).copied().ok_or_else(no_offer)?;
        match &self.tasks[&uid].status {
            Status::Offered { offers } if offers.iter().any(|(o, _)| *o == a) => Ok((uid, a)),
            _ => Err(no_offer()),
        }
    }

    fn arrive(&mut self, now: Millis, spec: TaskSpec, out: &mut Vec<Decision>) -> Result<(), RouterError> {
        if self.task_ix.contains_key(&spec.id) {
            return Err(RouterError::DuplicateTask(spec.id));
        }
        let q = *self
            .queue_ix
            .get(&spec.queue)
            .ok_or_else(|| RouterError::UnknownQueue(spec.queue.clone()))?;
        let queue = &self.queues[q];
        if !queue.calendar.is_open(now) {
            out.push(Decision::Ended {
                task: spec.id,
                outcome: queue.when_closed,
                reason: EndReason::Closed,
            });
            return Ok(());
        }
        if queue.max_length.is_some_and(|max| queue.waiting >= max as usize) {
            out.push(Decision::Ended {
                task: spec.id,
                outcome: queue.when_full,
                reason: EndReason::QueueFull,
            });
            return Ok(());
        }
        let skills = self.req_of(&spec.skills);
        let optional = self.req_of(&spec.optional_skills);
        let preferred = spec
            .preferred_agent
            .as_ref()
            .and_then(|(id, until)| Some((*self.agent_ix.get(id)?, *until)));
        self.next_uid += 1;
        let uid = self.next_uid;
        if let Some((p, _)) = preferred {
            self.agents[p as usize].preferred_by.push(uid);
        }
        self.task_ix.insert(spec.id.clone(), uid);
        let wait_base = spec.enqueued_at.min(now);
        self.tasks.insert(
            uid,
            Task {
                spec,
                queue: q,
                skills,
                optional,
                boost_ms: 0,
                step: 0,
                stance: Stance {
                    min_proficiency: None,
                    preferred: true,
                    relaxed: false,
                },
                status: Status::Limbo,
                excluded: Vec::new(),
                wait_base,
                waited_ms: 0,
                wake_at: None,
                sla_next: 0,
                preferred,
            },
        );
        self.rebucket(now, uid, out);
        Ok(())
    }

    fn score(&self, t: &Task) -> (u8, i64) {
        let q = &self.queues[t.queue];
        let priority = u64::from(t.spec.priority) + u64::from(q.priority);
        let tier = if t.spec.emergency || q.emergency { 0 } else { 1 };
        let score =
            t.spec.enqueued_at.0 as i64 - (priority * self.priority_offset_ms) as i64 - t.boost_ms as i64;
        (tier, score)
    }

    /// Takes a waiting task out of its bucket; its status becomes `Limbo`.
    fn unbucket(&mut self, uid: TaskUid) {
        let t = self.task(uid);
        if let Status::Waiting { bucket, key } = t.status {
            t.status = Status::Limbo;
            let queue = t.queue;
            self.buckets[bucket].tasks.remove(&key);
            self.queues[queue].waiting -= 1;
            self.mark_changed(queue);
        }
        if let Some(at) = self.task(uid).wake_at.take() {
            self.unschedule(at, Timer::Wake(uid));
        }
    }

    /// Applies the workflow steps due at the task's age, then files the limbo task in the bucket of its
    /// requirement, schedules its next wake-up and marks it for placement. The task may end instead.
    fn rebucket(&mut self, now: Millis, uid: TaskUid, out: &mut Vec<Decision>) {
        if !self.advance(now, uid, out) {
            return;
        }
        let t = &self.tasks[&uid];
        let q = &self.queues[t.queue];
        let mut req: Req = q
            .skills
            .iter()
            .map(|&(s, l)| (s, t.stance.min_proficiency.unwrap_or(l)))
            .collect();
        merge_req(&mut req, &t.skills);
        if !t.stance.relaxed {
            merge_req(&mut req, &t.optional);
        }
        let (tier, score) = self.score(t);
        let key = WaitKey { tier, score, uid };
        let queue = t.queue;
        let media = t.spec.media;
        let found = self
            .bucket_ix
            .get(&(queue, media))
            .and_then(|list| list.iter().copied().find(|&b| self.buckets[b].req == req));
        let bucket = match found {
            Some(b) => b,
            None => {
                let b = self.buckets.len();
                self.buckets.push(Bucket {
                    queue,
                    media,
                    req,
                    tasks: BTreeSet::new(),
                });
                self.bucket_ix.entry((queue, media)).or_default().push(b);
                self.queues[queue].buckets.push(b);
                b
            }
        };
        self.buckets[bucket].tasks.insert(key);
        self.queues[queue].waiting += 1;
        self.mark_changed(queue);
        let wake = self.next_wake(now, &self.tasks[&uid]);
        let t = self.task(uid);
        t.status = Status::Waiting { bucket, key };
        t.wake_at = wake;
        if let Some(at) = wake {
            self.schedule(at, Timer::Wake(uid));
        }
        self.dirty_tasks.push(uid);
    }

    fn mark_changed(&mut self, q: usize) {
        if !self.queues[q].changed {
            self.queues[q].changed = true;
            self.changed.push(q);
        }
    }

    fn max_wait_ms(&self, t: &Task) -> u64 {
        t.spec.max_wait_ms.unwrap_or(self.queues[t.queue].max_wait_ms)
    }

    fn next_wake(&self, now: Millis, t: &Task) -> Option<Millis> {
        let q = &self.queues[t.queue];
        let step = q.steps.get(t.step).map(|s| t.wait_base.plus_ms(s.after_ms));
        let max_wait = Some(self.max_wait_ms(t))
            .filter(|ms| *ms > 0)
            .map(|ms| t.wait_base.plus_ms(ms));
        let sla = t.spec.sla_ms.get(t.sla_next).map(|ms| t.wait_base.plus_ms(*ms));
        let preferred = t
            .preferred
            .filter(|(_, until)| t.stance.preferred && *until > now)
            .map(|(_, until)| until);
        [step, max_wait, sla, preferred].into_iter().flatten().min()
    }

    /// Applies due workflow steps, max wait and SLA targets to a task in limbo. False when it ended.
    fn advance(&mut self, now: Millis, uid: TaskUid, out: &mut Vec<Decision>) -> bool {
        let mut hops = 0;
        loop {
            let t = &self.tasks[&uid];
            let q = &self.queues[t.queue];
            let Some(step) = q.steps.get(t.step) else { break };
            if t.wait_base.plus_ms(step.after_ms) > now {
                break;
            }
            let (terminal, overflow) = (step.terminal, step.overflow);
            let (min_proficiency, preferred, relax) = (step.min_proficiency, step.preferred, step.relax);
            let from = t.queue;
            let t = self.task(uid);
            t.step += 1;
            if min_proficiency.is_some() {
                t.stance.min_proficiency = min_proficiency;
            }
            if let Some(p) = preferred {
                t.stance.preferred = p;
            }
            if let Some(r) = relax {
                t.stance.relaxed = r;
            }
            if let Some(outcome) = terminal {
                self.end(uid, outcome, EndReason::WorkflowStep, out);
                return false;
            }
            if let Some(to) = overflow {
                hops += 1;
                t.queue = to;
                t.step = 0;
                t.stance.min_proficiency = None;
                out.push(Decision::Overflowed {
                    task: t.spec.id.clone(),
                    from: self.queues[from].name.clone(),
                    to: self.queues[to].name.clone(),
                });
                if hops > self.queues.len() {
                    // A cycle of overflows: stay in this queue with its remaining steps skipped.
                    let len = self.queues[to].steps.len();
                    self.task(uid).step = len;
                    break;
                }
            }
        }
        let t = &self.tasks[&uid];
        let max_wait = self.max_wait_ms(t);
        if max_wait > 0 && t.wait_base.plus_ms(max_wait) <= now {
            self.end(uid, Outcome::Expired, EndReason::MaxWait, out);
            return false;
        }
        let t = self.task(uid);
        while let Some(&target) = t.spec.sla_ms.get(t.sla_next) {
            if t.wait_base.plus_ms(target) > now {
                break;
            }
            t.sla_next += 1;
            out.push(Decision::SlaBreached {
                task: t.spec.id.clone(),
                target_ms: target,
            });
        }
        true
    }

    /// Routing gives up on a task in limbo.
    fn end(&mut self, uid: TaskUid, outcome: Outcome, reason: EndReason, out: &mut Vec<Decision>) {
        if let Some(t) = self.tasks.remove(&uid) {
            if let Some(at) = t.wake_at {
                self.unschedule(at, Timer::Wake(uid));
            }
            self.task_ix.remove(&t.spec.id);
            out.push(Decision::Ended {
                task: t.spec.id,
                outcome,
                reason,
            });
        }
    }

    fn reserve(&mut self, now: Millis, a: AgentIx, media: Media, uid: TaskUid) {
        self.rr_counter += 1;
        let agent = &mut self.agents[a as usize];
        agent.load[media.index()] += 1;
        agent.total += 1;
        agent.idle_since = now;
        agent.rr = self.rr_counter;
        agent.offers.push(uid);
        self.sync_agent(a);
    }

    fn release(&mut self, now: Millis, a: AgentIx, media: Media) {
        let agent = &mut self.agents[a as usize];
        agent.load[media.index()] -= 1;
        agent.total -= 1;
        if agent.total == 0 {
            agent.idle_since = now;
        }
        self.sync_agent(a);
        self.dirty_agents.push(a);
    }

    /// Offers a waiting task to the given agents (best first).
    fn offer(
        &mut self,
        now: Millis,
        uid: TaskUid,
        mut agents: Vec<AgentIx>,
        trigger: Trigger,
        stats: ScanStats,
        out: &mut Vec<Decision>,
    ) {
        let step = self.tasks[&uid].step;
        let Status::Waiting { key, .. } = self.tasks[&uid].status else {
            debug_assert!(false, "only waiting tasks are offered");
            return;
        };
        self.unbucket(uid);
        let t = &self.tasks[&uid];
        let q = t.queue;
        let media = t.spec.media;
        let auto = self.queues[q].auto_accept || self.agents[agents[0] as usize].spec.auto_accept;
        if auto {
            agents.truncate(1);
        }
        let queue = &mut self.queues[q];
        if let Some(last) = queue.last_offer_at {
            let gap = now.since(last) as f64;
            queue.offer_interval_ms = Some(queue.offer_interval_ms.map_or(gap, |i| 0.8 * i + 0.2 * gap));
        }
        queue.last_offer_at = Some(now);
        let expires_at = now.plus_ms(self.offer_timeout_ms[media.index()]);
        let task_id = self.tasks[&uid].spec.id.clone();
        for &a in &agents {
            self.reserve(now, a, media, uid);
            self.schedule(expires_at, Timer::Offer { task: uid, agent: a });
            out.push(Decision::Offer {
                task: task_id.clone(),
                agent: self.agents[a as usize].spec.id.clone(),
                expires_at,
            });
        }
        if self.explain {
            let queue = &self.queues[q];
            let chosen: Vec<AgentId> = agents
                .iter()
                .map(|&a| self.agents[a as usize].spec.id.clone())
                .collect();
            let why = match &trigger {
                Trigger::TaskWaiting => format!(
                    "first {} eligible of {} agents scanned in queue {} ordered by {}",
                    chosen.len(),
                    stats.agents,
                    queue.name,
                    policy_name(queue.policy)
                ),
                Trigger::CapacityFreed(agent) => format!(
                    "agent {agent} had room; this was the best-scored of its eligible waiting tasks ({} looked at)",
                    stats.tasks
                ),
                Trigger::Transfer => "transferred to this agent".to_owned(),
            };
            self.explanations.push(Explanation {
                task: task_id.clone(),
                queue: queue.name.clone(),
                score: key.score,
                emergency: key.tier == 0,
                step,
                trigger,
                policy: queue.policy,
                agents_scanned: stats.agents,
                skipped_skills: stats.skills,
                skipped_capacity: stats.capacity,
                skipped_excluded: stats.excluded,
                tasks_scanned: stats.tasks,
                candidates: stats
                    .candidates
                    .iter()
                    .map(|&(a, verdict)| Candidate {
                        agent: self.agents[a as usize].spec.id.clone(),
                        verdict,
                    })
                    .collect(),
                chosen,
                why,
            });
        }
        self.task(uid).status = Status::Offered {
            offers: agents.iter().map(|&a| (a, expires_at)).collect(),
        };
        if auto {
            self.accept(now, uid, agents[0], out);
        }
    }

    fn accept(&mut self, now: Millis, uid: TaskUid, a: AgentIx, out: &mut Vec<Decision>) {
        let Status::Offered { offers } = mem::replace(&mut self.task(uid).status, Status::Limbo) else {
            return;
        };
        let media = self.tasks[&uid].spec.media;
        let task_id = self.tasks[&uid].spec.id.clone();
        for (b, expires_at) in offers {
            self.unschedule(expires_at, Timer::Offer { task: uid, agent: b });
            self.agents[b as usize].offers.retain(|o| *o != uid);
            if b != a {
                self.release(now, b, media);
                out.push(Decision::Rescind {
                    task: task_id.clone(),
                    agent: self.agents[b as usize].spec.id.clone(),
                    reason: RescindReason::TakenByOther,
                });
            }
        }
        let agent = &mut self.agents[a as usize];
        agent.assigned.push(uid);
        agent.misses = 0;
        let no_reply_at = self.queues[self.tasks[&uid].queue]
            .no_reply_ms
            .map(|ms| now.plus_ms(ms));
        if let Some(at) = no_reply_at {
            self.schedule(at, Timer::NoReply(uid));
        }
        let t = self.task(uid);
        t.waited_ms = now.since(t.wait_base);
        t.sla_next = t.spec.sla_ms.len();
        t.status = Status::Assigned {
            agent: a,
            no_reply_at,
        };
        out.push(Decision::Assigned {
            task: task_id,
            agent: self.agents[a as usize].spec.id.clone(),
        });
    }

    /// One offered agent rejected or let the offer time out.
    fn miss(&mut self, now: Millis, uid: TaskUid, a: AgentIx, timeout: bool, out: &mut Vec<Decision>) {
        let media = self.tasks[&uid].spec.media;
        let Status::Offered { offers } = &mut self.task(uid).status else {
            return;
        };
        let Some(pos) = offers.iter().position(|(o, _)| *o == a) else {
            return;
        };
        let (_, expires_at) = offers.remove(pos);
        let none_left = offers.is_empty();
        self.unschedule(expires_at, Timer::Offer { task: uid, agent: a });
        self.task(uid).excluded.push(a);
        self.agents[a as usize].offers.retain(|o| *o != uid);
        self.release(now, a, media);
        if timeout {
            out.push(Decision::Rescind {
                task: self.tasks[&uid].spec.id.clone(),
                agent: self.agents[a as usize].spec.id.clone(),
                reason: RescindReason::Timeout,
            });
        }
        if none_left {
            self.task(uid).status = Status::Limbo;
            self.rebucket(now, uid, out);
        }
        let agent = &mut self.agents[a as usize];
        agent.misses += 1;
        if self.max_misses > 0 && agent.misses >= self.max_misses && !agent.disabled {
            agent.disabled = true;
            out.push(Decision::AgentNotRoutable {
                agent: agent.spec.id.clone(),
                misses: agent.misses,
            });
            self.agent_lost(now, a, out);
        }
    }

    fn rescind_offers_of(&mut self, now: Millis, a: AgentIx, reason: RescindReason, out: &mut Vec<Decision>) {
        let offered = mem::take(&mut self.agents[a as usize].offers);
        for uid in offered {
            let media = self.tasks[&uid].spec.media;
            let Status::Offered { offers } = &mut self.task(uid).status else {
                continue;
            };
            let Some(pos) = offers.iter().position(|(o, _)| *o == a) else {
                continue;
            };
            let (_, expires_at) = offers.remove(pos);
            let none_left = offers.is_empty();
            self.unschedule(expires_at, Timer::Offer { task: uid, agent: a });
            self.release(now, a, media);
            out.push(Decision::Rescind {
                task: self.tasks[&uid].spec.id.clone(),
                agent: self.agents[a as usize].spec.id.clone(),
                reason,
            });
            if none_left {
                self.task(uid).status = Status::Limbo;
                self.rebucket(now, uid, out);
            }
        }
    }

    fn cancel(&mut self, now: Millis, uid: TaskUid, out: &mut Vec<Decision>) {
        self.unbucket(uid);
        let status = mem::replace(&mut self.task(uid).status, Status::Limbo);
        let media = self.tasks[&uid].spec.media;
        match status {
            Status::Waiting { .. } | Status::Limbo => {}
            Status::Offered { offers } => {
                for (a, expires_at) in offers {
                    self.unschedule(expires_at, Timer::Offer { task: uid, agent: a });
                    self.agents[a as usize].offers.retain(|o| *o != uid);
                    self.release(now, a, media);
                    out.push(Decision::Rescind {
                        task: self.tasks[&uid].spec.id.clone(),
                        agent: self.agents[a as usize].spec.id.clone(),
                        reason: RescindReason::Cancelled,
                    });
                }
            }
            Status::Assigned { agent, no_reply_at } => {
                if let Some(at) = no_reply_at {
                    self.unschedule(at, Timer::NoReply(uid));
                }
                self.agents[agent as usize].assigned.retain(|o| *o != uid);
                self.release(now, agent, media);
            }
            Status::WrapUp { agent, until } => {
                self.unschedule(until, Timer::WrapUp(uid));
                self.release(now, agent, media);
            }
        }
        if let Some(t) = self.tasks.remove(&uid) {
            self.task_ix.remove(&t.spec.id);
        }
    }

    /// The task is done with its agent (after wrap-up, if any): free the slot and forget the task.
    fn finish(&mut self, now: Millis, uid: TaskUid, agent: AgentIx) {
        self.agents[agent as usize].assigned.retain(|o| *o != uid);
        if let Some(t) = self.tasks.remove(&uid) {
            self.task_ix.remove(&t.spec.id);
            self.release(now, agent, t.spec.media);
        }
    }

    /// Takes an assigned task off its agent and puts it back in limbo, waiting-age restored.
    fn unassign(&mut self, now: Millis, uid: TaskUid, a: AgentIx) {
        if let Status::Assigned {
            no_reply_at: Some(at),
            ..
        } = self.tasks[&uid].status
        {
            self.unschedule(at, Timer::NoReply(uid));
        }
        self.agents[a as usize].assigned.retain(|o| *o != uid);
        let t = self.task(uid);
        t.status = Status::Limbo;
        t.wait_base = Millis(now.0.saturating_sub(t.waited_ms));
        let media = t.spec.media;
        self.release(now, a, media);
    }

    fn transfer(
        &mut self,
        now: Millis,
        task: TaskId,
        from: AgentId,
        to: TransferTarget,
        out: &mut Vec<Decision>,
    ) -> Result<(), RouterError> {
        let uid = self.task_of(&task)?;
        let f = self.agent_of(&from)?;
        if !matches!(self.tasks[&uid].status, Status::Assigned { agent, .. } if agent == f) {
            return Err(RouterError::NotAssigned { task, agent: from });
        }
        let media = self.tasks[&uid].spec.media;
        match to {
            TransferTarget::Queue(queue) => {
                let q = *self
                    .queue_ix
                    .get(&queue)
                    .ok_or(RouterError::UnknownQueue(queue))?;
                self.unassign(now, uid, f);
                let t = self.task(uid);
                t.queue = q;
                t.step = 0;
                t.stance.min_proficiency = None;
                t.excluded.push(f);
                out.push(Decision::Requeued {
                    task,
                    from,
                    reason: RequeueReason::Transferred,
                });
                self.rebucket(now, uid, out);
            }
            TransferTarget::Agent(target) => {
                let g = self.agent_of(&target)?;
                if g == f || !self.present(g) || !self.can_take(&self.agents[g as usize], media) {
                    return Err(RouterError::TargetUnavailable(target));
                }
                self.unassign(now, uid, f);
                // File it so `offer` can take it out; it is offered before anything else runs.
                self.rebucket(now, uid, out);
                if matches!(
                    self.tasks.get(&uid).map(|t| &t.status),
                    Some(Status::Waiting { .. })
                ) {
                    self.dirty_tasks.retain(|d| *d != uid);
                    self.offer(now, uid, vec![g], Trigger::Transfer, ScanStats::default(), out);
                }
            }
        }
        Ok(())
    }

    fn tick(&mut self, now: Millis, out: &mut Vec<Decision>) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Offer { task, agent } => {
                    if self.tasks.contains_key(&task) {
                        self.miss(now, task, agent, true, out);
                    }
                }
                Timer::Wake(uid) => {
                    if let Some(t) = self.tasks.get_mut(&uid) {
                        t.wake_at = None;
                        if matches!(t.status, Status::Waiting { .. }) {
                            self.unbucket(uid);
                            self.rebucket(now, uid, out);
                        }
                    }
                }
                Timer::NoReply(uid) => {
                    let Some(Status::Assigned { agent, .. }) = self.tasks.get(&uid).map(|t| &t.status) else {
                        continue;
                    };
                    let a = *agent;
                    self.unassign(now, uid, a);
                    self.task(uid).excluded.push(a);
                    out.push(Decision::Requeued {
                        task: self.tasks[&uid].spec.id.clone(),
                        from: self.agents[a as usize].spec.id.clone(),
                        reason: RequeueReason::NoReply,
                    });
                    self.rebucket(now, uid, out);
                }
                Timer::WrapUp(uid) => {
                    if let Some(Status::WrapUp { agent, .. }) = self.tasks.get(&uid).map(|t| &t.status) {
                        let a = *agent;
                        self.finish(now, uid, a);
                    }
                }
                Timer::Grace(a) => {
                    let agent = &mut self.agents[a as usize];
                    if agent.connected || agent.disconnected_at.take().is_none() {
                        continue;
                    }
                    let id = agent.spec.id.clone();
                    for uid in agent.assigned.clone() {
                        self.unassign(now, uid, a);
                        let boost = self.boost_ms;
                        let until = now.plus_ms(self.return_ms);
                        let t = self.task(uid);
                        t.boost_ms += boost;
                        t.preferred = Some((a, until));
                        t.spec.preferred_agent = Some((id.clone(), until));
                        t.stance.preferred = true;
                        self.agents[a as usize].preferred_by.push(uid);
                        out.push(Decision::Requeued {
                            task: self.tasks[&uid].spec.id.clone(),
                            from: id.clone(),
                            reason: RequeueReason::AgentDisconnected,
                        });
                        self.rebucket(now, uid, out);
                    }
                }
            }
        }
    }

    /// Restores the invariant: freed agents take their best tasks, then new waiting tasks, best score first,
    /// take the best agents of their queues.
    fn settle(&mut self, now: Millis, out: &mut Vec<Decision>) {
        // Scratch buffers are reused across events so a routine event allocates nothing here.
        let mut agents = mem::take(&mut self.scratch_agents);
        let mut keys = mem::take(&mut self.scratch_keys);
        while !self.dirty_agents.is_empty() || !self.dirty_tasks.is_empty() {
            agents.clear();
            agents.append(&mut self.dirty_agents);
            agents.sort_unstable();
            agents.dedup();
            agents.sort_by_key(|&a| (self.agents[a as usize].idle_since, a));
            for &a in &agents {
                self.drain(now, a, out);
            }
            keys.clear();
            for uid in &self.dirty_tasks {
                if let Some(Status::Waiting { key, .. }) = self.tasks.get(uid).map(|t| &t.status) {
                    keys.push(*key);
                }
            }
            self.dirty_tasks.clear();
            keys.sort_unstable();
            keys.dedup();
            for &key in &keys {
                self.place(now, key.uid, out);
            }
        }
        self.scratch_agents = agents;
        self.scratch_keys = keys;
    }

    /// An agent with room takes its best-scored eligible waiting tasks, one at a time.
    fn drain(&mut self, now: Millis, a: AgentIx, out: &mut Vec<Decision>) {
        loop {
            if !self.routable(a) {
                return;
            }
            let agent = &self.agents[a as usize];
            let mut best: Option<WaitKey> = None;
            let mut stats = ScanStats::default();
            for &q in &agent.queues {
                for &b in &self.queues[q].buckets {
                    let bucket = &self.buckets[b];
                    if bucket.tasks.is_empty()
                        || !self.can_take(agent, bucket.media)
                        || !meets(&agent.skills, &bucket.req)
                    {
                        continue;
                    }
                    for key in &bucket.tasks {
                        if best.is_some_and(|k| *key >= k) {
                            break;
                        }
                        stats.tasks += 1;
                        if self.task_allows(now, &self.tasks[&key.uid], b, a) {
                            best = Some(*key);
                            break;
                        }
                    }
                }
            }
            let Some(key) = best else { return };
            stats.note(self.explain, a, Verdict::Chosen);
            let trigger = Trigger::CapacityFreed(agent.spec.id.clone());
            self.offer(now, key.uid, vec![a], trigger, stats, out);
        }
    }

    /// A waiting task takes the best agents of its queue, if any are eligible.
    fn place(&mut self, now: Millis, uid: TaskUid, out: &mut Vec<Decision>) {
        let t = &self.tasks[&uid];
        let Status::Waiting { bucket, .. } = t.status else {
            return;
        };
        let q = &self.queues[t.queue];
        let b = &self.buckets[bucket];
        let mut stats = ScanStats::default();
        let mut chosen = Vec::new();
        let explain = self.explain;
        if let Some(p) = self.preferred_holder(now, t, bucket) {
            stats.agents = 1;
            if self.routable(p) && self.can_take(&self.agents[p as usize], b.media) {
                chosen.push(p);
                stats.note(explain, p, Verdict::ChosenPreferred);
            }
        } else {
            let want = if q.auto_accept { 1 } else { q.parallel };
            for &(_, _, a) in &self.pools[q.pool].members {
                stats.agents += 1;
                let agent = &self.agents[a as usize];
                if !self.can_take(agent, b.media) {
                    stats.capacity += 1;
                    stats.note(explain, a, Verdict::NoRoom);
                } else if !meets(&agent.skills, &b.req) {
                    stats.skills += 1;
                    stats.note(explain, a, Verdict::MissingSkill);
                } else if t.excluded.contains(&a) {
                    stats.excluded += 1;
                    stats.note(explain, a, Verdict::Excluded);
                } else {
                    chosen.push(a);
                    stats.note(explain, a, Verdict::Chosen);
                    if chosen.len() >= want {
                        break;
                    }
                }
            }
        }
        if !chosen.is_empty() {
            self.offer(now, uid, chosen, Trigger::TaskWaiting, stats, out);
        }
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
