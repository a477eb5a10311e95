//! The causal waveform denoiser (task `denoise`): noisy samples in, clean samples out, one output
//! per input, strictly causal, with the same blocks, state machinery and step engine as the
//! waveform language model.
//!
//! # Representation (why)
//! The denoiser *is* a `MambaLMHeadModel` with 256 mu-law classes; only the meaning of the
//! sequences changes:
//! - **in**: the 8-bit mu-law token of the noisy sample at time t (no shift, no start token).
//!   Mu-law spends its 256 levels logarithmically, so a quiet voice under loud noise keeps about
//!   the same relative precision as a loud one (8-bit mu-law is ~38 dB SNR at any level, well
//!   above the mixtures' −5…20 dB), and the embedding lookup costs nothing per sample.
//! - **out**: logits over the mu-law class of the *clean* sample at time t. The estimate is the
//!   posterior mean `ŷ = Σ_k softmax(logits)_k · decode(k)` ([`expected_value`]): trained with
//!   cross-entropy the distribution is calibrated, so its mean is an MMSE estimate in the linear
//!   domain (what SI-SDR rewards), smooth rather than stuck on the 256 levels; the waveform
//!   losses of [`loss`] then train that mean directly.
//!
//! Consequences: checkpoints keep the official key names and shapes (the PyTorch `mamba_ssm` model
//! loads them and computes the same logits), and the fused CPU engine runs the denoiser unchanged
//! ([`crate::stream::DenoiseEngine`] adds the posterior mean).

pub mod eval;
pub mod loss;
pub mod mix;
pub mod rnnoise;
pub mod sisdr;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use indicatif::{ProgressBar, ProgressStyle};
use tch::{Kind, Tensor};

use crate::audio::{self, mulaw, WavFormat};
use crate::config::Task;
use crate::model::WaveMamba;
use crate::{Error, Result};

/// Samples per forward call of [`denoise_samples_scan`] (bounds memory; results do not depend on it).
pub const CHUNK: usize = 65_536;

/// The sample value of every mu-law class, `decode(k)` for k in 0..256.
pub fn class_values() -> &'static [f32; 256] {
    static VALUES: OnceLock<[f32; 256]> = OnceLock::new();
    VALUES.get_or_init(|| std::array::from_fn(|k| mulaw::decode(k as u8)))
}

/// The posterior-mean sample of each position.
///
/// # Shapes
/// `logits`: (…, 256) → (…), float32 on the logits' device.
pub fn expected_value(logits: &Tensor) -> Tensor {
    let values = Tensor::from_slice(class_values()).to_device(logits.device());
    logits
        .to_kind(Kind::Float)
        .softmax(-1, Kind::Float)
        .matmul(&values)
}

/// Mean |sample| of each row of mu-law tokens.
///
/// # Shapes
/// (B, L) int64 → (B, 1) f32.
pub(crate) fn mulaw_decode_mean_abs(tokens: &Tensor) -> Tensor {
    let values = Tensor::from_slice(class_values()).to_device(tokens.device());
    values
        .index_select(0, &tokens.reshape([-1]))
        .view(tokens.size().as_slice())
        .abs()
        .mean_dim(1, true, Kind::Float)
}

/// The posterior mean from one row of logits, as [`expected_value`] computes it (max-subtracted
/// softmax in f32).
pub fn expected_value_row(logits: &[f32]) -> f32 {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (mut num, mut den) = (0.0f32, 0.0f32);
    for (&l, &v) in logits.iter().zip(class_values()) {
        let e = (l - m).exp();
        num += e * v;
        den += e;
    }
    num / den
}

/// Denoises mono samples at the model's rate: on the CPU with the fused step engine (one core,
/// faster there than the parallel scan), elsewhere with [`denoise_samples_scan`]. Both compute
/// the same thing (equal to f32 rounding, `tests/denoise.rs`).
///
/// # Shapes
/// `x`: (L) in [-1, 1] → (L).
///
/// # Errors
/// [`Error::Config`] if `model` is not a denoiser; kernel errors.
pub fn denoise_samples(model: &WaveMamba, x: &[f32]) -> Result<Vec<f32>> {
    denoise_samples_with(model, x, &ProgressBar::hidden())
}

/// [`denoise_samples`] advancing `bar` by the samples done.
///
/// # Errors
/// As [`denoise_samples`].
pub fn denoise_samples_with(model: &WaveMamba, x: &[f32], bar: &ProgressBar) -> Result<Vec<f32>> {
    model.check_task(Task::Denoise)?;
    if model.device() != tch::Device::Cpu {
        return denoise_samples_scan(model, x, bar);
    }
    let mut engine = crate::stream::DenoiseEngine::new(model)?;
    let mut out = Vec::with_capacity(x.len());
    for block in x.chunks(4096) {
        out.extend(block.iter().map(|&v| engine.process(v)));
        bar.inc(block.len() as u64);
    }
    Ok(out)
}

