//! `wavemamba eval` for language models: mean NLL in bits per sample over audio files.
//!
//! Protocol (comparable across tools): each file is one sequence of mu-law tokens at the model's
//! rate; the model reads `[128] + tokens[..L-1]` and is scored on every token; the mean is over all
//! tokens of all files. Long files are processed in chunks with the recurrent state carried across
//! chunk boundaries (`prefill`), which is exactly the same computation as one pass.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::{Kind, Reduction, Tensor};

use crate::audio;
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

/// Audio files under `path` (recursively) or `path` itself.
///
/// # Errors
/// [`Error::Io`] when `path` does not exist.
pub fn audio_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.exists() {
        return Err(Error::Io {
            path: path.to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| ["wav", "flac", "ogg"].contains(&x.to_ascii_lowercase().as_str()))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Evaluates `model` on the audio at `path`.
///
/// # Errors
/// No readable audio at all, kernel errors.
pub fn eval_lm(model: &WaveMamba, path: &Path) -> Result<EvalReport> {
    let rate = model.audio.sample_rate;
    let (mut bits, mut samples) = (0.0, 0usize);
    let (mut per_file, mut skipped) = (Vec::new(), Vec::new());
    for file in audio_files(path)? {
        let tokens = match audio::read_audio(&file).and_then(|a| {
            let x = audio::resample(&a.samples, a.sample_rate, rate)?;
            Ok(audio::mulaw::encode_slice(&x))
        }) {
            Ok(t) if !t.is_empty() => t,
            Ok(_) => {
                skipped.push(format!("{}: no samples", file.display()));
                continue;
            }
            Err(e) => {
                skipped.push(e.to_string());
                continue;
            }
        };
        let (b, n) = sequence_bits(model, &tokens, CHUNK)?;
        per_file.push(FileNll {
            path: file.display().to_string(),
            samples: n,
            nll_bits_per_sample: b / n as f64,
        });
        bits += b;
        samples += n;
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
