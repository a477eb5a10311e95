//! Offline batch training: AdamW, warm-up + cosine schedule, gradient clipping, validation,
//! atomic checkpoints with exact resume, a progress bar, `metrics.jsonl` and loss plots. What is
//! learned (batches, loss, validation score) is an [`Objective`]: next-sample NLL for the language
//! model ([`LmObjective`]), mixtures and waveform losses for the denoiser
//! ([`crate::denoise::mix::DenoiseData`]).

pub mod audio_corpus;
pub mod corpus;
pub mod interrupt;
pub mod job;
pub mod optim;
pub mod options;
mod progress;
pub mod run_dir;
pub mod schedule;
pub mod settings;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::ProgressBar;
use serde_json::json;
use tch::{Kind, Tensor};

use crate::model::loss::{mean_nll_nats, nats_to_bits};
use crate::model::WaveMamba;
use crate::{Error, Result};
use optim::{AdamW, AdamWConfig};
use run_dir::{RunDir, TrainerState};
use settings::RunSettings;

pub use options::TrainOptions;

/// Where training batches come from. Batch `index` must be a pure function of the source's seed
/// and `index`, so that a resumed run sees exactly the batches the interrupted one would have.
pub trait Batches {
    /// Training batch number `index`: (batch, len) int64 mu-law tokens on the CPU.
    fn train_batch(&mut self, index: u64, batch: i64, len: i64) -> Result<Tensor>;
    /// The fixed validation set: a list of (b, len) token batches.
    fn valid_set(&mut self) -> Result<Vec<Tensor>>;
}

/// What a training run optimises: batches, their loss, and the validation score.
pub trait Objective {
    /// Training batch number `index` on the CPU: the tensors [`Objective::loss`] takes. Must be a
    /// pure function of the objective's seed and `index` (exact resume).
    fn train_batch(&mut self, index: u64, batch: i64, len: i64) -> Result<Vec<Tensor>>;
    /// Differentiable scalar loss of a batch that is already on the model's device.
    fn loss(&self, model: &WaveMamba, batch: &[Tensor]) -> Result<Tensor>;
    /// The score on the fixed validation set (`None` without one).
    fn validate(&mut self, model: &WaveMamba) -> Result<Option<f64>>;
    /// Whether there is a validation set at all. Without one, `best/` follows the latest
    /// checkpoint instead of the best validation score.
    fn has_validation(&mut self) -> Result<bool> {
        Ok(true)
    }
    /// Names, units and direction of the logged numbers.
    fn metric(&self) -> Metric;
}

/// How an [`Objective`]'s numbers are logged and compared.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// `metrics.jsonl` key of the training loss, e.g. "loss_bits".
    pub loss_key: &'static str,
    /// Factor from the loss tensor's value to the logged one (nats → bits for the LM).
    pub loss_scale: f64,
    /// Human label of the training loss, e.g. "bits/sample".
    pub loss_unit: &'static str,
    /// `metrics.jsonl` key of the validation score, e.g. "valid_bits".
    pub valid_key: &'static str,
    /// Human label of the validation score, e.g. "bits/sample".
    pub valid_unit: &'static str,
    /// Whether a larger validation score is better (SI-SDR improvement) or worse (NLL).
    pub higher_is_better: bool,
}

impl Metric {
    /// Whether `new` beats `best`.
    pub fn improves(&self, new: f64, best: Option<f64>) -> bool {
        match best {
            None => true,
            Some(b) if self.higher_is_better => new > b,
            Some(b) => new < b,
        }
    }
}

/// The language-model objective over a [`Batches`] source: next-sample NLL (bits), validation NLL.
pub struct LmObjective<'a> {
    pub data: &'a mut dyn Batches,
    valid: Option<Vec<Tensor>>,
}

impl<'a> LmObjective<'a> {
    pub fn new(data: &'a mut dyn Batches) -> Self {
        LmObjective { data, valid: None }
    }

    /// The validation batches, made on first use.
    fn valid_set(&mut self) -> Result<&[Tensor]> {
        if self.valid.is_none() {
            self.valid = Some(self.data.valid_set()?);
        }
        Ok(self.valid.as_deref().unwrap_or_default())
    }
}

