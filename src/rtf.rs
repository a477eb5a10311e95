//! A real-time factor (seconds of work per second of audio) in words that cannot be misread:
//! every command that reports one (generate, denoise, live) prints it through here.

/// A real-time factor (seconds of work per second of audio: lower is faster) in words that
/// cannot be misread, e.g. `real-time factor 0.31 (3.23× faster than real time)`.
pub fn real_time_text(rtf: f64) -> String {
    if !(rtf.is_finite() && rtf > 0.0) {
        return format!("real-time factor {rtf:.2}");
    }
    format!("real-time factor {} ({})", number(rtf), speed_text(rtf))
}

/// The speed of a real-time factor alone: `3.23× faster than real time`, `2.00× slower than
/// real time` (for a progress bar, where space is short).
pub fn speed_text(rtf: f64) -> String {
    if !(rtf.is_finite() && rtf > 0.0) {
        return "speed unknown".to_owned();
    }
    if rtf < 1.0 {
        format!("{}× faster than real time", number(1.0 / rtf))
    } else if rtf > 1.0 {
        format!("{}× slower than real time", number(rtf))
    } else {
        "as fast as real time".to_owned()
    }
}

/// `x` with two significant digits at least, whatever its size.
fn number(x: f64) -> String {
    match x {
        x if x >= 100.0 => format!("{x:.0}"),
        x if x >= 0.01 => format!("{x:.2}"),
        x => format!("{x:.1e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::real_time_text;

    #[test]
    fn real_time_factors_say_which_way_is_faster() {
        assert_eq!(
            real_time_text(0.25),
            "real-time factor 0.25 (4.00× faster than real time)"
        );
        assert_eq!(
            real_time_text(2.0),
            "real-time factor 2.00 (2.00× slower than real time)"
        );
        assert_eq!(
            real_time_text(0.0005),
            "real-time factor 5.0e-4 (2000× faster than real time)"
        );
        assert_eq!(real_time_text(0.0), "real-time factor 0.00");
    }
}
