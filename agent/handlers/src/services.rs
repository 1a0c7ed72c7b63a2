//! [`AppServices`]: the shared services the built-in handlers are built
//! with (dependency injection), read once from the environment.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::agent_config::HandlerSettings;
use crate::egress::Egress;

/// Shared services injected into handlers through their factories.
#[derive(Debug, Clone)]
pub struct AppServices {
    /// Root of the agent's files: exports, reports, backups, user data
    /// (`TASKPLANE_AGENT_DATA_DIR`, default `taskplane-data/agent`). Handlers
    /// never read or write outside their directory under it.
    pub data_dir: PathBuf,
    /// The SMTP server, as a URL (`TASKPLANE_SMTP_URL`): `smtp://host:25`
    /// (plain), `smtp://user:pass@host:587?tls=required` (STARTTLS) or
    /// `smtps://user:pass@host:465` (TLS).
    pub smtp_url: Option<String>,
    /// Where emails are written as `.eml` files when no SMTP server is set
    /// (`TASKPLANE_MAIL_DIR`; `taskplane dev` sets `taskplane-data/mail`).
    pub mail_dir: Option<PathBuf>,
    /// The sender of emails (`TASKPLANE_SMTP_FROM`).
    pub smtp_from: String,
    /// The key that signs webhook bodies (`TASKPLANE_WEBHOOK_SECRET`).
    pub webhook_secret: Option<String>,
    /// Where payment webhooks go (`TASKPLANE_PAYMENT_GATEWAY_URL`).
    pub payment_gateway_url: Option<String>,
    /// The directory `log_cleanup` may clean (`TASKPLANE_LOG_DIR`).
    pub log_dir: Option<PathBuf>,
    /// The database `database_backup` backs up (`TASKPLANE_BACKUP_DATABASE_URL`,
    /// `sqlite://…` or `postgres://…`).
    pub backup_database_url: Option<String>,
    /// The control plane, for reports over task history (`TASKPLANE_SERVER`).
    pub control_plane: String,
    /// The token and TLS settings for reaching it (`TASKPLANE_TOKEN`, `TASKPLANE_TLS_*`).
    pub connect_options: taskplane_agent::ConnectOptions,
    /// Where webhook and health-check handlers may connect, and their HTTP
    /// client (`TASKPLANE_TRUSTED_HOSTS`; see [`Egress`]).
    pub egress: Egress,
    /// The agent's feature flags (`TASK_FEATURE_FLAGS`), which factories
    /// read to choose what they build; set by `setup_registry_with_config`
    /// from the registry's configuration.
    pub feature_flags: BTreeMap<String, bool>,
    /// Settings for one handler alone, by task type, from the agent's
    /// configuration file (`TASKPLANE_AGENT_CONFIG`; see
    /// [`crate::agent_config`]).
    pub handler_settings: BTreeMap<String, HandlerSettings>,
}

impl AppServices {
    /// Services rooted at `data_dir`, with nothing external configured.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        AppServices {
            data_dir: data_dir.into(),
            smtp_url: None,
            mail_dir: None,
            smtp_from: "taskplane <taskplane@localhost>".to_owned(),
            webhook_secret: None,
            payment_gateway_url: None,
            log_dir: None,
            backup_database_url: None,
            control_plane: taskplane_agent::runtime::DEFAULT_SERVER.to_owned(),
            connect_options: taskplane_agent::ConnectOptions::default(),
            egress: Egress::trusting(Vec::<String>::new()),
            feature_flags: BTreeMap::new(),
            handler_settings: BTreeMap::new(),
        }
    }

    /// The services the handler of `task_type` is built with: these, with
    /// its table of the configuration file applied.
    pub fn for_task_type(&self, task_type: &str) -> AppServices {
        match self.handler_settings.get(task_type) {
            Some(settings) => settings.apply(self),
            None => self.clone(),
        }
    }

    /// Whether feature flag `flag` is on (unset flags are off).
    pub fn feature_enabled(&self, flag: &str) -> bool {
        self.feature_flags.get(flag).copied().unwrap_or(false)
    }

    /// Reads every service through `lookup` (see
    /// [`crate::environment::AgentSettings`]); blank values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut services = AppServices::new(
            var("TASKPLANE_AGENT_DATA_DIR").unwrap_or_else(|| "taskplane-data/agent".to_owned()),
        );
        services.smtp_url = var("TASKPLANE_SMTP_URL");
        services.mail_dir = var("TASKPLANE_MAIL_DIR").map(PathBuf::from);
        if let Some(from) = var("TASKPLANE_SMTP_FROM") {
            services.smtp_from = from;
        }
        services.webhook_secret = var("TASKPLANE_WEBHOOK_SECRET");
        services.payment_gateway_url = var("TASKPLANE_PAYMENT_GATEWAY_URL");
        services.log_dir = var("TASKPLANE_LOG_DIR").map(PathBuf::from);
        services.backup_database_url = var("TASKPLANE_BACKUP_DATABASE_URL");
        services.connect_options = taskplane_agent::ConnectOptions::from_lookup(&lookup);
        if let Some(hosts) = var("TASKPLANE_TRUSTED_HOSTS") {
            services.egress = Egress::trusting(hosts.split(','));
        }
        if let Some(server) = var("TASKPLANE_SERVER") {
            // Reports read history from the first replica listed.
            services.control_plane = server
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
        }
        services
    }

    /// The directory of one kind of file under the data directory.
    pub fn dir(&self, kind: &str) -> PathBuf {
        self.data_dir.join(kind)
    }
}
