//! The report as one self-contained HTML page (tables, confusion matrices,
//! inline SVG plots: ROC curves, training curves, calibration), and the plots
//! as standalone SVG files. The SVG is written by hand; nothing is fetched.

use super::report::markdown;
use super::report::{breakdowns, class_names, dec, f, mean_sd_cells, notices, pct, tasks_in_order};
use crossfold_shared::label::{Label, Task};
use crossfold_shared::metrics::roc_curve;
use serde_json::Value;
use std::fmt::Write;

const COLOURS: [&str; 10] = [
    "#7fa9d9", "#f0a070", "#8fcf88", "#e08890", "#b79ddb", "#c49a88", "#e9a3cf", "#a8a8a8",
    "#cfcf6e", "#7fd0da",
];
const POOLED: &str = "#1f3b73";
/// More rounds than this are drawn in one grey with one legend entry: a
/// legend line each would not fit the plot (nor ten colours tell them apart).
const MAX_NAMED_ROUNDS: usize = 12;
const MANY_ROUNDS: &str = "#b8b8b8";

/// A round's colour, width and whether it gets its own legend entry.
fn round_look(i: usize, rounds: usize, width: f64) -> (&'static str, f64, bool) {
    if rounds > MAX_NAMED_ROUNDS {
        (MANY_ROUNDS, 1.0, false)
    } else {
        (COLOURS[i % COLOURS.len()], width, true)
    }
}

/// Escapes text for HTML and SVG (element content and attribute values).
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A JSON value as escaped text (strings without their quotes).
fn j(v: &Value) -> String {
    esc(&v
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string()))
}

/// The task's per-round prediction entries, by round.
fn entries<'a>(doc: &'a Value, task: &str) -> Vec<&'a Value> {
    let mut es: Vec<&Value> = doc
        .get("predictions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e["task"].as_str() == Some(task))
        .collect();
    es.sort_by_key(|e| e["round"].as_u64().unwrap_or(u64::MAX));
    es
}

/// (is positive, score) of an entry's predictions with a known label and a finite score.
fn labelled(e: &Value, task: Task) -> (Vec<bool>, Vec<f64>) {
    e["predictions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let label: Label = p["label"].as_str()?.parse().ok()?;
            let score = p["score"].as_f64().filter(|s| s.is_finite())?;
            Some((task.is_positive(label), score))
        })
        .unzip()
}

/// Mean of (score − y)², or None without predictions.
fn brier(labels: &[bool], scores: &[f64]) -> Option<f64> {
    let sum: f64 = labels
        .iter()
        .zip(scores)
        .map(|(&l, &s)| (s - l as u8 as f64).powi(2))
        .sum();
    (!scores.is_empty()).then(|| sum / scores.len() as f64)
}

/// A plot panel: `w`×`h` pixels at horizontal offset `ox`, data range `x`×`y`.
struct Frame {
    ox: f64,
    w: f64,
    h: f64,
    x: (f64, f64),
    y: (f64, f64),
    /// Tick intervals along each axis.
    ticks: (usize, usize),
}

/// An axis from `lo` up to at least `hi` in round steps (1, 2 or 5 times a
/// power of ten, and at least `least`), at most `most` of them: (end, step
/// count).
fn nice_axis(lo: f64, hi: f64, most: usize, least: f64) -> (f64, usize) {
    let range = hi - lo;
    if !(range.is_finite() && range > 0.0) {
        return (lo + least.max(1.0), 1);
    }
    let rough = range / most as f64;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|&st| range / st <= most as f64 + 1e-9)
        .unwrap_or(10.0 * power)
        .max(least);
    let n = ((range / step) - 1e-9).ceil().max(1.0);
    (lo + n * step, n as usize)
}

const ML: f64 = 50.0;
const MR: f64 = 12.0;
const MT: f64 = 28.0;
const MB: f64 = 40.0;

/// A tick label with as many decimals as the axis `step` needs (0.25: 2;
/// 0.5: 1; 5: 0; at most 4).
fn tick(v: f64, step: f64) -> String {
    let decimals = (0..=4)
        .find(|&d| {
            let scaled = step * 10f64.powi(d);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.abs().max(1.0)
        })
        .unwrap_or(4) as usize;
    format!("{v:.decimals$}")
}

fn text(x: f64, y: f64, anchor: &str, extra: &str, s: &str) -> String {
    format!(
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}"{extra}>{}</text>"#,
        esc(s)
    )
}

