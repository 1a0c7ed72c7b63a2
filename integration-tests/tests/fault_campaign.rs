//! The fault campaign: an operator's bad day, at a fixed seed, with real
//! processes, while a producer keeps enqueueing (with idempotency keys, so it
//! can retry anything that failed) and test agents keep working.
//!
//! - On PostgreSQL, two replicas reach the database through a TCP proxy:
//!   agents are killed with SIGKILL and restarted, the database stalls for
//!   three leases, a replica is frozen with SIGSTOP and thawed, a replica is
//!   killed and restarted, and poison requests arrive.
//! - On SQLite, the server's database lives on a small tmpfs: agents and the
//!   server are killed and restarted, the disk fills up and is freed, and
//!   poison requests arrive.
//!
//! After each fault the test measures how long until work flows again (a
//! new task completes), with no restart other than the fault's own. In the
//! end every accepted task completed exactly once in the store, and the
//! agents' journals (outside taskplane) show no task run by two attempts at
//! once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use common::{
    AgentProcess, ServerProcess, database_address, free_port, register_work, through, work,
};
use integration_tests::proxy::FaultProxy;
use integration_tests::raw::raw_unary;
use serde_json::json;
use taskplane_proto::json::json_to_struct;
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use taskplane_proto::v1::{
    EnqueueTaskRequest, EnqueueTasksRequest, GetTaskRequest, ListTaskAttemptsRequest, TaskStatus,
};
use taskplane_server::testing::PostgresSchema;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// The lease every server runs with (`ServerProcess`).
const LEASE: Duration = Duration::from_secs(1);

/// Each test agent's slots.
const SLOTS: u32 = 8;

/// How long work may take to flow again after a fault ends: the bound this
/// campaign proves. A lease to notice a dead peer, a heartbeat interval of
/// fair reaping, an agent's reconnection backoff, and room for a loaded CI
/// machine.
const HEAL_BOUND: Duration = Duration::from_secs(15);

/// A deterministic generator (xorshift64*), so a seed gives the same faults
/// in the same order with the same timings.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// `items` in an order this generator chooses.
    fn shuffled<T>(&mut self, mut items: Vec<T>) -> Vec<T> {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
        items
    }
}

fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// One run of a task by a test agent, from its journal.
#[derive(Debug)]
struct Execution {
    task: String,
    attempt: u32,
    pid: u32,
    start: u128,
    end: Option<u128>,
}

/// Every run in the journal (see the `test-agent` binary for its format).
fn executions(journal: &Path) -> Vec<Execution> {
    let text = std::fs::read_to_string(journal).unwrap_or_default();
    let mut runs: BTreeMap<(String, u32, u32), Execution> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [event, task, attempt, micros, pid] = fields[..] else {
            continue;
        };
        let (attempt, micros, pid) = (
            attempt.parse().unwrap(),
            micros.parse().unwrap(),
            pid.parse().unwrap(),
        );
        let key = (task.to_owned(), attempt, pid);
        match event {
            "start" => {
                runs.insert(
                    key,
                    Execution {
                        task: task.to_owned(),
                        attempt,
                        pid,
                        start: micros,
                        end: None,
                    },
                );
            }
            "end" => {
                if let Some(run) = runs.get_mut(&key) {
                    run.end = Some(micros);
                }
            }
            _ => {}
        }
    }
    runs.into_values().collect()
}

/// Runs of one task that overlapped in time. A run without an `end` ended
/// when its process was killed (`killed`), or is still going.
fn overlapping(journal: &Path, killed: &HashMap<u32, u128>) -> Vec<String> {
    let mut by_task: BTreeMap<String, Vec<(u128, u128, u32, u32)>> = BTreeMap::new();
    for run in executions(journal) {
        let end = run
            .end
            .or_else(|| killed.get(&run.pid).copied())
            .unwrap_or(u128::MAX);
        by_task
            .entry(run.task)
            .or_default()
            .push((run.start, end, run.attempt, run.pid));
    }
    let mut overlaps = Vec::new();
    for (task, mut runs) in by_task {
        runs.sort();
        for pair in runs.windows(2) {
            let ((_, end, attempt, pid), (start, _, next_attempt, next_pid)) = (pair[0], pair[1]);
            if start < end {
                overlaps.push(format!(
                    "{task}: attempt {attempt} (pid {pid}) still ran when attempt {next_attempt} (pid {next_pid}) started"
                ));
            }
        }
    }
    overlaps
}

/// A client of every server, that moves on to the next when one fails.
#[derive(Clone)]
struct Clients {
    servers: Vec<TaskServiceClient<Channel>>,
}

