//! The `taskplane` binary as a user runs it: `dev` starts the control plane
//! and an agent of the example domains on SQLite under ./taskplane-data/,
//! completes tasks, fails honestly, and stops gracefully on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use taskplane_proto::json::{json_to_struct, struct_to_json};
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use taskplane_proto::v1::{EnqueueTaskRequest, Task, TaskStatus, WatchTaskRequest};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tonic::transport::Channel;

const PATIENCE: Duration = Duration::from_secs(30);

/// Starts `taskplane <args> --listen 127.0.0.1:0` in `dir`, with its
/// stdout read line by line.
fn spawn(dir: &std::path::Path, args: &[&str]) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskplane"))
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("taskplane starts");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Starts `taskplane <args> --listen 127.0.0.1:0` in `dir`; returns the child
/// and the address it printed.
async fn start(dir: &std::path::Path, args: &[&str]) -> (Child, String) {
    let (child, mut lines) = spawn(dir, args);
    let first = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("prints in time")
        .unwrap()
        .expect("a line");
    let address = first.rsplit(' ').next().unwrap().to_owned();
    assert!(
        first.contains("listening on"),
        "unexpected first line: {first}"
    );
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, address)
}

async fn client(address: &str) -> TaskServiceClient<Channel> {
    TaskServiceClient::new(
        Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

async fn run_to_end(
    client: &mut TaskServiceClient<Channel>,
    task_type: &str,
    payload: serde_json::Value,
) -> Task {
    let request = EnqueueTaskRequest {
        task_type: task_type.into(),
        payload: Some(json_to_struct(payload.as_object().unwrap())),
        ..Default::default()
    };
    let id = client
        .enqueue_task(request)
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
        .id;
    let mut stream = client
        .watch_task(WatchTaskRequest { id })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    tokio::time::timeout(PATIENCE, async {
        while let Some(task) = stream.message().await.unwrap() {
            last = Some(task);
        }
    })
    .await
    .expect("task finished in time");
    last.unwrap()
}

async fn terminate(mut child: Child) -> std::process::ExitStatus {
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("exits in time")
        .unwrap()
}

#[tokio::test]
async fn dev_runs_tasks_end_to_end_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (child, address) = start(
        dir.path(),
        &[
            "dev",
            "--local-listen",
            "127.0.0.1:0",
            "--console-listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    assert!(
        dir.path().join("taskplane-data/taskplane.db").exists(),
        "SQLite file under ./taskplane-data/"
    );
    let mut tasks = client(&address).await;

    let done = run_to_end(&mut tasks, "metric_aggregation", json!({"rows": [2, 4, 9]})).await;
    assert_eq!(done.status(), TaskStatus::Completed, "{done:?}");
    assert_eq!(
        struct_to_json(done.result.as_ref().unwrap())["mean"],
        json!(5)
    );

    let email = run_to_end(
        &mut tasks,
        "welcome_email",
        json!({"to": "ada@example.com", "name": "Ada"}),
    )
    .await;
    // No SMTP server is set: dev's mail sink keeps the message.
    assert_eq!(email.status(), TaskStatus::Completed, "{email:?}");
    let file = struct_to_json(email.result.as_ref().unwrap())["file"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(file.starts_with("taskplane-data/mail/"), "{file}");
    let message = std::fs::read_to_string(dir.path().join(&file)).unwrap();
    assert!(message.contains("Subject: Welcome, Ada!"), "{message}");

    let status = terminate(child).await;
    assert!(status.success(), "graceful exit, got {status:?}");
}

#[tokio::test]
async fn serve_keeps_tasks_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (child, address) = start(dir.path(), &["serve"]).await;
    let mut registry = taskplane_proto::v1::registry_service_client::RegistryServiceClient::new(
        Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    registry
        .register_task_type(taskplane_proto::v1::RegisterTaskTypeRequest {
            task_type: "resize_image".into(),
            domain: "media".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut tasks = client(&address).await;
    let request = EnqueueTaskRequest {
        task_type: "resize_image".into(),
        payload: Some(Default::default()),
        ..Default::default()
    };
    let id = tasks
        .enqueue_task(request)
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
        .id;
    assert!(terminate(child).await.success());

    let (child, address) = start(dir.path(), &["serve"]).await;
    let task = client(&address)
        .await
        .get_task(taskplane_proto::v1::GetTaskRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        task.status(),
        TaskStatus::Pending,
        "an accepted task survives a restart"
    );
    assert!(terminate(child).await.success());
}

/// Runs `taskplane <args> --server <url>` and returns (success, stdout, stderr).
async fn taskplane(url: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_taskplane"))
        .args(args)
        .args(["--server", url])
        .output()
        .await
        .expect("taskplane runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_client_commands_enqueue_follow_and_inspect_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let (child, address) = start(
        dir.path(),
        &[
            "dev",
            "--local-listen",
            "127.0.0.1:0",
            "--console-listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    let url = format!("http://{address}");

    let (ok, out, _) = taskplane(&url, &["health"]).await;
    assert!(ok && out.trim() == "SERVING", "{out}");
    let (ok, _, err) = taskplane("http://127.0.0.1:1", &["health"]).await;
    assert!(!ok && err.contains("127.0.0.1:1"), "{err}");

    let (ok, out, _) = taskplane(&url, &["types", "list"]).await;
    let row = out
        .lines()
        .find(|l| l.starts_with("metric_aggregation"))
        .unwrap_or_default();
    assert!(
        ok && out.starts_with("TASK_TYPE") && row.contains("system_maintenance"),
        "{out}"
    );

    let (ok, out, _) = taskplane(
        &url,
        &[
            "enqueue",
            "metric_aggregation",
            "--payload",
            r#"{"rows": [1, 2, 3]}"#,
            "--wait",
            "--output",
            "json",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let task: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (task["status"].as_str(), task["result"]["sum"].as_f64()),
        (Some("COMPLETED"), Some(6.0))
    );
    let id = task["id"].as_str().unwrap();

    let (ok, out, _) = taskplane(&url, &["task", "get", id]).await;
    assert!(ok && out.contains("COMPLETED"), "{out}");
    let (ok, out, _) = taskplane(
        &url,
        &["task", "list", "--status", "completed", "--output", "json"],
    )
    .await;
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && listed[0]["id"] == id, "{out}");
    // A task whose handler refuses its payload (`--wait` then fails,
    // naming it), found by its error text and by when it was created; the
    // completed one has no follow-ups.
    let (ok, _, err) = taskplane(
        &url,
        &[
            "enqueue",
            "metric_aggregation",
            "--payload",
            r#"{"rows": "not a list"}"#,
            "--wait",
        ],
    )
    .await;
    let error = "must be a JSON array";
    assert!(!ok && err.contains(error), "{err}");
    let failed_id = err
        .split_whitespace()
        .find(|word| uuid::Uuid::parse_str(word).is_ok())
        .unwrap_or_default()
        .to_owned();
    let list_ids = async |filters: &[&str]| -> Vec<String> {
        let mut args = vec!["task", "list", "--output", "json"];
        args.extend(filters);
        let (ok, out, err) = taskplane(&url, &args).await;
        assert!(ok, "{filters:?}: {err}");
        let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        listed
            .iter()
            .map(|task| task["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(list_ids(&["--error", error]).await, vec![failed_id.clone()]);
    let recent = list_ids(&["--since", "10m"]).await;
    assert!(
        recent.contains(&failed_id) && recent.contains(&id.to_owned()),
        "{recent:?}"
    );
    assert_eq!(list_ids(&["--parent", id]).await, Vec::<String>::new());
    assert!(!list_ids(&[]).await.is_empty());
    let (ok, _, err) = taskplane(&url, &["task", "list", "--since", "1000000years"]).await;
    assert!(
        !ok && err.contains("--since") && err.contains("too long ago"),
        "{err}"
    );
    let (ok, out, _) = taskplane(&url, &["task", "attempts", id]).await;
    assert!(ok && out.contains("completed"), "{out}");
    let (ok, out, _) = taskplane(&url, &["stats", "--output", "json"]).await;
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task_type"] == "metric_aggregation")
        .cloned()
        .unwrap_or_default();
    assert!(
        ok && row["completed"] == 1 && row["completed_per_min"] == 1 && row["pending"] == 0,
        "{out}"
    );
    // Metadata reaches the stored task.
    let (ok, out, err) = taskplane(
        &url,
        &[
            "enqueue",
            "metric_aggregation",
            "--payload",
            r#"{"rows": [4]}"#,
            "--metadata",
            "team=ops",
            "--metadata",
            "ticket=T-7",
            "--output",
            "json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let task: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(task["metadata"]["team"], "ops", "{out}");
    assert_eq!(task["metadata"]["ticket"], "T-7", "{out}");
    // A declared handler version and a label no agent has: the task waits,
    // and `task get` says why.
    let (ok, out, err) = taskplane(
        &url,
        &[
            "enqueue",
            "payment_processing",
            "--handler-version",
            "v1",
            "--require-label",
            "region=mars",
            "--output",
            "json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let task: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(task["handler_version"], "v1", "{out}");
    assert_eq!(task["required_labels"]["region"], "mars", "{out}");
    let (ok, out, _) = taskplane(&url, &["task", "get", task["id"].as_str().unwrap()]).await;
    assert!(
        ok && out.contains("PENDING") && out.contains("has the labels region=mars"),
        "{out}"
    );
    let (ok, _, err) = taskplane(
        &url,
        &["enqueue", "metric_aggregation", "--handler-version", "v7"],
    )
    .await;
    assert!(
        !ok && err.contains("FAILED_PRECONDITION") && err.contains("'v7'"),
        "{err}"
    );
    let (ok, _, err) = taskplane(
        &url,
        &["enqueue", "metric_aggregation", "--metadata", "oops"],
    )
    .await;
    assert!(!ok && err.contains("'oops' is not KEY=VALUE"), "{err}");

    // `types validate` answers for a served type and exits 1 for an unknown one.
    let (ok, out, _) = taskplane(&url, &["types", "validate", "invoice_generation"]).await;
    assert!(ok && out.contains("true"), "{out}");
    let (ok, _, err) = taskplane(&url, &["types", "validate", "no_such_type"]).await;
    assert!(
        !ok && err.contains("no_such_type cannot be enqueued"),
        "{err}"
    );

    // The table also lists the example domain's schedules.
    let (ok, out, _) = taskplane(&url, &["stats"]).await;
    assert!(ok && out.contains("control-plane-health-check"), "{out}");
    let (ok, out, _) = taskplane(&url, &["agents", "list"]).await;
    assert!(
        ok && out.contains("dev-agent") && out.contains("payment_processing:v1"),
        "{out}"
    );

    // A dead task makes --wait exit 1; errors carry the status in words.
    // (The dev gateway declines customers whose id ends in _declined.)
    let (ok, _, err) = taskplane(
        &url,
        &[
            "enqueue",
            "payment_processing",
            "--payload",
            r#"{"customer_id": "cus_7_declined", "amount_cents": 100, "currency": "EUR"}"#,
            "--wait",
        ],
    )
    .await;
    assert!(
        !ok && err.contains("ended DEAD") && err.contains("card_declined"),
        "{err}"
    );
    let (ok, _, err) = taskplane(&url, &["enqueue", "send_fax"]).await;
    assert!(
        !ok && err.contains("error: FAILED_PRECONDITION: task type 'send_fax' is not registered"),
        "{err}"
    );
    let (ok, _, err) =
        taskplane(&url, &["enqueue", "metric_aggregation", "--payload", "[1]"]).await;
    assert!(
        !ok && err.contains("--payload must be a JSON object"),
        "{err}"
    );
    let (ok, _, err) = taskplane("http://127.0.0.1:1", &["types", "list"]).await;
    assert!(
        !ok && err.contains("cannot reach the control plane"),
        "{err}"
    );
    // A trace context given on the command line travels with the task; a
    // malformed one is refused before anything is sent.
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (ok, out, _) = taskplane(
        &url,
        &[
            "enqueue",
            "metric_aggregation",
            "--payload",
            r#"{"rows": [1]}"#,
            "--traceparent",
            trace,
            "--output",
            "json",
        ],
    )
    .await;
    let traced: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && traced["metadata"]["traceparent"] == trace, "{out}");
    let (ok, _, err) = taskplane(
        &url,
        &["enqueue", "metric_aggregation", "--traceparent", "nope"],
    )
    .await;
    assert!(!ok && err.contains("not a W3C trace context"), "{err}");

    // Piped into a reader that has already gone (`taskplane types list |
    // head -1`, say): a quiet exit, not a panic.
    let mut listing = Command::new(env!("CARGO_BIN_EXE_taskplane"))
        .args(["types", "list", "--server", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(listing.stdout.take());
    let output = listing.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stderr.contains("panicked"),
        "{:?} {stderr}",
        output.status
    );

    // Draining the dev agent: it is listed as draining, and takes no more.
    let (ok, out, err) =
        taskplane(&url, &["agents", "drain", "dev-agent", "--output", "json"]).await;
    let drained: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert!(ok && drained[0]["draining"] == true, "{out}{err}");
    let (ok, out, _) = taskplane(&url, &["agents", "list", "--output", "json"]).await;
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && listed[0]["draining"] == true, "{out}");
    let (ok, _, err) = taskplane(&url, &["agents", "drain", "nobody"]).await;
    assert!(!ok && err.contains("NOT_FOUND"), "{err}");

    assert!(terminate(child).await.success());
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_taskplane"))
        .arg("--version")
        .output()
        .unwrap();
    let printed = String::from_utf8(printed.stdout).unwrap();
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8(head.stdout).unwrap();
    assert!(!head.trim().is_empty(), "the tests run in a git checkout");
    assert_eq!(
        printed.trim(),
        format!(
            "taskplane {} (commit {})",
            env!("CARGO_PKG_VERSION"),
            head.trim()
        )
    );
}

#[tokio::test]
async fn dev_prints_the_web_consoles_address_and_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let (child, mut lines) = spawn(
        dir.path(),
        &[
            "dev",
            "--local-listen",
            "127.0.0.1:0",
            "--console-listen",
            "127.0.0.1:0",
        ],
    );
    let url = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("The web console: ") {
                return url.to_owned();
            }
        }
        panic!("no console address printed");
    })
    .await
    .expect("prints in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /types HTTP/1.1\r\nHost: dev\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).await.unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("data-type=\"invoice_generation\""),
        "the example domains' types are listed"
    );
    assert!(terminate(child).await.success());
}
