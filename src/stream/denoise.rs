//! [`DenoiseEngine`]: the step engine of a denoiser, one noisy sample in, one clean sample out.

use super::StepEngine;
use crate::audio::mulaw;
use crate::denoise::expected_value_row;
use crate::model::WaveMamba;
use crate::Result;

/// The fused CPU step of a denoiser (task `denoise`, see [`crate::denoise`]) for one stream:
/// mu-law-encodes the noisy sample, advances every layer by one step and returns the posterior
/// mean of the clean sample. No allocation, no libtorch call; equals
/// [`crate::denoise::denoise_samples`] sample for sample (f32 rounding).
#[derive(Debug, Clone)]
pub struct DenoiseEngine {
    engine: StepEngine,
    sample_rate: u32,
}

impl DenoiseEngine {
    /// An engine for `model` from a zero state.
    ///
    /// # Errors
    /// [`crate::Error::Config`] unless `model` is a denoiser, or for what [`StepEngine::new`]
    /// refuses.
    pub fn new(model: &WaveMamba) -> Result<DenoiseEngine> {
        model.check_task(crate::config::Task::Denoise)?;
        Ok(DenoiseEngine {
            engine: StepEngine::new(model, 1)?,
            sample_rate: model.audio.sample_rate,
        })
    }

    /// The rate (Hz) [`process`](Self::process) expects and returns samples at.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// One noisy sample in [-1, 1] (clamped; NaN is read as silence) → one clean sample.
    pub fn process(&mut self, x: f32) -> f32 {
        match self.engine.step(&[mulaw::encode(x)]) {
            Ok(logits) => expected_value_row(logits),
            // Unreachable: one in-range token for a one-stream engine is always accepted.
            Err(_) => 0.0,
        }
    }

    /// Back to the zero state.
    pub fn reset(&mut self) {
        self.engine.reset();
    }
}
