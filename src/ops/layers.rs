//! Fused CUDA layers (`csrc/layers.cpp`, kernels in `csrc/cuda/layers.cu`), differentiable. The
//! model calls them for CUDA tensors when the build has CUDA kernels ([`fused_layers_for`]); on
//! the CPU it keeps its ATen composites, which the CUDA tests use as references.

use tch::Tensor;

use super::ffi;
use crate::Result;

/// Whether the fused layers serve tensors on `device`: a CUDA device, a `--features cuda` build,
/// and not switched off by `WM_FUSED_LAYERS=0` (to compare with the ATen composites).
pub fn fused_layers_for(device: tch::Device) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    device.is_cuda()
        && cfg!(feature = "cuda")
        && !*OFF.get_or_init(|| std::env::var("WM_FUSED_LAYERS").is_ok_and(|v| v == "0"))
}

/// `silu(conv1d(x) + bias)`: the Mamba block's causal depthwise convolution (zero history) and
/// its activation in one kernel. With `bf16_twin` it also returns the same values in bfloat16, as
/// a second differentiable output: under autocast the next matmul takes that one and skips its
/// own cast (its gradient joins the float32 one in the same backward kernel).
///
/// # Shapes
/// `x`: (B, D, L) float32 or bfloat16, unit stride along L; `weight`: (D, 1, K), K ≤ 8;
/// `bias`: (D) → (B, D, L) float32 [and (B, D, L) bfloat16].
///
/// # Errors
/// Shapes, dtypes, non-CUDA tensors, a build without CUDA kernels.
pub fn causal_conv1d_silu(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    bf16_twin: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (mut out, mut out16) = (std::ptr::null_mut(), std::ptr::null_mut());
    let twin_ptr = if bf16_twin {
        &mut out16 as *mut _
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: lent handles stay alive for the call; the outputs are adopted once below.
    let status = unsafe {
        ffi::wm_causal_conv1d_silu(
            ffi::lend(x),
            ffi::lend(weight),
            ffi::lend_opt(bias),
            &mut out,
            twin_ptr,
        )
    };
    ffi::check("causal_conv1d_silu", status)?;
    // SAFETY: fresh handles from the library (the twin only when asked for).
    let y = unsafe { ffi::adopt(out) };
    let y16 = bf16_twin.then(|| unsafe { ffi::adopt(out16) });
    Ok((y, y16))
}

/// RMSNorm `x / √(mean(x²) + eps) · weight` over the last dimension, in float32 or, with
/// `bf16_out`, in bfloat16 (for a consumer that autocast would cast to bfloat16 anyway: the same
/// values without the separate cast, either way).
///
/// # Shapes
/// `x`: (…, C) float32, C ≤ 1024; `weight`: (C) → (…, C).
///
/// # Errors
/// Shapes, dtypes, non-CUDA tensors, a build without CUDA kernels.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, bf16_out: bool) -> Result<Tensor> {
    let mut out = std::ptr::null_mut();
    // SAFETY: as above.
    let status = unsafe {
        ffi::wm_rms_norm(
            ffi::lend(x),
            ffi::lend(weight),
            eps,
            i32::from(bf16_out),
            &mut out,
        )
    };
    ffi::check("rms_norm", status)?;
    // SAFETY: a fresh handle from the library.
    Ok(unsafe { ffi::adopt(out) })
}
