//! `wavemamba eval --task denoise`: SI-SDR and SI-SDR improvement per SNR on mixtures of held-out
//! speech and held-out noise, for the model and for the RNNoise baseline on the same mixtures.
//!
//! Protocol: every speech file (whole, at the model's rate) is mixed, at each SNR, with a noise
//! segment chosen by the seed (file and offset; repeated when the file is shorter), scaled so that
//! the speech-to-noise energy ratio is the SNR; a mixture whose peak would exceed 0.99 is scaled
//! down together with its reference. Scores are means over files. STOI is not computed (no
//! cheap, faithful implementation here; `pystoi` on the written files is the way).

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::denoise_samples;
use super::mix::add_noise_at_snr;
use super::rnnoise::rnnoise;
use super::sisdr::si_sdr;
use crate::data::{is_audio_name, Dataset, DatasetOptions};
use crate::model::WaveMamba;
use crate::rng::{splitmix64, SplitMix};
use crate::{Error, Result};

/// What to evaluate on.
#[derive(Debug, Clone)]
pub struct DenoiseEvalOptions {
    /// Clean speech: a file, directory or manifest (files not used in training).
    pub speech: PathBuf,
    /// Noise: a file, directory or manifest (files not used in training).
    pub noise: PathBuf,
    pub snr_db: Vec<f32>,
    pub seed: u64,
    /// Use at most this many speech files (the first ones in path order).
    pub max_files: Option<usize>,
    /// Also score RNNoise (nnnoiseless) on the same mixtures.
    pub baseline: bool,
    pub progress: bool,
}

