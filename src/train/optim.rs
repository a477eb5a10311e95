//! AdamW (decoupled weight decay) written out in tch ops, so its state is plain tensors we can
//! checkpoint and restore bit-exactly.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

/// Hyper-parameters: β = (0.9, 0.95), ε = 1e-8, weight decay 0.1 on matrices only.
#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// Optimizer over named parameters; `m`/`v` are the first/second moment estimates.
pub struct AdamW {
    pub config: AdamWConfig,
    params: Vec<(String, Tensor)>,
    pub m: BTreeMap<String, Tensor>,
    pub v: BTreeMap<String, Tensor>,
    /// Number of updates applied so far.
    pub steps: i64,
}

/// Whether a parameter gets weight decay: matrices do, except `A_log` (upstream marks it
/// `_no_weight_decay`, like `D`, biases and norm weights, which are vectors anyway).
pub fn decays(name: &str, t: &Tensor) -> bool {
    t.dim() >= 2 && !name.ends_with("A_log")
}

impl AdamW {
    pub fn new(params: Vec<(String, Tensor)>, config: AdamWConfig) -> AdamW {
        let zeros = |p: &Vec<(String, Tensor)>| {
            p.iter().map(|(k, t)| (k.clone(), t.zeros_like())).collect()
        };
        AdamW {
            config,
            m: zeros(&params),
            v: zeros(&params),
            params,
            steps: 0,
        }
    }

    /// Clips the global gradient norm to `max_norm` (if > 0) and returns the norm before clipping.
    pub fn clip_grad_norm(&self, max_norm: f64) -> f64 {
        let total: f64 = self
            .params
            .iter()
            .map(|(_, p)| {
                let g = p.grad();
                if g.defined() {
                    g.square().sum(Kind::Double).double_value(&[])
                } else {
                    0.0
                }
            })
            .sum::<f64>()
            .sqrt();
        if max_norm > 0.0 && total > max_norm {
            let scale = max_norm / (total + 1e-6);
            tch::no_grad(|| {
                for (_, p) in &self.params {
                    let mut g = p.grad();
                    if g.defined() {
                        let _ = g.f_mul_scalar_(scale);
                    }
                }
            });
        }
        total
    }

    /// One AdamW update with learning rate `lr`; zeroes the gradients afterwards.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let c = self.config;
        let bc1 = 1.0 - c.beta1.powi(self.steps as i32);
        let bc2 = 1.0 - c.beta2.powi(self.steps as i32);
        tch::no_grad(|| {
            for (name, p) in &self.params {
                let mut g = p.grad();
                if !g.defined() {
                    continue;
                }
                let (m, v) = (&self.m[name], &self.v[name]);
                let _ = m
                    .shallow_clone()
                    .f_mul_scalar_(c.beta1)
                    .and_then(|mut m| m.f_add_(&(&g * (1.0 - c.beta1))));
                let _ = v
                    .shallow_clone()
                    .f_mul_scalar_(c.beta2)
                    .and_then(|mut v| v.f_add_(&(g.square() * (1.0 - c.beta2))));
                let mut p = p.shallow_clone();
                if decays(name, &p) {
                    let _ = p.f_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                let update = (m / bc1) / ((v / bc2).sqrt() + c.eps);
                let _ = p.f_sub_(&(update * lr));
                let _ = g.f_zero_();
            }
        });
    }

    /// Tensors to checkpoint: `m.<param>` and `v.<param>`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let m = self
            .m
            .iter()
            .map(|(k, t)| (format!("m.{k}"), t.shallow_clone()));
        let v = self
            .v
            .iter()
            .map(|(k, t)| (format!("v.{k}"), t.shallow_clone()));
        m.chain(v).collect()
    }

    /// Restores moments saved by [`AdamW::state_tensors`]; returns the names that were missing.
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>, steps: i64) -> Vec<String> {
        let mut missing = Vec::new();
        tch::no_grad(|| {
            for (prefix, store) in [("m", &mut self.m), ("v", &mut self.v)] {
                for (k, t) in store.iter_mut() {
                    match tensors.get(&format!("{prefix}.{k}")) {
                        Some(src) if src.size() == t.size() => {
                            let _ = t.f_copy_(&src.to_device(t.device()));
                        }
                        _ => missing.push(format!("{prefix}.{k}")),
                    }
                }
            }
        });
        self.steps = steps;
        missing
    }
}
