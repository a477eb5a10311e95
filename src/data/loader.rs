//! Random crops and `(B, L)` mu-law token batches, made ahead of time by background threads.
//!
//! Batch `index` of a split is a pure function of `(seed, split, index, B, L, short_files)`:
//! workers, prefetch depth, timing and restarts never change what a batch holds, so a resumed
//! run sees exactly the batches the interrupted one would have ([`Dataset::batch`] makes one
//! batch directly, without threads).
//!
//! Each row picks a file with probability proportional to its length (every sample of the split
//! is equally likely to be covered) and a start uniformly in `[0, samples − L]`. A file shorter
//! than `L` is used whole from its start and the rest of the row follows [`ShortFiles`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, TryRecvError};
use tch::{Device, Tensor};

use super::{cache, Dataset, Split};
use crate::audio::mulaw;
use crate::rng::{splitmix64, SplitMix};
use crate::{Error, Result};

/// What fills a row when the drawn file is shorter than the crop length `L`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShortFiles {
    /// Further randomly drawn files of the split follow, each from its start, the last one cut
    /// at `L`: every token is real audio (the default; right for language-model training).
    #[default]
    Concatenate,
    /// The file, then digital silence (token 128) up to `L`: one utterance per row (SC09-style
    /// classification or conditioning).
    Pad,
}

/// What a [`Loader`] produces.
#[derive(Debug, Clone)]
pub struct LoaderOptions {
    pub split: Split,
    /// Rows per batch (B).
    pub batch: usize,
    /// Samples per row (L).
    pub len: usize,
    pub seed: u64,
    /// Where the batches are placed (the copy happens in the worker thread).
    pub device: Device,
    /// Threads making batches.
    pub workers: usize,
    /// Batches made ahead of the consumer, over all workers.
    pub prefetch: usize,
    /// Index of the first batch (to resume a run).
    pub first_batch: u64,
    pub short_files: ShortFiles,
}

impl LoaderOptions {
    /// `batch × len` crops of `split`, seed 0, CPU, 1 worker, 4 batches ahead.
    pub fn new(split: Split, batch: usize, len: usize) -> LoaderOptions {
        LoaderOptions {
            split,
            batch,
            len,
            seed: 0,
            device: Device::Cpu,
            workers: 1,
            prefetch: 4,
            first_batch: 0,
            short_files: ShortFiles::Concatenate,
        }
    }

    fn check(&self) -> Result<()> {
        let bad = |name, reason: String| Err(Error::InvalidArgument { name, reason });
        if self.batch == 0 || self.len == 0 {
            return bad(
                "batch/len",
                format!("must be ≥ 1, got {}×{}", self.batch, self.len),
            );
        }
        if self.batch.saturating_mul(self.len) > 1 << 31 {
            return bad(
                "batch/len",
                format!("{}×{} tokens is too large", self.batch, self.len),
            );
        }
        if !(1..=256).contains(&self.workers) {
            return bad(
                "workers",
                format!("must be in 1..=256, got {}", self.workers),
            );
        }
        Ok(())
    }
}

/// Crops from the files of one split.
struct Cropper {
    /// (cache entry, samples) per file.
    files: Vec<(PathBuf, u64)>,
    /// Inclusive prefix sums of `samples`.
    cum: Vec<u64>,
    len: usize,
    short_files: ShortFiles,
}

impl Cropper {
    fn new(dataset: &Dataset, opts: &LoaderOptions) -> Result<Cropper> {
        let files: Vec<(PathBuf, u64)> = dataset
            .files(opts.split)
            .into_iter()
            .map(|f| (f.cache_path.clone(), f.samples))
            .collect();
        if files.is_empty() {
            return Err(Error::Dataset {
                path: dataset.inner.source.clone(),
                reason: format!(
                    "the {} split has no files ({} usable files in all)",
                    opts.split,
                    dataset.all_files().len()
                ),
            });
        }
        let cum = files
            .iter()
            .scan(0u64, |acc, f| {
                *acc += f.1;
                Some(*acc)
            })
            .collect();
        Ok(Cropper {
            files,
            cum,
            len: opts.len,
            short_files: opts.short_files,
        })
    }

    /// A file drawn with probability proportional to its length.
    fn pick(&self, rng: &mut SplitMix) -> usize {
        let total = *self.cum.last().unwrap_or(&1);
        let u = rng.below(total);
        self.cum
            .partition_point(|&c| c <= u)
            .min(self.files.len() - 1)
    }

    fn crop(&self, rng: &mut SplitMix, out: &mut [f32], bytes: &mut Vec<u8>) -> Result<()> {
        let len = self.len;
        let (path, n) = &self.files[self.pick(rng)];
        if *n >= len as u64 {
            let start = rng.below(n - len as u64 + 1);
            return cache::read_samples(path, start, &mut out[..len], bytes);
        }
        let mut filled = *n as usize;
        cache::read_samples(path, 0, &mut out[..filled], bytes)?;
        match self.short_files {
            ShortFiles::Pad => out[filled..].fill(0.0),
            ShortFiles::Concatenate => {
                while filled < len {
                    let (path, n) = &self.files[self.pick(rng)];
                    let take = (*n as usize).min(len - filled);
                    cache::read_samples(path, 0, &mut out[filled..filled + take], bytes)?;
                    filled += take;
                }
            }
        }
        Ok(())
    }

