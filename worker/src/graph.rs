//! CUDA graphs of a training step (`train.cuda_graph`).
//!
//! Below batch 64 or so a ResNet step on a current GPU waits on the CPU,
//! which launches its hundreds of kernels one by one (bench/README.md:
//! about 13 ms a step at batch 16 to 64 on an H200). A CUDA graph records
//! the step's launches once and replays them with one call.
//!
//! The graph code lives in its own shared library (`shim/graph.cpp`, built
//! by build.rs and linked against libtorch_cuda), embedded in the worker and
//! loaded from memory only once libtorch's CUDA backend has loaded: the
//! worker itself never links libtorch_cuda (see `crate::device`), so it
//! still starts on CPU-only installs.
//!
//! [`StepGraph`] wraps one graph and its side stream: `enter` the stream,
//! run warm-up steps, `begin_capture` / `end_capture` around one step,
//! `replay` it for every later one, `leave` at the end (also on drop).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

/// The graph library, built for this libtorch by build.rs (empty when it
/// could not be built: `CROSSFOLD_GRAPH_LIB_NOTE` says why).
static LIBRARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libcrossfold_graph.so"));

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    #[error("CUDA graphs are not available in this worker: {0}")]
    Unavailable(String),
    #[error("CUDA graph {what} failed: {message}")]
    Call { what: &'static str, message: String },
}

struct Api {
    last_error: unsafe extern "C" fn() -> *const c_char,
    new: unsafe extern "C" fn(c_int) -> *mut c_void,
    enter: unsafe extern "C" fn(*mut c_void) -> c_int,
    capture_begin: unsafe extern "C" fn(*mut c_void) -> c_int,
    capture_end: unsafe extern "C" fn(*mut c_void) -> c_int,
    replay: unsafe extern "C" fn(*mut c_void) -> c_int,
    leave: unsafe extern "C" fn(*mut c_void) -> c_int,
    free: unsafe extern "C" fn(*mut c_void),
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

fn api() -> Result<&'static Api, GraphError> {
    API.get_or_init(load)
        .as_ref()
        .map_err(|why| GraphError::Unavailable(why.clone()))
}

/// Whether this worker can capture CUDA graphs, and if not, why.
pub fn available() -> Result<(), GraphError> {
    api().map(|_| ())
}

fn load() -> Result<Api, String> {
    if let crate::device::CudaBackend::Unavailable { reason } = crate::device::init() {
        return Err(format!("libtorch's CUDA backend did not load ({reason})"));
    }
    let note = env!("CROSSFOLD_GRAPH_LIB_NOTE");
    if !note.is_empty() || LIBRARY.is_empty() {
        return Err(format!("the graph library was not built ({note})"));
    }
    // The library is loaded from an anonymous in-memory file: nothing is
    // written to disk, and a copied binary carries it along.
    // SAFETY: a NUL-terminated name and valid flags.
    let fd = unsafe { libc::memfd_create(c"crossfold-graph".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    std::io::Write::write_all(&mut file, LIBRARY)
        .map_err(|e| format!("writing the graph library to memory: {e}"))?;
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}"))
        .map_err(|e| format!("library path: {e}"))?;
    // SAFETY: dlopen with a valid NUL-terminated path; the handle is kept for
    // the life of the process (never closed). Its dependencies
    // (libtorch_cuda and the CUDA runtime) are already loaded.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    drop(file);
    if handle.is_null() {
        return Err(format!(
            "loading the graph library: {}",
            crate::device::dl_error()
        ));
    }
    let sym = |name: &CStr| -> Result<*mut c_void, String> {
        // SAFETY: a live handle and a NUL-terminated name.
        let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
        if p.is_null() {
            Err(format!(
                "{} missing from the graph library",
                name.to_string_lossy()
            ))
        } else {
            Ok(p)
        }
    };
    // SAFETY: each symbol is the extern "C" function of shim/graph.cpp with
    // exactly this signature.
    unsafe {
        Ok(Api {
            last_error: std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> *const c_char>(
                sym(c"crossfold_graph_last_error")?,
            ),
            new: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(c_int) -> *mut c_void>(
                sym(c"crossfold_graph_new")?,
            ),
            enter: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void) -> c_int>(
                sym(c"crossfold_graph_enter")?,
            ),
            capture_begin: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void) -> c_int,
            >(sym(c"crossfold_graph_capture_begin")?),
            capture_end: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void) -> c_int,
            >(sym(c"crossfold_graph_capture_end")?),
            replay: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void) -> c_int>(
                sym(c"crossfold_graph_replay")?,
            ),
            leave: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void) -> c_int>(
                sym(c"crossfold_graph_leave")?,
            ),
            free: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void)>(sym(
                c"crossfold_graph_free",
            )?),
        })
    }
}

