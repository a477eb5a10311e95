//! The selective scan (Mamba S6) from `csrc/`: CPU kernel (and CUDA with `--features cuda`),
//! differentiable in every tensor input through a C++ autograd Function.

use tch::{Device, Kind, Tensor};

use super::ffi;
use crate::{Error, Result};

const OP: &str = "selective_scan";

/// Arguments of [`selective_scan`], named as in the official `selective_scan_fn`.
///
/// # Shapes
/// `u`, `delta`, `z`: (B, D, L); `a`: (D, N); `b`, `c`: (B, N, L) or (B, G, N, L) with D % G == 0;
/// `d`, `delta_bias`: (D); `initial_state`: (B, D, N).
#[derive(Clone, Copy)]
pub struct ScanInputs<'a> {
    pub u: &'a Tensor,
    pub delta: &'a Tensor,
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub c: &'a Tensor,
    pub d: Option<&'a Tensor>,
    pub z: Option<&'a Tensor>,
    pub delta_bias: Option<&'a Tensor>,
    pub initial_state: Option<&'a Tensor>,
    pub delta_softplus: bool,
}

/// Result of a scan.
///
/// # Shapes
/// `out`: (B, D, L) in `u`'s dtype; `last_state`: (B, D, N), float32 (float64 for float64 input).
#[derive(Debug)]
pub struct ScanOutput {
    pub out: Tensor,
    pub last_state: Tensor,
}

/// Sizes of a validated scan problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanDims {
    pub batch: i64,
    pub dim: i64,
    pub len: i64,
    pub dstate: i64,
    pub groups: i64,
}

impl ScanInputs<'_> {
    /// Checks every shape, dtype and device; names the offending argument.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::DType`] or [`Error::Device`].
    pub fn validate(&self) -> Result<ScanDims> {
        let us = self.u.size();
        let [batch, dim, len] = us[..] else {
            return Err(shape_err("u", "(batch, dim, len)", us));
        };
        if batch == 0 || dim == 0 || len == 0 {
            return Err(shape_err(
                "u",
                "(batch, dim, len) with no empty dimension",
                us,
            ));
        }
        let dstate = match self.a.size()[..] {
            [d, n] if d == dim && n > 0 => n,
            _ => return Err(shape_err("a", &format!("({dim}, N)"), self.a.size())),
        };
        let (groups, bc_shape) = match self.b.size()[..] {
            [_, _, _] => (1, vec![batch, dstate, len]),
            [_, g, _, _] if g > 0 && dim % g == 0 => (g, vec![batch, g, dstate, len]),
            _ => {
                let want = format!("({batch}, {dstate}, {len}) or ({batch}, G, {dstate}, {len}) with {dim} % G == 0");
                return Err(shape_err("b", &want, self.b.size()));
            }
        };
        expect_shape("delta", self.delta, &us)?;
        expect_shape("b", self.b, &bc_shape)?;
        expect_shape("c", self.c, &bc_shape)?;
        let device = self.u.device();
        for (arg, t) in [
            ("u", self.u),
            ("delta", self.delta),
            ("a", self.a),
            ("b", self.b),
            ("c", self.c),
        ] {
            expect_float(arg, t)?;
            expect_device(arg, t, device)?;
        }
        let optional = [
            ("d", self.d, vec![dim]),
            ("z", self.z, us.clone()),
            ("delta_bias", self.delta_bias, vec![dim]),
            (
                "initial_state",
                self.initial_state,
                vec![batch, dim, dstate],
            ),
        ];
        for (arg, t, shape) in optional {
            if let Some(t) = t {
                expect_shape(arg, t, &shape)?;
                expect_float(arg, t)?;
                expect_device(arg, t, device)?;
            }
        }
        Ok(ScanDims {
            batch,
            dim,
            len,
            dstate,
            groups,
        })
    }
}

/// Runs the selective scan kernel:
/// `dt = softplus?(delta + delta_bias)`, `h_t = exp(dt·A)·h_{t−1} + dt·B_t·u_t`,
/// `y_t = Σ_n C_t·h_t`, `out = (y + D·u)·silu(z)`, starting from `initial_state` (or zeros).
///
/// Gradients flow into every tensor argument (and from `last_state`) when autograd is on.
///
/// # Errors
/// Argument errors from [`ScanInputs::validate`]; [`Error::Kernel`] if the C++ side fails (for
/// example a CUDA tensor in a build without CUDA kernels).
pub fn selective_scan(x: &ScanInputs) -> Result<ScanOutput> {
    x.validate()?;
    let mut out = std::ptr::null_mut();
    let mut last = std::ptr::null_mut();
    // SAFETY: all lent tensors outlive the call; on success both outputs are fresh handles.
    let status = unsafe {
        ffi::wm_selective_scan(
            ffi::lend(x.u),
            ffi::lend(x.delta),
            ffi::lend(x.a),
            ffi::lend(x.b),
            ffi::lend(x.c),
            ffi::lend_opt(x.d),
            ffi::lend_opt(x.z),
            ffi::lend_opt(x.delta_bias),
            ffi::lend_opt(x.initial_state),
            x.delta_softplus as std::ffi::c_int,
            &mut out,
            &mut last,
        )
    };
    ffi::check(OP, status)?;
    // SAFETY: adopted once each.
    Ok(unsafe {
        ScanOutput {
            out: ffi::adopt(out),
            last_state: ffi::adopt(last),
        }
    })
}

fn shape_err(arg: &'static str, expected: &str, got: Vec<i64>) -> Error {
    Error::Shape {
        op: OP,
        arg,
        expected: expected.to_owned(),
        got,
    }
}

fn expect_shape(arg: &'static str, t: &Tensor, shape: &[i64]) -> Result<()> {
    if t.size() == shape {
        Ok(())
    } else {
        Err(shape_err(arg, &format!("{shape:?}"), t.size()))
    }
}

fn expect_float(arg: &'static str, t: &Tensor) -> Result<()> {
    match t.kind() {
        Kind::Float | Kind::Double | Kind::BFloat16 | Kind::Half => Ok(()),
        got => Err(Error::DType {
            op: OP,
            arg,
            expected: "floating point",
            got,
        }),
    }
}

fn expect_device(arg: &'static str, t: &Tensor, device: Device) -> Result<()> {
    if t.device() == device {
        Ok(())
    } else {
        Err(Error::Device {
            op: OP,
            arg,
            reference: "u",
            expected: device,
            got: t.device(),
        })
    }
}
