//! `wavemamba bench …`

use anyhow::Context;
use wavemamba::bench::loader::{self, LoaderBench};
use wavemamba::bench::scan::{self, ScanBench};
use wavemamba::data::{ShortFiles, Split};
use wavemamba::device::parse_device;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Selective scan kernel: forward / forward+backward medians, state-updates/s, memory, and the
    /// speed ratio against the pure-tch reference; on CUDA also the mean of calls queued back to
    /// back (no idle GPU between calls, as in training).
    ///
    /// Example: wavemamba bench scan --batch 4 --dim 128 --len 16384 --state 16 --threads 2 --backward
    Scan(ScanArgs),
    /// Training throughput (samples/s) of a model size on a device, on synthetic audio, with the
    /// language model's loss or (--task denoise) the denoiser's.
    ///
    /// Example: wavemamba bench train --config small --batch 16 --len 16384 --device cpu
    /// (the bundled denoiser's: --config scripts/configs/denoiser.json --task denoise)
    Train(TrainArgs),
    /// Dataset loader: seconds of audio delivered per second (× real time) as (B, L) mu-law
    /// token batches from the decoded-audio cache; also prints the dataset's files, hours and
    /// skipped files (the first run decodes every file into the cache).
    ///
    /// Example: wavemamba bench loader --data /work/corpus/manifest.tsv --batch 16 --len 16384 --workers 1
    Loader(LoaderArgs),
    /// Streaming step: µs per sample and real-time factor of the fused CPU step engine and of
    /// the tch step (one thread by default), and their ratio.
    ///
    /// Example: wavemamba bench step --preset small --streams 1 --seconds 2
    /// (a U-Net: --preset small --pooling 4,4; or --model DIR of either architecture)
    Step(StepArgs),
    /// Prefill vs generation on the CPU: seconds to prefill an N-second prompt (parallel scan,
    /// as `generate` does) against seconds to generate N seconds with the step engine, and
    /// their ratio (batch 1).
    ///
    /// Example: wavemamba bench prefill --model models/default --seconds 4 --threads 1
    Prefill(PrefillArgs),
}

