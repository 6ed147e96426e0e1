//! The `direct-agent` binary: parses the command line and hands over to [`direct_agent::cli`].
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(direct_agent::cli::run());
}