impl Objective for LmObjective<'_> {
    fn train_batch(&mut self, index: u64, batch: i64, len: i64) -> Result<Vec<Tensor>> {
        Ok(vec![self.data.train_batch(index, batch, len)?])
    }

    fn loss(&self, model: &WaveMamba, batch: &[Tensor]) -> Result<Tensor> {
        mean_nll_nats(model, &batch[0])
    }

    fn validate(&mut self, model: &WaveMamba) -> Result<Option<f64>> {
        match self.valid_set()? {
            v if !v.is_empty() => Ok(Some(validate(model, v)?)),
            _ => Ok(None),
        }
    }

    fn has_validation(&mut self) -> Result<bool> {
        Ok(!self.valid_set()?.is_empty())
    }

    fn metric(&self) -> Metric {
        Metric {
            loss_key: "loss_bits",
            loss_scale: 1.0 / std::f64::consts::LN_2,
            loss_unit: "bits/sample",
            valid_key: "valid_bits",
            valid_unit: "bits/sample",
            higher_is_better: false,
        }
    }
}

/// How a run starts (one value per run, so the large variants are not boxed).
#[allow(clippy::large_enum_variant)]
pub enum Start {
    /// A freshly initialised model.
    Fresh(WaveMamba),
    /// The newest complete checkpoint of the run directory.
    Resume,
    /// A checkpoint already loaded with [`RunDir::resume`] (and checked against the new
    /// invocation's flags, as `wavemamba train --resume` does).
    Loaded(WaveMamba, AdamW, TrainerState),
}

/// What one invocation adds to its [`TrainOptions`]: the settings to record, a stop request.
#[derive(Debug, Default, Clone, Copy)]
pub struct Control<'a> {
    /// Recorded in every checkpoint's `trainer.json` (what `--resume` checks against); `None`
    /// keeps what a resumed checkpoint had.
    pub settings: Option<&'a RunSettings>,
    /// Polled after every step: once set, the loop writes a checkpoint of that step and returns
    /// (see [`interrupt`]).
    pub stop: Option<&'a AtomicBool>,
}

/// What a finished run reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainSummary {
    /// Updates done by the run so far (all invocations).
    pub steps: u64,
    /// Updates done by this invocation.
    pub steps_run: u64,
    /// The last training loss, in the objective's logged unit ([`Metric::loss_key`]); NaN when
    /// this invocation did no step (`steps_run == 0`).
    pub final_loss: f64,
    /// The last and the best validation scores ([`Metric::valid_key`]).
    pub valid: Option<f64>,
    pub best_valid: Option<f64>,
    pub elapsed_s: f64,
    pub samples_per_s: f64,
    /// Stopped early by [`Control::stop`]; the last step's checkpoint was written.
    pub interrupted: bool,
    /// The newest checkpoint this invocation wrote.
    pub checkpoint: Option<PathBuf>,
    /// The run's `best/` model directory, when one exists.
    pub best_model: Option<PathBuf>,
    /// Whether the run has validation data; without any, `best/` is the latest checkpoint's model.
    pub validated: bool,
}

/// The optimizer wavemamba trains with, over every parameter of `model`.
pub fn make_optimizer(model: &WaveMamba) -> AdamW {
    let params: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
    AdamW::new(&params, AdamWConfig::default())
}

/// Mean validation NLL in bits per sample over the fixed validation set.
///
/// # Errors
/// Kernel errors.
pub fn validate(model: &WaveMamba, valid: &[Tensor]) -> Result<f64> {
    let (mut total, mut count) = (0.0, 0i64);
    tch::no_grad(|| -> Result<()> {
        for b in valid {
            let b = b.to_device(model.device());
            let n = b.numel() as i64;
            total += mean_nll_nats(model, &b)?.double_value(&[]) * n as f64;
            count += n;
        }
        Ok(())
    })?;
    Ok(nats_to_bits(total / count.max(1) as f64))
}

/// Trains a language model on `data` until `opts.steps` updates are done (see [`train_objective`]).
///
/// # Errors
/// As [`train_objective`].
pub fn train(
    run: &RunDir,
    start: Start,
    data: &mut dyn Batches,
    opts: &TrainOptions,
) -> Result<TrainSummary> {
    train_objective(run, start, &mut LmObjective::new(data), opts)
}

/// [`train_controlled`] without recorded settings or a stop request.
///
/// # Errors
/// As [`train_controlled`].
pub fn train_objective(
    run: &RunDir,
    start: Start,
    objective: &mut dyn Objective,
    opts: &TrainOptions,
) -> Result<TrainSummary> {
    train_controlled(run, start, objective, opts, Control::default())
}

