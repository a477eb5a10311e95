//! The vectorised kernel sets, written once over a SIMD register type ([`Vector`], `simd.rs`)
//! and instantiated for AVX2 + FMA ([`Avx2`], 8 lanes) and AVX-512F ([`Avx512`], 16 lanes),
//! chosen at run time:
//! - matrix-vector products over packed panels, several streams per pass (each weight load feeds
//!   every stream) and several accumulator sets where registers allow;
//! - the state update with its `exp(dt·A)` per channel and state, the conv, softplus and SiLU,
//!   with vectorised `exp`/`exp2`/`log` (Cephes polynomials, ~1 ulp).
//!
//! Both sets run the same operations in the same order, so they agree bit for bit (tested).
//! Everything here is `#[inline(always)]`: it compiles into the engine's drivers, which carry
//! the sets' target features (`engine.rs`).

use std::marker::PhantomData;

use super::kernels::{check_conv, check_matvec, check_ssm, Kernels};
use super::simd::{F32x16, F32x8, Vector};
use super::weights::{Panel, BLOCK, ILV};

/// [`Kernels`] on registers `V`.
pub(crate) struct Vectorized<V>(PhantomData<V>);

/// The AVX2 + FMA kernel set.
pub(crate) type Avx2 = Vectorized<F32x8>;
/// The AVX-512F kernel set.
pub(crate) type Avx512 = Vectorized<F32x16>;

/// `e^x` (Cephes `expf`: Cody–Waite reduction by ln 2, degree-6 polynomial). Inputs are clamped
/// to [−87.33, 88.02], so tiny results saturate at ~2^−126 instead of 0.
#[inline(always)]
pub(crate) unsafe fn exp<V: Vector>(x: V) -> V {
    let x = x.max(V::splat(-87.33)).min(V::splat(88.02));
    let fx = x.mul(V::splat(std::f32::consts::LOG2_E)).round();
    let r = fx.fnmadd(V::splat(0.693_359_4), x);
    let r = fx.fnmadd(V::splat(-2.121_944_4e-4), r);
    let mut p = V::splat(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = p.fmadd(r, V::splat(c));
    }
    // p ∈ [1, 1.42] where fx = −126 (x ≥ −87.33), so p·2^fx stays normal
    p.fmadd(r.mul(r), r).add(V::splat(1.0)).scale2(fx)
}

/// `2^x` for x ≤ 0.5 (Cephes `exp2f` polynomial on [−½, ½], ~1.7e−7 relative): the state
/// update's decay. Inputs below −125 give ~2^−125 instead of 0.
#[inline(always)]
pub(crate) unsafe fn exp2<V: Vector>(x: V) -> V {
    let x = x.max(V::splat(-125.0));
    let k = x.round();
    let f = x.sub(k);
    let mut p = V::splat(1.535_336_2e-4);
    for c in [
        1.339_887_4e-3,
        9.618_437e-3,
        5.550_332_5e-2,
        2.402_264_8e-1,
        6.931_472e-1,
    ] {
        p = p.fmadd(f, V::splat(c));
    }
    p.fmadd(f, V::splat(1.0)).scale2(k) // p ∈ [0.7, 1.42], k ≥ −125: normal
}

/// Natural log of positive normal lanes (Cephes `logf`).
#[inline(always)]
pub(crate) unsafe fn log<V: Vector>(x: V) -> V {
    let (m, exponent) = x.split_exponent();
    // m < √½: use 2m (one less in the exponent) so that f = m − 1 ∈ [−0.29, 0.41]
    let small = m.lt(V::splat(std::f32::consts::FRAC_1_SQRT_2));
    let e = exponent.sub(V::splat(126.0));
    let e = V::select(small, e.sub(V::splat(1.0)), e);
    let f = m.sub(V::splat(1.0));
    let f = V::select(small, f.add(m), f);
    let z = f.mul(f);
    let mut p = V::splat(7.037_683_6e-2);
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
        p = p.fmadd(f, V::splat(c));
    }
    let y = p.mul(f).mul(z);
    let y = e.fmadd(V::splat(-2.121_944_4e-4), y);
    let y = z.fnmadd(V::splat(0.5), y);
    e.fmadd(V::splat(0.693_359_4), f.add(y))
}