fn svg_open(w: f64, h: f64) -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11"><rect width="{w}" height="{h}" fill="#fff"/>"##
    )
}

impl Frame {
    /// A 420 x 400 plot of the unit square (ROC, calibration).
    fn unit() -> Frame {
        Frame {
            ox: 0.0,
            w: 420.0,
            h: 400.0,
            x: (0.0, 1.0),
            y: (0.0, 1.0),
            ticks: (4, 4),
        }
    }

    fn px(&self, x: f64) -> f64 {
        self.ox + ML + (x - self.x.0) / (self.x.1 - self.x.0) * (self.w - ML - MR)
    }
    fn py(&self, y: f64) -> f64 {
        self.h - MB - (y - self.y.0) / (self.y.1 - self.y.0) * (self.h - MT - MB)
    }
    /// Box, ticks, tick labels, title and axis labels.
    fn axes(&self, title: &str, xl: &str, yl: &str) -> String {
        let (x0, y0, x1, y1) = (
            self.px(self.x.0),
            self.py(self.y.0),
            self.px(self.x.1),
            self.py(self.y.1),
        );
        let mut s = format!(
            r##"<rect x="{x0:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
            x1 - x0,
            y0 - y1
        );
        let xstep = (self.x.1 - self.x.0) / self.ticks.0 as f64;
        let ystep = (self.y.1 - self.y.0) / self.ticks.1 as f64;
        for i in 0..=self.ticks.0 {
            let xv = self.x.0 + i as f64 * xstep;
            let tx = self.px(xv);
            let _ = write!(
                s,
                r##"<line x1="{tx:.1}" y1="{y0:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#444"/>"##,
                y0 + 4.0
            );
            s += &text(tx, y0 + 16.0, "middle", "", &tick(xv, xstep));
        }
        for i in 0..=self.ticks.1 {
            let yv = self.y.0 + i as f64 * ystep;
            let ty = self.py(yv);
            let _ = write!(
                s,
                r##"<line x1="{x0:.1}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#444"/>"##,
                x0 - 4.0
            );
            s += &text(x0 - 6.0, ty + 4.0, "end", "", &tick(yv, ystep));
        }
        s += &text(
            self.ox + self.w / 2.0,
            16.0,
            "middle",
            r#" font-weight="bold""#,
            title,
        );
        s += &text((x0 + x1) / 2.0, self.h - 8.0, "middle", "", xl);
        let ym = (y0 + y1) / 2.0;
        let rot = format!(r#" transform="rotate(-90 {:.1} {ym:.1})""#, self.ox + 14.0);
        s + &text(self.ox + 14.0, ym, "middle", &rot, yl)
    }
    fn line(&self, pts: &[(f64, f64)], colour: &str, width: f64, dash: bool) -> String {
        let p: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", self.px(x), self.py(y)))
            .collect();
        let dash = if dash {
            r#" stroke-dasharray="5,4""#
        } else {
            ""
        };
        format!(
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="{width}"{dash}></polyline>"#,
            p.join(" ")
        )
    }
    /// Legend in the lower right of the plot area.
    fn legend(&self, items: &[(&str, String, f64)]) -> String {
        let x = self.px(self.x.1) - 150.0;
        let mut y = self.py(self.y.0) - 14.0 * items.len() as f64 - 2.0;
        let mut s = String::new();
        for (colour, label, width) in items {
            let _ = write!(
                s,
                r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="{width}"/>"#,
                x + 18.0
            );
            s += &text(x + 22.0, y + 4.0, "start", "", label);
            y += 14.0;
        }
        s
    }
}

fn roc_svg(t: &Value, es: &[&Value], task: Task, name: &str) -> Option<String> {
    let fr = Frame::unit();
    let mut s =
        svg_open(fr.w, fr.h) + &fr.axes(&format!("ROC: {name}"), "1 − specificity", "sensitivity");
    s += &fr.line(&[(0.0, 0.0), (1.0, 1.0)], "#999", 1.0, true);
    let (mut all_l, mut all_s, mut legend) = (vec![], vec![], vec![]);
    if es.len() > MAX_NAMED_ROUNDS {
        legend.push((MANY_ROUNDS, format!("each of {} rounds", es.len()), 1.5));
    }
    for (i, e) in es.iter().enumerate() {
        let (l, sc) = labelled(e, task);
        let pts = roc_curve(&l, &sc).unwrap_or_default();
        all_l.extend(l);
        all_s.extend(sc);
        if pts.is_empty() {
            continue;
        }
        let (colour, width, named) = round_look(i, es.len(), 1.2);
        let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.fpr, p.tpr)).collect();
        s += &fr.line(&xy, colour, width, false);
        if !named {
            continue;
        }
        let round = t["rounds"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["round"] == e["round"]);
        let auc = round.and_then(|r| f(r, "auc"));
        legend.push((
            colour,
            format!("round {} (AUC {})", j(&e["round"]), dec(auc, 3)),
            1.5,
        ));
    }
    let pooled = roc_curve(&all_l, &all_s).unwrap_or_default();
    if pooled.is_empty() {
        return None;
    }
    let xy: Vec<(f64, f64)> = pooled.iter().map(|p| (p.fpr, p.tpr)).collect();
    s += &fr.line(&xy, POOLED, 3.0, false);
    legend.push((
        POOLED,
        format!("pooled (AUC {})", dec(f(&t["pooled"], "auc"), 3)),
        3.0,
    ));
    Some(s + &fr.legend(&legend) + "</svg>")
}

