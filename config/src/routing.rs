use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// Channels (media) a routing setting may name.
const MEDIA: &[&str] = &["web", "app", "wechat", "sms", "voice"];

/// One agent the gateway knows: identity, skills and capacity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Stable agent id (the `sub` of the agent's token).
    pub id: String,
    /// Display name shown to customers.
    #[serde(default)]
    pub name: String,
    /// Skill name → proficiency 1..=5.
    #[serde(default)]
    pub skills: BTreeMap<String, u8>,
    /// Channel (`web`, `app`, `wechat`, `sms`, `voice`) → concurrent conversations on that channel.
    #[serde(default)]
    pub capacity: BTreeMap<String, u32>,
    /// Cap across all channels together.
    #[serde(default = "default_max_total")]
    pub max_total: u32,
    /// Offers to this agent are accepted on its behalf at once (no accept/reject step).
    #[serde(default)]
    pub auto_accept: bool,
}

fn default_max_total() -> u32 {
    5
}

/// Queues and routing policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Routing {
    /// Queue for conversations whose channel or widget names none.
    pub default_queue: String,
    /// How long an agent has to accept an offer, unless `offer_timeout_by_media` says otherwise.
    pub offer_timeout_secs: u64,
    /// Per channel (`web`, `voice`, ...) offer timeout in seconds, overriding `offer_timeout_secs`.
    pub offer_timeout_by_media: BTreeMap<String, u64>,
    /// Seconds of waiting one priority level is worth (Genesys: 60).
    pub priority_offset_secs: u64,
    /// How long an agent whose socket dropped keeps its conversations before they are re-queued.
    pub disconnect_grace_secs: u64,
    /// Seconds of extra age a conversation re-queued after its agent's socket dropped is given.
    pub requeue_boost_secs: u64,
    /// After such a re-queue, how long the conversation waits for its previous agent first (if it is back).
    pub return_to_agent_secs: u64,
    /// Consecutive missed offers (rejected or timed out) after which an agent is made not routable;
    /// 0 never does.
    pub max_consecutive_misses: u32,
    /// After a task completes, how long its slot stays held for wrap-up unless the agent ends it sooner;
    /// 0 frees it at once.
    pub wrap_up_secs: u64,
    /// A voice call is exclusive: no new chats are offered to an agent on a call, and chats always leave
    /// one unit of the agent's global cap free for a call.
    pub voice_exclusive: bool,
    /// Longest time a task waits before it expires, unless its queue or the task says otherwise; 0 = no limit.
    pub max_wait_secs: u64,
    /// Offset of the contact center's local time from UTC, for business hours and holidays.
    pub utc_offset_minutes: i32,
    /// Queue positions at which a waiting customer on a channel without live frames (WeChat, SMS) is sent a
    /// message with its place: each threshold once per wait, when the position first reaches it (e.g.
    /// `[10, 3, 1]`). Empty sends none. Web and app customers get live `queue.position` frames instead.
    pub position_message_thresholds: Vec<u32>,
    /// The text of that message; `{position}` and `{minutes}` (the estimated wait, rounded up; "a few" while
    /// the queue has no history) are filled in.
    pub position_message: String,
    /// The queues.
    pub queues: Vec<QueueConfig>,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            default_queue: "general".to_owned(),
            offer_timeout_secs: 30,
            offer_timeout_by_media: BTreeMap::new(),
            priority_offset_secs: 60,
            disconnect_grace_secs: 60,
            requeue_boost_secs: 60,
            return_to_agent_secs: 120,
            max_consecutive_misses: 3,
            wrap_up_secs: 0,
            voice_exclusive: true,
            max_wait_secs: 3600,
            utc_offset_minutes: 0,
            position_message_thresholds: Vec::new(),
            position_message:
                "You are number {position} in the queue; expected wait about {minutes} minutes.".to_owned(),
            queues: vec![QueueConfig::named("general")],
        }
    }
}

/// How a queue picks among eligible agents; ties go to the longest idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionPolicy {
    /// The agent idle for the longest time (since its last offer or since its load last dropped to zero).
    #[default]
    LongestIdle,
    /// The agent with the smallest share of its capacity in use.
    LeastOccupied,
    /// The agent that was offered work least recently.
    RoundRobin,
}

