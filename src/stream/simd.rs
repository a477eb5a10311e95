//! One SIMD register of `f32` lanes behind a trait, so that the vectorised kernels
//! (`vector.rs`) are written once: [`F32x8`] (AVX2 + FMA) and [`F32x16`] (AVX-512F).
//!
//! Every method is `unsafe` and compiled with its set's target features: call them only on a CPU
//! that has the set ([`super::Isa::available`]), from code compiled with the same features (the
//! engine's drivers, `engine.rs`), so that they inline.

use std::arch::x86_64::*;

use super::vector::{matvec, panel};
use super::weights::Panel;

/// One register of `W` lanes and the operations the kernels need.
pub(crate) trait Vector: Copy {
    /// Lanes per register.
    const W: usize;
    /// Lanes selected by a comparison.
    type Mask: Copy;
    /// The lanes a partial load or store touches (always the first ones).
    type Tail: Copy;

    /// The first `lanes` lanes (1 ≤ lanes ≤ W; a multiple of 8).
    unsafe fn tail(lanes: usize) -> Self::Tail;
    unsafe fn splat(v: f32) -> Self;
    unsafe fn zero() -> Self;
    /// W floats from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// The tail's lanes from `p`, zeros elsewhere.
    unsafe fn load_tail(p: *const f32, t: Self::Tail) -> Self;
    unsafe fn store_tail(self, p: *mut f32, t: Self::Tail);
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    unsafe fn div(self, o: Self) -> Self;
    unsafe fn min(self, o: Self) -> Self;
    unsafe fn max(self, o: Self) -> Self;
    /// `self·b + c`, one rounding.
    unsafe fn fmadd(self, b: Self, c: Self) -> Self;
    /// `c − self·b`, one rounding.
    unsafe fn fnmadd(self, b: Self, c: Self) -> Self;
    unsafe fn abs(self) -> Self;
    /// To the nearest integer, ties to even.
    unsafe fn round(self) -> Self;
    /// `self·2^k` for integral `k` and a normal result.
    unsafe fn scale2(self, k: Self) -> Self;
    /// For positive normal lanes: (mantissa in [0.5, 1), biased exponent field as a float).
    unsafe fn split_exponent(self) -> (Self, Self);
    unsafe fn lt(self, o: Self) -> Self::Mask;
    unsafe fn eq(self, o: Self) -> Self::Mask;
    unsafe fn gt(self, o: Self) -> Self::Mask;
    /// `yes` where `m` is set, else `no`.
    unsafe fn select(m: Self::Mask, yes: Self, no: Self) -> Self;
    /// [`super::kernels::Kernels::matvec`] (`vector::matvec`, one out-of-line copy per set) with
    /// the set's choice of streams per pass and accumulator sets per panel shape.
    #[allow(clippy::too_many_arguments)]
    unsafe fn matvec(
        w: &Panel,
        bias: Option<&[f32]>,
        x: &[f32],
        xs: usize,
        y: &mut [f32],
        ys: usize,
        streams: usize,
    );
}

/// AVX2 + FMA: 8 lanes.
#[derive(Clone, Copy)]
pub(crate) struct F32x8(__m256);

/// AVX-512F: 16 lanes.
#[derive(Clone, Copy)]
pub(crate) struct F32x16(__m512);

