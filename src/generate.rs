//! Continuations: prefill a prompt with the parallel scan (one call), then sample one mu-law
//! token at a time for every stream of the batch. Audio in/out lives in the CLI-facing
//! [`continue_audio`]; [`generate_tokens`] is the token-level core.

use std::ops::Range;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tch::{Device, Kind, Tensor};

use crate::model::{State, WaveMamba, START_TOKEN};
use crate::sample::Sampler;
use crate::stream::StepEngine;
use crate::{Error, Result};

/// Settings of one generation.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Samples to generate after the prompt (per stream).
    pub samples: usize,
    /// Independent continuations, generated as one batch.
    pub num: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    /// Show a progress bar with the real-time factor.
    pub progress: bool,
    /// CPU threads of the step engine, each sampling its share of the streams (0 = one per core).
    /// The tokens do not depend on it.
    pub threads: usize,
}

/// Generated tokens and timings.
#[derive(Debug)]
pub struct Generated {
    /// `num` streams of `samples` tokens each.
    pub tokens: Vec<Vec<u8>>,
    pub prefill_s: f64,
    pub generate_s: f64,
    /// Which step path ran: "tch" or "engine".
    pub path: &'static str,
}

/// Advances every stream by one token and exposes the logits (streams × vocab, row-major).
pub trait Stepper {
    fn step(&mut self, tokens: &[u8]) -> Result<&[f32]>;
}

impl Stepper for StepEngine {
    fn step(&mut self, tokens: &[u8]) -> Result<&[f32]> {
        StepEngine::step(self, tokens)
    }
}

/// The tch recurrent step (any device), batched over streams.
pub struct TchStepper<'a> {
    model: &'a WaveMamba,
    state: State,
    logits: Vec<f32>,
}

impl<'a> TchStepper<'a> {
    pub fn new(model: &'a WaveMamba, state: State) -> Self {
        TchStepper {
            model,
            state,
            logits: Vec::new(),
        }
    }
}

impl Stepper for TchStepper<'_> {
    fn step(&mut self, tokens: &[u8]) -> Result<&[f32]> {
        let t: Vec<i64> = tokens.iter().map(|&x| x as i64).collect();
        let t = Tensor::from_slice(&t).to_device(self.model.device());
        let logits = tch::no_grad(|| self.model.step(&t, &mut self.state)); // (B, V)
        self.logits = Vec::<f32>::try_from(
            logits
                .to_kind(Kind::Float)
                .to_device(Device::Cpu)
                .reshape([-1]),
        )?;
        Ok(&self.logits)
    }
}

/// Prefills `prompt` (or nothing: unconditional) for `opts.num` streams and samples
/// `opts.samples` tokens per stream.
///
/// # Errors
/// Invalid options, kernel errors.
pub fn generate_tokens(
    model: &WaveMamba,
    prompt: &[u8],
    opts: &GenerateOptions,
) -> Result<Generated> {
    if opts.num == 0 {
        return Err(Error::InvalidArgument {
            name: "num",
            reason: "must be ≥ 1".into(),
        });
    }
    crate::sample::check_sampling(opts.temperature, opts.top_p)?;
    let n = opts.num as i64;
    let started = Instant::now();
    // Prefill: the model reads [START] + prompt; its last logits predict the first new sample.
    // Prefill once, then give every stream its own copy of the state.
    let mut state = model.zero_state(1);
    let mut input: Vec<i64> = vec![START_TOKEN];
    input.extend(prompt.iter().map(|&t| t as i64));
    let last_token = input.pop().unwrap_or(START_TOKEN) as u8;
    if !input.is_empty() {
        let x = Tensor::from_slice(&input)
            .unsqueeze(0)
            .to_device(model.device());
        let _logits = tch::no_grad(|| model.prefill_last(&x, &mut state))?;
    }
    if let Device::Cuda(index) = model.device() {
        tch::Cuda::synchronize(index as i64); // prefill_s: the GPU's work, not just its launch
    }
    let prefill_s = started.elapsed().as_secs_f64();
    let rate = model.audio.sample_rate;
    let workers = engine_workers(opts);
    let (generated, path) = if engine_steps(model.device(), opts.num, workers) {
        (
            sample_on_engines(model, &state, last_token, opts, workers, rate)?,
            "engine",
        )
    } else {
        let mut stepper = TchStepper::new(model, state.repeat_batch(n));
        (run_sampling(&mut stepper, last_token, opts, rate)?, "tch")
    };
    Ok(Generated {
        tokens: generated.0,
        prefill_s,
        generate_s: generated.1,
        path,
    })
}

