//! What a run was started with, saved in every checkpoint's `trainer.json`, and the check that a
//! `--resume` does not contradict it.
//!
//! A resumed run continues bit-for-bit only with the settings it was started with, so `--resume`
//! takes every setting from the checkpoint: a flag left out takes the saved value, a flag given
//! with the saved value is fine, and a flag given with another value is refused by name. Only the
//! settings in [`FREE_ON_RESUME`] may change.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::corpus::TokenCorpus;
use super::TrainOptions;
use crate::config::{Architecture, AudioConfig, MambaConfig, Task};
use crate::{Error, Result};

/// Flags that `--resume` lets change (the rest must match the run or be left out). `--steps`
/// moves the end of the learning-rate schedule (to extend a run); `--data` and `--noise`, with
/// their `--select` and `--noise-select`, may name another path or selection holding the same
/// audio (checked by [`DataFingerprint`]: other audio is refused).
pub const FREE_ON_RESUME: [&str; 14] = [
    "--steps",
    "--stop-after",
    "--ckpt-every",
    "--valid-every",
    "--log-every",
    "--device",
    "--threads",
    "--quiet",
    "--strict",
    "--save-pack",
    "--data",
    "--noise",
    "--select",
    "--noise-select",
];

/// The size of a corpus's splits: enough to tell a moved copy of the data (same numbers) from
/// other data (a resumed run would see other batches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    pub train_files: usize,
    pub train_samples: usize,
    pub valid_files: usize,
    pub valid_samples: usize,
}

impl DataFingerprint {
    /// The fingerprint of a loaded corpus.
    pub fn of(corpus: &TokenCorpus) -> DataFingerprint {
        let (train_samples, valid_samples) = corpus.samples();
        DataFingerprint {
            train_files: corpus.train.len(),
            train_samples,
            valid_files: corpus.valid.len(),
            valid_samples,
        }
    }
}

impl fmt::Display for DataFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} train files ({} samples) and {} validation files ({} samples)",
            self.train_files, self.train_samples, self.valid_files, self.valid_samples
        )
    }
}

/// Settings of a run that are not in the model files, as the last invocation used them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// `--data` as given.
    pub data: String,
    /// `--select`: the manifest rows of `data` trained on (column, value); empty: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub select: Vec<(String, String)>,
    pub data_fingerprint: DataFingerprint,
    /// `--noise` as given (denoisers).
    pub noise: Option<String>,
    /// `--noise-select`: the manifest rows of `noise` trained on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub noise_select: Vec<(String, String)>,
    pub noise_fingerprint: Option<DataFingerprint>,
    pub steps: u64,
    pub batch: i64,
    pub len: i64,
    pub lr: f64,
    pub warmup: u64,
    pub min_lr_ratio: f64,
    pub clip: f64,
    /// "bf16" or "fp32".
    pub precision: String,
    pub log_every: u64,
    pub valid_every: u64,
    pub ckpt_every: u64,
}

impl RunSettings {
    /// The settings of `opts` (plus the data and its fingerprints; no selection of rows: set
    /// `select` / `noise_select` after).
    pub fn new(
        opts: &TrainOptions,
        data: (String, DataFingerprint),
        noise: Option<(String, DataFingerprint)>,
    ) -> RunSettings {
        RunSettings {
            data: data.0,
            select: Vec::new(),
            data_fingerprint: data.1,
            noise_fingerprint: noise.as_ref().map(|n| n.1),
            noise: noise.map(|n| n.0),
            noise_select: Vec::new(),
            steps: opts.steps,
            batch: opts.batch,
            len: opts.len,
            lr: opts.lr,
            warmup: opts.warmup,
            min_lr_ratio: opts.min_lr_ratio,
            clip: opts.clip,
            precision: precision_name(opts.bf16).into(),
            log_every: opts.log_every,
            valid_every: opts.valid_every,
            ckpt_every: opts.ckpt_every,
        }
    }
}

