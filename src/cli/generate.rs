//! `wavemamba generate`

use std::path::PathBuf;

use anyhow::Context;
use wavemamba::continuation::{continue_audio, default_model_dir, ContinueJob};
use wavemamba::device::parse_device;
use wavemamba::generate::GenerateOptions;
use wavemamba::rtf::real_time_text;

/// Continue a recording: the prompt is decoded, resampled to the model's rate, read by the model
/// in one parallel pass (prefill), then the continuation is sampled one sample at a time.
///
/// Output: the prompt followed by the continuation (or only the continuation), at the prompt's
/// sample rate unless --rate; with --num N, files OUT-1.wav … OUT-N.wav. Every option, path and
/// size is checked before generating; the output files appear together at the end, or none.
///
/// Example: wavemamba generate --prompt speech.wav --seconds 4 --out continued.wav --spectrogram spec.png
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Model directory (default: the bundled model, models/default)
    #[arg(long)]
    model: Option<PathBuf>,
    /// Prompt audio (WAV, FLAC, OGG; any rate/channels). Without it: unconditional generation
    #[arg(long)]
    prompt: Option<PathBuf>,
    /// Seconds to generate after the prompt
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Output WAV file (.wav; its directory must exist). A symbolic link is written through
    #[arg(long)]
    out: PathBuf,
    /// Continuations to generate (one batch)
    #[arg(long, default_value_t = 1)]
    num: usize,
    // --temperature, --top-p, --seed (live: used in continue mode)
    #[command(flatten)]
    sampling: super::sampling::SamplingArgs,
    /// cpu, cuda or cuda:N. On a GPU the prompt is prefilled there and, for up to 256
    /// continuations per CPU thread, sampled on the CPU step engine (faster than a GPU step per
    /// sample)
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CPU threads sampling the continuations, each its share of --num (default: one per core;
    /// the output does not depend on it)
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    threads: usize,
    /// Output sample rate in Hz (default: the prompt's)
    #[arg(long)]
    rate: Option<u32>,
    /// Write only the continuation, not the prompt
    #[arg(long)]
    continuation_only: bool,
    /// Also write a spectrogram of the (first) output: .png, .jpg or .bmp
    #[arg(long)]
    spectrogram: Option<PathBuf>,
    /// Hide the progress bar
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let job = ContinueJob {
        model: a.model.unwrap_or_else(default_model_dir),
        prompt: a.prompt,
        seconds: a.seconds,
        out: a.out,
        rate: a.rate,
        continuation_only: a.continuation_only,
        spectrogram: a.spectrogram,
        device: parse_device(&a.device)?,
        options: GenerateOptions {
            samples: 0,
            num: a.num,
            temperature: a.sampling.temperature,
            top_p: a.sampling.top_p,
            seed: a.sampling.seed,
            progress: !a.quiet,
            threads: a.threads,
        },
    };
    let r = continue_audio(&job).context("generation failed")?;
    for p in &r.outputs {
        println!("wrote {}", p.display());
    }
    if let Some(p) = &r.spectrogram {
        println!("wrote {}", p.display());
    }
    println!(
        "prompt {:.2} s, generated {:.2} s: prefill {:.2} s, sampling {:.2} s, {}; {} step",
        r.prompt_seconds,
        r.generated_seconds,
        r.prefill_s,
        r.generate_s,
        real_time_text(r.real_time_factor),
        r.path
    );
    Ok(())
}
