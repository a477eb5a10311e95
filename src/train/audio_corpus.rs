//! Builds a [`TokenCorpus`] from an audio dataset (directory or manifest): the dataset module
//! decodes, resamples and caches every file once; here each train/valid file becomes mu-law tokens.

use std::path::Path;

use super::corpus::{TokenCorpus, TokenFile};
use crate::audio::mulaw;
use crate::data::{Dataset, DatasetOptions, Split};
use crate::Result;

/// Opens `path` as a dataset at `sample_rate` and tokenises its train and valid splits; `select`
/// keeps only a manifest's rows whose column holds the value ([`DatasetOptions::select`]).
///
/// # Errors
/// Dataset errors (no usable files, unreadable cache, a bad file under `strict`, a selection on a
/// directory or one that matches no row).
pub fn from_audio(
    path: &Path,
    select: &[(String, String)],
    sample_rate: u32,
    seed: u64,
    strict: bool,
) -> Result<TokenCorpus> {
    let ds = Dataset::open(
        path,
        &DatasetOptions {
            sample_rate,
            strict,
            progress: true,
            select: select.to_vec(),
            ..DatasetOptions::default()
        },
    )?;
    let summary = ds.summary();
    eprintln!("{summary}");
    let tokens = |split: Split| -> Result<Vec<TokenFile>> {
        ds.files(split)
            .into_iter()
            .map(|f| {
                Ok(TokenFile {
                    name: f.rel.clone(),
                    tokens: mulaw::encode_slice(&ds.read(f)?),
                })
            })
            .collect()
    };
    Ok(TokenCorpus::new(
        sample_rate,
        tokens(Split::Train)?,
        tokens(Split::Valid)?,
        seed,
    ))
}
