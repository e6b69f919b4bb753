//! The `vcsync` binary: command line, logging and wiring; the work happens in the crates.
#![forbid(unsafe_code)]

mod cli;
mod clients;
mod dev;
mod logging;
mod rate_limit;
mod sidecar;

fn main() -> std::process::ExitCode {
    cli::main()
}
