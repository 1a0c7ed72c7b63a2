//! The `system_maintenance` domain: backups, log clean-up, health checks and
//! metric aggregation.

use crate::builtin::aggregate::AggregateHandler;
use crate::builtin::probe::TcpProbeHandler;
use crate::builtin::unconfigured::UnconfiguredHandler;
use crate::registry::{DomainRegistry, TaskRegistry};

/// Registers the system-maintenance handlers.
pub struct SystemDomainRegistry;

impl DomainRegistry for SystemDomainRegistry {
    fn register_handlers(&self, registry: &mut TaskRegistry) -> Vec<String> {
        registry.register_handler(
            "database_backup",
            Box::new(UnconfiguredHandler::new(
                "a database to back up",
                "Backs up the application database",
            )),
        );
        registry.register_handler(
            "log_cleanup",
            Box::new(UnconfiguredHandler::new(
                "a log directory",
                "Deletes old log files",
            )),
        );
        registry.register_handler("health_check", Box::new(TcpProbeHandler));
        registry.register_handler("metric_aggregation", Box::new(AggregateHandler));
        [
            "database_backup",
            "log_cleanup",
            "health_check",
            "metric_aggregation",
        ]
        .map(String::from)
        .to_vec()
    }

    fn domain_name(&self) -> &'static str {
        "system_maintenance"
    }
}
