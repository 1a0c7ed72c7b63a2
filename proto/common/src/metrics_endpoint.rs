//! A Prometheus scrape endpoint: `GET /metrics` answers the text exposition
//! format; anything else is 404. Used by the agent binary and by
//! `taskplane serve --metrics-listen`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The content type of the OpenMetrics text format Prometheus scrapes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Produces the text of one scrape (it may refresh gauges first).
pub type Render = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// Encodes a registry in the text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}

/// Serves scrapes on `listener` until `stop`.
pub async fn serve_metrics(listener: TcpListener, render: Render, stop: CancellationToken) {
    let answer: crate::http_server::Answer = Arc::new(move |request| {
        let render = render.clone();
        Box::pin(async move { answer(&request, render).await })
    });
    crate::http_server::serve(listener, answer, stop).await;
}

async fn answer<B>(request: &Request<B>, render: Render) -> Response<Full<Bytes>> {
    let mut response = if request.uri().path() == "/metrics" {
        let mut response = Response::new(Full::new(Bytes::from(render().await)));
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(CONTENT_TYPE),
        );
        response
    } else {
        Response::new(Full::new(Bytes::from_static(b"metrics are at /metrics\n")))
    };
    if request.uri().path() != "/metrics" {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    response
}
