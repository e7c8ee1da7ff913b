//! Compute devices.
//!
//! torch-sys asks the linker for `libtorch_cuda.so`, but rustc links with
//! `--as-needed`, so the library is dropped and CUDA never registers with
//! libtorch (`tch::Cuda::is_available()` is false even on a GPU machine).
//! [`init`] loads it with `dlopen` before any tensor work: where it loads
//! (a full CUDA install), CUDA registers; where it does not (the light
//! CPU-only install, whose CUDA libraries are absent), the worker runs on
//! the CPU and says why.

use crossfold_shared::spec::Device as SpecDevice;
use serde::Serialize;
use std::ffi::CString;
use std::sync::OnceLock;

/// How loading libtorch's CUDA backend went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CudaBackend {
    Loaded { path: String },
    Unavailable { reason: String },
}

static BACKEND: OnceLock<CudaBackend> = OnceLock::new();

/// Load libtorch's CUDA backend once; later calls return the first outcome.
pub fn init() -> &'static CudaBackend {
    BACKEND.get_or_init(load_cuda_backend)
}

fn load_cuda_backend() -> CudaBackend {
    let dir = option_env!("CROSSFOLD_TORCH_LIB").unwrap_or("");
    let candidates: Vec<String> = [
        std::env::var("CROSSFOLD_TORCH_LIB").ok(),
        Some(dir.to_string()).filter(|d| !d.is_empty()),
    ]
    .into_iter()
    .flatten()
    .map(|d| format!("{d}/libtorch_cuda.so"))
    .chain(std::iter::once("libtorch_cuda.so".to_string()))
    .collect();
    let mut last_error = String::from("libtorch_cuda.so not found");
    for path in candidates {
        let Ok(c_path) = CString::new(path.clone()) else {
            continue;
        };
        // SAFETY: dlopen with a valid NUL-terminated path; the handle is kept
        // for the life of the process (never closed), as libtorch requires.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if !handle.is_null() {
            return CudaBackend::Loaded { path };
        }
        last_error = dl_error();
    }
    CudaBackend::Unavailable { reason: last_error }
}

/// The dynamic loader's message for the last failed `dlopen`/`dlsym` on
/// this thread.
pub(crate) fn dl_error() -> String {
    // SAFETY: dlerror returns a thread-local C string or null.
    let err = unsafe { libc::dlerror() };
    if err.is_null() {
        "unknown dynamic loader error".to_string()
    } else {
        // SAFETY: a non-null dlerror result is a valid C string.
        unsafe { std::ffi::CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned()
    }
}

type CuDeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
type CuDeviceGetAttribute = unsafe extern "C" fn(*mut i32, i32, i32) -> i32;
type CuDeviceGetName = unsafe extern "C" fn(*mut libc::c_char, i32, i32) -> i32;
type CuInit = unsafe extern "C" fn(u32) -> i32;

/// The CUDA driver API (`libcuda.so.1`), loaded once with `dlopen`: only
/// the four calls needed to read a GPU's name and compute capability. The
/// driver numbers devices as CUDA_VISIBLE_DEVICES shows them, like libtorch.
struct Driver {
    device_get: CuDeviceGet,
    get_attribute: CuDeviceGetAttribute,
    get_name: CuDeviceGetName,
}

fn driver() -> Option<&'static Driver> {
    static DRIVER: OnceLock<Option<Driver>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            // SAFETY: dlopen/dlsym with NUL-terminated names; the handle is
            // never closed, so the function pointers stay valid; the
            // signatures are those of the CUDA driver API (CUresult = int,
            // CUdevice = int).
            unsafe {
                let handle = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW);
                if handle.is_null() {
                    return None;
                }
                let sym = |name: &std::ffi::CStr| {
                    let p = libc::dlsym(handle, name.as_ptr());
                    (!p.is_null()).then_some(p)
                };
                let init = std::mem::transmute::<*mut libc::c_void, CuInit>(sym(c"cuInit")?);
                if init(0) != 0 {
                    return None;
                }
                Some(Driver {
                    device_get: std::mem::transmute::<*mut libc::c_void, CuDeviceGet>(sym(
                        c"cuDeviceGet",
                    )?),
                    get_attribute: std::mem::transmute::<*mut libc::c_void, CuDeviceGetAttribute>(
                        sym(c"cuDeviceGetAttribute")?,
                    ),
                    get_name: std::mem::transmute::<*mut libc::c_void, CuDeviceGetName>(sym(
                        c"cuDeviceGetName",
                    )?),
                })
            }
        })
        .as_ref()
}

