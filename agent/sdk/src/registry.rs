//! The agent's [`TaskRegistry`]: which handler runs which task type,
//! organised by domain ([`DomainRegistry`]).
//!
//! Registering one task type twice is a mistake the developer sees at
//! start-up: the first handler stays, the duplicate is recorded, and
//! [`TaskRegistry::check`] (which `Agent::run` calls) refuses to start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use taskplane_proto::names::check_name;

use crate::flow::FlowLimits;
use crate::handler::{HandlerHealth, TaskContext, TaskError, TaskHandler, TaskResult};
use crate::schedule::Schedule;

/// The domain of handlers registered outside any [`DomainRegistry`].
pub const DEFAULT_DOMAIN: &str = "default";

/// A group of task types of one business domain, registered together.
pub trait DomainRegistry: Send + Sync {
    /// Registers the domain's handlers and returns their task types.
    fn register_handlers(&self, registry: &mut TaskRegistry) -> Vec<String>;

    /// The domain's name, e.g. `"billing"`.
    fn domain_name(&self) -> &'static str;

    /// The schedules the domain declares with its handlers, each of one of
    /// its task types (see [`crate::schedule`]); none by default.
    fn schedules(&self) -> Vec<Schedule> {
        Vec::new()
    }
}

/// What the registry knows about one task type.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HandlerInfo {
    /// The task type.
    pub task_type: String,
    /// Its domain, if it was registered through one.
    pub domain: Option<String>,
    /// When its handler was registered.
    pub registered_at: Option<DateTime<Utc>>,
    /// The handler's capability tags.
    pub capabilities: Vec<String>,
    /// The handler's description.
    pub description: String,
    /// The handler versions served.
    pub versions: Vec<String>,
    /// The flow-control limits the handler declares.
    pub flow: Option<FlowLimits>,
}

/// The self-checks of a registry's handlers, by task type.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RegistryHealthStatus {
    /// Each checked handler's result.
    pub handlers: BTreeMap<String, HandlerHealth>,
}

impl RegistryHealthStatus {
    /// Whether every checked handler is healthy.
    pub fn is_healthy(&self) -> bool {
        self.handlers.values().all(|health| health.healthy)
    }
}

/// A problem found while building a registry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// One task type was registered twice.
    #[error("task type '{0}' is registered twice: give each handler its own task type")]
    DuplicateTaskType(String),
    /// A task type or domain name breaks the naming grammar.
    #[error("{0}")]
    InvalidName(String),
    /// `register_domain` was given a name other than the domain's own.
    #[error(
        "register_domain(\"{given}\", …) was given the registry of domain '{declared}' (its domain_name()): register each domain under its own name"
    )]
    DomainNameMismatch {
        /// The name `register_domain` was given.
        given: String,
        /// What the registry's `domain_name()` says.
        declared: String,
    },
    /// A domain registered a handler it did not list among its task types.
    #[error(
        "domain '{domain}' registered a handler for '{task_type}' but register_handlers did not return it: return every task type it registers"
    )]
    UnlistedHandler {
        /// The domain.
        domain: String,
        /// The task type left out of the list.
        task_type: String,
    },
    /// Two factories build handlers of one task type.
    #[error("task type '{0}' has two factories: register one factory per task type")]
    DuplicateFactory(String),
    /// The registry has no handler at all.
    #[error("the registry has no handlers: enable at least one domain (TASK_ENABLED_DOMAINS)")]
    Empty,
}

/// Handlers by task type, grouped by domain.
#[derive(Default)]
pub struct TaskRegistry {
    handlers: HashMap<String, Box<dyn TaskHandler>>,
    domains: BTreeMap<String, Vec<String>>,
    registration_times: HashMap<String, DateTime<Utc>>,
    schedules: BTreeMap<String, Vec<Schedule>>,
    feature_flags: Arc<BTreeMap<String, bool>>,
    errors: Vec<RegistryError>,
}