/// (epoch, value) points of a history's key, numbers only.
fn series(h: &[Value], key: &str) -> Vec<(f64, f64)> {
    h.iter()
        .filter_map(|r| Some((f(r, "epoch")?, f(r, key)?)))
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect()
}

fn training_svg(es: &[&Value], name: &str) -> Option<String> {
    let hs: Vec<(usize, &Value, &Vec<Value>)> = es
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            Some((
                i,
                &e["round"],
                e["history"].as_array().filter(|h| !h.is_empty())?,
            ))
        })
        .collect();
    if hs.is_empty() {
        return None;
    }
    let all = |k: &str| {
        hs.iter()
            .flat_map(|(_, _, h)| series(h, k))
            .collect::<Vec<_>>()
    };
    let (loss, vloss) = (all("train_loss"), all("validation_loss"));
    let e0 = loss
        .iter()
        .chain(&vloss)
        .map(|p| p.0)
        .fold(f64::INFINITY, f64::min);
    let e1 = loss
        .iter()
        .chain(&vloss)
        .map(|p| p.0)
        .fold(f64::NEG_INFINITY, f64::max);
    // Whole epochs in round steps (1, 2, 5, 10, ...), ending at or just
    // after the last epoch; the loss from 0 in round steps too.
    let e0 = if e0.is_finite() { e0 } else { 0.0 };
    let (e1, xticks) = nice_axis(e0, e1.max(e0 + 1.0), 6, 1.0);
    let lmax = loss.iter().chain(&vloss).map(|p| p.1).fold(0.0, f64::max);
    let (lmax, yticks) = nice_axis(0.0, if lmax > 0.0 { lmax } else { 1.0 }, 5, 0.0);
    let left = Frame {
        ox: 0.0,
        w: 380.0,
        h: 300.0,
        x: (e0, e1),
        y: (0.0, lmax),
        ticks: (xticks, yticks),
    };
    let right = Frame {
        ox: 380.0,
        w: 380.0,
        h: 300.0,
        x: (e0, e1),
        y: (0.0, 1.0),
        ticks: (xticks, 4),
    };
    let mut s = svg_open(760.0, 300.0)
        + &left.axes(
            &format!("{name}: loss (solid train, dashed validation)"),
            "epoch",
            "loss",
        )
        + &right.axes(&format!("{name}: validation AUC"), "epoch", "AUC");
    let mut legend = vec![];
    if hs.len() > MAX_NAMED_ROUNDS {
        legend.push((MANY_ROUNDS, format!("each of {} rounds", hs.len()), 1.5));
    }
    for (i, round, h) in &hs {
        let (colour, width, named) = round_look(*i, hs.len(), 1.8);
        s += &left.line(&series(h, "train_loss"), colour, width, false);
        s += &left.line(&series(h, "validation_loss"), colour, width, true);
        s += &right.line(&series(h, "validation_auc"), colour, width, false);
        if named {
            legend.push((colour, format!("round {}", j(round)), 1.8));
        }
    }
    Some(s + &right.legend(&legend) + "</svg>")
}

/// Pooled (labels, scores) of a task.
fn pooled(es: &[&Value], task: Task) -> (Vec<bool>, Vec<f64>) {
    let (mut l, mut s) = (vec![], vec![]);
    for e in es {
        let (a, b) = labelled(e, task);
        l.extend(a);
        s.extend(b);
    }
    (l, s)
}

