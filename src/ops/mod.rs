//! Safe Rust wrappers over the kernels in `csrc/`, and the pure-tch reference scan.

pub mod autocast;
pub mod cuda;
mod ffi;
pub mod layers;
pub mod mulaw;
pub mod multi;
pub mod profiler;
pub mod scan;
pub mod scan_ref;

pub use autocast::{autocast_bf16, cuda_autocast_state};
pub use mulaw::{mulaw_decode, mulaw_encode, MU_8BIT};
pub use scan::{selective_scan, ScanDims, ScanInputs, ScanOutput};
pub use scan_ref::selective_scan_ref;

/// Build facts reported by `wavemamba info`.
pub mod build {
    use super::ffi;

    /// Compiled kernel back-ends, e.g. `["cpu"]` or `["cpu", "cuda"]`.
    pub fn kernels() -> Vec<String> {
        // SAFETY: returns a static string.
        ffi::c_str(unsafe { ffi::wm_kernels() })
            .split(',')
            .map(str::to_owned)
            .collect()
    }

    /// The libtorch version the C++ kernels were compiled against.
    pub fn torch_version() -> String {
        // SAFETY: returns a static string.
        ffi::c_str(unsafe { ffi::wm_torch_version() })
    }

    /// Names of the CUDA devices seen by the CUDA runtime (empty without the cuda build).
    pub fn cuda_device_names() -> Vec<String> {
        // SAFETY: no preconditions.
        let n = unsafe { ffi::wm_cuda_device_count() };
        (0..n)
            .map(|i| {
                let mut buf = [0 as std::ffi::c_char; 256];
                // SAFETY: buf is writable for its length; the library NUL-terminates.
                let status = unsafe { ffi::wm_cuda_device_name(i, buf.as_mut_ptr(), 256) };
                match ffi::check("cuda_device_name", status) {
                    Ok(()) => ffi::c_str(buf.as_ptr()),
                    Err(e) => format!("<{e}>"),
                }
            })
            .collect()
    }
}
