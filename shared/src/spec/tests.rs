use super::*;

const MINIMAL: &str = "name = \"t\"\n[dataset]\nmanifest = \"m.csv\"\n";

fn parse(text: &str, sets: &[&str]) -> Result<Spec, SpecError> {
    let overrides: Vec<Override> = sets.iter().map(|s| s.parse().unwrap()).collect();
    Spec::parse(text, "t.toml", &overrides)
}

#[test]
fn defaults_reproduce_the_papers_design() {
    let spec = parse(MINIMAL, &[]).unwrap();
    assert_eq!(spec.train.arch, Arch::Resnet34);
    assert_eq!(spec.protocol.kind, ProtocolKind::Paper);
    assert_eq!(spec.protocol.groups, 5);
    assert_eq!(spec.protocol.test_groups, 2);
    assert_eq!(spec.protocol.tasks, vec![Task::Screening, Task::Malignancy]);
    assert_eq!(spec.train.threshold, 0.5);
}

#[test]
fn example_paper_spec_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/paper.toml");
    let spec = Spec::load(&path, &[]).unwrap();
    assert_eq!(spec.protocol.kind, ProtocolKind::Paper);
    assert!(spec.manifest_path().ends_with("manifest.csv"));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/malignancy-scale.toml");
    let scale = Spec::load(&path, &[]).unwrap();
    let cohort = scale.dataset.synthetic.as_ref().unwrap();
    assert_eq!((cohort.benign, cohort.malignant), (400, 900));
    // The same generator settings as the paper's cohort, only more tumours.
    let paper = spec.dataset.synthetic.as_ref().unwrap();
    assert_eq!((cohort.size, cohort.seed), (paper.size, paper.seed));
}

#[test]
fn every_problem_is_collected_with_field_and_value() {
    let text = r#"
name = ""
colour = "red"
[dataset]
manifest = "m.csv"
[protocol]
kind = "bootstrap"
groups = 1
[train]
arch = "resnet35"
lr = -1.0
epochs = "many"
lerning_rate = 0.1
device = "tpu"
"#;
    let err = parse(text, &[]).unwrap_err();
    let fields: Vec<&str> = err.problems().iter().map(|p| p.field.as_str()).collect();
    for f in [
        "colour",
        "protocol.kind",
        "train.arch",
        "train.epochs",
        "train.lerning_rate",
        "train.lr",
        "protocol.groups",
        "train.device",
        "name",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}\n{err}");
    }
    let text = err.to_string();
    assert!(text.contains("\"resnet35\""), "{text}");
    assert!(text.contains("\"bootstrap\""), "{text}");
}

