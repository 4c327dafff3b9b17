use crate::{AgentId, TaskId};

/// An event the router refuses; its state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// The agent is not registered.
    #[error("unknown agent {0}")]
    UnknownAgent(AgentId),
    /// The task is not known (never arrived, or already ended).
    #[error("unknown task {0}")]
    UnknownTask(TaskId),
    /// A task with this id is already routed.
    #[error("task {0} already exists")]
    DuplicateTask(TaskId),
    /// The queue is not configured.
    #[error("unknown queue {0}")]
    UnknownQueue(String),
    /// The agent has no pending offer of this task (expired, rescinded or never made).
    #[error("agent {agent} has no offer of task {task}")]
    NoSuchOffer {
        /// The task.
        task: TaskId,
        /// The agent.
        agent: AgentId,
    },
    /// The task is not assigned to this agent.
    #[error("task {task} is not assigned to agent {agent}")]
    NotAssigned {
        /// The task.
        task: TaskId,
        /// The agent.
        agent: AgentId,
    },
    /// A transfer target cannot take the task now.
    #[error("agent {0} cannot take a transfer now (offline, away or at capacity)")]
    TargetUnavailable(AgentId),
    /// The task is not in wrap-up (it completed without wrap-up, or wrap-up already ended).
    #[error("task {0} is not in wrap-up")]
    NotInWrapUp(TaskId),
    /// A configuration value is unusable.
    #[error("invalid routing configuration: {0}")]
    Config(String),
}
