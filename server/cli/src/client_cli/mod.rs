//! The `taskplane` client subcommands: enqueue and follow tasks, inspect
//! task types, domains and agents — talking to a server like any client.
//! Human tables by default, `--output json` for scripts; errors print the
//! gRPC status in words and exit non-zero.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use taskplane_agent::ConnectOptions;
use taskplane_common::{AuthChannel, ConnectError};
pub(crate) mod output;
mod schedule_cli;

pub(crate) use output::say;
use output::{TASK_COLUMNS, print, print_task, status_name, task_json, time, type_json};
pub use schedule_cli::{ScheduleCommand, schedule};
use taskplane_client::{
    Client, Error as ClientLibraryError, NewTask, Task, TaskFilter, TraceParent,
};
use taskplane_proto::v1::registry_service_client::RegistryServiceClient;
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use taskplane_proto::v1::{
    BulkTasksRequest, BulkTasksResponse, DrainAgentRequest, GetQueueStatsRequest,
    GetTaskTypeRequest, HandlerInfo, ListAgentsRequest, ListDomainsRequest,
    ListTaskAttemptsRequest, ListTaskTypesRequest, RegisterTaskTypeRequest,
    SetTaskTypePolicyRequest, TaskSelector, TaskStatus, ValidateTaskTypeRequest,
};
use tokio_stream::StreamExt as _;

/// Where the server is and how to print.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The control plane.
    #[arg(
        long,
        global = true,
        env = "TASKPLANE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// How answers are printed.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: Output,
    /// The token and TLS settings.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The token and TLS settings for reaching a server that checks tokens or
/// serves TLS.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The bearer token, for servers that check tokens.
    #[arg(long, global = true, env = "TASKPLANE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The CA that signed the server's certificate (PEM), for https:// servers.
    #[arg(long, global = true, env = "TASKPLANE_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// This client's certificate (PEM), for servers that require mutual TLS.
    #[arg(long, global = true, env = "TASKPLANE_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, global = true, env = "TASKPLANE_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl ConnectArgs {
    /// These settings as the agent SDK takes them.
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions {
            token: self.token.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
        }
    }
}

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts (the API's own field names).
    Json,
}

/// A progress report as a bar, e.g. `[########------------]  40% reading`.
fn progress_bar(fraction: f64, message: &str) -> String {
    const WIDTH: usize = 20;
    let fraction = fraction.clamp(0.0, 1.0);
    let done = (fraction * WIDTH as f64).round() as usize;
    format!(
        "[{}{}] {:>3.0}% {message}",
        "#".repeat(done),
        "-".repeat(WIDTH - done),
        fraction * 100.0
    )
}

/// `taskplane enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The task type, e.g. welcome_email.
    pub task_type: String,
    /// The payload, a JSON object.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// Higher runs first.
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    /// Run no earlier than this RFC 3339 time.
    #[arg(long, conflicts_with = "delay")]
    pub run_at: Option<String>,
    /// Run no earlier than this long from now, e.g. 10m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Option<Duration>,
    /// Start by this RFC 3339 time or never: a task no agent has started
    /// by then ends EXPIRED.
    #[arg(long, conflicts_with = "start_within")]
    pub start_by: Option<String>,
    /// Start within this long from now (e.g. 10m) or never: a task no agent
    /// has started by then ends EXPIRED.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub start_within: Option<Duration>,
    /// Enqueueing the same key again returns the existing task.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// How long the key holds, e.g. 10m: past it, the same key makes a new
    /// task ("unique for 10 minutes").
    #[arg(long, value_parser = humantime::parse_duration, requires = "idempotency_key")]
    pub idempotency_window: Option<std::time::Duration>,
    /// Attempts before the task is DEAD (default: the type's).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// The handler version to run it, e.g. v2 (default: the agent's choice).
    #[arg(long)]
    pub handler_version: Option<String>,
    /// Metadata for the task, KEY=VALUE (repeatable).
    #[arg(long = "metadata", value_parser = key_value)]
    pub metadata: Vec<(String, String)>,
    /// Run it only on an agent with this label, KEY=VALUE (repeatable;
    /// agents set theirs with TASKPLANE_LABELS).
    #[arg(long = "require-label", value_parser = key_value)]
    pub required_labels: Vec<(String, String)>,
    /// Follow the task until it finishes; exit 1 unless it COMPLETED.
    #[arg(long)]
    pub wait: bool,
    /// A W3C trace context (`00-<trace id>-<span id>-<flags>`) to carry to
    /// the handler, e.g. $TRACEPARENT from a calling script.
    #[arg(long, env = "TRACEPARENT")]
    pub traceparent: Option<String>,
}

