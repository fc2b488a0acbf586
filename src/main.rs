//! The `stackback` binary: parses the command line and hands over to [`cli`].

mod cli;

/// Counts the live heap for the daemon's memory metric and log line (see `memory`).
#[global_allocator]
static ALLOC: stackback::memory::Counting = stackback::memory::Counting;

fn main() {
    std::process::exit(cli::main());
}
