//! [`Client`]: one connection to the control plane, shared by clones, that
//! fails over between the servers it was given.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use taskplane_common::connect::{AuthChannel, ConnectOptions};
use taskplane_proto::trace::TRACEPARENT;
use taskplane_proto::v1;
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use tokio::sync::Mutex;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Status};

use crate::error::{Error, Result};
use crate::options::{NewTask, TaskFilter};
use crate::task::{Enqueued, Task};

/// A stream of a task's states, as [`Client::watch`] returns it.
pub type TaskStream = Pin<Box<dyn Stream<Item = Result<Task>> + Send>>;

/// How long [`Client::wait`] pauses before watching again after the
/// server it watched through went away.
const REWATCH_PAUSE: Duration = Duration::from_millis(100);

/// Settings for a [`Client`]: the servers to try in order, a token and TLS
/// files — the settings an agent takes.
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    servers: Vec<String>,
    options: ConnectOptions,
}

impl ClientBuilder {
    /// Adds a server to try, e.g. `http://127.0.0.1:50051` or
    /// `https://taskplane.internal:50051`; the first that answers is used,
    /// and the next when it stops answering.
    pub fn server(mut self, url: impl Into<String>) -> Self {
        self.servers.push(url.into());
        self
    }

    /// Adds several servers, in the order to try them.
    pub fn servers(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.servers.extend(urls.into_iter().map(Into::into));
        self
    }

    /// The token sent as `authorization: Bearer <token>` on every call.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.options.token = Some(token.into());
        self
    }

    /// The CA that signed the servers' certificates (PEM), for `https://`
    /// servers not signed by a public root.
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.options.tls_ca = Some(path.into());
        self
    }

    /// This client's certificate and key (PEM), for servers that require
    /// mutual TLS.
    pub fn tls_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.options.tls_cert = Some(cert.into());
        self.options.tls_key = Some(key.into());
        self
    }

    /// Token and TLS settings as the agent and the CLI hold them.
    pub fn connect_options(mut self, options: ConnectOptions) -> Self {
        self.options = options;
        self
    }

    /// The servers of `TASKPLANE_SERVER` (comma-separated) and the token
    /// and TLS files of `TASKPLANE_TOKEN` and `TASKPLANE_TLS_*`, as the
    /// agent and the CLI read them.
    pub fn from_env() -> Self {
        let servers = std::env::var("TASKPLANE_SERVER").unwrap_or_default();
        ClientBuilder {
            servers: servers
                .split(',')
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(str::to_owned)
                .collect(),
            options: ConnectOptions::from_lookup(|name| std::env::var(name).ok()),
        }
    }

    /// Connects to the first server that answers.
    pub async fn connect(self) -> Result<Client> {
        if self.servers.is_empty() {
            return Err(Error::Config(
                "no server to connect to: give one, e.g. http://127.0.0.1:50051".into(),
            ));
        }
        let client = Client {
            inner: Arc::new(Inner {
                servers: self.servers,
                options: self.options,
                current: Mutex::new(Current::default()),
            }),
        };
        client.channel().await?;
        Ok(client)
    }
}

/// A client of the control plane. Cheap to clone; clones share one
/// connection.
///
/// A call that finds its server gone fails over: the next call goes to the
/// next server. Calls that cannot make a second task by being sent twice
/// (reads, and enqueues with an idempotency key) are sent again at once to
/// the next server; others return [`Error::Unavailable`], since the server
/// may have acted before it went.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    servers: Vec<String>,
    options: ConnectOptions,
    current: Mutex<Current>,
}

/// The server in use, and its connection once made.
#[derive(Debug, Default)]
struct Current {
    index: usize,
    channel: Option<AuthChannel>,
}

/// Whether a call may be sent again after its server went away.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Resend {
    /// Sending it twice changes nothing twice.
    Safe,
    /// The first may have acted.
    Unsafe,
}