/// Streams per engine thread up to which a model on a GPU still samples with the CPU step engine,
/// after the GPU prefill: with one thread, 256 streams on the engine and one batched tch step per
/// sample on the GPU tie; with more threads the engine is further ahead (the tch step's cost
/// grows with the batch). Measured with `generate --device cuda` on the H200 host (BENCHMARKS.md,
/// "generate: engine threads, and on CUDA"); `generate --help` states the rule.
pub const ENGINE_MAX_STREAMS_OFF_CPU: usize = 256;

/// Whether sampling runs on the fused CPU step engine (plain model and U-Net; no libtorch call per
/// sample) rather than the batched tch step on the model's device: always on the CPU, and on a GPU
/// for up to [`ENGINE_MAX_STREAMS_OFF_CPU`] streams per engine thread (a per-sample GPU step is
/// bound by kernel launches, not arithmetic). `WM_GENERATE_STEP=engine|tch` forces one path (for
/// benchmarks).
fn engine_steps(device: Device, streams: usize, workers: usize) -> bool {
    match std::env::var("WM_GENERATE_STEP").as_deref() {
        Ok("engine") => true,
        Ok("tch") => false,
        _ => device == Device::Cpu || streams <= ENGINE_MAX_STREAMS_OFF_CPU * workers,
    }
}

/// Engine threads for `opts`: `opts.threads` (0: the cores this process may use), at most one
/// per stream (`opts.num` ≥ 1, checked by the caller).
fn engine_workers(opts: &GenerateOptions) -> usize {
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    };
    threads.clamp(1, opts.num)
}

