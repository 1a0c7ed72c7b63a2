//! The `tracing` set-up of the taskplane binaries.

use std::io::IsTerminal as _;
use std::str::FromStr;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Lines for people (the default).
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields (such as
    /// `task_id` and `trace_id`).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    /// Parses `TASKPLANE_LOG_FORMAT`: `text` (or empty) or `json`.
    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "" | "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "TASKPLANE_LOG_FORMAT='{other}' is not a log format: use text or json"
            )),
        }
    }
}

/// Installs the `tracing` subscriber: `RUST_LOG` filters, with
/// `default_filter` where it is unset (`info` for servers and agents, `warn`
/// for a benchmark whose report must stay readable). Logs go to stderr, so
/// stdout stays for what the command prints for people, and are coloured
/// only when stderr is a terminal: a log file holds no escape codes.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_format_is_text_json_or_an_error_naming_the_variable() {
        assert_eq!("".parse(), Ok(LogFormat::Text));
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        let error = "yaml".parse::<LogFormat>().unwrap_err();
        assert!(error.contains("TASKPLANE_LOG_FORMAT='yaml'"), "{error}");
    }
}