/// One captured training step and the side stream it runs on. Tied to the
/// thread that made it (the current stream is per thread): not `Send`.
pub struct StepGraph {
    api: &'static Api,
    handle: *mut c_void,
    captured: bool,
}

impl StepGraph {
    /// A graph for CUDA device `index`.
    pub fn new(index: usize) -> Result<StepGraph, GraphError> {
        let api = api()?;
        // SAFETY: plain int argument; the shim catches C++ exceptions.
        let handle = unsafe { (api.new)(index as c_int) };
        if handle.is_null() {
            return Err(GraphError::Call {
                what: "set-up",
                message: last_error(api),
            });
        }
        Ok(StepGraph {
            api,
            handle,
            captured: false,
        })
    }

    fn call(
        &self,
        what: &'static str,
        f: unsafe extern "C" fn(*mut c_void) -> c_int,
    ) -> Result<(), GraphError> {
        // SAFETY: `handle` is live until drop; the shim catches exceptions.
        if unsafe { f(self.handle) } == 0 {
            Ok(())
        } else {
            Err(GraphError::Call {
                what,
                message: last_error(self.api),
            })
        }
    }

    /// Make the graph's side stream this thread's current CUDA stream (after
    /// the device has finished what was queued before).
    pub fn enter(&mut self) -> Result<(), GraphError> {
        self.call("stream switch", self.api.enter)
    }

    /// Start recording this thread's launches instead of running them.
    pub fn begin_capture(&mut self) -> Result<(), GraphError> {
        self.call("capture", self.api.capture_begin)
    }

    /// Stop recording and make the graph replayable. Also ends a capture
    /// whose step failed half-way (the graph is then dropped).
    pub fn end_capture(&mut self) -> Result<(), GraphError> {
        self.call("capture end", self.api.capture_end)?;
        self.captured = true;
        Ok(())
    }

    pub fn captured(&self) -> bool {
        self.captured
    }

    /// Launch the recorded step.
    pub fn replay(&mut self) -> Result<(), GraphError> {
        self.call("replay", self.api.replay)
    }

    /// Wait for the side stream and restore the thread's previous stream.
    pub fn leave(&mut self) -> Result<(), GraphError> {
        self.call("stream switch back", self.api.leave)
    }
}

impl Drop for StepGraph {
    fn drop(&mut self) {
        // SAFETY: `handle` came from `new` and is freed once; free ends a
        // capture still open and leaves the side stream.
        unsafe { (self.api.free)(self.handle) }
    }
}

/// The shim's last message, without libtorch's C++ stack trace.
fn last_error(api: &Api) -> String {
    // SAFETY: the shim returns a thread-local NUL-terminated string.
    let message = unsafe { CStr::from_ptr((api.last_error)()) }.to_string_lossy();
    crate::torch_error::without_backtrace(&message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_cuda_graphs_are_unavailable_and_say_why() {
        if matches!(
            crate::device::init(),
            crate::device::CudaBackend::Loaded { .. }
        ) {
            if tch::Cuda::device_count() == 0 {
                // A full CUDA install on a machine without a GPU: the graph
                // library loads, and a graph is refused with libtorch's
                // reason instead of aborting the process.
                available().unwrap();
                let err = StepGraph::new(0).err().expect("no graph without a GPU");
                eprintln!("{err}");
                assert!(!err.to_string().contains("frame #"), "{err}");
                assert!(
                    matches!(&err, GraphError::Call { what: "set-up", message } if !message.is_empty()),
                    "{err}"
                );
            }
            return; // with a GPU, worker/tests/gpu.rs covers graphs
        }
        let err = StepGraph::new(0).err().expect("no graphs without CUDA");
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "CUDA graphs are not available in this worker: libtorch's CUDA backend"
            ),
            "{msg}"
        );
        assert_eq!(available(), Err(err));
    }

    #[test]
    fn the_graph_library_was_built_into_the_worker() {
        // scripts/setup-libtorch.sh installs the headers it needs; a build
        // that lost them would silently train without graphs on every GPU.
        assert_eq!(env!("CROSSFOLD_GRAPH_LIB_NOTE"), "");
        assert!(LIBRARY.len() > 1000, "{} bytes", LIBRARY.len());
        assert_eq!(&LIBRARY[..4], b"\x7fELF");
    }
}
