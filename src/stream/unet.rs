//! The U-Net ([`crate::model::unet`]) in the step engine: the pooling levels' linear maps laid
//! out for the step, each level's recurrent state ([`Level`]: the current group's inputs and
//! the up-pooled outputs pending for it), and the two moves of a step between stages: [`feed`]
//! (outer → inner, once a group completes) and [`up`] (inner → outer, for the next group).
//!
//! Layouts are those of [`super::weights`], per stage: stage `s` has width `H_s` padded to
//! `Hp_s`; a group of `p` vectors is held position-major as `p·Hp_s` floats (position `j`,
//! channel `h` at `j·Hp_s + h`; padded channels stay 0).

use tch::{Device, Kind, Tensor};

use super::buf::Buf;
use super::kernels::Kernels;
use super::weights::{host, Panel, StageWeights};
use crate::model::{PoolState, Unet};
use crate::{Error, Result};

/// One pooling level (stage `s` ↔ stage `s + 1`), laid out for the step.
#[derive(Debug, Clone)]
pub(crate) struct PoolWeights {
    /// The pooling factor `p`.
    pub pool: usize,
    /// (H_{s+1}, p·Hp_s): `unet.down.{s}.linear.weight` with zero columns at padded channels.
    pub down: Panel,
    /// (Hp_{s+1})
    pub down_b: Buf,
    /// (p·Hp_s, H_{s+1}): `unet.up.{s}.linear.weight` with zero rows at padded channels.
    pub up: Panel,
    /// (p·Hp_s)
    pub up_b: Buf,
}

/// Lays out every pooling level of `u`, whose stages are already laid out as `stages`.
///
/// # Errors
/// [`Error::Config`] for a pooling factor < 1 or a tensor whose shape does not match.
pub(crate) fn pool_weights(u: &Unet, stages: &[StageWeights]) -> Result<Vec<PoolWeights>> {
    if u.up.len() != u.down.len() || stages.len() != u.down.len() + 1 {
        return Err(Error::Config {
            reason: format!(
                "stream engine: U-Net with {} down-pools, {} up-pools and {} stages",
                u.down.len(),
                u.up.len(),
                stages.len()
            ),
        });
    }
    let mut out = Vec::with_capacity(u.down.len());
    for (s, (down, up)) in u.down.iter().zip(&u.up).enumerate() {
        let p = usize::try_from(down.pool)
            .ok()
            .filter(|&p| p > 0 && up.pool == down.pool)
            .ok_or(Error::Config {
                reason: format!(
                    "stream engine: level {s} pools by {} down and {} up",
                    down.pool, up.pool
                ),
            })?;
        let (h, hp) = (stages[s].dims.d_model, stages[s].dims.d_model_padded);
        let (hi, hip) = (
            stages[s + 1].dims.d_model,
            stages[s + 1].dims.d_model_padded,
        );
        let name = |what: &str, w: &str| format!("unet.{what}.{s}.linear.{w}");
        let dw = host(&down.weight, &name("down", "weight"), &[hi, p * h])?;
        let db = host(&down.bias, &name("down", "bias"), &[hi])?;
        let uw = host(&up.weight, &name("up", "weight"), &[p * h, hi])?;
        let ub = host(&up.bias, &name("up", "bias"), &[p * h])?;
        // padded position-major index → unpadded, or None for a padded channel
        let unpad = |i: usize| (i % hp < h).then(|| (i / hp) * h + i % hp);
        let mut up_b = Buf::zeros(p * hp);
        for (i, v) in up_b.iter_mut().enumerate() {
            *v = unpad(i).map_or(0.0, |k| ub[k]);
        }
        out.push(PoolWeights {
            pool: p,
            down: Panel::new(hi, p * hp, |r, i| {
                unpad(i).map_or(0.0, |k| dw[r * p * h + k])
            }),
            down_b: Buf::padded(&db, hip),
            up: Panel::new(p * hp, hi, |i, j| unpad(i).map_or(0.0, |k| uw[k * hi + j])),
            up_b,
        });
    }
    Ok(out)
}

/// The recurrent state of one pooling level for every stream (the engine's [`PoolState`]).
#[derive(Debug, Clone)]
pub(crate) struct Level {
    /// Inputs of the current group so far (0 ≤ filled < p), shared by every stream.
    pub filled: usize,
    /// (S, p·Hp_s): the current group's inputs; positions ≥ `filled` are stale.
    pub buffer: Buf,
    /// (S, p·Hp_s): up-pooled outputs for the current group's positions.
    pub pending: Buf,
}

impl Level {
    /// A level at the start of a group with nothing pending (as `Unet::zero_state`).
    pub fn zeros(pool: usize, hp: usize, streams: usize) -> Level {
        Level {
            filled: 0,
            buffer: Buf::zeros(streams * pool * hp),
            pending: Buf::zeros(streams * pool * hp),
        }
    }

    /// Zeroes stream `b`'s inputs and pending outputs (the group position is shared).
    pub fn reset_stream(&mut self, b: usize, row: usize) {
        self.buffer[b * row..(b + 1) * row].fill(0.0);
        self.pending[b * row..(b + 1) * row].fill(0.0);
    }
}

