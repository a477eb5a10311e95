//! CUDA device helpers from `csrc/` for measurements: event timing on the current stream and
//! libtorch's caching-allocator statistics. In builds without `--features cuda` every call returns
//! [`crate::Error::Kernel`].

use std::ffi::{c_int, c_void};

use super::ffi;
use crate::Result;

/// Two CUDA events recorded on the current stream of one device (libtorch's stream, the one tch
/// ops and our kernels run on).
pub struct CudaTimer {
    raw: *mut c_void,
}

impl CudaTimer {
    /// # Errors
    /// No CUDA build or device, or a CUDA error.
    pub fn new(device: usize) -> Result<CudaTimer> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: raw is a valid out-pointer; on success it holds a timer we own.
        ffi::check("cuda_timer_new", unsafe {
            ffi::wm_cuda_timer_new(device as c_int, &mut raw)
        })?;
        Ok(CudaTimer { raw })
    }

    /// Records the start event.
    ///
    /// # Errors
    /// A CUDA error.
    pub fn start(&self) -> Result<()> {
        // SAFETY: self.raw is a live timer.
        ffi::check("cuda_timer_start", unsafe {
            ffi::wm_cuda_timer_start(self.raw)
        })
    }

    /// Records the stop event, waits for it, and returns the milliseconds since `start`.
    ///
    /// # Errors
    /// A CUDA error.
    pub fn stop_ms(&self) -> Result<f64> {
        let mut ms = 0.0;
        // SAFETY: self.raw is a live timer; ms is a valid out-pointer.
        ffi::check("cuda_timer_stop", unsafe {
            ffi::wm_cuda_timer_stop(self.raw, &mut ms)
        })?;
        Ok(ms)
    }
}

impl Drop for CudaTimer {
    fn drop(&mut self) {
        // SAFETY: raw came from wm_cuda_timer_new and is freed once.
        unsafe { ffi::wm_cuda_timer_free(self.raw) }
    }
}

/// Bytes held by libtorch's CUDA caching allocator on `device`.
#[derive(Debug, Clone, Copy)]
pub struct CudaMemory {
    /// Allocated now.
    pub allocated: i64,
    /// Peak allocation since the last reset.
    pub peak: i64,
}

/// Reads the allocator's statistics; `reset_peak` then resets the peak to the current value.
///
/// # Errors
/// No CUDA build, or a CUDA error.
pub fn cuda_memory(device: usize, reset_peak: bool) -> Result<CudaMemory> {
    let (mut allocated, mut peak) = (0i64, 0i64);
    // SAFETY: valid out-pointers.
    ffi::check("cuda_memory", unsafe {
        ffi::wm_cuda_memory(
            device as c_int,
            reset_peak as c_int,
            &mut allocated,
            &mut peak,
        )
    })?;
    Ok(CudaMemory { allocated, peak })
}
