//! The stock `vcsync` binary: the command line with the built-in plugins.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    vcsync::main_with_plugins(vcsync::builtin_plugins())
}
