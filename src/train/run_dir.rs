//! A training run's directory: checkpoints written atomically (temporary directory, fsync,
//! rename), a `latest` pointer, the best-validation model, and `metrics.jsonl`.
//!
//! ```text
//! RUN_DIR/checkpoints/step-000200/  config.json wavemamba.json model.safetensors
//!                                   optimizer.safetensors trainer.json
//! RUN_DIR/latest                    "step-000200" (written atomically)
//! RUN_DIR/best/                     model directory of the best validation NLL
//! RUN_DIR/metrics.jsonl             one JSON object per line
//! ```
//! A run killed at any moment leaves only complete checkpoints: a half-written one is still a
//! hidden temporary directory, which `resume` ignores and the next save removes.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::optim::AdamW;
use super::settings::RunSettings;
use crate::model::{checkpoint, WaveMamba};
use crate::{Error, Result};

/// Trainer state saved beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Updates completed; the next batch index is this value.
    pub step: u64,
    pub seed: u64,
    /// The best validation score so far (bits/sample for a language model, SI-SDR improvement
    /// in dB for a denoiser; older runs wrote it as `best_valid_bits`).
    #[serde(alias = "best_valid_bits")]
    pub best_valid: Option<f64>,
    pub elapsed_s: f64,
    /// The run's settings, checked by `--resume` (absent in checkpoints of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<RunSettings>,
}

const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const TRAINER_FILE: &str = "trainer.json";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Handle on a run directory.
pub struct RunDir {
    pub root: PathBuf,
    /// How many step checkpoints to keep (the newest ones).
    pub keep: usize,
}

impl RunDir {
    /// Creates the directory if needed.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be created.
    pub fn create(root: &Path) -> Result<RunDir> {
        std::fs::create_dir_all(root.join("checkpoints")).map_err(io_err(root))?;
        Ok(RunDir::at(root))
    }