/// "bf16" or "fp32", as `--precision` spells them.
pub fn precision_name(bf16: bool) -> &'static str {
    if bf16 {
        "bf16"
    } else {
        "fp32"
    }
}

/// The flags given on the command line (as `--long-name`); the others hold defaults.
#[derive(Debug, Clone, Default)]
pub struct GivenFlags(pub BTreeSet<String>);

impl GivenFlags {
    /// Whether `flag` (e.g. "--lr") was given.
    pub fn has(&self, flag: &str) -> bool {
        self.0.contains(flag)
    }

    /// The saved value, after checking that a given `flag` does not contradict it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the flag, the saved and the given value.
    pub fn keep<T: PartialEq + fmt::Display + Clone>(
        &self,
        flag: &'static str,
        saved: &T,
        given: &T,
    ) -> Result<T> {
        if self.has(flag) && saved != given {
            return Err(contradiction(flag, saved, given));
        }
        Ok(saved.clone())
    }

    /// The given value of a flag that may change on resume, else the saved one.
    pub fn free<T: Clone>(&self, flag: &str, saved: &T, given: &T) -> T {
        if self.has(flag) { given } else { saved }.clone()
    }
}

/// The error for `flag given` contradicting the run's `flag saved`.
pub fn contradiction(
    flag: &'static str,
    saved: &dyn fmt::Display,
    given: &dyn fmt::Display,
) -> Error {
    Error::InvalidArgument {
        name: flag,
        reason: format!(
            "--resume continues this run with its saved settings: it was trained with \
             {flag} {saved}, got {flag} {given} (leave {flag} out, or train into a new --out)"
        ),
    }
}

/// The options of a resumed run: the saved ones, with the [`FREE_ON_RESUME`] flags given in
/// `opts` applied; `seed` is the run's saved seed.
///
/// # Errors
/// [`Error::InvalidArgument`] for the first given flag that contradicts the saved settings.
pub fn resume_options(
    saved: &RunSettings,
    seed: u64,
    opts: &TrainOptions,
    given: &GivenFlags,
) -> Result<TrainOptions> {
    let precision = given.keep(
        "--precision",
        &saved.precision,
        &precision_name(opts.bf16).to_string(),
    )?;
    Ok(TrainOptions {
        steps: given.free("--steps", &saved.steps, &opts.steps),
        batch: given.keep("--batch", &saved.batch, &opts.batch)?,
        len: given.keep("--len", &saved.len, &opts.len)?,
        lr: given.keep("--lr", &saved.lr, &opts.lr)?,
        warmup: given.keep("--warmup", &saved.warmup, &opts.warmup)?,
        min_lr_ratio: given.keep("--min-lr-ratio", &saved.min_lr_ratio, &opts.min_lr_ratio)?,
        clip: given.keep("--clip", &saved.clip, &opts.clip)?,
        seed: given.keep("--seed", &seed, &opts.seed)?,
        bf16: precision == "bf16",
        log_every: given.free("--log-every", &saved.log_every, &opts.log_every),
        valid_every: given.free("--valid-every", &saved.valid_every, &opts.valid_every),
        ckpt_every: given.free("--ckpt-every", &saved.ckpt_every, &opts.ckpt_every),
        ..opts.clone()
    })
}

/// The model-shaping flags of a resume or of an `--init` run, checked against the model it
/// starts from.
#[derive(Debug, Clone)]
pub struct ModelFlags<'a> {
    /// `--config`, already resolved (a preset or a config.json), with its text.
    pub config: Option<(&'a str, MambaConfig)>,
    pub task: Task,
    pub architecture: &'a Architecture,
    pub pooling: &'a [i64],
    pub sample_rate: u32,
}

/// The model that [`check_model`] checks the flags against, which its errors name.
#[derive(Debug, Clone, Copy)]
pub enum ModelOrigin<'a> {
    /// The newest checkpoint of the run that `--resume` continues.
    Resumed,
    /// The model directory of `--init`, whose config and audio settings the run keeps.
    Init(&'a Path),
}