impl Client {
    /// Connects to one server with no token or TLS files; see
    /// [`Client::builder`] for more.
    pub async fn connect(url: impl Into<String>) -> Result<Client> {
        Client::builder().server(url).connect().await
    }

    /// Settings for a client of several servers, with a token or TLS.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The URL of the server calls go to now.
    pub async fn server(&self) -> String {
        let current = self.inner.current.lock().await;
        self.inner.servers[current.index].clone()
    }

    /// Enqueues a task of `task_type` with `payload` (a JSON object) and the
    /// type's defaults.
    pub async fn enqueue(&self, task_type: &str, payload: Value) -> Result<Task> {
        Ok(self
            .enqueue_task(NewTask::new(task_type, payload))
            .await?
            .task)
    }

    /// Enqueues `task` with its options.
    pub async fn enqueue_task(&self, task: NewTask) -> Result<Enqueued> {
        let request = task.to_request()?;
        let resend = if task.is_idempotent() {
            Resend::Safe
        } else {
            Resend::Unsafe
        };
        let trace = task.trace_header();
        let answer = self
            .call(resend, |channel| {
                let mut request = tonic::Request::new(request.clone());
                if let Some(trace) = &trace {
                    request.metadata_mut().insert(TRACEPARENT, trace.clone());
                }
                async move { TaskServiceClient::new(channel).enqueue_task(request).await }
            })
            .await?;
        enqueued(answer)
    }

    /// Enqueues several tasks atomically: all or none.
    pub async fn enqueue_batch(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>> {
        let requests = tasks
            .iter()
            .map(NewTask::to_request)
            .collect::<Result<Vec<_>>>()?;
        let resend = if tasks.iter().all(NewTask::is_idempotent) {
            Resend::Safe
        } else {
            Resend::Unsafe
        };
        let answer = self
            .call(resend, |channel| {
                let request = v1::EnqueueTasksRequest {
                    tasks: requests.clone(),
                };
                async move { TaskServiceClient::new(channel).enqueue_tasks(request).await }
            })
            .await?;
        answer.results.into_iter().map(enqueued).collect()
    }

    /// The task with this id.
    pub async fn get(&self, id: &str) -> Result<Task> {
        let request = v1::GetTaskRequest { id: id.to_owned() };
        let task = self
            .call(Resend::Safe, |channel| {
                let request = request.clone();
                async move { TaskServiceClient::new(channel).get_task(request).await }
            })
            .await?;
        Ok(task.into())
    }

    /// The tasks `filter` selects, newest first (one page).
    pub async fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>> {
        let request = filter.to_request();
        let answer = self
            .call(Resend::Safe, |channel| {
                let request = request.clone();
                async move { TaskServiceClient::new(channel).list_tasks(request).await }
            })
            .await?;
        Ok(answer.tasks.into_iter().map(Task::from).collect())
    }

    /// Cancels a PENDING or RUNNING task; a running task's agent is told
    /// to stop. `reason` becomes its error.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<Task> {
        let request = v1::CancelTaskRequest {
            id: id.to_owned(),
            reason: reason.to_owned(),
        };
        let task = self
            .call(Resend::Unsafe, |channel| {
                let request = request.clone();
                async move { TaskServiceClient::new(channel).cancel_task(request).await }
            })
            .await?;
        Ok(task.into())
    }

    /// Puts a DEAD, CANCELLED or EXPIRED task back in the queue.
    pub async fn retry(&self, id: &str) -> Result<Task> {
        let request = v1::RetryTaskRequest { id: id.to_owned() };
        let task = self
            .call(Resend::Unsafe, |channel| {
                let request = request.clone();
                async move { TaskServiceClient::new(channel).retry_task(request).await }
            })
            .await?;
        Ok(task.into())
    }