/// What happens to a task that routing gives up on; the gateway tells the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalAction {
    /// Offer the customer a call back.
    Callback,
    /// Invite the customer to leave a message.
    Message,
    /// Reply with the opening hours.
    OutOfHours,
    /// The task simply expires.
    Expire,
}

/// One queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Queue name, referenced by widgets and transfers.
    pub name: String,
    /// Skill name → minimum proficiency an agent needs to take this queue's tasks.
    #[serde(default)]
    pub skills: BTreeMap<String, u8>,
    /// Priority of this queue's tasks, added to the task's own (higher goes first).
    #[serde(default)]
    pub priority: u8,
    /// Emergencies (fraud report, lost card): this queue's tasks go before every non-emergency task.
    #[serde(default)]
    pub emergency: bool,
    /// How an agent is chosen among the eligible ones.
    #[serde(default)]
    pub policy: SelectionPolicy,
    /// Offer each task to this many agents at once; the first to accept takes it.
    #[serde(default = "one")]
    pub parallel_offers: u32,
    /// Offers from this queue are accepted at once on the agent's behalf.
    #[serde(default)]
    pub auto_accept: bool,
    /// Most tasks waiting at once; a task arriving to a full queue takes the `when_full` action.
    #[serde(default)]
    pub max_length: Option<u32>,
    /// What a task arriving to a full queue gets.
    #[serde(default = "callback")]
    pub when_full: TerminalAction,
    /// Longest wait before a task of this queue expires (overrides the routing default; 0 = no limit).
    #[serde(default)]
    pub max_wait_secs: Option<u64>,
    /// Re-assign a task whose assigned agent has not replied within this many seconds; absent = never.
    #[serde(default)]
    pub no_reply_secs: Option<u64>,
    /// Opening hours in local time, e.g. `"mon-fri 09:00-18:00"`, `"sat 10:00-14:00"`; empty = always open.
    #[serde(default)]
    pub hours: Vec<String>,
    /// Local dates (`YYYY-MM-DD`) on which the queue is closed all day.
    #[serde(default)]
    pub holidays: Vec<String>,
    /// What a task arriving while the queue is closed gets.
    #[serde(default = "out_of_hours")]
    pub when_closed: TerminalAction,
    /// Workflow: steps taken as the task ages, in increasing `after_secs`.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
}

fn one() -> u32 {
    1
}

fn callback() -> TerminalAction {
    TerminalAction::Callback
}

fn out_of_hours() -> TerminalAction {
    TerminalAction::OutOfHours
}

impl QueueConfig {
    /// A queue with this name and every other setting at its default.
    pub fn named(name: &str) -> QueueConfig {
        QueueConfig {
            name: name.to_owned(),
            skills: BTreeMap::new(),
            priority: 0,
            emergency: false,
            policy: SelectionPolicy::LongestIdle,
            parallel_offers: 1,
            auto_accept: false,
            max_length: None,
            when_full: TerminalAction::Callback,
            max_wait_secs: None,
            no_reply_secs: None,
            hours: Vec::new(),
            holidays: Vec::new(),
            when_closed: TerminalAction::OutOfHours,
            steps: Vec::new(),
        }
    }
}

/// One workflow step: from `after_secs` of the task's age on, the settings it names apply (settings it
/// leaves out keep the previous step's value). `overflow` and `terminal` act once, when the step is reached.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Task age (since it first entered routing) at which the step starts.
    pub after_secs: u64,
    /// Minimum proficiency demanded in each of the queue's skills (narrow with a high value, relax with a
    /// low one).
    #[serde(default)]
    pub min_proficiency: Option<u8>,
    /// Whether the task's preferred agent (last agent, relationship manager) is tried alone first.
    #[serde(default)]
    pub preferred_agent: Option<bool>,
    /// Drop the task's optional skills.
    #[serde(default)]
    pub relax_optional: Option<bool>,
    /// Move the task to this queue, keeping its age.
    #[serde(default)]
    pub overflow: Option<String>,
    /// Give up routing: the task ends with this outcome.
    #[serde(default)]
    pub terminal: Option<TerminalAction>,
}

