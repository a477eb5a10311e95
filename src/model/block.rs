//! `Block` (pre-norm residual around a mixer) and `Backbone` = upstream `MixerModel`.

use tch::{nn, Kind, Tensor};

use super::init;
use super::mixer::Mixer;
use super::state::State;
use crate::config::MambaConfig;
use crate::Result;

/// RMSNorm with upstream's ε = 1e-5: `x / √(mean(x²) + ε) · weight`.
#[derive(Debug)]
pub struct RmsNorm {
    /// (d_model)
    pub weight: Tensor,
}

impl RmsNorm {
    pub const EPS: f64 = 1e-5;

    pub fn new(p: &nn::Path, d_model: i64) -> RmsNorm {
        RmsNorm {
            weight: init::param(
                p,
                "weight",
                &Tensor::ones([d_model], (Kind::Float, p.device())),
            ),
        }
    }

    /// The fused CUDA kernel for float32 CUDA tensors (`ops::layers`), else ATen ops. Under
    /// bf16 autocast the kernel writes bfloat16: every consumer of a norm here is a matmul that
    /// autocast would cast to bfloat16 anyway.
    ///
    /// # Shapes
    /// (…, d_model) → (…, d_model)
    pub fn forward(&self, x: &Tensor) -> Tensor {
        if x.kind() == Kind::Float
            && x.size().last().is_some_and(|&c| c <= 1024)
            && crate::ops::layers::fused_layers_for(x.device())
        {
            let bf16_out = crate::ops::cuda_autocast_state() == (true, Some(Kind::BFloat16));
            match crate::ops::layers::rms_norm(x, &self.weight, Self::EPS, bf16_out) {
                Ok(y) => return y,
                // Its preconditions hold here, so only a CUDA failure gets this far: say so
                // (once) rather than hide it, and carry on with the ATen formula.
                Err(e) => {
                    static WARNED: std::sync::Once = std::sync::Once::new();
                    WARNED.call_once(|| {
                        eprintln!("warning: fused RMSNorm failed ({e}); using the ATen formula")
                    });
                }
            }
        }
        Self::forward_composite(x, &self.weight)
    }

    /// The ATen formula (CPU path, and the reference of the fused kernel's tests).
    pub fn forward_composite(x: &Tensor, weight: &Tensor) -> Tensor {
        let ms = x.square().mean_dim(-1, true, Kind::Float);
        x * (ms + Self::EPS).rsqrt() * weight
    }
}

/// Upstream `Block`: `residual = h + residual; h = mixer(norm(residual))`.
#[derive(Debug)]
pub struct Block {
    pub norm: RmsNorm,
    pub mixer: Mixer,
}

/// Upstream `MixerModel`: embedding, blocks, final `norm_f`.
#[derive(Debug)]
pub struct Backbone {
    /// (padded vocab, d_model)
    pub embedding: Tensor,
    pub layers: Vec<Block>,
    pub norm_f: RmsNorm,
}

impl Backbone {
    /// Parameters under `p` (= `backbone`).
    pub fn new(p: &nn::Path, c: &MambaConfig) -> Backbone {
        let emb = Tensor::randn([c.padded_vocab(), c.d_model], (Kind::Float, p.device())) * 0.02;
        let layers = (0..c.n_layer)
            .map(|i| {
                let lp = p / "layers" / i;
                Block {
                    norm: RmsNorm::new(&(&lp / "norm"), c.d_model),
                    mixer: Mixer::new(&(&lp / "mixer"), c),
                }
            })
            .collect();
        Backbone {
            embedding: init::param(p, "embedding.weight", &emb),
            layers,
            norm_f: RmsNorm::new(&(p / "norm_f"), c.d_model),
        }
    }

    /// A zero state for `batch` sequences.
    pub fn zero_state(&self, batch: i64) -> State {
        State::plain(
            self.layers
                .iter()
                .map(|l| l.mixer.zero_state(batch))
                .collect(),
        )
    }

    /// Hidden states after `norm_f` for a whole sequence (continuing from `state` if given).
    ///
    /// # Shapes
    /// `tokens`: (B, L) int64 → (B, L, d_model).
    ///
    /// # Errors
    /// Kernel errors from the scan.
    pub fn forward(&self, tokens: &Tensor, mut state: Option<&mut State>) -> Result<Tensor> {
        let mut h = Tensor::embedding(&self.embedding, tokens, -1, false, false); // (B, L, d_model)
        let mut residual: Option<Tensor> = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let r = match residual {
                Some(r) => r + &h,
                None => h,
            };
            let ls = state.as_deref_mut().map(|s| &mut s.layers[i]);
            h = layer.mixer.forward(&layer.norm.forward(&r), ls)?;
            residual = Some(r);
        }
        let r = match residual {
            Some(r) => r + &h,
            None => h,
        };
        Ok(self.norm_f.forward(&r))
    }

    /// Hidden state after `norm_f` for one token per sequence.
    ///
    /// # Shapes
    /// `tokens`: (B) int64 → (B, d_model).
    pub fn step(&self, tokens: &Tensor, state: &mut State) -> Tensor {
        let mut h = Tensor::embedding(&self.embedding, tokens, -1, false, false); // (B, d_model)
        let mut residual: Option<Tensor> = None;
        for (layer, ls) in self.layers.iter().zip(state.layers.iter_mut()) {
            let r = match residual {
                Some(r) => r + &h,
                None => h,
            };
            h = layer.mixer.step(&layer.norm.forward(&r), ls);
            residual = Some(r);
        }
        let r = match residual {
            Some(r) => r + &h,
            None => h,
        };
        self.norm_f.forward(&r)
    }
}
