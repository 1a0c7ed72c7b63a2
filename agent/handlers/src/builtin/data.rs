//! `DataProcessingHandler`: statistics over rows — count, sum, min, max,
//! mean, percentiles, optionally grouped by one field — from the payload's
//! `rows` (a JSON array) or from a CSV or NDJSON `file` under the handler's
//! data directory, read as a stream: memory stays flat however large the
//! file. Percentiles come from a DDSketch, exact to within 1 % of the value.
//!
//! Payload: `rows` or `file`; `format` (`csv` or `ndjson`, default from the
//! file's extension); `field` (the numeric field; not needed for an array of
//! numbers); `group_by` (optional field); `percentiles` (default
//! `[50, 90, 99]`). Rows without a numeric `field` are counted as `skipped`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::{Value, json};
use sketches_ddsketch::{Config, DDSketch};

use super::{path_under, resolved_inside};
use taskplane_agent::handler::{TaskContext, TaskError, TaskHandler, TaskResult};
use tokio_util::sync::CancellationToken;

/// The most distinct `group_by` values kept (memory bound).
const MAX_GROUPS: usize = 10_000;

/// Aggregates numeric data.
pub struct DataProcessingHandler {
    data_dir: PathBuf,
}

impl DataProcessingHandler {
    /// Reads files under `data_dir` only.
    pub fn new(data_dir: PathBuf) -> Self {
        DataProcessingHandler { data_dir }
    }
}

#[derive(Default)]
struct Totals {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Totals {
    fn add(&mut self, value: f64) {
        if self.count == 0 {
            (self.min, self.max) = (value, value);
        }
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    fn to_json(&self) -> Value {
        if self.count == 0 {
            return json!({ "count": 0 });
        }
        json!({ "count": self.count, "sum": self.sum, "min": self.min, "max": self.max, "mean": self.sum / self.count as f64 })
    }
}

struct Aggregate {
    totals: Totals,
    sketch: DDSketch,
    groups: BTreeMap<String, Totals>,
    skipped: u64,
}

impl Aggregate {
    fn new() -> Self {
        Aggregate {
            totals: Totals::default(),
            sketch: DDSketch::new(Config::defaults()),
            groups: BTreeMap::new(),
            skipped: 0,
        }
    }

    fn add(&mut self, value: Option<f64>, group: Option<String>) -> Result<(), TaskError> {
        let Some(value) = value.filter(|v| v.is_finite()) else {
            self.skipped += 1;
            return Ok(());
        };
        self.totals.add(value);
        self.sketch.add(value);
        if let Some(group) = group {
            if !self.groups.contains_key(&group) && self.groups.len() >= MAX_GROUPS {
                return Err(TaskError::Permanent(format!(
                    "group_by has more than {MAX_GROUPS} distinct values"
                )));
            }
            self.groups.entry(group).or_default().add(value);
        }
        Ok(())
    }

