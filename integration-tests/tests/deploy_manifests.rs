//! The files in `deploy/` cannot drift from the binaries: every image,
//! port, probe, environment variable, secret key and domain they name is
//! checked against what `taskplane serve --help`, the agent's variable list
//! and the example domains say, and the server is started with the
//! manifests' own settings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use integration_tests::spawn_listening;
use taskplane_agent::config::DEFAULT_ENABLED_DOMAINS;
use yaml_rust2::{Yaml, YamlLoader};

fn deploy(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("deploy/{path}: {e}"))
}

fn yaml(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&deploy(path)).unwrap_or_else(|e| panic!("deploy/{path}: {e}"))
}

/// `taskplane <args> --help`.
fn help(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_taskplane-under-test"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success(), "{args:?} --help failed");
    String::from_utf8(output.stdout).unwrap()
}

/// The environment variables `taskplane serve` reads (`[env: NAME=…]`).
fn server_variables() -> BTreeSet<String> {
    let text = help(&["serve"]);
    let mut names: BTreeSet<String> = text
        .split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap().to_owned())
        .collect();
    names.extend(["RUST_LOG".to_owned(), "TASKPLANE_LOG_FORMAT".to_owned()]);
    names
}

fn agent_variables() -> BTreeSet<String> {
    taskplane_handlers::environment::VARIABLES
        .iter()
        .map(|(name, _)| name.to_string())
        .collect()
}

fn domains() -> BTreeSet<String> {
    DEFAULT_ENABLED_DOMAINS
        .split(',')
        .map(str::to_owned)
        .collect()
}

fn image(kind: &str) -> String {
    format!("taskplane/{kind}:{}", env!("CARGO_PKG_VERSION"))
}

fn port_of(address: &str) -> i64 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

