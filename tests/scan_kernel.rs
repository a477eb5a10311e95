//! The CPU selective scan kernel (csrc/) against the pure-tch reference: forward, every gradient,
//! float64 finite differences, chaining through the state, and argument errors.

mod common;

use common::scan_problem::{rel_err, Opts, Problem, Shape, ALL, NONE, PATTERNS};
use tch::{Device, Kind, Tensor};
use wavemamba::ops::{selective_scan, selective_scan_ref, ScanInputs, ScanOutput};
use wavemamba::Error;

/// Leaves in `kind` (every input and the loss weights) on the CPU.
fn problem(seed: u64, kind: Kind, shape: Shape, o: Opts) -> Problem {
    Problem::new(seed, shape, o, kind).on(Device::Cpu, kind)
}

/// A scalar loss with random weights on both outputs, so every output gradient is non-trivial.
fn loss(p: &Problem, r: &ScanOutput) -> Tensor {
    let k = r.out.kind();
    (&r.out * &p.w_out).sum(k) + (&r.last_state * &p.w_last).sum(k)
}

fn grads(p: &Problem, r: &ScanOutput) -> Vec<Tensor> {
    let leaves: Vec<&Tensor> = p.leaves().iter().map(|(_, t)| *t).collect();
    Tensor::run_backward(&[loss(p, r)], &leaves, false, false)
}

/// Kernel vs reference, outputs ≤ 1e-5 and gradients ≤ 1e-4 relative error (float32).
fn check_against_reference(shape: Shape, o: Opts, seed: u64) {
    let p = problem(seed, Kind::Float, shape, o);
    let k = selective_scan(&p.inputs()).expect("kernel");
    let r = selective_scan_ref(&p.inputs()).expect("reference");
    let ctx = format!("shape (B, D, L, N, G) = {shape:?}, {o:?}");
    let e = rel_err(&k.out, &r.out);
    assert!(e <= 1e-5, "out rel err {e:.2e} ({ctx})");
    let e = rel_err(&k.last_state, &r.last_state);
    assert!(e <= 1e-5, "last_state rel err {e:.2e} ({ctx})");
    let gk = grads(&p, &k);
    let gr = grads(&p, &r);
    for ((name, _), (a, b)) in p.leaves().iter().zip(gk.iter().zip(&gr)) {
        let e = rel_err(a, b);
        assert!(e <= 1e-4, "grad of {name}: rel err {e:.2e} ({ctx})");
    }
}

/// Every (L, N, G) of the issue, with the optional inputs rotating through on/off patterns.
#[test]
fn matches_reference_across_sizes_and_options() {
    let mut case = 0;
    for len in [1, 7, 2048, 5000] {
        for n in [1, 16, 64] {
            for g in [1, 2] {
                let dim = if len >= 2048 { 4 } else { 6 };
                check_against_reference(
                    (2, dim, len, n, g),
                    PATTERNS[case % PATTERNS.len()],
                    case as u64,
                );
                case += 1;
            }
        }
    }
}

#[test]
fn matches_reference_with_every_option_combination() {
    for mask in 0..32u32 {
        let o = Opts::from_mask(mask);
        check_against_reference((2, 4, 67, 16, 2), o, 100 + mask as u64);
    }
}

/// float64 gradients against central finite differences on a tiny problem.
#[test]
fn float64_gradients_match_finite_differences() {
    for (seed, g) in [(1, 1), (2, 2)] {
        let p = problem(seed, Kind::Double, (1, 2, 5, 3, g), ALL);
        let f = |p: &Problem| -> f64 {
            tch::no_grad(|| loss(p, &selective_scan(&p.inputs()).unwrap()).double_value(&[]))
        };
        let r = selective_scan(&p.inputs()).unwrap();
        let leaves: Vec<&Tensor> = p.leaves().iter().map(|(_, t)| *t).collect();
        let analytic = Tensor::run_backward(&[loss(&p, &r)], &leaves, false, false);
        let eps = 1e-6;
        for ((name, leaf), grad) in p.leaves().iter().zip(&analytic) {
            let flat = leaf.view([-1]);
            let gflat = grad.reshape([-1]);
            for i in 0..flat.size()[0] {
                let x0 = flat.double_value(&[i]);
                let _ = tch::no_grad(|| flat.get(i).fill_(x0 + eps));
                let plus = f(&p);
                let _ = tch::no_grad(|| flat.get(i).fill_(x0 - eps));
                let minus = f(&p);
                let _ = tch::no_grad(|| flat.get(i).fill_(x0));
                let numeric = (plus - minus) / (2.0 * eps);
                let exact = gflat.double_value(&[i]);
                let tol = 1e-6 * (1.0 + numeric.abs());
                assert!(
                    (numeric - exact).abs() <= tol,
                    "d loss / d {name}[{i}]: finite difference {numeric}, kernel {exact}"
                );
            }
        }
    }
}

