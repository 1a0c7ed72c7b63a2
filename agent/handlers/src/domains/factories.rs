//! What every domain's factories share: the [`ServiceFactory`] that builds
//! a task type's handler from the shared [`AppServices`] (narrowed to that
//! type's own settings), and the builders more than one domain uses. Each
//! domain keeps its own builders beside its registry.

use std::sync::Arc;

use crate::builtin::data::DataProcessingHandler;
use crate::builtin::email::{EmailHandler, EmailTemplate, Mailer};
use crate::builtin::unconfigured::UnconfiguredHandler;
use crate::services::AppServices;
use taskplane_agent::factory::{FactoryRegistry, HandlerFactory};
use taskplane_agent::handler::TaskHandler;

/// Builds a handler from the shared services.
pub type BuildHandler = fn(&AppServices) -> Box<dyn TaskHandler>;

/// Builds one task type's handler from the shared services.
pub struct ServiceFactory {
    task_type: &'static str,
    services: Arc<AppServices>,
    build: BuildHandler,
}

impl HandlerFactory for ServiceFactory {
    fn create_handler(&self) -> Box<dyn TaskHandler> {
        (self.build)(&self.services.for_task_type(self.task_type))
    }

    fn task_type(&self) -> &'static str {
        self.task_type
    }
}

/// A factory registry of `(task type, builder)` pairs sharing `services`.
pub fn factories(
    services: &Arc<AppServices>,
    entries: &[(&'static str, BuildHandler)],
) -> FactoryRegistry {
    let mut registry = FactoryRegistry::new();
    for (task_type, build) in entries {
        registry.register_factory(Box::new(ServiceFactory {
            task_type,
            services: services.clone(),
            build: *build,
        }));
    }
    registry
}

/// An email handler sending `template` (or the payload's own templates)
/// through the configured SMTP server, else into the mail sink.
pub fn email(
    services: &AppServices,
    template: Option<EmailTemplate>,
    description: &str,
) -> Box<dyn TaskHandler> {
    // An SMTP server when one is set, else the mail sink.
    let mailer = match (&services.smtp_url, &services.mail_dir) {
        (Some(url), _) => Mailer::Smtp(url.clone()),
        (None, Some(dir)) => Mailer::Files(dir.clone()),
        (None, None) => Mailer::Unconfigured,
    };
    match EmailHandler::new(mailer, &services.smtp_from, template) {
        Ok(handler) => Box::new(handler.with_description(description)),
        // A bad SMTP setting fails every attempt with the reason, never panics.
        Err(problem) => Box::new(UnconfiguredHandler::new(problem, description.to_owned())),
    }
}

/// `data_processing` and `metric_aggregation`: statistics over data files.
pub fn data_processing(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(DataProcessingHandler::new(services.dir("data")))
}
