//! Sampling the next mu-law class from logits: temperature, nucleus (top-p), seeded.
//! Uses the project's own generator ([`crate::rng`]), so results do not depend on libtorch's global RNG.

use crate::rng::SplitMix;
use crate::{Error, Result};

/// Checks sampling settings as [`Sampler::new`] takes them, naming the flag of a bad one.
///
/// # Errors
/// [`Error::InvalidArgument`] for a temperature that is negative or not finite, or a top-p
/// outside (0, 1].
pub fn check_sampling(temperature: f32, top_p: f32) -> Result<()> {
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err(Error::InvalidArgument {
            name: "--temperature",
            reason: format!("must be ≥ 0, got {temperature}"),
        });
    }
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(Error::InvalidArgument {
            name: "--top-p",
            reason: format!("must be in (0, 1], got {top_p}"),
        });
    }
    Ok(())
}

/// Seeded sampler over a vocabulary of logits.
#[derive(Debug, Clone)]
pub struct Sampler {
    rng: SplitMix,
    pub temperature: f32,
    pub top_p: f32,
    probs: Vec<(f32, u16)>,
}

impl Sampler {
    /// `temperature` 0 means greedy (arg-max); `top_p` in (0, 1] keeps the smallest set of
    /// classes whose probability reaches it.
    pub fn new(seed: u64, temperature: f32, top_p: f32) -> Sampler {
        Sampler {
            rng: SplitMix(seed ^ 0x5DEE_CE66_D1CE_4E5B),
            temperature,
            top_p,
            probs: Vec::with_capacity(256),
        }
    }

    /// Draws one class index from `logits` (no allocation after the first call).
    pub fn sample(&mut self, logits: &[f32]) -> u16 {
        let argmax = logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &l)| {
                if l > best.1 {
                    (i, l)
                } else {
                    best
                }
            })
            .0 as u16;
        if self.temperature <= 0.0 || !logits.iter().all(|l| l.is_finite()) {
            return argmax;
        }
        let max = logits[argmax as usize];
        self.probs.clear();
        let mut total = 0.0f32;
        for (i, &l) in logits.iter().enumerate() {
            let p = ((l - max) / self.temperature).exp();
            total += p;
            self.probs.push((p, i as u16));
        }
        if self.top_p < 1.0 {
            self.probs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
            let (mut kept, mut cum) = (0, 0.0);
            for &(p, _) in &self.probs {
                kept += 1;
                cum += p / total;
                if cum >= self.top_p {
                    break;
                }
            }
            self.probs.truncate(kept.max(1));
            total = self.probs.iter().map(|p| p.0).sum();
        }
        let mut r = self.rng.next_f32() * total;
        for &(p, i) in &self.probs {
            r -= p;
            if r <= 0.0 {
                return i;
            }
        }
        self.probs.last().map_or(argmax, |p| p.1)
    }
}

#[cfg(test)]
mod tests {
    use super::Sampler;

    #[test]
    fn greedy_top_p_and_seeding() {
        let logits = [0.0, 3.0, 1.0, -2.0];
        assert_eq!(Sampler::new(1, 0.0, 1.0).sample(&logits), 1);
        // top-p small enough keeps only the most likely class.
        let mut s = Sampler::new(2, 1.0, 0.5);
        assert!((0..100).all(|_| s.sample(&logits) == 1));
        // same seed, same draws; frequencies follow the softmax.
        let draws = |seed| {
            let mut s = Sampler::new(seed, 1.0, 1.0);
            (0..4000).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draws(3), draws(3));
        let d = draws(3);
        let frac1 = d.iter().filter(|&&c| c == 1).count() as f64 / d.len() as f64;
        let p1 = 3f64.exp() / (1.0 + 3f64.exp() + 1f64.exp() + (-2f64).exp());
        assert!((frac1 - p1).abs() < 0.03, "{frac1} vs {p1}");
    }
}
