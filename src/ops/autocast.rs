//! bf16 autocast on CUDA that is really bf16.
//!
//! `tch::autocast` only switches libtorch's CUDA autocast on: it never sets autocast's
//! lower-precision dtype, and libtorch's default for CUDA is **float16**. Training with
//! `--precision bf16` through it therefore ran the matmuls and convolutions in float16 without loss
//! scaling: the cross-entropy gradients (≈ 1/(B·L) per logit, 3.8e-6 at 32 × 8192) fall below
//! float16's normal range, the model learnt far slower than in fp32 and diverged to NaN after a few
//! hundred steps (BENCHMARKS.md, "bf16 autocast training"). [`autocast_bf16`] sets the dtype.

use std::ffi::c_int;

use tch::Kind;

use super::ffi;

/// `c10::ScalarType` codes.
const SCALAR_HALF: c_int = 5;
const SCALAR_BFLOAT16: c_int = 15;

/// Runs `f` under CUDA autocast in bfloat16 on this thread (matmuls, convolutions … in bf16,
/// reductions and losses in float32), then restores the thread's previous autocast state, also
/// when `f` panics. Tensors on the CPU are unaffected.
pub fn autocast_bf16<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(c_int, c_int);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: pairs the enter below; plain thread-local state.
            unsafe { ffi::wm_autocast_cuda_exit(self.0, self.1) }
        }
    }
    let (mut enabled, mut dtype) = (0, 0);
    // SAFETY: the out-pointers are valid locals.
    unsafe { ffi::wm_autocast_cuda_enter(SCALAR_BFLOAT16, &mut enabled, &mut dtype) };
    let _restore = Restore(enabled, dtype);
    f()
}

/// This thread's CUDA autocast state: whether it is on, and its lower-precision dtype (`None` for
/// a dtype other than float16 / bfloat16).
pub fn cuda_autocast_state() -> (bool, Option<Kind>) {
    let (mut enabled, mut dtype) = (0, 0);
    // SAFETY: the out-pointers are valid locals.
    unsafe { ffi::wm_autocast_cuda_state(&mut enabled, &mut dtype) };
    let kind = match dtype {
        SCALAR_HALF => Some(Kind::Half),
        SCALAR_BFLOAT16 => Some(Kind::BFloat16),
        _ => None,
    };
    (enabled != 0, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autocast_bf16_sets_bfloat16_and_restores_the_previous_state() {
        let before = cuda_autocast_state();
        assert!(!before.0, "autocast is off outside a region");
        let inner = autocast_bf16(|| {
            let nested = autocast_bf16(cuda_autocast_state);
            (cuda_autocast_state(), nested)
        });
        assert_eq!(inner.0, (true, Some(Kind::BFloat16)));
        assert_eq!(inner.1, (true, Some(Kind::BFloat16)));
        assert_eq!(cuda_autocast_state(), before);
    }

    #[test]
    fn tch_autocast_alone_is_not_bf16() {
        // What went wrong: tch's autocast keeps libtorch's default CUDA dtype (float16). On a
        // machine without CUDA tch::autocast does nothing at all, so look at the default directly.
        let (_, dtype) = cuda_autocast_state();
        assert_eq!(
            dtype,
            Some(Kind::Half),
            "libtorch's default CUDA autocast dtype changed"
        );
    }

    #[test]
    fn state_is_restored_after_a_panic() {
        let before = cuda_autocast_state();
        let r = std::panic::catch_unwind(|| autocast_bf16(|| panic!("inside")));
        assert!(r.is_err());
        assert_eq!(cuda_autocast_state(), before);
    }
}