    fn result(&self, percentiles: &[f64]) -> Value {
        let mut result = self.totals.to_json();
        let quantiles: serde_json::Map<String, Value> = percentiles
            .iter()
            .filter_map(|p| {
                let value = self.sketch.quantile(p / 100.0).ok().flatten()?;
                Some((format!("p{p}"), json!(value)))
            })
            .collect();
        result["percentiles"] = Value::Object(quantiles);
        result["skipped"] = json!(self.skipped);
        if !self.groups.is_empty() {
            result["groups"] = self
                .groups
                .iter()
                .map(|(k, totals)| (k.clone(), totals.to_json()))
                .collect();
        }
        result
    }
}

/// What a row's group is called.
fn group_name(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// A number from JSON, or from a CSV cell.
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

struct Spec {
    field: Option<String>,
    group_by: Option<String>,
}

impl Spec {
    fn add_json(&self, aggregate: &mut Aggregate, row: &Value) -> Result<(), TaskError> {
        let value = match (&self.field, row) {
            (None, Value::Number(_)) => number(row),
            (None, _) => {
                return Err(TaskError::bad_payload(
                    "field",
                    "the numeric field to aggregate (rows are objects)",
                ));
            }
            (Some(field), row) => row.get(field).and_then(number),
        };
        let group = self
            .group_by
            .as_ref()
            .map(|g| group_name(row.get(g).unwrap_or(&Value::Null)));
        aggregate.add(value, group)
    }
}

/// How many rows are read between two looks at the task's cancellation: a
/// cancelled or timed-out task stops within a few milliseconds.
const ROWS_PER_CHECK: usize = 4096;

/// The error of a read the task's cancellation stopped.
fn stop_if_cancelled(stop: &CancellationToken, row: usize) -> Result<(), TaskError> {
    if row.is_multiple_of(ROWS_PER_CHECK) && stop.is_cancelled() {
        return Err(TaskError::Cancelled(format!(
            "stopped after {row} rows: the task was cancelled or ran out of time"
        )));
    }
    Ok(())
}

fn read_csv(
    path: &PathBuf,
    spec: &Spec,
    aggregate: &mut Aggregate,
    stop: &CancellationToken,
) -> Result<(), TaskError> {
    let mut reader = csv::Reader::from_path(path)
        .map_err(|e| TaskError::Permanent(format!("cannot read {}: {e}", path.display())))?;
    let headers = reader
        .headers()
        .map_err(|e| TaskError::Permanent(format!("bad CSV header: {e}")))?
        .clone();
    let column = |name: &Option<String>| -> Result<Option<usize>, TaskError> {
        name.as_ref()
            .map(|name| {
                headers.iter().position(|h| h == name).ok_or_else(|| {
                    TaskError::Permanent(format!(
                        "the CSV has no column '{name}' (columns: {})",
                        headers.iter().collect::<Vec<_>>().join(", ")
                    ))
                })
            })
            .transpose()
    };
    let field = column(&spec.field)?
        .ok_or_else(|| TaskError::bad_payload("field", "the CSV column to aggregate"))?;
    let group = column(&spec.group_by)?;
    let mut record = csv::StringRecord::new();
    let mut row = 0;
    while reader
        .read_record(&mut record)
        .map_err(|e| TaskError::Permanent(format!("bad CSV row: {e}")))?
    {
        row += 1;
        stop_if_cancelled(stop, row)?;
        let value = record.get(field).and_then(|cell| cell.trim().parse().ok());
        aggregate.add(
            value,
            group.map(|g| record.get(g).unwrap_or_default().to_owned()),
        )?;
    }
    Ok(())
}

fn read_ndjson(
    path: &PathBuf,
    spec: &Spec,
    aggregate: &mut Aggregate,
    stop: &CancellationToken,
) -> Result<(), TaskError> {
    let file = std::fs::File::open(path)
        .map_err(|e| TaskError::Permanent(format!("cannot read {}: {e}", path.display())))?;
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        stop_if_cancelled(stop, number + 1)?;
        let line =
            line.map_err(|e| TaskError::Retryable(format!("reading {}: {e}", path.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: Value = serde_json::from_str(&line).map_err(|e| {
            TaskError::Permanent(format!(
                "line {} of {} is not JSON: {e}",
                number + 1,
                path.display()
            ))
        })?;
        spec.add_json(aggregate, &row)?;
    }
    Ok(())
}

#[async_trait]
impl TaskHandler for DataProcessingHandler {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let stop = context.cancellation.clone();
        let payload = context.payload;
        let optional_string = |name: &str| -> Result<Option<String>, TaskError> {
            match payload.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(TaskError::bad_payload(name, "a string")),
            }
        };
        let spec = Spec {
            field: optional_string("field")?,
            group_by: optional_string("group_by")?,
        };
        let percentiles: Vec<f64> = match payload.get("percentiles") {
            None => vec![50.0, 90.0, 99.0],
            Some(list) => list
                .as_array()
                .and_then(|l| {
                    l.iter()
                        .map(|p| p.as_f64().filter(|p| *p > 0.0 && *p <= 100.0))
                        .collect()
                })
                .ok_or_else(|| {
                    TaskError::bad_payload(
                        "percentiles",
                        "a list of numbers from 0 (excluded) to 100",
                    )
                })?,
        };
        let mut aggregate = Aggregate::new();
        if let Some(rows) = payload.get("rows") {
            let rows = rows
                .as_array()
                .ok_or_else(|| TaskError::bad_payload("rows", "a JSON array"))?;
            for row in rows {
                spec.add_json(&mut aggregate, row)?;
            }
            return Ok(TaskResult::new(aggregate.result(&percentiles)));
        }
        let file = optional_string("file")?
            .ok_or_else(|| TaskError::bad_payload("rows or file", "the data to aggregate"))?;
        let path = path_under(&self.data_dir, &file)?;
        let path = resolved_inside(&self.data_dir, &path).await?;
        let format = optional_string("format")?
            .or_else(|| {
                path.extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_lowercase)
            })
            .unwrap_or_default();
        let result = tokio::task::spawn_blocking(move || {
            match format.as_str() {
                "csv" => read_csv(&path, &spec, &mut aggregate, &stop)?,
                "ndjson" | "jsonl" => read_ndjson(&path, &spec, &mut aggregate, &stop)?,
                other => {
                    return Err(TaskError::bad_payload(
                        "format",
                        &format!("csv or ndjson (got '{other}')"),
                    ));
                }
            }
            Ok(aggregate.result(&percentiles))
        })
        .await
        .map_err(|e| TaskError::Retryable(format!("the aggregation stopped: {e}")))??;
        Ok(TaskResult::new(result))
    }

    fn description(&self) -> String {
        "Aggregates rows or a CSV/NDJSON file: count, sum, min, max, mean, percentiles, group-by"
            .into()
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["csv".into(), "ndjson".into(), "streaming".into()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancelled_task_stops_reading_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("ms\n");
        for i in 0..100_000 {
            csv.push_str(&format!("{}\n", i % 97));
        }
        std::fs::write(dir.path().join("big.csv"), csv).unwrap();
        let handler = DataProcessingHandler::new(dir.path().to_owned());
        let payload = json!({"file": "big.csv", "field": "ms"});
        let whole = handler
            .handle(TaskContext::new("data_processing", payload.clone()))
            .await
            .unwrap();
        assert_eq!(whole.output["count"], 100_000);

        let context = TaskContext::new("data_processing", payload);
        context.cancellation.cancel();
        let err = handler.handle(context).await.unwrap_err();
        assert!(
            matches!(&err, TaskError::Cancelled(m) if m.contains("stopped after 4096 rows")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_link_out_of_the_data_directory_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.csv"), "ms\n1\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.csv"), dir.path().join("x.csv"))
            .unwrap();
        let err = run(dir.path(), json!({"file": "x.csv", "field": "ms"}))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("resolves outside the handler's directory")
                && !err.is_retryable(),
            "{err}"
        );
    }

    async fn run(dir: &std::path::Path, payload: Value) -> Result<Value, TaskError> {
        let handler = DataProcessingHandler::new(dir.to_owned());
        Ok(Value::Object(
            handler
                .handle(TaskContext::new("data_processing", payload))
                .await?
                .output,
        ))
    }

    #[tokio::test]
    async fn aggregates_json_rows_with_groups_and_percentiles() {
        let dir = tempfile::tempdir().unwrap();
        let rows = json!([{"region": "eu", "ms": 10}, {"region": "us", "ms": 30}, {"region": "eu", "ms": 20}, {"region": "eu"}]);
        let result = run(
            dir.path(),
            json!({"rows": rows, "field": "ms", "group_by": "region", "percentiles": [50]}),
        )
        .await
        .unwrap();
        assert_eq!(result["count"], 3);
        assert_eq!(result["sum"], 60.0);
        assert_eq!(result["skipped"], 1);
        assert_eq!(result["groups"]["eu"]["mean"], 15.0);
        let p50 = result["percentiles"]["p50"].as_f64().unwrap();
        assert!((p50 - 20.0).abs() <= 0.2, "p50 {p50} within 1% of 20");
    }

    #[tokio::test]
    async fn streams_csv_and_ndjson_files_and_refuses_paths_outside_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("name,amount\n");
        let mut ndjson = String::new();
        for i in 1..=1000 {
            csv.push_str(&format!("row{i},{i}\n"));
            ndjson.push_str(&format!("{{\"amount\": {i}}}\n"));
        }
        std::fs::write(dir.path().join("sales.csv"), csv).unwrap();
        std::fs::write(dir.path().join("sales.ndjson"), ndjson).unwrap();
        for file in ["sales.csv", "sales.ndjson"] {
            let result = run(dir.path(), json!({"file": file, "field": "amount"}))
                .await
                .unwrap();
            assert_eq!(
                (
                    result["count"].clone(),
                    result["sum"].clone(),
                    result["max"].clone()
                ),
                (json!(1000), json!(500500.0), json!(1000.0)),
                "{file}"
            );
            let p99 = result["percentiles"]["p99"].as_f64().unwrap();
            assert!((p99 - 990.0).abs() <= 990.0 * 0.02, "{file}: p99 {p99}");
        }
        let missing = run(dir.path(), json!({"file": "sales.csv", "field": "price"}))
            .await
            .unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("no column 'price' (columns: name, amount)"),
            "{missing}"
        );
        let escape = run(
            dir.path(),
            json!({"file": "../../etc/passwd", "field": "x", "format": "csv"}),
        )
        .await
        .unwrap_err();
        assert!(
            !escape.is_retryable()
                && escape
                    .to_string()
                    .contains("leaves the handler's directory")
        );
    }
}
