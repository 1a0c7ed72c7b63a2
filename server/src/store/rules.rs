//! The decisions every backend makes the same way, kept out of SQL so they
//! exist once: building a new task, merging a type's defaults, deciding how
//! a reported attempt ends, and the errors clients see.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::HandOff;
use crate::backoff::retry_delay;
use crate::error::{Error, Result};
use crate::model::{
    AttemptResult, Enqueued, Lease, NewTask, RecordedTask, RetryPolicy, Task, TaskFilter,
    TaskStatus, TaskType, TaskTypeSpec,
};

/// Server-wide defaults for task types registered without their own.
#[derive(Debug, Clone, Copy)]
pub struct TypeDefaults {
    /// Attempts.
    pub max_attempts: u32,
    /// Execution timeout.
    pub timeout: std::time::Duration,
    /// Retry policy.
    pub retry_policy: RetryPolicy,
}

/// The settings a registration stores: the spec's, else the stored type's,
/// else the server's.
pub fn merged_defaults(
    spec: &TaskTypeSpec,
    existing: Option<&TaskType>,
    defaults: &TypeDefaults,
) -> TypeDefaults {
    TypeDefaults {
        max_attempts: spec
            .default_max_attempts
            .or(existing.map(|t| t.default_max_attempts))
            .unwrap_or(defaults.max_attempts),
        timeout: spec
            .default_timeout
            .or(existing.map(|t| t.default_timeout))
            .unwrap_or(defaults.timeout),
        retry_policy: spec
            .default_retry_policy
            .apply_to(existing.map_or(defaults.retry_policy, |t| t.default_retry_policy)),
    }
}

/// The error when a registration names a type another domain owns.
pub fn domain_conflict(spec: &TaskTypeSpec, owner: &str) -> Error {
    Error::AlreadyExists(format!(
        "task type '{}' belongs to domain '{owner}', not '{}': rename the type or serve it from the '{owner}' domain",
        spec.task_type, spec.domain
    ))
}

/// The error when a task names an unregistered type.
pub fn unregistered(task_type: &str) -> Error {
    Error::FailedPrecondition(format!(
        "task type '{task_type}' is not registered: start an agent that serves it, or register it with \
         RegistryService.RegisterTaskType"
    ))
}

/// The error when a task id matches nothing.
pub fn not_found(id: Uuid) -> Error {
    Error::NotFound(format!(
        "no task has id {id}: check the id returned by EnqueueTask"
    ))
}

/// Every handler version ever declared for a type: the stored ones and the
/// registration's, sorted. A registration never removes one, so that during
/// a rolling upgrade whichever agent registers last leaves the others'
/// versions enqueueable (`routing` decides which agent gets which).
pub fn declared_versions(spec: &TaskTypeSpec, existing: Option<&TaskType>) -> Vec<String> {
    let stored = existing.map_or(&[][..], |t| t.versions.as_slice());
    let all: BTreeSet<&String> = stored.iter().chain(&spec.versions).collect();
    all.into_iter().cloned().collect()
}

/// The error of a task that asks for a handler version its type's agents
/// never declared.
fn unknown_version(new: &NewTask, task_type: &TaskType) -> Error {
    let known = if task_type.versions.is_empty() {
        "none: its handlers are not versioned, so leave handler_version empty".to_owned()
    } else {
        task_type.versions.join(", ")
    };
    Error::FailedPrecondition(format!(
        "no agent of task type '{}' has declared handler version '{}' (declared: {known}): ask for a declared version, or deploy an agent that serves it first",
        new.task_type, new.handler_version
    ))
}

