//! A full disk under the SQLite store, then freed: the server heals without
//! a restart. The real server process runs in its own mount namespace on a
//! small tmpfs (`unshare`, as root), and the test fills and frees that disk
//! through `/proc/<pid>/root`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

use common::{AgentProcess, free_port, work};
use integration_tests::{PATIENCE, spawn_listening, wait_for, wait_health};
use taskplane_proto::v1::registry_service_client::RegistryServiceClient;
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use taskplane_proto::v1::{
    EnqueueTaskRequest, GetTaskRequest, RegisterTaskTypeRequest, TaskStatus,
};
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

/// The tmpfs the database lives on. Small, so that filling it is quick.
const DISK_SIZE: &str = "8m";

/// A `taskplane serve` process on its own tmpfs.
struct ServerOnTmpfs {
    _child: Child,
    /// The data directory as this process sees it (inside the server's
    /// mount namespace).
    data: PathBuf,
    url: String,
}

impl ServerOnTmpfs {
    async fn start(mount_point: &Path) -> Self {
        let port = free_port();
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@""#)
            .args(["sh", DISK_SIZE])
            .arg(mount_point)
            .arg(env!("CARGO_BIN_EXE_taskplane-under-test"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--database-url")
            .arg(format!("sqlite://{}/tp.db", mount_point.display()))
            .args(["--lease", "1s", "--poll-interval", "50ms"])
            .env("RUST_LOG", "warn");
        let (child, _) = spawn_listening(command).await;
        let pid = child.id().expect("running");
        let data =
            PathBuf::from(format!("/proc/{pid}/root")).join(mount_point.strip_prefix("/").unwrap());
        assert!(
            data.join("tp.db").exists(),
            "the database is not on the server's tmpfs"
        );
        ServerOnTmpfs {
            _child: child,
            data,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Writes a file until the disk is full; returns its path.
    fn fill_disk(&self) -> PathBuf {
        let filler = self.data.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        loop {
            if let Err(error) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
                assert_eq!(
                    error.raw_os_error(),
                    Some(28),
                    "filling the disk failed otherwise: {error}"
                );
                break;
            }
        }
        filler
    }
}

fn keyed_work(key: &str) -> EnqueueTaskRequest {
    EnqueueTaskRequest {
        idempotency_key: key.into(),
        // A payload big enough that a few inserts need new pages.
        metadata: [("padding".to_owned(), "x".repeat(4000))].into(),
        ..work(0)
    }
}

fn register(task_type: &str) -> RegisterTaskTypeRequest {
    RegisterTaskTypeRequest {
        task_type: task_type.into(),
        domain: "testing".into(),
        description: "registered around a full disk".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_sqlite_store_heals_once_a_full_disk_is_freed() {
    let mount_point = tempfile::tempdir().unwrap();
    let server = ServerOnTmpfs::start(mount_point.path()).await;
    let mut tasks = TaskServiceClient::new(server.channel().await);
    let mut registry = RegistryServiceClient::new(server.channel().await);
    registry.register_task_type(register("work")).await.unwrap();

    let filler = server.fill_disk();
    // Keyed enqueues (one transaction on the sqlx writer) until the disk
    // refuses one; the refusal is UNAVAILABLE, worth retrying.
    let mut accepted = Vec::new();
    let refusal = loop {
        let key = format!("before-{}", accepted.len());
        match tasks.enqueue_task(keyed_work(&key)).await {
            Ok(answer) => accepted.push(answer.into_inner().task.unwrap().id),
            Err(status) => break status,
        }
        assert!(accepted.len() < 5_000, "the disk never filled");
    };
    assert_eq!(refusal.code(), tonic::Code::Unavailable, "{refusal:?}");
    wait_health(server.channel().await, ServingStatus::NotServing).await;
    let refused_registration = registry.register_task_type(register("after_full")).await;
    assert!(refused_registration.is_err(), "registered on a full disk");

    std::fs::remove_file(&filler).unwrap();
    // Freed: keyed enqueues, registrations and agents work again, in the
    // same process.
    let healed_at = tokio::time::Instant::now();
    let mut attempt = 0;
    let healed = loop {
        attempt += 1;
        match tasks
            .enqueue_task(keyed_work(&format!("after-{attempt}")))
            .await
        {
            Ok(answer) => break answer.into_inner().task.unwrap().id,
            Err(status) => {
                assert!(
                    healed_at.elapsed() < PATIENCE,
                    "keyed enqueues still fail after the disk was freed: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    registry
        .register_task_type(register("after_full"))
        .await
        .expect("registration works again");
    wait_health(server.channel().await, ServingStatus::Serving).await;
    println!("healed {:?} after the disk was freed", healed_at.elapsed());
    accepted.push(healed);

    let journal = mount_point.path().join("journal.log");
    let _agent = AgentProcess::start(&server.url, "after-full", 4, &journal);
    for id in &accepted {
        wait_for(|| {
            let mut tasks = tasks.clone();
            let id = id.clone();
            async move {
                let task = tasks
                    .get_task(GetTaskRequest { id })
                    .await
                    .unwrap()
                    .into_inner();
                task.status() == TaskStatus::Completed
            }
        })
        .await;
    }
}
