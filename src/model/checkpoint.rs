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
    if !dir.is_dir() {
        return Err(Error::Checkpoint {
            path: dir.to_owned(),
            reason: "not a model directory (expected config.json and model.safetensors)".into(),
        });
    }
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