fn cuda_device(index: usize) -> Option<(&'static Driver, i32)> {
    let d = driver()?;
    let mut dev = 0;
    // SAFETY: valid out-pointer; the driver was initialised.
    (unsafe { (d.device_get)(&mut dev, i32::try_from(index).ok()?) } == 0).then_some((d, dev))
}

/// Compute capability (major, minor) of CUDA device `index`, from the
/// driver; `None` where there is no driver or no such device.
pub fn cuda_capability(index: usize) -> Option<(i32, i32)> {
    const MAJOR: i32 = 75; // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    const MINOR: i32 = 76; // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
    let (d, dev) = cuda_device(index)?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: valid out-pointers and a device handle from cuDeviceGet.
    let ok = unsafe {
        (d.get_attribute)(&mut major, MAJOR, dev) == 0
            && (d.get_attribute)(&mut minor, MINOR, dev) == 0
    };
    ok.then_some((major, minor))
}

/// Compute capability of `device` when it is a GPU the driver knows.
pub fn capability_of(device: tch::Device) -> Option<(i32, i32)> {
    match device {
        tch::Device::Cuda(i) => cuda_capability(i),
        _ => None,
    }
}

/// Product name of CUDA device `index`, from the driver.
pub fn cuda_name(index: usize) -> Option<String> {
    let (d, dev) = cuda_device(index)?;
    let mut buf = [0 as libc::c_char; 256];
    // SAFETY: the buffer's length is passed; the driver NUL-terminates.
    if unsafe { (d.get_name)(buf.as_mut_ptr(), buf.len() as i32, dev) } != 0 {
        return None;
    }
    // SAFETY: NUL-terminated within `buf` (see above).
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().trim().to_string()).filter(|n| !n.is_empty())
}

/// What this machine offers.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub cuda_backend: CudaBackend,
    pub cuda_devices: usize,
    /// Per CUDA device: name and compute capability, from the driver, and
    /// the precision `train.precision = auto` picks there.
    pub gpus: Vec<Gpu>,
    pub cudnn: bool,
    /// Whether `train.cuda_graph` can capture here: "available", or why not.
    pub cuda_graphs: String,
    pub cpu_threads: i32,
}

/// One GPU as the driver describes it.
#[derive(Debug, Clone, Serialize)]
pub struct Gpu {
    pub index: usize,
    pub name: Option<String>,
    pub compute_capability: Option<String>,
    /// What `train.precision = auto` resolves to on it.
    pub auto_precision: &'static str,
}

pub fn inventory() -> Inventory {
    let cuda_backend = init().clone();
    let cuda_devices = tch::Cuda::device_count().max(0) as usize;
    let auto = crossfold_shared::spec::TrainSpec::default();
    let gpus = (0..cuda_devices)
        .map(|index| {
            let cap = cuda_capability(index);
            let resolved = crate::precision::Compute::resolve(&auto, tch::Device::Cuda(index), cap);
            Gpu {
                index,
                name: cuda_name(index),
                compute_capability: cap.map(|(a, b)| format!("{a}.{b}")),
                auto_precision: match resolved.map(|c| c.autocast()) {
                    Ok(Some(crate::precision::Half::Bf16)) => "bf16 autocast + TF32",
                    Ok(Some(crate::precision::Half::Fp16)) => "fp16 autocast + loss scaling",
                    Ok(None) => "fp32",
                    Err(_) => "none (the default spec is refused)",
                },
            }
        })
        .collect();
    Inventory {
        cuda_backend,
        cuda_devices,
        gpus,
        cudnn: tch::Cuda::cudnn_is_available(),
        cuda_graphs: match crate::graph::available() {
            Ok(()) => "available".to_string(),
            Err(e) => e.to_string(),
        },
        cpu_threads: tch::get_num_threads(),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("{setting} = {asked:?} but CUDA is not available here ({reason})")]
    NoCuda {
        setting: &'static str,
        asked: String,
        reason: String,
    },
    #[error("{setting} = \"cuda:{index}\" but this machine has {count} CUDA device(s)")]
    NoSuchGpu {
        setting: &'static str,
        index: usize,
        count: usize,
    },
}

