//! `wavemamba bench scan`: the selective scan kernel against the reference, forward and
//! forward+backward, with the scan's memory workspace.

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::{median_ms, peak_rss_bytes, reset_peak_rss, rss_bytes};
use crate::ops::{selective_scan, selective_scan_ref, ScanInputs};
use crate::{Error, Result};

/// Problem size and measurement settings.
#[derive(Debug, Clone)]
pub struct ScanBench {
    pub batch: i64,
    pub dim: i64,
    pub len: i64,
    pub state: i64,
    pub groups: i64,
    pub device: Device,
    /// Also time forward+backward (gradients for every input).
    pub backward: bool,
    /// Also time the pure-tch reference (forward) for the speed ratio.
    pub reference: bool,
    pub warmup: usize,
    pub reps: usize,
    pub seed: i64,
}

/// What one benchmark run measured. Times are medians in milliseconds.
#[derive(Debug, Serialize)]
pub struct ScanReport {
    pub batch: i64,
    pub dim: i64,
    pub len: i64,
    pub state: i64,
    pub groups: i64,
    pub device: String,
    pub threads: i32,
    pub fwd_ms: f64,
    /// B·D·L·N divided by the forward time.
    pub fwd_state_updates_per_s: f64,
    pub fwdbwd_ms: Option<f64>,
    /// forward+backward time over forward time.
    pub fwdbwd_over_fwd: Option<f64>,
    pub ref_fwd_ms: Option<f64>,
    /// Reference forward time over kernel forward time.
    pub speedup_vs_reference: Option<f64>,
    /// Growth of the peak resident set during one forward+backward (CPU only), MiB.
    pub peak_rss_growth_mib: Option<f64>,
    /// Bytes of the outputs and of the input gradients, MiB.
    pub outputs_and_grads_mib: Option<f64>,
    /// The scan's own workspace: peak RSS growth minus outputs and gradients, MiB.
    pub workspace_mib: Option<f64>,
}

/// Random inputs in the regime of a trained Mamba layer (never zeros).
struct Problem {
    u: Tensor,
    delta: Tensor,
    a: Tensor,
    b: Tensor,
    c: Tensor,
    d: Tensor,
    z: Tensor,
    delta_bias: Tensor,
}

impl Problem {
    fn new(cfg: &ScanBench, requires_grad: bool) -> Problem {
        tch::manual_seed(cfg.seed);
        let opts = (Kind::Float, cfg.device);
        let (bsz, d, l, n, g) = (cfg.batch, cfg.dim, cfg.len, cfg.state, cfg.groups);
        let bc_shape: Vec<i64> = if g == 1 {
            vec![bsz, n, l]
        } else {
            vec![bsz, g, n, l]
        };
        let grad = |t: Tensor| t.set_requires_grad(requires_grad);
        Problem {
            u: grad(Tensor::randn([bsz, d, l], opts)),
            delta: grad(Tensor::randn([bsz, d, l], opts) * 0.5),
            a: grad(-(Tensor::randn([d, n], opts) * 0.5).exp()),
            b: grad(Tensor::randn(bc_shape.as_slice(), opts)),
            c: grad(Tensor::randn(bc_shape.as_slice(), opts)),
            d: grad(Tensor::randn([d], opts)),
            z: grad(Tensor::randn([bsz, d, l], opts)),
            delta_bias: grad(Tensor::randn([d], opts) * 0.5 - 3.0),
        }
    }

    fn inputs(&self) -> ScanInputs<'_> {
        ScanInputs {
            u: &self.u,
            delta: &self.delta,
            a: &self.a,
            b: &self.b,
            c: &self.c,
            d: Some(&self.d),
            z: Some(&self.z),
            delta_bias: Some(&self.delta_bias),
            initial_state: None,
            delta_softplus: true,
        }
    }

    fn input_bytes(&self) -> i64 {
        [
            &self.u,
            &self.delta,
            &self.a,
            &self.b,
            &self.c,
            &self.d,
            &self.z,
            &self.delta_bias,
        ]
        .iter()
        .map(|t| t.numel() as i64 * 4)
        .sum()
    }

    fn zero_grads(&mut self) {
        for t in [
            &mut self.u,
            &mut self.delta,
            &mut self.a,
            &mut self.b,
            &mut self.c,
            &mut self.d,
            &mut self.z,
            &mut self.delta_bias,
        ] {
            let _ = t.grad().f_zero_();
        }
    }
}

/// One forward+backward with gradients for every input (loss = Σ out + Σ last_state).
fn fwd_bwd(p: &Problem) -> Result<()> {
    let r = selective_scan(&p.inputs())?;
    (r.out.sum(Kind::Float) + r.last_state.sum(Kind::Float)).f_backward()?;
    Ok(())
}

