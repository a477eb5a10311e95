//! The `wavemamba` command line (subcommands in `cli/`).

mod cli;

fn main() {
    wavemamba::runtime::tune_allocator();
    let args = cli::parse();
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
        let text = without_backtrace(&cause.to_string());
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// libtorch's error text up to its C++ backtrace ("Exception raised from …", "frame #0: …"):
/// the frames help libtorch's developers, not our users.
fn without_backtrace(text: &str) -> String {
    let cut = ["\nException raised from", "\nframe #0"]
        .iter()
        .filter_map(|marker| text.find(marker))
        .min()
        .unwrap_or(text.len());
    text[..cut].trim_end().to_string()
}
