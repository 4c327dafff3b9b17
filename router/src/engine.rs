//! The routing state machine.
//!
//! This first engine is deliberately simple: strict score order (age minus a priority offset), the
//! longest-idle eligible agent, single offers with a timeout, exclusion of agents who missed an offer, and a
//! grace window for agents whose socket dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use omnigate_config::Routing;

use crate::{
    AgentId, AgentSpec, Decision, Event, Media, Millis, Presence, RequeueReason, RescindReason, RouterError,
    TaskId, TaskSpec, TransferTarget,
};

/// The routing engine. Feed it events; execute its decisions.
#[derive(Debug)]
pub struct Router {
    offer_timeout_ms: u64,
    priority_offset_ms: u64,
    grace_ms: u64,
    queues: BTreeMap<String, Queue>,
    agents: HashMap<AgentId, AgentState>,
    tasks: HashMap<TaskId, TaskState>,
    /// Waiting tasks by score (lower first), then arrival order.
    waiting: BTreeSet<(i64, u64, TaskId)>,
    arrivals: u64,
}

#[derive(Debug)]
struct Queue {
    skills: BTreeMap<String, u8>,
    priority: u8,
}

#[derive(Debug)]
struct AgentState {
    spec: AgentSpec,
    connected: bool,
    presence: Presence,
    disconnected_at: Option<Millis>,
    /// Tasks offered or assigned, by media.
    load: BTreeMap<Media, u32>,
    idle_since: Millis,
}

#[derive(Debug)]
struct TaskState {
    spec: TaskSpec,
    score: i64,
    arrival: u64,
    status: Status,
    excluded: HashSet<AgentId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Waiting,
    Offered { agent: AgentId, expires_at: Millis },
    Assigned { agent: AgentId },
}

impl Router {
    /// Builds an empty router from the routing configuration.
    ///
    /// # Errors
    /// [`RouterError::Config`] when the configuration is unusable.
    pub fn new(config: &Routing) -> Result<Router, RouterError> {
        if config.offer_timeout_secs == 0 {
            return Err(RouterError::Config(
                "offer_timeout_secs must be positive".to_owned(),
            ));
        }
        let queues = config
            .queues
            .iter()
            .map(|q| {
                (
                    q.name.clone(),
                    Queue {
                        skills: q.skills.clone(),
                        priority: q.priority,
                    },
                )
            })
            .collect();
        Ok(Router {
            offer_timeout_ms: config.offer_timeout_secs * 1000,
            priority_offset_ms: config.priority_offset_secs * 1000,
            grace_ms: config.disconnect_grace_secs * 1000,
            queues,
            agents: HashMap::new(),
            tasks: HashMap::new(),
            waiting: BTreeSet::new(),
            arrivals: 0,
        })
    }

