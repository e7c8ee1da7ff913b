//! `crossfold metrics` and `crossfold summarize`: the JSON contracts.

mod common;
use common::*;

#[test]
fn metrics_json_has_the_contract_keys_and_hand_checked_values() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("scores.csv");
    // Positives 0.9, 0.8, 0.4; negatives 0.7, 0.3, 0.2, 0.1.
    // At 0.5: TP 2, FN 1, FP 1, TN 3. AUC: pairs won = 4 + 4 + 3 = 11 of 12.
    std::fs::write(
        &f,
        "label,score\n1,0.9\n1,0.8\n1,0.4\n0,0.7\n0,0.3\n0,0.2\n0,0.1\n",
    )
    .unwrap();
    let j = crossfold(&["metrics", f.to_str().unwrap(), "--format", "json"])
        .ok()
        .json();
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "n_pos",
        "n_neg",
        "threshold",
        "tp",
        "fp",
        "tn",
        "fn",
        "accuracy",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "auc",
        "auc_ci_low",
        "auc_ci_high",
        "auc_ci_method",
    ] {
        assert!(keys.contains(&k), "{k} missing: {keys:?}");
    }
    assert_eq!(
        (
            j["tp"].as_u64(),
            j["fp"].as_u64(),
            j["tn"].as_u64(),
            j["fn"].as_u64()
        ),
        (Some(2), Some(1), Some(3), Some(1))
    );
    assert!((j["accuracy"].as_f64().unwrap() - 5.0 / 7.0).abs() < 1e-12);
    assert!((j["ppv"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert!((j["auc"].as_f64().unwrap() - 11.0 / 12.0).abs() < 1e-12);
    assert_eq!(j["auc_ci_method"], "delong");
    assert!(j["auc_ci_low"].as_f64().unwrap() <= j["auc"].as_f64().unwrap());
}

#[test]
fn undefined_metrics_are_null() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("scores.csv");
    std::fs::write(&f, "label,score\n1,0.1\n1,0.2\n0,0.3\n0,0.4\n").unwrap();
    let j = crossfold(&["metrics", f.to_str().unwrap(), "--format", "json"])
        .ok()
        .json();
    assert_eq!(j["tp"], 0);
    assert!(
        j["ppv"].is_null(),
        "no predicted positives: PPV undefined, not 0"
    );
    assert_eq!(j["auc"], 0.0);
}

#[test]
fn metrics_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.csv");
    std::fs::write(&f, "label,score\n1,0.9\n2,0.3\n0,x\n").unwrap();
    let run = crossfold(&["metrics", f.to_str().unwrap()]);
    run.failed();
    assert!(
        run.stderr.contains("bad.csv: 2 bad value(s)")
            && run.stderr.contains("line 3: label = \"2\"")
            && run.stderr.contains("line 4: score = \"x\""),
        "{}",
        run.stderr
    );
    std::fs::write(&f, "label,score\n1,high\n").unwrap();
    let run = crossfold(&["metrics", f.to_str().unwrap()]);
    assert!(
        run.stderr.contains("line 2") && run.stderr.contains("score = \"high\""),
        "{}",
        run.stderr
    );
    std::fs::write(&f, "label,prob\n1,0.3\n").unwrap();
    let run = crossfold(&["metrics", f.to_str().unwrap()]);
    assert!(run.stderr.contains("score"), "{}", run.stderr);
    // A threshold out of range is the flag's fault, not the file's.
    std::fs::write(&f, "label,score\n1,0.9\n0,0.2\n").unwrap();
    let run = crossfold(&["metrics", f.to_str().unwrap(), "--threshold", "2"]);
    run.failed();
    assert!(
        run.stderr.contains("--threshold 2: must be in [0, 1]") && !run.stderr.contains("bad.csv"),
        "{}",
        run.stderr
    );
    // CRLF line endings (Excel) and a blank line: the file's own line numbers.
    std::fs::write(&f, "label,score\r\n1,0.9\r\n\r\n0,x\r\n").unwrap();
    let run = crossfold(&["metrics", f.to_str().unwrap()]);
    assert!(
        run.stderr.contains("line 4: score = \"x\""),
        "{}",
        run.stderr
    );
    // Class names, as in crossfold's predictions.csv: say how to map them.
    std::fs::write(
        &f,
        "image,label,score\na.png,normal,0.2\nb.png,malignant,0.9\n",
    )
    .unwrap();
    let run = crossfold(&["metrics", f.to_str().unwrap()]);
    run.failed();
    assert!(
        run.stderr.contains("line 2: label = \"normal\"")
            && run.stderr.contains("the labels are class names"),
        "{}",
        run.stderr
    );
    std::fs::write(&f, "label,score\n1,2.5\n0,-1.5\n").unwrap();
    let run = crossfold(&["metrics", f.to_str().unwrap()]);
    run.ok();
    assert!(
        run.stderr.contains("2 score(s) outside [0, 1] (logits?)"),
        "{}",
        run.stderr
    );
    std::fs::write(&f, "label,score\n1,0.9\n0,0.1\n").unwrap();
    let run = crossfold(&["metrics", f.to_str().unwrap(), "--bootstrap", "1000000000"]);
    run.failed();
    assert!(
        run.stderr
            .contains("--bootstrap 1000000000: at most 1000000 resamples"),
        "{}",
        run.stderr
    );
}

