use std::collections::BTreeSet;

use secrecy::ExposeSecret;

use crate::{Config, Mode, StoreBackend, ValidationErrors};

/// Channels an agent's capacity may name.
pub const CHANNELS: &[&str] = &["web", "app", "wechat", "sms", "voice"];

/// The secret in the shipped demo file; refused in production.
const DEMO_SECRET_MARKER: &str = "demo-only";

impl Config {
    /// Checks the whole tree and reports every broken rule at once.
    ///
    /// # Errors
    /// Every problem found, one line each.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut problems = Vec::new();
        let mut problem = |p: String| problems.push(p);

        let secret = self.auth.jwt_secret.expose_secret();
        if secret.is_empty() {
            problem("auth.jwt_secret must be set".to_owned());
        } else if self.mode == Mode::Production && (secret.len() < 32 || secret.contains(DEMO_SECRET_MARKER))
        {
            problem(
                "auth.jwt_secret must be at least 32 bytes and not the demo secret in production".to_owned(),
            );
        }
        if self.auth.customer_token_ttl_secs == 0 || self.auth.customer_token_ttl_secs > 900 {
            problem("auth.customer_token_ttl_secs must be within 1..=900 (chat protocol v1)".to_owned());
        }
        if self.auth.agent_token_ttl_secs == 0 {
            problem("auth.agent_token_ttl_secs must be positive".to_owned());
        }
        let admin = self.auth.admin_token.expose_secret();
        if self.mode == Mode::Production
            && !admin.is_empty()
            && (admin.len() < 32 || admin.contains(DEMO_SECRET_MARKER))
        {
            problem(
                "auth.admin_token must be at least 32 bytes and not the demo token in production".to_owned(),
            );
        }
        let c = &self.conversations;
        if c.history_messages > 100 || c.history_conversations > 50 {
            problem(
                "conversations.history_conversations must be at most 50 and history_messages at most 100"
                    .to_owned(),
            );
        }
        if c.complaint_dispositions
            .iter()
            .any(|d| d.is_empty() || d.len() > 64)
        {
            problem("conversations.complaint_dispositions must be codes of 1..=64 bytes".to_owned());
        }

        if self.store.backend == StoreBackend::Redis {
            if self.store.redis_url.is_empty() {
                problem("store.redis_url must be set when store.backend = \"redis\"".to_owned());
            }
            if self.store.connect_timeout_ms == 0 || self.store.command_timeout_ms == 0 {
                problem("store.connect_timeout_ms and store.command_timeout_ms must be positive".to_owned());
            }
        }

        let l = &self.limits;
        for (name, value) in [
            ("max_frame_bytes", l.max_frame_bytes),
            ("max_message_chars", l.max_message_chars),
            ("frames_per_second", l.frames_per_second as usize),
            ("frame_burst", l.frame_burst as usize),
            ("connections_per_ip", l.connections_per_ip),
            ("max_connections", l.max_connections),
            (
                "sessions_per_widget_key_per_minute",
                l.sessions_per_widget_key_per_minute as usize,
            ),
            ("ws_read_buffer_bytes", l.ws_read_buffer_bytes),
            ("ws_write_buffer_bytes", l.ws_write_buffer_bytes),
            ("outbound_queue_frames", l.outbound_queue_frames),
            ("heartbeat_ms", l.heartbeat_ms as usize),
            ("hello_timeout_ms", l.hello_timeout_ms as usize),
            ("replay_max_events", l.replay_max_events),
            ("events_page_max", l.events_page_max),
            ("max_client_msg_id_len", l.max_client_msg_id_len),
        ] {
            if value == 0 {
                problem(format!("limits.{name} must be positive"));
            }
        }
        if self.server.request_timeout_ms == 0 {
            problem("server.request_timeout_ms must be positive".to_owned());
        }
        if !matches!(self.log.format.as_str(), "" | "pretty" | "json") {
            problem(format!(
                "log.format must be \"pretty\" or \"json\", not {:?}",
                self.log.format
            ));
        }