    /// Applies one event at time `now` and returns what the gateway must do, in order.
    ///
    /// # Errors
    /// The event is refused and the state is unchanged (unknown ids, an offer that no longer stands, ...).
    pub fn handle(&mut self, now: Millis, event: Event) -> Result<Vec<Decision>, RouterError> {
        let mut out = Vec::new();
        match event {
            Event::AgentRegistered(spec) => {
                let id = spec.id.clone();
                match self.agents.get_mut(&id) {
                    Some(agent) => agent.spec = spec,
                    None => {
                        self.agents.insert(
                            id,
                            AgentState {
                                spec,
                                connected: false,
                                presence: Presence::Offline,
                                disconnected_at: None,
                                load: BTreeMap::new(),
                                idle_since: now,
                            },
                        );
                    }
                }
            }
            Event::AgentConnected(id) => {
                let agent = self.agent_mut(&id)?;
                agent.connected = true;
                agent.disconnected_at = None;
            }
            Event::AgentDisconnected(id) => {
                let agent = self.agent_mut(&id)?;
                agent.connected = false;
                agent.disconnected_at = Some(now);
                self.rescind_offers_of(&id, RescindReason::AgentUnavailable, &mut out);
            }
            Event::PresenceChanged { agent: id, presence } => {
                let agent = self.agent_mut(&id)?;
                let was_available = agent.presence == Presence::Available;
                agent.presence = presence;
                if presence == Presence::Available && !was_available {
                    agent.idle_since = now;
                }
                if presence != Presence::Available {
                    self.rescind_offers_of(&id, RescindReason::AgentUnavailable, &mut out);
                }
            }
            Event::TaskArrived(spec) => {
                if self.tasks.contains_key(&spec.id) {
                    return Err(RouterError::DuplicateTask(spec.id));
                }
                let queue = self
                    .queues
                    .get(&spec.queue)
                    .ok_or_else(|| RouterError::UnknownQueue(spec.queue.clone()))?;
                let priority = u64::from(spec.priority.max(queue.priority));
                let score = spec.enqueued_at.0 as i64 - (priority * self.priority_offset_ms) as i64;
                self.arrivals += 1;
                let id = spec.id.clone();
                self.waiting.insert((score, self.arrivals, id.clone()));
                self.tasks.insert(
                    id,
                    TaskState {
                        spec,
                        score,
                        arrival: self.arrivals,
                        status: Status::Waiting,
                        excluded: HashSet::new(),
                    },
                );
            }
            Event::TaskCancelled(id) => {
                let task = self
                    .tasks
                    .remove(&id)
                    .ok_or_else(|| RouterError::UnknownTask(id.clone()))?;
                match task.status {
                    Status::Waiting => {
                        self.waiting.remove(&(task.score, task.arrival, id));
                    }
                    Status::Offered { agent, .. } => {
                        self.release(&agent, task.spec.media, now);
                        out.push(Decision::Rescind {
                            task: id,
                            agent,
                            reason: RescindReason::Cancelled,
                        });
                    }
                    Status::Assigned { agent } => self.release(&agent, task.spec.media, now),
                }
            }
            Event::OfferAccepted { task: id, agent } => {
                let task = self
                    .tasks
                    .get_mut(&id)
                    .ok_or_else(|| RouterError::UnknownTask(id.clone()))?;
                match &task.status {
                    Status::Offered { agent: offered, .. } if *offered == agent => {}
                    _ => return Err(RouterError::NoSuchOffer { task: id, agent }),
                }
                task.status = Status::Assigned { agent: agent.clone() };
                out.push(Decision::Assigned { task: id, agent });
            }
            Event::OfferRejected { task: id, agent } => {
                let task = self
                    .tasks
                    .get_mut(&id)
                    .ok_or_else(|| RouterError::UnknownTask(id.clone()))?;
                match &task.status {
                    Status::Offered { agent: offered, .. } if *offered == agent => {}
                    _ => return Err(RouterError::NoSuchOffer { task: id, agent }),
                }
                let media = task.spec.media;
                task.excluded.insert(agent.clone());
                self.requeue(&id);
                self.release(&agent, media, now);
            }
            Event::TaskCompleted(id) => {
                let task = self
                    .tasks
                    .get(&id)
                    .ok_or_else(|| RouterError::UnknownTask(id.clone()))?;
                let Status::Assigned { agent } = task.status.clone() else {
                    return Err(RouterError::UnknownTask(id));
                };
                let media = task.spec.media;
                self.tasks.remove(&id);
                self.release(&agent, media, now);
            }
            Event::Transfer { task: id, from, to } => self.transfer(now, id, from, to, &mut out)?,
            Event::Tick => self.expire(now, &mut out),
        }
        self.dispatch(now, &mut out);
        Ok(out)
    }

