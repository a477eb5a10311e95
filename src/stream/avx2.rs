//! AVX2 + FMA kernels (x86-64, chosen at run time when the CPU has both): matrix-vector products
//! over packed panels with several accumulators and up to 3 streams per pass (each weight load
//! feeds every stream), and vectorised `exp`/`log` (Cephes polynomials, ~1 ulp) for the state
//! update's `exp(dt·A)`, softplus and SiLU.

use std::arch::x86_64::*;

use super::kernels::{check_conv, check_matvec, check_ssm, Kernels};
use super::weights::{Panel, BLOCK, ILV, LANES};

/// The AVX2 + FMA kernel set.
pub(crate) struct Avx2;

impl Kernels for Avx2 {
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

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn splat(v: f32) -> __m256 {
    _mm256_set1_ps(v)
}

/// `e^x` for 8 lanes (Cephes `expf`: Cody–Waite reduction by ln 2, degree-6 polynomial).
/// Inputs are clamped to [−87.33, 88.02], so tiny results saturate at ~2^−126 instead of 0.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exp_ps(x: __m256) -> __m256 {
    let x = _mm256_min_ps(_mm256_max_ps(x, splat(-87.33)), splat(88.02));
    let fx = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        splat(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(fx, splat(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(fx, splat(-2.121_944_4e-4), r);
    let mut p = splat(1.987_569_1e-4);
    p = _mm256_fmadd_ps(p, r, splat(1.398_199_9e-3));
    p = _mm256_fmadd_ps(p, r, splat(8.333_452e-3));
    p = _mm256_fmadd_ps(p, r, splat(4.166_579_6e-2));
    p = _mm256_fmadd_ps(p, r, splat(1.666_666_5e-1));
    p = _mm256_fmadd_ps(p, r, splat(0.5));
    let p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), splat(1.0));
    let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(fx),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(e))
}

/// `2^x` for 8 lanes with x ≤ 0 (Cephes `exp2f` polynomial on [−½, ½], ~1.7e−7 relative):
/// the state update's decay. Inputs below −125 give ~2^−125 instead of 0; inputs must not
/// exceed 0.5.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exp2_ps(x: __m256) -> __m256 {
    let x = _mm256_max_ps(x, splat(-125.0));
    let k = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
    let f = _mm256_sub_ps(x, k);
    let mut p = splat(1.535_336_2e-4);
    p = _mm256_fmadd_ps(p, f, splat(1.339_887_4e-3));
    p = _mm256_fmadd_ps(p, f, splat(9.618_437e-3));
    p = _mm256_fmadd_ps(p, f, splat(5.550_332_5e-2));
    p = _mm256_fmadd_ps(p, f, splat(2.402_264_8e-1));
    p = _mm256_fmadd_ps(p, f, splat(6.931_472e-1));
    let p = _mm256_fmadd_ps(p, f, splat(1.0)); // in [0.7, 1.42]
                                               // p·2^k by adding k to the exponent field (k ≥ −125 keeps the result normal)
    let k = _mm256_slli_epi32::<23>(_mm256_cvtps_epi32(k));
    _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), k))
}

/// Natural log of 8 positive normal lanes (Cephes `logf`).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn log_ps(x: __m256) -> __m256 {
    let bits = _mm256_castps_si256(x);
    let exponent = _mm256_cvtepi32_ps(_mm256_srli_epi32::<23>(bits));
    // mantissa in [0.5, 1)
    let m = _mm256_or_ps(
        _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(!0x7f80_0000))),
        splat(0.5),
    );
    let mut e = _mm256_sub_ps(exponent, splat(126.0));
    let small = _mm256_cmp_ps::<_CMP_LT_OQ>(m, splat(std::f32::consts::FRAC_1_SQRT_2));
    let t = _mm256_and_ps(m, small);
    e = _mm256_sub_ps(e, _mm256_and_ps(splat(1.0), small));
    let f = _mm256_add_ps(_mm256_sub_ps(m, splat(1.0)), t);
    let z = _mm256_mul_ps(f, f);
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
        p = _mm256_fmadd_ps(p, f, splat(c));
    }
    let mut y = _mm256_mul_ps(_mm256_mul_ps(p, f), z);
    y = _mm256_fmadd_ps(e, splat(-2.121_944_4e-4), y);
    y = _mm256_fnmadd_ps(z, splat(0.5), y);
    _mm256_fmadd_ps(e, splat(0.693_359_4), _mm256_add_ps(f, y))
}

