//! [`FollowUps`]: how a handler enqueues the tasks that follow from its
//! own, over its agent's connection, with its agent's token (so within the
//! token's domains), each recorded with the running task as its parent.

use taskplane_common::AuthChannel;
use taskplane_proto::json::json_to_struct;
use taskplane_proto::v1::EnqueueTaskRequest;
use taskplane_proto::v1::task_service_client::TaskServiceClient;

use crate::handler::TaskError;

/// Enqueues follow-up tasks for the handlers of one agent session.
#[derive(Debug, Clone)]
pub struct FollowUps {
    client: TaskServiceClient<AuthChannel>,
}

impl FollowUps {
    /// Follow-ups over `channel`, the agent's connection to the server.
    pub(crate) fn new(channel: AuthChannel) -> Self {
        FollowUps {
            client: TaskServiceClient::new(channel),
        }
    }

    /// Enqueues `request` as a follow-up of task `parent_id`; returns the new
    /// task's id. A refusal the server gives for good (an unknown type, a
    /// domain outside the token's scope) is permanent; an unreachable
    /// server is retryable, so the parent's attempt runs again.
    pub(crate) async fn enqueue(
        &self,
        parent_id: &str,
        mut request: EnqueueTaskRequest,
    ) -> Result<String, TaskError> {
        request.parent_id = parent_id.to_owned();
        let task_type = request.task_type.clone();
        let answer = self
            .client
            .clone()
            .enqueue_task(request)
            .await
            .map_err(|status| {
                let why = format!(
                    "the follow-up '{task_type}' was not enqueued: {}",
                    status.message()
                );
                match status.code() {
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Aborted => TaskError::Retryable(why),
                    _ => TaskError::Permanent(why),
                }
            })?;
        Ok(answer
            .into_inner()
            .task
            .map(|task| task.id)
            .unwrap_or_default())
    }
}

/// The request for a follow-up of `task_type` with `payload` (a JSON
/// object; anything else is refused before it is sent).
pub(crate) fn follow_up_request(
    task_type: &str,
    payload: serde_json::Value,
) -> Result<EnqueueTaskRequest, TaskError> {
    let serde_json::Value::Object(payload) = payload else {
        return Err(TaskError::Permanent(format!(
            "the follow-up '{task_type}' needs a JSON object as its payload"
        )));
    };
    Ok(EnqueueTaskRequest {
        task_type: task_type.to_owned(),
        payload: Some(json_to_struct(&payload)),
        ..EnqueueTaskRequest::default()
    })
}
