//! The step's inner loops behind one trait, so that the engine's driver is written once and
//! instantiated per instruction set: [`Scalar`] (portable, no explicit SIMD) here, `Avx2` and
//! `Avx512` in `vector.rs`. Every kernel checks its slice lengths (a few comparisons per call)
//! before any unchecked access.

use super::weights::{state_index, Panel, BLOCK, ILV, LANES};

/// The kernels of one instruction set.
///
/// # Safety
/// Implementations may use instructions the CPU lacks: call them only when
/// [`super::Isa::available`] holds for their set.
pub(crate) trait Kernels {
    /// Batched matrix-vector product over `streams` vectors:
    /// `y[s·ys + r] = bias[r] (or 0) + Σ_j W[r, j]·x[s·xs + j]` for `r < w.rows_padded`.
    ///
    /// # Shapes
    /// `x`: (streams, xs) with `xs ≥ w.cols`; `y`: (streams, ys) with `ys ≥ w.rows_padded`;
    /// `bias`: (≥ w.rows_padded).
    ///
    /// # Panics
    /// On slices shorter than these shapes.
    unsafe fn matvec(
        w: &Panel,
        bias: Option<&[f32]>,
        x: &[f32],
        xs: usize,
        y: &mut [f32],
        ys: usize,
        streams: usize,
    );

    /// The causal depthwise conv of one stream, then SiLU: writes `x` into ring slot `newest`
    /// and sets `out[c] = silu(Σ_k w[k, c]·ring[(newest + 1 + k) mod taps, c] + b[c])`.
    ///
    /// # Shapes
    /// `out`: (dip); `x`, `b`: (≥ dip); `ring`, `w`: (taps, dip).
    ///
    /// # Panics
    /// On slices shorter than these shapes or `newest ≥ taps`.
    unsafe fn conv_silu(
        ring: &mut [f32],
        newest: usize,
        taps: usize,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        out: &mut [f32],
    );

    /// `v ← softplus(v)` (threshold 20, as `torch.nn.functional.softplus`).
    unsafe fn softplus(v: &mut [f32]);

    /// The selective state update and gated output of one stream (upstream `Mamba.step`):
    /// `h ← h·exp(dt·A) + (dt·x)·B`, `y = (h·C + D·x)·silu(z)`, with `a` = A·log2(e) (so the
    /// decay is `2^(dt·a)`).
    ///
    /// # Shapes
    /// `y`: (dip), a multiple of 16; `b`, `c`: (N); `h`, `a`: (dip / 16, N, 16);
    /// `dt`, `x`, `d`, `z`: (≥ dip).
    ///
    /// # Panics
    /// On slices shorter than these shapes.
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
    );
}

/// Length checks shared by every `matvec`.
pub(crate) fn check_matvec(
    w: &Panel,
    bias: Option<&[f32]>,
    x: &[f32],
    xs: usize,
    y: &[f32],
    ys: usize,
    streams: usize,
) {
    assert_eq!(w.data.len(), w.rows_padded * w.cols);
    if streams > 0 {
        assert!(xs >= w.cols && x.len() >= (streams - 1) * xs + w.cols);
        assert!(ys >= w.rows_padded && y.len() >= (streams - 1) * ys + w.rows_padded);
    }
    if let Some(b) = bias {
        assert!(b.len() >= w.rows_padded);
    }
}

/// Length checks shared by every `conv_silu`.
pub(crate) fn check_conv(
    ring: &[f32],
    newest: usize,
    taps: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    out: &[f32],
) {
    let dip = out.len();
    assert!(dip.is_multiple_of(LANES) && newest < taps);
    assert!(ring.len() >= taps * dip && w.len() >= taps * dip);
    assert!(x.len() >= dip && b.len() >= dip);
}

/// Length checks shared by every `ssm`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_ssm(
    h: &[f32],
    a: &[f32],
    dt: &[f32],
    x: &[f32],
    b: &[f32],
    c: &[f32],
    d: &[f32],
    z: &[f32],
    y: &[f32],
) {
    let (dip, n) = (y.len(), b.len());
    assert!(dip.is_multiple_of(ILV) && c.len() == n);
    assert!(h.len() >= dip * n && a.len() >= dip * n);
    assert!(dt.len() >= dip && x.len() >= dip && d.len() >= dip && z.len() >= dip);
}

/// RMSNorm of `streams` rows (upstream ε = 1e-5): `out = x / √(mean(x²) + ε) · weight`, the
/// mean over the first `dm` entries; the padded tail of `out` is `x·0 = 0` (zero weights).
///
/// # Shapes
/// `x`, `out`: (streams, stride); `weight`: (stride).
pub(crate) fn rms_norm(
    x: &[f32],
    weight: &[f32],
    out: &mut [f32],
    dm: usize,
    stride: usize,
    streams: usize,
) {
    for (xr, or) in x
        .chunks_exact(stride)
        .zip(out.chunks_exact_mut(stride))
        .take(streams)
    {
        let ms = xr[..dm].iter().map(|v| v * v).sum::<f32>() / dm as f32;
        let rs = 1.0 / (ms + crate::model::RmsNorm::EPS as f32).sqrt();
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = v * rs * w;
        }
    }
}

/// `x / (1 + e^{−x})`
#[inline]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `log(1 + e^x)`, or `x` above 20 (PyTorch's threshold).
#[inline]
pub(crate) fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// Plain Rust loops over the same layouts: the reference and the fallback on any CPU.
pub(crate) struct Scalar;

impl Kernels for Scalar {
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
        for s in 0..streams {
            let xv = &x[s * xs..s * xs + cols];
            let yv = &mut y[s * ys..s * ys + w.rows_padded];
            match bias {
                Some(b) => yv.copy_from_slice(&b[..w.rows_padded]),
                None => yv.fill(0.0),
            }
            for r0 in (0..w.rows_padded).step_by(BLOCK) {
                let width = BLOCK.min(w.rows_padded - r0);
                let panel = &w.data[r0 * cols..(r0 + width) * cols];
                let out = &mut yv[r0..r0 + width];
                for (col, &xj) in panel.chunks_exact(width).zip(xv) {
                    for (o, &wv) in out.iter_mut().zip(col) {
                        *o += wv * xj;
                    }
                }
            }
        }
    }

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
        ring[newest * dip..(newest + 1) * dip].copy_from_slice(&x[..dip]);
        for (ch, o) in out.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for k in 0..taps {
                let slot = (newest + 1 + k) % taps;
                acc += w[k * dip + ch] * ring[slot * dip + ch];
            }
            *o = silu(acc + b[ch]);
        }
    }

    unsafe fn softplus(v: &mut [f32]) {
        for x in v {
            *x = softplus(*x);
        }
    }

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
        let n = b.len();
        for (ch, yo) in y.iter_mut().enumerate() {
            let dtx = dt[ch] * x[ch];
            let mut acc = 0.0f32;
            for s in 0..n {
                let i = state_index(ch, s, n);
                h[i] = h[i] * (dt[ch] * a[i]).exp2() + dtx * b[s];
                acc += h[i] * c[s];
            }
            *yo = (acc + d[ch] * x[ch]) * silu(z[ch]);
        }
    }
}
