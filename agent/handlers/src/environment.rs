//! The one place the `taskplane-agent` binary reads its environment:
//! [`AgentSettings::from_env`], and [`VARIABLES`], every variable it reads
//! with what it sets. `taskplane-agent --help` prints them, and the deploy
//! manifests are checked against them; a test keeps this list and the
//! lookups in step.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use taskplane_agent::config::ConfigError;
use taskplane_agent::runtime::DEFAULT_SERVER;
use taskplane_agent::{AgentBuilder, ConnectOptions, RegistryConfig, TaskRegistry};
use taskplane_common::logging::LogFormat;

use crate::agent_config::AgentConfig;
use crate::services::AppServices;

/// The agent slots when `TASKPLANE_MAX_CONCURRENCY` is unset.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 16;

/// Everything the agent binary is configured with.
#[derive(Debug)]
pub struct AgentSettings {
    /// Control plane URL(s), comma-separated (`TASKPLANE_SERVER`).
    pub servers: String,
    /// The agent's name as operators see it (`TASKPLANE_AGENT_NAME`).
    pub name: String,
    /// Tasks run at once (`TASKPLANE_MAX_CONCURRENCY`).
    pub max_concurrency: u32,
    /// Assignments queued beyond the running ones (`TASKPLANE_PREFETCH`;
    /// unset: the SDK's default, 8 per slot).
    pub prefetch: Option<u32>,
    /// Where to serve Prometheus metrics (`TASKPLANE_METRICS_LISTEN`).
    pub metrics_listen: Option<String>,
    /// How log lines are written (`TASKPLANE_LOG_FORMAT`).
    pub log_format: LogFormat,
    /// Which domains and task types are served (`TASK_*`).
    pub registry: RegistryConfig,
    /// The services the built-in handlers are built with.
    pub services: Arc<AppServices>,
    /// Token and TLS files for reaching the control plane.
    pub connect: ConnectOptions,
    /// Stop when no control plane could be reached for this long
    /// (`TASKPLANE_GIVE_UP_AFTER`; unset: keep trying).
    pub give_up_after: Option<Duration>,
    /// The agent's labels, shown by `ListAgents` (`TASKPLANE_LABELS`,
    /// `key=value` pairs separated by commas).
    pub labels: BTreeMap<String, String>,
    /// The configuration file's tables (`TASKPLANE_AGENT_CONFIG`), already
    /// in `services` and `registry`; kept to check them against the
    /// registry once it is built.
    pub agent_config: Option<AgentConfig>,
}

