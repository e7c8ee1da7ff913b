//! `crossfold run SPEC`: the whole experiment on this machine: an embedded
//! coordinator, one local worker process per GPU (one CPU worker without a
//! GPU), progress while it runs, and the results in `--out`.

use super::remote::{answer, client_with, fetch_results, follow, submit_spec, Show};
use super::{load_spec, summary};
use anyhow::{bail, Context, Result};
use clap::Args;
use crossfold_coordinator::config::Config;
use crossfold_coordinator::error::CoordinatorError;
use crossfold_coordinator::server::OpenedDatabase;
use crossfold_proto::client::ClientSecurity;
use crossfold_shared::experiment::prepare;
use crossfold_shared::manifest::manifest_root;
use crossfold_shared::spec::Device;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct RunArgs {
    pub spec: PathBuf,
    /// Spec overrides, e.g. --set train.epochs=5 (validated like the file).
    #[arg(long = "set")]
    pub sets: Vec<String>,
    /// Local worker processes (default: one per GPU, or one on the CPU).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Where the report files, the coordinator's database and logs go.
    #[arg(long, default_value = "out/run")]
    pub out: PathBuf,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
    /// Jobs each worker runs at once on its GPU (small jobs on a big GPU): 1 to 64.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub slots_per_gpu: u32,
}

/// How long `crossfold-worker devices` may take to answer (loading
/// libtorch and the CUDA driver).
const DEVICES_LIMIT: Duration = Duration::from_secs(120);

