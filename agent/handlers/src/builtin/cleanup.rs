//! `FileCleanupHandler`: deletes files older than an age whose names match a
//! glob, under one root directory it never leaves.
//!
//! Payload: `path` (a directory relative to the root, default `.`),
//! `pattern` (a glob on file names, required: `*` deletes every name) and
//! `older_than_secs` (required: 0 is any age), `recursive` (default true),
//! `dry_run` (default false: report what would be deleted, delete nothing).
//! Nothing is deleted by default: an empty payload is refused.
//!
//! Closing an account ([`FileCleanupHandler::for_accounts`], the guide's
//! `account_cleanup` contract) deletes every file under
//! `users/<user_id>`, but only with a `reason`, which the result keeps for
//! audit, and only when the payload states each precondition true
//! (`marked_for_deletion`, `billing_cleared`, `backup_completed`); it is a
//! dry run unless the payload says `"dry_run": false`.
//!
//! Safety: absolute paths and `..` are refused; the directory is resolved
//! with symlinks and must still lie inside the resolved root; symbolic links
//! met while walking are never followed nor deleted (they are reported as
//! skipped).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::json;

use super::{optional_bool, optional_u64, path_under};
use taskplane_agent::handler::{HandlerHealth, TaskContext, TaskError, TaskHandler, TaskResult};

/// The most deleted paths listed in a result.
const MAX_LISTED: usize = 1000;

/// The preconditions an account's cleanup checks, as its payload states
/// them: each must be `true`.
pub const ACCOUNT_PRECONDITIONS: [&str; 3] =
    ["marked_for_deletion", "billing_cleared", "backup_completed"];

/// Deletes old files under one root.
pub struct FileCleanupHandler {
    root: Option<PathBuf>,
    root_variable: &'static str,
    accounts: bool,
    description: String,
}

impl FileCleanupHandler {
    /// Cleans under `root`; `root_variable` names the setting that provides
    /// it, for the error when it is missing.
    pub fn new(root: Option<PathBuf>, root_variable: &'static str) -> Self {
        FileCleanupHandler {
            root,
            root_variable,
            accounts: false,
            description: "Deletes old files matching a pattern".into(),
        }
    }

    /// Closes accounts: each task deletes the files under
    /// `users/<user_id>`, with a reason and its preconditions (see the
    /// module's documentation).
    pub fn for_accounts(mut self) -> Self {
        self.accounts = true;
        self
    }

    /// Sets the description registered for the task type.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }
}

struct Plan {
    directory: PathBuf,
    pattern: glob::Pattern,
    older_than: Duration,
    recursive: bool,
    dry_run: bool,
}

#[derive(Default)]
struct Outcome {
    paths: Vec<String>,
    files: u64,
    bytes: u64,
    skipped_links: u64,
}

fn run(root: &Path, plan: Plan) -> Result<Outcome, TaskError> {
    let now = SystemTime::now();
    let mut outcome = Outcome::default();
    let depth = if plan.recursive { usize::MAX } else { 1 };
    for entry in walkdir::WalkDir::new(&plan.directory)
        .follow_links(false)
        .max_depth(depth)
    {
        let entry = entry.map_err(|e| {
            TaskError::Retryable(format!("walking {}: {e}", plan.directory.display()))
        })?;
        if entry.path_is_symlink() {
            outcome.skipped_links += 1;
            continue;
        }
        if !entry.file_type().is_file()
            || !plan.pattern.matches(&entry.file_name().to_string_lossy())
        {
            continue;
        }
        let metadata = entry
            .metadata()
            .map_err(|e| TaskError::Retryable(format!("{}: {e}", entry.path().display())))?;
        let age = metadata
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if age < plan.older_than {
            continue;
        }
        if !plan.dry_run {
            std::fs::remove_file(entry.path()).map_err(|e| {
                TaskError::Retryable(format!("cannot delete {}: {e}", entry.path().display()))
            })?;
        }
        outcome.files += 1;
        outcome.bytes += metadata.len();
        if outcome.paths.len() < MAX_LISTED {
            let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
            outcome.paths.push(relative.display().to_string());
        }
    }
    Ok(outcome)
}

/// The directory of the account `user_id` names, under the root; the id
/// must be a plain name.
fn account_directory(payload: &serde_json::Value) -> Result<String, TaskError> {
    let user = match payload.get("user_id") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err(TaskError::bad_payload("user_id", "a string or number")),
    };
    if user.is_empty()
        || !user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        return Err(TaskError::bad_payload(
            "user_id",
            "a plain name (letters, digits, '-', '_')",
        ));
    }
    Ok(format!("users/{user}"))
}

