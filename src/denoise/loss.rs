//! The denoiser's training loss: cross-entropy on the clean sample's mu-law class (calibrates the
//! posterior), plus waveform losses on its mean `ŷ` ([`super::expected_value`]): an L1 term, a
//! multi-resolution STFT loss (spectral convergence + log-magnitude L1, Yamamoto et al. 2020), which
//! catches what a per-sample loss misses (spectral detail, the noise floor in pauses), and the
//! negative SI-SDR, the score the denoiser is judged by.

use tch::{Kind, Reduction, Tensor};

use super::expected_value;
use crate::model::WaveMamba;
use crate::{Error, Result};

/// STFT sizes (n_fft = window, hop) of the multi-resolution loss at 16 kHz: 16, 32 and 64 ms.
pub const STFT_RESOLUTIONS: [(i64, i64); 3] = [(256, 64), (512, 128), (1024, 256)];

/// Shortest sequence [`denoise_loss`] takes: the largest STFT window.
pub const MIN_LEN: i64 = 1024;
const _: () = assert!(STFT_RESOLUTIONS[STFT_RESOLUTIONS.len() - 1].0 == MIN_LEN);

/// Weight of the negative SI-SDR (dB) in [`denoise_loss`]: 10 dB weighs 1 nat of cross-entropy.
pub const SI_SDR_WEIGHT: f64 = 0.1;

/// Mean loss of a batch:
/// `CE(nats) + L1(ŷ, y) / mean|noisy| + MR-STFT(ŷ, y) − SI_SDR_WEIGHT · SI-SDR(ŷ, y)`.
///
/// # Shapes
/// `noisy_tokens`, `clean_tokens`: (B, L) int64; `clean`: (B, L) f32 with L ≥ [`MIN_LEN`] → scalar.
///
/// # Errors
/// Sequences shorter than [`MIN_LEN`], invalid tokens, kernel errors.
pub fn denoise_loss(
    model: &WaveMamba,
    noisy_tokens: &Tensor,
    clean_tokens: &Tensor,
    clean: &Tensor,
) -> Result<Tensor> {
    check_len(clean.size().last().copied().unwrap_or(0))?;
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
    let si_sdr = batch_si_sdr(&y, clean);
    Ok(ce + l1 + multi_resolution_stft(&y, clean) - si_sdr * SI_SDR_WEIGHT)
}

/// [`Error::InvalidArgument`] unless `len` ≥ [`MIN_LEN`].
///
/// # Errors
/// As above.
pub fn check_len(len: i64) -> Result<()> {
    if len < MIN_LEN {
        return Err(Error::InvalidArgument {
            name: "len",
            reason: format!(
                "the denoiser's loss needs sequences of at least {MIN_LEN} samples (its largest \
                 STFT window), got {len}"
            ),
        });
    }
    Ok(())
}

/// Mean SI-SDR (dB) over the rows whose reference is not silent (differentiable); 0 when all are.
///
/// # Shapes
/// `estimate`, `reference`: (B, L) → scalar.
pub fn batch_si_sdr(estimate: &Tensor, reference: &Tensor) -> Tensor {
    let e = estimate - estimate.mean_dim(1, true, Kind::Float);
    let r = reference - reference.mean_dim(1, true, Kind::Float);
    let rr = r.square().sum_dim_intlist(1, true, Kind::Float); // (B, 1)
    let target = &r * ((&e * &r).sum_dim_intlist(1, true, Kind::Float) / (&rr + 1e-8));
    let noise = &e - &target;
    let db = ((target.square().sum_dim_intlist(1, false, Kind::Float) + 1e-8)
        / (noise.square().sum_dim_intlist(1, false, Kind::Float) + 1e-8))
        .log10()
        * 10.0; // (B)
                // Rows of silent speech (mean square below −60 dBFS) have no meaningful SI-SDR.
    let voiced = rr
        .squeeze_dim(1)
        .gt(1e-6 * reference.size()[1] as f64)
        .to_kind(Kind::Float);
    (db * &voiced).sum(Kind::Float) / voiced.sum(Kind::Float).clamp_min(1.0)
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
/// `estimate`, `reference`: (B, L) with L ≥ [`MIN_LEN`] → scalar.
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
