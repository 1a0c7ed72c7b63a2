//! Flow control: an operator's limits on how much of one task type runs.
//!
//! A type may be **paused** (nothing new is delivered; what runs finishes),
//! limited to **`max_running`** attempts at once across every agent and
//! replica, and given a **concurrency key** — a path into each task's
//! payload or metadata, such as `payload.customer_id` — with
//! **`max_running_per_key`**, so that one customer's flood cannot hold every
//! slot: a claim takes the oldest ready tasks whose keys have room, so a
//! flood of one key never holds more than its share and the other keys'
//! tasks start as slots free. A **rate limit** allows N starts
//! per second, minute or hour, refilled smoothly from a token bucket kept
//! in the type's row — or, with a **rate limit key**, N per window for
//! each value of that key, from a bucket per key (`rate_buckets`; see
//! [`crate::engine::admission`]).
//!
//! The rules live here; a claim applies them in SQL. Types without a policy
//! take the claim's fast path. A claim of a limited type goes through
//! `Store::claim`'s limited path, which locks the type's row (PostgreSQL:
//! `FOR UPDATE`, so replicas take turns; SQLite has one writer anyway),
//! counts what runs, and leases only what the limits allow. Which types are
//! limited or paused is a view ([`FlowView`]) refreshed when this replica
//! changes a policy, when another replica announces a change (PostgreSQL
//! `NOTIFY`), and every heartbeat interval. A limited type is never handed
//! off at enqueue.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::error::Error;
use crate::model::TaskType;

/// How a replica announces, on the channel of ready work, that a type's
/// policy changed: the type behind this prefix (task type names have no
/// ':', so the two kinds of notice cannot be confused).
const POLICY_NOTICE: &str = "flow:";

/// The notice announcing that `task_type`'s policy changed.
pub fn policy_notice(task_type: &str) -> String {
    format!("{POLICY_NOTICE}{task_type}")
}

/// The task type whose policy a notice says changed; `None` for a notice
/// of ready work.
pub fn policy_changed(notice: &str) -> Option<&str> {
    notice.strip_prefix(POLICY_NOTICE)
}

/// Where a task's concurrency key is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The task's payload.
    Payload,
    /// The task's metadata.
    Metadata,
}

/// A path into a task's payload or metadata, e.g. `payload.customer_id`
/// or `metadata.tenant`: dot-separated names of letters, digits and `_`.
/// What groups tasks for a per-key limit (the concurrency key, the rate
/// limit key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPath {
    /// Payload or metadata.
    pub source: KeySource,
    /// The names below it, at least one.
    pub fields: Vec<String>,
}

impl KeyPath {
    /// Parses `payload.a.b` or `metadata.tenant` given as `option`, saying
    /// what is wrong.
    pub fn parse(option: &str, path: &str) -> Result<Self, Error> {
        let invalid = |why: &str| {
            Error::InvalidArgument(format!(
                "{option} '{path}' {why}: write a path into the payload or the metadata, e.g. payload.customer_id or metadata.tenant"
            ))
        };
        let mut parts = path.split('.');
        let source = match parts.next() {
            Some("payload") => KeySource::Payload,
            Some("metadata") => KeySource::Metadata,
            _ => return Err(invalid("does not start with 'payload.' or 'metadata.'")),
        };
        let fields: Vec<String> = parts.map(str::to_owned).collect();
        if fields.is_empty() {
            return Err(invalid("names no field"));
        }
        let valid = |field: &String| {
            !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !fields.iter().all(valid) || (source == KeySource::Metadata && fields.len() != 1) {
            return Err(invalid(
                "has an empty or invalid name (letters, digits and '_'; metadata has one level)",
            ));
        }
        Ok(KeyPath { source, fields })
    }

    /// The column the key is read from.
    pub fn column(&self) -> &'static str {
        match self.source {
            KeySource::Payload => "payload",
            KeySource::Metadata => "metadata",
        }
    }

