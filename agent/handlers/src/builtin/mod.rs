//! Built-in handlers that do real work against real endpoints. Their
//! payloads, results, configuration and retry behaviour are documented in
//! `docs/handlers.md`.
//!
//! - [`email`]: SMTP delivery of a templated message.
//! - [`webhook`]: a signed JSON POST/PUT to an HTTP(S) endpoint.
//! - [`data`]: streaming statistics over JSON rows, CSV or NDJSON files.
//! - [`cleanup`]: deletes old files under a root it never leaves.
//! - [`report`]: renders rows or task history as CSV, JSON or Markdown.
//! - [`probe`]: HTTP or TCP health probes with a latency budget.
//! - [`backup`]: an online SQLite backup or a `pg_dump`.
//! - [`invoice`]: invoice totals, rendered through [`report`].
//! - [`throttle`]: which HTTP answers are retried, and their `Retry-After`.
//! - [`unconfigured`]: the honest answer of a handler whose service is missing.

pub mod backup;
pub mod cleanup;
pub mod data;
pub mod email;
pub mod invoice;
pub mod probe;
pub mod report;
pub mod throttle;
pub mod unconfigured;
pub mod webhook;

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use taskplane_agent::handler::TaskError;

/// Reads a required string field of the payload.
pub(crate) fn required_str<'a>(
    payload: &'a serde_json::Value,
    field: &str,
) -> Result<&'a str, TaskError> {
    payload
        .get(field)
        .and_then(|v| v.as_str())
        .ok_or_else(|| TaskError::bad_payload(field, "a string"))
}

/// Reads an optional unsigned integer field of the payload.
pub(crate) fn optional_u64(
    payload: &serde_json::Value,
    field: &str,
) -> Result<Option<u64>, TaskError> {
    match payload.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| TaskError::bad_payload(field, "a non-negative integer")),
    }
}

/// Reads an optional boolean field of the payload.
pub(crate) fn optional_bool(
    payload: &serde_json::Value,
    field: &str,
) -> Result<Option<bool>, TaskError> {
    match payload.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => value
            .as_bool()
            .map(Some)
            .ok_or_else(|| TaskError::bad_payload(field, "true or false")),
    }
}

/// Joins a payload's relative path to `root`, refusing absolute paths and
/// `..`, so a payload can never name a file outside the root.
pub(crate) fn path_under(root: &Path, relative: &str) -> Result<PathBuf, TaskError> {
    let relative = Path::new(relative);
    let escapes = relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(TaskError::Permanent(format!(
            "path '{}' leaves the handler's directory: use a relative path without '..'",
            relative.display()
        )));
    }
    Ok(root.join(relative))
}

/// `path` (under `root`, from [`path_under`]) with its symbolic links
/// resolved; refused when it then lies outside the resolved root, so a link
/// inside the root cannot lead a payload out of it.
pub(crate) async fn resolved_inside(root: &Path, path: &Path) -> Result<PathBuf, TaskError> {
    let root = tokio::fs::canonicalize(root).await.map_err(|e| {
        TaskError::Permanent(format!("the directory {} is unusable: {e}", root.display()))
    })?;
    let resolved = tokio::fs::canonicalize(path)
        .await
        .map_err(|e| TaskError::Permanent(format!("cannot read {}: {e}", path.display())))?;
    if !resolved.starts_with(&root) {
        return Err(TaskError::Permanent(format!(
            "'{}' resolves outside the handler's directory (a symbolic link leads out of it)",
            path.display()
        )));
    }
    Ok(resolved)
}

/// A file name made safe: letters, digits, '-', '_' and '.' only.
pub(crate) fn safe_file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The SHA-256 of bytes, in hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The SHA-256 of a file, in hex, read in chunks.
pub(crate) async fn sha256_file(path: &Path) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..read]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_never_leave_the_root() {
        let root = Path::new("/srv/data");
        assert_eq!(
            path_under(root, "reports/a.csv").unwrap(),
            root.join("reports/a.csv")
        );
        for escaping in ["../etc/passwd", "/etc/passwd", "a/../../b"] {
            let err = path_under(root, escaping).unwrap_err();
            assert!(
                err.to_string().contains("leaves the handler's directory"),
                "{escaping}: {err}"
            );
        }
        assert_eq!(safe_file_stem("Q3 report/2026"), "Q3_report_2026");
    }
}