impl AgentSettings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(lookup)
    }

    /// Reads the settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let max_concurrency = match lookup("TASKPLANE_MAX_CONCURRENCY") {
            None => DEFAULT_MAX_CONCURRENCY,
            Some(value) => value.trim().parse().map_err(|_| ConfigError {
                variable: "TASKPLANE_MAX_CONCURRENCY",
                message: format!("'{value}' is not a whole number"),
            })?,
        };
        let prefetch = lookup("TASKPLANE_PREFETCH")
            .map(|value| {
                value.trim().parse().map_err(|_| ConfigError {
                    variable: "TASKPLANE_PREFETCH",
                    message: format!("'{value}' is not a whole number (0 turns prefetch off)"),
                })
            })
            .transpose()?;
        let give_up_after = lookup("TASKPLANE_GIVE_UP_AFTER")
            .map(|value| {
                humantime::parse_duration(value.trim()).map_err(|e| ConfigError {
                    variable: "TASKPLANE_GIVE_UP_AFTER",
                    message: format!("'{value}' is not a duration such as 5m ({e})"),
                })
            })
            .transpose()?;
        let log_format = lookup("TASKPLANE_LOG_FORMAT")
            .unwrap_or_default()
            .parse()
            .map_err(|message| ConfigError {
                variable: "TASKPLANE_LOG_FORMAT",
                message,
            })?;
        let labels = lookup("TASKPLANE_LABELS")
            .map(|value| parse_labels(&value))
            .transpose()?
            .unwrap_or_default();
        let mut registry = RegistryConfig::from_lookup(&lookup)?;
        let mut services = AppServices::from_lookup(&lookup);
        let agent_config = lookup("TASKPLANE_AGENT_CONFIG")
            .filter(|path| !path.trim().is_empty())
            .map(|path| AgentConfig::read(std::path::Path::new(path.trim()), &lookup))
            .transpose()
            .map_err(|error| ConfigError {
                variable: "TASKPLANE_AGENT_CONFIG",
                message: format!("{}: {}", error.path, error.message),
            })?;
        if let Some(config) = &agent_config {
            services.handler_settings = config.handlers();
            // The SDK's view of the same tables, for factories of one's own.
            registry.handler_configs = config
                .handlers()
                .into_iter()
                .map(|(task_type, settings)| {
                    let json = serde_json::to_value(settings).expect("settings serialize");
                    (task_type, json)
                })
                .collect();
        }
        Ok(AgentSettings {
            servers: lookup("TASKPLANE_SERVER").unwrap_or_else(|| DEFAULT_SERVER.to_owned()),
            name: lookup("TASKPLANE_AGENT_NAME").unwrap_or_else(|| "taskplane-agent".to_owned()),
            max_concurrency,
            prefetch,
            metrics_listen: lookup("TASKPLANE_METRICS_LISTEN"),
            log_format,
            registry,
            services: Arc::new(services),
            connect: ConnectOptions::from_lookup(&lookup),
            give_up_after,
            labels,
            agent_config,
        })
    }

    /// Refuses a table of the configuration file for a task type `registry`
    /// does not serve.
    pub fn check_served(&self, registry: &TaskRegistry) -> Result<(), ConfigError> {
        match &self.agent_config {
            None => Ok(()),
            Some(config) => config
                .check_served(&registry.list_task_types())
                .map_err(|error| ConfigError {
                    variable: "TASKPLANE_AGENT_CONFIG",
                    message: format!("{}: {}", error.path, error.message),
                }),
        }
    }

    /// Applies these settings to an agent's builder: its name, slots,
    /// prefetch, labels, connection settings and when to give up (the
    /// servers and the registry are set by the caller).
    pub fn configure(&self, builder: AgentBuilder) -> AgentBuilder {
        let mut builder = builder
            .name(self.name.clone())
            .max_concurrency(self.max_concurrency)
            .connect_options(self.connect.clone());
        if let Some(after) = self.give_up_after {
            builder = builder.give_up_after(after);
        }
        if let Some(prefetch) = self.prefetch {
            builder = builder.prefetch(prefetch);
        }
        for (key, value) in &self.labels {
            builder = builder.label(key.clone(), value.clone());
        }
        builder
    }
}

/// `TASKPLANE_LABELS`: `key=value` pairs separated by commas, each key once.
fn parse_labels(value: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let invalid = |message: String| ConfigError {
        variable: "TASKPLANE_LABELS",
        message,
    };
    let mut labels = BTreeMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, label) = pair
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| invalid(format!("'{pair}' is not key=value, e.g. region=eu")))?;
        if labels.insert(key.to_owned(), label.to_owned()).is_some() {
            return Err(invalid(format!(
                "'{key}' is set twice: set each label once"
            )));
        }
    }
    Ok(labels)
}

/// One variable of the process environment, if set.
pub fn lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Name and meaning of each variable.
pub const VARIABLES: &[(&str, &str)] = &[
    (
        "TASKPLANE_SERVER",
        "control plane URL(s), comma-separated (default http://127.0.0.1:50051)",
    ),
    (
        "TASKPLANE_AGENT_NAME",
        "the agent's name as operators see it (default taskplane-agent)",
    ),
    (
        "TASKPLANE_MAX_CONCURRENCY",
        "tasks run at once (default 16)",
    ),
    (
        "TASKPLANE_PREFETCH",
        "tasks queued beyond the running ones, filled only for handlers faster than a claim (default 8 per slot; 0: off)",
    ),
    (
        "TASKPLANE_TOKEN",
        "bearer token for servers that check tokens",
    ),
    (
        "TASKPLANE_TLS_CA",
        "CA that signed the server's certificate (PEM), for https:// servers",
    ),
    (
        "TASKPLANE_TLS_CERT",
        "client certificate (PEM), for servers that require mutual TLS",
    ),
    ("TASKPLANE_TLS_KEY", "key of TASKPLANE_TLS_CERT (PEM)"),
    (
        "TASKPLANE_METRICS_LISTEN",
        "serve Prometheus metrics at http://ADDRESS/metrics",
    ),
    ("TASKPLANE_LOG_FORMAT", "text (default) or json"),
    (
        "TASKPLANE_LABELS",
        "the agent's labels, key=value pairs separated by commas (shown by ListAgents)",
    ),
    (
        "TASKPLANE_GIVE_UP_AFTER",
        "exit when no control plane was reached for this long, e.g. 5m (default: keep trying)",
    ),
    (
        "TASK_ENABLED_DOMAINS",
        "domains served (default user_management,billing,system_maintenance,platform)",
    ),
    (
        "TASK_DISABLED_TYPES",
        "task types left out, comma-separated",
    ),
    ("TASK_FEATURE_FLAGS", "feature flags, name:true,other:false"),
    (
        "TASK_STRICT_CONFIG",
        "true: refuse unknown domains instead of warning",
    ),
    (
        "TASKPLANE_AGENT_DATA_DIR",
        "where built-in handlers write files (default taskplane-data/agent)",
    ),
    (
        "TASKPLANE_SMTP_URL",
        "SMTP server of the email handlers, e.g. smtp://mail:25",
    ),
    (
        "TASKPLANE_MAIL_DIR",
        "without an SMTP server, write email as .eml files here (the dev mail sink)",
    ),
    ("TASKPLANE_SMTP_FROM", "sender of the email handlers"),
    (
        "TASKPLANE_AGENT_CONFIG",
        "a TOML file of settings for one handler at a time, [handlers.<task_type>]; variables override it",
    ),
    (
        "TASKPLANE_WEBHOOK_SECRET",
        "key of the X-Taskplane-Signature HMAC on webhooks",
    ),
    (
        "TASKPLANE_PAYMENT_GATEWAY_URL",
        "the payment gateway the billing handlers charge through",
    ),
    (
        "TASKPLANE_TRUSTED_HOSTS",
        "hosts webhook and health_check may reach at internal addresses (loopback, private, link-local), comma-separated",
    ),
    ("TASKPLANE_LOG_DIR", "the directory log_cleanup may clean"),
    (
        "TASKPLANE_BACKUP_DATABASE_URL",
        "the database database_backup backs up",
    ),
    ("RUST_LOG", "log filter (default info)"),
];