impl Clients {
    fn new(urls: &[String]) -> Self {
        let servers = urls
            .iter()
            .map(|url| {
                let channel = Endpoint::from_shared(url.clone())
                    .unwrap()
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(Duration::from_secs(3))
                    .connect_lazy();
                TaskServiceClient::new(channel)
            })
            .collect();
        Clients { servers }
    }

    /// Enqueues `tasks` (keyed), trying each server in turn until one
    /// accepts; returns the task ids.
    async fn enqueue(&self, tasks: Vec<EnqueueTaskRequest>, mut turn: usize) -> Vec<String> {
        let deadline = Instant::now() + 3 * HEAL_BOUND;
        loop {
            let mut client = self.servers[turn % self.servers.len()].clone();
            let request = EnqueueTasksRequest {
                tasks: tasks.clone(),
            };
            match client.enqueue_tasks(request).await {
                Ok(answer) => {
                    return answer
                        .into_inner()
                        .results
                        .into_iter()
                        .map(|r| r.task.unwrap().id)
                        .collect();
                }
                Err(status) => {
                    assert!(
                        matches!(
                            status.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::Cancelled
                                | tonic::Code::Unknown
                                | tonic::Code::DeadlineExceeded
                        ),
                        "an enqueue failed for a reason retrying cannot fix: {status:?}"
                    );
                    assert!(Instant::now() < deadline, "no server took work: {status:?}");
                    turn += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// The task, from whichever server answers.
    async fn get(&self, id: &str) -> taskplane_proto::v1::Task {
        let mut turn = 0;
        loop {
            let mut client = self.servers[turn % self.servers.len()].clone();
            match client.get_task(GetTaskRequest { id: id.into() }).await {
                Ok(task) => return task.into_inner(),
                Err(_) => {
                    turn += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Waits until the task completed; panics if it died or takes too long.
    async fn wait_completed(&self, id: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let task = self.get(id).await;
            match task.status() {
                TaskStatus::Completed => return,
                TaskStatus::Dead => panic!("task {id} died: {}", task.last_error),
                status => assert!(Instant::now() < deadline, "task {id} is still {status:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Enqueues keyed batches until `stop`, recording every accepted id: short
/// tasks, and every other batch one that runs longer than a lease, so that
/// a fault catches runs in flight and a second run of the same task would
/// overlap the first.
async fn produce(
    clients: Clients,
    accepted: Arc<Mutex<BTreeSet<String>>>,
    stop: CancellationToken,
) {
    let mut random = Seeded(0x5eed_0001);
    let mut batch = 0usize;
    while !stop.is_cancelled() {
        let tasks = (0..5)
            .map(|i| {
                let ms = if i == 0 && batch.is_multiple_of(2) {
                    1500 + random.below(1500)
                } else {
                    20 + random.below(150)
                };
                EnqueueTaskRequest {
                    idempotency_key: format!("campaign-{batch}-{i}"),
                    ..work(ms)
                }
            })
            .collect();
        let ids = clients.enqueue(tasks, batch).await;
        accepted.lock().unwrap().extend(ids);
        batch += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long until a new task completes: the fault has healed.
async fn heal_time(clients: &Clients, since: Instant) -> Duration {
    let probe = clients
        .enqueue(
            vec![EnqueueTaskRequest {
                idempotency_key: format!("probe-{}", now_micros()),
                ..work(0)
            }],
            0,
        )
        .await;
    clients.wait_completed(&probe[0], 3 * HEAL_BOUND).await;
    since.elapsed()
}

/// Requests no server may accept, and what each must answer.
async fn send_poison(url: &str) {
    let channel = Endpoint::from_shared(url.to_owned())
        .unwrap()
        .timeout(Duration::from_secs(3))
        .connect_lazy();
    let mut client = TaskServiceClient::new(channel.clone());
    let mut bloated = work(0);
    bloated.metadata = [("blob".to_owned(), "m".repeat(64 * 1024))].into();
    let mut not_a_number = work(0);
    not_a_number.payload = Some(json_to_struct(json!({"ms": 0}).as_object().unwrap()));
    not_a_number.payload.as_mut().unwrap().fields.insert(
        "ratio".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::NumberValue(f64::NAN)),
        },
    );
    for poison in [bloated, not_a_number] {
        let refused = client.enqueue_task(poison).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }
    let garbage = raw_unary(
        channel,
        "/taskplane.v1.TaskService/EnqueueTask",
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    )
    .await
    .unwrap_err();
    assert_eq!(garbage.code(), tonic::Code::InvalidArgument, "{garbage:?}");
}

/// Every accepted task completed exactly once in the store, and no two runs
/// of one task overlapped in the agents' journal.
async fn audit(
    clients: &Clients,
    accepted: &BTreeSet<String>,
    journal: &Path,
    killed: &HashMap<u32, u128>,
) {
    for id in accepted {
        clients.wait_completed(id, 3 * HEAL_BOUND).await;
    }
    for id in accepted {
        let mut turn = 0;
        let attempts = loop {
            let mut client = clients.servers[turn % clients.servers.len()].clone();
            match client
                .list_task_attempts(ListTaskAttemptsRequest { id: id.clone() })
                .await
            {
                Ok(answer) => break answer.into_inner().attempts,
                Err(_) => turn += 1,
            }
        };
        let completed = attempts.iter().filter(|a| a.outcome == "completed").count();
        assert_eq!(
            completed, 1,
            "task {id} completed {completed} times: {attempts:?}"
        );
    }
    let overlaps = overlapping(journal, killed);
    assert!(overlaps.is_empty(), "runs overlapped: {overlaps:#?}");
}

/// The producer of a campaign and what it measured.
struct Campaign {
    clients: Clients,
    accepted: Arc<Mutex<BTreeSet<String>>>,
    stop: CancellationToken,
    producer: tokio::task::JoinHandle<()>,
    heals: Vec<Duration>,
}

impl Campaign {
    /// Starts producing through `clients`.
    async fn start(clients: Clients) -> Self {
        let accepted = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = CancellationToken::new();
        let producer = tokio::spawn(produce(clients.clone(), accepted.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        Campaign {
            clients,
            accepted,
            stop,
            producer,
            heals: Vec::new(),
        }
    }

    /// Measures how soon work flows again after `fault` ended.
    async fn healed(&mut self, fault: impl std::fmt::Debug) {
        let healed = heal_time(&self.clients, Instant::now()).await;
        println!("{fault:?}: work flowed again {healed:?} after the fault ended");
        assert!(healed < HEAL_BOUND, "{fault:?} took {healed:?} to heal");
        self.heals.push(healed);
    }

    /// Stops producing and audits at least `at_least` accepted tasks.
    async fn finish(self, at_least: usize, journal: &Path, killed: &HashMap<u32, u128>) {
        self.stop.cancel();
        self.producer.await.unwrap();
        let accepted = self.accepted.lock().unwrap().clone();
        assert!(
            accepted.len() >= at_least,
            "the producer enqueued {}",
            accepted.len()
        );
        audit(&self.clients, &accepted, journal, killed).await;
        println!(
            "{} tasks, {} faults healed, the slowest in {:?}",
            accepted.len(),
            self.heals.len(),
            self.heals.iter().max().unwrap()
        );
    }
}

/// The agents of a campaign, restarted under the same name when killed.
struct Crew {
    agents: Vec<(String, String, AgentProcess)>,
    journal: PathBuf,
    killed: HashMap<u32, u128>,
}

impl Crew {
    fn start(journal: PathBuf, agents: &[(&str, String)]) -> Self {
        let agents = agents
            .iter()
            .map(|(name, servers)| {
                let process = AgentProcess::start(servers, name, SLOTS, &journal);
                (name.to_string(), servers.clone(), process)
            })
            .collect();
        Crew {
            agents,
            journal,
            killed: HashMap::new(),
        }
    }

    /// Kills one agent with SIGKILL and starts it again.
    async fn kill_and_restart(&mut self, which: usize) {
        let which = which % self.agents.len();
        let (name, servers, process) = self.agents.remove(which);
        let pid = process.pid();
        process.kill9().await;
        self.killed.insert(pid, now_micros());
        let restarted = AgentProcess::start(&servers, &name, SLOTS, &self.journal);
        self.agents.push((name, servers, restarted));
    }

    async fn stop(self) -> HashMap<u32, u128> {
        for (_, _, process) in self.agents {
            process.kill9().await;
        }
        self.killed
    }
}

#[derive(Debug, Clone, Copy)]
enum ReplicaFault {
    KillAgent,
    StallDatabase,
    FreezeReplica,
    KillReplica,
    Poison,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgresql_heal_from_every_fault_and_lose_nothing() {
    let Some(schema) = PostgresSchema::create().await else {
        return;
    };
    let mut random = Seeded(0x0fa1_7ca3_9a16_0001);
    let proxy = FaultProxy::start(database_address(&schema.url)).await;
    let database = through(&schema.url, proxy.address());
    let ports = [free_port(), free_port()];
    let mut replicas = vec![
        ServerProcess::start(&database, ports[0]).await,
        ServerProcess::start(&database, ports[1]).await,
    ];
    register_work(&replicas[0]).await;
    let urls: Vec<String> = replicas.iter().map(ServerProcess::url).collect();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.log");
    let (a, b) = (&urls[0], &urls[1]);
    let mut crew = Crew::start(
        journal.clone(),
        &[
            ("first-a", format!("{a},{b}")),
            ("first-b", format!("{b},{a}")),
            ("second-a", format!("{a},{b}")),
        ],
    );
    let mut campaign = Campaign::start(Clients::new(&urls)).await;

    // The replica frozen is the first, where two of the three agents start;
    // it is frozen before any replica is killed, since agents of a killed
    // replica move to the other one. The rest comes in the seed's order.
    let mut faults = vec![ReplicaFault::FreezeReplica];
    faults.extend(random.shuffled(vec![
        ReplicaFault::KillAgent,
        ReplicaFault::StallDatabase,
        ReplicaFault::Poison,
        ReplicaFault::KillAgent,
    ]));
    faults.push(ReplicaFault::KillReplica);
    for fault in faults {
        let which = match fault {
            ReplicaFault::FreezeReplica => 0,
            _ => random.below(2) as usize,
        };
        match fault {
            ReplicaFault::KillAgent => crew.kill_and_restart(random.below(3) as usize).await,
            ReplicaFault::StallDatabase => {
                proxy.freeze();
                tokio::time::sleep(3 * LEASE).await;
                proxy.restore();
            }
            ReplicaFault::FreezeReplica => {
                replicas[which].signal("-STOP").await;
                tokio::time::sleep(3 * LEASE).await;
                replicas[which].signal("-CONT").await;
            }
            ReplicaFault::KillReplica => {
                let victim = replicas.remove(which);
                victim.kill9().await;
                tokio::time::sleep(LEASE).await;
                let restarted = ServerProcess::start(&database, ports[which]).await;
                replicas.insert(which, restarted);
            }
            ReplicaFault::Poison => send_poison(&urls[which]).await,
        }
        campaign.healed(fault).await;
        tokio::time::sleep(Duration::from_millis(300 + random.below(700))).await;
    }

    campaign.finish(100, &journal, &crew.killed).await;
    crew.stop().await;
    for replica in replicas {
        replica.kill9().await;
    }
    schema.drop().await;
}

/// A tmpfs mounted for a test (it runs as root), unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(mounted.success(), "mounting a tmpfs needs root");
        Tmpfs { path }
    }

    /// Writes a file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        while file
            .write_all(&chunk)
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[derive(Debug, Clone, Copy)]
enum SqliteFault {
    KillAgent,
    KillServer,
    FullDisk,
    Poison,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sqlite_server_heals_from_every_fault_and_loses_nothing() {
    let mut random = Seeded(0x0fa1_7ca3_9a16_0002);
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(dir.path().join("disk"), "16m");
    let database = format!("sqlite://{}/taskplane.db", disk.path.display());
    let port = free_port();
    let mut server = ServerProcess::start(&database, port).await;
    register_work(&server).await;
    let url = server.url();
    let journal = dir.path().join("journal.log");
    let mut crew = Crew::start(
        journal.clone(),
        &[("solo-one", url.clone()), ("solo-two", url.clone())],
    );
    let mut campaign = Campaign::start(Clients::new(std::slice::from_ref(&url))).await;

    let faults = random.shuffled(vec![
        SqliteFault::KillAgent,
        SqliteFault::KillServer,
        SqliteFault::FullDisk,
        SqliteFault::Poison,
    ]);
    for fault in faults {
        match fault {
            SqliteFault::KillAgent => crew.kill_and_restart(random.below(2) as usize).await,
            SqliteFault::KillServer => {
                server.kill9().await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                server = ServerProcess::start(&database, port).await;
            }
            SqliteFault::FullDisk => {
                let filler = disk.fill();
                tokio::time::sleep(2 * LEASE).await;
                std::fs::remove_file(filler).unwrap();
            }
            SqliteFault::Poison => send_poison(&url).await,
        }
        campaign.healed(fault).await;
        tokio::time::sleep(Duration::from_millis(300 + random.below(700))).await;
    }

    campaign.finish(50, &journal, &crew.killed).await;
    crew.stop().await;
    server.kill9().await;
    drop(disk);
}
