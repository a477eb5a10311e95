//! Mixtures of speech and noise for the denoiser: made on the fly from random speech crops and
//! random noise crops at a random SNR and gain ([`DenoiseData`], the training
//! [`Objective`]), and at a fixed SNR for evaluation ([`add_noise_at_snr`]).

use tch::Tensor;

use super::denoise_batch;
use super::loss::denoise_loss;
use super::sisdr::si_sdr;
use crate::audio::mulaw;
use crate::model::WaveMamba;
use crate::rng::{splitmix64, SplitMix};
use crate::train::corpus::{TokenCorpus, TokenFile};
use crate::train::{Metric, Objective};
use crate::{Error, Result};

/// Ranges the training mixtures are drawn from (uniformly, in dB).
#[derive(Debug, Clone, Copy)]
pub struct MixOptions {
    /// Speech-to-noise energy ratio of a crop.
    pub snr_db: (f32, f32),
    /// Peak level of the mixture (dBFS) after the random gain.
    pub peak_db: (f32, f32),
}

impl Default for MixOptions {
    fn default() -> Self {
        MixOptions {
            snr_db: (-5.0, 20.0),
            peak_db: (-30.0, -1.0),
        }
    }
}

/// Energy below which a crop counts as silent (−60 dBFS mean square).
const SILENT_ENERGY: f64 = 1e-6;

fn energy(x: &[f32]) -> f64 {
    x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len().max(1) as f64
}

/// Variance: the energy SI-SDR sees (it removes the mean), so a constant has none.
pub(crate) fn variance(x: &[f32]) -> f64 {
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / x.len().max(1) as f64;
    x.iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / x.len().max(1) as f64
}

/// `clean + α·noise` with α chosen so that the speech-to-noise energy ratio is `snr_db`
/// (energies floored at −60 dBFS, so silent speech gets faint noise, not none). A `noise` shorter
/// than `clean` is repeated; an empty one leaves `clean` as it is.
pub fn add_noise_at_snr(clean: &[f32], noise: &[f32], snr_db: f32) -> Vec<f32> {
    if noise.is_empty() {
        return clean.to_vec();
    }
    let noise = &noise[..clean.len().min(noise.len())];
    let (ec, en) = (energy(clean).max(SILENT_ENERGY), energy(noise).max(1e-12));
    let alpha = (ec / (en * 10f64.powf(f64::from(snr_db) / 10.0))).sqrt() as f32;
    clean
        .iter()
        .zip(noise.iter().cycle())
        .map(|(&c, &n)| c + alpha * n)
        .collect()
}

/// `len` noise samples from a crop: the crop repeated when the file is shorter.
fn tiled(tokens: &[u8], len: usize) -> Vec<f32> {
    if tokens.is_empty() {
        return vec![0.0; len];
    }
    tokens
        .iter()
        .cycle()
        .take(len)
        .map(|&t| mulaw::decode(t))
        .collect()
}

/// One training/validation example: (noisy, clean), both `len` samples, scaled by the same gain.
fn example(
    speech: &[TokenFile],
    noise: &[TokenFile],
    key: u64,
    len: usize,
    opts: &MixOptions,
) -> (Vec<f32>, Vec<f32>) {
    let total = |f: &[TokenFile]| f.iter().map(|f| f.tokens.len()).sum::<usize>();
    let mut rng = SplitMix(splitmix64(key ^ 0x0DE4_015E));
    let mut clean: Vec<f32> = TokenCorpus::pick(speech, total(speech), rng.next_u64(), len)
        .iter()
        .map(|&t| mulaw::decode(t))
        .collect();
    clean.resize(len, 0.0);
    let n = tiled(
        TokenCorpus::pick(noise, total(noise), rng.next_u64(), len),
        len,
    );
    let uniform = |rng: &mut SplitMix, (lo, hi): (f32, f32)| lo + (hi - lo) * rng.next_f32();
    let snr = uniform(&mut rng, opts.snr_db);
    let mut noisy = add_noise_at_snr(&clean, &n, snr);
    let peak = noisy.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if peak > 1e-6 {
        let g = 10f32.powf(uniform(&mut rng, opts.peak_db) / 20.0) / peak;
        noisy.iter_mut().for_each(|v| *v *= g);
        clean.iter_mut().for_each(|v| *v *= g);
    }
    (noisy, clean)
}

