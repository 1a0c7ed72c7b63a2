//! The agent's configuration file (`TASKPLANE_AGENT_CONFIG=agent.toml`):
//! one `[handlers.<task_type>]` table per handler, with the settings its
//! factory builds it with, for settings that differ between handlers (two
//! mail servers, a log directory for one type):
//!
//! ```toml
//! [handlers.welcome_email]
//! smtp_url = "smtp://mail.internal:25"
//! smtp_from = "Shop <welcome@shop.example>"
//!
//! [handlers.log_cleanup]
//! log_dir = "/var/log/shop"
//! ```
//!
//! A key's environment variable, when set, overrides the file for every
//! handler (`TASKPLANE_SMTP_URL` over `smtp_url`, …). An unknown key, or a
//! table for a task type the agent does not serve, stops the agent at start
//! with the file, the line and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::services::AppServices;

/// One handler's settings; each overrides the agent-wide one of the same
/// name for that handler alone.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerSettings {
    /// `TASKPLANE_SMTP_URL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_url: Option<String>,
    /// `TASKPLANE_SMTP_FROM`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_from: Option<String>,
    /// `TASKPLANE_MAIL_DIR`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail_dir: Option<PathBuf>,
    /// `TASKPLANE_WEBHOOK_SECRET`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// `TASKPLANE_PAYMENT_GATEWAY_URL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_gateway_url: Option<String>,
    /// `TASKPLANE_LOG_DIR`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<PathBuf>,
    /// `TASKPLANE_BACKUP_DATABASE_URL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_database_url: Option<String>,
}

/// Each setting's environment variable, which overrides it when set.
const OVERRIDDEN_BY: [(&str, &str); 7] = [
    ("smtp_url", "TASKPLANE_SMTP_URL"),
    ("smtp_from", "TASKPLANE_SMTP_FROM"),
    ("mail_dir", "TASKPLANE_MAIL_DIR"),
    ("webhook_secret", "TASKPLANE_WEBHOOK_SECRET"),
    ("payment_gateway_url", "TASKPLANE_PAYMENT_GATEWAY_URL"),
    ("log_dir", "TASKPLANE_LOG_DIR"),
    ("backup_database_url", "TASKPLANE_BACKUP_DATABASE_URL"),
];

/// The settings each built-in task type reads; a table may set only these.
const READ_BY: [(&[&str], &[&str]); 5] = [
    (
        &["email", "welcome_email", "password_reset", "login_alert"],
        &["smtp_url", "smtp_from", "mail_dir"],
    ),
    (&["webhook"], &["webhook_secret"]),
    (
        &[
            "payment_processing",
            "subscription_renewal",
            "failed_payment_retry",
        ],
        &["payment_gateway_url"],
    ),
    (&["log_cleanup"], &["log_dir"]),
    (&["database_backup"], &["backup_database_url"]),
];

/// The settings the handler of `task_type` reads (none for a type whose
/// settings are all agent-wide, such as `report_generation`).
pub fn read_by(task_type: &str) -> &'static [&'static str] {
    READ_BY
        .iter()
        .find(|(types, _)| types.contains(&task_type))
        .map_or(&[], |(_, keys)| keys)
}

impl HandlerSettings {
    /// These settings as a JSON object of the keys they set (unset ones
    /// are skipped when serializing).
    fn as_object(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self).expect("settings serialize") {
            serde_json::Value::Object(object) => object,
            _ => unreachable!("a struct serializes as an object"),
        }
    }

    /// The keys these settings set.
    fn keys(&self) -> Vec<String> {
        self.as_object().into_iter().map(|(key, _)| key).collect()
    }

    /// These settings less those whose environment variable is set.
    fn under_environment(self, lookup: &impl Fn(&str) -> Option<String>) -> Self {
        let mut object = self.as_object();
        for (key, variable) in OVERRIDDEN_BY {
            if lookup(variable).is_some_and(|value| !value.trim().is_empty()) {
                object.remove(key);
            }
        }
        serde_json::from_value(serde_json::Value::Object(object)).expect("the same fields")
    }

    /// `services` with these settings in place of its own.
    pub fn apply(&self, services: &AppServices) -> AppServices {
        let mut services = services.clone();
        if let Some(url) = &self.smtp_url {
            services.smtp_url = Some(url.clone());
        }
        if let Some(from) = &self.smtp_from {
            services.smtp_from = from.clone();
        }
        if let Some(dir) = &self.mail_dir {
            services.mail_dir = Some(dir.clone());
        }
        if let Some(secret) = &self.webhook_secret {
            services.webhook_secret = Some(secret.clone());
        }
        if let Some(url) = &self.payment_gateway_url {
            services.payment_gateway_url = Some(url.clone());
        }
        if let Some(dir) = &self.log_dir {
            services.log_dir = Some(dir.clone());
        }
        if let Some(url) = &self.backup_database_url {
            services.backup_database_url = Some(url.clone());
        }
        services
    }
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContents {
    #[serde(default)]
    handlers: BTreeMap<Spanned<String>, HandlerSettings>,
}

/// A configuration file that cannot be used: where, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("TASKPLANE_AGENT_CONFIG {path}: {message}")]
pub struct AgentConfigError {
    /// The file.
    pub path: String,
    /// The line, the key and what to do.
    pub message: String,
}