/// Stage `s`'s input `x` (S, hp) enters level `s`: it is stored at the group's next position,
/// then `x ← x + pending[position]` (the shifted up-pooled output of the previous group). When
/// that completes the group, the group is down-pooled into `inner_x` (S, hip), the stage-`s+1`
/// input, and `true` is returned (stage `s + 1` runs this step).
///
/// # Safety
/// As [`Kernels`]: the CPU must support `K`'s instructions.
///
/// # Panics
/// On buffers shorter than these shapes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn feed<K: Kernels>(
    pw: &PoolWeights,
    lv: &mut Level,
    x: &mut [f32],
    hp: usize,
    inner_x: &mut [f32],
    hip: usize,
    streams: usize,
) -> bool {
    let (j, row) = (lv.filled, pw.pool * hp);
    for b in 0..streams {
        let xb = &mut x[b * hp..(b + 1) * hp];
        lv.buffer[b * row + j * hp..][..hp].copy_from_slice(xb);
        for (v, &u) in xb.iter_mut().zip(&lv.pending[b * row + j * hp..][..hp]) {
            *v += u;
        }
    }
    if j + 1 < pw.pool {
        lv.filled = j + 1;
        return false;
    }
    lv.filled = 0;
    K::matvec(
        &pw.down,
        Some(&pw.down_b),
        &lv.buffer,
        row,
        inner_x,
        hip,
        streams,
    ); // (S, Hp_{s+1})
    true
}

/// Stage `s + 1`'s output `z` (S, hip) becomes level `s`'s pending outputs for the next group.
///
/// # Safety
/// As [`Kernels`]: the CPU must support `K`'s instructions.
///
/// # Panics
/// On buffers shorter than these shapes.
#[inline(always)]
pub(crate) unsafe fn up<K: Kernels>(
    pw: &PoolWeights,
    lv: &mut Level,
    z: &[f32],
    hip: usize,
    hp: usize,
    streams: usize,
) {
    let row = pw.pool * hp;
    K::matvec(
        &pw.up,
        Some(&pw.up_b),
        z,
        hip,
        &mut lv.pending,
        row,
        streams,
    ); // (S, p·Hp_s)
}

/// A row-major f32 copy of a state tensor after checking its shape (`op`/`arg` name it in
/// errors).
///
/// # Errors
/// [`Error::Shape`] for another shape; [`Error::Torch`] if it cannot be copied.
pub(crate) fn fetch(
    t: &Tensor,
    op: &'static str,
    arg: &'static str,
    shape: &[usize],
) -> Result<Vec<f32>> {
    let want: Vec<i64> = shape.iter().map(|&v| v as i64).collect();
    if t.size() != want {
        return Err(Error::Shape {
            op,
            arg,
            expected: format!("{want:?}"),
            got: t.size(),
        });
    }
    let flat = tch::no_grad(|| {
        t.to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .reshape([-1])
    });
    Ok(Vec::<f32>::try_from(&flat)?)
}

/// A tch pool state checked and copied to the host: `(filled, buffer (S, filled, h), pending
/// (S, p, h))`, still unpadded.
///
/// # Errors
/// [`Error::InvalidArgument`]/[`Error::Shape`] when it does not fit a level of factor `pool`,
/// width `h`, for `streams` streams.
pub(crate) fn fetch_level(
    ps: &PoolState,
    pool: usize,
    h: usize,
    streams: usize,
) -> Result<(usize, Vec<f32>, Vec<f32>)> {
    const OP: &str = "StepEngine::load_state";
    let filled = ps.buffer.size().get(1).copied().unwrap_or(-1);
    let filled =
        usize::try_from(filled)
            .ok()
            .filter(|&c| c < pool)
            .ok_or(Error::InvalidArgument {
                name: "state",
                reason: format!(
                    "pool buffer {:?} must be (streams, c, width) with c < pool {pool}",
                    ps.buffer.size()
                ),
            })?;
    let buffer = fetch(&ps.buffer, OP, "pool buffer", &[streams, filled, h])?;
    let pending = fetch(&ps.pending, OP, "pool pending", &[streams, pool, h])?;
    Ok((filled, buffer, pending))
}

/// Sets `lv` from [`fetch_level`]'s output (unpadded `h` → padded `hp`).
pub(crate) fn store_level(
    lv: &mut Level,
    host: &(usize, Vec<f32>, Vec<f32>),
    pool: usize,
    h: usize,
    hp: usize,
) {
    let (filled, buffer, pending) = host;
    lv.buffer.fill(0.0);
    lv.pending.fill(0.0);
    lv.filled = *filled;
    let row = pool * hp;
    for (b, chunk) in pending.chunks(pool * h).enumerate() {
        for (j, v) in chunk.chunks(h).enumerate() {
            lv.pending[b * row + j * hp..][..h].copy_from_slice(v);
        }
    }
    if *filled > 0 {
        for (b, chunk) in buffer.chunks(filled * h).enumerate() {
            for (j, v) in chunk.chunks(h).enumerate() {
                lv.buffer[b * row + j * hp..][..h].copy_from_slice(v);
            }
        }
    }
}

/// `lv` as a tch [`PoolState`] (CPU, f32), in the layout of `Unet::zero_state`.
///
/// # Errors
/// [`Error::Torch`] if a tensor cannot be made.
pub(crate) fn export_level(
    lv: &Level,
    pool: usize,
    h: usize,
    hp: usize,
    streams: usize,
) -> Result<PoolState> {
    let row = pool * hp;
    let take = |src: &[f32], n: usize| -> Result<Tensor> {
        let mut v = Vec::with_capacity(streams * n * h);
        for b in 0..streams {
            for j in 0..n {
                v.extend_from_slice(&src[b * row + j * hp..][..h]);
            }
        }
        Ok(Tensor::f_from_slice(&v)?.f_reshape([streams as i64, n as i64, h as i64])?)
    };
    Ok(PoolState {
        buffer: take(&lv.buffer, lv.filled)?,
        pending: take(&lv.pending, pool)?,
    })
}
