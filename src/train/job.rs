//! `wavemamba train` as one library call: data, model (fresh or resumed), options, run directory.

mod data;

use std::path::{Path, PathBuf};

use serde_json::json;
use tch::Device;

use super::corpus::TokenCorpus;
use super::interrupt;
use super::run_dir::{Before, RunDir};
use super::settings::{
    check_model, resume_options, GivenFlags, ModelFlags, ModelOrigin, RunSettings,
};
use super::{
    check_more_steps, make_optimizer, train_controlled, Control, LmObjective, Metric, Objective,
    Start, TrainOptions, TrainSummary,
};
use crate::config::{Architecture, AudioConfig, MambaConfig, Task};
use crate::denoise::mix::DenoiseData;
use crate::model::WaveMamba;
use crate::{Error, Result};
pub use data::load_corpus;
use data::{check_same_data, fingerprint, load_data, PackOutput};

/// Everything `wavemamba train` needs.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// A token pack (`.wmtok`), or a directory / manifest of audio files (speech for a denoiser).
    pub data: PathBuf,
    /// Only the rows of the `data` manifest whose column holds the value, e.g. `("kind",
    /// "speech")` (`--select`); empty: every row.
    pub select: Vec<(String, String)>,
    /// Noise for task `denoise`: a token pack, directory or manifest.
    pub noise: Option<PathBuf>,
    /// Only these rows of the `noise` manifest (`--noise-select`).
    pub noise_select: Vec<(String, String)>,
    /// A preset name or a `config.json` path (with `resume`, checked against the run's model).
    pub config: String,
    pub task: Task,
    /// Plain stack or multi-scale U-Net.
    pub architecture: Architecture,
    /// U-Net pooling factors per stage (empty = [4, 4]; unused by the plain stack).
    pub pooling: Vec<i64>,
    pub out: PathBuf,
    pub resume: bool,
    /// Start from this model directory's weights (fine-tuning) instead of a random init; its
    /// config.json and wavemamba.json are kept: a given `--config`, `--arch` or `--pooling` (see
    /// `given`) must describe that model.
    pub init: Option<PathBuf>,
    pub sample_rate: u32,
    /// Also write the decoded corpus as a token pack here (to train elsewhere without decoding);
    /// checked before any work (a `.wmtok` name in a directory that exists and can be written).
    pub save_pack: Option<PathBuf>,
    /// Fail on the first unreadable audio file instead of skipping it.
    pub strict: bool,
    pub options: TrainOptions,
    /// The flags given on the command line: with `resume`, the others take the run's saved values
    /// and a given one must not contradict them (see [`super::settings`]).
    pub given: GivenFlags,
}

