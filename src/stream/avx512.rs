//! AVX-512F kernels (x86-64 CPUs with AVX-512F, AVX2 and FMA, chosen at run time): 16 lanes for
//! the matrix-vector products (the same packed panels as AVX2, 2 registers per 32-row panel, up
//! to 4 streams per pass), the state update with its `exp(dt·A)` per channel and state, the
//! conv, softplus and SiLU — with the same polynomials and summation order as the AVX2 set.

use std::arch::x86_64::*;

use super::kernels::check_matvec;
use super::kernels::{check_conv, check_ssm, Kernels};
use super::weights::{Panel, BLOCK, ILV, LANES};

/// The AVX-512F kernel set.
pub(crate) struct Avx512;

impl Kernels for Avx512 {
    #[inline(always)]
    unsafe fn matvec(
        w: &Panel,
        bias: Option<&[f32]>,
        x: &[f32],
        xs: usize,
        y: &mut [f32],
        ys: usize,
        streams: usize,
    ) {
        matvec(w, bias, x, xs, y, ys, streams)
    }

    #[inline(always)]
    unsafe fn conv_silu(
        ring: &mut [f32],
        newest: usize,
        taps: usize,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        out: &mut [f32],
    ) {
        conv_silu(ring, newest, taps, x, w, b, out)
    }

    #[inline(always)]
    unsafe fn softplus(v: &mut [f32]) {
        softplus(v)
    }

    #[inline(always)]
    unsafe fn ssm(
        h: &mut [f32],
        a: &[f32],
        dt: &[f32],
        x: &[f32],
        b: &[f32],
        c: &[f32],
        d: &[f32],
        z: &[f32],
        y: &mut [f32],
    ) {
        ssm(h, a, dt, x, b, c, d, z, y)
    }
}

/// Lanes of one register.
const W: usize = 16;

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn splat(v: f32) -> __m512 {
    _mm512_set1_ps(v)
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn round(x: __m512) -> __m512 {
    _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x)
}

/// `e^x` (the AVX2 set's Cephes `expf`, scaled by `vscalefps`).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn exp_ps(x: __m512) -> __m512 {
    let x = _mm512_min_ps(_mm512_max_ps(x, splat(-87.33)), splat(88.02));
    let fx = round(_mm512_mul_ps(x, splat(std::f32::consts::LOG2_E)));
    let r = _mm512_fnmadd_ps(fx, splat(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(fx, splat(-2.121_944_4e-4), r);
    let mut p = splat(1.987_569_1e-4);
    p = _mm512_fmadd_ps(p, r, splat(1.398_199_9e-3));
    p = _mm512_fmadd_ps(p, r, splat(8.333_452e-3));
    p = _mm512_fmadd_ps(p, r, splat(4.166_579_6e-2));
    p = _mm512_fmadd_ps(p, r, splat(1.666_666_5e-1));
    p = _mm512_fmadd_ps(p, r, splat(0.5));
    let p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), splat(1.0));
    _mm512_scalef_ps(p, fx)
}

/// `2^x` for x ≤ 0.5 (the AVX2 set's Cephes `exp2f`; inputs below −125 give ~2^−125).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn exp2_ps(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, splat(-125.0));
    let k = round(x);
    let f = _mm512_sub_ps(x, k);
    let mut p = splat(1.535_336_2e-4);
    p = _mm512_fmadd_ps(p, f, splat(1.339_887_4e-3));
    p = _mm512_fmadd_ps(p, f, splat(9.618_437e-3));
    p = _mm512_fmadd_ps(p, f, splat(5.550_332_5e-2));
    p = _mm512_fmadd_ps(p, f, splat(2.402_264_8e-1));
    p = _mm512_fmadd_ps(p, f, splat(6.931_472e-1));
    _mm512_scalef_ps(_mm512_fmadd_ps(p, f, splat(1.0)), k)
}

