//! The console's views: overview, tasks, a task, agents and task types.
//! Each reads through the gRPC services with the session's token
//! ([`super::calls`]); a token scoped to some domains is asked about each
//! of them, and sees nothing else.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use taskplane_proto::v1::{
    AgentInfo, GetQueueStatsRequest, GetRecentActivityRequest, GetTaskRequest, HandlerInfo,
    ListAgentsRequest, ListSchedulesRequest, ListTaskAttemptsRequest, ListTaskTypesRequest,
    ListTasksRequest, Schedule, Task, TaskStatus, TaskTypeStats, TypeActivity,
};

use super::Console;
use super::calls::Caller;
use super::charts::{Series, chart};
use super::layout::{
    ConsoleError, Notice, Section, action_button, action_url, json, page, status_badge,
    status_name, time,
};
use super::sessions::Session;

/// What a page handler answers.
type Page = Result<Markup, ConsoleError>;

/// The task list's page size.
const PAGE_SIZE: u32 = 50;

/// The calls of `session`.
pub fn caller(console: &Console, session: &Session) -> Caller {
    Caller::new(console.service.clone(), session.token.clone())
}

/// The domains to ask about: one empty domain (every domain) for an
/// unscoped session, else each domain of its scope.
fn domains_of(session: &Session) -> Vec<String> {
    session.scope().unwrap_or_else(|| vec![String::new()])
}