/// Parses an opening-hours line such as `"mon-fri 09:00-18:00"` or `"sat,sun 10:00-14:00"` into
/// half-open minute-of-week ranges (Monday 00:00 = 0).
///
/// # Errors
/// A description of what is malformed.
pub fn parse_hours(spec: &str) -> Result<Vec<(u32, u32)>, String> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let (days, times) = spec
        .trim()
        .split_once(' ')
        .ok_or_else(|| format!("hours {spec:?}: expected \"DAYS HH:MM-HH:MM\""))?;
    let day = |d: &str| {
        DAYS.iter()
            .position(|n| *n == d.trim())
            .map(|i| i as u32)
            .ok_or_else(|| format!("hours {spec:?}: unknown day {d:?}"))
    };
    let mut selected = BTreeSet::new();
    for part in days.split(',') {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (day(from)?, day(to)?);
                if from > to {
                    return Err(format!("hours {spec:?}: day range {part:?} runs backwards"));
                }
                selected.extend(from..=to);
            }
            None => {
                selected.insert(day(part)?);
            }
        }
    }
    let (open, close) = times
        .trim()
        .split_once('-')
        .ok_or_else(|| format!("hours {spec:?}: expected HH:MM-HH:MM"))?;
    let minute = |t: &str| -> Result<u32, String> {
        let (h, m) = t
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("hours {spec:?}: bad time {t:?}"))?;
        let (h, m): (u32, u32) = (
            h.parse().map_err(|_| format!("hours {spec:?}: bad hour {h:?}"))?,
            m.parse()
                .map_err(|_| format!("hours {spec:?}: bad minute {m:?}"))?,
        );
        if m >= 60 || h * 60 + m > 24 * 60 {
            return Err(format!("hours {spec:?}: time {t:?} out of range"));
        }
        Ok(h * 60 + m)
    };
    let (open, close) = (minute(open)?, minute(close)?);
    if open >= close {
        return Err(format!("hours {spec:?}: closes before it opens"));
    }
    Ok(selected
        .into_iter()
        .map(|d| (d * 1440 + open, d * 1440 + close))
        .collect())
}

