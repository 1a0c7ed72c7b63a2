//! `taskplane bench` as a user runs it, shrunk: every workload on every
//! backend, JSON output. The figures themselves are not judged here (speed
//! lives in the benchmark and docs/performance.md); what is checked is that
//! the benchmark runs every workload and that its exactly-once bookkeeping
//! holds: nothing lost, nothing run twice, every latency sample present.

use serde_json::Value;
use taskplane_server::testing::{PostgresSchema, admin_url};

const TASKS: u64 = 300;
const RATE: u64 = 200;
const BACKLOG: u64 = 2000;
const ROUNDS: u64 = 3;

fn figures<'a>(report: &'a Value, backend: &str, workload: &str) -> &'a Value {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|m| m["backend"] == backend && m["workload"] == workload)
        .map(|m| &m["figures"])
        .unwrap_or_else(|| panic!("no {workload} on {backend} in {report:#}"))
}

fn number(figures: &Value, name: &str) -> f64 {
    figures[name]
        .as_f64()
        .unwrap_or_else(|| panic!("{name} missing in {figures}"))
}

fn check_throughput(figures: &Value, with_limit: bool) {
    assert_eq!(number(figures, "tasks"), TASKS as f64);
    assert_eq!(number(figures, "lost"), 0.0, "{figures}");
    assert_eq!(number(figures, "duplicated"), 0.0, "{figures}");
    for rate in [
        "enqueue_batched_per_sec",
        "enqueue_single_per_sec",
        "processed_per_sec",
        "cpu_ms_per_1000_tasks",
    ] {
        assert!(number(figures, rate) > 0.0, "{rate} in {figures}");
    }
    if with_limit {
        for limit in ["limit_enqueue_per_sec", "limit_process_per_sec"] {
            assert!(number(figures, limit) > 0.0, "{limit} in {figures}");
        }
        let fraction = number(figures, "processed_fraction_of_limit");
        let expected =
            number(figures, "processed_per_sec") / number(figures, "limit_process_per_sec");
        assert!((fraction - expected).abs() < 0.01, "{figures}");
    }
}

fn check_latency(figures: &Value) {
    let tasks = (RATE / 2) as f64; // half a second at RATE
    assert_eq!(number(figures, "tasks"), tasks);
    assert_eq!(
        number(figures, "started"),
        tasks,
        "every task started: {figures}"
    );
    let (p50, p95, p99, max) = (
        number(figures, "p50_ms"),
        number(figures, "p95_ms"),
        number(figures, "p99_ms"),
        number(figures, "max_ms"),
    );
    assert!(
        0.0 < p50 && p50 <= p95 && p95 <= p99 && p99 <= max,
        "{figures}"
    );
    assert!(number(figures, "enqueue_rpc_p50_ms") <= number(figures, "enqueue_rpc_p99_ms"));
    let (floor_p50, floor_p99) = (
        number(figures, "rpc_floor_p50_ms"),
        number(figures, "rpc_floor_p99_ms"),
    );
    assert!(0.0 < floor_p50 && floor_p50 <= floor_p99, "{figures}");
}

