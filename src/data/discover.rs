//! Finding a dataset's files: a recursive directory walk or a manifest, the layout seen, and the
//! deterministic split of each file.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::{DatasetOptions, Layout, Split, SplitBy};
use crate::{Error, Result};

/// Extensions (lower case) the directory walk treats as audio.
pub const AUDIO_EXTENSIONS: [&str; 5] = ["wav", "wave", "flac", "ogg", "oga"];

/// A file found by the walk or listed in the manifest, before decoding.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub path: PathBuf,
    /// Path relative to the dataset root with `/` separators (as written, for a manifest).
    pub rel: String,
    pub split: Split,
    /// The key whose hash gave `split` ([`SplitBy`]); `None` where a manifest named the split.
    pub split_key: Option<String>,
    /// Class folder name (SC09 / Speech Commands layouts).
    pub class: Option<String>,
}

/// What discovery found.
pub(super) struct Found {
    pub candidates: Vec<Candidate>,
    pub layout: Layout,
    /// Files that are not audio by their extension (transcripts, READMEs, …), not counted as bad.
    pub ignored: usize,
}

/// 64-bit FNV-1a.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Split {
    /// The split of a key (by default the file's relative path): FNV-1a 64 of its UTF-8 bytes
    /// modulo 100; 0–89 train (90 %), 90–94 valid (5 %), 95–99 test (5 %). Stable across
    /// machines, runs and file order.
    pub fn of_key(key: &str) -> Split {
        match fnv1a(key.as_bytes()) % 100 {
            0..=89 => Split::Train,
            90..=94 => Split::Valid,
            _ => Split::Test,
        }
    }
}

/// Fewest distinct training keys (files, or groups under [`SplitBy`]) from which
/// [`ensure_validation`] holds one out: at most a tenth of the keys (below, one file of three
/// would cost a third of the training data for a noisy validation score).
const MIN_KEYS_FOR_HOLDOUT: usize = 10;

/// Where the hash split left no validation file (likely below ~60 files: each lands there with
/// probability 5 %), moves the training files of one key to the validation split, so that small
/// datasets still validate. The key is the training key whose hash lies closest to the validation
/// range (largest FNV-1a 64 mod 100, then largest hash), so the choice depends only on the set of
/// keys, not on file order. Nothing changes where a manifest named any file's split, or with fewer
/// than [`MIN_KEYS_FOR_HOLDOUT`] training keys.
pub(super) fn ensure_validation(candidates: &mut [Candidate]) {
    if candidates
        .iter()
        .any(|c| c.split == Split::Valid || c.split_key.is_none())
    {
        return;
    }
    let keys: HashSet<&str> = candidates
        .iter()
        .filter(|c| c.split == Split::Train)
        .filter_map(|c| c.split_key.as_deref())
        .collect();
    if keys.len() < MIN_KEYS_FOR_HOLDOUT {
        return;
    }
    let Some(chosen) = keys
        .into_iter()
        .max_by_key(|k| (fnv1a(k.as_bytes()) % 100, fnv1a(k.as_bytes())))
        .map(str::to_string)
    else {
        return;
    };
    for c in candidates.iter_mut() {
        if c.split_key.as_deref() == Some(chosen.as_str()) {
            c.split = Split::Valid;
        }
    }
}

fn split_key<'a>(opts: &DatasetOptions, rel: &'a str, column: Option<&'a str>) -> &'a str {
    match &opts.split_by {
        SplitBy::Path => rel,
        SplitBy::TopDir => rel.split('/').next().unwrap_or(rel),
        SplitBy::Column(_) => column.unwrap_or(rel),
    }
}

