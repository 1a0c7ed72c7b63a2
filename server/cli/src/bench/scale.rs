//! The workloads of a deployment's scale: W5 many agents, W6 many task
//! types, W7 slow handlers, W8 many producers and W9 idle agents.
//!
//! W9 measures a server in its own process (this binary's `serve`), so
//! that its memory and CPU are not mixed with the agents'.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskplane_client::NewTask;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::BenchArgs;
use super::harness::*;
use super::probe::{MANY_TYPES, NOOP_TYPE, PRODUCERS_TYPE, Probe, SLOW_TYPE, many_type};
use super::usage::Usage;
use super::workloads::percentile;

/// W5: `args.tasks` no-op tasks enqueued in batches to 100 connected
/// agents of 4 slots, each on its own connection, until all ran:
/// throughput (enqueue included) and each agent's share of the work. The
/// same work for one agent holding all 400 slots, run just before, is
/// what the throughput is compared with.
pub(super) async fn w5(args: &BenchArgs, servers: &Servers) -> anyhow::Result<Figures> {
    const AGENTS: usize = 100;
    const SLOTS: u32 = 4;
    let one_agent_probe = Arc::new(Probe::default());
    let one_agent = Agents::start(servers, 1, SLOTS * AGENTS as u32, &one_agent_probe).await?;
    let noop_type = |_| noop(NOOP_TYPE);
    let one_agent_rate =
        enqueue_and_run(args, servers, &one_agent_probe, noop_type, "W5 one agent").await?;
    one_agent.stop().await;
    let probe = Arc::new(Probe::default());
    // Connected first: agents that join one by one would find the work
    // half done by the first ones.
    let agents = Agents::start(servers, AGENTS, SLOTS, &probe).await?;
    let rate = enqueue_and_run(args, servers, &probe, noop_type, "W5 process (100 agents)").await?;
    agents.stop().await;
    let shares = probe.runs_per_agent(AGENTS);
    let fair = args.tasks as f64 / AGENTS as f64;
    let mut figures = Figures::new();
    figures.insert("agents".into(), json!(AGENTS));
    figures.insert("slots_per_agent".into(), json!(SLOTS));
    insert_rates(&mut figures, rate, "one_agent", one_agent_rate);
    let least = shares.iter().copied().min().unwrap_or(0);
    let most = shares.iter().copied().max().unwrap_or(0);
    figures.insert("least_tasks_per_agent".into(), json!(least));
    figures.insert("most_tasks_per_agent".into(), json!(most));
    figures.insert(
        "least_share_of_fair".into(),
        json!((least as f64 / fair * 100.0).round() / 100.0),
    );
    insert_counts(&mut figures, &probe, args.tasks);
    Ok(figures)
}

/// W6: `args.tasks` tasks spread evenly over 1,000 task types, enqueued
/// in batches to one agent serving them all, until all ran. The same work
/// of one type, for an agent of as many slots serving it, run just
/// before, is what the throughput is compared with.
pub(super) async fn w6(args: &BenchArgs, servers: &Servers) -> anyhow::Result<Figures> {
    let one_type_probe = Arc::new(Probe::default());
    let one_type = Agents::start(servers, 1, args.concurrency, &one_type_probe).await?;
    let noop_type = |_| noop(NOOP_TYPE);
    let one_type_rate =
        enqueue_and_run(args, servers, &one_type_probe, noop_type, "W6 one type").await?;
    one_type.stop().await;
    let probe = Arc::new(Probe::default());
    let agents = Agents::start_many_types(servers, args.concurrency, &probe).await?;
    let spread = |i| noop(&many_type(i % MANY_TYPES));
    let rate = enqueue_and_run(args, servers, &probe, spread, "W6 process (1,000 types)").await?;
    agents.stop().await;
    let mut figures = Figures::new();
    figures.insert("task_types".into(), json!(MANY_TYPES));
    figures.insert("slots_per_agent".into(), json!(args.concurrency));
    insert_rates(&mut figures, rate, "one_type", one_type_rate);
    insert_counts(&mut figures, &probe, args.tasks);
    Ok(figures)
}

/// Enqueues `args.tasks` no-op tasks in batches, the `i`th of type
/// `type_of(i)`, to agents already connected, and waits until `probe` saw
/// each one run: tasks/s, enqueue included.
pub(super) async fn enqueue_and_run(
    args: &BenchArgs,
    servers: &Servers,
    probe: &Probe,
    request_of: impl Fn(usize) -> NewTask,
    label: &str,
) -> anyhow::Result<f64> {
    let bar = progress(args, args.tasks as u64, label);
    let started = Instant::now();
    let hidden = indicatif::ProgressBar::hidden();
    enqueue_spread(servers, request_of, args.tasks, args.batch_size, &hidden).await?;
    wait_ran(probe, args.tasks, &bar).await?;
    let rate = args.tasks as f64 / started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok(rate)
}

