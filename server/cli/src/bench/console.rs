//! W11: what the web console costs and how it holds up. First W1 (five
//! times `--tasks`, to span several refreshes) in pairs, without a viewer
//! and with one, which goes first alternating: a viewer is what an
//! open overview page does, a live-update stream (`/events`) and the page
//! fetched again on each `refresh`. Then, over the W3 backlog (a million
//! PENDING tasks and as many COMPLETED; seeded here unless W3 ran), each
//! page is timed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::BenchArgs;
use super::backlog::{median, seed_backlog};
use super::harness::{Database, Servers};
use super::probe::BACKLOG_TYPE;
use super::scale::Figures;
use super::workloads::w1;

/// W11's W1 runs this many times `--tasks`.
const W1_TIMES: usize = 5;
/// How many times each page is fetched over the seeded store.
const PAGE_FETCHES: usize = 5;
/// How many "Older" links the deep page follows.
const DEEP_PAGES: usize = 20;

/// Runs W11 (see the module doc) against the console at `console`;
/// `seeded`: W3 already left its backlog in the store.
pub(super) async fn w11(
    args: &BenchArgs,
    servers: &Servers,
    console: SocketAddr,
    database: &Database,
    seeded: bool,
) -> anyhow::Result<Figures> {
    // Long enough to span several refreshes (one per second at most).
    let longer = BenchArgs {
        tasks: args.tasks * W1_TIMES,
        ..args.clone()
    };
    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut page_ms = Vec::new();
    let mut refreshes = 0;
    // The side that goes first alternates: W1 slows as the store grows,
    // and the second run of a pair would always pay for it.
    for round in 0..args.rounds {
        for viewed in [round % 2 == 1, round % 2 == 0] {
            if !viewed {
                without.push(processed(&w1(&longer, servers, None).await?));
                continue;
            }
            let viewer = Viewer::open(console);
            with.push(processed(&w1(&longer, servers, None).await?));
            let seen = viewer.close().await?;
            refreshes += seen.len();
            page_ms.extend(seen);
        }
    }
    let mut figures = Figures::new();
    figures.insert("rounds".into(), json!(args.rounds));
    figures.insert("w1_tasks".into(), json!(longer.tasks));
    figures.insert(
        "w1_processed_per_sec_without_console".into(),
        json!(median(without.clone()).round()),
    );
    figures.insert(
        "w1_processed_per_sec_with_console".into(),
        json!(median(with.clone()).round()),
    );
    figures.insert("w1_runs_without".into(), json!(without));
    figures.insert("w1_runs_with".into(), json!(with));
    figures.insert("refreshes_during_w1".into(), json!(refreshes));
    if !page_ms.is_empty() {
        figures.insert(
            "overview_ms_during_w1_median".into(),
            json!(rounded(median(page_ms))),
        );
    }

    if !seeded {
        seed_backlog(&database.url, args.backlog).await?;
    }
    figures.insert("seeded_tasks".into(), json!(args.backlog * 2));
    let pages = [
        ("overview", "/".to_owned()),
        ("tasks", "/tasks".to_owned()),
        (
            "tasks_pending_of_a_type",
            format!("/tasks?task_type={BACKLOG_TYPE}&status=PENDING"),
        ),
        ("tasks_completed", "/tasks?status=COMPLETED".to_owned()),
        ("task_types", "/types".to_owned()),
        ("agents", "/agents".to_owned()),
        (
            "tasks_error_text_matching_none",
            "/tasks?error=no+such+error".to_owned(),
        ),
    ];
    for (name, path) in pages {
        let mut times = Vec::new();
        for _ in 0..PAGE_FETCHES {
            times.push(get(console, &path).await?.0);
        }
        figures.insert(format!("{name}_ms"), json!(rounded(median(times))));
    }
    figures.insert(
        format!("tasks_page_{}_ms", DEEP_PAGES + 1),
        json!(rounded(deep_page(console).await?)),
    );
    Ok(figures)
}

fn processed(figures: &serde_json::Map<String, serde_json::Value>) -> f64 {
    figures["processed_per_sec"].as_f64().unwrap_or(0.0)
}

fn rounded(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

/// The time to fetch the task list's page after following "Older"
/// [`DEEP_PAGES`] times (keyset paging: it should cost what page 1 does).
async fn deep_page(console: SocketAddr) -> anyhow::Result<f64> {
    let mut path = "/tasks".to_owned();
    let mut last = 0.0;
    for _ in 0..=DEEP_PAGES {
        let (ms, body) = get(console, &path).await?;
        last = ms;
        let Some(next) = body
            .split("id=\"older\" href=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            break;
        };
        path = next.replace("&amp;", "&");
    }
    Ok(last)
}

/// `GET path` from the console: milliseconds to the whole answer, and its
/// body. Anything but 200 is an error.
async fn get(console: SocketAddr, path: &str) -> anyhow::Result<(f64, String)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(console).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        answer.starts_with("HTTP/1.1 200"),
        "the console answered {path} with {}",
        answer.lines().next().unwrap_or("nothing")
    );
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((ms, body.to_owned()))
}

/// An open overview page: its live-update stream, and the page fetched
/// again on each refresh.
struct Viewer {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<Vec<f64>>>,
}

impl Viewer {
    fn open(console: SocketAddr) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut stream = TcpStream::connect(console)
                .await
                .context("connecting to the console")?;
            stream
                .write_all(b"GET /events HTTP/1.1\r\nHost: bench\r\n\r\n")
                .await?;
            let mut lines = BufReader::new(stream).lines();
            let mut fetches = Vec::new();
            loop {
                let line = tokio::select! {
                    line = lines.next_line() => line?,
                    () = token.cancelled() => return Ok(fetches),
                };
                match line {
                    Some(line) if line == "event: refresh" => {
                        fetches.push(get(console, "/").await?.0);
                    }
                    Some(_) => {}
                    None => anyhow::bail!("the console ended its live-update stream"),
                }
            }
        });
        Viewer { stop, task }
    }

    /// Closes the page; returns how long each fetch took, in milliseconds.
    async fn close(self) -> anyhow::Result<Vec<f64>> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .context("the viewer did not stop")??
    }
}
