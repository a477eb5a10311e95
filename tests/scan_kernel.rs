//! The CPU selective scan kernel (csrc/) against the pure-tch reference: forward, every gradient,
//! float64 finite differences, chaining through the state, and argument errors.

use tch::{Device, Kind, Tensor};
use wavemamba::ops::{selective_scan, selective_scan_ref, ScanInputs, ScanOutput};
use wavemamba::Error;

/// Deterministic random tensors from a local generator: tch's global generator is shared by the
/// tests running concurrently in this process, so seeding it would not make a test repeatable.
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

    fn tensor(
        &mut self,
        shape: &[i64],
        kind: Kind,
        mut sample: impl FnMut(&mut Rng) -> f64,
    ) -> Tensor {
        let n: i64 = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| sample(self)).collect();
        Tensor::from_slice(&v).reshape(shape).to_kind(kind)
    }

    /// Uniform in [0, 1).
    fn rand(&mut self, shape: &[i64], kind: Kind) -> Tensor {
        self.tensor(shape, kind, Rng::next_f64)
    }

    /// Standard normal (Box-Muller).
    fn randn(&mut self, shape: &[i64], kind: Kind) -> Tensor {
        self.tensor(shape, kind, |r| {
            let (a, b) = (r.next_f64().max(1e-300), r.next_f64());
            (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
        })
    }
}

/// Which optional inputs a case uses.
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

/// Random (never zero) inputs as leaf tensors that require gradients.
struct Problem {
    /// Weights of the loss on `out` and `last_state`.
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

impl Problem {
    fn new(
        seed: i64,
        kind: Kind,
        (bsz, dim, len, n, g): (i64, i64, i64, i64, i64),
        o: Opts,
    ) -> Self {
        let mut rng = Rng(seed as u64);
        let leaf = |t: Tensor| t.set_requires_grad(true);
        let bc: Vec<i64> = if g == 1 {
            vec![bsz, n, len]
        } else {
            vec![bsz, g, n, len]
        };
        // Without softplus delta is the step itself: keep it positive and small so the state
        // decays (A < 0), as in a trained model.
        let delta = if o.softplus {
            rng.randn(&[bsz, dim, len], kind) * 0.5 - 1.0
        } else {
            rng.rand(&[bsz, dim, len], kind) * 0.09 + 0.01
        };
        Problem {
            w_out: rng.randn(&[bsz, dim, len], kind),
            w_last: rng.randn(&[bsz, dim, n], kind),
            u: leaf(rng.randn(&[bsz, dim, len], kind)),
            delta: leaf(delta),
            a: leaf(-(rng.randn(&[dim, n], kind) * 0.5).exp()),
            b: leaf(rng.randn(&bc, kind)),
            c: leaf(rng.randn(&bc, kind)),
            d: o.d.then(|| leaf(rng.randn(&[dim], kind))),
            z: o.z.then(|| leaf(rng.randn(&[bsz, dim, len], kind))),
            bias: o.bias.then(|| {
                let bias = if o.softplus {
                    rng.randn(&[dim], kind) * 0.3 - 1.0
                } else {
                    rng.rand(&[dim], kind) * 0.05
                };
                leaf(bias)
            }),
            h0: o.h0.then(|| leaf(rng.randn(&[bsz, dim, n], kind))),
            softplus: o.softplus,
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
}

/// A scalar loss with random weights on both outputs, so every output gradient is non-trivial.
fn loss(p: &Problem, r: &ScanOutput) -> Tensor {
    let k = r.out.kind();
    (&r.out * &p.w_out).sum(k) + (&r.last_state * &p.w_last).sum(k)
}

fn rel_err(x: &Tensor, reference: &Tensor) -> f64 {
    let diff = (x - reference).norm().double_value(&[]);
    let norm = reference.norm().double_value(&[]);
    assert!(
        norm.is_finite(),
        "reference norm is {norm}: the test would prove nothing"
    );
    if norm == 0.0 {
        // Exactly zero by construction (e.g. dA with L = 1 and no initial state): demand zero.
        return diff;
    }
    diff / norm
}

fn grads(p: &Problem, r: &ScanOutput) -> Vec<Tensor> {
    let leaves: Vec<&Tensor> = p.leaves().iter().map(|(_, t)| *t).collect();
    Tensor::run_backward(&[loss(p, r)], &leaves, false, false)
}

/// Kernel vs reference, outputs ≤ 1e-5 and gradients ≤ 1e-4 relative error (float32).
fn check_against_reference(shape: (i64, i64, i64, i64, i64), o: Opts, seed: i64) {
    let p = Problem::new(seed, Kind::Float, shape, o);
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
    let patterns = [
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
    let mut case = 0;
    for len in [1, 7, 2048, 5000] {
        for n in [1, 16, 64] {
            for g in [1, 2] {
                let dim = if len >= 2048 { 4 } else { 6 };
                check_against_reference(
                    (2, dim, len, n, g),
                    patterns[case % patterns.len()],
                    case as i64,
                );
                case += 1;
            }
        }
    }
}

#[test]
fn matches_reference_with_every_option_combination() {
    for mask in 0..32u32 {
        let o = Opts {
            d: mask & 1 != 0,
            z: mask & 2 != 0,
            bias: mask & 4 != 0,
            softplus: mask & 8 != 0,
            h0: mask & 16 != 0,
        };
        check_against_reference((2, 4, 67, 16, 2), o, 100 + mask as i64);
    }
}

/// float64 gradients against central finite differences on a tiny problem.
#[test]
fn float64_gradients_match_finite_differences() {
    for (seed, g) in [(1, 1), (2, 2)] {
        let p = Problem::new(seed, Kind::Double, (1, 2, 5, 3, g), ALL);
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
    let p = Problem::new(5, Kind::Float, (bsz, dim, len, n, 1), ALL);
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
    let p = Problem::new(3, Kind::Float, (3, 8, 500, 16, 1), ALL);
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
    let p = Problem::new(4, Kind::Float, (2, 4, 10, 16, 1), NONE);
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
