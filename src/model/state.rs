//! Recurrent inference state: O(1) per layer, whatever the sequence length.

use tch::Tensor;

pub use super::pool::PoolState;

/// One mixer's state, as upstream's `inference_params.key_value_memory_dict[layer]`.
///
/// # Shapes
/// `conv`: (B, d_inner, d_conv), the last d_conv inputs of the causal conv (oldest first);
/// `ssm`: (B, d_inner, d_state), the scan's h.
#[derive(Debug)]
pub struct LayerState {
    pub conv: Tensor,
    pub ssm: Tensor,
}

/// The state of every layer of a model.
#[derive(Debug)]
pub struct State {
    /// One per mixer, in parameter order (plain: `backbone.layers.{i}`; U-Net: stage 0's layers,
    /// then stage 1's, …, then the innermost stage's).
    pub layers: Vec<LayerState>,
    /// U-Net pooling levels, outermost first; empty for the plain architecture.
    pub pools: Vec<PoolState>,
}

impl State {
    /// The state of a model without pooling (the plain architecture).
    pub fn plain(layers: Vec<LayerState>) -> State {
        State {
            layers,
            pools: Vec::new(),
        }
    }

    /// Batch size of this state.
    pub fn batch(&self) -> i64 {
        self.layers.first().map_or(0, |l| l.ssm.size()[0])
    }

    /// A deep copy (independent tensors).
    pub fn copy(&self) -> State {
        self.map(Tensor::copy)
    }

    /// Every sequence of this state repeated `n` times along the batch (sequence-major:
    /// rows b·n … b·n + n − 1 come from row b): prefill a prompt once, continue it `n` ways.
    pub fn repeat_batch(&self, n: i64) -> State {
        self.map(|t| t.repeat_interleave_self_int(n, 0, None))
    }

    /// Rows `start .. start + len` of the batch (views, not copies).
    pub fn narrow_batch(&self, start: i64, len: i64) -> State {
        self.map(|t| t.narrow(0, start, len))
    }

    /// Applies `f` to every state tensor (all of them have the batch first).
    fn map(&self, f: impl Fn(&Tensor) -> Tensor) -> State {
        State {
            layers: self
                .layers
                .iter()
                .map(|l| LayerState {
                    conv: f(&l.conv),
                    ssm: f(&l.ssm),
                })
                .collect(),
            pools: self
                .pools
                .iter()
                .map(|p| PoolState {
                    buffer: f(&p.buffer),
                    pending: f(&p.pending),
                })
                .collect(),
        }
    }
}