#[test]
fn summarize_gives_sample_sd_of_the_papers_table_3() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("rounds.csv");
    let sens = [100.0, 93.1, 98.6, 70.8, 94.4, 87.5, 97.2, 97.2, 90.3, 90.3];
    let spec = [0.0, 21.9, 0.31, 65.5, 21.9, 31.3, 15.6, 15.6, 34.3, 34.4];
    let mut text = String::from("task,round,sensitivity,specificity,auc\n");
    for i in 0..10 {
        let auc = if i == 0 { String::new() } else { "0.6".into() };
        text.push_str(&format!(
            "malignancy,{},{},{},{}\n",
            i + 1,
            sens[i],
            spec[i],
            auc
        ));
    }
    std::fs::write(&f, text).unwrap();
    let j = crossfold(&["summarize", f.to_str().unwrap(), "--format", "json"])
        .ok()
        .json();
    assert!(j.get("task").is_none(), "text columns are skipped");
    let sd = |c: &str| j[c]["sd"].as_f64().unwrap();
    assert_eq!(format!("{:.1}", sd("sensitivity")), "8.5");
    assert_eq!(format!("{:.1}", sd("specificity")), "19.1");
    assert_eq!(j["sensitivity"]["n"], 10);
    assert_eq!(j["auc"]["n"], 9, "empty cells are missing values");
    assert_eq!(j["sensitivity"]["min"], 70.8);
    assert_eq!(j["sensitivity"]["max"], 100.0);
    let text = crossfold(&["summarize", f.to_str().unwrap()])
        .ok()
        .stdout
        .clone();
    assert!(text.contains("n - 1"), "{text}");
}

#[test]
fn summarize_keeps_tasks_apart_and_skips_text_columns_with_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("rounds.csv");
    std::fs::write(
        &f,
        "task,round,note,auc\nscreening,1,,0.9\nscreening,2,rerun,0.8\nmalignancy,1,,0.5\nmalignancy,2,,0.7\n",
    )
    .unwrap();
    let run = crossfold(&["summarize", f.to_str().unwrap()]);
    run.failed();
    assert!(
        run.stderr.contains("2 tasks (malignancy, screening)") && run.stderr.contains("--by task"),
        "{}",
        run.stderr
    );
    let j = crossfold(&[
        "summarize",
        f.to_str().unwrap(),
        "--by",
        "task",
        "--format",
        "json",
    ])
    .ok()
    .json();
    let mean = |t: &str| j[t]["auc"]["mean"].as_f64().unwrap();
    assert!((mean("screening") - 0.85).abs() < 1e-12, "{j}");
    assert!((mean("malignancy") - 0.6).abs() < 1e-12, "{j}");
    assert!(
        j["screening"].get("note").is_none(),
        "a text column with a gap is skipped"
    );
    assert!(j["screening"].get("task").is_none());
    let text = crossfold(&["summarize", f.to_str().unwrap(), "--by", "task"])
        .ok()
        .stdout
        .clone();
    assert!(
        text.contains("task = screening") && text.contains("task = malignancy"),
        "{text}"
    );
    let run = crossfold(&["summarize", f.to_str().unwrap(), "--by", "fold"]);
    run.failed();
    assert!(
        run.stderr.contains("--by fold") && run.stderr.contains("no such column"),
        "{}",
        run.stderr
    );
}

#[test]
fn summarize_refuses_a_stray_text_value() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("rounds.csv");
    std::fs::write(&f, "auc\n0.7\nn/a\n").unwrap();
    let run = crossfold(&["summarize", f.to_str().unwrap()]);
    run.failed();
    assert!(
        run.stderr.contains("line 3") && run.stderr.contains("auc = \"n/a\""),
        "{}",
        run.stderr
    );
    std::fs::write(&f, "auc,auc\n0.7,0.8\n").unwrap();
    let run = crossfold(&["summarize", f.to_str().unwrap()]);
    run.failed();
    assert!(
        run.stderr.contains("the header names column \"auc\" twice"),
        "{}",
        run.stderr
    );
    // Empty columns (Excel's trailing commas) are not a name twice.
    std::fs::write(&f, "auc,,\n0.7,,\n0.8,,\n").unwrap();
    crossfold(&["summarize", f.to_str().unwrap()]).ok();
    // Not a table of numbers at all (the wrong file): said, not an empty table.
    std::fs::write(&f, "image,label\na.png,normal\n").unwrap();
    let run = crossfold(&["summarize", f.to_str().unwrap()]);
    run.failed();
    assert!(
        run.stderr
            .contains("no column holds numbers (columns: image, label)"),
        "{}",
        run.stderr
    );
    std::fs::write(&f, "auc\r\n0.7\r\n\r\nn/a\r\n").unwrap();
    let run = crossfold(&["summarize", f.to_str().unwrap()]);
    run.failed();
    assert!(run.stderr.contains("line 4"), "{}", run.stderr);
}
