//! `wavemamba train` as one library call: data, model (fresh or resumed), options, run directory.

use std::path::{Path, PathBuf};

use serde_json::json;
use tch::Device;

use super::corpus::TokenCorpus;
use super::run_dir::RunDir;
use super::{train_objective, LmObjective, Metric, Objective, Start, TrainOptions, TrainSummary};
use crate::config::{AudioConfig, MambaConfig, Task};
use crate::denoise::mix::DenoiseData;
use crate::model::WaveMamba;
use crate::{Error, Result};

/// Everything `wavemamba train` needs.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// A token pack (`.wmtok`), or a directory / manifest of audio files (speech for a denoiser).
    pub data: PathBuf,
    /// Noise for task `denoise`: a token pack, directory or manifest.
    pub noise: Option<PathBuf>,
    /// A preset name or a `config.json` path (ignored with `resume`).
    pub config: String,
    pub task: Task,
    /// Plain stack or multi-scale U-Net (pooling factors per stage; empty = [4, 4]).
    pub architecture: crate::config::Architecture,
    pub pooling: Vec<i64>,
    pub out: PathBuf,
    pub resume: bool,
    /// Start from this model directory's weights (fine-tuning) instead of a random init; its
    /// config.json and wavemamba.json are kept, `config`/`architecture` are ignored.
    pub init: Option<PathBuf>,
    pub sample_rate: u32,
    /// Also write the decoded corpus as a token pack here (to train elsewhere without decoding).
    pub save_pack: Option<PathBuf>,
    /// Fail on the first unreadable audio file instead of skipping it.
    pub strict: bool,
    pub options: TrainOptions,
}

/// Loads the training data as tokens.
///
/// # Errors
/// [`Error::Dataset`] / [`Error::Io`] for unreadable data or an empty training split.
pub fn load_corpus(path: &Path, sample_rate: u32, seed: u64, strict: bool) -> Result<TokenCorpus> {
    let corpus = if path.is_file() && path.extension().is_some_and(|e| e == "wmtok") {
        TokenCorpus::load_pack(path, seed)?
    } else {
        super::audio_corpus::from_audio(path, sample_rate, seed, strict)?
    };
    if corpus.sample_rate != sample_rate {
        return Err(Error::Dataset {
            path: path.to_owned(),
            reason: format!(
                "pack is at {} Hz but the model runs at {sample_rate} Hz",
                corpus.sample_rate
            ),
        });
    }
    if corpus.train.is_empty() {
        return Err(Error::Dataset {
            path: path.to_owned(),
            reason: "no training audio found".into(),
        });
    }
    Ok(corpus)
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

/// Runs the job: builds or resumes the model, trains, and records provenance and metrics in the
/// best model's `wavemamba.json`.
///
/// # Errors
/// Everything [`train`] and [`load_corpus`] can return; [`Error::Config`] for a task this build
/// cannot train.
pub fn run(job: &TrainJob) -> Result<TrainSummary> {
    if job.task == Task::Denoise {
        crate::denoise::loss::check_len(job.options.len)?; // before the (slow) data loading
    }
    let mut corpus = load_corpus(&job.data, job.sample_rate, job.options.seed, job.strict)?;
    corpus.valid_len = job.options.len;
    if let Some(pack) = &job.save_pack {
        corpus.save_pack(pack)?;
    }
    describe("data", &corpus);
    let noise = match (job.task, &job.noise) {
        (Task::Denoise, Some(path)) => {
            let noise = load_corpus(path, job.sample_rate, job.options.seed ^ 0x0004_015E, job.strict)?;
            describe("noise", &noise);
            Some(noise)
        }
        (Task::Denoise, None) => {
            return Err(Error::InvalidArgument {
                name: "noise",
                reason: "task 'denoise' needs --noise DIR (a directory, manifest or token pack of noise recordings)".into(),
            })
        }
        (Task::Lm, _) => None,
    };
    let train_n = corpus.samples().0;
    if job.options.steps == 0 {
        // Nothing to train: only the data work (e.g. --save-pack) was asked for.
        return Ok(TrainSummary {
            steps: 0,
            final_loss: f64::NAN,
            valid: None,
            best_valid: None,
            elapsed_s: 0.0,
            samples_per_s: 0.0,
        });
    }
    let run = RunDir::create(&job.out)?;
    let start = if job.resume {
        Start::Resume
    } else {
        if !run.checkpoints().is_empty() {
            return Err(Error::InvalidArgument {
                name: "out",
                reason: format!("{} already holds checkpoints: pass --resume to continue, or choose a new --out", job.out.display()),
            });
        }
        tch::manual_seed(job.options.seed as i64);
        if let Some(dir) = &job.init {
            let model = crate::model::checkpoint::load(dir, job.options.device)?;
            if model.audio.task != job.task || model.audio.sample_rate != job.sample_rate {
                return Err(Error::InvalidArgument {
                    name: "init",
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
            Start::Fresh(model)
        } else {
            let audio = AudioConfig {
                sample_rate: job.sample_rate,
                task: job.task,
                architecture: job.architecture.clone(),
                pooling: job.pooling.clone(),
                ..AudioConfig::default()
            };
            let model = WaveMamba::new(resolve_config(&job.config)?, audio, job.options.device)?;
            eprintln!("model: {} parameters", model.num_parameters());
            Start::Fresh(model)
        }
    };
    let rate = corpus.sample_rate;
    let (summary, metric) = match noise {
        Some(noise) => {
            let mut data = DenoiseData::new(corpus, noise, job.options.seed)?;
            data.valid_len = job.options.len as usize;
            let metric = data.metric();
            (
                train_objective(&run, start, &mut data, &job.options)?,
                metric,
            )
        }
        None => {
            let mut lm = LmObjective::new(&mut corpus);
            let metric = lm.metric();
            (train_objective(&run, start, &mut lm, &job.options)?, metric)
        }
    };
    record_provenance(&run.best_dir(), job, &summary, &metric, train_n, rate)?;
    Ok(summary)
}

fn describe(what: &str, c: &TokenCorpus) {
    let (train_n, valid_n) = c.samples();
    let hours = |n: usize| n as f64 / c.sample_rate as f64 / 3600.0;
    eprintln!(
        "{what}: {} train files ({:.2} h), {} validation files ({:.2} h) at {} Hz",
        c.train.len(),
        hours(train_n),
        c.valid.len(),
        hours(valid_n),
        c.sample_rate
    );
}

/// Writes data, steps, wall time, device and metrics into `best/wavemamba.json`.
fn record_provenance(
    best: &Path,
    job: &TrainJob,
    s: &TrainSummary,
    metric: &Metric,
    train_samples: usize,
    rate: u32,
) -> Result<()> {
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
        "wavemamba_version": env!("CARGO_PKG_VERSION"),
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
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
