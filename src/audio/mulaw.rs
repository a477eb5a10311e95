//! 8-bit mu-law (μ = 255) on slices, token for token the same as the tensor kernels
//! [`crate::ops::mulaw_encode`]/[`crate::ops::mulaw_decode`] (CPU, which compute in f64).
//!
//! `y = sign(x)·ln(1+μ|x|)/ln(1+μ)`, `q = floor((y+1)/2·μ + 0.5)` (DESIGN.md §2); `x` is clamped to
//! [-1, 1] and NaN encodes as silence (token 128). Decoding inverts the companding:
//! `y = 2q/μ − 1`, `x = sign(y)·((1+μ)^|y| − 1)/μ`.

use std::sync::OnceLock;

pub use crate::ops::{mulaw_decode as decode_tensor, mulaw_encode as encode_tensor};

/// μ of 8-bit mu-law.
pub const MU: u8 = 255;
/// The token of digital silence (`encode(0.0)`).
pub const SILENCE: u8 = 128;

/// Encodes one sample in [-1, 1] (clamped; NaN → [`SILENCE`]).
#[inline]
pub fn encode(x: f32) -> u8 {
    let mu = f64::from(MU);
    let mut x = f64::from(x).clamp(-1.0, 1.0);
    if x.is_nan() {
        x = 0.0;
    }
    let mag = (mu * x.abs()).ln_1p() / mu.ln_1p();
    let y = if x < 0.0 { -mag } else { mag };
    ((y + 1.0) / 2.0 * mu + 0.5).floor() as u8
}

/// Decodes one token to a sample in [-1, 1].
#[inline]
pub fn decode(q: u8) -> f32 {
    decode_table()[usize::from(q)]
}

fn decode_exact(q: u8) -> f32 {
    let mu = f64::from(MU);
    let y = 2.0 * f64::from(q) / mu - 1.0;
    let mag = (y.abs() * mu.ln_1p()).exp_m1() / mu;
    (if y < 0.0 { -mag } else { mag }) as f32
}

fn decode_table() -> &'static [f32; 256] {
    static TABLE: OnceLock<[f32; 256]> = OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|q| decode_exact(q as u8)))
}

/// Encodes a slice.
pub fn encode_slice(x: &[f32]) -> Vec<u8> {
    x.iter().map(|&v| encode(v)).collect()
}

/// Decodes a slice.
pub fn decode_slice(q: &[u8]) -> Vec<f32> {
    let table = decode_table();
    q.iter().map(|&t| table[usize::from(t)]).collect()
}

/// Encodes `x` into `out` (e.g. `i64` tokens for a tensor), element by element.
///
/// # Panics
/// When `x` and `out` differ in length (a programming error, not a data error).
pub fn encode_into<T: From<u8>>(x: &[f32], out: &mut [T]) {
    assert_eq!(x.len(), out.len(), "encode_into: length mismatch");
    for (o, &v) in out.iter_mut().zip(x) {
        *o = T::from(encode(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_silence() {
        assert_eq!(encode(-1.0), 0);
        assert_eq!(encode(1.0), 255);
        assert_eq!(encode(0.0), SILENCE);
        assert_eq!(encode(f32::NAN), SILENCE);
        assert_eq!(encode(7.0), 255);
        assert_eq!(encode(f32::NEG_INFINITY), 0);
        assert_eq!(decode(0), -1.0);
        assert_eq!(decode(255), 1.0);
    }

    #[test]
    fn decode_then_encode_is_identity() {
        for q in 0..=255u8 {
            assert_eq!(encode(decode(q)), q, "token {q}");
        }
    }

    #[test]
    fn monotone() {
        let mut last = 0u8;
        for i in -10_000..=10_000 {
            let q = encode(i as f32 / 10_000.0);
            assert!(q >= last);
            last = q;
        }
    }
}