/// Denoises with the parallel scan, in chunks of [`CHUNK`] with the recurrent state carried across
/// (the same computation as one pass, and as the step engine); the fast path on a GPU.
///
/// # Shapes
/// `x`: (L) in [-1, 1] → (L).
///
/// # Errors
/// [`Error::Config`] if `model` is not a denoiser; kernel errors.
pub fn denoise_samples_scan(model: &WaveMamba, x: &[f32], bar: &ProgressBar) -> Result<Vec<f32>> {
    model.check_task(Task::Denoise)?;
    let mut out = Vec::with_capacity(x.len());
    tch::no_grad(|| -> Result<()> {
        let mut state = model.zero_state(1);
        for chunk in x.chunks(CHUNK) {
            let mut tokens = vec![0i64; chunk.len()];
            mulaw::encode_into(chunk, &mut tokens);
            let tokens = Tensor::from_slice(&tokens)
                .view([1, -1])
                .to_device(model.device());
            let logits = model.prefill(&tokens, &mut state)?; // (1, l, 256)
            let y = expected_value(&logits)
                .reshape([-1])
                .to_device(tch::Device::Cpu);
            out.extend(Vec::<f32>::try_from(&y)?);
            bar.inc(chunk.len() as u64);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Denoises equal-length sequences in one forward pass (validation, evaluation).
///
/// # Shapes
/// `x`: B slices of L samples → B vectors of L samples.
///
/// # Errors
/// [`Error::InvalidArgument`] for unequal lengths; kernel errors.
pub fn denoise_batch(model: &WaveMamba, x: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
    let l = x.first().map_or(0, |s| s.len());
    if x.iter().any(|s| s.len() != l) || l == 0 {
        return Err(Error::InvalidArgument {
            name: "x",
            reason: "denoise_batch needs non-empty sequences of equal length".into(),
        });
    }
    let mut tokens = vec![0i64; x.len() * l];
    for (row, s) in tokens.chunks_mut(l).zip(x) {
        mulaw::encode_into(s, row);
    }
    let tokens = Tensor::from_slice(&tokens)
        .view([x.len() as i64, l as i64])
        .to_device(model.device());
    let y = tch::no_grad(|| -> Result<Tensor> {
        Ok(expected_value(&model.forward(&tokens)?).to_device(tch::Device::Cpu))
    })?; // (B, L)
    let flat = Vec::<f32>::try_from(&y.reshape([-1]))?;
    Ok(flat.chunks(l).map(<[f32]>::to_vec).collect())
}

/// What [`denoise_file`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DenoiseReport {
    pub input: PathBuf,
    pub output: PathBuf,
    /// The spectrogram image written, if one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spectrogram: Option<PathBuf>,
    pub seconds: f64,
    pub sample_rate: u32,
    pub model_rate: u32,
    /// Wall time of the model (excluding decoding and resampling) over the audio's duration.
    pub real_time_factor: f64,
}

/// `wavemamba denoise`: decodes `input` (any supported format, rate and channel count; channels
/// are averaged), resamples to the model's rate, denoises, resamples back to the input's rate and
/// writes a 16-bit mono WAV; with `spectrogram`, also an image (PNG, JPEG or BMP by its
/// extension) of the input followed by the output; with `progress`, a progress bar on stderr for
/// long inputs. The outputs are checked (names, directories, writability) before any work and
/// appear together at the end, or not at all; symbolic links are written through.
///
/// # Errors
/// Unreadable or empty input, a model that is not a denoiser, output paths that cannot be
/// written, kernel errors.
pub fn denoise_file(
    model: &WaveMamba,
    input: &Path,
    output: &Path,
    spectrogram: Option<&Path>,
    progress: bool,
) -> Result<DenoiseReport> {
    use crate::audio::output::{OutputKind, Outputs};
    model.check_task(Task::Denoise)?;
    let mut outputs = Outputs::new();
    let wav = outputs.add("OUTPUT", output, OutputKind::Wav)?;
    let png = match spectrogram {
        Some(p) => Some(outputs.add("--spectrogram", p, OutputKind::Image)?),
        None => None,
    };
    let a = audio::read_audio(input)?;
    let rate = model.audio.sample_rate;
    let x = audio::resample(&a.samples, a.sample_rate, rate)?;
    let bar = progress_bar(progress, x.len(), input);
    let started = std::time::Instant::now();
    let y = denoise_samples_with(model, &x, &bar)?;
    bar.finish_and_clear();
    let model_s = started.elapsed().as_secs_f64();
    let mut y = audio::resample(&y, rate, a.sample_rate)?;
    // Round trips through another rate can come back a sample short or long.
    y.resize(a.samples.len(), 0.0);
    let tmp = outputs.tmp(wav);
    audio::write_wav_file(output, tmp, &y, a.sample_rate, WavFormat::Pcm16)?;
    let seconds = a.duration_s();
    if let (Some(i), Some(name)) = (png, spectrogram) {
        let both = [a.samples.as_slice(), y.as_slice()].concat();
        let (tmp, title) = (outputs.tmp(i), "noisy | denoised");
        crate::plot::spectrogram_file(name, tmp, &both, a.sample_rate, Some(seconds), title)?;
    }
    outputs.commit()?;
    Ok(DenoiseReport {
        input: input.to_owned(),
        output: output.to_owned(),
        spectrogram: spectrogram.map(Path::to_path_buf),
        seconds,
        sample_rate: a.sample_rate,
        model_rate: rate,
        real_time_factor: model_s / seconds.max(1e-9),
    })
}

/// A bar for anything longer than a few chunks (seconds of work on a CPU), else a hidden one.
fn progress_bar(progress: bool, samples: usize, input: &Path) -> ProgressBar {
    if !(progress && samples > 4 * CHUNK) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(samples as u64);
    bar.set_style(
        ProgressStyle::with_template("{wide_bar} {percent:>3}%  {msg}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // The file name only: a long path would wrap the line.
    let name = input.file_name().map_or_else(
        || input.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    bar.set_message(format!("denoising {name}"));
    bar
}
