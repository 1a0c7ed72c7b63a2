//! `DatabaseBackupHandler`: backs up the configured database into the
//! handler's backup directory — an online SQLite backup (`VACUUM INTO`,
//! consistent while the database is in use) or `pg_dump` for PostgreSQL
//! (when `pg_dump` is installed; otherwise a clear permanent error). The
//! URL's password reaches `pg_dump` through `PGPASSWORD`, never its command
//! line, where `ps` would show it to every user of the machine.
//! The result names the file, its size and its SHA-256.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use async_trait::async_trait;
use serde_json::json;
use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use super::sha256_file;
use taskplane_agent::handler::{HandlerHealth, TaskContext, TaskError, TaskHandler, TaskResult};

/// Backs up one database.
pub struct DatabaseBackupHandler {
    database_url: Option<String>,
    backup_dir: PathBuf,
    pg_dump: PathBuf,
}

impl DatabaseBackupHandler {
    /// Backs up `database_url` (from `TASKPLANE_BACKUP_DATABASE_URL`) into `backup_dir`.
    pub fn new(database_url: Option<String>, backup_dir: PathBuf) -> Self {
        DatabaseBackupHandler {
            database_url,
            backup_dir,
            pg_dump: PathBuf::from("pg_dump"),
        }
    }

    /// Runs this `pg_dump` (default: the one on `PATH`).
    pub fn with_pg_dump(mut self, program: impl Into<PathBuf>) -> Self {
        self.pg_dump = program.into();
        self
    }

    async fn sqlite(&self, url: &str, target: &Path) -> Result<(), TaskError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| {
                TaskError::Permanent(format!(
                    "TASKPLANE_BACKUP_DATABASE_URL is not an SQLite URL: {e}"
                ))
            })?
            .create_if_missing(false);
        let mut connection = options.connect().await.map_err(|e| {
            TaskError::Permanent(format!("cannot open the database to back up: {e}"))
        })?;
        sqlx::query("VACUUM INTO ?")
            .bind(target.display().to_string())
            .execute(&mut connection)
            .await
            .map_err(|e| TaskError::Retryable(format!("the SQLite backup failed: {e}")))?;
        Ok(())
    }

    async fn postgres(&self, url: &str, target: &Path) -> Result<(), TaskError> {
        let mut without_password = reqwest::Url::parse(url).map_err(|e| {
            TaskError::Permanent(format!(
                "TASKPLANE_BACKUP_DATABASE_URL is not a PostgreSQL URL: {e}"
            ))
        })?;
        let password = without_password.password().map(str::to_owned);
        // Cannot fail: the URL has a host, or it would not have parsed with
        // a password.
        let _ = without_password.set_password(None);
        let mut command = tokio::process::Command::new(&self.pg_dump);
        command
            .args(["--format=custom", "--file"])
            .arg(target)
            .arg(format!("--dbname={without_password}"));
        if let Some(password) = password {
            command.env("PGPASSWORD", password);
        }
        let output = command.output().await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => TaskError::Permanent(
                "pg_dump is not installed on this agent: install the PostgreSQL client tools"
                    .into(),
            ),
            _ => TaskError::Retryable(format!("pg_dump could not start: {e}")),
        })?;
        if !output.status.success() {
            return Err(TaskError::Retryable(format!(
                "pg_dump failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl TaskHandler for DatabaseBackupHandler {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let Some(url) = &self.database_url else {
            return Err(TaskError::Permanent(
                "no database to back up is configured: set TASKPLANE_BACKUP_DATABASE_URL (sqlite://… or postgres://…)".into(),
            ));
        };
        tokio::fs::create_dir_all(&self.backup_dir)
            .await
            .map_err(|e| {
                TaskError::Retryable(format!("cannot create {}: {e}", self.backup_dir.display()))
            })?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let (method, target) = if url.starts_with("sqlite:") {
            let target = self
                .backup_dir
                .join(format!("backup-{stamp}-{}.db", context.task_id));
            self.sqlite(url, &target).await?;
            ("sqlite-vacuum-into", target)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let target = self
                .backup_dir
                .join(format!("backup-{stamp}-{}.dump", context.task_id));
            self.postgres(url, &target).await?;
            ("pg_dump", target)
        } else {
            return Err(TaskError::Permanent(format!(
                "cannot back up '{url}': use sqlite://… or postgres://…"
            )));
        };
        let bytes = tokio::fs::metadata(&target)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let sha256 = sha256_file(&target)
            .await
            .map_err(|e| TaskError::Retryable(format!("cannot read the backup: {e}")))?;
        Ok(TaskResult::new(
            json!({ "path": target.display().to_string(), "bytes": bytes, "sha256": sha256, "method": method }),
        ))
    }

    fn description(&self) -> String {
        "Backs up the application database (SQLite online backup or pg_dump)".into()
    }

    async fn health_check(&self) -> Option<HandlerHealth> {
        Some(match &self.database_url {
            None => {
                HandlerHealth::unhealthy("no database configured (TASKPLANE_BACKUP_DATABASE_URL)")
            }
            Some(_) => HandlerHealth::healthy("a database to back up is configured"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pg_dump_gets_the_password_through_its_environment_not_its_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("pg_dump");
        let seen = dir.path().join("seen");
        // Records what it was given, and writes the dump file it was asked for.
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"args: $*\" > {seen}\necho \"password: $PGPASSWORD\" >> {seen}\necho dump > \"$3\"\n",
                seen = seen.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let handler = DatabaseBackupHandler::new(
            Some("postgres://app:s3cret@db.internal:5432/shop".into()),
            dir.path().join("backups"),
        )
        .with_pg_dump(&fake);
        let result = handler
            .handle(TaskContext::new("database_backup", json!({})))
            .await
            .unwrap()
            .output;
        assert_eq!(result["method"], "pg_dump");
        let seen = std::fs::read_to_string(&seen).unwrap();
        assert!(
            seen.contains("--dbname=postgres://app@db.internal:5432/shop"),
            "{seen}"
        );
        assert!(!seen.lines().next().unwrap().contains("s3cret"), "{seen}");
        assert!(seen.contains("password: s3cret"), "{seen}");
    }

    #[tokio::test]
    async fn backs_up_a_live_sqlite_database_into_a_readable_copy() {
        let dir = tempfile::tempdir().unwrap();
        let source = format!("sqlite://{}", dir.path().join("app.db").display());
        let mut connection = SqliteConnectOptions::from_str(&source)
            .unwrap()
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE users (name TEXT); INSERT INTO users VALUES ('ada'), ('grace')")
            .execute(&mut connection)
            .await
            .unwrap();

        let handler = DatabaseBackupHandler::new(Some(source), dir.path().join("backups"));
        let result = handler
            .handle(TaskContext::new("database_backup", json!({})))
            .await
            .unwrap()
            .output;
        let copy = format!("sqlite://{}", result["path"].as_str().unwrap());
        let mut restored = SqliteConnectOptions::from_str(&copy)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&mut restored)
            .await
            .unwrap();
        assert_eq!(count, 2);
        assert_eq!(result["sha256"].as_str().unwrap().len(), 64);

        let unconfigured = DatabaseBackupHandler::new(None, dir.path().into());
        let err = unconfigured
            .handle(TaskContext::new("database_backup", json!({})))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("set TASKPLANE_BACKUP_DATABASE_URL")
                && !err.is_retryable()
        );
    }
}
