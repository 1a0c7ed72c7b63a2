//! Assembling and running the control plane: storage, the gRPC services
//! behind authentication and (optionally) TLS, health, reflection and the
//! background lease keeper, with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use taskplane_common::metrics_endpoint::{Render, serve_metrics};
use taskplane_proto::v1::agent_service_server::AgentServiceServer;
use taskplane_proto::v1::registry_service_server::RegistryServiceServer;
use taskplane_proto::v1::schedule_service_server::ScheduleServiceServer;
use taskplane_proto::v1::task_service_server::TaskServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::pb::health_server::{Health, HealthServer};
use tower::Layer as _;

use crate::api::{AgentApi, RegistryApi, ScheduleApi, TaskApi};
use crate::auth::{AuthLayer, Authenticator};
use crate::config::{SecurityConfig, ServerConfig};
use crate::console::Console;
use crate::engine::completer::run_completer;
use crate::engine::enqueuer::run_enqueuer;
use crate::engine::plane::ControlPlane;
use crate::maintenance;
use crate::store;
use crate::transport;
use crate::transport::reload::{Reloadable, watch_and_reload};
use crate::transport::tls::ServerTls;

/// A control plane bound to its address, ready to serve.
pub struct Server {
    listener: TcpListener,
    plane: Arc<ControlPlane>,
    tls: Option<Arc<ServerTls>>,
    reload_interval: std::time::Duration,
    metrics_listener: Option<TcpListener>,
    console_listener: Option<TcpListener>,
}

impl Server {
    /// Opens the database (applying migrations), reads the TLS and tokens
    /// files and binds the listen address. Refuses to serve without
    /// authentication beyond loopback unless `security.insecure` is set.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        check_exposure(&config)?;
        let security = &config.security;
        let tls = match &security.tls {
            Some(files) => Some(Arc::new(
                ServerTls::load(files.clone()).map_err(anyhow::Error::msg)?,
            )),
            None => None,
        };
        let store = store::open(&config.database_url, &config.queue)
            .await
            .with_context(|| format!("opening the database {}", config.database_url))?;
        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "binding {}: is another server running there? pass --listen",
                config.listen
            )
        })?;
        let metrics_listener = match config.metrics_listen {
            Some(address) => Some(TcpListener::bind(address).await.with_context(|| {
                format!("binding the metrics address {address}: pass another --metrics-listen")
            })?),
            None => None,
        };
        let console_listener = match config.console_listen {
            Some(address) => Some(TcpListener::bind(address).await.with_context(|| {
                format!("binding the console address {address}: pass another --console-listen")
            })?),
            None => None,
        };
        let authenticator = match &security.auth {
            Some(auth) => Some(Arc::new(
                Authenticator::new(store.clone(), auth.tokens_file.clone(), auth.cache_ttl)
                    .map_err(anyhow::Error::msg)?,
            )),
            None => None,
        };
        Ok(Server {
            listener,
            plane: Arc::new(ControlPlane::new(store, config.queue, authenticator)),
            tls,
            reload_interval: security.reload_interval,
            metrics_listener,
            console_listener,
        })
    }

    /// The web console's address, if one was asked for.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The metrics endpoint's address, if one was asked for.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The files to re-read on change or SIGHUP: TLS and the tokens file.
    fn reloadables(&self) -> Vec<Reloadable> {
        let mut items = Vec::new();
        if let Some(tls) = &self.tls {
            let reloaded = tls.clone();
            items.push(Reloadable {
                name: "TLS certificate",
                paths: tls.paths().into_iter().map(Into::into).collect(),
                reload: Box::new(move || reloaded.reload()),
            });
        }
        if let Some(authenticator) = &self.plane.authenticator
            && let Some(path) = authenticator.tokens_file()
        {
            let reloaded = authenticator.clone();
            items.push(Reloadable {
                name: "tokens file",
                paths: vec![path.to_owned()],
                reload: Box::new(move || reloaded.reload()),
            });
        }
        items
    }

    /// Serves until `shutdown` resolves, then stops accepting, ends agent
    /// streams (returning their leased tasks to the queue) and waits for every
    /// spawned task.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let reloadables = self.reloadables();
        let plane = self.plane;
        let (health, health_service) = tonic_health::server::health_reporter();
        // Just opened (and migrated), the database takes writes.
        maintenance::health::report(&health, tonic_health::ServingStatus::Serving).await;
        let routes = routes(&plane, health_service)?;
        let router = tonic::transport::Server::builder()
            .layer(AuthLayer::new(plane.authenticator.clone()))
            .add_routes(routes.clone());
        if let Some(listener) = self.console_listener {
            let service = AuthLayer::new(plane.authenticator.clone()).layer(routes);
            let console = Console::new(service, plane.clone(), self.tls.is_some());
            plane.tasks.spawn(console.serve(listener, self.tls.clone()));
        }
        maintenance::start(&plane, health);
        if let Some(listener) = self.metrics_listener {
            let scraped = plane.clone();
            let render: Render = Arc::new(move || {
                let plane = scraped.clone();
                Box::pin(async move { plane.metrics.scrape(&plane).await })
            });
            plane
                .tasks
                .spawn(serve_metrics(listener, render, plane.shutdown.clone()));
        }
        plane.tasks.spawn(watch_and_reload(
            reloadables,
            self.reload_interval,
            plane.shutdown.clone(),
        ));
        // The completer outlives the sessions: it is stopped only after they
        // have all ended, and writes every queued result before it returns.
        let completer_stop = CancellationToken::new();
        let completer = tokio::spawn(run_completer(plane.clone(), completer_stop.clone()));
        // Likewise the enqueuer: stopped once no request can reach it.
        let enqueuer_stop = CancellationToken::new();
        let enqueuer = tokio::spawn(run_enqueuer(plane.clone(), enqueuer_stop.clone()));
        let stop = plane.shutdown.clone();
        let signal_stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            signal_stop.cancel();
        });
        match &self.tls {
            Some(tls) => {
                let incoming = transport::tls::incoming(
                    self.listener,
                    tls.clone(),
                    transport::tls::ALPN_GRPC,
                    stop.clone(),
                );
                router
                    .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                    .await?
            }
            None => {
                let incoming = transport::listener::plain_incoming(self.listener);
                router
                    .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                    .await?
            }
        }
        plane.tasks.close();
        plane.tasks.wait().await;
        completer_stop.cancel();
        enqueuer_stop.cancel();
        completer.await?;
        enqueuer.await?;
        tracing::info!("server stopped");
        Ok(())
    }
}

