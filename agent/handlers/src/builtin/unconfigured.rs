//! `UnconfiguredHandler`: stands for a task type whose external service this
//! agent was not given, or was given wrongly. Every attempt fails at once
//! with a permanent error that says what is missing and how to fix it, so
//! nothing is ever reported as done that was not done.

use async_trait::async_trait;

use taskplane_agent::handler::{HandlerHealth, TaskContext, TaskError, TaskHandler, TaskResult};

/// Fails every attempt with the configuration problem that stops it.
pub struct UnconfiguredHandler {
    problem: String,
    description: String,
}

impl UnconfiguredHandler {
    /// A handler that cannot work because of `problem` (a sentence saying
    /// what is missing and which setting fixes it).
    pub fn new(problem: String, description: String) -> Self {
        UnconfiguredHandler {
            problem,
            description,
        }
    }
}

#[async_trait]
impl TaskHandler for UnconfiguredHandler {
    async fn handle(&self, _context: TaskContext) -> Result<TaskResult, TaskError> {
        Err(TaskError::Permanent(format!(
            "{}; nothing was done",
            self.problem
        )))
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    async fn health_check(&self) -> Option<HandlerHealth> {
        Some(HandlerHealth::unhealthy(self.problem.clone()))
    }
}