#[test]
fn semantic_problems_are_all_reported() {
    let err = parse(
        MINIMAL,
        &[
            "train.lr=-1",
            "protocol.groups=1",
            "train.device=tpu",
            "name=\"\"",
            "resources.devices_per_job=2",
            "train.batch_size=1",
            "train.cpu.batch_size=1",
        ],
    )
    .unwrap_err();
    let fields: Vec<&str> = err.problems().iter().map(|p| p.field.as_str()).collect();
    for f in [
        "train.lr",
        "protocol.groups",
        "train.device",
        "name",
        "resources.devices_per_job",
        "train.batch_size",
        "train.cpu.batch_size",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    assert!(err.to_string().contains("train.lr = -1"), "{err}");
    assert!(err.to_string().contains("one worker per GPU"), "{err}");
    assert!(
        err.to_string()
            .contains("train.batch_size = 1: must be 2..4096 (batch norm"),
        "{err}"
    );
}

#[test]
fn overrides_are_applied_and_validated_like_the_file() {
    let spec = parse(
        MINIMAL,
        &[
            "train.epochs=2",
            "train.arch=resnet18",
            "protocol.tasks=[\"screening\"]",
        ],
    )
    .unwrap();
    assert_eq!(spec.train.epochs, 2);
    assert_eq!(spec.train.arch, Arch::Resnet18);
    assert_eq!(spec.protocol.tasks, vec![Task::Screening]);

    let err = parse(MINIMAL, &["train.epoch=2"]).unwrap_err();
    assert_eq!(err.problems()[0].field, "train.epoch");
    let err = parse(MINIMAL, &["train.lr=fast"]).unwrap_err();
    assert_eq!(err.problems()[0].field, "train.lr");
    assert!("novalue".parse::<Override>().is_err());
    assert!("=3".parse::<Override>().is_err());
}

#[test]
fn syntax_errors_name_the_source() {
    let err = parse("name = \n", &[]).unwrap_err();
    assert!(matches!(err, SpecError::Syntax { .. }));
    assert!(err.to_string().starts_with("t.toml"), "{err}");
}

#[test]
fn resolved_spec_round_trips_through_toml() {
    let spec = parse(MINIMAL, &["train.pretrained=w.safetensors"]).unwrap();
    let again = parse(&spec.to_toml(), &[]).unwrap();
    assert_eq!(spec, again);
}

#[test]
fn cpu_settings_apply_only_through_for_cpu() {
    let spec = parse(
        MINIMAL,
        &[
            "train.cpu.image_size=64",
            "train.cpu.arch=resnet18",
            "train.cpu.epochs=3",
            "train.cpu.lr=0.02",
        ],
    )
    .unwrap();
    assert_eq!(spec.train.image_size, 224);
    assert_eq!(spec.train.lr, 0.005);
    let cpu = spec.train.for_cpu();
    assert_eq!(
        (cpu.image_size, cpu.arch, cpu.epochs, cpu.lr),
        (64, Arch::Resnet18, 3, 0.02)
    );
    assert_eq!(cpu.batch_size, spec.train.batch_size);
    let err = parse(
        MINIMAL,
        &[
            "train.cpu.image_size=8",
            "train.cpu.depth=3",
            "train.cpu.lr=-1",
        ],
    )
    .unwrap_err();
    let fields: Vec<&str> = err.problems().iter().map(|p| p.field.as_str()).collect();
    assert!(
        fields.contains(&"train.cpu.image_size")
            && fields.contains(&"train.cpu.depth")
            && fields.contains(&"train.cpu.lr"),
        "{fields:?}"
    );
}

#[test]
fn a_set_of_a_train_key_also_wins_over_the_files_cpu_setting() {
    let text = format!(
        "{MINIMAL}[train]\nepochs = 30\nimage_size = 224\n[train.cpu]\nimage_size = 64\nepochs = 30\nlr = 0.02\n"
    );
    let spec = parse(&text, &["train.epochs=1", "train.image_size=48"]).unwrap();
    let cpu = spec.train.for_cpu();
    assert_eq!((spec.train.epochs, spec.train.image_size), (1, 48));
    assert_eq!((cpu.epochs, cpu.image_size), (1, 48));
    // Keys the --set does not name keep the file's CPU value.
    assert_eq!(cpu.lr, 0.02);
    // [train.cpu] keys the file does not set are not added.
    let spec = parse(&text, &["train.batch_size=8"]).unwrap();
    assert_eq!(spec.train.cpu.as_ref().unwrap().batch_size, None);
    assert_eq!(spec.train.for_cpu().batch_size, 8);
    // An explicit --set train.cpu.K still sets the CPU value alone.
    let spec = parse(&text, &["train.cpu.epochs=2"]).unwrap();
    assert_eq!((spec.train.epochs, spec.train.for_cpu().epochs), (30, 2));
    // Beside a --set train.K, in either order: the CPU keeps its own.
    for sets in [
        ["train.cpu.epochs=5", "train.epochs=10"],
        ["train.epochs=10", "train.cpu.epochs=5"],
    ] {
        let spec = parse(&text, &sets).unwrap();
        assert_eq!(
            (spec.train.epochs, spec.train.for_cpu().epochs),
            (10, 5),
            "{sets:?}"
        );
    }
    // The default one-epoch warm-up fits a one-epoch run; one the spec sets does not.
    assert_eq!(
        parse(MINIMAL, &["train.epochs=1"])
            .unwrap()
            .train
            .warmup_epochs,
        0
    );
    assert_eq!(
        parse(MINIMAL, &["train.epochs=2"])
            .unwrap()
            .train
            .warmup_epochs,
        1
    );
    assert!(parse(MINIMAL, &["train.epochs=1", "train.warmup_epochs=1"]).is_err());
    // A warm-up the file sets is kept, and the error says how to lower it.
    let with_warmup = format!("{MINIMAL}[train]\nwarmup_epochs = 1\n");
    let err = parse(&with_warmup, &["train.epochs=1"]).unwrap_err();
    assert!(
        err.to_string().contains(
            "train.warmup_epochs = 1: must be fewer than train.epochs (1) \
             (train.epochs given by --set; add --set train.warmup_epochs=0)"
        ),
        "{err}"
    );
    // With a bad train.epochs only that is reported: a warm-up problem
    // measured against it would point the wrong way.
    let err = parse(&with_warmup, &["train.epochs=0"]).unwrap_err();
    let fields: Vec<&str> = err.problems().iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["train.epochs"], "{err}");
    // Bad values are still reported once, under the key that was set, and
    // said to come from the command line.
    let err = parse(&text, &["train.epochs=0"]).unwrap_err();
    let fields: Vec<&str> = err.problems().iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["train.epochs"],
        "not also train.cpu.epochs, which followed it"
    );
    assert!(
        err.to_string()
            .contains("train.epochs = 0: must be 1..10000 (given by --set)"),
        "{err}"
    );
    let err = parse(&text, &["train.epochs=\"abc\""]).unwrap_err();
    let fields: Vec<&str> = err.problems().iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["train.epochs"], "{err}");
    // Text that reads as a number: how to quote it.
    let err = parse(&text, &["name=2021"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("(given by --set; quote text: --set 'name=\"...\"')"),
        "{err}"
    );
}

