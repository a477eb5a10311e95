//! `wavemamba bench step`: the per-sample cost of the fused CPU step engine
//! ([`crate::stream::StepEngine`]) against the tch recurrent step (`WaveMamba::step`), in µs per
//! sample and as a real-time factor at the model's sample rate.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use tch::{Device, Tensor};

use crate::config::{Architecture, AudioConfig, MambaConfig};
use crate::model::{checkpoint, WaveMamba};
use crate::stream::{DenoiseEngine, Isa, StepEngine};
use crate::{Error, Result};

/// Which model to run.
#[derive(Debug, Clone)]
pub enum StepModel {
    /// A model directory (`config.json`, `model.safetensors`, …).
    Dir(PathBuf),
    /// Random weights of a size preset (`MambaConfig::preset`), 16 kHz (a U-Net when
    /// [`StepBench::pooling`] is not empty).
    Preset(String),
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct StepBench {
    pub model: StepModel,
    /// Streams advanced together by each step (the tch step runs them as one batch).
    pub streams: usize,
    /// Wall-clock seconds spent timing each path (after a warm-up).
    pub seconds: f64,
    /// Engine kernels; `None` = the best this CPU runs.
    pub isa: Option<Isa>,
    /// Seed of the random weights (presets) and of the input samples.
    pub seed: u64,
    /// Presets only: pooling factors of a U-Net (`n_layer` blocks spread over the stages);
    /// empty = the plain model.
    pub pooling: Vec<i64>,
}

/// What one run measured. "Per sample" = one step: every stream advances by one sample.
#[derive(Debug, Serialize)]
pub struct StepReport {
    pub model: String,
    /// `plain` or `unet`.
    pub architecture: String,
    /// U-Net pooling factors (empty for the plain model).
    pub pooling: Vec<i64>,
    pub d_model: i64,
    pub n_layer: i64,
    pub d_state: i64,
    pub parameters: i64,
    pub sample_rate: u32,
    pub streams: usize,
    /// libtorch intra-op threads (the engine itself runs on one thread).
    pub threads: i32,
    pub isa: Isa,
    /// Median wall µs of one engine step (all streams).
    pub engine_us_per_sample: f64,
    /// `engine_us_per_sample / streams`: throughput per stream.
    pub engine_us_per_stream_sample: f64,
    /// `engine_us_per_sample` over the sample period (1e6 / sample_rate µs): < 1 keeps up.
    pub engine_rtf: f64,
    /// Median wall µs of one tch step (all streams as one batch; tokens to tensor included).
    pub tch_us_per_sample: f64,
    pub tch_us_per_stream_sample: f64,
    pub tch_rtf: f64,
    /// `tch_us_per_sample / engine_us_per_sample`
    pub speedup_vs_tch: f64,
    /// ‖engine − tch‖ / ‖tch‖ over the logits of the first check steps from a zero state.
    pub rel_err_vs_tch: f64,
    pub engine_steps_timed: usize,
    pub tch_steps_timed: usize,
    /// For a denoiser (task `denoise`): median µs of one [`DenoiseEngine::process`] call
    /// (mu-law in, engine step, posterior mean out) and its real-time factor, one stream.
    pub denoise_us_per_sample: Option<f64>,
    pub denoise_rtf: Option<f64>,
}

/// Steps compared between the engine and tch before timing.
const CHECK_STEPS: usize = 200;

/// Median µs per step of `f(step_index)` over about `budget_s` seconds, timed in chunks of
/// about a millisecond (so a chunk that the OS preempted lands in the tail, not the median),
/// after an untimed warm-up. Returns (µs per step, steps timed).
fn time_steps(budget_s: f64, mut f: impl FnMut(usize) -> Result<()>) -> Result<(f64, usize)> {
    let mut i = 0;
    let warm = Instant::now();
    while i < 8 || warm.elapsed().as_secs_f64() < 0.05_f64.min(budget_s / 4.0) {
        f(i)?;
        i += 1;
    }
    let est_us = warm.elapsed().as_secs_f64() * 1e6 / i as f64;
    let chunk = ((1000.0 / est_us) as usize).clamp(1, 4096);
    let (start, mut per_step) = (Instant::now(), Vec::new());
    while per_step.len() < 5 || start.elapsed().as_secs_f64() < budget_s {
        let t = Instant::now();
        for _ in 0..chunk {
            f(i)?;
            i += 1;
        }
        per_step.push(t.elapsed().as_secs_f64() * 1e6 / chunk as f64);
    }
    per_step.sort_by(f64::total_cmp);
    Ok((per_step[per_step.len() / 2], per_step.len() * chunk))
}

/// Loads or builds the model on the CPU; returns it with a name for reports.
///
/// # Errors
/// A model directory that cannot be loaded, an unknown preset, `pooling` with a directory.
pub fn load_model(b: &StepBench) -> Result<(WaveMamba, String)> {
    match &b.model {
        StepModel::Dir(_) if !b.pooling.is_empty() => Err(Error::InvalidArgument {
            name: "pooling",
            reason: "only for a preset: a model directory states its own architecture".into(),
        }),
        StepModel::Dir(dir) => Ok((
            checkpoint::load(dir, Device::Cpu)?,
            dir.display().to_string(),
        )),
        StepModel::Preset(name) => {
            tch::manual_seed(b.seed as i64);
            let audio = match b.pooling.is_empty() {
                true => AudioConfig::default(),
                false => AudioConfig {
                    architecture: Architecture::Unet,
                    pooling: b.pooling.clone(),
                    ..AudioConfig::default()
                },
            };
            let m = WaveMamba::new(MambaConfig::preset(name)?, audio, Device::Cpu)?;
            Ok((m, format!("preset {name} (random weights)")))
        }
    }
}

/// Most streams one benchmark steps (each holds its own recurrent state and token buffers).
pub const MAX_STREAMS: usize = 1 << 16;
/// Longest audio one benchmark times, in seconds (prefill: the prompt; step: the stepped audio).
pub const MAX_SECONDS: f64 = 3600.0;

/// Runs the benchmark.
///
/// # Errors
/// A model that cannot be loaded or that the engine does not run, invalid settings.
pub fn run(b: &StepBench) -> Result<StepReport> {
    if !(1..=MAX_STREAMS).contains(&b.streams) {
        return Err(Error::InvalidArgument {
            name: "streams",
            reason: format!("must be between 1 and {MAX_STREAMS}, got {}", b.streams),
        });
    }
    if !(b.seconds > 0.0 && b.seconds <= MAX_SECONDS) {
        return Err(Error::InvalidArgument {
            name: "seconds",
            reason: format!("must be > 0 and ≤ {MAX_SECONDS}, got {}", b.seconds),
        });
    }
    let (m, name) = load_model(b)?;
    let s = b.streams;
    let isa = b.isa.unwrap_or_else(Isa::detect);
    let mut engine = StepEngine::with_isa(&m, s, isa)?;
    let vocab = engine.vocab();

    // Input samples: a fixed pseudo-random table (xorshift), cycled.
    const TABLE: usize = 4096;
    let mut x = b.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let tokens: Vec<i64> = (0..TABLE * s)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab as u64) as i64
        })
        .collect();
    let at = |i: usize| &tokens[(i % TABLE) * s..(i % TABLE + 1) * s];

    // The two paths agree (from a zero state, same inputs).
    let mut state = m.zero_state(s as i64);
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for i in 0..CHECK_STEPS {
        let t = Tensor::f_from_slice(at(i))?;
        let reference = tch::no_grad(|| m.step(&t, &mut state));
        let reference = Vec::<f32>::try_from(reference.reshape([-1]))?;
        for (a, r) in engine.step(at(i))?.iter().zip(&reference) {
            diff += (*a as f64 - *r as f64).powi(2);
            norm += (*r as f64).powi(2);
        }
    }
    engine.reset();

    let (engine_us, engine_steps) = time_steps(b.seconds, |i| engine.step(at(i)).map(|_| ()))?;
    let mut state = m.zero_state(s as i64);
    let (tch_us, tch_steps) = time_steps(b.seconds, |i| {
        let t = Tensor::f_from_slice(at(i))?;
        let _logits = tch::no_grad(|| m.step(&t, &mut state));
        Ok(())
    })?;

    let period_us = 1e6 / m.audio.sample_rate as f64;
    let denoise_us = if m.audio.task == crate::config::Task::Denoise {
        let mut dn = DenoiseEngine::new(&m)?;
        let mut acc = 0.0f32;
        let (us, _) = time_steps(b.seconds, |i| {
            acc += dn.process(crate::audio::mulaw::decode(tokens[i % tokens.len()] as u8));
            Ok(())
        })?;
        std::hint::black_box(acc);
        Some(us)
    } else {
        None
    };
    Ok(StepReport {
        model: name,
        architecture: match m.audio.architecture {
            Architecture::Plain => "plain".into(),
            Architecture::Unet => "unet".into(),
        },
        pooling: engine.pooling().iter().map(|&p| p as i64).collect(),
        d_model: m.config.d_model,
        n_layer: m.config.n_layer,
        d_state: m.config.ssm_cfg.d_state,
        parameters: m.num_parameters(),
        sample_rate: m.audio.sample_rate,
        streams: s,
        threads: tch::get_num_threads(),
        isa,
        engine_us_per_sample: engine_us,
        engine_us_per_stream_sample: engine_us / s as f64,
        engine_rtf: engine_us / period_us,
        tch_us_per_sample: tch_us,
        tch_us_per_stream_sample: tch_us / s as f64,
        tch_rtf: tch_us / period_us,
        speedup_vs_tch: tch_us / engine_us,
        rel_err_vs_tch: (diff / norm.max(f64::MIN_POSITIVE)).sqrt(),
        engine_steps_timed: engine_steps,
        tch_steps_timed: tch_steps,
        denoise_us_per_sample: denoise_us,
        denoise_rtf: denoise_us.map(|us| us / period_us),
    })
}

