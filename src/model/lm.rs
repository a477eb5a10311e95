//! `WaveMamba` = upstream `MambaLMHeadModel` over 256 mu-law classes.

use tch::{nn, Device, Kind, Tensor};

use super::block::Backbone;
use super::init;
use super::state::State;
use crate::config::{AudioConfig, MambaConfig};
use crate::{Error, Result};

/// The network between the embedding lookup and the head, by architecture.
#[derive(Debug)]
pub enum Body {
    /// Upstream `MixerModel` (state-dict prefix `backbone.`).
    Plain(Backbone),
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
    /// A randomly initialised model (upstream init) on `device`.
    ///
    /// # Errors
    /// [`Error::Config`] when the config asks for something wavemamba cannot run.
    pub fn new(config: MambaConfig, audio: AudioConfig, device: Device) -> Result<WaveMamba> {
        config.validate()?;
        if audio.architecture != crate::config::Architecture::Plain {
            return Err(Error::Config {
                reason: format!(
                    "architecture {:?} is not available in this build",
                    audio.architecture
                ),
            });
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let backbone = Backbone::new(&(&root / "backbone"), &config);
        let lm_head = if config.tie_embeddings {
            backbone.embedding.shallow_clone()
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
            body: Body::Plain(backbone),
            lm_head,
        })
    }

    pub fn device(&self) -> Device {
        self.vs.device()
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
        Ok(self.head(&self.hidden(tokens, Some(state))?))
    }

    /// One sample per sequence: logits for the next sample.
    ///
    /// # Shapes
    /// `tokens`: (B) int64 → (B, vocab).
    pub fn step(&self, tokens: &Tensor, state: &mut State) -> Tensor {
        let h = match &self.body {
            Body::Plain(b) => b.step(tokens, state),
        };
        self.head(&h)
    }

    /// Final hidden states (after `norm_f`) of whole sequences: (B, L) → (B, L, d_model).
    fn hidden(&self, tokens: &Tensor, state: Option<&mut State>) -> Result<Tensor> {
        match &self.body {
            Body::Plain(b) => b.forward(tokens, state),
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