/// `x / (1 + e^{−x})`
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn silu_ps(x: __m256) -> __m256 {
    let e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), x));
    _mm256_div_ps(x, _mm256_add_ps(splat(1.0), e))
}

/// `log(1 + e^x)` (x above 20 passes through), computed as `max(x, 0) + log1p(e^{−|x|})` with
/// an exact-rounding `log1p(e) = log(u)·e / (u − 1)`, `u = 1 + e` (Goldberg's trick).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn softplus_ps(x: __m256) -> __m256 {
    let ax = _mm256_andnot_ps(splat(-0.0), x);
    let e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), ax));
    let u = _mm256_add_ps(splat(1.0), e);
    let um1 = _mm256_sub_ps(u, splat(1.0));
    let l = _mm256_div_ps(_mm256_mul_ps(log_ps(u), e), um1);
    let l = _mm256_blendv_ps(l, e, _mm256_cmp_ps::<_CMP_EQ_OQ>(um1, _mm256_setzero_ps()));
    let r = _mm256_add_ps(_mm256_max_ps(x, _mm256_setzero_ps()), l);
    _mm256_blendv_ps(r, x, _mm256_cmp_ps::<_CMP_GT_OQ>(x, splat(20.0)))
}

/// One panel of `U` vectors (8·U rows) for `SB` streams.
///
/// # Safety
/// `p` holds `cols · 8U` floats; each `xs[s]` `cols` floats; each `ys[s]` and `bias` (when not
/// null) 8U floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)] // lane-indexed register arrays read clearer by index
unsafe fn panel<const U: usize, const SB: usize>(
    p: *const f32,
    cols: usize,
    bias: *const f32,
    xs: [*const f32; SB],
    ys: [*mut f32; SB],
) {
    let w = LANES * U;
    let mut acc = [[_mm256_setzero_ps(); U]; SB];
    if !bias.is_null() {
        for row in acc.iter_mut() {
            for (u, a) in row.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(bias.add(LANES * u));
            }
        }
    }
    if SB == 1 {
        // one stream: a second set of accumulators over odd columns keeps 2·U FMA chains busy
        let mut acc2 = [_mm256_setzero_ps(); U];
        let x = xs[0];
        let mut j = 0;
        while j + 2 <= cols {
            let q = p.add(j * w);
            let x0 = _mm256_broadcast_ss(&*x.add(j));
            let x1 = _mm256_broadcast_ss(&*x.add(j + 1));
            for u in 0..U {
                acc[0][u] = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(LANES * u)), x0, acc[0][u]);
            }
            for u in 0..U {
                acc2[u] = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(w + LANES * u)), x1, acc2[u]);
            }
            j += 2;
        }
        if j < cols {
            let q = p.add(j * w);
            let x0 = _mm256_broadcast_ss(&*x.add(j));
            for u in 0..U {
                acc[0][u] = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(LANES * u)), x0, acc[0][u]);
            }
        }
        for u in 0..U {
            acc[0][u] = _mm256_add_ps(acc[0][u], acc2[u]);
        }
    } else {
        for j in 0..cols {
            let q = p.add(j * w);
            let mut xb = [_mm256_setzero_ps(); SB];
            for s in 0..SB {
                xb[s] = _mm256_broadcast_ss(&*xs[s].add(j));
            }
            for u in 0..U {
                let wv = _mm256_loadu_ps(q.add(LANES * u));
                for s in 0..SB {
                    acc[s][u] = _mm256_fmadd_ps(wv, xb[s], acc[s][u]);
                }
            }
        }
    }
    for s in 0..SB {
        for u in 0..U {
            _mm256_storeu_ps(ys[s].add(LANES * u), acc[s][u]);
        }
    }
}