impl std::fmt::Display for StepReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "step: {} ({}{}, d_model {}, {} layers, d_state {}, {} parameters), {} stream(s) at \
             {} Hz, libtorch threads {}",
            self.model,
            self.architecture,
            match self.pooling.is_empty() {
                true => String::new(),
                false => format!(" pooling {:?}", self.pooling),
            },
            self.d_model,
            self.n_layer,
            self.d_state,
            self.parameters,
            self.streams,
            self.sample_rate,
            self.threads
        )?;
        writeln!(
            f,
            "  engine ({:6}) {:9.2} µs/sample  ({:.3} µs per stream-sample)  RTF {:.4}",
            self.isa.name(),
            self.engine_us_per_sample,
            self.engine_us_per_stream_sample,
            self.engine_rtf
        )?;
        writeln!(
            f,
            "  tch step        {:9.2} µs/sample  ({:.3} µs per stream-sample)  RTF {:.4}",
            self.tch_us_per_sample, self.tch_us_per_stream_sample, self.tch_rtf
        )?;
        write!(
            f,
            "  engine is {:.1}× faster than the tch step; logits agree to rel err {:.1e}",
            self.speedup_vs_tch, self.rel_err_vs_tch
        )?;
        if let (Some(us), Some(rtf)) = (self.denoise_us_per_sample, self.denoise_rtf) {
            write!(
                f,
                "\n  denoiser (one stream, sample in → sample out) {us:9.2} µs/sample  RTF {rtf:.4}"
            )?;
        }
        Ok(())
    }
}
