//! [`VersionedHandler`]: several versions of one task type's handler behind
//! one registration, chosen per task with fallback to older versions.
//!
//! The version a task asks for is, in order: the task's `handler_version`
//! (set at enqueue), its `handler_version` metadata entry, its payload's
//! `"version"` field, then the handler's default. A version that is not
//! available falls back v3 → v2 → v1; a task asking for v1 when only v2 is
//! there, or for an unknown version, fails with `UnsupportedVersion`.

use async_trait::async_trait;

use crate::flow::FlowLimits;
use crate::handler::{TaskContext, TaskError, TaskHandler, TaskResult};

/// The handler versions a [`VersionedHandler`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HandlerVersion {
    /// `"v1"`.
    V1,
    /// `"v2"`.
    V2,
    /// `"v3"`.
    V3,
}

impl HandlerVersion {
    /// Parses `"v1"`, `"v2"` or `"v3"`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "v1" => Some(HandlerVersion::V1),
            "v2" => Some(HandlerVersion::V2),
            "v3" => Some(HandlerVersion::V3),
            _ => None,
        }
    }

    /// The wire name, e.g. `"v2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            HandlerVersion::V1 => "v1",
            HandlerVersion::V2 => "v2",
            HandlerVersion::V3 => "v3",
        }
    }
}

/// One task type served by up to three handler versions.
pub struct VersionedHandler {
    v1_handler: Option<Box<dyn TaskHandler>>,
    v2_handler: Option<Box<dyn TaskHandler>>,
    v3_handler: Option<Box<dyn TaskHandler>>,
    default_version: HandlerVersion,
    description: String,
}

impl VersionedHandler {
    /// A handler with no versions yet, defaulting to `default_version`.
    pub fn new(default_version: HandlerVersion) -> Self {
        VersionedHandler {
            v1_handler: None,
            v2_handler: None,
            v3_handler: None,
            default_version,
            description: String::new(),
        }
    }

    /// Adds (or replaces) the handler of one version.
    pub fn with_version(mut self, version: HandlerVersion, handler: Box<dyn TaskHandler>) -> Self {
        let slot = match version {
            HandlerVersion::V1 => &mut self.v1_handler,
            HandlerVersion::V2 => &mut self.v2_handler,
            HandlerVersion::V3 => &mut self.v3_handler,
        };
        *slot = Some(handler);
        self
    }

    /// Sets the description registered for the task type.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// The version a task asks for; an unknown name is an error.
    pub fn determine_version(&self, context: &TaskContext) -> Result<HandlerVersion, TaskError> {
        let asked = Some(context.handler_version.as_str())
            .filter(|v| !v.is_empty())
            .or_else(|| context.metadata.get("handler_version").map(String::as_str))
            .or_else(|| context.payload.get("version").and_then(|v| v.as_str()));
        match asked {
            None => Ok(self.default_version),
            Some(name) => HandlerVersion::parse(name).ok_or_else(|| {
                TaskError::UnsupportedVersion(format!(
                    "'{name}' is not a handler version: use v1, v2 or v3"
                ))
            }),
        }
    }

    /// The handler that serves `version`: itself, or the newest older one.
    pub fn resolve(
        &self,
        version: HandlerVersion,
    ) -> Result<(HandlerVersion, &dyn TaskHandler), TaskError> {
        let candidates = [
            (HandlerVersion::V3, &self.v3_handler),
            (HandlerVersion::V2, &self.v2_handler),
            (HandlerVersion::V1, &self.v1_handler),
        ];
        candidates
            .into_iter()
            .filter(|(candidate, _)| *candidate <= version)
            .find_map(|(candidate, handler)| handler.as_deref().map(|h| (candidate, h)))
            .ok_or_else(|| {
                TaskError::UnsupportedVersion(format!(
                    "no handler for {} or an older version (available: {})",
                    version.as_str(),
                    self.versions().join(", ")
                ))
            })
    }
}

#[async_trait]
impl TaskHandler for VersionedHandler {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let version = self.determine_version(&context)?;
        let (served_by, handler) = self.resolve(version)?;
        if served_by != version {
            tracing::debug!(task_id = %context.task_id, asked = version.as_str(), served_by = served_by.as_str(), "version fallback");
        }
        handler.handle(context).await
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    /// The limits of the newest version that declares any: the versions
    /// share one task type, and so one policy.
    fn flow_limits(&self) -> Option<FlowLimits> {
        [&self.v3_handler, &self.v2_handler, &self.v1_handler]
            .into_iter()
            .flatten()
            .find_map(|handler| handler.flow_limits())
    }

    fn versions(&self) -> Vec<String> {
        [
            (HandlerVersion::V1, &self.v1_handler),
            (HandlerVersion::V2, &self.v2_handler),
            (HandlerVersion::V3, &self.v3_handler),
        ]
        .into_iter()
        .filter(|(_, handler)| handler.is_some())
        .map(|(version, _)| version.as_str().to_owned())
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct Tag(&'static str);

    #[async_trait]
    impl TaskHandler for Tag {
        async fn handle(&self, _context: TaskContext) -> Result<TaskResult, TaskError> {
            Ok(TaskResult::new(json!({ "ran": self.0 })))
        }
    }

    fn context(
        handler_version: &str,
        metadata: &[(&str, &str)],
        payload: serde_json::Value,
    ) -> TaskContext {
        let mut context = TaskContext::new("report", payload);
        context.handler_version = handler_version.into();
        context.metadata = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        context
    }

    async fn ran(handler: &VersionedHandler, context: TaskContext) -> Result<String, TaskError> {
        Ok(handler.handle(context).await?.output["ran"]
            .as_str()
            .unwrap()
            .to_owned())
    }

    #[tokio::test]
    async fn resolution_order_is_task_field_then_metadata_then_payload_then_default() {
        let handler = VersionedHandler::new(HandlerVersion::V1)
            .with_version(HandlerVersion::V1, Box::new(Tag("v1")))
            .with_version(HandlerVersion::V2, Box::new(Tag("v2")))
            .with_version(HandlerVersion::V3, Box::new(Tag("v3")));
        assert_eq!(
            ran(
                &handler,
                context("v3", &[("handler_version", "v2")], json!({"version": "v1"}))
            )
            .await
            .unwrap(),
            "v3"
        );
        assert_eq!(
            ran(
                &handler,
                context("", &[("handler_version", "v2")], json!({"version": "v3"}))
            )
            .await
            .unwrap(),
            "v2"
        );
        assert_eq!(
            ran(&handler, context("", &[], json!({"version": "v3"})))
                .await
                .unwrap(),
            "v3"
        );
        assert_eq!(
            ran(&handler, context("", &[], json!({}))).await.unwrap(),
            "v1"
        );
    }

    #[tokio::test]
    async fn missing_versions_fall_back_to_older_ones_never_newer() {
        let handler = VersionedHandler::new(HandlerVersion::V2)
            .with_version(HandlerVersion::V2, Box::new(Tag("v2")));
        assert_eq!(
            ran(&handler, context("v3", &[], json!({}))).await.unwrap(),
            "v2"
        );
        let err = ran(&handler, context("v1", &[], json!({})))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TaskError::UnsupportedVersion(ref m) if m.contains("available: v2")),
            "{err}"
        );
        let err = ran(&handler, context("v9", &[], json!({})))
            .await
            .unwrap_err();
        assert!(matches!(err, TaskError::UnsupportedVersion(_)));
        assert!(!err.is_retryable(), "no retry can make a version appear");
        assert_eq!(handler.versions(), ["v2"]);
    }
}
