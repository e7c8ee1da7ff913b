//! crossfold's worker: the only crate that links libtorch (through `tch`).
//!
//! - [`device`]: finding CUDA devices (loading libtorch's CUDA backend at
//!   start-up) and choosing the device a spec asks for.

pub mod device;
