//! Training steps replayed from a CUDA graph (`train.cuda_graph`).
//!
//! A captured step reads its inputs from tensors whose addresses are fixed
//! at capture: the batch's image indices, its augmentation uniforms and the
//! learning rate are copied into them before every step, on the device,
//! and the step adds its loss to a fixed accumulator. The first
//! [`Graphed::WARMUP`] steps run eagerly on the graph's side stream (cuDNN
//! and cuBLAS pick and allocate what they need there), the next one is
//! captured, and every later one is a replay.
//!
//! ```text
//!   warm-up (eager) --WARMUP steps--> capture --ok--> replay, replay, ...
//!                                        |
//!                                        +--fails--> eager, still on the
//!                                                    side stream (reason kept)
//! ```
//!
//! After a failed capture the steps stay on the side stream, so everything
//! the job queued there (snapshots of the best epoch included) is ordered
//! on one stream until [`Graphed::finish`] waits for it.

use super::TrainError;
use crate::graph::StepGraph;
use tch::{Device, Kind, Tensor};

pub(super) struct Graphed {
    graph: StepGraph,
    /// The capture failed: every step runs eagerly.
    given_up: bool,
    pub idx: Tensor,
    pub u: Tensor,
    pub lr: Tensor,
    warmup_left: usize,
    /// Steps run by replaying the graph.
    pub replays: u64,
    /// Why the graph was given up, when it was.
    pub fallback: Option<String>,
}

/// What one step does, given its inputs: image indices, augmentation
/// uniforms and the learning rate, all on the device.
pub(super) type StepBody<'a> = dyn FnMut(&Tensor, &Tensor, &Tensor) -> Result<(), TrainError> + 'a;

impl Graphed {
    /// Eager steps before the capture. PyTorch's whole-network capture
    /// example uses 3; each costs an ordinary step.
    pub const WARMUP: usize = 3;

    /// Fixed inputs for batches of `batch` images with `params` uniforms
    /// each, and the graph's side stream entered. `Err` gives the reason
    /// graphs cannot be used (the caller trains eagerly then).
    pub fn start(index: usize, device: Device, batch: i64, params: i64) -> Result<Self, String> {
        let tensors = || -> Result<(Tensor, Tensor, Tensor), tch::TchError> {
            Ok((
                Tensor::f_zeros([batch], (Kind::Int64, device))?,
                Tensor::f_zeros([batch, params], (Kind::Float, device))?,
                Tensor::f_zeros([], (Kind::Float, device))?,
            ))
        };
        let (idx, u, lr) = tensors().map_err(|e| e.to_string())?;
        let mut graph = StepGraph::new(index).map_err(|e| e.to_string())?;
        graph.enter().map_err(|e| e.to_string())?;
        Ok(Graphed {
            graph,
            given_up: false,
            idx,
            u,
            lr,
            warmup_left: Self::WARMUP,
            replays: 0,
            fallback: None,
        })
    }

    /// Run one step whose inputs are already in `idx`, `u` and `lr`:
    /// eagerly during warm-up or after a fallback, else by replay
    /// (capturing first when there is no graph yet).
    pub fn step(&mut self, body: &mut StepBody) -> Result<(), TrainError> {
        if self.given_up {
            return body(&self.idx, &self.u, &self.lr);
        }
        let graph = &mut self.graph;
        if graph.captured() {
            if let Err(e) = graph.replay() {
                // A replay that fails leaves the device in an unknown state:
                // the job fails rather than train on.
                return Err(TrainError::Graph(e));
            }
            self.replays += 1;
            return Ok(());
        }
        if self.warmup_left > 0 {
            self.warmup_left -= 1;
            return body(&self.idx, &self.u, &self.lr);
        }
        let captured = match graph.begin_capture() {
            Err(e) => Err(e.to_string()),
            Ok(()) => {
                let recorded = body(&self.idx, &self.u, &self.lr);
                let ended = graph.end_capture();
                match (recorded, ended) {
                    (Ok(()), Ok(())) => Ok(()),
                    (Err(e), _) => Err(format!("the step could not be captured: {e}")),
                    (Ok(()), Err(e)) => Err(e.to_string()),
                }
            }
        };
        match captured {
            Ok(()) => {
                // Capturing records the step without running it.
                graph.replay().map_err(TrainError::Graph)?;
                self.replays += 1;
                Ok(())
            }
            Err(reason) => {
                // Nothing recorded ran: train this step and the rest
                // eagerly.
                tracing::warn!(reason = %reason, "cuda graph given up; training on without it");
                self.fallback = Some(reason);
                self.given_up = true;
                body(&self.idx, &self.u, &self.lr)
            }
        }
    }

    /// Wait for the side stream and return to the thread's previous one.
    pub fn finish(&mut self) -> Result<(), TrainError> {
        self.graph.leave().map_err(TrainError::Graph)
    }
}