/// Trains until `opts.steps` updates are done (or `opts.stop_after` in this invocation, or a
/// stop request), checkpointing into `run`; the best validation score's model goes to
/// `run.best_dir()`, or, without validation data, the latest checkpoint's model.
///
/// # Errors
/// [`Error::InvalidArgument`] for options [`TrainOptions::check`] refuses or a resume of a
/// finished run; data, kernel and I/O errors; [`Error::Training`] when the loss or the gradients
/// stop being finite (the run stops before the bad update; no checkpoint is written from it).
pub fn train_controlled(
    run: &RunDir,
    start: Start,
    objective: &mut dyn Objective,
    opts: &TrainOptions,
    control: Control,
) -> Result<TrainSummary> {
    opts.check()?;
    let metric = objective.metric();
    let (model, mut opt, mut state, mut kept) = begin(run, start, opts)?;
    if let Some(s) = control.settings {
        state.settings = Some(s.clone());
    }
    let validated = objective.has_validation()?;
    let bar = progress::bar(opts, state.step);
    let (first_step, elapsed_before, started) = (state.step, state.elapsed_s, Instant::now());
    let (mut last_loss, mut valid_score, mut checkpoint) = (f64::NAN, None, None);
    let mut window = Throughput::new();
    let stop_at = opts
        .stop_after
        .map_or(opts.steps, |n| (state.step + n).min(opts.steps));
    let mut interrupted = stop_requested(&control);
    while !interrupted && state.step < stop_at {
        let (loss_nats, grad_norm, lr) =
            train_step(objective, &model, &mut opt, state.step, opts, kept)?;
        state.step += 1;
        state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
        last_loss = loss_nats * metric.loss_scale;
        let rate = window.add((opts.batch * opts.len) as u64);
        bar.set_position(state.step);
        bar.set_message(format!(
            "{} {last_loss:.3}  {}",
            metric.loss_key,
            progress::rate_text(rate)
        ));
        interrupted = stop_requested(&control) && state.step < stop_at;
        let last = state.step == stop_at || interrupted;
        if state.step % opts.log_every.max(1) == 0 || last {
            run.log(&json!({"step": state.step, metric.loss_key: last_loss, "lr": lr, "grad_norm": grad_norm,
                "samples_per_s": rate, "elapsed_s": state.elapsed_s}))?;
            window = Throughput::new();
        }
        if state.step % opts.valid_every.max(1) == 0 || state.step == stop_at {
            let score = validation_point(run, objective, &model, &metric, &mut state, &bar)?;
            valid_score = score.or(valid_score);
        }
        if state.step % opts.ckpt_every.max(1) == 0 || last {
            checkpoint = Some(run.save(&model, &opt, &state)?);
            kept = Some(state.step);
            if !validated {
                run.save_best(&model)?;
            }
        }
    }
    bar.finish_and_clear();
    let best_dir = run.best_dir();
    Ok(TrainSummary {
        steps: state.step,
        steps_run: state.step - first_step,
        final_loss: last_loss,
        valid: valid_score,
        best_valid: state.best_valid,
        elapsed_s: state.elapsed_s,
        samples_per_s: 0.0_f64
            .max((state.step as f64 * (opts.batch * opts.len) as f64) / state.elapsed_s.max(1e-9)),
        interrupted,
        checkpoint,
        best_model: best_dir.is_dir().then_some(best_dir),
        validated,
    })
}

/// Refuses to continue a run that already did `steps` updates.
///
/// # Errors
/// [`Error::InvalidArgument`] when `done ≥ steps`.
pub fn check_more_steps(done: u64, steps: u64) -> Result<()> {
    if done >= steps {
        return Err(Error::InvalidArgument {
            name: "--steps",
            reason: format!(
                "this run already did {done} steps and --steps is {steps}: pass a larger --steps \
                 to train further"
            ),
        });
    }
    Ok(())
}

