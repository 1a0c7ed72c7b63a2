//! The web console in a real headless Chromium against a real server and
//! agent: live updates, retry, bulk retry with its count first, pausing a
//! type, payloads shown as text, signing in with a token and a scoped
//! token's view; and, over plain HTTP, the checks that guard its actions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use integration_tests::browser::{Browser, browser_available};
use integration_tests::{
    Backend, TestAgent, TestServer, enqueue, enqueue_request, fast_queue, wait_status,
};
use serde_json::json;
use taskplane_agent::{
    ConnectOptions, TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult,
};
use taskplane_proto::json::{json_to_struct, struct_to_json};
use taskplane_proto::v1::registry_service_client::RegistryServiceClient;
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use taskplane_proto::v1::{
    CreateScheduleRequest, GetTaskRequest, RegisterTaskTypeRequest, ScheduleSpec, TaskStatus,
};
use taskplane_server::auth::Role;
use taskplane_server::auth::tokens::{TokensFile, issue};
use taskplane_server::config::{AuthConfig, SecurityConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Completes after the payload's `hold_ms`, echoing the payload.
struct Echo;

#[async_trait]
impl TaskHandler for Echo {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let hold = context.payload["hold_ms"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(hold)).await;
        Ok(TaskResult::new(context.payload.clone()))
    }
}

/// Fails for good while its switch is on, completes once it is off.
struct Flaky(Arc<AtomicBool>);

#[async_trait]
impl TaskHandler for Flaky {
    async fn handle(&self, _context: TaskContext) -> Result<TaskResult, TaskError> {
        if self.0.load(Ordering::SeqCst) {
            return Err(TaskError::Permanent(
                "the ledger is locked: 100% broken".into(),
            ));
        }
        Ok(TaskResult::new(json!({"ok": true})))
    }
}