/// `GET /`: per task type, counts by status, the last hour's throughput
/// and dispatch latency, and whether it is paused.
pub async fn overview(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
    Query(notice): Query<Notice>,
) -> Page {
    let calls = caller(&console, &session);
    let mut stats: Vec<TaskTypeStats> = Vec::new();
    let mut activity: Vec<TypeActivity> = Vec::new();
    let mut types: Vec<HandlerInfo> = Vec::new();
    for domain in domains_of(&session) {
        let request = GetQueueStatsRequest {
            domain: domain.clone(),
        };
        stats.extend(
            calls
                .tasks()
                .get_queue_stats(calls.request(request))
                .await?
                .into_inner()
                .task_types,
        );
        let request = GetRecentActivityRequest {
            domain: domain.clone(),
        };
        activity.extend(
            calls
                .tasks()
                .get_recent_activity(calls.request(request))
                .await?
                .into_inner()
                .task_types,
        );
        types.extend(task_types_in(&calls, &session, domain).await?);
    }
    // Types registered but without a task yet are listed too, at zero.
    for t in &types {
        if !stats.iter().any(|s| s.task_type == t.task_type) {
            stats.push(TaskTypeStats {
                task_type: t.task_type.clone(),
                domain: t.domain.clone(),
                ..TaskTypeStats::default()
            });
        }
    }
    stats.sort_by(|a, b| (&a.domain, &a.task_type).cmp(&(&b.domain, &b.task_type)));
    let now_minute = chrono::Utc::now().timestamp().div_euclid(60);
    let paused = |name: &str| {
        types
            .iter()
            .any(|t| t.task_type == name && t.flow.as_ref().is_some_and(|f| f.paused))
    };
    let total = |count: fn(&TaskTypeStats) -> u64| stats.iter().map(count).sum::<u64>();
    let body = html! {
        div #live data-live {
            dl.totals {
                div { dt { "Pending" } dd #total-pending { (total(|s| s.pending)) } }
                div { dt { "Running" } dd #total-running { (total(|s| s.running)) } }
                div { dt { "Completed" } dd #total-completed { (total(|s| s.completed)) } }
                div { dt { "Dead" } dd #total-dead { (total(|s| s.dead)) } }
                div { dt { "Completed, last minute" } dd { (total(|s| s.completed_last_minute)) } }
            }
            @if stats.is_empty() {
                p.muted { "No task types yet: start an agent, and the types it registers appear here." }
            } @else {
                div.scroll {
                table.grid #overview {
                    thead { tr {
                        th { "Task type" } th { "Domain" }
                        th.num { "Pending" } th.num { "Running" } th.num { "Completed" } th.num { "Dead" }
                        th.num { "Cancelled" } th.num { "Expired" }
                        th { "Completed / min, 1 h" } th { "Dispatch ms, 1 h" } th { "State" }
                    } }
                    tbody {
                        @for s in &stats {
                            @let minutes = activity.iter().find(|a| a.task_type == s.task_type).map(|a| a.minutes.as_slice()).unwrap_or(&[]);
                            tr data-type=(s.task_type) {
                                td { a href={ "/tasks?" (query(&[("task_type", &s.task_type)])) } { (s.task_type) } }
                                td { (s.domain) }
                                td.num { a href={ "/tasks?" (query(&[("task_type", &s.task_type), ("status", "PENDING")])) } { (s.pending) } }
                                td.num { (s.running) }
                                td.num { (s.completed) }
                                td.num { a href={ "/tasks?" (query(&[("task_type", &s.task_type), ("status", "DEAD")])) } { (s.dead) } }
                                td.num { (s.cancelled) }
                                td.num { (s.expired) }
                                td { (chart(minutes, now_minute, Series::Throughput)) }
                                td { (chart(minutes, now_minute, Series::DispatchLatency)) }
                                td {
                                    @if paused(&s.task_type) {
                                        span.badge.paused { "PAUSED" } " "
                                        (action_button(&format!("/types/{}/resume", s.task_type), "Resume", "/", &session))
                                    } @else {
                                        (action_button(&format!("/types/{}/pause", s.task_type), "Pause", "/", &session))
                                    }
                                }
                            }
                        }
                    }
                }
                }
                p.muted.small { "Charts show what this server replica dispatched and finished since it started, up to an hour." }
            }
        }
    };
    Ok(page("Overview", Section::Overview, &session, &notice, body))
}

/// The task list's filters, as the form and the links carry them.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct TaskQuery {
    /// Only this type.
    #[serde(default)]
    pub task_type: String,
    /// Only this domain.
    #[serde(default)]
    pub domain: String,
    /// Only this status (`PENDING`, …).
    #[serde(default)]
    pub status: String,
    /// Created at or after this UTC time (`YYYY-MM-DDTHH:MM`).
    #[serde(default)]
    pub created_after: String,
    /// Created before this UTC time.
    #[serde(default)]
    pub created_before: String,
    /// The last error contains this.
    #[serde(default)]
    pub error: String,
    /// The page token of the page to show.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub page: String,
}

impl TaskQuery {
    /// The `ListTasks` request of these filters.
    pub fn request(&self, session: &Session) -> Result<ListTasksRequest, ConsoleError> {
        let mut domain = self.domain.clone();
        if domain.is_empty()
            && self.task_type.is_empty()
            && let Some(first) = session.scope().and_then(|scope| scope.into_iter().next())
        {
            domain = first;
        }
        Ok(ListTasksRequest {
            task_type: self.task_type.clone(),
            domain,
            status: status_number(&self.status)?,
            page_size: PAGE_SIZE,
            page_token: self.page.clone(),
            created_after: utc_time("created after", &self.created_after)?,
            created_before: utc_time("created before", &self.created_before)?,
            error_contains: self.error.clone(),
            parent_id: String::new(),
        })
    }
}

/// A status name (`DEAD`) as its wire number; empty is every status.
pub fn status_number(name: &str) -> Result<i32, ConsoleError> {
    if name.is_empty() {
        return Ok(0);
    }
    TaskStatus::from_str_name(&format!("TASK_STATUS_{}", name.to_uppercase()))
        .map(|status| status as i32)
        .ok_or_else(|| {
            ConsoleError(tonic::Status::invalid_argument(format!(
                "status '{name}' is unknown: choose PENDING, RUNNING, COMPLETED, DEAD, CANCELLED or EXPIRED"
            )))
        })
}

/// A UTC time from a `datetime-local` field; empty is none.
pub fn utc_time(field: &str, text: &str) -> Result<Option<prost_types::Timestamp>, ConsoleError> {
    if text.is_empty() {
        return Ok(None);
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .map(|at| {
            let at = at.and_utc();
            Some(prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: 0,
            })
        })
        .ok_or_else(|| {
            ConsoleError(tonic::Status::invalid_argument(format!(
                "{field} '{text}' is not a time: write it as 2026-12-31T23:59 (UTC)"
            )))
        })
}

/// A query string of `pairs`.
fn query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// `GET /tasks`: tasks newest first, filtered by type, domain, status,
/// creation time and error text, a page at a time (keyset paging: each
/// page starts below the last id shown, so page 1,000 costs what page 1
/// does).
pub async fn tasks(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
    Query(filters): Query<TaskQuery>,
    Query(notice): Query<Notice>,
) -> Page {
    let calls = caller(&console, &session);
    let request = filters.request(&session)?;
    let listed = calls
        .tasks()
        .list_tasks(calls.request(request.clone()))
        .await?
        .into_inner();
    let mut types = Vec::new();
    for domain in domains_of(&session) {
        types.extend(task_types_in(&calls, &session, domain).await?);
    }
    let statuses = [
        "PENDING",
        "RUNNING",
        "COMPLETED",
        "DEAD",
        "CANCELLED",
        "EXPIRED",
    ];
    let next = TaskQuery {
        page: listed.next_page_token.clone(),
        ..filters.clone()
    };
    let first_page = TaskQuery {
        page: String::new(),
        ..filters.clone()
    };
    let current = format!(
        "/tasks?{}",
        serde_urlencoded::to_string(&filters).unwrap_or_default()
    );
    let body = html! {
        form.filters method="get" action="/tasks" {
            label { "Type"
                select name="task_type" {
                    option value="" { "any" }
                    @for t in &types {
                        option value=(t.task_type) selected[t.task_type == filters.task_type] { (t.task_type) }
                    }
                }
            }
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for status in statuses {
                        option value=(status) selected[filters.status.eq_ignore_ascii_case(status)] { (status) }
                    }
                }
            }
            label { "Domain" input name="domain" value=(filters.domain) placeholder="any"; }
            label { "Created after (UTC)" input type="datetime-local" name="created_after" value=(filters.created_after); }
            label { "Created before (UTC)" input type="datetime-local" name="created_before" value=(filters.created_before); }
            label { "Error contains" input name="error" value=(filters.error); }
            button type="submit" { "Filter" }
            a href="/tasks" { "Clear" }
        }
        @if !filters.task_type.is_empty() {
            (bulk_form(&filters, &session, &current))
        }
        div #live data-live {
            (task_table(&listed.tasks))
            nav.pages {
                @if !filters.page.is_empty() {
                    a href={ "/tasks?" (serde_urlencoded::to_string(&first_page).unwrap_or_default()) } { "← Newest" }
                }
                @if !listed.next_page_token.is_empty() {
                    a #older href={ "/tasks?" (serde_urlencoded::to_string(&next).unwrap_or_default()) } { "Older →" }
                }
            }
        }
    };
    Ok(page("Tasks", Section::Tasks, &session, &notice, body))
}

