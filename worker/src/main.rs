//! `crossfold-worker`: trains models on a GPU node (or a CPU).

use anyhow::Result;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use crossfold_shared::experiment::{prepare_task, PreparedTask};
use crossfold_shared::label::Task;
use crossfold_shared::spec::{Override, Spec};
use crossfold_worker::device;
use crossfold_worker::job::{predict_each, run_job, JobOptions, PREDICT_CHUNK};
use crossfold_worker::train::{Control, Progress};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "crossfold-worker",
    version,
    about = "crossfold worker: trains ResNets through libtorch",
    long_about = "crossfold worker: trains ResNets through libtorch.\n\nWith --coordinator (or CROSSFOLD_COORDINATOR) and no command, it serves the coordinator: registers, leases jobs, trains them and reports, until SIGTERM/SIGINT (the running job's lease is released)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Coordinator URL, e.g. http://127.0.0.1:50051.
    #[arg(long, env = "CROSSFOLD_COORDINATOR")]
    coordinator: Option<String>,
    /// Worker name, unique among the coordinator's workers (default: host-pid);
    /// while a worker process under a name is alive, the coordinator refuses
    /// another one and that one waits.
    #[arg(long)]
    name: Option<String>,
    /// Device: auto (first GPU, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// CPU threads for libtorch (default: all cores).
    #[arg(long)]
    threads: Option<i32>,
    /// Cache for data sets fetched from the coordinator.
    #[arg(long, default_value = ".crossfold-cache")]
    cache: PathBuf,
    /// Keep the data sets fetched into --cache under this many GiB, checked
    /// before each fetch: whole data sets are removed, the least recently
    /// used first (never one used within the last hour; the set fetched
    /// then adds to the bound). No limit without it.
    #[arg(long, env = "CROSSFOLD_CACHE_MAX_GIB", value_name = "GIB")]
    cache_max_gib: Option<f64>,
    /// Exit after this many jobs.
    #[arg(long)]
    max_jobs: Option<usize>,
    /// Fetch data-set files from the coordinator (by content hash) even when
    /// the coordinator's manifest path is visible on this machine.
    #[arg(long)]
    fetch_data: bool,
    /// Keep every job's outputs (checkpoint and model card, predictions.csv,
    /// history.csv, metrics.json, result.json) under
    /// DIR/<experiment id>/<task>-round<N>-attempt<A>/; without it only the
    /// results sent to the coordinator remain.
    #[arg(long, value_name = "DIR")]
    outputs: Option<PathBuf>,
    /// Jobs to run at once on this worker's device, to pack small jobs on a
    /// big GPU (on a CPU they share the cores): 1 to 64.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    slots_per_gpu: u32,
    /// Memory (MiB) for the images decoded by one job to be kept for the
    /// next jobs on the same data set at the same size, which then decode
    /// none (the paper's 520 images at 224 px take 25 MiB); 0 keeps none.
    #[arg(long, default_value_t = 2048, value_name = "MIB")]
    image_cache_mib: usize,
    /// CA certificate that signed the coordinator's (PEM); needed for https://.
    #[arg(long, env = "CROSSFOLD_CA")]
    ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (PEM; with --key).
    #[arg(long, env = "CROSSFOLD_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key of --cert (PEM).
    #[arg(long, env = "CROSSFOLD_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// File holding the worker token (else the CROSSFOLD_TOKEN environment
    /// variable; never on the command line, where other users can read it).
    #[arg(long, env = "CROSSFOLD_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Log format on standard error: auto (JSON when not a terminal), json or text. `RUST_LOG` sets the level.
    #[arg(
        long,
        global = true,
        default_value = "auto",
        env = "CROSSFOLD_LOG_FORMAT"
    )]
    log_format: crossfold_shared::logging::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// List the compute devices this worker can use.
    Devices {
        /// Run a small matrix product on every device and compare it with the CPU.
        #[arg(long)]
        check: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Train one round locally (no coordinator) and write its outputs.
    Train {
        #[arg(long)]
        spec: PathBuf,
        /// Spec overrides, e.g. --set train.epochs=5 (validated like the file).
        #[arg(long = "set")]
        sets: Vec<String>,
        #[arg(long)]
        task: Task,
        #[arg(long)]
        round: u32,
        #[arg(long)]
        out: PathBuf,
        /// Replace the outputs of an earlier run in --out (checkpoint,
        /// predictions); without it such a folder is refused.
        #[arg(long)]
        force: bool,
        /// CPU threads for libtorch (default: all cores).
        #[arg(long)]
        threads: Option<i32>,
    },
    /// Measure training throughput (images/s) of crossfold's training loop;
    /// prints one JSON line (see bench/README.md).
    Bench {
        #[arg(long, default_value = "resnet34")]
        arch: String,
        #[arg(long, default_value_t = 64)]
        size: u32,
        #[arg(long, default_value_t = 32)]
        batch: u32,
        #[arg(long, default_value_t = 20)]
        steps: u32,
        #[arg(long)]
        threads: Option<i32>,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// auto (bf16 autocast + TF32 on CUDA 8.0+, fp16 + loss scaling on 7.x, fp32 on CPU), fp32, tf32, bf16 or fp16.
        #[arg(long, default_value = "auto")]
        precision: String,
        /// auto (on for CUDA, and on the CPU from 128 px), on or off.
        #[arg(long, default_value = "auto")]
        channels_last: String,
        /// Fused multi-tensor optimiser step: auto (on), on or off.
        #[arg(long, default_value = "auto")]
        fused_optimizer: String,
        /// cuDNN autotuning: auto, on or off.
        #[arg(long, default_value = "auto")]
        cudnn_benchmark: String,
        /// Replay the training step from a CUDA graph: auto (on for CUDA), on or off.
        #[arg(long, default_value = "off")]
        cuda_graph: String,
        /// adamw (the PyTorch reference's step) or sgd (a job's default).
        #[arg(long, default_value = "adamw")]
        optimizer: String,
    },
    /// Score images with a trained checkpoint (JPEG, PNG or DICOM).
    Predict {
        /// model.safetensors written by `train` (it carries its model card; older
        /// checkpoints need their model.json beside them).
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Device: auto (first GPU, else CPU), cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: String,
        /// CPU threads for libtorch (default: all cores).
        #[arg(long)]
        threads: Option<i32>,
    },
}

