//! The built-in handlers against real endpoints the tests start: an SMTP
//! listener that receives and parses the message, and an HTTP server that
//! records requests and answers as told.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};
use sha2::Sha256;
use taskplane_agent::{TaskContext, TaskError, TaskHandler};
use taskplane_common::http_server::{Answer, serve};
use taskplane_handlers::builtin::email::{EmailHandler, EmailTemplate, Mailer};
use taskplane_handlers::builtin::probe::HealthCheckHandler;
use taskplane_handlers::builtin::webhook::WebhookHandler;
use taskplane_handlers::egress::Egress;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the SMTP listener received in one session.
#[derive(Debug, Default, Clone)]
struct Received {
    auth: Option<String>,
    mail_from: String,
    rcpt_to: Vec<String>,
    data: String,
}

/// A minimal SMTP server: answers EHLO (offering AUTH PLAIN), AUTH, MAIL,
/// RCPT, DATA and QUIT; recipients at `busy.example` get a 451 (try later),
/// at `nobody.example` a 550 (refused).
async fn smtp_server() -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let inbox = Arc::new(Mutex::new(Vec::new()));
    let sessions = inbox.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let inbox = sessions.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let mut received = Received::default();
                write
                    .write_all(b"220 test.example ESMTP\r\n")
                    .await
                    .unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") {
                        b"250-test.example\r\n250 AUTH PLAIN\r\n"
                    } else if upper.starts_with("AUTH PLAIN") {
                        received.auth = line.split_whitespace().nth(2).map(str::to_owned);
                        b"235 2.7.0 accepted\r\n"
                    } else if upper.starts_with("MAIL FROM:") {
                        received.mail_from = line[10..].trim().to_owned();
                        b"250 OK\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        let to = line[8..].trim().to_owned();
                        let reply: &[u8] = if to.contains("busy.example") {
                            b"451 4.3.0 try again later\r\n"
                        } else if to.contains("nobody.example") {
                            b"550 5.1.1 no such user\r\n"
                        } else {
                            b"250 OK\r\n"
                        };
                        received.rcpt_to.push(to);
                        reply
                    } else if upper == "DATA" {
                        write.write_all(b"354 go ahead\r\n").await.unwrap();
                        while let Ok(Some(data_line)) = lines.next_line().await {
                            if data_line == "." {
                                break;
                            }
                            received.data.push_str(&data_line);
                            received.data.push_str("\r\n");
                        }
                        inbox.lock().unwrap().push(received.clone());
                        b"250 queued\r\n"
                    } else if upper == "QUIT" {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 OK\r\n"
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, inbox)
}

#[tokio::test]
async fn email_is_rendered_sent_with_auth_and_received_intact() {
    let (address, inbox) = smtp_server().await;
    let url = format!("smtp://mailer:s3cret@127.0.0.1:{}", address.port());
    let template = EmailTemplate {
        subject: "Welcome, {{ name }}!".into(),
        body: "Hi {{ name }}, your plan is {{ plan }}.".into(),
    };
    let handler = EmailHandler::new(
        Mailer::Smtp(url.clone()),
        "Shop <shop@example.com>",
        Some(template),
    )
    .unwrap();

    let payload = json!({"to": ["ada@example.com"], "name": "Ada", "plan": "pro"});
    let result = handler
        .handle(TaskContext::new("welcome_email", payload))
        .await
        .unwrap()
        .output;
    assert_eq!(result["smtp_code"], "250");

    let received = inbox
        .lock()
        .unwrap()
        .pop()
        .expect("the listener received a message");
    let expected_auth = base64::engine::general_purpose::STANDARD.encode("\0mailer\0s3cret");
    assert_eq!(
        received.auth.as_deref(),
        Some(expected_auth.as_str()),
        "AUTH PLAIN with the URL's credentials"
    );
    assert_eq!(received.mail_from, "<shop@example.com>");
    assert_eq!(received.rcpt_to, ["<ada@example.com>"]);
    let message = mail_parser::MessageParser::default()
        .parse(received.data.as_bytes())
        .expect("a parseable message");
    assert_eq!(message.subject(), Some("Welcome, Ada!"));
    assert_eq!(
        message.body_text(0).unwrap().trim(),
        "Hi Ada, your plan is pro."
    );
    assert_eq!(
        message.to().unwrap().first().unwrap().address(),
        Some("ada@example.com")
    );
    assert_eq!(
        message.message_id(),
        result["message_id"]
            .as_str()
            .map(|id| id.trim_matches(['<', '>']))
    );
}

