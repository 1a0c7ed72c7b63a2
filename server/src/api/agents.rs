//! `taskplane.v1.AgentService.Connect`: one bidirectional stream per agent.
//!
//! The first message must be `register`. Its task types are written in one
//! transaction, or none is and the stream ends with the error's status. Then
//! the session's dispatcher pushes assignments while this side reads results,
//! heartbeats, credit and drain. When the stream closes, for whatever reason,
//! the session's leased tasks go back to the queue at once.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use prost::Message as _;
use taskplane_proto::json::struct_to_json;
use taskplane_proto::limits::{
    MAX_CONCURRENCY, MAX_ERROR_BYTES, MAX_PROGRESS_MESSAGE_BYTES, bounded_text,
};
use taskplane_proto::names::check_name;
use taskplane_proto::v1::agent_message::Message as AgentMessageKind;
use taskplane_proto::v1::agent_service_server::AgentService;
use taskplane_proto::v1::server_message::Message as ServerMessageKind;
use taskplane_proto::v1::{
    AgentMessage, Register, Registered, ServerMessage, TaskResult, task_result,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::api::convert::{
    MAX_HANDLER_VERSION_BYTES, assignment, cancel, declared_flow, heartbeat_ack, proto_duration,
};
use crate::api::schedules::schedule_spec;
use crate::auth::{Principal, StreamPermit, check_domain, principal};
use crate::config::QueueConfig;
use crate::engine::dispatch::dispatch_session;
use crate::engine::plane::ControlPlane;
use crate::engine::prefetch::MAX_PREFETCH;
use crate::engine::sessions::{NewSession, Session, ToAgent};
use crate::error::{Error, Result};
use crate::model::{AttemptResult, HandlerCheck, Progress, RetryPolicyPatch, TaskTypeSpec};
use crate::schedule::ScheduleSpec;
use crate::schedule::model::declared_by_agent;
use crate::store::Leases;

/// Outbound messages buffered beyond the agent's slots (cancels, notices).
const OUTBOUND_HEADROOM: usize = 64;
/// The longest task-type description accepted, in bytes.
const MAX_DESCRIPTION_BYTES: usize = 4096;
/// The most versions or capabilities one task type may list.
const MAX_LIST_ENTRIES: usize = 100;

/// Serves `AgentService`.
pub struct AgentApi {
    plane: Arc<ControlPlane>,
}

impl AgentApi {
    /// Serves the given control plane.
    pub fn new(plane: Arc<ControlPlane>) -> Self {
        AgentApi { plane }
    }
}

type ServerStream = Pin<Box<dyn Stream<Item = Result<ServerMessage, Status>> + Send>>;

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

/// The schedules each domain of a registration declares, validated, with
/// the owner they are declared by; a bad one, or one of a task type the
/// domain does not register, rejects the whole registration.
fn declared_schedules(
    register: &Register,
    config: &QueueConfig,
) -> Result<Vec<(String, Vec<ScheduleSpec>)>> {
    let mut declared = Vec::new();
    for domain in register.domains.iter().filter(|d| !d.schedules.is_empty()) {
        let mut specs = Vec::with_capacity(domain.schedules.len());
        for schedule in &domain.schedules {
            let spec = schedule_spec(Some(schedule.clone()), config)
                .map_err(|error| invalid(format!("in domain '{}': {error}", domain.domain)))?;
            if !domain
                .task_types
                .iter()
                .any(|t| t.task_type == spec.task.task_type)
            {
                return Err(invalid(format!(
                    "in domain '{}': schedule '{}' runs task type '{}', which the domain does not register: a domain schedules its own task types",
                    domain.domain, spec.name, spec.task.task_type
                )));
            }
            specs.push(spec);
        }
        declared.push((declared_by_agent(&domain.domain), specs));
    }
    Ok(declared)
}

/// Checks a registration and turns it into task-type specs; any bad entry
/// rejects the whole registration.
fn registration_specs(register: &Register, config: &QueueConfig) -> Result<Vec<TaskTypeSpec>> {
    let count: usize = register.domains.iter().map(|d| d.task_types.len()).sum();
    if count > config.max_registered_types {
        return Err(invalid(format!(
            "register names {count} task types; the limit is {}: split the agent by domain",
            config.max_registered_types
        )));
    }
    if register.agent_name.trim().is_empty() {
        return Err(invalid(
            "register.agent_name is empty: name the agent, e.g. \"billing-agent\"".into(),
        ));
    }
    if register.max_concurrency > MAX_CONCURRENCY {
        return Err(invalid(format!(
            "register.max_concurrency is {}; the limit is {MAX_CONCURRENCY}",
            register.max_concurrency
        )));
    }
    let mut seen = BTreeSet::new();
    let mut specs = Vec::new();
    for domain in &register.domains {
        check_name("domain", &domain.domain).map_err(invalid)?;
        for task_type in &domain.task_types {
            check_name("task type", &task_type.task_type)
                .map_err(|e| invalid(format!("in domain '{}': {e}", domain.domain)))?;
            if !seen.insert(task_type.task_type.as_str()) {
                return Err(invalid(format!(
                    "task type '{}' is registered twice: list each task type once",
                    task_type.task_type
                )));
            }
            if task_type.description.len() > MAX_DESCRIPTION_BYTES
                || task_type.versions.len() > MAX_LIST_ENTRIES
                || task_type.capabilities.len() > MAX_LIST_ENTRIES
                || task_type
                    .versions
                    .iter()
                    .chain(&task_type.capabilities)
                    .any(|entry| entry.len() > MAX_HANDLER_VERSION_BYTES)
            {
                return Err(invalid(format!(
                    "task type '{}' is described too long: at most {MAX_DESCRIPTION_BYTES} bytes of description and {MAX_LIST_ENTRIES} versions and capabilities of {MAX_HANDLER_VERSION_BYTES} bytes each",
                    task_type.task_type
                )));
            }
            specs.push(TaskTypeSpec {
                task_type: task_type.task_type.clone(),
                domain: domain.domain.clone(),
                description: task_type.description.clone(),
                versions: task_type.versions.clone(),
                capabilities: task_type.capabilities.clone(),
                default_max_attempts: None,
                default_timeout: None,
                default_retry_policy: RetryPolicyPatch::default(),
                flow: task_type
                    .flow
                    .as_ref()
                    .map(declared_flow)
                    .transpose()
                    .map_err(|error| {
                        invalid(format!(
                            "task type '{}' declares flow limits that do not work: {error}",
                            task_type.task_type
                        ))
                    })?,
            });
        }
    }
    if specs.is_empty() {
        return Err(invalid(
            "register names no task types: an agent must serve at least one task type".into(),
        ));
    }
    Ok(specs)
}

fn message_name(message: &AgentMessageKind) -> &'static str {
    match message {
        AgentMessageKind::Register(_) => "register",
        AgentMessageKind::Heartbeat(_) => "heartbeat",
        AgentMessageKind::Result(_) => "result",
        AgentMessageKind::Credit(_) => "credit",
        AgentMessageKind::Drain(_) => "drain",
        AgentMessageKind::Progress(_) => "progress",
    }
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    type ConnectStream = ServerStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<ServerStream>, Status> {
        let principal = principal(&request);
        let permit = self.plane.quotas.open_stream(principal.as_ref())?;
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await
            .map_err(|status| undecodable(&status).map_or(status, Status::from))?;
        let register = match first {
            Some(AgentMessage {
                message: Some(AgentMessageKind::Register(register)),
            }) => register,
            Some(AgentMessage {
                message: Some(other),
            }) => {
                return Err(Error::InvalidArgument(format!(
                    "the first message on AgentService.Connect must be `register`, not `{}`",
                    message_name(&other)
                ))
                .into());
            }
            Some(AgentMessage { message: None }) => {
                return Err(Error::InvalidArgument(
                    "the first message on AgentService.Connect must be `register`; it was empty"
                        .into(),
                )
                .into());
            }
            None => {
                return Err(
                    Error::InvalidArgument("the stream closed before `register`".into()).into(),
                );
            }
        };
        let specs = registration_specs(&register, &self.plane.config)?;
        let schedules = declared_schedules(&register, &self.plane.config)?;
        for domain in &register.domains {
            check_domain(principal.as_ref(), &domain.domain, "register task types")?;
        }
        self.plane
            .store
            .register_task_types(&specs)
            .await
            .inspect_err(|error| {
                tracing::warn!(agent = %register.agent_name, %error, "registration refused");
            })?;
        let declared: Vec<&str> = specs
            .iter()
            .filter(|spec| spec.flow.is_some())
            .map(|spec| spec.task_type.as_str())
            .collect();
        if !declared.is_empty() {
            self.plane.refresh_flow(&declared).await;
        }
        for (declared_by, specs) in &schedules {
            let written = self
                .plane
                .store
                .schedules()
                .declare_schedules(specs, declared_by)
                .await
                .inspect_err(|error| {
                    tracing::warn!(agent = %register.agent_name, %error, "declared schedules not stored; registration refused");
                })?;
            if written > 0 {
                tracing::info!(agent = %register.agent_name, %declared_by, written, "declared schedules stored");
                self.plane.schedules_changed.notify_one();
            }
        }

        let slots = register.max_concurrency.max(1);
        let max_prefetch = register.max_prefetch.min(MAX_PREFETCH);
        let (outbound, receiver) =
            tokio::sync::mpsc::channel((slots + max_prefetch) as usize + OUTBOUND_HEADROOM);
        let session = Arc::new(Session::new(NewSession {
            agent_id: Uuid::now_v7(),
            agent_name: register.agent_name.clone(),
            domains: register.domains.iter().map(|d| d.domain.clone()).collect(),
            task_types: specs.iter().map(|s| s.task_type.clone()).collect(),
            labels: register.labels.clone().into_iter().collect(),
            feature_flags: register.feature_flags.clone().into_iter().collect(),
            handler_versions: specs
                .iter()
                .filter(|s| !s.versions.is_empty())
                .map(|s| (s.task_type.clone(), s.versions.clone()))
                .collect(),
            max_concurrency: slots,
            max_prefetch,
            claim_time: self.plane.claim_time.clone(),
            outbound,
        }));
        let registered = Registered {
            agent_id: session.agent_id.to_string(),
            session_id: session.id.to_string(),
            lease_duration: Some(proto_duration(self.plane.config.lease_duration)),
            heartbeat_interval: Some(proto_duration(self.plane.config.heartbeat_interval)),
            max_message_bytes: self.plane.config.max_message_bytes as u64,
        };
        let registered = ServerMessage {
            message: Some(ServerMessageKind::Registered(registered)),
        };
        self.plane
            .store
            .record_session_start(&session.describe())
            .await?;
        self.plane.sessions.insert(session.clone());
        refresh_routing(&self.plane).await;
        tracing::info!(agent = %session.agent_name, session_id = %session.id, task_types = session.task_types.len(), slots, "agent registered");

        let plane = self.plane.clone();
        self.plane
            .tasks
            .spawn(run_session(plane, session, inbound, principal, permit));
        let to_agent = ReceiverStream::new(receiver).map(to_wire);
        let stream = tokio_stream::once(Ok(registered)).chain(to_agent);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The wire message of what the engine tells an agent; an ending is the
/// stream's final status.
fn to_wire(message: ToAgent) -> Result<ServerMessage, Status> {
    match message {
        ToAgent::Assign {
            task,
            lease_expires_at,
        } => Ok(assignment(&task, lease_expires_at)),
        ToAgent::Cancel { task_id, reason } => Ok(cancel(task_id, reason)),
        ToAgent::HeartbeatAck => Ok(heartbeat_ack()),
        ToAgent::End(error) => Err(error.into()),
    }
}

/// Serves one registered session until its stream closes or the server shuts
/// down, then returns its leased tasks to the queue. The permit counts the
/// stream against its token until then; the token is checked again every
/// heartbeat interval, and a revoked one ends the stream.
async fn run_session(
    plane: Arc<ControlPlane>,
    session: Arc<Session>,
    mut inbound: Streaming<AgentMessage>,
    principal: Option<Principal>,
    permit: StreamPermit,
) {
    let dispatcher = plane
        .tasks
        .spawn(dispatch_session(plane.clone(), session.clone()));
    let mut recheck = tokio::time::interval(plane.config.heartbeat_interval);
    let mut ended_because = None;
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            message = inbound.message() => message,
            _ = recheck.tick(), if principal.is_some() => {
                // A stalled database must not hold up the stream: a check
                // that takes too long counts as one that could not be made.
                let check_for = plane.config.heartbeat_interval / 2;
                if let (Some(authenticator), Some(principal)) = (&plane.authenticator, &principal)
                    && !tokio::time::timeout(check_for, authenticator.still_valid(principal))
                        .await
                        .unwrap_or(true)
                {
                    tracing::warn!(session_id = %session.id, token = %principal.token_id, "the agent's token is no longer valid; ending its stream");
                    let status = Error::Unauthenticated("this agent's token was revoked: start the agent with a valid token".into());
                    let _ = session.outbound.try_send(ToAgent::End(status));
                    break;
                }
                continue;
            }
            // The server ended the session (`Session::close` told the agent why).
            () = session.closed.cancelled() => break,
            () = plane.shutdown.cancelled() => {
                let _ = session.outbound.try_send(ToAgent::End(Error::Unavailable("the server is shutting down: reconnect".into())));
                break;
            }
        };
        match message {
            Ok(Some(AgentMessage {
                message: Some(message),
            })) => {
                session.seen();
                if let Err(status) = handle_message(&plane, &session, message).await {
                    tracing::warn!(session_id = %session.id, %status, "ending agent stream");
                    let _ = session.outbound.send(ToAgent::End(status)).await;
                    break;
                }
            }
            Ok(Some(AgentMessage { message: None })) => {}
            Ok(None) => break,
            Err(status) => {
                match undecodable(&status) {
                    Some(error) => {
                        tracing::warn!(session_id = %session.id, %error, "ending an agent stream that sent what cannot be decoded");
                        // Told after the release below, so that an agent
                        // that sees why its stream ended finds the reason on
                        // its attempts too.
                        ended_because = Some(error);
                    }
                    None => tracing::info!(session_id = %session.id, %status, "agent stream broke"),
                }
                break;
            }
        }
    }
    session.closed.cancel();
    let _ = dispatcher.await;
    plane.sessions.remove(session.id);
    let reason = ended_because
        .as_ref()
        .map(|error| format!("the agent's stream was ended: {error}"));
    if let Err(error) = plane
        .release(&session, reason.as_deref().unwrap_or(Leases::STREAM_CLOSED))
        .await
    {
        tracing::error!(session_id = %session.id, %error, "could not release the session's tasks; lease expiry will");
    }
    if let Some(error) = ended_because {
        let _ = session.outbound.send(ToAgent::End(error)).await;
    }
    if let Err(error) = plane.store.record_session_end(session.id).await {
        tracing::warn!(session_id = %session.id, %error, "could not record the session's end");
    }
    refresh_routing(&plane).await;
    drop(permit);
    tracing::info!(agent = %session.agent_name, session_id = %session.id, "agent disconnected");
}