/// Calls `panel::<U, SB>` for runtime `U` (1..=4) and `SB` (1..=3).
#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn panel_dyn(
    u: usize,
    sb: usize,
    p: *const f32,
    cols: usize,
    bias: *const f32,
    x: *const f32,
    xs: usize,
    y: *mut f32,
    ys: usize,
) {
    macro_rules! go {
        ($u:literal, 1) => {
            panel::<$u, 1>(p, cols, bias, [x], [y])
        };
        ($u:literal, 2) => {
            panel::<$u, 2>(p, cols, bias, [x, x.add(xs)], [y, y.add(ys)])
        };
        ($u:literal, 3) => {
            panel::<$u, 3>(
                p,
                cols,
                bias,
                [x, x.add(xs), x.add(2 * xs)],
                [y, y.add(ys), y.add(2 * ys)],
            )
        };
    }
    match (u, sb) {
        (4, 1) => go!(4, 1),
        (4, 2) => go!(4, 2),
        (4, 3) => go!(4, 3),
        (3, 1) => go!(3, 1),
        (3, 2) => go!(3, 2),
        (3, 3) => go!(3, 3),
        (2, 1) => go!(2, 1),
        (2, 2) => go!(2, 2),
        (2, 3) => go!(2, 3),
        (1, 1) => go!(1, 1),
        (1, 2) => go!(1, 2),
        (1, 3) => go!(1, 3),
        _ => unreachable!("panel width {u} vectors, {sb} streams"),
    }
}

/// See [`Kernels::matvec`] (also the AVX-512 set's: the product is bound by the weight stream).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn matvec(
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
        let u = BLOCK.min(w.rows_padded - r0) / LANES;
        let p = w.data.as_ptr().add(r0 * cols);
        let b = bias.map_or(std::ptr::null(), |b| b.as_ptr().add(r0));
        let mut s = 0;
        while s < streams {
            let sb = (streams - s).min(3);
            let xp = x.as_ptr().add(s * xs);
            let yp = y.as_mut_ptr().add(s * ys + r0);
            panel_dyn(u, sb, p, cols, b, xp, xs, yp, ys);
            s += sb;
        }
    }
}