/// Parses a `YYYY-MM-DD` date into days since 1970-01-01.
///
/// # Errors
/// A description of what is malformed.
pub fn parse_date(date: &str) -> Result<i64, String> {
    let bad = || format!("date {date:?}: expected YYYY-MM-DD");
    let mut parts = date.trim().splitn(3, '-');
    let mut next = || parts.next().and_then(|p| p.parse::<i64>().ok()).ok_or_else(bad);
    let (y, m, d) = (next()?, next()?, next()?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > month_days[(m - 1) as usize] {
        return Err(bad());
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok(era * 146_097 + doe - 719_468)
}

impl Routing {
    /// Checks the routing rules that `Config::validate` does not; appends one line per problem.
    pub fn validate(&self, problems: &mut Vec<String>) {
        let names: BTreeSet<&str> = self.queues.iter().map(|q| q.name.as_str()).collect();
        for (media, secs) in &self.offer_timeout_by_media {
            if !MEDIA.contains(&media.as_str()) {
                problems.push(format!(
                    "routing.offer_timeout_by_media names unknown channel {media:?}"
                ));
            }
            if *secs == 0 {
                problems.push(format!("routing.offer_timeout_by_media.{media} must be positive"));
            }
        }
        if self.utc_offset_minutes.abs() > 14 * 60 {
            problems.push("routing.utc_offset_minutes must be within ±840".to_owned());
        }
        for queue in &self.queues {
            let q = &queue.name;
            if !(1..=50).contains(&queue.parallel_offers) {
                problems.push(format!("queue {q:?}: parallel_offers must be within 1..=50"));
            }
            if queue.max_length == Some(0) {
                problems.push(format!("queue {q:?}: max_length must be positive when set"));
            }
            for hours in &queue.hours {
                if let Err(e) = parse_hours(hours) {
                    problems.push(format!("queue {q:?}: {e}"));
                }
            }
            for day in &queue.holidays {
                if let Err(e) = parse_date(day) {
                    problems.push(format!("queue {q:?}: holiday {e}"));
                }
            }
            let mut last = None;
            for step in &queue.steps {
                if last.is_some_and(|l| step.after_secs <= l) {
                    problems.push(format!(
                        "queue {q:?}: steps must have strictly increasing after_secs"
                    ));
                }
                last = Some(step.after_secs);
                if let Some(level) = step.min_proficiency {
                    if !(1..=5).contains(&level) {
                        problems.push(format!(
                            "queue {q:?}: step min_proficiency {level} is not within 1..=5"
                        ));
                    }
                }
                if let Some(target) = &step.overflow {
                    if target == q || !names.contains(target.as_str()) {
                        problems.push(format!(
                            "queue {q:?}: overflow target {target:?} must be another configured queue"
                        ));
                    }
                }
                if step.overflow.is_some() && step.terminal.is_some() {
                    problems.push(format!(
                        "queue {q:?}: a step cannot both overflow and end the task"
                    ));
                }
            }
        }
        // Overflow must not loop: follow each queue's overflow targets and never come back to it.
        let targets: BTreeMap<&str, Vec<&str>> = self
            .queues
            .iter()
            .map(|q| {
                let next = q.steps.iter().filter_map(|s| s.overflow.as_deref()).collect();
                (q.name.as_str(), next)
            })
            .collect();
        for start in targets.keys() {
            let mut seen = BTreeSet::new();
            let mut stack: Vec<&str> = targets[start].clone();
            while let Some(queue) = stack.pop() {
                if queue == *start {
                    problems.push(format!("queue {start:?}: overflow steps lead back to it"));
                    break;
                }
                if seen.insert(queue) {
                    stack.extend(targets.get(queue).into_iter().flatten());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_parse_into_minutes_of_week() {
        assert_eq!(
            parse_hours("mon-tue 09:00-18:00").unwrap(),
            vec![(540, 1080), (1440 + 540, 1440 + 1080)]
        );
        assert_eq!(
            parse_hours("sun 00:00-24:00").unwrap(),
            vec![(6 * 1440, 7 * 1440)]
        );
        assert!(parse_hours("fri-mon 09:00-10:00").is_err());
        assert!(parse_hours("mon 18:00-09:00").is_err());
        assert!(parse_hours("funday 09:00-10:00").is_err());
    }

    #[test]
    fn dates_count_days_since_epoch() {
        assert_eq!(parse_date("1970-01-01").unwrap(), 0);
        assert_eq!(parse_date("2000-03-01").unwrap(), 11_017);
        assert_eq!(parse_date("2026-12-25").unwrap(), 20_812);
        assert!(parse_date("2026-02-29").is_err());
        assert!(parse_date("2026-13-01").is_err());
    }

    #[test]
    fn shipped_demo_routing_is_valid() {
        let config = crate::load(None, &BTreeMap::new()).expect("demo config");
        let mut problems = Vec::new();
        config.routing.validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.routing.queues[1].steps.len(), 3);
    }

    #[test]
    fn routing_validate_reports_bad_workflows() {
        let mut routing = Routing::default();
        let mut queue = QueueConfig::named("cards");
        queue.steps = vec![
            StepConfig {
                after_secs: 60,
                overflow: Some("nowhere".to_owned()),
                ..StepConfig::default()
            },
            StepConfig {
                after_secs: 30,
                min_proficiency: Some(7),
                ..StepConfig::default()
            },
        ];
        queue.hours = vec!["mon 10:00".to_owned()];
        routing.queues.push(queue);
        let mut problems = Vec::new();
        routing.validate(&mut problems);
        let all = problems.join("\n");
        for needle in ["increasing", "nowhere", "min_proficiency 7", "HH:MM"] {
            assert!(all.contains(needle), "missing {needle:?} in {all}");
        }
        let mut problems = Vec::new();
        Routing::default().validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn routing_validate_reports_overflow_loops() {
        let overflow = |to: &str| StepConfig {
            after_secs: 10,
            overflow: Some(to.to_owned()),
            ..StepConfig::default()
        };
        let mut routing = Routing::default();
        let mut a = QueueConfig::named("a");
        a.steps = vec![overflow("b")];
        let mut b = QueueConfig::named("b");
        b.steps = vec![overflow("general")];
        routing.queues.extend([a, b]);
        let mut problems = Vec::new();
        routing.validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        // general -> a -> b -> general.
        routing.queues[0].steps = vec![overflow("a")];
        let mut problems = Vec::new();
        routing.validate(&mut problems);
        let all = problems.join("\n");
        for queue in ["general", "a", "b"] {
            let needle = format!("queue {queue:?}: overflow steps lead back");
            assert!(all.contains(&needle), "missing {needle:?} in {all}");
        }
    }
}
