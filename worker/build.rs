//! Lets the worker's binaries find libtorch at run time without
//! `LD_LIBRARY_PATH`: the directory holding `libtorch_cpu.so` (from `LIBTORCH`,
//! as set by `scripts/env.sh`) goes into the binaries' RUNPATH, and is passed
//! to the code as `CROSSFOLD_TORCH_LIB` so that `libtorch_cuda.so` can be
//! loaded at start-up where CUDA is present (see `src/device.rs`).
//!
//! libtorch_cuda is deliberately not linked: torch-sys asks for it, but rustc
//! links with `--as-needed` and drops it, and linking it for real would make
//! the binary unable to start on CPU-only installs that lack the CUDA
//! libraries. Loading it at start-up works on both.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    let lib_dir = std::env::var("LIBTORCH")
        .map(|root| PathBuf::from(root).join("lib"))
        .ok()
        .filter(|dir| dir.join("libtorch_cpu.so").exists());
    // Image builds have no .git: they pass the commit in CROSSFOLD_GIT_COMMIT.
    // Otherwise the commit, marked `-dirty` when tracked files differ from it.
    println!("cargo:rerun-if-env-changed=CROSSFOLD_GIT_COMMIT");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = std::env::var("CROSSFOLD_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            let head = git(&["rev-parse", "--short=12", "HEAD"])?;
            // Built with uncommitted changes to the tracked files the
            // worker is built from: the commit alone would claim code it
            // does not hold. (`--no-optional-locks`: no index refresh, so
            // no lock taken beside the user's own git commands.)
            let dirty = git(&[
                "--no-optional-locks",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
            ]
            .into_iter()
            .chain(BUILT_FROM)
            .collect::<Vec<_>>())
            .is_some_and(|s| !s.is_empty());
            Some(if dirty { format!("{head}-dirty") } else { head })
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=CROSSFOLD_GIT_COMMIT={commit}");
    for path in git_head_files() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    // The dirty mark follows the sources the worker is built from (the
    // shim is recompiled only when its own inputs change: see compile_shim).
    for path in BUILT_FROM {
        println!("cargo:rerun-if-changed={path}");
    }
    // libtorch's version, from the torch package's version.py when present.
    let libtorch_version = std::env::var("LIBTORCH")
        .ok()
        .and_then(|root| std::fs::read_to_string(PathBuf::from(root).join("version.py")).ok())
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("__version__"))
                .and_then(|l| l.split(['\'', '"']).nth(1).map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=CROSSFOLD_LIBTORCH_VERSION={libtorch_version}");
    compile_shim();
    build_graph_lib();
    match lib_dir {
        Some(dir) => {
            let dir = dir.canonicalize().unwrap_or(dir);
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
            println!("cargo:rustc-env=CROSSFOLD_TORCH_LIB={}", dir.display());
        }
        None => {
            println!(
                "cargo:warning=LIBTORCH is not set to a libtorch with lib/libtorch_cpu.so; \
                 the worker will need LD_LIBRARY_PATH at run time (run `make setup` and \
                 `. scripts/env.sh`)"
            );
            println!("cargo:rustc-env=CROSSFOLD_TORCH_LIB=");
        }
    }
}

/// Compile shim/precision.cpp (bf16 autocast, TF32, channels-last) and
/// shim/optim.cpp (fused optimiser steps) against
/// libtorch's headers, with the flags torch-sys uses.
fn compile_shim() {
    println!("cargo:rerun-if-changed=shim/precision.cpp");
    println!("cargo:rerun-if-changed=shim/optim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let Ok(root) = std::env::var("LIBTORCH") else {
        panic!("LIBTORCH is not set: run `make setup` and `. scripts/env.sh` (see README)");
    };
    let root = PathBuf::from(root);
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
    // This script also reruns on every source edit (for the dirty mark):
    // reuse the compiled shim when its sources, libtorch and the ABI are
    // what it was built from (compiling it takes about 10 s).
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let lib = out.join("libcrossfold_shim.a");
    let stamp = out.join("crossfold_shim.inputs");
    let inputs = format!("{}\n{abi}\n", root.display());
    if fresh(
        &lib,
        &stamp,
        &inputs,
        &["shim/precision.cpp", "shim/optim.cpp", "build.rs"],
    ) {
        println!("cargo:rustc-link-search=native={}", out.display());
        println!("cargo:rustc-link-lib=static=crossfold_shim");
        println!("cargo:rustc-link-lib=stdc++");
        return;
    }
    cc::Build::new()
        .cpp(true)
        .file("shim/precision.cpp")
        .file("shim/optim.cpp")
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false)
        .compile("crossfold_shim");
    let _ = std::fs::write(&stamp, inputs);
}

/// Build shim/graph.cpp (CUDA graphs of a training step) as its own shared
/// library, `$OUT_DIR/libcrossfold_graph.so`, linked against libtorch_cuda;
/// src/graph.rs embeds it and loads it at run time where CUDA is present
/// (the binary itself never links libtorch_cuda: see the top of this file).
/// Where it cannot be built (no libtorch_cuda.so, or no CUDA runtime headers:
/// `scripts/setup-libtorch.sh` installs them), the file is left empty and
/// `CROSSFOLD_GRAPH_LIB_NOTE` says why; jobs then train without graphs.
fn build_graph_lib() {
    println!("cargo:rerun-if-changed=shim/graph.cpp");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let lib = out.join("libcrossfold_graph.so");
    let note = match graph_lib(&lib) {
        Ok(()) => String::new(),
        Err(why) => {
            let _ = std::fs::write(&lib, b"");
            println!("cargo:warning=CUDA graphs left out of the worker: {why}");
            why
        }
    };
    println!("cargo:rustc-env=CROSSFOLD_GRAPH_LIB_NOTE={note}");
}

