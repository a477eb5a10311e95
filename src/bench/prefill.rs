//! `wavemamba bench prefill`: the CPU cost of reading a prompt (prefill: the parallel path with a
//! state, as [`crate::generate::generate_tokens`] runs it) against generating the same number
//! of seconds with the fused step engine (steps + sampling, as `generate` does), and the ratio.

use std::time::Instant;

use serde::Serialize;
use tch::Tensor;

use super::step::{load_model, StepBench, StepModel, MAX_SECONDS};
use crate::generate::{run_sampling, GenerateOptions};
use crate::model::START_TOKEN;
use crate::rng::SplitMix;
use crate::stream::StepEngine;
use crate::{Error, Result};

/// What to measure.
#[derive(Debug, Clone)]
pub struct PrefillBench {
    pub model: StepModel,
    /// Seconds of prompt prefilled, and seconds generated.
    pub seconds: f64,
    /// Timed repetitions of each (after one untimed run); medians are reported.
    pub reps: usize,
    /// Presets only: U-Net pooling factors (empty = plain).
    pub pooling: Vec<i64>,
    /// Seed of the random weights (presets), the prompt and the sampling.
    pub seed: u64,
    /// Profile one more prefill after the timed ones and write its Chrome trace here.
    pub trace: Option<std::path::PathBuf>,
}

/// What one run measured (batch 1, wall clock, medians).
#[derive(Debug, Serialize)]
pub struct PrefillReport {
    pub model: String,
    pub architecture: String,
    pub sample_rate: u32,
    pub seconds: f64,
    /// Samples prefilled (`[START] + prompt` minus the last prompt sample, as `generate`) and
    /// generated.
    pub samples: usize,
    /// libtorch intra-op threads used by the prefill (the engine runs on one thread).
    pub threads: i32,
    /// Median wall seconds of one prefill.
    pub prefill_s: f64,
    /// Median wall seconds of generating `samples` samples: engine steps + sampling.
    pub generate_s: f64,
    /// Median wall seconds of the engine steps alone over `samples` samples.
    pub engine_steps_s: f64,
    /// `prefill_s / generate_s` (the target: < 0.1).
    pub prefill_over_generate: f64,
    /// `prefill_s / engine_steps_s`
    pub prefill_over_engine_steps: f64,
    /// Prefill throughput, samples per second.
    pub prefill_samples_per_s: f64,
    pub reps: usize,
}

/// Runs the benchmark.
///
/// # Errors
/// A model that cannot be loaded, invalid settings, kernel errors.
pub fn run(b: &PrefillBench) -> Result<PrefillReport> {
    if !(b.seconds > 0.0 && b.seconds <= MAX_SECONDS) || b.reps == 0 {
        return Err(Error::InvalidArgument {
            name: "seconds/reps",
            reason: format!(
                "need 0 < seconds ≤ {MAX_SECONDS} and reps ≥ 1, got {} and {}",
                b.seconds, b.reps
            ),
        });
    }
    let (m, name) = load_model(&StepBench {
        model: b.model.clone(),
        streams: 1,
        seconds: 1.0,
        isa: None,
        seed: b.seed,
        pooling: b.pooling.clone(),
    })?;
    let rate = m.audio.sample_rate;
    let n = (b.seconds * rate as f64).round() as usize;
    // A noisy 220 Hz tone in mu-law classes: `[START] + prompt[..n − 1]` is what generate
    // prefills for a prompt of n samples (the last prompt sample is the first step's input).
    let mut rng = SplitMix(b.seed);
    let mut input = vec![START_TOKEN];
    input.extend((1..n).map(|t| {
        let x = 0.5 * (t as f64 * 220.0 * std::f64::consts::TAU / rate as f64).sin()
            + 0.1 * (rng.next_f32() as f64 - 0.5);
        crate::audio::mulaw::encode(x as f32) as i64
    }));
    let x = Tensor::f_from_slice(&input)?.f_unsqueeze(0)?; // (1, n)
    let prefill = || -> Result<f64> {
        let t = Instant::now();
        let mut state = m.zero_state(1);
        let _logits = tch::no_grad(|| m.prefill_last(&x, &mut state))?;
        Ok(t.elapsed().as_secs_f64())
    };
    let opts = GenerateOptions {
        samples: n,
        num: 1,
        temperature: 1.0,
        top_p: 1.0,
        seed: b.seed,
        progress: false,
        threads: 1,
    };
    let mut engine = StepEngine::new(&m, 1)?;
    let mut generate = || -> Result<(f64, f64)> {
        engine.reset();
        let (_, gen_s) = run_sampling(&mut engine, START_TOKEN as u8, &opts, rate)?;
        engine.reset();
        let t = Instant::now();
        for i in 0..n {
            engine.step(&[input[i % input.len()]])?;
        }
        Ok((gen_s, t.elapsed().as_secs_f64()))
    };
    prefill()?;
    generate()?;
    let (mut pre, mut gen, mut steps) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..b.reps {
        pre.push(prefill()?);
        let (g, s) = generate()?;
        gen.push(g);
        steps.push(s);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (prefill_s, generate_s, engine_steps_s) =
        (median(&mut pre), median(&mut gen), median(&mut steps));
    if let Some(path) = &b.trace {
        crate::ops::profiler::profile(path, false, prefill)?;
    }
    Ok(PrefillReport {
        model: name,
        architecture: format!("{:?}", m.audio.architecture).to_lowercase(),
        sample_rate: rate,
        seconds: b.seconds,
        samples: n,
        threads: tch::get_num_threads(),
        prefill_s,
        generate_s,
        engine_steps_s,
        prefill_over_generate: prefill_s / generate_s,
        prefill_over_engine_steps: prefill_s / engine_steps_s,
        prefill_samples_per_s: n as f64 / prefill_s,
        reps: b.reps,
    })
}

impl std::fmt::Display for PrefillReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "prefill vs generate: {} ({}), {} s = {} samples at {} Hz, libtorch threads {}, \
             median of {}",
            self.model,
            self.architecture,
            self.seconds,
            self.samples,
            self.sample_rate,
            self.threads,
            self.reps
        )?;
        writeln!(
            f,
            "  prefill              {:8.3} s  ({:.0} samples/s)",
            self.prefill_s, self.prefill_samples_per_s
        )?;
        writeln!(
            f,
            "  generate (engine)    {:8.3} s  (steps + sampling)",
            self.generate_s
        )?;
        writeln!(f, "  engine steps only    {:8.3} s", self.engine_steps_s)?;
        write!(
            f,
            "  prefill / generate = {:.3}   prefill / engine steps = {:.3}",
            self.prefill_over_generate, self.prefill_over_engine_steps
        )
    }
}
