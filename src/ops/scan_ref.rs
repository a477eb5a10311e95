//! Reference selective scan in plain tch ops, one time step at a time: slow, obviously correct,
//! differentiable by tch's autograd. The test oracle for the kernels, and the baseline of
//! `wavemamba bench scan`.

use tch::{Kind, Tensor};

use super::scan::{ScanInputs, ScanOutput};
use crate::Result;

/// Same contract as [`super::selective_scan`], computed op by op in the input's float dtype
/// (float64 stays float64, everything else in float32).
///
/// # Errors
/// Argument errors from [`ScanInputs::validate`].
// `x = x + y` on purpose: `to_kind` returns the caller's own tensor when the dtype already
// matches, and `+=` would change it in place (and break its autograd graph).
#[allow(clippy::assign_op_pattern)]
pub fn selective_scan_ref(x: &ScanInputs) -> Result<ScanOutput> {
    let dims = x.validate()?;
    let kind = if x.u.kind() == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    };
    let (batch, dim, len, n, g) = (dims.batch, dims.dim, dims.len, dims.dstate, dims.groups);
    let u = x.u.to_kind(kind);
    let mut delta = x.delta.to_kind(kind);
    if let Some(bias) = x.delta_bias {
        delta = delta + bias.to_kind(kind).view([1, dim, 1]);
    }
    let dt = if x.delta_softplus {
        delta.softplus()
    } else {
        delta
    }; // (B, D, L)
    let a = x.a.to_kind(kind); // (D, N)
                               // B, C → (B, D, N, L): each channel uses its group's B and C.
    let per_channel = |t: &Tensor| {
        t.to_kind(kind)
            .view([batch, g, 1, n, len])
            .expand([batch, g, dim / g, n, len], false)
            .reshape([batch, dim, n, len])
    };
    let (bm, cm) = (per_channel(x.b), per_channel(x.c));
    let mut h = match x.initial_state {
        Some(h0) => h0.to_kind(kind),
        None => Tensor::zeros([batch, dim, n], (kind, u.device())),
    };
    let mut ys = Vec::with_capacity(len as usize);
    for t in 0..len {
        let dt_t = dt.select(2, t).unsqueeze(-1); // (B, D, 1)
        let decay = (&dt_t * &a).exp(); // (B, D, N)
        let input = &dt_t * bm.select(3, t) * u.select(2, t).unsqueeze(-1); // (B, D, N)
        h = decay * h + input;
        ys.push((&h * cm.select(3, t)).sum_dim_intlist(-1, false, kind)); // (B, D)
    }
    let mut out = Tensor::stack(&ys, 2); // (B, D, L)
    if let Some(d) = x.d {
        out = out + &u * d.to_kind(kind).view([1, dim, 1]);
    }
    if let Some(z) = x.z {
        out = out * z.to_kind(kind).silu();
    }
    Ok(ScanOutput {
        out: out.to_kind(x.u.kind()),
        last_state: h,
    })
}
