//! The nightly database backup.

use crate::builtin::backup::DatabaseBackupHandler;
use crate::services::AppServices;
use taskplane_agent::handler::TaskHandler;

/// `database_backup`: backups into the `backups` directory.
pub fn database_backup(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(DatabaseBackupHandler::new(
        services.backup_database_url.clone(),
        services.dir("backups"),
    ))
}