/// The bulk actions a filter with a type allows: retry (DEAD, CANCELLED or
/// EXPIRED tasks) and cancel (PENDING or RUNNING ones). Each asks for the
/// count to be confirmed first.
fn bulk_form(filters: &TaskQuery, session: &Session, back: &str) -> Markup {
    let status = filters.status.to_uppercase();
    let retryable = matches!(status.as_str(), "" | "DEAD" | "CANCELLED" | "EXPIRED");
    let cancellable = matches!(status.as_str(), "PENDING" | "RUNNING");
    html! {
        form.bulk method="post" action=(action_url("/bulk", session)) {
            @for (name, value) in [
                ("task_type", &filters.task_type), ("status", &filters.status),
                ("created_after", &filters.created_after), ("created_before", &filters.created_before),
                ("error", &filters.error), ("back", &back.to_owned()),
            ] {
                input type="hidden" name=(name) value=(value);
            }
            span.muted { "Every task this filter matches:" }
            @if retryable { button #bulk-retry type="submit" name="action" value="retry" { "Retry all…" } }
            @if cancellable { button #bulk-cancel type="submit" name="action" value="cancel" { "Cancel all…" } }
        }
    }
}

fn task_table(tasks: &[Task]) -> Markup {
    html! {
        @if tasks.is_empty() {
            p.muted #no-tasks { "No task matches." }
        } @else {
            div.scroll {
            table.grid.nav #tasks {
                thead { tr { th { "Task" } th { "Type" } th { "Status" } th.num { "Attempts" } th { "Created" } th { "Last error" } } }
                tbody {
                    @for task in tasks {
                        tr data-id=(task.id) data-status=(status_name(task.status)) {
                            td.mono { a href={ "/tasks/" (task.id) } { (task.id) } }
                            td { (task.task_type) }
                            td { (status_badge(task.status)) }
                            td.num { (task.attempts) "/" (task.max_attempts) }
                            td { (time(&task.created_at)) }
                            td.error-text { (truncate(&task.last_error, 120)) }
                        }
                    }
                }
            }
            }
        }
    }
}

fn truncate(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// `GET /tasks/{id}`: one task: its payload, result, error, progress,
/// every attempt, its parent and its follow-ups.
pub async fn task(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Page {
    let calls = caller(&console, &session);
    let task = calls
        .tasks()
        .get_task(calls.request(GetTaskRequest { id: id.clone() }))
        .await?
        .into_inner();
    let attempts = calls
        .tasks()
        .list_task_attempts(calls.request(ListTaskAttemptsRequest { id: id.clone() }))
        .await?
        .into_inner()
        .attempts;
    let children = calls
        .tasks()
        .list_tasks(calls.request(ListTasksRequest {
            domain: task.domain.clone(),
            parent_id: id.clone(),
            page_size: PAGE_SIZE,
            ..ListTasksRequest::default()
        }))
        .await?
        .into_inner()
        .tasks;
    let back = format!("/tasks/{id}");
    let status = TaskStatus::try_from(task.status).unwrap_or(TaskStatus::Unspecified);
    let body = html! {
        div #live data-live data-status=(status_name(task.status)) {
            div.actions {
                (status_badge(task.status))
                @if matches!(status, TaskStatus::Dead | TaskStatus::Cancelled | TaskStatus::Expired) {
                    (action_button(&format!("/tasks/{id}/retry"), "Retry", &back, &session))
                }
                @if matches!(status, TaskStatus::Pending | TaskStatus::Running) {
                    (action_button(&format!("/tasks/{id}/cancel"), "Cancel", &back, &session))
                }
            }
            dl.fields {
                dt { "Id" } dd.mono #task-id { (task.id) }
                dt { "Type" } dd { a href={ "/tasks?" (query(&[("task_type", &task.task_type)])) } { (task.task_type) } }
                dt { "Domain" } dd { (task.domain) }
                dt { "Attempts" } dd { (task.attempts) " of " (task.max_attempts) }
                dt { "Priority" } dd { (task.priority) }
                dt { "Created" } dd { (time(&task.created_at)) }
                dt { "Run at" } dd { (time(&task.run_at)) }
                dt { "Started" } dd { (time(&task.started_at)) }
                dt { "Finished" } dd { (time(&task.finished_at)) }
                @if !task.handler_version.is_empty() { dt { "Version" } dd { (task.handler_version) } }
                @if !task.idempotency_key.is_empty() { dt { "Idempotency key" } dd.mono { (task.idempotency_key) } }
                @if !task.waiting_for.is_empty() { dt { "Waiting for" } dd { (task.waiting_for) } }
                @if !task.parent_id.is_empty() {
                    dt { "Parent" } dd.mono { a #parent href={ "/tasks/" (task.parent_id) } { (task.parent_id) } }
                }
                @if let Some(progress) = &task.progress {
                    dt { "Progress" }
                    dd { progress max="1" value=(progress.fraction) {} " " (format!("{:.0}%", progress.fraction * 100.0)) " " (progress.message) }
                }
            }
            @if !task.last_error.is_empty() {
                h2 { "Error" }
                pre.error-text #last-error { (task.last_error) }
            }
            h2 { "Payload" }
            div #payload { (json(&task.payload)) }
            h2 { "Result" }
            div #result { (json(&task.result)) }
            @if !task.metadata.is_empty() {
                h2 { "Metadata" }
                table.grid { tbody { @for (key, value) in &task.metadata { tr { th { (key) } td { (value) } } } } }
            }
            h2 { "Attempts" }
            @if attempts.is_empty() { p.muted { "Not started yet." } } @else {
                div.scroll {
                table.grid #attempts {
                    thead { tr { th.num { "#" } th { "Agent" } th { "Started" } th { "Ended" } th { "Outcome" } th { "Error" } } }
                    tbody {
                        @for attempt in &attempts {
                            tr {
                                td.num { (attempt.attempt) }
                                td.mono { (attempt.agent_id) }
                                td { (time(&attempt.started_at)) }
                                td { (time(&attempt.finished_at)) }
                                td { (attempt.outcome) }
                                td.error-text { (attempt.error) }
                            }
                        }
                    }
                }
                }
            }
            @if !children.is_empty() {
                h2 { "Follow-ups" }
                (task_table(&children))
            }
        }
    };
    Ok(page(
        &format!("Task {}", task.task_type),
        Section::Tasks,
        &session,
        &notice,
        body,
    ))
}

/// `GET /agents`: the connected agents, their domains, slots, running
/// tasks, labels, flags, health and whether they drain.
pub async fn agents(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
    Query(notice): Query<Notice>,
) -> Page {
    let calls = caller(&console, &session);
    let agents: Vec<AgentInfo> = calls
        .registry()
        .list_agents(calls.request(ListAgentsRequest {}))
        .await?
        .into_inner()
        .agents
        .into_iter()
        .filter(|agent| agent.domains.iter().any(|domain| session.sees(domain)))
        .collect();
    let body = html! {
        div #live data-live {
            @if agents.is_empty() {
                p.muted { "No agent is connected." }
            } @else {
                div.scroll {
                table.grid #agents {
                    thead { tr {
                        th { "Agent" } th { "Domains" } th.num { "Slots" } th.num { "Running" }
                        th { "Labels" } th { "Feature flags" } th { "Health" } th { "Connected" } th { "State" }
                    } }
                    tbody {
                        @for agent in &agents {
                            tr data-agent=(agent.agent_name) {
                                td { strong { (agent.agent_name) } br; span.mono.small { (agent.session_id) } }
                                td { (agent.domains.join(", ")) }
                                td.num { (agent.max_concurrency) }
                                td.num { (agent.running) }
                                td { @for (key, value) in &agent.labels { span.tag { (key) "=" (value) } " " } }
                                td { @for (flag, on) in &agent.feature_flags { span class={ "tag " (if *on { "on" } else { "off" }) } { (flag) } " " } }
                                td {
                                    @for health in &agent.handler_health {
                                        span class={ "tag " (if health.healthy { "on" } else { "off" }) } title=(health.message) { (health.task_type) } " "
                                    }
                                }
                                td { (time(&agent.connected_at)) }
                                td {
                                    @if agent.draining { span.badge.paused { "DRAINING" } }
                                    @else { (action_button(&format!("/agents/{}/drain", agent.session_id), "Drain", "/agents", &session)) }
                                }
                            }
                        }
                    }
                }
                }
            }
        }
    };
    Ok(page("Agents", Section::Agents, &session, &notice, body))
}

