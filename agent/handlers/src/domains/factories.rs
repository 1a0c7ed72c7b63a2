//! The factories that build the example domains' handlers from the shared
//! [`AppServices`]: one place decides which built-in serves which task type
//! and with which settings.

use std::sync::Arc;

use crate::builtin::backup::DatabaseBackupHandler;
use crate::builtin::cleanup::FileCleanupHandler;
use crate::builtin::data::DataProcessingHandler;
use crate::builtin::email::{EmailHandler, EmailTemplate, Mailer};
use crate::builtin::invoice::InvoiceHandler;
use crate::builtin::probe::HealthCheckHandler;
use crate::builtin::report::ReportHandler;
use crate::builtin::unconfigured::UnconfiguredHandler;
use crate::builtin::webhook::WebhookHandler;
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

fn email(
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

/// `email`: any message, templates in the payload.
pub fn generic_email(services: &AppServices) -> Box<dyn TaskHandler> {
    email(
        services,
        None,
        "Sends an email rendered from the payload's subject and body templates",
    )
}

/// `welcome_email`: the welcome message.
pub fn welcome_email(services: &AppServices) -> Box<dyn TaskHandler> {
    let template = EmailTemplate {
        subject: "Welcome, {{ name }}!".into(),
        body: "Hi {{ name }},\n\nyour account is ready. Sign in any time.\n\n— The team\n".into(),
    };
    email(
        services,
        Some(template),
        "Sends the welcome email to a new user (payload: to, name)",
    )
}

/// `password_reset`: the reset link message.
pub fn password_reset(services: &AppServices) -> Box<dyn TaskHandler> {
    let template = EmailTemplate {
        subject: "Reset your password".into(),
        body: "Hi {{ name }},\n\nreset your password here: {{ reset_url }}\n\nIf you did not ask for this, ignore this email.\n".into(),
    };
    email(
        services,
        Some(template),
        "Sends a password-reset link (payload: to, name, reset_url)",
    )
}

/// `webhook`: any URL from the payload.
pub fn webhook(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(WebhookHandler::new(
        services.egress.clone(),
        services.webhook_secret.clone(),
    ))
}

/// `data_processing` and `metric_aggregation`: statistics over data files.
pub fn data_processing(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(DataProcessingHandler::new(services.dir("data")))
}

/// `file_cleanup`: deletes old files under the agent's `files` directory.
pub fn file_cleanup(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(FileCleanupHandler::new(
        Some(services.dir("files")),
        "TASKPLANE_AGENT_DATA_DIR",
    ))
}

/// `log_cleanup`: deletes old logs under the configured log directory.
pub fn log_cleanup(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(
        FileCleanupHandler::new(services.log_dir.clone(), "TASKPLANE_LOG_DIR")
            .with_description("Deletes old log files (payload: pattern, older_than_secs, dry_run)"),
    )
}

/// `account_cleanup`: deletes one user's files.
pub fn account_cleanup(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(
        FileCleanupHandler::new(Some(services.dir("files")), "TASKPLANE_AGENT_DATA_DIR")
            .for_accounts()
            .with_description("Deletes a closed account's files (payload: user_id, reason, marked_for_deletion, billing_cleared, backup_completed, dry_run)"),
    )
}

/// `report_generation`: reports into the agent's `reports` directory.
pub fn report_generation(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(ReportHandler::new(
        services.dir("reports"),
        services.control_plane.clone(),
        services.connect_options.clone(),
    ))
}

/// `profile_export`: a user's data as a report in the `exports` directory.
pub fn profile_export(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(
        ReportHandler::new(
            services.dir("exports"),
            services.control_plane.clone(),
            services.connect_options.clone(),
        )
        .with_description("Exports a user's profile rows as a JSON, CSV or Markdown file"),
    )
}

/// `invoice_generation`: invoices into the `invoices` directory.
pub fn invoice_generation(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(InvoiceHandler::new(services.dir("invoices")))
}

/// `health_check`: HTTP or TCP probes.
pub fn health_check(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(HealthCheckHandler::new(services.egress.clone()))
}

/// `database_backup`: backups into the `backups` directory.
pub fn database_backup(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(DatabaseBackupHandler::new(
        services.backup_database_url.clone(),
        services.dir("backups"),
    ))
}
