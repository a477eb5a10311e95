//! Random selective-scan problems shared by the scan tests (the CPU kernel in scan_kernel.rs, the
//! CUDA kernel in cuda_scan.rs): a local generator, the optional-input patterns, and the inputs as
//! leaves on a device.

use tch::{Device, Kind, Tensor};
use wavemamba::ops::ScanInputs;

/// Deterministic random values from a local generator (splitmix64): tch's global generator is
/// shared by the tests running concurrently in a process, so seeding it would not make a test
/// repeatable.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A float64 tensor of `shape` drawn element by element.
    pub fn tensor(&mut self, shape: &[i64], mut sample: impl FnMut(&mut Rng) -> f64) -> Tensor {
        let n: i64 = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| sample(self)).collect();
        Tensor::from_slice(&v).reshape(shape)
    }

    /// Uniform in [0, 1).
    pub fn rand(&mut self, shape: &[i64]) -> Tensor {
        self.tensor(shape, Rng::next_f64)
    }

    /// Standard normal (Box–Muller).
    pub fn randn(&mut self, shape: &[i64]) -> Tensor {
        self.tensor(shape, |r| {
            let (a, b) = (r.next_f64().max(1e-300), r.next_f64());
            (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
        })
    }
}

/// Which optional inputs a case uses.
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    pub d: bool,
    pub z: bool,
    pub bias: bool,
    pub softplus: bool,
    pub h0: bool,
}

impl Opts {
    /// Bits 0–4 of `mask` switch d, z, bias, softplus and h0 on: 0..32 covers every combination.
    pub fn from_mask(mask: u32) -> Opts {
        Opts {
            d: mask & 1 != 0,
            z: mask & 2 != 0,
            bias: mask & 4 != 0,
            softplus: mask & 8 != 0,
            h0: mask & 16 != 0,
        }
    }
}

pub const ALL: Opts = Opts {
    d: true,
    z: true,
    bias: true,
    softplus: true,
    h0: true,
};
pub const NONE: Opts = Opts {
    d: false,
    z: false,
    bias: false,
    softplus: false,
    h0: false,
};

/// Patterns the size sweeps rotate through.
pub const PATTERNS: [Opts; 5] = [
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

/// (B, D, L, N, G)
pub type Shape = (i64, i64, i64, i64, i64);

/// The scan's inputs and the weights of a loss on its two outputs (`out`, `last_state`).
pub struct Problem {
    pub w_out: Tensor,
    pub w_last: Tensor,
    pub u: Tensor,
    pub delta: Tensor,
    pub a: Tensor,
    pub b: Tensor,
    pub c: Tensor,
    pub d: Option<Tensor>,
    pub z: Option<Tensor>,
    pub bias: Option<Tensor>,
    pub h0: Option<Tensor>,
    pub softplus: bool,
}

impl Problem {
    /// Random (never zero) values as float64 CPU tensors, u, delta, B, C and z rounded through
    /// float32 and `io`, so that runs in `io` and in wider types see the same values. Use
    /// [`Problem::on`] for leaves.
    pub fn new(seed: u64, (bsz, dim, len, n, g): Shape, o: Opts, io: Kind) -> Problem {
        let mut rng = Rng(seed);
        let round = |t: Tensor| t.to_kind(Kind::Float).to_kind(io).to_kind(Kind::Double);
        let bc: Vec<i64> = if g == 1 {
            vec![bsz, n, len]
        } else {
            vec![bsz, g, n, len]
        };
        // Without softplus delta is the step itself: keep it positive and small so the state
        // decays (A < 0), as in a trained model.
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
    }

    /// Fresh leaves requiring gradients on `device`: u, delta, B, C and z in `io`, the other
    /// inputs and the loss weights in float32 (float64 when `io` is).
    pub fn on(&self, device: Device, io: Kind) -> Problem {
        let rest = if io == Kind::Double {
            Kind::Double
        } else {
            Kind::Float
        };
        let leaf = |t: &Tensor, kind: Kind| {
            t.detach()
                .to_device(device)
                .to_kind(kind)
                .copy()
                .set_requires_grad(true)
        };
        let plain = |t: &Tensor| t.detach().to_device(device).to_kind(rest).copy();
        Problem {
            w_out: plain(&self.w_out),
            w_last: plain(&self.w_last),
            u: leaf(&self.u, io),
            delta: leaf(&self.delta, io),
            a: leaf(&self.a, rest),
            b: leaf(&self.b, io),
            c: leaf(&self.c, io),
            d: self.d.as_ref().map(|t| leaf(t, rest)),
            z: self.z.as_ref().map(|t| leaf(t, io)),
            bias: self.bias.as_ref().map(|t| leaf(t, rest)),
            h0: self.h0.as_ref().map(|t| leaf(t, rest)),
            softplus: self.softplus,
        }
    }

    pub fn inputs(&self) -> ScanInputs<'_> {
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

    /// Every input that is present, by its `ScanInputs` name.
    pub fn leaves(&self) -> Vec<(&'static str, &Tensor)> {
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

/// ‖x − reference‖ / ‖reference‖; the plain difference where the reference is exactly zero by
/// construction (e.g. dA with L = 1 and no initial state).
pub fn rel_err(x: &Tensor, reference: &Tensor) -> f64 {
    let diff = (x - reference).norm().double_value(&[]);
    let norm = reference.norm().double_value(&[]);
    assert!(
        norm.is_finite(),
        "reference norm is {norm}: the test would prove nothing"
    );
    if norm == 0.0 {
        return diff;
    }
    diff / norm
}
