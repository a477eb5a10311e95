//! Speech datasets: files from a directory tree or a manifest, a deterministic train/valid/test
//! split, a decode-once cache, and batches of random mu-law crops made by background threads.
//!
//! * **Layouts** recognised without configuration (a recursive walk finds `.wav`, `.flac`,
//!   `.ogg`; hidden entries are skipped): a flat folder of WAVs; class folders like Speech
//!   Commands / SC09 (`zero/…wav`, the folder name becomes [`AudioFile::class`]); nested trees
//!   like LibriSpeech (`speaker/chapter/…flac`). A manifest is a text file with one path per line
//!   and an optional split, or a TSV with a header row naming a `path` column (the
//!   `manifest.tsv` of `scripts/build-corpus.py`).
//! * **Split**: by FNV-1a 64 of the file's relative path modulo 100: 90 % train, 5 % valid,
//!   5 % test ([`Split::of_key`]); a manifest's `split` column overrides it, and
//!   [`SplitBy`] can hash a directory or a manifest column (e.g. `speaker`) instead. Where no
//!   file hashes into the validation split (small datasets), the training files of one key are
//!   held out instead (from 10 keys on; `ensure_validation` in `discover.rs`).
//! * **Cache**: the first open decodes and resamples each file once (in parallel, with a
//!   progress bar) into `cache_dir`; later opens only read 64-byte headers.
//! * **Bad files** (unreadable, truncated, empty, not audio, unsupported) are skipped with one
//!   warning each and counted in [`DatasetSummary::skipped`], or fail the open under
//!   [`DatasetOptions::strict`].
//! * **Crops** (see [`loader`]): files are drawn with probability proportional to their length
//!   and a crop start uniformly within the file; short files follow [`ShortFiles`].

mod cache;
mod discover;
pub mod loader;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

pub use cache::default_cache_dir;
pub use discover::{is_audio_name, AUDIO_EXTENSIONS};
pub use loader::{Loader, LoaderOptions, ShortFiles};

use crate::{Error, Result};

/// One of the three dataset splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    /// `train`, `valid` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }

    /// Parses `train`, `valid`/`validation`/`val`/`dev`, `test` (any case).
    pub fn parse(s: &str) -> Option<Split> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" | "training" => Some(Split::Train),
            "valid" | "validation" | "val" | "dev" => Some(Split::Valid),
            "test" | "eval" => Some(Split::Test),
            _ => None,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Split> {
        Split::parse(s).ok_or_else(|| Error::InvalidArgument {
            name: "--split",
            reason: format!("unknown split {s:?} (expected train, valid or test)"),
        })
    }
}

/// What decides a file's split when the manifest does not give it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SplitBy {
    /// The relative path (every file on its own).
    #[default]
    Path,
    /// The first directory of the relative path (e.g. the speaker in LibriSpeech), so a whole
    /// directory lands in one split.
    TopDir,
    /// A manifest column (e.g. `speaker`), so all rows with one value land in one split.
    Column(String),
}

/// How [`Dataset::open`] finds, decodes and caches files.
#[derive(Debug, Clone)]
pub struct DatasetOptions {
    /// Every file is resampled to this rate (Hz).
    pub sample_rate: u32,
    /// Cache directory; `None` uses [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Fail on the first bad file instead of skipping it.
    pub strict: bool,
    /// Threads that decode on a cache miss (0: one per core).
    pub workers: usize,
    /// Show a progress bar on stderr while decoding.
    pub progress: bool,
    /// Print one warning per skipped file on stderr.
    pub warn: bool,
    /// Manifest only: keep rows whose column equals the value, e.g. `("kind", "speech")`.
    pub select: Vec<(String, String)>,
    pub split_by: SplitBy,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            sample_rate: 16_000,
            cache_dir: None,
            strict: false,
            workers: 0,
            progress: false,
            warn: true,
            select: Vec::new(),
            split_by: SplitBy::Path,
        }
    }
}

/// How the files were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Audio files directly in the folder.
    Flat,
    /// One level of class folders (`zero/…wav`).
    ClassFolders { classes: usize },
    /// Deeper trees (LibriSpeech `speaker/chapter/…flac`); `max_depth` folders at most.
    Nested { max_depth: usize },
    /// Listed by a manifest.
    Manifest,
}

/// One usable file of the dataset.
#[derive(Debug, Clone, Serialize)]
pub struct AudioFile {
    /// The source file.
    pub path: PathBuf,
    /// Path relative to the dataset root (`/`-separated), the split key.
    pub rel: String,
    pub split: Split,
    /// The class folder (class-folder layouts only).
    pub class: Option<String>,
    /// Samples at the dataset's sample rate.
    pub samples: u64,
    /// The source file's own sample rate.
    pub source_rate: u32,
    #[serde(skip)]
    cache_path: PathBuf,
}

/// A file that was skipped, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// Counts and durations of an opened dataset.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    pub source: PathBuf,
    pub layout: Layout,
    pub sample_rate: u32,
    pub files: usize,
    pub hours: f64,
    /// (split, files, hours) for train, valid, test.
    pub splits: Vec<(Split, usize, f64)>,
    pub skipped: usize,
    /// Files decoded in this open (cache misses that decoded).
    pub decoded: usize,
    /// Files (usable or remembered as bad) answered by the cache without decoding.
    pub from_cache: usize,
    /// Non-audio files seen by the directory walk (transcripts, READMEs, …).
    pub ignored: usize,
    pub cache_dir: PathBuf,
    pub open_s: f64,
}