/// Natural log of positive normal lanes (the AVX2 set's Cephes `logf`).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn log_ps(x: __m512) -> __m512 {
    let bits = _mm512_castps_si512(x);
    let exponent = _mm512_cvtepi32_ps(_mm512_srli_epi32::<23>(bits));
    let m = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_and_si512(bits, _mm512_set1_epi32(!0x7f80_0000)),
        _mm512_castps_si512(splat(0.5)),
    )); // mantissa in [0.5, 1)
    let small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(m, splat(std::f32::consts::FRAC_1_SQRT_2));
    let e = _mm512_sub_ps(exponent, splat(126.0));
    let e = _mm512_mask_sub_ps(e, small, e, splat(1.0));
    let f = _mm512_sub_ps(m, splat(1.0));
    let f = _mm512_mask_add_ps(f, small, f, m);
    let z = _mm512_mul_ps(f, f);
    let mut p = splat(7.037_683_6e-2);
    for c in [
        -1.151_461e-1,
        1.167_699_9e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_4e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ] {
        p = _mm512_fmadd_ps(p, f, splat(c));
    }
    let mut y = _mm512_mul_ps(_mm512_mul_ps(p, f), z);
    y = _mm512_fmadd_ps(e, splat(-2.121_944_4e-4), y);
    y = _mm512_fnmadd_ps(z, splat(0.5), y);
    _mm512_fmadd_ps(e, splat(0.693_359_4), _mm512_add_ps(f, y))
}

/// `x / (1 + e^{−x})`
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn silu_ps(x: __m512) -> __m512 {
    let e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), x));
    _mm512_div_ps(x, _mm512_add_ps(splat(1.0), e))
}

/// `log(1 + e^x)` (x above 20 passes through), as the AVX2 set computes it.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn softplus_ps(x: __m512) -> __m512 {
    let e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
    let u = _mm512_add_ps(splat(1.0), e);
    let um1 = _mm512_sub_ps(u, splat(1.0));
    let l = _mm512_div_ps(_mm512_mul_ps(log_ps(u), e), um1);
    let l = _mm512_mask_blend_ps(
        _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(um1, _mm512_setzero_ps()),
        l,
        e,
    );
    let r = _mm512_add_ps(_mm512_max_ps(x, _mm512_setzero_ps()), l);
    _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, splat(20.0)), r, x)
}

/// One panel (`V` registers of 16 rows, the last one `last`-masked) for `SB` streams, with `J`
/// independent accumulator sets over interleaved columns (more FMA chains in flight).
///
/// # Safety
/// As `avx2::panel`: `p` holds `cols · width` floats (width = 16·(V−1) + popcount(last)),
/// each `xs[s]` `cols` floats, each `ys[s]` and `bias` (when not null) `width` floats.
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)] // register arrays read clearer by index
unsafe fn panel<const V: usize, const SB: usize, const J: usize>(
    p: *const f32,
    cols: usize,
    width: usize,
    last: __mmask16,
    bias: *const f32,
    xs: [*const f32; SB],
    ys: [*mut f32; SB],
) {
    let mask = |v: usize| if v + 1 == V { last } else { 0xffff };
    let mut acc = [[[_mm512_setzero_ps(); V]; SB]; J];
    if !bias.is_null() {
        for s in 0..SB {
            for v in 0..V {
                acc[0][s][v] = _mm512_maskz_loadu_ps(mask(v), bias.add(W * v));
            }
        }
    }
    let mut j = 0;
    while j + J <= cols {
        for jj in 0..J {
            let q = p.add((j + jj) * width);
            let mut xb = [_mm512_setzero_ps(); SB];
            for s in 0..SB {
                xb[s] = _mm512_set1_ps(*xs[s].add(j + jj));
            }
            for v in 0..V {
                let wv = _mm512_maskz_loadu_ps(mask(v), q.add(W * v));
                for s in 0..SB {
                    acc[jj][s][v] = _mm512_fmadd_ps(wv, xb[s], acc[jj][s][v]);
                }
            }
        }
        j += J;
    }
    while j < cols {
        let q = p.add(j * width);
        for v in 0..V {
            let wv = _mm512_maskz_loadu_ps(mask(v), q.add(W * v));
            for s in 0..SB {
                acc[0][s][v] = _mm512_fmadd_ps(wv, _mm512_set1_ps(*xs[s].add(j)), acc[0][s][v]);
            }
        }
        j += 1;
    }
    for s in 0..SB {
        for v in 0..V {
            let mut sum = acc[0][s][v];
            for jj in 1..J {
                sum = _mm512_add_ps(sum, acc[jj][s][v]);
            }
            _mm512_mask_storeu_ps(ys[s].add(W * v), mask(v), sum);
        }
    }
}

