//! The model's weights copied once out of libtorch into contiguous `f32` buffers laid out for the
//! one-sample step: matrices packed in row panels for vectorised matrix-vector products, the
//! conv taps transposed per tap, `A = −exp(A_log)` precomputed and interleaved by 16 channels.
//!
//! Widths are padded: `d_model` up to a multiple of 8, `d_inner` of 16 (the padded rows, columns
//! and channels hold zeros, which keeps every padded activation at exactly 0).

use tch::{Device, Kind, Tensor};

use super::buf::Buf;

use super::unet::PoolWeights;
use crate::model::{Block, Body, Mixer, WaveMamba};
use crate::{Error, Result};

/// Rows per panel of a packed matrix (4 AVX2 registers of 8 lanes).
pub(crate) const BLOCK: usize = 32;
/// Lanes of one vector: every padded width is a multiple of this.
pub(crate) const LANES: usize = 8;

/// Channels interleaved in the scan state `h` and in `A` (one AVX-512 register); `d_inner` is
/// padded to a multiple of this.
pub(crate) const ILV: usize = 16;

/// Index of (channel `ch`, state `s`) in a (d_inner_padded / ILV, d_state, ILV) buffer.
#[inline(always)]
pub(crate) fn state_index(ch: usize, s: usize, d_state: usize) -> usize {
    (ch / ILV) * d_state * ILV + s * ILV + ch % ILV
}

/// `n` rounded up to a multiple of [`LANES`].
pub(crate) fn pad8(n: usize) -> usize {
    n.div_ceil(LANES) * LANES
}

/// A matrix `W` (rows, cols) packed for `y = W·x`: rows padded to a multiple of 8 (zeros), cut
/// into panels of [`BLOCK`] rows (the last one may be narrower, a multiple of 8), each panel
/// column-major so that the step streams through it once: panel `p` of width `w` starts at
/// `p·BLOCK·cols` and holds `W[p·BLOCK + i, j]` at `j·w + i`.
#[derive(Debug, Clone)]
pub(crate) struct Panel {
    /// Rows written by a product (multiple of 8, ≥ the matrix's rows).
    pub rows_padded: usize,
    /// Length of the input vector.
    pub cols: usize,
    /// (rows_padded · cols) packed as above.
    pub data: Buf,
}

impl Panel {
    /// Packs the `rows × cols` matrix whose entry (r, j) is `get(r, j)`; rows past `rows` are 0.
    pub fn new(rows: usize, cols: usize, get: impl Fn(usize, usize) -> f32) -> Panel {
        let rows_padded = pad8(rows);
        let mut data = Buf::zeros(rows_padded * cols);
        for r0 in (0..rows_padded).step_by(BLOCK) {
            let width = BLOCK.min(rows_padded - r0);
            let panel = &mut data[r0 * cols..(r0 + width) * cols];
            for j in 0..cols {
                for i in 0..width.min(rows.saturating_sub(r0)) {
                    panel[j * width + i] = get(r0 + i, j);
                }
            }
        }
        Panel {
            rows_padded,
            cols,
            data,
        }
    }
}

/// Sizes of the step, padded where the buffers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub d_model: usize,
    /// `d_model` rounded up to a multiple of 8: the stride of every (streams, d_model) buffer.
    pub d_model_padded: usize,
    pub d_inner: usize,
    /// `d_inner` rounded up to a multiple of 16 (the interleave of the scan state): the stride
    /// of every (streams, d_inner) buffer.
    pub d_inner_padded: usize,
    pub d_state: usize,
    pub d_conv: usize,
    pub dt_rank: usize,
    /// Classes of the output (logits per stream).
    pub vocab: usize,
    /// Rows of the embedding (the vocabulary padded as upstream does).
    pub vocab_padded: usize,
    pub n_layer: usize,
}

impl Dims {
    /// Width of the `x_proj` output `[dt (dt_rank) | B (d_state) | C (d_state)]`, padded to 8.
    pub fn xdb_padded(&self) -> usize {
        pad8(self.dt_rank + 2 * self.d_state)
    }
}

/// One block's weights (`norm` + `Mixer`), laid out for the step.
#[derive(Debug, Clone)]
pub(crate) struct LayerWeights {
    /// (d_model_padded) RMSNorm weight.
    pub norm: Buf,
    /// (2·d_inner_padded, d_model): rows `[x (d_inner_padded) | z (d_inner_padded)]`.
    pub in_proj: Panel,
    /// (d_conv, d_inner_padded): `conv_w[k·dip + d] = conv1d.weight[d, 0, k]` (oldest tap first).
    pub conv_w: Buf,
    /// (d_inner_padded)
    pub conv_b: Buf,
    /// (dt_rank + 2·d_state, d_inner)
    pub x_proj: Panel,
    /// (d_inner_padded, dt_rank)
    pub dt_proj: Panel,
    /// (d_inner_padded)
    pub dt_bias: Buf,
    /// (d_inner_padded / 16, d_state, 16): `a[state_index(d, n)] = −exp(A_log[d, n])·log2(e)`
    /// (the decay exp(dt·A) is computed as 2^(dt·a)).
    pub a: Buf,
    /// (d_inner_padded) the skip `D`.
    pub d: Buf,
    /// (d_model, d_inner)
    pub out_proj: Panel,
}

