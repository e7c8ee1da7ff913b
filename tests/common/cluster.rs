//! A real coordinator and real worker processes on loopback, for the runtime
//! tests. Ports come from the coordinator's own bind to port 0 (it prints its
//! address), except where a test restarts the coordinator on the same port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn crossfold_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_crossfold"))
}

/// The worker binary, built by `cargo test --workspace` into the same folder.
pub fn worker_bin() -> PathBuf {
    let p = crossfold_bin().with_file_name("crossfold-worker");
    assert!(
        p.exists(),
        "{} is missing: run the tests with `make test` (cargo test --workspace builds the worker)",
        p.display()
    );
    p
}

pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    /// The metrics URL the process printed, if it serves metrics.
    pub metrics: Option<String>,
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port free now: for a coordinator that a test
/// restarts on the same address (workers reconnect to it).
pub fn free_loopback_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("local address")
        .port();
    format!("127.0.0.1:{port}")
}

/// Start `crossfold coordinator` and return it with its URL. Plaintext
/// (`--insecure`) unless `extra` gives TLS files; text logs unless `extra`
/// asks for another format.
pub fn start_coordinator(
    dir: &Path,
    listen: &str,
    data_root: &Path,
    extra: &[&str],
) -> (Proc, String) {
    let log = dir.join(format!("coordinator-{}.log", uniq()));
    let insecure: &[&str] = if extra.contains(&"--tls-cert") {
        &[]
    } else {
        &["--insecure"]
    };
    let mut child = Command::new(crossfold_bin())
        .env("CROSSFOLD_LOG_FORMAT", "text")
        .args(["coordinator", "--listen", listen, "--db"])
        .arg(dir.join("coordinator.db"))
        .arg("--data-root")
        .arg(data_root)
        .args(if extra.contains(&"--heartbeat-interval") {
            &[][..]
        } else {
            &["--lease-ttl", "4", "--heartbeat-interval", "0.5"][..]
        })
        .args(if extra.contains(&"--restart-grace") {
            &[][..]
        } else {
            &["--restart-grace", "6"][..]
        })
        .args(insecure)
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start coordinator");
    let stderr = child.stderr.take().expect("stderr");
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let url = loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
            panic!("coordinator did not start: {seen}{line}");
        }
        seen.push_str(&line);
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap_or("").to_string();
        }
    };
    // "metrics at http://ADDR/metrics" comes right after, when asked for.
    let metrics = extra.contains(&"--metrics-listen").then(|| {
        line.clear();
        let _ = reader.read_line(&mut line);
        line.trim()
            .strip_prefix("metrics at ")
            .unwrap_or_default()
            .to_string()
    });
    // Keep draining stderr into the log file.
    let log2 = log.clone();
    std::thread::spawn(move || {
        use std::io::Write;
        if let Ok(mut f) = std::fs::File::create(&log2) {
            for l in reader.lines().map_while(Result::ok) {
                let _ = writeln!(f, "{l}");
            }
        }
    });
    (
        Proc {
            child,
            log,
            metrics,
        },
        url,
    )
}

fn uniq() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

pub fn start_worker(dir: &Path, url: &str, name: &str, env: &[(&str, &str)]) -> Proc {
    start_worker_with(dir, url, name, env, &[])
}

pub fn start_worker_with(
    dir: &Path,
    url: &str,
    name: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> Proc {
    let log = dir.join(format!("worker-{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(worker_bin());
    cmd.env("CROSSFOLD_LOG_FORMAT", "text");
    cmd.args([
        "--coordinator",
        url,
        "--name",
        name,
        "--device",
        "cpu",
        "--threads",
        "1",
        "--cache",
    ])
    .arg(dir.join(format!("cache-{name}")))
    .args(args)
    .stdout(file.try_clone().expect("log"))
    .stderr(file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc {
        child: cmd.spawn().expect("start worker"),
        log,
        metrics: None,
    }
}

/// Run the crossfold CLI; returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(crossfold_bin())
        .args(args)
        .output()
        .expect("run crossfold");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

pub fn status(url: &str, id: &str) -> serde_json::Value {
    let (code, out, err) = cli(&["status", id, "--coordinator", url, "--format", "json"]);
    assert_eq!(code, 0, "status failed: {err}");
    serde_json::from_str(&out).expect("status JSON")
}

/// Poll until `pred` holds or `timeout` passes (then panic with `what`).
pub fn wait_for(what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pred() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A spec with a small synthetic cohort; returns the spec path. The data are
/// generated by `crossfold submit` (here) on first use.
pub fn tiny_spec(dir: &Path, extra: &str) -> PathBuf {
    let spec = dir.join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"tiny\"\n[dataset]\nmanifest = \"data/manifest.csv\"\n\
             [dataset.synthetic]\nnormal = 20\nbenign = 10\nmalignant = 10\nsize = 64\nseed = 3\n\
             [train]\narch = \"resnet18\"\nimage_size = 32\nepochs = 1\nbatch_size = 8\nwarmup_epochs = 0\ndevice = \"cpu\"\n\
             {extra}"
        ),
    )
    .expect("write spec");
    spec
}

/// Generate the spec's data set (so the coordinator's data root exists).
pub fn make_data(spec: &Path) {
    let (code, out, err) = cli(&["plan", spec.to_str().unwrap_or_default()]);
    assert_eq!(code, 0, "plan failed: {out}{err}");
}

pub fn submit(url: &str, spec: &Path, sets: &[&str]) -> String {
    let mut args = vec![
        "submit",
        spec.to_str().unwrap_or_default(),
        "--coordinator",
        url,
    ];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let (code, out, err) = cli(&args);
    assert_eq!(code, 0, "submit failed: {err}");
    out.lines().last().unwrap_or_default().trim().to_string()
}

/// `crossfold results --format json`: the document, whose exit status (0,
/// or 2 when rounds have no result) must agree with its missing rounds.
pub fn results(url: &str, id: &str) -> serde_json::Value {
    let (code, out, err) = cli(&["results", id, "--coordinator", url, "--format", "json"]);
    assert!(code == 0 || code == 2, "results failed: {err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("results JSON");
    let missing = doc["complete"] == false
        || doc["missing_rounds"]
            .as_array()
            .is_some_and(|m| !m.is_empty());
    assert_eq!(code == 2, missing, "exit status {code} for {doc}");
    doc
}

/// `crossfold report`; its exit status: 0, or 2 when rounds have no result.
pub fn report(url: &str, id: &str, out: &Path) -> i32 {
    let out = out.to_str().unwrap_or_default();
    let (code, _, err) = cli(&["report", id, "--coordinator", url, "--out", out]);
    assert!(code == 0 || code == 2, "report failed: {err}");
    code
}

pub fn terminal(s: &serde_json::Value) -> bool {
    matches!(
        s["state"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}
