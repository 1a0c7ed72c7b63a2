//! `taskplane.v1.TaskService`: enqueue tasks and follow them.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use taskplane_proto::trace::{TRACEPARENT, TraceParent};
use taskplane_proto::v1::task_service_server::TaskService;
use taskplane_proto::v1::{
    ActivityMinute, BulkTasksRequest, BulkTasksResponse, CancelTaskRequest, EnqueueTaskRequest,
    EnqueueTaskResponse, EnqueueTasksRequest, EnqueueTasksResponse, GetQueueStatsRequest,
    GetQueueStatsResponse, GetRecentActivityRequest, GetRecentActivityResponse, GetTaskRequest,
    ListTaskAttemptsRequest, ListTaskAttemptsResponse, ListTasksRequest, ListTasksResponse,
    RetryTaskRequest, Task as ProtoTask, TaskTypeStats, TypeActivity, WatchTaskRequest,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::api::convert::{
    new_task, proto_attempt, proto_task, task_filter, task_id, task_selector, timestamp,
};
use crate::auth::{Principal, check_domain, principal};
use crate::engine::bulk::BulkAction;
use crate::engine::plane::ControlPlane;
use crate::engine::routing;
use crate::error::{Error, Result};
use crate::model::{Enqueued, NewTask, Task, TaskStatus};
use crate::store::unregistered;

/// The default and the largest page of `ListTasks`.
const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 500;
/// How often a watcher re-reads its task even without a notice (changes made
/// by other replicas arrive this way).
const WATCH_REFRESH: Duration = Duration::from_secs(1);

/// Serves `TaskService`.
pub struct TaskApi {
    plane: Arc<ControlPlane>,
}

impl TaskApi {
    /// Serves the given control plane.
    pub fn new(plane: Arc<ControlPlane>) -> Self {
        TaskApi { plane }
    }

    async fn load(&self, id: Uuid) -> Result<Task> {
        self.plane.store.get_task(id).await?.ok_or_else(|| {
            Error::NotFound(format!(
                "no task has id {id}: check the id returned by EnqueueTask"
            ))
        })
    }

    /// Loads a task the caller may see: one of its token's domains.
    async fn load_visible(&self, id: Uuid, principal: Option<&Principal>) -> Result<Task, Status> {
        let task = self.load(id).await?;
        match principal {
            Some(principal) if !principal.domains.allows(&task.domain) => {
                tracing::warn!(token = %principal.token_id, name = %principal.name, task_id = %id, "denied: task outside the token's domains");
                Err(Error::PermissionDenied(
                    "this token may not act on this task: its domain is outside the token's scope"
                        .into(),
                )
                .into())
            }
            _ => Ok(task),
        }
    }

    /// Checks that a scoped caller may act on a task the operation loads
    /// by itself; an unscoped caller costs no read.
    async fn check_visible(&self, id: Uuid, principal: Option<&Principal>) -> Result<(), Status> {
        if principal.is_some_and(Principal::is_scoped) {
            self.load_visible(id, principal).await?;
        }
        Ok(())
    }

    /// Checks a caller's quota and domain scope for tasks of these types.
    async fn check_enqueue<'a>(
        &self,
        principal: Option<&Principal>,
        task_types: impl Iterator<Item = &'a str>,
        count: usize,
    ) -> Result<(), Status> {
        self.plane.quotas.charge_enqueue(principal, count)?;
        if !principal.is_some_and(Principal::is_scoped) {
            return Ok(());
        }
        let task_types: std::collections::BTreeSet<&str> = task_types.collect();
        for task_type in task_types {
            // An unregistered type is refused by the store with its own message.
            if let Some(registered) = self.plane.store.get_task_type(task_type).await? {
                check_domain(principal, &registered.domain, "enqueue tasks")?;
            }
        }
        Ok(())
    }

    /// Checks that every parent the tasks name exists and is in the
    /// caller's scope.
    async fn check_parents(
        &self,
        tasks: &[NewTask],
        principal: Option<&Principal>,
    ) -> Result<(), Status> {
        let parents: std::collections::BTreeSet<Uuid> =
            tasks.iter().filter_map(|t| t.parent_id).collect();
        for parent in parents {
            match self.plane.store.get_task(parent).await? {
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "parent_id {parent} names no task: pass the id of the task this one follows from"
                    ))
                    .into());
                }
                Some(task) => check_domain(principal, &task.domain, "follow up tasks")?,
            }
        }
        Ok(())
    }

    /// Checks that a scoped token's listing names (directly or through a
    /// task type) a domain the token holds.
    /// Runs a bulk operation on the tasks the request selects, within the
    /// caller's domains.
    async fn bulk(
        &self,
        request: Request<BulkTasksRequest>,
        action: BulkAction,
        allowed: &[TaskStatus],
        verb: &str,
    ) -> Result<Response<BulkTasksResponse>, Status> {
        let principal = principal(&request);
        let request = request.into_inner();
        let selector = task_selector(request.selector.as_ref(), allowed, verb)?;
        let domain = self
            .plane
            .store
            .get_task_type(&selector.task_type)
            .await?
            .ok_or_else(|| unregistered(&selector.task_type))?
            .domain;
        check_domain(principal.as_ref(), &domain, &format!("{verb} tasks"))?;
        let outcome = self.plane.bulk(&action, &selector, request.dry_run).await?;
        tracing::info!(
            ?selector,
            action = verb,
            dry_run = request.dry_run,
            matched = outcome.matched,
            changed = outcome.changed,
            "bulk operation"
        );
        Ok(Response::new(BulkTasksResponse {
            matched: outcome.matched,
            changed: outcome.changed,
            batches: outcome.batches,
        }))
    }

    async fn check_listing(
        &self,
        principal: Option<&Principal>,
        domain: &str,
        task_type: &str,
    ) -> Result<(), Status> {
        let domain = match (domain, task_type) {
            ("", "") => None,
            ("", task_type) => self
                .plane
                .store
                .get_task_type(task_type)
                .await?
                .map(|t| t.domain),
            (domain, _) => Some(domain.to_owned()),
        };
        match (principal, &domain) {
            (Some(principal), None) if principal.is_scoped() => {
                Err(Error::PermissionDenied(format!(
                    "this token may read only domains {}: pass one of them as `domain`",
                    principal.domains.to_list().join(", ")
                ))
                .into())
            }
            (_, Some(domain)) => check_domain(principal, domain, "read tasks"),
            _ => Ok(()),
        }
    }
}

