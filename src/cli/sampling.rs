//! Sampling flags shared by `generate` and `live --mode continue`.

/// How the next mu-law class is drawn from the model's distribution.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Sampling temperature (0 = greedy)
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely classes up to this probability mass
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed (same seed and input, same output)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}
