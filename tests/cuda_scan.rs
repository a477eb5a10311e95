//! The CUDA selective scan (csrc/cuda/) against the CPU kernel and the pure-tch reference: forward
//! and every gradient, float32 (≤ 1e-4 relative) and bfloat16 (≤ 2e-2), odd sizes (L = 1, L not a
//! multiple of the 64-step chunk, N = 1 … 64, groups), both schedules (one block per row range
//! over all of L, and time split into segments), poisoned allocator memory so unwritten outputs
//! show up as NaN, and bit-identical repeated runs. Built with `--features cuda`; runs on a GPU
//! machine (scripts/gpu-run.sh).
#![cfg(feature = "cuda")]

mod common;

use common::scan_problem::{rel_err, Opts, Problem, Shape, ALL, NONE, PATTERNS};
use tch::{Device, Kind, Tensor};
use wavemamba::ops::{selective_scan, selective_scan_ref, ScanOutput};

const GPU: Device = Device::Cuda(0);

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

impl Problem {
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

/// The CPU leaves (float32) of a problem whose u, delta, B, C and z are representable in `io`.
fn host(seed: u64, shape: Shape, o: Opts, io: Kind) -> Problem {
    Problem::new(seed, shape, o, io).on(Device::Cpu, Kind::Float)
}

/// CUDA (in `io`) against the CPU kernel (float32) on the same values.
fn check_cuda_vs_cpu(shape: Shape, o: Opts, seed: u64, io: Kind, kind: Loss) {
    let tol = if io == Kind::BFloat16 { 2e-2 } else { 1e-4 };
    let host = host(seed, shape, o, io);
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
        let o = Opts::from_mask(mask);
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

/// Enough rows that the forward picks several states per lane (`forward_width` in
/// csrc/scan/scan_cuda.cpp): 2 in float32 from 8192 rows, 4 in bfloat16 from 16384, with a last
/// row block only partly filled (D / G not a multiple of the block's rows).
#[test]
fn wide_forward_layouts_match_cpu() {
    check_cuda_vs_cpu((4, 2050, 70, 16, 2), ALL, 4101, Kind::Float, Loss::Weighted);
    check_cuda_vs_cpu(
        (8, 2100, 70, 16, 2),
        PATTERNS[2],
        4102,
        Kind::BFloat16,
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
    let host = host(7001, (2, 6, 97, 16, 2), ALL, Kind::Float);
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
        let host = host(8001, shape, ALL, io);
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
        let host = host(9001, shape, ALL, Kind::Float);
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
    let host = host(9101, (1, 2, 10, 4, 1), NONE, Kind::Float);
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
        let host = host(9201 + i as u64, shape, ALL, Kind::BFloat16);
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
