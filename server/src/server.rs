//! Assembling and running the control plane: storage, the gRPC services,
//! health, reflection and the background lease keeper, with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use taskplane_proto::v1::agent_service_server::AgentServiceServer;
use taskplane_proto::v1::registry_service_server::RegistryServiceServer;
use taskplane_proto::v1::task_service_server::TaskServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::api::{AgentApi, RegistryApi, TaskApi};
use crate::completer::run_completer;
use crate::config::ServerConfig;
use crate::dispatch::{checkpoint_wal, maintain_leases, relay_ready_notifications};
use crate::plane::ControlPlane;
use crate::store;

/// A control plane bound to its address, ready to serve.
pub struct Server {
    listener: TcpListener,
    plane: Arc<ControlPlane>,
}

impl Server {
    /// Opens the database (applying migrations) and binds the listen address.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let store = store::open(&config.database_url, &config.queue)
            .await
            .with_context(|| format!("opening the database {}", config.database_url))?;
        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "binding {}: is another server running there? pass --listen",
                config.listen
            )
        })?;
        Ok(Server {
            listener,
            plane: Arc::new(ControlPlane::new(store, config.queue)),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then stops accepting, ends agent
    /// streams (returning their leased tasks to the queue) and waits for every
    /// spawned task.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let plane = self.plane;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<TaskServiceServer<TaskApi>>()
            .await;
        health_reporter
            .set_serving::<RegistryServiceServer<RegistryApi>>()
            .await;
        health_reporter
            .set_serving::<AgentServiceServer<AgentApi>>()
            .await;
        // Both reflection versions describe every service, each other included,
        // so old (v1alpha-only) and new clients list the same set.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(taskplane_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                )
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        plane
            .tasks
            .spawn(maintain_leases(plane.clone(), plane.shutdown.clone()));
        plane
            .tasks
            .spawn(checkpoint_wal(plane.clone(), plane.shutdown.clone()));
        plane.tasks.spawn(relay_ready_notifications(
            plane.clone(),
            plane.shutdown.clone(),
        ));
        // The completer outlives the sessions: it is stopped only after they
        // have all ended, and writes every queued result before it returns.
        let completer_stop = CancellationToken::new();
        let completer = tokio::spawn(run_completer(plane.clone(), completer_stop.clone()));
        let stop = plane.shutdown.clone();
        let signal_stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            signal_stop.cancel();
        });

        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(TaskServiceServer::new(TaskApi::new(plane.clone())))
            .add_service(RegistryServiceServer::new(RegistryApi::new(plane.clone())))
            .add_service(AgentServiceServer::new(AgentApi::new(plane.clone())))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(self.listener),
                stop.cancelled_owned(),
            )
            .await?;
        plane.tasks.close();
        plane.tasks.wait().await;
        completer_stop.cancel();
        completer.await?;
        tracing::info!("server stopped");
        Ok(())
    }
}