/// A serving option typed before a command, which the command would
/// silently ignore (`crossfold-worker --device cpu predict ...` scoring on
/// the GPU): said, with where the command takes it if it does.
/// Every top-level option but the global ones is a serving option.
fn misplaced_option(matches: &ArgMatches) -> Option<String> {
    let command = matches.subcommand_name()?;
    let cli = Cli::command();
    let arg = cli.get_arguments().find(|a| {
        !a.is_global_set()
            && matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine)
    })?;
    let flag = format!("--{}", arg.get_long().unwrap_or(arg.get_id().as_str()));
    // Whether the command defines the option too (not whether it was given).
    let own = cli
        .find_subcommand(command)
        .is_some_and(|c| c.get_arguments().any(|a| a.get_id() == arg.get_id()));
    Some(if own {
        format!("{flag} before the command is an option of serving a coordinator; give it after the command: crossfold-worker {command} {flag} ...")
    } else {
        format!("{flag} is an option of serving a coordinator; `crossfold-worker {command}` does not take it")
    })
}

fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some(problem) = misplaced_option(&matches) {
        eprintln!("error: {problem}");
        return std::process::ExitCode::from(2);
    }
    if cli.command.is_some() {
        // train, predict, devices, bench: print and exit.
        crossfold_shared::logging::exit_quietly_on_closed_stdout();
    }
    crossfold_shared::logging::init(cli.log_format, "info");
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: {}",
                crossfold_shared::logging::error_chain(e.as_ref())
            );
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let Some(command) = cli.command else {
        let Some(url) = cli.coordinator.clone() else {
            anyhow::bail!("give --coordinator URL (or CROSSFOLD_COORDINATOR) to serve a coordinator, or a command (see --help)");
        };
        return serve(cli, url);
    };
    match command {
        Command::Devices { check, json } => devices(check, json),
        Command::Train {
            spec,
            sets,
            task,
            round,
            out,
            force,
            threads,
        } => train_one(spec, sets, task, round, out, force, threads),
        Command::Bench {
            arch,
            size,
            batch,
            steps,
            threads,
            device: asked,
            precision,
            channels_last,
            fused_optimizer,
            cudnn_benchmark,
            cuda_graph,
            optimizer,
        } => {
            set_threads(threads)?;
            let arch: crossfold_shared::spec::Arch =
                serde_json::from_value(serde_json::Value::String(arch.clone())).map_err(|_| {
                    anyhow::anyhow!("--arch {arch:?}: expected resnet18, resnet34 or resnet50")
                })?;
            anyhow::ensure!(
                (32..=1024).contains(&size),
                "--size {size}: must be 32..1024"
            );
            anyhow::ensure!(
                batch >= 2 && steps >= 1,
                "--batch must be >= 2 and --steps >= 1"
            );
            let d = device::choose_as(
                "--device",
                asked
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--device {asked:?}: {e}"))?,
            )?;
            let precision = serde_json::from_value(serde_json::Value::String(precision.clone()))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "--precision {precision:?}: expected auto, fp32, tf32, bf16 or fp16"
                    )
                })?;
            let toggle = |flag: &str, v: &str| {
                serde_json::from_value(serde_json::Value::String(v.to_string()))
                    .map_err(|_| anyhow::anyhow!("--{flag} {v:?}: expected auto, on or off"))
            };
            let r = crossfold_worker::bench::run(
                crossfold_worker::bench::Settings {
                    arch,
                    size,
                    batch,
                    steps,
                    precision,
                    channels_last: toggle("channels-last", &channels_last)?,
                    fused_optimizer: toggle("fused-optimizer", &fused_optimizer)?,
                    cudnn_benchmark: toggle("cudnn-benchmark", &cudnn_benchmark)?,
                    cuda_graph: toggle("cuda-graph", &cuda_graph)?,
                    optimizer: match optimizer.as_str() {
                        "adamw" => crossfold_shared::spec::Optimizer::Adamw,
                        "sgd" => crossfold_shared::spec::Optimizer::Sgd,
                        other => anyhow::bail!("--optimizer {other:?}: expected adamw or sgd"),
                    },
                },
                d,
            )?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Command::Predict {
            checkpoint,
            images,
            device: asked,
            threads,
        } => {
            set_threads(threads)?;
            let d = device::choose_as(
                "--device",
                asked
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--device {asked:?}: {e}"))?,
            )?;
            // predicted: at the spec's threshold; predicted_youden: at the
            // one chosen on the validation set (blank when there was none).
            // An image that cannot be read is named on stderr, and the
            // others are scored all the same. Each chunk's scores are
            // printed once scored: a failure later keeps them.
            let mut unread = 0;
            let mut printed = 0;
            let done = predict_each(&checkpoint, &images, d, PREDICT_CHUNK, &mut |card, i, s| {
                // With the first score: a checkpoint that cannot be loaded
                // prints no table at all.
                if i == 0 {
                    println!("image,score,predicted,predicted_youden");
                }
                let (neg, pos) = card.task.class_names();
                let class = |s: f64, t: f64| if s >= t { pos } else { neg };
                match s {
                    // Every digit: rounded scores would tie, and ties
                    // change an AUC computed from them.
                    Ok(s) => println!(
                        "{},{s},{},{}",
                        crossfold_worker::outputs::quote(&images[i].to_string_lossy()),
                        class(s, card.threshold),
                        card.youden_threshold.map_or("", |t| class(s, t))
                    ),
                    Err(e) => {
                        eprintln!("error: {e}");
                        unread += 1;
                    }
                }
                printed = i + 1;
            });
            if let Err(e) = done {
                if printed == 0 {
                    return Err(e.into());
                }
                anyhow::bail!(
                    "{e}; the first {printed} of {} image(s) were handled (printed above), the rest not",
                    images.len()
                );
            }
            anyhow::ensure!(
                unread == 0,
                "{unread} of {} image(s) could not be read (named above){}",
                images.len(),
                if unread < images.len() {
                    "; the others are scored"
                } else {
                    ""
                }
            );
            Ok(())
        }
    }
}

