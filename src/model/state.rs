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
        State {
            layers: self
                .layers
                .iter()
                .map(|l| LayerState {
                    conv: l.conv.copy(),
                    ssm: l.ssm.copy(),
                })
                .collect(),
            pools: self.pools.iter().map(PoolState::copy).collect(),
        }
    }
}
