//! What the server reports on `grpc.health.v1`. Every taskplane service is
//! SERVING while the database takes writes, and NOT_SERVING while it does not
//! (a full disk, a read-only file, PostgreSQL down or stalled) or once the
//! server is shutting down. A load balancer or orchestrator then sends work
//! elsewhere; the server itself keeps running and reports SERVING again once
//! a write commits, with no restart.

use std::sync::Arc;
use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::engine::plane::ControlPlane;

/// How often the database is probed with a write, and how long a probe may
/// take before it counts as failed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The services whose health is reported: the whole server (`""`) and each
/// taskplane service.
pub const SERVICES: [&str; 5] = [
    "",
    "taskplane.v1.TaskService",
    "taskplane.v1.RegistryService",
    "taskplane.v1.AgentService",
    "taskplane.v1.ScheduleService",
];

/// Probes the database every [`PROBE_INTERVAL`] and reports the result on
/// `reporter`, until the server shuts down; then reports NOT_SERVING.
pub async fn report_health(plane: Arc<ControlPlane>, reporter: HealthReporter) {
    let mut reported = None;
    loop {
        let probed = tokio::time::timeout(PROBE_INTERVAL, plane.store.probe()).await;
        // A fault an enqueue or a result met since the last probe counts too:
        // a probe can succeed where a bigger write fails.
        let faulted = plane.storage_faults.take();
        let status = match probed {
            Ok(Ok(())) if !faulted => ServingStatus::Serving,
            Ok(Ok(())) => {
                tracing::warn!("a write met a storage fault; reporting NOT_SERVING");
                ServingStatus::NotServing
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "the database refused the health probe; reporting NOT_SERVING");
                ServingStatus::NotServing
            }
            Err(_) => {
                tracing::warn!(
                    "the database did not answer the health probe within {PROBE_INTERVAL:?}; reporting NOT_SERVING"
                );
                ServingStatus::NotServing
            }
        };
        if reported != Some(status) {
            if status == ServingStatus::Serving && reported.is_some() {
                tracing::info!("the database takes writes again; reporting SERVING");
            }
            report(&reporter, status).await;
            reported = Some(status);
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
            () = plane.shutdown.cancelled() => break,
        }
    }
    report(&reporter, ServingStatus::NotServing).await;
}

/// Reports `status` for every service in [`SERVICES`].
pub async fn report(reporter: &HealthReporter, status: ServingStatus) {
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueueConfig;
    use crate::error::Error;
    use crate::store::suite::sqlite_store;
    use tonic_health::pb::health_check_response::ServingStatus as Reported;
    use tonic_health::pb::health_server::Health as _;
    use tonic_health::server::HealthService;

    /// Waits (up to ten seconds) until the whole server reports `status`.
    async fn reported(service: &HealthService, status: Reported) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let answer = service
                .check(tonic::Request::new(
                    tonic_health::pb::HealthCheckRequest::default(),
                ))
                .await;
            if answer.is_ok_and(|a| a.into_inner().status() == status) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "never {status:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn health_follows_write_faults_and_is_not_serving_once_shutdown_begins() {
        let (_dir, _url, store) = sqlite_store("t.db").await;
        let plane = Arc::new(ControlPlane::new(
            Arc::new(store),
            QueueConfig::default(),
            None,
        ));
        let reporter = HealthReporter::new();
        let service = HealthService::from_health_reporter(reporter.clone());
        let reporting = tokio::spawn(report_health(plane.clone(), reporter));
        reported(&service, Reported::Serving).await;

        // A write path met a transient fault: one round of NOT_SERVING, then
        // SERVING again once the probe's write commits.
        plane
            .storage_faults
            .note(&Error::Unavailable("the disk is full".into()));
        reported(&service, Reported::NotServing).await;
        reported(&service, Reported::Serving).await;

        plane.shutdown.cancel();
        reporting.await.unwrap();
        reported(&service, Reported::NotServing).await;
    }
}
