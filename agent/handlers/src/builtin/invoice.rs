//! `InvoiceHandler`: totals an invoice from `items`
//! (`[{"description", "quantity", "unit_price_cents"}]`) and `tax_rate_percent`,
//! and renders it as a Markdown report (through [`super::report`]) in its
//! output directory. Amounts are integer cents, so no rounding error creeps in.

use async_trait::async_trait;
use serde_json::json;

use super::report::{ReportFormat, render, write_report};
use taskplane_agent::handler::{TaskContext, TaskError, TaskHandler, TaskResult};

/// Computes an invoice's subtotal, tax and total, and writes it out.
pub struct InvoiceHandler {
    output_dir: std::path::PathBuf,
}

impl InvoiceHandler {
    /// Writes invoices into `output_dir`.
    pub fn new(output_dir: std::path::PathBuf) -> Self {
        InvoiceHandler { output_dir }
    }
}

/// The invoice's lines (description, quantity, amount in cents) and their
/// subtotal; an item with a bad quantity or price names itself.
fn invoice_lines(items: &[serde_json::Value]) -> Result<(Vec<serde_json::Value>, i64), TaskError> {
    let mut lines = Vec::with_capacity(items.len());
    let mut subtotal: i64 = 0;
    for (i, item) in items.iter().enumerate() {
        let quantity = item
            .get("quantity")
            .and_then(|v| v.as_i64())
            .filter(|&q| q > 0)
            .ok_or_else(|| {
                TaskError::bad_payload(&format!("items[{i}].quantity"), "a positive integer")
            })?;
        let unit = item
            .get("unit_price_cents")
            .and_then(|v| v.as_i64())
            .filter(|&p| p >= 0)
            .ok_or_else(|| {
                TaskError::bad_payload(
                    &format!("items[{i}].unit_price_cents"),
                    "a non-negative integer",
                )
            })?;
        let amount = quantity
            .checked_mul(unit)
            .ok_or_else(|| TaskError::Permanent(format!("items[{i}] amount overflows")))?;
        subtotal = subtotal
            .checked_add(amount)
            .ok_or_else(|| TaskError::Permanent("invoice total overflows".into()))?;
        lines.push(json!({
            "description": item.get("description").cloned().unwrap_or_default(),
            "quantity": quantity,
            "amount_cents": amount,
        }));
    }
    Ok((lines, subtotal))
}

/// An order's lines and amounts, in cents.
pub(crate) struct Totals {
    /// Each item's description, quantity and amount.
    pub lines: Vec<serde_json::Value>,
    /// The sum of the lines.
    pub subtotal: i64,
    /// The tax on the subtotal, rounded to the cent.
    pub tax: i64,
}

impl Totals {
    /// Subtotal and tax.
    pub fn total(&self) -> i64 {
        self.subtotal + self.tax
    }
}

/// The totals of a payload's `items` and `tax_rate_percent` (default 0).
pub(crate) fn totals(payload: &serde_json::Value) -> Result<Totals, TaskError> {
    let items = payload
        .get("items")
        .and_then(|v| v.as_array())
        .ok_or_else(|| {
            TaskError::bad_payload(
                "items",
                "an array of {description, quantity, unit_price_cents}",
            )
        })?;
    let tax_rate = payload
        .get("tax_rate_percent")
        .map_or(Some(0.0), |v| v.as_f64())
        .filter(|rate| (0.0..=100.0).contains(rate))
        .ok_or_else(|| TaskError::bad_payload("tax_rate_percent", "a number from 0 to 100"))?;
    let (lines, subtotal) = invoice_lines(items)?;
    let tax = (subtotal as f64 * tax_rate / 100.0).round() as i64;
    Ok(Totals {
        lines,
        subtotal,
        tax,
    })
}

#[async_trait]
impl TaskHandler for InvoiceHandler {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let Totals {
            lines,
            subtotal,
            tax,
        } = totals(&context.payload)?;
        let invoice_id = format!("INV-{}", context.task_id);
        let mut rows: Vec<serde_json::Map<String, serde_json::Value>> = lines
            .iter()
            .filter_map(|line| line.as_object().cloned())
            .collect();
        for (label, amount) in [
            ("subtotal", subtotal),
            ("tax", tax),
            ("total", subtotal + tax),
        ] {
            rows.push(serde_json::Map::from_iter([
                ("description".to_owned(), json!(label)),
                ("amount_cents".to_owned(), json!(amount)),
            ]));
        }
        let columns = ["description", "quantity", "amount_cents"].map(String::from);
        let document = render(
            ReportFormat::Markdown,
            &format!("Invoice {invoice_id}"),
            &columns,
            &rows,
        );
        let file = write_report(
            &self.output_dir,
            &invoice_id,
            ReportFormat::Markdown,
            &document,
        )
        .await?;
        Ok(TaskResult::new(json!({
            "invoice_id": invoice_id,
            "lines": lines,
            "subtotal_cents": subtotal,
            "tax_cents": tax,
            "total_cents": subtotal + tax,
            "file": file,
        })))
    }

    fn description(&self) -> String {
        "Generates an invoice: line amounts, subtotal, tax and total in cents, as a Markdown file"
            .into()
    }
}