/// A new PENDING task of a registered type, with the type's defaults filled in.
pub fn new_task(new: NewTask, task_type: &TaskType, now: DateTime<Utc>) -> Task {
    Task {
        id: Uuid::now_v7(),
        domain: task_type.domain.clone(),
        status: TaskStatus::Pending,
        attempts: 0,
        max_attempts: new.max_attempts.unwrap_or(task_type.default_max_attempts),
        timeout: new.timeout.unwrap_or(task_type.default_timeout),
        // Stored at millisecond precision; never in the past.
        run_at: new
            .run_at
            .map_or(now, |at| {
                super::rows::from_millis(at.timestamp_millis()).unwrap_or(now)
            })
            .max(now),
        created_at: now,
        updated_at: now,
        started_at: None,
        finished_at: None,
        result: None,
        last_error: None,
        retry_policy: new.retry_policy.apply_to(task_type.default_retry_policy),
        task_type: new.task_type,
        payload: new.payload,
        priority: new.priority,
        idempotency_key: new.idempotency_key,
        handler_version: new.handler_version,
        metadata: new.metadata,
        required_labels: new.required_labels,
        parent_id: new.parent_id,
        progress: None,
        // Stored at millisecond precision, like every instant.
        start_by: new
            .start_by
            .and_then(|at| super::rows::from_millis(at.timestamp_millis()).ok()),
    }
}

/// For each new task whose idempotency key has a window, the creation
/// time before which a task holding the key lets it go (`now` less the
/// window); `None` for the rest.
pub fn key_windows(tasks: &[NewTask], now: DateTime<Utc>) -> Vec<Option<DateTime<Utc>>> {
    tasks
        .iter()
        .map(|task| {
            let window = chrono::Duration::from_std(task.idempotency_window?).ok()?;
            Some(
                now.checked_sub_signed(window)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC),
            )
        })
        .collect()
}

/// The tasks to store for `tasks`, each with its type's defaults from
/// `types`; refused whole if one names a type that is not there.
pub fn new_tasks(
    tasks: Vec<NewTask>,
    types: &BTreeMap<String, TaskType>,
    now: DateTime<Utc>,
) -> Result<Vec<Task>> {
    tasks
        .into_iter()
        .map(|new| match types.get(&new.task_type) {
            Some(task_type)
                if !new.handler_version.is_empty()
                    && !task_type.versions.contains(&new.handler_version) =>
            {
                Err(unknown_version(&new, task_type))
            }
            Some(task_type) => {
                task_type.flow.check_enqueue(&task_type.task_type)?;
                Ok(new_task(new, task_type, now))
            }
            None => Err(unregistered(&new.task_type)),
        })
        .collect()
}

/// Leases each new task that is ready at once to the session `hand_off`
/// names for it, as a claim would: RUNNING, first attempt started when it
/// was created. Tasks are offered in delivery order (priority, then age),
/// so when sessions have fewer slots than the batch has tasks, the ones a
/// claim would have taken first are the ones handed off. Returns each
/// task's lease, in the tasks' order.
pub fn hand_off(tasks: &mut [Task], hand_off: &HandOff<'_>) -> Vec<Option<Lease>> {
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.sort_by(|&a, &b| {
        tasks[b]
            .priority
            .cmp(&tasks[a].priority)
            .then(tasks[a].id.cmp(&tasks[b].id))
    });
    let mut leases = vec![None; tasks.len()];
    for index in order {
        let task = &mut tasks[index];
        if task.run_at > task.created_at {
            continue;
        }
        if let Some(lease) = hand_off(task) {
            task.status = TaskStatus::Running;
            task.attempts = 1;
            task.started_at = Some(task.created_at);
            leases[index] = Some(lease);
        }
    }
    leases
}

/// What a claim changes in a ready task it leases at `now`: RUNNING, in
/// its next attempt, started now.
pub fn start_attempt(task: &mut Task, now: DateTime<Utc>) {
    task.status = TaskStatus::Running;
    task.attempts += 1;
    task.started_at = Some(now);
    task.updated_at = now;
}

/// Tasks just inserted, as an enqueue answers them.
pub fn newly_created(tasks: Vec<Task>) -> Vec<Enqueued> {
    tasks
        .into_iter()
        .map(|task| Enqueued {
            task,
            created: true,
        })
        .collect()
}

