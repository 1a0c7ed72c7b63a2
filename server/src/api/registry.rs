//! `taskplane.v1.RegistryService`: what can run, and who runs it.

use std::collections::BTreeMap;
use std::sync::Arc;

use taskplane_proto::names::check_name;
use taskplane_proto::v1::registry_service_server::RegistryService;
use taskplane_proto::v1::{
    AgentHandlerHealth, AgentInfo, DomainInfo, DrainAgentRequest, DrainAgentResponse,
    GetTaskTypeRequest, HandlerHealth, HandlerInfo, ListAgentsRequest, ListAgentsResponse,
    ListDomainsRequest, ListDomainsResponse, ListTaskTypesRequest, ListTaskTypesResponse,
    RegisterTaskTypeRequest, SetTaskTypePolicyRequest, TaskTypeVersions, ValidateTaskTypeRequest,
    ValidateTaskTypeResponse,
};
use tonic::{Request, Response, Status};

use crate::api::convert::{flow_change, handler_info, retry_policy_patch, std_duration, timestamp};
use crate::auth::{check_domain, principal};
use crate::engine::plane::ControlPlane;
use crate::error::{Error, Result};
use crate::model::{AgentSession, TaskType, TaskTypeSpec};
use crate::store::unregistered;

/// Serves `RegistryService`.
pub struct RegistryApi {
    plane: Arc<ControlPlane>,
}

impl RegistryApi {
    /// Serves the given control plane.
    pub fn new(plane: Arc<ControlPlane>) -> Self {
        RegistryApi { plane }
    }
}

/// A task type as stored, with the live agents serving it and their latest
/// self-checks of its handler.
fn describe(task_type: &TaskType, sessions: &[AgentSession]) -> HandlerInfo {
    let serving: Vec<&AgentSession> = sessions
        .iter()
        .filter(|s| s.task_types.contains(&task_type.task_type))
        .collect();
    let health = serving
        .iter()
        .filter_map(|session| {
            let checked_at = session.status.health_checked_at?;
            let check = session
                .status
                .health
                .iter()
                .find(|h| h.task_type == task_type.task_type)?;
            Some(AgentHandlerHealth {
                agent_name: session.agent_name.clone(),
                session_id: session.session_id.to_string(),
                healthy: check.healthy,
                message: check.message.clone(),
                checked_at: Some(timestamp(checked_at)),
            })
        })
        .collect();
    handler_info(task_type, serving.len() as u32, health)
}

fn live_agents_for(task_type: &str, sessions: &[AgentSession]) -> u32 {
    sessions
        .iter()
        .filter(|s| s.task_types.iter().any(|t| t == task_type))
        .count() as u32
}

