//! `FileCleanupHandler`: deletes files older than an age whose names match a
//! glob, under one root directory it never leaves.
//!
//! Payload: `path` (a directory relative to the root, default `.`),
//! `pattern` (a glob on file names, default `*`), `older_than_secs`
//! (default 0: any age), `recursive` (default true), `dry_run` (default
//! false: report what would be deleted, delete nothing).
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

/// Deletes old files under one root.
pub struct FileCleanupHandler {
    root: Option<PathBuf>,
    root_variable: &'static str,
    subdirectory: Option<String>,
    description: String,
}

impl FileCleanupHandler {
    /// Cleans under `root`; `root_variable` names the setting that provides
    /// it, for the error when it is missing.
    pub fn new(root: Option<PathBuf>, root_variable: &'static str) -> Self {
        FileCleanupHandler {
            root,
            root_variable,
            subdirectory: None,
            description: "Deletes old files matching a pattern".into(),
        }
    }

    /// Confines every task to `template` under the root, where `{field}` is
    /// replaced by that payload field (e.g. `users/{user_id}`).
    pub fn within(mut self, template: &str) -> Self {
        self.subdirectory = Some(template.to_owned());
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

/// Fills `{field}` placeholders from the payload; each value must be a plain name.
fn fill(template: &str, payload: &serde_json::Value) -> Result<String, TaskError> {
    let mut path = String::new();
    for (i, part) in template.split('{').enumerate() {
        if i == 0 {
            path.push_str(part);
            continue;
        }
        let (field, rest) = part.split_once('}').unwrap_or((part, ""));
        let value = match payload.get(field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => return Err(TaskError::bad_payload(field, "a string or number")),
        };
        if value.is_empty()
            || !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return Err(TaskError::bad_payload(
                field,
                "a plain name (letters, digits, '-', '_')",
            ));
        }
        path.push_str(&value);
        path.push_str(rest);
    }
    Ok(path)
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
        let relative = match &self.subdirectory {
            Some(template) => fill(template, payload)?,
            None => payload
                .get("path")
                .and_then(|p| p.as_str())
                .unwrap_or(".")
                .to_owned(),
        };
        let pattern_text = payload
            .get("pattern")
            .and_then(|p| p.as_str())
            .unwrap_or("*");
        let pattern = glob::Pattern::new(pattern_text).map_err(|e| {
            TaskError::Permanent(format!("pattern '{pattern_text}' is not a glob: {e}"))
        })?;
        let older_than =
            Duration::from_secs(optional_u64(payload, "older_than_secs")?.unwrap_or(0));
        let recursive = optional_bool(payload, "recursive")?.unwrap_or(true);
        let dry_run = optional_bool(payload, "dry_run")?.unwrap_or(false);

        let root = tokio::fs::canonicalize(root).await.map_err(|e| {
            TaskError::Permanent(format!(
                "the cleanup root {} is unusable: {e}",
                root.display()
            ))
        })?;
        let requested = path_under(&root, &relative)?;
        let directory = match tokio::fs::canonicalize(&requested).await {
            Ok(directory) => directory,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(TaskResult::new(
                    json!({ "deleted": [], "files": 0, "bytes": 0, "dry_run": dry_run, "note": "the directory does not exist" }),
                ));
            }
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
        Ok(TaskResult::new(json!({
            listed: outcome.paths,
            "files": outcome.files,
            "bytes": outcome.bytes,
            "skipped_links": outcome.skipped_links,
            "dry_run": dry_run,
        })))
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

        let err = clean(&handler, json!({"path": "../"})).await.unwrap_err();
        assert!(
            err.to_string().contains("leaves the handler's directory"),
            "{err}"
        );
        let err = clean(&handler, json!({"path": "escape"}))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("resolves outside the cleanup root"),
            "{err}"
        );
        let done = clean(&handler, json!({})).await.unwrap();
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
    async fn a_per_user_directory_takes_only_plain_names() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("users/42")).unwrap();
        std::fs::write(root.path().join("users/42/avatar.png"), "x").unwrap();
        let handler = FileCleanupHandler::new(Some(root.path().into()), "TEST_ROOT")
            .within("users/{user_id}");
        let done = clean(&handler, json!({"user_id": 42})).await.unwrap();
        assert_eq!(done["files"], 1);
        let err = clean(&handler, json!({"user_id": "../42"}))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("a plain name"), "{err}");
    }
}
