//! The console's calls: the gRPC services themselves, called in process
//! through the same authentication layer as the network listener, with the
//! signed-in token. Every page and every action is therefore exactly a
//! gRPC call, with its role and domain checks: the console can do nothing
//! its token could not do with `grpcurl`.

use taskplane_proto::v1::registry_service_client::RegistryServiceClient;
use taskplane_proto::v1::schedule_service_client::ScheduleServiceClient;
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use tonic::service::Routes;

use crate::auth::AuthService;

/// The gRPC services behind authentication, as a service called in process.
pub type InProcess = AuthService<Routes>;

/// The services, called with one session's token.
#[derive(Clone)]
pub struct Caller {
    service: InProcess,
    token: Option<String>,
}

impl Caller {
    /// Calls `service` with `token` (none when authentication is off).
    pub fn new(service: InProcess, token: Option<String>) -> Self {
        Caller { service, token }
    }

    /// A request carrying the token as gRPC clients send it.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// `TaskService`.
    pub fn tasks(&self) -> TaskServiceClient<InProcess> {
        TaskServiceClient::new(self.service.clone())
    }

    /// `RegistryService`.
    pub fn registry(&self) -> RegistryServiceClient<InProcess> {
        RegistryServiceClient::new(self.service.clone())
    }

    /// `ScheduleService`.
    pub fn schedules(&self) -> ScheduleServiceClient<InProcess> {
        ScheduleServiceClient::new(self.service.clone())
    }
}