/// Keeps the caller's W3C trace context (the `traceparent` header) in each
/// task's metadata, unless the task names its own; returns it for the span.
fn carry_trace(
    metadata: &tonic::metadata::MetadataMap,
    tasks: &mut [NewTask],
) -> Option<TraceParent> {
    let trace = metadata
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceParent::parse)?;
    for task in tasks {
        task.metadata
            .entry(TRACEPARENT.to_owned())
            .or_insert_with(|| trace.to_string());
    }
    Some(trace)
}

/// The span of one enqueue call: its trace id, if the caller sent one.
fn enqueue_span(trace: Option<&TraceParent>, tasks: usize) -> tracing::Span {
    let span = tracing::info_span!(
        "enqueue",
        tasks,
        task_id = tracing::field::Empty,
        trace_id = tracing::field::Empty
    );
    if let Some(trace) = trace {
        span.record("trace_id", trace.trace_id.as_str());
    }
    span
}

fn enqueue_response(enqueued: Enqueued) -> EnqueueTaskResponse {
    EnqueueTaskResponse {
        task: Some(proto_task(&enqueued.task)),
        created: enqueued.created,
    }
}

type TaskStream = Pin<Box<dyn Stream<Item = Result<ProtoTask, Status>> + Send>>;

#[tonic::async_trait]
impl TaskService for TaskApi {
    async fn enqueue_task(
        &self,
        request: Request<EnqueueTaskRequest>,
    ) -> Result<Response<EnqueueTaskResponse>, Status> {
        let principal = principal(&request);
        let (metadata, _, request) = request.into_parts();
        self.check_enqueue(
            principal.as_ref(),
            std::iter::once(request.task_type.as_str()),
            1,
        )
        .await?;
        let mut tasks = vec![new_task(request, &self.plane.config, None)?];
        self.check_parents(&tasks, principal.as_ref()).await?;
        let trace = carry_trace(&metadata, &mut tasks);
        async {
            let enqueued = self.plane.enqueue(tasks).await?;
            let enqueued = enqueued
                .into_iter()
                .next()
                .expect("one task in, one task out");
            tracing::Span::current().record("task_id", tracing::field::display(enqueued.task.id));
            tracing::debug!(task_id = %enqueued.task.id, task_type = %enqueued.task.task_type, created = enqueued.created, "enqueued");
            Ok(Response::new(enqueue_response(enqueued)))
        }
        .instrument(enqueue_span(trace.as_ref(), 1))
        .await
    }

