//! [`RegistryConfig`]: which domains and task types an agent enables, read
//! from `TASK_ENABLED_DOMAINS`, `TASK_DISABLED_TYPES` and `TASK_FEATURE_FLAGS`.

use std::collections::HashMap;

/// The domains enabled when `TASK_ENABLED_DOMAINS` is unset.
pub const DEFAULT_ENABLED_DOMAINS: &str = "user_management,billing,system_maintenance,platform";

/// Which handlers an agent registers.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    /// Domains to register (`TASK_ENABLED_DOMAINS`, comma-separated).
    pub enabled_domains: Vec<String>,
    /// Task types to leave out (`TASK_DISABLED_TYPES`, comma-separated).
    pub disabled_task_types: Vec<String>,
    /// Per-handler settings, keyed by task type.
    pub handler_configs: HashMap<String, serde_json::Value>,
    /// Feature flags (`TASK_FEATURE_FLAGS`, `name:true,other:false`).
    pub feature_flags: HashMap<String, bool>,
    /// Refuse to start on an unknown domain instead of warning
    /// (`TASK_STRICT_CONFIG=true`).
    pub strict: bool,
}

/// A malformed configuration value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong and how to write it.
    pub message: String,
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_flags(value: &str) -> Result<HashMap<String, bool>, ConfigError> {
    split_list(value)
        .into_iter()
        .map(|pair| {
            let malformed = || ConfigError {
                variable: "TASK_FEATURE_FLAGS",
                message: format!(
                    "'{pair}' is not a flag: write name:true or name:false, comma-separated"
                ),
            };
            let (name, value) = pair.split_once(':').ok_or_else(malformed)?;
            let value = match value.trim() {
                "true" => true,
                "false" => false,
                _ => return Err(malformed()),
            };
            Ok((name.trim().to_owned(), value))
        })
        .collect()
}

impl RegistryConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(RegistryConfig {
            enabled_domains: split_list(
                &lookup("TASK_ENABLED_DOMAINS")
                    .unwrap_or_else(|| DEFAULT_ENABLED_DOMAINS.to_owned()),
            ),
            disabled_task_types: split_list(&lookup("TASK_DISABLED_TYPES").unwrap_or_default()),
            handler_configs: HashMap::new(),
            feature_flags: parse_flags(&lookup("TASK_FEATURE_FLAGS").unwrap_or_default())?,
            strict: match lookup("TASK_STRICT_CONFIG").as_deref().map(str::trim) {
                None | Some("" | "false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(ConfigError {
                        variable: "TASK_STRICT_CONFIG",
                        message: format!("'{other}' is not a boolean: write true or false"),
                    });
                }
            },
        })
    }

    /// Judges the unknown domains `taskplane_handlers::setup_registry_with_config`
    /// reported: an error under `strict`, otherwise fine (they were warned).
    pub fn check_unknown_domains(&self, unknown: &[String]) -> Result<(), ConfigError> {
        if self.strict && !unknown.is_empty() {
            return Err(ConfigError {
                variable: "TASK_ENABLED_DOMAINS",
                message: format!(
                    "unknown domains {} (known: user_management, billing, system_maintenance, platform); \
                     TASK_STRICT_CONFIG=true refuses to start",
                    unknown.join(", ")
                ),
            });
        }
        Ok(())
    }

    /// Whether a feature flag is on (unset flags are off).
    pub fn feature_enabled(&self, flag: &str) -> bool {
        self.feature_flags.get(flag).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn reads_lists_and_flags() {
        let config = RegistryConfig::from_lookup(lookup(&[
            ("TASK_ENABLED_DOMAINS", "billing, user_management"),
            ("TASK_DISABLED_TYPES", "password_reset,"),
            (
                "TASK_FEATURE_FLAGS",
                "new_payment_flow:false,enhanced_emails:true",
            ),
        ]))
        .unwrap();
        assert_eq!(config.enabled_domains, ["billing", "user_management"]);
        assert_eq!(config.disabled_task_types, ["password_reset"]);
        assert!(config.feature_enabled("enhanced_emails"));
        assert!(!config.feature_enabled("new_payment_flow"));
        assert!(!config.feature_enabled("unset"));
    }

    #[test]
    fn defaults_enable_the_example_domains_and_the_platform_built_ins() {
        let config = RegistryConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(
            config.enabled_domains,
            [
                "user_management",
                "billing",
                "system_maintenance",
                "platform"
            ]
        );
    }

    #[test]
    fn malformed_flags_are_refused_with_the_variable_named() {
        let err =
            RegistryConfig::from_lookup(lookup(&[("TASK_FEATURE_FLAGS", "enhanced_emails=yes")]))
                .unwrap_err();
        assert_eq!(err.variable, "TASK_FEATURE_FLAGS");
        assert!(
            err.to_string()
                .contains("'enhanced_emails=yes' is not a flag"),
            "{err}"
        );
    }
}