/// One figure of every round, in round order.
fn rounds(figures: &Value, name: &str) -> Vec<f64> {
    let rounds: Vec<f64> = figures[name]
        .as_array()
        .unwrap_or_else(|| panic!("{name} missing in {figures}"))
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(rounds.len(), ROUNDS as usize, "{name} in {figures}");
    rounds
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// W3: every round on both sides ran every task once; each side's figure
/// is the median of its rounds, and each change the median of the rounds'
/// changes of the backlog against the empty control.
fn check_backlog(figures: &Value) {
    assert_eq!(number(figures, "backlog_pending"), BACKLOG as f64);
    assert_eq!(number(figures, "backlog_completed"), BACKLOG as f64);
    assert_eq!(number(figures, "rounds"), ROUNDS as f64);
    assert_eq!(number(figures, "lost"), 0.0, "{figures}");
    assert_eq!(number(figures, "duplicated"), 0.0, "{figures}");
    for side in ["", "empty_"] {
        let started = number(figures, &format!("{side}started"));
        assert_eq!(
            started,
            number(figures, "tasks") * ROUNDS as f64,
            "{figures}"
        );
        let (p50, p99, max) = (
            number(figures, &format!("{side}p50_ms")),
            number(figures, &format!("{side}p99_ms")),
            number(figures, &format!("{side}max_ms")),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{figures}");
        assert!(number(figures, &format!("{side}cpu_ms_per_1000_tasks")) > 0.0);
    }
    let compared = [
        ("p99", "p99_ms"),
        ("processed", "processed_per_sec"),
        ("cpu", "cpu_ms_per_1000_tasks"),
    ];
    for (stem, name) in compared {
        let backlog = rounds(figures, &format!("{name}_rounds"));
        let empty = rounds(figures, &format!("empty_{name}_rounds"));
        assert_eq!(number(figures, name), median(backlog.clone()), "{name}");
        let changes = rounds(figures, &format!("{stem}_change_percent_rounds"));
        for ((change, backlog), empty) in changes.iter().zip(&backlog).zip(&empty) {
            let expected = (backlog / empty - 1.0) * 100.0;
            assert!((change - expected).abs() < 0.1, "{stem} in {figures}");
        }
        let reported = number(figures, &format!("{stem}_change_percent"));
        assert_eq!(reported, median(changes), "{stem} in {figures}");
    }
}

/// W11: W1 ran in pairs without and with a viewer, and every page
/// answered over the seeded store.
fn check_console(figures: &Value) {
    assert_eq!(number(figures, "rounds"), ROUNDS as f64);
    assert_eq!(number(figures, "w1_tasks"), (TASKS * 5) as f64);
    assert_eq!(number(figures, "seeded_tasks"), (BACKLOG * 2) as f64);
    for side in ["without", "with"] {
        let runs = figures[format!("w1_runs_{side}")].as_array().unwrap();
        assert_eq!(runs.len() as u64, ROUNDS, "{figures}");
        assert!(number(figures, &format!("w1_processed_per_sec_{side}_console")) > 0.0);
    }
    for page in [
        "overview_ms",
        "tasks_ms",
        "tasks_pending_of_a_type_ms",
        "tasks_completed_ms",
        "task_types_ms",
        "agents_ms",
        "tasks_error_text_matching_none_ms",
        "tasks_page_21_ms",
    ] {
        assert!(number(figures, page) > 0.0, "{page}: {figures}");
    }
}

/// W5–W8: every task ran once, and each figure is one that could only
/// come from a run.
fn check_scale(report: &Value, backend: &str) {
    for workload in [
        "W5 many agents",
        "W6 many task types",
        "W7 slow handlers",
        "W10 flow control",
    ] {
        let figures = figures(report, backend, workload);
        assert_eq!(number(figures, "lost"), 0.0, "{workload}: {figures}");
        assert_eq!(number(figures, "duplicated"), 0.0, "{workload}: {figures}");
    }
    let w5 = figures(report, backend, "W5 many agents");
    assert_eq!(number(w5, "agents"), 100.0);
    let (least, most) = (
        number(w5, "least_tasks_per_agent"),
        number(w5, "most_tasks_per_agent"),
    );
    assert!(least <= most && most > 0.0, "{w5}");
    assert!(number(w5, "one_agent_per_sec") > 0.0, "{w5}");
    assert!(number(w5, "fraction_of_one_agent") > 0.0, "{w5}");
    let w6 = figures(report, backend, "W6 many task types");
    assert_eq!(number(w6, "task_types"), 1000.0);
    assert!(number(w6, "fraction_of_one_type") > 0.0, "{w6}");
    let w10 = figures(report, backend, "W10 flow control");
    assert_eq!(number(w10, "keys"), 1000.0);
    assert!(number(w10, "fraction_of_no_policy") > 0.0, "{w10}");
    assert!(
        number(w10, "rate_limited_fraction_of_no_policy") > 0.0,
        "{w10}"
    );
    let w7 = figures(report, backend, "W7 slow handlers");
    assert_eq!(number(w7, "tasks"), 300.0);
    let fraction = number(w7, "fraction_of_ideal");
    assert!(fraction > 0.0 && fraction <= 1.05, "{w7}");
    let w9 = figures(report, backend, "W9 idle agents");
    assert_eq!(number(w9, "idle_agents"), 20.0);
    let (without, with) = (
        number(w9, "server_rss_mib_without_agents"),
        number(w9, "server_rss_mib_with_agents"),
    );
    assert!(
        0.0 < without && without <= with,
        "a server process was measured: {w9}"
    );
    assert!(number(w9, "server_cpu_percent_of_one_core") >= 0.0, "{w9}");
    let w8 = figures(report, backend, "W8 many producers");
    assert!(number(w8, "accepted") > 0.0, "{w8}");
    assert!(number(w8, "floor_calls_per_sec") > 0.0, "{w8}");
    assert!(number(w8, "fraction_of_floor") > 0.0, "{w8}");
    assert!(
        number(w8, "call_p50_ms") <= number(w8, "call_p99_ms"),
        "{w8}"
    );
}

#[test]
fn every_workload_runs_and_every_task_runs_exactly_once() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let postgres = runtime.block_on(async {
        let schema = PostgresSchema::create().await?;
        schema.drop().await;
        Some(())
    });
    let backends = if postgres.is_some() {
        "sqlite,postgres"
    } else {
        "sqlite"
    };
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_taskplane"))
        .args([
            "bench",
            "--backend",
            backends,
            "--postgres-url",
            &admin_url(),
        ])
        .args([
            "--workloads",
            "w1,w2,w3,w4,w5,w6,w7,w8,w9,w10,w11",
            "--output",
            "json",
        ])
        .args([
            "--slow-tasks",
            "300",
            "--idle-agents",
            "20",
            "--idle-window",
            "1s",
        ])
        .args(["--tasks", &TASKS.to_string(), "--batch-size", "100"])
        .args(["--single-tasks", "40", "--clients", "4"])
        .args(["--rate", &RATE.to_string(), "--duration", "500ms"])
        .args(["--backlog", &BACKLOG.to_string()])
        .args(["--rounds", &ROUNDS.to_string()])
        .args(["--schedules", "3"])
        .output()
        .expect("taskplane bench runs");
    assert!(
        output.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert!(report["peak_rss_mib"].as_f64().is_some_and(|m| m > 0.0));

    for backend in backends.split(',') {
        let default_slots = figures(&report, backend, "W1 throughput");
        check_throughput(default_slots, true);
        assert_eq!(default_slots["slots_per_agent"], 16, "the SDK's default");
        assert_eq!(
            default_slots["schedules"], 3,
            "measured beside active schedules"
        );
        let wide = figures(&report, backend, "W1 throughput (wide)");
        check_throughput(wide, true);
        assert_eq!(wide["slots_per_agent"], 512);
        let durability = default_slots["durability"].as_str().unwrap_or_default();
        match backend {
            "sqlite" => assert_eq!(durability, "synchronous=full"),
            _ => assert!(
                durability.starts_with("synchronous_commit=on"),
                "{durability}"
            ),
        }
        let latency = figures(&report, backend, "W2 latency");
        check_latency(latency);
        let (limit_p50, limit_p99) = (
            number(latency, "limit_p50_ms"),
            number(latency, "limit_p99_ms"),
        );
        assert!(0.0 < limit_p50 && limit_p50 <= limit_p99, "{latency}");
        check_backlog(figures(&report, backend, "W3 backlog"));
        check_console(figures(&report, backend, "W11 console open"));
        check_scale(&report, backend);
    }
    if postgres.is_some() {
        check_throughput(figures(&report, "postgres", "W4 two replicas"), false);
    }
}
