//! `wavemamba generate` end to end: decode and resample the prompt, generate, decode, resample,
//! write WAV(s) and a spectrogram.

use tch::Device;

use crate::generate::{generate_tokens, GenerateOptions};
use crate::{Error, Result};

/// Everything `wavemamba generate` needs.
#[derive(Debug, Clone)]
pub struct ContinueJob {
    pub model: std::path::PathBuf,
    /// None: unconditional generation.
    pub prompt: Option<std::path::PathBuf>,
    pub seconds: f64,
    pub out: std::path::PathBuf,
    /// Output sample rate (default: the prompt's, or the model's without a prompt).
    pub rate: Option<u32>,
    pub continuation_only: bool,
    pub spectrogram: Option<std::path::PathBuf>,
    pub device: Device,
    pub options: GenerateOptions,
}

/// What was written.
#[derive(Debug, serde::Serialize)]
pub struct ContinueReport {
    pub outputs: Vec<std::path::PathBuf>,
    pub spectrogram: Option<std::path::PathBuf>,
    pub prompt_seconds: f64,
    pub generated_seconds: f64,
    pub prefill_s: f64,
    pub generate_s: f64,
    pub real_time_factor: f64,
    pub path: &'static str,
}

/// Output file of stream `i` of `n`: `out.wav` for one stream, `out-1.wav`, `out-2.wav`, … otherwise.
pub fn output_path(out: &std::path::Path, i: usize, n: usize) -> std::path::PathBuf {
    if n == 1 {
        return out.to_owned();
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let ext = out
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "wav".into());
    out.with_file_name(format!("{stem}-{}.{ext}", i + 1))
}

/// Decodes the prompt, continues it, and writes the WAV file(s) (prompt + continuation unless
/// `continuation_only`), atomically. Checks the model, the prompt and the output directory before
/// generating anything, so a bad argument never leaves a partial file.
///
/// # Errors
/// Missing/invalid model, unreadable prompt, unwritable output, kernel errors.
pub fn continue_audio(job: &ContinueJob) -> Result<ContinueReport> {
    use crate::audio::{self, WavFormat};
    if !(job.seconds > 0.0 && job.seconds.is_finite()) {
        return Err(Error::InvalidArgument {
            name: "seconds",
            reason: format!("must be > 0, got {}", job.seconds),
        });
    }
    audio::check_output_dir(&job.out)?;
    if let Some(png) = &job.spectrogram {
        audio::check_output_dir(png)?;
    }
    let model = crate::model::checkpoint::load(&job.model, job.device)?;
    model.check_task(crate::config::Task::Lm)?;
    let rate = model.audio.sample_rate;
    let (prompt_audio, prompt_rate) = match &job.prompt {
        Some(p) => {
            let a = audio::read_audio(p)?;
            (a.samples, a.sample_rate)
        }
        None => (Vec::new(), rate),
    };
    let out_rate = job.rate.unwrap_or(prompt_rate);
    let prompt_tokens =
        audio::mulaw::encode_slice(&audio::resample(&prompt_audio, prompt_rate, rate)?);
    let opts = GenerateOptions {
        samples: (job.seconds * rate as f64).round() as usize,
        ..job.options.clone()
    };
    let generated = generate_tokens(&model, &prompt_tokens, &opts)?;
    let mut outputs = Vec::new();
    let mut first_wave = Vec::new();
    for (i, tokens) in generated.tokens.iter().enumerate() {
        let cont = audio::resample(&audio::mulaw::decode_slice(tokens), rate, out_rate)?;
        let wave = if job.continuation_only {
            cont
        } else {
            let mut w = audio::resample(&prompt_audio, prompt_rate, out_rate)?;
            w.extend_from_slice(&cont);
            w
        };
        let path = output_path(&job.out, i, generated.tokens.len());
        audio::write_wav(&path, &wave, out_rate, WavFormat::Pcm16)?;
        if i == 0 {
            first_wave = wave;
        }
        outputs.push(path);
    }
    let prompt_seconds = prompt_audio.len() as f64 / prompt_rate.max(1) as f64;
    if let Some(png) = &job.spectrogram {
        let marker = (!job.continuation_only && prompt_seconds > 0.0).then_some(prompt_seconds);
        crate::plot::spectrogram(png, &first_wave, out_rate, marker, "prompt | continuation")?;
    }
    Ok(ContinueReport {
        outputs,
        spectrogram: job.spectrogram.clone(),
        prompt_seconds,
        generated_seconds: job.seconds,
        prefill_s: generated.prefill_s,
        generate_s: generated.generate_s,
        real_time_factor: generated.generate_s / job.seconds,
        path: generated.path,
    })
}

/// The bundled default model: `$WAVEMAMBA_MODEL`, else [`bundled_model_dir`]`("default")`.
pub fn default_model_dir() -> std::path::PathBuf {
    match std::env::var_os("WAVEMAMBA_MODEL") {
        Some(p) => p.into(),
        None => bundled_model_dir("default"),
    }
}

/// A bundled model `models/NAME`: next to the binary's checkout, else in this crate's source
/// tree, else under the current directory.
pub fn bundled_model_dir(name: &str) -> std::path::PathBuf {
    let candidates = [
        std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.parent()?.join("models").join(name))),
        Some(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models")
                .join(name),
        ),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_dir())
        .unwrap_or_else(|| std::path::Path::new("models").join(name))
}