/// How a reported attempt changes its task.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptEnd {
    /// The task's new status.
    pub status: TaskStatus,
    /// The result to store (completed attempts).
    pub result: Option<String>,
    /// The error to store (failed attempts).
    pub error: Option<String>,
    /// When the task may run next (retries) or its unchanged `run_at`.
    pub run_at: DateTime<Utc>,
    /// The attempt row's outcome.
    pub outcome: &'static str,
}

/// The `SET` list of the UPDATE that ends an attempt as [`end_attempt`]
/// decided, given how the caller's database spells the bound status,
/// result, error, next `run_at` and clock: a retry (PENDING) is not
/// finished; a completed task keeps who ran it, which is how its attempt
/// reads as completed; every other end forgets the lease.
pub fn end_attempt_assignments(
    status: &str,
    result: &str,
    error: &str,
    run_at: &str,
    now: &str,
) -> String {
    format!(
        "status = {status}, result = {result}, last_error = {error}, run_at = {run_at},
         finished_at = CASE WHEN {status} = 'pending' THEN NULL ELSE {now} END, updated_at = {now},
         lease_session = CASE WHEN {status} = 'completed' THEN lease_session END,
         lease_agent = CASE WHEN {status} = 'completed' THEN lease_agent END,
         lease_expires_at = NULL"
    )
}

/// The `SET` list of the UPDATE that returns a lost lease's task to the
/// queue at `now` with the error `error` (as the caller spells them): back
/// to PENDING, or DEAD when it has no attempts left.
pub fn lost_lease_assignments(now: &str, error: &str) -> String {
    format!(
        "status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' END,
         finished_at = CASE WHEN attempts >= max_attempts THEN {now} ELSE NULL END,
         last_error = {error}, updated_at = {now},
         lease_session = NULL, lease_agent = NULL, lease_expires_at = NULL"
    )
}

/// Decides how `attempt` ends `task`; `None` when the attempt is not the
/// current lease (the fence: the result must change nothing).
pub fn end_attempt(
    task: &Task,
    attempt: u32,
    result: &AttemptResult,
    now: DateTime<Utc>,
) -> Option<AttemptEnd> {
    if task.status != TaskStatus::Running || task.attempts != attempt {
        return None;
    }
    Some(match result {
        AttemptResult::Completed(value) => AttemptEnd {
            status: TaskStatus::Completed,
            result: Some(super::rows::json_text(value)),
            error: None,
            run_at: task.run_at,
            outcome: "completed",
        },
        AttemptResult::Failed {
            error,
            retryable,
            jitter,
            retry_after,
        } => {
            let retry = *retryable && task.attempts < task.max_attempts;
            let run_at = if retry {
                let policy = &task.retry_policy;
                // The downstream's wish lengthens the backoff, never past
                // the policy's cap.
                let delay = retry_delay(attempt, policy, *jitter)
                    .max(retry_after.unwrap_or_default().min(policy.max_backoff));
                now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX)
            } else {
                task.run_at
            };
            AttemptEnd {
                status: if retry {
                    TaskStatus::Pending
                } else {
                    TaskStatus::Dead
                },
                result: None,
                error: Some(error.clone()),
                run_at,
                outcome: "failed",
            }
        }
    })
}

/// The error an EXPIRED task carries.
pub const EXPIRED_ERROR: &str =
    "expired: no agent started it before its start_by deadline, so it never ran";

/// Checks that a task can be cancelled.
pub fn check_cancellable(task: &Task) -> Result<(), Error> {
    if task.status.is_terminal() {
        return Err(Error::FailedPrecondition(format!(
            "task {} is already {}: only PENDING or RUNNING tasks can be cancelled",
            task.id,
            task.status.as_str().to_uppercase()
        )));
    }
    Ok(())
}

