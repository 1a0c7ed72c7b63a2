//! How the client commands print: aligned columns for people, JSON for
//! scripts, and a quiet end when stdout closes early.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use taskplane_client::Task;
use taskplane_proto::v1::{FlowPolicy, HandlerInfo, TaskStatus};

use super::Output;

/// `println!` for command output: when stdout is closed early
/// (`taskplane task list | head`), the process ends quietly, as any Unix
/// tool does, instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::client_cli::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// Writes one line of command output; see [`say`].
pub(crate) fn write_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(error) = writeln!(std::io::stdout().lock(), "{line}") {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {error}");
        std::process::exit(1);
    }
}

/// A status's name as the CLI prints it (empty for a status it does not
/// know).
pub(super) fn status_name(status: i32) -> String {
    TaskStatus::try_from(status)
        .map(|status| status.short_name().to_owned())
        .unwrap_or_default()
}

pub(super) fn time(at: &Option<prost_types::Timestamp>) -> String {
    at.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// An instant as RFC 3339, with as many fractional digits as it needs.
fn instant(at: Option<DateTime<Utc>>) -> String {
    at.map(|at| at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

pub(super) fn task_json(task: &Task) -> Value {
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    json!({
        "id": task.id, "task_type": task.task_type, "domain": task.domain, "status": status_name(task.status as i32),
        "priority": task.priority, "attempts": task.attempts, "max_attempts": task.max_attempts,
        "payload": task.payload, "result": task.result,
        "last_error": text(&task.last_error), "run_at": instant(task.run_at), "created_at": instant(task.created_at),
        "finished_at": instant(task.finished_at), "idempotency_key": text(&task.idempotency_key),
        "handler_version": text(&task.handler_version), "metadata": task.metadata,
        "required_labels": task.required_labels, "waiting_for": text(&task.waiting_for),
        "parent_id": text(&task.parent_id), "start_by": instant(task.start_by),
        "progress": task.progress.as_ref().map(|p| json!({
            "fraction": p.fraction, "message": p.message, "reported_at": instant(p.reported_at),
        })),
    })
}

pub(super) fn type_json(info: &HandlerInfo) -> Value {
    let flow = info.flow.clone().unwrap_or_default();
    json!({
        "task_type": info.task_type, "domain": info.domain, "description": info.description,
        "versions": info.versions, "live_agents": info.live_agents,
        "paused": match (flow.paused, flow.refuse_enqueues) {
            (true, true) => "yes, refusing enqueues",
            (true, false) => "yes",
            _ => "no",
        },
        "limits": limits(&flow),
        "health": info.health.iter().map(|h| json!({"agent": h.agent_name, "healthy": h.healthy, "message": h.message})).collect::<Vec<_>>(),
    })
}

/// A type's limits in words, e.g. `max_running=5 max_running_per_key=1 by payload.customer_id`.
fn limits(flow: &FlowPolicy) -> String {
    let mut limits = Vec::new();
    if flow.max_running > 0 {
        limits.push(format!("max_running={}", flow.max_running));
    }
    if flow.max_running_per_key > 0 {
        limits.push(format!(
            "max_running_per_key={} by {}",
            flow.max_running_per_key, flow.concurrency_key
        ));
    }
    if !flow.rate_limit.is_empty() {
        limits.push(format!("rate_limit={}", flow.rate_limit));
        if !flow.rate_limit_key.is_empty() {
            limits.push(format!("per {}", flow.rate_limit_key));
        }
    }
    limits.join(" ")
}

/// Prints rows as aligned columns, or the JSON value.
pub(super) fn print(output: Output, columns: &[&str], rows: &[Value], json: Value) {
    if output == Output::Json {
        say!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON serializes")
        );
        return;
    }
    let cell = |row: &Value, column: &str| match &row[column] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).chars().count())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    say!(
        "{}",
        line(columns.iter().map(|c| c.to_uppercase()).collect())
    );
    for row in rows {
        say!("{}", line(columns.iter().map(|c| cell(row, c)).collect()));
    }
}

pub(super) const TASK_COLUMNS: [&str; 6] = [
    "id",
    "task_type",
    "status",
    "attempts",
    "created_at",
    "last_error",
];

pub(super) fn print_task(output: Output, task: &Task) {
    let json = task_json(task);
    if output == Output::Json {
        print(output, &[], &[], json);
        return;
    }
    for (key, value) in json.as_object().expect("an object") {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => continue,
            other => other.to_string(),
        };
        if !text.is_empty() {
            say!("{key:<16} {text}");
        }
    }
}
