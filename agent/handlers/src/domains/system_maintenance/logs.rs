//! The hourly clean-up of old logs.

use crate::builtin::cleanup::FileCleanupHandler;
use crate::services::AppServices;
use taskplane_agent::handler::TaskHandler;

/// `log_cleanup`: deletes old logs under the configured log directory.
pub fn log_cleanup(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(
        FileCleanupHandler::new(services.log_dir.clone(), "TASKPLANE_LOG_DIR")
            .with_description("Deletes old log files (payload: pattern, older_than_secs, dry_run)"),
    )
}
