//! The design guide's example domains, and [`setup_registry_with_config`],
//! which builds a registry from the enabled ones.
//!
//! Code is organised by business domain, as the guide advises: each
//! domain's folder holds its registry and the builders of its handlers;
//! [`factories`] holds what they share, and `crate::builtin` the
//! general-purpose handlers they configure.
//!
//! Each domain is a [`DomainRegistry`]; one agent process per domain is the
//! deployment model (`TASK_ENABLED_DOMAINS=billing taskplane-agent`).

pub mod billing;
pub mod factories;
pub mod platform;
pub mod system_maintenance;
pub mod user_management;

use std::sync::Arc;

pub use billing::BillingDomainRegistry;
pub use platform::PlatformDomainRegistry;
pub use system_maintenance::SystemDomainRegistry;
pub use user_management::UserDomainRegistry;

use crate::services::AppServices;
use taskplane_agent::config::RegistryConfig;
use taskplane_agent::registry::{DomainRegistry, TaskRegistry};

/// The example domain of a name, built with the given services.
pub fn example_domain(name: &str, services: &Arc<AppServices>) -> Option<Box<dyn DomainRegistry>> {
    Some(match name {
        "user_management" => Box::new(UserDomainRegistry::new(services.clone())),
        "billing" => Box::new(BillingDomainRegistry::new(services.clone())),
        "system_maintenance" => Box::new(SystemDomainRegistry::new(services.clone())),
        "platform" => Box::new(PlatformDomainRegistry::new(services.clone())),
        _ => return None,
    })
}