/// `taskplane task …`.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Shows one task.
    Get {
        /// The task id.
        id: String,
    },
    /// Lists tasks, newest first.
    List {
        /// Only this task type.
        #[arg(long = "type")]
        task_type: Option<String>,
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Only this status: pending, running, completed, dead, cancelled,
        /// expired.
        #[arg(long)]
        status: Option<String>,
        /// Only tasks created within this long, e.g. 2h.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// Only tasks whose last error contains this text.
        #[arg(long)]
        error: Option<String>,
        /// Only the follow-ups of this task (its id).
        #[arg(long)]
        parent: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Cancels a pending or running task, or with --type every one a
    /// selection matches (in batches; --dry-run counts them first).
    Cancel {
        /// The task id (or select tasks with --type …).
        id: Option<String>,
        /// Why, recorded as the task's error.
        #[arg(long, default_value = "")]
        reason: String,
        /// Which tasks, instead of an id.
        #[command(flatten)]
        selection: Selection,
    },
    /// Puts a dead, cancelled or expired task back in the queue, or with --type
    /// every one a selection matches (in batches; --dry-run counts them
    /// first).
    Retry {
        /// The task id (or select tasks with --type …).
        id: Option<String>,
        /// Which tasks, instead of an id.
        #[command(flatten)]
        selection: Selection,
    },
    /// Deletes every finished task a selection matches, with its attempts
    /// (admin; in batches; --dry-run counts them first).
    Purge {
        /// Which tasks, instead of an id.
        #[command(flatten)]
        selection: Selection,
    },
    /// Prints the task each time it changes, until it finishes.
    Watch {
        /// The task id.
        id: String,
    },
    /// Lists every attempt of a task.
    Attempts {
        /// The task id.
        id: String,
    },
}

/// Which tasks a bulk `task retry|cancel|purge` takes.
#[derive(Debug, Args)]
pub struct Selection {
    /// Tasks of this type (required for a bulk operation).
    #[arg(long = "type")]
    pub task_type: Option<String>,
    /// Tasks in this status (retry: dead by default; cancel and purge:
    /// required).
    #[arg(long)]
    pub status: Option<String>,
    /// Tasks created within this long, e.g. 2h.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Tasks whose last error contains this text.
    #[arg(long)]
    pub error: Option<String>,
    /// Count the tasks and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl Selection {
    /// True when any selection option was given.
    fn given(&self) -> bool {
        self.task_type.is_some()
            || self.status.is_some()
            || self.since.is_some()
            || self.error.is_some()
            || self.dry_run
    }

    /// The bulk request these options make.
    fn request(self, reason: String) -> Result<BulkTasksRequest, ClientError> {
        let task_type = self.task_type.ok_or_else(|| {
            ClientError::Usage(
                "give a task id, or select tasks with --type (and --status, --since, --error)"
                    .into(),
            )
        })?;
        let created_after = self
            .since
            .map(created_within)
            .transpose()?
            .map(|at| prost_types::Timestamp::from(std::time::SystemTime::from(at)));
        Ok(BulkTasksRequest {
            selector: Some(TaskSelector {
                task_type,
                status: status_arg(self.status)? as i32,
                created_after,
                error_contains: self.error.unwrap_or_default(),
                ..Default::default()
            }),
            dry_run: self.dry_run,
            reason,
        })
    }
}

/// The instant `--since` names: that long ago.
fn created_within(since: Duration) -> Result<chrono::DateTime<chrono::Utc>, ClientError> {
    chrono::Duration::from_std(since)
        .ok()
        .and_then(|since| chrono::Utc::now().checked_sub_signed(since))
        .ok_or_else(|| {
            ClientError::Usage(format!(
                "--since {}: too long ago; give a span such as 2h or 30days",
                humantime::format_duration(since)
            ))
        })
}