impl fmt::Display for DatasetSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dataset   {} ({:?})", self.source.display(), self.layout)?;
        writeln!(
            f,
            "files     {} usable, {:.3} h at {} Hz; {} skipped; {} non-audio ignored",
            self.files, self.hours, self.sample_rate, self.skipped, self.ignored
        )?;
        for (split, n, h) in &self.splits {
            writeln!(f, "  {:<6}  {n:>7} files  {h:>9.3} h", split.name())?;
        }
        write!(
            f,
            "cache     {} ({} decoded now, {} from cache) in {:.1} s",
            self.cache_dir.display(),
            self.decoded,
            self.from_cache,
            self.open_s
        )
    }
}

/// An opened dataset; cheap to clone (shared, immutable).
#[derive(Debug, Clone)]
pub struct Dataset {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: PathBuf,
    sample_rate: u32,
    layout: Layout,
    files: Vec<AudioFile>,
    skipped: Vec<Skipped>,
    decoded: usize,
    from_cache: usize,
    ignored: usize,
    cache_dir: PathBuf,
    open_s: f64,
}

impl Dataset {
    /// Opens a dataset from a directory (walked recursively) or a manifest file, decoding every
    /// file not yet in the cache.
    ///
    /// # Errors
    /// [`Error::Io`] when `source` or the cache cannot be read/written; [`Error::Dataset`] for a
    /// malformed manifest or when no usable file remains; under `strict`, the first bad file's
    /// [`Error::Audio`]/[`Error::Io`]; [`Error::InvalidArgument`] for an unsupported sample rate.
    pub fn open(source: &Path, opts: &DatasetOptions) -> Result<Dataset> {
        let start = Instant::now();
        crate::audio::check_sample_rate("--sample-rate", opts.sample_rate)?;
        let meta = std::fs::metadata(source).map_err(|e| Error::Io {
            path: source.to_owned(),
            source: e,
        })?;
        let mut found = if meta.is_dir() {
            discover::walk_dir(source, opts)?
        } else {
            discover::read_manifest(source, opts)?
        };
        discover::ensure_validation(&mut found.candidates);
        let cache_dir = match &opts.cache_dir {
            Some(d) => d.clone(),
            None => default_cache_dir().ok_or_else(|| Error::Dataset {
                path: source.to_owned(),
                reason: "no cache directory: set one (HOME and XDG_CACHE_HOME are unset)".into(),
            })?,
        };
        std::fs::create_dir_all(&cache_dir).map_err(|e| Error::Io {
            path: cache_dir.clone(),
            source: e,
        })?;
        let cache::Built {
            files,
            skipped,
            decoded,
            from_cache,
        } = cache::build_cache(&found.candidates, &cache_dir, opts)?;
        if files.is_empty() {
            let why = skipped
                .first()
                .map(|s| format!("; first: {}: {}", s.path.display(), s.reason))
                .unwrap_or_default();
            return Err(Error::Dataset {
                path: source.to_owned(),
                reason: format!(
                    "no usable audio files ({} found, {} skipped{why})",
                    found.candidates.len(),
                    skipped.len()
                ),
            });
        }
        Ok(Dataset {
            inner: Arc::new(Inner {
                source: source.to_owned(),
                sample_rate: opts.sample_rate,
                layout: found.layout,
                files,
                skipped,
                decoded,
                from_cache,
                ignored: found.ignored,
                cache_dir,
                open_s: start.elapsed().as_secs_f64(),
            }),
        })
    }

    /// Sample rate of every file (Hz).
    pub fn sample_rate(&self) -> u32 {
        self.inner.sample_rate
    }

    /// Every usable file, in discovery order.
    pub fn all_files(&self) -> &[AudioFile] {
        &self.inner.files
    }

    /// The files of one split.
    pub fn files(&self, split: Split) -> Vec<&AudioFile> {
        self.inner
            .files
            .iter()
            .filter(|f| f.split == split)
            .collect()
    }

    /// Seconds of audio in a split (`None`: all splits).
    pub fn duration_s(&self, split: Option<Split>) -> f64 {
        let samples: u64 = self
            .inner
            .files
            .iter()
            .filter(|f| split.is_none_or(|s| f.split == s))
            .map(|f| f.samples)
            .sum();
        samples as f64 / f64::from(self.inner.sample_rate)
    }

    /// Files skipped as unusable, with reasons.
    pub fn skipped(&self) -> &[Skipped] {
        &self.inner.skipped
    }

    pub fn layout(&self) -> Layout {
        self.inner.layout
    }

    /// Counts, hours per split, skipped files, cache use.
    pub fn summary(&self) -> DatasetSummary {
        let i = &self.inner;
        DatasetSummary {
            source: i.source.clone(),
            layout: i.layout,
            sample_rate: i.sample_rate,
            files: i.files.len(),
            hours: self.duration_s(None) / 3600.0,
            splits: Split::ALL
                .iter()
                .map(|&s| {
                    let n = i.files.iter().filter(|f| f.split == s).count();
                    (s, n, self.duration_s(Some(s)) / 3600.0)
                })
                .collect(),
            skipped: i.skipped.len(),
            decoded: i.decoded,
            from_cache: i.from_cache,
            ignored: i.ignored,
            cache_dir: i.cache_dir.clone(),
            open_s: i.open_s,
        }
    }

    /// The whole of one file at the dataset's rate, from the cache.
    ///
    /// # Errors
    /// [`Error::Dataset`] when the cache entry changed since the dataset was opened.
    pub fn read(&self, file: &AudioFile) -> Result<Vec<f32>> {
        let mut out = vec![0.0; file.samples as usize];
        let mut bytes = Vec::new();
        cache::read_samples(&file.cache_path, 0, &mut out, &mut bytes)?;
        Ok(out)
    }

    /// A background loader of `(B, L)` token batches (see [`loader`]).
    ///
    /// # Errors
    /// As [`Loader::new`].
    pub fn loader(&self, opts: LoaderOptions) -> Result<Loader> {
        Loader::new(self, opts)
    }
}
