//! The web console: the queue in a browser (`--console-listen`).
//!
//! Server-rendered pages ([`pages`]) with one small script
//! (`assets/console.js`) that swaps in the live part of a page when
//! [`live`] says something changed. Every read and every action is a gRPC
//! call made in process with the signed-in token ([`calls`]), so the
//! console has exactly the token's role and domain scope. With
//! authentication on, a browser signs in with a token and keeps a session
//! ([`sessions`]); every form carries the session's secret and every
//! answer a strict Content-Security-Policy ([`guard`]). The assets are
//! compiled into the binary: no Node toolchain, no network.

mod actions;
mod calls;
mod charts;
mod guard;
mod layout;
mod live;
mod pages;
mod sessions;

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

pub use calls::InProcess;

use crate::engine::plane::ControlPlane;
use crate::transport;
use crate::transport::tls::ServerTls;
use sessions::{Session, Sessions};

/// What every console request shares.
pub struct Console {
    service: InProcess,
    plane: Arc<ControlPlane>,
    sessions: Sessions,
    /// Without authentication, the one session every browser shares (its
    /// form secret still keeps other sites from acting), so requests
    /// without a cookie start no new session.
    anonymous: Option<(String, Session)>,
    secure: bool,
    /// How long the latest page took to render, in microseconds: live
    /// updates are spaced by it (see [`live`]).
    render_micros: AtomicU64,
}

impl Console {
    /// A console calling `service` (the gRPC services behind their
    /// authentication layer), signing in with `plane`'s authenticator when
    /// it has one, refreshing pages on its task events, until its shutdown.
    /// `secure`: served over TLS (its cookie is marked `Secure`).
    pub fn new(service: InProcess, plane: Arc<ControlPlane>, secure: bool) -> Arc<Self> {
        let sessions = Sessions::default();
        let anonymous = match plane.authenticator {
            Some(_) => None,
            None => Some(sessions.anonymous()),
        };
        Arc::new(Console {
            service,
            plane,
            sessions,
            anonymous,
            secure,
            render_micros: AtomicU64::new(0),
        })
    }

    /// Every route of the console.
    fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(pages::overview))
            .route("/tasks", get(pages::tasks))
            .route("/tasks/{id}", get(pages::task))
            .route("/agents", get(pages::agents))
            .route("/types", get(pages::task_types))
            .route("/tasks/{id}/retry", post(actions::retry))
            .route("/tasks/{id}/cancel", post(actions::cancel))
            .route("/bulk", post(actions::bulk))
            .route("/types/{name}/pause", post(actions::pause))
            .route("/types/{name}/resume", post(actions::resume))
            .route("/agents/{id}/drain", post(actions::drain))
            .route("/schedules/{name}/trigger", post(actions::trigger))
            .route("/events", get(live::events))
            .route("/login", get(guard::login_page).post(guard::login))
            .route("/logout", post(guard::logout))
            .route("/assets/{file}", get(layout::asset))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                guard::guard,
            ))
            .with_state(self.clone())
    }

    /// Serves the console on `listener` (over TLS when `tls` is set) until
    /// the console's stop token.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: Option<Arc<ServerTls>>) {
        let router = self.router();
        let stop = self.plane.shutdown.clone();
        match tls {
            Some(tls) => {
                let incoming = transport::tls::incoming(
                    listener,
                    tls,
                    transport::tls::ALPN_HTTP1,
                    stop.clone(),
                );
                serve_connections(incoming, router, stop).await
            }
            None => {
                serve_connections(transport::listener::plain_incoming(listener), router, stop).await
            }
        }
    }
}

/// Serves HTTP/1.1 on each connection of `incoming` until `stop`, then
/// ends each one once its request in flight is answered.
async fn serve_connections<S>(
    incoming: impl Stream<Item = io::Result<S>>,
    router: Router,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut incoming = std::pin::pin!(incoming);
    loop {
        let stream = tokio::select! {
            next = incoming.next() => match next {
                Some(Ok(stream)) => stream,
                Some(Err(error)) => {
                    tracing::warn!(%error, "console: accepting a connection failed");
                    continue;
                }
                None => return,
            },
            () = stop.cancelled() => return,
        };
        let service = TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "console connection ended");
                    }
                }
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}