/// The denoiser's training data: speech and noise token corpora (each with its own train and
/// validation files), mixed on the fly. Batch `index` is a pure function of the seed and `index`.
pub struct DenoiseData {
    pub speech: TokenCorpus,
    pub noise: TokenCorpus,
    pub seed: u64,
    pub mix: MixOptions,
    /// Validation: this many crops of `valid_len` samples, mixed once with a fixed seed.
    pub valid_crops: usize,
    pub valid_len: usize,
    valid: Option<Vec<(Vec<f32>, Vec<f32>)>>,
}

impl DenoiseData {
    /// # Errors
    /// [`Error::InvalidArgument`] when either corpus has no training audio.
    pub fn new(speech: TokenCorpus, noise: TokenCorpus, seed: u64) -> Result<DenoiseData> {
        for (name, c) in [("data", &speech), ("noise", &noise)] {
            if c.train.iter().all(|f| f.tokens.is_empty()) {
                return Err(Error::InvalidArgument {
                    name,
                    reason: format!("the {name} corpus has no training audio"),
                });
            }
        }
        Ok(DenoiseData {
            speech,
            noise,
            seed,
            mix: MixOptions::default(),
            valid_crops: 64,
            valid_len: 16_384,
            valid: None,
        })
    }

    /// The fixed validation mixtures from the validation files (the training files of a corpus
    /// without any), skipping crops of silent speech.
    fn valid_set(&self) -> Vec<(Vec<f32>, Vec<f32>)> {
        let pick = |c: &TokenCorpus| -> Vec<TokenFile> {
            if c.valid.is_empty() {
                c.train.clone()
            } else {
                c.valid.clone()
            }
        };
        let (speech, noise) = (pick(&self.speech), pick(&self.noise));
        let mut set = Vec::with_capacity(self.valid_crops);
        for i in 0..(self.valid_crops as u64 * 4) {
            if set.len() == self.valid_crops {
                break;
            }
            let (noisy, clean) = example(&speech, &noise, 0xA11D ^ i, self.valid_len, &self.mix);
            if variance(&clean) > SILENT_ENERGY * 1e-2 {
                set.push((noisy, clean));
            }
        }
        set
    }
}

impl Objective for DenoiseData {
    /// `[noisy tokens (B, L) int64, clean tokens (B, L) int64, clean samples (B, L) f32]`.
    fn train_batch(&mut self, index: u64, batch: i64, len: i64) -> Result<Vec<Tensor>> {
        let (b, l) = (batch as usize, len as usize);
        let (mut noisy_t, mut clean_t, mut clean_x) = (
            vec![0i64; b * l],
            vec![0i64; b * l],
            Vec::with_capacity(b * l),
        );
        for i in 0..b {
            let key = self.seed ^ splitmix64(index.wrapping_mul(1 << 20).wrapping_add(i as u64));
            let (noisy, clean) = example(&self.speech.train, &self.noise.train, key, l, &self.mix);
            mulaw::encode_into(&noisy, &mut noisy_t[i * l..(i + 1) * l]);
            mulaw::encode_into(&clean, &mut clean_t[i * l..(i + 1) * l]);
            clean_x.extend_from_slice(&clean);
        }
        let shape = [batch, len];
        Ok(vec![
            Tensor::from_slice(&noisy_t).view(shape),
            Tensor::from_slice(&clean_t).view(shape),
            Tensor::from_slice(&clean_x).view(shape),
        ])
    }

    fn loss(&self, model: &WaveMamba, batch: &[Tensor]) -> Result<Tensor> {
        denoise_loss(model, &batch[0], &batch[1], &batch[2])
    }

    /// Mean SI-SDR improvement (dB) of the model's output over the noisy input.
    fn validate(&mut self, model: &WaveMamba) -> Result<Option<f64>> {
        if self.valid.is_none() {
            self.valid = Some(self.valid_set());
        }
        let set = self.valid.as_deref().unwrap_or_default();
        if set.is_empty() {
            return Ok(None);
        }
        let mut total = 0.0;
        for group in set.chunks(16) {
            let noisy: Vec<&[f32]> = group.iter().map(|(n, _)| n.as_slice()).collect();
            let out = tch::no_grad(|| denoise_batch(model, &noisy))?;
            for ((n, c), y) in group.iter().zip(&out) {
                total += si_sdr(y, c) - si_sdr(n, c);
            }
        }
        Ok(Some(total / set.len() as f64))
    }

    fn metric(&self) -> Metric {
        Metric {
            loss_key: "loss",
            loss_scale: 1.0,
            loss_unit: "loss (CE + L1 + MR-STFT)",
            valid_key: "valid_si_sdri_db",
            valid_unit: "dB SI-SDR improvement",
            higher_is_better: true,
        }
    }
}
