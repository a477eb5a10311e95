//! Multi-tensor training ops (`csrc/optim.cpp`): the global gradient norm with clipping, the fused
//! AdamW update and zeroing, each over a whole list of tensors in a few kernel launches.

use tch::Tensor;

use super::ffi::{self, WmTensor};
use crate::Result;

fn handles(ts: &[Tensor]) -> Vec<WmTensor> {
    ts.iter().map(ffi::lend).collect()
}

/// Global L2 norm of `grads` as a 0-dim float64 tensor on their device (no host sync); when
/// `max_norm > 0` every gradient is scaled in place by `min(1, max_norm / (norm + 1e-6))` (left
/// alone when the norm is not finite).
///
/// # Errors
/// No gradients, tensors on several devices, …
pub fn clip_grad_norm_(grads: &[Tensor], max_norm: f64) -> Result<Tensor> {
    let mut h = handles(grads);
    let mut total = std::ptr::null_mut();
    // SAFETY: the handles point at live tensors for the duration of the call; the output is
    // adopted once below.
    let status =
        unsafe { ffi::wm_clip_grad_norm(h.as_mut_ptr(), h.len() as i64, max_norm, &mut total) };
    ffi::check("clip_grad_norm", status)?;
    // SAFETY: a fresh handle from the library.
    Ok(unsafe { ffi::adopt(total) })
}

/// Hyper-parameters of one AdamW update.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Update number, 1-based (bias corrections use it).
    pub step: i64,
}

/// PyTorch's fused AdamW update of `params` in place (moments `m`, `v` updated too), float32.
/// The four lists are parallel; gradients are left as they are. When `skip` (a 0-dim tensor) is
/// nonzero the update is skipped, decided on the device (no host sync).
///
/// # Errors
/// Mismatched lists or shapes, non-float32 tensors, several devices.
pub fn adamw_step_(
    params: &[Tensor],
    grads: &[Tensor],
    m: &[Tensor],
    v: &[Tensor],
    s: AdamWStep,
    skip: Option<&Tensor>,
) -> Result<()> {
    let n = params.len();
    if grads.len() != n || m.len() != n || v.len() != n {
        return Err(crate::Error::Kernel {
            op: "adamw_step",
            message: "parameter, gradient and moment lists differ in length".into(),
        });
    }
    let (mut p, mut g, mut m, mut v) = (handles(params), handles(grads), handles(m), handles(v));
    // SAFETY: the handles point at live tensors for the duration of the call.
    let status = unsafe {
        ffi::wm_adamw_step(
            p.as_mut_ptr(),
            g.as_mut_ptr(),
            m.as_mut_ptr(),
            v.as_mut_ptr(),
            n as i64,
            s.lr,
            s.beta1,
            s.beta2,
            s.eps,
            s.weight_decay,
            s.step,
            ffi::lend_opt(skip),
        )
    };
    ffi::check("adamw_step", status)
}

/// Sets every tensor of `ts` to zero.
///
/// # Errors
/// Kernel errors.
pub fn zero_(ts: &[Tensor]) -> Result<()> {
    let mut h = handles(ts);
    // SAFETY: the handles point at live tensors for the duration of the call.
    let status = unsafe { ffi::wm_zero_(h.as_mut_ptr(), h.len() as i64) };
    ffi::check("zero_", status)
}
