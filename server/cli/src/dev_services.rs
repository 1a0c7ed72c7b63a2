//! The local stand-ins `taskplane dev` runs for the outside services the
//! example domains need, so that every documented example completes on one
//! machine with nothing else installed. Each is used only when the
//! environment leaves its service unset, and keeps what it receives under
//! `taskplane-data/`:
//!
//! - a mail sink: email is written as `.eml` files into `mail/`;
//! - one HTTP listener (`--local-listen`, default 127.0.0.1:50052) with a
//!   test-mode payment gateway (`POST /charges`, charges in `payments/`),
//!   a webhook inbox (`POST` or `PUT /hooks/…`, each request as a JSON file
//!   in `webhooks/`) and `GET /health` for probes;
//! - `logs/` as the directory `log_cleanup` may clean;
//! - the server's own database as what `database_backup` backs up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use taskplane_common::http_server::{Answer, serve};
use taskplane_handlers::AppServices;
use taskplane_handlers::domains::billing::test_gateway::TestModeGateway;
use tokio_util::sync::CancellationToken;

/// Where `taskplane dev` keeps what its stand-ins receive.
pub const DEV_DATA_DIR: &str = "taskplane-data";

/// What the stand-ins are, one line each, for the welcome.
pub struct LocalServices {
    /// A line per stand-in in use.
    pub described: Vec<String>,
}

/// Fills in every service of `services` that is unset with a local
/// stand-in under `root`, serving the HTTP ones on `listen` until `stop`.
pub async fn start(
    services: &mut AppServices,
    root: &Path,
    listen: SocketAddr,
    database_url: &str,
    stop: CancellationToken,
) -> anyhow::Result<LocalServices> {
    let mut described = Vec::new();
    if services.smtp_url.is_none() && services.mail_dir.is_none() {
        let dir = root.join("mail");
        described.push(format!(
            "email is written as .eml files into {}/",
            dir.display()
        ));
        services.mail_dir = Some(dir);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("--local-listen {listen}: cannot listen there"))?;
    let base = format!("http://{}", listener.local_addr()?);
    let gateway = TestModeGateway::open(&root.join("payments"))
        .await
        .context("opening the test-mode payment gateway's ledger")?;
    let inbox = Arc::new(Inbox {
        dir: root.join("webhooks"),
        received: AtomicU64::new(0),
    });
    if services.payment_gateway_url.is_none() {
        described.push(format!(
            "payments go to a test-mode gateway at {base} that records charges in {}/",
            gateway.dir().display()
        ));
        services.payment_gateway_url = Some(base.clone());
    }
    described.push(format!(
        "webhooks sent to {base}/hooks/… are kept in {}/, and {base}/health answers probes",
        inbox.dir.display()
    ));
    let answer: Answer = Arc::new(move |request| {
        let (gateway, inbox) = (Arc::clone(&gateway), Arc::clone(&inbox));
        Box::pin(async move { route(&gateway, &inbox, request).await })
    });
    tokio::spawn(serve(listener, answer, stop));
    if services.log_dir.is_none() {
        let dir = root.join("logs");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the log directory {}", dir.display()))?;
        described.push(format!("log_cleanup cleans {}/", dir.display()));
        services.log_dir = Some(dir);
    }
    if services.backup_database_url.is_none() {
        described.push("database_backup backs up this server's own database".to_owned());
        services.backup_database_url = Some(database_url.to_owned());
    }
    Ok(LocalServices { described })
}

async fn route(
    gateway: &TestModeGateway,
    inbox: &Inbox,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if path == "/charges" {
        return gateway.answer(request).await;
    }
    if path == "/health" && request.method() == Method::GET {
        return Response::new(Full::new(Bytes::from_static(b"ok\n")));
    }
    if path.starts_with("/hooks/") && matches!(*request.method(), Method::POST | Method::PUT) {
        return inbox.keep(request).await;
    }
    let mut response = Response::new(Full::new(Bytes::from_static(
        b"taskplane dev: POST /charges, POST or PUT /hooks/..., GET /health\n",
    )));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// Webhooks received, one JSON file each.
struct Inbox {
    dir: PathBuf,
    received: AtomicU64,
}

impl Inbox {
    async fn keep(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.to_string(),
                    json!(String::from_utf8_lossy(value.as_bytes())),
                )
            })
            .collect();
        let body =
            serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)));
        let number = self.received.fetch_add(1, Ordering::Relaxed);
        let file = self.dir.join(format!(
            "{}-{number}.json",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f")
        ));
        let record = json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "headers": headers,
            "body": body,
        });
        let written = async {
            tokio::fs::create_dir_all(&self.dir).await?;
            tokio::fs::write(&file, serde_json::to_vec_pretty(&record)?).await
        };
        let (status, answer) = match written.await {
            Ok(()) => (StatusCode::OK, json!({"received": true, "file": file})),
            Err(error) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"received": false, "error": error.to_string()}),
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(answer.to_string())));
        *response.status_mut() = status;
        response
    }
}