/// Resolves `--config`: a preset name or a path to a `config.json`.
///
/// # Errors
/// Unknown preset / unreadable or invalid config.
pub fn resolve_config(spec: &str) -> Result<MambaConfig> {
    let path = Path::new(spec);
    if path.is_file() {
        MambaConfig::load(path)
    } else if spec.ends_with(".json") {
        Err(Error::Io {
            path: path.to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
    } else {
        MambaConfig::preset(spec)
    }
}

/// Runs the job: checks the options, builds the model or loads the checkpoint to resume (checking
/// the given flags against it), loads the data, trains, and records provenance and metrics in the
/// best model's `wavemamba.json`. Nothing is written under `job.out` before all of that passed; a
/// run that fails before its first checkpoint removes what it created there.
///
/// # Errors
/// Everything [`train_controlled`] and [`load_corpus`] can return; [`Error::InvalidArgument`] for
/// options out of range, a `--resume` flag contradicting the run, or other data than the run's;
/// [`Error::Checkpoint`] for a resume without a checkpoint.
pub fn run(job: &TrainJob) -> Result<TrainSummary> {
    job.options.check()?;
    let pack = PackOutput::check(job.save_pack.as_deref())?;
    if job.options.steps == 0 && !job.resume {
        // Nothing to train: only the data work (e.g. --save-pack) was asked for.
        let (corpus, _) = load_data(job)?;
        if let Some(pack) = pack {
            pack.write(&corpus)?;
        }
        return Ok(no_training());
    }
    let (job, start, saved) = if job.resume {
        prepare_resume(job)?
    } else {
        prepare_fresh(job)?
    };
    for w in job.options.warnings() {
        eprintln!("warning: {w}");
    }
    let (corpus, noise) = load_data(&job)?;
    let mut settings = RunSettings::new(
        &job.options,
        fingerprint(&job.data, &corpus),
        noise
            .as_ref()
            .zip(job.noise.as_ref())
            .map(|(n, p)| fingerprint(p, n)),
    );
    settings.select = job.select.clone();
    settings.noise_select = job.noise_select.clone();
    if let Some(saved) = &saved {
        check_same_data(saved, &settings)?;
    }
    // After the resume's data check: a refused resume writes no pack.
    if let Some(pack) = pack {
        pack.write(&corpus)?;
    }
    if job.task == Task::Lm && corpus.valid.is_empty() {
        warn_no_validation(corpus.train.len());
    }
    interrupt::arm();
    let before = Before::snapshot(&job.out);
    let result = RunDir::create(&job.out)
        .and_then(|run| train_data(&run, start, corpus, noise, &job, &settings));
    let (summary, metric) = match result {
        Ok(done) if done.0.steps_run > 0 => done,
        other => {
            before.undo();
            return other.map(|(s, _)| s);
        }
    };
    let train_samples = settings.data_fingerprint.train_samples;
    record_provenance(
        &RunDir::at(&job.out).best_dir(),
        &job,
        &summary,
        &metric,
        train_samples,
    )?;
    Ok(summary)
}

/// The summary of an invocation that only prepared the data (`--steps 0`).
fn no_training() -> TrainSummary {
    TrainSummary {
        steps: 0,
        steps_run: 0,
        final_loss: f64::NAN,
        valid: None,
        best_valid: None,
        elapsed_s: 0.0,
        samples_per_s: 0.0,
        interrupted: false,
        checkpoint: None,
        best_model: None,
        validated: false,
    }
}

/// A fresh run: `--out` must hold no checkpoints; the model is built (or loaded from `--init`).
fn prepare_fresh(job: &TrainJob) -> Result<(TrainJob, Start, Option<RunSettings>)> {
    if job.task == Task::Denoise {
        crate::denoise::loss::check_len(job.options.len)?; // before the (slow) data loading
    }
    if !RunDir::at(&job.out).checkpoints().is_empty() {
        return Err(Error::InvalidArgument {
            name: "--out",
            reason: format!(
                "{} already holds checkpoints: pass --resume to continue, or choose a new --out",
                job.out.display()
            ),
        });
    }
    tch::manual_seed(job.options.seed as i64);
    let model = match &job.init {
        Some(dir) => load_init(job, dir)?,
        None => {
            let audio = AudioConfig {
                sample_rate: job.sample_rate,
                task: job.task,
                architecture: job.architecture.clone(),
                pooling: match job.architecture {
                    Architecture::Plain => Vec::new(),
                    Architecture::Unet => job.pooling.clone(),
                },
                ..AudioConfig::default()
            };
            let model = WaveMamba::new(resolve_config(&job.config)?, audio, job.options.device)?;
            eprintln!("model: {} parameters", model.num_parameters());
            model
        }
    };
    Ok((job.clone(), Start::Fresh(model), None))
}

/// The `--init` model, which must do this job's task at its sample rate and be the model that
/// a given `--config`, `--arch` or `--pooling` describes.
fn load_init(job: &TrainJob, dir: &Path) -> Result<WaveMamba> {
    let model = crate::model::checkpoint::load(dir, job.options.device)?;
    let flags = ModelFlags {
        config: match job.given.has("--config") {
            true => Some((job.config.as_str(), resolve_config(&job.config)?)),
            false => None,
        },
        task: job.task,
        architecture: &job.architecture,
        pooling: &job.pooling,
        sample_rate: job.sample_rate,
    };
    let origin = ModelOrigin::Init(dir);
    check_model(&flags, &job.given, &model.config, &model.audio, origin)?;
    if model.audio.task != job.task || model.audio.sample_rate != job.sample_rate {
        return Err(Error::InvalidArgument {
            name: "--init",
            reason: format!(
                "{} is a {:?} model at {} Hz; this run trains {:?} at {} Hz",
                dir.display(),
                model.audio.task,
                model.audio.sample_rate,
                job.task,
                job.sample_rate
            )
            .to_lowercase(),
        });
    }
    eprintln!(
        "model: {} parameters from {}",
        model.num_parameters(),
        dir.display()
    );
    Ok(model)
}

/// A resumed run: loads the newest checkpoint (creating nothing), checks the given flags against
/// it and returns the job with the run's saved settings in place of the flags left out.
fn prepare_resume(job: &TrainJob) -> Result<(TrainJob, Start, Option<RunSettings>)> {
    let (model, opt, state) = RunDir::at(&job.out).resume(job.options.device, make_optimizer)?;
    let given = &job.given;
    let config = match given.has("--config") {
        true => Some((job.config.as_str(), resolve_config(&job.config)?)),
        false => None,
    };
    let flags = ModelFlags {
        config,
        task: job.task,
        architecture: &job.architecture,
        pooling: &job.pooling,
        sample_rate: job.sample_rate,
    };
    check_model(
        &flags,
        given,
        &model.config,
        &model.audio,
        ModelOrigin::Resumed,
    )?;
    let mut out = job.clone();
    out.task = model.audio.task;
    out.architecture = model.audio.architecture.clone();
    out.pooling = model.audio.pooling.clone();
    out.sample_rate = model.audio.sample_rate;
    match &state.settings {
        Some(saved) => {
            out.options = resume_options(saved, state.seed, &job.options, given)?;
            if out.noise.is_none() {
                // The run's noise, with its selection unless --noise-select is given.
                out.noise = saved.noise.as_ref().map(PathBuf::from);
                if !given.has("--noise-select") {
                    out.noise_select = saved.noise_select.clone();
                }
            }
        }
        None => {
            out.options.seed = given.keep("--seed", &state.seed, &job.options.seed)?;
            eprintln!(
                "warning: the checkpoints in {} predate saved run settings: --batch, --len, --lr \
                 and the schedule are taken from this command line unchecked",
                job.out.display()
            );
        }
    }
    if out.task == Task::Denoise {
        crate::denoise::loss::check_len(out.options.len)?;
    }
    check_more_steps(state.step, out.options.steps)?;
    let saved = state.settings.clone();
    Ok((out, Start::Loaded(model, opt, state), saved))
}

/// Says that a language model will have no validation, why, and what `best/` becomes.
fn warn_no_validation(train_files: usize) {
    eprintln!(
        "warning: no validation files among the {train_files} training files (the split holds \
         out about 5 % of the files by a hash of each path, and at least one from 10 files on, \
         unless a manifest names the splits); best/ will be the latest checkpoint's model, \
         not a validated one"
    );
}

/// Trains the job's objective on the loaded data, recording `settings` and stopping on a signal.
fn train_data(
    run: &RunDir,
    start: Start,
    mut corpus: TokenCorpus,
    noise: Option<TokenCorpus>,
    job: &TrainJob,
    settings: &RunSettings,
) -> Result<(TrainSummary, Metric)> {
    let control = Control {
        settings: Some(settings),
        stop: Some(interrupt::stop_flag()),
    };
    match noise {
        Some(noise) => {
            let mut data = DenoiseData::new(corpus, noise, job.options.seed)?;
            data.valid_len = job.options.len as usize;
            let metric = data.metric();
            let s = train_controlled(run, start, &mut data, &job.options, control)?;
            Ok((s, metric))
        }
        None => {
            let mut lm = LmObjective::new(&mut corpus);
            let metric = lm.metric();
            let s = train_controlled(run, start, &mut lm, &job.options, control)?;
            Ok((s, metric))
        }
    }
}

/// Writes data, steps, wall time, device and metrics into `best/wavemamba.json`.
fn record_provenance(
    best: &Path,
    job: &TrainJob,
    s: &TrainSummary,
    metric: &Metric,
    train_samples: usize,
) -> Result<()> {
    let rate = job.sample_rate;
    let path = best.join(crate::model::checkpoint::AUDIO_FILE);
    if !path.exists() {
        return Ok(());
    }
    let mut audio = AudioConfig::load(&path)?;
    let device = match job.options.device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        d => format!("{d:?}").to_lowercase(),
    };
    audio.provenance = json!({
        "data": job.data.display().to_string(),
        "noise": job.noise.as_ref().map(|n| n.display().to_string()),
        "init": job.init.as_ref().map(|n| n.display().to_string()),
        "train_hours": train_samples as f64 / rate as f64 / 3600.0,
        "steps": s.steps,
        "batch": job.options.batch,
        "len": job.options.len,
        "lr": job.options.lr,
        "wall_time_s": s.elapsed_s,
        "device": device,
        "precision": if job.options.bf16 && job.options.device.is_cuda() { "bf16" } else { "fp32" },
        "best_selected_by": if s.validated { "validation" } else { "latest checkpoint (no validation data)" },
        "wavemamba_version": env!("CARGO_PKG_VERSION"),
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    let selects = [("select", &job.select), ("noise_select", &job.noise_select)];
    for (key, select) in selects.into_iter().filter(|s| !s.1.is_empty()) {
        let rows: Vec<String> = select.iter().map(|(c, v)| format!("{c}={v}")).collect();
        audio.provenance.insert(key.into(), json!(rows));
    }
    if let Some(dir) = &job.init {
        // Fine-tuned: keep where the starting weights came from.
        let base = AudioConfig::load(&dir.join(crate::model::checkpoint::AUDIO_FILE))?;
        audio
            .provenance
            .insert("init_provenance".into(), json!(base.provenance));
    }
    if let Some(v) = s.best_valid {
        let key = match job.task {
            Task::Lm => "valid_nll_bits_per_sample",
            Task::Denoise => metric.valid_key,
        };
        audio.metrics.insert(key.into(), json!(v));
    }
    let text = serde_json::to_string_pretty(&audio).map_err(|e| Error::Config {
        reason: e.to_string(),
    })?;
    crate::model::checkpoint::write_atomic(&path, |tmp| {
        std::fs::write(tmp, text + "\n").map_err(|source| Error::Io {
            path: tmp.to_owned(),
            source,
        })
    })
}