fn calibration_svg(es: &[&Value], task: Task, name: &str) -> Option<String> {
    let (l, sc) = pooled(es, task);
    let b = brier(&l, &sc)?;
    // 10 equal-width bins: (count, sum of scores, positives).
    let mut bins = [(0usize, 0.0f64, 0usize); 10];
    for (&y, &x) in l.iter().zip(&sc) {
        let bin = &mut bins[((x * 10.0).floor().max(0.0) as usize).min(9)];
        *bin = (bin.0 + 1, bin.1 + x, bin.2 + y as usize);
    }
    let fr = Frame::unit();
    let title = format!("Calibration: {name} (Brier {b:.4})");
    let mut s = svg_open(fr.w, fr.h)
        + &fr.axes(&title, "mean predicted score", "observed positive fraction");
    s += &fr.line(&[(0.0, 0.0), (1.0, 1.0)], "#999", 1.0, true);
    let nmax = bins.iter().map(|b| b.0).max().unwrap_or(1).max(1) as f64;
    let pts: Vec<(f64, f64, usize)> = bins
        .iter()
        .filter(|b| b.0 > 0)
        .map(|b| (b.1 / b.0 as f64, b.2 as f64 / b.0 as f64, b.0))
        .collect();
    s += &fr.line(
        &pts.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(),
        POOLED,
        1.5,
        false,
    );
    for (x, y, n) in pts {
        let (cx, cy) = (fr.px(x), fr.py(y));
        let _ = write!(
            s,
            r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="{:.1}" fill="{POOLED}" fill-opacity="0.6"/>"#,
            3.0 + 6.0 * (n as f64 / nmax).sqrt()
        );
        // Labels right of the point, or left of it near the right edge.
        let (lx, anchor) = if x > 0.8 {
            (cx - 10.0, "end")
        } else {
            (cx + 10.0, "start")
        };
        s += &text(lx, cy - 6.0, anchor, "", &format!("n={n}"));
    }
    Some(s + "</svg>")
}

/// A file-name-safe version of a task name.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One task's plots: (kind, svg), kind one of roc, training, calibration.
fn task_svgs(doc: &Value, name: &str, t: &Value) -> Vec<(&'static str, String)> {
    let Ok(task) = name.parse::<Task>() else {
        return vec![];
    };
    let es = entries(doc, name);
    [
        ("roc", roc_svg(t, &es, task, name)),
        ("training", training_svg(&es, name)),
        ("calibration", calibration_svg(&es, task, name)),
    ]
    .into_iter()
    .filter_map(|(k, s)| Some((k, s?)))
    .collect()
}

