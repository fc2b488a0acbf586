//! `completions` and `man`: generated from the command-line definition, no configuration needed.

use clap::CommandFactory;
use stackback::error::exit;

use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> i32 {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "stackback",
        &mut std::io::stdout(),
    );
    exit::OK
}

pub fn man() -> i32 {
    match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: cannot write the manual page: {e}");
            exit::FAILED
        }
    }
}
