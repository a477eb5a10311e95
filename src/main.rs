//! The `wavemamba` command line (subcommands in `cli/`).

mod cli;

fn main() {
    wavemamba::runtime::tune_allocator();
    let args = cli::parse();
    install_panic_hook();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cli::run(args)));
    let code = match run {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("error: {}", chain(&e));
            1
        }
        // A libtorch error through tch's panicking API: the hook printed it.
        Err(payload) if torch_error(payload_text(payload.as_ref())).is_some() => 1,
        Err(payload) => std::panic::resume_unwind(payload),
    };
    wavemamba::ops::profiler::exit(code);
}

/// libtorch errors that surface as panics of tch's non-`f_` API (an allocation that does not
/// fit, say) are reported as one `error:` line, exit status 1; any other panic keeps Rust's
/// report: it is a bug.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        match torch_error(payload_text(info.payload())) {
            Some(message) => eprintln!("error: libtorch: {message}"),
            None => default(info),
        }
    }));
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        ""
    }
}

/// The message of `called `Result::unwrap()` on an `Err` value: Torch("…")`, up to libtorch's
/// backtrace (the Debug text escapes its newlines).
fn torch_error(panic: &str) -> Option<String> {
    let start = panic.find("value: Torch(\"")? + "value: Torch(\"".len();
    let text = &panic[start..];
    let end = text
        .find("\\n")
        .or_else(|| text.rfind("\")"))
        .unwrap_or(text.len());
    Some(text[..end].replace("\\\"", "\""))
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