    /// The key's value in a task's payload or metadata, as text; `None`
    /// when the task does not have it (such tasks share one key).
    pub fn value_in(
        &self,
        payload: &serde_json::Map<String, serde_json::Value>,
        metadata: &std::collections::BTreeMap<String, String>,
    ) -> Option<String> {
        match self.source {
            KeySource::Metadata => metadata.get(&self.fields[0]).cloned(),
            KeySource::Payload => {
                let mut value = payload.get(&self.fields[0])?;
                for field in &self.fields[1..] {
                    value = value.get(field)?;
                }
                match value {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(text) => Some(text.clone()),
                    other => Some(other.to_string()),
                }
            }
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.column(), self.fields.join("."))
    }
}

/// At most `count` task starts per `per`, refilled smoothly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Starts per window, at least 1.
    pub count: u32,
    /// The window: a second, a minute or an hour.
    pub per: Duration,
}

impl RateLimit {
    /// Parses `20/second`, `100/minute` or `1000/hour` (also `s`, `min`,
    /// `h`), saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let invalid = || {
            Error::InvalidArgument(format!(
                "rate_limit '{text}' is not N/second, N/minute or N/hour with N at least 1, e.g. 20/second"
            ))
        };
        let (count, per) = text.trim().split_once('/').ok_or_else(invalid)?;
        let count: u32 = count.trim().parse().map_err(|_| invalid())?;
        let per = match per.trim() {
            "second" | "sec" | "s" => Duration::from_secs(1),
            "minute" | "min" | "m" => Duration::from_secs(60),
            "hour" | "h" => Duration::from_secs(3600),
            _ => return Err(invalid()),
        };
        if count == 0 {
            return Err(invalid());
        }
        Ok(RateLimit { count, per })
    }

    /// Starts per second.
    fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }

    /// The most starts saved up while none were wanted: a second's worth
    /// (at least one), so a type idle for an hour does not start an hour's
    /// worth at once, and claims a poll interval apart still reach the rate.
    pub fn capacity(&self) -> f64 {
        self.per_second().max(1.0)
    }

    /// How long an empty bucket takes to fill: a bucket last refilled this
    /// long ago is full, as good as none.
    pub fn fill_time(&self) -> Duration {
        Duration::from_secs_f64(self.capacity() / self.per_second())
    }

    /// A bucket of `tokens` last refilled at `refilled_ms`, refilled to
    /// `now_ms` (Unix milliseconds).
    pub fn refill(&self, tokens: f64, refilled_ms: i64, now_ms: i64) -> f64 {
        let elapsed = (now_ms - refilled_ms).max(0) as f64 / 1000.0;
        (tokens + elapsed * self.per_second()).min(self.capacity())
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = match self.per.as_secs() {
            1 => "second",
            60 => "minute",
            _ => "hour",
        };
        write!(f, "{}/{per}", self.count)
    }
}

/// One task type's flow-control policy. The default limits nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowPolicy {
    /// Deliver nothing new.
    pub paused: bool,
    /// While paused, refuse new tasks instead of queueing them.
    pub refuse_enqueues: bool,
    /// At most this many running at once, across all agents and replicas.
    pub max_running: Option<u32>,
    /// What groups tasks for `max_running_per_key`.
    pub concurrency_key: Option<KeyPath>,
    /// At most this many running at once per key.
    pub max_running_per_key: Option<u32>,
    /// At most this many starts per window (per `rate_limit_key` value
    /// when that is set).
    pub rate_limit: Option<RateLimit>,
    /// What groups tasks for a rate limit per key.
    pub rate_limit_key: Option<KeyPath>,
}

impl FlowPolicy {
    /// True when claims of the type must take the limited path.
    pub fn limits(&self) -> bool {
        self.paused
            || self.max_running.is_some()
            || self.max_running_per_key.is_some()
            || self.rate_limit.is_some()
    }