fn graph_lib(lib: &std::path::Path) -> Result<(), String> {
    let root = PathBuf::from(std::env::var("LIBTORCH").map_err(|_| "LIBTORCH is not set")?);
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
    let torch_lib = root.join("lib");
    if !torch_lib.join("libtorch_cuda.so").exists() {
        return Err(format!("no libtorch_cuda.so in {}", torch_lib.display()));
    }
    // The CUDA runtime's headers and library: the nvidia wheels beside the
    // torch package (site-packages/nvidia/cu*/), or a CUDA toolkit.
    let mut cuda_dirs: Vec<PathBuf> = root
        .parent()
        .map(|site| site.join("nvidia"))
        .and_then(|n| std::fs::read_dir(n).ok())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    cuda_dirs.sort();
    cuda_dirs.extend(
        std::env::var("CUDA_HOME")
            .ok()
            .map(PathBuf::from)
            .into_iter()
            .chain([PathBuf::from("/usr/local/cuda")]),
    );
    let cuda = cuda_dirs
        .iter()
        .find(|d| d.join("include/cuda_runtime_api.h").exists())
        .ok_or(
            "no CUDA runtime headers (include/cuda_runtime_api.h) beside torch or in CUDA_HOME",
        )?;
    let include = cuda.join("include");
    if !include.join("crt/host_config.h").exists() {
        return Err(format!(
            "no {} (the nvidia-cuda-crt wheel: run scripts/setup-libtorch.sh)",
            include.join("crt/host_config.h").display()
        ));
    }
    let cudart = ["lib", "lib64"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(cuda.join(sub)).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libcudart.so"))
        })
        .ok_or_else(|| format!("no libcudart.so in {}", cuda.display()))?;
    // Reuse the library when its source, libtorch and the ABI are unchanged.
    let stamp = lib.with_extension("inputs");
    let inputs = format!("{}\n{abi}\n{}\n", root.display(), cudart.display());
    if fresh(lib, &stamp, &inputs, &["shim/graph.cpp", "build.rs"]) {
        return Ok(());
    }
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let status = std::process::Command::new(compiler.path())
        .args(["-shared", "-fPIC", "-O2", "-std=c++17"])
        .arg(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .arg("-DGLOG_USE_GLOG_EXPORT")
        .arg("-Wno-interference-size")
        .arg("-I")
        .arg(root.join("include"))
        .arg("-I")
        .arg(root.join("include/torch/csrc/api/include"))
        .arg("-I")
        .arg(&include)
        .arg("shim/graph.cpp")
        .arg("-o")
        .arg(lib)
        .arg("-Wl,-soname,libcrossfold_graph.so")
        .arg("-L")
        .arg(&torch_lib)
        .args(["-ltorch_cuda", "-lc10_cuda", "-ltorch_cpu", "-lc10"])
        .arg(&cudart)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", compiler.path().display()))?;
    if !status.success() {
        return Err(format!("compiling shim/graph.cpp failed ({status})"));
    }
    let _ = std::fs::write(&stamp, inputs);
    Ok(())
}

/// Whether `lib` (not empty) was built from `inputs` (libtorch, ABI, ...,
/// as recorded in `stamp`) and after every one of `sources` last changed.
/// This script reruns on every source edit (for the dirty mark), and
/// compiling a shim takes about 10 s.
fn fresh(lib: &std::path::Path, stamp: &std::path::Path, inputs: &str, sources: &[&str]) -> bool {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    std::fs::read_to_string(stamp).is_ok_and(|s| s == inputs)
        && std::fs::metadata(lib).is_ok_and(|m| m.len() > 0)
        && modified(lib).is_some_and(|built| {
            sources
                .iter()
                .all(|src| modified(std::path::Path::new(src)).is_some_and(|m| m <= built))
        })
}

/// What the worker is built from, relative to worker/.
const BUILT_FROM: [&str; 6] = [
    "src",
    "shim",
    "build.rs",
    "../shared/src",
    "../proto",
    "../Cargo.lock",
];

/// The files whose change means a new commit: HEAD, the branch refs
/// (cargo scans a directory for changes, so a ref first written loose after
/// living in packed-refs counts) and packed-refs; in a linked worktree HEAD
/// is the worktree's own and the refs are the main repository's. Only paths
/// that exist: cargo re-runs a build script on every build for one that
/// does not.
fn git_head_files() -> Vec<PathBuf> {
    let git = |arg: &str| {
        std::process::Command::new("git")
            .args(["rev-parse", "--path-format=absolute", arg])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
    };
    let (Some(git_dir), Some(common)) = (git("--git-dir"), git("--git-common-dir")) else {
        return Vec::new();
    };
    [
        git_dir.join("HEAD"),
        common.join("refs").join("heads"),
        common.join("packed-refs"),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .collect()
}
