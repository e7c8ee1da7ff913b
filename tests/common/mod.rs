//! Helpers for the CLI integration tests: run the real `crossfold` binary.
#![allow(dead_code)]

pub mod cluster;

use std::path::Path;
use std::process::{Command, Output};

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn failed(&self) -> &Self {
        assert_ne!(
            self.code, 0,
            "expected failure\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

pub fn crossfold(args: &[&str]) -> Run {
    crossfold_in(None, args)
}

pub fn crossfold_in(dir: Option<&Path>, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crossfold"));
    cmd.args(args);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run crossfold");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A small synthetic cohort (10 normal, 4 benign, 6 malignant, 64 px).
pub fn small_cohort(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("cohort");
    crossfold(&[
        "dataset",
        "synth",
        "--out",
        out.to_str().unwrap(),
        "--normal",
        "10",
        "--benign",
        "5",
        "--malignant",
        "10",
        "--size",
        "64",
        "--seed",
        "7",
    ])
    .ok();
    out.join("manifest.csv")
}