    async fn enqueue_tasks(
        &self,
        request: Request<EnqueueTasksRequest>,
    ) -> Result<Response<EnqueueTasksResponse>, Status> {
        let principal = principal(&request);
        let (metadata, _, request) = request.into_parts();
        let requests = request.tasks;
        if requests.is_empty() {
            return Err(
                Error::InvalidArgument("tasks is empty: send at least one task".into()).into(),
            );
        }
        let limit = self.plane.config.max_batch_size;
        if requests.len() > limit {
            return Err(Error::InvalidArgument(format!(
                "{} tasks in one batch; the limit is {limit}: split the batch",
                requests.len()
            ))
            .into());
        }
        self.check_enqueue(
            principal.as_ref(),
            requests.iter().map(|r| r.task_type.as_str()),
            requests.len(),
        )
        .await?;
        let mut tasks = requests
            .into_iter()
            .enumerate()
            .map(|(i, r)| new_task(r, &self.plane.config, Some(i)))
            .collect::<Result<Vec<_>>>()?;
        self.check_parents(&tasks, principal.as_ref()).await?;
        let trace = carry_trace(&metadata, &mut tasks);
        let span = enqueue_span(trace.as_ref(), tasks.len());
        async {
            let enqueued = self.plane.enqueue(tasks).await?;
            tracing::debug!(tasks = enqueued.len(), "enqueued batch");
            Ok(Response::new(EnqueueTasksResponse {
                results: enqueued.into_iter().map(enqueue_response).collect(),
            }))
        }
        .instrument(span)
        .await
    }

    async fn get_task(
        &self,
        request: Request<GetTaskRequest>,
    ) -> Result<Response<ProtoTask>, Status> {
        let principal = principal(&request);
        let id = task_id(&request.into_inner().id)?;
        let task = self.load_visible(id, principal.as_ref()).await?;
        let mut answer = proto_task(&task);
        let now = chrono::Utc::now();
        if let Some(start_by) = task
            .start_by
            .filter(|at| task.status == TaskStatus::Pending && *at <= now)
        {
            answer.waiting_for = format!(
                "its start_by {} has passed: no claim takes it, and it ends EXPIRED within a poll interval",
                start_by.to_rfc3339()
            );
        } else if task.status == TaskStatus::Pending && task.run_at <= now {
            let live = self.plane.live_sessions().await?;
            let held = self.plane.held_by_flow(&task).await?;
            answer.waiting_for = held
                .or_else(|| routing::waiting_for(&task, &live))
                .unwrap_or_default();
        }
        Ok(Response::new(answer))
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let principal = principal(&request);
        let request = request.into_inner();
        self.check_listing(principal.as_ref(), &request.domain, &request.task_type)
            .await?;
        let limit = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let filter = task_filter(request, limit)?;
        let tasks = self.plane.store.list_tasks(&filter).await?;
        let next_page_token = match tasks.last() {
            Some(last) if tasks.len() as u32 == limit => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(ListTasksResponse {
            tasks: tasks.iter().map(proto_task).collect(),
            next_page_token,
        }))
    }

    async fn cancel_task(
        &self,
        request: Request<CancelTaskRequest>,
    ) -> Result<Response<ProtoTask>, Status> {
        let principal = principal(&request);
        let request = request.into_inner();
        let id = task_id(&request.id)?;
        self.check_visible(id, principal.as_ref()).await?;
        let reason = match request.reason.as_str() {
            "" => "cancelled by a client".to_owned(),
            reason => reason.to_owned(),
        };
        let task = self.plane.cancel(id, &reason).await?;
        tracing::info!(task_id = %id, "cancelled");
        Ok(Response::new(proto_task(&task)))
    }

    async fn retry_task(
        &self,
        request: Request<RetryTaskRequest>,
    ) -> Result<Response<ProtoTask>, Status> {
        let principal = principal(&request);
        let id = task_id(&request.into_inner().id)?;
        self.check_visible(id, principal.as_ref()).await?;
        let task = self.plane.retry(id).await?;
        tracing::info!(task_id = %id, "retried");
        Ok(Response::new(proto_task(&task)))
    }

    async fn retry_tasks(
        &self,
        request: Request<BulkTasksRequest>,
    ) -> Result<Response<BulkTasksResponse>, Status> {
        let allowed = [TaskStatus::Dead, TaskStatus::Cancelled, TaskStatus::Expired];
        self.bulk(request, BulkAction::Retry, &allowed, "retry")
            .await
    }

    async fn cancel_tasks(
        &self,
        request: Request<BulkTasksRequest>,
    ) -> Result<Response<BulkTasksResponse>, Status> {
        let reason = match request.get_ref().reason.as_str() {
            "" => "cancelled in bulk".to_owned(),
            reason => reason.to_owned(),
        };
        let allowed = [TaskStatus::Pending, TaskStatus::Running];
        self.bulk(request, BulkAction::Cancel(reason), &allowed, "cancel")
            .await
    }

    async fn purge_tasks(
        &self,
        request: Request<BulkTasksRequest>,
    ) -> Result<Response<BulkTasksResponse>, Status> {
        let allowed = [
            TaskStatus::Dead,
            TaskStatus::Cancelled,
            TaskStatus::Expired,
            TaskStatus::Completed,
        ];
        self.bulk(request, BulkAction::Purge, &allowed, "purge")
            .await
    }

