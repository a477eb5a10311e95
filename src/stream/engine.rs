//! [`StepEngine`]: the recurrent step of every stream, over the step-ready weights, with all
//! buffers allocated up front.

use tch::{Device, Kind, Tensor};

use super::buf::Buf;
use super::kernels::{rms_norm, Kernels, Scalar};
use super::weights::{state_index, Dims, Weights};
use super::Isa;
use crate::model::{LayerState, State, WaveMamba};
use crate::{Error, Result};

/// Activations of one step, (streams, width) each, padded widths as in [`Dims`].
#[derive(Debug, Clone)]
struct Scratch {
    /// (S, dmp) the residual stream
    resid: Buf,
    /// (S, dmp) the last mixer's output
    h: Buf,
    /// (S, dmp) RMSNorm output
    hn: Buf,
    /// (S, 2·dip) in_proj output `[x | z]`
    xz: Buf,
    /// (S, dip) conv + SiLU output (the scan input u)
    xc: Buf,
    /// (S, xdbp) x_proj output `[dt | B | C]`
    xdb: Buf,
    /// (S, dip) softplus(dt_proj(dt) + bias)
    dt: Buf,
    /// (S, dip) gated scan output
    y: Buf,
    /// (S, vocab rounded up to 8) head output
    head: Buf,
}

/// The fused CPU streaming step of a [`WaveMamba`] (the recurrent path of DESIGN.md §1) for a
/// fixed number of streams: weights copied once into contiguous f32 buffers, then every
/// [`step`](Self::step) advances every layer of every stream by one sample with no allocation
/// and no libtorch call. Equals `WaveMamba::step` to f32 rounding (rel err ≤ 1e-5).
///
/// Single-threaded: one step of the `small` preset takes a few µs, too short to share across
/// threads without a spinning worker pool; run several engines on threads to use more cores.
#[derive(Debug, Clone)]
pub struct StepEngine {
    w: Weights,
    isa: Isa,
    streams: usize,
    /// Ring slot of the newest conv input (shared by every layer and stream).
    newest: usize,
    /// (n_layer, S, d_conv, dip): ring buffers of the last d_conv conv inputs.
    conv: Buf,
    /// (n_layer, S, dip / 16, d_state, 16): the scan state h, 16 channels interleaved.
    ssm: Buf,
    scratch: Scratch,
    /// (S, vocab)
    logits: Buf,
}

impl StepEngine {
    /// An engine for `streams` streams from a zero state, with the best kernels for this CPU
    /// ([`Isa::detect`]).
    ///
    /// # Errors
    /// [`Error::Config`] for an architecture the engine does not run (anything but the plain
    /// model so far) or inconsistent tensor shapes; [`Error::InvalidArgument`] for 0 streams.
    pub fn new(model: &WaveMamba, streams: usize) -> Result<StepEngine> {
        Self::with_isa(model, streams, Isa::detect())
    }

    /// As [`new`](Self::new) with a chosen kernel set (e.g. [`Isa::Scalar`] to test the
    /// fallback).
    ///
    /// # Errors
    /// As [`new`](Self::new); [`Error::InvalidArgument`] if this CPU lacks `isa`.
    pub fn with_isa(model: &WaveMamba, streams: usize, isa: Isa) -> Result<StepEngine> {
        if streams == 0 {
            return Err(Error::InvalidArgument {
                name: "streams",
                reason: "must be ≥ 1".into(),
            });
        }
        if !isa.available() {
            return Err(Error::InvalidArgument {
                name: "isa",
                reason: format!("this CPU cannot run the {} kernels", isa.name()),
            });
        }
        let w = Weights::from_model(model)?;
        let d = w.dims;
        let (s, dmp, dip) = (streams, d.d_model_padded, d.d_inner_padded);
        let scratch = Scratch {
            resid: Buf::zeros(s * dmp),
            h: Buf::zeros(s * dmp),
            hn: Buf::zeros(s * dmp),
            xz: Buf::zeros(s * 2 * dip),
            xc: Buf::zeros(s * dip),
            xdb: Buf::zeros(s * d.xdb_padded()),
            dt: Buf::zeros(s * dip),
            y: Buf::zeros(s * dip),
            head: Buf::zeros(s * w.lm_head.rows_padded),
        };
        Ok(StepEngine {
            isa,
            streams,
            newest: d.d_conv - 1,
            conv: Buf::zeros(d.n_layer * s * d.d_conv * dip),
            ssm: Buf::zeros(d.n_layer * s * dip * d.d_state),
            scratch,
            logits: Buf::zeros(s * d.vocab),
            w,
        })
    }