/// Records a workload's `rate` and the `control` rate it is compared with,
/// named `{control_name}_per_sec`, and their ratio.
pub(super) fn insert_rates(figures: &mut Figures, rate: f64, control_name: &str, control: f64) {
    figures.insert("enqueued_and_processed_per_sec".into(), json!(rate.round()));
    figures.insert(format!("{control_name}_per_sec"), json!(control.round()));
    figures.insert(
        format!("fraction_of_{control_name}"),
        json!((rate / control * 100.0).round() / 100.0),
    );
}

/// W7: `args.slow_tasks` tasks whose handler sleeps 50 ms, drained by 10
/// agents of 64 slots: the rate against the ideal (slots ÷ 50 ms) and the
/// CPU this process spent per second of leases held.
pub(super) async fn w7(args: &BenchArgs, servers: &Servers) -> anyhow::Result<Figures> {
    const AGENTS: usize = 10;
    const SLOTS: u32 = 64;
    const SLEEP: Duration = Duration::from_millis(50);
    let tasks = args.slow_tasks;
    let probe = Arc::new(Probe::default());
    let bar = progress(args, tasks as u64, "W7 enqueue");
    enqueue_batched(servers, SLOW_TYPE, tasks, args.batch_size, &bar).await?;
    bar.finish_and_clear();
    // Timed from before the agents connect: they start work as each one
    // registers.
    let before = Usage::now();
    let started = Instant::now();
    let agents = Agents::start(servers, AGENTS, SLOTS, &probe).await?;
    let bar = progress(args, tasks as u64, "W7 process (50 ms each)");
    wait_ran(&probe, tasks, &bar).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = Usage::now().cpu - before.cpu;
    bar.finish_and_clear();
    agents.stop().await;
    let ideal = f64::from(SLOTS) * AGENTS as f64 / SLEEP.as_secs_f64();
    let rate = tasks as f64 / elapsed;
    let lease_seconds = tasks as f64 * SLEEP.as_secs_f64();
    let mut figures = Figures::new();
    figures.insert("tasks".into(), json!(tasks));
    figures.insert("agents".into(), json!(AGENTS));
    figures.insert("slots_per_agent".into(), json!(SLOTS));
    figures.insert("processed_per_sec".into(), json!(rate.round()));
    figures.insert("ideal_per_sec".into(), json!(ideal.round()));
    figures.insert(
        "fraction_of_ideal".into(),
        json!((rate / ideal * 100.0).round() / 100.0),
    );
    figures.insert(
        "cpu_ms_per_lease_second".into(),
        json!((cpu.as_secs_f64() * 1000.0 / lease_seconds * 10.0).round() / 10.0),
    );
    insert_counts(&mut figures, &probe, tasks);
    Ok(figures)
}

/// W8: 64 clients, each calling `EnqueueTask` one task at a time for
/// `args.duration`: accepted enqueues per second and each call's latency.
/// The same clients calling the health check, which does nothing, for as
/// long just before are the floor it is compared with: what one gRPC call
/// over its own connection costs on this machine, clients included.
pub(super) async fn w8(args: &BenchArgs, servers: &Servers) -> anyhow::Result<Figures> {
    const PRODUCERS: usize = 64;
    let mut health_checks = Vec::new();
    for _ in 0..PRODUCERS {
        let health = HealthClient::new(servers.channel().await?);
        health_checks.push(move || {
            let mut health = health.clone();
            async move {
                health.check(HealthCheckRequest::default()).await?;
                Ok(())
            }
        });
    }
    let floor = call_repeatedly(health_checks, args.duration).await?;
    let mut producers = Vec::new();
    for _ in 0..PRODUCERS {
        let client = servers.client().await?;
        producers.push(move || {
            let client = client.clone();
            async move {
                client.enqueue_task(noop(PRODUCERS_TYPE)).await?;
                Ok(())
            }
        });
    }
    let enqueues = call_repeatedly(producers, args.duration).await?;
    let mut figures = Figures::new();
    figures.insert("producers".into(), json!(PRODUCERS));
    figures.insert("accepted".into(), json!(enqueues.calls()));
    figures.insert("accepted_per_sec".into(), json!(enqueues.per_sec().round()));
    figures.insert("floor_calls_per_sec".into(), json!(floor.per_sec().round()));
    figures.insert(
        "fraction_of_floor".into(),
        json!((enqueues.per_sec() / floor.per_sec() * 100.0).round() / 100.0),
    );
    for (prefix, calls) in [("call_", &enqueues), ("floor_call_", &floor)] {
        for (name, p) in [("p50_ms", 50.0), ("p99_ms", 99.0)] {
            figures.insert(
                format!("{prefix}{name}"),
                json!((percentile(&calls.latencies_ms, p) * 1000.0).round() / 1000.0),
            );
        }
    }
    Ok(figures)
}

