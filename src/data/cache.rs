//! The decoded-audio cache: every source file decoded and resampled once, stored as raw
//! little-endian `f32` behind a 64-byte header, keyed by the file's canonical path, size,
//! modification time and the target sample rate. Files that failed to decode are remembered too
//! (a `.bad` file holding the reason), so a second run neither decodes nor re-examines them.
//!
//! Entry layout (`<cache>/<2 hex>/<16 hex>.wmpcm`): `WMPCM001`, key (u64), sample rate (u32),
//! source sample rate (u32), samples (u64), 32 bytes reserved; then the samples. Entries are
//! written to a temporary name and renamed, and the length is checked on every read, so an
//! interrupted run never leaves an entry that is used half-written.
//!
//! [`build_cache`] looks up every file of a dataset, decoding the misses on worker threads behind a
//! progress bar.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use super::discover::{fnv1a, Candidate};
use super::{AudioFile, DatasetOptions, Skipped};
use crate::audio::read_audio;
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"WMPCM001";
/// Bytes before the first sample.
pub const HEADER_BYTES: u64 = 64;
/// Bump when the decoding or resampling changes, so old entries are not reused.
const CACHE_VERSION: u32 = 1;

/// Where a source file's decoded audio lives.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub cache_path: PathBuf,
    pub samples: u64,
    pub source_rate: u32,
}

/// Outcome of looking a file up (and decoding it on a miss).
pub(super) enum Lookup {
    Hit(Entry),
    Decoded(Entry),
    /// The file cannot be used: the reason (remembered in the cache), and whether it came from
    /// that memory (true) or from examining the file now.
    Bad(String, bool),
}

/// The default cache directory: `$XDG_CACHE_HOME/wavemamba/audio` or `~/.cache/wavemamba/audio`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wavemamba").join("audio"))
}

/// The key of a source file at a target rate, and its entry path.
fn key_of(source: &Path, sample_rate: u32, cache_dir: &Path) -> std::io::Result<(u64, PathBuf)> {
    let canon = std::fs::canonicalize(source)?;
    let meta = std::fs::metadata(&canon)?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    let mut bytes = canon.as_os_str().as_encoded_bytes().to_vec();
    bytes.push(0);
    for v in [
        meta.len(),
        mtime_ns,
        u64::from(sample_rate),
        u64::from(CACHE_VERSION),
    ] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let key = fnv1a(&bytes);
    let hex = format!("{key:016x}");
    Ok((key, cache_dir.join(&hex[..2]).join(format!("{hex}.wmpcm"))))
}

/// Looks `source` up in the cache; decodes, resamples and stores it on a miss.
pub(super) fn lookup(source: &Path, sample_rate: u32, cache_dir: &Path) -> Result<Lookup> {
    let (key, cache_path) = match key_of(source, sample_rate, cache_dir) {
        Ok(k) => k,
        Err(e) => return Ok(Lookup::Bad(format!("cannot read: {e}"), false)),
    };
    if let Some(entry) = read_header(&cache_path, key, sample_rate) {
        return Ok(Lookup::Hit(entry));
    }
    let bad_path = cache_path.with_extension("bad");
    if let Ok(reason) = std::fs::read_to_string(&bad_path) {
        if let Some(reason) = reason.strip_prefix(&format!("{key:016x}\n")) {
            return Ok(Lookup::Bad(reason.to_string(), true));
        }
    }
    let decoded = read_audio(source).and_then(|a| {
        if a.samples.is_empty() {
            return Err(Error::Audio {
                path: source.to_owned(),
                reason: "no audio samples".into(),
            });
        }
        Ok((a.resampled(sample_rate)?, a.sample_rate))
    });
    match decoded {
        Ok((audio, source_rate)) => {
            write_entry(&cache_path, key, sample_rate, source_rate, &audio.samples)?;
            Ok(Lookup::Decoded(Entry {
                cache_path,
                samples: audio.samples.len() as u64,
                source_rate,
            }))
        }
        Err(Error::Audio { reason, .. }) => {
            write_file(&bad_path, format!("{key:016x}\n{reason}").as_bytes())?;
            Ok(Lookup::Bad(reason, false))
        }
        Err(Error::Io { source: e, .. }) => Ok(Lookup::Bad(format!("cannot read: {e}"), false)),
        Err(other) => Ok(Lookup::Bad(other.to_string(), false)),
    }
}

