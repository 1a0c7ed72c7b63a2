//! The benchmark's agent: no-op handlers that record, per task id, how many
//! times they ran and when they first started, and per agent how many runs
//! it made. W7's handler sleeps 50 ms instead of returning at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use taskplane_agent::{
    DomainRegistry, TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult,
};

/// The task type every workload processes.
pub const NOOP_TYPE: &str = "bench_noop";
/// The task type of W3's backlog, which no agent serves.
pub const BACKLOG_TYPE: &str = "bench_backlog";
/// W7's task type: its handler sleeps [`SLOW_HANDLER`].
pub const SLOW_TYPE: &str = "bench_slow";
/// How long W7's handler sleeps.
pub const SLOW_HANDLER: Duration = Duration::from_millis(50);
/// W8's task type, which no agent serves.
pub const PRODUCERS_TYPE: &str = "bench_producers";
/// How many task types W6's agent serves.
pub const MANY_TYPES: usize = 1000;

/// The `index`th of W6's task types.
pub fn many_type(index: usize) -> String {
    format!("bench_type_{index:04}")
}

/// Executions seen by the benchmark's handlers.
#[derive(Default)]
pub struct Probe {
    runs: Mutex<HashMap<String, (u32, Instant)>>,
    per_agent: Mutex<HashMap<usize, u64>>,
}

impl Probe {
    fn record(&self, task_id: &str, agent: usize) {
        let now = Instant::now();
        self.runs
            .lock()
            .expect("probe lock")
            .entry(task_id.to_owned())
            .and_modify(|(count, _)| *count += 1)
            .or_insert((1, now));
        *self
            .per_agent
            .lock()
            .expect("probe lock")
            .entry(agent)
            .or_default() += 1;
    }

    /// Runs made by each of the first `agents` agents, in agent order.
    pub fn runs_per_agent(&self, agents: usize) -> Vec<u64> {
        let per_agent = self.per_agent.lock().expect("probe lock");
        (0..agents)
            .map(|agent| per_agent.get(&agent).copied().unwrap_or(0))
            .collect()
    }

    /// How many distinct tasks ran.
    pub fn distinct(&self) -> usize {
        self.runs.lock().expect("probe lock").len()
    }

    /// Runs beyond the first, summed over tasks.
    pub fn duplicates(&self) -> u64 {
        self.runs
            .lock()
            .expect("probe lock")
            .values()
            .map(|(count, _)| u64::from(count - 1))
            .sum()
    }

    /// When a task first started.
    pub fn started(&self, task_id: &str) -> Option<Instant> {
        self.runs
            .lock()
            .expect("probe lock")
            .get(task_id)
            .map(|(_, at)| *at)
    }

    /// Forgets everything seen.
    pub fn reset(&self) {
        self.runs.lock().expect("probe lock").clear();
        self.per_agent.lock().expect("probe lock").clear();
    }
}

/// Records the run as agent `agent`'s, after sleeping `sleep` if any.
struct NoOp {
    probe: Arc<Probe>,
    agent: usize,
    sleep: Option<Duration>,
}

#[async_trait]
impl TaskHandler for NoOp {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        if let Some(sleep) = self.sleep {
            tokio::time::sleep(sleep).await;
        }
        self.probe.record(&context.task_id, self.agent);
        Ok(TaskResult::empty())
    }
}

/// Which task types a bench agent serves.
#[derive(Debug, Clone, Copy)]
pub enum Serves {
    /// The no-op type and W7's slow type (domain `bench`).
    Bench,
    /// W6's [`MANY_TYPES`] types (domain `bench_many`).
    ManyTypes,
}

struct BenchDomain {
    probe: Arc<Probe>,
    agent: usize,
    serves: Serves,
}

impl DomainRegistry for BenchDomain {
    fn register_handlers(&self, registry: &mut TaskRegistry) -> Vec<String> {
        let handler = |sleep| {
            Box::new(NoOp {
                probe: self.probe.clone(),
                agent: self.agent,
                sleep,
            })
        };
        let types: Vec<(String, Option<Duration>)> = match self.serves {
            Serves::Bench => vec![
                (NOOP_TYPE.to_owned(), None),
                (SLOW_TYPE.to_owned(), Some(SLOW_HANDLER)),
            ],
            Serves::ManyTypes => (0..MANY_TYPES).map(|i| (many_type(i), None)).collect(),
        };
        for (task_type, sleep) in &types {
            registry.register_handler(task_type, handler(*sleep));
        }
        types.into_iter().map(|(task_type, _)| task_type).collect()
    }

    fn domain_name(&self) -> &'static str {
        match self.serves {
            Serves::Bench => "bench",
            Serves::ManyTypes => "bench_many",
        }
    }
}

/// The registry of agent number `agent`, serving `serves` into `probe`.
pub fn registry(probe: &Arc<Probe>, agent: usize, serves: Serves) -> TaskRegistry {
    let domain = BenchDomain {
        probe: probe.clone(),
        agent,
        serves,
    };
    let mut registry = TaskRegistry::new();
    let name = domain.domain_name();
    registry.register_domain(name, Box::new(domain));
    registry
}