#[test]
fn type_errors_are_in_words_not_rust_types() {
    let err = parse(MINIMAL, &["train.epochs=\"abc\""])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected a whole number from 0 to 4294967295"),
        "{err}"
    );
    // Too large for the field: the same words, with the range.
    let err = parse(MINIMAL, &["train.epochs=5000000000"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected a whole number from 0 to 4294967295"),
        "{err}"
    );
    let err = parse(MINIMAL, &["train.lr=\"fast\""])
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected a number"), "{err}");
    let err = parse(MINIMAL, &["protocol.tasks=\"screening\""])
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected a list in brackets"), "{err}");
    let err = parse(MINIMAL, &["train=3"]).unwrap_err().to_string();
    assert!(err.contains("expected a table of settings"), "{err}");
    assert!(!err.contains("struct"), "{err}");
}

#[test]
fn one_cause_one_message() {
    // protocol.groups out of range does not drag test_groups' bound along.
    let err = parse(MINIMAL, &["protocol.groups=1"]).unwrap_err();
    let fields: Vec<&str> = err.problems().iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["protocol.groups"], "{err}");
    // A spec that is not UTF-8 names its line.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        b"name = \"t\"\n[dataset]\nmanifest = \"m\xe9.csv\"\n",
    )
    .unwrap();
    let err = Spec::load(&path, &[]).unwrap_err();
    assert!(matches!(err, SpecError::NotUtf8 { line: 3, .. }), "{err}");
    assert!(err.to_string().contains("line 3: not UTF-8"), "{err}");
}

#[test]
fn devices_parse() {
    assert_eq!("cuda:1".parse::<Device>(), Ok(Device::Cuda(Some(1))));
    assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(None)));
    assert!("cuda:x".parse::<Device>().is_err());
}

#[test]
fn stored_specs_keep_parsing_after_a_rule_is_tightened() {
    let text = format!("{MINIMAL}\n[resources]\ndevices_per_job = 2\n");
    let err = Spec::parse(&text, "spec", &[]).unwrap_err();
    assert_eq!(err.problems()[0].field, "resources.devices_per_job");
    let stored = Spec::parse_stored(&text, "stored spec").unwrap();
    assert_eq!(stored.resources.devices_per_job, 2);
    // Other rules still hold for stored specs.
    let bad = format!("{MINIMAL}\n[retry]\nmax_attempts = 0\n");
    let err = Spec::parse_stored(&bad, "stored spec").unwrap_err();
    let fields: Vec<&str> = err.problems().iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["retry.max_attempts"]);
}

