//! Model directories: `config.json` (official `MambaConfig`), `wavemamba.json` (audio settings)
//! and `model.safetensors` (official key names, `lm_head.weight` written explicitly).
//! Every file is written to a temporary name and renamed, so a crash never leaves a half file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::lm::WaveMamba;
use crate::config::{AudioConfig, MambaConfig};
use crate::{Error, Result};

pub const CONFIG_FILE: &str = "config.json";
pub const AUDIO_FILE: &str = "wavemamba.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = tmp_path(path);
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let result = write(&tmp).and_then(|()| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Config {
        reason: e.to_string(),
    })?;
    write_atomic(path, |tmp| {
        std::fs::write(tmp, text + "\n").map_err(|source| Error::Io {
            path: tmp.to_owned(),
            source,
        })
    })
}

/// Saves the model into `dir` (created if needed).
///
/// # Errors
/// [`Error::Io`] or a libtorch error while serialising.
pub fn save(model: &WaveMamba, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut named: BTreeMap<String, Tensor> = model.vs.variables().into_iter().collect();
    named.insert("lm_head.weight".into(), model.lm_head.shallow_clone());
    let tensors: Vec<(String, Tensor)> = named
        .into_iter()
        .map(|(k, v)| (k, v.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    write_atomic(&dir.join(WEIGHTS_FILE), |tmp| {
        Ok(Tensor::write_safetensors(&tensors, tmp)?)
    })?;
    write_json(&dir.join(CONFIG_FILE), &model.config)?;
    write_json(&dir.join(AUDIO_FILE), &model.audio)
}

/// Loads a model directory onto `device`. Without `wavemamba.json` (weights exported from
/// PyTorch) the audio defaults apply: 16 kHz, 8-bit mu-law, task `lm`, plain.
///
/// # Errors
/// [`Error::Config`] for a bad config; [`Error::Checkpoint`] listing every missing, unexpected
/// and misshapen tensor by name, or a truncated/corrupt safetensors file.
pub fn load(dir: &Path, device: Device) -> Result<WaveMamba> {
    check_model_dir(dir)?;
    let config = MambaConfig::load(&dir.join(CONFIG_FILE))?;
    let audio_path = dir.join(AUDIO_FILE);
    let audio = if audio_path.exists() {
        AudioConfig::load(&audio_path)?
    } else {
        AudioConfig::default()
    };
    let model = WaveMamba::new(config, audio, device)?;
    let weights = dir.join(WEIGHTS_FILE);
    let ckpt_err = |reason: String| Error::Checkpoint {
        path: weights.clone(),
        reason,
    };
    let file =
        Tensor::read_safetensors(&weights).map_err(|e| ckpt_err(format!("cannot read: {e}")))?;
    let mut file: BTreeMap<String, Tensor> = file.into_iter().collect();
    let mut vars: BTreeMap<String, Tensor> = model.vs.variables().into_iter().collect();
    if model.config.tie_embeddings {
        // Tied: lm_head.weight, when present, must equal the embedding's shape; the embedding wins.
        if let Some(head) = file.remove("lm_head.weight") {
            let want = model.lm_head.size();
            if head.size() != want {
                return Err(ckpt_err(format!(
                    "mismatched: lm_head.weight {:?} (model {want:?})",
                    head.size()
                )));
            }
        }
    }
    let expected: BTreeSet<&String> = vars.keys().collect();
    let present: BTreeSet<&String> = file.keys().collect();
    let missing: Vec<&String> = expected.difference(&present).copied().collect();
    let unexpected: Vec<&String> = present.difference(&expected).copied().collect();
    let mismatched: Vec<String> = vars
        .iter()
        .filter_map(|(k, v)| {
            let t = file.get(k)?;
            (t.size() != v.size()).then(|| format!("{k} {:?} (model {:?})", t.size(), v.size()))
        })
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() || !mismatched.is_empty() {
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("missing: {}", join(&missing)));
        }
        if !unexpected.is_empty() {
            parts.push(format!("unexpected: {}", join(&unexpected)));
        }
        if !mismatched.is_empty() {
            parts.push(format!("mismatched: {}", mismatched.join(", ")));
        }
        return Err(ckpt_err(parts.join("; ")));
    }
    tch::no_grad(|| -> Result<()> {
        for (k, v) in vars.iter_mut() {
            let t = &file[k];
            if !t.is_floating_point() {
                return Err(ckpt_err(format!(
                    "{k} has dtype {:?}, expected a floating-point tensor",
                    t.kind()
                )));
            }
            v.f_copy_(&t.to_kind(Kind::Float).to_device(device))?;
        }
        Ok(())
    })?;
    Ok(model)
}

fn join(keys: &[&String]) -> String {
    keys.iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that `dir` is a model directory (`config.json` and `model.safetensors`) and says what
/// to give instead when it is not: a training run's directory names its `best/` model and latest
/// checkpoint.
///
/// # Errors
/// [`Error::Checkpoint`] naming the directory and what is missing.
pub fn check_model_dir(dir: &Path) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::Checkpoint {
            path: dir.to_owned(),
            reason,
        })
    };
    const EXPECTED: &str = "a model directory holds config.json and model.safetensors";
    if !dir.exists() {
        return bad(format!(
            "not a model directory: it does not exist ({EXPECTED})"
        ));
    }
    if !dir.is_dir() {
        return bad(format!("not a model directory: it is a file ({EXPECTED})"));
    }
    let has_config = dir.join(CONFIG_FILE).is_file();
    if !has_config {
        if let Some(hint) = training_run_hint(dir) {
            return bad(format!(
                "a training run's directory, not a model directory: use {hint}"
            ));
        }
        return bad(format!(
            "not a model directory: {CONFIG_FILE} is missing ({EXPECTED})"
        ));
    }
    if !dir.join(WEIGHTS_FILE).is_file() {
        return bad(format!("{WEIGHTS_FILE} is missing ({EXPECTED})"));
    }
    Ok(())
}

/// For a training run's directory (`best/`, `latest`, `checkpoints/`): the model directories in
/// it, e.g. `runs/r1/best (the best validation model) or runs/r1/checkpoints/step-000200 (the
/// latest checkpoint)`.
fn training_run_hint(dir: &Path) -> Option<String> {
    let best = dir.join("best");
    let latest = std::fs::read_to_string(dir.join("latest"))
        .ok()
        .map(|name| dir.join("checkpoints").join(name.trim()))
        .filter(|p| p.join(CONFIG_FILE).is_file());
    let mut choices = Vec::new();
    if best.is_dir() {
        choices.push(format!("{} (the best validation model)", best.display()));
    }
    if let Some(p) = latest {
        choices.push(format!("{} (the latest checkpoint)", p.display()));
    }
    if choices.is_empty() && !dir.join("checkpoints").is_dir() {
        return None;
    }
    if choices.is_empty() {
        choices.push(format!(
            "a checkpoint under {}",
            dir.join("checkpoints").display()
        ));
    }
    Some(choices.join(" or "))
}
