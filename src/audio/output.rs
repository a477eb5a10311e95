//! Output files of one command, all or nothing: each is checked before any work (its format from
//! its name, its directory, a symlink followed to its target, that its directory can be written),
//! written at the end under a temporary name beside its target, and renamed into place with the
//! others by [`Outputs::commit`]; dropping [`Outputs`] without committing removes the temporary
//! files, so a failed run leaves none of its outputs behind.
//!
//! Also the size checks a command makes before it starts: the memory it may still allocate
//! ([`available_memory`]) and the free space of a disk ([`free_disk_space`]), compared with an
//! estimate by [`check_fits`].

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// What an output file holds, which decides the names it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// WAV audio (`.wav`).
    Wav,
    /// An image the plotting library encodes from the extension: PNG, JPEG or BMP.
    Image,
    /// A token pack (`.wmtok`), which `train --data` recognises by its extension.
    Pack,
}

impl OutputKind {
    /// The extensions accepted (lower case; matched case-insensitively), the usual one first.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            OutputKind::Wav => &["wav"],
            OutputKind::Image => &["png", "jpg", "jpeg", "bmp"],
            OutputKind::Pack => &["wmtok"],
        }
    }

    /// The advice of a refused name.
    fn advice(self) -> &'static str {
        match self {
            OutputKind::Wav => "only WAV files are written: give it a .wav name",
            OutputKind::Image => {
                "images are written as PNG, JPEG or BMP: give it a .png, .jpg or .bmp name"
            }
            OutputKind::Pack => "a token pack is read back by its extension: give it a .wmtok name",
        }
    }
}

/// Checks that `path`'s extension fits `kind`; `flag` names the option in the error.
///
/// # Errors
/// [`Error::InvalidArgument`], e.g. `invalid value for --out: x.mp3: .mp3 is not written; only
/// WAV files are written: give it a .wav name`.
pub fn check_extension(flag: &'static str, path: &Path, kind: OutputKind) -> Result<()> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if ext
        .as_deref()
        .is_some_and(|e| kind.extensions().contains(&e))
    {
        return Ok(());
    }
    let found = match ext {
        Some(e) => format!(".{e} is not written"),
        None => "no extension".to_owned(),
    };
    Err(Error::InvalidArgument {
        name: flag,
        reason: format!("{}: {found}; {}", path.display(), kind.advice()),
    })
}

/// The file a write to `path` should replace: `path` itself, or, when `path` is a symbolic link
/// (possibly to a file that does not exist yet), the file it finally points to, so that writing
/// goes through the link instead of replacing it with a plain file.
///
/// # Errors
/// [`Error::Io`] for a link that cannot be read or a chain of more than 40 links (a loop).
pub fn resolve_link(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p).map_err(|source| Error::Io {
                    path: path.to_owned(),
                    source,
                })?;
                let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
                p = dir.join(target);
            }
            _ => return Ok(p),
        }
    }
    Err(Error::Io {
        path: path.to_owned(),
        source: std::io::Error::other("too many levels of symbolic links"),
    })
}

/// Checks, without creating anything, that `path` can be an output of `kind`: the extension, that
/// it is not a directory, that its directory exists. Returns the file to replace (through a
/// symlink, its target) with its directory made absolute. `flag` names the option in errors.
///
/// # Errors
/// [`Error::InvalidArgument`] for a wrong extension; [`Error::Io`] naming the path for a
/// directory, a missing directory or a broken link.
pub fn check_output(flag: &'static str, path: &Path, kind: OutputKind) -> Result<PathBuf> {
    check_extension(flag, path, kind)?;
    let target = resolve_link(path)?;
    if target.is_dir() {
        return Err(Error::Io {
            path: path.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "is a directory, not a file",
            ),
        });
    }
    super::check_output_dir(&target)?;
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })?;
    Ok(match target.file_name() {
        Some(name) => dir.join(name),
        None => target,
    })
}

/// One staged output.
#[derive(Debug)]
struct Staged {
    flag: &'static str,
    /// As the user gave it (for messages).
    path: PathBuf,
    /// The file replaced at commit (a symlink's target).
    target: PathBuf,
    /// The temporary file written meanwhile, beside `target`, with the same extension.
    tmp: PathBuf,
    committed: bool,
}

/// The output files of one command (see the module doc). Temporary files are created by the
/// writers, at the end of the work, so a run interrupted before (Ctrl-C) leaves nothing.
#[derive(Debug, Default)]
pub struct Outputs {
    files: Vec<Staged>,
    /// Directories already shown to be writable.
    probed: Vec<PathBuf>,
}

impl Outputs {
    /// No outputs yet.
    pub fn new() -> Outputs {
        Outputs::default()
    }

    /// Checks `path` as an output of `kind` ([`check_output`]) and, once per directory, that
    /// the directory can be written (by creating and removing the temporary file), so that an
    /// unwritable directory fails before any work. Returns its index.
    ///
    /// # Errors
    /// As [`check_output`]; [`Error::InvalidArgument`] when another output of this set is the
    /// same file; [`Error::Io`] naming `path` when its directory cannot be written.
    pub fn add(&mut self, flag: &'static str, path: &Path, kind: OutputKind) -> Result<usize> {
        let target = check_output(flag, path, kind)?;
        if let Some(other) = self.files.iter().find(|f| f.target == target) {
            return Err(Error::InvalidArgument {
                name: flag,
                reason: format!("{} is also the output of {}", path.display(), other.flag),
            });
        }
        let tmp = tmp_path(&target);
        let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
        if !self.probed.contains(&dir) {
            File::create(&tmp).map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?;
            let _ = std::fs::remove_file(&tmp);
            self.probed.push(dir);
        }
        self.files.push(Staged {
            flag,
            path: path.to_owned(),
            target,
            tmp,
            committed: false,
        });
        Ok(self.files.len() - 1)
    }