/// The tch device for what a spec asks: `auto` is the first GPU when CUDA
/// works, else the CPU; `cuda`/`cuda:N` fail clearly when there is none.
pub fn choose(asked: SpecDevice) -> Result<tch::Device, DeviceError> {
    choose_as("train.device", asked)
}

/// [`choose`] for a device given by `setting` (e.g. `--device`), which
/// errors name.
pub fn choose_as(setting: &'static str, asked: SpecDevice) -> Result<tch::Device, DeviceError> {
    init();
    let count = tch::Cuda::device_count().max(0) as usize;
    let reason = || match init() {
        CudaBackend::Loaded { .. } => "no CUDA device visible".to_string(),
        CudaBackend::Unavailable { reason } => reason.clone(),
    };
    match asked {
        SpecDevice::Cpu => Ok(tch::Device::Cpu),
        SpecDevice::Auto if count > 0 => Ok(tch::Device::Cuda(0)),
        SpecDevice::Auto => Ok(tch::Device::Cpu),
        SpecDevice::Cuda(index) => {
            let index = index.unwrap_or(0);
            if count == 0 {
                let asked = if index == 0 {
                    "cuda".into()
                } else {
                    format!("cuda:{index}")
                };
                Err(DeviceError::NoCuda {
                    setting,
                    asked,
                    reason: reason(),
                })
            } else if index >= count {
                Err(DeviceError::NoSuchGpu {
                    setting,
                    index,
                    count,
                })
            } else {
                Ok(tch::Device::Cuda(index))
            }
        }
    }
}

/// A small computation on `device` checked against the CPU, to prove the
/// device really works (used by `crossfold-worker devices --check`).
pub fn self_test(device: tch::Device) -> Result<f64, tch::TchError> {
    let a = tch::Tensor::f_arange(64 * 64, (tch::Kind::Float, tch::Device::Cpu))?
        .f_reshape([64, 64])?
        .f_divide_scalar(4096.0)?;
    let expected = a
        .f_matmul(&a)?
        .f_sum(tch::Kind::Double)?
        .f_double_value(&[])?;
    let on = a.f_to_device(device)?;
    let got = on
        .f_matmul(&on)?
        .f_sum(tch::Kind::Double)?
        .f_double_value(&[])?;
    Ok((got - expected).abs() / expected.abs().max(1e-12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_available_and_correct() {
        assert_eq!(choose(SpecDevice::Cpu), Ok(tch::Device::Cpu));
        let rel = self_test(tch::Device::Cpu).unwrap();
        assert!(rel < 1e-6, "{rel}");
    }

    #[test]
    fn the_driver_query_answers_or_says_none() {
        // Where libtorch sees GPUs, the driver describes them; no device 4096.
        if tch::Cuda::device_count() > 0 {
            assert!(cuda_capability(0).is_some());
            assert!(cuda_name(0).is_some());
        }
        assert_eq!(cuda_capability(4096), None);
        assert_eq!(cuda_name(4096), None);
        assert_eq!(inventory().gpus.len(), inventory().cuda_devices);
    }

    #[test]
    fn asking_for_a_missing_gpu_is_a_clear_error() {
        let count = tch::Cuda::device_count().max(0) as usize;
        let err = choose(SpecDevice::Cuda(Some(count + 3))).unwrap_err();
        assert!(
            err.to_string().contains(&format!("cuda:{}", count + 3))
                || err.to_string().contains("not available")
        );
        if count == 0 {
            assert_eq!(choose(SpecDevice::Auto), Ok(tch::Device::Cpu));
        } else {
            assert_eq!(choose(SpecDevice::Auto), Ok(tch::Device::Cuda(0)));
        }
    }
}
