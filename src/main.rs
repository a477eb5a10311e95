//! The `wavemamba` command line (subcommands in `cli/`).

mod cli;

use clap::Parser;

fn main() {
    wavemamba::runtime::tune_allocator();
    let args = cli::Cli::parse();
    let code = match cli::run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            1
        }
    };
    wavemamba::ops::profiler::exit(code);
}

/// The error and its causes joined by ": ", leaving out a cause whose text the previous message
/// already contains (library errors often print their source inline).
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
