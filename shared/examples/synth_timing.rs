//! Time the generation of the default synthetic cohort (520 images, 256 px).
//!
//! Run: `cargo run --release -p crossfold-shared --example synth_timing`

use crossfold_shared::synth::{generate, SynthConfig};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let cfg = SynthConfig::default();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let start = Instant::now();
    let manifest = generate(&cfg, dir.path())?;
    let elapsed = start.elapsed();
    println!(
        "generated {} images of {} px on {} threads in {:.2} s ({:.1} ms/image)",
        manifest.entries.len(),
        cfg.size,
        threads,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / manifest.entries.len() as f64
    );
    Ok(())
}
