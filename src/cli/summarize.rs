//! `crossfold summarize`: across-round summaries of a CSV's numeric columns.

use super::{num, table, Format};
use anyhow::{anyhow, bail, Result};
use clap::Args;
use crossfold_shared::metrics::summarize_optional;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct SummarizeArgs {
    /// CSV with one row per round. Numeric columns are summarised; columns
    /// with no numeric value at all (e.g. a task name) are skipped; empty
    /// cells are missing values.
    file: PathBuf,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(a: SummarizeArgs) -> Result<ExitCode> {
    let name = a.file.display();
    let mut reader =
        csv::Reader::from_path(&a.file).map_err(|e| anyhow!("cannot read {name}: {e}"))?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| anyhow!("{name}: {e}"))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut cells: Vec<Vec<(u64, String)>> = vec![Vec::new(); headers.len()];
    for rec in reader.records() {
        let rec = rec.map_err(|e| anyhow!("{name}: {e}"))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        for (i, c) in rec.iter().enumerate().take(headers.len()) {
            cells[i].push((line, c.trim().to_string()));
        }
    }
    if cells.first().is_none_or(|c| c.is_empty()) {
        bail!("{name}: no rows");
    }
    let mut out = Map::new();
    let mut rows = Vec::new();
    for (h, col) in headers.iter().zip(&cells) {
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
        if parsed.iter().all(|(_, c, v)| v.is_none() && !c.is_empty())
            || parsed.iter().all(|(_, c, _)| c.is_empty())
        {
            continue; // a text column, or an empty one
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
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&Value::Object(out))?),
        Format::Text => {
            print!(
                "{}",
                table::render(&["column", "n", "mean", "sd", "min", "max"], &rows)
            );
            println!("sd is the sample standard deviation (n - 1 denominator).");
        }
    }
    Ok(ExitCode::SUCCESS)
}
