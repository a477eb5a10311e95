//! [`Buf`]: a fixed-length `f32` buffer aligned to a cache line (64 bytes), so that vector loads
//! at multiples of 8 floats never straddle two lines.

use std::ops::{Deref, DerefMut};

/// One cache line of floats.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// `len` floats starting on a 64-byte boundary; derefs to `[f32]`.
#[derive(Clone)]
pub(crate) struct Buf {
    lines: Vec<Line>,
    len: usize,
}

impl Buf {
    /// `len` zeros.
    pub fn zeros(len: usize) -> Buf {
        Buf {
            lines: vec![Line([0.0; 16]); len.div_ceil(16)],
            len,
        }
    }

    /// A copy of `v` followed by zeros up to `len` (≥ `v.len()`).
    pub fn padded(v: &[f32], len: usize) -> Buf {
        let mut b = Buf::zeros(len.max(v.len()));
        b[..v.len()].copy_from_slice(v);
        b
    }
}

impl Deref for Buf {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        // SAFETY: `lines` holds `16 · lines.len() ≥ len` contiguous, initialised f32 (`Line` is
        // `repr(C)` around `[f32; 16]`, no padding).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.len) }
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), self.len) }
    }
}

impl std::fmt::Debug for Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buf({} f32)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_zeroed_and_padded() {
        for n in [0, 1, 15, 16, 17, 100] {
            let b = Buf::zeros(n);
            assert_eq!(b.len(), n);
            assert_eq!(b.as_ptr() as usize % 64, 0);
            assert!(b.iter().all(|&v| v == 0.0));
        }
        let b = Buf::padded(&[1.0, 2.0, 3.0], 10);
        assert_eq!(&b[..], &[1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }
}