/// Checks that a task can be retried.
pub fn check_retryable(task: &Task) -> Result<(), Error> {
    if !matches!(
        task.status,
        TaskStatus::Dead | TaskStatus::Cancelled | TaskStatus::Expired
    ) {
        return Err(Error::FailedPrecondition(format!(
            "task {} is {}: only DEAD, CANCELLED or EXPIRED tasks can be retried",
            task.id,
            task.status.as_str().to_uppercase()
        )));
    }
    Ok(())
}

/// A batch of results as the stores write it: the completions at `bulk`
/// in one statement, the results at `single` one by one, all at `now`.
pub struct ResultBatch {
    /// Each result: the task, its attempt and how it ended.
    pub results: Vec<(Uuid, u32, AttemptResult)>,
    /// The indices of the completions.
    pub bulk: Vec<usize>,
    /// The indices of the rest.
    pub single: Vec<usize>,
    /// When they are recorded.
    pub now: DateTime<Utc>,
}

impl ResultBatch {
    /// Splits `results` (see [`split_completions`]), to be recorded now.
    pub fn new(results: Vec<(Uuid, u32, AttemptResult)>) -> Self {
        let (bulk, single) = split_completions(&results);
        ResultBatch {
            results,
            bulk,
            single,
            now: super::rows::now(),
        }
    }
}

/// Splits a batch of results: the indices of completions that can be written
/// together in one statement (the first result of each task), and the rest
/// (failures, which need their own retry decision, and repeats).
pub fn split_completions(results: &[(Uuid, u32, AttemptResult)]) -> (Vec<usize>, Vec<usize>) {
    let mut seen = std::collections::HashSet::new();
    let (mut bulk, mut single) = (Vec::new(), Vec::new());
    for (index, (id, _, result)) in results.iter().enumerate() {
        if matches!(result, AttemptResult::Completed(_)) && seen.insert(*id) {
            bulk.push(index);
        } else {
            single.push(index);
        }
    }
    (bulk, single)
}

/// Puts bulk-written tasks back in input order: each index of `bulk` gets
/// its task if the write applied to it, `Stale` if not.
pub fn bulk_outcomes(
    results: &[(Uuid, u32, AttemptResult)],
    bulk: &[usize],
    applied: Vec<RecordedTask>,
    outcomes: &mut [Option<crate::model::ResultOutcome>],
) {
    let mut applied: std::collections::HashMap<Uuid, RecordedTask> =
        applied.into_iter().map(|t| (t.id, t)).collect();
    for &index in bulk {
        outcomes[index] = Some(match applied.remove(&results[index].0) {
            Some(task) => crate::model::ResultOutcome::Applied(task),
            None => crate::model::ResultOutcome::Stale,
        });
    }
}

/// The outcomes of a batch once every result has one.
pub fn all_outcomes(
    outcomes: Vec<Option<crate::model::ResultOutcome>>,
) -> Vec<crate::model::ResultOutcome> {
    outcomes
        .into_iter()
        .map(|o| o.expect("every result has an outcome"))
        .collect()
}

