//! [`StepEngine`]: the recurrent step of every stream, over the step-ready weights, with all
//! buffers allocated up front.

use super::buf::Buf;
use super::kernels::{rms_norm, Kernels, Scalar};
use super::stage::{self, StageState};
use super::unet::{self, export_level, fetch, fetch_level, store_level, Level};
use super::weights::{Dims, Weights};
use super::Isa;
use crate::model::{State, WaveMamba};
use crate::{Error, Result};

/// The fused CPU streaming step of a [`WaveMamba`] (the recurrent path of DESIGN.md §1) for a
/// fixed number of streams: weights copied once into contiguous f32 buffers, then every
/// [`step`](Self::step) advances every layer of every stream by one sample with no allocation
/// and no libtorch call. Equals `WaveMamba::step` to f32 rounding (rel err ≤ 1e-5).
///
/// Runs the plain model and the U-Net ([`crate::model::unet`]): stage `s + 1` of a U-Net steps
/// only when level `s`'s group of `p_s` samples completes, so inner stages cost a fraction of a
/// sample each. The group position is shared by every stream.
///
/// Single-threaded: one step of the `small` preset takes a few µs, too short to share across
/// threads without a spinning worker pool; run several engines on threads to use more cores.
#[derive(Debug, Clone)]
pub struct StepEngine {
    w: Weights,
    isa: Isa,
    streams: usize,
    /// Outermost first (one for the plain model).
    stages: Vec<StageState>,
    /// One per U-Net pooling level, outermost first.
    levels: Vec<Level>,
    /// (S, vocab rounded up to 8) head output
    head: Buf,
    /// (S, vocab)
    logits: Buf,
}

