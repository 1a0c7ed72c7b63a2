//! The agent runtime: connect to the control plane, register the registry's
//! task types, run assignments with bounded concurrency, heartbeat, reconnect
//! with backoff, and drain on shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use taskplane_proto::v1::agent_message::Message as AgentMessageKind;
use taskplane_proto::v1::agent_service_client::AgentServiceClient;

use crate::concurrency::{Concurrency, check_slots};
use crate::flow::FlowLimits;
use crate::follow_up::FollowUps;
use taskplane_proto::v1::server_message::Message as ServerMessageKind;
use taskplane_proto::v1::{
    AgentMessage, Credit, DomainRegistration, Drain, HandlerHealth, Heartbeat, Register,
    Registered, TaskTypeRegistration,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::metrics::AgentMetrics;
use crate::registry::{RegistryError, RegistryHealthStatus, TaskRegistry};
use crate::schedule::Schedule;
use crate::work::{Launcher, Work};
use taskplane_common::ConnectOptions;

/// The server agents connect to when none is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Where an agent's connection to the control plane stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not registered: connecting, or waiting to reconnect.
    Connecting,
    /// Registered on a stream; tasks can arrive.
    Registered {
        /// The server's id of this stream.
        session_id: String,
    },
    /// Stopped for good (drained, or refused).
    Stopped,
}

/// Why an agent stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The registry has problems (duplicates, bad names, no handlers).
    #[error("the task registry is not valid: {}", join(.0))]
    Registry(Vec<RegistryError>),
    /// The server address cannot be used.
    #[error(
        "server address '{0}' is not a valid URL: use e.g. http://127.0.0.1:50051 (several, comma-separated)"
    )]
    BadServerAddress(String),
    /// The token or TLS settings cannot be used.
    #[error("{0}")]
    BadConnectOptions(String),
    /// The server refused the registration (bad name, domain conflict, denied).
    #[error("the server refused the registration: {0}")]
    Refused(tonic::Status),
    /// More slots than the server accepts for one agent.
    #[error(
        "{0} slots is more than one agent may have ({max}); run several agents instead",
        max = taskplane_proto::limits::MAX_CONCURRENCY
    )]
    TooManySlots(u32),
    /// No server could be registered with for as long as
    /// [`AgentBuilder::give_up_after`] allows.
    #[error("gave up after {after:?} without reaching a control plane; the last error: {last}")]
    Unreachable {
        /// How long the agent tried.
        after: Duration,
        /// Why the last attempt failed.
        last: String,
    },
}

