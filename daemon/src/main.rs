//! `vcfd`: command-line entry point. Only this binary uses `anyhow`; libraries return typed errors.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vcfd: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