/// Builds a registry of the enabled example domains, less the disabled task
/// types. Unknown domain names are reported (warned) and returned, so a
/// strict caller can refuse to start.
pub fn setup_registry_with_config(
    config: &RegistryConfig,
    services: Arc<AppServices>,
) -> (TaskRegistry, Vec<String>) {
    let mut registry = TaskRegistry::new();
    registry.set_feature_flags(config.feature_flags.clone());
    // The registry's flags are the factories' too.
    let services = Arc::new(AppServices {
        feature_flags: config.feature_flags.clone().into_iter().collect(),
        ..AppServices::clone(&services)
    });
    let mut unknown = Vec::new();
    for domain in &config.enabled_domains {
        match example_domain(domain, &services) {
            Some(domain_registry) => registry.register_domain(domain, domain_registry),
            None => {
                tracing::warn!(
                    domain,
                    "unknown domain in TASK_ENABLED_DOMAINS; known: user_management, billing, system_maintenance, platform"
                );
                unknown.push(domain.clone());
            }
        }
    }
    for disabled in &config.disabled_task_types {
        if registry.remove_handler(disabled).is_some() {
            tracing::info!(task_type = disabled, "disabled task type");
        } else {
            tracing::warn!(
                task_type = disabled,
                "TASK_DISABLED_TYPES names a task type no enabled domain has"
            );
        }
    }
    (registry, unknown)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn test_user_domain_registration() {
        let mut registry = TaskRegistry::new();
        let user_domain =
            UserDomainRegistry::new(Arc::new(AppServices::new("taskplane-data/agent")));
        let task_types = user_domain.register_handlers(&mut registry);
        assert_eq!(task_types.len(), 4);
        for task_type in [
            "welcome_email",
            "password_reset",
            "account_cleanup",
            "profile_export",
        ] {
            assert!(task_types.contains(&task_type.to_string()));
            assert!(
                registry.get_handler(task_type).is_some(),
                "{task_type} has no handler"
            );
        }
    }

    #[test]
    fn test_registry_configuration() {
        let config = RegistryConfig {
            enabled_domains: vec!["user_management".to_string(), "marketing".to_string()],
            disabled_task_types: vec!["password_reset".to_string()],
            handler_configs: HashMap::new(),
            feature_flags: HashMap::new(),
            strict: false,
        };
        let (registry, unknown) =
            setup_registry_with_config(&config, Arc::new(AppServices::new("taskplane-data/agent")));
        assert!(registry.get_handler("welcome_email").is_some());
        assert!(registry.get_handler("account_cleanup").is_some());
        assert!(registry.get_handler("password_reset").is_none(), "disabled");
        assert!(
            registry.get_handler("invoice_generation").is_none(),
            "domain not enabled"
        );
        assert_eq!(unknown, ["marketing"]);
        assert!(
            config.check_unknown_domains(&unknown).is_ok(),
            "not strict: warned only"
        );
        let strict = RegistryConfig {
            strict: true,
            ..config.clone()
        };
        let err = strict.check_unknown_domains(&unknown).unwrap_err();
        assert!(
            err.to_string().contains("unknown domains marketing"),
            "{err}"
        );
        assert_eq!(
            registry
                .get_domain_task_types("user_management")
                .unwrap()
                .len(),
            3
        );
    }

    /// The guide's `process_single_task_by_id`, in-process: a welcome
    /// email runs through the registry into the mail sink.
    #[tokio::test]
    async fn a_welcome_email_runs_in_process_into_the_mail_sink() {
        let dir = tempfile::tempdir().unwrap();
        let services = AppServices {
            mail_dir: Some(dir.path().join("mail")),
            ..AppServices::new(dir.path().join("agent"))
        };
        let config = RegistryConfig::from_lookup(|_| None).unwrap();
        let (registry, _) = setup_registry_with_config(&config, Arc::new(services));
        let welcome = taskplane_agent::TaskContext::new(
            "welcome_email",
            serde_json::json!({"to": "ada@example.com", "name": "Ada"}),
        );
        let outcome = registry
            .process_task(welcome, std::time::Duration::from_secs(10))
            .await
            .unwrap();
        let file = outcome.output["file"].as_str().unwrap();
        let message = std::fs::read_to_string(file).unwrap();
        assert!(message.contains("Subject: Welcome, Ada!"), "{message}");
        assert!(message.contains("To: ada@example.com"), "{message}");

        let unknown = taskplane_agent::TaskContext::new("send_fax", serde_json::json!({}));
        let err = registry
            .process_task(unknown, std::time::Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("no handler for task type 'send_fax'"),
            "{err}"
        );
    }

    /// A flag gates a whole handler: `login_alert` is served only while
    /// `login_alerts` is on, and then sends its message.
    #[tokio::test]
    async fn the_login_alerts_flag_gates_the_whole_login_alert_handler() {
        let dir = tempfile::tempdir().unwrap();
        let services = Arc::new(AppServices {
            mail_dir: Some(dir.path().join("mail")),
            ..AppServices::new(dir.path().join("agent"))
        });
        let with_flags = |flags: &str| {
            let flags = flags.to_owned();
            let config = RegistryConfig::from_lookup(|name| {
                (name == "TASK_FEATURE_FLAGS").then(|| flags.clone())
            })
            .unwrap();
            setup_registry_with_config(&config, services.clone()).0
        };
        let off = with_flags("login_alerts:false");
        assert!(off.get_handler("login_alert").is_none());
        assert_eq!(off.handler_count(), 17);

        let on = with_flags("login_alerts:true");
        assert_eq!(on.handler_count(), 18);
        assert_eq!(
            on.find_domain_for_task_type("login_alert").as_deref(),
            Some("user_management")
        );
        let alert = taskplane_agent::TaskContext::new(
            "login_alert",
            serde_json::json!({"to": "ada@example.com", "name": "Ada", "location": "Lisbon", "at": "09:12 UTC"}),
        );
        let outcome = on
            .process_task(alert, std::time::Duration::from_secs(10))
            .await
            .unwrap();
        let message = std::fs::read_to_string(outcome.output["file"].as_str().unwrap()).unwrap();
        assert!(
            message.contains("Subject: New sign-in to your account"),
            "{message}"
        );
        assert!(message.contains("signed in to from Lisbon"), "{message}");
    }

    #[test]
    fn the_default_domains_register_seventeen_types_without_conflict() {
        let config = RegistryConfig::from_lookup(|_| None).unwrap();
        let (registry, unknown) =
            setup_registry_with_config(&config, Arc::new(AppServices::new("taskplane-data/agent")));
        assert!(unknown.is_empty());
        assert_eq!(
            registry.handler_count(),
            17,
            "the guide's twelve and five platform built-ins"
        );
        assert_eq!(registry.check(), Ok(()));
        assert_eq!(
            registry
                .find_domain_for_task_type("health_check")
                .as_deref(),
            Some("system_maintenance")
        );
    }
}
