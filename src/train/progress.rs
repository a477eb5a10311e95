//! The training progress line.

use indicatif::{ProgressBar, ProgressStyle};

use super::TrainOptions;

/// The training progress bar (hidden without `opts.progress`), starting at step `at`.
pub(super) fn bar(opts: &TrainOptions, at: u64) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(opts.steps);
    let style = ProgressStyle::with_template("{wide_bar} step {pos}/{len}  {msg}  ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_position(at);
    bar
}

/// A training speed short enough for the progress line: `9.70 M samples/s`, `33.6 k samples/s`.
pub(super) fn rate_text(samples_per_s: f64) -> String {
    match samples_per_s {
        r if r >= 1e6 => format!("{:.2} M samples/s", r / 1e6),
        r if r >= 1e3 => format!("{:.1} k samples/s", r / 1e3),
        r => format!("{r:.0} samples/s"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rate_text_is_short() {
        assert_eq!(super::rate_text(9_704_321.0), "9.70 M samples/s");
        assert_eq!(super::rate_text(33_612.0), "33.6 k samples/s");
        assert_eq!(super::rate_text(512.4), "512 samples/s");
    }
}
