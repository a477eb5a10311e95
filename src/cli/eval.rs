//! `wavemamba eval`

use std::path::PathBuf;

use anyhow::Context;
use wavemamba::continuation::{bundled_model_dir, default_model_dir};
use wavemamba::data::Split;
use wavemamba::denoise::eval::{eval_denoise, DenoiseEvalOptions};
use wavemamba::device::parse_device;
use wavemamba::eval::eval_lm_select;

/// Evaluate a model: NLL in bits per sample (language model) or SI-SDR per SNR (denoiser).
///
/// --task lm: each file is one sequence of 8-bit mu-law tokens at the model's sample rate; the
/// model reads [128] + tokens[..L-1] and is scored on every token; the mean is over all tokens of
/// all files. Unreadable files are skipped and listed.
///
/// --task denoise: every speech file is mixed with a seeded noise segment at each --snr; the
/// report gives SI-SDR of the mixture and of the output, their difference (SI-SDR improvement),
/// and the same for RNNoise (nnnoiseless, at 48 kHz) on the same mixtures. Use speech and noise
/// files that were not used in training.
///
/// Examples:
///   wavemamba eval --model models/default --data held_out/ --json
///   wavemamba eval --data corpus/manifest.tsv --select kind=speech --split valid
///     (the files that `train --data corpus/manifest.tsv --select kind=speech` held out)
///   wavemamba eval --task denoise --speech held_out/speech --noise held_out/noise --snr 0,5,10
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// lm or denoise
    #[arg(long, value_parser = ["lm", "denoise"], default_value = "lm")]
    task: String,
    /// Model directory (default: the bundled models/default, or models/denoiser for denoise)
    #[arg(long)]
    model: Option<PathBuf>,
    /// lm: an audio file, a directory of audio files (searched recursively) or a manifest
    #[arg(long, required_if_eq("task", "lm"))]
    data: Option<PathBuf>,
    /// lm: only this split of a directory or manifest (train, valid or test): the hash of each
    /// file's path that `train` splits by, so `--split valid` on the training data scores exactly
    /// the files that run held out
    #[arg(long, value_parser = ["train", "valid", "test"])]
    split: Option<String>,
    /// lm, manifest only: score the rows whose COLUMN holds VALUE (repeatable: a row must match
    /// all), e.g. --select kind=speech, as `train --select` trains on them
    #[arg(long, value_name = "COLUMN=VALUE", value_parser = super::select_arg)]
    select: Vec<(String, String)>,
    /// denoise: clean speech (file, directory or manifest)
    #[arg(long, required_if_eq("task", "denoise"))]
    speech: Option<PathBuf>,
    /// denoise: noise recordings (file, directory or manifest)
    #[arg(long, required_if_eq("task", "denoise"))]
    noise: Option<PathBuf>,
    /// denoise: SNRs in dB, each between -60 and 60 [default: 0,5,10]
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    snr: Option<Vec<f32>>,
    /// denoise: seed of the noise segments [default: 1]
    #[arg(long)]
    seed: Option<u64>,
    /// denoise: at most this many speech files
    #[arg(long)]
    max_files: Option<usize>,
    /// denoise: skip the RNNoise baseline
    #[arg(long)]
    no_baseline: bool,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let denoise = a.task == "denoise";
    let dir = a.model.clone().unwrap_or_else(|| {
        if denoise {
            bundled_model_dir("denoiser")
        } else {
            default_model_dir()
        }
    });
    let model = wavemamba::model::checkpoint::load(&dir, parse_device(&a.device)?)
        .with_context(|| format!("loading model {}", dir.display()))?;
    check_task_options(&a)?;
    if denoise {
        return run_denoise(a, &model);
    }
    let data = a
        .data
        .context("--data is required with --task lm (an audio file, directory or manifest)")?;
    let split = a.split.as_deref().and_then(Split::parse);
    let r = eval_lm_select(&model, &data, split, &a.select)
        .with_context(|| format!("evaluating on {}", data.display()))?;
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

/// Options of the other task are an error, not silently ignored.
fn check_task_options(a: &Args) -> anyhow::Result<()> {
    let (other_task, other) = if a.task == "denoise" {
        let lm = [
            ("--data", a.data.is_some()),
            ("--split", a.split.is_some()),
            ("--select", !a.select.is_empty()),
        ];
        ("lm", lm.to_vec())
    } else {
        let dn = [
            ("--speech", a.speech.is_some()),
            ("--noise", a.noise.is_some()),
            ("--snr", a.snr.is_some()),
            ("--seed", a.seed.is_some()),
            ("--max-files", a.max_files.is_some()),
            ("--no-baseline", a.no_baseline),
        ];
        ("denoise", dn.to_vec())
    };
    let given: Vec<&str> = other.iter().filter(|o| o.1).map(|o| o.0).collect();
    anyhow::ensure!(
        given.is_empty(),
        "{}: only with --task {other_task}",
        given.join(", ")
    );
    Ok(())
}

fn run_denoise(a: Args, model: &wavemamba::model::WaveMamba) -> anyhow::Result<()> {
    let opts = DenoiseEvalOptions {
        speech: a.speech.context("--speech is required")?,
        noise: a.noise.context("--noise is required")?,
        snr_db: a.snr.unwrap_or_else(|| vec![0.0, 5.0, 10.0]),
        seed: a.seed.unwrap_or(1),
        max_files: a.max_files,
        baseline: !a.no_baseline,
        progress: !a.json,
    };
    let r = eval_denoise(model, &opts).context("evaluating the denoiser")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    for s in &r.skipped {
        eprintln!("skipped: {s}");
    }
    println!(
        "{} speech files ({:.0} s), {} noise files, seed {}",
        r.speech_files, r.speech_seconds, r.noise_files, r.seed
    );
    println!("SNR dB  noisy SI-SDR  model SI-SDR (impr.)  RNNoise SI-SDR (impr.)");
    for s in &r.per_snr {
        let rn = match (s.rnnoise_si_sdr_db, s.rnnoise_si_sdri_db) {
            (Some(v), Some(i)) => format!("{v:7.2} ({i:+.2})"),
            _ => "n/a".into(),
        };
        println!(
            "{:6.1}  {:12.2}  {:7.2} ({:+.2})      {rn}",
            s.snr_db, s.noisy_si_sdr_db, s.model_si_sdr_db, s.model_si_sdri_db
        );
    }
    println!(
        "mean improvement: model {:+.2} dB{}",
        r.model_si_sdri_db,
        r.advantage_over_rnnoise_db
            .map_or(String::new(), |d| format!(
                ", RNNoise {:+.2} dB, advantage {d:+.2} dB",
                r.rnnoise_si_sdri_db.unwrap_or(f64::NAN)
            ))
    );
    Ok(())
}
