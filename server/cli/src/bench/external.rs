//! W1x: W1 drained by an agent of another process, in any language:
//! `--agent-command` starts it with `TASKPLANE_SERVER`, `BENCH_TASK_TYPE`
//! and `BENCH_DOMAIN` in its environment, and it serves that no-op type
//! (e.g. the Python package's `examples/noop_agent.py`). Its handlers'
//! start times are not seen from here, so the figure is processed tasks/s
//! from the agent's start to the store's last finished task, agent
//! start-up included.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use taskplane_proto::v1::GetQueueStatsRequest;
use taskplane_proto::v1::task_service_client::TaskServiceClient;

use super::BenchArgs;
use super::harness::{Servers, enqueue_batched, progress};
use super::probe::NOOP_TYPE;
use super::scale::Figures;

/// Runs W1x (see the module doc).
pub(super) async fn w1_external(args: &BenchArgs, servers: &Servers) -> anyhow::Result<Figures> {
    let command = args.agent_command.as_deref().context(
        "w1x needs --agent-command, e.g. \"python3 agent/python/examples/noop_agent.py\"",
    )?;
    let before = finished(servers).await?;
    let bar = progress(args, args.tasks as u64, "W1x enqueue (batched)");
    let enqueue_rate =
        enqueue_batched(servers, NOOP_TYPE, args.tasks, args.batch_size, &bar).await?;
    bar.finish_and_clear();
    let started = Instant::now();
    let mut agent = AgentProcess(
        tokio::process::Command::new("sh")
            .args(["-c", command])
            .env("TASKPLANE_SERVER", &servers.urls[0])
            .env("BENCH_TASK_TYPE", NOOP_TYPE)
            .env("BENCH_DOMAIN", "bench")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start the agent `{command}`"))?,
    );
    let bar = progress(args, args.tasks as u64, "W1x process");
    let deadline = Instant::now() + Duration::from_secs(600);
    let (completed, dead) = loop {
        let (completed, dead) = finished(servers).await?;
        let done = (completed - before.0, dead - before.1);
        bar.set_position(done.0 + done.1);
        if (done.0 + done.1) as usize >= args.tasks {
            break done;
        }
        if let Some(exit) = agent.0.try_wait()? {
            anyhow::bail!("the agent `{command}` exited ({exit}) before the queue drained");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} tasks finished within 10 minutes",
            done.0 + done.1,
            args.tasks
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let processed_rate = args.tasks as f64 / started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    drop(agent);
    let mut figures = Figures::new();
    figures.insert("agent_command".into(), json!(command));
    figures.insert("tasks".into(), json!(args.tasks));
    figures.insert(
        "enqueue_batched_per_sec".into(),
        json!(enqueue_rate.round()),
    );
    figures.insert("processed_per_sec".into(), json!(processed_rate.round()));
    figures.insert("completed".into(), json!(completed));
    figures.insert("dead".into(), json!(dead));
    Ok(figures)
}

/// The no-op type's completed and dead counts.
async fn finished(servers: &Servers) -> anyhow::Result<(u64, u64)> {
    let stats = TaskServiceClient::new(servers.channel().await?)
        .get_queue_stats(GetQueueStatsRequest::default())
        .await?
        .into_inner();
    Ok(stats
        .task_types
        .iter()
        .find(|stats| stats.task_type == NOOP_TYPE)
        .map_or((0, 0), |stats| (stats.completed, stats.dead)))
}

/// The agent's shell and everything it started (its own process group),
/// stopped with SIGTERM when dropped, however the workload ends.
struct AgentProcess(tokio::process::Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .status();
        }
    }
}