/// One stage's stack of blocks (the whole plain model is one stage).
#[derive(Debug, Clone)]
pub(crate) struct StageWeights {
    /// The stage's sizes (`d_model` = its width `H_s`, `n_layer` = its blocks).
    pub dims: Dims,
    pub layers: Vec<LayerWeights>,
}

/// Every weight of a model, laid out for the step: the plain model is one stage without pooling
/// levels; the U-Net has `levels + 1` stages and one [`PoolWeights`] per level.
#[derive(Debug, Clone)]
pub(crate) struct Weights {
    /// The outer stage's sizes, `n_layer` = blocks of every stage.
    pub dims: Dims,
    /// (vocab_padded, d_model_padded)
    pub embedding: Buf,
    /// Outermost first.
    pub stages: Vec<StageWeights>,
    /// One per pooling level, outermost first (empty for the plain model).
    pub pools: Vec<PoolWeights>,
    /// (d_model_padded)
    pub norm_f: Buf,
    /// (vocab, d_model): only the first `vocab` rows of the (padded) head are kept.
    pub lm_head: Panel,
}

/// A row-major copy of `t` on the CPU as f32, after checking its shape.
pub(crate) fn host(t: &Tensor, what: &str, expected: &[usize]) -> Result<Vec<f32>> {
    let got = t.size();
    let want: Vec<i64> = expected.iter().map(|&x| x as i64).collect();
    if got != want {
        return Err(Error::Config {
            reason: format!("stream engine: {what} has shape {got:?}, expected {want:?}"),
        });
    }
    let flat = tch::no_grad(|| {
        t.detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .reshape([-1])
    });
    Ok(Vec::<f32>::try_from(&flat)?)
}

/// `v` followed by zeros up to `len`.
fn padded(v: Vec<f32>, len: usize) -> Buf {
    Buf::padded(&v, len)
}

/// `v` as a `usize` if it is > 0.
fn positive(name: &str, v: i64) -> Result<usize> {
    usize::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or(Error::Config {
            reason: format!("stream engine: {name} must be > 0, got {v}"),
        })
}

/// The sizes of a stack of `blocks` at width `dm` (the mixer sizes from its first block).
fn stage_dims(dm: usize, blocks: &[Block], vocab: usize, vocab_padded: usize) -> Result<Dims> {
    Ok(match blocks.first() {
        Some(b) => {
            let m = &b.mixer;
            let di = positive("d_inner", m.d_inner)?;
            Dims {
                d_model: dm,
                d_model_padded: pad8(dm),
                d_inner: di,
                d_inner_padded: di.div_ceil(ILV) * ILV,
                d_state: positive("d_state", m.d_state)?,
                d_conv: positive("d_conv", m.d_conv)?,
                dt_rank: positive("dt_rank", m.dt_rank)?,
                vocab,
                vocab_padded,
                n_layer: blocks.len(),
            }
        }
        None => Dims {
            d_model: dm,
            d_model_padded: pad8(dm),
            d_inner: 0,
            d_inner_padded: 0,
            d_state: 0,
            d_conv: 1,
            dt_rank: 0,
            vocab,
            vocab_padded,
            n_layer: 0,
        },
    })
}

/// Lays out a stack of blocks at width `dm`; `first` numbers its first layer in errors.
fn stage(
    dm: usize,
    blocks: &[Block],
    vocab: usize,
    vocab_padded: usize,
    first: usize,
) -> Result<StageWeights> {
    let dims = stage_dims(dm, blocks, vocab, vocab_padded)?;
    let mut layers = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        let norm = host(
            &block.norm.weight,
            &format!("layer {} norm", first + i),
            &[dm],
        )?;
        let norm = padded(norm, dims.d_model_padded);
        layers.push(layer(&block.mixer, norm, &dims, first + i)?);
    }
    Ok(StageWeights { dims, layers })
}