#[derive(Debug, clap::Args)]
struct PrefillArgs {
    /// Model directory (default: random weights of --preset)
    #[arg(long, conflicts_with = "preset")]
    model: Option<std::path::PathBuf>,
    /// Size preset with random weights when there is no model directory (default small)
    #[arg(long)]
    preset: Option<String>,
    /// With --preset: a U-Net with these pooling factors, e.g. 4,4
    #[arg(long, value_delimiter = ',', conflicts_with = "model")]
    pooling: Vec<i64>,
    /// Seconds of prompt, and seconds generated
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// libtorch threads for the prefill (the engine runs on one thread)
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// Timed repetitions (medians reported)
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Seed of the random weights, the prompt and the sampling
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// After timing, profile one more prefill and write a Chrome trace (CPU operators;
    /// summarise with scripts/trace-summary.py or open in Perfetto)
    #[arg(long, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct StepArgs {
    /// Model directory (default: random weights of --preset)
    #[arg(long, conflicts_with = "preset")]
    model: Option<std::path::PathBuf>,
    /// Size preset with random weights when there is no model directory: tiny, small, base,
    /// large (default small)
    #[arg(long)]
    preset: Option<String>,
    /// Streams advanced together by each step
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// libtorch threads for the tch step (the engine runs on one thread)
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// Wall-clock seconds of timing per path
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Engine kernels: scalar, avx2 or avx512 (default: the best this CPU runs)
    #[arg(long)]
    isa: Option<String>,
    /// Seed of the random weights and input samples
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// With --preset: a U-Net with these pooling factors, e.g. 4,4 (default: the plain model)
    #[arg(long, value_delimiter = ',', conflicts_with = "model")]
    pooling: Vec<i64>,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct TrainArgs {
    /// Model size preset (tiny, small, base, large) or a config.json path
    #[arg(long, default_value = "small")]
    config: String,
    /// Loss: lm (next-sample NLL) or denoise (the denoiser's CE + L1 + multi-resolution STFT −
    /// SI-SDR on noisy/clean pairs)
    #[arg(long, value_parser = ["lm", "denoise"], default_value = "lm")]
    task: String,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Sequences per step (B)
    #[arg(long, default_value_t = 16)]
    batch: i64,
    /// Sequence length L (samples)
    #[arg(long, default_value_t = 16384)]
    len: i64,
    /// Timed steps (after 2 warm-up steps)
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Arithmetic on CUDA: fp32, or bf16 autocast as `train --precision bf16` (CPU: always fp32)
    #[arg(long, value_parser = ["bf16", "fp32"], default_value = "fp32")]
    precision: String,
    /// CPU threads (default: all cores)
    #[arg(long)]
    threads: Option<i32>,
    /// After timing, profile 2 more steps and write a Chrome trace (CPU operators and CUDA
    /// kernels; summarise with scripts/trace-summary.py or open in Perfetto)
    #[arg(long, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct LoaderArgs {
    /// Dataset: a directory (searched recursively) or a manifest file
    #[arg(long)]
    data: std::path::PathBuf,
    /// Cache directory for decoded audio (default: ~/.cache/wavemamba/audio)
    #[arg(long)]
    cache: Option<std::path::PathBuf>,
    /// Sample rate the dataset is resampled to (Hz; `--sample-rate` as in `train`)
    #[arg(long = "sample-rate", visible_alias = "rate", default_value_t = 16_000)]
    rate: u32,
    /// Split to draw from: train, valid or test
    #[arg(long, default_value = "train")]
    split: String,
    /// Batch size B
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Crop length L (samples)
    #[arg(long, default_value_t = 16_384)]
    len: usize,
    /// Loader threads
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Batches buffered ahead of the consumer
    #[arg(long, default_value_t = 4)]
    prefetch: usize,
    /// Batches timed
    #[arg(long, default_value_t = 200)]
    batches: usize,
    /// Untimed batches first
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// cpu, cuda or cuda:N (where the batches are placed)
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Seed of the crop positions
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pad files shorter than L with silence instead of concatenating further files
    #[arg(long)]
    pad_short: bool,
    /// Manifest only: keep rows whose COLUMN equals VALUE (repeatable), e.g. --select kind=speech
    #[arg(long, value_name = "COLUMN=VALUE", value_parser = super::select_arg)]
    select: Vec<(String, String)>,
    /// Fail on the first unusable file instead of skipping it
    #[arg(long)]
    strict: bool,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ScanArgs {
    /// Batch size B
    #[arg(long, default_value_t = 4)]
    batch: i64,
    /// Channels D (d_inner of the layer)
    #[arg(long, default_value_t = 128)]
    dim: i64,
    /// Sequence length L (samples)
    #[arg(long, default_value_t = 4096)]
    len: i64,
    /// State size N
    #[arg(long, default_value_t = 16)]
    state: i64,
    /// Groups G of B and C (1 = B, C of shape (B, N, L))
    #[arg(long, default_value_t = 1)]
    groups: i64,
    /// CPU threads (default: libtorch's default, usually the number of cores)
    #[arg(long)]
    threads: Option<i32>,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// dtype of u, delta, B, C, z: f32 or bf16 (A, D, delta_bias stay f32)
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    dtype: String,
    /// Also time forward+backward and measure the scan's memory workspace
    #[arg(long)]
    backward: bool,
    /// Skip timing the (slow) reference implementation
    #[arg(long)]
    no_reference: bool,
    /// Timed repetitions (the median is reported)
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Untimed warm-up runs
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Seed of the random inputs
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Step(a) => {
            anyhow::ensure!(a.threads >= 1, "--threads must be ≥ 1, got {}", a.threads);
            tch::set_num_threads(a.threads);
            let cfg = wavemamba::bench::step::StepBench {
                model: match a.model {
                    Some(dir) => wavemamba::bench::step::StepModel::Dir(dir),
                    None => wavemamba::bench::step::StepModel::Preset(
                        a.preset.unwrap_or_else(|| "small".into()),
                    ),
                },
                streams: a.streams,
                seconds: a.seconds,
                isa: a.isa.as_deref().map(str::parse).transpose()?,
                seed: a.seed,
                pooling: a.pooling,
            };
            let report = wavemamba::bench::step::run(&cfg).context("step benchmark failed")?;
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        What::Prefill(a) => {
            anyhow::ensure!(a.threads >= 1, "--threads must be ≥ 1, got {}", a.threads);
            tch::set_num_threads(a.threads);
            let cfg = wavemamba::bench::prefill::PrefillBench {
                model: match a.model {
                    Some(dir) => wavemamba::bench::step::StepModel::Dir(dir),
                    None => wavemamba::bench::step::StepModel::Preset(
                        a.preset.unwrap_or_else(|| "small".into()),
                    ),
                },
                seconds: a.seconds,
                reps: a.reps,
                pooling: a.pooling,
                seed: a.seed,
                trace: a.trace,
            };
            let report =
                wavemamba::bench::prefill::run(&cfg).context("prefill benchmark failed")?;
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        What::Loader(a) => {
            let cfg = LoaderBench {
                data: a.data.clone(),
                cache_dir: a.cache,
                sample_rate: a.rate,
                split: a.split.parse::<Split>()?,
                batch: a.batch,
                len: a.len,
                workers: a.workers,
                prefetch: a.prefetch,
                batches: a.batches,
                warmup: a.warmup,
                device: parse_device(&a.device)?,
                seed: a.seed,
                short_files: if a.pad_short {
                    ShortFiles::Pad
                } else {
                    ShortFiles::Concatenate
                },
                progress: !a.json,
                select: a.select,
                strict: a.strict,
            };
            let report = loader::run(&cfg)
                .with_context(|| format!("loader benchmark on {} failed", a.data.display()))?;
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        What::Train(a) => {
            if let Some(t) = a.threads {
                anyhow::ensure!(t >= 1, "--threads must be ≥ 1, got {t}");
                tch::set_num_threads(t);
            }
            let cfg = wavemamba::bench::train::TrainBench {
                config: wavemamba::train::job::resolve_config(&a.config)?,
                audio: wavemamba::config::AudioConfig {
                    task: if a.task == "denoise" {
                        wavemamba::config::Task::Denoise
                    } else {
                        wavemamba::config::Task::Lm
                    },
                    ..Default::default()
                },
                device: parse_device(&a.device)?,
                batch: a.batch,
                len: a.len,
                steps: a.steps,
                warmup: 2,
                bf16: a.precision == "bf16",
                trace: a.trace.clone(),
            };
            let report = wavemamba::bench::train::run(&cfg).context("training benchmark failed")?;
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        What::Scan(a) => {
            if let Some(t) = a.threads {
                anyhow::ensure!(t >= 1, "--threads must be ≥ 1, got {t}");
                tch::set_num_threads(t);
            }
            let cfg = ScanBench {
                batch: a.batch,
                dim: a.dim,
                len: a.len,
                state: a.state,
                groups: a.groups,
                device: parse_device(&a.device)?,
                dtype: if a.dtype == "bf16" {
                    tch::Kind::BFloat16
                } else {
                    tch::Kind::Float
                },
                backward: a.backward,
                reference: !a.no_reference,
                warmup: a.warmup,
                reps: a.reps,
                seed: a.seed,
            };
            let report = scan::run(&cfg).context("scan benchmark failed")?;
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
    }
}