/// Walks `root` recursively (sorted, hidden entries skipped, symlink loops cut).
pub(super) fn walk_dir(root: &Path, opts: &DatasetOptions) -> Result<Found> {
    if let SplitBy::Column(c) = &opts.split_by {
        return Err(Error::Dataset {
            path: root.to_owned(),
            reason: format!(
                "splitting by the manifest column {c:?} needs a manifest, not a directory"
            ),
        });
    }
    if let Some((column, _)) = opts.select.first() {
        return Err(Error::Dataset {
            path: root.to_owned(),
            reason: format!(
                "selecting by the manifest column {column:?} needs a manifest, not a directory"
            ),
        });
    }
    let mut files = Vec::new();
    let mut ignored = 0usize;
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let canon = std::fs::canonicalize(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        if !seen.insert(canon) {
            continue; // a symlink back into the tree
        }
        let read = std::fs::read_dir(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let mut entries: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        let mut subdirs = Vec::new();
        for p in entries {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') {
                continue;
            }
            // `metadata` follows symlinks; a dangling link is simply ignored.
            let Ok(meta) = std::fs::metadata(&p) else {
                ignored += 1;
                continue;
            };
            if meta.is_dir() {
                subdirs.push(p);
            } else if is_audio_name(&p) {
                files.push(p);
            } else {
                ignored += 1;
            }
        }
        // Depth-first in sorted order.
        stack.extend(subdirs.into_iter().rev());
    }
    files.sort();
    let rels: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(root)
                .unwrap_or(p)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    let max_depth = rels
        .iter()
        .map(|r| r.matches('/').count())
        .max()
        .unwrap_or(0);
    let min_depth = rels
        .iter()
        .map(|r| r.matches('/').count())
        .min()
        .unwrap_or(0);
    let layout = if rels.is_empty() || max_depth == 0 {
        Layout::Flat
    } else if min_depth == 1 && max_depth == 1 {
        let classes: HashSet<&str> = rels.iter().filter_map(|r| r.split('/').next()).collect();
        Layout::ClassFolders {
            classes: classes.len(),
        }
    } else {
        Layout::Nested { max_depth }
    };
    let class_folders = matches!(layout, Layout::ClassFolders { .. });
    let candidates = files
        .into_iter()
        .zip(rels)
        .map(|(path, rel)| {
            let key = split_key(opts, &rel, None).to_string();
            Candidate {
                split: Split::of_key(&key),
                split_key: Some(key),
                class: class_folders.then(|| rel.split('/').next().unwrap_or("").to_string()),
                path,
                rel,
            }
        })
        .collect();
    Ok(Found {
        candidates,
        layout,
        ignored,
    })
}

/// Whether a file name has an audio extension.
pub fn is_audio_name(p: &Path) -> bool {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.as_str()))
}

