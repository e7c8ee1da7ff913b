//! Compiles `proto/crossfold/v1/*.proto` with protox (a pure-Rust protobuf
//! compiler), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/crossfold/v1/common.proto",
        "proto/crossfold/v1/experiments.proto",
        "proto/crossfold/v1/workers.proto",
        "proto/crossfold/v1/data.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
