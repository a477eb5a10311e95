//! `wavemamba bench loader`: how fast the dataset loader delivers `(B, L)` token batches from
//! the decoded-audio cache, in seconds of audio per second of wall time (× real time).

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use tch::Device;

use crate::data::{Dataset, DatasetOptions, DatasetSummary, LoaderOptions, ShortFiles, Split};
use crate::Result;

/// What to measure.
#[derive(Debug, Clone)]
pub struct LoaderBench {
    /// Directory or manifest.
    pub data: PathBuf,
    pub cache_dir: Option<PathBuf>,
    pub sample_rate: u32,
    pub split: Split,
    pub batch: usize,
    pub len: usize,
    /// Loader threads.
    pub workers: usize,
    pub prefetch: usize,
    /// Batches timed (after `warmup` untimed ones).
    pub batches: usize,
    pub warmup: usize,
    pub device: Device,
    pub seed: u64,
    pub short_files: ShortFiles,
    /// Progress bar while the cache is built.
    pub progress: bool,
    /// Manifest rows to keep, as (column, value), e.g. `("kind", "speech")`.
    pub select: Vec<(String, String)>,
    /// Fail on the first bad file instead of skipping it.
    pub strict: bool,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct LoaderReport {
    pub dataset: DatasetSummary,
    pub split: Split,
    pub batch: usize,
    pub len: usize,
    pub workers: usize,
    pub device: String,
    pub batches: usize,
    /// Seconds of audio delivered.
    pub audio_s: f64,
    pub wall_s: f64,
    /// Seconds of audio delivered per second of wall time.
    pub x_realtime: f64,
    pub batches_per_s: f64,
    /// Times the consumer asked for a batch that was not ready yet.
    pub waits: u64,
}

/// Opens (and if needed caches) the dataset, then times `batches` batches taken as fast as the
/// loader makes them.
///
/// # Errors
/// As [`Dataset::open`] and [`crate::data::Loader::new`].
pub fn run(cfg: &LoaderBench) -> Result<LoaderReport> {
    if cfg.batches == 0 {
        return Err(crate::Error::InvalidArgument {
            name: "batches",
            reason: "must be ≥ 1, got 0".into(),
        });
    }
    let opts = DatasetOptions {
        sample_rate: cfg.sample_rate,
        cache_dir: cfg.cache_dir.clone(),
        progress: cfg.progress,
        select: cfg.select.clone(),
        strict: cfg.strict,
        ..DatasetOptions::default()
    };
    let dataset = Dataset::open(&cfg.data, &opts)?;
    let mut lopts = LoaderOptions::new(cfg.split, cfg.batch, cfg.len);
    lopts.workers = cfg.workers;
    lopts.prefetch = cfg.prefetch;
    lopts.device = cfg.device;
    lopts.seed = cfg.seed;
    lopts.short_files = cfg.short_files;
    let mut loader = dataset.loader(lopts)?;
    for _ in 0..cfg.warmup {
        drop(loader.next_batch()?);
    }
    let waits_before = loader.waits();
    let start = Instant::now();
    for _ in 0..cfg.batches {
        let b = loader.next_batch()?;
        if let Device::Cuda(i) = cfg.device {
            tch::Cuda::synchronize(i as i64);
        }
        drop(b);
    }
    let wall_s = start.elapsed().as_secs_f64().max(1e-9);
    let audio_s = cfg.batches as f64 * loader.batch_seconds();
    Ok(LoaderReport {
        dataset: dataset.summary(),
        split: cfg.split,
        batch: cfg.batch,
        len: cfg.len,
        workers: cfg.workers,
        device: format!("{:?}", cfg.device).to_lowercase(),
        batches: cfg.batches,
        audio_s,
        wall_s,
        x_realtime: audio_s / wall_s,
        batches_per_s: cfg.batches as f64 / wall_s,
        waits: loader.waits() - waits_before,
    })
}

impl std::fmt::Display for LoaderReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.dataset)?;
        write!(
            f,
            "loader    {} split, (B, L) = ({}, {}), {} worker(s) on {}: {} batches, {:.1} s of \
             audio in {:.3} s = {} ({:.1} batches/s, consumer waited {} times)",
            self.split,
            self.batch,
            self.len,
            self.workers,
            self.device,
            self.batches,
            self.audio_s,
            self.wall_s,
            crate::rtf::speed_text(1.0 / self.x_realtime),
            self.batches_per_s,
            self.waits
        )
    }
}