fn train_one(
    spec_path: PathBuf,
    sets: Vec<String>,
    task: Task,
    round: u32,
    out: PathBuf,
    force: bool,
    threads: Option<i32>,
) -> Result<()> {
    let started = std::time::Instant::now();
    // An --out that cannot take the outputs is found before the training,
    // and so is one holding an earlier run's checkpoint.
    writable_dir("--out", &out)?;
    // Held to the end: two runs into one --out would mix their files.
    let _held = crossfold_worker::outputs::lock(&out)?;
    if !force {
        let earlier: Vec<&str> = ["model.safetensors", "predictions.csv", "result.json"]
            .into_iter()
            .filter(|f| out.join(f).exists())
            .collect();
        anyhow::ensure!(
            earlier.is_empty(),
            "--out {}: holds an earlier run's {}; add --force to replace them, or give another --out",
            out.display(),
            earlier.join(", ")
        );
    }
    let overrides: Vec<Override> = sets.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    let spec = Spec::load(&spec_path, &overrides)?;
    // Before any image is decoded: a task or round the spec does not plan.
    anyhow::ensure!(
        spec.protocol.tasks.contains(&task),
        "--task {task}: not in the spec's protocol.tasks ({})",
        spec.protocol
            .tasks
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rounds = crossfold_shared::spec::round_count(&crossfold_shared::spec::ProtocolSpec {
        tasks: vec![task],
        ..spec.protocol.clone()
    });
    anyhow::ensure!(
        round >= 1 && u128::from(round) <= rounds,
        "--round {round}: the spec plans {task} rounds 1 to {rounds}"
    );
    set_threads(threads)?;
    let d = device::choose(spec.device())?;
    // The data set's check decodes every image: it keeps them at the job's
    // size, so the job does not decode them again.
    let t = crossfold_worker::job::settings_on(&spec, d);
    // Pretrained weights that are missing or do not fit the network are
    // found before that.
    if let Some(path) = spec.pretrained_path() {
        crossfold_worker::weights::check_pretrained(t.arch, &path)?;
    }
    let PreparedTask {
        prepared,
        note,
        squares,
    } = prepare_task(&spec, task, Some(t.reading()))?;
    if let Some(note) = note {
        tracing::warn!("{note}");
    }
    crossfold_worker::job::find_round(&prepared.plan, task, round)?;
    tracing::info!(task = %task, round, device = ?d, plan = %prepared.plan.plan_sha256, "training one round");
    let tty = std::io::stderr().is_terminal();
    let mut on_progress = |p: &Progress| {
        if tty {
            eprint!(
                "\repoch {}/{} step {}/{}  loss {}  val AUC {}  {:.1} img/s  ETA {:.0} s   ",
                p.epoch,
                p.epochs,
                p.step,
                p.steps_per_epoch,
                p.train_loss
                    .map(|v| format!("{v:.4}"))
                    .unwrap_or_else(|| "-".into()),
                p.validation_auc
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or_else(|| "-".into()),
                p.images_per_second,
                p.eta_seconds
            );
        } else if p.epoch_done {
            eprintln!(
                "epoch {}/{} loss {:.4} val AUC {} {:.1} img/s",
                p.epoch,
                p.epochs,
                p.train_loss.unwrap_or(f64::NAN),
                p.validation_auc
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or_else(|| "-".into()),
                p.images_per_second
            );
        }
        Control::Continue
    };
    let options = JobOptions {
        device: d,
        decode_threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        out: Some(&out),
        cancel: None,
        squares: squares.as_ref(),
        image_cache: None,
        started: Some(started),
        prepared: None,
    };
    let result =
        run_job(&spec, &prepared, task, round, &options, &mut on_progress).map_err(|e| {
            // Name the round once: training errors already start with it.
            let at = format!("task {task}, round {round}");
            if e.to_string().starts_with(&at) {
                anyhow::Error::new(e)
            } else {
                anyhow::Error::new(e).context(at)
            }
        })?;
    if tty {
        eprintln!();
    }
    let s = &result.stats;
    println!(
        "{task} round {round}: {} test images, AUC {} (95% CI {}-{}), accuracy {}, best epoch {}, {:.1} img/s, {:.1} s",
        result.n_test,
        fmt(s.auc, 3),
        fmt(s.auc_ci_low, 3),
        fmt(s.auc_ci_high, 3),
        fmt(s.accuracy, 3),
        result.best_epoch,
        result.images_per_second,
        result.timing.total
    );
    println!("wrote {}/{{predictions.csv,history.csv,metrics.json,result.json,model.safetensors,model.json}}", out.display());
    Ok(())
}

fn fmt(v: Option<f64>, d: usize) -> String {
    v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "-".into())
}