fn join(errors: &[RegistryError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Builds an [`Agent`].
pub struct AgentBuilder {
    registry: Option<TaskRegistry>,
    servers: Vec<String>,
    name: String,
    max_concurrency: u32,
    prefetch: Option<u32>,
    labels: BTreeMap<String, String>,
    reconnect_min: Duration,
    reconnect_max: Duration,
    drain_grace: Duration,
    connect_options: ConnectOptions,
    give_up_after: Option<Duration>,
}

/// Assignments queued per slot unless [`AgentBuilder::prefetch`] says
/// otherwise.
pub const DEFAULT_PREFETCH_PER_SLOT: u32 = 8;

impl AgentBuilder {
    /// Stop with [`AgentError::Unreachable`] when no server could be
    /// registered with for this long, at start or after losing one (default:
    /// keep trying forever, with a warning on every attempt).
    pub fn give_up_after(mut self, after: Duration) -> Self {
        self.give_up_after = Some(after);
        self
    }

    /// The token and TLS settings (default: none, plaintext).
    pub fn connect_options(mut self, options: ConnectOptions) -> Self {
        self.connect_options = options;
        self
    }

    /// The handlers to serve (required).
    pub fn registry(mut self, registry: TaskRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The control plane's URL (default [`DEFAULT_SERVER`]); a
    /// comma-separated list names several replicas (see [`AgentBuilder::servers`]).
    pub fn server(self, url: impl AsRef<str>) -> Self {
        self.servers([url])
    }

    /// Several control-plane replicas: the agent connects to the first it
    /// can reach and moves on to the next whenever a connection fails or is
    /// lost. A comma-separated list is accepted too.
    pub fn servers<S: AsRef<str>>(mut self, urls: impl IntoIterator<Item = S>) -> Self {
        self.servers = urls
            .into_iter()
            .flat_map(|url| {
                url.as_ref()
                    .split(',')
                    .map(|u| u.trim().to_owned())
                    .collect::<Vec<_>>()
            })
            .filter(|url| !url.is_empty())
            .collect();
        self
    }

    /// The agent's name as operators see it (default `taskplane-agent`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many tasks run at once (default 16).
    pub fn max_concurrency(mut self, slots: u32) -> Self {
        self.max_concurrency = slots.max(1);
        self
    }

    /// How many assignments may wait here beyond the running ones, so that
    /// a handler that returns starts the next task at once instead of
    /// waiting for a round trip to the server (default
    /// [`DEFAULT_PREFETCH_PER_SLOT`] per slot; the server accepts up to
    /// 1024). The server fills only as much of it as the handlers finish
    /// while it claims more: handlers that run long get no queue, so their
    /// tasks never wait here while another agent could run them. 0 turns
    /// it off.
    pub fn prefetch(mut self, assignments: u32) -> Self {
        self.prefetch = Some(assignments);
        self
    }

    /// A label sent at registration (e.g. `zone=eu-1`).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The first and the longest wait between reconnection attempts
    /// (default 100 ms and 10 s; the wait doubles after each failure).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max.max(min);
        self
    }

    /// How long running tasks may take to finish after shutdown begins (default 30 s).
    pub fn drain_grace(mut self, grace: Duration) -> Self {
        self.drain_grace = grace;
        self
    }

    /// Checks the registry and builds the agent.
    pub fn build(self) -> Result<Agent, AgentError> {
        let registry = self.registry.unwrap_or_default();
        registry.check().map_err(AgentError::Registry)?;
        if self.servers.is_empty() {
            return Err(AgentError::BadServerAddress(String::new()));
        }
        for server in &self.servers {
            tonic::transport::Endpoint::from_shared(server.clone())
                .map_err(|_| AgentError::BadServerAddress(server.clone()))?;
            self.connect_options
                .endpoint(server)
                .map_err(|e| AgentError::BadConnectOptions(e.to_string()))?;
        }
        self.connect_options
            .bearer()
            .map_err(|e| AgentError::BadConnectOptions(e.to_string()))?;
        Ok(Agent {
            registry: Arc::new(registry),
            servers: self.servers,
            next_server: AtomicUsize::new(0),
            name: self.name,
            concurrency: Concurrency::new(check_slots(self.max_concurrency)?),
            prefetch: self.prefetch.unwrap_or(
                self.max_concurrency
                    .saturating_mul(DEFAULT_PREFETCH_PER_SLOT),
            ),
            labels: self.labels,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            drain_grace: self.drain_grace,
            connect_options: self.connect_options,
            give_up_after: self.give_up_after,
            metrics: Arc::new(AgentMetrics::default()),
            state: watch::channel(ConnectionState::Connecting).0,
        })
    }
}

/// A worker process's connection to the control plane.
pub struct Agent {
    registry: Arc<TaskRegistry>,
    servers: Vec<String>,
    next_server: AtomicUsize,
    name: String,
    concurrency: Concurrency,
    prefetch: u32,
    labels: BTreeMap<String, String>,
    reconnect_min: Duration,
    reconnect_max: Duration,
    drain_grace: Duration,
    connect_options: ConnectOptions,
    give_up_after: Option<Duration>,
    metrics: Arc<AgentMetrics>,
    state: watch::Sender<ConnectionState>,
}

/// The largest assignment the agent accepts. The server refuses at enqueue a
/// task too large to deliver within its own message limit, so this only
/// needs to be at least that limit.
const MAX_ASSIGNMENT_BYTES: usize = 64 * 1024 * 1024;

/// The message limit of servers that do not say theirs (gRPC's default).
const OLDER_SERVERS_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// How long registering on a server may take before the agent tries the
/// next one: a frozen server accepts connections and then says nothing.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Tells the server the agent's slots changed to `slots`. A closed stream
/// needs no telling: the next registration carries them.
async fn send_credit(outbound: &mpsc::Sender<AgentMessage>, slots: u32) {
    let credit = AgentMessageKind::Credit(Credit { slots });
    let _ = outbound
        .send(AgentMessage {
            message: Some(credit),
        })
        .await;
}

/// How long the server of a session may be silent before the agent leaves
/// it: a lease less one heartbeat interval, so that the agent stops its
/// handlers before the server's leases on them can run out (at least two
/// heartbeat intervals, since each heartbeat is answered).
fn silence_limit(registered: &Registered, heartbeat_every: Duration) -> Duration {
    let lease = registered
        .lease_duration
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or(3 * heartbeat_every);
    lease
        .saturating_sub(heartbeat_every)
        .max(2 * heartbeat_every)
}

/// How one connection ended.
enum SessionEnd {
    /// Shutdown was asked for and the agent drained.
    Drained,
    /// The stream broke after registering; reconnect at once.
    Lost(String),
}

impl Agent {
    /// Starts building an agent.
    pub fn builder() -> AgentBuilder {
        AgentBuilder {
            registry: None,
            servers: vec![DEFAULT_SERVER.to_owned()],
            name: "taskplane-agent".to_owned(),
            max_concurrency: 16,
            prefetch: None,
            labels: BTreeMap::new(),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            drain_grace: Duration::from_secs(30),
            connect_options: ConnectOptions::default(),
            give_up_after: None,
        }
    }

    /// The agent's metrics (tasks in flight, handler durations and errors),
    /// for a scrape endpoint.
    pub fn metrics(&self) -> Arc<AgentMetrics> {
        self.metrics.clone()
    }

    /// A handle to the agent's slots, to change how many tasks it runs at
    /// once while it runs (see [`Concurrency`]).
    pub fn concurrency(&self) -> Concurrency {
        self.concurrency.clone()
    }

    /// Follows the connection's state, e.g. to report readiness or to wait
    /// until the agent has registered.
    pub fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    /// Serves until `shutdown` resolves, reconnecting with backoff whenever the
    /// stream breaks. On shutdown it sends `drain`, lets running tasks finish
    /// (up to the drain grace) and reports them. Returns an error only when
    /// the server refuses the registration.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), AgentError> {
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        let state = self.state.clone();
        let run = async move {
            let mut delay = self.reconnect_min;
            let mut unregistered_since = tokio::time::Instant::now();
            loop {
                if stop.is_cancelled() {
                    return Ok(());
                }
                match self.serve_once(&stop).await {
                    Ok(SessionEnd::Drained) => return Ok(()),
                    Ok(SessionEnd::Lost(reason)) => {
                        self.state.send_replace(ConnectionState::Connecting);
                        tracing::warn!(%reason, "lost the control plane; reconnecting");
                        self.next_server.fetch_add(1, Ordering::Relaxed);
                        delay = self.reconnect_min;
                        unregistered_since = tokio::time::Instant::now();
                    }
                    Err(ConnectError::Refused(status)) => return Err(AgentError::Refused(status)),
                    Err(ConnectError::Unreachable(reason)) => {
                        let server = self.current_server();
                        if let Some(after) = self.give_up_after
                            && unregistered_since.elapsed() >= after
                        {
                            tracing::error!(%server, %reason, ?after, "giving up: no control plane could be reached");
                            return Err(AgentError::Unreachable {
                                after,
                                last: reason,
                            });
                        }
                        tracing::warn!(%server, %reason, retry_in_ms = delay.as_millis() as u64, "cannot reach the control plane");
                        self.next_server.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return Ok(()),
                }
                delay = (delay * 2).min(self.reconnect_max);
            }
        };
        tokio::pin!(run);
        tokio::pin!(shutdown);
        let result = tokio::select! {
            result = &mut run => result,
            () = &mut shutdown => {
                stopper.cancel();
                run.await
            }
        };
        state.send_replace(ConnectionState::Stopped);
        result
    }

    fn register_message(&self) -> AgentMessage {
        let domains = self
            .registry
            .task_types_by_domain()
            .into_iter()
            .map(|(domain, handlers)| DomainRegistration {
                schedules: self
                    .registry
                    .schedules_of(&domain)
                    .into_iter()
                    .map(Schedule::to_spec)
                    .collect(),
                domain,
                task_types: handlers
                    .into_iter()
                    .map(|info| TaskTypeRegistration {
                        task_type: info.task_type,
                        description: info.description,
                        versions: info.versions,
                        capabilities: info.capabilities,
                        flow: info.flow.as_ref().map(FlowLimits::to_proto),
                    })
                    .collect(),
            })
            .collect();
        AgentMessage {
            message: Some(AgentMessageKind::Register(Register {
                agent_name: self.name.clone(),
                domains,
                max_concurrency: self.concurrency.get(),
                labels: self.labels.clone().into_iter().collect(),
                feature_flags: self
                    .registry
                    .feature_flags()
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
                max_prefetch: self.prefetch,
            })),
        }
    }

    fn current_server(&self) -> &str {
        &self.servers[self.next_server.load(Ordering::Relaxed) % self.servers.len()]
    }

    /// Connects to the current server, sends `register` and waits for
    /// `registered`: the session's outbound queue, its inbound stream and
    /// the server's answer.
    async fn open_session(&self) -> Result<OpenSession, ConnectError> {
        // A frozen server accepts the TCP connection and then says nothing.
        tokio::time::timeout(REGISTRATION_TIMEOUT, self.register_on_current_server())
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError::Unreachable(format!(
                    "no answer to `register` within {REGISTRATION_TIMEOUT:?}"
                )))
            })
    }

    async fn register_on_current_server(&self) -> Result<OpenSession, ConnectError> {
        let channel = self
            .connect_options
            .connect(self.current_server())
            .await
            .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
        let follow_ups = FollowUps::new(channel.clone());
        let mut client =
            AgentServiceClient::new(channel).max_decoding_message_size(MAX_ASSIGNMENT_BYTES);
        let (outbound, receiver) =
            mpsc::channel::<AgentMessage>((self.concurrency.get() + self.prefetch) as usize + 16);
        outbound
            .try_send(self.register_message())
            .expect("a new channel has room");
        let mut inbound = client
            .connect(ReceiverStream::new(receiver))
            .await
            .map_err(ConnectError::from_status)?
            .into_inner();
        let first = inbound.message().await.map_err(ConnectError::from_status)?;
        match first.and_then(|message| message.message) {
            Some(ServerMessageKind::Registered(registered)) => {
                Ok((outbound, inbound, registered, follow_ups))
            }
            Some(_) => Err(ConnectError::Unreachable(
                "the server did not answer `registered` first".into(),
            )),
            None => Err(ConnectError::Unreachable(
                "the server closed the stream before `registered`".into(),
            )),
        }
    }

    /// One connection: register, then serve until the stream ends or shutdown.
    async fn serve_once(&self, stop: &CancellationToken) -> Result<SessionEnd, ConnectError> {
        // Slots changed from here on reach this session as `credit`; the
        // registration carries them as they are when it is sent.
        let mut slots = self.concurrency.subscribe();
        slots.mark_unchanged();
        let (outbound, mut inbound, registered, follow_ups) = self.open_session().await?;
        let heartbeat_every = registered
            .heartbeat_interval
            .and_then(|d| Duration::try_from(d).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(10));
        let silence_limit = silence_limit(&registered, heartbeat_every);
        let max_message_bytes = usize::try_from(registered.max_message_bytes)
            .ok()
            .filter(|&bytes| bytes > 0)
            .unwrap_or(OLDER_SERVERS_MAX_MESSAGE_BYTES);
        let mut last_heard = tokio::time::Instant::now();
        tracing::info!(session_id = %registered.session_id, task_types = self.registry.handler_count(), "registered with the control plane");
        self.state.send_replace(ConnectionState::Registered {
            session_id: registered.session_id.clone(),
        });

        if *slots.borrow() == 0 {
            // A registration gets at least one slot: pause again at once.
            send_credit(&outbound, 0).await;
        }
        let mut work = Work::new(
            *slots.borrow(),
            Launcher {
                registry: self.registry.clone(),
                metrics: self.metrics.clone(),
                outbound: outbound.clone(),
                max_message_bytes,
                follow_ups,
            },
        );
        let mut heartbeats: JoinSet<()> = JoinSet::new();
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        heartbeat.tick().await;
        loop {
            let give_back_at = work.give_back_at();
            tokio::select! {
                message = inbound.message() => {
                    let message = match message {
                        Ok(Some(message)) => message,
                        Ok(None) => return Ok(SessionEnd::Lost("the server closed the stream".into())),
                        Err(status) => return Ok(SessionEnd::Lost(status.to_string())),
                    };
                    last_heard = tokio::time::Instant::now();
                    match message.message {
                        Some(ServerMessageKind::Assignment(assignment)) => work.assign(assignment),
                        Some(ServerMessageKind::Cancel(cancel)) => {
                            if work.cancel(&cancel.task_id) {
                                tracing::info!(task_id = %cancel.task_id, reason = %cancel.reason, "cancelling task");
                            }
                        }
                        Some(ServerMessageKind::Registered(_) | ServerMessageKind::HeartbeatAck(_)) | None => {}
                    }
                }
                () = tokio::time::sleep_until(last_heard + silence_limit) => {
                    // Frozen or partitioned: the server's leases on what runs
                    // here are running out, and another server may already be
                    // waiting with work. Leaving drops the running handlers.
                    return Ok(SessionEnd::Lost(format!(
                        "the server was silent for {silence_limit:?}, longer than a lease less one heartbeat interval"
                    )));
                }
                Some(()) = work.next_finished() => {}
                Ok(()) = slots.changed() => {
                    let slots = *slots.borrow_and_update();
                    work.set_slots(slots);
                    send_credit(&outbound, slots).await;
                }
                () = sleep_until_some(give_back_at), if give_back_at.is_some() => {
                    work.give_back_if_stuck().await;
                }
                _ = heartbeat.tick() => {
                    // One heartbeat in flight at a time: handler self-checks
                    // run off the loop, bounded to half the interval.
                    while heartbeats.try_join_next().is_some() {}
                    if heartbeats.is_empty() {
                        let running_task_ids = work.running_task_ids();
                        heartbeats.spawn(send_heartbeat(self.registry.clone(), running_task_ids, heartbeat_every / 2, outbound.clone()));
                    }
                }
                () = stop.cancelled() => {
                    self.drain(outbound, inbound, work).await;
                    return Ok(SessionEnd::Drained);
                }
            }
        }
    }

    /// Asks for no new work, lets running and queued tasks finish within
    /// the grace period (cancelling the rest), reports them, then closes
    /// the stream.
    async fn drain(
        &self,
        outbound: mpsc::Sender<AgentMessage>,
        mut inbound: tonic::Streaming<taskplane_proto::v1::ServerMessage>,
        work: Work,
    ) {
        tracing::info!(tasks = work.len(), "draining");
        let _ = outbound
            .send(AgentMessage {
                message: Some(AgentMessageKind::Drain(Drain {})),
            })
            .await;
        work.finish(self.drain_grace).await;
        // Half-close, then read until the server has seen everything and ends the stream.
        drop(outbound);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
        tracing::info!("drained");
    }
}