/// The `WHERE … ORDER BY … LIMIT …` of a task listing, with `$n`
/// placeholders (both databases accept them), and the values to bind, in
/// order, before the limit (the last placeholder). Only the filters given appear, so the planner can use the index
/// they match (`tasks_by_type` for a type): the `$1 IS NULL OR task_type =
/// $1` form scans the whole table, history included. The status is written
/// literally (one of a fixed set). `id_cast` is how the database compares a
/// text id with the `id` column (`::uuid` on PostgreSQL).
pub fn task_listing(filter: &TaskFilter, id_cast: &str) -> (String, Vec<String>) {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    if let Some(task_type) = &filter.task_type {
        values.push(task_type.clone());
        conditions.push(format!("task_type = ${}", values.len()));
    }
    if let Some(domain) = &filter.domain {
        values.push(domain.clone());
        conditions.push(format!("domain = ${}", values.len()));
    }
    if let Some(status) = filter.status {
        conditions.push(format!("status = '{}'", status.as_str()));
    }
    if let Some(before) = filter.before {
        values.push(before.to_string());
        conditions.push(format!("id < ${}{id_cast}", values.len()));
    }
    // Ids are UUIDv7, ordered by their creation millisecond: a time range
    // is a range of the primary key.
    if let Some(after) = filter.created_after {
        values.push(first_id_at(after).to_string());
        conditions.push(format!("id >= ${}{id_cast}", values.len()));
    }
    if let Some(before) = filter.created_before {
        values.push(first_id_at(before).to_string());
        conditions.push(format!("id < ${}{id_cast}", values.len()));
    }
    if let Some(text) = &filter.error_contains {
        values.push(like_pattern(text));
        conditions.push(format!("last_error LIKE ${} ESCAPE '\\'", values.len()));
    }
    if let Some(from) = filter.from_id {
        values.push(from.to_string());
        conditions.push(format!("id >= ${}{id_cast}", values.len()));
    }
    if let Some(parent) = filter.parent_id {
        values.push(parent.to_string());
        conditions.push(format!("parent_id = ${}{id_cast}", values.len()));
    }
    let filters = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {} ", conditions.join(" AND "))
    };
    let limit = values.len() + 1;
    // `tasks.id`: PostgreSQL selects `id::text AS id`, and a bare `id`
    // would order by that text, which no index serves (a sort of the
    // whole table: a second at two million tasks).
    (
        format!("{filters}ORDER BY tasks.id DESC LIMIT ${limit}"),
        values,
    )
}

/// The smallest UUIDv7 of instant `at`: every task created at or after
/// `at` has an id at least this, every one created before a smaller id.
pub fn first_id_at(at: DateTime<Utc>) -> Uuid {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = 0x70;
    bytes[8] = 0x80;
    Uuid::from_bytes(bytes)
}

/// A `LIKE … ESCAPE '\'` pattern matching text that contains `text`
/// (its `%`, `_` and `\` taken literally).
pub fn like_pattern(text: &str) -> String {
    format!(
        "%{}%",
        text.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}

#[cfg(test)]
mod listing_tests {
    use super::*;

    #[test]
    fn a_listing_names_only_the_filters_given() {
        let everything = TaskFilter {
            task_type: None,
            status: None,
            limit: 10,
            ..TaskFilter::default()
        };
        assert_eq!(
            task_listing(&everything, ""),
            ("ORDER BY tasks.id DESC LIMIT $1".to_owned(), vec![])
        );
        let before = Uuid::now_v7();
        let narrow = TaskFilter {
            task_type: Some("send_email".into()),
            status: Some(TaskStatus::Pending),
            before: Some(before),
            ..everything
        };
        assert_eq!(
            task_listing(&narrow, "::uuid"),
            (
                "WHERE task_type = $1 AND status = 'pending' AND id < $2::uuid ORDER BY tasks.id DESC LIMIT $3"
                    .to_owned(),
                vec!["send_email".to_owned(), before.to_string()]
            )
        );
    }

    #[test]
    fn a_time_range_is_a_range_of_ids() {
        let at = DateTime::parse_from_rfc3339("2026-12-07T10:00:00.250Z")
            .unwrap()
            .with_timezone(&Utc);
        let first = first_id_at(at);
        assert_eq!(first.get_version_num(), 7);
        let later = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            at.timestamp() as u64,
            at.timestamp_subsec_nanos(),
        ));
        let earlier = first_id_at(at - chrono::Duration::milliseconds(1));
        assert!(
            earlier < first && first <= later,
            "{earlier} {first} {later}"
        );
        let filter = TaskFilter {
            created_after: Some(at),
            error_contains: Some("50%_off\\".into()),
            parent_id: Some(later),
            limit: 5,
            ..TaskFilter::default()
        };
        let (sql, values) = task_listing(&filter, "");
        assert_eq!(
            sql,
            "WHERE id >= $1 AND last_error LIKE $2 ESCAPE '\\' AND parent_id = $3 ORDER BY tasks.id DESC LIMIT $4"
        );
        assert_eq!(values[1], "%50\\%\\_off\\\\%");
    }
}
