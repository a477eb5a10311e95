//! Model configuration: the official `MambaConfig` (`config.json`, upstream keys only) and
//! wavemamba's audio settings (`wavemamba.json`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

/// The official `mamba_ssm.models.config_mamba.MambaConfig`, as written to `config.json`.
/// Unknown keys are rejected by name; keys older hub configs omit take upstream's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MambaConfig {
    #[serde(default = "defaults::d_model")]
    pub d_model: i64,
    /// Width of the MLP after each mixer; 0 = no MLP (the only value wavemamba runs).
    #[serde(default)]
    pub d_intermediate: i64,
    #[serde(default = "defaults::n_layer")]
    pub n_layer: i64,
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: i64,
    #[serde(default)]
    pub ssm_cfg: SsmConfig,
    #[serde(default)]
    pub attn_layer_idx: Vec<i64>,
    #[serde(default)]
    pub attn_cfg: serde_json::Map<String, Value>,
    #[serde(default = "defaults::yes")]
    pub rms_norm: bool,
    #[serde(default = "defaults::yes")]
    pub residual_in_fp32: bool,
    #[serde(default = "defaults::yes")]
    pub fused_add_norm: bool,
    #[serde(default = "defaults::pad_multiple")]
    pub pad_vocab_size_multiple: i64,
    #[serde(default = "defaults::yes")]
    pub tie_embeddings: bool,
}

/// `ssm_cfg`: the keyword arguments of the official `Mamba` module (Mamba-1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsmConfig {
    /// "Mamba1" (default) — "Mamba2"/"Mamba3" are refused by [`MambaConfig::validate`].
    #[serde(default = "defaults::layer", skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    #[serde(default = "defaults::d_state")]
    pub d_state: i64,
    #[serde(default = "defaults::d_conv")]
    pub d_conv: i64,
    #[serde(default = "defaults::expand")]
    pub expand: i64,
    /// "auto" (= ceil(d_model / 16)) or a number.
    #[serde(default = "defaults::dt_rank")]
    pub dt_rank: Value,
    #[serde(default = "defaults::dt_min")]
    pub dt_min: f64,
    #[serde(default = "defaults::dt_max")]
    pub dt_max: f64,
    #[serde(default = "defaults::dt_init")]
    pub dt_init: String,
    #[serde(default = "defaults::one")]
    pub dt_scale: f64,
    #[serde(default = "defaults::dt_init_floor")]
    pub dt_init_floor: f64,
    #[serde(default = "defaults::yes")]
    pub conv_bias: bool,
    #[serde(default)]
    pub bias: bool,
    #[serde(default = "defaults::yes")]
    pub use_fast_path: bool,
    /// Upstream accepts `layer_idx`, `device`, `dtype` too; they do not change the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_idx: Option<Value>,
}

impl Default for SsmConfig {
    fn default() -> Self {
        serde_json::from_value(Value::Object(Default::default())).expect("defaults deserialize")
    }
}

mod defaults {
    use serde_json::Value;
    pub fn d_model() -> i64 {
        2560
    }
    pub fn n_layer() -> i64 {
        64
    }
    pub fn vocab_size() -> i64 {
        50277
    }
    pub fn pad_multiple() -> i64 {
        8
    }
    pub fn yes() -> bool {
        true
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn layer() -> Option<String> {
        None
    }
    pub fn d_state() -> i64 {
        16
    }
    pub fn d_conv() -> i64 {
        4
    }
    pub fn expand() -> i64 {
        2
    }
    pub fn dt_rank() -> Value {
        Value::String("auto".into())
    }
    pub fn dt_min() -> f64 {
        1e-3
    }
    pub fn dt_max() -> f64 {
        1e-1
    }
    pub fn dt_init() -> String {
        "random".into()
    }
    pub fn dt_init_floor() -> f64 {
        1e-4
    }
}

impl MambaConfig {
    /// A waveform model: vocabulary of 256 mu-law classes, tied head, Mamba-1 mixers.
    pub fn waveform(d_model: i64, n_layer: i64, d_state: i64) -> Self {
        let mut c: MambaConfig = serde_json::from_value(Value::Object(Default::default()))
            .expect("defaults deserialize");
        c.d_model = d_model;
        c.n_layer = n_layer;
        c.vocab_size = 256;
        c.ssm_cfg.d_state = d_state;
        c
    }