/// Scores at one SNR (means over files, dB).
#[derive(Debug, Clone, Serialize)]
pub struct SnrScores {
    pub snr_db: f32,
    pub files: usize,
    pub noisy_si_sdr_db: f64,
    pub model_si_sdr_db: f64,
    pub model_si_sdri_db: f64,
    pub rnnoise_si_sdr_db: Option<f64>,
    pub rnnoise_si_sdri_db: Option<f64>,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct DenoiseEvalReport {
    pub sample_rate: u32,
    pub speech_files: usize,
    pub noise_files: usize,
    pub speech_seconds: f64,
    pub seed: u64,
    pub per_snr: Vec<SnrScores>,
    /// Mean over SNRs of the per-SNR improvements.
    pub model_si_sdri_db: f64,
    pub rnnoise_si_sdri_db: Option<f64>,
    /// Model improvement minus RNNoise improvement (dB).
    pub advantage_over_rnnoise_db: Option<f64>,
    /// Wall time of the model over the audio it processed (parallel scan).
    pub model_real_time_factor: f64,
    pub skipped: Vec<String>,
}

/// The audio of one file, or of every readable file of a directory or manifest, at `rate`.
struct AudioSet {
    names: Vec<String>,
    waves: Vec<Vec<f32>>,
    /// "path: reason" of the files left out.
    skipped: Vec<String>,
}

fn open(path: &Path, rate: u32) -> Result<AudioSet> {
    if path.is_file() && is_audio_name(path) {
        let a = crate::audio::read_audio(path)?;
        return Ok(AudioSet {
            names: vec![path.display().to_string()],
            waves: vec![crate::audio::resample(&a.samples, a.sample_rate, rate)?],
            skipped: Vec::new(),
        });
    }
    let ds = Dataset::open(
        path,
        &DatasetOptions {
            sample_rate: rate,
            warn: false,
            ..DatasetOptions::default()
        },
    )?;
    let waves = ds
        .all_files()
        .iter()
        .map(|f| ds.read(f))
        .collect::<Result<Vec<_>>>()?;
    Ok(AudioSet {
        names: ds.all_files().iter().map(|f| f.rel.clone()).collect(),
        waves,
        skipped: ds
            .skipped()
            .iter()
            .map(|s| format!("{}: {}", s.path.display(), s.reason))
            .collect(),
    })
}

/// Highest SNR accepted (dB): above it the noise is below float32 resolution of speech, and the
/// mixture's SI-SDR is infinite.
const MAX_SNR_DB: f32 = 60.0;

/// Runs the evaluation.
///
/// # Errors
/// [`Error::Config`] for a model that is not a denoiser; [`Error::Dataset`] for no usable speech
/// or noise; [`Error::InvalidArgument`] for no SNRs; kernel errors.
pub fn eval_denoise(model: &WaveMamba, opts: &DenoiseEvalOptions) -> Result<DenoiseEvalReport> {
    model.check_task(crate::config::Task::Denoise)?;
    if opts.snr_db.is_empty()
        || opts
            .snr_db
            .iter()
            .any(|s| !s.is_finite() || s.abs() > MAX_SNR_DB)
    {
        return Err(Error::InvalidArgument {
            name: "--snr",
            reason: format!(
                "give one or more SNRs in dB between −{MAX_SNR_DB} and {MAX_SNR_DB}, e.g. 0,5,10"
            ),
        });
    }
    let rate = model.audio.sample_rate;
    let speech_set = open(&opts.speech, rate)?;
    let noise_set = open(&opts.noise, rate)?;
    let mut skipped = speech_set.skipped;
    skipped.extend(noise_set.skipped);
    let names = speech_set.names;
    let mut speech = speech_set.waves;
    speech.truncate(opts.max_files.unwrap_or(usize::MAX));
    // Silent (or constant) noise would leave the mixture clean: SI-SDR +∞.
    let noise = noise_set.waves;
    let mut usable = Vec::with_capacity(noise.len());
    for (n, name) in noise.into_iter().zip(&noise_set.names) {
        if super::mix::variance(&n) < 1e-8 {
            skipped.push(format!("{name}: silent or empty noise"));
        } else {
            usable.push(n);
        }
    }
    let noise = usable;
    if noise.is_empty() {
        return Err(Error::Dataset {
            path: opts.noise.clone(),
            reason: "no usable (non-silent) noise audio".into(),
        });
    }
    let bar = if opts.progress {
        ProgressBar::new((speech.len() * opts.snr_db.len()) as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{wide_bar} mixture {pos}/{len}  {msg}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut sums = vec![[0.0f64; 3]; opts.snr_db.len()]; // noisy, model, rnnoise
    let (mut files, mut seconds, mut model_s) = (0usize, 0.0f64, 0.0f64);
    for (i, clean) in speech.iter().enumerate() {
        if super::mix::variance(clean) < 1e-8 {
            skipped.push(format!("{}: silent or empty", names[i]));
            bar.inc(opts.snr_db.len() as u64);
            continue;
        }
        // A random stretch of a random noise file; another draw where that stretch is silent.
        let mut rng = SplitMix(splitmix64(opts.seed ^ i as u64));
        let mut draw = || {
            let n = &noise[rng.below(noise.len() as u64) as usize];
            let offset = rng.below(n.len() as u64) as usize;
            let take = n.iter().cycle().skip(offset).take(clean.len());
            take.copied().collect::<Vec<f32>>()
        };
        let Some(segment) = (0..16)
            .map(|_| draw())
            .find(|seg| super::mix::variance(seg) >= 1e-8)
        else {
            skipped.push(format!(
                "{}: no audible noise stretch in 16 draws",
                names[i]
            ));
            bar.inc(opts.snr_db.len() as u64);
            continue;
        };
        files += 1;
        seconds += clean.len() as f64 / f64::from(rate);
        for (k, &snr) in opts.snr_db.iter().enumerate() {
            let mut noisy = add_noise_at_snr(clean, &segment, snr);
            let mut reference = clean.clone();
            let peak = noisy.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if peak > 0.99 {
                let g = 0.99 / peak;
                noisy.iter_mut().for_each(|v| *v *= g);
                reference.iter_mut().for_each(|v| *v *= g);
            }
            let started = std::time::Instant::now();
            let y = denoise_samples(model, &noisy)?;
            model_s += started.elapsed().as_secs_f64();
            sums[k][0] += si_sdr(&noisy, &reference);
            sums[k][1] += si_sdr(&y, &reference);
            if opts.baseline {
                sums[k][2] += si_sdr(&rnnoise(&noisy, rate)?, &reference);
            }
            bar.inc(1);
        }
        bar.set_message(format!("{:.0} s of speech", seconds));
    }
    bar.finish_and_clear();
    if files == 0 {
        return Err(Error::Dataset {
            path: opts.speech.clone(),
            reason: format!("no usable speech ({} skipped)", skipped.len()),
        });
    }
    let mean = |v: f64| v / files as f64;
    let per_snr: Vec<SnrScores> = opts
        .snr_db
        .iter()
        .zip(&sums)
        .map(|(&snr, s)| SnrScores {
            snr_db: snr,
            files,
            noisy_si_sdr_db: mean(s[0]),
            model_si_sdr_db: mean(s[1]),
            model_si_sdri_db: mean(s[1] - s[0]),
            rnnoise_si_sdr_db: opts.baseline.then(|| mean(s[2])),
            rnnoise_si_sdri_db: opts.baseline.then(|| mean(s[2] - s[0])),
        })
        .collect();
    let avg = |f: &dyn Fn(&SnrScores) -> Option<f64>| -> Option<f64> {
        let v: Option<Vec<f64>> = per_snr.iter().map(f).collect();
        v.map(|v| v.iter().sum::<f64>() / v.len() as f64)
    };
    let model_si_sdri_db = avg(&|s| Some(s.model_si_sdri_db)).unwrap_or(f64::NAN);
    let rnnoise_si_sdri_db = avg(&|s| s.rnnoise_si_sdri_db);
    Ok(DenoiseEvalReport {
        sample_rate: rate,
        speech_files: files,
        noise_files: noise.len(),
        speech_seconds: seconds,
        seed: opts.seed,
        model_si_sdri_db,
        advantage_over_rnnoise_db: rnnoise_si_sdri_db.map(|r| model_si_sdri_db - r),
        rnnoise_si_sdri_db,
        per_snr,
        model_real_time_factor: model_s / (seconds * opts.snr_db.len() as f64).max(1e-9),
        skipped,
    })
}
