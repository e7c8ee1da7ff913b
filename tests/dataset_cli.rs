//! `crossfold dataset synth|import|check|fingerprint` end to end.

mod common;
use common::*;

#[test]
fn synth_then_check_passes_and_fingerprint_is_reproducible() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ma = small_cohort(a.path());
    let mb = small_cohort(b.path());
    let check = crossfold(&["dataset", "check", ma.to_str().unwrap()]);
    check.ok();
    assert!(check.stdout.contains("ok: no errors"), "{}", check.stdout);
    let json = crossfold(&["dataset", "check", ma.to_str().unwrap(), "--format", "json"])
        .ok()
        .json();
    assert_eq!(json["rows"], 25);
    assert_eq!(json["counts"]["normal"], 10);
    assert_eq!(json["counts"]["benign"], 5);
    assert_eq!(json["counts"]["malignant"], 10);
    let fa = crossfold(&["dataset", "fingerprint", ma.to_str().unwrap()])
        .ok()
        .stdout
        .clone();
    let fb = crossfold(&["dataset", "fingerprint", mb.to_str().unwrap()])
        .ok()
        .stdout
        .clone();
    assert_eq!(fa, fb, "same seed must give the same data set");
    assert_eq!(fa.trim().len(), 64);
    // A --data-root that is not there is one error, not one per row.
    let missing = a.path().join("nowhere");
    let (m, root) = (ma.to_str().unwrap(), missing.to_str().unwrap());
    let run = crossfold(&["dataset", "check", m, "--data-root", root]);
    run.failed();
    assert!(
        run.stderr.contains("nowhere: the data root does not exist")
            && run.stderr.lines().count() <= 2,
        "{}",
        run.stderr
    );
    // With --format json a script still gets a document, with the error.
    let run = crossfold(&[
        "dataset",
        "check",
        m,
        "--data-root",
        root,
        "--format",
        "json",
    ]);
    run.failed();
    let doc = run.json();
    assert_eq!(doc["errors"][0]["kind"], "manifest", "{doc}");
    assert!(
        doc["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("the data root does not exist"),
        "{doc}"
    );
}

#[test]
fn check_names_every_bad_row_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = small_cohort(dir.path());
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // Line 2: unknown label; line 3: missing file; line 4: escape.
    lines[1] = lines[1].replacen(",normal,", ",tumour,", 1);
    let l3: Vec<&str> = lines[2].splitn(2, ',').collect();
    lines[2] = format!("images/nope.png,{}", l3[1]);
    let l4: Vec<&str> = lines[3].splitn(2, ',').collect();
    lines[3] = format!("../../etc/passwd,{}", l4[1]);
    // A corrupt image.
    let first_malignant = lines
        .iter()
        .skip(4)
        .find(|l| l.contains(",malignant,"))
        .unwrap()
        .clone();
    let path = first_malignant.split(',').next().unwrap().to_string();
    std::fs::write(dir.path().join("cohort").join(&path), b"not an image").unwrap();
    std::fs::write(&manifest, lines.join("\n") + "\n").unwrap();

    let run = crossfold(&["dataset", "check", manifest.to_str().unwrap()]);
    run.failed();
    let out = &run.stdout;
    assert!(
        out.contains("line 2") && out.contains("\"tumour\""),
        "{out}"
    );
    assert!(
        out.contains("line 3") && out.contains("images/nope.png"),
        "{out}"
    );
    assert!(
        out.contains("line 4") && out.contains("escapes the data root"),
        "{out}"
    );
    assert!(
        out.contains(&path) && out.contains("cannot decode"),
        "{out}"
    );
    assert!(out.contains("4 error(s)"), "{out}");
}

