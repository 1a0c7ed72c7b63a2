//! The SQL both databases share, written once.
//!
//! Both schemas store the same columns (times and durations as Unix
//! milliseconds, JSON and ids readable as text), and both accept `$1`-style
//! placeholders, so most statements differ only in a few spellings: how a
//! bound text id becomes `tasks.id` (`$1` or `$1::uuid`), how a task's
//! columns are selected as text, whether a read locks its rows, and where
//! live tasks are counted from. A backend names those spellings once
//! ([`Spelling`]) and gets every statement built from them ([`Statements`]);
//! [`Shared`](shared::Shared) runs them over any sqlx executor of that database.
//!
//! What really differs stays in the backend's folder: SQLite's writer
//! thread, its multi-row inserts and set-based expiry by id lists;
//! PostgreSQL's `SKIP LOCKED` claims, `UNNEST` inserts and `LISTEN/NOTIFY`.

//!
//! - this module: [`Spelling`], [`Statements`] and [`Dialect`];
//! - [`shared`]: [`Shared`](shared::Shared), each shared statement run over
//!   an executor;
//! - [`common`]: [`SharedStore`](common::SharedStore), the reads and writes
//!   both backends serve through it, behind [`Common`](common::Common);
//! - [`schedules`]: schedules, stored and fired the same way on both.

/// Runs `$body` with `$tx`, a write transaction on `$writes`' connection,
/// and commits it when the body succeeds.
macro_rules! in_transaction {
    ($writes:expr, |$tx:ident| $body:expr) => {{
        let mut held = $writes.writer().hold().await?;
        let mut $tx = held.begin_with(DB::statements().begin).await?;
        let done = $body;
        $tx.commit().await?;
        Ok(done)
    }};
}

mod common;
mod schedules;
mod shared;

pub use common::{Common, Held, Reads, SharedStore, Writer, Writes};
#[cfg(test)]
pub use schedules::RUNS_KEPT;
pub use schedules::Schedules;
pub use shared::Shared;

use std::sync::LazyLock;

use sqlx::Database;

use crate::model::TaskFilter;

/// The guard of a statement that changes a task it found by id (or that a
/// read before it picked): the task is still PENDING. Spelled `status || ''`
/// so that no planner can take it for the predicate of the partial index
/// of PENDING tasks (`tasks_ready`): after PostgreSQL analyzes a table
/// while nothing waits, its statistics put that index at one row, and with
/// a plain `status = 'pending'` beside `id = …` it scanned the whole index
/// for each row instead of looking the id up (a claim over a backlog of
/// 100,000 tasks: 2.9 → 278 ms). The primary key is then the only index
/// the statement can use.
pub const STILL_PENDING: &str = "status || '' = 'pending'";

/// As [`STILL_PENDING`], for RUNNING tasks and their partial index
/// (`tasks_leased`).
pub const STILL_RUNNING: &str = "status || '' = 'running'";

/// How one database spells what differs in the shared SQL.
pub struct Spelling {
    /// The columns of a whole task, as [`rows::task`] reads them.
    pub task_columns: &'static str,
    /// `tasks.id` as text (`task_attempts.task_id` is text on both).
    pub id_text: &'static str,
    /// The cast that makes a bound text id comparable with `tasks.id`.
    pub id_cast: &'static str,
    /// What ends a `SELECT` whose rows the transaction updates next.
    pub for_update: &'static str,
    /// Where PENDING tasks are counted from.
    pub pending_tasks: &'static str,
    /// Where RUNNING tasks are counted from.
    pub running_tasks: &'static str,
    /// What opens a write transaction.
    pub begin: &'static str,
    /// A statement that announces ready work of task type `$1` to other
    /// replicas when the transaction commits, where there are any.
    pub announce_ready: Option<&'static str>,
}

impl Spelling {
    /// Plain SQL, the spelling a backend starts from: ids stored as text,
    /// no row locks, live tasks counted from the table, a plain `BEGIN`,
    /// no other replicas to announce work to. `task_columns` is the
    /// backend's own.
    pub const PLAIN: Spelling = Spelling {
        task_columns: "",
        id_text: "id",
        id_cast: "",
        for_update: "",
        pending_tasks: "tasks",
        running_tasks: "tasks",
        begin: "BEGIN",
        announce_ready: None,
    };
}

/// The shared statements in one database's spelling, built once per
/// backend (see [`Dialect::statements`]).
pub struct Statements {
    fetch_task: String,
    fetch_task_locked: String,
    cancel: String,
    retry: String,
    give_back: String,
    select_ids: String,
    purge_one: String,
    record_progress: String,
    expire_overdue: String,
    end_one_attempt: String,
    attempts: String,
    queue_stats: String,
    task_columns: &'static str,
    id_cast: &'static str,
    begin: &'static str,
    announce_ready: Option<&'static str>,
}