/// `x / (1 + e^{−x})`
#[inline(always)]
pub(crate) unsafe fn silu<V: Vector>(x: V) -> V {
    x.div(V::splat(1.0).add(exp(V::zero().sub(x))))
}

/// `log(1 + e^x)` (x above 20 passes through), computed as `max(x, 0) + log1p(e^{−|x|})` with
/// an exact-rounding `log1p(e) = log(u)·e / (u − 1)`, `u = 1 + e` (Goldberg's trick).
#[inline(always)]
pub(crate) unsafe fn softplus<V: Vector>(x: V) -> V {
    let e = exp(V::zero().sub(x.abs()));
    let u = V::splat(1.0).add(e);
    let um1 = u.sub(V::splat(1.0));
    let l = log(u).mul(e).div(um1);
    let l = V::select(um1.eq(V::zero()), e, l);
    let r = x.max(V::zero()).add(l);
    V::select(x.gt(V::splat(20.0)), x, r)
}

/// One panel of a matrix-vector product, for the streams starting at `x` / `y`.
pub(crate) struct PanelArgs {
    /// The panel: `cols` columns of `width` floats.
    pub p: *const f32,
    pub cols: usize,
    /// Rows: a multiple of 8.
    pub width: usize,
    /// `width` floats, or null for none.
    pub bias: *const f32,
    /// Stream `s` reads `cols` floats at `x + s·xs` and writes `width` floats at `y + s·ys`.
    pub x: *const f32,
    pub xs: usize,
    pub y: *mut f32,
    pub ys: usize,
}

/// `y = bias + panel·x` for `SB` streams with `R` registers of rows (the last one holding the
/// rest of `width`) and `J` accumulator sets over interleaved columns (more FMA chains in flight;
/// summed in order at the end).
///
/// # Safety
/// The pointers of `a` cover the lengths documented on [`PanelArgs`] for `SB` streams;
/// `V::W·(R − 1) < width ≤ V::W·R`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register arrays read clearer by index
pub(crate) unsafe fn panel<V: Vector, const R: usize, const SB: usize, const J: usize>(
    a: &PanelArgs,
) {
    let (w, full, last) = (V::W, V::tail(V::W), V::tail(a.width - V::W * (R - 1)));
    let tail = |r: usize| if r + 1 == R { last } else { full };
    let mut acc = [[[V::zero(); R]; SB]; J];
    if !a.bias.is_null() {
        for s in 0..SB {
            for r in 0..R {
                acc[0][s][r] = V::load_tail(a.bias.add(w * r), tail(r));
            }
        }
    }
    let xb = |j: usize| -> [V; SB] { std::array::from_fn(|s| V::splat(*a.x.add(s * a.xs + j))) };
    let mut j = 0;
    while j + J <= a.cols {
        for jj in 0..J {
            let q = a.p.add((j + jj) * a.width);
            let x = xb(j + jj);
            for r in 0..R {
                let wv = V::load_tail(q.add(w * r), tail(r));
                for s in 0..SB {
                    acc[jj][s][r] = wv.fmadd(x[s], acc[jj][s][r]);
                }
            }
        }
        j += J;
    }
    while j < a.cols {
        let q = a.p.add(j * a.width);
        let x = xb(j);
        for r in 0..R {
            let wv = V::load_tail(q.add(w * r), tail(r));
            for s in 0..SB {
                acc[0][s][r] = wv.fmadd(x[s], acc[0][s][r]);
            }
        }
        j += 1;
    }
    for s in 0..SB {
        for r in 0..R {
            let mut sum = acc[0][s][r];
            for jj in 1..J {
                sum = sum.add(acc[jj][s][r]);
            }
            sum.store_tail(a.y.add(s * a.ys + w * r), tail(r));
        }
    }
}

