//! The `wavemamba` command line (subcommands in `cli/`).

mod cli;

use clap::Parser;

fn main() {
    wavemamba::runtime::tune_allocator();
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