impl Statements {
    /// Builds every shared statement with `spelling`.
    pub fn new(spelling: &Spelling) -> Self {
        let Spelling {
            task_columns,
            id_text,
            id_cast,
            for_update,
            pending_tasks,
            running_tasks,
            begin,
            announce_ready,
        } = spelling;
        let fetch_task = format!("SELECT {task_columns} FROM tasks WHERE id = $1{id_cast}");
        Statements {
            fetch_task_locked: format!("{fetch_task}{for_update}"),
            fetch_task,
            cancel: format!(
                "UPDATE tasks SET status = 'cancelled', last_error = $1, finished_at = $2,
                     updated_at = $2, lease_session = NULL, lease_agent = NULL, lease_expires_at = NULL
                 WHERE id = $3{id_cast} RETURNING {task_columns}"
            ),
            retry: format!(
                "UPDATE tasks SET status = 'pending', max_attempts = attempts + $1, run_at = $2,
                     updated_at = $2, finished_at = NULL, result = NULL, start_by = NULL
                 WHERE id = $3{id_cast} RETURNING {task_columns}"
            ),
            give_back: format!(
                "UPDATE tasks SET status = 'pending', attempts = attempts - 1,
                     started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END,
                     lease_session = NULL, lease_agent = NULL, lease_expires_at = NULL,
                     updated_at = $1
                 WHERE id = $2{id_cast} AND {STILL_RUNNING} AND attempts = $3
                     AND lease_session = $4
                 RETURNING task_type"
            ),
            select_ids: format!(
                "SELECT {id_text} AS id FROM tasks
                 WHERE task_type = $1 AND status = $2 AND created_at >= $3 AND created_at < $4
                     AND ($5 = '' OR last_error LIKE $6 ESCAPE '\\') AND id > $7{id_cast}
                 ORDER BY id LIMIT $8"
            ),
            purge_one: format!(
                "DELETE FROM tasks WHERE id = $1{id_cast} AND status IN ('completed', 'dead', 'cancelled', 'expired')
                 RETURNING task_type"
            ),
            record_progress: format!(
                "UPDATE tasks SET progress = $1
                 WHERE id = $2{id_cast} AND {STILL_RUNNING} AND attempts = $3
                 RETURNING task_type"
            ),
            expire_overdue: format!(
                "UPDATE tasks SET status = 'expired', finished_at = $1, updated_at = $1,
                     last_error = $2
                 WHERE id IN (
                     SELECT id FROM tasks
                     WHERE status = 'pending' AND start_by IS NOT NULL AND start_by <= $1
                     ORDER BY start_by LIMIT $3{for_update})
                     AND {STILL_PENDING}
                 RETURNING {id_text} AS id, task_type"
            ),
            end_one_attempt: end_attempts_sql(
                id_text,
                "$1",
                "$2",
                "$3",
                &format!("id = $4{id_cast} AND attempts = $5"),
            ),
            attempts: attempts_sql(&format!("$1{id_cast}"), "$1"),
            queue_stats: queue_stats_sql(pending_tasks, running_tasks),
            task_columns,
            id_cast,
            begin,
            announce_ready: *announce_ready,
        }
    }

    /// One task by id (`$1`); with `FOR UPDATE` where the database needs it
    /// to keep the row until the transaction ends.
    pub fn fetch_task(&self, locked: bool) -> &str {
        if locked {
            &self.fetch_task_locked
        } else {
            &self.fetch_task
        }
    }

    /// Up to `$8` ids of tasks after id `$7` that match a selector (`$1`
    /// type, `$2` status, `$3`..`$4` created, `$5` error text or '' and `$6`
    /// its LIKE pattern), in id order.
    pub fn select_ids(&self) -> &str {
        &self.select_ids
    }

    /// Returns task `$2`'s attempt `$3`, still queued with session `$4`,
    /// to the queue uncounted at `$1`; returns its type.
    pub fn give_back(&self) -> &str {
        &self.give_back
    }

    /// Sets task `$2`'s progress to `$1` while attempt `$3` runs.
    pub fn record_progress(&self) -> &str {
        &self.record_progress
    }

    /// Ends EXPIRED, at `$1` with error `$2`, up to `$3` PENDING tasks whose
    /// deadline to start by has passed, through the `tasks_start_by` index;
    /// returns their ids and types.
    pub fn expire_overdue(&self) -> &str {
        &self.expire_overdue
    }

    /// Deletes finished task `$1` (its attempts first, apart).
    pub fn purge_one(&self) -> &str {
        &self.purge_one
    }

    /// Ends task `$4`'s attempt `$5` at `$1` with outcome `$2` and error
    /// `$3`, from the task row (see [`end_attempts_sql`]).
    pub fn end_one_attempt(&self) -> &str {
        &self.end_one_attempt
    }