    /// The earliest time at which [`Event::Tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Millis> {
        let offers = self.tasks.values().filter_map(|t| match t.status {
            Status::Offered { expires_at, .. } => Some(expires_at),
            _ => None,
        });
        let graces = self.agents.values().filter_map(|a| {
            a.disconnected_at
                .filter(|_| self.assigned_to(&a.spec.id).next().is_some())
                .map(|at| at.plus_ms(self.grace_ms))
        });
        offers.chain(graces).min()
    }

    /// 1-based position of a waiting task among the waiting tasks of its queue, if it is waiting.
    pub fn queue_position(&self, task: &TaskId) -> Option<usize> {
        let state = self.tasks.get(task)?;
        if state.status != Status::Waiting {
            return None;
        }
        let queue = &state.spec.queue;
        let ahead = self
            .waiting
            .range(..(state.score, state.arrival, task.clone()))
            .filter(|(_, _, id)| self.tasks.get(id).is_some_and(|t| &t.spec.queue == queue))
            .count();
        Some(ahead + 1)
    }

    /// The agent a task is assigned to, if it is.
    pub fn assignee(&self, task: &TaskId) -> Option<&AgentId> {
        match &self.tasks.get(task)?.status {
            Status::Assigned { agent } => Some(agent),
            _ => None,
        }
    }

    fn agent_mut(&mut self, id: &AgentId) -> Result<&mut AgentState, RouterError> {
        self.agents
            .get_mut(id)
            .ok_or_else(|| RouterError::UnknownAgent(id.clone()))
    }

    fn assigned_to<'a>(&'a self, agent: &'a AgentId) -> impl Iterator<Item = &'a TaskId> + 'a {
        self.tasks.iter().filter_map(move |(id, t)| match &t.status {
            Status::Assigned { agent: a } if a == agent => Some(id),
            _ => None,
        })
    }

    fn transfer(
        &mut self,
        now: Millis,
        id: TaskId,
        from: AgentId,
        to: TransferTarget,
        out: &mut Vec<Decision>,
    ) -> Result<(), RouterError> {
        let task = self
            .tasks
            .get(&id)
            .ok_or_else(|| RouterError::UnknownTask(id.clone()))?;
        if task.status != (Status::Assigned { agent: from.clone() }) {
            return Err(RouterError::NotAssigned {
                task: id,
                agent: from,
            });
        }
        let media = task.spec.media;
        match to {
            TransferTarget::Queue(queue) => {
                if !self.queues.contains_key(&queue) {
                    return Err(RouterError::UnknownQueue(queue));
                }
                let task = self
                    .tasks
                    .get_mut(&id)
                    .ok_or_else(|| RouterError::UnknownTask(id.clone()))?;
                task.spec.queue = queue;
                task.excluded.insert(from.clone());
                self.requeue(&id);
                self.release(&from, media, now);
                out.push(Decision::Requeued {
                    task: id,
                    from,
                    reason: RequeueReason::Transferred,
                });
            }
            TransferTarget::Agent(target) => {
                let agent = self
                    .agents
                    .get(&target)
                    .ok_or_else(|| RouterError::UnknownAgent(target.clone()))?;
                if target == from || !self.can_take(agent, media) {
                    return Err(RouterError::TargetUnavailable(target));
                }
                self.release(&from, media, now);
                self.reserve(&target, media);
                let expires_at = now.plus_ms(self.offer_timeout_ms);
                if let Some(task) = self.tasks.get_mut(&id) {
                    task.status = Status::Offered {
                        agent: target.clone(),
                        expires_at,
                    };
                }
                out.push(Decision::Offer {
                    task: id,
                    agent: target,
                    expires_at,
                });
            }
        }
        Ok(())
    }

    fn expire(&mut self, now: Millis, out: &mut Vec<Decision>) {
        let expired: Vec<(TaskId, AgentId, Media)> = self
            .tasks
            .iter()
            .filter_map(|(id, t)| match &t.status {
                Status::Offered { agent, expires_at } if *expires_at <= now => {
                    Some((id.clone(), agent.clone(), t.spec.media))
                }
                _ => None,
            })
            .collect();
        for (id, agent, media) in expired {
            if let Some(task) = self.tasks.get_mut(&id) {
                task.excluded.insert(agent.clone());
            }
            self.requeue(&id);
            self.release(&agent, media, now);
            out.push(Decision::Rescind {
                task: id,
                agent,
                reason: RescindReason::Timeout,
            });
        }
        let lapsed: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| {
                a.disconnected_at
                    .is_some_and(|at| at.plus_ms(self.grace_ms) <= now)
            })
            .map(|a| a.spec.id.clone())
            .collect();
        for agent in lapsed {
            let tasks: Vec<TaskId> = self.assigned_to(&agent).cloned().collect();
            for id in tasks {
                let Some(media) = self.tasks.get(&id).map(|t| t.spec.media) else {
                    continue;
                };
                self.requeue(&id);
                self.release(&agent, media, now);
                out.push(Decision::Requeued {
                    task: id,
                    from: agent.clone(),
                    reason: RequeueReason::AgentDisconnected,
                });
            }
            if let Some(state) = self.agents.get_mut(&agent) {
                state.disconnected_at = None;
            }
        }
    }

    fn rescind_offers_of(&mut self, agent: &AgentId, reason: RescindReason, out: &mut Vec<Decision>) {
        let offered: Vec<(TaskId, Media)> = self
            .tasks
            .iter()
            .filter(|(_, t)| matches!(&t.status, Status::Offered { agent: a, .. } if a == agent))
            .map(|(id, t)| (id.clone(), t.spec.media))
            .collect();
        for (id, media) in offered {
            self.requeue(&id);
            if let Some(state) = self.agents.get_mut(agent) {
                if let Some(units) = state.load.get_mut(&media) {
                    *units = units.saturating_sub(1);
                }
            }
            out.push(Decision::Rescind {
                task: id,
                agent: agent.clone(),
                reason,
            });
        }
    }

    fn requeue(&mut self, id: &TaskId) {
        if let Some(task) = self.tasks.get_mut(id) {
            task.status = Status::Waiting;
            self.waiting.insert((task.score, task.arrival, id.clone()));
        }
    }

    fn reserve(&mut self, agent: &AgentId, media: Media) {
        if let Some(state) = self.agents.get_mut(agent) {
            *state.load.entry(media).or_default() += 1;
        }
    }

    fn release(&mut self, agent: &AgentId, media: Media, now: Millis) {
        if let Some(state) = self.agents.get_mut(agent) {
            if let Some(units) = state.load.get_mut(&media) {
                *units = units.saturating_sub(1);
            }
            if state.load.values().sum::<u32>() == 0 {
                state.idle_since = now;
            }
        }
    }

    fn can_take(&self, agent: &AgentState, media: Media) -> bool {
        let total: u32 = agent.load.values().sum();
        let on_media = agent.load.get(&media).copied().unwrap_or(0);
        let media_cap = agent.spec.capacity.get(&media).copied().unwrap_or(0);
        agent.connected
            && agent.presence == Presence::Available
            && total < agent.spec.max_total
            && on_media < media_cap
    }

    fn qualifies(&self, agent: &AgentState, task: &TaskState) -> bool {
        let queue_skills = self.queues.get(&task.spec.queue).map(|q| &q.skills);
        queue_skills
            .into_iter()
            .flatten()
            .chain(task.spec.skills.iter())
            .all(|(skill, min)| agent.spec.skills.get(skill).is_some_and(|level| level >= min))
    }

    /// Offers waiting tasks, best score first, each to the longest-idle eligible agent.
    fn dispatch(&mut self, now: Millis, out: &mut Vec<Decision>) {
        let mut still_waiting = Vec::new();
        while let Some(entry) = self.waiting.pop_first() {
            let id = entry.2.clone();
            let Some(task) = self.tasks.get(&id) else { continue };
            let chosen = self
                .agents
                .values()
                .filter(|a| {
                    !task.excluded.contains(&a.spec.id)
                        && self.can_take(a, task.spec.media)
                        && self.qualifies(a, task)
                })
                .min_by(|a, b| {
                    a.idle_since
                        .cmp(&b.idle_since)
                        .then_with(|| a.spec.id.cmp(&b.spec.id))
                })
                .map(|a| a.spec.id.clone());
            match chosen {
                Some(agent) => {
                    let media = task.spec.media;
                    let expires_at = now.plus_ms(self.offer_timeout_ms);
                    self.reserve(&agent, media);
                    if let Some(task) = self.tasks.get_mut(&id) {
                        task.status = Status::Offered {
                            agent: agent.clone(),
                            expires_at,
                        };
                    }
                    out.push(Decision::Offer {
                        task: id,
                        agent,
                        expires_at,
                    });
                }
                None => still_waiting.push(entry),
            }
        }
        self.waiting.extend(still_waiting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new(&Routing {
            offer_timeout_secs: 30,
            ..Routing::default()
        })
        .unwrap()
    }

    fn agent(id: &str) -> AgentSpec {
        AgentSpec {
            id: AgentId::from(id),
            skills: BTreeMap::new(),
            capacity: BTreeMap::from([(Media::Web, 2)]),
            max_total: 2,
        }
    }

    fn task(id: &str, at: u64) -> TaskSpec {
        TaskSpec {
            id: TaskId::from(id),
            queue: "general".to_owned(),
            media: Media::Web,
            priority: 0,
            skills: BTreeMap::new(),
            attributes: BTreeMap::new(),
            preferred_agent: None,
            enqueued_at: Millis(at),
        }
    }

    fn online(r: &mut Router, id: &str, now: u64) {
        r.handle(Millis(now), Event::AgentRegistered(agent(id))).unwrap();
        r.handle(Millis(now), Event::AgentConnected(AgentId::from(id)))
            .unwrap();
        r.handle(
            Millis(now),
            Event::PresenceChanged {
                agent: AgentId::from(id),
                presence: Presence::Available,
            },
        )
        .unwrap();
    }

    #[test]
    fn offer_accept_assigns_and_reject_reoffers_elsewhere() {
        let mut r = router();
        online(&mut r, "a", 0);
        online(&mut r, "b", 10);
        let d = r
            .handle(Millis(100), Event::TaskArrived(task("t1", 100)))
            .unwrap();
        assert_eq!(
            d,
            vec![Decision::Offer {
                task: "t1".into(),
                agent: "a".into(),
                expires_at: Millis(30_100)
            }]
        );
        let d = r
            .handle(
                Millis(200),
                Event::OfferRejected {
                    task: "t1".into(),
                    agent: "a".into(),
                },
            )
            .unwrap();
        assert_eq!(
            d,
            vec![Decision::Offer {
                task: "t1".into(),
                agent: "b".into(),
                expires_at: Millis(30_200)
            }]
        );
        let d = r
            .handle(
                Millis(300),
                Event::OfferAccepted {
                    task: "t1".into(),
                    agent: "b".into(),
                },
            )
            .unwrap();
        assert_eq!(
            d,
            vec![Decision::Assigned {
                task: "t1".into(),
                agent: "b".into()
            }]
        );
        assert!(r
            .handle(
                Millis(300),
                Event::OfferAccepted {
                    task: "t1".into(),
                    agent: "a".into()
                }
            )
            .is_err());
    }

    #[test]
    fn offer_times_out_on_tick() {
        let mut r = router();
        online(&mut r, "a", 0);
        r.handle(Millis(0), Event::TaskArrived(task("t1", 0))).unwrap();
        assert_eq!(r.next_deadline(), Some(Millis(30_000)));
        let d = r.handle(Millis(30_000), Event::Tick).unwrap();
        assert_eq!(
            d,
            vec![Decision::Rescind {
                task: "t1".into(),
                agent: "a".into(),
                reason: RescindReason::Timeout
            }]
        );
        assert_eq!(r.queue_position(&"t1".into()), Some(1));
    }

    #[test]
    fn disconnected_agent_tasks_requeue_after_grace() {
        let mut r = router();
        online(&mut r, "a", 0);
        r.handle(Millis(0), Event::TaskArrived(task("t1", 0))).unwrap();
        r.handle(
            Millis(1),
            Event::OfferAccepted {
                task: "t1".into(),
                agent: "a".into(),
            },
        )
        .unwrap();
        r.handle(Millis(10), Event::AgentDisconnected("a".into()))
            .unwrap();
        assert_eq!(r.next_deadline(), Some(Millis(60_010)));
        let d = r.handle(Millis(60_010), Event::Tick).unwrap();
        assert_eq!(
            d,
            vec![Decision::Requeued {
                task: "t1".into(),
                from: "a".into(),
                reason: RequeueReason::AgentDisconnected
            }]
        );
    }
}
