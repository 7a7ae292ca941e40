//! The `baton` binary: parse the command line and run it.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = baton::cli::Cli::parse();
    match baton::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
