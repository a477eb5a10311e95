//! One stage of the step engine: a stack of pre-norm residual Mamba blocks at one width (the
//! plain model is one stage; the U-Net has one per pooling level plus one), its recurrent state
//! for every stream, its scratch, and the step of its blocks.

use tch::Tensor;

use super::buf::Buf;
use super::kernels::{rms_norm, Kernels};
use super::weights::{state_index, Dims, StageWeights};
use crate::model::LayerState;
use crate::Result;

/// Activations of one stage's step, (streams, width) each, padded widths as in [`Dims`].
#[derive(Debug, Clone)]
pub(crate) struct Scratch {
    /// (S, dmp) the residual stream (the stage's input, then its output)
    pub resid: Buf,
    /// (S, dmp) the last mixer's output
    pub h: Buf,
    /// (S, dmp) RMSNorm output
    pub hn: Buf,
    /// (S, 2·dip) in_proj output `[x | z]`
    pub xz: Buf,
    /// (S, dip) conv + SiLU output (the scan input u)
    pub xc: Buf,
    /// (S, xdbp) x_proj output `[dt | B | C]`
    pub xdb: Buf,
    /// (S, dip) softplus(dt_proj(dt) + bias)
    pub dt: Buf,
    /// (S, dip) gated scan output
    pub y: Buf,
}

/// One stage's recurrent state (its layers, every stream) and scratch.
#[derive(Debug, Clone)]
pub(crate) struct StageState {
    /// Ring slot of the newest conv input (shared by the stage's layers and streams).
    pub newest: usize,
    /// (n_layer, S, d_conv, dip): ring buffers of the last d_conv conv inputs.
    pub conv: Buf,
    /// (n_layer, S, dip / 16, d_state, 16): the scan state h, 16 channels interleaved.
    pub ssm: Buf,
    pub sc: Scratch,
}

impl StageState {
    pub fn zeros(d: &Dims, s: usize) -> StageState {
        let (dmp, dip) = (d.d_model_padded, d.d_inner_padded);
        StageState {
            newest: d.d_conv - 1,
            conv: Buf::zeros(d.n_layer * s * d.d_conv * dip),
            ssm: Buf::zeros(d.n_layer * s * dip * d.d_state),
            sc: Scratch {
                resid: Buf::zeros(s * dmp),
                h: Buf::zeros(s * dmp),
                hn: Buf::zeros(s * dmp),
                xz: Buf::zeros(s * 2 * dip),
                xc: Buf::zeros(s * dip),
                xdb: Buf::zeros(s * d.xdb_padded()),
                dt: Buf::zeros(s * dip),
                y: Buf::zeros(s * dip),
            },
        }
    }

    /// Zeroes stream `b`'s state in every layer of the stage.
    pub fn reset_stream(&mut self, d: &Dims, b: usize, streams: usize) {
        let (conv_len, ssm_len) = (d.d_conv * d.d_inner_padded, d.d_inner_padded * d.d_state);
        for l in 0..d.n_layer {
            let at = l * streams + b;
            self.conv[at * conv_len..(at + 1) * conv_len].fill(0.0);
            self.ssm[at * ssm_len..(at + 1) * ssm_len].fill(0.0);
        }
    }

    /// Sets the state from host copies of tch layer states, one `(conv (S, d_inner, d_conv),
    /// ssm (S, d_inner, d_state))` per layer of the stage, row-major and already checked.
    pub fn load(&mut self, d: &Dims, layers: &[&(Vec<f32>, Vec<f32>)], s: usize) {
        let (di, dip, n, k) = (d.d_inner, d.d_inner_padded, d.d_state, d.d_conv);
        self.conv.fill(0.0);
        self.ssm.fill(0.0);
        self.newest = k - 1; // ring slot t holds tap t (oldest first)
        for (l, (conv, ssm)) in layers.iter().copied().enumerate() {
            for b in 0..s {
                let ring = &mut self.conv[(l * s + b) * k * dip..][..k * dip];
                let h = &mut self.ssm[(l * s + b) * dip * n..][..dip * n];
                for ch in 0..di {
                    for t in 0..k {
                        ring[t * dip + ch] = conv[(b * di + ch) * k + t];
                    }
                    for j in 0..n {
                        h[state_index(ch, j, n)] = ssm[(b * di + ch) * n + j];
                    }
                }
            }
        }
    }

