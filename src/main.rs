//! The `cairn` binary: parse, set up logging, run, exit with the documented code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cairn::cli::Cli::parse();
    cairn::cli::init_logging(&cli);
    std::process::ExitCode::from(cairn::cli::run(cli).code())
}
