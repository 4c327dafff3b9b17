//! The worked example of docs/routing.md: its TOML loads through the config loader, and the walk-through
//! it describes is what the router does.

use std::collections::BTreeMap;

use omnigate_router::{
    AgentId, AgentSpec, Decision, EndReason, Event, Media, Millis, Outcome, Presence, RescindReason, Router,
    TaskId, TaskSpec,
};

const DOC: &str = include_str!("../../docs/routing.md");

/// 2026-11-23 00:00 UTC, a Monday.
const MONDAY_UTC: u64 = 20_780 * 86_400_000;
const HOUR: u64 = 3_600_000;

fn example_toml() -> &'static str {
    let start = DOC.find("```toml\n").expect("a toml block in docs/routing.md") + "```toml\n".len();
    let len = DOC[start..].find("```").expect("the toml block ends");
    &DOC[start..start + len]
}

fn offer(task: &str, agent: &str, expires_at: Millis) -> Decision {
    Decision::Offer {
        task: task.into(),
        agent: agent.into(),
        expires_at,
    }
}

fn assigned(task: &str, agent: &str) -> Decision {
    Decision::Assigned {
        task: task.into(),
        agent: agent.into(),
    }
}

struct Bank {
    r: Router,
}

impl Bank {
    fn send(&mut self, now: Millis, event: Event) -> Vec<Decision> {
        let d = self.r.handle(now, event).expect("event accepted");
        self.r.check_consistency(now).expect("consistent");
        d
    }

    /// Ticks every deadline up to `until`, collecting the decisions.
    fn run_until(&mut self, until: Millis) -> Vec<Decision> {
        let mut out = Vec::new();
        while let Some(at) = self.r.next_deadline().filter(|at| *at <= until) {
            out.extend(self.send(at, Event::Tick));
        }
        out
    }

    fn accept(&mut self, now: Millis, task: &str, agent: &str) -> Vec<Decision> {
        self.send(
            now,
            Event::OfferAccepted {
                task: task.into(),
                agent: agent.into(),
            },
        )
    }

    fn reject(&mut self, now: Millis, task: &str, agent: &str) -> Vec<Decision> {
        self.send(
            now,
            Event::OfferRejected {
                task: task.into(),
                agent: agent.into(),
            },
        )
    }
}

