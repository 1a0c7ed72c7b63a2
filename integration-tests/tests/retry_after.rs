//! A downstream's `Retry-After` through a real server, a real agent and a
//! real HTTP endpoint: a webhook answered 429 with `Retry-After: 1` is
//! retried no sooner than a second later, although its backoff is 20 ms;
//! one that asks for an hour is retried within its policy's `max_backoff`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::Response;
use hyper::body::Bytes;
use integration_tests::{
    Backend, TestAgent, TestServer, attempts_of, enqueue, enqueue_request, wait_terminal,
};
use serde_json::json;
use taskplane_agent::RegistryConfig;
use taskplane_common::http_server::{Answer, serve};
use taskplane_handlers::egress::Egress;
use taskplane_handlers::{AppServices, setup_registry_with_config};
use taskplane_proto::v1::{RetryPolicy, TaskStatus};
use tokio_util::sync::CancellationToken;

/// An endpoint that answers each path's first request 429 with the
/// `Retry-After` the path names (`/after/<value>`) and later ones 200;
/// it records when each request arrived.
async fn throttling_endpoint() -> (String, Arc<Mutex<Vec<(String, Instant)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let arrivals = Arc::new(Mutex::new(Vec::<(String, Instant)>::new()));
    let seen = arrivals.clone();
    let answer: Answer = Arc::new(move |request| {
        let path = request.uri().path().to_owned();
        let first = {
            let mut seen = seen.lock().unwrap();
            let first = !seen.iter().any(|(p, _)| *p == path);
            seen.push((path.clone(), Instant::now()));
            first
        };
        Box::pin(async move {
            let after = path.trim_start_matches("/after/");
            let response = if first {
                Response::builder().status(429).header("retry-after", after)
            } else {
                Response::builder().status(200)
            };
            response.body(Full::new(Bytes::from("{}"))).unwrap()
        })
    });
    tokio::spawn(serve(listener, answer, CancellationToken::new()));
    (url, arrivals)
}

async fn a_retry_waits_as_long_as_the_downstream_asked_within_the_policy(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let (url, arrivals) = throttling_endpoint().await;
    let data = tempfile::tempdir().unwrap();
    let services = AppServices {
        egress: Egress::trusting(["127.0.0.1"]),
        ..AppServices::new(data.path().join("agent"))
    };
    let config = RegistryConfig::from_lookup(|name| {
        (name == "TASK_ENABLED_DOMAINS").then(|| "platform".to_owned())
    })
    .unwrap();
    let (registry, _) = setup_registry_with_config(&config, Arc::new(services));
    let agent = TestAgent::start(&server, "platform", registry).await;
    let mut tasks = server.tasks().await;

    let webhook = |path: &str, max_backoff: Duration| {
        let mut request = enqueue_request("webhook", json!({"url": format!("{url}{path}")}));
        request.retry_policy = Some(RetryPolicy {
            initial_backoff: Some(
                prost_types::Duration::try_from(Duration::from_millis(20)).unwrap(),
            ),
            backoff_factor: 1.0,
            max_backoff: Some(prost_types::Duration::try_from(max_backoff).unwrap()),
        });
        request
    };
    let polite = enqueue(&mut tasks, webhook("/after/1", Duration::from_secs(30)))
        .await
        .id;
    // An hour asked, but the policy caps every wait at 200 ms.
    let capped = enqueue(
        &mut tasks,
        webhook("/after/3600", Duration::from_millis(200)),
    )
    .await
    .id;
    for id in [&polite, &capped] {
        let task = wait_terminal(&mut tasks, id).await;
        assert_eq!(task.status(), TaskStatus::Completed, "{task:?}");
        let attempts = attempts_of(&mut tasks, id).await;
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        assert!(attempts[0].error.contains("429"), "{attempts:?}");
    }
    let arrivals = arrivals.lock().unwrap().clone();
    let at = |path: &str| -> Vec<Instant> {
        arrivals
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, at)| *at)
            .collect()
    };
    let polite = at("/after/1");
    assert_eq!(polite.len(), 2);
    let waited = polite[1] - polite[0];
    assert!(
        waited >= Duration::from_secs(1),
        "the retry came after {waited:?}, sooner than the Retry-After of 1 s"
    );
    assert_eq!(at("/after/3600").len(), 2);
    agent.stop().await.unwrap();
}

integration_tests::on_every_backend!(
    a_retry_waits_as_long_as_the_downstream_asked_within_the_policy
);