/// See [`Kernels::matvec`].
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
    check_matvec(w, bias, x, xs, y, ys, streams);
    let cols = w.cols;
    for r0 in (0..w.rows_padded).step_by(BLOCK) {
        let width = BLOCK.min(w.rows_padded - r0);
        let (v, last) = (
            width.div_ceil(W),
            if width % W == LANES { 0x00ff } else { 0xffff },
        );
        let p = w.data.as_ptr().add(r0 * cols);
        let b = bias.map_or(std::ptr::null(), |b| b.as_ptr().add(r0));
        let mut s = 0;
        while s < streams {
            let sb = (streams - s).min(4);
            let xp = x.as_ptr().add(s * xs);
            let yp = y.as_mut_ptr().add(s * ys + r0);
            let xq = |i: usize| xp.add(i.min(sb - 1) * xs);
            let yq = |i: usize| yp.add(i.min(sb - 1) * ys);
            macro_rules! go {
                ($v:literal, $sb:literal, $j:literal) => {
                    panel::<$v, $sb, $j>(
                        p,
                        cols,
                        width,
                        last,
                        b,
                        std::array::from_fn(xq),
                        std::array::from_fn(yq),
                    )
                };
            }
            match (v, sb) {
                (2, 1) => go!(2, 1, 4),
                (2, 2) => go!(2, 2, 2),
                (2, 3) => go!(2, 3, 2),
                (2, 4) => go!(2, 4, 1),
                (1, 1) => go!(1, 1, 4),
                (1, 2) => go!(1, 2, 4),
                (1, 3) => go!(1, 3, 2),
                (1, 4) => go!(1, 4, 2),
                _ => unreachable!("panel of {v} registers, {sb} streams"),
            }
            s += sb;
        }
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn conv_silu(
    ring: &mut [f32],
    newest: usize,
    taps: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    out: &mut [f32],
) {
    check_conv(ring, newest, taps, x, w, b, out);
    let dip = out.len();
    let r = ring.as_mut_ptr();
    let mut o = 0;
    // 16 lanes at a time, then an 8-lane tail as a masked register (dip is a multiple of 8)
    while o < dip {
        let m: __mmask16 = if dip - o >= W { 0xffff } else { 0x00ff };
        macro_rules! load {
            ($p:expr) => {
                _mm512_maskz_loadu_ps(m, $p)
            };
        }
        _mm512_mask_storeu_ps(r.add(newest * dip + o), m, load!(x.as_ptr().add(o)));
        let mut slot = if newest + 1 == taps { 0 } else { newest + 1 };
        let mut acc = _mm512_mul_ps(load!(w.as_ptr().add(o)), load!(r.add(slot * dip + o)));
        for k in 1..taps {
            slot = if slot + 1 == taps { 0 } else { slot + 1 };
            acc = _mm512_fmadd_ps(
                load!(w.as_ptr().add(k * dip + o)),
                load!(r.add(slot * dip + o)),
                acc,
            );
        }
        acc = _mm512_add_ps(acc, load!(b.as_ptr().add(o)));
        _mm512_mask_storeu_ps(out.as_mut_ptr().add(o), m, silu_ps(acc));
        o += W;
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn softplus(v: &mut [f32]) {
    let mut chunks = v.chunks_exact_mut(W);
    for c in &mut chunks {
        _mm512_storeu_ps(c.as_mut_ptr(), softplus_ps(_mm512_loadu_ps(c.as_ptr())));
    }
    for x in chunks.into_remainder() {
        *x = super::kernels::softplus(*x);
    }
}

#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn ssm(
    h: &mut [f32],
    a: &[f32],
    dt: &[f32],
    x: &[f32],
    b: &[f32],
    c: &[f32],
    d: &[f32],
    z: &[f32],
    y: &mut [f32],
) {
    check_ssm(h, a, dt, x, b, c, d, z, y);
    let (dip, n) = (y.len(), b.len());
    for o in (0..dip).step_by(ILV) {
        let dtv = _mm512_loadu_ps(dt.as_ptr().add(o));
        let xv = _mm512_loadu_ps(x.as_ptr().add(o));
        let dtx = _mm512_mul_ps(dtv, xv);
        let (hp, ap) = (h.as_mut_ptr().add(o * n), a.as_ptr().add(o * n));
        // h ← h·2^(dt·A·log2 e) + dt·x·B, then y = Σ_s h·C over 4 accumulators (as AVX2)
        for s in 0..n {
            let da = exp2_ps(_mm512_mul_ps(dtv, _mm512_loadu_ps(ap.add(s * ILV))));
            let dbx = _mm512_mul_ps(dtx, _mm512_set1_ps(*b.get_unchecked(s)));
            let hv = _mm512_fmadd_ps(_mm512_loadu_ps(hp.add(s * ILV)), da, dbx);
            _mm512_storeu_ps(hp.add(s * ILV), hv);
        }
        let mut acc = [_mm512_setzero_ps(); 4];
        for s in 0..n {
            let hv = _mm512_loadu_ps(hp.add(s * ILV));
            acc[s % 4] = _mm512_fmadd_ps(hv, _mm512_set1_ps(*c.get_unchecked(s)), acc[s % 4]);
        }
        let mut yv = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        yv = _mm512_fmadd_ps(_mm512_loadu_ps(d.as_ptr().add(o)), xv, yv);
        yv = _mm512_mul_ps(yv, silu_ps(_mm512_loadu_ps(z.as_ptr().add(o))));
        _mm512_storeu_ps(y.as_mut_ptr().add(o), yv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lanes(f: unsafe fn(__m512) -> __m512, xs: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        for c in xs.chunks(W) {
            let mut buf = [1.0f32; W];
            buf[..c.len()].copy_from_slice(c);
            let mut res = [0.0f32; W];
            // SAFETY: guarded by the feature check in the test
            unsafe { _mm512_storeu_ps(res.as_mut_ptr(), f(_mm512_loadu_ps(buf.as_ptr()))) };
            out.extend_from_slice(&res[..c.len()]);
        }
        out
    }

    fn avx2_lanes(f: unsafe fn(__m256) -> __m256, xs: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        for c in xs.chunks(8) {
            let mut buf = [1.0f32; 8];
            buf[..c.len()].copy_from_slice(c);
            let mut res = [0.0f32; 8];
            // SAFETY: guarded by the feature check in the test
            unsafe { _mm256_storeu_ps(res.as_mut_ptr(), f(_mm256_loadu_ps(buf.as_ptr()))) };
            out.extend_from_slice(&res[..c.len()]);
        }
        out
    }

    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32)
            .collect()
    }

    /// Same polynomials, same operations: the 16-lane functions equal the 8-lane ones bit for bit.
    #[test]
    fn vector_math_equals_the_avx2_set() {
        if !super::super::Isa::Avx512.available() {
            return;
        }
        use super::super::avx2;
        type Case = (
            &'static str,
            unsafe fn(__m512) -> __m512,
            unsafe fn(__m256) -> __m256,
            Vec<f32>,
        );
        let cases: [Case; 5] = [
            ("exp", exp_ps, avx2::exp_ps, grid(-90.0, 90.0, 20001)),
            ("exp2", exp2_ps, avx2::exp2_ps, grid(-130.0, 0.5, 20001)),
            ("log", log_ps, avx2::log_ps, grid(1e-30, 4.0, 20001)),
            ("silu", silu_ps, avx2::silu_ps, grid(-90.0, 90.0, 20001)),
            (
                "softplus",
                softplus_ps,
                avx2::softplus_ps,
                grid(-90.0, 40.0, 20001),
            ),
        ];
        for (name, f16, f8, xs) in cases {
            for ((x, a), b) in xs.iter().zip(lanes(f16, &xs)).zip(avx2_lanes(f8, &xs)) {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{name}({x}): avx512 {a} vs avx2 {b}"
                );
            }
        }
    }
}