fn text(value: &Yaml) -> String {
    match value {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(n) => n.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// A mapping with its `<<` merge keys applied (own keys win).
fn merged(value: &Yaml) -> BTreeMap<String, Yaml> {
    let mut map = BTreeMap::new();
    let hash = value.as_hash().expect("a mapping");
    if let Some(base) = hash.get(&Yaml::String("<<".into())) {
        map.extend(merged(base));
    }
    for (key, value) in hash {
        let key = text(key);
        if key != "<<" {
            map.insert(key, value.clone());
        }
    }
    map
}

/// `environment:` as a map of name → value.
fn environment(service: &BTreeMap<String, Yaml>) -> BTreeMap<String, String> {
    service
        .get("environment")
        .map(|env| {
            merged(env)
                .into_iter()
                .map(|(k, v)| (k, text(&v)))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_dockerfile_builds_both_binaries_on_the_supported_toolchain() {
    let dockerfile = deploy("Dockerfile");
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml")).unwrap();
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .unwrap()
        .trim_end_matches('"');
    assert!(
        dockerfile.contains(&format!("FROM rust:{rust_version}-")),
        "the build image is the workspace's rust-version {rust_version}"
    );
    assert!(dockerfile.contains("--bin taskplane --bin taskplane-agent"));
    for stage in ["AS build", "AS runtime", "AS server", "AS agent"] {
        assert!(dockerfile.contains(stage), "stage {stage}");
    }
    let (server, agent) = dockerfile.split_once("AS agent").unwrap();
    let server = server.split_once("AS server").unwrap().1;
    let env_names = |stage: &str| -> BTreeSet<String> {
        stage
            .split_whitespace()
            .filter_map(|word| word.split_once('=').map(|(name, _)| name.to_owned()))
            .filter(|name| name.starts_with("TASKPLANE_"))
            .collect()
    };
    assert!(
        env_names(server).is_subset(&server_variables()),
        "{:?}",
        env_names(server)
    );
    assert!(
        env_names(agent).is_subset(&agent_variables()),
        "{:?}",
        env_names(agent)
    );
    assert!(
        server.contains("TASKPLANE_LISTEN=0.0.0.0:50051") && server.contains("EXPOSE 50051 9090")
    );
    assert!(server.contains("TASKPLANE_METRICS_LISTEN=0.0.0.0:9090"));
    assert!(
        agent.contains("TASKPLANE_METRICS_LISTEN=0.0.0.0:9091") && agent.contains("EXPOSE 9091")
    );
    assert!(
        server.contains(r#"CMD ["taskplane", "health", "--server", "http://127.0.0.1:50051"]"#)
    );
    help(&["health"]);
}

#[test]
fn the_compose_file_names_what_the_binaries_accept() {
    let compose = &yaml("compose.yaml")[0];
    let services = merged(&compose["services"]);
    let mut server_ports = BTreeMap::new();
    let mut served_domains = BTreeSet::new();
    for (name, service) in &services {
        let service = merged(service);
        let target = service.get("build").map(|b| text(&b["target"]));
        let env = environment(&service);
        match target.as_deref() {
            Some("server") => {
                assert_eq!(text(&service["image"]), image("server"), "{name}");
                let unknown: Vec<_> = env
                    .keys()
                    .filter(|k| !server_variables().contains(*k))
                    .collect();
                assert!(unknown.is_empty(), "{name}: unknown variables {unknown:?}");
                let port = port_of(&env["TASKPLANE_LISTEN"]);
                let published = service["ports"].as_vec().unwrap();
                assert!(
                    published
                        .iter()
                        .any(|p| text(p).ends_with(&format!(":{port}"))),
                    "{name} publishes its gRPC port {port}"
                );
                let check: Vec<String> = service["healthcheck"]["test"]
                    .as_vec()
                    .unwrap()
                    .iter()
                    .map(text)
                    .collect();
                assert_eq!(
                    check[1..3],
                    ["taskplane".to_owned(), "health".to_owned()],
                    "{name}"
                );
                assert!(
                    check.last().unwrap().ends_with(&format!(":{port}")),
                    "{name} probes its own port"
                );
                server_ports.insert(name.clone(), port);
            }
            Some("agent") => {
                assert_eq!(text(&service["image"]), image("agent"), "{name}");
                let unknown: Vec<_> = env
                    .keys()
                    .filter(|k| !agent_variables().contains(*k))
                    .collect();
                assert!(unknown.is_empty(), "{name}: unknown variables {unknown:?}");
                for domain in env["TASK_ENABLED_DOMAINS"].split(',') {
                    assert!(
                        domains().contains(domain),
                        "{name}: unknown domain {domain}"
                    );
                    served_domains.insert(domain.to_owned());
                }
                assert!(env.contains_key("TASKPLANE_SERVER"), "{name}");
            }
            _ => {}
        }
    }
    assert_eq!(server_ports.len(), 2, "two replicas");
    assert_eq!(served_domains, domains(), "one agent per example domain");
    for (name, service) in &services {
        let env = environment(&merged(service));
        if let Some(servers) = env.get("TASKPLANE_SERVER") {
            for url in servers.split(',') {
                let (host, port) = url.trim_start_matches("http://").split_once(':').unwrap();
                assert_eq!(
                    server_ports.get(host),
                    Some(&port.parse().unwrap()),
                    "{name}: {url}"
                );
            }
        }
    }
}

/// The Kubernetes objects, by kind and name.
fn kubernetes() -> BTreeMap<(String, String), Yaml> {
    let mut objects = BTreeMap::new();
    for file in [
        "configmap.yaml",
        "secret.yaml",
        "server.yaml",
        "agents.yaml",
    ] {
        for document in yaml(&format!("kubernetes/{file}")) {
            let key = (text(&document["kind"]), text(&document["metadata"]["name"]));
            assert!(
                objects.insert(key.clone(), document).is_none(),
                "{key:?} twice"
            );
        }
    }
    objects
}

fn object<'a>(objects: &'a BTreeMap<(String, String), Yaml>, kind: &str, name: &str) -> &'a Yaml {
    objects
        .get(&(kind.to_owned(), name.to_owned()))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Checks a container's variables against `known` and its secret and
/// config-map references against the objects; returns its plain values.
fn container_environment(
    objects: &BTreeMap<(String, String), Yaml>,
    container: &Yaml,
    known: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for variable in container["env"].as_vec().unwrap() {
        let name = text(&variable["name"]);
        assert!(known.contains(&name), "unknown variable {name}");
        let reference = &variable["valueFrom"]["secretKeyRef"];
        if reference.is_badvalue() {
            values.insert(name, text(&variable["value"]));
        } else {
            let secret = object(objects, "Secret", &text(&reference["name"]));
            let key = text(&reference["key"]);
            assert!(
                !secret["stringData"][key.as_str()].is_badvalue(),
                "{name}: the Secret has no key {key}"
            );
        }
    }
    if let Some(sources) = container["envFrom"].as_vec() {
        for source in sources {
            let map = object(objects, "ConfigMap", &text(&source["configMapRef"]["name"]));
            for (key, _) in map["data"].as_hash().unwrap() {
                assert!(
                    known.contains(&text(key)),
                    "the ConfigMap sets unknown variable {}",
                    text(key)
                );
            }
        }
    }
    values
}

fn port_named(container: &Yaml, name: &str) -> i64 {
    container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|p| text(&p["name"]) == name)
        .and_then(|p| p["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("no port named {name}"))
}

#[test]
fn the_kubernetes_manifests_name_what_the_binaries_accept() {
    let objects = kubernetes();
    let deployment = object(&objects, "Deployment", "taskplane-server");
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    assert_eq!(text(&container["image"]), image("server"));
    assert_eq!(text(&container["args"][0]), "serve");
    let env = container_environment(&objects, container, &server_variables());
    let grpc = port_named(container, "grpc");
    assert_eq!(port_of(&env["TASKPLANE_LISTEN"]), grpc);
    assert_eq!(
        port_of(&env["TASKPLANE_METRICS_LISTEN"]),
        port_named(container, "metrics")
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["grpc"]["port"].as_i64(),
            Some(grpc),
            "{probe} asks the gRPC health service"
        );
    }
    // The tokens file is where the volume puts the Secret's key.
    let mount = text(&container["volumeMounts"][0]["mountPath"]);
    let item = &pod["spec"]["volumes"][0]["secret"]["items"][0];
    assert_eq!(
        env["TASKPLANE_TOKENS_FILE"],
        format!("{mount}/{}", text(&item["path"]))
    );
    let secret = object(
        &objects,
        "Secret",
        &text(&pod["spec"]["volumes"][0]["secret"]["secretName"]),
    );
    assert!(!secret["stringData"][text(&item["key"]).as_str()].is_badvalue());

    let service = object(&objects, "Service", "taskplane");
    assert_eq!(
        service["spec"]["selector"],
        pod["metadata"]["labels"]["app.kubernetes.io/name"]
            .as_str()
            .map(|name| {
                let mut selector = yaml_rust2::yaml::Hash::new();
                selector.insert(
                    Yaml::String("app.kubernetes.io/name".into()),
                    Yaml::String(name.into()),
                );
                Yaml::Hash(selector)
            })
            .unwrap()
    );
    let mut service_port = None;
    for port in service["spec"]["ports"].as_vec().unwrap() {
        port_named(container, &text(&port["targetPort"]));
        if text(&port["name"]) == "grpc" {
            service_port = port["port"].as_i64();
        }
    }
    let server_url = format!("http://taskplane:{}", service_port.unwrap());

    let mut served = BTreeSet::new();
    for ((kind, name), document) in &objects {
        if kind != "Deployment" || name == "taskplane-server" {
            continue;
        }
        let container = &document["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(text(&container["image"]), image("agent"), "{name}");
        let env = container_environment(&objects, container, &agent_variables());
        assert_eq!(env["TASKPLANE_SERVER"], server_url, "{name}");
        assert_eq!(
            port_of(&env["TASKPLANE_METRICS_LISTEN"]),
            port_named(container, "metrics")
        );
        let domain = &env["TASK_ENABLED_DOMAINS"];
        assert!(
            domains().contains(domain),
            "{name}: unknown domain {domain}"
        );
        assert!(served.insert(domain.clone()), "{domain} has two agents");
    }
    assert_eq!(served, domains(), "one agent Deployment per example domain");
}

/// The server starts with the manifests' settings (the database and
/// addresses swapped for local ones), so their values parse too.
#[tokio::test]
async fn the_server_accepts_the_manifests_settings() {
    let objects = kubernetes();
    let dir = tempfile::tempdir().unwrap();
    let map = object(&objects, "ConfigMap", "taskplane-config");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskplane-under-test"));
    for (key, value) in map["data"].as_hash().unwrap() {
        command.env(text(key), text(value));
    }
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, "").unwrap();
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .env(
            "TASKPLANE_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("t.db").display()),
        )
        .env("TASKPLANE_AUTH", "true")
        .env("TASKPLANE_TOKENS_FILE", &tokens)
        .env("RUST_LOG", "warn");
    // Panics unless the server says it is listening.
    let (mut child, _) = spawn_listening(command).await;
    child.start_kill().unwrap();
}