fn devices(check: bool, json: bool) -> Result<()> {
    let inv = device::inventory();
    let mut targets = vec![tch::Device::Cpu];
    targets.extend((0..inv.cuda_devices).map(tch::Device::Cuda));
    let mut checks = Vec::new();
    if check {
        for d in &targets {
            checks.push((
                format!("{d:?}"),
                device::self_test(*d).map_err(|e| e.to_string()),
            ));
        }
    }
    if json {
        let checks: Vec<_> = checks
            .iter()
            .map(|(d, r)| match r {
                Ok(err) => {
                    serde_json::json!({"device": d, "ok": *err < 1e-4, "relative_error": err})
                }
                Err(e) => serde_json::json!({"device": d, "ok": false, "error": e}),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"inventory": inv, "checks": checks}))?
        );
    } else {
        match &inv.cuda_backend {
            device::CudaBackend::Loaded { path } => println!("cuda backend: loaded ({path})"),
            device::CudaBackend::Unavailable { reason } => {
                println!("cuda backend: unavailable ({reason})")
            }
        }
        println!("cuda devices: {}", inv.cuda_devices);
        for g in &inv.gpus {
            println!(
                "  cuda:{}: {} (compute capability {}; precision auto = {})",
                g.index,
                g.name.as_deref().unwrap_or("unknown name"),
                g.compute_capability.as_deref().unwrap_or("unknown"),
                g.auto_precision
            );
        }
        println!("cudnn: {}", inv.cudnn);
        println!("cuda graphs: {}", inv.cuda_graphs);
        println!("cpu threads: {}", inv.cpu_threads);
        for (d, r) in &checks {
            match r {
                Ok(err) if *err < 1e-4 => println!("check {d}: ok (relative error {err:.1e})"),
                Ok(err) => println!("check {d}: WRONG (relative error {err:.1e})"),
                Err(e) => println!("check {d}: failed: {e}"),
            }
        }
    }
    if checks.iter().any(|(_, r)| !matches!(r, Ok(e) if *e < 1e-4)) {
        anyhow::bail!("a device check failed");
    }
    Ok(())
}