impl Weights {
    /// Copies (once) every weight of `model` into step-ready buffers.
    ///
    /// # Errors
    /// [`Error::Config`] for a tensor whose shape does not match the config; [`Error::Torch`] if
    /// a tensor cannot be copied.
    pub fn from_model(model: &WaveMamba) -> Result<Weights> {
        let c = &model.config;
        let dm = positive("d_model", c.d_model)?;
        let vocab = positive("vocab_size", c.vocab_size)?;
        let vocab_padded = positive("padded vocab", c.padded_vocab())?;
        if vocab > vocab_padded {
            return Err(Error::Config {
                reason: format!("stream engine: vocab_size {vocab} > padded vocab {vocab_padded}"),
            });
        }
        let (embedding, norm_f, stages, pools) = match &model.body {
            Body::Plain(b) => (
                &b.embedding,
                &b.norm_f,
                vec![stage(dm, &b.layers, vocab, vocab_padded, 0)?],
                Vec::new(),
            ),
            Body::Unet(u) => {
                let mut stages = Vec::with_capacity(u.stages.len());
                let mut first = 0;
                for (s, blocks) in u.stages.iter().enumerate() {
                    let h = positive("stage width", u.widths.get(s).copied().unwrap_or(0))?;
                    stages.push(stage(h, blocks, vocab, vocab_padded, first)?);
                    first += blocks.len();
                }
                let pools = super::unet::pool_weights(u, &stages)?;
                (&u.embedding, &u.norm_f, stages, pools)
            }
        };
        let mut dims = stages[0].dims;
        dims.n_layer = stages.iter().map(|s| s.layers.len()).sum();
        let dmp = dims.d_model_padded;
        let emb = host(embedding, "embedding", &[vocab_padded, dm])?;
        let mut emb_padded = Buf::zeros(vocab_padded * dmp);
        for (dst, src) in emb_padded.chunks_mut(dmp).zip(emb.chunks(dm)) {
            dst[..dm].copy_from_slice(src);
        }
        let head = host(&model.lm_head, "lm_head", &[vocab_padded, dm])?;
        let lm_head = Panel::new(vocab, dm, |r, j| head[r * dm + j]);
        let norm_f = host(&norm_f.weight, "norm_f", &[dm])?;
        Ok(Weights {
            dims,
            embedding: emb_padded,
            stages,
            pools,
            norm_f: padded(norm_f, dmp),
            lm_head,
        })
    }
}

/// Lays out one mixer; `i` names the layer in errors.
fn layer(m: &Mixer, norm: Buf, dims: &Dims, i: usize) -> Result<LayerWeights> {
    let (dm, di, dip) = (dims.d_model, dims.d_inner, dims.d_inner_padded);
    let (n, k, r) = (dims.d_state, dims.d_conv, dims.dt_rank);
    if (m.d_inner, m.d_state, m.d_conv, m.dt_rank) != (di as i64, n as i64, k as i64, r as i64) {
        return Err(Error::Config {
            reason: format!(
                "stream engine: layer {i} has different sizes from its stage's first layer"
            ),
        });
    }
    let name = |w: &str| format!("layer {i} mixer.{w}");
    let in_proj = host(&m.in_proj, &name("in_proj.weight"), &[2 * di, dm])?;
    let conv = host(&m.conv1d_weight, &name("conv1d.weight"), &[di, 1, k])?;
    let conv_b = host(&m.conv1d_bias, &name("conv1d.bias"), &[di])?;
    let x_proj = host(&m.x_proj, &name("x_proj.weight"), &[r + 2 * n, di])?;
    let dt_w = host(&m.dt_proj_weight, &name("dt_proj.weight"), &[di, r])?;
    let dt_b = host(&m.dt_proj_bias, &name("dt_proj.bias"), &[di])?;
    // A as the tch step computes it (same libtorch exp), then scaled by log2(e) below.
    let a_t = tch::no_grad(|| -m.a_log.detach().to_kind(Kind::Float).exp());
    let a = host(&a_t, &name("A_log"), &[di, n])?;
    let d = host(&m.d, &name("D"), &[di])?;
    let out_proj = host(&m.out_proj, &name("out_proj.weight"), &[dm, di])?;

    let mut conv_w = Buf::zeros(k * dip);
    for ch in 0..di {
        for tap in 0..k {
            conv_w[tap * dip + ch] = conv[ch * k + tap];
        }
    }
    let mut a_il = Buf::zeros(dip * n);
    for ch in 0..di {
        for s in 0..n {
            a_il[state_index(ch, s, n)] = a[ch * n + s] * std::f32::consts::LOG2_E;
        }
    }
    Ok(LayerWeights {
        norm,
        in_proj: Panel::new(2 * dip, dm, |row, j| {
            let (half, ch) = (row / dip, row % dip);
            if ch < di {
                in_proj[(half * di + ch) * dm + j]
            } else {
                0.0
            }
        }),
        conv_w,
        conv_b: padded(conv_b, dip),
        x_proj: Panel::new(r + 2 * n, di, |row, j| x_proj[row * di + j]),
        dt_proj: Panel::new(
            dip,
            r,
            |row, j| if row < di { dt_w[row * r + j] } else { 0.0 },
        ),
        dt_bias: padded(dt_b, dip),
        a: a_il,
        d: padded(d, dip),
        out_proj: Panel::new(dm, di, |row, j| out_proj[row * di + j]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_layout_holds_every_entry_once() {
        for (rows, cols) in [(1, 1), (7, 3), (8, 5), (33, 4), (64, 2), (70, 9)] {
            let p = Panel::new(rows, cols, |r, j| (r * 100 + j + 1) as f32);
            assert_eq!(p.rows_padded, pad8(rows));
            let mut seen = 0;
            for r0 in (0..p.rows_padded).step_by(BLOCK) {
                let w = BLOCK.min(p.rows_padded - r0);
                for j in 0..cols {
                    for i in 0..w {
                        let v = p.data[r0 * cols + j * w + i];
                        if r0 + i < rows {
                            assert_eq!(v, ((r0 + i) * 100 + j + 1) as f32);
                            seen += 1;
                        } else {
                            assert_eq!(v, 0.0);
                        }
                    }
                }
            }
            assert_eq!(seen, rows * cols);
        }
    }
}