/// The plots as standalone SVG files: (file name, svg text).
pub fn svgs(doc: &Value) -> Vec<(String, String)> {
    tasks_in_order(doc)
        .into_iter()
        .flat_map(|(name, t)| {
            task_svgs(doc, name, t)
                .into_iter()
                .map(move |(k, s)| (format!("{k}-{}.svg", slug(name)), s))
        })
        .collect()
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}\
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}.cms{display:flex;flex-wrap:wrap;gap:1em}\
.cms table{font-size:90%}.plots svg{margin:.5em;border:1px solid #eee}code{font-size:90%}";

/// The report as one self-contained HTML page (no external fetches).
pub fn html(doc: &Value) -> String {
    let name = esc(doc["name"].as_str().unwrap_or("experiment"));
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>crossfold report: {name}</title><style>{STYLE}</style></head><body>\n<h1>crossfold report: {name}</h1>\n"
    );
    for line in super::report::protocol_lines(doc) {
        let _ = writeln!(out, "<p>{}</p>", esc(&line));
    }
    for (heading, lines) in notices(doc) {
        let items: String = lines
            .iter()
            .map(|l| format!("<li>{}</li>", esc(l)))
            .collect();
        let _ = writeln!(out, "<p>{}:</p><ul>{items}</ul>", esc(heading));
    }
    for (task, t) in tasks_in_order(doc) {
        let rounds = t["rounds"].as_array().cloned().unwrap_or_default();
        let (neg, pos) = class_names(task);
        let _ = write!(out, "<h2>{}: {pos} vs {neg}, {} round(s)</h2>\n<table><tr><th>Round</th><th>n</th><th>TP</th><th>FP</th><th>TN</th><th>FN</th><th>Accuracy %</th><th>Sensitivity %</th><th>Specificity %</th><th>PPV %</th><th>NPV %</th><th>AUC (95% CI)</th></tr>\n", esc(task), rounds.len());
        for r in &rounds {
            let cells: Vec<String> = ["round", "n", "tp", "fp", "tn", "fn"]
                .iter()
                .map(|k| j(&r[*k]))
                .chain(
                    ["accuracy", "sensitivity", "specificity", "ppv", "npv"]
                        .iter()
                        .map(|k| pct(f(r, k))),
                )
                .collect();
            let auc = format!(
                "{} ({}–{})",
                dec(f(r, "auc"), 3),
                dec(f(r, "auc_ci_low"), 3),
                dec(f(r, "auc_ci_high"), 3)
            );
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{auc}</td></tr>",
                cells.join("</td><td>")
            );
        }
        let _ = writeln!(
            out,
            "<tr><th>Mean ± SD</th><td></td><td></td><td></td><td></td><td></td><td>{}</td></tr></table>",
            mean_sd_cells(&t["summary"], rounds.len()).join("</td><td>")
        );
        if let Some(line) = super::report::pooled_line(t, dec, "–") {
            let _ = writeln!(out, "<p>{}.</p>", esc(&line));
        }
        let planned = super::report::planned_rounds(doc, task);
        if let Some(line) = super::report::per_repeat_line(t, &planned, dec, "–") {
            let _ = writeln!(out, "<p>{}</p>", esc(&line));
        }
        if let Some(line) = super::summary::time_line(t, "–") {
            let _ = writeln!(out, "<p>T{}.</p>", esc(&line[1..]));
        }
        if let Some(table) = super::report::youden_table(t) {
            let _ = write!(
                out,
                "<h3>At the validation-chosen threshold</h3>\n<p>{}</p>\n",
                esc(super::report::YOUDEN_NOTE)
            );
            html_table(&mut out, &table);
        }
        out.push_str("<h3>Confusion matrices</h3>\n<div class=\"cms\">");
        for r in &rounds {
            let c = |k: &str| j(&r[k]);
            let _ = write!(out, "<table><tr><th>Round {}</th><th>actual {pos}</th><th>actual {neg}</th></tr><tr><th>predicted {pos}</th><td>TP {}</td><td>FP {}</td></tr><tr><th>predicted {neg}</th><td>FN {}</td><td>TN {}</td></tr></table>", c("round"), c("tp"), c("fp"), c("fn"), c("tn"));
        }
        out.push_str("</div>\n");
        for (title, table) in breakdowns(t) {
            let _ = writeln!(
                out,
                "<h3>{} (pooled out-of-fold predictions)</h3>",
                esc(&title)
            );
            html_table(&mut out, &table);
        }
        if let Ok(kind) = task.parse::<Task>() {
            let (l, sc) = pooled(&entries(doc, task), kind);
            if let Some(b) = brier(&l, &sc) {
                let _ = writeln!(out, "<p>Brier score of the pooled predictions (mean of (score − y)², y = 1 for {pos}): {b:.4} over {} predictions.</p>", sc.len());
            }
        }
        out.push_str("<div class=\"plots\">\n");
        for (_, svg) in task_svgs(doc, task, t) {
            out.push_str(&svg);
            out.push('\n');
        }
        out.push_str("</div>\n");
    }
    // The definitions are report.md's, so the two never disagree.
    out.push_str("<h2>Definitions</h2>\n<ul>\n");
    let md = markdown(doc);
    let defs = md.split("\n## Definitions\n").nth(1).unwrap_or("");
    for line in defs.lines().filter_map(|l| l.strip_prefix("- ")) {
        let _ = writeln!(out, "<li>{}</li>", esc(line));
    }
    let _ = write!(
        out,
        "</ul>\n<h2>Provenance</h2>\n<table><tr><th>Experiment id</th><td><code>{}</code></td></tr><tr><th>State</th><td>{}</td></tr><tr><th>Split plan SHA-256</th><td><code>{}</code></td></tr><tr><th>Data set SHA-256</th><td><code>{}</code></td></tr></table>\n{}</body></html>\n",
        esc(doc["experiment_id"].as_str().unwrap_or("-")),
        esc(doc["state"].as_str().unwrap_or("-")),
        esc(doc["plan_sha256"].as_str().unwrap_or("-")),
        esc(doc["dataset_sha256"].as_str().unwrap_or("-")),
        round_provenance(doc),
    );
    out
}

