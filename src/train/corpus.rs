//! A training corpus held as 8-bit mu-law tokens in memory (1 byte per sample: 2 hours of 16 kHz
//! speech is 115 MB), with deterministic crops, and its portable "token pack" file.
//!
//! Pack format (`.wmtok`): the line `WMTOK1`, one line of JSON
//! `{"sample_rate": 16000, "files": [{"name": "...", "split": "train", "samples": N}, ...]}`,
//! then every file's tokens back to back in that order.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::Batches;
use crate::model::START_TOKEN;
use crate::rng::splitmix64;
use crate::{Error, Result};

/// One file's tokens.
#[derive(Debug, Clone)]
pub struct TokenFile {
    pub name: String,
    pub tokens: Vec<u8>,
}

/// Train and validation token files at one sample rate.
#[derive(Debug, Clone)]
pub struct TokenCorpus {
    pub sample_rate: u32,
    pub train: Vec<TokenFile>,
    pub valid: Vec<TokenFile>,
    /// Seed of the crop positions.
    pub seed: u64,
    /// Validation crops: at most this many, of `valid_len` samples, batched by `valid_batch`.
    pub valid_crops: usize,
    pub valid_len: i64,
    pub valid_batch: i64,
}

#[derive(Serialize, Deserialize)]
struct PackEntry {
    name: String,
    split: String,
    samples: usize,
}

#[derive(Serialize, Deserialize)]
struct PackHeader {
    sample_rate: u32,
    files: Vec<PackEntry>,
}

const MAGIC: &str = "WMTOK1";

impl TokenCorpus {
    pub fn new(
        sample_rate: u32,
        train: Vec<TokenFile>,
        valid: Vec<TokenFile>,
        seed: u64,
    ) -> TokenCorpus {
        TokenCorpus {
            sample_rate,
            train,
            valid,
            seed,
            valid_crops: 64,
            valid_len: 16384,
            valid_batch: 8,
        }
    }

    /// Samples in the train and validation splits.
    pub fn samples(&self) -> (usize, usize) {
        let count = |v: &[TokenFile]| v.iter().map(|f| f.tokens.len()).sum();
        (count(&self.train), count(&self.valid))
    }

    /// Writes the pack atomically.
    ///
    /// # Errors
    /// [`Error::Io`] naming `path`.
    pub fn save_pack(&self, path: &Path) -> Result<()> {
        crate::model::checkpoint::write_atomic(path, |tmp| {
            std::fs::File::create(tmp)
                .and_then(|file| self.write_pack(file))
                .map_err(|source| Error::Io {
                    path: path.to_owned(),
                    source,
                })
        })
    }

    /// Writes the pack's bytes (see the module doc) into `w`, e.g. a temporary file that the
    /// caller renames into place.
    ///
    /// # Errors
    /// The writer's errors.
    pub fn write_pack(&self, w: impl Write) -> std::io::Result<()> {
        let files = self
            .train
            .iter()
            .map(|f| (f, "train"))
            .chain(self.valid.iter().map(|f| (f, "valid")))
            .collect::<Vec<_>>();
        let header = PackHeader {
            sample_rate: self.sample_rate,
            files: files
                .iter()
                .map(|(f, s)| PackEntry {
                    name: f.name.clone(),
                    split: (*s).into(),
                    samples: f.tokens.len(),
                })
                .collect(),
        };
        let json = serde_json::to_string(&header)?;
        let mut w = std::io::BufWriter::new(w);
        writeln!(w, "{MAGIC}")?;
        writeln!(w, "{json}")?;
        for (f, _) in &files {
            w.write_all(&f.tokens)?;
        }
        w.flush()
    }

