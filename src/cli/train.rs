//! `wavemamba train`

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, FromArgMatches};
use wavemamba::config::Task;
use wavemamba::device::parse_device;
use wavemamba::train::job::{self, TrainJob};
use wavemamba::train::settings::GivenFlags;
use wavemamba::train::{interrupt, TrainOptions, TrainSummary};
use wavemamba::Error;

/// The `train` flags and which of them were given on the command line (`--resume` takes the
/// others from the run).
#[derive(Debug)]
pub struct Args {
    flags: Flags,
    given: BTreeSet<String>,
}

impl FromArgMatches for Args {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Args {
            flags: Flags::from_arg_matches(m)?,
            given: given_flags(m),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.flags.update_from_arg_matches(m)?;
        self.given.extend(given_flags(m));
        Ok(())
    }
}

impl clap::Args for Args {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Flags::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Flags::augment_args_for_update(cmd)
    }
}

/// The flags (as `--long-name`) whose value came from the command line, not a default.
fn given_flags(m: &ArgMatches) -> BTreeSet<String> {
    m.ids()
        .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| format!("--{}", id.as_str().replace('_', "-")))
        .collect()
}

/// Train a waveform model on speech: a language model (next-sample prediction over 8-bit mu-law,
/// --task lm) or a causal denoiser (--task denoise --noise NOISE).
///
/// The data is a directory tree or manifest of audio files (WAV, FLAC, OGG; any rate and channel
/// count: decoded, downmixed and resampled once into a cache), or a token pack written earlier
/// with --save-pack. A held-out split (by a hash of each file's path) is used for validation.
/// --select keeps a manifest's rows by a column: the corpus manifest of scripts/build-corpus.py
/// holds speech and noise, told apart by its kind column.
///
/// A denoiser is trained on mixtures made on the fly: random speech crops plus random noise crops
/// at a random SNR (−5 to 20 dB) and level; its validation score is the SI-SDR improvement (dB)
/// on a fixed, seeded set of mixtures of the held-out speech and noise files.
///
/// The run directory gets checkpoints (written atomically; --resume continues bit-for-bit on
/// CPU with the run's saved settings), best/ (the best validation model, a model directory),
/// metrics.jsonl and loss.png. A small dataset whose hashes leave no file for validation gets one
/// held out (from 10 files on). A language model whose data still has no validation files (fewer
/// files, or a manifest whose split column names none) has no score to choose by: its best/ is
/// then the model of the latest checkpoint, and the run says so.
///
/// Ctrl-C (SIGINT) or SIGTERM finishes the current step, writes a checkpoint, prints how to
/// resume and exits with status 130 (SIGINT) or 143 (SIGTERM); a second one stops at once,
/// keeping the last complete checkpoint. A run that fails or is stopped before its first
/// checkpoint removes what it created under --out.
///
/// Examples:
///   wavemamba train --data corpus/ --config small --out runs/small --steps 2000
///   wavemamba train --data corpus/ --out runs/small --resume --steps 4000
///   wavemamba train --data corpus/manifest.tsv --select kind=speech --out runs/speech
///   wavemamba train --task denoise --data speech/ --noise noise/ --out runs/denoiser
///   wavemamba train --task denoise --data corpus/manifest.tsv --select kind=speech \
///     --noise corpus/manifest.tsv --noise-select kind=noise --out runs/denoiser
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
struct Flags {
    /// Audio directory, manifest file, or token pack (.wmtok)
    #[arg(long)]
    data: PathBuf,
    /// Manifest only: train on the rows of --data whose COLUMN holds VALUE (repeatable: a row
    /// must match all), e.g. --select kind=speech. Applies to --data only; the noise of a
    /// denoiser has --noise-select
    #[arg(long, value_name = "COLUMN=VALUE", value_parser = super::select_arg)]
    select: Vec<(String, String)>,
    /// Model size preset (tiny, small, base, large) or a config.json path (fine-tuning from a
    /// model directory trains that model's own config)
    #[arg(long, default_value = "small")]
    config: String,
    /// What to train: lm (next-sample prediction) or denoise (noisy in, clean out)
    #[arg(long, value_enum, default_value = "lm")]
    task: TaskArg,
    /// Noise recordings for --task denoise: directory, manifest or token pack
    #[arg(long)]
    noise: Option<PathBuf>,
    /// Manifest only: mix in the rows of --noise whose COLUMN holds VALUE (repeatable), e.g.
    /// --noise-select kind=noise
    #[arg(long, value_name = "COLUMN=VALUE", value_parser = super::select_arg)]
    noise_select: Vec<(String, String)>,
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
    /// Continue the newest complete checkpoint in --out with the run's saved settings: flags
    /// left out take the saved values, and a flag that contradicts them is refused. These may
    /// change: --steps (moves the end of the schedule, e.g. to extend a run), --stop-after,
    /// --ckpt-every, --valid-every, --log-every, --device, --threads, --quiet, --strict,
    /// --save-pack, and --data / --noise with their --select / --noise-select when they give the
    /// same audio (e.g. moved, or packed; other audio is refused, so a run trained with --select
    /// resumes with the same --select)
    #[arg(long)]
    resume: bool,
    /// Start from the weights of this model directory (fine-tune; e.g. a shipped model or one
    /// exported from PyTorch) with a fresh optimizer and schedule. The model keeps its own
    /// config, architecture, task and sample rate: leave --config, --arch and --pooling out
    /// (given, they must describe that model)
    #[arg(long, conflicts_with = "resume")]
    init: Option<PathBuf>,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Arithmetic on CUDA: fp32, or bf16 autocast (1.2–1.3× the samples/s, same validation NLL in
    /// our runs: BENCHMARKS.md); the CPU always trains in fp32
    #[arg(long, value_parser = ["bf16", "fp32"], default_value = "fp32")]
    precision: String,
    /// Total optimizer steps (the learning-rate schedule spans them; 0 only prepares the data,
    /// e.g. for --save-pack)
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Stop after this many steps in this invocation (continue later with --resume)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
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
    /// Also write the decoded corpus (the --select rows) as a token pack (to train elsewhere
    /// without decoding): a .wmtok file whose directory exists, checked before the decoding
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

/// Runs `wavemamba train`; a run stopped by a signal exits with 128 + its number.
pub fn run(args: Args) -> anyhow::Result<()> {
    let Args { flags: a, given } = args;
    if let Some(t) = a.threads {
        anyhow::ensure!(t >= 1, "--threads must be ≥ 1, got {t}");
        tch::set_num_threads(t);
    }
    interrupt::install().context("cannot install the Ctrl-C handler")?;
    let job = TrainJob {
        data: a.data,
        select: a.select,
        noise: a.noise,
        noise_select: a.noise_select,
        config: a.config,
        task: match a.task {
            TaskArg::Lm => Task::Lm,
            TaskArg::Denoise => Task::Denoise,
        },
        architecture: match a.arch {
            ArchArg::Plain => wavemamba::config::Architecture::Plain,
            ArchArg::Unet => wavemamba::config::Architecture::Unet,
        },
        pooling: a.pooling,
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
        given: GivenFlags(given),
    };
    let s = job::run(&job).map_err(|e| match e {
        // It names its flag: "training into --out" would blame the wrong one.
        Error::InvalidArgument { .. } => anyhow::Error::new(e),
        e if job.options.steps == 0 && !job.resume => {
            anyhow::Error::new(e).context("preparing the data")
        }
        e => anyhow::Error::new(e).context(format!("training into {}", a.out.display())),
    })?;
    report(&job, &s);
    if s.interrupted {
        let _ = std::io::stdout().flush();
        std::process::exit(interrupt::exit_code());
    }
    Ok(())
}

/// Prints what the run did: steps, losses, the best model (only if it exists), how to resume.
fn report(job: &TrainJob, s: &TrainSummary) {
    if s.steps_run == 0 {
        if s.interrupted {
            eprintln!("interrupted before the first step: nothing was saved");
        } else {
            let pack = job
                .save_pack
                .as_ref()
                .map_or(String::new(), |p| format!(" (token pack {})", p.display()));
            println!("no training steps (--steps 0): only the data was prepared{pack}");
        }
        return;
    }
    println!(
        "trained {} step{} in {:.1} s ({:.0} samples/s): last loss {:.3}, best validation {}",
        s.steps,
        if s.steps == 1 { "" } else { "s" },
        s.elapsed_s,
        s.samples_per_s,
        s.final_loss,
        match (s.best_valid, s.validated) {
            (_, false) => "n/a (no validation data)".into(),
            (None, true) => "n/a".into(),
            (Some(v), true) => match job.task {
                Task::Lm => format!("{v:.4} bits/sample"),
                Task::Denoise => format!("{v:.2} dB SI-SDR improvement"),
            },
        }
    );
    match (&s.best_model, s.validated) {
        (Some(best), true) => println!("best model: {}", best.display()),
        (Some(best), false) => println!(
            "best model: {} (no validation data: the model of the latest checkpoint, step {})",
            best.display(),
            s.steps
        ),
        (None, _) => println!("no best model yet: nothing has been validated"),
    }
    if let (true, Some(checkpoint)) = (s.interrupted, &s.checkpoint) {
        let select: String = job
            .select
            .iter()
            .map(|(c, v)| format!(" --select {}", shell_word(&format!("{c}={v}"))))
            .collect();
        eprintln!(
            "interrupted after step {}: checkpoint {} written; continue with:\n  wavemamba train --resume --data {}{select} --out {}",
            s.steps,
            checkpoint.display(),
            shell_word(&job.data.display().to_string()),
            shell_word(&job.out.display().to_string())
        );
    }
}

/// `text` (a path, or COLUMN=VALUE) as one shell word (single-quoted when it holds anything but
/// plain path characters).
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:=@%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}