/// One row per round: who trained it, on what, with which settings.
fn round_provenance(doc: &Value) -> String {
    let mut rows = String::new();
    for (task, t) in tasks_in_order(doc) {
        for r in t["rounds"].as_array().into_iter().flatten() {
            let p = &r["provenance"];
            let s = |v: &Value| match v {
                Value::Null => "–".to_string(),
                Value::String(x) => esc(x),
                other => esc(&other.to_string()),
            };
            let c = &p["compute"];
            let precision = if c.is_null() {
                "–".to_string()
            } else {
                let mut parts = vec![if c["autocast_bf16"] == true {
                    "bf16 autocast"
                } else if c["autocast_fp16"] == true {
                    "fp16 autocast, loss scaling"
                } else if c["tf32"] == true {
                    "tf32"
                } else {
                    "fp32"
                }];
                if c["channels_last"] == true {
                    parts.push("channels-last");
                }
                if c["cudnn_benchmark"] == true {
                    parts.push("cuDNN autotuning");
                }
                parts.join(", ")
            };
            let t = &r["timing"];
            let time = match (t["total"].as_f64(), t["training"].as_f64()) {
                (Some(total), Some(training)) => {
                    let validation = t["validation"]
                        .as_f64()
                        .map(|v| format!(", validation {v:.1} s"))
                        .unwrap_or_default();
                    let rate = t["images_per_second"]
                        .as_f64()
                        .map(|v| format!(", {v:.0} img/s"))
                        .unwrap_or_default();
                    format!("{total:.1} s (training {training:.1} s{validation}{rate})")
                }
                _ => "–".to_string(),
            };
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(task),
                s(&r["round"]),
                s(&r["worker_id"]),
                s(&r["attempt"]),
                s(&p["device_name"]),
                precision,
                time,
                s(&p["seed"]),
                s(&p["crossfold_version"]),
                s(&p["libtorch_version"]),
                s(&p["git_commit"]),
            );
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    format!("<h3>Per round</h3>\n<table><tr><th>Task</th><th>Round</th><th>Worker</th><th>Attempt</th><th>Device</th><th>Precision</th><th>Time</th><th>Seed</th><th>crossfold</th><th>libtorch</th><th>git</th></tr>{rows}</table>\n")
}

/// `table` (header first) as an HTML table.
fn html_table(out: &mut String, table: &[Vec<String>]) {
    out.push_str("<table>");
    for (i, row) in table.iter().enumerate() {
        let cell = if i == 0 { "th" } else { "td" };
        out.push_str("<tr>");
        for c in row {
            let _ = write!(out, "<{cell}>{}</{cell}>", esc(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// report.rs's fixed experiment, with a training history in screening round 1.
    pub(super) fn fixed_doc() -> Value {
        let mut doc = crate::cli::report::tests::fixed_doc();
        doc["predictions"][0]["history"] = serde_json::json!([
            {"epoch": 1, "train_loss": 0.69, "validation_loss": 0.7, "validation_auc": 0.6, "learning_rate": 0.001, "seconds": 3.0},
            {"epoch": 2, "train_loss": 0.5, "validation_loss": 0.6, "validation_auc": 0.75, "learning_rate": 0.001, "seconds": 3.0},
            {"epoch": 3, "train_loss": 0.4, "validation_loss": null, "validation_auc": 0.8, "learning_rate": 0.0005, "seconds": 3.0},
        ]);
        assert_eq!(doc["predictions"][0]["task"], "screening");
        assert_eq!(doc["predictions"][0]["round"], 1);
        doc
    }

    #[test]
    fn html_numbers_equal_the_documents() {
        let doc = fixed_doc();
        let page = html(&doc);
        assert!(page.starts_with("<!doctype html>"));
        for (task, t) in doc["tasks"].as_object().unwrap() {
            for r in t["rounds"].as_array().unwrap() {
                let auc = format!("{:.3}", r["auc"].as_f64().unwrap());
                assert!(page.contains(&auc), "{task} round AUC {auc}");
                assert!(page.contains(&format!("round {} (AUC {auc})", r["round"])));
            }
            for k in ["accuracy", "sensitivity", "specificity", "ppv", "npv"] {
                let m = &t["summary"][k];
                let want = format!("{} ± {}", pct(f(m, "mean")), pct(f(m, "sd")));
                assert!(page.contains(&format!("<td>{want}")), "{task} {k} {want}");
            }
            let pooled = format!("pooled (AUC {:.3})", t["pooled"]["auc"].as_f64().unwrap());
            assert!(page.contains(&pooled), "{pooled}");
        }
        assert!(page.contains("<h2>Definitions</h2>") && page.contains("DeLong"));
        // Round time as its worker reported it; a dash for rounds without.
        assert!(
            page.contains("<td>42.5 s (training 40.0 s, validation 1.2 s, 176 img/s)</td>"),
            "{page}"
        );
        assert!(page.contains("<td>–</td><td>2023</td>"), "{page}");
        assert!(
            page.contains(&"a".repeat(64))
                && page.contains(&"b".repeat(64))
                && page.contains("succeeded")
        );
    }

    #[test]
    fn html_is_self_contained() {
        let page = html(&fixed_doc()).to_lowercase();
        assert!(!page.contains("<script"));
        for attr in ["src=", "href="] {
            assert!(!page.contains(attr), "{attr}");
        }
        assert!(!page.contains("@import") && !page.contains("url("));
    }

    #[test]
    fn brier_scores_match_a_hand_computation() {
        // Screening, y = 1 for benign or malignant:
        // round 1: .1²+.6²+.3²+.1²+.6² = .01+.36+.09+.01+.36 = .83
        // round 2: .2²+.3²+.2²+.45²+.5² = .04+.09+.04+.2025+.25 = .6225
        // (.83 + .6225) / 10 = 0.14525.
        // Malignancy, y = 1 for malignant:
        // round 1: .3²+.7²+.4²+.35² = .09+.49+.16+.1225 = .8625
        // round 2: .2²+.1²+.7²+.65² = .04+.01+.49+.4225 = .9625
        // (.8625 + .9625) / 8 = 0.228125.
        let page = html(&fixed_doc());
        let printed: Vec<f64> = page
            .split("Brier score of the pooled predictions")
            .skip(1)
            .map(|s| {
                s.split("): ")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(printed.len(), 2);
        assert!((printed[0] - 0.14525).abs() <= 0.00006, "{printed:?}");
        assert!((printed[1] - 0.228125).abs() <= 0.00006, "{printed:?}");
        assert!(page.contains(": 0.2281 over 8 predictions"));
    }

    #[test]
    fn axes_end_in_round_steps_just_past_the_data() {
        // Epochs 1-6: steps of 1 up to 6 (not 9).
        assert_eq!(nice_axis(1.0, 6.0, 6, 1.0), (6.0, 5));
        // Epochs 1-30: steps of 5 up to 31.
        assert_eq!(nice_axis(1.0, 30.0, 6, 1.0), (31.0, 6));
        // Epochs 1-2: whole epochs still (not 1.2, 1.4, ...).
        assert_eq!(nice_axis(1.0, 2.0, 6, 1.0), (2.0, 1));
        // A loss up to 2.23: steps of 0.5 up to 2.5.
        let (end, n) = nice_axis(0.0, 2.23, 5, 0.0);
        assert!((end - 2.5).abs() < 1e-9 && n == 5, "{end} {n}");
        // Up to 0.7: steps of 0.2 up to 0.8.
        let (end, n) = nice_axis(0.0, 0.7, 5, 0.0);
        assert!((end - 0.8).abs() < 1e-9 && n == 4, "{end} {n}");
        // Nothing to span.
        assert_eq!(nice_axis(3.0, 3.0, 5, 1.0), (4.0, 1));
        // Labels carry the decimals their step needs, no more.
        assert_eq!(tick(0.75, 0.25), "0.75");
        assert_eq!(tick(1.5, 0.5), "1.5");
        assert_eq!(tick(6.0, 1.0), "6");
        assert_eq!(tick(0.015, 0.005), "0.015");
    }

    #[test]
    fn many_rounds_share_one_grey_legend_entry_that_fits_the_plot() {
        let preds = serde_json::json!([
            {"label": "normal", "score": 0.2}, {"label": "normal", "score": 0.6},
            {"label": "benign", "score": 0.7}, {"label": "malignant", "score": 0.4},
        ]);
        let entries: Vec<Value> = (1..=30)
            .map(|r| serde_json::json!({"round": r, "predictions": preds}))
            .collect();
        let es: Vec<&Value> = entries.iter().collect();
        let t = serde_json::json!({"rounds": [], "pooled": {"auc": 0.75}});
        let svg = roc_svg(&t, &es, Task::Screening, "screening").unwrap();
        assert!(svg.contains("each of 30 rounds") && svg.contains("pooled (AUC 0.750)"));
        assert!(!svg.contains("round 1 (AUC"), "{svg}");
        assert_eq!(
            svg.matches(MANY_ROUNDS).count(),
            31,
            "30 curves and the legend line"
        );
        // Twelve rounds: each named, in colour.
        let svg = roc_svg(&t, &es[..12], Task::Screening, "screening").unwrap();
        assert!(svg.contains("round 12 (AUC") && !svg.contains(MANY_ROUNDS));
    }

    #[test]
    fn svgs_are_well_formed() {
        let files = svgs(&fixed_doc());
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "roc-screening.svg",
                "training-screening.svg",
                "calibration-screening.svg",
                "roc-malignancy.svg",
                "calibration-malignancy.svg"
            ]
        );
        for (name, svg) in &files {
            assert!(svg.starts_with("<svg"), "{name}");
            assert!(svg.ends_with("</svg>"), "{name}");
            for tag in ["polyline", "text"] {
                let open = svg.matches(&format!("<{tag} ")).count();
                assert!(open > 0, "{name} {tag}");
                assert_eq!(
                    open,
                    svg.matches(&format!("</{tag}>")).count(),
                    "{name} {tag}"
                );
            }
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{name}");
        }
    }

    #[test]
    fn text_from_the_document_is_escaped() {
        let mut doc = fixed_doc();
        let o = doc.as_object_mut().unwrap();
        o.insert("name".into(), "a<b & \"c\"".into());
        let tasks = o["tasks"].as_object_mut().unwrap();
        let t = tasks.remove("malignancy").unwrap();
        tasks.insert("<script>x".into(), t);
        let page = html(&doc);
        assert!(page.contains("&lt;script&gt;x") && !page.contains("<script"));
        assert!(page.contains("a&lt;b &amp; &quot;c&quot;"));
        assert!(svgs(&doc).iter().all(|(n, _)| !n.contains('<')));
    }
}

/// report.html in a real headless browser (Chromium): it must parse into
/// the same tables and plots, and render to a non-blank image, with every
/// network lookup refused. Skipped with a message when no Chromium is
/// installed, except under `CROSSFOLD_REQUIRE_BROWSER=1` (CI installs it).
#[cfg(test)]
mod browser {
    use super::tests::fixed_doc;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn find_browser() -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        ["chromium-headless-shell", "chromium", "chromium-browser"]
            .iter()
            .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
            .find(|p| p.is_file())
    }

    fn chromium(browser: &Path, args: &[&str], page: &Path) -> String {
        let out = Command::new("timeout")
            .arg("120")
            .arg(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--host-resolver-rules=MAP * ~NOTFOUND",
            ])
            .args(args)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("run chromium");
        assert!(
            out.status.success(),
            "{} failed: {}",
            browser.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn report_opens_in_a_headless_browser() {
        let Some(browser) = find_browser() else {
            assert!(
                std::env::var("CROSSFOLD_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "CROSSFOLD_REQUIRE_BROWSER=1 but no Chromium on PATH"
            );
            eprintln!(
                "skipped report_opens_in_a_headless_browser: no headless Chromium on PATH \
                 (apt-get install chromium-headless-shell)"
            );
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let doc = fixed_doc();
        super::super::report::write_report(dir.path(), &doc).unwrap();
        let page = dir.path().join("report.html");
        let dom = chromium(&browser, &["--dump-dom"], &page);
        // The browser's DOM holds the tables, the plots and the numbers.
        assert!(dom.contains("<h2>Definitions</h2>"), "{dom}");
        let page_text = std::fs::read_to_string(&page).unwrap();
        let svgs = page_text.matches("<svg").count();
        assert!(svgs >= 5 && dom.matches("<svg").count() == svgs, "{dom}");
        let pooled = &doc["tasks"]["screening"]["pooled"]["auc"];
        let shown = format!("{:.3}", pooled.as_f64().unwrap());
        assert!(
            dom.contains(&format!("Pooled out-of-fold AUC: {shown}")),
            "{shown}"
        );
        assert!(
            dom.contains("By site") && dom.contains("Per round"),
            "{dom}"
        );
        // It renders: a screenshot with more than one colour in it.
        let shot = dir.path().join("shot.png");
        let arg = format!("--screenshot={}", shot.display());
        chromium(&browser, &[&arg, "--window-size=1200,2400"], &page);
        let img = image::open(&shot).expect("screenshot").to_luma8();
        let (lo, hi) = img
            .pixels()
            .fold((255u8, 0u8), |(lo, hi), p| (lo.min(p.0[0]), hi.max(p.0[0])));
        assert!(hi - lo > 100, "blank screenshot ({lo}..{hi})");
    }
}
