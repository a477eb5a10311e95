//! Recurrent inference state: O(1) per layer, whatever the sequence length.

use tch::Tensor;

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
    pub layers: Vec<LayerState>,
}

impl State {
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
        }
    }
}
