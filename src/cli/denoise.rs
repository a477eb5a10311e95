//! `wavemamba denoise`

use std::path::PathBuf;

use anyhow::Context;
use wavemamba::continuation::bundled_model_dir;
use wavemamba::denoise::denoise_file;
use wavemamba::device::parse_device;
use wavemamba::model::checkpoint;
use wavemamba::rtf::real_time_text;

/// Remove noise from a recording with a causal Mamba denoiser.
///
/// The input is any WAV, FLAC or OGG file (any rate, any channels: channels are averaged); it is
/// resampled to the model's rate, denoised sample by sample (causally, as in `wavemamba live`: on
/// the CPU by the same step engine, on a GPU by the parallel scan, with the same result), resampled
/// back, and written as a 16-bit mono WAV at the input's rate. Paths are checked before any work; the output (and the spectrogram) appear
/// complete at the end, or not at all. A symbolic link is written through.
///
/// Example: wavemamba denoise noisy.wav clean.wav
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Input recording
    input: PathBuf,
    /// Output WAV file (.wav; its directory must exist)
    output: PathBuf,
    /// Denoiser model directory (default: the bundled models/denoiser)
    #[arg(long)]
    model: Option<PathBuf>,
    /// Also write a spectrogram (.png, .jpg or .bmp): the input, then the output (a white line
    /// between them)
    #[arg(long)]
    spectrogram: Option<PathBuf>,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print a JSON report instead of a sentence
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let dir = a.model.unwrap_or_else(|| bundled_model_dir("denoiser"));
    // The library's errors name the file they are about: no path is added here.
    let model = checkpoint::load(&dir, parse_device(&a.device)?).context("denoise failed")?;
    let r = denoise_file(
        &model,
        &a.input,
        &a.output,
        a.spectrogram.as_deref(),
        !a.json,
    )
    .context("denoise failed")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "wrote {} ({:.1} s at {} Hz; model at {} Hz, {})",
            r.output.display(),
            r.seconds,
            r.sample_rate,
            r.model_rate,
            real_time_text(r.real_time_factor)
        );
        if let Some(p) = &r.spectrogram {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}
