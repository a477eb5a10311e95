//! The next-sample objective shared by training, validation and `wavemamba eval`: the model reads
//! `[START_TOKEN] + tokens[..L-1]` and is scored on every token of `tokens`.

use tch::{Kind, Reduction, Tensor};

use super::lm::WaveMamba;
use super::START_TOKEN;
use crate::Result;

/// `[START_TOKEN] + tokens[..L-1]`.
///
/// # Shapes
/// (B, L) → (B, L)
pub fn shifted_input(tokens: &Tensor) -> Tensor {
    let (b, l) = (tokens.size()[0], tokens.size()[1]);
    let start = Tensor::full([b, 1], START_TOKEN, (Kind::Int64, tokens.device()));
    Tensor::cat(&[&start, &tokens.narrow(1, 0, l - 1)], 1)
}

/// Mean negative log-likelihood in nats per sample (differentiable).
///
/// # Shapes
/// `tokens`: (B, L) int64 → scalar.
///
/// # Errors
/// Invalid tokens, kernel errors.
pub fn mean_nll_nats(model: &WaveMamba, tokens: &Tensor) -> Result<Tensor> {
    let logits = model.forward(&shifted_input(tokens))?; // (B, L, V)
    let v = logits.size()[2];
    Ok(logits
        .to_kind(Kind::Float)
        .reshape([-1, v])
        .cross_entropy_loss::<Tensor>(&tokens.reshape([-1]), None, Reduction::Mean, -100, 0.0))
}

/// Bits per sample from nats per sample.
pub fn nats_to_bits(nats: f64) -> f64 {
    nats / std::f64::consts::LN_2
}