    /// The task's states as they change, from its state now until it
    /// finishes.
    pub async fn watch(&self, id: &str) -> Result<TaskStream> {
        let request = v1::WatchTaskRequest { id: id.to_owned() };
        let stream = self
            .call(Resend::Safe, |channel| {
                let request = request.clone();
                async move { TaskServiceClient::new(channel).watch_task(request).await }
            })
            .await?;
        Ok(Box::pin(
            stream.map(|state| state.map(Task::from).map_err(Error::from)),
        ))
    }

    /// Waits until the task finishes, and returns it as it ended
    /// (COMPLETED, DEAD, CANCELLED or EXPIRED). After `timeout`, returns
    /// [`Error::Timeout`] with the task as last seen; the task goes on.
    /// Should its server go away, it watches again through the next.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Task> {
        let mut last: Option<Task> = None;
        let following = async {
            loop {
                let watched = async {
                    let mut states = self.watch(id).await?;
                    while let Some(state) = states.next().await {
                        let state = state?;
                        let done = state.is_finished();
                        last = Some(state);
                        if done {
                            return Ok(true);
                        }
                    }
                    Ok::<bool, Error>(false)
                };
                match watched.await {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    Err(error) if error.is_retryable() => {}
                    Err(error) => return Err(error),
                }
                tokio::time::sleep(REWATCH_PAUSE).await;
            }
        };
        match tokio::time::timeout(timeout, following).await {
            Ok(Ok(())) => Ok(last.expect("a finished task was seen")),
            Ok(Err(error)) => Err(error),
            Err(_) => match last {
                Some(task) => Err(Error::Timeout(Box::new(task))),
                None => Err(Error::Timeout(Box::new(self.get(id).await?))),
            },
        }
    }

    /// Runs `call` on the current server's connection; when the server is
    /// gone, moves to the next and, for a call safe to resend, sends it
    /// there, trying each server once.
    pub(crate) async fn call<T, F, Fut>(&self, resend: Resend, call: F) -> Result<T>
    where
        F: Fn(AuthChannel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let tries = match resend {
            Resend::Safe => self.inner.servers.len(),
            Resend::Unsafe => 1,
        };
        let mut gone = None;
        for _ in 0..tries {
            let (index, channel) = self.channel().await?;
            match call(channel).await {
                Ok(answer) => return Ok(answer.into_inner()),
                Err(status) if status.code() == Code::Unavailable => {
                    self.give_up_on(index).await;
                    gone = Some(status);
                }
                Err(status) => return Err(status.into()),
            }
        }
        Err(gone.expect("at least one server was tried").into())
    }

    /// The current server's connection, connecting to the first server
    /// that answers, from the current one on, when there is none.
    async fn channel(&self) -> Result<(usize, AuthChannel)> {
        let mut current = self.inner.current.lock().await;
        if let Some(channel) = &current.channel {
            return Ok((current.index, channel.clone()));
        }
        let servers = &self.inner.servers;
        let mut unreachable = Vec::new();
        for step in 0..servers.len() {
            let index = (current.index + step) % servers.len();
            match self.inner.options.connect(&servers[index]).await {
                Ok(channel) => {
                    current.index = index;
                    current.channel = Some(channel.clone());
                    return Ok((index, channel));
                }
                Err(taskplane_common::connect::ConnectError::Setup(reason)) => {
                    return Err(Error::Config(reason));
                }
                Err(error) => unreachable.push(error.to_string()),
            }
        }
        Err(Error::Unavailable(unreachable.join("; ")))
    }

    /// Moves on from server `index`, unless another call already did.
    async fn give_up_on(&self, index: usize) {
        let mut current = self.inner.current.lock().await;
        if current.index == index && current.channel.is_some() {
            current.channel = None;
            current.index = (index + 1) % self.inner.servers.len();
        }
    }
}

/// An enqueue's answer as the client's type.
fn enqueued(answer: v1::EnqueueTaskResponse) -> Result<Enqueued> {
    let task = answer
        .task
        .ok_or_else(|| Error::Server(Status::internal("an enqueue answered no task")))?;
    Ok(Enqueued {
        task: task.into(),
        created: answer.created,
    })
}