    async fn list_task_attempts(
        &self,
        request: Request<ListTaskAttemptsRequest>,
    ) -> Result<Response<ListTaskAttemptsResponse>, Status> {
        let principal = principal(&request);
        let id = task_id(&request.into_inner().id)?;
        self.load_visible(id, principal.as_ref()).await?;
        let attempts = self.plane.store.list_attempts(id).await?;
        Ok(Response::new(ListTaskAttemptsResponse {
            attempts: attempts.iter().map(proto_attempt).collect(),
        }))
    }

    async fn get_queue_stats(
        &self,
        request: Request<GetQueueStatsRequest>,
    ) -> Result<Response<GetQueueStatsResponse>, Status> {
        let principal = principal(&request);
        let domain = request.into_inner().domain;
        self.check_listing(principal.as_ref(), &domain, "").await?;
        let since = chrono::Utc::now() - crate::maintenance::task_counts::RECENT_WINDOW;
        let stats = self
            .plane
            .store
            .queue_stats(Some(domain.as_str()).filter(|d| !d.is_empty()), since)
            .await?;
        let count = |stats: &crate::model::TypeStats, status: TaskStatus| {
            stats.by_status.get(status.as_str()).copied().unwrap_or(0)
        };
        let task_types = stats
            .iter()
            .map(|s| TaskTypeStats {
                task_type: s.task_type.clone(),
                domain: s.domain.clone(),
                pending: count(s, TaskStatus::Pending),
                running: count(s, TaskStatus::Running),
                completed: count(s, TaskStatus::Completed),
                dead: count(s, TaskStatus::Dead),
                cancelled: count(s, TaskStatus::Cancelled),
                expired: count(s, TaskStatus::Expired),
                completed_last_minute: s.completed_recently,
                dead_last_minute: s.dead_recently,
            })
            .collect();
        Ok(Response::new(GetQueueStatsResponse { task_types }))
    }

    async fn get_recent_activity(
        &self,
        request: Request<GetRecentActivityRequest>,
    ) -> Result<Response<GetRecentActivityResponse>, Status> {
        let principal = principal(&request);
        let domain = request.into_inner().domain;
        self.check_listing(principal.as_ref(), &domain, "").await?;
        let domains: std::collections::HashMap<String, String> = self
            .plane
            .store
            .list_task_types(Some(domain.as_str()).filter(|d| !d.is_empty()))
            .await?
            .into_iter()
            .map(|t| (t.task_type, t.domain))
            .collect();
        let task_types = self
            .plane
            .metrics
            .activity()
            .last_hour(chrono::Utc::now())
            .into_iter()
            .filter_map(|(task_type, minutes)| {
                let domain = domains.get(&task_type)?.clone();
                let minutes = minutes
                    .iter()
                    .map(|minute| ActivityMinute {
                        start: Some(timestamp(minute.start())),
                        dispatched: minute.dispatched,
                        completed: minute.completed,
                        failed: minute.failed,
                        dead: minute.dead,
                        dispatch_latency_mean_ms: minute.latency_mean_ms(),
                        dispatch_latency_max_ms: minute.latency_max_ms,
                    })
                    .collect();
                Some(TypeActivity {
                    task_type,
                    domain,
                    minutes,
                })
            })
            .collect();
        Ok(Response::new(GetRecentActivityResponse { task_types }))
    }

    type WatchTaskStream = TaskStream;

    async fn watch_task(
        &self,
        request: Request<WatchTaskRequest>,
    ) -> Result<Response<TaskStream>, Status> {
        let principal = principal(&request);
        let id = task_id(&request.into_inner().id)?;
        // Subscribe before the first read so no change falls between them.
        let mut notices = self.plane.events.subscribe();
        let first = self.load_visible(id, principal.as_ref()).await?;
        let store = self.plane.store.clone();
        let shutdown = self.plane.shutdown.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        self.plane.tasks.spawn(async move {
            let mut last = first;
            if sender.send(Ok(proto_task(&last))).await.is_err() {
                return;
            }
            while !last.status.is_terminal() {
                tokio::select! {
                    notice = notices.recv() => match notice {
                        Ok(changed) if changed != id => continue,
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    () = tokio::time::sleep(WATCH_REFRESH) => {}
                    () = sender.closed() => return,
                    () = shutdown.cancelled() => {
                        let _ = sender.send(Err(Error::Unavailable("the server is shutting down: watch again".into()).into())).await;
                        return;
                    }
                }
                let current = match store.get_task(id).await {
                    Ok(Some(task)) => task,
                    Ok(None) => return,
                    Err(error) => {
                        let _ = sender.send(Err(error.into())).await;
                        return;
                    }
                };
                if current != last {
                    if sender.send(Ok(proto_task(&current))).await.is_err() {
                        return;
                    }
                    last = current;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}