    /// Batch `index` as `B·L` tokens, row-major.
    fn batch(
        &self,
        opts: &LoaderOptions,
        index: u64,
        audio: &mut [f32],
        bytes: &mut Vec<u8>,
    ) -> Result<Vec<i64>> {
        let salt = splitmix64(opts.seed ^ splitmix64(opts.split as u64 + 1));
        let base = splitmix64(salt ^ splitmix64(index));
        let mut tokens = vec![0i64; opts.batch * opts.len];
        for (row, chunk) in tokens.chunks_exact_mut(opts.len).enumerate() {
            let mut rng = SplitMix(splitmix64(base.wrapping_add(row as u64)));
            self.crop(&mut rng, audio, bytes)?;
            mulaw::encode_into(audio, chunk);
        }
        Ok(tokens)
    }
}

fn to_tensor(tokens: &[i64], opts: &LoaderOptions) -> Result<Tensor> {
    let t = Tensor::f_from_slice(tokens)?.f_view([opts.batch as i64, opts.len as i64])?; // (B, L)
    Ok(match opts.device {
        Device::Cpu => t,
        d => t.f_to_device(d)?,
    })
}

impl Dataset {
    /// Batch number `index` of `opts.split`: `(B, L)` int64 mu-law tokens on `opts.device`, made
    /// in this thread (the [`Loader`] makes the same batches ahead of time).
    ///
    /// # Errors
    /// As [`Loader::new`], and [`Error::Dataset`] if a cache entry changed since the open.
    pub fn batch(&self, opts: &LoaderOptions, index: u64) -> Result<Tensor> {
        opts.check()?;
        let cropper = Cropper::new(self, opts)?;
        let mut audio = vec![0.0; opts.len];
        let tokens = cropper.batch(opts, index, &mut audio, &mut Vec::new())?;
        to_tensor(&tokens, opts)
    }
}

/// Background batch maker: `workers` threads each make every `workers`-th batch into a bounded
/// channel; [`Loader::next_batch`] takes them in index order.
pub struct Loader {
    receivers: Vec<Receiver<Result<Tensor>>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    first: u64,
    next: u64,
    waits: u64,
    tokens_per_batch: usize,
    sample_rate: u32,
    source: PathBuf,
}

impl Loader {
    /// Starts the worker threads.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero batch/len or a bad worker count; [`Error::Dataset`]
    /// when the split has no files.
    pub fn new(dataset: &Dataset, opts: LoaderOptions) -> Result<Loader> {
        opts.check()?;
        let cropper = Arc::new(Cropper::new(dataset, &opts)?);
        let stop = Arc::new(AtomicBool::new(false));
        let per_worker = opts.prefetch.div_ceil(opts.workers).max(1);
        let mut receivers = Vec::with_capacity(opts.workers);
        let mut handles = Vec::with_capacity(opts.workers);
        for w in 0..opts.workers {
            let (tx, rx) = bounded::<Result<Tensor>>(per_worker);
            let (cropper, stop, opts) = (Arc::clone(&cropper), Arc::clone(&stop), opts.clone());
            let handle = std::thread::Builder::new()
                .name(format!("wm-loader-{w}"))
                .spawn(move || {
                    let mut audio = vec![0.0f32; opts.len];
                    let mut bytes = Vec::new();
                    let mut index = opts.first_batch + w as u64;
                    while !stop.load(Ordering::Relaxed) {
                        let made = cropper
                            .batch(&opts, index, &mut audio, &mut bytes)
                            .and_then(|t| to_tensor(&t, &opts));
                        let failed = made.is_err();
                        if tx.send(made).is_err() || failed {
                            break;
                        }
                        index += opts.workers as u64;
                    }
                })
                .map_err(|e| Error::Dataset {
                    path: dataset.inner.source.clone(),
                    reason: format!("cannot start a loader thread: {e}"),
                })?;
            receivers.push(rx);
            handles.push(handle);
        }
        Ok(Loader {
            receivers,
            handles,
            stop,
            first: opts.first_batch,
            next: opts.first_batch,
            waits: 0,
            tokens_per_batch: opts.batch * opts.len,
            sample_rate: dataset.sample_rate(),
            source: dataset.inner.source.clone(),
        })
    }

    /// The next batch, `(B, L)` int64 tokens, in index order.
    ///
    /// # Errors
    /// The error a worker met making this batch (e.g. a cache entry deleted underneath).
    pub fn next_batch(&mut self) -> Result<Tensor> {
        let rx = &self.receivers[((self.next - self.first) % self.receivers.len() as u64) as usize];
        let got = match rx.try_recv() {
            Ok(b) => Ok(b),
            Err(TryRecvError::Empty) => {
                self.waits += 1;
                rx.recv().map_err(|_| ())
            }
            Err(TryRecvError::Disconnected) => Err(()),
        };
        let batch = got.map_err(|()| Error::Dataset {
            path: self.source.clone(),
            reason: format!(
                "loader thread for batch {} stopped after an earlier error",
                self.next
            ),
        })??;
        self.next += 1;
        Ok(batch)
    }

    /// Index of the batch [`Self::next_batch`] returns next.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// How often [`Self::next_batch`] found no batch ready and had to wait.
    pub fn waits(&self) -> u64 {
        self.waits
    }

    /// Seconds of audio in one batch.
    pub fn batch_seconds(&self) -> f64 {
        self.tokens_per_batch as f64 / f64::from(self.sample_rate)
    }
}

impl Iterator for Loader {
    type Item = Result<Tensor>;

    fn next(&mut self) -> Option<Result<Tensor>> {
        Some(self.next_batch())
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers unblocks workers waiting to send.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("workers", &self.handles.len())
            .field("next", &self.next)
            .field("waits", &self.waits)
            .finish()
    }
}
