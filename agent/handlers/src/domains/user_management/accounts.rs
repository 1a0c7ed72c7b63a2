//! A user's account data: the clean-up of a closed account's files and
//! the export of a profile.

use crate::builtin::cleanup::FileCleanupHandler;
use crate::builtin::report::ReportHandler;
use crate::services::AppServices;
use taskplane_agent::handler::TaskHandler;

/// `account_cleanup`: deletes one user's files.
pub fn account_cleanup(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(
        FileCleanupHandler::new(Some(services.dir("files")), "TASKPLANE_AGENT_DATA_DIR")
            .for_accounts()
            .with_description("Deletes a closed account's files (payload: user_id, reason, marked_for_deletion, billing_cleared, backup_completed, dry_run)"),
    )
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