/// Every gRPC service: tasks, registry and agents (each refusing messages
/// over the configured size), health (see `maintenance::health`) and both
/// versions of reflection. The listener serves them behind the
/// authentication layer, and so does the console, in process.
fn routes(plane: &Arc<ControlPlane>, health: HealthServer<impl Health>) -> anyhow::Result<Routes> {
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
    let max_message = plane.config.max_message_bytes;
    Ok(Routes::new(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(
            TaskServiceServer::new(TaskApi::new(plane.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(
            RegistryServiceServer::new(RegistryApi::new(plane.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(
            ScheduleServiceServer::new(ScheduleApi::new(plane.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(
            AgentServiceServer::new(AgentApi::new(plane.clone()))
                .max_decoding_message_size(max_message),
        ))
}

/// Refuses to expose an unauthenticated server beyond loopback unless told
/// to, and warns when tokens would cross the network in the clear.
fn check_exposure(config: &ServerConfig) -> anyhow::Result<()> {
    let SecurityConfig {
        tls,
        auth,
        insecure,
        ..
    } = &config.security;
    if let Some(console) = config.console_listen
        && !console.ip().is_loopback()
        && auth.is_none()
        && !insecure
    {
        anyhow::bail!(
            "refusing to serve the web console on {console} without authentication: anyone who \
             reaches it could cancel and retry tasks. Turn tokens on (--auth), serve it on \
             127.0.0.1, or pass --insecure if a proxy in front authenticates"
        );
    }
    if config.listen.ip().is_loopback() {
        return Ok(());
    }
    if auth.is_none() && !insecure {
        anyhow::bail!(
            "refusing to serve {} without authentication: anyone who reaches it could run tasks. \
             Turn tokens on (--auth, see `taskplane token create`), listen on 127.0.0.1, \
             or pass --insecure if a proxy in front authenticates",
            config.listen
        );
    }
    if auth.is_some() && tls.is_none() {
        tracing::warn!(address = %config.listen, "tokens are checked but TLS is off: tokens cross the network in the clear (pass --tls-cert and --tls-key)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthConfig;

    fn exposed(listen: &str, auth: bool, insecure: bool) -> anyhow::Result<()> {
        exposed_with_console(listen, None, auth, insecure)
    }

    fn exposed_with_console(
        listen: &str,
        console: Option<&str>,
        auth: bool,
        insecure: bool,
    ) -> anyhow::Result<()> {
        check_exposure(&ServerConfig {
            listen: listen.parse().unwrap(),
            console_listen: console.map(|c| c.parse().unwrap()),
            security: SecurityConfig {
                auth: auth.then(AuthConfig::default),
                insecure,
                ..SecurityConfig::default()
            },
            ..ServerConfig::default()
        })
    }

    #[test]
    fn only_loopback_tokens_or_explicit_consent_may_serve() {
        assert!(exposed("127.0.0.1:1", false, false).is_ok());
        assert!(exposed("[::1]:1", false, false).is_ok());
        assert!(exposed("0.0.0.0:1", false, false).is_err());
        assert!(exposed("10.1.2.3:1", false, false).is_err());
        assert!(exposed("0.0.0.0:1", true, false).is_ok());
        assert!(exposed("0.0.0.0:1", false, true).is_ok());
    }

    #[test]
    fn the_console_beyond_loopback_needs_tokens_too() {
        let console =
            |address, auth| exposed_with_console("127.0.0.1:1", Some(address), auth, false);
        assert!(console("127.0.0.1:2", false).is_ok());
        let refused = console("0.0.0.0:2", false).unwrap_err().to_string();
        assert!(refused.contains("web console on 0.0.0.0:2"), "{refused}");
        assert!(console("0.0.0.0:2", true).is_ok());
    }
}