    /// True when a claim must read each ready task's key: a limit per
    /// concurrency key or a rate limit per key.
    pub fn keyed(&self) -> bool {
        self.limited_key().is_some() || self.rate_key().is_some()
    }

    /// The concurrency key, when a per-key limit applies to it.
    pub fn limited_key(&self) -> Option<&KeyPath> {
        self.concurrency_key
            .as_ref()
            .filter(|_| self.max_running_per_key.is_some())
    }

    /// The rate limit key, when the rate limit is kept per key.
    pub fn rate_key(&self) -> Option<&KeyPath> {
        self.rate_limit_key
            .as_ref()
            .filter(|_| self.rate_limit.is_some())
    }

    /// The rate limit of the whole type, when it has one not kept per key.
    pub fn type_rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit.filter(|_| self.rate_limit_key.is_none())
    }

    /// Checks that the limits make sense together.
    pub fn check(&self) -> Result<(), Error> {
        if self.rate_limit_key.is_some() && self.rate_limit.is_none() {
            return Err(Error::InvalidArgument(
                "rate_limit_key needs a rate_limit: say how many starts each key may have, e.g. --rate-limit 5/second".into(),
            ));
        }
        if self.max_running_per_key.is_some() && self.concurrency_key.is_none() {
            return Err(Error::InvalidArgument(
                "max_running_per_key needs a concurrency_key: say what groups the tasks, e.g. --concurrency-key payload.customer_id".into(),
            ));
        }
        Ok(())
    }

    /// Refuses new tasks of `task_type` while it is paused and refusing
    /// them.
    pub fn check_enqueue(&self, task_type: &str) -> Result<(), Error> {
        if self.paused && self.refuse_enqueues {
            return Err(Error::FailedPrecondition(format!(
                "task type '{task_type}' is paused and refuses new tasks: enqueue it again after \
                 `taskplane types resume {task_type}`"
            )));
        }
        Ok(())
    }

    /// How many more tasks of the type may start, given how many run.
    pub fn room(&self, running: u32) -> u32 {
        if self.paused {
            return 0;
        }
        self.max_running
            .map_or(u32::MAX, |max| max.saturating_sub(running))
    }
}

/// A change to a type's limits: each `Some` replaces that limit (`Some(0)`,
/// or an empty key, removes it); `None` keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowChange {
    /// Pause (`true`) or resume (`false`).
    pub paused: Option<bool>,
    /// Refuse enqueues while paused; a resume without it clears it.
    pub refuse_enqueues: Option<bool>,
    /// The new `max_running`; 0 removes it.
    pub max_running: Option<u32>,
    /// The new concurrency key; `Some(None)` removes it.
    pub concurrency_key: Option<Option<KeyPath>>,
    /// The new `max_running_per_key`; 0 removes it.
    pub max_running_per_key: Option<u32>,
    /// The new rate limit; `Some(None)` removes it.
    pub rate_limit: Option<Option<RateLimit>>,
    /// The new rate limit key; `Some(None)` removes it.
    pub rate_limit_key: Option<Option<KeyPath>>,
}

impl FlowChange {
    /// `policy` with this change applied, checked.
    pub fn apply_to(&self, policy: &FlowPolicy) -> Result<FlowPolicy, Error> {
        let limit = |value: Option<u32>, old: Option<u32>| match value {
            Some(0) => None,
            Some(n) => Some(n),
            None => old,
        };
        let paused = self.paused.unwrap_or(policy.paused);
        let changed = FlowPolicy {
            paused,
            refuse_enqueues: paused && self.refuse_enqueues.unwrap_or(policy.refuse_enqueues),
            max_running: limit(self.max_running, policy.max_running),
            concurrency_key: self
                .concurrency_key
                .clone()
                .unwrap_or_else(|| policy.concurrency_key.clone()),
            max_running_per_key: limit(self.max_running_per_key, policy.max_running_per_key),
            rate_limit: self.rate_limit.unwrap_or(policy.rate_limit),
            rate_limit_key: self
                .rate_limit_key
                .clone()
                .unwrap_or_else(|| policy.rate_limit_key.clone()),
        };
        changed.check()?;
        Ok(changed)
    }
}