/// Reads a manifest: one path per line with an optional split (after a tab, or as the last
/// space-separated word), or a TSV whose header row names a `path` column (and optionally
/// `split` and the columns used by `select` / `split_by`), like the `manifest.tsv` of
/// `scripts/build-corpus.py`. Blank lines and lines starting with `#` are skipped; relative paths
/// are relative to the manifest's directory.
pub(super) fn read_manifest(manifest: &Path, opts: &DatasetOptions) -> Result<Found> {
    let bad = |reason: String| Error::Dataset {
        path: manifest.to_owned(),
        reason,
    };
    let io = |source| Error::Io {
        path: manifest.to_owned(),
        source,
    };
    let len = std::fs::metadata(manifest).map_err(io)?.len();
    if len > 256 << 20 {
        return Err(bad(format!(
            "{len} bytes is too large for a manifest (limit 256 MiB); pass a directory or a text list"
        )));
    }
    let bytes = std::fs::read(manifest).map_err(io)?;
    if bytes.starts_with(b"RIFF") || bytes.starts_with(b"fLaC") || bytes.starts_with(b"OggS") {
        return Err(bad(
            "is an audio file; a dataset is a directory of audio files or a manifest listing them"
                .into(),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        bad(format!(
            "not a text manifest (invalid UTF-8 at byte {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let base = manifest.parent().unwrap_or(Path::new("."));
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            (
                i + 1,
                l.trim_start_matches('\u{feff}').trim_end_matches('\r'),
            )
        })
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .peekable();
    // A header row names a `path` column.
    let header: Option<Vec<String>> = lines.peek().and_then(|(_, first)| {
        let cols: Vec<String> = first
            .split('\t')
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        cols.iter().any(|c| c == "path").then_some(cols)
    });
    let col = |name: &str| -> Result<Option<usize>> {
        match &header {
            Some(cols) => Ok(cols.iter().position(|c| c == &name.to_ascii_lowercase())),
            None => Ok(None),
        }
    };
    if header.is_some() {
        lines.next();
    }
    let path_col = col("path")?.unwrap_or(0);
    let split_col = col("split")?;
    let mut selects = Vec::new();
    for (name, value) in &opts.select {
        match col(name)? {
            Some(i) => selects.push((i, value.as_str())),
            None => {
                return Err(bad(format!(
                    "cannot select on column {name:?}: the manifest has no header row naming it"
                )))
            }
        }
    }
    let group_col = match &opts.split_by {
        SplitBy::Column(name) => Some(col(name)?.ok_or_else(|| {
            bad(format!(
                "cannot split by column {name:?}: the manifest has no header row naming it"
            ))
        })?),
        _ => None,
    };
    let mut candidates = Vec::new();
    let mut dup = HashMap::new();
    // Values met in the selected columns, to explain a selection that matches nothing.
    let mut seen_values: Vec<std::collections::BTreeSet<String>> =
        vec![Default::default(); selects.len()];
    for (lineno, line) in lines {
        let (path_str, split_str, fields): (&str, Option<&str>, Vec<&str>) = if header.is_some() {
            let fields: Vec<&str> = line.split('\t').collect();
            let need = [Some(path_col), split_col, group_col]
                .into_iter()
                .flatten()
                .chain(selects.iter().map(|s| s.0))
                .max()
                .unwrap_or(0);
            if fields.len() <= need {
                return Err(bad(format!(
                    "line {lineno}: {} columns, the header has more (need column {})",
                    fields.len(),
                    need + 1
                )));
            }
            (fields[path_col], split_col.map(|i| fields[i]), fields)
        } else if let Some((p, s)) = line.split_once('\t') {
            (p, Some(s), Vec::new())
        } else {
            match line.trim_end().rsplit_once(char::is_whitespace) {
                Some((p, s)) if Split::parse(s).is_some() => (p.trim_end(), Some(s), Vec::new()),
                _ => (line, None, Vec::new()),
            }
        };
        if selects.iter().any(|&(i, v)| fields[i].trim() != v) {
            for (&(i, _), seen) in selects.iter().zip(&mut seen_values) {
                if seen.len() < 12 {
                    seen.insert(fields[i].trim().to_string());
                }
            }
            continue;
        }
        let path_str = path_str.trim();
        if path_str.is_empty() {
            return Err(bad(format!("line {lineno}: empty path")));
        }
        let (split, key) = match split_str.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => (
                Split::parse(s).ok_or_else(|| {
                    bad(format!(
                        "line {lineno}: unknown split {s:?} (expected train, valid or test)"
                    ))
                })?,
                None,
            ),
            None => {
                let group = group_col.map(|i| fields[i].trim());
                let key = split_key(opts, path_str, group);
                (Split::of_key(key), Some(key.to_string()))
            }
        };
        if dup.insert(path_str.to_string(), lineno).is_some() {
            continue; // listed twice: keep the first
        }
        let p = Path::new(path_str);
        candidates.push(Candidate {
            path: if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            },
            rel: path_str.replace('\\', "/"),
            split,
            split_key: key,
            class: None,
        });
    }
    if candidates.is_empty() && !selects.is_empty() {
        let wanted: Vec<String> = opts
            .select
            .iter()
            .map(|(c, v)| format!("{c}={v}"))
            .collect();
        let seen: Vec<String> = opts
            .select
            .iter()
            .zip(&seen_values)
            .map(|((c, _), vals)| {
                format!(
                    "{c}: {}",
                    vals.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        return Err(bad(format!(
            "no row matches {} (values present: {})",
            wanted.join(" and "),
            seen.join("; ")
        )));
    }
    Ok(Found {
        candidates,
        layout: Layout::Manifest,
        ignored: 0,
    })
}
