//! The console's actions: each one gRPC call made with the session's
//! token, then back to the page it came from with what it did, or why it
//! was refused, in words. Bulk actions count first and act only once the
//! count is confirmed.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::html;
use serde::Deserialize;
use taskplane_proto::v1::{
    BulkTasksRequest, CancelTaskRequest, DrainAgentRequest, RetryTaskRequest,
    SetTaskTypePolicyRequest, TaskSelector, TriggerScheduleRequest,
};

use super::Console;
use super::layout::{ConsoleError, Notice, Section, action_url, page};
use super::pages::{caller, status_number, utc_time};
use super::sessions::Session;

/// Where an action returns to.
#[derive(Debug, Default, Deserialize)]
pub struct Back {
    /// A path of this console; anything else returns to the overview.
    #[serde(default)]
    back: String,
}

/// `back` when it is a path of this console (not another site), else `/`.
fn safe_back(back: &str) -> &str {
    let local = back.starts_with('/') && !back.starts_with("//") && !back.contains('\\');
    if local { back } else { "/" }
}

/// Back to `back`, with `key` (`done` or `error`) saying `text`.
fn back_with(back: &str, key: &str, text: &str) -> Response {
    let back = safe_back(back);
    let (path, query) = back.split_once('?').unwrap_or((back, ""));
    let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    pairs.retain(|(name, _)| name != "done" && name != "error");
    pairs.push((key.to_owned(), text.to_owned()));
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    Redirect::to(&format!("{path}?{query}")).into_response()
}

/// Back to `back` saying what a call did, or why it was refused.
fn outcome<T>(
    back: &str,
    result: Result<T, tonic::Status>,
    done: impl FnOnce(T) -> String,
) -> Response {
    match result {
        Ok(answer) => back_with(back, "done", &done(answer)),
        Err(status) => back_with(back, "error", status.message()),
    }
}

/// `POST /tasks/{id}/retry`.
pub async fn retry(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<Back>,
) -> Response {
    let calls = caller(&console, &session);
    let result = calls
        .tasks()
        .retry_task(calls.request(RetryTaskRequest { id }))
        .await;
    outcome(&form.back, result, |_| {
        "Retried: the task is back in the queue.".into()
    })
}

/// `POST /tasks/{id}/cancel`.
pub async fn cancel(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<Back>,
) -> Response {
    let calls = caller(&console, &session);
    let reason = match &session.principal {
        Some(principal) => format!("cancelled from the console by {}", principal.name),
        None => "cancelled from the console".to_owned(),
    };
    let result = calls
        .tasks()
        .cancel_task(calls.request(CancelTaskRequest { id, reason }))
        .await;
    outcome(&form.back, result, |_| "Cancelled.".into())
}

/// A bulk action on every task of a filter.
#[derive(Debug, Default, Deserialize)]
pub struct BulkForm {
    /// `retry` or `cancel`.
    action: String,
    #[serde(default)]
    task_type: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    created_after: String,
    #[serde(default)]
    created_before: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    back: String,
    /// Set by the confirmation page: act, having seen the count.
    #[serde(default)]
    confirmed: String,
}