fn read_header(path: &Path, key: u64, sample_rate: u32) -> Option<Entry> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut h = [0u8; HEADER_BYTES as usize];
    f.read_exact(&mut h).ok()?;
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap_or([0; 8]));
    let samples = u64_at(24);
    let ok = &h[..8] == MAGIC
        && u64_at(8) == key
        && u32_at(16) == sample_rate
        && len == HEADER_BYTES + 4 * samples;
    ok.then(|| Entry {
        cache_path: path.to_owned(),
        samples,
        source_rate: u32_at(20),
    })
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `path` through a unique temporary file and a rename (no fsync: a torn entry is caught
/// by the length check and decoded again).
fn write_with(
    path: &Path,
    f: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}.{n}", std::process::id()));
    let result = File::create(&tmp).and_then(|file| {
        let mut w = BufWriter::with_capacity(1 << 16, file);
        f(&mut w)?;
        w.flush()?;
        std::fs::rename(&tmp, path)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |w| w.write_all(bytes))
}

fn write_entry(path: &Path, key: u64, rate: u32, source_rate: u32, samples: &[f32]) -> Result<()> {
    write_with(path, |w| {
        let mut h = [0u8; HEADER_BYTES as usize];
        h[..8].copy_from_slice(MAGIC);
        h[8..16].copy_from_slice(&key.to_le_bytes());
        h[16..20].copy_from_slice(&rate.to_le_bytes());
        h[20..24].copy_from_slice(&source_rate.to_le_bytes());
        h[24..32].copy_from_slice(&(samples.len() as u64).to_le_bytes());
        w.write_all(&h)?;
        let mut buf = Vec::with_capacity(4 * 4096);
        for block in samples.chunks(4096) {
            buf.clear();
            buf.extend(block.iter().flat_map(|x| x.to_le_bytes()));
            w.write_all(&buf)?;
        }
        Ok(())
    })
}

/// Reads `out.len()` samples starting at sample `offset` of a cache entry.
///
/// # Errors
/// [`Error::Dataset`] when the entry vanished or shrank since the dataset was opened.
pub(super) fn read_samples(
    entry: &Path,
    offset: u64,
    out: &mut [f32],
    bytes: &mut Vec<u8>,
) -> Result<()> {
    let gone = |e: std::io::Error| Error::Dataset {
        path: entry.to_owned(),
        reason: format!("cache entry unreadable ({e}); it changed after the dataset was opened"),
    };
    let f = File::open(entry).map_err(gone)?;
    bytes.resize(out.len() * 4, 0);
    f.read_exact_at(bytes, HEADER_BYTES + 4 * offset)
        .map_err(gone)?;
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(())
}

/// Looks every candidate up in the cache, decoding misses on `opts.workers` threads.
pub(super) fn build_cache(
    candidates: &[Candidate],
    cache_dir: &Path,
    opts: &DatasetOptions,
) -> Result<Built> {
    let n = candidates.len();
    let workers = match opts.workers {
        0 => std::thread::available_parallelism().map_or(1, |p| p.get()),
        w => w,
    }
    .clamp(1, n.max(1));
    let bar = if opts.progress {
        indicatif::ProgressBar::new(n as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} caching audio {pos}/{len} [{wide_bar}] {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<Lookup>>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || stop.load(Ordering::Relaxed) {
                    break;
                }
                let c = &candidates[i];
                let r = lookup(&c.path, opts.sample_rate, cache_dir);
                match &r {
                    Ok(Lookup::Bad(..)) if opts.strict => stop.store(true, Ordering::Relaxed),
                    Ok(Lookup::Bad(reason, _)) if opts.warn => {
                        bar.suspend(|| {
                            eprintln!("warning: skipping {}: {reason}", c.path.display())
                        });
                    }
                    Err(_) => stop.store(true, Ordering::Relaxed),
                    _ => {}
                }
                if let Ok(mut res) = results.lock() {
                    res[i] = Some(r);
                }
                bar.inc(1);
            });
        }
    });
    bar.finish_and_clear();
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut files = Vec::with_capacity(n);
    let mut skipped = Vec::new();
    let mut decoded = 0;
    let mut from_cache = 0;
    for (c, r) in candidates.iter().zip(results) {
        let entry = match r {
            None => continue, // not reached: stopped by an error reported below
            Some(Err(e)) => return Err(e),
            Some(Ok(Lookup::Bad(reason, remembered))) => {
                from_cache += usize::from(remembered);
                if opts.strict {
                    return Err(Error::Audio {
                        path: c.path.clone(),
                        reason,
                    });
                }
                skipped.push(Skipped {
                    path: c.path.clone(),
                    reason,
                });
                continue;
            }
            Some(Ok(Lookup::Hit(e))) => {
                from_cache += 1;
                e
            }
            Some(Ok(Lookup::Decoded(e))) => {
                decoded += 1;
                e
            }
        };
        files.push(AudioFile {
            path: c.path.clone(),
            rel: c.rel.clone(),
            split: c.split,
            class: c.class.clone(),
            samples: entry.samples,
            source_rate: entry.source_rate,
            cache_path: entry.cache_path,
        });
    }
    if !skipped.is_empty() && opts.warn {
        eprintln!(
            "warning: skipped {} of {} files as unusable (see the warnings above)",
            skipped.len(),
            n
        );
    }
    Ok(Built {
        files,
        skipped,
        decoded,
        from_cache,
    })
}

/// What [`build_cache`] produced.
pub(super) struct Built {
    pub files: Vec<AudioFile>,
    pub skipped: Vec<Skipped>,
    pub decoded: usize,
    pub from_cache: usize,
}
