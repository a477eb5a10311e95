//! mu-law coding of tensors through the `csrc/` kernels (CPU loop or CUDA kernel).
//! Formula: DESIGN.md §2 (`csrc/mulaw.h`).

use tch::Tensor;

use super::ffi;
use crate::Result;

/// The μ of 8-bit mu-law (256 levels).
pub const MU_8BIT: i64 = 255;

/// Encodes floats in [-1, 1] (clamped; NaN → silence) to int64 tokens in [0, μ].
///
/// # Shapes
/// Any shape; the output has the input's shape and device.
///
/// # Errors
/// [`crate::Error::Kernel`] when `x` is not floating point or `mu` is outside [1, 65535].
pub fn mulaw_encode(x: &Tensor, mu: i64) -> Result<Tensor> {
    let mut out = std::ptr::null_mut();
    // SAFETY: `x` outlives the call; on success `out` is a fresh handle we adopt once.
    let status = unsafe { ffi::wm_mulaw_encode(ffi::lend(x), mu, &mut out) };
    ffi::check("mulaw_encode", status)?;
    Ok(unsafe { ffi::adopt(out) })
}

/// Decodes integer tokens (clamped to [0, μ]) to float32 samples in [-1, 1].
///
/// # Errors
/// [`crate::Error::Kernel`] when `q` is not an integer tensor or `mu` is outside [1, 65535].
pub fn mulaw_decode(q: &Tensor, mu: i64) -> Result<Tensor> {
    let mut out = std::ptr::null_mut();
    // SAFETY: as in `mulaw_encode`.
    let status = unsafe { ffi::wm_mulaw_decode(ffi::lend(q), mu, &mut out) };
    ffi::check("mulaw_decode", status)?;
    Ok(unsafe { ffi::adopt(out) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use tch::{Device, Kind};

    #[test]
    fn matches_the_formula_and_round_trips() {
        let x = Tensor::linspace(-1.0, 1.0, 1001, (Kind::Float, Device::Cpu));
        let q = mulaw_encode(&x, MU_8BIT).unwrap();
        let mu = 255.0f64;
        let expect = {
            let y = x.sign() * (x.abs() * mu).log1p() / mu.ln_1p();
            ((y + 1.0) / 2.0 * mu + 0.5).floor().to_kind(Kind::Int64)
        };
        assert_eq!(q.kind(), Kind::Int64);
        assert_eq!(q.min().int64_value(&[]), 0);
        assert_eq!(q.max().int64_value(&[]), 255);
        let mismatches = q.ne_tensor(&expect).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(mismatches, 0);
        // Decoding lands within half a quantisation step (in the companded domain).
        let back = mulaw_decode(&q, MU_8BIT).unwrap();
        let q2 = mulaw_encode(&back, MU_8BIT).unwrap();
        assert!(q2.equal(&q), "decode then encode must give the same tokens");
        let err = (back - &x).abs().max().double_value(&[]);
        assert!(err < 0.05, "max decode error {err}");
    }

    #[test]
    fn clamps_out_of_range_input() {
        let x = Tensor::from_slice(&[-3.0f32, 2.0, f32::NAN]);
        let q = mulaw_encode(&x, MU_8BIT).unwrap();
        assert_eq!(Vec::<i64>::try_from(&q).unwrap(), vec![0, 255, 128]);
    }

    #[test]
    fn cpp_errors_surface_as_typed_errors() {
        let ints = Tensor::from_slice(&[1i64, 2, 3]);
        match mulaw_encode(&ints, MU_8BIT) {
            Err(Error::Kernel { op, message }) => {
                assert_eq!(op, "mulaw_encode");
                assert!(
                    message.contains("expected a floating-point tensor"),
                    "{message}"
                );
            }
            other => panic!("expected a kernel error, got {other:?}"),
        }
        let floats = Tensor::from_slice(&[0.5f32]);
        let err = mulaw_decode(&floats, MU_8BIT).unwrap_err().to_string();
        assert!(err.contains("expected an integer tensor"), "{err}");
        let err = mulaw_encode(&floats, 0).unwrap_err().to_string();
        assert!(err.contains("mu must be in [1, 65535], got 0"), "{err}");
    }
}
