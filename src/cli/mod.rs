//! Command-line arguments (clap derive) and dispatch: one file per subcommand, each an `Args`
//! struct and a `run` that calls the library. No model or audio logic lives here.

mod bench;
mod denoise;
mod eval;
mod generate;
mod info;
mod live;
mod sampling;
mod train;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Mamba (selective state-space) models of raw audio: train on speech, continue a recording,
/// denoise files, or run live on a microphone, one sample at a time.
#[derive(Debug, Parser)]
#[command(name = "wavemamba", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(about = "Train a model on a speech dataset (language model or denoiser)")]
    Train(train::Args),
    #[command(about = "Continue a WAV prompt (or generate unconditionally) and write a WAV file")]
    Generate(generate::Args),
    #[command(about = "Denoise a WAV file with a trained denoiser")]
    Denoise(denoise::Args),
    #[command(about = "Run on a microphone in real time: denoise or continue what it hears")]
    Live(live::Args),
    #[command(about = "Evaluate a model: NLL in bits per sample, or denoising quality")]
    Eval(eval::Args),
    #[command(
        about = "Measure speed: scan kernel, streaming step, prefill, training, data loader"
    )]
    Bench(bench::Args),
    #[command(about = "Show versions, compiled kernels, CUDA devices and CPU threads")]
    Info(info::Args),
}

/// Parses the command line. Every option that takes a value accepts a negative number, so that
/// `--seconds -1` reaches the option's own check ("must be > 0") instead of clap reading `-1` as
/// an unknown flag.
pub fn parse() -> Cli {
    let matches = negative_numbers(Cli::command()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn negative_numbers(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| {
        let takes_values = arg.get_action().takes_values();
        arg.allow_negative_numbers(takes_values)
    })
    .mut_subcommands(negative_numbers)
}

/// The value parser of `--select COLUMN=VALUE` (and `train --noise-select`), shared by every
/// command that keeps manifest rows by a column value (`train`, `eval`, `bench loader`): both
/// sides trimmed, the column not empty (an empty value selects rows whose cell is empty).
fn select_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((column, value)) if !column.trim().is_empty() => {
            Ok((column.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!(
            "expected COLUMN=VALUE (a manifest column and the value its rows must hold), e.g. \
             kind=speech; got {s:?}"
        )),
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => train::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Denoise(args) => denoise::run(args),
        Command::Live(args) => live::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Info(args) => info::run(args),
    }
}
