//! `WaveMamba` = upstream `MambaLMHeadModel` over 256 mu-law classes.

use tch::{nn, Device, Kind, Tensor};

use super::block::Backbone;
use super::init;
use super::state::State;
use super::unet::{self, Unet};
use crate::config::{Architecture, AudioConfig, MambaConfig, Task};
use crate::{Error, Result};

/// The network between the embedding lookup and the head, by architecture.
#[derive(Debug)]
pub enum Body {
    /// Upstream `MixerModel` (state-dict prefix `backbone.`).
    Plain(Backbone),
    /// The multi-scale U-Net (state-dict prefix `unet.`), see [`super::unet`].
    Unet(Unet),
}

/// A waveform language model: body + (tied) LM head. Owns its `VarStore`.
#[derive(Debug)]
pub struct WaveMamba {
    pub vs: nn::VarStore,
    pub config: MambaConfig,
    pub audio: AudioConfig,
    pub body: Body,
    /// (padded vocab, d_model); the embedding itself when `tie_embeddings`.
    pub lm_head: Tensor,
}

impl WaveMamba {
    /// A randomly initialised model (upstream init) on `device`. For the U-Net, the pooling
    /// factors and blocks per stage actually used are written back into `audio` (defaults
    /// resolved, see [`super::unet`]).
    ///
    /// # Errors
    /// [`Error::Config`] when the config asks for something wavemamba cannot run.
    pub fn new(config: MambaConfig, mut audio: AudioConfig, device: Device) -> Result<WaveMamba> {
        config.validate()?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let body = match audio.architecture {
            Architecture::Plain => Body::Plain(Backbone::new(&(&root / "backbone"), &config)),
            Architecture::Unet => {
                let (pooling, blocks) = unet::resolve(&config, &audio)?;
                let body = Unet::new(&(&root / "unet"), &config, &pooling, blocks);
                audio.pooling = pooling;
                audio.blocks_per_stage = blocks;
                Body::Unet(body)
            }
        };
        let embedding = match &body {
            Body::Plain(b) => &b.embedding,
            Body::Unet(u) => &u.embedding,
        };
        let lm_head = if config.tie_embeddings {
            embedding.shallow_clone()
        } else {
            let w = Tensor::randn(
                [config.padded_vocab(), config.d_model],
                (Kind::Float, device),
            ) * 0.02;
            init::param(&root, "lm_head.weight", &w)
        };
        Ok(WaveMamba {
            vs,
            config,
            audio,
            body,
            lm_head,
        })
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// [`Error::Config`] unless the model was trained for `want`, naming what it is and what
    /// runs it instead.
    ///
    /// # Errors
    /// As above.
    pub fn check_task(&self, want: Task) -> Result<()> {
        if self.audio.task == want {
            return Ok(());
        }
        let hint = match want {
            Task::Denoise => "train one with `wavemamba train --task denoise`",
            Task::Lm => {
                "a denoiser runs with `wavemamba denoise`, `live --mode denoise` and `eval \
                 --task denoise`"
            }
        };
        let name = |t: Task| format!("{t:?}").to_lowercase();
        Err(Error::Config {
            reason: format!(
                "this model was trained for task '{}', not '{}' ({hint})",
                name(self.audio.task),
                name(want)
            ),
        })
    }

    /// Number of parameters (the tied head counted once).
    pub fn num_parameters(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    fn head(&self, h: &Tensor) -> Tensor {
        h.matmul(&self.lm_head.tr())
            .narrow(-1, 0, self.config.vocab_size)
    }

    /// Logits for every position of whole sequences (parallel scan).
    ///
    /// # Shapes
    /// `tokens`: (B, L) int64 in [0, vocab) → (B, L, vocab).
    ///
    /// # Errors
    /// Out-of-range tokens, kernel errors.
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        self.check_tokens(tokens)?;
        Ok(self.head(&self.hidden(tokens, None)?))
    }

    /// A zero recurrent state for `batch` sequences.
    pub fn zero_state(&self, batch: i64) -> State {
        match &self.body {
            Body::Plain(b) => b.zero_state(batch),
            Body::Unet(u) => u.zero_state(batch),
        }
    }

    /// Runs whole sequences from `state` with the parallel scan and leaves the final state in it
    /// (one kernel call per layer, not a step loop). Returns the logits of every position.
    ///
    /// # Shapes
    /// `tokens`: (B, L) → (B, L, vocab); `state` for batch B.
    ///
    /// # Errors
    /// Out-of-range tokens, batch mismatch, kernel errors.
    pub fn prefill(&self, tokens: &Tensor, state: &mut State) -> Result<Tensor> {
        Ok(self.head(&self.hidden_from(tokens, state)?))
    }

    /// [`WaveMamba::prefill`] that applies the head to the last position only: what generation
    /// needs, without the (B, L, vocab) logits.
    ///
    /// # Shapes
    /// `tokens`: (B, L) → (B, vocab).
    ///
    /// # Errors
    /// As [`WaveMamba::prefill`].
    pub fn prefill_last(&self, tokens: &Tensor, state: &mut State) -> Result<Tensor> {
        let h = self.hidden_from(tokens, state)?; // (B, L, d_model)
        Ok(self.head(&h.select(1, h.size()[1] - 1)))
    }

    /// Checked [`WaveMamba::hidden`] continuing from `state` (batch sizes must agree).
    fn hidden_from(&self, tokens: &Tensor, state: &mut State) -> Result<Tensor> {
        self.check_tokens(tokens)?;
        if state.batch() != tokens.size()[0] {
            return Err(Error::InvalidArgument {
                name: "state",
                reason: format!(
                    "state is for batch {} but tokens have batch {}",
                    state.batch(),
                    tokens.size()[0]
                ),
            });
        }
        self.hidden(tokens, Some(state))
    }

    /// One sample per sequence: logits for the next sample.
    ///
    /// # Shapes
    /// `tokens`: (B) int64 → (B, vocab).
    ///
    /// # Panics
    /// If `state` was not made by this model's [`WaveMamba::zero_state`] (U-Net).
    pub fn step(&self, tokens: &Tensor, state: &mut State) -> Tensor {
        let h = match &self.body {
            Body::Plain(b) => b.step(tokens, state),
            Body::Unet(u) => u.step(tokens, state),
        };
        self.head(&h)
    }

    /// Final hidden states (after `norm_f`) of whole sequences: (B, L) → (B, L, d_model).
    fn hidden(&self, tokens: &Tensor, state: Option<&mut State>) -> Result<Tensor> {
        match &self.body {
            Body::Plain(b) => b.forward(tokens, state),
            Body::Unet(u) => u.forward(tokens, state),
        }
    }

    fn check_tokens(&self, tokens: &Tensor) -> Result<()> {
        if tokens.dim() != 2 || tokens.kind() != Kind::Int64 {
            return Err(Error::InvalidArgument {
                name: "tokens",
                reason: format!(
                    "expected (batch, len) int64 tokens, got {:?} {:?}",
                    tokens.size(),
                    tokens.kind()
                ),
            });
        }
        if tokens.numel() > 0 {
            let (lo, hi) = (tokens.min().int64_value(&[]), tokens.max().int64_value(&[]));
            if lo < 0 || hi >= self.config.vocab_size {
                return Err(Error::InvalidArgument {
                    name: "tokens",
                    reason: format!(
                        "token values must be in [0, {}), got [{lo}, {hi}]",
                        self.config.vocab_size
                    ),
                });
            }
        }
        Ok(())
    }
}