#[tokio::test]
async fn the_mail_sink_writes_each_message_as_a_file_with_one_message_id_per_task() {
    let sink = tempfile::tempdir().unwrap();
    let dir = sink.path().join("mail");
    let handler = EmailHandler::new(Mailer::Files(dir.clone()), "shop@example.com", None).unwrap();
    let attempt = |attempt: u32| {
        let mut context = TaskContext::new(
            "email",
            json!({"to": "ada@example.com", "subject": "Hi {{ to }}", "body": "Hello"}),
        );
        context.task_id = "0193a7e4-0000-7000-8000-000000000001".into();
        context.attempt = attempt;
        context
    };
    let first = handler.handle(attempt(1)).await.unwrap().output;
    let second = handler.handle(attempt(2)).await.unwrap().output;
    assert_eq!(
        first["message_id"], "<0193a7e4-0000-7000-8000-000000000001@taskplane>",
        "the task's id, whatever the attempt"
    );
    assert_eq!(first["message_id"], second["message_id"]);
    let file = std::path::PathBuf::from(first["file"].as_str().unwrap());
    assert!(file.starts_with(&dir), "{file:?}");
    let text = std::fs::read(&file).unwrap();
    let message = mail_parser::MessageParser::default().parse(&text).unwrap();
    assert_eq!(message.subject(), Some("Hi ada@example.com"));
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        2,
        "one file per delivery"
    );
}

#[tokio::test]
async fn email_failures_are_classified_and_bad_payloads_refused() {
    let (address, inbox) = smtp_server().await;
    let url = format!("smtp://127.0.0.1:{}", address.port());
    let handler = EmailHandler::new(Mailer::Smtp(url.clone()), "shop@example.com", None).unwrap();
    let send = |to: &str| {
        TaskContext::new(
            "email",
            json!({"to": to, "subject": "Hi", "body": "Hello {{ to }}"}),
        )
    };

    let busy = handler
        .handle(send("someone@busy.example"))
        .await
        .unwrap_err();
    assert!(busy.is_retryable(), "4xx is temporary: {busy}");
    let refused = handler
        .handle(send("someone@nobody.example"))
        .await
        .unwrap_err();
    assert!(
        !refused.is_retryable() && refused.to_string().contains("refused"),
        "5xx is permanent: {refused}"
    );

    let missing_variable = TaskContext::new(
        "email",
        json!({"to": "a@example.com", "subject": "Hi {{ name }}", "body": "x"}),
    );
    let err = handler.handle(missing_variable).await.unwrap_err();
    assert!(
        !err.is_retryable() && err.to_string().contains("subject template does not render"),
        "{err}"
    );
    let err = handler
        .handle(TaskContext::new(
            "email",
            json!({"to": "not an address", "subject": "s", "body": "b"}),
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not an address"), "{err}");
    assert!(inbox.lock().unwrap().is_empty(), "nothing was delivered");

    let unconfigured = EmailHandler::new(Mailer::Unconfigured, "shop@example.com", None).unwrap();
    let err = unconfigured
        .handle(send("a@example.com"))
        .await
        .unwrap_err();
    assert!(
        !err.is_retryable() && err.to_string().contains("set TASKPLANE_SMTP_URL"),
        "{err}"
    );
}

/// A request as the HTTP server received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: hyper::HeaderMap,
    body: Bytes,
}

/// An HTTP server answering by path: `/ok` 200, `/busy` 503, `/throttled` 429, `/bad` 422,
/// `/slow` 200 after two seconds, `/inward` a redirect to its own `/ok`
/// at 127.0.0.1.
async fn http_server() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let answer: Answer = Arc::new(move |request: Request<Incoming>| {
        let log = log.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let path = parts.uri.path().to_owned();
            log.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                path: path.clone(),
                headers: parts.headers,
                body,
            });
            if path == "/inward" {
                return Response::builder()
                    .status(302)
                    .header("location", format!("http://{address}/ok"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
            }
            let status = match path.as_str() {
                "/busy" => 503,
                "/throttled" => 429,
                "/bad" => 422,
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    200
                }
                _ => 200,
            };
            Response::builder()
                .status(status)
                .header("retry-after", if status == 429 { "2" } else { "soon" })
                .body(Full::new(Bytes::from("{\"received\":true}")))
                .unwrap()
        })
    });
    tokio::spawn(serve(listener, answer, CancellationToken::new()));
    (address, seen)
}

