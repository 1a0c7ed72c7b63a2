//! Who may do what: bearer tokens, their roles and their domain scopes.
//!
//! Every gRPC call passes [`AuthLayer`] first. With authentication on, it
//! reads `authorization: Bearer <token>`, finds the token (hashed, in the
//! database or the tokens file; see [`tokens`]), checks that the token's role
//! may call the method ([`access_for`]) and hands the [`Principal`] to the
//! services in the request's extensions. The services then apply the
//! principal's domain scope where the request names a domain: enqueue,
//! agent registration (and so assignment and results) and task inspection.
//! Health and reflection stay open: probes and `grpcurl list` carry no token
//! and learn nothing but the schema.

mod authenticator;
mod layer;
mod quotas;
pub mod tokens;

use std::collections::BTreeSet;

pub use authenticator::Authenticator;
pub use layer::{AuthLayer, AuthService};
pub use quotas::{Quotas, StreamPermit};

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Services that enqueue tasks and follow them.
    Client,
    /// Worker agents: connect, register their domains' types, run tasks.
    Agent,
    /// Operators: everything, including registering types, cancel and retry.
    Admin,
}

impl Role {
    /// The name used in the CLI, the tokens file and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(name: &str) -> crate::error::Result<Role> {
        match name {
            "client" => Ok(Role::Client),
            "agent" => Ok(Role::Agent),
            "admin" => Ok(Role::Admin),
            other => Err(crate::error::Error::InvalidArgument(format!(
                "unknown role '{other}': use client, agent or admin"
            ))),
        }
    }
}

/// The domains a token may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainScope {
    /// Every domain.
    All,
    /// Only these.
    Only(BTreeSet<String>),
}

impl DomainScope {
    /// Whether the scope covers `domain`.
    pub fn allows(&self, domain: &str) -> bool {
        match self {
            DomainScope::All => true,
            DomainScope::Only(domains) => domains.contains(domain),
        }
    }

    /// The scope of a list of domains; an empty list means every domain.
    pub fn from_list(domains: Vec<String>) -> Self {
        if domains.is_empty() {
            DomainScope::All
        } else {
            DomainScope::Only(domains.into_iter().collect())
        }
    }

    /// The domains listed, empty for every domain.
    pub fn to_list(&self) -> Vec<String> {
        match self {
            DomainScope::All => Vec::new(),
            DomainScope::Only(domains) => domains.iter().cloned().collect(),
        }
    }
}

/// The caller of a request, as its token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's public id (the part of the token before its secret).
    pub token_id: String,
    /// The SHA-256 of the token, to check again later that it still holds.
    pub token_sha256: String,
    /// The token's name, for logs.
    pub name: String,
    /// What the token may call.
    pub role: Role,
    /// Which domains it may act on.
    pub domains: DomainScope,
}

/// The caller of a request, as [`AuthLayer`] found it; `None` when
/// authentication is off.
pub fn principal<T>(request: &tonic::Request<T>) -> Option<Principal> {
    request.extensions().get::<Principal>().cloned()
}

impl Principal {
    /// Whether the token is limited to some domains.
    pub fn is_scoped(&self) -> bool {
        self.domains != DomainScope::All
    }
}

/// What a gRPC method needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token (health checks, reflection).
    Open,
    /// Enqueue tasks (within the token's domains): clients, admins, and
    /// agents, whose handlers enqueue follow-ups.
    Enqueue,
    /// Cancel and retry tasks (within the token's domains): clients and
    /// admins.
    Intervene,
    /// Read tasks, types, agents and statistics: every role (agents' handlers
    /// read history too).
    Inspect,
    /// Open an agent stream: agents and admins.
    Connect,
    /// Register task types by hand, manage schedules: admins.
    Administer,
}

impl Access {
    /// Whether `role` may call a method that needs this access.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Open | Access::Inspect => true,
            Access::Enqueue => matches!(role, Role::Client | Role::Agent | Role::Admin),
            Access::Intervene => matches!(role, Role::Client | Role::Admin),
            Access::Connect => matches!(role, Role::Agent | Role::Admin),
            Access::Administer => role == Role::Admin,
        }
    }
}

/// The access a gRPC method (its HTTP/2 path) needs. Unknown methods need
/// administrator access, so a method added later is closed until listed.
pub fn access_for(path: &str) -> Access {
    if path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.") {
        return Access::Open;
    }
    match path.strip_prefix("/taskplane.v1.") {
        Some("TaskService/EnqueueTask" | "TaskService/EnqueueTasks") => Access::Enqueue,
        Some(
            "TaskService/CancelTask"
            | "TaskService/RetryTask"
            | "TaskService/CancelTasks"
            | "TaskService/RetryTasks",
        ) => Access::Intervene,
        Some(
            "TaskService/GetTask"
            | "TaskService/ListTasks"
            | "TaskService/WatchTask"
            | "TaskService/ListTaskAttempts"
            | "TaskService/GetQueueStats"
            | "TaskService/GetRecentActivity"
            | "RegistryService/ListTaskTypes"
            | "RegistryService/GetTaskType"
            | "RegistryService/ValidateTaskType"
            | "RegistryService/ListDomains"
            | "RegistryService/ListAgents"
            | "ScheduleService/GetSchedule"
            | "ScheduleService/ListSchedules",
        ) => Access::Inspect,
        Some("AgentService/Connect") => Access::Connect,
        _ => Access::Administer,
    }
}

/// Checks that the caller (if authentication is on) may act on `domain`;
/// `what` names the action for the error and the log.
pub fn check_domain(
    principal: Option<&Principal>,
    domain: &str,
    what: &str,
) -> Result<(), tonic::Status> {
    match principal {
        Some(principal) if !principal.domains.allows(domain) => {
            tracing::warn!(token = %principal.token_id, name = %principal.name, %domain, action = what, "denied: domain outside the token's scope");
            Err(tonic::Status::permission_denied(format!(
                "this token may not {what} in domain '{domain}': use a token whose scope includes it"
            )))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_reaches_exactly_its_methods() {
        let enqueue = access_for("/taskplane.v1.TaskService/EnqueueTasks");
        let retry = access_for("/taskplane.v1.TaskService/RetryTask");
        let connect = access_for("/taskplane.v1.AgentService/Connect");
        let read = access_for("/taskplane.v1.TaskService/GetTask");
        assert!(
            enqueue.allows(Role::Client) && enqueue.allows(Role::Agent),
            "follow-ups"
        );
        assert!(retry.allows(Role::Client) && !retry.allows(Role::Agent));
        assert!(connect.allows(Role::Agent) && !connect.allows(Role::Client));
        assert!(read.allows(Role::Agent) && read.allows(Role::Client));
        assert_eq!(access_for("/grpc.health.v1.Health/Check"), Access::Open);
        let list_schedules = access_for("/taskplane.v1.ScheduleService/ListSchedules");
        let create_schedule = access_for("/taskplane.v1.ScheduleService/CreateSchedule");
        assert!(list_schedules.allows(Role::Client) && list_schedules.allows(Role::Agent));
        assert!(!create_schedule.allows(Role::Client) && create_schedule.allows(Role::Admin));
        assert_eq!(
            access_for("/taskplane.v1.TaskService/Unknown"),
            Access::Administer
        );
    }

    #[test]
    fn scopes_cover_only_their_domains() {
        let scope = DomainScope::from_list(vec!["billing".into()]);
        assert!(scope.allows("billing") && !scope.allows("user_management"));
        assert!(DomainScope::from_list(vec![]).allows("anything"));
    }
}
