//! `TrainOptions`: a run's hyper-parameters and bookkeeping intervals, and their checks.

use tch::Device;

use super::schedule;
use crate::{Error, Result};

/// Hyper-parameters and bookkeeping intervals.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub steps: u64,
    pub batch: i64,
    pub len: i64,
    pub lr: f64,
    pub warmup: u64,
    /// Final learning rate as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Global gradient-norm clip (0 = off).
    pub clip: f64,
    pub seed: u64,
    pub device: Device,
    /// bf16 autocast on CUDA (ignored on CPU, which always trains in fp32).
    pub bf16: bool,
    pub log_every: u64,
    pub valid_every: u64,
    pub ckpt_every: u64,
    /// Stop after this many updates in this invocation (the schedule still spans `steps`):
    /// splits a long run over several time-boxed jobs, continued with `--resume`.
    pub stop_after: Option<u64>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl TrainOptions {
    /// Refuses values that cannot make a sensible run.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the option and the value.
    pub fn check(&self) -> Result<()> {
        let bad = |name: &'static str, reason: String| Err(Error::InvalidArgument { name, reason });
        if self.batch < 1 {
            return bad("--batch", format!("must be ≥ 1, got {}", self.batch));
        }
        if self.len < 2 {
            return bad("--len", format!("must be ≥ 2, got {}", self.len));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(
                "--lr",
                format!("must be a positive number, got {}", self.lr),
            );
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(
                "--min-lr-ratio",
                format!(
                    "the final learning rate as a fraction of --lr must be between 0 and 1, got {}",
                    self.min_lr_ratio
                ),
            );
        }
        if !(self.clip.is_finite() && self.clip >= 0.0) {
            return bad(
                "--clip",
                format!(
                    "must be a number ≥ 0 (0 turns clipping off), got {}",
                    self.clip
                ),
            );
        }
        Ok(())
    }

    /// Settings that are allowed but probably not meant, one message each.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.steps > 0 && self.warmup >= self.steps {
            let peak = schedule::lr_at(
                self.steps - 1,
                self.steps,
                self.warmup,
                self.lr,
                self.min_lr_ratio,
            );
            let reach = if peak < self.lr * (1.0 - 1e-9) {
                format!(
                    "the learning rate only reaches {peak:.3e} (--lr {} × {:.3e})",
                    self.lr,
                    peak / self.lr
                )
            } else {
                format!(
                    "the learning rate reaches --lr {} at the last step and never decays",
                    self.lr
                )
            };
            out.push(format!(
                "--warmup {} is not below --steps {}: the whole run is warm-up and {reach}",
                self.warmup, self.steps
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::TrainOptions;

    fn opts(steps: u64, warmup: u64) -> TrainOptions {
        TrainOptions {
            steps,
            batch: 1,
            len: 2,
            lr: 0.002,
            warmup,
            min_lr_ratio: 0.1,
            clip: 1.0,
            seed: 0,
            device: tch::Device::Cpu,
            bf16: false,
            log_every: 1,
            valid_every: 1,
            ckpt_every: 1,
            stop_after: None,
            progress: false,
        }
    }

    #[test]
    fn warmup_warnings_say_how_far_the_rate_gets() {
        assert!(opts(100, 10).warnings().is_empty());
        let short = opts(3, 100).warnings();
        assert!(short[0].contains("only reaches 6.000e-5"), "{short:?}");
        let equal = opts(100, 100).warnings();
        assert!(
            equal[0].contains("reaches --lr 0.002 at the last step and never decays")
                && !equal[0].contains("only"),
            "{equal:?}"
        );
    }
}