/// The help text of the agent binary.
pub fn help() -> String {
    let width = VARIABLES
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0);
    let mut text = String::from(
        "taskplane-agent: serves the example domains' task types to a taskplane control plane.\n\n\
         Usage: taskplane-agent            (configured by the environment)\n\n\
         Environment:\n",
    );
    for (name, meaning) in VARIABLES {
        text.push_str(&format!("  {name:<width$}  {meaning}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    /// A handler's table of the configuration file reaches its factory
    /// alone, a variable overrides it, and a table for a type the agent
    /// does not serve stops it.
    #[tokio::test]
    async fn the_configuration_file_configures_each_handler_and_variables_win() {
        let dir = tempfile::tempdir().unwrap();
        let (logs, other_logs, mail) = (
            dir.path().join("logs"),
            dir.path().join("other-logs"),
            dir.path().join("mail"),
        );
        for logs in [&logs, &other_logs] {
            std::fs::create_dir_all(logs).unwrap();
            std::fs::write(logs.join("old.log"), "x").unwrap();
        }
        let file = dir.path().join("agent.toml");
        std::fs::write(
            &file,
            format!(
                "[handlers.log_cleanup]\nlog_dir = {:?}\n\n[handlers.welcome_email]\nmail_dir = {:?}\n",
                logs.display().to_string(),
                mail.display().to_string()
            ),
        )
        .unwrap();
        let settings_with = |env: Vec<(&'static str, String)>| {
            let mut env: BTreeMap<&str, String> = env.into_iter().collect();
            env.insert("TASKPLANE_AGENT_CONFIG", file.display().to_string());
            env.insert(
                "TASKPLANE_AGENT_DATA_DIR",
                dir.path().join("agent").display().to_string(),
            );
            AgentSettings::from_lookup(|name| env.get(name).cloned()).unwrap()
        };
        let run = async |settings: &AgentSettings, task_type: &str, payload| {
            let (registry, _) =
                crate::setup_registry_with_config(&settings.registry, settings.services.clone());
            settings.check_served(&registry).unwrap();
            registry
                .process_task(
                    taskplane_agent::TaskContext::new(task_type, payload),
                    Duration::from_secs(10),
                )
                .await
        };

        let settings = settings_with(vec![]);
        let clean = serde_json::json!({"pattern": "*.log", "older_than_secs": 0});
        run(&settings, "log_cleanup", clean.clone()).await.unwrap();
        assert!(
            !logs.join("old.log").exists(),
            "log_cleanup cleaned the file's directory"
        );
        let welcome = serde_json::json!({"to": "ada@example.com", "name": "Ada"});
        let sent = run(&settings, "welcome_email", welcome.clone())
            .await
            .unwrap();
        assert!(
            sent.output["file"]
                .as_str()
                .unwrap()
                .starts_with(&mail.display().to_string())
        );
        let reset =
            serde_json::json!({"to": "ada@example.com", "name": "Ada", "reset_url": "https://x/r"});
        let err = run(&settings, "password_reset", reset).await.unwrap_err();
        assert!(
            err.to_string().contains("no SMTP server"),
            "its own table only: {err}"
        );
        assert_eq!(
            settings.registry.handler_configs["log_cleanup"]["log_dir"],
            logs.display().to_string(),
            "the SDK's handler_configs hold the same tables"
        );

        let settings = settings_with(vec![(
            "TASKPLANE_LOG_DIR",
            other_logs.display().to_string(),
        )]);
        run(&settings, "log_cleanup", clean).await.unwrap();
        assert!(!other_logs.join("old.log").exists(), "the variable wins");

        let settings = settings_with(vec![("TASK_ENABLED_DOMAINS", "billing".to_owned())]);
        let (registry, _) =
            crate::setup_registry_with_config(&settings.registry, settings.services.clone());
        let err = settings.check_served(&registry).unwrap_err();
        assert!(
            err.to_string().contains(
                "line 1: [handlers.log_cleanup] names a task type this agent does not serve"
            ),
            "{err}"
        );
    }

    /// Every variable the settings look up is listed, and every listed
    /// variable is looked up (`RUST_LOG` is read by the logging set-up).
    #[test]
    fn the_list_matches_the_variables_the_settings_read() {
        let asked = RefCell::new(BTreeSet::new());
        AgentSettings::from_lookup(|name| {
            asked.borrow_mut().insert(name.to_owned());
            None
        })
        .unwrap();
        let listed: BTreeSet<String> = VARIABLES
            .iter()
            .map(|(name, _)| name.to_string())
            .filter(|name| name != "RUST_LOG")
            .collect();
        assert_eq!(listed, asked.into_inner());
    }

    #[test]
    fn a_malformed_setting_names_its_variable() {
        let error = AgentSettings::from_lookup(|name| {
            (name == "TASKPLANE_MAX_CONCURRENCY").then(|| "lots".to_owned())
        })
        .unwrap_err();
        assert_eq!(error.variable, "TASKPLANE_MAX_CONCURRENCY");
        let error = AgentSettings::from_lookup(|name| {
            (name == "TASKPLANE_LOG_FORMAT").then(|| "yaml".to_owned())
        })
        .unwrap_err();
        assert_eq!(error.variable, "TASKPLANE_LOG_FORMAT");
        let error = AgentSettings::from_lookup(|name| {
            (name == "TASKPLANE_GIVE_UP_AFTER").then(|| "soon".to_owned())
        })
        .unwrap_err();
        assert_eq!(error.variable, "TASKPLANE_GIVE_UP_AFTER");
    }

    #[test]
    fn labels_are_key_value_pairs_each_set_once() {
        let settings = AgentSettings::from_lookup(|name| {
            (name == "TASKPLANE_LABELS").then(|| " region=eu, gpu=true ,".to_owned())
        })
        .unwrap();
        assert_eq!(
            settings.labels,
            BTreeMap::from([
                ("gpu".to_owned(), "true".to_owned()),
                ("region".to_owned(), "eu".to_owned())
            ])
        );
        for bad in ["region", "=eu", "region=eu,region=us"] {
            let error = AgentSettings::from_lookup(|name| {
                (name == "TASKPLANE_LABELS").then(|| bad.to_owned())
            })
            .unwrap_err();
            assert_eq!(error.variable, "TASKPLANE_LABELS", "{bad}");
        }
    }

    #[test]
    fn prefetch_is_the_sdks_default_unless_set() {
        let unset = AgentSettings::from_lookup(|_| None).unwrap();
        assert_eq!(unset.prefetch, None);
        let off = AgentSettings::from_lookup(|name| {
            (name == "TASKPLANE_PREFETCH").then(|| "0".to_owned())
        })
        .unwrap();
        assert_eq!(off.prefetch, Some(0));
        let error = AgentSettings::from_lookup(|name| {
            (name == "TASKPLANE_PREFETCH").then(|| "many".to_owned())
        })
        .unwrap_err();
        assert_eq!(error.variable, "TASKPLANE_PREFETCH");
    }

    #[test]
    fn the_give_up_deadline_is_a_duration() {
        let settings = AgentSettings::from_lookup(|name| {
            (name == "TASKPLANE_GIVE_UP_AFTER").then(|| "90s".to_owned())
        })
        .unwrap();
        assert_eq!(settings.give_up_after, Some(Duration::from_secs(90)));
    }
}
