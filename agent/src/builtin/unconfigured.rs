//! `UnconfiguredHandler`: stands for a task type whose external service this
//! agent was not given. Every attempt fails at once with a permanent error
//! that names the missing service, so nothing is ever reported as done that
//! was not done.

use async_trait::async_trait;

use crate::handler::{HandlerHealth, TaskContext, TaskError, TaskHandler, TaskResult};

/// Fails every attempt, naming the service the task type needs.
pub struct UnconfiguredHandler {
    service: &'static str,
    description: &'static str,
}

impl UnconfiguredHandler {
    /// A handler whose work needs `service` (e.g. "an SMTP server").
    pub fn new(service: &'static str, description: &'static str) -> Self {
        UnconfiguredHandler {
            service,
            description,
        }
    }
}

#[async_trait]
impl TaskHandler for UnconfiguredHandler {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        Err(TaskError::Permanent(format!(
            "task type '{}' needs {}, and this agent has none configured; nothing was done",
            context.task_type, self.service
        )))
    }

    fn description(&self) -> String {
        self.description.into()
    }

    async fn health_check(&self) -> Option<HandlerHealth> {
        Some(HandlerHealth::unhealthy(format!(
            "needs {}; none is configured",
            self.service
        )))
    }
}