#[test]
fn rounds_are_counted_per_protocol_and_capped() {
    let count = |sets: &[&str]| round_count(&parse(MINIMAL, sets).unwrap().protocol);
    // The paper: 5 screening folds + C(5,2) = 10 malignancy rounds.
    assert_eq!(count(&[]), 15);
    assert_eq!(
        count(&["protocol.kind=\"kfold\"", "protocol.repeats=3"]),
        30
    );
    assert_eq!(
        count(&[
            "protocol.kind=\"leave-p-groups-out\"",
            "protocol.groups=6",
            "protocol.test_groups=3",
            "protocol.tasks=[\"screening\"]",
        ]),
        20
    );
    // C(24,12) = 2,704,156 rounds are refused before any plan is made.
    let err = parse(
        MINIMAL,
        &[
            "protocol.kind=\"leave-p-groups-out\"",
            "protocol.groups=24",
            "protocol.test_groups=12",
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(
            "protocol = 5408312 rounds: protocol.groups = 24, protocol.test_groups = 12, 1 repeat(s) \
             and 2 task(s) would plan 5408312 rounds; at most 10000"
        ),
        "{err}"
    );
    // An experiment stored before the limit existed still loads.
    let stored = "name = \"t\"\n[dataset]\nmanifest = \"m.csv\"\n[protocol]\n\
                  kind = \"leave-p-groups-out\"\ngroups = 24\ntest_groups = 12\n";
    assert!(Spec::parse_stored(stored, "stored").is_ok());
    assert!(Spec::parse(stored, "new", &[]).is_err());
    // Huge values saturate instead of overflowing.
    let p = ProtocolSpec {
        kind: ProtocolKind::LeavePGroupsOut,
        groups: usize::MAX,
        test_groups: usize::MAX / 2,
        ..ProtocolSpec::default()
    };
    assert_eq!(round_count(&p), u128::MAX);
}

#[test]
fn combinations_that_every_job_would_fail_on_are_refused_up_front() {
    let fields = |sets: &[&str]| -> Vec<String> {
        match parse(MINIMAL, sets) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
        }
    };
    let fp16 = fields(&["train.precision=\"fp16\"", "train.fused_optimizer=\"off\""]);
    assert!(
        fp16.iter()
            .any(|p| p.starts_with("train.fused_optimizer = off: train.precision = \"fp16\" needs")),
        "{fp16:?}"
    );
    assert!(fields(&["train.precision=\"fp16\""]).is_empty());
    let graph = fields(&["train.cuda_graph=\"on\"", "train.fused_optimizer=\"off\""]);
    assert!(
        graph
            .iter()
            .any(|p| p.starts_with("train.cuda_graph = on: a CUDA graph needs the fused")),
        "{graph:?}"
    );
    assert!(fields(&["train.cuda_graph=\"on\""]).is_empty());
    // `auto` with the fused optimiser off trains without graphs.
    assert!(fields(&["train.cuda_graph=\"auto\"", "train.fused_optimizer=\"off\""]).is_empty());

    let weights = [
        "train.pretrained=\"w.safetensors\"",
        "train.cpu.arch=\"resnet18\"",
    ];
    let mixed = fields(&weights);
    assert!(
        mixed
            .iter()
            .any(|p| p.starts_with("train.cpu.arch = resnet18: differs from train.arch (resnet34)")),
        "{mixed:?}"
    );
    // On GPUs only, the CPU settings never apply; the same architecture is fine.
    assert!(fields(&[weights[0], weights[1], "train.device=\"cuda\""]).is_empty());
    assert!(fields(&[weights[0], "train.cpu.arch=\"resnet34\""]).is_empty());

    let huge = fields(&[
        "dataset.synthetic.normal=9223372036854775807",
        "dataset.synthetic.benign=9223372036854775807",
    ]);
    assert!(
        huge.iter()
            .any(|p| p.starts_with("dataset.synthetic = 1844674407370955")
                && p.ends_with("images (normal + benign + malignant): at most 1000000 images")),
        "{huge:?}"
    );
}

