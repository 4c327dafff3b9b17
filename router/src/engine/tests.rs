use std::collections::BTreeMap;

use omnigate_config::{QueueConfig, StepConfig, TerminalAction};

use super::*;

fn config(queues: Vec<QueueConfig>) -> Routing {
    Routing {
        offer_timeout_secs: 30,
        queues,
        ..Routing::default()
    }
}

fn router() -> Router {
    Router::new(&config(vec![QueueConfig::named("general")])).unwrap()
}

fn agent(id: &str) -> AgentSpec {
    AgentSpec::new(AgentId::from(id))
        .with_capacity(Media::Web, 2)
        .with_max_total(2)
}

fn task(id: &str, at: u64) -> TaskSpec {
    TaskSpec::new(TaskId::from(id), "general", Media::Web, Millis(at))
}

fn online_spec(r: &mut Router, spec: AgentSpec, now: u64) -> Vec<Decision> {
    let id = spec.id.clone();
    r.handle(Millis(now), Event::AgentRegistered(spec)).unwrap();
    r.handle(Millis(now), Event::AgentConnected(id.clone())).unwrap();
    r.handle(
        Millis(now),
        Event::PresenceChanged {
            agent: id,
            presence: Presence::Available,
        },
    )
    .unwrap()
}

fn online(r: &mut Router, id: &str, now: u64) -> Vec<Decision> {
    online_spec(r, agent(id), now)
}

fn offer(task: &str, agent: &str, expires_at: u64) -> Decision {
    Decision::Offer {
        task: task.into(),
        agent: agent.into(),
        expires_at: Millis(expires_at),
    }
}

fn accept(r: &mut Router, now: u64, task: &str, agent: &str) -> Vec<Decision> {
    r.handle(
        Millis(now),
        Event::OfferAccepted {
            task: task.into(),
            agent: agent.into(),
        },
    )
    .unwrap()
}

fn reject(r: &mut Router, now: u64, task: &str, agent: &str) -> Vec<Decision> {
    r.handle(
        Millis(now),
        Event::OfferRejected {
            task: task.into(),
            agent: agent.into(),
        },
    )
    .unwrap()
}

fn arrive(r: &mut Router, now: u64, spec: TaskSpec) -> Vec<Decision> {
    let d = r.handle(Millis(now), Event::TaskArrived(spec)).unwrap();
    r.check_consistency(Millis(now)).unwrap();
    d
}

#[test]
fn offer_accept_assigns_and_reject_reoffers_elsewhere() {
    let mut r = router();
    online(&mut r, "a", 0);
    online(&mut r, "b", 10);
    assert_eq!(
        arrive(&mut r, 100, task("t1", 100)),
        vec![offer("t1", "a", 30_100)]
    );
    assert_eq!(reject(&mut r, 200, "t1", "a"), vec![offer("t1", "b", 30_200)]);
    assert_eq!(
        accept(&mut r, 300, "t1", "b"),
        vec![Decision::Assigned {
            task: "t1".into(),
            agent: "b".into()
        }]
    );
    assert_eq!(r.assignee(&"t1".into()), Some(&AgentId::from("b")));
    assert!(r
        .handle(
            Millis(300),
            Event::OfferAccepted {
                task: "t1".into(),
                agent: "a".into()
            }
        )
        .is_err());
    r.check_consistency(Millis(300)).unwrap();
}

#[test]
fn offer_times_out_on_tick_and_the_task_is_not_offered_to_that_agent_again() {
    let mut r = router();
    online(&mut r, "a", 0);
    arrive(&mut r, 0, task("t1", 0));
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
    // A new agent gets it; the old one never does.
    assert_eq!(online(&mut r, "b", 31_000), vec![offer("t1", "b", 61_000)]);
}

#[test]
fn disconnected_agent_tasks_requeue_after_grace_and_return_to_it_first() {
    let mut r = router();
    online(&mut r, "a", 0);
    arrive(&mut r, 0, task("t1", 0));
    accept(&mut r, 1, "t1", "a");
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
    // An older task arrives meanwhile; "a" comes back within the return window and gets its own task
    // first (preferred, and boosted past the older one), then the older one.
    arrive(&mut r, 60_020, task("x1", 0));
    assert_eq!(r.queue_position(&"t1".into()), Some(1));
    let d = r
        .handle(Millis(60_030), Event::AgentConnected("a".into()))
        .unwrap();
    assert_eq!(d, vec![offer("t1", "a", 90_030), offer("x1", "a", 90_030)]);
    r.check_consistency(Millis(60_030)).unwrap();
}