/// The calls of [`call_repeatedly`]: each one's latency, sorted.
struct Calls {
    latencies_ms: Vec<f64>,
    elapsed: Duration,
}

impl Calls {
    fn calls(&self) -> usize {
        self.latencies_ms.len()
    }

    fn per_sec(&self) -> f64 {
        self.calls() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs each of `clients` (each on its own connection) making its call
/// one after another for `duration`, all at once.
async fn call_repeatedly<F, Fut>(clients: Vec<F>, duration: Duration) -> anyhow::Result<Calls>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let until = Instant::now() + duration;
    let started = Instant::now();
    let mut workers = Vec::new();
    for mut call in clients {
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let began = Instant::now();
                call().await?;
                latencies.push(began.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies_ms = Vec::new();
    for worker in workers {
        latencies_ms.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    latencies_ms.sort_by(f64::total_cmp);
    Ok(Calls {
        latencies_ms,
        elapsed,
    })
}

/// W9: `args.idle_agents` agents connected to a server of their own
/// process, each on its own connection, idle and heartbeating at the
/// default lease for `args.idle_window`: the server's resident memory per
/// agent and its CPU in that window.
pub(super) async fn w9(args: &BenchArgs, database_url: &str) -> anyhow::Result<Figures> {
    let server = ServerProcess::start(database_url).await?;
    let servers = Servers {
        urls: vec![server.url.clone()],
        options: Default::default(),
    };
    let before = server.usage()?;
    let probe = Arc::new(Probe::default());
    let agents = Agents::start(&servers, args.idle_agents, 16, &probe).await?;
    let connected = server.usage()?;
    tokio::time::sleep(args.idle_window).await;
    let after = server.usage()?;
    agents.stop().await;
    server.stop().await;
    let agents = args.idle_agents.max(1) as f64;
    let window = args.idle_window.as_secs_f64();
    let mut figures = Figures::new();
    figures.insert("idle_agents".into(), json!(args.idle_agents));
    figures.insert("window_secs".into(), json!(window));
    figures.insert(
        "server_rss_mib_without_agents".into(),
        json!(mib(before.rss_bytes)),
    );
    figures.insert(
        "server_rss_mib_with_agents".into(),
        json!(mib(after.rss_bytes)),
    );
    figures.insert(
        "server_kib_per_agent".into(),
        json!((after.rss_bytes.saturating_sub(before.rss_bytes) as f64 / 1024.0 / agents).round()),
    );
    let busy = (after.cpu - connected.cpu).as_secs_f64();
    figures.insert(
        "server_cpu_percent_of_one_core".into(),
        json!((busy / window * 1000.0).round() / 10.0),
    );
    Ok(figures)
}

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0
}

/// A `taskplane serve` child process on a free loopback port.
struct ServerProcess {
    child: tokio::process::Child,
    url: String,
}

/// A reading of a process's resident memory and CPU time.
struct ProcessUsage {
    rss_bytes: u64,
    cpu: Duration,
}

impl ServerProcess {
    async fn start(database_url: &str) -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                database_url,
            ])
            .env("TASKPLANE_LOG_FORMAT", "text")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await??
            .unwrap_or_default();
        let address = line
            .strip_prefix("taskplane listening on ")
            .ok_or_else(|| anyhow::anyhow!("the W9 server did not start: {line:?}"))?;
        let url = format!("http://{address}");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ServerProcess { child, url })
    }

    /// The child's resident memory and CPU time so far, from `/proc`.
    fn usage(&self) -> anyhow::Result<ProcessUsage> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("the W9 server exited"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmRSS for the W9 server"))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command's closing parenthesis: utime and stime
        // are the 12th and 13th, in clock ticks.
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 = fields
            .get(11..13)
            .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat"))?
            .iter()
            .map(|field| field.parse::<u64>().unwrap_or(0))
            .sum();
        // SAFETY: `sysconf` reads a constant of the system.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok(ProcessUsage {
            rss_bytes: rss_kib * 1024,
            cpu: Duration::from_millis(ticks * 1000 / ticks_per_second),
        })
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// What one workload measured.
pub(super) type Figures = serde_json::Map<String, Value>;

/// Lost and duplicated runs of `expected` tasks.
pub(super) fn insert_counts(figures: &mut Figures, probe: &Probe, expected: usize) {
    figures.insert("lost".into(), json!(expected - probe.distinct()));
    figures.insert("duplicated".into(), json!(probe.duplicates()));
}
