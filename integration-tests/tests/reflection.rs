//! Server reflection v1 and v1alpha list every service, and health answers.

use integration_tests::{Backend, TestServer};
use tonic::codegen::http::uri::PathAndQuery;
use tonic_health::pb::health_client::HealthClient;

async fn list_services_v1(server: &TestServer) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let codec =
        tonic_prost::ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default();
    let mut responses = grpc
        .streaming(
            tonic::Request::new(tokio_stream::once(request)),
            PathAndQuery::from_static("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            codec,
        )
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}")
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

async fn reflection_v1_lists_every_service(backend: Backend) {
    let server = TestServer::start(&backend).await;
    assert_eq!(
        list_services_v1(&server).await,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "taskplane.v1.AgentService",
            "taskplane.v1.RegistryService",
            "taskplane.v1.ScheduleService",
            "taskplane.v1.TaskService",
        ]
    );
    server.stop().await;
}

async fn health_reports_serving_for_each_service(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let mut health = HealthClient::new(server.channel().await);
    for service in [
        "taskplane.v1.TaskService",
        "taskplane.v1.RegistryService",
        "taskplane.v1.AgentService",
        "taskplane.v1.ScheduleService",
    ] {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service}"
        );
    }
    server.stop().await;
}

integration_tests::on_every_backend!(
    reflection_v1_lists_every_service,
    health_reports_serving_for_each_service,
);