/// Runs the benchmark.
///
/// # Errors
/// Invalid sizes, or a kernel error (e.g. CUDA requested in a build without CUDA kernels).
pub fn run(cfg: &ScanBench) -> Result<ScanReport> {
    for (name, v) in [
        ("batch", cfg.batch),
        ("dim", cfg.dim),
        ("len", cfg.len),
        ("state", cfg.state),
        ("groups", cfg.groups),
    ] {
        if v < 1 {
            return Err(Error::InvalidArgument {
                name,
                reason: format!("must be ≥ 1, got {v}"),
            });
        }
    }
    if cfg.dim % cfg.groups != 0 {
        return Err(Error::InvalidArgument {
            name: "groups",
            reason: format!("dim {} is not divisible by {}", cfg.dim, cfg.groups),
        });
    }
    let updates = (cfg.batch * cfg.dim * cfg.len * cfg.state) as f64;
    // Memory first, before anything else has grown the heap: one forward+backward from a clean
    // high-water mark, inputs already allocated (the first call also allocates the gradients).
    let mut grad_problem = cfg.backward.then(|| Problem::new(cfg, true));
    let (mut growth, mut io) = (None, None);
    if let Some(p) = &grad_problem {
        if cfg.device == Device::Cpu {
            reset_peak_rss();
            let before = rss_bytes();
            fwd_bwd(p)?;
            if let (Some(before), Some(peak)) = (before, peak_rss_bytes()) {
                let out_bytes = (cfg.batch * cfg.dim * (cfg.len + cfg.state)) * 4;
                growth = Some(peak.saturating_sub(before) as f64);
                io = Some((out_bytes + p.input_bytes()) as f64);
            }
        } else {
            fwd_bwd(p)?; // surface errors before timing
        }
    }

    let plain = Problem::new(cfg, false);
    selective_scan(&plain.inputs())?; // surface errors before timing
    let fwd_ms = median_ms(cfg.device, cfg.warmup, cfg.reps, || {
        let _ = selective_scan(&plain.inputs());
    });
    let ref_fwd_ms = if cfg.reference {
        Some(median_ms(cfg.device, 1, cfg.reps.clamp(1, 3), || {
            let _ = selective_scan_ref(&plain.inputs());
        }))
    } else {
        None
    };
    drop(plain);

    let mut fwdbwd_ms = None;
    if let Some(p) = &mut grad_problem {
        let mut failed = None;
        fwdbwd_ms = Some(median_ms(cfg.device, cfg.warmup, cfg.reps, || {
            p.zero_grads();
            if let Err(e) = fwd_bwd(p) {
                failed = Some(e);
            }
        }));
        if let Some(e) = failed {
            return Err(e);
        }
    }
    const MIB: f64 = 1024.0 * 1024.0;
    Ok(ScanReport {
        batch: cfg.batch,
        dim: cfg.dim,
        len: cfg.len,
        state: cfg.state,
        groups: cfg.groups,
        device: format!("{:?}", cfg.device).to_lowercase(),
        threads: tch::get_num_threads(),
        fwd_ms,
        fwd_state_updates_per_s: updates / (fwd_ms * 1e-3),
        fwdbwd_ms,
        fwdbwd_over_fwd: fwdbwd_ms.map(|t| t / fwd_ms),
        ref_fwd_ms,
        speedup_vs_reference: ref_fwd_ms.map(|r| r / fwd_ms),
        peak_rss_growth_mib: growth.map(|g| g / MIB),
        outputs_and_grads_mib: io.map(|b| b / MIB),
        workspace_mib: growth.zip(io).map(|(g, b)| (g - b).max(0.0) / MIB),
    })
}

impl std::fmt::Display for ScanReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "selective scan (B, D, L, N, G) = ({}, {}, {}, {}, {}) on {} with {} thread(s)",
            self.batch, self.dim, self.len, self.state, self.groups, self.device, self.threads
        )?;
        write!(
            f,
            "  forward            {:9.3} ms   {:.3e} state-updates/s",
            self.fwd_ms, self.fwd_state_updates_per_s
        )?;
        if let (Some(t), Some(r)) = (self.fwdbwd_ms, self.fwdbwd_over_fwd) {
            write!(f, "\n  forward+backward   {t:9.3} ms   ({r:.2}× forward)")?;
        }
        if let (Some(t), Some(s)) = (self.ref_fwd_ms, self.speedup_vs_reference) {
            write!(
                f,
                "\n  reference forward  {t:9.3} ms   (kernel is {s:.1}× faster)"
            )?;
        }
        if let (Some(g), Some(w)) = (self.peak_rss_growth_mib, self.workspace_mib) {
            write!(
                f,
                "\n  peak RSS growth    {g:9.1} MiB  (scan workspace {w:.1} MiB)"
            )?;
        }
        Ok(())
    }
}
