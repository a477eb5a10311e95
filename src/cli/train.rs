//! `wavemamba train`

use std::path::PathBuf;

use anyhow::Context;
use wavemamba::config::Task;
use wavemamba::device::parse_device;
use wavemamba::train::job::{self, TrainJob};
use wavemamba::train::TrainOptions;

/// Train a waveform model on speech: a language model (next-sample prediction over 8-bit mu-law,
/// --task lm) or a causal denoiser (--task denoise --noise NOISE).
///
/// The data is a directory tree or manifest of audio files (WAV, FLAC, OGG; any rate and channel
/// count: decoded, downmixed and resampled once into a cache), or a token pack written earlier
/// with --save-pack. A held-out split (by a hash of each file's path) is used for validation.
///
/// A denoiser is trained on mixtures made on the fly: random speech crops plus random noise crops
/// at a random SNR (−5 to 20 dB) and level; its validation score is the SI-SDR improvement (dB)
/// on a fixed, seeded set of mixtures of the held-out speech and noise files.
///
/// The run directory gets checkpoints (written atomically; --resume continues bit-for-bit on
/// CPU), best/ (the best validation model, a model directory), metrics.jsonl and loss.png.
///
/// Examples:
///   wavemamba train --data corpus/ --config small --out runs/small --steps 2000
///   wavemamba train --task denoise --data speech/ --noise noise/ --out runs/denoiser
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Audio directory, manifest file, or token pack (.wmtok)
    #[arg(long)]
    data: PathBuf,
    /// Model size preset (tiny, small, base, large) or a config.json path
    #[arg(long, default_value = "small")]
    config: String,
    /// What to train: lm (next-sample prediction) or denoise (noisy in, clean out)
    #[arg(long, value_enum, default_value = "lm")]
    task: TaskArg,
    /// Noise recordings for --task denoise: directory, manifest or token pack
    #[arg(long)]
    noise: Option<PathBuf>,
    /// Backbone: plain (a stack of Mamba blocks, the official layout) or unet (SaShiMi-style
    /// multi-scale: inner stages run at 1/4, 1/16 … of the rate, cheaper per sample)
    #[arg(long, value_enum, default_value = "plain")]
    arch: ArchArg,
    /// U-Net pooling factors per stage, e.g. 4,4
    #[arg(long, value_delimiter = ',', default_value = "4,4")]
    pooling: Vec<i64>,
    /// Run directory (checkpoints, best model, metrics, plots)
    #[arg(long)]
    out: PathBuf,
    /// Continue the newest complete checkpoint in --out
    #[arg(long)]
    resume: bool,
    /// Start from the weights of this model directory (fine-tune; e.g. a shipped model or one
    /// exported from PyTorch) with a fresh optimizer and schedule
    #[arg(long, conflicts_with = "resume")]
    init: Option<PathBuf>,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Arithmetic on CUDA: fp32, or bf16 autocast (1.2–1.3× the samples/s, same validation NLL in
    /// our runs: BENCHMARKS.md); the CPU always trains in fp32
    #[arg(long, value_parser = ["bf16", "fp32"], default_value = "fp32")]
    precision: String,
    /// Total optimizer steps (the learning-rate schedule spans them)
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Stop after this many steps in this invocation (continue later with --resume)
    #[arg(long)]
    stop_after: Option<u64>,
    /// Sequences per batch
    #[arg(long, default_value_t = 16)]
    batch: i64,
    /// Samples per sequence
    #[arg(long, default_value_t = 16384)]
    len: i64,
    /// Peak learning rate (AdamW, β 0.9/0.95, weight decay 0.1 on matrices)
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Linear warm-up steps before cosine decay
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// Final learning rate as a fraction of --lr
    #[arg(long, default_value_t = 0.1)]
    min_lr_ratio: f64,
    /// Clip the global gradient norm (0 = off)
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Seed of the initialisation and of the crops
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Model sample rate in Hz (audio is resampled to it)
    #[arg(long, default_value_t = 16_000)]
    sample_rate: u32,
    /// Validate (and plot) every N steps
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    valid_every: u64,
    /// Checkpoint every N steps
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    ckpt_every: u64,
    /// Log to metrics.jsonl every N steps
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    log_every: u64,
    /// CPU threads (default: all cores)
    #[arg(long)]
    threads: Option<i32>,
    /// Also write the decoded corpus as a token pack (to train elsewhere without decoding)
    #[arg(long)]
    save_pack: Option<PathBuf>,
    /// Fail on the first unreadable audio file instead of skipping it (with a warning)
    #[arg(long)]
    strict: bool,
    /// Hide the progress bar
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ArchArg {
    Plain,
    Unet,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TaskArg {
    Lm,
    Denoise,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(t) = a.threads {
        anyhow::ensure!(t >= 1, "--threads must be ≥ 1, got {t}");
        tch::set_num_threads(t);
    }
    anyhow::ensure!(
        a.batch >= 1 && a.len >= 2,
        "--batch must be ≥ 1 and --len ≥ 2"
    );
    anyhow::ensure!(
        a.lr > 0.0 && a.lr.is_finite(),
        "--lr must be a positive number"
    );
    let job = TrainJob {
        data: a.data,
        noise: a.noise,
        config: a.config,
        task: match a.task {
            TaskArg::Lm => Task::Lm,
            TaskArg::Denoise => Task::Denoise,
        },
        architecture: match a.arch {
            ArchArg::Plain => wavemamba::config::Architecture::Plain,
            ArchArg::Unet => wavemamba::config::Architecture::Unet,
        },
        pooling: match a.arch {
            ArchArg::Plain => Vec::new(),
            ArchArg::Unet => a.pooling,
        },
        out: a.out.clone(),
        resume: a.resume,
        init: a.init,
        sample_rate: a.sample_rate,
        save_pack: a.save_pack,
        strict: a.strict,
        options: TrainOptions {
            steps: a.steps,
            batch: a.batch,
            len: a.len,
            lr: a.lr,
            warmup: a.warmup,
            min_lr_ratio: a.min_lr_ratio,
            clip: a.clip,
            seed: a.seed,
            device: parse_device(&a.device)?,
            bf16: a.precision == "bf16",
            log_every: a.log_every,
            valid_every: a.valid_every,
            ckpt_every: a.ckpt_every,
            stop_after: a.stop_after,
            progress: !a.quiet,
        },
    };
    let s = job::run(&job).with_context(|| format!("training into {}", a.out.display()))?;
    println!(
        "trained {} steps in {:.1} s ({:.0} samples/s): last loss {:.3}, best validation {}",
        s.steps,
        s.elapsed_s,
        s.samples_per_s,
        s.final_loss,
        s.best_valid.map_or("n/a".into(), |v| match job.task {
            Task::Lm => format!("{v:.4} bits/sample"),
            Task::Denoise => format!("{v:.2} dB SI-SDR improvement"),
        })
    );
    println!("best model: {}", a.out.join("best").display());
    Ok(())
}