/// [`Kernels::matvec`]: panels of [`BLOCK`] rows, up to `per_pass` streams per pass, each
/// (registers, streams) shape computed by `panel` (the set's choice of [`panel`] parameters).
///
/// # Safety
/// As [`Kernels::matvec`]; `panel` must be sound for every shape `matvec` passes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matvec<V: Vector>(
    w: &Panel,
    bias: Option<&[f32]>,
    x: &[f32],
    xs: usize,
    y: &mut [f32],
    ys: usize,
    streams: usize,
    per_pass: usize,
    panel: impl Fn(usize, usize, &PanelArgs),
) {
    check_matvec(w, bias, x, xs, y, ys, streams);
    let cols = w.cols;
    for r0 in (0..w.rows_padded).step_by(BLOCK) {
        let width = BLOCK.min(w.rows_padded - r0);
        let mut s = 0;
        while s < streams {
            let sb = (streams - s).min(per_pass);
            let a = PanelArgs {
                p: w.data.as_ptr().add(r0 * cols),
                cols,
                width,
                bias: bias.map_or(std::ptr::null(), |b| b.as_ptr().add(r0)),
                x: x.as_ptr().add(s * xs),
                xs,
                y: y.as_mut_ptr().add(s * ys + r0),
                ys,
            };
            panel(width.div_ceil(V::W), sb, &a);
            s += sb;
        }
    }
}