#[test]
fn paths_given_by_set_are_from_the_current_folder_and_name_the_data_to_use() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exp.toml");
    std::fs::write(
        &file,
        "name = \"t\"\n[dataset]\nmanifest = \"data/manifest.csv\"\n\
         [dataset.synthetic]\nnormal = 4\nbenign = 2\nmalignant = 2\n",
    )
    .unwrap();
    let here = std::env::current_dir().unwrap();
    let sets: Vec<Override> = [
        "dataset.manifest=\"real/manifest.csv\"",
        "train.pretrained=\"w.ot\"",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let spec = Spec::load(&file, &sets).unwrap();
    assert_eq!(spec.manifest_path(), here.join("real/manifest.csv"));
    // Weights stay with the file (and must exist there, checked at submit).
    assert_eq!(spec.pretrained_path(), Some(dir.path().join("w.ot")));
    // Not replaced by a generated cohort when missing.
    assert!(spec.dataset.synthetic.is_none());
    // From the file: against the file's folder, the cohort kept.
    let spec = Spec::load(&file, &[]).unwrap();
    assert_eq!(spec.manifest_path(), dir.path().join("data/manifest.csv"));
    assert!(spec.dataset.synthetic.is_some());
    // A cohort asked for on the command line too is kept.
    let both: Vec<Override> = [
        "dataset.manifest=\"gen/manifest.csv\"",
        "dataset.synthetic.seed=7",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    assert_eq!(
        Spec::load(&file, &both)
            .unwrap()
            .dataset
            .synthetic
            .unwrap()
            .seed,
        7
    );
}

#[test]
fn the_16_bit_scale_is_set_by_name_and_a_wrong_one_is_named() {
    use crate::imaging::Gray16Scale;
    assert_eq!(parse(MINIMAL, &[]).unwrap().train.gray16, Gray16Scale::Auto);
    for (set, want) in [
        ("train.gray16=16bit", Gray16Scale::Bits16),
        ("train.gray16=\"12bit\"", Gray16Scale::Bits12),
    ] {
        let spec = parse(MINIMAL, &[set]).unwrap();
        assert_eq!(spec.train.gray16, want);
        assert_eq!(spec.train.reading().gray16, want);
    }
    let err = parse(MINIMAL, &["train.gray16=14bit"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("gray16") && err.contains("14bit"), "{err}");
    // Stored with the spec when set, so a worker reads as the spec says;
    // left out at `auto`, so specs stored before it keep their text and hash.
    let set = parse(MINIMAL, &["train.gray16=16bit"]).unwrap();
    let stored = Spec::parse_stored(&set.to_toml(), "stored").unwrap();
    assert_eq!(stored.train.gray16, Gray16Scale::Bits16);
    assert!(!parse(MINIMAL, &[]).unwrap().to_toml().contains("gray16"));
}

#[test]
fn keys_nested_past_any_spec_are_refused_before_they_are_built() {
    // As an override: named, cut short.
    let deep = format!("{}=1", vec!["a"; 100_000].join("."));
    let err = deep.parse::<Override>().unwrap_err().to_string();
    assert!(
        err.starts_with("--set: key \"a.a.a") && err.contains("nested 100000 levels deep"),
        "{}",
        &err[..err.len().min(300)]
    );
    assert!(err.len() < 400, "the message holds the key cut short");
    // In the spec's text, as a dotted key or a table header.
    for text in [
        format!("name = \"t\"\n{} = 1\n", vec!["a"; 50_000].join(".")),
        format!("name = \"t\"\n[{}]\n", vec!["a"; 50_000].join(".")),
    ] {
        let err = Spec::parse(&text, "spec.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("spec.toml: the key on line 2 is nested 50000 levels deep"),
            "{}",
            &err[..err.len().min(300)]
        );
    }
    // Inline tables within inline tables, which no line shows, and the
    // same as an override's value.
    let inline = format!(
        "name = \"t\"\nx = {}1{}\n",
        "{ a = ".repeat(40),
        " }".repeat(40)
    );
    let err = Spec::parse(&inline, "spec.toml", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("a value is nested 41 levels deep"), "{err}");
    let value: Override = format!("x={}1{}", "{ a = ".repeat(40), " }".repeat(40))
        .parse()
        .unwrap();
    let err = Spec::parse("name = \"t\"\n", "spec.toml", &[value])
        .unwrap_err()
        .to_string();
    assert!(err.contains("levels deep"), "{err}");
    // Prose with many dots in a multi-line string is not a key.
    let prose = format!(
        "name = \"t\"\nnotes = \"\"\"\n{}\n\"\"\"\n[dataset]\nmanifest = \"m.csv\"\n",
        "Wait... then... more... and... more... and... so... on... ok... fine... done... yes."
    );
    let err = Spec::parse(&prose, "spec.toml", &[])
        .map(|_| ())
        .unwrap_err();
    assert!(!err.to_string().contains("levels deep"), "{err}");
}