/// Sleeps until `deadline`; forever when there is none.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// An agent session as `registered` opened it: its outbound queue, its
/// inbound stream, the server's answer, and its handlers' way to enqueue
/// follow-ups over the same connection.
type OpenSession = (
    mpsc::Sender<AgentMessage>,
    tonic::Streaming<taskplane_proto::v1::ServerMessage>,
    taskplane_proto::v1::Registered,
    FollowUps,
);

enum ConnectError {
    Refused(tonic::Status),
    Unreachable(String),
}

impl ConnectError {
    fn from_status(status: tonic::Status) -> Self {
        match status.code() {
            tonic::Code::InvalidArgument
            | tonic::Code::AlreadyExists
            | tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
            | tonic::Code::FailedPrecondition => ConnectError::Refused(status),
            _ => ConnectError::Unreachable(status.to_string()),
        }
    }
}

/// Runs the handlers' self-checks (up to `budget`) and sends a heartbeat
/// naming the running tasks.
async fn send_heartbeat(
    registry: Arc<TaskRegistry>,
    running_task_ids: Vec<String>,
    budget: Duration,
    outbound: mpsc::Sender<AgentMessage>,
) {
    let health = tokio::time::timeout(budget, registry.health_check())
        .await
        .unwrap_or_else(|_| {
            tracing::warn!(
                budget_ms = budget.as_millis() as u64,
                "handler health checks ran past their budget; sending none"
            );
            RegistryHealthStatus::default()
        });
    let handler_health = health
        .handlers
        .into_iter()
        .map(|(task_type, health)| HandlerHealth {
            task_type,
            healthy: health.healthy,
            message: health.message,
        })
        .collect();
    let beat = Heartbeat {
        running_task_ids,
        handler_health,
    };
    // A closed stream is noticed by the session loop.
    let _ = outbound
        .send(AgentMessage {
            message: Some(AgentMessageKind::Heartbeat(beat)),
        })
        .await;
}
