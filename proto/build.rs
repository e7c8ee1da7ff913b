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
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("crossfold_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