/// `POST /bulk`: counts the tasks a filter matches (a dry run) and asks
/// to confirm; once confirmed, retries or cancels them.
pub async fn bulk(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
    Form(form): Form<BulkForm>,
) -> Result<Response, ConsoleError> {
    let calls = caller(&console, &session);
    let selector = TaskSelector {
        task_type: form.task_type.clone(),
        status: status_number(&form.status)?,
        created_after: utc_time("created after", &form.created_after)?,
        created_before: utc_time("created before", &form.created_before)?,
        error_contains: form.error.clone(),
    };
    let request = |dry_run| {
        calls.request(BulkTasksRequest {
            selector: Some(selector.clone()),
            dry_run,
            reason: "cancelled in bulk from the console".into(),
        })
    };
    let (verb, call) = match form.action.as_str() {
        "retry" => ("Retry", true),
        "cancel" => ("Cancel", false),
        other => {
            return Err(ConsoleError(tonic::Status::invalid_argument(format!(
                "unknown bulk action '{other}': retry or cancel"
            ))));
        }
    };
    let run = |dry_run| {
        let mut tasks = calls.tasks();
        let request = request(dry_run);
        async move {
            if call {
                tasks.retry_tasks(request).await
            } else {
                tasks.cancel_tasks(request).await
            }
        }
    };
    if form.confirmed != "yes" {
        let counted = match run(true).await {
            Ok(counted) => counted.into_inner(),
            Err(status) => return Ok(back_with(&form.back, "error", status.message())),
        };
        let body = html! {
            form.confirm method="post" action=(action_url("/bulk", &session)) {
                p #bulk-count data-matched=(counted.matched) {
                    (verb) " " strong { (counted.matched) } " "
                    (if counted.matched == 1 { "task" } else { "tasks" })
                    " of type " strong { (form.task_type) } " matching this filter?"
                }
                @for (name, value) in [
                    ("action", &form.action), ("task_type", &form.task_type), ("status", &form.status),
                    ("created_after", &form.created_after), ("created_before", &form.created_before),
                    ("error", &form.error), ("back", &form.back),
                ] {
                    input type="hidden" name=(name) value=(value);
                }
                input type="hidden" name="confirmed" value="yes";
                button #bulk-confirm type="submit" disabled[counted.matched == 0] { (verb) " " (counted.matched) }
                " "
                a href=(safe_back(&form.back)) { "Go back" }
            }
        };
        let title = format!("{verb} tasks");
        return Ok(
            page(&title, Section::Tasks, &session, &Notice::default(), body).into_response(),
        );
    }
    let result = run(false).await;
    Ok(outcome(&form.back, result, |answer| {
        let answer = answer.into_inner();
        let done = if call { "Retried" } else { "Cancelled" };
        format!(
            "{done} {} of {} matching tasks.",
            answer.changed, answer.matched
        )
    }))
}

async fn set_paused(
    console: &Console,
    session: &Session,
    task_type: String,
    paused: bool,
    back: &str,
) -> Response {
    let calls = caller(console, session);
    let result = calls
        .registry()
        .set_task_type_policy(calls.request(SetTaskTypePolicyRequest {
            task_type: task_type.clone(),
            paused: Some(paused),
            ..SetTaskTypePolicyRequest::default()
        }))
        .await;
    outcome(back, result, |_| {
        if paused {
            format!("Paused {task_type}: its new tasks wait until it resumes.")
        } else {
            format!("Resumed {task_type}.")
        }
    })
}

/// `POST /types/{name}/pause`: nothing new of the type is delivered.
pub async fn pause(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(form): Form<Back>,
) -> Response {
    set_paused(&console, &session, name, true, &form.back).await
}

/// `POST /types/{name}/resume`.
pub async fn resume(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(form): Form<Back>,
) -> Response {
    set_paused(&console, &session, name, false, &form.back).await
}

/// `POST /agents/{session}/drain`: the agent takes no new work and
/// finishes what it has.
pub async fn drain(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
    Path(agent): Path<String>,
    Form(form): Form<Back>,
) -> Response {
    let calls = caller(&console, &session);
    let result = calls
        .registry()
        .drain_agent(calls.request(DrainAgentRequest { agent }))
        .await;
    outcome(&form.back, result, |answer| {
        let names: Vec<String> = answer
            .into_inner()
            .agents
            .into_iter()
            .map(|a| a.agent_name)
            .collect();
        format!("Draining {}.", names.join(", "))
    })
}

/// `POST /schedules/{name}/trigger`: runs the schedule now, once.
pub async fn trigger(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(form): Form<Back>,
) -> Response {
    let calls = caller(&console, &session);
    let result = calls
        .schedules()
        .trigger_schedule(calls.request(TriggerScheduleRequest { name: name.clone() }))
        .await;
    outcome(&form.back, result, |answer| {
        let id = answer.into_inner().task.map(|t| t.id).unwrap_or_default();
        format!("Triggered {name}: task {id}.")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_return_only_to_this_console() {
        assert_eq!(safe_back("/tasks?status=DEAD"), "/tasks?status=DEAD");
        assert_eq!(safe_back("//evil.example/x"), "/");
        assert_eq!(safe_back("https://evil.example"), "/");
        assert_eq!(safe_back("/\\evil.example"), "/");
        let response = back_with("/tasks?status=DEAD&done=old", "done", "Retried 2 of 2.");
        let location = response.headers()["location"].to_str().unwrap();
        assert_eq!(location, "/tasks?status=DEAD&done=Retried+2+of+2.");
    }
}
