//! TLS between clients, agents and the server: certificates made for each
//! test by a real CA (rcgen), handshakes over real loopback sockets.

use std::path::PathBuf;
use std::time::Duration;

use integration_tests::pki::Ca;
use integration_tests::{Backend, TestServer, fast_queue, wait_for, wait_for_agent};
use serde_json::json;
use taskplane_agent::{Agent, ConnectOptions, TaskContext, TaskError, TaskHandler, TaskRegistry};
use taskplane_common::connect::ConnectError;
use taskplane_proto::v1::ListDomainsRequest;
use taskplane_proto::v1::registry_service_client::RegistryServiceClient;
use taskplane_server::auth::Role;
use taskplane_server::auth::tokens::{IssuedToken, TokensFile, issue};
use taskplane_server::config::{AuthConfig, SecurityConfig, TlsFiles};
use tokio_util::sync::CancellationToken;

/// PEM files in a temporary directory.
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Self {
        Files(tempfile::tempdir().unwrap())
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        // Write then rename, as secret managers do, so a reload never reads half a file.
        let partial = self.0.path().join(format!(".{name}.partial"));
        std::fs::write(&partial, text).unwrap();
        std::fs::rename(&partial, &path).unwrap();
        path
    }

    /// Writes a server identity signed by `ca` and returns its TLS settings.
    fn server_identity(&self, ca: &Ca, expired: bool) -> TlsFiles {
        let (cert, key) = ca.sign(expired);
        TlsFiles {
            cert: self.write("server.pem", &cert),
            key: self.write("server.key", &key),
            client_ca: None,
        }
    }
}

fn trusting(files: &Files, ca: &Ca, name: &str) -> ConnectOptions {
    ConnectOptions {
        tls_ca: Some(files.write(name, &ca.pem)),
        ..ConnectOptions::default()
    }
}

/// Whether a client with these options can make a call.
async fn can_call(server: &TestServer, options: &ConnectOptions) -> Result<(), String> {
    let channel = server
        .connect_as(options)
        .await
        .map_err(|e| e.to_string())?;
    RegistryServiceClient::new(channel)
        .list_domains(ListDomainsRequest::default())
        .await
        .map(drop)
        .map_err(|status| format!("{status:?}"))
}

fn tls_only(tls: TlsFiles) -> SecurityConfig {
    SecurityConfig {
        tls: Some(tls),
        reload_interval: Duration::from_millis(50),
        ..SecurityConfig::default()
    }
}