fn agent_info(session: &AgentSession) -> AgentInfo {
    AgentInfo {
        agent_id: session.agent_id.to_string(),
        session_id: session.session_id.to_string(),
        agent_name: session.agent_name.clone(),
        domains: session.domains.clone(),
        task_types: session.task_types.clone(),
        max_concurrency: session.status.slots,
        running: session.status.running,
        labels: session.labels.clone().into_iter().collect(),
        feature_flags: session.feature_flags.clone().into_iter().collect(),
        handler_versions: session
            .handler_versions
            .iter()
            .map(|(task_type, versions)| TaskTypeVersions {
                task_type: task_type.clone(),
                versions: versions.clone(),
            })
            .collect(),
        connected_at: Some(timestamp(session.connected_at)),
        last_seen_at: Some(timestamp(session.status.last_seen_at)),
        draining: session.status.draining,
        handler_health: session
            .status
            .health
            .iter()
            .map(|h| HandlerHealth {
                task_type: h.task_type.clone(),
                healthy: h.healthy,
                message: h.message.clone(),
            })
            .collect(),
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

#[tonic::async_trait]
impl RegistryService for RegistryApi {
    async fn register_task_type(
        &self,
        request: Request<RegisterTaskTypeRequest>,
    ) -> Result<Response<HandlerInfo>, Status> {
        let principal = principal(&request);
        let request = request.into_inner();
        check_name("task_type", &request.task_type).map_err(invalid)?;
        check_name("domain", &request.domain).map_err(invalid)?;
        check_domain(principal.as_ref(), &request.domain, "register task types")?;
        let spec = TaskTypeSpec {
            task_type: request.task_type,
            domain: request.domain,
            description: request.description,
            versions: request.versions,
            capabilities: request.capabilities,
            default_max_attempts: Some(request.default_max_attempts).filter(|&n| n > 0),
            default_timeout: request
                .default_timeout
                .as_ref()
                .map(|t| std_duration("default_timeout", t))
                .transpose()?,
            default_retry_policy: retry_policy_patch(request.default_retry_policy.as_ref())?,
            flow: None,
        };
        let registered = self.plane.store.register_task_types(&[spec]).await?;
        let task_type = &registered[0];
        tracing::info!(task_type = %task_type.task_type, domain = %task_type.domain, "task type registered by an operator");
        Ok(Response::new(describe(
            task_type,
            &self.plane.live_sessions().await?,
        )))
    }

    async fn list_task_types(
        &self,
        request: Request<ListTaskTypesRequest>,
    ) -> Result<Response<ListTaskTypesResponse>, Status> {
        let domain = request.into_inner().domain;
        let task_types = self
            .plane
            .store
            .list_task_types(Some(domain.as_str()).filter(|d| !d.is_empty()))
            .await?;
        let sessions = self.plane.live_sessions().await?;
        let task_types = task_types.iter().map(|t| describe(t, &sessions)).collect();
        Ok(Response::new(ListTaskTypesResponse { task_types }))
    }

    async fn get_task_type(
        &self,
        request: Request<GetTaskTypeRequest>,
    ) -> Result<Response<HandlerInfo>, Status> {
        let name = request.into_inner().task_type;
        check_name("task_type", &name).map_err(invalid)?;
        let task_type = self.plane.store.get_task_type(&name).await?.ok_or_else(|| {
            Error::NotFound(format!("task type '{name}' is not registered: RegistryService.ListTaskTypes lists the registered ones"))
        })?;
        Ok(Response::new(describe(
            &task_type,
            &self.plane.live_sessions().await?,
        )))
    }

    async fn validate_task_type(
        &self,
        request: Request<ValidateTaskTypeRequest>,
    ) -> Result<Response<ValidateTaskTypeResponse>, Status> {
        let request = request.into_inner();
        let answer = |valid: bool, reason: String, live_agents: u32| {
            Response::new(ValidateTaskTypeResponse {
                valid,
                reason,
                live_agents,
            })
        };
        if let Err(reason) = check_name("task_type", &request.task_type) {
            return Ok(answer(false, reason, 0));
        }
        let live_agents = live_agents_for(&request.task_type, &self.plane.live_sessions().await?);
        let Some(task_type) = self.plane.store.get_task_type(&request.task_type).await? else {
            return Ok(answer(
                false,
                format!("task type '{}' is not registered", request.task_type),
                live_agents,
            ));
        };
        if !request.version.is_empty() && !task_type.versions.contains(&request.version) {
            let served = if task_type.versions.is_empty() {
                "none".to_owned()
            } else {
                task_type.versions.join(", ")
            };
            return Ok(answer(
                false,
                format!(
                    "version '{}' of task type '{}' is not registered (registered: {served})",
                    request.version, request.task_type
                ),
                live_agents,
            ));
        }
        Ok(answer(true, String::new(), live_agents))
    }

    async fn list_domains(
        &self,
        _request: Request<ListDomainsRequest>,
    ) -> Result<Response<ListDomainsResponse>, Status> {
        let mut domains: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for task_type in self.plane.store.list_task_types(None).await? {
            domains
                .entry(task_type.domain)
                .or_default()
                .push(task_type.task_type);
        }
        let sessions = self.plane.live_sessions().await?;
        let domains = domains
            .into_iter()
            .map(|(domain, task_types)| DomainInfo {
                live_agents: sessions
                    .iter()
                    .filter(|s| s.domains.contains(&domain))
                    .count() as u32,
                domain,
                task_types,
            })
            .collect();
        Ok(Response::new(ListDomainsResponse { domains }))
    }

    async fn list_agents(
        &self,
        _request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let agents = self
            .plane
            .live_sessions()
            .await?
            .iter()
            .map(agent_info)
            .collect();
        Ok(Response::new(ListAgentsResponse { agents }))
    }

    async fn drain_agent(
        &self,
        request: Request<DrainAgentRequest>,
    ) -> Result<Response<DrainAgentResponse>, Status> {
        let principal = principal(&request);
        let agent = request.into_inner().agent;
        if agent.trim().is_empty() {
            return Err(Error::InvalidArgument(
                "agent is empty: name a session id, an agent id or an agent name (taskplane agents list shows them)".into(),
            )
            .into());
        }
        let matching: Vec<AgentSession> = self
            .plane
            .live_sessions()
            .await?
            .into_iter()
            .filter(|s| {
                s.session_id.to_string() == agent
                    || s.agent_id.to_string() == agent
                    || s.agent_name == agent
            })
            .collect();
        if matching.is_empty() {
            return Err(Error::NotFound(format!(
                "no live agent is '{agent}': name a session id, an agent id or an agent name that taskplane agents list shows"
            ))
            .into());
        }
        for session in &matching {
            for domain in &session.domains {
                check_domain(principal.as_ref(), domain, "drain agents")?;
            }
        }
        self.plane.drain(&matching).await?;
        let agents = matching
            .iter()
            .map(|session| AgentInfo {
                draining: true,
                ..agent_info(session)
            })
            .collect();
        Ok(Response::new(DrainAgentResponse { agents }))
    }

    async fn set_task_type_policy(
        &self,
        request: Request<SetTaskTypePolicyRequest>,
    ) -> Result<Response<HandlerInfo>, Status> {
        let principal = principal(&request);
        let request = request.into_inner();
        check_name("task_type", &request.task_type).map_err(invalid)?;
        let change = flow_change(&request)?;
        let task_type = self
            .plane
            .store
            .get_task_type(&request.task_type)
            .await?
            .ok_or_else(|| unregistered(&request.task_type))?;
        check_domain(
            principal.as_ref(),
            &task_type.domain,
            "set task type policies",
        )?;
        let changed = self
            .plane
            .set_flow_policy(&request.task_type, &change)
            .await?;
        tracing::info!(task_type = %changed.task_type, policy = ?changed.flow, "flow-control policy changed");
        Ok(Response::new(describe(
            &changed,
            &self.plane.live_sessions().await?,
        )))
    }
}
