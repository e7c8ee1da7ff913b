//! Where a result came from: versions, device, seeds and hashes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub crossfold_version: String,
    pub git_commit: String,
    pub tch_version: String,
    pub libtorch_version: String,
    pub cuda_version: Option<String>,
    pub cudnn_version: Option<String>,
    pub device: String,
    pub device_name: String,
    pub cpu_threads: i32,
    /// Precision, layout, optimiser kernels and cuDNN autotuning
    /// (autotuning picks kernels by timing: not bitwise reproducible).
    pub compute: crate::precision::Compute,
    /// Whether libtorch's deterministic algorithms were enforced
    /// (`torch.use_deterministic_algorithms`); on CUDA, runs are only
    /// reproducible up to floating-point order when this is false.
    /// (crossfold never turns them on; absent from cards written before
    /// this was recorded).
    #[serde(default)]
    pub deterministic_algorithms: bool,
    /// Training steps replayed from a CUDA graph (`compute.cuda_graph`).
    #[serde(default)]
    pub cuda_graph_replays: u64,
    /// Why CUDA graphs were not used although `compute.cuda_graph` asked
    /// for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_graph_fallback: Option<String>,
    pub seed: u64,
    pub dataset_sha256: String,
    pub plan_sha256: String,
    /// SHA-256 of the `train.pretrained` file the network started from
    /// (the spec names only its path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained_sha256: Option<String>,
}

/// Provenance of a job run on `device`.
pub fn collect(
    device: tch::Device,
    seed: u64,
    dataset_sha256: &str,
    plan_sha256: &str,
    compute: crate::precision::Compute,
) -> Provenance {
    let on_cuda = device.is_cuda();
    let version = |v: i64| (v > 0).then(|| format!("{}.{}", v / 1000, (v % 1000) / 10));
    Provenance {
        crossfold_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: env!("CROSSFOLD_GIT_COMMIT").to_string(),
        tch_version: "0.24.0".to_string(),
        libtorch_version: env!("CROSSFOLD_LIBTORCH_VERSION").to_string(),
        cuda_version: if on_cuda {
            version(tch::utils::version_cudart())
        } else {
            None
        },
        cudnn_version: if on_cuda {
            Some(tch::utils::version_cudnn().to_string())
        } else {
            None
        },
        device: format!("{device:?}").to_lowercase(),
        device_name: device_name(device),
        cpu_threads: tch::get_num_threads(),
        compute,
        deterministic_algorithms: crate::precision::deterministic_algorithms(),
        cuda_graph_replays: 0,
        cuda_graph_fallback: None,
        seed,
        dataset_sha256: dataset_sha256.to_string(),
        plan_sha256: plan_sha256.to_string(),
        pretrained_sha256: None,
    }
}

/// Memory of the device in bytes: the GPU's total (from `nvidia-smi`) or the
/// machine's RAM (from /proc/meminfo); 0 when unknown.
pub fn device_memory(device: tch::Device) -> u64 {
    match device {
        tch::Device::Cuda(i) => std::process::Command::new("nvidia-smi")
            .args([
                "--query-gpu=memory.total",
                "--format=csv,noheader,nounits",
                "-i",
                &i.to_string(),
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|mib| mib * 1024 * 1024)
            .unwrap_or(0),
        _ => std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map(|kb| kb * 1024)
            .unwrap_or(0),
    }
}

/// The GPU's product name and compute capability (from the CUDA driver,
/// which numbers GPUs as the process sees them under CUDA_VISIBLE_DEVICES)
/// or the CPU's model name.
pub fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cuda(i) => {
            let name = crate::device::cuda_name(i).unwrap_or_else(|| format!("cuda:{i}"));
            match crate::device::cuda_capability(i) {
                Some((major, minor)) => format!("{name} (compute capability {major}.{minor})"),
                None => name,
            }
        }
        _ => std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| "cpu".to_string()),
    }
}
