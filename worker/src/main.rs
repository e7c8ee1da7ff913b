//! `crossfold-worker`: the process that trains models on a GPU node.

use anyhow::Result;
use clap::{Parser, Subcommand};
use crossfold_worker::device;

#[derive(Parser)]
#[command(
    name = "crossfold-worker",
    version,
    about = "crossfold worker: trains ResNets through libtorch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Devices { check, json } => devices(check, json),
    }
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
        println!("cudnn: {}", inv.cudnn);
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