/// Refreshes which versions live agents serve, after a session here began
/// or ended; on failure the lease maintenance round retries.
async fn refresh_routing(plane: &ControlPlane) {
    if let Err(error) = plane.refresh_routing().await {
        tracing::warn!(%error, "could not refresh the routing view; the next maintenance round will");
    }
}

/// What to end a stream with whose next message could not be read: a
/// message that is not an `AgentMessage` (or breaks its rules, such as
/// invalid UTF-8 or nesting too deep) or that is over the size limit. `None`
/// when the connection broke instead.
fn undecodable(status: &Status) -> Option<Error> {
    match status.code() {
        // How the codec reports bytes that do not decode (it names what
        // was expected and why).
        tonic::Code::InvalidArgument => Some(Error::InvalidArgument(status.message().to_owned())),
        // How tonic reports a message over the decoding limit.
        tonic::Code::OutOfRange => Some(Error::ResourceExhausted(format!(
            "a message on this stream is too large ({}): keep results within the server's limits",
            status.message()
        ))),
        _ => None,
    }
}

async fn handle_message(
    plane: &ControlPlane,
    session: &Arc<Session>,
    message: AgentMessageKind,
) -> Result<()> {
    match message {
        AgentMessageKind::Register(_) => {
            return Err(Error::FailedPrecondition(
                "`register` was already sent on this stream: send it once, first".into(),
            ));
        }
        AgentMessageKind::Heartbeat(heartbeat) => {
            session.set_health(
                heartbeat
                    .handler_health
                    .into_iter()
                    .map(|h| HandlerCheck {
                        task_type: h.task_type,
                        healthy: h.healthy,
                        message: h.message,
                    })
                    .collect(),
            );
            // A full queue holds messages that prove the same.
            let _ = session.outbound.try_send(ToAgent::HeartbeatAck);
        }
        AgentMessageKind::Result(result) => handle_result(plane, session, result).await?,
        AgentMessageKind::Credit(credit) => {
            if credit.slots > MAX_CONCURRENCY {
                return Err(Error::InvalidArgument(format!(
                    "credit.slots is {}; the limit is {MAX_CONCURRENCY}",
                    credit.slots
                )));
            }
            session.set_slots(credit.slots);
        }
        AgentMessageKind::Drain(_) => {
            tracing::info!(session_id = %session.id, "agent is draining");
            session.drain();
        }
        AgentMessageKind::Progress(progress) => {
            if !(0.0..=1.0).contains(&progress.fraction) {
                return Err(Error::InvalidArgument(format!(
                    "progress.fraction is {}: report a fraction from 0 to 1",
                    progress.fraction
                )));
            }
            let task_id = Uuid::parse_str(&progress.task_id).map_err(|_| {
                Error::InvalidArgument(format!(
                    "progress.task_id '{}' is not a task id",
                    progress.task_id.escape_debug()
                ))
            })?;
            if !session.holds(task_id) {
                // A report that crossed a cancel or a lost lease.
                return Ok(());
            }
            let report = Progress {
                fraction: progress.fraction,
                message: bounded_text(progress.message, MAX_PROGRESS_MESSAGE_BYTES),
                reported_at: chrono::Utc::now(),
            };
            if plane
                .store
                .record_progress(task_id, progress.attempt, &report)
                .await?
            {
                plane.events.changed([task_id]);
            }
        }
    }
    Ok(())
}

