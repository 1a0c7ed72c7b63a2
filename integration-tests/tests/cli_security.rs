//! The security settings as an operator uses them: `taskplane token`
//! against a tokens file and a database, `taskplane serve` with TLS and
//! tokens, client commands with `--token` and `--tls-ca`, revocation, and
//! SIGHUP re-reading the tokens file.

use std::path::{Path, PathBuf};

use integration_tests::pki::Ca;
use integration_tests::{PATIENCE, spawn_listening};
use tokio::process::{Child, Command};

/// Runs the `taskplane` command line and returns (success, stdout, stderr).
async fn taskplane(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_taskplane-under-test"))
        .args(args)
        .env_remove("TASKPLANE_TOKEN")
        .output()
        .await
        .expect("taskplane runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `taskplane token create …`; returns the token printed.
async fn create_token(store: &[&str], name: &str, role: &str, domain: Option<&str>) -> String {
    let mut args = vec!["token", "create", "--name", name, "--role", role];
    if let Some(domain) = domain {
        args.extend(["--domain", domain]);
    }
    args.extend(store);
    let (ok, out, err) = taskplane(&args).await;
    assert!(ok, "{err}");
    assert!(err.contains("shown only now"), "{err}");
    out.trim().to_owned()
}

/// Starts `taskplane serve` with the given extra arguments; returns the
/// process and its https:// URL.
async fn serve(dir: &Path, args: &[&str]) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskplane-under-test"));
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn");
    let (child, address) = spawn_listening(command).await;
    (child, format!("https://{address}"))
}

/// Polls a client command until it succeeds (or fails, with `expect_ok` false).
async fn eventually(args: &[&str], expect_ok: bool) -> (bool, String, String) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let result = taskplane(args).await;
        if result.0 == expect_ok {
            return result;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {args:?} gave {result:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A new CA named `name` and a server certificate it signed, written into
/// `dir`; returns the paths of the CA, the certificate and its key.
fn server_certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca = Ca::new(name);
    let (cert, key) = ca.sign(false);
    (
        write(dir, "ca.pem", &ca.pem),
        write(dir, "server.pem", &cert),
        write(dir, "server.key", &key),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_secure_a_server_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_path, cert_path, key_path) = server_certificate(dir.path(), "ops CA");
    let tokens_file = dir.path().join("tokens.toml");
    let database_url = format!(
        "sqlite://{}",
        dir.path().join("data/taskplane.db").display()
    );
    let in_file = ["--tokens-file", tokens_file.to_str().unwrap()];
    let in_database = ["--database-url", database_url.as_str()];

    // Tokens are made before the server runs: the first admin needs no server.
    let admin = create_token(&in_file, "ops", "admin", None).await;
    let reader = create_token(&in_database, "reader", "client", Some("billing")).await;
    assert!(admin.starts_with("tp_") && reader.starts_with("tp_") && admin != reader);
    let file_text = std::fs::read_to_string(&tokens_file).unwrap();
    assert!(!file_text.contains(&admin), "only the hash is kept");
    let (ok, out, _) = taskplane(&[
        "token",
        "list",
        "--output",
        "json",
        in_database[0],
        in_database[1],
    ])
    .await;
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["name"], "reader");
    assert_eq!(listed[0]["role"], "client");
    assert_eq!(listed[0]["domains"], serde_json::json!(["billing"]));
    assert!(!out.contains(&reader));
    let (ok, _, err) = taskplane(&[
        "token", "create", "--name", "x", "--role", "root", in_file[0], in_file[1],
    ])
    .await;
    assert!(!ok && err.contains("unknown role 'root'"), "{err}");

    let (server, url) = serve(
        dir.path(),
        &[
            "--database-url",
            &database_url,
            "--tokens-file",
            tokens_file.to_str().unwrap(),
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
            "--token-cache-ttl",
            "100ms",
            "--reload-interval",
            "1h",
        ],
    )
    .await;
    let ca_arg = ca_path.to_str().unwrap();
    let client = |token: &str| {
        vec![
            "--server".to_owned(),
            url.clone(),
            "--tls-ca".to_owned(),
            ca_arg.to_owned(),
            "--token".to_owned(),
            token.to_owned(),
        ]
    };
    let with = |base: Vec<String>, args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(base);
        all
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        taskplane(&refs).await
    };

    // No token, and no CA: refused, each saying why.
    let (ok, _, err) = taskplane(&["types", "list", "--server", &url, "--tls-ca", ca_arg]).await;
    assert!(!ok && err.contains("UNAUTHENTICATED"), "{err}");
    let (ok, _, err) = taskplane(&["types", "list", "--server", &url, "--token", &admin]).await;
    assert!(!ok && err.to_lowercase().contains("certificate"), "{err}");

    // The admin registers a type; the billing reader may list but not register.
    let (ok, out, err) = run(with(
        client(&admin),
        &["types", "register", "invoice_run", "--domain", "billing"],
    ))
    .await;
    assert!(ok, "{out}{err}");
    let (ok, out, _) = run(with(client(&reader), &["types", "list"])).await;
    assert!(ok && out.contains("invoice_run"), "{out}");
    let (ok, _, err) = run(with(
        client(&reader),
        &["types", "register", "other", "--domain", "billing"],
    ))
    .await;
    assert!(!ok && err.contains("PERMISSION_DENIED"), "{err}");

    // Revoking the database token takes effect within the cache time.
    let reader_id = reader.split('_').nth(1).unwrap().to_owned();
    let (ok, _, err) = taskplane(&[
        "token",
        "revoke",
        &reader_id,
        in_database[0],
        in_database[1],
    ])
    .await;
    assert!(ok, "{err}");
    let listed = client(&reader);
    let (_, _, err) = eventually(
        &with(listed, &["types", "list"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        false,
    )
    .await;
    assert!(
        err.contains("UNAUTHENTICATED") && err.contains("revoked"),
        "{err}"
    );

    // A token added to the file works after SIGHUP (the file is otherwise
    // checked only hourly here).
    let second = create_token(&in_file, "ops-2", "admin", None).await;
    let pid = server.id().unwrap().to_string();
    let hup = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap();
    assert!(hup.success());
    let second_args = with(client(&second), &["domains", "list"]);
    let (ok, out, _) = eventually(
        &second_args.iter().map(String::as_str).collect::<Vec<_>>(),
        true,
    )
    .await;
    assert!(ok && out.contains("billing"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_measures_a_server_that_checks_tokens_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_path, cert_path, key_path) = server_certificate(dir.path(), "bench CA");
    let tokens_file = dir.path().join("tokens.toml");
    let in_file = ["--tokens-file", tokens_file.to_str().unwrap()];
    let admin = create_token(&in_file, "bench", "admin", None).await;
    let (server, url) = serve(
        dir.path(),
        &[
            in_file[0],
            in_file[1],
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    )
    .await;
    let bench = |token: Option<&str>| {
        let mut args = vec![
            "bench",
            "--server",
            &url,
            "--tls-ca",
            ca_path.to_str().unwrap(),
            "--workloads",
            "w1,w2",
            "--tasks",
            "200",
            "--batch-size",
            "100",
            "--single-tasks",
            "20",
            "--clients",
            "2",
            "--duration",
            "300ms",
            "--output",
            "json",
        ];
        args.extend(token.map(|t| ["--token", t]).into_iter().flatten());
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        taskplane(&refs).await
    };

    // Without the token the server refuses the benchmark's first call,
    // saying what to pass, in the client commands' words.
    let (ok, _, err) = run(bench(None)).await;
    assert!(
        !ok && err.contains("UNAUTHENTICATED: ")
            && err.contains("this server requires a token")
            && err.contains("--token")
            && !err.contains("metadata"),
        "{err}"
    );

    // With it, the agents and clients reach the server over TLS and every
    // task runs exactly once.
    let (ok, out, err) = run(bench(Some(&admin))).await;
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let figures = |workload: &str| {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["workload"] == workload)
            .map(|m| m["figures"].clone())
            .unwrap_or_else(|| panic!("no {workload} in {report}"))
    };
    let throughput = figures("W1 throughput");
    assert_eq!(throughput["tasks"], 200, "{throughput}");
    assert_eq!(throughput["lost"], 0, "{throughput}");
    assert_eq!(throughput["duplicated"], 0, "{throughput}");
    let latency = figures("W2 latency");
    assert_eq!(latency["started"], latency["tasks"], "{latency}");
    assert_eq!(latency["warmup_calls"], 100, "{latency}");
    assert!(
        latency["rpc_floor_p50_ms"].as_f64().unwrap() > 0.0,
        "{latency}"
    );
    drop(server);
}
