//! A small HTTP/1.1 server: every request on a listener answered by one
//! function, until a stop token. The metrics endpoint, the test-mode
//! payment gateway and `taskplane dev`'s local stand-ins are each such a
//! function.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The answer to one request.
pub type Answered = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

/// Answers requests.
pub type Answer = Arc<dyn Fn(Request<Incoming>) -> Answered + Send + Sync>;

/// Serves every connection on `listener` with `answer` until `stop`.
pub async fn serve(listener: TcpListener, answer: Answer, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "HTTP listener: accept failed");
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let answer = Arc::clone(&answer);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let answered = answer(request);
                async move { Ok::<_, Infallible>(answered.await) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "HTTP connection ended");
            }
        });
    }
}