/// Samples `opts.num` continuations of `state` (the prefilled state of one stream) on `workers`
/// step engines, one thread each with a contiguous range of streams, each engine loading its own
/// copies of the state (so the whole batch is never held twice). Each stream's sampler is seeded
/// by its index among all streams and the engine steps streams independently, so the tokens are
/// those of one engine for all. Returns the streams' tokens and the seconds spent.
fn sample_on_engines(
    model: &WaveMamba,
    state: &State,
    first_input: u8,
    opts: &GenerateOptions,
    workers: usize,
    sample_rate: u32,
) -> Result<(Vec<Vec<u8>>, f64)> {
    let ranges: Vec<Range<usize>> = (0..workers)
        .map(|w| w * opts.num / workers..(w + 1) * opts.num / workers)
        .collect();
    let bar = bar(opts);
    if opts.num > 1 {
        bar.set_message(format!("preparing {} streams", opts.num));
    }
    let mut engines = Vec::with_capacity(workers);
    for r in &ranges {
        let mut e = StepEngine::new(model, r.len())?;
        e.load_state(&state.repeat_batch(r.len() as i64))?;
        engines.push(e);
    }
    let started = Instant::now();
    let parts: Vec<Result<Vec<Vec<u8>>>> = std::thread::scope(|s| {
        let handles: Vec<_> = engines
            .into_iter()
            .zip(ranges)
            .enumerate()
            .map(|(w, (mut engine, streams))| {
                // The first thread's streams stand for all in the progress bar.
                let bar = if w == 0 {
                    bar.clone()
                } else {
                    ProgressBar::hidden()
                };
                s.spawn(move || {
                    sample_streams(&mut engine, first_input, opts, streams, &bar, sample_rate)
                })
            })
            .collect();
        // A panicking thread is a bug: re-raise it here rather than turn it into an error.
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    bar.finish_and_clear();
    let mut tokens = Vec::with_capacity(opts.num);
    for part in parts {
        tokens.extend(part?);
    }
    Ok((tokens, started.elapsed().as_secs_f64()))
}

/// The sampling loop shared by every step path, for all `opts.num` streams of `stepper`: returns
/// their tokens and the seconds spent.
pub fn run_sampling(
    stepper: &mut dyn Stepper,
    first_input: u8,
    opts: &GenerateOptions,
    sample_rate: u32,
) -> Result<(Vec<Vec<u8>>, f64)> {
    let bar = bar(opts);
    let started = Instant::now();
    let tokens = sample_streams(stepper, first_input, opts, 0..opts.num, &bar, sample_rate)?;
    bar.finish_and_clear();
    Ok((tokens, started.elapsed().as_secs_f64()))
}

/// Samples `opts.samples` tokens for `streams` (indices among all `opts.num` streams: they seed
/// the samplers), which are the streams of `stepper` in order.
fn sample_streams(
    stepper: &mut dyn Stepper,
    first_input: u8,
    opts: &GenerateOptions,
    streams: Range<usize>,
    bar: &ProgressBar,
    sample_rate: u32,
) -> Result<Vec<Vec<u8>>> {
    let n = streams.len();
    let mut samplers: Vec<Sampler> = streams
        .map(|i| {
            Sampler::new(
                opts.seed.wrapping_add(i as u64 * 7919),
                opts.temperature,
                opts.top_p,
            )
        })
        .collect();
    let mut out = token_buffers(n, opts.samples)?;
    let mut current = vec![first_input; n];
    let started = Instant::now();
    let mut drawn = started;
    // Many streams make a step long: then every step may redraw the bar (at most 5 times a second).
    let check_every = if n >= 64 { 1 } else { 64 };
    for i in 0..opts.samples {
        let logits = stepper.step(&current)?;
        let vocab = logits.len() / n;
        for (s, sampler) in samplers.iter_mut().enumerate() {
            let tok = sampler.sample(&logits[s * vocab..(s + 1) * vocab]) as u8;
            out[s].push(tok);
            current[s] = tok;
        }
        if (i + 1) % check_every == 0 && drawn.elapsed() >= Duration::from_millis(200) {
            drawn = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            let audio_s = (i + 1) as f64 / sample_rate as f64;
            bar.set_position(i as u64 + 1);
            bar.set_message(crate::rtf::speed_text(secs / audio_s));
        }
    }
    Ok(out)
}

/// `streams` empty token buffers of capacity `samples` each, allocated fallibly: a size that
/// does not fit is an error, not an abort.
///
/// # Errors
/// [`Error::TooLarge`].
fn token_buffers(streams: usize, samples: usize) -> Result<Vec<Vec<u8>>> {
    let too_large = || Error::TooLarge {
        what: format!("{streams} streams of {samples} samples"),
        reason: format!(
            "cannot allocate {} for the generated samples",
            crate::audio::output::human_bytes((streams as u64).saturating_mul(samples as u64))
        ),
    };
    let mut out = Vec::new();
    out.try_reserve_exact(streams).map_err(|_| too_large())?;
    for _ in 0..streams {
        let mut v = Vec::new();
        v.try_reserve_exact(samples).map_err(|_| too_large())?;
        out.push(v);
    }
    Ok(out)
}

/// Bytes of the recurrent state of one stream of `model` (every layer's conv and SSM state, and
/// a U-Net's pooling buffers).
pub fn state_bytes_per_stream(model: &WaveMamba) -> u64 {
    let state = model.zero_state(1);
    let bytes = |t: &Tensor| (t.numel() * t.kind().elt_size_in_bytes()) as u64;
    let layers: u64 = state
        .layers
        .iter()
        .map(|l| bytes(&l.conv) + bytes(&l.ssm))
        .sum();
    let pools: u64 = state
        .pools
        .iter()
        .map(|p| bytes(&p.buffer) + bytes(&p.pending))
        .sum();
    layers + pools
}

/// Memory [`generate_tokens`] needs for `opts`, estimated in bytes: each stream's tokens, and
/// its recurrent state about three times over (the copy it is loaded from, the step engine's own
/// and the engine's work buffers) plus its logits. Saturates instead of overflowing.
pub fn estimate_memory(model: &WaveMamba, opts: &GenerateOptions) -> u64 {
    let vocab = model.config.vocab_size as u64;
    let per_stream = (opts.samples as u64)
        .saturating_add(3 * state_bytes_per_stream(model))
        .saturating_add(8 * vocab);
    per_stream.saturating_mul(opts.num as u64)
}

/// The progress bar of a generation (hidden without `opts.progress`): samples done of each
/// stream, the speed, the time left.
fn bar(opts: &GenerateOptions) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(opts.samples as u64);
    bar.set_style(
        ProgressStyle::with_template("{wide_bar} {pos}/{len} samples  {msg}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
