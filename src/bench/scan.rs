//! `wavemamba bench scan`: the selective scan kernel against the reference, forward and
//! forward+backward, with the scan's memory workspace and the bandwidth it achieves.
//!
//! On CUDA, times are medians of CUDA-event times (after warm-up) and memory is libtorch's
//! caching-allocator peak. Bandwidth counts the fewest bytes each pass must move (every input read
//! once, every output written once; see [`ScanReport::fwd_bytes`]) against the H200's 4.3 TB/s
//! measured copy bandwidth.

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::{
    median_device_ms, median_ms, peak_rss_bytes, queued_device_ms, reset_peak_rss, rss_bytes,
    TimingMethod,
};
use crate::ops::cuda::cuda_memory;
use crate::ops::{selective_scan, selective_scan_ref, ScanInputs};
use crate::{Error, Result};

/// Device-to-device copy bandwidth measured on the H200 (bytes read + written), GB/s.
pub const H200_COPY_GBPS: f64 = 4300.0;

/// Problem size and measurement settings.
#[derive(Debug, Clone)]
pub struct ScanBench {
    pub batch: i64,
    pub dim: i64,
    pub len: i64,
    pub state: i64,
    pub groups: i64,
    pub device: Device,
    /// dtype of u, delta, B, C, z (float32 or bfloat16); A, D, delta_bias stay float32.
    pub dtype: Kind,
    /// Also time forward+backward (gradients for every input).
    pub backward: bool,
    /// Also time the pure-tch reference (forward) for the speed ratio.
    pub reference: bool,
    pub warmup: usize,
    pub reps: usize,
    pub seed: i64,
}

/// What one benchmark run measured. Times are medians in milliseconds (the `_queued` ones: means).
#[derive(Debug, Serialize)]
pub struct ScanReport {
    pub batch: i64,
    pub dim: i64,
    pub len: i64,
    pub state: i64,
    pub groups: i64,
    pub device: String,
    /// "float32" or "bfloat16" (u, delta, B, C, z; the rest float32).
    pub dtype: String,
    pub threads: i32,
    /// How times were taken: `cuda_events` or `wall_clock`.
    pub timing: TimingMethod,
    pub fwd_ms: f64,
    /// B·D·L·N divided by the forward time.
    pub fwd_state_updates_per_s: f64,
    pub fwdbwd_ms: Option<f64>,
    /// CUDA only: mean time per call of `reps` calls queued back to back
    /// ([`queued_device_ms`](super::queued_device_ms)), which leaves out the host's launch
    /// latency that the medians count at every call's start.
    pub fwd_ms_queued: Option<f64>,
    pub fwdbwd_ms_queued: Option<f64>,
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
    /// Growth of the CUDA caching allocator's peak during one forward+backward (CUDA only), MiB.
    pub peak_cuda_growth_mib: Option<f64>,
    /// The scan's own CUDA workspace: peak growth minus outputs and gradients, in units of
    /// B·D·L float32 values (the issue asks for O(B·D·L)).
    pub cuda_workspace_over_bdl_f32: Option<f64>,
    /// Fewest bytes the forward must move: u, delta, z, B, C, A, D, delta_bias read once; out
    /// and last_state written once.
    pub fwd_bytes: f64,
    /// `fwd_bytes` over the forward median, GB/s.
    pub achieved_gbps: f64,
    /// `achieved_gbps` over the 4.3 TB/s copy bandwidth of the H200.
    pub fraction_of_4300_gbps: f64,
    /// Fewest bytes forward+backward must move: the forward's, then the inputs and the output
    /// gradient read again, and every input gradient written once.
    pub fwdbwd_bytes: Option<f64>,
    /// `fwdbwd_bytes` over the forward+backward median, GB/s.
    pub fwdbwd_achieved_gbps: Option<f64>,
    pub fwdbwd_fraction_of_4300_gbps: Option<f64>,
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
    /// Random inputs (fallible: a size that does not fit in memory is an error, not a panic).
    fn new(cfg: &ScanBench, requires_grad: bool) -> Result<Problem> {
        tch::manual_seed(cfg.seed);
        let opts = (Kind::Float, cfg.device);
        let (bsz, d, l, n, g) = (cfg.batch, cfg.dim, cfg.len, cfg.state, cfg.groups);
        let bc_shape: Vec<i64> = if g == 1 {
            vec![bsz, n, l]
        } else {
            vec![bsz, g, n, l]
        };
        // N(0, 1) · scale + shift, in the io dtype (`io`) or float32, requiring grad as asked.
        let randn = |shape: &[i64], scale: f64, shift: f64, io: bool| -> Result<Tensor> {
            let t = Tensor::f_randn(shape, opts)?
                .f_mul_scalar(scale)?
                .f_add_scalar(shift)?;
            let t = if io { t.f_to_kind(cfg.dtype)? } else { t };
            Ok(t.f_set_requires_grad(requires_grad)?)
        };
        let a = Tensor::f_randn([d, n], opts)?
            .f_mul_scalar(0.5)?
            .f_exp()?
            .f_neg()?;
        Ok(Problem {
            u: randn(&[bsz, d, l], 1.0, 0.0, true)?,
            delta: randn(&[bsz, d, l], 0.5, 0.0, true)?,
            a: a.f_set_requires_grad(requires_grad)?,
            b: randn(&bc_shape, 1.0, 0.0, true)?,
            c: randn(&bc_shape, 1.0, 0.0, true)?,
            d: randn(&[d], 1.0, 0.0, false)?,
            z: randn(&[bsz, d, l], 1.0, 0.0, true)?,
            delta_bias: randn(&[d], 0.5, -3.0, false)?,
        })
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

    /// Bytes of the tensor inputs; also the bytes of their gradients (same shapes and dtypes).
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
        .map(|t| bytes_of(t))
        .sum()
    }
}