/// An instant given as an RFC 3339 time (`option`'s value) or as a span
/// from now.
fn instant_arg(
    option: &str,
    at: Option<&str>,
    from_now: Option<Duration>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ClientError> {
    Ok(match (at, from_now) {
        (Some(at), _) => Some(
            chrono::DateTime::parse_from_rfc3339(at)
                .map_err(|e| {
                    ClientError::Usage(format!(
                        "{option} {at}: {e}; give an RFC 3339 time such as 2026-12-07T18:00:00Z"
                    ))
                })?
                .to_utc(),
        ),
        (None, Some(span)) => Some(chrono::Utc::now() + span),
        (None, None) => None,
    })
}

/// A `--status` option's value.
fn status_arg(status: Option<String>) -> Result<TaskStatus, ClientError> {
    let Some(name) = status else {
        return Ok(TaskStatus::Unspecified);
    };
    TaskStatus::from_str_name(&format!("TASK_STATUS_{}", name.to_uppercase())).ok_or_else(|| {
        ClientError::Usage(format!(
            "--status {name}: use pending, running, completed, dead, cancelled or expired"
        ))
    })
}

/// `taskplane types …`.
#[derive(Debug, Subcommand)]
pub enum TypesCommand {
    /// Lists the registered task types.
    List {
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Shows one task type, its live agents and their health checks.
    Get {
        /// The task type.
        task_type: String,
    },
    /// Says whether a task type (and a version of it) can be enqueued;
    /// exits 1 when it cannot, saying why.
    Validate {
        /// The task type.
        task_type: String,
        /// Also require this handler version, e.g. v2.
        #[arg(long)]
        version: Option<String>,
    },
    /// Registers a task type ahead of any agent.
    Register {
        /// The task type.
        task_type: String,
        /// Its domain.
        #[arg(long)]
        domain: String,
        /// What it does.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Limits how many tasks of a type run at once (admin). Each option
    /// given replaces that limit; 0 (or an empty key) removes it.
    Set {
        /// The task type.
        task_type: String,
        /// At most this many running at once, across all agents and replicas.
        #[arg(long)]
        max_running: Option<u32>,
        /// What groups tasks for --max-running-per-key: a path into the
        /// payload or metadata, e.g. payload.customer_id or metadata.tenant.
        #[arg(long)]
        concurrency_key: Option<String>,
        /// At most this many running at once per key.
        #[arg(long)]
        max_running_per_key: Option<u32>,
        /// At most N starts per second, minute or hour, e.g. 20/second
        /// (an empty value removes it).
        #[arg(long)]
        rate_limit: Option<String>,
        /// Keep --rate-limit per value of this key (a path as for
        /// --concurrency-key): each key may start that many per window.
        #[arg(long)]
        rate_limit_key: Option<String>,
    },
    /// Pauses a type (admin): nothing new is delivered, what runs
    /// finishes, enqueues are still accepted (unless --refuse-enqueues).
    Pause {
        /// The task type.
        task_type: String,
        /// Refuse new tasks of the type while it is paused, instead of
        /// queueing them.
        #[arg(long)]
        refuse_enqueues: bool,
    },
    /// Resumes a paused type (admin).
    Resume {
        /// The task type.
        task_type: String,
    },
}

impl From<ClientLibraryError> for ClientError {
    /// The library's error as the CLI prints it: the gRPC status in words,
    /// as for the calls the CLI makes itself.
    fn from(error: ClientLibraryError) -> Self {
        use tonic::Code;
        let status =
            |code: Code, message: String| ClientError::Status(tonic::Status::new(code, message));
        match error {
            ClientLibraryError::InvalidRequest(message) => status(Code::InvalidArgument, message),
            ClientLibraryError::Refused(message) => status(Code::FailedPrecondition, message),
            ClientLibraryError::NotFound(message) => status(Code::NotFound, message),
            ClientLibraryError::Unauthenticated(message) => status(Code::Unauthenticated, message),
            ClientLibraryError::PermissionDenied(message) => {
                status(Code::PermissionDenied, message)
            }
            ClientLibraryError::Throttled(message) => status(Code::ResourceExhausted, message),
            ClientLibraryError::Unavailable(message) => status(Code::Unavailable, message),
            ClientLibraryError::Server(answer) => ClientError::Status(answer),
            ClientLibraryError::Config(reason) => ClientError::Usage(reason),
            timeout @ ClientLibraryError::Timeout(_) => ClientError::Usage(timeout.to_string()),
        }
    }
}

/// A client failure, printed with its gRPC status in words.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] tonic::Status),
    /// The server could not be reached.
    #[error("cannot reach the control plane at {0}: {1}")]
    Unreachable(String, String),
    /// The command line was wrong.
    #[error("{0}")]
    Usage(String),
    /// A watched task ended without completing: its id, status and last error.
    #[error("task {0} ended {1}: {2}")]
    Unfinished(String, String, String),
    /// A task type cannot be enqueued.
    #[error("task type {0} cannot be enqueued: {1}")]
    Invalid(String, String),
}

fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
        .chars()
        .fold(String::new(), |mut name, c| {
            if c.is_uppercase() && !name.is_empty() {
                name.push('_');
            }
            name.push(c.to_ascii_uppercase());
            name
        })
}

async fn channel(args: &ClientArgs) -> Result<AuthChannel, ClientError> {
    let options = args.connect.options();
    options.connect(&args.server).await.map_err(|e| match e {
        ConnectError::Setup(reason) => ClientError::Usage(reason),
        ConnectError::Unreachable(server, reason) => ClientError::Unreachable(server, reason),
    })
}

/// `--metadata KEY=VALUE`.
fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("'{text}' is not KEY=VALUE"))
}