#[tokio::test]
async fn webhooks_are_signed_verifiably_and_failures_classified() {
    let (address, seen) = http_server().await;
    let handler = WebhookHandler::new(Egress::trusting(["127.0.0.1"]), Some("whsec_test".into()));
    let base = format!("http://{address}");
    let payload = json!({"url": format!("{base}/ok"), "method": "PUT", "headers": {"x-tenant": "acme"}, "body": {"order": 42}});
    let result = handler
        .handle(TaskContext::new("webhook", payload))
        .await
        .unwrap()
        .output;
    assert_eq!(result["status"], 200);

    let request = seen.lock().unwrap().pop().unwrap();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("PUT", "/ok")
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&request.body).unwrap(),
        json!({"order": 42})
    );
    assert_eq!(request.headers["x-tenant"], "acme");
    // A receiver's check, done independently: HMAC-SHA256 over "<timestamp>.<body>".
    let timestamp = request.headers["x-taskplane-timestamp"].to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&request.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(request.headers["x-taskplane-signature"], expected.as_str());

    let call = |path: &str, extra: Value| {
        let mut payload = json!({"url": format!("{base}{path}")});
        payload
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        handler.handle(TaskContext::new("webhook", payload))
    };
    let busy = call("/busy", json!({})).await.unwrap_err();
    assert!(
        busy.is_retryable() && busy.to_string().contains("503"),
        "{busy}"
    );
    let throttled = call("/throttled", json!({})).await.unwrap_err();
    assert!(
        throttled.is_retryable() && throttled.to_string().contains("429"),
        "{throttled}"
    );
    assert_eq!(
        throttled.retry_after(),
        Some(Duration::from_secs(2)),
        "the answer's Retry-After rides on the error"
    );
    assert_eq!(
        busy.retry_after(),
        None,
        "an unreadable Retry-After is ignored"
    );
    let bad = call("/bad", json!({})).await.unwrap_err();
    assert!(
        !bad.is_retryable() && bad.to_string().contains("422"),
        "{bad}"
    );
    let slow = call("/slow", json!({"timeout_ms": 200})).await.unwrap_err();
    assert!(slow.is_retryable(), "a timeout is retryable: {slow}");
    let refused = handler
        .handle(TaskContext::new(
            "webhook",
            json!({"url": "http://127.0.0.1:1/"}),
        ))
        .await
        .unwrap_err();
    assert!(refused.is_retryable(), "{refused}");
    let invalid = handler
        .handle(TaskContext::new("webhook", json!({"url": "not a url"})))
        .await
        .unwrap_err();
    assert!(matches!(invalid, TaskError::Permanent(_)), "{invalid}");
    let method = call("/ok", json!({"method": "DELETE"})).await.unwrap_err();
    assert!(method.to_string().contains("use POST or PUT"));
}

#[tokio::test]
async fn health_checks_probe_http_and_tcp_within_a_budget() {
    let (address, _) = http_server().await;
    let handler = HealthCheckHandler::new(Egress::trusting(["127.0.0.1"]));
    let probe = |payload: Value| handler.handle(TaskContext::new("health_check", payload));

    let ok = probe(json!({"url": format!("http://{address}/ok")}))
        .await
        .unwrap()
        .output;
    assert_eq!(ok["status"], 200);
    let wrong = probe(json!({"url": format!("http://{address}/busy")}))
        .await
        .unwrap_err();
    assert!(
        wrong.to_string().contains("answered 503, expected 200"),
        "{wrong}"
    );
    let expected_503 =
        probe(json!({"url": format!("http://{address}/busy"), "expected_status": 503})).await;
    assert!(expected_503.is_ok());
    let slow = probe(json!({"url": format!("http://{address}/slow"), "budget_ms": 100}))
        .await
        .unwrap_err();
    assert!(
        slow.is_retryable() && slow.to_string().contains("100 ms"),
        "{slow}"
    );

    let tcp = probe(json!({"host": "127.0.0.1", "port": address.port()}))
        .await
        .unwrap()
        .output;
    assert_eq!(tcp["reachable"], true);
    let closed = probe(json!({"host": "127.0.0.1", "port": 1}))
        .await
        .unwrap_err();
    assert!(closed.to_string().contains("unreachable"), "{closed}");
    let nothing = probe(json!({})).await.unwrap_err();
    assert!(
        nothing.to_string().contains("url, or host and port"),
        "{nothing}"
    );
}

#[tokio::test]
async fn webhooks_and_probes_refuse_internal_addresses_unless_trusted() {
    let (address, seen) = http_server().await;
    let webhook = WebhookHandler::new(Egress::trusting(Vec::<String>::new()), None);
    let probe = HealthCheckHandler::new(Egress::trusting(Vec::<String>::new()));
    let refused = |error: TaskError| {
        assert!(
            matches!(&error, TaskError::Permanent(m) if m.contains("TASKPLANE_TRUSTED_HOSTS")),
            "{error}"
        );
    };
    for url in [
        format!("http://{address}/ok"),
        format!("http://localhost:{}/ok", address.port()),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::1]:1/".to_owned(),
    ] {
        refused(
            webhook
                .handle(TaskContext::new("webhook", json!({ "url": url })))
                .await
                .unwrap_err(),
        );
        refused(
            probe
                .handle(TaskContext::new("health_check", json!({ "url": url })))
                .await
                .unwrap_err(),
        );
    }
    refused(
        probe
            .handle(TaskContext::new(
                "health_check",
                json!({"host": "127.0.0.1", "port": address.port()}),
            ))
            .await
            .unwrap_err(),
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "a refused request reached the listener"
    );

    // Trusted by name, the host is reached; a redirect from it to an
    // internal address that is not trusted is not followed.
    let by_name = WebhookHandler::new(Egress::trusting(["localhost"]), None);
    let port = address.port();
    let reached = by_name
        .handle(TaskContext::new(
            "webhook",
            json!({ "url": format!("http://localhost:{port}/ok") }),
        ))
        .await
        .unwrap()
        .output;
    assert_eq!(reached["status"], 200);
    let redirected = by_name
        .handle(TaskContext::new(
            "webhook",
            json!({ "url": format!("http://localhost:{port}/inward") }),
        ))
        .await
        .unwrap_err();
    assert!(
        redirected.to_string().contains("refused a redirect"),
        "{redirected}"
    );
    let paths: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(paths, ["/ok", "/inward"], "the redirect was not followed");
}