    /// The `queue_stats` query (`$1` the domain or NULL, `$2` the first
    /// second that counts as recent).
    pub fn queue_stats(&self) -> &str {
        &self.queue_stats
    }
}

/// A database taskplane stores in: its shared statements, and where a
/// listing reads from.
pub trait Dialect: Database {
    /// The shared statements in this database's spelling, built on first use.
    const STATEMENTS: &'static LazyLock<Statements>;

    /// The shared statements in this database's spelling.
    fn statements() -> &'static Statements {
        Self::STATEMENTS
    }

    /// Where a `ListTasks` listing of `filter` reads from: the table, or
    /// the table with an index named where the planner needs telling.
    fn listing_source(_filter: &TaskFilter) -> &'static str {
        "tasks"
    }

    /// Where a listing of `filter` looks first, and how many of the newest
    /// rows there: when those hold a full page, it is the answer; otherwise
    /// the listing reads from [`Dialect::listing_source`]. `None` reads
    /// from the source at once.
    fn listing_window(_filter: &TaskFilter) -> Option<(&'static str, u32)> {
        None
    }
}

/// The `queue_stats` query, reading PENDING and RUNNING tasks from
/// `pending` and `running` (SQLite must be told to use the partial
/// indexes). Each (type, status) comes from exactly one branch: PENDING
/// from the ready index, RUNNING from the lease index, finished states from
/// `task_counts`.
fn queue_stats_sql(pending: &str, running: &str) -> String {
    format!(
        "WITH counts (task_type, status, count, recent) AS (
             SELECT task_type, 'pending', count(*), 0 FROM {pending}
             WHERE status = 'pending' GROUP BY task_type
             UNION ALL
             SELECT task_type, 'running', count(*), 0 FROM {running}
             WHERE status = 'running' GROUP BY task_type
             UNION ALL
             SELECT task_type, status, CAST(sum(count) AS BIGINT),
                    CAST(sum(CASE WHEN second >= $2 THEN count ELSE 0 END) AS BIGINT)
             FROM task_counts GROUP BY task_type, status)
         SELECT counts.task_type, task_types.domain, counts.status, counts.count, counts.recent
         FROM counts JOIN task_types ON task_types.task_type = counts.task_type
         WHERE (counts.count > 0 OR counts.recent > 0)
           AND (CAST($1 AS TEXT) IS NULL OR task_types.domain = $1)"
    )
}

/// The attempts of one task in order, given how each database spells the
/// task's id as a `tasks.id` and as a `task_attempts.task_id`.
///
/// A task's latest attempt, while it runs and once it completed the task,
/// is read from the task row: who holds or held the lease, which attempt it
/// is, when it started. So the claim and the completion, the path every
/// task takes, write no attempt row; `task_attempts` holds the attempts
/// that ended otherwise (see [`end_attempts_sql`]). A row for that same
/// attempt, from before this rule, gives way to the task row.
fn attempts_sql(task_id: &str, attempt_task_id: &str) -> String {
    format!(
        "WITH latest AS (
             SELECT attempts AS attempt, lease_agent AS agent_id, lease_session AS session_id,
                    started_at, CASE WHEN status = 'completed' THEN finished_at END AS finished_at,
                    CASE WHEN status = 'completed' THEN 'completed' END AS outcome,
                    CAST(NULL AS TEXT) AS error
             FROM tasks
             WHERE id = {task_id} AND status IN ('running', 'completed') AND lease_agent IS NOT NULL)
         SELECT attempt, agent_id, session_id, started_at, finished_at, outcome, error
         FROM task_attempts
         WHERE task_id = {attempt_task_id} AND attempt NOT IN (SELECT attempt FROM latest)
         UNION ALL
         SELECT * FROM latest
         ORDER BY attempt"
    )
}

/// Ends the current attempt of each RUNNING task that `condition` picks,
/// given how each database spells `tasks.id` as text, the clock, the
/// outcome and the error: a `task_attempts` row taken from the task row,
/// written before the task row forgets who ran the attempt. Completions
/// write none (see [`attempts_sql`]). An open row written before that rule
/// is filled in; an ended one is never overwritten.
pub fn end_attempts_sql(
    id_text: &str,
    now: &str,
    outcome: &str,
    error: &str,
    condition: &str,
) -> String {
    format!(
        "INSERT INTO task_attempts
             (task_id, attempt, agent_id, session_id, started_at, finished_at, outcome, error)
         SELECT {id_text}, attempts, lease_agent, lease_session, started_at, {now}, {outcome}, {error}
         FROM tasks WHERE status = 'running' AND {condition}
         ON CONFLICT (task_id, attempt) DO UPDATE
             SET finished_at = excluded.finished_at, outcome = excluded.outcome, error = excluded.error
             WHERE task_attempts.finished_at IS NULL"
    )
}
