//! Which agent may take which task: handler versions and required labels.
//!
//! Most tasks name neither, and any agent of their type takes them. A task
//! that names a handler version (`"v2"`) goes to an agent that serves that
//! version exactly or, while no live agent does, to one whose older version
//! the SDK falls back to (`VersionedHandler`: v3 → v2 → v1). A task that
//! requires labels goes only to an agent whose labels include every pair.
//! Neither is ever given to an agent that would fail it: it waits PENDING,
//! and [`waiting_for`] says why.
//!
//! The rules live here, as pure functions; a claim applies them in SQL
//! through a [`crate::model::Claimant`] (the store filters on the versions and labels it
//! carries), and a hand-off at enqueue only takes tasks that name neither.
//! "Exactly served" is a view over the live agents of every replica
//! ([`RoutingView`]), refreshed when a session here starts or ends and
//! every heartbeat interval, so a replica sees another's agents within one
//! heartbeat interval.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;

use crate::model::{AgentSession, Task, TaskType};

/// How an agent's declared versions serve the version a task asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionMatch {
    /// It declares that version.
    Exact,
    /// It declares an older numbered version (`v<n>`) the SDK falls back to.
    Fallback,
    /// It cannot run the task.
    No,
}

/// How `declared` versions serve `asked`.
pub fn version_match(declared: &[String], asked: &str) -> VersionMatch {
    if declared.iter().any(|v| v == asked) {
        return VersionMatch::Exact;
    }
    let older = numbered(asked).is_some_and(|asked| {
        declared
            .iter()
            .filter_map(|v| numbered(v))
            .any(|v| v < asked)
    });
    if older {
        VersionMatch::Fallback
    } else {
        VersionMatch::No
    }
}

/// The number of a `v<n>` version.
fn numbered(version: &str) -> Option<u32> {
    version.strip_prefix('v')?.parse().ok()
}

