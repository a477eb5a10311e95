//! `wavemamba eval` for language models: mean NLL in bits per sample over audio files.
//!
//! Protocol (comparable across tools): each file is one sequence of mu-law tokens at the model's
//! rate; the model reads `[128] + tokens[..L-1]` and is scored on every token; the mean is over all
//! tokens of all files. Long files are processed in chunks with the recurrent state carried across
//! chunk boundaries (`prefill`), which is exactly the same computation as one pass.

use std::path::Path;

use serde::Serialize;
use tch::{Kind, Reduction, Tensor};

use crate::audio;
use crate::data::{is_audio_name, Dataset, DatasetOptions, Split};
use crate::model::{WaveMamba, START_TOKEN};
use crate::{Error, Result};

/// Samples per forward call (bounds memory; results do not depend on it).
pub const CHUNK: usize = 65_536;

/// Result for one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileNll {
    pub path: String,
    pub samples: usize,
    pub nll_bits_per_sample: f64,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub nll_bits_per_sample: f64,
    pub samples: usize,
    pub files: usize,
    /// Files that could not be read, with the reason.
    pub skipped: Vec<String>,
    pub per_file: Vec<FileNll>,
}

/// Sum of −log₂ p over every token of one sequence, and the token count, in chunks of
/// `chunk` samples (the result does not depend on `chunk`).
///
/// # Errors
/// Kernel errors; [`Error::InvalidArgument`] for `chunk == 0`.
pub fn sequence_bits(model: &WaveMamba, tokens: &[u8], chunk: usize) -> Result<(f64, usize)> {
    if chunk == 0 {
        return Err(Error::InvalidArgument {
            name: "chunk",
            reason: "must be ≥ 1".into(),
        });
    }
    let mut state = model.zero_state(1);
    let mut total = 0.0;
    let mut prev = START_TOKEN;
    for chunk in tokens.chunks(chunk) {
        let mut input: Vec<i64> = Vec::with_capacity(chunk.len());
        input.push(prev);
        input.extend(chunk[..chunk.len() - 1].iter().map(|&t| t as i64));
        prev = chunk[chunk.len() - 1] as i64;
        let target: Vec<i64> = chunk.iter().map(|&t| t as i64).collect();
        let dev = model.device();
        let x = Tensor::from_slice(&input).unsqueeze(0).to_device(dev);
        let y = Tensor::from_slice(&target).to_device(dev);
        let nats = tch::no_grad(|| -> Result<f64> {
            let logits = model
                .prefill(&x, &mut state)?
                .squeeze_dim(0)
                .to_kind(Kind::Float); // (len, V)
            Ok(logits
                .cross_entropy_loss::<Tensor>(&y, None, Reduction::Sum, -100, 0.0)
                .double_value(&[]))
        })?;
        total += nats / std::f64::consts::LN_2;
    }
    Ok((total, tokens.len()))
}

/// Evaluates `model` on the audio at `path`: one audio file, or a directory / manifest opened as
/// a dataset (decoded and resampled once into the dataset cache), all of it or only `split`: the
/// same hash of each file's path as `train` uses, so `--split valid` on the training data gives
/// exactly the files a run held out.
///
/// # Errors
/// A model that is not a language model, no readable audio at all, a split asked of a single
/// file, dataset/cache errors, kernel errors.
pub fn eval_lm(model: &WaveMamba, path: &Path, split: Option<Split>) -> Result<EvalReport> {
    eval_lm_select(model, path, split, &[])
}

/// [`eval_lm`] on only the rows of a manifest whose column holds the value
/// ([`DatasetOptions::select`], e.g. `("kind", "speech")`), as `train --select` trains on them
/// (so `split` gives the same held-out files as that run).
///
/// # Errors
/// As [`eval_lm`]; [`Error::InvalidArgument`] for a selection asked of a single file, and the
/// dataset's errors for one asked of a directory or matching no row.
pub fn eval_lm_select(
    model: &WaveMamba,
    path: &Path,
    split: Option<Split>,
    select: &[(String, String)],
) -> Result<EvalReport> {
    model.check_task(crate::config::Task::Lm)?;
    let rate = model.audio.sample_rate;
    let (mut bits, mut samples) = (0.0, 0usize);
    let (mut per_file, mut skipped) = (Vec::new(), Vec::new());
    let mut score = |name: String, wave: Vec<f32>| -> Result<()> {
        if wave.is_empty() {
            skipped.push(format!("{name}: no samples"));
            return Ok(());
        }
        let (b, n) = sequence_bits(model, &audio::mulaw::encode_slice(&wave), CHUNK)?;
        per_file.push(FileNll {
            path: name,
            samples: n,
            nll_bits_per_sample: b / n as f64,
        });
        bits += b;
        samples += n;
        Ok(())
    };
    if path.is_file() && is_audio_name(path) {
        if let Some(split) = split {
            return Err(Error::InvalidArgument {
                name: "--split",
                reason: format!(
                    "{} is one audio file; a split ({}) needs a directory or a manifest",
                    path.display(),
                    split.name()
                ),
            });
        }
        if let Some((column, value)) = select.first() {
            return Err(Error::InvalidArgument {
                name: "--select",
                reason: format!(
                    "{} is one audio file; selecting rows ({column}={value}) needs a manifest",
                    path.display()
                ),
            });
        }
        let a = audio::read_audio(path)?;
        score(
            path.display().to_string(),
            audio::resample(&a.samples, a.sample_rate, rate)?,
        )?;
    } else {
        let opts = DatasetOptions {
            sample_rate: rate,
            progress: true,
            warn: false,
            select: select.to_vec(),
            ..DatasetOptions::default()
        };
        let ds = Dataset::open(path, &opts)?;
        let files: Vec<_> = match split {
            Some(split) => ds.files(split),
            None => ds.all_files().iter().collect(),
        };
        if let (Some(split), true) = (split, files.is_empty()) {
            return Err(Error::Dataset {
                path: path.to_owned(),
                reason: format!(
                    "the {} split has no files ({} usable files in all)",
                    split.name(),
                    ds.all_files().len()
                ),
            });
        }
        for f in files {
            score(f.path.display().to_string(), ds.read(f)?)?;
        }
        skipped.extend(
            ds.skipped()
                .iter()
                .map(|s| format!("{}: {}", s.path.display(), s.reason)),
        );
    }
    if samples == 0 {
        return Err(Error::Dataset {
            path: path.to_owned(),
            reason: format!("no readable audio ({} skipped)", skipped.len()),
        });
    }
    Ok(EvalReport {
        nll_bits_per_sample: bits / samples as f64,
        samples,
        files: per_file.len(),
        skipped,
        per_file,
    })
}