/// The handlers' tables of one file, with where each table starts.
#[derive(Debug, Clone, Default)]
pub struct AgentConfig {
    path: PathBuf,
    handlers: BTreeMap<String, (usize, HandlerSettings)>,
}

impl AgentConfig {
    /// Reads `path`; settings whose environment variable `lookup` finds set
    /// are dropped, since the variable overrides them.
    pub fn read(
        path: &Path,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, AgentConfigError> {
        let error = |message: String| AgentConfigError {
            path: path.display().to_string(),
            message,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| error(format!("cannot be read: {e}")))?;
        Self::parse(&text, path, lookup).map_err(error)
    }

    fn parse(
        text: &str,
        path: &Path,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let contents: FileContents = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|span| format!("line {}: ", line_of(text, span.start)))
                .unwrap_or_default();
            format!(
                "{at}{} (a handler's table takes {})",
                e.message().trim(),
                OVERRIDDEN_BY.map(|(key, _)| key).join(", ")
            )
        })?;
        let handlers = contents
            .handlers
            .into_iter()
            .map(|(task_type, settings)| {
                let line = line_of(text, task_type.span().start);
                (
                    task_type.into_inner(),
                    (line, settings.under_environment(lookup)),
                )
            })
            .collect();
        Ok(AgentConfig {
            path: path.to_owned(),
            handlers,
        })
    }

    /// Refuses a table for a task type the agent does not serve, and a
    /// setting its handler does not read.
    pub fn check_served(&self, served: &[String]) -> Result<(), AgentConfigError> {
        let error = |line: &usize, message: String| AgentConfigError {
            path: self.path.display().to_string(),
            message: format!("line {line}: {message}"),
        };
        for (task_type, (line, settings)) in &self.handlers {
            if !served.contains(task_type) {
                return Err(error(
                    line,
                    format!(
                        "[handlers.{task_type}] names a task type this agent does not serve: remove it, or enable its domain (TASK_ENABLED_DOMAINS)"
                    ),
                ));
            }
            let read = read_by(task_type);
            if let Some(key) = settings
                .keys()
                .into_iter()
                .find(|key| !read.contains(&key.as_str()))
            {
                let reads = if read.is_empty() {
                    "nothing of its own".to_owned()
                } else {
                    read.join(", ")
                };
                return Err(error(
                    line,
                    format!(
                        "[handlers.{task_type}] sets {key}, which {task_type} does not read (it reads {reads})"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Each handler's settings, by task type.
    pub fn handlers(&self) -> BTreeMap<String, HandlerSettings> {
        self.handlers
            .iter()
            .map(|(task_type, (_, settings))| (task_type.clone(), settings.clone()))
            .collect()
    }
}

/// The line (from 1) of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<AgentConfig, String> {
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        AgentConfig::parse(text, Path::new("agent.toml"), &lookup)
    }

    #[test]
    fn each_table_reaches_its_type_and_the_environment_wins() {
        let text = "[handlers.welcome_email]\nsmtp_url = \"smtp://a:25\"\nsmtp_from = \"a@x\"\n\n[handlers.log_cleanup]\nlog_dir = \"/var/log/a\"\n";
        let config = parse(text, &[("TASKPLANE_SMTP_URL", "smtp://env:25")]).unwrap();
        let handlers = config.handlers();
        let welcome = &handlers["welcome_email"];
        assert_eq!(welcome.smtp_url, None, "the variable overrides the file");
        assert_eq!(welcome.smtp_from.as_deref(), Some("a@x"));
        let services = handlers["log_cleanup"].apply(&AppServices::new("data"));
        assert_eq!(services.log_dir, Some(PathBuf::from("/var/log/a")));
        assert!(
            config
                .check_served(&["welcome_email".into(), "log_cleanup".into()])
                .is_ok()
        );
    }

    #[test]
    fn an_unknown_key_or_type_names_its_line() {
        let text = "[handlers.welcome_email]\nsmtp_url = \"smtp://a:25\"\nsmtp_port = 25\n";
        let err = parse(text, &[]).unwrap_err();
        assert!(
            err.contains("line 3") && err.contains("smtp_port") && err.contains("smtp_from"),
            "{err}"
        );
        let text = "\n[handlers.send_fax]\nsmtp_url = \"smtp://a:25\"\n";
        let config = parse(text, &[]).unwrap();
        let err = config.check_served(&["welcome_email".into()]).unwrap_err();
        assert!(
            err.to_string()
                .contains("agent.toml: line 2: [handlers.send_fax] names a task type this agent does not serve"),
            "{err}"
        );
        let config = parse("[handlers.webhook]\nlog_dir = \"/tmp\"\n", &[]).unwrap();
        let err = config.check_served(&["webhook".into()]).unwrap_err();
        assert!(
            err.to_string()
                .contains("line 1: [handlers.webhook] sets log_dir, which webhook does not read (it reads webhook_secret)"),
            "{err}"
        );
        let err = parse("[mail]\nx = 1\n", &[]).unwrap_err();
        assert!(err.contains("line 1") && err.contains("mail"), "{err}");
    }
}