/// True when `labels` has every pair of `required`.
pub fn labels_match(
    required: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    required.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// True when a task names no version and requires no labels: any agent of
/// its type may take it, so it can be handed off at enqueue.
pub fn unconstrained(task: &Task) -> bool {
    task.handler_version.is_empty() && task.required_labels.is_empty()
}

/// The key a claim matches a task's type and version by.
pub fn version_key(task_type: &str, version: &str) -> String {
    format!("{task_type}\t{version}")
}

/// The versions the live agents of every replica serve, and every version
/// declared per type: what decides whether a session may take a task by
/// fallback.
#[derive(Debug, Default, PartialEq)]
pub struct VersionsInUse {
    /// Every version ever declared, per type (the type's `versions`).
    declared: HashMap<String, BTreeSet<String>>,
    /// `(type, version)` served exactly by some live agent.
    served_exactly: BTreeSet<(String, String)>,
}

impl VersionsInUse {
    /// The view of these types and live sessions.
    pub fn new(task_types: &[TaskType], live: &[AgentSession]) -> Self {
        let declared = task_types
            .iter()
            .filter(|t| !t.versions.is_empty())
            .map(|t| (t.task_type.clone(), t.versions.iter().cloned().collect()))
            .collect();
        let served_exactly = live
            .iter()
            .flat_map(|session| &session.handler_versions)
            .flat_map(|(task_type, versions)| {
                versions.iter().map(|v| (task_type.clone(), v.clone()))
            })
            .collect();
        VersionsInUse {
            declared,
            served_exactly,
        }
    }

    /// The [`version_key`]s of the versions an agent serving
    /// `handler_versions` may take now: those it serves exactly, and those
    /// it falls back for that no live agent serves exactly.
    pub fn claimable(&self, handler_versions: &BTreeMap<String, Vec<String>>) -> Vec<String> {
        let mut keys = Vec::new();
        for (task_type, served) in handler_versions {
            let Some(declared) = self.declared.get(task_type) else {
                keys.extend(served.iter().map(|v| version_key(task_type, v)));
                continue;
            };
            for version in declared.iter().chain(served).collect::<BTreeSet<_>>() {
                let claimable = match version_match(served, version) {
                    VersionMatch::Exact => true,
                    VersionMatch::Fallback => !self
                        .served_exactly
                        .contains(&(task_type.clone(), version.clone())),
                    VersionMatch::No => false,
                };
                if claimable {
                    keys.push(version_key(task_type, version));
                }
            }
        }
        keys
    }
}

/// The replica's current [`VersionsInUse`].
#[derive(Default)]
pub struct RoutingView {
    versions: RwLock<VersionsInUse>,
}

impl RoutingView {
    /// Replaces the view; true when it changed.
    pub fn update(&self, view: VersionsInUse) -> bool {
        let mut current = self.versions.write().expect("routing view lock poisoned");
        if *current == view {
            return false;
        }
        *current = view;
        true
    }

    /// [`VersionsInUse::claimable`] on the current view.
    pub fn claimable(&self, handler_versions: &BTreeMap<String, Vec<String>>) -> Vec<String> {
        if handler_versions.is_empty() {
            return Vec::new();
        }
        self.versions
            .read()
            .expect("routing view lock poisoned")
            .claimable(handler_versions)
    }
}

/// Why a due PENDING task waits, given the live sessions of every replica:
/// no agent of its type, none with its labels, or none that serves its
/// version. `None` when some live agent may take it.
pub fn waiting_for(task: &Task, live: &[AgentSession]) -> Option<String> {
    let of_type: Vec<&AgentSession> = live
        .iter()
        .filter(|s| s.task_types.contains(&task.task_type))
        .collect();
    if of_type.is_empty() {
        return Some(format!(
            "no live agent serves task type '{}': start one",
            task.task_type
        ));
    }
    let labelled: Vec<&AgentSession> = of_type
        .iter()
        .copied()
        .filter(|s| labels_match(&task.required_labels, &s.labels))
        .collect();
    if labelled.is_empty() {
        return Some(format!(
            "no live agent of '{}' has the labels {}: start one with TASKPLANE_LABELS={}",
            task.task_type,
            pairs(&task.required_labels),
            pairs(&task.required_labels)
        ));
    }
    if task.handler_version.is_empty() {
        return None;
    }
    let serves = |s: &&AgentSession| {
        let served = s
            .handler_versions
            .get(&task.task_type)
            .map_or(&[][..], Vec::as_slice);
        version_match(served, &task.handler_version) != VersionMatch::No
    };
    if labelled.iter().any(serves) {
        return None;
    }
    Some(format!(
        "no live agent{} of '{}' serves handler version {} or an older one it falls back to",
        if task.required_labels.is_empty() {
            String::new()
        } else {
            format!(" with the labels {}", pairs(&task.required_labels))
        },
        task.task_type,
        task.handler_version
    ))
}

/// `k=v,k=v`.
fn pairs(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn versions_match_exactly_or_by_falling_back_to_an_older_one() {
        assert_eq!(
            version_match(&strings(&["v1", "v2"]), "v2"),
            VersionMatch::Exact
        );
        assert_eq!(
            version_match(&strings(&["v1"]), "v3"),
            VersionMatch::Fallback
        );
        assert_eq!(
            version_match(&strings(&["v2"]), "v1"),
            VersionMatch::No,
            "never newer"
        );
        assert_eq!(
            version_match(&[], "v1"),
            VersionMatch::No,
            "a plain handler serves no version"
        );
        assert_eq!(
            version_match(&strings(&["beta"]), "gamma"),
            VersionMatch::No
        );
        assert_eq!(
            version_match(&strings(&["beta"]), "beta"),
            VersionMatch::Exact
        );
    }

    fn status() -> crate::model::SessionStatus {
        crate::model::SessionStatus {
            slots: 1,
            running: 0,
            draining: false,
            last_seen_at: chrono::Utc::now(),
            health: Vec::new(),
            health_checked_at: None,
        }
    }

    fn pay_type(versions: &[&str]) -> TaskType {
        TaskType {
            task_type: "pay".into(),
            domain: "billing".into(),
            description: String::new(),
            versions: strings(versions),
            capabilities: Vec::new(),
            default_max_attempts: 3,
            default_timeout: std::time::Duration::from_secs(1),
            default_retry_policy: crate::model::RetryPolicy::default(),
            registered_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            flow: Default::default(),
        }
    }

    #[test]
    fn a_fallback_is_claimable_only_while_no_live_agent_serves_the_version_exactly() {
        let session = |versions: &[&str]| AgentSession {
            session_id: uuid::Uuid::now_v7(),
            agent_id: uuid::Uuid::now_v7(),
            agent_name: "a".into(),
            domains: strings(&["billing"]),
            task_types: strings(&["pay"]),
            labels: BTreeMap::new(),
            feature_flags: BTreeMap::new(),
            handler_versions: [("pay".to_string(), strings(versions))].into(),
            connected_at: chrono::Utc::now(),
            status: status(),
        };
        let v1_only = [("pay".to_string(), strings(&["v1"]))].into();
        let types = [pay_type(&["v1", "v2"])];

        let both = VersionsInUse::new(&types, &[session(&["v1"]), session(&["v1", "v2"])]);
        assert_eq!(
            both.claimable(&v1_only),
            ["pay\tv1"],
            "v2 goes to the v2 agent"
        );
        let alone = VersionsInUse::new(&types, &[session(&["v1"])]);
        assert_eq!(
            alone.claimable(&v1_only),
            ["pay\tv1", "pay\tv2"],
            "fallback while alone"
        );
    }

    #[test]
    fn a_waiting_task_says_what_it_waits_for() {
        let mut task = crate::store::rules::new_task(
            crate::store::suite::new_task("pay"),
            &pay_type(&["v1", "v2"]),
            chrono::Utc::now(),
        );
        let mut agent = AgentSession {
            session_id: uuid::Uuid::now_v7(),
            agent_id: uuid::Uuid::now_v7(),
            agent_name: "a".into(),
            domains: strings(&["billing"]),
            task_types: strings(&["pay"]),
            labels: [("region".to_string(), "us".to_string())].into(),
            feature_flags: BTreeMap::new(),
            handler_versions: BTreeMap::new(),
            connected_at: chrono::Utc::now(),
            status: status(),
        };
        assert_eq!(waiting_for(&task, std::slice::from_ref(&agent)), None);
        assert!(
            waiting_for(&task, &[])
                .unwrap()
                .contains("no live agent serves task type 'pay'")
        );
        task.required_labels = [("region".to_string(), "eu".to_string())].into();
        let why = waiting_for(&task, std::slice::from_ref(&agent)).unwrap();
        assert!(why.contains("labels region=eu"), "{why}");
        agent.labels.insert("region".into(), "eu".into());
        task.handler_version = "v2".into();
        let why = waiting_for(&task, std::slice::from_ref(&agent)).unwrap();
        assert!(why.contains("handler version v2"), "{why}");
        agent
            .handler_versions
            .insert("pay".into(), strings(&["v1"]));
        assert_eq!(waiting_for(&task, &[agent]), None, "v1 falls back for v2");
    }
}