/// The reason an account's cleanup gives, once each precondition its
/// payload states is true.
fn account_reason(payload: &serde_json::Value) -> Result<String, TaskError> {
    let reason = super::required_str(payload, "reason")?.trim();
    if reason.is_empty() {
        return Err(TaskError::bad_payload(
            "reason",
            "why the account is deleted, for audit",
        ));
    }
    let unmet: Vec<&str> = ACCOUNT_PRECONDITIONS
        .into_iter()
        .filter(|condition| payload.get(*condition) != Some(&serde_json::Value::Bool(true)))
        .collect();
    if !unmet.is_empty() {
        return Err(TaskError::Permanent(format!(
            "the account cannot be cleaned up until {} (state each as true in the payload once it holds); nothing was deleted",
            unmet.join(", ")
        )));
    }
    Ok(reason.to_owned())
}

#[async_trait]
impl TaskHandler for FileCleanupHandler {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let payload = &context.payload;
        let Some(root) = &self.root else {
            return Err(TaskError::Permanent(format!(
                "no directory is configured for this task type: set {}; nothing was deleted",
                self.root_variable
            )));
        };
        let (relative, pattern_text, older_than, reason) = if self.accounts {
            let relative = account_directory(payload)?;
            (relative, "*", 0, Some(account_reason(payload)?))
        } else {
            let relative = payload.get("path").and_then(|p| p.as_str()).unwrap_or(".");
            let pattern = payload
                .get("pattern")
                .and_then(|p| p.as_str())
                .ok_or_else(|| {
                    TaskError::bad_payload("pattern", "a glob on file names (\"*\" for every name)")
                })?;
            let older_than = optional_u64(payload, "older_than_secs")?.ok_or_else(|| {
                TaskError::bad_payload("older_than_secs", "a number of seconds (0 for any age)")
            })?;
            (relative.to_owned(), pattern, older_than, None)
        };
        let pattern = glob::Pattern::new(pattern_text).map_err(|e| {
            TaskError::Permanent(format!("pattern '{pattern_text}' is not a glob: {e}"))
        })?;
        let older_than = Duration::from_secs(older_than);
        let recursive = optional_bool(payload, "recursive")?.unwrap_or(true);
        // Closing an account deletes for real only when told to.
        let dry_run = optional_bool(payload, "dry_run")?.unwrap_or(self.accounts);

