//! Handler factories: build handlers from injected services rather than by
//! hand, so a domain's wiring (SMTP settings, HTTP clients, directories)
//! lives in one place and tests can inject their own.

use std::collections::BTreeMap;

use crate::handler::TaskHandler;
use crate::registry::{RegistryError, TaskRegistry};

/// Builds the handler of one task type.
pub trait HandlerFactory: Send + Sync {
    /// A new handler, built from the factory's services.
    fn create_handler(&self) -> Box<dyn TaskHandler>;

    /// The task type the handler serves.
    fn task_type(&self) -> &'static str;
}

/// Factories by task type.
#[derive(Default)]
pub struct FactoryRegistry {
    factories: BTreeMap<String, Box<dyn HandlerFactory>>,
    duplicates: Vec<String>,
}

impl FactoryRegistry {
    /// An empty factory registry.
    pub fn new() -> Self {
        FactoryRegistry::default()
    }

    /// Adds a factory. A second factory for one task type replaces nothing:
    /// it is refused, and the registry [`FactoryRegistry::register_all`]
    /// fills records the error, so the agent does not start.
    pub fn register_factory(&mut self, factory: Box<dyn HandlerFactory>) {
        let task_type = factory.task_type().to_owned();
        if self.factories.contains_key(&task_type) {
            tracing::error!(task_type, "a second factory for one task type is refused");
            self.duplicates.push(task_type);
            return;
        }
        self.factories.insert(task_type, factory);
    }

    /// A new handler of a task type, if a factory builds it.
    pub fn create_handler(&self, task_type: &str) -> Option<Box<dyn TaskHandler>> {
        self.factories
            .get(task_type)
            .map(|factory| factory.create_handler())
    }

    /// The task types the factories build, sorted.
    pub fn task_types(&self) -> Vec<String> {
        self.factories.keys().cloned().collect()
    }

    /// Builds every handler into `registry`; returns their task types (the
    /// shape [`crate::DomainRegistry::register_handlers`] returns).
    pub fn register_all(&self, registry: &mut TaskRegistry) -> Vec<String> {
        for task_type in &self.duplicates {
            registry.record_error(RegistryError::DuplicateFactory(task_type.clone()));
        }
        for (task_type, factory) in &self.factories {
            registry.register_handler(task_type.clone(), factory.create_handler());
        }
        self.task_types()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::handler::{TaskContext, TaskError, TaskResult};

    /// A service shared by the handlers a factory builds.
    struct Counter(AtomicUsize);

    struct Counting(Arc<Counter>);

    #[async_trait]
    impl TaskHandler for Counting {
        async fn handle(&self, _context: TaskContext) -> Result<TaskResult, TaskError> {
            Ok(TaskResult::new(
                serde_json::json!({ "count": self.0.0.fetch_add(1, Ordering::SeqCst) + 1 }),
            ))
        }
    }

    struct CountingFactory(Arc<Counter>);

    impl HandlerFactory for CountingFactory {
        fn create_handler(&self) -> Box<dyn TaskHandler> {
            Box::new(Counting(self.0.clone()))
        }
        fn task_type(&self) -> &'static str {
            "count"
        }
    }

    #[tokio::test]
    async fn factories_inject_shared_services_into_the_handlers_they_build() {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let mut factories = FactoryRegistry::new();
        factories.register_factory(Box::new(CountingFactory(counter.clone())));
        factories.register_factory(Box::new(CountingFactory(Arc::new(Counter(
            AtomicUsize::new(100),
        )))));
        assert_eq!(
            factories.task_types(),
            ["count"],
            "the duplicate factory builds nothing"
        );
        assert!(factories.create_handler("unknown").is_none());

        let mut registry = TaskRegistry::new();
        assert_eq!(factories.register_all(&mut registry), ["count"]);
        assert_eq!(
            registry.check(),
            Err(vec![RegistryError::DuplicateFactory("count".into())]),
            "and is refused"
        );
        // The built handler uses the injected service: the test sees its effect.
        let handler = registry.get_handler("count").unwrap();
        let result = handler
            .handle(TaskContext::new("count", serde_json::json!({})))
            .await
            .unwrap();
        assert_eq!(result.output["count"], 1);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    }
}