    /// Number of streams advanced by each step.
    pub fn streams(&self) -> usize {
        self.streams
    }

    /// Logits per stream (the model's `vocab_size`).
    pub fn vocab(&self) -> usize {
        self.w.dims.vocab
    }

    /// The model sizes the engine runs (with its padded widths).
    pub fn dims(&self) -> Dims {
        self.w.dims
    }

    /// The kernel set in use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The logits of the last step, (streams, vocab) row-major (zeros before the first step).
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Zeroes the state of every stream (as `WaveMamba::zero_state`).
    pub fn reset(&mut self) {
        self.conv.fill(0.0);
        self.ssm.fill(0.0);
        self.newest = self.w.dims.d_conv - 1;
    }

    /// Zeroes the state of stream `stream` only.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `stream ≥ streams()`.
    pub fn reset_stream(&mut self, stream: usize) -> Result<()> {
        if stream >= self.streams {
            return Err(Error::InvalidArgument {
                name: "stream",
                reason: format!("stream {stream} of an engine with {} streams", self.streams),
            });
        }
        let d = self.w.dims;
        let (conv_len, ssm_len) = (d.d_conv * d.d_inner_padded, d.d_inner_padded * d.d_state);
        for l in 0..d.n_layer {
            let at = l * self.streams + stream;
            self.conv[at * conv_len..(at + 1) * conv_len].fill(0.0);
            self.ssm[at * ssm_len..(at + 1) * ssm_len].fill(0.0);
        }
        Ok(())
    }

    /// Continues from a tch recurrent state, e.g. the one [`WaveMamba::prefill`] leaves.
    ///
    /// # Shapes
    /// per layer `conv`: (streams, d_inner, d_conv) oldest first, `ssm`: (streams, d_inner,
    /// d_state); any device and float dtype.
    ///
    /// # Errors
    /// [`Error::Shape`]/[`Error::InvalidArgument`] when the state does not fit the engine.
    pub fn load_state(&mut self, state: &State) -> Result<()> {
        let d = self.w.dims;
        if !state.pools.is_empty() {
            return Err(Error::InvalidArgument {
                name: "state",
                reason: "a U-Net state (with pooling levels) for a plain-model engine".into(),
            });
        }
        if state.layers.len() != d.n_layer {
            return Err(Error::InvalidArgument {
                name: "state",
                reason: format!(
                    "state has {} layers, the model {}",
                    state.layers.len(),
                    d.n_layer
                ),
            });
        }
        let (s, di, dip, n, k) = (
            self.streams,
            d.d_inner,
            d.d_inner_padded,
            d.d_state,
            d.d_conv,
        );
        let fetch = |t: &Tensor, arg: &'static str, shape: [usize; 3]| -> Result<Vec<f32>> {
            let want: Vec<i64> = shape.iter().map(|&v| v as i64).collect();
            if t.size() != want {
                return Err(Error::Shape {
                    op: "StepEngine::load_state",
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
        };
        // Validate and copy everything before touching the engine's state.
        let mut host = Vec::with_capacity(d.n_layer);
        for l in &state.layers {
            host.push((
                fetch(&l.conv, "conv", [s, di, k])?,
                fetch(&l.ssm, "ssm", [s, di, n])?,
            ));
        }
        self.reset();
        self.newest = k - 1; // ring slot t holds tap t (oldest first)
        for (l, (conv, ssm)) in host.iter().enumerate() {
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
        Ok(())
    }

    /// The current state as tch tensors (CPU, f32), in the layout of [`WaveMamba::zero_state`].
    ///
    /// # Errors
    /// [`Error::Torch`] if a tensor cannot be made.
    pub fn state(&self) -> Result<State> {
        let d = self.w.dims;
        let (s, di, dip, n, k) = (
            self.streams,
            d.d_inner,
            d.d_inner_padded,
            d.d_state,
            d.d_conv,
        );
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
        Ok(State::plain(layers))
    }

    /// Advances every stream by one sample: `tokens[s]` is stream s's current sample (a class
    /// in `[0, vocab)`); returns the logits of the next sample, (streams, vocab) row-major.
    /// No allocation, no libtorch call.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a wrong number of tokens or a token out of range (the
    /// state is then left unchanged).
    pub fn step<T: Copy + Into<i64>>(&mut self, tokens: &[T]) -> Result<&[f32]> {
        let d = self.w.dims;
        if tokens.len() != self.streams {
            return Err(Error::InvalidArgument {
                name: "tokens",
                reason: format!("{} tokens for {} streams", tokens.len(), self.streams),
            });
        }
        let dmp = d.d_model_padded;
        for (s, &t) in tokens.iter().enumerate() {
            let t: i64 = t.into();
            if t < 0 || t >= d.vocab as i64 {
                return Err(Error::InvalidArgument {
                    name: "tokens",
                    reason: format!("token {t} of stream {s} is outside [0, {})", d.vocab),
                });
            }
        }
        for (s, &t) in tokens.iter().enumerate() {
            let t = t.into() as usize;
            self.scratch.resid[s * dmp..(s + 1) * dmp]
                .copy_from_slice(&self.w.embedding[t * dmp..(t + 1) * dmp]);
        }
        self.newest = (self.newest + 1) % d.d_conv;
        let mut run = Run {
            w: &self.w,
            conv: &mut self.conv,
            ssm: &mut self.ssm,
            sc: &mut self.scratch,
            newest: self.newest,
            streams: self.streams,
        };
        match self.isa {
            // SAFETY: `with_isa` checked that this CPU has AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { run.avx2() },
            // SAFETY: `with_isa` checked that this CPU has AVX-512F, AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { run.avx512() },
            // SAFETY: the scalar kernels use no special instructions.
            _ => unsafe { run.layers::<Scalar>() },
        }
        let v = d.vocab;
        let stride = self.w.lm_head.rows_padded;
        for s in 0..self.streams {
            self.logits[s * v..(s + 1) * v]
                .copy_from_slice(&self.scratch.head[s * stride..s * stride + v]);
        }
        Ok(&self.logits)
    }
}

/// The borrowed pieces of one step (so the driver can be monomorphised per kernel set).
struct Run<'a> {
    w: &'a Weights,
    conv: &'a mut [f32],
    ssm: &'a mut [f32],
    sc: &'a mut Scratch,
    newest: usize,
    streams: usize,
}

impl Run<'_> {
    /// The driver compiled with AVX2 + FMA enabled, so the kernels and the glue inline into it.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(&mut self) {
        self.layers::<super::avx2::Avx2>()
    }