/// Create `dir` if needed and prove a file can be written in it.
fn writable_dir(flag: &str, dir: &std::path::Path) -> Result<()> {
    crossfold_shared::folder::create(dir).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    let probe = dir.join(format!(".crossfold-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| {
        anyhow::anyhow!("{flag} {}: cannot write in the folder: {e}", dir.display())
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// `--threads N`: libtorch's CPU threads, N >= 1.
fn set_threads(threads: Option<i32>) -> Result<()> {
    if let Some(n) = threads {
        anyhow::ensure!(n >= 1, "--threads {n}: must be at least 1");
        tch::set_num_threads(n);
    }
    Ok(())
}

fn serve(cli: Cli, url: String) -> Result<()> {
    set_threads(cli.threads)?;
    let asked = cli
        .device
        .parse()
        .map_err(|e| anyhow::anyhow!("--device {:?}: {e}", cli.device))?;
    let d = device::choose_as("--device", asked)?;
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    let name = cli
        .name
        .unwrap_or_else(|| format!("{host}-{}", std::process::id()));
    let security = crossfold_proto::client::ClientSecurity::from_files_or_env(
        cli.ca.as_deref(),
        cli.cert.as_deref(),
        cli.key.as_deref(),
        cli.token_file.as_deref(),
    )?;
    // Fail now on a bad URL or TLS setting rather than retrying forever.
    security.endpoint(&url)?;
    // And on folders the worker cannot write, before it takes (and fails) jobs.
    writable_dir("--cache", &cli.cache)?;
    let cache_limit = match cli.cache_max_gib {
        None => None,
        Some(g) if g.is_finite() && g > 0.0 => Some((g * (1u64 << 30) as f64) as u64),
        Some(g) => anyhow::bail!("--cache-max-gib {g}: must be a number of GiB above 0"),
    };
    if let Some(dir) = &cli.outputs {
        writable_dir("--outputs", dir)?;
    }
    let metrics = std::sync::Arc::new(crossfold_worker::metrics::WorkerMetrics::new());
    let metrics_listen = cli.metrics_listen.clone();
    let cfg = crossfold_worker::runtime::WorkerConfig {
        security,
        metrics: metrics.clone(),
        coordinator: url,
        name,
        instance: uuid::Uuid::new_v4().to_string(),
        device: d,
        cache_dir: cli.cache,
        cache_limit,
        lease_wait: std::time::Duration::from_secs(10),
        max_jobs: cli.max_jobs,
        always_fetch: cli.fetch_data,
        outputs: cli.outputs,
        slots: cli.slots_per_gpu,
        image_cache: std::sync::Arc::new(crossfold_worker::data::DecodedCache::new(
            cli.image_cache_mib.saturating_mul(1 << 20),
        )),
        hashes: std::sync::Arc::new(crossfold_shared::hash::HashCache::new()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        if let Some(addr) = metrics_listen {
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|e| anyhow::anyhow!("--metrics-listen {addr}: cannot bind: {e}"))?;
            tracing::info!(metrics = %listener.local_addr()?, "serving metrics at /metrics");
            tokio::spawn(crossfold_proto::metrics_http::serve(
                listener,
                move || {
                    let m = metrics.clone();
                    async move { m.encode() }
                },
                std::future::pending(),
            ));
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutting down: stopping the running job and releasing its lease (a second signal exits at once)");
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            // A second signal, more than 2 s on (one signal delivered twice,
            // to a process group and by a parent, is one): someone who will
            // not wait. The lease then expires at the coordinator instead of
            // being released.
            let first = std::time::Instant::now();
            let status = loop {
                let status = tokio::select! {
                    _ = term.recv() => 128 + 15,
                    _ = tokio::signal::ctrl_c() => 128 + 2,
                };
                if first.elapsed() >= std::time::Duration::from_secs(2) {
                    break status;
                }
            };
            tracing::warn!("second signal: exiting now, the lease unreleased");
            // Without running libtorch's exit handlers under a training
            // thread that may be inside it.
            // SAFETY: _exit(2) ends the process at once; nothing after it runs.
            unsafe { libc::_exit(status) }
        });
        crossfold_worker::runtime::run(cfg, stop).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