/// The CUDA devices the worker sees, asked of the worker binary itself:
/// libtorch's count, which honours `CUDA_VISIBLE_DEVICES` (nvidia-smi does
/// not). A worker that cannot start at all (libtorch not found) is named
/// here, before anything is submitted.
///
/// For a spec that trains on the CPU, the GPUs are hidden from it: only
/// whether the worker starts is asked, and no GPU driver is woken.
fn worker_cuda_devices(bin: &std::path::Path, device: Device) -> Result<usize> {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["devices", "--json"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // As the workers will run: without a remote coordinator's settings.
    for var in REMOTE_ONLY_ENV {
        cmd.env_remove(var);
    }
    if matches!(device, Device::Cpu) {
        cmd.env("CUDA_VISIBLE_DEVICES", "");
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(DEVICES_LIMIT) {
        Ok(o) => o.with_context(|| format!("running {} devices", bin.display()))?,
        Err(_) => {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            bail!(
                "{} devices did not answer within {} s (a GPU driver that hangs?)",
                bin.display(),
                DEVICES_LIMIT.as_secs()
            );
        }
    };
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        bail!(
            "the worker cannot start ({} devices: {}):\n{}",
            bin.display(),
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("{} devices --json: unreadable answer", bin.display()))?;
    doc["inventory"]["cuda_devices"]
        .as_u64()
        .map(|n| n as usize)
        .with_context(|| {
            format!(
                "{} devices --json: no inventory.cuda_devices",
                bin.display()
            )
        })
}

/// Settings a worker must not take from this process's environment: they
/// are for reaching a remote coordinator, and `run`'s workers reach its
/// own, on loopback, in plaintext and without a token.
const REMOTE_ONLY_ENV: [&str; 6] = [
    "CROSSFOLD_COORDINATOR",
    "CROSSFOLD_CA",
    "CROSSFOLD_CERT",
    "CROSSFOLD_KEY",
    "CROSSFOLD_TOKEN_FILE",
    crossfold_proto::client::TOKEN_ENV,
];

fn worker_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("CROSSFOLD_WORKER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the crossfold binary")?;
    let bin = exe.with_file_name("crossfold-worker");
    if !bin.exists() {
        bail!(
            "{} not found: build the worker too (`make build`, or `cargo build --workspace` after `. scripts/env.sh`), or set CROSSFOLD_WORKER_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// The GPUs local workers train on, as (how many, first index), for the
/// spec's `train.device` on a machine with `found` GPUs: every GPU for
/// `auto`, none for `cpu`, all for `cuda` and just GPU N for `cuda:N`; a
/// CUDA device the machine lacks is an error, not a silent CPU run.
fn worker_gpus(device: Device, found: usize) -> Result<(usize, usize)> {
    match device {
        Device::Auto => Ok((found, 0)),
        Device::Cpu => Ok((0, 0)),
        Device::Cuda(index) if found == 0 => bail!(
            "train.device = {}, but the worker sees no GPU on this machine \
             (`crossfold-worker devices` lists what it sees); \
             set train.device = \"auto\" or \"cpu\" to train on the CPU",
            index.map_or("cuda".to_string(), |i| format!("cuda:{i}"))
        ),
        Device::Cuda(None) => Ok((found, 0)),
        Device::Cuda(Some(i)) if i < found => Ok((1, i)),
        Device::Cuda(Some(i)) => bail!(
            "train.device = cuda:{i}, but this machine has {found} GPU(s) (cuda:0..cuda:{})",
            found - 1
        ),
    }
}

/// The most worker processes `run` starts on its one machine.
const MAX_LOCAL_WORKERS: usize = 64;

pub async fn run(a: RunArgs) -> Result<ExitCode> {
    let spec = load_spec(&a.spec, &a.sets)?;
    super::check_pretrained(&spec, true)?;
    // The report writes the resolved spec as spec.toml in --out.
    super::not_an_input(&a.out.join("spec.toml"), &[("spec", a.spec.as_path())])?;
    super::report::check_out(&a.out)?;
    let worker_bin = worker_binary()?;
    let found = worker_cuda_devices(&worker_bin, spec.device())?;
    let (gpus, first_gpu) = worker_gpus(spec.device(), found)?;
    if a.workers == Some(0) {
        bail!("--workers 0: at least one worker is needed");
    }
    if let Some(w) = a.workers.filter(|&w| w > MAX_LOCAL_WORKERS) {
        bail!(
            "--workers {w}: at most {MAX_LOCAL_WORKERS} worker processes on one machine (each \
             trains a round at a time; a round uses every core it is given)"
        );
    }
    let n = a.workers.unwrap_or(gpus.max(1));
    if matches!(spec.device(), Device::Cuda(_)) && n > gpus {
        bail!(
            "--workers {n} with train.device = {}: {gpus} GPU(s) to train on, one worker each \
             (--slots-per-gpu N runs more jobs on each)",
            spec.train.device
        );
    }
    // Rounds on a CPU worker train with [train.cpu]'s model and size: mixed
    // with GPU rounds, their mean ± SD would pool two different models.
    if matches!(spec.device(), Device::Auto) && gpus > 0 && n > gpus && spec.train.cpu.is_some() {
        bail!(
            "--workers {n} on a machine with {gpus} GPU(s): the workers past the GPUs would train \
             on the CPU with [train.cpu]'s settings, other rounds on a GPU with [train]'s, and \
             the summary would pool both models; use --slots-per-gpu N for more jobs on each \
             GPU, or set train.device = \"cpu\" to train every round on the CPU"
        );
    }
    // The outermost folder of --out that does not exist yet: removed again
    // if the data set is refused, so a failed start leaves nothing behind.
    let created = a
        .out
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .last()
        .map(std::path::Path::to_path_buf);
    super::create_folder(&a.out).context("--out")?;
    let out = a.out.canonicalize()?;
    // Locked first: a second `run` on the same --out stops here, before it
    // checks the data set or touches the first one's worker logs.
    let opened = match OpenedDatabase::open(&out.join("coordinator.db")).await {
        Ok(opened) => opened,
        Err(CoordinatorError::DatabaseInUse { .. }) => bail!(
            "--out {}: another `crossfold run` is using it (the coordinator database in it is locked); \
             wait for that run to end, or give another --out",
            a.out.display()
        ),
        Err(e) => return Err(anyhow::Error::from(e).context(format!("--out {}", a.out.display()))),
    };
    {
        let s = spec.clone();
        let prepared = tokio::task::spawn_blocking(move || prepare(&s)).await?;
        let p = match prepared {
            Ok(p) => p,
            Err(e) => {
                if let Some(created) = &created {
                    drop(opened);
                    // Only what this call created: its database and lock.
                    let _ = std::fs::remove_dir_all(created);
                }
                return Err(e.into());
            }
        };
        if p.generated {
            eprintln!(
                "dataset.manifest = {:?} did not exist: generated the synthetic cohort of \
                 [dataset.synthetic] in {}; if you meant a real data set, fix the path",
                spec.dataset.manifest,
                crossfold_shared::manifest::manifest_root(&spec.manifest_path()).display(),
            );
        }
        for w in p.plan.warnings(&p.manifest) {
            eprintln!("warning: {w}");
        }
        eprintln!(
            "data set {} ({} images), split plan {}",
            spec.manifest_path().display(),
            p.manifest.entries.len(),
            p.plan.plan_sha256
        );
    }
    // The folder of the manifest itself, not of a link to it: the
    // coordinator reads the manifest where it really is.
    let data_root = manifest_root(&spec.manifest_path().canonicalize()?);
    let mut config = Config::new(out.join("coordinator.db"), vec![data_root]);
    config.heartbeat_interval = Duration::from_secs(2);
    config.lease_ttl = Duration::from_secs(20);
    // This coordinator listens on a new port each time, so the workers of an
    // earlier `run` on this --out (killed outright) can never report: their
    // jobs go back to the queue at once instead of after a grace period.
    config.release_leases_on_start = true;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    // One machine, loopback only: plaintext and no tokens.
    // Said when the server ends, however: one that stops on its own is
    // the run's end, not two minutes of a client trying to reconnect.
    let (server_ended, server_gone) = tokio::sync::oneshot::channel::<()>();
    let serving = opened.serve(config, listener, None, async {
        let _ = stopped.await;
    });
    let server = tokio::spawn(async move {
        let r = serving.await;
        let _ = server_ended.send(());
        r
    });

    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    let mut children = Vec::new();
    for i in 0..n {
        // Appended to: an earlier run's lines (say, why its rounds failed)
        // stay above this run's.
        let path = out.join(format!("worker-{i}.log"));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(
            log,
            "--- crossfold run (pid {}), worker {i}, started at {} s since the Unix epoch ---",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        )?;
        let mut cmd = tokio::process::Command::new(&worker_bin);
        cmd.args([
            "--coordinator",
            &url,
            "--name",
            &format!("local-{i}-{}", std::process::id()),
        ])
        .arg("--cache")
        .arg(out.join("cache"))
        .args(["--slots-per-gpu", &a.slots_per_gpu.to_string()])
        .stdout(log.try_clone()?)
        .stderr(log)
        // In `run`'s process group: a Ctrl-Z at the terminal pauses them
        // with it. A Ctrl-C reaches them twice (the terminal's SIGINT, then
        // run's SIGTERM), which a worker takes for one signal (2 s apart).
        .kill_on_drop(true);
        for var in REMOTE_ONLY_ENV {
            cmd.env_remove(var);
        }
        // Should `run` itself be killed outright (SIGKILL, an OOM kill), the
        // kernel sends the worker SIGTERM: no worker outlives its `run`.
        // SAFETY: prctl(2) is async-signal-safe; nothing else runs here.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        if gpus > 0 && i < gpus {
            cmd.args(["--device", &format!("cuda:{}", first_gpu + i)]);
        } else {
            cmd.args([
                "--device",
                "cpu",
                "--threads",
                &(cores / n).max(1).to_string(),
            ]);
        }
        children.push(
            cmd.spawn()
                .with_context(|| format!("starting {}", worker_bin.display()))?,
        );
    }
    eprintln!(
        "coordinator {url}; {n} worker(s); logs in {}",
        out.display()
    );

    let work =
        async {
            let limit = std::time::Duration::from_secs_f64(super::remote::DEFAULT_LIMIT);
            let mut c = client_with(&url, &ClientSecurity::plaintext(), limit).await?;
            // The experiment whose report --out holds now, if any: only for a
            // note, so an unreadable report.json is no reason to stop.
            let latest = std::fs::read_to_string(out.join("report.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|d| d["experiment_id"].as_str().map(str::to_string));
            let id = submit_spec(&mut c, &a.spec, &a.sets).await?;
            eprintln!("experiment {id}");
            // An experiment an earlier run on this --out left unfinished would
            // share the workers with this one, with no one following it: it is
            // paused (cancelled; its spec run again resumes it, finished
            // rounds kept).
            let listed = answer(c.list(crossfold_proto::v1::ListExperimentsRequest {})).await?;
            for e in listed.experiments.iter().filter(|e| {
                e.experiment_id != id && matches!(e.state.as_str(), "pending" | "running")
            }) {
                let cancelled = answer(c.cancel(crossfold_proto::v1::CancelRequest {
                    experiment_id: e.experiment_id.clone(),
                }))
                .await;
                // Finished meanwhile (its last round was running): nothing to pause.
                if cancelled.is_err() {
                    continue;
                }
                eprintln!(
                    "note: paused experiment {} ({}), which an earlier run on {} left unfinished: \
                 this run trains {id} alone; running that spec again resumes it, its finished \
                 rounds kept",
                    e.experiment_id,
                    e.name,
                    out.display()
                );
            }
            if let Some(latest) = latest.filter(|l| *l != id) {
                eprintln!(
                "note: {} held the report of another experiment ({latest}); the spec or the data \
                 differ, so this run's report will replace it once the run ends (every experiment \
                 stays in coordinator.db)",
                out.display(),
            );
            }
            let show = if a.quiet { Show::Nothing } else { Show::Text };
            let state = follow(&mut c, &id, show).await?;
            let doc = fetch_results(&mut c, &id).await?;
            super::report::write_report(&out, &doc)?;
            Ok::<_, anyhow::Error>((id, state, doc))
        };
    // Ctrl-C, `kill`, `timeout` or a batch system's SIGTERM stop the workers
    // and the coordinator below instead of leaving the workers running.
    let outcome = tokio::select! {
        r = work => r,
        gone = workers_gone(&mut children, &out) => Err(gone),
        _ = server_gone => Err(anyhow::anyhow!("the embedded coordinator stopped")),
        sig = super::signal::shutdown() => Err(anyhow::Error::new(Interrupted {
            signal: sig,
            kept: out.join("coordinator.db"),
        })),
    };

    for child in &mut children {
        if let Some(pid) = child.id() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
    }
    // All together, for as long as a stopping worker may take to report
    // (30 s); a second signal stops them at once.
    let mut again = None;
    {
        let all = wait_all(&mut children);
        tokio::select! {
            _ = tokio::time::timeout(Duration::from_secs(35), all) => {}
            sig = super::signal::shutdown() => again = Some(sig),
        }
    }
    if let Some(sig) = again {
        eprintln!("{sig} again: stopping the workers at once");
        for child in &mut children {
            let _ = child.start_kill();
        }
    }
    let _ = stop_server.send(());
    let served = match server.await {
        Ok(r) => r.map_err(anyhow::Error::from),
        Err(e) => Err(anyhow::anyhow!("the embedded coordinator panicked: {e}")),
    };

    // A coordinator that stopped on its own is the cause of whatever the
    // client saw (say, "cannot reach the coordinator"): report it instead.
    let (id, state, doc) = match (outcome, served) {
        (Ok(done), _) => done,
        (Err(_), Err(e)) => return Err(e.context("the embedded coordinator stopped")),
        (Err(e), Ok(())) => {
            // Stopped by a signal: said, and the shell's 128 + its number.
            if let Some(i) = e.downcast_ref::<Interrupted>() {
                eprintln!("{i}");
                return Ok(ExitCode::from(i.status()));
            }
            return Err(e);
        }
    };
    print!("{}", summary::tables(&doc));
    println!(
        "experiment {id}: {state}; wrote {}/{{report.json,report.md,report.html,*.svg,predictions.csv,rounds.csv,plan.json,spec.toml}}",
        out.display()
    );
    Ok(super::remote::state_code(&state))
}

/// `run` stopped by a signal.
#[derive(Debug)]
struct Interrupted {
    signal: &'static str,
    kept: PathBuf,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted by {}: workers stopped; finished rounds are kept in {}",
            self.signal,
            self.kept.display()
        )
    }
}

impl std::error::Error for Interrupted {}

impl Interrupted {
    /// The exit status a shell gives a command ended by this signal.
    fn status(&self) -> u8 {
        128 + match self.signal {
            "SIGHUP" => 1,
            "SIGINT" => 2,
            _ => 15,
        }
    }
}

/// Resolves once every worker has exited, with why; a worker that exits
/// while others run on is said at once, with the end of its log (a worker
/// that cannot start would otherwise leave the run waiting for ever).
async fn workers_gone(
    children: &mut [tokio::process::Child],
    out: &std::path::Path,
) -> anyhow::Error {
    let mut gone = vec![false; children.len()];
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (i, child) in children.iter_mut().enumerate() {
            if gone[i] {
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                gone[i] = true;
                let log = out.join(format!("worker-{i}.log"));
                eprintln!(
                    "worker {i} exited ({status}); the end of {}:\n{}",
                    log.display(),
                    log_tail(&log, 10)
                );
            }
        }
        if gone.iter().all(|g| *g) {
            return anyhow::anyhow!(
                "every worker exited (see above, and the worker-N.log files in {}); finished \
                 rounds are kept in {}",
                out.display(),
                out.join("coordinator.db").display()
            );
        }
    }
}

/// The last `lines` lines of a log, indented; what there is if unreadable.
fn log_tail(path: &std::path::Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    // Only the end: logs are appended to across runs.
    let read = || -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail)?;
        Ok(tail)
    };
    let text = read()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(cannot read it: {e})"));
    let last: Vec<&str> = text.lines().rev().take(lines).collect();
    last.into_iter()
        .rev()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Wait for every child to exit.
async fn wait_all(children: &mut [tokio::process::Child]) {
    for child in children.iter_mut() {
        let _ = child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_follow_the_specs_device() {
        assert_eq!(worker_gpus(Device::Auto, 0).unwrap(), (0, 0));
        assert_eq!(worker_gpus(Device::Auto, 4).unwrap(), (4, 0));
        assert_eq!(worker_gpus(Device::Cpu, 4).unwrap(), (0, 0));
        assert_eq!(worker_gpus(Device::Cuda(None), 2).unwrap(), (2, 0));
        assert_eq!(worker_gpus(Device::Cuda(Some(1)), 2).unwrap(), (1, 1));
        let err = worker_gpus(Device::Cuda(None), 0).unwrap_err().to_string();
        assert!(
            err.contains("train.device = cuda") && err.contains("no GPU"),
            "{err}"
        );
        let err = worker_gpus(Device::Cuda(Some(1)), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.device = cuda:1,"), "{err}");
        let err = worker_gpus(Device::Cuda(Some(2)), 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cuda:2") && err.contains("2 GPU(s)"), "{err}");
    }
}
