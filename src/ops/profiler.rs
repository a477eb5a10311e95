//! libtorch's Kineto profiler (`csrc/profiler.cpp`): CPU operators and CUDA kernels of a region,
//! saved as a Chrome trace (open it in Perfetto or chrome://tracing, or summarise it with
//! `scripts/trace-summary.py`).

use std::ffi::CString;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::ffi;
use crate::{Error, Result};

/// Set once the profiler has run in this process (see [`exit`]).
static USED: AtomicBool = AtomicBool::new(false);

/// Ends the process with `code`. After the profiler ran, libtorch's Kineto keeps a config-loader
/// thread alive, and its static destructors at exit race with that thread: the process aborted
/// ("corrupted double-linked list" in `~CuptiActivityProfiler`, called from `__cxa_finalize`)
/// in ~5% of runs on a loaded machine, after all its work was done. Then this flushes stdout and
/// stderr and leaves without running exit handlers. Otherwise it exits normally.
pub fn exit(code: i32) -> ! {
    if USED.load(Ordering::SeqCst) {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // SAFETY: _exit only ends the process; every file this program wrote is closed by now.
        unsafe { libc::_exit(code) }
    }
    std::process::exit(code)
}

/// Runs `f` under the profiler (CUDA kernels too when `cuda`) and writes the trace to `path`,
/// also when `f` fails.
///
/// # Errors
/// `path` cannot be written (checked before profiling: libtorch only logs a failed save); the
/// profiler could not start or save the trace; `f`'s own error.
pub fn profile<T>(path: &Path, cuda: bool, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let c_path =
        CString::new(path.to_string_lossy().as_bytes()).map_err(|_| Error::InvalidArgument {
            name: "trace path",
            reason: "contains a NUL byte".into(),
        })?;
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::File::create(path).map_err(io_error)?;
    USED.store(true, Ordering::SeqCst);
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
    saved?;
    if std::fs::metadata(path).map_err(io_error)?.len() == 0 {
        return Err(io_error(std::io::Error::other(
            "the profiler wrote no trace",
        )));
    }
    Ok(out)
}
