//! The denoiser's training loss: cross-entropy on the clean sample's mu-law class (calibrates the
//! posterior), plus waveform losses on its mean `ŷ` ([`super::expected_value`]): an L1 term and a
//! multi-resolution STFT loss (spectral convergence + log-magnitude L1, Yamamoto et al. 2020), which
//! catch what a per-sample loss misses (spectral detail, the noise floor in pauses).

use tch::{Kind, Reduction, Tensor};

use super::expected_value;
use crate::model::WaveMamba;
use crate::Result;

/// STFT sizes (n_fft = window, hop) of the multi-resolution loss at 16 kHz: 16, 32 and 64 ms.
pub const STFT_RESOLUTIONS: [(i64, i64); 3] = [(256, 64), (512, 128), (1024, 256)];

/// Mean loss of a batch: `CE(nats) + L1(ŷ, y) / mean|noisy| + MR-STFT(ŷ, y)`.
///
/// # Shapes
/// `noisy_tokens`, `clean_tokens`: (B, L) int64; `clean`: (B, L) f32 → scalar.
///
/// # Errors
/// Invalid tokens, kernel errors.
pub fn denoise_loss(
    model: &WaveMamba,
    noisy_tokens: &Tensor,
    clean_tokens: &Tensor,
    clean: &Tensor,
) -> Result<Tensor> {
    let logits = model.forward(noisy_tokens)?.to_kind(Kind::Float); // (B, L, V)
    let v = logits.size()[2];
    let ce = logits.reshape([-1, v]).cross_entropy_loss::<Tensor>(
        &clean_tokens.reshape([-1]),
        None,
        Reduction::Mean,
        -100,
        0.0,
    );
    let y = expected_value(&logits); // (B, L)
                                     // The level reference is the mixture (never silent, unlike a speech pause).
    let level = super::mulaw_decode_mean_abs(noisy_tokens).clamp_min(1e-4); // (B, 1)
    let l1 = ((&y - clean).abs().mean_dim(1, true, Kind::Float) / level).mean(Kind::Float);
    Ok(ce + l1 + multi_resolution_stft(&y, clean))
}

/// `|STFT(x)|` with a Hann window, floored so that log and its gradient stay finite.
///
/// # Shapes
/// (B, L) → (B, n_fft/2 + 1, frames)
fn magnitude(x: &Tensor, n_fft: i64, hop: i64) -> Tensor {
    let window = Tensor::hann_window(n_fft, (Kind::Float, x.device()));
    let spec = x.stft(n_fft, hop, n_fft, Some(&window), false, true, true, false);
    (spec
        .view_as_real()
        .square()
        .sum_dim_intlist(-1, false, Kind::Float)
        + 1e-10)
        .sqrt()
}

/// Mean over [`STFT_RESOLUTIONS`] of spectral convergence `‖|Y|−|Ŷ|‖_F / ‖|Y|‖_F` plus the mean
/// absolute difference of log magnitudes (whole batch).
///
/// # Shapes
/// `estimate`, `reference`: (B, L) with L ≥ 1024 → scalar.
pub fn multi_resolution_stft(estimate: &Tensor, reference: &Tensor) -> Tensor {
    let mut total = Tensor::zeros([], (Kind::Float, estimate.device()));
    for (n_fft, hop) in STFT_RESOLUTIONS {
        let (e, r) = (
            magnitude(estimate, n_fft, hop),
            magnitude(reference, n_fft, hop),
        );
        let sc = (&r - &e).square().sum(Kind::Float).sqrt()
            / (r.square().sum(Kind::Float).sqrt() + 1e-7);
        let log = (r.log() - e.log()).abs().mean(Kind::Float);
        total = total + sc + log;
    }
    total / STFT_RESOLUTIONS.len() as f64
}
