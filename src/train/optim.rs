//! AdamW (decoupled weight decay) written out in tch ops, so its state is plain tensors we can
//! checkpoint and restore bit-exactly.

use std::collections::BTreeMap;

use tch::Tensor;

use crate::ops::multi::{self, AdamWStep};
use crate::Result;

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
///
/// Each step runs PyTorch's fused multi-tensor AdamW (`ops::multi`) once per weight-decay group,
/// so its cost does not grow with the number of parameter tensors (one launch per ~10 tensors
/// instead of ~10 launches per tensor).
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

/// One weight-decay group's parallel lists for the fused update.
#[derive(Default)]
struct Group {
    params: Vec<Tensor>,
    grads: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl AdamW {
    /// An optimizer over `params` (shared with the caller: updates happen in place), with zero
    /// moments.
    pub fn new(params: &[(String, Tensor)], config: AdamWConfig) -> AdamW {
        let zeros = || {
            params
                .iter()
                .map(|(k, t)| (k.clone(), t.zeros_like()))
                .collect()
        };
        AdamW {
            config,
            m: zeros(),
            v: zeros(),
            params: params
                .iter()
                .map(|(k, t)| (k.clone(), t.shallow_clone()))
                .collect(),
            steps: 0,
        }
    }

    /// The gradients that exist (parameters the loss did not reach have none).
    fn grads(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .map(|(_, p)| p.grad())
            .filter(Tensor::defined)
            .collect()
    }

    /// Clips the global gradient norm to `max_norm` (if > 0); returns the norm before clipping as
    /// a 0-dim tensor on the parameters' device (read it when convenient: no host sync here).
    ///
    /// # Errors
    /// Kernel errors; no gradients at all.
    pub fn clip_grad_norm(&self, max_norm: f64) -> Result<Tensor> {
        multi::clip_grad_norm_(&self.grads(), max_norm)
    }

    /// One AdamW update with learning rate `lr`, skipped on the device when `guard` (e.g. loss +
    /// gradient norm) is not finite; zeroes the gradients afterwards either way.
    ///
    /// # Errors
    /// Kernel errors.
    pub fn step(&mut self, lr: f64, guard: Option<&Tensor>) -> Result<()> {
        self.steps += 1;
        let skip = guard.map(|g| g.isfinite().all().logical_not()); // once for both groups
        let mut groups = [Group::default(), Group::default()]; // [decay, no decay]
        for (name, p) in &self.params {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let group = &mut groups[usize::from(!decays(name, p))];
            group.params.push(p.shallow_clone());
            group.grads.push(g);
            group.m.push(self.m[name].shallow_clone());
            group.v.push(self.v[name].shallow_clone());
        }
        let c = self.config;
        for (group, weight_decay) in groups.iter().zip([c.weight_decay, 0.0]) {
            let s = AdamWStep {
                lr,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                weight_decay,
                step: self.steps,
            };
            multi::adamw_step_(
                &group.params,
                &group.grads,
                &group.m,
                &group.v,
                s,
                skip.as_ref(),
            )?;
            multi::zero_(&group.grads)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// AdamW written out in float64, one tensor at a time (the textbook update).
    fn reference_step(
        p: &mut Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        g: &Tensor,
        lr: f64,
        wd: f64,
        t: i32,
    ) {
        let c = AdamWConfig::default();
        *m = &*m * c.beta1 + g * (1.0 - c.beta1);
        *v = &*v * c.beta2 + g.square() * (1.0 - c.beta2);
        let m_hat = &*m / (1.0 - c.beta1.powi(t));
        let v_hat = &*v / (1.0 - c.beta2.powi(t));
        *p = &*p * (1.0 - lr * wd) - m_hat / (v_hat.sqrt() + c.eps) * lr;
    }

    #[test]
    fn fused_adamw_matches_the_textbook_update_per_group() {
        tch::manual_seed(11);
        let names = [
            "layers.0.mixer.in_proj.weight",
            "layers.0.mixer.A_log",
            "norm.weight",
        ];
        let shapes: [&[i64]; 3] = [&[6, 5], &[4, 3], &[7]];
        let params: Vec<(String, Tensor)> = names
            .iter()
            .zip(shapes)
            .map(|(n, s)| {
                let t = Tensor::randn(s, (Kind::Float, Device::Cpu)).set_requires_grad(true);
                (n.to_string(), t)
            })
            .collect();
        let mut want: Vec<(Tensor, Tensor, Tensor)> = params
            .iter()
            .map(|(_, p)| {
                let p = p.detach().to_kind(Kind::Double);
                (p.copy(), p.zeros_like(), p.zeros_like())
            })
            .collect();
        let mut opt = AdamW::new(&params, AdamWConfig::default());
        for t in 1..=4 {
            let lr = 0.01 * t as f64;
            let grads: Vec<Tensor> = params.iter().map(|(_, p)| Tensor::randn_like(p)).collect();
            // The optimizer zeroed the previous gradients: this backward leaves exactly `grads`.
            let loss: Tensor = params
                .iter()
                .zip(&grads)
                .map(|((_, p), g)| (p * g).sum(Kind::Float))
                .sum();
            loss.backward();
            for (((name, p), g), w) in params.iter().zip(&grads).zip(want.iter_mut()) {
                let wd = if decays(name, p) { 0.1 } else { 0.0 };
                let (wp, wm, wv) = w;
                reference_step(wp, wm, wv, &g.to_kind(Kind::Double), lr, wd, t);
            }
            opt.step(lr, None).unwrap();
            for ((name, p), (wp, _, _)) in params.iter().zip(&want) {
                let err = (p.detach().to_kind(Kind::Double) - wp)
                    .abs()
                    .max()
                    .double_value(&[]);
                assert!(err < 1e-5, "{name} after step {t}: max error {err}");
                assert_eq!(
                    p.grad().abs().max().double_value(&[]),
                    0.0,
                    "{name}: gradient zeroed"
                );
            }
        }
        assert_eq!(opt.steps, 4);
        assert!(decays(names[0], &params[0].1) && !decays(names[1], &params[1].1));
    }

    #[test]
    fn clipping_reports_the_global_norm_and_scales_only_above_it() {
        let a = Tensor::from_slice(&[3.0f32, 0.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.0f32, 4.0]).set_requires_grad(true);
        (&a * &a * 0.5 + &b * &b * 0.5).sum(Kind::Float).backward(); // grads = (3, 0), (0, 4)
        let named = [
            ("a".into(), a.shallow_clone()),
            ("b".into(), b.shallow_clone()),
        ];
        let opt = AdamW::new(&named, AdamWConfig::default());
        let norm = |max: f64| opt.clip_grad_norm(max).unwrap().double_value(&[]);
        assert!((norm(10.0) - 5.0).abs() < 1e-6);
        assert_eq!(
            Vec::<f32>::try_from(&b.grad()).unwrap(),
            vec![0.0, 4.0],
            "below max: untouched"
        );
        assert!((norm(1.0) - 5.0).abs() < 1e-6);
        let g = Vec::<f32>::try_from(&b.grad()).unwrap();
        assert!((g[1] - 0.8).abs() < 1e-5, "scaled to norm 1: {g:?}");
        assert!((norm(0.0) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn a_non_finite_guard_skips_the_update_on_the_device() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        (&p * &p).sum(Kind::Float).backward();
        let mut opt = AdamW::new(
            &[("w.bias".into(), p.shallow_clone())],
            AdamWConfig::default(),
        );
        let norm = opt.clip_grad_norm(1.0).unwrap();
        let nan = Tensor::from_slice(&[f64::NAN]).sum(Kind::Double);
        opt.step(0.1, Some(&(&norm + &nan))).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&p.detach()).unwrap(),
            vec![1.0, -2.0],
            "skipped"
        );
        assert_eq!(
            Vec::<f32>::try_from(&opt.m["w.bias"]).unwrap(),
            vec![0.0, 0.0]
        );
        (&p * &p).sum(Kind::Float).backward();
        let norm = opt.clip_grad_norm(1.0).unwrap();
        opt.step(0.1, Some(&norm)).unwrap();
        assert!(
            p.detach().double_value(&[0]) < 1.0,
            "a finite guard lets the update through"
        );
    }
}