/// `--payload`: a JSON object.
fn parse_payload(text: &str) -> Result<serde_json::Map<String, Value>, ClientError> {
    match serde_json::from_str(text) {
        Ok(Value::Object(payload)) => Ok(payload),
        Ok(_) => Err(ClientError::Usage(
            "--payload must be a JSON object, e.g. '{\"user_id\": 7}'".into(),
        )),
        Err(e) => Err(ClientError::Usage(format!("--payload is not JSON: {e}"))),
    }
}

/// The generated client of `TaskService`, for what the client library does
/// not cover (bulk operations, attempts).
async fn tasks_client(args: &ClientArgs) -> Result<TaskServiceClient<AuthChannel>, ClientError> {
    Ok(TaskServiceClient::new(channel(args).await?))
}

/// The client library's connection to `--server`, with the token and TLS
/// settings given.
async fn client(args: &ClientArgs) -> Result<Client, ClientError> {
    Client::builder()
        .server(args.server.clone())
        .connect_options(args.connect.options())
        .connect()
        .await
        .map_err(|error| match error {
            ClientLibraryError::Unavailable(reason) => {
                ClientError::Unreachable(args.server.clone(), reason)
            }
            other => other.into(),
        })
}

async fn watch(client: &Client, id: &str, output: Output) -> Result<Task, ClientError> {
    let mut states = client.watch(id).await?;
    let mut last = None;
    while let Some(task) = states.next().await {
        let task = task?;
        if output == Output::Table {
            let progress = task
                .progress
                .as_ref()
                .filter(|_| task.status == TaskStatus::Running)
                .map(|p| format!("  {}", progress_bar(p.fraction, &p.message)))
                .unwrap_or_default();
            eprintln!(
                "{}  {}  attempt {}/{}{progress}",
                task.id,
                status_name(task.status as i32),
                task.attempts,
                task.max_attempts
            );
        }
        last = Some(task);
    }
    last.ok_or_else(|| ClientError::Usage(format!("task {id} was not found")))
}

/// `taskplane enqueue`.
pub async fn enqueue(args: &ClientArgs, enqueue: EnqueueArgs) -> Result<(), ClientError> {
    let task = new_task(enqueue.task_type.clone(), &enqueue)?;
    let client = client(args).await?;
    let task = client.enqueue_task(task).await?.task;
    if !enqueue.wait {
        print_task(args.output, &task);
        return Ok(());
    }
    let done = watch(&client, &task.id, args.output).await?;
    print_task(args.output, &done);
    match done.status {
        TaskStatus::Completed => Ok(()),
        status => Err(ClientError::Unfinished(
            done.id.clone(),
            status_name(status as i32),
            done.last_error.clone().unwrap_or_default(),
        )),
    }
}