/// Scanning [0, L1) then [L1, L) from the first part's last state equals one scan of [0, L):
/// outputs and gradients (through the state hand-over).
#[test]
fn chaining_through_the_state_equals_one_scan() {
    let (bsz, dim, len, n, l1) = (2, 4, 300, 16, 129);
    let p = problem(5, Kind::Float, (bsz, dim, len, n, 1), ALL);
    let whole = selective_scan(&p.inputs()).unwrap();
    let part = |t: &Tensor, start: i64, end: i64| t.narrow(-1, start, end - start);
    let (u, delta, b, c, z) = (&p.u, &p.delta, &p.b, &p.c, p.z.as_ref().unwrap());
    let first_parts = [
        part(u, 0, l1),
        part(delta, 0, l1),
        part(b, 0, l1),
        part(c, 0, l1),
        part(z, 0, l1),
    ];
    let second_parts = [
        part(u, l1, len),
        part(delta, l1, len),
        part(b, l1, len),
        part(c, l1, len),
        part(z, l1, len),
    ];
    let scan_part = |x: &[Tensor; 5], h0: Option<&Tensor>| {
        selective_scan(&ScanInputs {
            u: &x[0],
            delta: &x[1],
            a: &p.a,
            b: &x[2],
            c: &x[3],
            d: p.d.as_ref(),
            z: Some(&x[4]),
            delta_bias: p.bias.as_ref(),
            initial_state: h0,
            delta_softplus: true,
        })
        .unwrap()
    };
    let first = scan_part(&first_parts, p.h0.as_ref());
    let second = scan_part(&second_parts, Some(&first.last_state));
    let chained = ScanOutput {
        out: Tensor::cat(&[&first.out, &second.out], 2),
        last_state: second.last_state,
    };
    assert!(rel_err(&chained.out, &whole.out) <= 1e-6);
    assert!(rel_err(&chained.last_state, &whole.last_state) <= 1e-6);
    let g_whole = grads(&p, &whole);
    let g_chained = grads(&p, &chained);
    for ((name, _), (a, b)) in p.leaves().iter().zip(g_chained.iter().zip(&g_whole)) {
        let e = rel_err(a, b);
        assert!(
            e <= 1e-5,
            "grad of {name} through the chain: rel err {e:.2e}"
        );
    }
}

#[test]
fn repeated_runs_are_identical() {
    let p = problem(3, Kind::Float, (3, 8, 500, 16, 1), ALL);
    let a = selective_scan(&p.inputs()).unwrap();
    let ga = grads(&p, &a);
    let b = selective_scan(&p.inputs()).unwrap();
    let gb = grads(&p, &b);
    assert!(a.out.equal(&b.out) && a.last_state.equal(&b.last_state));
    for (x, y) in ga.iter().zip(&gb) {
        assert!(x.equal(y), "gradients differ between identical runs");
    }
}

#[test]
fn bad_arguments_name_the_argument() {
    let p = problem(4, Kind::Float, (2, 4, 10, 16, 1), NONE);
    let bad_c = Tensor::randn([2, 16, 11], (Kind::Float, Device::Cpu));
    let err = selective_scan(&ScanInputs {
        c: &bad_c,
        ..p.inputs()
    })
    .unwrap_err();
    assert!(matches!(err, Error::Shape { arg: "c", .. }), "{err}");
    assert!(
        err.to_string()
            .contains("argument `c` must have shape [2, 16, 10], got [2, 16, 11]"),
        "{err}"
    );
    let ints = Tensor::ones([2, 4, 10], (Kind::Int64, Device::Cpu));
    let err = selective_scan(&ScanInputs {
        delta: &ints,
        ..p.inputs()
    })
    .unwrap_err();
    assert!(matches!(err, Error::DType { arg: "delta", .. }), "{err}");
    let bad_a = Tensor::randn([5, 16], (Kind::Float, Device::Cpu));
    let err = selective_scan(&ScanInputs {
        a: &bad_a,
        ..p.inputs()
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("argument `a` must have shape (4, N)"),
        "{err}"
    );
    let bad_d = Tensor::randn([3], (Kind::Float, Device::Cpu));
    let err = selective_scan(&ScanInputs {
        d: Some(&bad_d),
        ..p.inputs()
    })
    .unwrap_err();
    assert!(matches!(err, Error::Shape { arg: "d", .. }), "{err}");
    let groups3 = Tensor::randn([2, 3, 16, 10], (Kind::Float, Device::Cpu));
    let err = selective_scan(&ScanInputs {
        b: &groups3,
        c: &groups3,
        ..p.inputs()
    })
    .unwrap_err();
    assert!(err.to_string().contains("4 % G == 0"), "{err}");
}
