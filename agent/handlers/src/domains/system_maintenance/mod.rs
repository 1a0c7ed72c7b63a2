//! The `system_maintenance` domain: backups, log clean-up, health checks and
//! metric aggregation, and the schedules that run them.
//!
//! - [`backups`]: the database backup.
//! - [`logs`]: the log clean-up.
//! - [`monitoring`]: health probes.

pub mod backups;
pub mod logs;
pub mod monitoring;

use std::sync::Arc;
use std::time::Duration;

use super::factories::{self, factories};
use crate::services::AppServices;
use taskplane_agent::registry::{DomainRegistry, TaskRegistry};
use taskplane_agent::schedule::{CatchUp, Schedule};

/// How old a log file must be before the hourly clean-up deletes it: a week.
const LOG_AGE_SECS: u64 = 7 * 24 * 3600;

/// Registers the system-maintenance handlers, built from the shared services.
pub struct SystemDomainRegistry {
    services: Arc<AppServices>,
}

impl SystemDomainRegistry {
    /// The domain, with the services its handlers use.
    pub fn new(services: Arc<AppServices>) -> Self {
        SystemDomainRegistry { services }
    }
}

impl DomainRegistry for SystemDomainRegistry {
    fn register_handlers(&self, registry: &mut TaskRegistry) -> Vec<String> {
        factories(
            &self.services,
            &[
                ("database_backup", backups::database_backup),
                ("log_cleanup", logs::log_cleanup),
                ("health_check", monitoring::health_check),
                ("metric_aggregation", factories::data_processing),
            ],
        )
        .register_all(registry)
    }

    fn domain_name(&self) -> &'static str {
        "system_maintenance"
    }

    /// A nightly backup at 02:00 UTC, an hourly clean-up of week-old logs
    /// and a probe of the control plane every minute. Each is created
    /// paused when what it needs is not configured (a backup database, a
    /// log directory, a control plane the health check may reach), so an
    /// agent never fills the queue with tasks bound to fail; resume one
    /// with `taskplane schedule resume NAME` once it is.
    fn schedules(&self) -> Vec<Schedule> {
        let services = &self.services;
        let control_plane = reqwest::Url::parse(&services.control_plane).ok();
        let host = control_plane
            .as_ref()
            .and_then(|url| {
                url.host_str()
                    .map(|h| h.trim_matches(['[', ']']).to_owned())
            })
            .unwrap_or_default();
        let port = control_plane
            .as_ref()
            .and_then(reqwest::Url::port_or_known_default)
            .unwrap_or(50051);
        vec![
            Schedule::cron("nightly-database-backup", "database_backup", "0 2 * * *")
                .paused(services.backup_database_url.is_none()),
            Schedule::cron("hourly-log-cleanup", "log_cleanup", "@hourly")
                .payload(serde_json::json!({ "pattern": "*.log", "older_than_secs": LOG_AGE_SECS }))
                .paused(services.log_dir.is_none()),
            Schedule::every(
                "control-plane-health-check",
                "health_check",
                Duration::from_secs(60),
            )
            .payload(serde_json::json!({ "host": host, "port": port }))
            .catch_up(CatchUp::Skip)
            .paused(!services.egress.trusts(&host)),
        ]
    }
}