/// What every set spells the same way, from its intrinsics: splat, zero, load, store, the
/// comparisons and the arithmetic.
macro_rules! common {
    ($feat:literal, $ty:ident, $set1:ident, $setzero:ident, $loadu:ident, $storeu:ident,
     $cmp:ident, $add:ident, $sub:ident, $mul:ident, $div:ident, $min:ident, $max:ident,
     $fmadd:ident, $fnmadd:ident) => {
        compare!($feat, lt, $cmp, _CMP_LT_OQ);
        compare!($feat, eq, $cmp, _CMP_EQ_OQ);
        compare!($feat, gt, $cmp, _CMP_GT_OQ);
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn splat(v: f32) -> Self {
            $ty($set1(v))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn zero() -> Self {
            $ty($setzero())
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn load(p: *const f32) -> Self {
            $ty($loadu(p))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn store(self, p: *mut f32) {
            $storeu(p, self.0)
        }
        binary!($feat, $ty, add, $add);
        binary!($feat, $ty, sub, $sub);
        binary!($feat, $ty, mul, $mul);
        binary!($feat, $ty, div, $div);
        binary!($feat, $ty, min, $min);
        binary!($feat, $ty, max, $max);
        ternary!($feat, $ty, fmadd, $fmadd);
        ternary!($feat, $ty, fnmadd, $fnmadd);
    };
}

macro_rules! compare {
    ($feat:literal, $name:ident, $cmp:ident, $pred:ident) => {
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn $name(self, o: Self) -> Self::Mask {
            $cmp::<$pred>(self.0, o.0)
        }
    };
}

macro_rules! binary {
    ($feat:literal, $ty:ident, $name:ident, $f:ident) => {
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn $name(self, o: Self) -> Self {
            $ty($f(self.0, o.0))
        }
    };
}

macro_rules! ternary {
    ($feat:literal, $ty:ident, $name:ident, $f:ident) => {
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn $name(self, b: Self, c: Self) -> Self {
            $ty($f(self.0, b.0, c.0))
        }
    };
}

impl Vector for F32x8 {
    const W: usize = 8;
    type Mask = __m256;
    /// Every width is a multiple of 8: a tail is always a whole register.
    type Tail = ();

    #[inline]
    unsafe fn tail(lanes: usize) {
        debug_assert_eq!(lanes, 8);
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_tail(p: *const f32, _: ()) -> Self {
        Self::load(p)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_tail(self, p: *mut f32, _: ()) {
        self.store(p)
    }
    common!(
        "avx2,fma",
        F32x8,
        _mm256_set1_ps,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_cmp_ps,
        _mm256_add_ps,
        _mm256_sub_ps,
        _mm256_mul_ps,
        _mm256_div_ps,
        _mm256_min_ps,
        _mm256_max_ps,
        _mm256_fmadd_ps,
        _mm256_fnmadd_ps
    );
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn abs(self) -> Self {
        F32x8(_mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn round(self) -> Self {
        F32x8(_mm256_round_ps::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(self.0))
    }
    /// Adds `k` to the exponent field.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn scale2(self, k: Self) -> Self {
        let k = _mm256_slli_epi32::<23>(_mm256_cvtps_epi32(k.0));
        F32x8(_mm256_castsi256_ps(_mm256_add_epi32(
            _mm256_castps_si256(self.0),
            k,
        )))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn split_exponent(self) -> (Self, Self) {
        let bits = _mm256_castps_si256(self.0);
        let exponent = _mm256_cvtepi32_ps(_mm256_srli_epi32::<23>(bits));
        let keep = _mm256_castsi256_ps(_mm256_set1_epi32(!0x7f80_0000));
        let m = _mm256_or_ps(_mm256_and_ps(self.0, keep), _mm256_set1_ps(0.5));
        (F32x8(m), F32x8(exponent))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn select(m: __m256, yes: Self, no: Self) -> Self {
        F32x8(_mm256_blendv_ps(no.0, yes.0, m))
    }
    /// Up to 3 streams per pass; one stream: 2 accumulator sets (even and odd columns).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn matvec(
        w: &Panel,
        bias: Option<&[f32]>,
        x: &[f32],
        xs: usize,
        y: &mut [f32],
        ys: usize,
        streams: usize,
    ) {
        matvec::<Self>(w, bias, x, xs, y, ys, streams, 3, |regs, sb, a| {
            match (regs, sb) {
                (4, 1) => panel::<Self, 4, 1, 2>(a),
                (4, 2) => panel::<Self, 4, 2, 1>(a),
                (4, 3) => panel::<Self, 4, 3, 1>(a),
                (3, 1) => panel::<Self, 3, 1, 2>(a),
                (3, 2) => panel::<Self, 3, 2, 1>(a),
                (3, 3) => panel::<Self, 3, 3, 1>(a),
                (2, 1) => panel::<Self, 2, 1, 2>(a),
                (2, 2) => panel::<Self, 2, 2, 1>(a),
                (2, 3) => panel::<Self, 2, 3, 1>(a),
                (1, 1) => panel::<Self, 1, 1, 2>(a),
                (1, 2) => panel::<Self, 1, 2, 1>(a),
                (1, 3) => panel::<Self, 1, 3, 1>(a),
                _ => unreachable!("panel of {regs} registers, {sb} streams"),
            }
        })
    }
}

impl Vector for F32x16 {
    const W: usize = 16;
    type Mask = __mmask16;
    type Tail = __mmask16;

    #[inline]
    unsafe fn tail(lanes: usize) -> __mmask16 {
        debug_assert!((1..=16).contains(&lanes));
        (((1u32 << lanes) - 1) & 0xffff) as __mmask16
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_tail(p: *const f32, t: __mmask16) -> Self {
        F32x16(_mm512_maskz_loadu_ps(t, p))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_tail(self, p: *mut f32, t: __mmask16) {
        _mm512_mask_storeu_ps(p, t, self.0)
    }
    common!(
        "avx512f",
        F32x16,
        _mm512_set1_ps,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_cmp_ps_mask,
        _mm512_add_ps,
        _mm512_sub_ps,
        _mm512_mul_ps,
        _mm512_div_ps,
        _mm512_min_ps,
        _mm512_max_ps,
        _mm512_fmadd_ps,
        _mm512_fnmadd_ps
    );
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn abs(self) -> Self {
        F32x16(_mm512_abs_ps(self.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn round(self) -> Self {
        F32x16(_mm512_roundscale_ps::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(self.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn scale2(self, k: Self) -> Self {
        F32x16(_mm512_scalef_ps(self.0, k.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn split_exponent(self) -> (Self, Self) {
        let bits = _mm512_castps_si512(self.0);
        let exponent = _mm512_cvtepi32_ps(_mm512_srli_epi32::<23>(bits));
        let m = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_and_si512(bits, _mm512_set1_epi32(!0x7f80_0000)),
            _mm512_castps_si512(_mm512_set1_ps(0.5)),
        ));
        (F32x16(m), F32x16(exponent))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn select(m: __mmask16, yes: Self, no: Self) -> Self {
        F32x16(_mm512_mask_blend_ps(m, no.0, yes.0))
    }
    /// Up to 4 streams per pass; more accumulator sets where few streams leave registers free.
    #[target_feature(enable = "avx512f")]
    unsafe fn matvec(
        w: &Panel,
        bias: Option<&[f32]>,
        x: &[f32],
        xs: usize,
        y: &mut [f32],
        ys: usize,
        streams: usize,
    ) {
        matvec::<Self>(w, bias, x, xs, y, ys, streams, 4, |regs, sb, a| {
            match (regs, sb) {
                (2, 1) => panel::<Self, 2, 1, 4>(a),
                (2, 2) => panel::<Self, 2, 2, 2>(a),
                (2, 3) => panel::<Self, 2, 3, 2>(a),
                (2, 4) => panel::<Self, 2, 4, 1>(a),
                (1, 1) => panel::<Self, 1, 1, 4>(a),
                (1, 2) => panel::<Self, 1, 2, 4>(a),
                (1, 3) => panel::<Self, 1, 3, 2>(a),
                (1, 4) => panel::<Self, 1, 4, 2>(a),
                _ => unreachable!("panel of {regs} registers, {sb} streams"),
            }
        })
    }
}
