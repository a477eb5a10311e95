//! The baseline: RNNoise (Valin 2018) through the `nnnoiseless` crate, a pure-Rust port. It runs on
//! 48 kHz 16-bit-range frames of 480 samples; [`rnnoise`] resamples in and out and removes its
//! algorithmic delay so that its output lines up with the input sample for sample.

use nnnoiseless::DenoiseState;

use crate::audio;
use crate::Result;

/// RNNoise's native rate (Hz).
pub const RATE: u32 = 48_000;
/// Samples per RNNoise frame at [`RATE`].
pub const FRAME: usize = DenoiseState::FRAME_SIZE;
/// RNNoise's delay at [`RATE`] in samples: one frame (its output is the overlap-added previous
/// frame; measured in `tests`).
pub const DELAY: usize = FRAME;

/// Denoises mono `x` at `rate` with RNNoise; the result has the same length and rate and is
/// aligned with `x` (delay removed).
///
/// # Errors
/// Resampling errors (unsupported rate).
pub fn rnnoise(x: &[f32], rate: u32) -> Result<Vec<f32>> {
    let up = audio::resample(x, rate, RATE)?;
    let y48 = rnnoise_48k(&up);
    let mut y = audio::resample(&y48, RATE, rate)?;
    y.resize(x.len(), 0.0);
    Ok(y)
}

/// RNNoise at 48 kHz on samples in [-1, 1], delay removed, same length as `x`.
pub fn rnnoise_48k(x: &[f32]) -> Vec<f32> {
    let mut state = DenoiseState::new();
    let scale = 32_768.0f32;
    let mut out = Vec::with_capacity(x.len() + 2 * FRAME);
    let (mut inp, mut buf) = ([0.0f32; FRAME], [0.0f32; FRAME]);
    // Feed one extra frame of silence so the last input frame comes out too.
    for start in (0..x.len() + DELAY).step_by(FRAME) {
        for (i, v) in inp.iter_mut().enumerate() {
            *v = x.get(start + i).map_or(0.0, |&s| s * scale);
        }
        state.process_frame(&mut buf, &inp);
        out.extend(buf.iter().map(|&v| v / scale));
    }
    out.drain(..DELAY.min(out.len()));
    out.truncate(x.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lag at which RNNoise's output best matches a clean broadband input is [`DELAY`]
    /// (checked from one frame early to two frames late), so after alignment the lag is 0.
    #[test]
    fn output_is_aligned_with_input() {
        let mut rng = crate::rng::SplitMix(7);
        // Speech-like: noise bursts shaped by a slow envelope, loud enough to be kept.
        let x: Vec<f32> = (0..48_000)
            .map(|i| {
                let env = (0.5 + 0.5 * (i as f32 * 0.0008).sin()).powi(2);
                (rng.next_f32() - 0.5) * env * 0.8
            })
            .collect();
        let y = rnnoise_48k(&x);
        assert_eq!(y.len(), x.len());
        let corr = |lag: isize| -> f64 {
            (4800..40_000)
                .map(|i| f64::from(x[i]) * f64::from(y[(i as isize + lag) as usize]))
                .sum()
        };
        let f = FRAME as isize;
        let best = (-f..2 * f).max_by(|&a, &b| corr(a).total_cmp(&corr(b)));
        assert_eq!(best, Some(0));
    }
}