    /// Named sizes: `tiny` (tests), `small` (the shipped default class), `base`, `large`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown name (the message lists the presets).
    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name {
            "tiny" => Self::waveform(16, 2, 8),
            "small" => Self::waveform(64, 4, 16),
            "base" => Self::waveform(128, 6, 16),
            "large" => Self::waveform(256, 8, 16),
            other => {
                return Err(Error::InvalidArgument {
                    name: "preset",
                    reason: format!("unknown preset '{other}' (tiny, small, base, large)"),
                })
            }
        })
    }

    /// d_inner = expand · d_model.
    pub fn d_inner(&self) -> i64 {
        self.ssm_cfg.expand * self.d_model
    }

    /// dt_rank, resolving "auto" to ceil(d_model / 16).
    pub fn dt_rank(&self) -> i64 {
        match &self.ssm_cfg.dt_rank {
            Value::Number(n) => n.as_i64().unwrap_or(0),
            _ => (self.d_model + 15) / 16,
        }
    }

    /// The vocabulary padded up to `pad_vocab_size_multiple`, as upstream sizes the embedding.
    pub fn padded_vocab(&self) -> i64 {
        let m = self.pad_vocab_size_multiple.max(1);
        (self.vocab_size + m - 1) / m * m
    }

    /// Refuses, with the reason, what wavemamba cannot run.
    ///
    /// # Errors
    /// [`Error::Config`] naming the unsupported feature or the invalid value.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::Config { reason });
        if let Some(layer) = &self.ssm_cfg.layer {
            if layer != "Mamba1" {
                return bad(format!(
                    "ssm_cfg.layer = \"{layer}\": only Mamba1 layers are supported"
                ));
            }
        }
        if !self.attn_layer_idx.is_empty() {
            return bad(format!(
                "attn_layer_idx = {:?}: attention layers are not supported",
                self.attn_layer_idx
            ));
        }
        if self.d_intermediate != 0 {
            return bad(format!(
                "d_intermediate = {}: MLP blocks are not supported (use 0)",
                self.d_intermediate
            ));
        }
        if !self.rms_norm {
            return bad("rms_norm = false: only RMSNorm blocks are supported".into());
        }
        if self.ssm_cfg.bias {
            return bad("ssm_cfg.bias = true: biased in_proj/out_proj are not supported".into());
        }
        if !self.ssm_cfg.conv_bias {
            return bad("ssm_cfg.conv_bias = false is not supported".into());
        }
        for (name, v) in [
            ("d_model", self.d_model),
            ("n_layer", self.n_layer),
            ("vocab_size", self.vocab_size),
            ("ssm_cfg.d_state", self.ssm_cfg.d_state),
            ("ssm_cfg.d_conv", self.ssm_cfg.d_conv),
            ("ssm_cfg.expand", self.ssm_cfg.expand),
            ("ssm_cfg.dt_rank", self.dt_rank()),
        ] {
            if v < 1 {
                return bad(format!("{name} = {v}: must be ≥ 1"));
            }
        }
        Ok(())
    }

    /// Reads and validates `config.json`.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Config`] (unknown key, wrong type, unsupported feature).
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_text(path)?;
        let c: MambaConfig = serde_json::from_str(&text).map_err(|e| Error::Config {
            reason: format!("{}: {e}", path.display()),
        })?;
        c.validate()?;
        Ok(c)
    }
}

/// What the model does with audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Next-sample prediction over mu-law classes (generation, continuation).
    #[default]
    Lm,
    /// Noisy waveform in, clean waveform out.
    Denoise,
}