impl StepEngine {
    /// An engine for `streams` streams from a zero state, with the best kernels for this CPU
    /// ([`Isa::detect`]).
    ///
    /// # Errors
    /// [`Error::Config`] for inconsistent tensor shapes; [`Error::InvalidArgument`] for 0
    /// streams.
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
        let s = streams;
        let stages = w
            .stages
            .iter()
            .map(|st| StageState::zeros(&st.dims, s))
            .collect();
        let levels = w
            .pools
            .iter()
            .zip(&w.stages)
            .map(|(pw, st)| Level::zeros(pw.pool, st.dims.d_model_padded, s))
            .collect();
        Ok(StepEngine {
            isa,
            streams,
            stages,
            levels,
            head: Buf::zeros(s * w.lm_head.rows_padded),
            logits: Buf::zeros(s * w.dims.vocab),
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

    /// The model sizes the engine runs (with its padded widths): for a U-Net those of the outer
    /// stage, with `n_layer` counting the blocks of every stage.
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

    /// The U-Net's pooling factors, outermost first (empty for the plain model).
    pub fn pooling(&self) -> Vec<usize> {
        self.w.pools.iter().map(|p| p.pool).collect()
    }

    /// Zeroes the state of every stream (as `WaveMamba::zero_state`).
    pub fn reset(&mut self) {
        for (st, sw) in self.stages.iter_mut().zip(&self.w.stages) {
            st.conv.fill(0.0);
            st.ssm.fill(0.0);
            st.newest = sw.dims.d_conv - 1;
        }
        for lv in &mut self.levels {
            lv.filled = 0;
            lv.buffer.fill(0.0);
            lv.pending.fill(0.0);
        }
    }

    /// Zeroes the state of stream `stream` only. In a U-Net the position inside each pooling
    /// group is shared by every stream and stays as it is: the stream restarts from zeros at
    /// that position (the tch state with zero tensors and the same buffer lengths).
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
        for (st, sw) in self.stages.iter_mut().zip(&self.w.stages) {
            st.reset_stream(&sw.dims, stream, self.streams);
        }
        for ((lv, pw), sw) in self
            .levels
            .iter_mut()
            .zip(&self.w.pools)
            .zip(&self.w.stages)
        {
            lv.reset_stream(stream, pw.pool * sw.dims.d_model_padded);
        }
        Ok(())
    }

    /// Continues from a tch recurrent state, e.g. the one [`WaveMamba::prefill`] leaves (for a
    /// U-Net at any position, also inside a pooling group).
    ///
    /// # Shapes
    /// per layer `conv`: (streams, d_inner, d_conv) oldest first, `ssm`: (streams, d_inner,
    /// d_state); per U-Net level `buffer`: (streams, c, H_s) with c < p_s, `pending`:
    /// (streams, p_s, H_s); any device and float dtype.
    ///
    /// # Errors
    /// [`Error::Shape`]/[`Error::InvalidArgument`] when the state does not fit the engine
    /// (which is then left unchanged).
    pub fn load_state(&mut self, state: &State) -> Result<()> {
        const OP: &str = "StepEngine::load_state";
        let (d, s) = (self.w.dims, self.streams);
        if state.pools.len() != self.levels.len() || state.layers.len() != d.n_layer {
            return Err(Error::InvalidArgument {
                name: "state",
                reason: format!(
                    "state has {} layers and {} pooling levels, the model {} and {}",
                    state.layers.len(),
                    state.pools.len(),
                    d.n_layer,
                    self.levels.len()
                ),
            });
        }
        // Validate and copy everything before touching the engine's state.
        let mut layers = Vec::with_capacity(d.n_layer);
        let mut at = state.layers.iter();
        for sw in &self.w.stages {
            let (di, n, k) = (sw.dims.d_inner, sw.dims.d_state, sw.dims.d_conv);
            for l in at.by_ref().take(sw.dims.n_layer) {
                let conv = fetch(&l.conv, OP, "conv", &[s, di, k])?;
                layers.push((conv, fetch(&l.ssm, OP, "ssm", &[s, di, n])?));
            }
        }
        let mut levels = Vec::with_capacity(self.levels.len());
        for (ps, (pw, sw)) in state
            .pools
            .iter()
            .zip(self.w.pools.iter().zip(&self.w.stages))
        {
            levels.push(fetch_level(ps, pw.pool, sw.dims.d_model, s)?);
        }
        self.reset();
        let mut host = layers.iter();
        for (st, sw) in self.stages.iter_mut().zip(&self.w.stages) {
            let mine: Vec<_> = host.by_ref().take(sw.dims.n_layer).collect();
            st.load(&sw.dims, &mine, s);
        }
        for ((lv, host), (pw, sw)) in self
            .levels
            .iter_mut()
            .zip(&levels)
            .zip(self.w.pools.iter().zip(&self.w.stages))
        {
            store_level(lv, host, pw.pool, sw.dims.d_model, sw.dims.d_model_padded);
        }
        Ok(())
    }

    /// The current state as tch tensors (CPU, f32), in the layout of [`WaveMamba::zero_state`].
    ///
    /// # Errors
    /// [`Error::Torch`] if a tensor cannot be made.
    pub fn state(&self) -> Result<State> {
        let s = self.streams;
        let mut layers = Vec::with_capacity(self.w.dims.n_layer);
        for (st, sw) in self.stages.iter().zip(&self.w.stages) {
            layers.extend(st.export(&sw.dims, s)?);
        }
        let mut pools = Vec::with_capacity(self.levels.len());
        for (lv, (pw, sw)) in self
            .levels
            .iter()
            .zip(self.w.pools.iter().zip(&self.w.stages))
        {
            pools.push(export_level(
                lv,
                pw.pool,
                sw.dims.d_model,
                sw.dims.d_model_padded,
                s,
            )?);
        }
        Ok(State { layers, pools })
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
        let x0 = &mut self.stages[0].sc.resid;
        for (s, &t) in tokens.iter().enumerate() {
            let t = t.into() as usize;
            x0[s * dmp..(s + 1) * dmp].copy_from_slice(&self.w.embedding[t * dmp..(t + 1) * dmp]);
        }
        let mut run = Run {
            w: &self.w,
            stages: &mut self.stages,
            levels: &mut self.levels,
            head: &mut self.head,
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
            _ => unsafe { run.all::<Scalar>() },
        }
        let v = d.vocab;
        let stride = self.w.lm_head.rows_padded;
        for s in 0..self.streams {
            self.logits[s * v..(s + 1) * v].copy_from_slice(&self.head[s * stride..s * stride + v]);
        }
        Ok(&self.logits)
    }
}

/// The borrowed pieces of one step (so the driver can be monomorphised per kernel set).
struct Run<'a> {
    w: &'a Weights,
    stages: &'a mut [StageState],
    levels: &'a mut [Level],
    head: &'a mut [f32],
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
        self.all::<super::vector::Avx2>()
    }

    /// The driver compiled with AVX-512F (and AVX2 + FMA) enabled.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512(&mut self) {
        self.all::<super::vector::Avx512>()
    }

    /// One step from the embeddings in stage 0's `resid` to `head`: down through the pooling
    /// levels whose group completes, every stage that runs (innermost first, each inner
    /// output up-pooled for the next group), `norm_f` and the head.
    ///
    /// # Safety
    /// As [`Kernels`]: the CPU must support `K`'s instructions.
    #[inline(always)]
    unsafe fn all<K: Kernels>(&mut self) {
        let (w, s) = (self.w, self.streams);
        let mut deepest = 0;
        while deepest < self.levels.len() {
            let (outer, inner) = self.stages.split_at_mut(deepest + 1);
            let (hp, hip) = (
                w.stages[deepest].dims.d_model_padded,
                w.stages[deepest + 1].dims.d_model_padded,
            );
            let (x, inner_x) = (&mut outer[deepest].sc.resid, &mut inner[0].sc.resid);
            if !unet::feed::<K>(
                &w.pools[deepest],
                &mut self.levels[deepest],
                x,
                hp,
                inner_x,
                hip,
                s,
            ) {
                break;
            }
            deepest += 1;
        }
        for st in (0..=deepest).rev() {
            stage::blocks::<K>(&w.stages[st], &mut self.stages[st], s);
            if st > 0 {
                let (hip, hp) = (
                    w.stages[st].dims.d_model_padded,
                    w.stages[st - 1].dims.d_model_padded,
                );
                let z = &self.stages[st].sc.resid;
                unet::up::<K>(&w.pools[st - 1], &mut self.levels[st - 1], z, hip, hp, s);
            }
        }
        let (dm, dmp) = (w.dims.d_model, w.dims.d_model_padded);
        let sc = &mut self.stages[0].sc;
        rms_norm(&sc.resid, &w.norm_f, &mut sc.hn, dm, dmp, s);
        let vp = w.lm_head.rows_padded;
        K::matvec(&w.lm_head, None, &sc.hn, dmp, self.head, vp, s); // (S, vocab)
    }
}
