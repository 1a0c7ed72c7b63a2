//! Every environment variable the `taskplane-agent` binary reads, with what
//! it sets. `taskplane-agent --help` prints them, and the deploy manifests
//! are checked against them; a test keeps this list and the code in step.

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
    ("TASKPLANE_SMTP_FROM", "sender of the email handlers"),
    (
        "TASKPLANE_WEBHOOK_SECRET",
        "key of the X-Taskplane-Signature HMAC on webhooks",
    ),
    ("TASKPLANE_PAYMENT_GATEWAY_URL", "where payment webhooks go"),
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
    use super::VARIABLES;
    use std::collections::BTreeSet;

    /// Every `"TASKPLANE_…"` or `"TASK_…"` literal in the agent's sources
    /// is listed, and every listed variable is read somewhere.
    #[test]
    fn the_list_matches_the_variables_the_code_reads() {
        let mut read = BTreeSet::new();
        let sources = walkdir::WalkDir::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
        for entry in sources.into_iter().filter_map(Result::ok) {
            if entry.path().ends_with("environment.rs")
                || entry.path().extension().is_none_or(|e| e != "rs")
            {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap();
            for piece in text.split('"').skip(1).step_by(2) {
                let is_name = |prefix: &str| {
                    piece.strip_prefix(prefix).is_some_and(|rest| {
                        !rest.is_empty()
                            && !rest.ends_with('_')
                            && rest.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                    })
                };
                if (is_name("TASKPLANE_") || is_name("TASK_")) && !piece.starts_with("TASK_STATUS_")
                {
                    read.insert(piece.to_owned());
                }
            }
        }
        let listed: BTreeSet<String> = VARIABLES
            .iter()
            .map(|(name, _)| name.to_string())
            .filter(|name| name != "RUST_LOG")
            .collect();
        assert_eq!(listed, read);
    }
}