        // A directory that does not exist (the root itself, or one under
        // it) has nothing to delete; the health check reports a missing root.
        let nothing = || {
            Ok(TaskResult::new(
                json!({ "deleted": [], "files": 0, "bytes": 0, "dry_run": dry_run, "note": "the directory does not exist" }),
            ))
        };
        let root = match tokio::fs::canonicalize(root).await {
            Ok(root) => root,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return nothing(),
            Err(error) => {
                return Err(TaskError::Permanent(format!(
                    "the cleanup root {} is unusable: {error}",
                    root.display()
                )));
            }
        };
        let requested = path_under(&root, &relative)?;
        let directory = match tokio::fs::canonicalize(&requested).await {
            Ok(directory) => directory,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return nothing(),
            Err(error) => {
                return Err(TaskError::Retryable(format!(
                    "{}: {error}",
                    requested.display()
                )));
            }
        };
        if !directory.starts_with(&root) {
            return Err(TaskError::Permanent(format!(
                "'{relative}' resolves outside the cleanup root (a symbolic link escapes it); nothing was deleted"
            )));
        }
        let plan = Plan {
            directory,
            pattern,
            older_than,
            recursive,
            dry_run,
        };
        let worker_root = root.clone();
        let outcome = tokio::task::spawn_blocking(move || run(&worker_root, plan))
            .await
            .map_err(|e| TaskError::Retryable(format!("the cleanup stopped: {e}")))??;
        let listed = if dry_run { "would_delete" } else { "deleted" };
        let mut result = json!({
            listed: outcome.paths,
            "files": outcome.files,
            "bytes": outcome.bytes,
            "skipped_links": outcome.skipped_links,
            "dry_run": dry_run,
        });
        if let Some(reason) = reason {
            result["reason"] = json!(reason);
            result["user_id"] = payload["user_id"].clone();
        }
        Ok(TaskResult::new(result))
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["filesystem".into()]
    }

    async fn health_check(&self) -> Option<HandlerHealth> {
        Some(match &self.root {
            None => HandlerHealth::unhealthy(format!(
                "no directory configured ({})",
                self.root_variable
            )),
            Some(root) if root.is_dir() => {
                HandlerHealth::healthy(format!("{} exists", root.display()))
            }
            Some(root) => {
                HandlerHealth::unhealthy(format!("{} is not a directory", root.display()))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn clean(
        handler: &FileCleanupHandler,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, TaskError> {
        Ok(serde_json::Value::Object(
            handler
                .handle(TaskContext::new("file_cleanup", payload))
                .await?
                .output,
        ))
    }

    fn age(path: &Path, seconds: u64) {
        let when = SystemTime::now() - Duration::from_secs(seconds);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    #[tokio::test]
    async fn deletes_only_old_matching_files_and_dry_run_deletes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let logs = root.path().join("app");
        std::fs::create_dir_all(logs.join("nested")).unwrap();
        for (name, seconds) in [
            ("old.log", 7200),
            ("new.log", 10),
            ("old.txt", 7200),
            ("nested/older.log", 9000),
        ] {
            std::fs::write(logs.join(name), "x").unwrap();
            age(&logs.join(name), seconds);
        }
        let handler = FileCleanupHandler::new(Some(root.path().into()), "TEST_ROOT");
        let payload =
            json!({"path": "app", "pattern": "*.log", "older_than_secs": 3600, "dry_run": true});
        let dry = clean(&handler, payload.clone()).await.unwrap();
        assert_eq!(dry["would_delete"].as_array().unwrap().len(), 2);
        assert!(logs.join("old.log").exists(), "a dry run deletes nothing");

        let mut real = payload;
        real["dry_run"] = json!(false);
        let done = clean(&handler, real).await.unwrap();
        let mut deleted: Vec<&str> = done["deleted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        deleted.sort();
        assert_eq!(deleted, ["app/nested/older.log", "app/old.log"]);
        assert!(
            !logs.join("old.log").exists()
                && logs.join("new.log").exists()
                && logs.join("old.txt").exists()
        );
    }

    #[tokio::test]
    async fn refuses_paths_and_links_that_leave_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious.log"), "keep").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("precious.log"),
            root.path().join("link.log"),
        )
        .unwrap();
        let handler = FileCleanupHandler::new(Some(root.path().into()), "TEST_ROOT");

        let all = |path: &str| json!({"path": path, "pattern": "*", "older_than_secs": 0});
        let err = clean(&handler, all("../")).await.unwrap_err();
        assert!(
            err.to_string().contains("leaves the handler's directory"),
            "{err}"
        );
        let err = clean(&handler, all("escape")).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("resolves outside the cleanup root"),
            "{err}"
        );
        let err = clean(&handler, json!({})).await.unwrap_err();
        assert!(
            err.to_string().contains("'pattern'") && !err.is_retryable(),
            "an empty payload deletes nothing: {err}"
        );
        let err = clean(&handler, json!({"pattern": "*"})).await.unwrap_err();
        assert!(err.to_string().contains("'older_than_secs'"), "{err}");
        let done = clean(&handler, json!({"pattern": "*", "older_than_secs": 0}))
            .await
            .unwrap();
        assert_eq!(
            (done["files"].clone(), done["skipped_links"].clone()),
            (json!(0), json!(2))
        );
        assert!(outside.path().join("precious.log").exists());

        let unconfigured = FileCleanupHandler::new(None, "TASKPLANE_LOG_DIR");
        let err = clean(&unconfigured, json!({})).await.unwrap_err();
        assert!(err.to_string().contains("set TASKPLANE_LOG_DIR") && !err.is_retryable());
    }

    #[tokio::test]
    async fn an_account_is_cleaned_with_a_reason_its_preconditions_and_a_dry_run_first() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("users/42")).unwrap();
        std::fs::write(root.path().join("users/42/avatar.png"), "x").unwrap();
        let handler = FileCleanupHandler::new(Some(root.path().into()), "TEST_ROOT").for_accounts();
        let ready = json!({
            "user_id": 42, "reason": "closed by the user",
            "marked_for_deletion": true, "billing_cleared": true, "backup_completed": true,
        });

        let err = clean(&handler, json!({"user_id": 42})).await.unwrap_err();
        assert!(err.to_string().contains("'reason'"), "{err}");
        let mut unpaid = ready.clone();
        unpaid["billing_cleared"] = json!(false);
        let err = clean(&handler, unpaid).await.unwrap_err();
        assert!(
            err.to_string().contains("until billing_cleared") && !err.is_retryable(),
            "{err}"
        );
        let dry = clean(&handler, ready.clone()).await.unwrap();
        assert_eq!(dry["dry_run"], true, "a dry run unless told otherwise");
        assert_eq!(dry["would_delete"], json!(["users/42/avatar.png"]));
        assert_eq!(dry["reason"], "closed by the user");
        assert!(root.path().join("users/42/avatar.png").exists());

        let mut real = ready;
        real["dry_run"] = json!(false);
        let done = clean(&handler, real.clone()).await.unwrap();
        assert_eq!(done["deleted"], json!(["users/42/avatar.png"]));
        assert!(!root.path().join("users/42/avatar.png").exists());
        real["user_id"] = json!("../42");
        let err = clean(&handler, real).await.unwrap_err();
        assert!(err.to_string().contains("a plain name"), "{err}");
    }
}
