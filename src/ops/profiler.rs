//! libtorch's Kineto profiler (`csrc/profiler.cpp`): CPU operators and CUDA kernels of a region,
//! saved as a Chrome trace (open it in Perfetto or chrome://tracing, or summarise it with
//! `scripts/trace-summary.py`).

use std::ffi::CString;
use std::path::Path;

use super::ffi;
use crate::{Error, Result};

/// Runs `f` under the profiler (CUDA kernels too when `cuda`) and writes the trace to `path`,
/// also when `f` fails.
///
/// # Errors
/// The profiler could not start or save the trace; `f`'s own error.
pub fn profile<T>(path: &Path, cuda: bool, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let c_path =
        CString::new(path.to_string_lossy().as_bytes()).map_err(|_| Error::InvalidArgument {
            name: "trace path",
            reason: "contains a NUL byte".into(),
        })?;
    // SAFETY: no preconditions.
    ffi::check("profiler_start", unsafe {
        ffi::wm_profiler_start(i32::from(cuda))
    })?;
    let out = f();
    // SAFETY: c_path is a valid NUL-terminated string for the duration of the call.
    let saved = ffi::check("profiler_stop", unsafe {
        ffi::wm_profiler_stop(c_path.as_ptr())
    });
    let out = out?;
    saved.map(|()| out)
}
