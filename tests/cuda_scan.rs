//! The CUDA selective scan (csrc/cuda/) against the CPU kernel and the pure-tch reference: forward
//! and every gradient, float32 (≤ 1e-4 relative) and bfloat16 (≤ 2e-2), odd sizes (L = 1, L not a
//! multiple of the 64-step chunk, N = 1 … 64, groups), both schedules (one block per row range
//! over all of L, and time split into segments), poisoned allocator memory so unwritten outputs
//! show up as NaN, and bit-identical repeated runs. Built with `--features cuda`; runs on a GPU
//! machine (scripts/gpu-run.sh).
#![cfg(feature = "cuda")]

use tch::{Device, Kind, Tensor};
use wavemamba::ops::{selective_scan, selective_scan_ref, ScanInputs, ScanOutput};

const GPU: Device = Device::Cuda(0);

/// Deterministic random tensors from a local generator (tests run concurrently).
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn tensor(&mut self, shape: &[i64], mut sample: impl FnMut(&mut Rng) -> f64) -> Tensor {
        let n: i64 = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| sample(self) as f32).collect();
        Tensor::from_slice(&v).reshape(shape)
    }

    fn rand(&mut self, shape: &[i64]) -> Tensor {
        self.tensor(shape, Rng::next_f64)
    }

    fn randn(&mut self, shape: &[i64]) -> Tensor {
        self.tensor(shape, |r| {
            let (a, b) = (r.next_f64().max(1e-300), r.next_f64());
            (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct Opts {
    d: bool,
    z: bool,
    bias: bool,
    softplus: bool,
    h0: bool,
}

const ALL: Opts = Opts {
    d: true,
    z: true,
    bias: true,
    softplus: true,
    h0: true,
};
const NONE: Opts = Opts {
    d: false,
    z: false,
    bias: false,
    softplus: false,
    h0: false,
};

/// Which outputs the loss uses, and how its gradient reaches the kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Loss {
    /// Random weights on out and last_state (contiguous gout, glast).
    Weighted,
    /// Σ out + Σ last_state: gout is an expanded scalar (all strides 0).
    Sums,
    /// Weights applied to out transposed: gout is a non-contiguous view.
    Transposed,
    /// last_state only: no gout at all.
    LastOnly,
    /// out only: no glast.
    OutOnly,
}

/// Inputs (leaves requiring gradients) and loss weights on one device.
struct Problem {
    w_out: Tensor,
    w_last: Tensor,
    u: Tensor,
    delta: Tensor,
    a: Tensor,
    b: Tensor,
    c: Tensor,
    d: Option<Tensor>,
    z: Option<Tensor>,
    bias: Option<Tensor>,
    h0: Option<Tensor>,
    softplus: bool,
}

type Shape = (i64, i64, i64, i64, i64);

impl Problem {
    /// Random float32 inputs on the CPU; u, delta, B, C, z rounded through `io` so the CPU and a
    /// CUDA run in `io` see the same values.
    fn new(seed: u64, (bsz, dim, len, n, g): Shape, o: Opts, io: Kind) -> Problem {
        let mut rng = Rng(seed);
        let round = |t: Tensor| t.to_kind(io).to_kind(Kind::Float);
        let bc: Vec<i64> = if g == 1 {
            vec![bsz, n, len]
        } else {
            vec![bsz, g, n, len]
        };
        let delta = if o.softplus {
            rng.randn(&[bsz, dim, len]) * 0.5 - 1.0
        } else {
            rng.rand(&[bsz, dim, len]) * 0.09 + 0.01
        };
        Problem {
            w_out: rng.randn(&[bsz, dim, len]),
            w_last: rng.randn(&[bsz, dim, n]),
            u: round(rng.randn(&[bsz, dim, len])),
            delta: round(delta),
            a: -(rng.randn(&[dim, n]) * 0.5).exp(),
            b: round(rng.randn(&bc)),
            c: round(rng.randn(&bc)),
            d: o.d.then(|| rng.randn(&[dim])),
            z: o.z.then(|| round(rng.randn(&[bsz, dim, len]))),
            bias: o.bias.then(|| {
                if o.softplus {
                    rng.randn(&[dim]) * 0.3 - 1.0
                } else {
                    rng.rand(&[dim]) * 0.05
                }
            }),
            h0: o.h0.then(|| rng.randn(&[bsz, dim, n])),
            softplus: o.softplus,
        }
        .on(Device::Cpu, Kind::Float)
    }

    /// Fresh leaves on `device`: u, delta, B, C, z in `io`, the rest float32.
    fn on(&self, device: Device, io: Kind) -> Problem {
        let leaf = |t: &Tensor, kind: Kind| {
            t.detach()
                .to_device(device)
                .to_kind(kind)
                .copy()
                .set_requires_grad(true)
        };
        let plain = |t: &Tensor| t.detach().to_device(device).to_kind(Kind::Float).copy();
        Problem {
            w_out: plain(&self.w_out),
            w_last: plain(&self.w_last),
            u: leaf(&self.u, io),
            delta: leaf(&self.delta, io),
            a: leaf(&self.a, Kind::Float),
            b: leaf(&self.b, io),
            c: leaf(&self.c, io),
            d: self.d.as_ref().map(|t| leaf(t, Kind::Float)),
            z: self.z.as_ref().map(|t| leaf(t, io)),
            bias: self.bias.as_ref().map(|t| leaf(t, Kind::Float)),
            h0: self.h0.as_ref().map(|t| leaf(t, Kind::Float)),
            softplus: self.softplus,
        }
    }

    fn inputs(&self) -> ScanInputs<'_> {
        ScanInputs {
            u: &self.u,
            delta: &self.delta,
            a: &self.a,
            b: &self.b,
            c: &self.c,
            d: self.d.as_ref(),
            z: self.z.as_ref(),
            delta_bias: self.bias.as_ref(),
            initial_state: self.h0.as_ref(),
            delta_softplus: self.softplus,
        }
    }

    fn leaves(&self) -> Vec<(&'static str, &Tensor)> {
        let mut v = vec![
            ("u", &self.u),
            ("delta", &self.delta),
            ("a", &self.a),
            ("b", &self.b),
            ("c", &self.c),
        ];
        for (name, t) in [
            ("d", &self.d),
            ("z", &self.z),
            ("delta_bias", &self.bias),
            ("initial_state", &self.h0),
        ] {
            if let Some(t) = t {
                v.push((name, t));
            }
        }
        v
    }

    fn loss(&self, r: &ScanOutput, kind: Loss) -> Tensor {
        let out = r.out.to_kind(Kind::Float);
        let weighted_out = || (&out * &self.w_out).sum(Kind::Float);
        let weighted_last = || (&r.last_state * &self.w_last).sum(Kind::Float);
        match kind {
            Loss::Weighted => weighted_out() + weighted_last(),
            Loss::Sums => {
                r.out.sum(r.out.kind()).to_kind(Kind::Float) + r.last_state.sum(Kind::Float)
            }
            Loss::Transposed => {
                (out.transpose(1, 2) * self.w_out.transpose(1, 2).contiguous()).sum(Kind::Float)
                    + weighted_last()
            }
            Loss::LastOnly => weighted_last(),
            Loss::OutOnly => weighted_out(),
        }
    }

    /// Outputs and gradients of every leaf, as float64 on the CPU.
    fn run(&self, kind: Loss) -> (Tensor, Tensor, Vec<Tensor>) {
        let r = selective_scan(&self.inputs()).expect("selective_scan");
        let leaves: Vec<&Tensor> = self.leaves().iter().map(|(_, t)| *t).collect();
        poison_cuda_cache();
        let g = Tensor::run_backward(&[self.loss(&r, kind)], &leaves, false, false);
        let host = |t: &Tensor| t.detach().to_device(Device::Cpu).to_kind(Kind::Double);
        (
            host(&r.out),
            host(&r.last_state),
            g.iter().map(host).collect(),
        )
    }
}

/// Fills freed blocks of libtorch's CUDA caching allocator with NaN, so outputs and workspaces
/// allocated next start out as NaN: an element a kernel forgets to write shows up in the checks.
fn poison_cuda_cache() {
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(Tensor::full([64 * 1024], f64::NAN, (Kind::Float, GPU))); // small pool
    }
    for mib in [2i64, 4, 8, 16, 32, 64] {
        held.push(Tensor::full(
            [mib * 1024 * 256],
            f64::NAN,
            (Kind::Float, GPU),
        ));
    }
    tch::Cuda::synchronize(0);
    drop(held);
}

fn rel_err(x: &Tensor, reference: &Tensor) -> f64 {
    let diff = (x - reference).norm().double_value(&[]);
    let norm = reference.norm().double_value(&[]);
    assert!(norm.is_finite(), "reference norm is {norm}");
    if norm == 0.0 {
        return diff;
    }
    diff / norm
}

/// CUDA (in `io`) against the CPU kernel (float32) on the same values.
fn check_cuda_vs_cpu(shape: Shape, o: Opts, seed: u64, io: Kind, kind: Loss) {
    let tol = if io == Kind::BFloat16 { 2e-2 } else { 1e-4 };
    let host = Problem::new(seed, shape, o, io);
    let (out_c, last_c, g_c) = host.run(kind);
    poison_cuda_cache();
    let dev = host.on(GPU, io);
    let (out_g, last_g, g_g) = dev.run(kind);
    let ctx = format!("(B, D, L, N, G) = {shape:?}, {o:?}, {io:?}, loss {kind:?}");
    let e = rel_err(&out_g, &out_c);
    assert!(e <= tol, "out: rel err {e:.2e} ({ctx})");
    let e = rel_err(&last_g, &last_c);
    assert!(e <= tol, "last_state: rel err {e:.2e} ({ctx})");
    for ((name, _), (a, b)) in dev.leaves().iter().zip(g_g.iter().zip(&g_c)) {
        if !b.defined() {
            assert!(!a.defined(), "grad of {name} defined on CUDA only ({ctx})");
            continue;
        }
        let e = rel_err(a, b);
        assert!(e <= tol, "grad of {name}: rel err {e:.2e} ({ctx})");
    }
}

const PATTERNS: [Opts; 5] = [
    ALL,
    NONE,
    Opts {
        d: true,
        z: false,
        bias: true,
        softplus: true,
        h0: false,
    },
    Opts {
        d: false,
        z: true,
        bias: false,
        softplus: true,
        h0: true,
    },
    Opts {
        d: true,
        z: true,
        bias: false,
        softplus: false,
        h0: true,
    },
];

/// Odd sizes: L = 1, L not a multiple of the chunk, every thread layout (N = 1 … 64), groups.
#[test]
fn float32_matches_cpu_across_sizes() {
    let mut case = 0;
    for len in [1, 7, 64, 100, 300] {
        for n in [1, 5, 16, 17, 64] {
            for g in [1, 2] {
                let dim = if g == 2 { 6 } else { 5 };
                let o = PATTERNS[case % PATTERNS.len()];
                check_cuda_vs_cpu(
                    (2, dim, len, n, g),
                    o,
                    1000 + case as u64,
                    Kind::Float,
                    Loss::Weighted,
                );
                case += 1;
            }
        }
    }
}

#[test]
fn float32_matches_cpu_with_every_option_combination() {
    for mask in 0..32u32 {
        let o = Opts {
            d: mask & 1 != 0,
            z: mask & 2 != 0,
            bias: mask & 4 != 0,
            softplus: mask & 8 != 0,
            h0: mask & 16 != 0,
        };
        check_cuda_vs_cpu(
            (2, 4, 131, 16, 2),
            o,
            2000 + mask as u64,
            Kind::Float,
            Loss::Weighted,
        );
    }
}

/// Few rows and long L: time is split into segments (one chunk each here, and several chunks
/// each), chained through the segment passes in both directions.
#[test]
fn float32_segmented_schedule_matches_cpu() {
    check_cuda_vs_cpu((1, 4, 5000, 16, 1), ALL, 3001, Kind::Float, Loss::Weighted);
    check_cuda_vs_cpu(
        (1, 512, 1000, 16, 1),
        ALL,
        3002,
        Kind::Float,
        Loss::Weighted,
    );
    check_cuda_vs_cpu(
        (2, 3, 777, 64, 1),
        PATTERNS[3],
        3003,
        Kind::Float,
        Loss::Weighted,
    );
}

/// Many rows: one block per row range scans all of L (no segments), several row blocks per group.
#[test]
fn float32_unsegmented_schedule_matches_cpu() {
    check_cuda_vs_cpu(
        (2, 1024, 130, 16, 1),
        ALL,
        4001,
        Kind::Float,
        Loss::Weighted,
    );
    check_cuda_vs_cpu(
        (2, 1024, 200, 16, 4),
        PATTERNS[2],
        4002,
        Kind::Float,
        Loss::Weighted,
    );
}

/// Output gradients that are expanded, strided or missing.
#[test]
fn float32_gradient_layouts_match_cpu() {
    for (i, kind) in [Loss::Sums, Loss::Transposed, Loss::LastOnly, Loss::OutOnly]
        .into_iter()
        .enumerate()
    {
        check_cuda_vs_cpu((2, 6, 150, 16, 2), ALL, 5000 + i as u64, Kind::Float, kind);
        check_cuda_vs_cpu((1, 4, 3000, 16, 1), ALL, 5100 + i as u64, Kind::Float, kind);
    }
}

#[test]
fn bfloat16_matches_cpu() {
    let shapes: [Shape; 5] = [
        (2, 6, 1, 16, 1),
        (2, 6, 100, 16, 2),
        (1, 4, 3000, 16, 1),
        (2, 1024, 130, 16, 1),
        (2, 4, 129, 64, 1),
    ];
    for (i, shape) in shapes.into_iter().enumerate() {
        let o = if i % 2 == 0 { ALL } else { PATTERNS[3] };
        check_cuda_vs_cpu(shape, o, 6000 + i as u64, Kind::BFloat16, Loss::Weighted);
    }
    check_cuda_vs_cpu((2, 6, 100, 16, 2), ALL, 6100, Kind::BFloat16, Loss::Sums);
}

/// CUDA directly against the pure-tch reference (float64 on the CPU).
#[test]
fn float32_matches_reference() {
    let host = Problem::new(7001, (2, 6, 97, 16, 2), ALL, Kind::Float);
    let dev = host.on(GPU, Kind::Float);
    let (out_g, last_g, g_g) = dev.run(Loss::Weighted);
    let refp = host.on(Device::Cpu, Kind::Double);
    let r = selective_scan_ref(&refp.inputs()).unwrap();
    let loss = (&r.out * refp.w_out.to_kind(Kind::Double)).sum(Kind::Double)
        + (&r.last_state * refp.w_last.to_kind(Kind::Double)).sum(Kind::Double);
    let leaves: Vec<&Tensor> = refp.leaves().iter().map(|(_, t)| *t).collect();
    let g_r = Tensor::run_backward(&[loss], &leaves, false, false);
    assert!(rel_err(&out_g, &r.out) <= 1e-4);
    assert!(rel_err(&last_g, &r.last_state) <= 1e-4);
    for ((name, _), (a, b)) in refp.leaves().iter().zip(g_g.iter().zip(&g_r)) {
        let e = rel_err(a, b);
        assert!(e <= 1e-4, "grad of {name} vs reference: rel err {e:.2e}");
    }
}

/// No atomics anywhere: two runs give bit-identical outputs and gradients.
#[test]
fn repeated_runs_are_bit_identical() {
    for (shape, io) in [
        ((2, 1024, 300, 16, 1), Kind::Float),
        ((1, 8, 4000, 16, 1), Kind::Float),
        ((2, 64, 500, 16, 2), Kind::BFloat16),
    ] {
        let host = Problem::new(8001, shape, ALL, io);
        let dev = host.on(GPU, io);
        let (o1, l1, g1) = dev.run(Loss::Weighted);
        poison_cuda_cache();
        let (o2, l2, g2) = dev.run(Loss::Weighted);
        assert!(
            o1.equal(&o2) && l1.equal(&l2),
            "outputs differ between runs {shape:?}"
        );
        for ((name, _), (a, b)) in dev.leaves().iter().zip(g1.iter().zip(&g2)) {
            assert!(
                a.equal(b),
                "grad of {name} differs between runs {shape:?} {io:?}"
            );
        }
    }
}

/// The inference path (no autograd, no checkpoints) gives the same outputs as the training path.
#[test]
fn forward_without_gradients_equals_forward_with() {
    for shape in [(2, 6, 100, 16, 2), (1, 4, 5000, 16, 1)] {
        let host = Problem::new(9001, shape, ALL, Kind::Float);
        let dev = host.on(GPU, Kind::Float);
        let with = selective_scan(&dev.inputs()).unwrap();
        poison_cuda_cache();
        let without = tch::no_grad(|| selective_scan(&dev.inputs()).unwrap());
        assert!(with.out.equal(&without.out), "{shape:?}");
        assert!(with.last_state.equal(&without.last_state), "{shape:?}");
        assert_eq!(without.out.device(), GPU);
        assert_eq!(without.last_state.kind(), Kind::Float);
    }
}

#[test]
fn float64_on_cuda_is_a_clear_error() {
    let host = Problem::new(9101, (1, 2, 10, 4, 1), NONE, Kind::Float);
    let dev = host.on(GPU, Kind::Double);
    let err = selective_scan(&dev.inputs()).unwrap_err().to_string();
    assert!(err.contains("float64 is not supported"), "{err}");
}

/// Largest element-wise difference relative to the reference's largest magnitude, plus whether
/// `x` is finite everywhere (a local error, e.g. one bad chunk, hides in a norm-wise error).
fn max_err(x: &Tensor, reference: &Tensor) -> f64 {
    assert!(
        x.isfinite().all().int64_value(&[]) == 1,
        "non-finite values in the result"
    );
    let scale = reference.abs().max().double_value(&[]);
    let diff = (x - reference).abs().max().double_value(&[]);
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// The bfloat16 kernels against the float32 ones on the same (bf16-representable) values at the
/// language model's training shapes (B × d_inner × L, N = 16, gout a transposed view as out_proj
/// gives it), element-wise: the bf16 path must only add the rounding of its outputs.
#[test]
fn bfloat16_matches_float32_at_training_shapes() {
    for (i, shape) in [(32, 128, 8192, 16, 1), (16, 128, 16384, 16, 1)]
        .into_iter()
        .enumerate()
    {
        let host = Problem::new(9201 + i as u64, shape, ALL, Kind::BFloat16);
        let (out_f, last_f, g_f) = host.on(GPU, Kind::Float).run(Loss::Transposed);
        poison_cuda_cache();
        let dev = host.on(GPU, Kind::BFloat16);
        let (out_b, last_b, g_b) = dev.run(Loss::Transposed);
        let ctx = format!("(B, D, L, N, G) = {shape:?}");
        let e = max_err(&out_b, &out_f);
        assert!(e <= 2e-2, "out: max err {e:.2e} ({ctx})");
        let e = max_err(&last_b, &last_f);
        assert!(e <= 2e-2, "last_state: max err {e:.2e} ({ctx})");
        for ((name, _), (a, b)) in dev.leaves().iter().zip(g_b.iter().zip(&g_f)) {
            let e = max_err(a, b);
            assert!(e <= 2e-2, "grad of {name}: max err {e:.2e} ({ctx})");
            let e = rel_err(a, b);
            assert!(e <= 2e-2, "grad of {name}: rel err {e:.2e} ({ctx})");
        }
    }
}