#[test]
fn reconnect_within_grace_keeps_tasks_and_pending_offers_go_elsewhere_at_once() {
    let mut r = router();
    online(&mut r, "a", 0);
    arrive(&mut r, 0, task("t1", 0));
    accept(&mut r, 1, "t1", "a");
    arrive(&mut r, 2, task("t2", 2));
    online(&mut r, "b", 3);
    let d = r.handle(Millis(5), Event::AgentDisconnected("a".into())).unwrap();
    assert_eq!(
        d,
        vec![
            Decision::Rescind {
                task: "t2".into(),
                agent: "a".into(),
                reason: RescindReason::AgentUnavailable
            },
            offer("t2", "b", 30_005)
        ]
    );
    accept(&mut r, 6, "t2", "b");
    r.handle(Millis(30_000), Event::AgentConnected("a".into()))
        .unwrap();
    assert_eq!(r.handle(Millis(70_000), Event::Tick).unwrap(), vec![]);
    assert_eq!(r.assignee(&"t1".into()), Some(&AgentId::from("a")));
}

#[test]
fn priority_is_worth_its_offset_and_emergencies_go_first() {
    let mut r = router();
    // Three tasks wait; priority 1 is worth 60 s, so "p1" (59 s younger) beats "old".
    arrive(&mut r, 0, task("old", 0));
    arrive(&mut r, 59_000, task("p1", 59_000).with_priority(1));
    arrive(&mut r, 61_000, task("p1late", 61_000).with_priority(1));
    arrive(&mut r, 90_000, task("sos", 90_000).emergency());
    assert_eq!(r.queue_position(&"sos".into()), Some(1));
    assert_eq!(r.queue_position(&"p1".into()), Some(2));
    assert_eq!(r.queue_position(&"old".into()), Some(3));
    assert_eq!(r.queue_position(&"p1late".into()), Some(4));
    let spec = AgentSpec::new("a".into())
        .with_capacity(Media::Web, 4)
        .with_max_total(4);
    let d = online_spec(&mut r, spec, 100_000);
    let order: Vec<_> = d
        .iter()
        .map(|d| match d {
            Decision::Offer { task, .. } => task.as_str().to_owned(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(order, ["sos", "p1", "old", "p1late"]);
}

#[test]
fn priority_change_reorders_at_once() {
    let mut r = router();
    arrive(&mut r, 0, task("a", 0));
    arrive(&mut r, 1_000, task("b", 1_000));
    r.handle(
        Millis(2_000),
        Event::PriorityChanged {
            task: "b".into(),
            priority: 1,
        },
    )
    .unwrap();
    assert_eq!(r.queue_position(&"b".into()), Some(1));
    let w = r.waiting("general").unwrap();
    assert_eq!(w.iter().map(|w| w.task.as_str()).collect::<Vec<_>>(), ["b", "a"]);
}

fn cards_router() -> Router {
    let mut cards = QueueConfig::named("cards");
    cards.skills = BTreeMap::from([("cards".to_owned(), 2)]);
    cards.steps = vec![
        StepConfig {
            after_secs: 0,
            min_proficiency: Some(4),
            ..StepConfig::default()
        },
        StepConfig {
            after_secs: 30,
            min_proficiency: Some(2),
            ..StepConfig::default()
        },
        StepConfig {
            after_secs: 60,
            relax_optional: Some(true),
            ..StepConfig::default()
        },
        StepConfig {
            after_secs: 120,
            overflow: Some("general".to_owned()),
            ..StepConfig::default()
        },
    ];
    let mut general = QueueConfig::named("general");
    general.steps = vec![StepConfig {
        after_secs: 300,
        terminal: Some(TerminalAction::Callback),
        ..StepConfig::default()
    }];
    Router::new(&config(vec![general, cards])).unwrap()
}

#[test]
fn workflow_narrows_then_relaxes_then_overflows_then_ends() {
    let mut r = cards_router();
    online_spec(
        &mut r,
        agent("junior").with_skill("cards", 2).with_skill("english", 5),
        0,
    );
    online_spec(&mut r, agent("plain").with_skill("english", 5), 0);
    let spec = TaskSpec::new("t".into(), "cards", Media::Web, Millis(0))
        .with_skill("english", 3)
        .with_optional_skill("wealth", 3);
    assert_eq!(arrive(&mut r, 0, spec), vec![]);
    assert_eq!(r.next_deadline(), Some(Millis(30_000)));
    // Proficiency 2 is now enough, but the optional skill still bars the junior.
    assert_eq!(r.handle(Millis(30_000), Event::Tick).unwrap(), vec![]);
    // Optional skills dropped: the junior agent qualifies.
    assert_eq!(
        r.handle(Millis(60_000), Event::Tick).unwrap(),
        vec![offer("t", "junior", 90_000)]
    );
    reject(&mut r, 61_000, "t", "junior");
    // Overflow to general: the agent without the cards skill may take it.
    let d = r.handle(Millis(120_000), Event::Tick).unwrap();
    assert_eq!(
        d,
        vec![
            Decision::Overflowed {
                task: "t".into(),
                from: "cards".into(),
                to: "general".into()
            },
            offer("t", "plain", 150_000)
        ]
    );
    reject(&mut r, 121_000, "t", "plain");
    assert_eq!(
        r.handle(Millis(300_000), Event::Tick).unwrap(),
        vec![Decision::Ended {
            task: "t".into(),
            outcome: Outcome::Callback,
            reason: EndReason::WorkflowStep
        }]
    );
    assert_eq!(r.next_deadline(), None);
    r.check_consistency(Millis(300_000)).unwrap();
}

#[test]
fn expert_gets_it_at_once_while_narrowed() {
    let mut r = cards_router();
    online_spec(&mut r, agent("junior").with_skill("cards", 2), 0);
    online_spec(&mut r, agent("expert").with_skill("cards", 5), 10);
    let spec = TaskSpec::new("t".into(), "cards", Media::Web, Millis(100));
    assert_eq!(arrive(&mut r, 100, spec), vec![offer("t", "expert", 30_100)]);
}

#[test]
fn preferred_agent_window_then_anyone() {
    let mut r = router();
    let one = |id: &str| {
        AgentSpec::new(AgentId::from(id))
            .with_capacity(Media::Web, 1)
            .with_max_total(1)
    };
    online_spec(&mut r, one("rm"), 0);
    online_spec(&mut r, one("other"), 5);
    arrive(&mut r, 10, task("first", 10));
    accept(&mut r, 11, "first", "rm");
    let spec = task("vip", 20).with_preferred_agent("rm".into(), Millis(60_000));
    assert_eq!(arrive(&mut r, 20, spec), vec![]);
    assert_eq!(r.next_deadline(), Some(Millis(60_000)));
    r.check_consistency(Millis(30)).unwrap();
    let mut r2 = router();
    online_spec(&mut r2, one("rm"), 0);
    online_spec(&mut r2, one("other"), 5);
    arrive(&mut r2, 10, task("first", 10));
    accept(&mut r2, 11, "first", "rm");
    let spec = task("vip", 20).with_preferred_agent("rm".into(), Millis(60_000));
    arrive(&mut r2, 20, spec);
    // The window ends: anyone may take it.
    assert_eq!(
        r2.handle(Millis(60_000), Event::Tick).unwrap(),
        vec![offer("vip", "other", 90_000)]
    );
}

#[test]
fn preferred_agent_completing_takes_the_waiting_task() {
    let mut r = router();
    let one = |id: &str| {
        AgentSpec::new(AgentId::from(id))
            .with_capacity(Media::Web, 1)
            .with_max_total(1)
    };
    online_spec(&mut r, one("rm"), 0);
    online_spec(&mut r, one("other"), 5);
    arrive(&mut r, 10, task("first", 10));
    accept(&mut r, 11, "first", "rm");
    let spec = task("vip", 20).with_preferred_agent("rm".into(), Millis(60_000));
    arrive(&mut r, 20, spec);
    let d = r
        .handle(Millis(100), Event::TaskCompleted("first".into()))
        .unwrap();
    assert_eq!(d, vec![offer("vip", "rm", 30_100)]);
    // And if the preferred agent goes away, the others may take it at once.
    let d = r
        .handle(
            Millis(200),
            Event::PresenceChanged {
                agent: "rm".into(),
                presence: Presence::Away,
            },
        )
        .unwrap();
    assert_eq!(
        d,
        vec![
            Decision::Rescind {
                task: "vip".into(),
                agent: "rm".into(),
                reason: RescindReason::AgentUnavailable
            },
            offer("vip", "other", 30_200)
        ]
    );
}

fn policy_router(policy: SelectionPolicy) -> Router {
    let mut q = QueueConfig::named("general");
    q.policy = policy;
    Router::new(&config(vec![q])).unwrap()
}

#[test]
fn least_occupied_prefers_the_emptiest_agent() {
    let mut r = policy_router(SelectionPolicy::LeastOccupied);
    let big = AgentSpec::new("big".into())
        .with_capacity(Media::Web, 4)
        .with_max_total(4);
    online_spec(&mut r, big, 0);
    online(&mut r, "small", 10);
    arrive(&mut r, 20, task("t1", 20)); // both empty: longest idle "big"
    arrive(&mut r, 21, task("t2", 21)); // big 1/4 = 250, small 0
    arrive(&mut r, 22, task("t3", 22)); // big 250, small 500
    let owners: Vec<_> = ["t1", "t2", "t3"]
        .iter()
        .map(|t| {
            accept(&mut r, 30, t, if *t == "t2" { "small" } else { "big" });
            r.assignee(&(*t).into()).unwrap().clone()
        })
        .collect();
    assert_eq!(owners, [AgentId::from("big"), "small".into(), "big".into()]);
}

#[test]
fn round_robin_rotates_offers() {
    let mut r = policy_router(SelectionPolicy::RoundRobin);
    let wide = |id: &str| {
        AgentSpec::new(AgentId::from(id))
            .with_capacity(Media::Web, 10)
            .with_max_total(10)
    };
    online_spec(&mut r, wide("a"), 0);
    online_spec(&mut r, wide("b"), 1);
    online_spec(&mut r, wide("c"), 2);
    let mut got = Vec::new();
    for i in 0..6 {
        for d in arrive(&mut r, 10 + i, task(&format!("t{i}"), 10 + i)) {
            if let Decision::Offer { agent, .. } = d {
                got.push(agent.0);
            }
        }
    }
    assert_eq!(got, ["a", "b", "c", "a", "b", "c"]);
}

#[test]
fn parallel_offers_first_accept_wins_and_others_are_rescinded() {
    let mut q = QueueConfig::named("general");
    q.parallel_offers = 2;
    let mut r = Router::new(&config(vec![q])).unwrap();
    online(&mut r, "a", 0);
    online(&mut r, "b", 1);
    online(&mut r, "c", 2);
    assert_eq!(
        arrive(&mut r, 10, task("t", 10)),
        vec![offer("t", "a", 30_010), offer("t", "b", 30_010)]
    );
    // One rejection leaves the other offer standing.
    assert_eq!(reject(&mut r, 11, "t", "a"), vec![]);
    assert_eq!(
        accept(&mut r, 12, "t", "b"),
        vec![Decision::Assigned {
            task: "t".into(),
            agent: "b".into()
        }]
    );
    let mut r = Router::new(&config(vec![{
        let mut q = QueueConfig::named("general");
        q.parallel_offers = 3;
        q
    }]))
    .unwrap();
    online(&mut r, "a", 0);
    online(&mut r, "b", 1);
    arrive(&mut r, 10, task("t", 10));
    let d = accept(&mut r, 12, "t", "b");
    assert_eq!(
        d,
        vec![
            Decision::Rescind {
                task: "t".into(),
                agent: "a".into(),
                reason: RescindReason::TakenByOther
            },
            Decision::Assigned {
                task: "t".into(),
                agent: "b".into()
            }
        ]
    );
    r.check_consistency(Millis(12)).unwrap();
}

#[test]
fn consecutive_misses_make_the_agent_not_routable_until_it_is_available_again() {
    let mut r = Router::new(&Routing {
        max_consecutive_misses: 2,
        ..config(vec![QueueConfig::named("general")])
    })
    .unwrap();
    online(&mut r, "a", 0);
    arrive(&mut r, 0, task("t1", 0));
    reject(&mut r, 1, "t1", "a");
    arrive(&mut r, 2, task("t2", 2));
    let d = r.handle(Millis(30_002), Event::Tick).unwrap();
    assert_eq!(
        d,
        vec![
            Decision::Rescind {
                task: "t2".into(),
                agent: "a".into(),
                reason: RescindReason::Timeout
            },
            Decision::AgentNotRoutable {
                agent: "a".into(),
                misses: 2
            }
        ]
    );
    assert!(!r.is_routable(&"a".into()));
    arrive(&mut r, 30_003, task("t3", 30_003));
    let d = r
        .handle(
            Millis(30_004),
            Event::PresenceChanged {
                agent: "a".into(),
                presence: Presence::Available,
            },
        )
        .unwrap();
    assert_eq!(d, vec![offer("t3", "a", 60_004)]);
}

#[test]
fn auto_accept_assigns_with_the_offer() {
    let mut r = router();
    online_spec(&mut r, agent("a").with_auto_accept(true), 0);
    assert_eq!(
        arrive(&mut r, 5, task("t", 5)),
        vec![
            offer("t", "a", 30_005),
            Decision::Assigned {
                task: "t".into(),
                agent: "a".into()
            }
        ]
    );
    assert_eq!(r.next_deadline(), None);
}

#[test]
fn a_call_is_exclusive_and_chats_leave_room_for_a_call() {
    let mut r = router();
    let spec = AgentSpec::new("a".into())
        .with_capacity(Media::Web, 3)
        .with_capacity(Media::Voice, 1)
        .with_max_total(3);
    online_spec(&mut r, spec, 0);
    arrive(&mut r, 1, task("c1", 1));
    arrive(&mut r, 2, task("c2", 2));
    // A third chat would take the last unit, which is kept for a call.
    assert_eq!(arrive(&mut r, 3, task("c3", 3)), vec![]);
    let call = TaskSpec::new("v".into(), "general", Media::Voice, Millis(4));
    assert_eq!(arrive(&mut r, 4, call), vec![offer("v", "a", 30_004)]);
    accept(&mut r, 5, "v", "a");
    r.handle(Millis(6), Event::TaskCancelled("c1".into())).unwrap();
    // On a call: no new chat even with room.
    r.check_consistency(Millis(6)).unwrap();
    assert_eq!(r.queue_position(&"c3".into()), Some(1));
    let d = r.handle(Millis(7), Event::TaskCompleted("v".into())).unwrap();
    assert_eq!(d, vec![offer("c3", "a", 30_007)]);
}

#[test]
fn wrap_up_holds_the_slot_until_done_or_timeout() {
    let mut r = Router::new(&Routing {
        wrap_up_secs: 20,
        ..config(vec![QueueConfig::named("general")])
    })
    .unwrap();
    let one = AgentSpec::new("a".into())
        .with_capacity(Media::Web, 1)
        .with_max_total(1);
    online_spec(&mut r, one, 0);
    arrive(&mut r, 0, task("t1", 0));
    accept(&mut r, 1, "t1", "a");
    arrive(&mut r, 2, task("t2", 2));
    assert_eq!(
        r.handle(Millis(3), Event::TaskCompleted("t1".into())).unwrap(),
        vec![]
    );
    assert_eq!(
        r.handle(Millis(4), Event::WrapUpEnded("t1".into())).unwrap(),
        vec![offer("t2", "a", 30_004)]
    );
    assert_eq!(
        r.handle(Millis(5), Event::WrapUpEnded("t1".into())),
        Err(RouterError::UnknownTask("t1".into()))
    );
    accept(&mut r, 6, "t2", "a");
    arrive(&mut r, 7, task("t3", 7));
    r.handle(Millis(8), Event::TaskCompleted("t2".into())).unwrap();
    assert!(matches!(
        r.handle(Millis(9), Event::WrapUpEnded("t3".into())),
        Err(RouterError::NotInWrapUp(_))
    ));
    assert_eq!(
        r.handle(Millis(20_008), Event::Tick).unwrap(),
        vec![offer("t3", "a", 50_008)]
    );
}

#[test]
fn no_reply_reassigns_with_a_reason() {
    let mut q = QueueConfig::named("general");
    q.no_reply_secs = Some(45);
    let mut r = Router::new(&config(vec![q])).unwrap();
    online(&mut r, "a", 0);
    online(&mut r, "b", 1);
    arrive(&mut r, 10, task("t1", 10));
    accept(&mut r, 11, "t1", "a");
    arrive(&mut r, 12, task("t2", 12));
    accept(&mut r, 13, "t2", "b");
    r.handle(
        Millis(20),
        Event::AgentReplied {
            task: "t2".into(),
            agent: "b".into(),
        },
    )
    .unwrap();
    let d = r.handle(Millis(45_011), Event::Tick).unwrap();
    assert_eq!(
        d,
        vec![
            Decision::Requeued {
                task: "t1".into(),
                from: "a".into(),
                reason: RequeueReason::NoReply
            },
            offer("t1", "b", 75_011)
        ]
    );
    assert_eq!(r.next_deadline(), Some(Millis(75_011)));
}

#[test]
fn closed_and_full_queues_end_tasks_with_a_reason() {
    let mut q = QueueConfig::named("general");
    q.hours = vec!["mon-fri 09:00-18:00".to_owned()];
    q.max_length = Some(1);
    q.when_full = TerminalAction::Message;
    let mut r = Router::new(&config(vec![q])).unwrap();
    // 2026-11-23 is a Monday.
    let monday = 20_780 * 86_400_000u64;
    let night = monday + 3 * 3_600_000;
    assert_eq!(
        arrive(&mut r, night, task("n", night)),
        vec![Decision::Ended {
            task: "n".into(),
            outcome: Outcome::OutOfHours,
            reason: EndReason::Closed
        }]
    );
    let day = monday + 10 * 3_600_000;
    assert_eq!(arrive(&mut r, day, task("d1", day)), vec![]);
    assert_eq!(
        arrive(&mut r, day, task("d2", day)),
        vec![Decision::Ended {
            task: "d2".into(),
            outcome: Outcome::Message,
            reason: EndReason::QueueFull
        }]
    );
}

#[test]
fn max_wait_expires_and_sla_breaches_are_reported() {
    let mut r = router();
    arrive(
        &mut r,
        0,
        task("t", 0).with_max_wait_ms(10_000).with_sla_ms(5_000),
    );
    assert_eq!(
        r.handle(Millis(5_000), Event::Tick).unwrap(),
        vec![Decision::SlaBreached {
            task: "t".into(),
            target_ms: 5_000
        }]
    );
    assert_eq!(
        r.handle(Millis(10_000), Event::Tick).unwrap(),
        vec![Decision::Ended {
            task: "t".into(),
            outcome: Outcome::Expired,
            reason: EndReason::MaxWait
        }]
    );
    assert_eq!(r.queue_position(&"t".into()), None);
    assert!(r
        .handle(Millis(10_001), Event::TaskCancelled("t".into()))
        .is_err());
}

#[test]
fn transfers_to_a_queue_and_to_an_agent() {
    let mut r = cards_router();
    online_spec(&mut r, agent("a").with_skill("cards", 5), 0);
    online(&mut r, "b", 1);
    arrive(&mut r, 10, task("t", 10));
    accept(&mut r, 11, "t", "a");
    assert_eq!(
        r.handle(
            Millis(12),
            Event::Transfer {
                task: "t".into(),
                from: "b".into(),
                to: TransferTarget::Agent("a".into())
            }
        ),
        Err(RouterError::NotAssigned {
            task: "t".into(),
            agent: "b".into()
        })
    );
    let d = r
        .handle(
            Millis(12),
            Event::Transfer {
                task: "t".into(),
                from: "a".into(),
                to: TransferTarget::Agent("b".into()),
            },
        )
        .unwrap();
    assert_eq!(d, vec![offer("t", "b", 30_012)]);
    accept(&mut r, 13, "t", "b");
    let d = r
        .handle(
            Millis(14),
            Event::Transfer {
                task: "t".into(),
                from: "b".into(),
                to: TransferTarget::Queue("cards".into()),
            },
        )
        .unwrap();
    assert_eq!(
        d,
        vec![
            Decision::Requeued {
                task: "t".into(),
                from: "b".into(),
                reason: RequeueReason::Transferred
            },
            offer("t", "a", 30_014)
        ]
    );
    r.check_consistency(Millis(14)).unwrap();
}

#[test]
fn positions_and_estimated_waits_follow_the_queue() {
    let mut r = router();
    let one = AgentSpec::new("a".into())
        .with_capacity(Media::Web, 1)
        .with_max_total(1);
    online_spec(&mut r, one, 0);
    for i in 0..4 {
        arrive(&mut r, i * 1000, task(&format!("t{i}"), i * 1000));
    }
    assert_eq!(r.estimated_wait(&"t1".into()), None);
    // Serve two tasks 10 s apart to give the queue a rhythm.
    accept(&mut r, 4_000, "t0", "a");
    r.handle(Millis(10_000), Event::TaskCompleted("t0".into()))
        .unwrap();
    let w = r.waiting("general").unwrap();
    assert_eq!(
        w,
        vec![
            WaitingTask {
                task: "t2".into(),
                position: 1,
                estimated_wait_ms: Some(10_000)
            },
            WaitingTask {
                task: "t3".into(),
                position: 2,
                estimated_wait_ms: Some(20_000)
            }
        ]
    );
    assert_eq!(r.estimated_wait(&"t3".into()), Some(20_000));
    assert_eq!(r.take_changed_queues(), vec!["general".to_owned()]);
    assert!(r.take_changed_queues().is_empty());
    // An assigned task completing changes no waiting order when nothing waits for that agent.
    accept(&mut r, 11_000, "t1", "a");
    assert_eq!(r.take_changed_queues(), Vec::<String>::new());
    assert_eq!(r.waiting_len("general"), Some(2));
    assert!(r.waiting("nowhere").is_err());
}

#[test]
fn explanations_name_the_candidates_and_the_rule() {
    let mut q = QueueConfig::named("general");
    q.skills = BTreeMap::from([("english".to_owned(), 3)]);
    let mut r = Router::new(&config(vec![q])).unwrap();
    online_spec(&mut r, agent("a").with_skill("english", 5), 0);
    online_spec(&mut r, agent("b").with_skill("english", 3), 1);
    let spec = task("t", 10).with_skill("mandarin", 3);
    let (d, why) = r.handle_explained(Millis(10), Event::TaskArrived(spec)).unwrap();
    assert_eq!(d, vec![]);
    assert!(why.is_empty());
    online_spec(
        &mut r,
        agent("c").with_skill("english", 3).with_skill("mandarin", 4),
        2,
    );
    let (d, why) = r
        .handle_explained(Millis(20), Event::TaskArrived(task("u", 20)))
        .unwrap();
    assert_eq!(d, vec![offer("u", "a", 30_020)]);
    assert_eq!(why.len(), 1);
    let e = &why[0];
    assert_eq!(e.task, TaskId::from("u"));
    assert_eq!(e.chosen, vec![AgentId::from("a")]);
    assert_eq!(e.trigger, Trigger::TaskWaiting);
    assert!(e.why.contains("longest idle"), "{}", e.why);
    assert_eq!(
        e.candidates,
        vec![Candidate {
            agent: "a".into(),
            verdict: Verdict::Chosen
        }]
    );
    // The Mandarin task went to "c"; a second one shows who was passed over and why.
    let (d, why) = r
        .handle_explained(
            Millis(21),
            Event::TaskArrived(task("m2", 21).with_skill("mandarin", 3)),
        )
        .unwrap();
    assert_eq!(d, vec![offer("m2", "c", 30_021)]);
    assert_eq!(why[0].skipped_skills, 1);
    assert_eq!(
        why[0].candidates.iter().map(|c| c.verdict).collect::<Vec<_>>(),
        [Verdict::MissingSkill, Verdict::Chosen]
    );
    r.handle(Millis(22), Event::TaskCancelled("m2".into())).unwrap();
    // Freed capacity explains itself too.
    arrive(&mut r, 30, task("w1", 30));
    arrive(&mut r, 31, task("w2", 31));
    arrive(&mut r, 32, task("w3", 32));
    arrive(&mut r, 33, task("w4", 33));
    arrive(&mut r, 34, task("w5", 34));
    assert_eq!(r.queue_position(&"w5".into()), Some(1));
    let (d, why) = r
        .handle_explained(Millis(40), Event::TaskCancelled("u".into()))
        .unwrap();
    assert_eq!(
        d,
        vec![
            Decision::Rescind {
                task: "u".into(),
                agent: "a".into(),
                reason: RescindReason::Cancelled
            },
            offer("w5", "a", 30_040)
        ]
    );
    assert_eq!(why.len(), 1);
    assert_eq!(why[0].trigger, Trigger::CapacityFreed("a".into()));
    assert_eq!(why[0].tasks_scanned, 1);
}

#[test]
fn refused_events_change_nothing() {
    let mut r = router();
    online(&mut r, "a", 0);
    assert_eq!(
        r.handle(
            Millis(1),
            Event::TaskArrived(TaskSpec::new("t".into(), "x", Media::Web, Millis(1)))
        ),
        Err(RouterError::UnknownQueue("x".into()))
    );
    arrive(&mut r, 1, task("t", 1));
    assert_eq!(
        r.handle(Millis(2), Event::TaskArrived(task("t", 2))),
        Err(RouterError::DuplicateTask("t".into()))
    );
    assert!(matches!(
        r.handle(Millis(2), Event::AgentConnected("ghost".into())),
        Err(RouterError::UnknownAgent(_))
    ));
    assert!(matches!(
        r.handle(Millis(2), Event::TaskCompleted("t".into())),
        Err(RouterError::UnknownTask(_))
    ));
    r.check_consistency(Millis(2)).unwrap();
    assert_eq!(r.next_deadline(), Some(Millis(30_001)));
}

#[test]
fn bad_configuration_is_refused() {
    let mut q = QueueConfig::named("general");
    q.steps = vec![StepConfig {
        after_secs: 1,
        overflow: Some("nowhere".to_owned()),
        ..StepConfig::default()
    }];
    assert!(matches!(
        Router::new(&config(vec![q])),
        Err(RouterError::Config(_))
    ));
    let mut bad = config(vec![QueueConfig::named("general")]);
    bad.offer_timeout_by_media = BTreeMap::from([("fax".to_owned(), 5)]);
    assert!(matches!(Router::new(&bad), Err(RouterError::Config(_))));
    let mut voice = config(vec![QueueConfig::named("general")]);
    voice.offer_timeout_by_media = BTreeMap::from([("voice".to_owned(), 15)]);
    let mut r = Router::new(&voice).unwrap();
    online_spec(
        &mut r,
        agent("a").with_capacity(Media::Voice, 1).with_max_total(3),
        0,
    );
    let call = TaskSpec::new("v".into(), "general", Media::Voice, Millis(0));
    assert_eq!(arrive(&mut r, 0, call), vec![offer("v", "a", 15_000)]);
}

#[test]
fn a_task_in_wrap_up_is_not_requeued_when_the_socket_drops() {
    let mut r = Router::new(&Routing {
        wrap_up_secs: 60,
        ..config(vec![QueueConfig::named("general")])
    })
    .unwrap();
    online(&mut r, "a", 0);
    arrive(&mut r, 0, task("t", 0));
    accept(&mut r, 1, "t", "a");
    r.handle(Millis(2), Event::AgentDisconnected("a".into())).unwrap();
    r.handle(Millis(3), Event::TaskCompleted("t".into())).unwrap();
    // Grace (60 s) and wrap-up (60 s) both lapse: the slot frees, nothing is re-queued.
    assert_eq!(r.handle(Millis(70_000), Event::Tick).unwrap(), vec![]);
    assert_eq!(r.next_deadline(), None);
    r.check_consistency(Millis(70_000)).unwrap();
}

#[test]
fn without_voice_exclusivity_chats_share_an_agent_with_a_call() {
    let mut r = Router::new(&Routing {
        voice_exclusive: false,
        ..config(vec![QueueConfig::named("general")])
    })
    .unwrap();
    let spec = AgentSpec::new("a".into())
        .with_capacity(Media::Web, 3)
        .with_capacity(Media::Voice, 1)
        .with_max_total(3);
    online_spec(&mut r, spec, 0);
    let call = TaskSpec::new("v".into(), "general", Media::Voice, Millis(1));
    arrive(&mut r, 1, call);
    accept(&mut r, 2, "v", "a");
    assert_eq!(arrive(&mut r, 3, task("c1", 3)), vec![offer("c1", "a", 30_003)]);
    assert_eq!(arrive(&mut r, 4, task("c2", 4)), vec![offer("c2", "a", 30_004)]);
    // The global cap still holds.
    assert_eq!(arrive(&mut r, 5, task("c3", 5)), vec![]);
}