/// TLS with an identity signed by `ca`, and these tokens checked.
fn with_tokens(files: &Files, tokens: &[&IssuedToken], ca: &Ca) -> SecurityConfig {
    let mut file = TokensFile::default();
    for token in tokens {
        file.add(token);
    }
    let path = files.0.path().join("tokens.toml");
    file.save(&path).unwrap();
    SecurityConfig {
        auth: Some(AuthConfig {
            tokens_file: Some(path),
            ..AuthConfig::default()
        }),
        ..tls_only(files.server_identity(ca, false))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_verify_the_server_by_its_ca() {
    let files = Files::new();
    let ca = Ca::new("taskplane CA");
    let stranger = Ca::new("some other CA");
    let server = TestServer::start_secured(
        &Backend::Sqlite,
        fast_queue(),
        tls_only(files.server_identity(&ca, false)),
    )
    .await;
    can_call(&server, &trusting(&files, &ca, "ca.pem"))
        .await
        .expect("the right CA verifies the server");

    let wrong = can_call(&server, &trusting(&files, &stranger, "stranger.pem"))
        .await
        .expect_err("another CA does not");
    assert!(
        wrong.to_lowercase().contains("issuer") || wrong.contains("certificate"),
        "{wrong}"
    );

    // Plaintext to a TLS port fails too, and says the URL needs https.
    let plaintext = ConnectOptions::default()
        .connect(&format!("http://{}", server.address))
        .await;
    let plaintext_call = match plaintext {
        Err(error) => Err(error.to_string()),
        Ok(channel) => RegistryServiceClient::new(channel)
            .list_domains(ListDomainsRequest::default())
            .await
            .map(drop)
            .map_err(|s| s.to_string()),
    };
    assert!(plaintext_call.is_err());
    // TLS files with an http:// URL are a setup mistake, named as such.
    let mixed = trusting(&files, &ca, "ca.pem")
        .connect(&format!("http://{}", server.address))
        .await
        .expect_err("refused");
    assert!(
        matches!(mixed, ConnectError::Setup(ref m) if m.contains("https://")),
        "{mixed}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_is_refused_by_clients() {
    let files = Files::new();
    let ca = Ca::new("taskplane CA");
    let server = TestServer::start_secured(
        &Backend::Sqlite,
        fast_queue(),
        tls_only(files.server_identity(&ca, true)),
    )
    .await;
    let error = can_call(&server, &trusting(&files, &ca, "ca.pem"))
        .await
        .expect_err("expired");
    assert!(error.to_lowercase().contains("expired"), "{error}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca() {
    let files = Files::new();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let stranger = Ca::new("stranger CA");
    let mut tls = files.server_identity(&server_ca, false);
    tls.client_ca = Some(files.write("client-ca.pem", &client_ca.pem));
    let server = TestServer::start_secured(&Backend::Sqlite, fast_queue(), tls_only(tls)).await;

    let without = trusting(&files, &server_ca, "server-ca.pem");
    assert!(
        can_call(&server, &without).await.is_err(),
        "no client certificate"
    );

    let with_identity = |ca: &Ca, name: &str| {
        let (cert, key) = ca.sign(false);
        ConnectOptions {
            tls_cert: Some(files.write(&format!("{name}.pem"), &cert)),
            tls_key: Some(files.write(&format!("{name}.key"), &key)),
            ..without.clone()
        }
    };
    can_call(&server, &with_identity(&client_ca, "client"))
        .await
        .expect("a certificate from the client CA is admitted");
    assert!(
        can_call(&server, &with_identity(&stranger, "stranger"))
            .await
            .is_err(),
        "a certificate from another CA is not"
    );
    // Half an identity is a setup error, named as such.
    let half = ConnectOptions {
        tls_key: None,
        ..with_identity(&client_ca, "half")
    };
    let error = server.connect_as(&half).await.expect_err("refused");
    assert!(matches!(error, ConnectError::Setup(_)), "{error}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let files = Files::new();
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let server = TestServer::start_secured(
        &Backend::Sqlite,
        fast_queue(),
        tls_only(files.server_identity(&old_ca, false)),
    )
    .await;
    let trusts_old = trusting(&files, &old_ca, "old.pem");
    let trusts_new = trusting(&files, &new_ca, "new.pem");
    can_call(&server, &trusts_old).await.unwrap();
    assert!(can_call(&server, &trusts_new).await.is_err());

    // A broken replacement is refused and the old certificate stays.
    files.write("server.key", "not a key");
    tokio::time::sleep(Duration::from_millis(200)).await;
    can_call(&server, &trusts_old)
        .await
        .expect("still served by the old certificate");

    files.server_identity(&new_ca, false);
    wait_for(|| {
        let server = &server;
        let trusts_new = trusts_new.clone();
        async move { can_call(server, &trusts_new).await.is_ok() }
    })
    .await;
    assert!(
        can_call(&server, &trusts_old).await.is_err(),
        "new connections get the new certificate"
    );
    server.stop().await;
}

struct Echo;

#[async_trait::async_trait]
impl TaskHandler for Echo {
    async fn handle(&self, context: TaskContext) -> Result<taskplane_agent::TaskResult, TaskError> {
        Ok(taskplane_agent::TaskResult::new(
            json!({ "echo": context.payload }),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_token_over_tls_serves_its_domain() {
    let files = Files::new();
    let ca = Ca::new("taskplane CA");
    // Handlers registered outside a domain belong to `default`.
    let agent_token = issue("echo-agent", Role::Agent, vec!["default".into()]).unwrap();
    let client_token = issue("echo-client", Role::Client, vec![]).unwrap();
    let security = with_tokens(&files, &[&agent_token, &client_token], &ca);
    let server = TestServer::start_secured(&Backend::Sqlite, fast_queue(), security).await;
    let trust = trusting(&files, &ca, "ca.pem");

    let mut registry = TaskRegistry::new();
    registry.register_handler("echo_task", Box::new(Echo));
    let agent = Agent::builder()
        .registry(registry)
        .server(server.url())
        .name("echo-agent")
        .connect_options(ConnectOptions {
            token: Some(agent_token.token.clone()),
            ..trust.clone()
        })
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let agent_stop = stop.clone();
    let agent_task = tokio::spawn(agent.run(async move { agent_stop.cancelled().await }));

    let client = ConnectOptions {
        token: Some(client_token.token.clone()),
        ..trust
    };
    let channel = server.connect_as(&client).await.unwrap();
    wait_for_agent(&RegistryServiceClient::new(channel), "echo-agent").await;
    // The client crate, with the same token-over-TLS settings.
    let tasks = taskplane_client::Client::builder()
        .server(server.url())
        .connect_options(client)
        .connect()
        .await
        .unwrap();
    let task = tasks
        .enqueue("echo_task", json!({"word": "hi"}))
        .await
        .unwrap();
    let done = tasks.wait(&task.id, Duration::from_secs(20)).await.unwrap();
    assert_eq!(done.status, taskplane_client::TaskStatus::Completed);
    assert_eq!(done.result.unwrap()["echo"]["word"], "hi");
    stop.cancel();
    agent_task.await.unwrap().unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_over_the_servers_tls() {
    let files = Files::new();
    let ca = Ca::new("taskplane CA");
    let admin = issue("ops", Role::Admin, vec![]).unwrap();
    let security = with_tokens(&files, &[&admin], &ca);
    let server = TestServer::start_secured(&Backend::Sqlite, fast_queue(), security).await;
    let ca_file = files.write("ca.pem", &ca.pem);
    let port = server.console_address.port();
    let curl = |args: Vec<String>| {
        let ca_file = ca_file.clone();
        async move {
            let answer = tokio::process::Command::new("curl")
                .args(["-sS", "-i", "--max-time", "5", "--cacert"])
                .arg(&ca_file)
                .args(args)
                .output()
                .await
                .expect("curl runs");
            String::from_utf8_lossy(&answer.stdout).into_owned()
        }
    };
    let page = curl(vec![format!("https://127.0.0.1:{port}/login")]).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("<title>Sign in · taskplane</title>"),
        "{page}"
    );
    let signed_in = curl(vec![
        "-H".into(),
        format!("Origin: https://127.0.0.1:{port}"),
        "--data-urlencode".into(),
        format!("token={}", admin.token),
        format!("https://127.0.0.1:{port}/login"),
    ])
    .await;
    assert!(signed_in.starts_with("HTTP/1.1 303"), "{signed_in}");
    let cookie = signed_in
        .lines()
        .find(|line| line.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(
        cookie.contains("HttpOnly; SameSite=Strict") && cookie.trim_end().ends_with("; Secure"),
        "the session cookie stays on TLS, out of scripts' reach: {cookie}"
    );
    let plain = tokio::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}/login"))
        .output()
        .await
        .expect("curl runs");
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("200 OK"),
        "no plaintext beside TLS"
    );
    server.stop().await;
}
