//! Raw bindings to `csrc/wavemamba.h` and the one helper that turns its status codes into
//! [`Error::Kernel`]. Only `ops` uses these; everything public goes through safe wrappers.

use std::ffi::{c_char, c_int, c_void, CStr};

use tch::Tensor;
use torch_sys::C_tensor;

use crate::{Error, Result};

/// `wm_tensor` in the header: an `at::Tensor*`, the same handle tch uses.
pub(crate) type WmTensor = *mut C_tensor;

extern "C" {
    fn wm_last_error() -> *const c_char;
    pub(crate) fn wm_kernels() -> *const c_char;
    pub(crate) fn wm_torch_version() -> *const c_char;
    pub(crate) fn wm_cuda_device_count() -> c_int;
    pub(crate) fn wm_autocast_cuda_enter(
        dtype: c_int,
        prev_enabled: *mut c_int,
        prev_dtype: *mut c_int,
    );
    pub(crate) fn wm_autocast_cuda_exit(prev_enabled: c_int, prev_dtype: c_int);
    pub(crate) fn wm_autocast_cuda_state(enabled: *mut c_int, dtype: *mut c_int);
    pub(crate) fn wm_cuda_device_name(index: c_int, buf: *mut c_char, len: i64) -> c_int;
    pub(crate) fn wm_cuda_timer_new(device: c_int, timer: *mut *mut c_void) -> c_int;
    pub(crate) fn wm_cuda_timer_start(timer: *mut c_void) -> c_int;
    pub(crate) fn wm_cuda_timer_stop(timer: *mut c_void, ms: *mut f64) -> c_int;
    pub(crate) fn wm_cuda_timer_free(timer: *mut c_void);
    pub(crate) fn wm_cuda_memory(
        device: c_int,
        reset_peak: c_int,
        allocated: *mut i64,
        peak: *mut i64,
    ) -> c_int;
    pub(crate) fn wm_clip_grad_norm(
        grads: *mut WmTensor,
        n: i64,
        max_norm: f64,
        total: *mut WmTensor,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn wm_adamw_step(
        params: *mut WmTensor,
        grads: *mut WmTensor,
        m: *mut WmTensor,
        v: *mut WmTensor,
        n: i64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        step: i64,
        skip: WmTensor,
    ) -> c_int;
    pub(crate) fn wm_zero_(tensors: *mut WmTensor, n: i64) -> c_int;
    pub(crate) fn wm_causal_conv1d_silu(
        x: WmTensor,
        weight: WmTensor,
        bias: WmTensor,
        out: *mut WmTensor,
        out_bf16: *mut WmTensor,
    ) -> c_int;
    pub(crate) fn wm_rms_norm(
        x: WmTensor,
        weight: WmTensor,
        eps: f64,
        bf16_out: c_int,
        out: *mut WmTensor,
    ) -> c_int;
    pub(crate) fn wm_profiler_start(cuda: c_int) -> c_int;
    pub(crate) fn wm_profiler_stop(path: *const c_char) -> c_int;
    pub(crate) fn wm_mulaw_encode(x: WmTensor, mu: i64, out: *mut WmTensor) -> c_int;
    pub(crate) fn wm_mulaw_decode(q: WmTensor, mu: i64, out: *mut WmTensor) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn wm_selective_scan(
        u: WmTensor,
        delta: WmTensor,
        a: WmTensor,
        b: WmTensor,
        c: WmTensor,
        d: WmTensor,
        z: WmTensor,
        delta_bias: WmTensor,
        initial_state: WmTensor,
        delta_softplus: c_int,
        out: *mut WmTensor,
        last_state: *mut WmTensor,
    ) -> c_int;
}

/// Lends a tensor to C++ (which never frees it).
pub(crate) fn lend(t: &Tensor) -> WmTensor {
    t.as_ptr() as WmTensor
}

/// Lends an optional tensor (NULL when absent).
pub(crate) fn lend_opt(t: Option<&Tensor>) -> WmTensor {
    t.map_or(std::ptr::null_mut(), lend)
}

/// Converts a C string owned by the library into a Rust string.
pub(crate) fn c_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the library returns NUL-terminated strings that live at least until the next call
    // on this thread; we copy immediately.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Turns a status code into `Ok(())` or the thread's last C++ error message.
pub(crate) fn check(op: &'static str, status: c_int) -> Result<()> {
    if status == 0 {
        return Ok(());
    }
    // SAFETY: wm_last_error has no preconditions.
    let message = c_str(unsafe { wm_last_error() });
    Err(Error::Kernel { op, message })
}

/// Adopts a tensor handle returned by the library.
///
/// # Safety
/// `t` must be a handle the library just returned (a fresh `new at::Tensor`), adopted once.
pub(crate) unsafe fn adopt(t: WmTensor) -> Tensor {
    Tensor::from_ptr(t)
}
