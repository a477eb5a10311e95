//! `wavemamba bench …`

use anyhow::Context;
use wavemamba::bench::scan::{self, ScanBench};
use wavemamba::device::parse_device;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Selective scan kernel: forward / forward+backward medians, state-updates/s, memory, and the
    /// speed ratio against the pure-tch reference.
    ///
    /// Example: wavemamba bench scan --batch 4 --dim 128 --len 16384 --state 16 --threads 2 --backward
    Scan(ScanArgs),
    /// Training throughput (samples/s) of a model size on a device, on synthetic audio.
    ///
    /// Example: wavemamba bench train --config small --batch 16 --len 16384 --device cpu
    Train(TrainArgs),
}

#[derive(Debug, clap::Args)]
struct TrainArgs {
    /// Model size preset (tiny, small, base, large) or a config.json path
    #[arg(long, default_value = "small")]
    config: String,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 16)]
    batch: i64,
    #[arg(long, default_value_t = 16384)]
    len: i64,
    /// Timed steps (after 2 warm-up steps)
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// CPU threads (default: all cores)
    #[arg(long)]
    threads: Option<i32>,
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
        What::Train(a) => {
            if let Some(t) = a.threads {
                anyhow::ensure!(t >= 1, "--threads must be ≥ 1, got {t}");
                tch::set_num_threads(t);
            }
            let cfg = wavemamba::bench::train::TrainBench {
                config: wavemamba::train::job::resolve_config(&a.config)?,
                audio: Default::default(),
                device: parse_device(&a.device)?,
                batch: a.batch,
                len: a.len,
                steps: a.steps,
                warmup: 2,
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