#[test]
fn import_a_folder_tree() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = small_cohort(dir.path());
    // Re-arrange the synthetic images as a folder-per-class tree.
    let tree = dir.path().join("tree");
    for line in std::fs::read_to_string(&manifest).unwrap().lines().skip(1) {
        let mut f = line.split(',');
        let (path, label) = (f.next().unwrap(), f.next().unwrap());
        let name = std::path::Path::new(path).file_name().unwrap();
        std::fs::create_dir_all(tree.join(label)).unwrap();
        std::fs::copy(
            dir.path().join("cohort").join(path),
            tree.join(label).join(name),
        )
        .unwrap();
    }
    let run = crossfold(&["dataset", "import", tree.to_str().unwrap()]);
    run.ok();
    let imported = tree.join("manifest.csv");
    assert_eq!(run.stdout.trim(), imported.to_str().unwrap());
    let json = crossfold(&[
        "dataset",
        "check",
        imported.to_str().unwrap(),
        "--format",
        "json",
    ])
    .ok()
    .json();
    assert_eq!(json["rows"], 25);
    assert_eq!(json["errors"].as_array().unwrap().len(), 0);
    // An existing manifest (perhaps edited by hand) is not overwritten silently.
    let run = crossfold(&["dataset", "import", tree.to_str().unwrap()]);
    run.failed();
    assert!(
        run.stderr.contains("manifest.csv already exists") && run.stderr.contains("--force"),
        "{}",
        run.stderr
    );
    crossfold(&["dataset", "import", tree.to_str().unwrap(), "--force"]).ok();
    // A corrupt image: the manifest is written, the file is named, and the
    // import fails as `dataset check` would.
    let corrupt = std::fs::read_dir(tree.join("benign"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&corrupt, b"not a PNG").unwrap();
    let run = crossfold(&["dataset", "import", tree.to_str().unwrap(), "--force"]);
    run.failed();
    let name = corrupt.file_name().unwrap().to_str().unwrap();
    assert!(
        run.stderr.contains(name) && run.stderr.contains("1 error(s)"),
        "{}",
        run.stderr
    );
    assert!(imported.exists());
    // A stray class folder is refused with its name.
    std::fs::create_dir_all(tree.join("tumor")).unwrap();
    let run = crossfold(&["dataset", "import", tree.to_str().unwrap()]);
    run.failed();
    assert!(run.stderr.contains("\"tumor\""), "{}", run.stderr);
}

#[test]
fn synth_does_not_overwrite_a_data_set_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d");
    let synth = |n: &str, force: bool| {
        let mut args = vec!["dataset", "synth", "--out", out.to_str().unwrap()];
        args.extend([
            "--normal",
            n,
            "--benign",
            "2",
            "--malignant",
            "2",
            "--size",
            "64",
        ]);
        if force {
            args.push("--force");
        }
        crossfold(&args)
    };
    synth("6", false).ok();
    let run = synth("2", false);
    run.failed();
    assert!(
        run.stderr.contains("already holds a data set") && run.stderr.contains("--force"),
        "{}",
        run.stderr
    );
    synth("2", true).ok();
    // Replaced: the smaller cohort's images only, no stale ones.
    let images: usize = ["normal", "benign", "malignant"]
        .iter()
        .map(|l| {
            std::fs::read_dir(out.join("images").join(l))
                .unwrap()
                .count()
        })
        .sum();
    assert_eq!(images, 6);
    let rows = std::fs::read_to_string(out.join("manifest.csv"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(rows, 1 + 6);
    // A file synth did not write (a real radiograph, notes) stops --force
    // before anything is removed.
    let mine = out.join("images").join("normal").join("real.dcm");
    std::fs::write(&mine, b"a radiograph").unwrap();
    let run = synth("3", true);
    run.failed();
    assert!(
        run.stderr
            .contains("1 file(s) synth did not write (images/normal/real.dcm)")
            && run.stderr.contains("nothing was removed"),
        "{}",
        run.stderr
    );
    assert!(mine.exists());
    assert_eq!(
        std::fs::read_to_string(out.join("manifest.csv"))
            .unwrap()
            .lines()
            .count(),
        1 + 6,
        "the earlier data set is kept whole"
    );
}

#[test]
fn synth_rejects_bad_settings_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let run = crossfold(&[
        "dataset",
        "synth",
        "--out",
        dir.path().to_str().unwrap(),
        "--size",
        "8",
    ]);
    run.failed();
    assert!(
        run.stderr.contains("--size 8: must be 32 to 4096 pixels"),
        "{}",
        run.stderr
    );
    // Named by the flag; and an earlier cohort is not touched by --force
    // when the new settings are bad.
    let cohort = small_cohort(dir.path()).parent().unwrap().to_path_buf();
    let images = |d: &std::path::Path| {
        ["normal", "benign", "malignant"]
            .iter()
            .map(|l| std::fs::read_dir(d.join("images").join(l)).map_or(0, |r| r.count()))
            .sum::<usize>()
    };
    let before = images(&cohort);
    assert!(before > 0);
    let out = cohort.to_str().unwrap();
    let run = crossfold(&["dataset", "synth", "--out", out, "--views", "0", "--force"]);
    run.failed();
    assert!(
        run.stderr.contains("--views 0: must be 1 to 4"),
        "{}",
        run.stderr
    );
    assert_eq!(images(&cohort), before);
}