    /// The temporary file to write output `i` into (the writer creates it).
    pub fn tmp(&self, i: usize) -> &Path {
        &self.files[i].tmp
    }

    /// Output `i` as it was given (for messages).
    pub fn path(&self, i: usize) -> &Path {
        &self.files[i].path
    }

    /// Number of outputs.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Flushes every temporary file to disk, then renames each over its target. Returns the
    /// paths as given. A rename failing midway (rare: every temporary file sits in its target's
    /// directory) leaves the outputs renamed before it and removes the rest.
    ///
    /// # Errors
    /// [`Error::Io`] naming the output, also when one was never written.
    pub fn commit(mut self) -> Result<Vec<PathBuf>> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        for f in &self.files {
            File::open(&f.tmp)
                .and_then(|file| file.sync_all())
                .map_err(io(&f.path))?;
        }
        for f in &mut self.files {
            std::fs::rename(&f.tmp, &f.target).map_err(io(&f.path))?;
            f.committed = true;
        }
        Ok(self.files.iter().map(|f| f.path.clone()).collect())
    }
}

impl Drop for Outputs {
    /// Removes the temporary files not committed (those written so far).
    fn drop(&mut self) {
        for f in self.files.iter().filter(|f| !f.committed) {
            let _ = std::fs::remove_file(&f.tmp);
        }
    }
}

/// `.NAME.tmpPID.EXT` beside `target` (the extension kept: the image encoder is chosen by it).
fn tmp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = target
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.tmp{}{ext}", std::process::id()))
}

/// Bytes this process can still allocate: the smaller of the kernel's estimate (`MemAvailable`
/// in `/proc/meminfo`) and what this process's cgroup limit leaves; `None` where neither is known
/// (not Linux).
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_mem_available(&t));
    match (meminfo, cgroup_headroom()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// `memory.max − memory.current` of this process's cgroup (v2), when it has a limit.
fn cgroup_headroom() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?; // "max": no limit
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// Free bytes (for an unprivileged user) on the file system holding `dir`; `None` if unknown.
#[cfg(unix)]
pub fn free_disk_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is NUL-terminated and `stat` is valid for writes; it is read only when
    // statvfs reports success (it then filled it).
    let stat = unsafe {
        if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    // A file system without blocks (procfs, sysfs) does not say how much it takes.
    if stat.f_blocks == 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Free bytes on the file system holding `dir`: unknown on this platform.
#[cfg(not(unix))]
pub fn free_disk_space(_dir: &Path) -> Option<u64> {
    None
}

/// `bytes` in decimal units: `812 bytes`, `12.3 GB`, `16.0 PB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1000 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64;
    let mut unit = "";
    for u in UNITS {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// [`Error::TooLarge`] for `what` when `need` bytes exceed `available` (no check when that is
/// unknown). `place` is where the bytes go ("memory", "disk space in out/"), `detail` what they
/// are made of.
///
/// # Errors
/// [`Error::TooLarge`], e.g. `--num 100000: needs about 12.3 GB of memory (…), 8.1 GB available`.
pub fn check_fits(
    what: &str,
    need: u64,
    available: Option<u64>,
    place: &str,
    detail: &str,
) -> Result<()> {
    match available {
        Some(have) if need > have => Err(Error::TooLarge {
            what: what.to_owned(),
            reason: format!(
                "needs about {} of {place} ({detail}), but only {} is available",
                human_bytes(need),
                human_bytes(have)
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_parsed_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_mem_available(text), Some(2048 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn bytes_read_in_decimal_units() {
        assert_eq!(human_bytes(812), "812 bytes");
        assert_eq!(human_bytes(12_300_000_000), "12.3 GB");
        assert_eq!(human_bytes(16_000_000_000_000_000), "16.0 PB");
        assert_eq!(human_bytes(u64::MAX), "18.4 EB");
    }

    #[test]
    fn a_need_beyond_what_is_available_is_an_error() {
        assert!(check_fits("x", 10, Some(10), "memory", "").is_ok());
        assert!(check_fits("x", 11, None, "memory", "").is_ok());
        let e = check_fits("--num 9", 2_000, Some(1_000), "memory", "states")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--num 9: needs about 2.0 kB of memory (states), but only 1.0 kB is available"
        );
    }

    #[test]
    fn extensions_are_checked_case_insensitively() {
        assert!(check_extension("--out", Path::new("a/B.WAV"), OutputKind::Wav).is_ok());
        assert!(check_extension("--spectrogram", Path::new("s.JPG"), OutputKind::Image).is_ok());
        let e = check_extension("--out", Path::new("x.mp3"), OutputKind::Wav)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--out: x.mp3: .mp3 is not written"), "{e}");
        let e = check_extension("--out", Path::new("x"), OutputKind::Wav)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no extension"), "{e}");
    }
}