impl TaskRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        TaskRegistry::default()
    }

    /// Registers every handler of a domain under `domain`, which must be
    /// the domain's own [`DomainRegistry::domain_name`]. A mismatch, or a
    /// handler the domain registers without returning its task type, is
    /// recorded as an error (see [`TaskRegistry::check`]).
    pub fn register_domain(&mut self, domain: &str, domain_registry: Box<dyn DomainRegistry>) {
        if let Err(message) = check_name("domain", domain) {
            self.errors.push(RegistryError::InvalidName(message));
            return;
        }
        if domain_registry.domain_name() != domain {
            self.errors.push(RegistryError::DomainNameMismatch {
                given: domain.to_owned(),
                declared: domain_registry.domain_name().to_owned(),
            });
            return;
        }
        let before: std::collections::HashSet<String> = self.handlers.keys().cloned().collect();
        let task_types = domain_registry.register_handlers(self);
        let mut unlisted: Vec<&String> = self
            .handlers
            .keys()
            .filter(|t| !before.contains(*t) && !task_types.contains(t))
            .collect();
        unlisted.sort();
        for task_type in unlisted {
            self.errors.push(RegistryError::UnlistedHandler {
                domain: domain.to_owned(),
                task_type: task_type.clone(),
            });
        }
        tracing::info!(domain, task_types = task_types.len(), "registered domain");
        for schedule in domain_registry.schedules() {
            self.add_schedule(domain, schedule);
        }
        let types = self.domains.entry(domain.to_owned()).or_default();
        for task_type in task_types {
            if !types.contains(&task_type) {
                types.push(task_type);
            }
        }
    }

    /// Registers the handler of one task type. A second handler for the same
    /// type is refused and recorded as an error (see [`TaskRegistry::check`]).
    pub fn register_handler(
        &mut self,
        task_type: impl Into<String>,
        handler: Box<dyn TaskHandler>,
    ) {
        let task_type = task_type.into();
        if let Err(message) = check_name("task type", &task_type) {
            self.errors.push(RegistryError::InvalidName(message));
            return;
        }
        if self.handlers.contains_key(&task_type) {
            tracing::error!(
                task_type,
                "task type registered twice; keeping the first handler"
            );
            self.errors
                .push(RegistryError::DuplicateTaskType(task_type));
            return;
        }
        tracing::debug!(task_type, "registering handler");
        self.registration_times
            .insert(task_type.clone(), Utc::now());
        self.handlers.insert(task_type, handler);
    }

    /// Removes a task type's handler (e.g. disabled by configuration).
    pub fn remove_handler(&mut self, task_type: &str) -> Option<Box<dyn TaskHandler>> {
        let removed = self.handlers.remove(task_type);
        if removed.is_some() {
            self.registration_times.remove(task_type);
            for types in self.domains.values_mut() {
                types.retain(|t| t != task_type);
            }
        }
        removed
    }

    /// The handler of a task type.
    pub fn get_handler(&self, task_type: &str) -> Option<&dyn TaskHandler> {
        self.handlers.get(task_type).map(|handler| handler.as_ref())
    }

    /// Every task type with a handler, sorted.
    pub fn list_task_types(&self) -> Vec<String> {
        let mut types: Vec<String> = self.handlers.keys().cloned().collect();
        types.sort();
        types
    }

    /// Every domain registered, sorted.
    pub fn list_domains(&self) -> Vec<String> {
        self.domains.keys().cloned().collect()
    }

    /// The task types of one domain.
    pub fn get_domain_task_types(&self, domain: &str) -> Option<&Vec<String>> {
        self.domains.get(domain)
    }

    /// What the registry knows about one task type.
    pub fn get_handler_info(&self, task_type: &str) -> Option<HandlerInfo> {
        self.handlers.get(task_type).map(|handler| HandlerInfo {
            task_type: task_type.to_owned(),
            domain: self.find_domain_for_task_type(task_type),
            registered_at: self.registration_times.get(task_type).copied(),
            capabilities: handler.capabilities(),
            description: handler.description(),
            versions: handler.versions(),
            flow: handler.flow_limits(),
        })
    }

    /// [`HandlerInfo`] of every task type, sorted by type.
    pub fn list_all_handlers(&self) -> Vec<HandlerInfo> {
        self.list_task_types()
            .iter()
            .filter_map(|t| self.get_handler_info(t))
            .collect()
    }

    /// Whether a task type has a handler here.
    pub fn validate_task_type(&self, task_type: &str) -> bool {
        self.handlers.contains_key(task_type)
    }

    /// The domain a task type was registered through.
    pub fn find_domain_for_task_type(&self, task_type: &str) -> Option<String> {
        self.domains
            .iter()
            .find(|(_, types)| types.iter().any(|t| t == task_type))
            .map(|(domain, _)| domain.clone())
    }

    /// How many task types have a handler.
    pub fn handler_count(&self) -> usize {
        self.handlers.len()
    }

    /// Task types by domain, as sent in `register`; handlers registered
    /// outside any domain go to [`DEFAULT_DOMAIN`].
    pub fn task_types_by_domain(&self) -> BTreeMap<String, Vec<HandlerInfo>> {
        let mut by_domain: BTreeMap<String, Vec<HandlerInfo>> = BTreeMap::new();
        for info in self.list_all_handlers() {
            let domain = info
                .domain
                .clone()
                .unwrap_or_else(|| DEFAULT_DOMAIN.to_owned());
            by_domain.entry(domain).or_default().push(info);
        }
        by_domain
    }

    /// Runs one task in-process, as an agent runs an assignment: the
    /// handler of `context.task_type`, with this registry's feature flags,
    /// stopped after `timeout`. The guide's `process_single_task_by_id`
    /// for tests, without a server: build the context with
    /// [`TaskContext::new`] and check the outcome.
    pub async fn process_task(
        &self,
        context: TaskContext,
        timeout: std::time::Duration,
    ) -> Result<TaskResult, TaskError> {
        let cancel = context.cancellation.clone();
        crate::execution::run_task(self, context, timeout, cancel).await
    }

    /// Sets the feature flags the agent registers with and its handlers
    /// read from their [`TaskContext`](crate::TaskContext).
    pub fn set_feature_flags(&mut self, flags: impl IntoIterator<Item = (String, bool)>) {
        self.feature_flags = Arc::new(flags.into_iter().collect());
    }

    /// The feature flags (see [`TaskRegistry::set_feature_flags`]).
    pub fn feature_flags(&self) -> Arc<BTreeMap<String, bool>> {
        Arc::clone(&self.feature_flags)
    }

    /// Records a problem found while filling the registry, refused by
    /// [`TaskRegistry::check`] (and so by the agent's builder).
    pub fn record_error(&mut self, error: RegistryError) {
        self.errors.push(error);
    }

    /// Declares a schedule of `domain`, sent when the agent registers.
    pub fn add_schedule(&mut self, domain: &str, schedule: Schedule) {
        self.schedules
            .entry(domain.to_owned())
            .or_default()
            .push(schedule);
    }

    /// The schedules `domain` declares whose task type has a handler here
    /// (a disabled type's schedule is not sent: the server would refuse it).
    pub fn schedules_of(&self, domain: &str) -> Vec<&Schedule> {
        self.schedules
            .get(domain)
            .into_iter()
            .flatten()
            .filter(|schedule| self.handlers.contains_key(schedule.task_type()))
            .collect()
    }

    /// Runs every handler's self-check concurrently; handlers with nothing
    /// to check are left out.
    pub async fn health_check(&self) -> RegistryHealthStatus {
        let checks = self.handlers.iter().map(|(task_type, handler)| async move {
            handler
                .health_check()
                .await
                .map(|health| (task_type.clone(), health))
        });
        let handlers = futures::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
            .collect();
        RegistryHealthStatus { handlers }
    }

    /// Every problem found while building the registry; an agent refuses to
    /// start with any.
    pub fn check(&self) -> Result<(), Vec<RegistryError>> {
        let mut errors = self.errors.clone();
        if self.handlers.is_empty() {
            errors.push(RegistryError::Empty);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::handler::{TaskContext, TaskError, TaskResult};

    struct Noop;

    #[async_trait]
    impl TaskHandler for Noop {
        async fn handle(&self, _context: TaskContext) -> Result<TaskResult, TaskError> {
            Ok(TaskResult::new(serde_json::json!({})))
        }
    }

    /// The billing domain; `sneaky` also registers a handler it does not list.
    struct Billing {
        sneaky: bool,
    }

    impl DomainRegistry for Billing {
        fn register_handlers(&self, registry: &mut TaskRegistry) -> Vec<String> {
            registry.register_handler("invoice", Box::new(Noop));
            if self.sneaky {
                registry.register_handler("refund", Box::new(Noop));
            }
            vec!["invoice".to_owned()]
        }

        fn domain_name(&self) -> &'static str {
            "billing"
        }
    }

    #[test]
    fn a_domain_is_filed_under_its_own_name_only() {
        let mut registry = TaskRegistry::new();
        registry.register_domain("billing", Box::new(Billing { sneaky: false }));
        assert_eq!(registry.check(), Ok(()));
        assert_eq!(
            registry.find_domain_for_task_type("invoice").as_deref(),
            Some("billing")
        );

        let mut misfiled = TaskRegistry::new();
        misfiled.register_domain("shipping", Box::new(Billing { sneaky: false }));
        let errors = misfiled.check().unwrap_err();
        assert!(errors.contains(&RegistryError::DomainNameMismatch {
            given: "shipping".into(),
            declared: "billing".into(),
        }));
        assert!(
            misfiled.get_handler("invoice").is_none(),
            "nothing was filed"
        );
        let refused = crate::Agent::builder()
            .registry(misfiled)
            .server("http://127.0.0.1:1")
            .build()
            .err()
            .expect("the agent does not start")
            .to_string();
        assert!(refused.contains("domain_name()"), "{refused}");
    }

    #[test]
    fn a_handler_the_domain_does_not_list_is_an_error() {
        let mut registry = TaskRegistry::new();
        registry.register_domain("billing", Box::new(Billing { sneaky: true }));
        assert_eq!(
            registry.check(),
            Err(vec![RegistryError::UnlistedHandler {
                domain: "billing".into(),
                task_type: "refund".into(),
            }])
        );
    }
}