/// The task `taskplane enqueue` asks for, its options checked.
fn new_task(task_type: String, enqueue: &EnqueueArgs) -> Result<NewTask, ClientError> {
    let payload = parse_payload(&enqueue.payload)?;
    let mut task = NewTask::new(task_type, Value::Object(payload)).priority(enqueue.priority);
    if let Some(at) = instant_arg("--run-at", enqueue.run_at.as_deref(), enqueue.delay)? {
        task = task.run_at(at);
    }
    if let Some(at) = instant_arg(
        "--start-by",
        enqueue.start_by.as_deref(),
        enqueue.start_within,
    )? {
        task = task.start_by(at);
    }
    if let Some(key) = &enqueue.idempotency_key {
        task = task.idempotency_key(key);
    }
    if let Some(window) = enqueue.idempotency_window {
        task = task.idempotency_window(window);
    }
    if let Some(attempts) = enqueue.max_attempts {
        task = task.max_attempts(attempts);
    }
    if let Some(version) = &enqueue.handler_version {
        task = task.version(version);
    }
    for (key, value) in &enqueue.metadata {
        task = task.metadata(key, value);
    }
    for (key, value) in &enqueue.required_labels {
        task = task.require_label(key, value);
    }
    if let Some(value) = &enqueue.traceparent {
        let trace = TraceParent::parse(value).ok_or_else(|| {
            ClientError::Usage(format!(
                "--traceparent '{value}' is not a W3C trace context: 00-<32 hex>-<16 hex>-<2 hex>"
            ))
        })?;
        task = task.traceparent(trace);
    }
    Ok(task)
}

/// `taskplane task …`.
pub async fn task(args: &ClientArgs, command: TaskCommand) -> Result<(), ClientError> {
    match command {
        TaskCommand::Get { id } => print_task(args.output, &client(args).await?.get(&id).await?),
        TaskCommand::List {
            task_type,
            domain,
            status,
            since,
            error,
            parent,
            limit,
        } => {
            let filter = TaskFilter {
                task_type,
                domain,
                status: Some(status_arg(status)?).filter(|s| *s != TaskStatus::Unspecified),
                limit: Some(limit),
                created_after: since.map(created_within).transpose()?,
                error_contains: error,
                parent_id: parent,
                ..TaskFilter::default()
            };
            let tasks = client(args).await?.list(&filter).await?;
            let rows: Vec<Value> = tasks.iter().map(task_json).collect();
            print(
                args.output,
                &TASK_COLUMNS,
                &rows,
                Value::Array(rows.clone()),
            );
        }
        TaskCommand::Cancel {
            id: Some(id),
            reason,
            selection,
        } => {
            one_task(&selection)?;
            print_task(
                args.output,
                &client(args).await?.cancel(&id, &reason).await?,
            );
        }
        TaskCommand::Cancel {
            id: None,
            reason,
            selection,
        } => {
            let answer = tasks_client(args)
                .await?
                .cancel_tasks(selection.request(reason)?)
                .await?;
            print_bulk(args.output, "cancel", &answer.into_inner());
        }
        TaskCommand::Retry {
            id: Some(id),
            selection,
        } => {
            one_task(&selection)?;
            print_task(args.output, &client(args).await?.retry(&id).await?);
        }
        TaskCommand::Retry {
            id: None,
            selection,
        } => {
            let answer = tasks_client(args)
                .await?
                .retry_tasks(selection.request(String::new())?)
                .await?;
            print_bulk(args.output, "retry", &answer.into_inner());
        }
        TaskCommand::Purge { selection } => {
            let answer = tasks_client(args)
                .await?
                .purge_tasks(selection.request(String::new())?)
                .await?;
            print_bulk(args.output, "purge", &answer.into_inner());
        }
        TaskCommand::Watch { id } => {
            let task = watch(&client(args).await?, &id, args.output).await?;
            print_task(args.output, &task);
        }
        TaskCommand::Attempts { id } => {
            let attempts = tasks_client(args)
                .await?
                .list_task_attempts(ListTaskAttemptsRequest { id })
                .await?
                .into_inner()
                .attempts;
            let rows: Vec<Value> = attempts
                .iter()
                .map(|a| json!({"attempt": a.attempt, "outcome": a.outcome, "started_at": time(&a.started_at), "finished_at": time(&a.finished_at), "error": a.error, "agent_id": a.agent_id}))
                .collect();
            print(
                args.output,
                &["attempt", "outcome", "started_at", "finished_at", "error"],
                &rows,
                Value::Array(rows.clone()),
            );
        }
    }
    Ok(())
}