    /// Reads a pack written by [`TokenCorpus::save_pack`].
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Dataset`] for a file that is not a pack or is truncated.
    pub fn load_pack(path: &Path, seed: u64) -> Result<TokenCorpus> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let bad = |reason: String| Error::Dataset {
            path: path.to_owned(),
            reason,
        };
        let mut r = BufReader::new(std::fs::File::open(path).map_err(io)?);
        let mut line = String::new();
        r.read_line(&mut line).map_err(io)?;
        if line.trim_end() != MAGIC {
            return Err(bad(
                "not a wavemamba token pack (missing WMTOK1 header)".into()
            ));
        }
        line.clear();
        r.read_line(&mut line).map_err(io)?;
        let header: PackHeader =
            serde_json::from_str(&line).map_err(|e| bad(format!("bad pack header: {e}")))?;
        let mut corpus = TokenCorpus::new(header.sample_rate, Vec::new(), Vec::new(), seed);
        for e in header.files {
            let mut tokens = vec![0u8; e.samples];
            r.read_exact(&mut tokens).map_err(|_| {
                bad(format!(
                    "truncated: {} is shorter than its header says",
                    e.name
                ))
            })?;
            let file = TokenFile {
                name: e.name,
                tokens,
            };
            if e.split == "train" {
                corpus.train.push(file);
            } else {
                corpus.valid.push(file);
            }
        }
        Ok(corpus)
    }

    /// The tokens a crop of `len` chosen by `key` reads from `files` (`total` = their summed
    /// length): a file picked in proportion to its length, then a uniform start; a file shorter
    /// than `len` is returned whole (fewer than `len` tokens).
    pub(crate) fn pick(files: &[TokenFile], total: usize, key: u64, len: usize) -> &[u8] {
        let r = splitmix64(key);
        let mut pos = (r % total.max(1) as u64) as usize;
        let file = files
            .iter()
            .find(|f| {
                if pos < f.tokens.len() {
                    true
                } else {
                    pos -= f.tokens.len();
                    false
                }
            })
            .unwrap_or(&files[0]);
        let n = file.tokens.len();
        let start = if n > len {
            (splitmix64(r) % (n - len + 1) as u64) as usize
        } else {
            0
        };
        &file.tokens[start..(start + len).min(n)]
    }

    /// A crop of `len` tokens (see [`TokenCorpus::pick`]), right-padded with silence (mu-law 128).
    fn crop(files: &[TokenFile], total: usize, key: u64, len: usize, out: &mut Vec<i64>) {
        let tokens = Self::pick(files, total, key, len);
        out.extend(tokens.iter().map(|&t| t as i64));
        out.extend(std::iter::repeat_n(START_TOKEN, len - tokens.len()));
    }
}

impl Batches for TokenCorpus {
    fn train_batch(&mut self, index: u64, batch: i64, len: i64) -> Result<Tensor> {
        if self.train.is_empty() {
            return Err(Error::InvalidArgument {
                name: "--data",
                reason: "the training split has no audio".into(),
            });
        }
        let total = self.samples().0;
        let mut out = Vec::with_capacity((batch * len) as usize);
        for b in 0..batch as u64 {
            let key = self.seed ^ splitmix64(index.wrapping_mul(1 << 20).wrapping_add(b));
            Self::crop(&self.train, total, key, len as usize, &mut out);
        }
        Ok(Tensor::from_slice(&out).view([batch, len]))
    }

    fn valid_set(&mut self) -> Result<Vec<Tensor>> {
        if self.valid.is_empty() {
            return Ok(Vec::new());
        }
        let total = self.samples().1;
        let len = self.valid_len.min(total as i64).max(1);
        let crops = self.valid_crops.min(total.div_ceil(len as usize).max(1));
        let mut all = Vec::with_capacity(crops * len as usize);
        for i in 0..crops as u64 {
            Self::crop(
                &self.valid,
                total,
                0xA11D ^ splitmix64(i),
                len as usize,
                &mut all,
            );
        }
        let t = Tensor::from_slice(&all).view([crops as i64, len]);
        Ok(t.split(self.valid_batch.max(1), 0))
    }
}