fn console_url(server: &TestServer) -> String {
    format!("http://{}", server.console_address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_follows_retries_and_pauses_tasks_in_the_browser() {
    if !browser_available() {
        return;
    }
    let server = TestServer::start_with(&Backend::Sqlite, fast_queue()).await;
    let broken = Arc::new(AtomicBool::new(false));
    let mut registry = TaskRegistry::new();
    registry.register_handler("echo", Box::new(Echo));
    registry.register_handler("ledger_sync", Box::new(Flaky(broken.clone())));
    registry.set_feature_flags([("new_ledger".to_owned(), true)]);
    let agent = TestAgent::start_configured(&server, "console-agent", registry, |agent| {
        agent.label("region", "eu-west")
    })
    .await;
    let mut tasks = server.tasks().await;
    let browser = Browser::open(&console_url(&server)).await;

    // A task enqueued over gRPC appears without a reload and completes.
    browser.goto("/tasks?task_type=echo").await;
    browser.wait_live().await;
    browser.run("window.stayed = true; return 1").await;
    let id = enqueue(
        &mut tasks,
        enqueue_request("echo", json!({"hold_ms": 1500})),
    )
    .await
    .id;
    browser.find(&format!("tr[data-id='{id}']")).await;
    browser
        .find(&format!("tr[data-id='{id}'][data-status='COMPLETED']"))
        .await;
    assert_eq!(
        browser.run("return window.stayed === true").await,
        json!(true),
        "the row came in place, not by reloading the page"
    );

    // A hostile payload is shown as text and runs nothing.
    let hostile = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">";
    let shown = enqueue(
        &mut tasks,
        enqueue_request("echo", json!({"note": hostile})),
    )
    .await
    .id;
    wait_status(&tasks, &shown, TaskStatus::Completed).await;
    browser.goto(&format!("/tasks/{shown}")).await;
    let payload = browser.text("#payload").await;
    assert!(
        payload.contains(hostile.replace('"', "\\\"").as_str()),
        "{payload}"
    );
    assert_eq!(
        browser
            .run("return document.querySelectorAll('#payload script, #payload img, #result img').length")
            .await,
        json!(0)
    );
    assert_eq!(
        browser.run("return window.pwned === undefined").await,
        json!(true)
    );
    let screenshot = browser.screenshot("task").await;
    assert!(screenshot.starts_with(b"\x89PNG"), "a PNG");

    // A DEAD task retried from its page completes.
    broken.store(true, Ordering::SeqCst);
    let dead = enqueue(&mut tasks, enqueue_request("ledger_sync", json!({})))
        .await
        .id;
    wait_status(&tasks, &dead, TaskStatus::Dead).await;
    broken.store(false, Ordering::SeqCst);
    browser.goto(&format!("/tasks/{dead}")).await;
    assert!(browser.text("#last-error").await.contains("100% broken"));
    browser
        .click(&format!("form[action^='/tasks/{dead}/retry'] button"))
        .await;
    assert!(browser.text(".notice.done").await.contains("Retried"));
    browser.find("#live[data-status='COMPLETED']").await;

    // A bulk retry by filter says how many it will retry, and retries only
    // once that is confirmed.
    broken.store(true, Ordering::SeqCst);
    let mut failed = Vec::new();
    for _ in 0..3 {
        failed.push(
            enqueue(&mut tasks, enqueue_request("ledger_sync", json!({})))
                .await
                .id,
        );
    }
    for id in &failed {
        wait_status(&tasks, id, TaskStatus::Dead).await;
    }
    broken.store(false, Ordering::SeqCst);
    browser
        .goto("/tasks?task_type=ledger_sync&status=DEAD")
        .await;
    browser.click("#bulk-retry").await;
    let matched = browser.attr("#bulk-count", "data-matched").await;
    assert_eq!(matched.as_deref(), Some("3"));
    assert!(
        browser
            .text("#bulk-count")
            .await
            .starts_with("Retry 3 tasks")
    );
    for id in &failed {
        let task = tasks
            .get_task(GetTaskRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            task.status(),
            TaskStatus::Dead,
            "nothing retried before the confirmation"
        );
    }
    browser.click("#bulk-confirm").await;
    assert_eq!(
        browser.text(".notice.done").await,
        "Retried 3 of 3 matching tasks."
    );
    for id in &failed {
        wait_status(&tasks, id, TaskStatus::Completed).await;
    }

    // Pausing a type from the page holds its new tasks until it resumes.
    browser.goto("/types").await;
    browser
        .click("tr[data-type='echo'] form[action^='/types/echo/pause'] button")
        .await;
    assert!(
        browser
            .text(".notice.done")
            .await
            .starts_with("Paused echo")
    );
    let held = enqueue(&mut tasks, enqueue_request("echo", json!({})))
        .await
        .id;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let task = tasks
        .get_task(GetTaskRequest { id: held.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(task.status(), TaskStatus::Pending, "held while paused");
    assert!(task.waiting_for.contains("paused"), "{}", task.waiting_for);
    browser.goto("/").await;
    browser.find("tr[data-type='echo'] .badge.paused").await;
    browser
        .click("tr[data-type='echo'] form[action^='/types/echo/resume'] button")
        .await;
    assert!(
        browser
            .text(".notice.done")
            .await
            .starts_with("Resumed echo")
    );
    wait_status(&tasks, &held, TaskStatus::Completed).await;

    // Dark mode, kept across pages; arrow keys move between table rows.
    browser.goto("/tasks?task_type=ledger_sync").await;
    let background = "return getComputedStyle(document.body).backgroundColor";
    let light = browser.run(background).await;
    browser.click("#theme").await;
    let dark = browser.run(background).await;
    assert_ne!(light, dark, "the switch changes the colours");
    browser.goto("/tasks?task_type=ledger_sync").await;
    assert_eq!(browser.run(background).await, dark, "and is remembered");
    browser.click("#theme").await;
    let first = browser
        .run("const a = document.querySelector('#tasks tbody tr a'); a.focus(); return a.textContent")
        .await;
    browser
        .find("#tasks tbody tr a")
        .await
        .send_keys("\u{E015}")
        .await
        .expect("ArrowDown");
    let second = browser
        .run("return document.activeElement.textContent")
        .await;
    let rows = browser
        .run("return [...document.querySelectorAll('#tasks tbody tr a')].map(a => a.textContent)")
        .await;
    assert_eq!(rows[0], first);
    assert_eq!(rows[1], second, "ArrowDown focused the next row");

    // The pictures of docs/console.md.
    browser.goto("/").await;
    browser
        .find("tr[data-type='ledger_sync'] svg.chart rect")
        .await;
    browser.screenshot("overview").await;
    browser.goto("/agents").await;
    let row = browser.text("tr[data-agent='console-agent']").await;
    for shown in ["default", "region=eu-west", "new_ledger"] {
        assert!(row.contains(shown), "{shown} in {row}");
    }
    browser.screenshot("agents").await;

    // A schedule run from the page makes its task now.
    server
        .schedules()
        .await
        .create_schedule(CreateScheduleRequest {
            schedule: Some(ScheduleSpec {
                name: "hourly-echo".into(),
                task_type: "echo".into(),
                payload: Some(json_to_struct(
                    json!({"from": "schedule"}).as_object().unwrap(),
                )),
                interval: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                ..ScheduleSpec::default()
            }),
        })
        .await
        .unwrap();
    browser.goto("/types").await;
    browser
        .click(
            "tr[data-schedule='hourly-echo'] form[action^='/schedules/hourly-echo/trigger'] button",
        )
        .await;
    let triggered = browser.text(".notice.done").await;
    let run = triggered
        .strip_prefix("Triggered hourly-echo: task ")
        .and_then(|rest| rest.strip_suffix('.'))
        .unwrap_or_else(|| panic!("{triggered}"));
    let done = wait_status(&tasks, run, TaskStatus::Completed).await;
    assert_eq!(
        struct_to_json(done.result.as_ref().unwrap())["from"],
        "schedule"
    );

    // Draining the agent from the page: it takes nothing new.
    browser.goto("/agents").await;
    browser
        .click("tr[data-agent='console-agent'] form[action*='/drain'] button")
        .await;
    assert_eq!(
        browser.text(".notice.done").await,
        "Draining console-agent."
    );
    browser
        .find("tr[data-agent='console-agent'] .badge.paused")
        .await;
    let after = enqueue(&mut tasks, enqueue_request("echo", json!({})))
        .await
        .id;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = tasks
        .get_task(GetTaskRequest { id: after })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        waiting.status(),
        TaskStatus::Pending,
        "a draining agent takes nothing new"
    );

    browser.close().await;
    agent.stop().await.unwrap();
    server.stop().await;
}

/// A tokens file of `specs` (name, role, domains), and the tokens by name.
fn tokens(dir: &std::path::Path, specs: &[(&str, Role, &[&str])]) -> (SecurityConfig, Vec<String>) {
    let path = dir.join("tokens.toml");
    let mut file = TokensFile::default();
    let mut secrets = Vec::new();
    for (name, role, domains) in specs {
        let issued = issue(name, *role, domains.iter().map(|d| d.to_string()).collect()).unwrap();
        file.add(&issued);
        secrets.push(issued.token.clone());
    }
    file.save(&path).unwrap();
    let security = SecurityConfig {
        auth: Some(AuthConfig {
            tokens_file: Some(path),
            cache_ttl: Duration::from_millis(100),
        }),
        ..SecurityConfig::default()
    };
    (security, secrets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signs_in_and_a_scoped_token_sees_only_its_domains() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (security, secrets) = tokens(
        dir.path(),
        &[
            ("ops", Role::Admin, &[]),
            ("billing-app", Role::Client, &["billing"]),
        ],
    );
    let (admin, billing) = (secrets[0].clone(), secrets[1].clone());
    let server = TestServer::start_secured(&Backend::Sqlite, fast_queue(), security).await;
    let channel = server
        .connect_as(&ConnectOptions {
            token: Some(admin.clone()),
            ..ConnectOptions::default()
        })
        .await
        .unwrap();
    let mut registry = RegistryServiceClient::new(channel.clone());
    for (task_type, domain) in [("charge_card", "billing"), ("send_newsletter", "marketing")] {
        registry
            .register_task_type(RegisterTaskTypeRequest {
                task_type: task_type.into(),
                domain: domain.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut tasks = TaskServiceClient::new(channel);
    let charge = enqueue(&mut tasks, enqueue_request("charge_card", json!({})))
        .await
        .id;
    let newsletter = enqueue(&mut tasks, enqueue_request("send_newsletter", json!({})))
        .await
        .id;
    let browser = Browser::open(&console_url(&server)).await;

    // Without a session every page asks for a token; a wrong one is refused.
    browser.goto("/tasks").await;
    assert_eq!(browser.path().await, "/login");
    browser.type_into("#token", "tp_wrong_secret").await;
    browser.click("form.login button").await;
    assert!(!browser.text("form.login .error").await.is_empty());
    assert_eq!(browser.path().await, "/login");

    // The administrator sees every domain.
    browser.type_into("#token", &admin).await;
    browser.click("form.login button").await;
    browser.find("tr[data-type='charge_card']").await;
    assert!(browser.has("tr[data-type='send_newsletter']").await);
    assert!(browser.text("header .who").await.contains("ops"));
    browser.click("header form button").await;
    // The click returns before the answer arrives: wait for the form.
    browser.find("form.login").await;
    assert_eq!(browser.path().await, "/login");

    // A client token scoped to billing sees billing only, and cannot act
    // beyond its role.
    browser.type_into("#token", &billing).await;
    browser.click("form.login button").await;
    browser.find("tr[data-type='charge_card']").await;
    assert!(!browser.has("tr[data-type='send_newsletter']").await);
    browser.goto("/tasks").await;
    browser.find(&format!("tr[data-id='{charge}']")).await;
    assert!(!browser.has(&format!("tr[data-id='{newsletter}']")).await);
    browser.goto(&format!("/tasks/{newsletter}")).await;
    assert!(browser.text(".notice.error").await.contains("may not"));
    browser.goto("/types").await;
    assert!(!browser.has("tr[data-type='send_newsletter']").await);
    browser
        .click("tr[data-type='charge_card'] form[action^='/types/charge_card/pause'] button")
        .await;
    let refused = browser.text(".notice.error").await;
    assert!(refused.contains("a client token may not call"), "{refused}");
    let info = registry
        .get_task_type(taskplane_proto::v1::GetTaskTypeRequest {
            task_type: "charge_card".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !info.flow.unwrap_or_default().paused,
        "the refused pause changed nothing"
    );

    browser.close().await;
    server.stop().await;
}

/// Sends `request` (a whole HTTP/1.1 request) to `address`; returns the
/// response's head and body.
async fn http(address: std::net::SocketAddr, request: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then_some(value.trim())
    })
}

#[tokio::test]
async fn actions_need_the_session_secret_and_the_consoles_own_origin() {
    let server = TestServer::start(&Backend::Sqlite).await;
    server.register_type("echo", "default").await;
    let mut tasks = server.tasks().await;
    let id = enqueue(&mut tasks, enqueue_request("echo", json!({})))
        .await
        .id;
    let address = server.console_address;

    let (head, body) = http(
        address,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let policy = header(&head, "content-security-policy").unwrap();
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe"),
        "{policy}"
    );
    assert_eq!(header(&head, "x-frame-options"), Some("DENY"));
    assert!(
        header(&head, "set-cookie").is_none(),
        "without tokens every browser shares one session: nothing to keep"
    );
    let csrf = body
        .split("data-csrf=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();

    let cancel = |query: String, extra: &str| {
        format!(
            "POST /tasks/{id}/cancel{query} HTTP/1.1\r\nHost: {address}\r\n{extra}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 6\r\nConnection: close\r\n\r\nback=/"
        )
    };
    let (head, _) = http(address, &cancel(String::new(), "")).await;
    assert!(head.starts_with("HTTP/1.1 403"), "no secret: {head}");
    let (head, _) = http(address, &cancel("?csrf=0000".into(), "")).await;
    assert!(head.starts_with("HTTP/1.1 403"), "a wrong secret: {head}");
    let (head, _) = http(
        address,
        &cancel(format!("?csrf={csrf}"), "Origin: http://evil.example\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "another site: {head}");
    let pending = tasks
        .get_task(GetTaskRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pending.status(),
        TaskStatus::Pending,
        "no refused request acted"
    );

    let (head, _) = http(
        address,
        &cancel(
            format!("?csrf={csrf}"),
            &format!("Origin: http://{address}\r\n"),
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    assert!(
        header(&head, "location")
            .unwrap()
            .contains("done=Cancelled"),
        "{head}"
    );
    let cancelled = tasks
        .get_task(GetTaskRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status(), TaskStatus::Cancelled);
    server.stop().await;
}

#[tokio::test]
async fn with_tokens_on_nothing_is_shown_before_signing_in() {
    let dir = tempfile::tempdir().unwrap();
    let (security, secrets) = tokens(dir.path(), &[("ops", Role::Admin, &[])]);
    let admin = secrets[0].clone();
    let server = TestServer::start_secured(&Backend::Sqlite, fast_queue(), security).await;
    for path in ["/", "/tasks", "/agents", "/types", "/events"] {
        let (head, body) = http(
            server.console_address,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 303"), "{path}: {head}");
        assert_eq!(header(&head, "location"), Some("/login"), "{path}");
        assert!(body.is_empty(), "{path}: {body}");
    }
    let login = |token: &str, origin: &str| {
        let body = format!("token={token}");
        format!(
            "POST /login HTTP/1.1\r\nHost: {address}\r\nOrigin: {origin}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len(),
            address = server.console_address,
        )
    };
    let own = format!("http://{}", server.console_address);
    let (head, body) = http(server.console_address, &login("tp_nobody_wrong", &own)).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(header(&head, "set-cookie").is_none(), "{head}");
    assert!(body.contains("class=\"error\""), "{body}");
    let (head, _) = http(
        server.console_address,
        &login(&admin, "http://evil.example"),
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 403"),
        "signing in from another site: {head}"
    );
    let (head, _) = http(server.console_address, &login(&admin, &own)).await;
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    let cookie = header(&head, "set-cookie").unwrap();
    assert!(cookie.contains("HttpOnly; SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap();
    let (head, body) = http(
        server.console_address,
        &format!(
            "GET /types HTTP/1.1\r\nHost: x\r\nCookie: {session}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("<h1>Task types</h1>"), "{body}");
    server.stop().await;
}
