//! `wavemamba eval`

use std::path::PathBuf;

use anyhow::Context;
use wavemamba::continuation::default_model_dir;
use wavemamba::device::parse_device;
use wavemamba::eval::eval_lm;

/// Evaluate a model: mean negative log-likelihood in bits per sample over audio files.
///
/// Protocol: each file is one sequence of 8-bit mu-law tokens at the model's sample rate; the
/// model reads [128] + tokens[..L-1] and is scored on every token; the mean is over all tokens of
/// all files. Unreadable files are skipped and listed.
///
/// Example: wavemamba eval --model models/default --data held_out/ --json
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory (default: the bundled model)
    #[arg(long)]
    model: Option<PathBuf>,
    /// An audio file, a directory of audio files (searched recursively) or a manifest
    #[arg(long)]
    data: PathBuf,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print one JSON object (nll_bits_per_sample, samples, files, per-file results)
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let dir = a.model.unwrap_or_else(default_model_dir);
    let model = wavemamba::model::checkpoint::load(&dir, parse_device(&a.device)?)
        .with_context(|| format!("loading model {}", dir.display()))?;
    let r =
        eval_lm(&model, &a.data).with_context(|| format!("evaluating on {}", a.data.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for s in &r.skipped {
            eprintln!("skipped: {s}");
        }
        println!(
            "{:.4} bits/sample over {} files, {} samples ({:.1} s at {} Hz)",
            r.nll_bits_per_sample,
            r.files,
            r.samples,
            r.samples as f64 / model.audio.sample_rate as f64,
            model.audio.sample_rate
        );
    }
    Ok(())
}