    /// The stage's layer states as tch tensors (CPU, f32), as `Mixer::zero_state` lays them out.
    ///
    /// # Errors
    /// [`crate::Error::Torch`] if a tensor cannot be made.
    pub fn export(&self, d: &Dims, s: usize) -> Result<Vec<LayerState>> {
        let (di, dip, n, k) = (d.d_inner, d.d_inner_padded, d.d_state, d.d_conv);
        let mut layers = Vec::with_capacity(d.n_layer);
        for l in 0..d.n_layer {
            let (mut conv, mut ssm) = (vec![0.0f32; s * di * k], vec![0.0f32; s * di * n]);
            for b in 0..s {
                let ring = &self.conv[(l * s + b) * k * dip..][..k * dip];
                let h = &self.ssm[(l * s + b) * dip * n..][..dip * n];
                for ch in 0..di {
                    for t in 0..k {
                        let slot = (self.newest + 1 + t) % k;
                        conv[(b * di + ch) * k + t] = ring[slot * dip + ch];
                    }
                    for j in 0..n {
                        ssm[(b * di + ch) * n + j] = h[state_index(ch, j, n)];
                    }
                }
            }
            let shape = |last: usize| [s as i64, di as i64, last as i64];
            layers.push(LayerState {
                conv: Tensor::f_from_slice(&conv)?.f_reshape(shape(k))?,
                ssm: Tensor::f_from_slice(&ssm)?.f_reshape(shape(n))?,
            });
        }
        Ok(layers)
    }
}

/// One step of a stage's pre-norm residual blocks (`u ← u + mixer(norm(u))` per layer) for
/// every stream, on `st.sc.resid` in place.
///
/// # Safety
/// As [`Kernels`]: the CPU must support `K`'s instructions.
#[inline(always)]
pub(crate) unsafe fn blocks<K: Kernels>(sw: &StageWeights, st: &mut StageState, s: usize) {
    let d = sw.dims;
    let (dm, dmp, dip) = (d.d_model, d.d_model_padded, d.d_inner_padded);
    let (n, k, r, xdbp) = (d.d_state, d.d_conv, d.dt_rank, d.xdb_padded());
    st.newest = (st.newest + 1) % k;
    let (sc, newest) = (&mut st.sc, st.newest);
    for (l, lw) in sw.layers.iter().enumerate() {
        rms_norm(&sc.resid, &lw.norm, &mut sc.hn, dm, dmp, s);
        K::matvec(&lw.in_proj, None, &sc.hn, dmp, &mut sc.xz, 2 * dip, s); // (S, 2·dip)
        for b in 0..s {
            let at = l * s + b;
            K::conv_silu(
                &mut st.conv[at * k * dip..(at + 1) * k * dip],
                newest,
                k,
                &sc.xz[b * 2 * dip..b * 2 * dip + dip],
                &lw.conv_w,
                &lw.conv_b,
                &mut sc.xc[b * dip..(b + 1) * dip],
            ); // (dip)
        }
        K::matvec(&lw.x_proj, None, &sc.xc, dip, &mut sc.xdb, xdbp, s); // (S, R + 2N)
        K::matvec(
            &lw.dt_proj,
            Some(&lw.dt_bias),
            &sc.xdb,
            xdbp,
            &mut sc.dt,
            dip,
            s,
        );
        K::softplus(&mut sc.dt[..s * dip]); // (S, dip)
        for b in 0..s {
            let at = l * s + b;
            let xdb = &sc.xdb[b * xdbp..(b + 1) * xdbp];
            K::ssm(
                &mut st.ssm[at * dip * n..(at + 1) * dip * n],
                &lw.a,
                &sc.dt[b * dip..(b + 1) * dip],
                &sc.xc[b * dip..(b + 1) * dip],
                &xdb[r..r + n],
                &xdb[r + n..r + 2 * n],
                &lw.d,
                &sc.xz[b * 2 * dip + dip..(b + 1) * 2 * dip],
                &mut sc.y[b * dip..(b + 1) * dip],
            ); // (dip)
        }
        K::matvec(&lw.out_proj, None, &sc.y, dip, &mut sc.h, dmp, s); // (S, dmp)
        add_assign(&mut sc.resid, &sc.h, s * dmp); // u ← u + mixer(norm(u))
    }
}

/// `acc[..len] += x[..len]`
#[inline(always)]
fn add_assign(acc: &mut [f32], x: &[f32], len: usize) {
    for (a, &v) in acc[..len].iter_mut().zip(&x[..len]) {
        *a += v;
    }
}
