//! `crossfold`: cross-validation experiments on radiographs.

mod cli;

use anyhow::Result;
use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    if args.is_offline() {
        crossfold_shared::logging::exit_quietly_on_closed_stdout();
    } else {
        crossfold_shared::logging::quiet_on_closed_stdout_panic();
    }
    // The coordinator reports what it does at info, and the handshakes it
    // refused (which tonic logs at debug: a client without the right
    // certificate, a plaintext client at a TLS port); other commands only
    // warn.
    let level = if args.is_coordinator() {
        "info,tonic::transport::server::io_stream=debug"
    } else {
        "warn"
    };
    crossfold_shared::logging::init(args.log_format, level);
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "error: {}",
                crossfold_shared::logging::error_chain(e.as_ref())
            );
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: cli::Cli) -> Result<std::process::ExitCode> {
    cli::dispatch(args)
}