/// Backbone layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// A stack of Mamba blocks at the sample rate (the official `MambaLMHeadModel`).
    #[default]
    Plain,
    /// Multi-scale U-Net (SaShiMi backbone with Mamba blocks).
    Unet,
}

/// `wavemamba.json`: everything audio that `config.json` cannot hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioConfig {
    #[serde(default = "audio_defaults::sample_rate")]
    pub sample_rate: u32,
    /// Quantisation: "mulaw8" (8-bit mu-law, μ = 255).
    #[serde(default = "audio_defaults::quantisation")]
    pub quantisation: String,
    /// Level normalisation applied before encoding: "none" or "peak" (scale each file/prompt so
    /// its peak is `normalise_peak`).
    #[serde(default = "audio_defaults::normalisation")]
    pub normalisation: String,
    #[serde(default)]
    pub task: Task,
    #[serde(default)]
    pub architecture: Architecture,
    /// U-Net pooling factors per stage (empty for the plain architecture).
    #[serde(default)]
    pub pooling: Vec<i64>,
    /// Mamba blocks per U-Net stage (ignored for plain).
    #[serde(default)]
    pub blocks_per_stage: i64,
    /// Where the weights came from: data, steps, wall time, device, command.
    #[serde(default)]
    pub provenance: serde_json::Map<String, Value>,
    /// Measured quality, e.g. validation NLL in bits per sample.
    #[serde(default)]
    pub metrics: serde_json::Map<String, Value>,
}

mod audio_defaults {
    pub fn sample_rate() -> u32 {
        16_000
    }
    pub fn quantisation() -> String {
        "mulaw8".into()
    }
    pub fn normalisation() -> String {
        "none".into()
    }
}

impl Default for AudioConfig {
    /// What a directory without `wavemamba.json` means: 16 kHz, 8-bit mu-law, no level
    /// normalisation, task `lm`, plain architecture.
    fn default() -> Self {
        serde_json::from_value(Value::Object(Default::default())).expect("defaults deserialize")
    }
}

impl AudioConfig {
    /// Reads `wavemamba.json`.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Config`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_text(path)?;
        let c: AudioConfig = serde_json::from_str(&text).map_err(|e| Error::Config {
            reason: format!("{}: {e}", path.display()),
        })?;
        if c.quantisation != "mulaw8" {
            return Err(Error::Config {
                reason: format!(
                    "{}: quantisation \"{}\" is not supported (mulaw8)",
                    path.display(),
                    c.quantisation
                ),
            });
        }
        if c.sample_rate == 0 {
            return Err(Error::Config {
                reason: format!("{}: sample_rate must be > 0", path.display()),
            });
        }
        Ok(c)
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_hub_configs_get_upstream_defaults() {
        let c: MambaConfig =
            serde_json::from_str(r#"{"d_model": 768, "n_layer": 24, "vocab_size": 50277}"#)
                .unwrap();
        assert_eq!(c.ssm_cfg.d_state, 16);
        assert_eq!(c.dt_rank(), 48);
        assert_eq!(c.padded_vocab(), 50280);
        assert!(c.tie_embeddings && c.rms_norm && c.residual_in_fp32);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_unsupported_features_are_named() {
        let err = serde_json::from_str::<MambaConfig>(r#"{"d_model": 8, "sample_rate": 16000}"#)
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `sample_rate`"),
            "{err}"
        );
        let c: MambaConfig =
            serde_json::from_str(r#"{"attn_layer_idx": [1], "attn_cfg": {"num_heads": 4}}"#)
                .unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("attention layers are not supported"));
        let c: MambaConfig = serde_json::from_str(r#"{"ssm_cfg": {"layer": "Mamba2"}}"#).unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("only Mamba1"));
        let c: MambaConfig = serde_json::from_str(r#"{"d_intermediate": 512}"#).unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("MLP blocks are not supported"));
    }

    #[test]
    fn presets_round_trip_through_json() {
        let c = MambaConfig::preset("small").unwrap();
        let back: MambaConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(c, back);
        assert!(MambaConfig::preset("huge").is_err());
    }
}