/// `taskplane types …`.
pub async fn types(args: &ClientArgs, command: TypesCommand) -> Result<(), ClientError> {
    let mut client = RegistryServiceClient::new(channel(args).await?);
    let columns = [
        "task_type",
        "domain",
        "versions",
        "live_agents",
        "paused",
        "limits",
        "description",
    ];
    match command {
        TypesCommand::List { domain } => {
            let types = client
                .list_task_types(ListTaskTypesRequest {
                    domain: domain.unwrap_or_default(),
                })
                .await?
                .into_inner()
                .task_types;
            let rows: Vec<Value> = types.iter().map(type_json).collect();
            print(args.output, &columns, &rows, Value::Array(rows.clone()));
        }
        TypesCommand::Get { task_type } => {
            let info = client
                .get_task_type(GetTaskTypeRequest { task_type })
                .await?
                .into_inner();
            print_type(args.output, &columns, &info);
        }
        TypesCommand::Validate { task_type, version } => {
            let answer = client
                .validate_task_type(ValidateTaskTypeRequest {
                    task_type: task_type.clone(),
                    version: version.unwrap_or_default(),
                })
                .await?
                .into_inner();
            let row = json!({
                "task_type": task_type, "valid": answer.valid,
                "live_agents": answer.live_agents, "reason": answer.reason,
            });
            print(
                args.output,
                &["task_type", "valid", "live_agents", "reason"],
                std::slice::from_ref(&row),
                row.clone(),
            );
            if !answer.valid {
                return Err(ClientError::Invalid(task_type, answer.reason));
            }
        }
        TypesCommand::Register {
            task_type,
            domain,
            description,
        } => {
            let request = RegisterTaskTypeRequest {
                task_type,
                domain,
                description,
                ..Default::default()
            };
            print_type(
                args.output,
                &columns,
                &client.register_task_type(request).await?.into_inner(),
            );
        }
        TypesCommand::Set {
            task_type,
            max_running,
            concurrency_key,
            max_running_per_key,
            rate_limit,
            rate_limit_key,
        } => {
            if max_running.is_none()
                && concurrency_key.is_none()
                && max_running_per_key.is_none()
                && rate_limit.is_none()
                && rate_limit_key.is_none()
            {
                return Err(ClientError::Usage(
                    "types set changes nothing without --max-running, --concurrency-key, --max-running-per-key, --rate-limit or --rate-limit-key".into(),
                ));
            }
            let request = SetTaskTypePolicyRequest {
                task_type,
                max_running,
                concurrency_key,
                max_running_per_key,
                rate_limit,
                rate_limit_key,
                ..Default::default()
            };
            print_type(
                args.output,
                &columns,
                &client.set_task_type_policy(request).await?.into_inner(),
            );
        }
        TypesCommand::Pause {
            task_type,
            refuse_enqueues,
        } => {
            print_type(
                args.output,
                &columns,
                &set_paused(&mut client, task_type, true, refuse_enqueues).await?,
            );
        }
        TypesCommand::Resume { task_type } => {
            print_type(
                args.output,
                &columns,
                &set_paused(&mut client, task_type, false, false).await?,
            );
        }
    }
    Ok(())
}

/// Prints one task type as a row of `columns`, or as JSON.
fn print_type(output: Output, columns: &[&str], info: &HandlerInfo) {
    let row = type_json(info);
    print(output, columns, std::slice::from_ref(&row), row.clone());
}

/// Refuses selection options beside a task id.
fn one_task(selection: &Selection) -> Result<(), ClientError> {
    if selection.given() {
        return Err(ClientError::Usage(
            "give a task id or a selection (--type …), not both".into(),
        ));
    }
    Ok(())
}

/// Prints what a bulk operation matched and changed.
fn print_bulk(output: Output, action: &str, answer: &BulkTasksResponse) {
    let row = json!({
        "action": action, "matched": answer.matched, "changed": answer.changed,
        "batches": answer.batches,
    });
    print(
        output,
        &["action", "matched", "changed", "batches"],
        std::slice::from_ref(&row),
        row.clone(),
    );
}

/// Pauses (refusing enqueues or not) or resumes a task type.
async fn set_paused(
    client: &mut RegistryServiceClient<AuthChannel>,
    task_type: String,
    paused: bool,
    refuse_enqueues: bool,
) -> Result<HandlerInfo, ClientError> {
    let request = SetTaskTypePolicyRequest {
        task_type,
        paused: Some(paused),
        refuse_enqueues: Some(refuse_enqueues),
        ..Default::default()
    };
    Ok(client.set_task_type_policy(request).await?.into_inner())
}