/// Which task types have a policy that limits them: what decides whether a
/// claim takes the fast path and whether a task may be handed off.
#[derive(Debug, Default)]
pub struct FlowView {
    limited: RwLock<Arc<HashMap<String, FlowPolicy>>>,
}

impl FlowView {
    /// Replaces the view with the policies of `task_types`; true when it
    /// changed.
    pub fn update(&self, task_types: &[TaskType]) -> bool {
        let limited: HashMap<String, FlowPolicy> = task_types
            .iter()
            .filter(|t| t.flow.limits())
            .map(|t| (t.task_type.clone(), t.flow.clone()))
            .collect();
        let mut current = self.limited.write().expect("flow view lock poisoned");
        if **current == limited {
            return false;
        }
        *current = Arc::new(limited);
        true
    }

    /// The limited types and their policies now.
    pub fn current(&self) -> Arc<HashMap<String, FlowPolicy>> {
        Arc::clone(&self.limited.read().expect("flow view lock poisoned"))
    }

    /// True when `task_type` has a policy that limits it.
    pub fn limits(&self, task_type: &str) -> bool {
        let limited = self.limited.read().expect("flow view lock poisoned");
        !limited.is_empty() && limited.contains_key(task_type)
    }
}

/// Why a due PENDING task of a limited type waits, given how many of its
/// type (and of its key) run now. `None` when its limits leave room.
pub fn waiting_for(
    task_type: &str,
    policy: &FlowPolicy,
    running: u32,
    key: Option<(&str, u32)>,
) -> Option<String> {
    if policy.paused {
        return Some(format!(
            "task type '{task_type}' is paused: resume it with `taskplane types resume {task_type}`"
        ));
    }
    if let Some(max) = policy.max_running.filter(|max| running >= *max) {
        return Some(format!(
            "task type '{task_type}' has {running} running of its max_running {max}"
        ));
    }
    match (key, &policy.concurrency_key, policy.max_running_per_key) {
        (Some((value, running)), Some(path), Some(max)) if running >= max => Some(format!(
            "{path} = '{value}' has {running} running of its max_running_per_key {max}"
        )),
        _ => policy.rate_limit.map(|rate| match &policy.rate_limit_key {
            Some(path) => format!(
                "task type '{task_type}' starts at most {rate} per {path}: it waits its turn"
            ),
            None => format!("task type '{task_type}' starts at most {rate}: it waits its turn"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_name_payload_or_metadata_fields() {
        let key = KeyPath::parse("concurrency_key", "payload.customer.id").unwrap();
        assert_eq!(key.source, KeySource::Payload);
        assert_eq!(key.fields, ["customer", "id"]);
        assert_eq!(key.to_string(), "payload.customer.id");
        assert_eq!(
            KeyPath::parse("concurrency_key", "metadata.tenant")
                .unwrap()
                .column(),
            "metadata"
        );
        for bad in [
            "customer_id",
            "payload",
            "payload.",
            "payload.a..b",
            "payload.a-b",
            "metadata.a.b",
            "body.x",
        ] {
            let err = KeyPath::parse("concurrency_key", bad)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("'{bad}'")) && err.contains("e.g. payload.customer_id"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_key_reads_its_value_from_the_task() {
        let payload = serde_json::json!({"customer": {"id": 42}, "name": "acme", "none": null});
        let payload = payload.as_object().unwrap();
        let metadata = [("tenant".to_owned(), "eu-1".to_owned())].into();
        let read = |path: &str| {
            KeyPath::parse("concurrency_key", path)
                .unwrap()
                .value_in(payload, &metadata)
        };
        assert_eq!(read("payload.customer.id").as_deref(), Some("42"));
        assert_eq!(read("payload.name").as_deref(), Some("acme"));
        assert_eq!(read("payload.none"), None);
        assert_eq!(read("payload.missing"), None);
        assert_eq!(read("metadata.tenant").as_deref(), Some("eu-1"));
    }

    #[test]
    fn changes_replace_keep_or_remove_each_limit() {
        let key = KeyPath::parse("concurrency_key", "payload.customer_id").unwrap();
        let set = FlowChange {
            max_running: Some(5),
            concurrency_key: Some(Some(key.clone())),
            max_running_per_key: Some(1),
            ..FlowChange::default()
        };
        let policy = set.apply_to(&FlowPolicy::default()).unwrap();
        assert_eq!(policy.max_running, Some(5));
        assert!(policy.limits() && !policy.paused);
        let paused = FlowChange {
            paused: Some(true),
            ..FlowChange::default()
        }
        .apply_to(&policy)
        .unwrap();
        assert_eq!(
            (paused.paused, paused.max_running),
            (true, Some(5)),
            "the rest is kept"
        );
        assert_eq!(paused.room(0), 0);
        let cleared = FlowChange {
            max_running: Some(0),
            ..FlowChange::default()
        }
        .apply_to(&policy)
        .unwrap();
        assert_eq!(cleared.max_running, None);
        assert_eq!(cleared.room(100), u32::MAX);
        let orphan = FlowChange {
            concurrency_key: Some(None),
            ..FlowChange::default()
        }
        .apply_to(&policy);
        assert!(
            orphan
                .unwrap_err()
                .to_string()
                .contains("needs a concurrency_key")
        );
    }

    #[test]
    fn rate_limits_parse_and_refill_smoothly_up_to_a_seconds_worth() {
        let rate = RateLimit::parse("20/second").unwrap();
        assert_eq!(rate.to_string(), "20/second");
        assert_eq!(
            RateLimit::parse("100 / min").unwrap().per,
            Duration::from_secs(60)
        );
        for bad in ["20", "0/second", "20/day", "x/hour", "-1/s"] {
            let err = RateLimit::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains(&format!("'{bad}'")) && err.contains("e.g. 20/second"),
                "{err}"
            );
        }
        assert_eq!(rate.refill(0.0, 1_000, 1_050), 1.0, "one start per 50 ms");
        assert_eq!(rate.refill(0.5, 1_000, 1_000), 0.5);
        assert_eq!(
            rate.refill(0.0, 0, 3_600_000),
            20.0,
            "an idle hour saves a second's worth"
        );
        assert_eq!(
            rate.refill(3.0, 2_000, 1_000),
            3.0,
            "a clock going back adds nothing"
        );
        let hourly = RateLimit::parse("1000/hour").unwrap();
        assert_eq!(
            hourly.refill(0.0, 0, 3_600_000),
            1.0,
            "at least one start saved"
        );
    }

    #[test]
    fn a_waiting_task_is_told_which_limit_holds_it() {
        let policy = FlowPolicy {
            max_running: Some(5),
            concurrency_key: Some(
                KeyPath::parse("concurrency_key", "payload.customer_id").unwrap(),
            ),
            max_running_per_key: Some(1),
            ..FlowPolicy::default()
        };
        assert_eq!(waiting_for("charge", &policy, 2, Some(("acme", 0))), None);
        assert!(
            waiting_for("charge", &policy, 5, None)
                .unwrap()
                .contains("5 running of its max_running 5")
        );
        assert!(
            waiting_for("charge", &policy, 2, Some(("acme", 1)))
                .unwrap()
                .contains("payload.customer_id = 'acme' has 1 running")
        );
        let paused = FlowPolicy {
            paused: true,
            ..policy
        };
        assert!(
            waiting_for("charge", &paused, 0, None)
                .unwrap()
                .contains("taskplane types resume charge")
        );
    }
}