impl<V: Vector> Kernels for Vectorized<V> {
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
        V::matvec(w, bias, x, xs, y, ys, streams)
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
        check_conv(ring, newest, taps, x, w, b, out);
        let dip = out.len();
        let r = ring.as_mut_ptr();
        // whole registers, then a partial one (dip is a multiple of 8)
        for o in (0..dip).step_by(V::W) {
            let t = V::tail((dip - o).min(V::W));
            let ld = |p: *const f32| V::load_tail(p, t);
            ld(x.as_ptr().add(o)).store_tail(r.add(newest * dip + o), t);
            let mut slot = if newest + 1 == taps { 0 } else { newest + 1 };
            let mut acc = ld(w.as_ptr().add(o)).mul(ld(r.add(slot * dip + o)));
            for k in 1..taps {
                slot = if slot + 1 == taps { 0 } else { slot + 1 };
                acc = ld(w.as_ptr().add(k * dip + o)).fmadd(ld(r.add(slot * dip + o)), acc);
            }
            let acc = acc.add(ld(b.as_ptr().add(o)));
            silu(acc).store_tail(out.as_mut_ptr().add(o), t);
        }
    }

    #[inline(always)]
    unsafe fn softplus(v: &mut [f32]) {
        let mut chunks = v.chunks_exact_mut(V::W);
        for c in &mut chunks {
            softplus(V::load(c.as_ptr())).store(c.as_mut_ptr());
        }
        for x in chunks.into_remainder() {
            *x = super::kernels::softplus(*x);
        }
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
        check_ssm(h, a, dt, x, b, c, d, z, y);
        let (dip, n) = (y.len(), b.len());
        for o in (0..dip).step_by(V::W) {
            let dtv = V::load(dt.as_ptr().add(o));
            let xv = V::load(x.as_ptr().add(o));
            let dtx = dtv.mul(xv);
            // lanes o.. of the 16-channel group o / 16: state s at (o / 16)·16·N + 16·s + o % 16
            let at = (o / ILV) * ILV * n + o % ILV;
            let (hp, ap) = (h.as_mut_ptr().add(at), a.as_ptr().add(at));
            // h ← h·2^(dt·A·log2 e) + dt·x·B: no dependency between states, so this loop pipelines
            for s in 0..n {
                let da = exp2(dtv.mul(V::load(ap.add(s * ILV))));
                let dbx = dtx.mul(V::splat(*b.get_unchecked(s)));
                V::load(hp.add(s * ILV))
                    .fmadd(da, dbx)
                    .store(hp.add(s * ILV));
            }
            // y = Σ_s h·C over 4 accumulators (the new h is still in L1)
            let mut acc = [V::zero(); 4];
            for s in 0..n {
                let hv = V::load(hp.add(s * ILV));
                acc[s % 4] = hv.fmadd(V::splat(*c.get_unchecked(s)), acc[s % 4]);
            }
            let yv = acc[0].add(acc[1]).add(acc[2].add(acc[3]));
            let yv = V::load(d.as_ptr().add(o)).fmadd(xv, yv);
            yv.mul(silu(V::load(z.as_ptr().add(o))))
                .store(y.as_mut_ptr().add(o));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Isa;

    /// `f` over `xs`, one register at a time (the last one padded with 1s).
    fn lanes<V: Vector>(f: unsafe fn(V) -> V, xs: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        for c in xs.chunks(V::W) {
            let mut buf = [1.0f32; 16];
            buf[..c.len()].copy_from_slice(c);
            let mut res = [0.0f32; 16];
            // SAFETY: the callers check that the CPU has V's set
            unsafe { f(V::load(buf.as_ptr())).store(res.as_mut_ptr()) };
            out.extend_from_slice(&res[..c.len()]);
        }
        out
    }

    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32)
            .collect()
    }

    type Named<V> = (&'static str, unsafe fn(V) -> V);
    /// An f64 reference, the grids it is checked on and the relative tolerance.
    type Reference = (fn(f64) -> f64, Vec<Vec<f32>>, f64);

    /// The functions under test, by name.
    fn functions<V: Vector>() -> [Named<V>; 5] {
        [
            ("exp", exp::<V>),
            ("exp2", exp2::<V>),
            ("log", log::<V>),
            ("silu", silu::<V>),
            ("softplus", softplus::<V>),
        ]
    }

    /// Against f64 references, over each function's valid range.
    fn check_accuracy<V: Vector>() {
        let silu_ref = |x: f64| x / (1.0 + (-x).exp());
        let softplus_ref = |x: f64| if x > 20.0 { x } else { x.exp().ln_1p() };
        let refs: [Reference; 5] = [
            (f64::exp, vec![grid(-87.0, 88.0, 20001)], 3e-7),
            (f64::exp2, vec![grid(-124.0, 0.0, 20001)], 3e-7),
            (
                f64::ln,
                vec![grid(1e-30, 4.0, 20001), grid(1.0, 2.0, 20001)],
                3e-7,
            ),
            (silu_ref, vec![grid(-80.0, 80.0, 20001)], 5e-7),
            (softplus_ref, vec![grid(-80.0, 40.0, 20001)], 5e-7),
        ];
        for ((name, f), (r, grids, tol)) in functions::<V>().into_iter().zip(refs) {
            for xs in grids {
                for (x, got) in xs.iter().zip(lanes(f, &xs)) {
                    let want = r(*x as f64);
                    let err = ((got as f64 - want) / want.abs().max(1e-30)).abs();
                    assert!(
                        err <= tol,
                        "{name}({x}) = {got} on {} lanes, want {want} (rel err {err:.2e})",
                        V::W
                    );
                }
            }
        }
    }

    #[test]
    fn vector_math_is_accurate() {
        if Isa::Avx2.available() {
            check_accuracy::<F32x8>();
        }
        if Isa::Avx512.available() {
            check_accuracy::<F32x16>();
        }
    }

    /// Same polynomials, same operations: the 16-lane functions equal the 8-lane ones bit for bit
    /// (also past the clamps: ±90 for exp, −130 for exp2).
    #[test]
    fn both_sets_agree_bit_for_bit() {
        if !Isa::Avx512.available() {
            return;
        }
        let grids = [
            grid(-90.0, 90.0, 20001),
            grid(-130.0, 0.5, 20001),
            grid(1e-30, 4.0, 20001),
            grid(-90.0, 90.0, 20001),
            grid(-90.0, 40.0, 20001),
        ];
        let pairs = functions::<F32x16>().into_iter().zip(functions::<F32x8>());
        for (((name, f16), (_, f8)), xs) in pairs.zip(grids) {
            for ((x, a), b) in xs.iter().zip(lanes(f16, &xs)).zip(lanes(f8, &xs)) {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{name}({x}): 16 lanes {a} vs 8 lanes {b}"
                );
            }
        }
    }
}