/// The model, optimizer and state a run starts from, and the step of the checkpoint it resumed
/// (`None` for a fresh model).
fn begin(
    run: &RunDir,
    start: Start,
    opts: &TrainOptions,
) -> Result<(WaveMamba, AdamW, TrainerState, Option<u64>)> {
    let (model, opt, state) = match start {
        Start::Fresh(model) => {
            let opt = make_optimizer(&model);
            let state = TrainerState {
                step: 0,
                seed: opts.seed,
                best_valid: None,
                elapsed_s: 0.0,
                settings: None,
            };
            return Ok((model, opt, state, None));
        }
        Start::Resume => run.resume(opts.device, make_optimizer)?,
        Start::Loaded(model, opt, state) => (model, opt, state),
    };
    check_more_steps(state.step, opts.steps)?;
    run.truncate_metrics_after(state.step)?;
    let kept = Some(state.step);
    Ok((model, opt, state, kept))
}

fn stop_requested(control: &Control) -> bool {
    control.stop.is_some_and(|s| s.load(Ordering::SeqCst))
}

/// One update of batch `step`: forward, backward, clipping, AdamW. Returns the loss (nats), the
/// gradient norm and the learning rate; `kept` is the newest checkpoint's step (for the error).
fn train_step(
    objective: &mut dyn Objective,
    model: &WaveMamba,
    opt: &mut AdamW,
    step: u64,
    opts: &TrainOptions,
    kept: Option<u64>,
) -> Result<(f64, f64, f64)> {
    let lr = schedule::lr_at(step, opts.steps, opts.warmup, opts.lr, opts.min_lr_ratio);
    let batch: Vec<Tensor> = objective
        .train_batch(step, opts.batch, opts.len)?
        .iter()
        .map(|t| t.to_device(opts.device))
        .collect();
    let bf16 = opts.device.is_cuda() && opts.bf16;
    let loss = forward_loss(objective, model, &batch, bf16)?;
    loss.backward();
    let norm = opt.clip_grad_norm(opts.clip)?;
    // The update skips itself on the device when the loss or the gradient norm is not finite,
    // so the step is queued whole and read back with one host sync.
    let guard = loss.detach().to_kind(Kind::Double) + &norm;
    opt.step(lr, Some(&guard))?;
    let (loss_nats, grad_norm) = (loss.double_value(&[]), norm.double_value(&[]));
    for (what, value) in [("loss", loss_nats), ("gradient norm", grad_norm)] {
        if !value.is_finite() {
            let kept = match kept {
                Some(s) => format!("the last good checkpoint, step {s}, is kept"),
                None => "no checkpoint had been written yet (a lower --lr or a longer --warmup \
                         may help)"
                    .into(),
            };
            return Err(Error::Training {
                step,
                reason: format!("{what} is {value}; stopped without updating the weights; {kept}"),
            });
        }
    }
    Ok((loss_nats, grad_norm, lr))
}

/// Validates (logging the score and saving `best/` when it improves) and redraws `loss.png`.
fn validation_point(
    run: &RunDir,
    objective: &mut dyn Objective,
    model: &WaveMamba,
    metric: &Metric,
    state: &mut TrainerState,
    bar: &ProgressBar,
) -> Result<Option<f64>> {
    let score = objective.validate(model)?;
    if let Some(v) = score {
        run.log(&json!({"step": state.step, metric.valid_key: v}))?;
        if metric.improves(v, state.best_valid) {
            state.best_valid = Some(v);
            run.save_best(model)?;
        }
        bar.println(format!(
            "step {}: validation {v:.4} {}",
            state.step, metric.valid_unit
        ));
    }
    if run.metrics_path().exists() {
        crate::plot::loss_curves(&run.metrics_path(), &run.root.join("loss.png"), metric)?;
    }
    Ok(score)
}

/// Samples per second since the last log line.
struct Throughput {
    since: Instant,
    samples: u64,
}

impl Throughput {
    fn new() -> Throughput {
        Throughput {
            since: Instant::now(),
            samples: 0,
        }
    }

    /// Counts `samples` more and returns the rate so far.
    fn add(&mut self, samples: u64) -> f64 {
        self.samples += samples;
        self.samples as f64 / self.since.elapsed().as_secs_f64().max(1e-9)
    }
}

/// The objective's loss, under bf16 autocast when asked (CUDA). Not `tch::autocast`: that one
/// runs in float16 (see [`crate::ops::autocast`]).
fn forward_loss(
    objective: &dyn Objective,
    model: &WaveMamba,
    batch: &[Tensor],
    bf16: bool,
) -> Result<Tensor> {
    if bf16 {
        crate::ops::autocast_bf16(|| objective.loss(model, batch)).map(|l| l.to_kind(Kind::Float))
    } else {
        objective.loss(model, batch)
    }
}
