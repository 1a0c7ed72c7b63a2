//! The `taskplane-agent` binary's start-up checks and its life without a
//! server: it refuses bad configuration clearly, and while the control plane
//! is unreachable it keeps retrying until SIGTERM, then exits 0.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const PATIENCE: Duration = Duration::from_secs(30);

fn agent() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskplane-agent"));
    command
        .env_remove("TASK_ENABLED_DOMAINS")
        .env_remove("TASK_DISABLED_TYPES")
        .env_remove("TASK_FEATURE_FLAGS");
    command
}

#[tokio::test]
async fn bad_configuration_stops_the_agent_with_a_clear_error() {
    let cases = [
        (
            vec![
                ("TASK_ENABLED_DOMAINS", "billing,marketing"),
                ("TASK_STRICT_CONFIG", "true"),
            ],
            "unknown domains marketing",
        ),
        (
            vec![("TASK_ENABLED_DOMAINS", "marketing")],
            "the registry has no handlers",
        ),
        (
            vec![("TASK_FEATURE_FLAGS", "fast_path=on")],
            "TASK_FEATURE_FLAGS: 'fast_path=on' is not a flag",
        ),
        (
            vec![("TASK_STRICT_CONFIG", "yes")],
            "TASK_STRICT_CONFIG: 'yes' is not a boolean",
        ),
        (
            vec![("TASKPLANE_LOG_FORMAT", "xml")],
            "TASKPLANE_LOG_FORMAT='xml' is not a log format",
        ),
        (
            vec![("TASKPLANE_TLS_CERT", "/nonexistent/cert.pem")],
            "TLS files are set but 'http://127.0.0.1:50051' is not https://",
        ),
        (
            vec![("TASKPLANE_METRICS_LISTEN", "not-an-address")],
            "TASKPLANE_METRICS_LISTEN=not-an-address: cannot listen there",
        ),
    ];
    for (env, expected) in cases {
        let output = agent().envs(env.clone()).output().await.unwrap();
        assert!(!output.status.success(), "{env:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
    }
}

#[tokio::test]
async fn without_a_server_it_warns_of_unknown_domains_retries_until_sigterm_then_exits_cleanly() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = agent()
        .env("TASKPLANE_SERVER", format!("http://127.0.0.1:{port}"))
        .env("TASK_ENABLED_DOMAINS", "billing,marketing")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut attempts = 0;
    let mut warned = false;
    tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            warned |= line.contains("unknown domain in TASK_ENABLED_DOMAINS");
            if line.contains("cannot reach the control plane") {
                attempts += 1;
                if attempts == 2 {
                    break;
                }
            }
        }
    })
    .await
    .expect("retries are logged");
    assert!(warned, "the unknown domain was warned about");
    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn help_lists_every_variable_it_reads() {
    let output = agent().arg("--help").output().await.unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for (name, _) in taskplane_handlers::environment::VARIABLES {
        assert!(help.contains(name), "{name} missing from --help:\n{help}");
    }
}