/// The encoded size of a reported result.
fn result_size(completed: &taskplane_proto::v1::Completed) -> usize {
    completed.result.as_ref().map_or(0, |r| r.encoded_len())
}

async fn handle_result(
    plane: &ControlPlane,
    session: &Arc<Session>,
    result: TaskResult,
) -> Result<()> {
    let task_id = Uuid::parse_str(&result.task_id).map_err(|_| {
        Error::InvalidArgument(format!(
            "result.task_id '{}' is not a task id",
            result.task_id.escape_debug()
        ))
    })?;
    if !session.holds(task_id) {
        tracing::warn!(session_id = %session.id, task_id = %task_id, "result for a task this session does not hold; ignored");
        return Ok(());
    }
    let outcome = match result.outcome {
        Some(task_result::Outcome::GivenBack(_)) => {
            plane.give_back(session, task_id, result.attempt).await;
            return Ok(());
        }
        Some(task_result::Outcome::Completed(completed))
            if result_size(&completed) > plane.config.max_result_bytes =>
        {
            // Refusing the message would end the stream and run the task
            // again; the attempt fails for good instead, saying why.
            let size = result_size(&completed);
            tracing::warn!(session_id = %session.id, %task_id, size, "result too large; the attempt fails");
            AttemptResult::failed(
                format!(
                    "the handler's result is {size} bytes; the limit is {} (--max-result-bytes): store large results elsewhere and return a reference",
                    plane.config.max_result_bytes
                ),
                false,
            )
        }
        Some(task_result::Outcome::Completed(completed)) => AttemptResult::Completed(
            completed
                .result
                .as_ref()
                .map(struct_to_json)
                .unwrap_or_default(),
        ),
        Some(task_result::Outcome::Failed(failed)) => AttemptResult::failed(
            bounded_text(failed.error, MAX_ERROR_BYTES),
            failed.retryable,
        )
        .retrying_after(
            failed
                .retry_after
                .and_then(|after| std::time::Duration::try_from(after).ok()),
        ),
        None => {
            return Err(Error::InvalidArgument(
                "result has neither `completed` nor `failed`".into(),
            ));
        }
    };
    let ran_for = result
        .ran_for
        .and_then(|ran| std::time::Duration::try_from(ran).ok());
    plane
        .record_result(session.clone(), task_id, result.attempt, outcome, ran_for)
        .await;
    Ok(())
}