    /// The driver compiled with AVX-512F (and AVX2 + FMA) enabled.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512(&mut self) {
        self.layers::<super::avx512::Avx512>()
    }

    /// Every layer, `norm_f` and the head, from the embeddings in `sc.resid` to `sc.head`.
    ///
    /// # Safety
    /// As [`Kernels`]: the CPU must support `K`'s instructions.
    #[inline(always)]
    unsafe fn layers<K: Kernels>(&mut self) {
        let d = self.w.dims;
        let (s, dm, dmp, dip) = (self.streams, d.d_model, d.d_model_padded, d.d_inner_padded);
        let (n, k, r, xdbp) = (d.d_state, d.d_conv, d.dt_rank, d.xdb_padded());
        let sc = &mut *self.sc;
        for (l, lw) in self.w.layers.iter().enumerate() {
            if l > 0 {
                add_assign(&mut sc.resid, &sc.h, s * dmp); // residual = h + residual
            }
            rms_norm(&sc.resid, &lw.norm, &mut sc.hn, dm, dmp, s);
            K::matvec(&lw.in_proj, None, &sc.hn, dmp, &mut sc.xz, 2 * dip, s); // (S, 2·dip)
            for b in 0..s {
                let at = l * s + b;
                K::conv_silu(
                    &mut self.conv[at * k * dip..(at + 1) * k * dip],
                    self.newest,
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
                    &mut self.ssm[at * dip * n..(at + 1) * dip * n],
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
        }
        if !self.w.layers.is_empty() {
            add_assign(&mut sc.resid, &sc.h, s * dmp);
        }
        rms_norm(&sc.resid, &self.w.norm_f, &mut sc.hn, dm, dmp, s);
        let vp = self.w.lm_head.rows_padded;
        K::matvec(&self.w.lm_head, None, &sc.hn, dmp, &mut sc.head, vp, s); // (S, vocab)
    }
}

/// `acc[..len] += x[..len]`
#[inline(always)]
fn add_assign(acc: &mut [f32], x: &[f32], len: usize) {
    for (a, &v) in acc[..len].iter_mut().zip(&x[..len]) {
        *a += v;
    }
}
