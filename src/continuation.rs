//! `wavemamba generate` end to end: check the options, outputs, model, prompt and sizes; decode
//! and resample the prompt, generate, decode, resample, write WAV(s) and a spectrogram, all or
//! nothing. Also the model-directory checks every command that loads a model shares.

use std::path::Path;

use tch::Device;

use crate::audio::output::{OutputKind, Outputs};
use crate::generate::{self, generate_tokens, GenerateOptions};
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
/// `continuation_only`) and the spectrogram, all or nothing. Every option, the output paths
/// (names, directories, writability), the model, the prompt and the sizes (a WAV file's limit,
/// the memory and disk space needed) are checked before generating anything, so a bad argument
/// never costs a generation and no failure leaves an output behind.
///
/// # Errors
/// Invalid options ([`Error::InvalidArgument`] naming the flag), output paths that cannot be
/// written, a missing or invalid model, an unreadable or empty prompt, sizes that do not fit
/// ([`Error::TooLarge`]), kernel errors.
pub fn continue_audio(job: &ContinueJob) -> Result<ContinueReport> {
    use crate::audio::{self, mulaw};
    check_options(job)?;
    let n = job.options.num;
    // The names first (cheap); each output's directory once the sizes are known to fit.
    audio::output::check_output("--out", &output_path(&job.out, 0, n), OutputKind::Wav)?;
    if let Some(png) = &job.spectrogram {
        audio::output::check_output("--spectrogram", png, OutputKind::Image)?;
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
    let opts = GenerateOptions {
        samples: samples_to_generate(job.seconds, rate, out_rate)?,
        ..job.options.clone()
    };
    let sizes = Sizes {
        model_rate: rate,
        out_rate,
        prompt_out: if job.continuation_only {
            0.0
        } else {
            prompt_audio.len() as f64 * f64::from(out_rate) / f64::from(prompt_rate)
        },
    };
    check_sizes(job, &model, &opts, &sizes)?;
    let outputs = stage_outputs(job)?;
    let prompt_tokens = mulaw::encode_slice(&audio::resample(&prompt_audio, prompt_rate, rate)?);
    let generated = generate_tokens(&model, &prompt_tokens, &opts)?;
    let prompt_out = if job.continuation_only {
        Vec::new()
    } else {
        audio::resample(&prompt_audio, prompt_rate, out_rate)?
    };
    let rates = (rate, out_rate);
    let keep_first = job.spectrogram.is_some();
    let first_wave = write_waves(&outputs, &generated.tokens, &prompt_out, rates, keep_first)?;
    let prompt_seconds = prompt_audio.len() as f64 / prompt_rate.max(1) as f64;
    if let Some(png) = &job.spectrogram {
        let marker = (!job.continuation_only && prompt_seconds > 0.0).then_some(prompt_seconds);
        let title = "prompt | continuation";
        let tmp = outputs.tmp(n);
        crate::plot::spectrogram_file(png, tmp, &first_wave, out_rate, marker, title)?;
    }
    let mut written = outputs.commit()?;
    written.truncate(n);
    Ok(ContinueReport {
        outputs: written,
        spectrogram: job.spectrogram.clone(),
        prompt_seconds,
        generated_seconds: job.seconds,
        prefill_s: generated.prefill_s,
        generate_s: generated.generate_s,
        real_time_factor: generated.generate_s / job.seconds,
        path: generated.path,
    })
}

/// The output files of `job` (`--out`, or its `--num` numbered files, then `--spectrogram`),
/// checked and their directories shown writable; nothing is created yet.
///
/// # Errors
/// As [`Outputs::add`].
fn stage_outputs(job: &ContinueJob) -> Result<Outputs> {
    let n = job.options.num;
    let mut outputs = Outputs::new();
    for i in 0..n {
        outputs.add("--out", &output_path(&job.out, i, n), OutputKind::Wav)?;
    }
    if let Some(png) = &job.spectrogram {
        outputs.add("--spectrogram", png, OutputKind::Image)?;
    }
    Ok(outputs)
}

/// Writes each stream's `prompt_out` + decoded continuation (tokens at `rates.0` Hz, written at
/// `rates.1` Hz) into the temporary file of output `i` of `outputs`; returns the first file's
/// samples when `keep_first` (for the spectrogram), else nothing.
///
/// # Errors
/// Resampling and WAV writing errors naming the output.
fn write_waves(
    outputs: &Outputs,
    streams: &[Vec<u8>],
    prompt_out: &[f32],
    (model_rate, out_rate): (u32, u32),
    keep_first: bool,
) -> Result<Vec<f32>> {
    use crate::audio::{self, mulaw, WavFormat};
    let mut first = Vec::new();
    for (i, tokens) in streams.iter().enumerate() {
        let cont = audio::resample(&mulaw::decode_slice(tokens), model_rate, out_rate)?;
        let wave = [prompt_out, &cont].concat();
        let (name, tmp) = (outputs.path(i), outputs.tmp(i));
        audio::write_wav_file(name, tmp, &wave, out_rate, WavFormat::Pcm16)?;
        if i == 0 && keep_first {
            first = wave;
        }
    }
    Ok(first)
}

/// Checks the options that need neither the model nor a file, naming the flag of a bad one.
///
/// # Errors
/// [`Error::InvalidArgument`].
fn check_options(job: &ContinueJob) -> Result<()> {
    let bad = |name, reason: String| Err(Error::InvalidArgument { name, reason });
    let o = &job.options;
    if !(job.seconds > 0.0 && job.seconds.is_finite()) {
        return bad("--seconds", format!("must be > 0, got {}", job.seconds));
    }
    if o.num == 0 {
        return bad("--num", "must be ≥ 1, got 0".into());
    }
    crate::sample::check_sampling(o.temperature, o.top_p)?;
    if let Some(r) = job.rate {
        crate::audio::check_sample_rate("--rate", r)?;
    }
    Ok(())
}

/// Samples to generate at the model's rate for `seconds`, refusing less than one sample at the
/// model's rate or at the output rate.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `--seconds`.
fn samples_to_generate(seconds: f64, model_rate: u32, out_rate: u32) -> Result<usize> {
    let slowest = model_rate.min(out_rate);
    if seconds * f64::from(slowest) < 1.0 {
        return Err(Error::InvalidArgument {
            name: "--seconds",
            reason: format!("{seconds} is less than one sample at {slowest} Hz"),
        });
    }
    // Saturates for absurd values, which check_sizes refuses.
    Ok((seconds * f64::from(model_rate)).round() as usize)
}

/// Rates and lengths of one generation's outputs.
struct Sizes {
    model_rate: u32,
    out_rate: u32,
    /// Samples of the prompt in each output file (0 with `continuation_only`).
    prompt_out: f64,
}

/// Refuses, before any work, a generation whose output files exceed a WAV file's limit, or whose
/// buffers do not fit in the memory available or its files on the output's disk.
///
/// # Errors
/// [`Error::TooLarge`] naming the options and the sizes.
fn check_sizes(
    job: &ContinueJob,
    model: &crate::model::WaveMamba,
    opts: &GenerateOptions,
    sizes: &Sizes,
) -> Result<()> {
    use crate::audio::output::{available_memory, check_fits, free_disk_space, human_bytes};
    let num = opts.num as f64;
    let what = if opts.num > 1 {
        format!("--seconds {} --num {}", job.seconds, opts.num)
    } else {
        format!("--seconds {}", job.seconds)
    };
    let out_rate = f64::from(sizes.out_rate);
    let per_file = sizes.prompt_out + job.seconds * out_rate;
    let max = crate::audio::max_wav_samples(crate::audio::WavFormat::Pcm16) as f64;
    if per_file > max {
        return Err(Error::TooLarge {
            what,
            reason: format!(
                "each output would hold {per_file:.0} samples ({:.1} hours at {} Hz), more than \
                 a 16-bit WAV file can ({max:.0} samples, {:.1} hours)",
                per_file / out_rate / 3600.0,
                sizes.out_rate,
                max / out_rate / 3600.0
            ),
        });
    }
    // Per output file, one at a time: the continuation decoded and resampled, the file's samples
    // (f32), and for the spectrogram its wave kept and its STFT (about 48 bytes per sample).
    let cont_model = job.seconds * f64::from(sizes.model_rate);
    let per_output = 4.0 * (cont_model + 2.0 * per_file + sizes.prompt_out);
    let spectrogram = if job.spectrogram.is_some() {
        52.0 * per_file
    } else {
        0.0
    };
    let streams = generate::estimate_memory(model, opts) as f64;
    let need = streams + per_output + spectrogram;
    let detail = format!(
        "{} for {} streams and their samples, {} per output file{}",
        human_bytes(streams as u64),
        opts.num,
        human_bytes(per_output as u64),
        if spectrogram > 0.0 {
            format!(", {} for the spectrogram", human_bytes(spectrogram as u64))
        } else {
            String::new()
        }
    );
    check_fits(&what, need as u64, available_memory(), "memory", &detail)?;
    let disk = num * (44.0 + 2.0 * per_file) + if spectrogram > 0.0 { 2e6 } else { 0.0 };
    let dir = crate::audio::output::resolve_link(&job.out)?;
    let dir = dir
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    check_fits(
        &what,
        disk as u64,
        free_disk_space(dir),
        &format!("disk space in {}", dir.display()),
        &format!("{} WAV file(s) of {per_file:.0} samples", opts.num),
    )
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