    /// A handle on `root` that creates nothing (to look for checkpoints or resume from them).
    pub fn at(root: &Path) -> RunDir {
        RunDir {
            root: root.to_owned(),
            keep: 2,
        }
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    pub fn best_dir(&self) -> PathBuf {
        self.root.join("best")
    }

    /// Writes a complete checkpoint for `state.step`, then points `latest` at it and prunes old ones.
    ///
    /// # Errors
    /// [`Error::Io`] / libtorch errors; the previous checkpoints stay untouched on failure.
    pub fn save(&self, model: &WaveMamba, opt: &AdamW, state: &TrainerState) -> Result<PathBuf> {
        let name = format!("step-{:06}", state.step);
        let ckdir = self.root.join("checkpoints");
        let tmp = ckdir.join(format!(".tmp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        write_model_dir(model, &tmp)?;
        let opt_tensors: Vec<(String, Tensor)> = opt
            .state_tensors()
            .into_iter()
            .map(|(k, t)| (k, t.to_device(Device::Cpu).contiguous()))
            .collect();
        Tensor::write_safetensors(&opt_tensors, tmp.join(OPTIMIZER_FILE))?;
        let text = serde_json::to_string_pretty(state).map_err(|e| Error::Config {
            reason: e.to_string(),
        })?;
        std::fs::write(tmp.join(TRAINER_FILE), text).map_err(io_err(&tmp))?;
        sync_dir_files(&tmp)?;
        let dest = ckdir.join(&name);
        discard(&dest);
        std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        checkpoint::write_atomic(&self.root.join("latest"), |p| {
            std::fs::write(p, &name).map_err(io_err(p))
        })?;
        self.prune()?;
        Ok(dest)
    }

    /// Replaces `best/` with the current model (atomically: the old one is moved aside first).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save_best(&self, model: &WaveMamba) -> Result<()> {
        let tmp = self.root.join(format!(".tmp-best-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        write_model_dir(model, &tmp)?;
        sync_dir_files(&tmp)?;
        let best = self.best_dir();
        let old = self.root.join(".old-best");
        let _ = std::fs::remove_dir_all(&old);
        if best.exists() {
            std::fs::rename(&best, &old).map_err(io_err(&best))?;
        }
        std::fs::rename(&tmp, &best).map_err(io_err(&best))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    /// Step checkpoints present, newest first (temporary directories excluded).
    pub fn checkpoints(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(self.root.join("checkpoints"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        dirs.reverse();
        dirs
    }

    /// Loads the newest checkpoint that loads completely (trying `latest` first) into a model on
    /// `device` and an optimizer built by `make_opt`.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] when no checkpoint in the run loads (each failure is listed).
    pub fn resume(
        &self,
        device: Device,
        make_opt: impl Fn(&WaveMamba) -> AdamW,
    ) -> Result<(WaveMamba, AdamW, TrainerState)> {
        let mut candidates = Vec::new();
        if let Ok(name) = std::fs::read_to_string(self.root.join("latest")) {
            candidates.push(self.root.join("checkpoints").join(name.trim()));
        }
        candidates.extend(self.checkpoints());
        let mut failures = Vec::new();
        for dir in candidates {
            match load_checkpoint(&dir, device, &make_opt) {
                Ok(found) => return Ok(found),
                Err(e) => failures.push(format!("{}: {e}", dir.display())),
            }
        }
        Err(Error::Checkpoint {
            path: self.root.clone(),
            reason: if failures.is_empty() {
                "no checkpoint to resume from (train without --resume first)".into()
            } else {
                format!("no checkpoint loads: {}", failures.join("; "))
            },
        })
    }

    /// Deletes all but the newest `keep` step checkpoints, and stale temporary directories.
    fn prune(&self) -> Result<()> {
        for old in self.checkpoints().into_iter().skip(self.keep) {
            discard(&old);
        }
        if let Ok(rd) = std::fs::read_dir(self.root.join("checkpoints")) {
            let own = format!("-{}", std::process::id());
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(".trash-") || (n.starts_with(".tmp-") && !n.ends_with(&own)) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }

    /// Appends one JSON object to `metrics.jsonl`.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn log(&self, value: &serde_json::Value) -> Result<()> {
        let path = self.metrics_path();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        writeln!(f, "{value}").map_err(io_err(&path))
    }

    /// Drops metric lines after `step` (used when resuming, so the log stays one timeline).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn truncate_metrics_after(&self, step: u64) -> Result<()> {
        let path = self.metrics_path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        checkpoint::write_atomic(&path, |p| std::fs::write(p, kept).map_err(io_err(p)))
    }
}

/// Removes a checkpoint directory so that a kill at any moment never leaves a half-deleted one
/// under its real name: it is first renamed to a hidden `.trash-…` name (atomic), then deleted.
fn discard(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let trash = dir.with_file_name(format!(".trash-{name}-{}", std::process::id()));
    if std::fs::rename(dir, &trash).is_ok() {
        let _ = std::fs::remove_dir_all(&trash);
    }
}

fn write_model_dir(model: &WaveMamba, dir: &Path) -> Result<()> {
    checkpoint::save(model, dir)
}

fn sync_dir_files(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
        std::fs::File::open(e.path())
            .and_then(|f| f.sync_all())
            .map_err(io_err(&e.path()))?;
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err(dir))
}

fn load_checkpoint(
    dir: &Path,
    device: Device,
    make_opt: &impl Fn(&WaveMamba) -> AdamW,
) -> Result<(WaveMamba, AdamW, TrainerState)> {
    let model = checkpoint::load(dir, device)?;
    let trainer_path = dir.join(TRAINER_FILE);
    let text = std::fs::read_to_string(&trainer_path).map_err(io_err(&trainer_path))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
        path: trainer_path.clone(),
        reason: e.to_string(),
    })?;
    let opt_path = dir.join(OPTIMIZER_FILE);
    let tensors: BTreeMap<String, Tensor> = Tensor::read_safetensors(&opt_path)
        .map_err(|e| Error::Checkpoint {
            path: opt_path.clone(),
            reason: format!("cannot read: {e}"),
        })?
        .into_iter()
        .collect();
    let mut opt = make_opt(&model);
    let missing = opt.load_state(&tensors, state.step as i64);
    if !missing.is_empty() {
        return Err(Error::Checkpoint {
            path: opt_path,
            reason: format!("missing optimizer tensors: {}", missing.join(", ")),
        });
    }
    Ok((model, opt, state))
}

/// What existed at `--out` before this invocation, so that a run that fails (or is interrupted)
/// before its first checkpoint removes what it created there, and nothing else.
pub(super) struct Before {
    root: PathBuf,
    /// The topmost directory on `--out`'s path that did not exist: all of it is this run's.
    created_top: Option<PathBuf>,
    /// The names in `--out` that existed.
    entries: BTreeSet<OsString>,
    checkpoints: Vec<PathBuf>,
}

impl Before {
    pub(super) fn snapshot(root: &Path) -> Before {
        let created_top = root
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && p.symlink_metadata().is_err())
            .last()
            .map(Path::to_owned);
        let entries = std::fs::read_dir(root)
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        Before {
            root: root.to_owned(),
            created_top,
            entries,
            checkpoints: RunDir::at(root).checkpoints(),
        }
    }

    /// Removes what appeared since the snapshot, unless a new checkpoint did, and says so.
    pub(super) fn undo(&self) {
        if RunDir::at(&self.root).checkpoints() != self.checkpoints {
            return;
        }
        let new: Vec<PathBuf> = match &self.created_top {
            Some(top) => vec![top.clone()],
            None => std::fs::read_dir(&self.root)
                .map(|rd| {
                    rd.flatten()
                        .filter(|e| !self.entries.contains(&e.file_name()))
                        .map(|e| e.path())
                        .collect()
                })
                .unwrap_or_default(),
        };
        for path in new {
            let removed = match path.symlink_metadata() {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(_) => continue,
            };
            if removed.is_ok() {
                eprintln!(
                    "removed {} (this run created it and stopped before its first checkpoint)",
                    path.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TrainerState;

    /// `trainer.json` must bring every f64 back bit for bit, or a resumed run compares its
    /// validation scores against a best that is one ulp off (serde_json needs `float_roundtrip`).
    #[test]
    fn trainer_state_floats_round_trip_exactly() {
        for v in [-26.003697631234914, 3.3329123456789012, 1e-300, 0.1 + 0.2] {
            let s = TrainerState {
                step: 7,
                seed: 9,
                best_valid: Some(v),
                elapsed_s: v.abs(),
                settings: None,
            };
            let back: TrainerState =
                serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            assert_eq!(back.best_valid.map(f64::to_bits), Some(v.to_bits()), "{v}");
            assert_eq!(back.elapsed_s.to_bits(), v.abs().to_bits());
        }
    }
}