impl ModelOrigin<'_> {
    /// The error for `flag given` contradicting the model's `flag saved`.
    fn refuse(
        self,
        flag: &'static str,
        saved: &dyn fmt::Display,
        given: &dyn fmt::Display,
    ) -> Error {
        match self {
            ModelOrigin::Resumed => contradiction(flag, saved, given),
            ModelOrigin::Init(dir) => Error::InvalidArgument {
                name: flag,
                reason: format!(
                    "--init {} is a model with {flag} {saved}, got {flag} {given} (--init trains \
                     its model's own config and architecture: leave {flag} out)",
                    dir.display()
                ),
            },
        }
    }

    /// Refuses `flag` when it was given with another value than the model's `saved`.
    fn keep<T: PartialEq + fmt::Display>(
        self,
        given_flags: &GivenFlags,
        flag: &'static str,
        saved: &T,
        given: &T,
    ) -> Result<()> {
        if given_flags.has(flag) && saved != given {
            return Err(self.refuse(flag, saved, given));
        }
        Ok(())
    }
}

/// Checks the given model flags against the starting model's `config` and `audio` (the resumed
/// checkpoint's or the `--init` model's); flags left out are not checked.
///
/// # Errors
/// [`Error::InvalidArgument`] for the first given flag the model contradicts, naming both values.
pub fn check_model(
    flags: &ModelFlags,
    given: &GivenFlags,
    config: &MambaConfig,
    audio: &AudioConfig,
    origin: ModelOrigin,
) -> Result<()> {
    if let Some((text, resolved)) = &flags.config {
        if resolved != config {
            return Err(origin.refuse("--config", &config_label(config), text));
        }
    }
    origin.keep(
        given,
        "--task",
        &task_name(audio.task),
        &task_name(flags.task),
    )?;
    let (saved_arch, given_arch) = (
        arch_name(&audio.architecture),
        arch_name(flags.architecture),
    );
    origin.keep(given, "--arch", &saved_arch, &given_arch)?;
    if given.has("--pooling") && audio.architecture != Architecture::Unet {
        let model = match origin {
            ModelOrigin::Resumed => "this run trains".to_owned(),
            ModelOrigin::Init(dir) => format!("--init {} has", dir.display()),
        };
        return Err(Error::InvalidArgument {
            name: "--pooling",
            reason: format!(
                "--pooling applies to U-Net runs, and {model} the plain architecture (leave \
                 --pooling out)"
            ),
        });
    }
    origin.keep(
        given,
        "--pooling",
        &pooling_label(&audio.pooling),
        &pooling_label(flags.pooling),
    )?;
    origin.keep(
        given,
        "--sample-rate",
        &audio.sample_rate,
        &flags.sample_rate,
    )
}

/// The preset name a config equals, else its main sizes.
pub fn config_label(config: &MambaConfig) -> String {
    ["tiny", "small", "base", "large"]
        .into_iter()
        .find(|name| MambaConfig::preset(name).is_ok_and(|p| &p == config))
        .map_or_else(
            || {
                format!(
                    "<a config.json with d_model {}, n_layer {}>",
                    config.d_model, config.n_layer
                )
            },
            str::to_owned,
        )
}

/// `--task` spelling of a task.
pub fn task_name(task: Task) -> &'static str {
    match task {
        Task::Lm => "lm",
        Task::Denoise => "denoise",
    }
}

/// `--arch` spelling of an architecture.
pub fn arch_name(arch: &Architecture) -> &'static str {
    match arch {
        Architecture::Plain => "plain",
        Architecture::Unet => "unet",
    }
}

/// `--pooling` spelling of pooling factors, e.g. "4,4".
fn pooling_label(pooling: &[i64]) -> String {
    pooling
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests;
