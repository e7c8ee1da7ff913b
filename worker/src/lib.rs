//! crossfold's worker: the only crate that links libtorch (through `tch`).
//!
//! - [`device`]: finding CUDA devices (loading libtorch's CUDA backend at
//!   start-up) and choosing the device a spec asks for.
//! - [`data`]: the data pipeline: images decoded once onto the device,
//!   batches gathered and augmented there.
//! - [`model`]: ResNet18/34/50 with a one-channel stem; [`weights`]:
//!   pretrained files and checkpoints.
//! - [`train`]: the training loop, schedules, early stopping, progress;
//!   [`graph`]: CUDA graphs of its step (a library loaded where CUDA is).
//! - [`evaluate`]: scoring images.
//! - [`job`]: one round end to end; [`outputs`]: its files.
//! - [`provenance`]: versions, device, seeds and hashes of a result.
//! - [`runtime`]: the worker process: register, lease, train, heartbeat,
//!   upload, release on shutdown; [`fetch`]: data sets by content hash,
//!   [`cache_limit`]: their cache kept under `--cache-max-gib`;
//!   [`metrics`]: its Prometheus metrics.
//! - [`precision`]: bf16 autocast, TF32 and channels-last through a C++ shim.
//! - [`bench`]: training throughput, against `bench/reference.py`.
//! - [`torch_error`]: libtorch's messages without their C++ stack traces.

pub mod bench;
pub mod cache_limit;
pub mod data;
pub mod device;
pub mod evaluate;
pub mod fetch;
pub mod graph;
pub mod job;
pub mod metrics;
pub mod model;
pub mod outputs;
pub mod precision;
pub mod provenance;
pub mod runtime;
pub mod torch_error;
pub mod train;
pub mod weights;