fn bytes_of(t: &Tensor) -> i64 {
    let size = match t.kind() {
        Kind::BFloat16 | Kind::Half => 2,
        Kind::Double => 8,
        _ => 4,
    };
    t.numel() as i64 * size
}

/// One forward+backward with gradients for every input (loss = Σ out + Σ last_state), returned
/// as `torch.autograd.grad` does (nothing accumulated into `.grad`). The sum runs in out's dtype
/// so the gradient reaching the kernel stays an expanded scalar.
fn fwd_bwd(p: &Problem) -> Result<Vec<Tensor>> {
    let r = selective_scan(&p.inputs())?;
    let loss = r.out.sum(r.out.kind()).to_kind(Kind::Float) + r.last_state.sum(Kind::Float);
    let leaves = [&p.u, &p.delta, &p.a, &p.b, &p.c, &p.d, &p.z, &p.delta_bias];
    Ok(Tensor::f_run_backward(&[loss], &leaves, false, false)?)
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
    if !matches!(cfg.dtype, Kind::Float | Kind::BFloat16) {
        return Err(Error::InvalidArgument {
            name: "dtype",
            reason: format!("must be float32 or bfloat16, got {:?}", cfg.dtype),
        });
    }
    if cfg.dim % cfg.groups != 0 {
        return Err(Error::InvalidArgument {
            name: "groups",
            reason: format!("dim {} is not divisible by {}", cfg.dim, cfg.groups),
        });
    }
    if cfg.reps < 1 {
        return Err(Error::InvalidArgument {
            name: "reps",
            reason: "must be ≥ 1, got 0".into(),
        });
    }
    let updates = [cfg.dim, cfg.len, cfg.state]
        .iter()
        .try_fold(cfg.batch, |acc, &v| acc.checked_mul(v))
        .ok_or_else(|| Error::InvalidArgument {
            name: "batch × dim × len × state",
            reason: "too large".into(),
        })? as f64;
    // Memory first, before anything else has grown the heap: one forward+backward from a clean
    // high-water mark, inputs already allocated (the first call also allocates the gradients).
    let grad_problem = cfg.backward.then(|| Problem::new(cfg, true)).transpose()?;
    let (mut growth, mut io) = (None, None);
    let mut cuda_growth = None;
    let out_bytes = |p: &Problem| {
        let es = bytes_of(&p.u) / p.u.numel().max(1) as i64;
        (cfg.batch * cfg.dim * cfg.len) * es + (cfg.batch * cfg.dim * cfg.state) * 4
    };
    if let Some(p) = &grad_problem {
        match cfg.device {
            Device::Cpu => {
                reset_peak_rss();
                let before = rss_bytes();
                drop(fwd_bwd(p)?);
                if let (Some(before), Some(peak)) = (before, peak_rss_bytes()) {
                    growth = Some(peak.saturating_sub(before) as f64);
                    io = Some((out_bytes(p) + p.input_bytes()) as f64);
                }
            }
            Device::Cuda(i) => {
                tch::Cuda::synchronize(i as i64);
                let before = cuda_memory(i, true)?;
                drop(fwd_bwd(p)?);
                tch::Cuda::synchronize(i as i64);
                let after = cuda_memory(i, false)?;
                cuda_growth = Some((after.peak - before.allocated).max(0) as f64);
                io = Some((out_bytes(p) + p.input_bytes()) as f64);
            }
            _ => drop(fwd_bwd(p)?),
        }
    }

    let plain = Problem::new(cfg, false)?;
    selective_scan(&plain.inputs())?; // surface errors before timing
    let (fwd_ms, timing) = median_device_ms(cfg.device, cfg.warmup, cfg.reps, || {
        let _ = selective_scan(&plain.inputs());
    })?;
    let fwd_ms_queued = queued_device_ms(cfg.device, 1, cfg.reps, || {
        let _ = selective_scan(&plain.inputs());
    })?;
    let ref_fwd_ms = if cfg.reference {
        Some(median_ms(cfg.device, 1, cfg.reps.clamp(1, 3), || {
            let _ = selective_scan_ref(&plain.inputs());
        }))
    } else {
        None
    };
    // Fewest bytes: inputs read once, out and last_state written once.
    let fwd_bytes = (plain.input_bytes() + out_bytes(&plain)) as f64;
    drop(plain);

    let mut fwdbwd_ms = None;
    let mut fwdbwd_ms_queued = None;
    let mut fwdbwd_bytes = None;
    if let Some(p) = &grad_problem {
        let mut failed = None;
        let (t, _) = median_device_ms(cfg.device, cfg.warmup, cfg.reps, || {
            if let Err(e) = fwd_bwd(p) {
                failed = Some(e);
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        fwdbwd_ms = Some(t);
        fwdbwd_ms_queued = queued_device_ms(cfg.device, 1, cfg.reps, || {
            if let Err(e) = fwd_bwd(p) {
                failed = Some(e);
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        // Forward, then the inputs and the output gradients read again and every input gradient
        // written once.
        fwdbwd_bytes = Some(fwd_bytes + (2 * p.input_bytes() + out_bytes(p)) as f64);
    }
    const MIB: f64 = 1024.0 * 1024.0;
    let gbps = |bytes: f64, ms: f64| bytes / (ms * 1e-3) / 1e9;
    let achieved_gbps = gbps(fwd_bytes, fwd_ms);
    let fwdbwd_achieved_gbps = fwdbwd_bytes.zip(fwdbwd_ms).map(|(b, t)| gbps(b, t));
    let bdl_f32 = (cfg.batch * cfg.dim * cfg.len * 4) as f64;
    Ok(ScanReport {
        batch: cfg.batch,
        dim: cfg.dim,
        len: cfg.len,
        state: cfg.state,
        groups: cfg.groups,
        device: format!("{:?}", cfg.device).to_lowercase(),
        dtype: match cfg.dtype {
            Kind::BFloat16 => "bfloat16",
            _ => "float32",
        }
        .to_owned(),
        threads: tch::get_num_threads(),
        timing,
        fwd_ms,
        fwd_state_updates_per_s: updates / (fwd_ms * 1e-3),
        fwdbwd_ms,
        fwd_ms_queued,
        fwdbwd_ms_queued,
        fwdbwd_over_fwd: fwdbwd_ms.map(|t| t / fwd_ms),
        ref_fwd_ms,
        speedup_vs_reference: ref_fwd_ms.map(|r| r / fwd_ms),
        peak_rss_growth_mib: growth.map(|g| g / MIB),
        outputs_and_grads_mib: io.map(|b| b / MIB),
        workspace_mib: growth
            .or(cuda_growth)
            .zip(io)
            .map(|(g, b)| (g - b).max(0.0) / MIB),
        peak_cuda_growth_mib: cuda_growth.map(|g| g / MIB),
        cuda_workspace_over_bdl_f32: cuda_growth.zip(io).map(|(g, b)| (g - b).max(0.0) / bdl_f32),
        fwd_bytes,
        achieved_gbps,
        fraction_of_4300_gbps: achieved_gbps / H200_COPY_GBPS,
        fwdbwd_bytes,
        fwdbwd_achieved_gbps,
        fwdbwd_fraction_of_4300_gbps: fwdbwd_achieved_gbps.map(|g| g / H200_COPY_GBPS),
    })
}

impl std::fmt::Display for ScanReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "selective scan (B, D, L, N, G) = ({}, {}, {}, {}, {}) {} on {} with {} thread(s)",
            self.batch,
            self.dim,
            self.len,
            self.state,
            self.groups,
            self.dtype,
            self.device,
            self.threads
        )?;
        // The 4.3 TB/s floor is an H200's memory bandwidth: shown on CUDA only.
        let on_gpu = self.timing == TimingMethod::CudaEvents;
        let floor = |q: f64| {
            if on_gpu {
                format!(" ({:.1}% of 4.3 TB/s)", 100.0 * q)
            } else {
                String::new()
            }
        };
        write!(
            f,
            "  forward            {:9.3} ms   {:.3e} state-updates/s   {:.0} GB/s{}",
            self.fwd_ms,
            self.fwd_state_updates_per_s,
            self.achieved_gbps,
            floor(self.fraction_of_4300_gbps)
        )?;
        if let (Some(t), Some(r)) = (self.fwdbwd_ms, self.fwdbwd_over_fwd) {
            write!(f, "\n  forward+backward   {t:9.3} ms   ({r:.2}× forward)")?;
            if let (Some(g), Some(q)) =
                (self.fwdbwd_achieved_gbps, self.fwdbwd_fraction_of_4300_gbps)
            {
                write!(f, "   {g:.0} GB/s{}", floor(q))?;
            }
        }
        if let Some(q) = self.fwd_ms_queued {
            write!(f, "\n  queued back to back: forward {q:.3} ms")?;
            if let Some(qb) = self.fwdbwd_ms_queued {
                write!(f, ", forward+backward {qb:.3} ms")?;
            }
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
        if let (Some(g), Some(w), Some(r)) = (
            self.peak_cuda_growth_mib,
            self.workspace_mib,
            self.cuda_workspace_over_bdl_f32,
        ) {
            write!(
                f,
                "\n  peak CUDA growth   {g:9.1} MiB  (scan workspace {w:.1} MiB = {r:.2} × B·D·L float32)"
            )?;
        }
        write!(f, "\n  timing: {}", self.timing)?;
        Ok(())
    }
}
