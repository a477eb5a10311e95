//! The data of a training job: the corpus (and noise) as tokens, from a token pack or the audio
//! of a directory or manifest (`--select` keeps manifest rows), the `--save-pack` output, and the
//! check that a resumed run reads the data it was trained on.

use std::path::Path;

use super::TrainJob;
use crate::audio::output::{OutputKind, Outputs};
use crate::config::Task;
use crate::train::corpus::TokenCorpus;
use crate::train::settings::{DataFingerprint, RunSettings};
use crate::{Error, Result};

/// Loads the training data as tokens: a token pack, or the audio of a directory or manifest
/// (only the manifest rows that `select` keeps, when it is not empty).
///
/// # Errors
/// [`Error::Dataset`] / [`Error::Io`] for unreadable data, an empty training split, or a
/// selection on a token pack or directory.
pub fn load_corpus(
    path: &Path,
    select: &[(String, String)],
    sample_rate: u32,
    seed: u64,
    strict: bool,
) -> Result<TokenCorpus> {
    let corpus = if path.is_file() && path.extension().is_some_and(|e| e == "wmtok") {
        if let Some((column, _)) = select.first() {
            return Err(Error::Dataset {
                path: path.to_owned(),
                reason: format!(
                    "selecting by the manifest column {column:?} needs a manifest, not a token \
                     pack (a pack holds the rows selected when it was written)"
                ),
            });
        }
        TokenCorpus::load_pack(path, seed)?
    } else {
        crate::train::audio_corpus::from_audio(path, select, sample_rate, seed, strict)?
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

/// Loads the training data (and the noise of a denoiser).
pub(super) fn load_data(job: &TrainJob) -> Result<(TokenCorpus, Option<TokenCorpus>)> {
    // The flags first: decoding the data can take minutes.
    match (job.task, &job.noise) {
        (Task::Lm, _) if !job.noise_select.is_empty() => {
            return Err(Error::InvalidArgument {
                name: "--noise-select",
                reason: "selects rows of the --noise manifest, which only --task denoise reads"
                    .into(),
            })
        }
        (Task::Lm, Some(_)) => {
            return Err(Error::InvalidArgument {
                name: "--noise",
                reason: "is the noise mixed into a denoiser's training, which only --task denoise \
                         reads (this run trains a language model)"
                    .into(),
            })
        }
        (Task::Denoise, None) => {
            return Err(Error::InvalidArgument {
                name: "--noise",
                reason: "task 'denoise' needs --noise DIR (a directory, manifest or token pack of noise recordings)".into(),
            })
        }
        _ => {}
    }
    let mut corpus = load_corpus(
        &job.data,
        &job.select,
        job.sample_rate,
        job.options.seed,
        job.strict,
    )?;
    corpus.valid_len = job.options.len;
    describe("data", &corpus);
    let noise = match (job.task, &job.noise) {
        (Task::Denoise, Some(path)) => {
            let seed = job.options.seed ^ 0x0004_015E;
            let noise = load_corpus(path, &job.noise_select, job.sample_rate, seed, job.strict)?;
            describe("noise", &noise);
            Some(noise)
        }
        _ => None,
    };
    Ok((corpus, noise))
}

/// `--save-pack`: checked before any work (the decoding it follows can take minutes), written
/// under a temporary name once the corpus is decoded and renamed into place.
pub(super) struct PackOutput {
    outputs: Outputs,
    index: usize,
}

impl PackOutput {
    /// Checks the pack's path: a `.wmtok` name, not a directory, in a directory that exists and
    /// can be written (see [`Outputs::add`]).
    pub(super) fn check(path: Option<&Path>) -> Result<Option<PackOutput>> {
        let Some(path) = path else { return Ok(None) };
        let mut outputs = Outputs::new();
        let index = outputs
            .add("--save-pack", path, OutputKind::Pack)
            .map_err(pack_error)?;
        Ok(Some(PackOutput { outputs, index }))
    }

    /// Writes `corpus` as the pack.
    pub(super) fn write(self, corpus: &TokenCorpus) -> Result<()> {
        let path = self.outputs.path(self.index).to_owned();
        std::fs::File::create(self.outputs.tmp(self.index))
            .and_then(|file| corpus.write_pack(file))
            .map_err(|source| Error::Io { path, source })
            .and_then(|()| self.outputs.commit().map(drop))
            .map_err(pack_error)
    }
}

/// An error about the `--save-pack` file, named by the flag (the run's --out is not involved).
fn pack_error(e: Error) -> Error {
    match e {
        Error::InvalidArgument { .. } => e,
        other => Error::InvalidArgument {
            name: "--save-pack",
            reason: other.to_string(),
        },
    }
}

pub(super) fn fingerprint(path: &Path, corpus: &TokenCorpus) -> (String, DataFingerprint) {
    (path.display().to_string(), DataFingerprint::of(corpus))
}

/// `PATH`, or `PATH FLAG COLUMN=VALUE …` for a selection of its rows (for messages).
fn data_label(path: &str, flag: &str, select: &[(String, String)]) -> String {
    select.iter().fold(path.to_owned(), |label, (c, v)| {
        format!("{label} {flag} {c}={v}")
    })
}

/// Refuses to resume on other data than the run's (a moved copy is fine).
pub(super) fn check_same_data(saved: &RunSettings, now: &RunSettings) -> Result<()> {
    let label = |path: &String, flag, select| data_label(path, flag, select);
    let pairs = [
        (
            "--data",
            Some((
                label(&saved.data, "--select", &saved.select),
                saved.data_fingerprint,
            )),
            Some((
                label(&now.data, "--select", &now.select),
                now.data_fingerprint,
            )),
        ),
        (
            "--noise",
            saved
                .noise
                .as_ref()
                .zip(saved.noise_fingerprint)
                .map(|(p, f)| (label(p, "--noise-select", &saved.noise_select), f)),
            now.noise
                .as_ref()
                .zip(now.noise_fingerprint)
                .map(|(p, f)| (label(p, "--noise-select", &now.noise_select), f)),
        ),
    ];
    for (flag, was, is) in pairs {
        if let (Some((was_path, was)), Some((is_path, is))) = (was, is) {
            if was != is {
                return Err(Error::InvalidArgument {
                    name: flag,
                    reason: format!(
                        "--resume needs the run's data: it was trained on {was_path} ({was}), \
                         but {is_path} has {is}"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Prints a corpus's files and length per split.
fn describe(what: &str, c: &TokenCorpus) {
    let (train_n, valid_n) = c.samples();
    // Hours, or seconds below a tenth of an hour (a small dataset reads "0.00 h" otherwise).
    let length = |n: usize| {
        let s = n as f64 / f64::from(c.sample_rate);
        if s < 360.0 {
            format!("{s:.1} s")
        } else {
            format!("{:.2} h", s / 3600.0)
        }
    };
    eprintln!(
        "{what}: {} train files ({}), {} validation files ({}) at {} Hz",
        c.train.len(),
        length(train_n),
        c.valid.len(),
        length(valid_n),
        c.sample_rate
    );
}