/// The task types of `domain` (every domain when empty) that `session` sees.
async fn task_types_in(
    calls: &Caller,
    session: &Session,
    domain: String,
) -> Result<Vec<HandlerInfo>, ConsoleError> {
    Ok(calls
        .registry()
        .list_task_types(calls.request(ListTaskTypesRequest { domain }))
        .await?
        .into_inner()
        .task_types
        .into_iter()
        .filter(|t| session.sees(&t.domain))
        .collect())
}

/// `GET /types`: task types with their defaults, versions, flow control
/// and health, and the schedules.
pub async fn task_types(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
    Query(notice): Query<Notice>,
) -> Page {
    let calls = caller(&console, &session);
    let mut types = Vec::new();
    let mut schedules: Vec<Schedule> = Vec::new();
    for domain in domains_of(&session) {
        types.extend(task_types_in(&calls, &session, domain.clone()).await?);
        let request = ListSchedulesRequest {
            domain,
            ..ListSchedulesRequest::default()
        };
        schedules.extend(
            calls
                .schedules()
                .list_schedules(calls.request(request))
                .await?
                .into_inner()
                .schedules,
        );
    }
    let seconds = |d: &Option<prost_types::Duration>| d.as_ref().map_or(0, |d| d.seconds);
    let body = html! {
        div #live data-live {
            div.scroll {
            table.grid #types {
                thead { tr {
                    th { "Task type" } th { "Domain" } th.num { "Live agents" } th { "Versions" }
                    th { "Defaults" } th { "Flow control" } th { "Health" } th { "State" }
                } }
                tbody {
                    @for t in &types {
                        @let flow = t.flow.clone().unwrap_or_default();
                        tr data-type=(t.task_type) {
                            td { a href={ "/tasks?" (query(&[("task_type", &t.task_type)])) } { (t.task_type) } br; span.muted.small { (t.description) } }
                            td { (t.domain) }
                            td.num { (t.live_agents) }
                            td { (t.versions.join(", ")) }
                            td.small {
                                (t.default_max_attempts) " attempts, " (seconds(&t.default_timeout)) " s timeout"
                                @if let Some(retry) = &t.default_retry_policy {
                                    ", backoff " (seconds(&retry.initial_backoff)) "–" (seconds(&retry.max_backoff)) " s"
                                }
                            }
                            td.small {
                                @if flow.max_running > 0 { "max " (flow.max_running) " running " }
                                @if !flow.concurrency_key.is_empty() { "per " (flow.concurrency_key) " ≤ " (flow.max_running_per_key) " " }
                                @if !flow.rate_limit.is_empty() { "rate " (flow.rate_limit) " " }
                                @if flow.refuse_enqueues { "refuses enqueues" }
                            }
                            td { @for health in &t.health { span class={ "tag " (if health.healthy { "on" } else { "off" }) } title=(health.message) { (health.agent_name) } " " } }
                            td {
                                @if flow.paused {
                                    span.badge.paused { "PAUSED" } " "
                                    (action_button(&format!("/types/{}/resume", t.task_type), "Resume", "/types", &session))
                                } @else {
                                    (action_button(&format!("/types/{}/pause", t.task_type), "Pause", "/types", &session))
                                }
                            }
                        }
                    }
                }
            }
            }
            h2 { "Schedules" }
            @if schedules.is_empty() { p.muted { "No schedules." } } @else {
                div.scroll {
                table.grid #schedules {
                    thead { tr { th { "Schedule" } th { "Task type" } th { "When" } th { "Next" } th { "Latest run" } th { "" } } }
                    tbody {
                        @for schedule in &schedules {
                            @let spec = schedule.spec.clone().unwrap_or_default();
                            tr data-schedule=(spec.name) {
                                td { (spec.name) @if schedule.paused { " " span.badge.paused { "PAUSED" } } }
                                td { (spec.task_type) }
                                td.mono {
                                    @if spec.cron.is_empty() { "every " (seconds(&spec.interval)) " s" } @else { (spec.cron) }
                                    @if !spec.timezone.is_empty() { " " (spec.timezone) }
                                }
                                td { (time(&schedule.next_fire_at)) }
                                td {
                                    @if let Some(run) = schedule.recent_runs.first() {
                                        (time(&run.fire_at)) " "
                                        @if run.task_id.is_empty() { span.muted { (run.skipped) } }
                                        @else { a href={ "/tasks/" (run.task_id) } { (status_name(run.status)) } }
                                    }
                                }
                                td { (action_button(&format!("/schedules/{}/trigger", spec.name), "Run now", "/types", &session)) }
                            }
                        }
                    }
                }
                }
            }
        }
    };
    Ok(page("Task types", Section::Types, &session, &notice, body))
}