#[target_feature(enable = "avx2,fma")]
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
    for o in (0..dip).step_by(LANES) {
        _mm256_storeu_ps(r.add(newest * dip + o), _mm256_loadu_ps(x.as_ptr().add(o)));
        let mut slot = if newest + 1 == taps { 0 } else { newest + 1 };
        let mut acc = _mm256_mul_ps(
            _mm256_loadu_ps(w.as_ptr().add(o)),
            _mm256_loadu_ps(r.add(slot * dip + o)),
        );
        for k in 1..taps {
            slot = if slot + 1 == taps { 0 } else { slot + 1 };
            acc = _mm256_fmadd_ps(
                _mm256_loadu_ps(w.as_ptr().add(k * dip + o)),
                _mm256_loadu_ps(r.add(slot * dip + o)),
                acc,
            );
        }
        acc = _mm256_add_ps(acc, _mm256_loadu_ps(b.as_ptr().add(o)));
        _mm256_storeu_ps(out.as_mut_ptr().add(o), silu_ps(acc));
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn softplus(v: &mut [f32]) {
    let mut chunks = v.chunks_exact_mut(LANES);
    for c in &mut chunks {
        _mm256_storeu_ps(c.as_mut_ptr(), softplus_ps(_mm256_loadu_ps(c.as_ptr())));
    }
    for x in chunks.into_remainder() {
        *x = super::kernels::softplus(*x);
    }
}

#[target_feature(enable = "avx2,fma")]
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
    for o in (0..dip).step_by(LANES) {
        let dtv = _mm256_loadu_ps(dt.as_ptr().add(o));
        let xv = _mm256_loadu_ps(x.as_ptr().add(o));
        let dtx = _mm256_mul_ps(dtv, xv);
        // lanes o..o+8 of the 16-channel group o / 16: state s at (o / 16)·16·N + 16·s + o % 16
        let at = (o / ILV) * ILV * n + o % ILV;
        let (hp, ap) = (h.as_mut_ptr().add(at), a.as_ptr().add(at));
        // h ← h·2^(dt·A·log2 e) + dt·x·B: no dependency between states, so this loop pipelines
        for s in 0..n {
            let da = exp2_ps(_mm256_mul_ps(dtv, _mm256_loadu_ps(ap.add(s * ILV))));
            let dbx = _mm256_mul_ps(dtx, _mm256_broadcast_ss(b.get_unchecked(s)));
            let hv = _mm256_fmadd_ps(_mm256_loadu_ps(hp.add(s * ILV)), da, dbx);
            _mm256_storeu_ps(hp.add(s * ILV), hv);
        }
        // y = Σ_s h·C over 4 accumulators (the new h is still in L1)
        let mut acc = [_mm256_setzero_ps(); 4];
        for s in 0..n {
            let hv = _mm256_loadu_ps(hp.add(s * ILV));
            acc[s % 4] = _mm256_fmadd_ps(hv, _mm256_broadcast_ss(c.get_unchecked(s)), acc[s % 4]);
        }
        let mut yv = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        yv = _mm256_fmadd_ps(_mm256_loadu_ps(d.as_ptr().add(o)), xv, yv);
        yv = _mm256_mul_ps(yv, silu_ps(_mm256_loadu_ps(z.as_ptr().add(o))));
        _mm256_storeu_ps(y.as_mut_ptr().add(o), yv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lanes(f: unsafe fn(__m256) -> __m256, xs: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        for c in xs.chunks(8) {
            let mut buf = [0.0f32; 8];
            buf[..c.len()].copy_from_slice(c);
            let mut res = [0.0f32; 8];
            // SAFETY: guarded by the feature check in each test
            unsafe { _mm256_storeu_ps(res.as_mut_ptr(), f(_mm256_loadu_ps(buf.as_ptr()))) };
            out.extend_from_slice(&res[..c.len()]);
        }
        out
    }

    fn check(name: &str, f: unsafe fn(__m256) -> __m256, r: fn(f64) -> f64, xs: &[f32], tol: f64) {
        for (x, got) in xs.iter().zip(lanes(f, xs)) {
            let want = r(*x as f64);
            let err = ((got as f64 - want) / want.abs().max(1e-30)).abs();
            assert!(
                err <= tol,
                "{name}({x}) = {got}, want {want} (rel err {err:.2e})"
            );
        }
    }

    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32)
            .collect()
    }

    #[test]
    fn vector_math_is_accurate() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return;
        }
        check("exp", exp_ps, f64::exp, &grid(-87.0, 88.0, 20001), 3e-7);
        check("exp2", exp2_ps, f64::exp2, &grid(-124.0, 0.0, 20001), 3e-7);
        check("log", log_ps, f64::ln, &grid(1e-30, 4.0, 20001), 3e-7);
        check("log", log_ps, f64::ln, &grid(1.0, 2.0, 20001), 3e-7);
        let silu = |x: f64| x / (1.0 + (-x).exp());
        check("silu", silu_ps, silu, &grid(-80.0, 80.0, 20001), 5e-7);
        let softplus = |x: f64| if x > 20.0 { x } else { x.exp().ln_1p() };
        check(
            "softplus",
            softplus_ps,
            softplus,
            &grid(-80.0, 40.0, 20001),
            5e-7,
        );
    }
}
