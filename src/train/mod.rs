//! Offline batch training: AdamW, warm-up + cosine schedule, gradient clipping, validation,
//! atomic checkpoints with exact resume, a progress bar, `metrics.jsonl` and loss plots. What is
//! learned (batches, loss, validation score) is an [`Objective`]: next-sample NLL for the language
//! model ([`LmObjective`]), mixtures and waveform losses for the denoiser
//! ([`crate::denoise::mix::DenoiseData`]).

pub mod audio_corpus;
pub mod corpus;
pub mod job;
pub mod optim;
pub mod run_dir;
pub mod schedule;

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tch::{Device, Kind, Tensor};

use crate::model::loss::{mean_nll_nats, nats_to_bits};
use crate::model::WaveMamba;
use crate::{Error, Result};
use optim::{AdamW, AdamWConfig};
use run_dir::{RunDir, TrainerState};

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
}

impl Objective for LmObjective<'_> {
    fn train_batch(&mut self, index: u64, batch: i64, len: i64) -> Result<Vec<Tensor>> {
        Ok(vec![self.data.train_batch(index, batch, len)?])
    }

    fn loss(&self, model: &WaveMamba, batch: &[Tensor]) -> Result<Tensor> {
        mean_nll_nats(model, &batch[0])
    }

    fn validate(&mut self, model: &WaveMamba) -> Result<Option<f64>> {
        if self.valid.is_none() {
            self.valid = Some(self.data.valid_set()?);
        }
        match self.valid.as_deref() {
            Some(v) if !v.is_empty() => Ok(Some(validate(model, v)?)),
            _ => Ok(None),
        }
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

/// Hyper-parameters and bookkeeping intervals.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub steps: u64,
    pub batch: i64,
    pub len: i64,
    pub lr: f64,
    pub warmup: u64,
    /// Final learning rate as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Global gradient-norm clip (0 = off).
    pub clip: f64,
    pub seed: u64,
    pub device: Device,
    /// bf16 autocast on CUDA (ignored on CPU, which always trains in fp32).
    pub bf16: bool,
    pub log_every: u64,
    pub valid_every: u64,
    pub ckpt_every: u64,
    /// Stop after this many updates in this invocation (the schedule still spans `steps`):
    /// splits a long run over several time-boxed jobs, continued with `--resume`.
    pub stop_after: Option<u64>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// How a run starts (one value per run, so the large variant is not boxed).
#[allow(clippy::large_enum_variant)]
pub enum Start {
    /// A freshly initialised model.
    Fresh(WaveMamba),
    /// The newest complete checkpoint of the run directory.
    Resume,
}

/// What a finished run reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainSummary {
    pub steps: u64,
    /// The last training loss, in the objective's logged unit ([`Metric::loss_key`]).
    pub final_loss: f64,
    /// The last and the best validation scores ([`Metric::valid_key`]).
    pub valid: Option<f64>,
    pub best_valid: Option<f64>,
    pub elapsed_s: f64,
    pub samples_per_s: f64,
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

/// Trains until `opts.steps` updates are done, checkpointing into `run`; the best validation
/// score's model goes to `run.best_dir()`.
///
/// # Errors
/// Data, kernel and I/O errors; [`Error::Training`] when the loss or the gradients stop being
/// finite (the run stops before the bad update; no checkpoint is written from it).
pub fn train_objective(
    run: &RunDir,
    start: Start,
    objective: &mut dyn Objective,
    opts: &TrainOptions,
) -> Result<TrainSummary> {
    let metric = objective.metric();
    let (model, mut opt, mut state) = match start {
        Start::Fresh(model) => {
            let opt = make_optimizer(&model);
            let state = TrainerState {
                step: 0,
                seed: opts.seed,
                best_valid: None,
                elapsed_s: 0.0,
            };
            (model, opt, state)
        }
        Start::Resume => {
            let found = run.resume(opts.device, make_optimizer)?;
            if found.2.step >= opts.steps {
                return Err(Error::InvalidArgument {
                    name: "steps",
                    reason: format!(
                        "this run already did {} steps and --steps is {}: pass a larger --steps \
                         to train further",
                        found.2.step, opts.steps
                    ),
                });
            }
            run.truncate_metrics_after(found.2.step)?;
            found
        }
    };
    let bar = progress_bar(opts, state.step);
    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    let (mut last_loss, mut valid_score) = (f64::NAN, None);
    let mut window = (Instant::now(), 0u64);

    let stop_at = opts
        .stop_after
        .map_or(opts.steps, |n| (state.step + n).min(opts.steps));
    while state.step < stop_at {
        let step = state.step;
        let lr = schedule::lr_at(step, opts.steps, opts.warmup, opts.lr, opts.min_lr_ratio);
        let batch: Vec<Tensor> = objective
            .train_batch(step, opts.batch, opts.len)?
            .iter()
            .map(|t| t.to_device(opts.device))
            .collect();
        let loss = forward_loss(
            objective,
            &model,
            &batch,
            opts.device.is_cuda() && opts.bf16,
        )?;
        loss.backward();
        let norm = opt.clip_grad_norm(opts.clip)?;
        // The update skips itself on the device when the loss or the gradient norm is not finite,
        // so the step is queued whole and read back with one host sync.
        let guard = loss.detach().to_kind(Kind::Double) + &norm;
        opt.step(lr, Some(&guard))?;
        let (loss_nats, grad_norm) = (loss.double_value(&[]), norm.double_value(&[]));
        for (what, value) in [("loss", loss_nats), ("gradient norm", grad_norm)] {
            if !value.is_finite() {
                return Err(Error::Training { step, reason: format!("{what} is {value}; stopped without updating the weights (last good checkpoint kept)") });
            }
        }
        state.step += 1;
        state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
        last_loss = loss_nats * metric.loss_scale;
        window.1 += (opts.batch * opts.len) as u64;
        let rate = window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(state.step);
        bar.set_message(format!(
            "{} {last_loss:.3}  {:.0} samples/s",
            metric.loss_key, rate
        ));

        if state.step % opts.log_every.max(1) == 0 || state.step == stop_at {
            run.log(&json!({"step": state.step, metric.loss_key: last_loss, "lr": lr, "grad_norm": grad_norm,
                "samples_per_s": rate, "elapsed_s": state.elapsed_s}))?;
            window = (Instant::now(), 0);
        }
        let last = state.step == stop_at;
        if state.step % opts.valid_every.max(1) == 0 || last {
            if let Some(v) = objective.validate(&model)? {
                valid_score = Some(v);
                run.log(&json!({"step": state.step, metric.valid_key: v}))?;
                if metric.improves(v, state.best_valid) {
                    state.best_valid = Some(v);
                    run.save_best(&model)?;
                }
                bar.println(format!(
                    "step {}: validation {v:.4} {}",
                    state.step, metric.valid_unit
                ));
                crate::plot::loss_curves(&run.metrics_path(), &run.root.join("loss.png"), &metric)?;
            }
        }
        if state.step % opts.ckpt_every.max(1) == 0 || last {
            run.save(&model, &opt, &state)?;
        }
    }
    bar.finish_and_clear();
    Ok(TrainSummary {
        steps: state.step,
        final_loss: last_loss,
        valid: valid_score,
        best_valid: state.best_valid,
        elapsed_s: state.elapsed_s,
        samples_per_s: 0.0_f64
            .max((state.step as f64 * (opts.batch * opts.len) as f64) / state.elapsed_s.max(1e-9)),
    })
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

fn progress_bar(opts: &TrainOptions, at: u64) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(opts.steps);
    let style = ProgressStyle::with_template("{bar:30} step {pos}/{len}  {msg}  ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_position(at);
    bar
}