#[test]
fn the_bank_example_loads_and_validates() {
    let config = omnigate_config::load_from_str(Some(example_toml()), &BTreeMap::new()).expect("loads");
    let mut problems = Vec::new();
    config.routing.validate(&mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(config.routing.queues.len(), 5);
    assert_eq!(config.agents.len(), 6);
}

#[test]
fn the_bank_example_routes_as_documented() {
    let config = omnigate_config::load_from_str(Some(example_toml()), &BTreeMap::new()).expect("loads");
    let mut bank = Bank {
        r: Router::new(&config.routing).expect("router"),
    };
    // Monday 10:00 in Hong Kong (UTC+8).
    let t0 = Millis(MONDAY_UTC + 2 * HOUR);
    for (i, agent) in config.agents.iter().enumerate() {
        let at = t0.plus_ms(i as u64);
        let spec = AgentSpec::from_config(agent).expect("agent spec");
        let id = spec.id.clone();
        bank.send(at, Event::AgentRegistered(spec));
        bank.send(at, Event::AgentConnected(id.clone()));
        bank.send(
            at,
            Event::PresenceChanged {
                agent: id,
                presence: Presence::Available,
            },
        );
    }
    let mut now = t0.plus_ms(1_000);
    let chat_timeout = 30_000;

    // 1. Mandarin credit-card chat: only Mei qualifies.
    let spec = TaskSpec::new("cc-mandarin".into(), "cards", Media::Web, now).with_skill("mandarin", 3);
    assert_eq!(
        bank.send(now, Event::TaskArrived(spec)),
        vec![offer("cc-mandarin", "mei", now.plus_ms(chat_timeout))]
    );
    assert_eq!(
        bank.accept(now, "cc-mandarin", "mei"),
        vec![assigned("cc-mandarin", "mei")]
    );

    // 2. Cantonese credit-card chat: parallel offers to Ka-wing (longest idle) and Mei; Mei wins.
    now = now.plus_ms(1_000);
    let spec = TaskSpec::new("cc-cantonese".into(), "cards", Media::Web, now).with_skill("cantonese", 3);
    assert_eq!(
        bank.send(now, Event::TaskArrived(spec)),
        vec![
            offer("cc-cantonese", "kawing", now.plus_ms(chat_timeout)),
            offer("cc-cantonese", "mei", now.plus_ms(chat_timeout))
        ]
    );
    now = now.plus_ms(1_000);
    assert_eq!(
        bank.accept(now, "cc-cantonese", "mei"),
        vec![
            Decision::Rescind {
                task: "cc-cantonese".into(),
                agent: "kawing".into(),
                reason: RescindReason::TakenByOther
            },
            assigned("cc-cantonese", "mei")
        ]
    );

    // 3. Lost-card call: an emergency, offered to three card agents at once (20 s voice timeout).
    now = now.plus_ms(1_000);
    let (d, why) = bank
        .r
        .handle_explained(
            now,
            Event::TaskArrived(TaskSpec::new("lost-card".into(), "fraud", Media::Voice, now)),
        )
        .expect("arrives");
    assert_eq!(
        d,
        vec![
            offer("lost-card", "sarah", now.plus_ms(20_000)),
            offer("lost-card", "mei", now.plus_ms(20_000)),
            offer("lost-card", "kawing", now.plus_ms(20_000)),
        ]
    );
    assert!(why[0].emergency);
    let d = bank.accept(now, "lost-card", "kawing");
    assert_eq!(d.last(), Some(&assigned("lost-card", "kawing")));
    assert_eq!(d.len(), 3);

    // 4. VIP chats: Raj is the only private banker. The second names him as relationship manager and
    // waits while he is busy (and in wrap-up), then goes to him.
    now = now.plus_ms(1_000);
    let v1 = TaskSpec::new("vip-1".into(), "vip", Media::Web, now);
    assert_eq!(bank.send(now, Event::TaskArrived(v1)).len(), 1);
    bank.accept(now, "vip-1", "raj");
    let v2 = TaskSpec::new("vip-2".into(), "vip", Media::Web, now)
        .with_tier("private_banking")
        .with_preferred_agent("raj".into(), now.plus_ms(600_000));
    assert_eq!(bank.send(now, Event::TaskArrived(v2)), vec![]);
    now = now.plus_ms(5_000);
    assert_eq!(bank.send(now, Event::TaskCompleted("vip-1".into())), vec![]);
    now = now.plus_ms(5_000);
    assert_eq!(
        bank.send(now, Event::WrapUpEnded("vip-1".into())),
        vec![offer("vip-2", "raj", now.plus_ms(chat_timeout))]
    );
    bank.accept(now, "vip-2", "raj");
    bank.send(
        now,
        Event::AgentReplied {
            task: "vip-2".into(),
            agent: "raj".into(),
        },
    );

    // 5. English card chat wanting the optional "wealth" skill: Sarah alone at first; after 60 s any card
    // agent free for chat (Ka-wing is on the call); after 180 s it overflows to general.
    now = now.plus_ms(1_000);
    let arrived = now;
    let spec = TaskSpec::new("cc-wealth".into(), "cards", Media::Web, now)
        .with_skill("english", 3)
        .with_optional_skill("wealth", 3);
    assert_eq!(
        bank.send(now, Event::TaskArrived(spec)),
        vec![offer("cc-wealth", "sarah", now.plus_ms(chat_timeout))]
    );
    assert_eq!(bank.reject(now.plus_ms(2_000), "cc-wealth", "sarah"), vec![]);
    let relaxed = arrived.plus_ms(60_000);
    assert_eq!(
        bank.run_until(relaxed),
        vec![offer("cc-wealth", "mei", relaxed.plus_ms(chat_timeout))]
    );
    assert_eq!(bank.reject(relaxed.plus_ms(1_000), "cc-wealth", "mei"), vec![]);
    let overflow = arrived.plus_ms(180_000);
    assert_eq!(
        bank.run_until(overflow),
        vec![
            Decision::Overflowed {
                task: "cc-wealth".into(),
                from: "cards".into(),
                to: "general".into()
            },
            offer("cc-wealth", "lin", overflow.plus_ms(chat_timeout))
        ]
    );
    assert_eq!(
        bank.reject(overflow.plus_ms(1_000), "cc-wealth", "lin"),
        vec![offer("cc-wealth", "tom", overflow.plus_ms(31_000))]
    );

    // 6. Monday 23:00 in Hong Kong: general is closed.
    let night = Millis(MONDAY_UTC + 15 * HOUR);
    assert_eq!(
        bank.send(
            night,
            Event::TaskArrived(TaskSpec::new("late".into(), "general", Media::Web, night))
        ),
        vec![Decision::Ended {
            task: TaskId::from("late"),
            outcome: Outcome::OutOfHours,
            reason: EndReason::Closed
        }]
    );
    assert!(bank.r.is_routable(&AgentId::from("tom")));
}
