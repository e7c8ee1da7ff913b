//! `crossfold summarize`: across-round summaries of a CSV's numeric columns.

use super::{num, table, Format};
use anyhow::{anyhow, bail, Result};
use clap::Args;
use crossfold_shared::metrics::summarize_optional;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct SummarizeArgs {
    /// CSV with one row per round. Numeric columns are summarised; columns
    /// with no numeric value at all (e.g. a task name) are skipped; empty
    /// cells are missing values.
    file: PathBuf,
    /// Summarise the rows of each value of this column apart (e.g. `task`
    /// for a report's rounds.csv, which holds both tasks). A file whose
    /// `task` column holds several tasks needs it: rounds of different
    /// tasks are never pooled into one mean.
    #[arg(long)]
    by: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// One column's cells with their line numbers.
type Column = Vec<(u64, String)>;

/// Summaries as JSON (column -> statistics) and as table rows.
type Summaries = (Map<String, Value>, Vec<Vec<String>>);

pub fn run(a: SummarizeArgs) -> Result<ExitCode> {
    let name = a.file.display().to_string();
    let bytes = std::fs::read(&a.file).map_err(|e| anyhow!("cannot read {name}: {e}"))?;
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| anyhow!("{name}: {e}"))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if let Some(twice) = headers
        .iter()
        .enumerate()
        .find(|(i, h)| !h.is_empty() && headers[..*i].contains(h))
        .map(|(_, h)| h)
    {
        bail!("{name}: the header names column {twice:?} twice");
    }
    let mut cells: Vec<Column> = vec![Vec::new(); headers.len()];
    for rec in reader.records() {
        let rec = rec.map_err(|e| anyhow!("{name}: {e}"))?;
        let line = rec
            .position()
            .map(|p| crossfold_shared::csv_line::line_at(&bytes, p.byte()))
            .unwrap_or(0);
        for (i, c) in rec.iter().enumerate().take(headers.len()) {
            cells[i].push((line, c.trim().to_string()));
        }
    }
    if cells.first().is_none_or(|c| c.is_empty()) {
        bail!("{name}: no rows");
    }
    let column = |h: &str| headers.iter().position(|x| x == h);
    let by = match &a.by {
        Some(b) => Some(column(b).ok_or_else(|| {
            anyhow!(
                "--by {b}: {name} has no such column (columns: {})",
                headers.join(", ")
            )
        })?),
        None => {
            if let Some(t) = column("task") {
                let tasks: std::collections::BTreeSet<&str> =
                    cells[t].iter().map(|(_, c)| c.as_str()).collect();
                if tasks.len() > 1 {
                    let list: Vec<&str> = tasks.into_iter().collect();
                    bail!(
                        "{name}: rows of {} tasks ({}): add --by task to summarise each \
                         (rounds of different tasks are not pooled)",
                        list.len(),
                        list.join(", ")
                    );
                }
            }
            None
        }
    };
    // Row indices per group, in order of first appearance ("" for all rows).
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut order = Vec::new();
    for (i, _) in cells[0].iter().enumerate() {
        let key = by.map(|b| cells[b][i].1.clone()).unwrap_or_default();
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(i);
    }
    let mut out = Map::new();
    let mut text = String::new();
    let mut numeric = false;
    for key in &order {
        let rows_of = &groups[key];
        let picked: Vec<Column> = cells
            .iter()
            .map(|c| rows_of.iter().map(|&i| c[i].clone()).collect())
            .collect();
        let (summary, rows) = summarise(&name, &headers, &picked, by)?;
        numeric |= !rows.is_empty();
        if by.is_some() {
            out.insert(key.clone(), Value::Object(summary));
            text.push_str(&format!("\n{} = {key}\n", headers[by.unwrap_or(0)]));
        } else {
            out = summary;
        }
        text.push_str(&table::render(
            &["column", "n", "mean", "sd", "min", "max"],
            &rows,
        ));
    }
    if !numeric {
        bail!(
            "{name}: no column holds numbers (columns: {}): is it a rounds.csv?",
            headers.join(", ")
        );
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&Value::Object(out))?),
        Format::Text => {
            print!("{text}");
            println!("sd is the sample standard deviation (n - 1 denominator).");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The summaries of the numeric columns (all but `skip`), as JSON and as
/// table rows.
fn summarise(
    name: &str,
    headers: &[String],
    cells: &[Column],
    skip: Option<usize>,
) -> Result<Summaries> {
    let mut out = Map::new();
    let mut rows = Vec::new();
    for (i, (h, col)) in headers.iter().zip(cells).enumerate() {
        if Some(i) == skip {
            continue;
        }
        let parsed: Vec<(u64, &str, Option<f64>)> = col
            .iter()
            .map(|(l, c)| {
                (
                    *l,
                    c.as_str(),
                    c.parse::<f64>().ok().filter(|v| v.is_finite()),
                )
            })
            .collect();
        if parsed.iter().all(|(_, _, v)| v.is_none()) {
            continue; // a text column (empty cells allowed), or an empty one
        }
        if let Some((line, c, _)) = parsed.iter().find(|(_, c, v)| v.is_none() && !c.is_empty()) {
            bail!("{name}: line {line}: {h} = {c:?}: not a number (the column's other values are numbers)");
        }
        let values: Vec<Option<f64>> = parsed.iter().map(|(_, _, v)| *v).collect();
        if let Some(s) = summarize_optional(&values) {
            out.insert(
                h.clone(),
                json!({"mean": s.mean, "sd": s.sd, "min": s.min, "max": s.max, "n": s.n}),
            );
            rows.push(vec![
                h.clone(),
                s.n.to_string(),
                num(Some(s.mean), 4),
                num(s.sd, 4),
                num(Some(s.min), 4),
                num(Some(s.max), 4),
            ]);
        }
    }
    Ok((out, rows))
}