/// `taskplane stats`: queue depth per type and status, the last minute's
/// throughput, and the schedules with their next fire times.
pub async fn stats(args: &ClientArgs, domain: Option<String>) -> Result<(), ClientError> {
    let channel = channel(args).await?;
    let mut client = TaskServiceClient::new(channel.clone());
    let domain = domain.unwrap_or_default();
    let request = GetQueueStatsRequest {
        domain: domain.clone(),
    };
    let stats = client
        .get_queue_stats(request)
        .await?
        .into_inner()
        .task_types;
    let rows: Vec<Value> = stats
        .iter()
        .map(|s| json!({"task_type": s.task_type, "domain": s.domain, "pending": s.pending, "running": s.running, "completed": s.completed, "dead": s.dead, "cancelled": s.cancelled, "expired": s.expired, "completed_per_min": s.completed_last_minute, "dead_per_min": s.dead_last_minute}))
        .collect();
    if args.output == Output::Json {
        // The rows alone, as scripts read them; `schedule list --output
        // json` has the schedules.
        print(args.output, &[], &[], Value::Array(rows));
        return Ok(());
    }
    let columns = [
        "task_type",
        "domain",
        "pending",
        "running",
        "completed",
        "dead",
        "cancelled",
        "expired",
        "completed_per_min",
        "dead_per_min",
    ];
    print(args.output, &columns, &rows, Value::Null);
    let schedules: Vec<Value> = schedule_cli::list_all(channel, domain)
        .await?
        .iter()
        .map(schedule_cli::schedule_json)
        .collect();
    if !schedules.is_empty() {
        say!("");
        print(
            args.output,
            &schedule_cli::SCHEDULE_COLUMNS,
            &schedules,
            Value::Null,
        );
    }
    Ok(())
}

/// `taskplane agents …`.
#[derive(Subcommand)]
pub enum AgentsCommand {
    /// Lists the live agents of every replica.
    List,
    /// Gives an agent no new task; it finishes what it holds (admin).
    Drain {
        /// A session id, an agent id, or an agent name (every live session
        /// of that name), as `agents list` shows them.
        agent: String,
    },
}

/// `taskplane agents list|drain`.
pub async fn agents(args: &ClientArgs, command: AgentsCommand) -> Result<(), ClientError> {
    let mut client = RegistryServiceClient::new(channel(args).await?);
    let agents = match command {
        AgentsCommand::List => {
            client
                .list_agents(ListAgentsRequest {})
                .await?
                .into_inner()
                .agents
        }
        AgentsCommand::Drain { agent } => {
            client
                .drain_agent(DrainAgentRequest { agent })
                .await?
                .into_inner()
                .agents
        }
    };
    let rows: Vec<Value> = agents
        .iter()
        .map(|a| {
            let mut labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let mut flags: Vec<String> = a.feature_flags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            flags.sort();
            let versions: Vec<String> = a
                .handler_versions
                .iter()
                .map(|v| format!("{}:{}", v.task_type, v.versions.join("+")))
                .collect();
            json!({"agent_name": a.agent_name, "session_id": a.session_id, "domains": a.domains.join(","), "running": a.running, "slots": a.max_concurrency, "labels": labels.join(","), "feature_flags": flags.join(","), "versions": versions.join(","), "draining": a.draining, "last_seen_at": time(&a.last_seen_at)})
        })
        .collect();
    print(
        args.output,
        &[
            "agent_name",
            "domains",
            "running",
            "slots",
            "labels",
            "feature_flags",
            "versions",
            "draining",
            "last_seen_at",
        ],
        &rows,
        Value::Array(rows.clone()),
    );
    Ok(())
}

/// `taskplane domains list`.
pub async fn domains(args: &ClientArgs) -> Result<(), ClientError> {
    let mut client = RegistryServiceClient::new(channel(args).await?);
    let domains = client
        .list_domains(ListDomainsRequest {})
        .await?
        .into_inner()
        .domains;
    let rows: Vec<Value> = domains
        .iter()
        .map(|d| json!({"domain": d.domain, "task_types": d.task_types.join(","), "live_agents": d.live_agents}))
        .collect();
    print(
        args.output,
        &["domain", "live_agents", "task_types"],
        &rows,
        Value::Array(rows.clone()),
    );
    Ok(())
}

/// `taskplane health`: exits 0 when the server answers SERVING (for
/// container health checks; needs no token).
pub async fn health(args: &ClientArgs) -> Result<(), ClientError> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel(args).await?);
    let status = client
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await?
        .into_inner()
        .status();
    say!("{}", status.as_str_name());
    if status == tonic_health::pb::health_check_response::ServingStatus::Serving {
        Ok(())
    } else {
        Err(ClientError::Usage(format!(
            "the server is {}",
            status.as_str_name()
        )))
    }
}