        let queues: BTreeSet<&str> = self.routing.queues.iter().map(|q| q.name.as_str()).collect();
        if queues.len() != self.routing.queues.len() {
            problem("routing.queues has duplicate names".to_owned());
        }
        if !queues.contains(self.routing.default_queue.as_str()) {
            problem(format!(
                "routing.default_queue {:?} is not one of routing.queues",
                self.routing.default_queue
            ));
        }
        if self.routing.offer_timeout_secs == 0 {
            problem("routing.offer_timeout_secs must be positive".to_owned());
        }
        for queue in &self.routing.queues {
            for (skill, level) in &queue.skills {
                if !(1..=5).contains(level) {
                    problem(format!(
                        "queue {:?}: skill {skill:?} proficiency {level} is not within 1..=5",
                        queue.name
                    ));
                }
            }
        }

        let mut widget_keys = BTreeSet::new();
        for widget in &self.webchat.widgets {
            if widget.key.len() < 8 {
                problem(format!(
                    "webchat widget {:?}: key must be at least 8 characters",
                    widget.name
                ));
            }
            if !widget_keys.insert(widget.key.as_str()) {
                problem(format!("webchat widget key {:?} is used twice", widget.key));
            }
            if !widget.queue.is_empty() && !queues.contains(widget.queue.as_str()) {
                problem(format!(
                    "webchat widget {:?}: queue {:?} does not exist",
                    widget.name, widget.queue
                ));
            }
        }

        for app in &self.channels.app {
            if !app.queue.is_empty() && !queues.contains(app.queue.as_str()) {
                problem(format!(
                    "channels.app {:?}: queue {:?} does not exist",
                    app.app_id, app.queue
                ));
            }
        }

        let mut agent_ids = BTreeSet::new();
        for agent in &self.agents {
            if agent.id.is_empty()
                || agent.id.len() > 64
                || !agent
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                problem(format!(
                    "agent id {:?} must be 1..=64 characters of [A-Za-z0-9-_.]",
                    agent.id
                ));
            }
            if !agent_ids.insert(agent.id.as_str()) {
                problem(format!("agent id {:?} is used twice", agent.id));
            }
            for (skill, level) in &agent.skills {
                if !(1..=5).contains(level) {
                    problem(format!(
                        "agent {:?}: skill {skill:?} proficiency {level} is not within 1..=5",
                        agent.id
                    ));
                }
            }
            for channel in agent.capacity.keys() {
                if !CHANNELS.contains(&channel.as_str()) {
                    problem(format!(
                        "agent {:?}: capacity names unknown channel {channel:?}",
                        agent.id
                    ));
                }
            }
            if agent.max_total == 0 {
                problem(format!("agent {:?}: max_total must be positive", agent.id));
            }
        }

        self.channels.check(&mut problem);
        let agent_ids: Vec<&str> = self.agents.iter().map(|a| a.id.as_str()).collect();
        self.customers.check(&agent_ids, &mut problem);
        self.retention.check(&mut problem);
        self.routing.validate(&mut problems);

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load_from_str;

    #[test]
    fn customer_history_and_the_admin_token_are_checked() {
        let toml = r#"
mode = "production"
[auth]
jwt_secret = "a-production-secret-that-is-long-enough-0123"
admin_token = "short"
[conversations]
history_messages = 1000
complaint_dispositions = [""]
"#;
        let err = load_from_str(Some(toml), &Default::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.admin_token"), "{err}");
        assert!(err.contains("history_messages"), "{err}");
        assert!(err.contains("complaint_dispositions"), "{err}");
    }

    #[test]
    fn routing_rules_are_part_of_the_report() {
        let toml = r#"
mode = "development"
[auth]
jwt_secret = "demo-only-secret-change-me-0123456789abcdef"
[routing]
default_queue = "general"
[[routing.queues]]
name = "general"
steps = [{ after_secs = 10, overflow = "nowhere" }, { after_secs = 5 }]
"#;
        let err = load_from_str(Some(toml), &Default::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("overflow target \"nowhere\""), "{err}");
        assert!(err.contains("strictly increasing"), "{err}");
    }

    #[test]
    fn validate_reports_every_problem_at_once() {
        let toml = r#"
mode = "production"
[auth]
jwt_secret = "short"
[limits]
frames_per_second = 0
[routing]
default_queue = "nowhere"
[[agents]]
id = "a b"
skills = { cards = 9 }
[[agents]]
id = "a b"
"#;
        let err = load_from_str(Some(toml), &Default::default())
            .unwrap_err()
            .to_string();
        for needle in [
            "jwt_secret",
            "frames_per_second",
            "default_queue",
            "a b",
            "used twice",
            "proficiency 9",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
    }
}
