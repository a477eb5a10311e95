//! `Unet`: the multi-scale U-Net of SaShiMi (Goel et al. 2022, `sashimi.py`, `unet=False`) with
//! Mamba blocks in place of S4+MLP blocks, as in the Mamba paper's audio experiments. There is no
//! upstream class to mirror, so the layout and parameter names are ours (below).
//!
//! # Architecture
//! `S = pooling.len()` pooling levels give `S + 1` stages. Stage `s` runs at
//! `1 / (p_0 ⋯ p_{s−1})` of the sample rate with width `H_s = d_model · 2^s`. With `x` the input
//! of stage `s` (the token embedding for `s = 0`):
//!
//! ```text
//! f_S(x) = blocks_S(x)
//! f_s(x) = blocks_s(x + shift(up_s(f_{s+1}(down_s(x)))))        s < S
//! logits = lm_head(norm_f(f_0(embedding(tokens))))
//! ```
//!
//! - `blocks_s`: `blocks_per_stage` pre-norm residual Mamba blocks, `x ← x + mixer(norm(x))`
//!   (the same computation as upstream's `Block`).
//! - `down_s`: `p_s` consecutive inputs (position-major, `(p_s, H_s)` → `p_s·H_s`) → linear →
//!   `H_{s+1}`. Inner step `g` sees outer positions `g·p_s … g·p_s + p_s − 1`.
//! - `up_s`: linear `H_{s+1}` → `p_s·H_s`, reshaped to `p_s` outer positions; **shifted by one
//!   inner step**: group `g`'s positions get the up-pooled output of inner step `g − 1` (zeros for
//!   group 0, as SaShiMi pads after the linear). So the output at outer position `t` depends on
//!   inputs at positions ≤ `t` only: through the skip `x` on `t` itself, through the inner stage
//!   on whole groups that ended before `t`'s group began.
//! - The `x + …` is the skip connection around each inner stage. SaShiMi also adds a skip around
//!   each stage's stack of residual blocks; the blocks already carry the identity path, so that
//!   skip only doubles it and is left out.
//!
//! A length that is not a multiple of the pooling needs no padding: the trailing partial group
//! of a level only feeds outputs of the *next* group, so it is held back (in the state, when
//! there is one) and every output is still computed exactly.
//!
//! # Defaults
//! `pooling` empty → `[4, 4]`; `blocks_per_stage` 0 → `ceil(n_layer / (S + 1))`, i.e. the
//! config's `n_layer` is the total budget of Mamba blocks, spread evenly over the stages and
//! rounded up. [`WaveMamba::new`](super::WaveMamba::new) writes the resolved values back into
//! `audio`, so a saved `wavemamba.json` states them. Each mixer is built with the official init
//! at its stage's width (`dt_rank = "auto"` resolves per stage) and `out_proj` rescaled by
//! 1/√(total blocks).
//!
//! # Parameter names
//! | name | shape |
//! |---|---|
//! | `unet.embedding.weight` | (padded vocab, d_model) |
//! | `unet.down.{s}.linear.weight`, `.bias` | (H_{s+1}, p_s·H_s), (H_{s+1}) |
//! | `unet.up.{s}.linear.weight`, `.bias` | (p_s·H_s, H_{s+1}), (p_s·H_s) |
//! | `unet.stages.{s}.layers.{i}.norm.weight` | (H_s) |
//! | `unet.stages.{s}.layers.{i}.mixer.{in_proj.weight, conv1d.weight, …, A_log, D}` | the official `Mamba` names and shapes at d_model = H_s |
//! | `unet.norm_f.weight` | (d_model) |
//! | `lm_head.weight` | (padded vocab, d_model), tied to the embedding unless `tie_embeddings` is false |
//!
//! # Recurrent state
//! [`State::layers`] holds every mixer's state in parameter order (stage 0's layers, then stage
//! 1's, …); [`State::pools`] one [`PoolState`] per level: the inputs of the current incomplete
//! group and the up-pooled outputs pending for it. `step` runs stage `s + 1` only when level
//! `s`'s group completes, i.e. once every `p_0 ⋯ p_s` samples. `prefill` (the parallel path with
//! a state) leaves exactly the state that stepping the same samples would, for any length.

use tch::{nn, Kind, Tensor};

use super::block::{Block, RmsNorm};
use super::init;
use super::mixer::Mixer;
use super::pool::{DownPool, PoolState, UpPool};
use super::state::{LayerState, State};
use crate::config::{AudioConfig, MambaConfig};
use crate::{Error, Result};

/// Pooling factors used when `wavemamba.json` gives none.
pub const DEFAULT_POOLING: [i64; 2] = [4, 4];

/// Most pooling levels accepted (the innermost width is d_model · 2^levels).
pub const MAX_LEVELS: usize = 8;

/// The multi-scale U-Net body (embedding, stages, pools, final norm). See the module docs.
#[derive(Debug)]
pub struct Unet {
    /// (padded vocab, d_model)
    pub embedding: Tensor,
    /// One per pooling level, outermost first: stage `s` → stage `s + 1`.
    pub down: Vec<DownPool>,
    /// One per pooling level, outermost first: stage `s + 1` → stage `s`.
    pub up: Vec<UpPool>,
    /// `S + 1` stacks of blocks, outermost first; stage `s` has width `widths[s]`.
    pub stages: Vec<Vec<Block>>,
    pub norm_f: RmsNorm,
    /// `H_s = d_model · 2^s`, one per stage.
    pub widths: Vec<i64>,
}

/// The pooling factors and blocks per stage a U-Net built from `config` and `audio` uses
/// (defaults applied, see the module docs).
///
/// # Errors
/// [`Error::Config`] for a pooling factor < 1, more than [`MAX_LEVELS`] levels or a negative
/// `blocks_per_stage`.
pub fn resolve(config: &MambaConfig, audio: &AudioConfig) -> Result<(Vec<i64>, i64)> {
    let pooling = if audio.pooling.is_empty() {
        DEFAULT_POOLING.to_vec()
    } else {
        audio.pooling.clone()
    };
    if let Some(p) = pooling.iter().find(|&&p| p < 1) {
        return Err(Error::Config {
            reason: format!("pooling = {pooling:?}: factor {p} must be ≥ 1"),
        });
    }
    if pooling.len() > MAX_LEVELS {
        return Err(Error::Config {
            reason: format!(
                "pooling = {pooling:?}: at most {MAX_LEVELS} levels (the innermost width is \
                 d_model·2^levels)"
            ),
        });
    }
    let blocks = match audio.blocks_per_stage {
        0 => {
            let stages = pooling.len() as i64 + 1;
            ((config.n_layer + stages - 1) / stages).max(1)
        }
        b if b < 0 => {
            return Err(Error::Config {
                reason: format!("blocks_per_stage = {b}: must be ≥ 0 (0 = default)"),
            })
        }
        b => b,
    };
    Ok((pooling, blocks))
}

/// The parts of a [`State`] that belong to one stage and everything inside it.
struct Slots<'a> {
    pools: &'a mut [PoolState],
    layers: &'a mut [LayerState],
}

impl Unet {
    /// Parameters under `p` (= `unet`), upstream's init for the blocks, PyTorch's default
    /// `nn.Linear` init for the pools. `pooling`/`blocks_per_stage` as returned by [`resolve`].
    pub fn new(p: &nn::Path, c: &MambaConfig, pooling: &[i64], blocks_per_stage: i64) -> Unet {
        let levels = pooling.len();
        let widths: Vec<i64> = (0..=levels).map(|s| c.d_model << s).collect();
        let emb = Tensor::randn([c.padded_vocab(), c.d_model], (Kind::Float, p.device())) * 0.02;
        let mut stage_cfg = c.clone();
        stage_cfg.n_layer = blocks_per_stage * (levels as i64 + 1);
        let stages = widths
            .iter()
            .enumerate()
            .map(|(s, &h)| {
                stage_cfg.d_model = h;
                (0..blocks_per_stage)
                    .map(|i| {
                        let lp = p / "stages" / s as i64 / "layers" / i;
                        Block {
                            norm: RmsNorm::new(&(&lp / "norm"), h),
                            mixer: Mixer::new(&(&lp / "mixer"), &stage_cfg),
                        }
                    })
                    .collect()
            })
            .collect();
        let down = (0..levels)
            .map(|s| {
                DownPool::new(
                    &(p / "down" / s as i64),
                    widths[s],
                    widths[s + 1],
                    pooling[s],
                )
            })
            .collect();
        let up = (0..levels)
            .map(|s| UpPool::new(&(p / "up" / s as i64), widths[s], widths[s + 1], pooling[s]))
            .collect();
        Unet {
            embedding: init::param(p, "embedding.weight", &emb),
            down,
            up,
            stages,
            norm_f: RmsNorm::new(&(p / "norm_f"), c.d_model),
            widths,
        }
    }

    /// Pooling factors, outermost first.
    pub fn pooling(&self) -> Vec<i64> {
        self.down.iter().map(|d| d.pool).collect()
    }

    fn num_layers(&self) -> usize {
        self.stages.iter().map(Vec::len).sum()
    }

    /// A zero state for `batch` sequences: every level at the start of a group, nothing pending.
    pub fn zero_state(&self, batch: i64) -> State {
        let opts = (Kind::Float, self.embedding.device());
        State {
            layers: self
                .stages
                .iter()
                .flatten()
                .map(|l| l.mixer.zero_state(batch))
                .collect(),
            pools: self
                .down
                .iter()
                .zip(&self.widths)
                .map(|(d, &h)| PoolState {
                    buffer: Tensor::zeros([batch, 0, h], opts),
                    pending: Tensor::zeros([batch, d.pool, h], opts),
                })
                .collect(),
        }
    }

    fn check_state(&self, state: &State) -> Result<()> {
        if state.pools.len() != self.down.len() || state.layers.len() != self.num_layers() {
            return Err(Error::InvalidArgument {
                name: "state",
                reason: format!(
                    "state has {} pooling levels and {} layers, the U-Net {} and {}",
                    state.pools.len(),
                    state.layers.len(),
                    self.down.len(),
                    self.num_layers()
                ),
            });
        }
        Ok(())
    }

    /// Hidden states after `norm_f` for whole sequences, continuing from `state` if given (and
    /// then leaving in it the state that stepping the same tokens would).
    ///
    /// # Shapes
    /// `tokens`: (B, L) int64 → (B, L, d_model).
    ///
    /// # Errors
    /// A state of another layout; kernel errors from the scan.
    pub fn forward(&self, tokens: &Tensor, state: Option<&mut State>) -> Result<Tensor> {
        let x = Tensor::embedding(&self.embedding, tokens, -1, false, false); // (B, L, d_model)
        let slots = match state {
            Some(st) => {
                self.check_state(st)?;
                Some(Slots {
                    pools: &mut st.pools,
                    layers: &mut st.layers,
                })
            }
            None => None,
        };
        Ok(self.norm_f.forward(&self.stage_forward(0, &x, slots)?))
    }

    /// `f_s` over a whole sequence at stage `s`'s rate.
    ///
    /// # Shapes
    /// `x`: (B, L, H_s) → (B, L, H_s).
    fn stage_forward(&self, s: usize, x: &Tensor, slots: Option<Slots>) -> Result<Tensor> {
        let len = x.size()[1];
        if len == 0 {
            return Ok(x.shallow_clone());
        }
        let blocks = &self.stages[s];
        let (pool, mine, inner) = match slots {
            Some(Slots { pools, layers }) => {
                let (mine, inner_layers) = layers.split_at_mut(blocks.len());
                match pools.split_first_mut() {
                    Some((pool, inner_pools)) => (
                        Some(pool),
                        Some(mine),
                        Some(Slots {
                            pools: inner_pools,
                            layers: inner_layers,
                        }),
                    ),
                    None => (None, Some(mine), None),
                }
            }
            None => (None, None, None),
        };
        let u = match (self.down.get(s), self.up.get(s)) {
            (Some(down), Some(up)) => {
                let (p, h, batch) = (down.pool, self.widths[s], x.size()[0]);
                let (filled, xx, prev) = match pool.as_deref() {
                    Some(ps) => (
                        ps.filled(),
                        Tensor::cat(&[&ps.buffer, x], 1), // (B, c + L, H_s)
                        ps.pending.shallow_clone(),
                    ),
                    None => (
                        0,
                        x.shallow_clone(),
                        Tensor::zeros([batch, p, h], (x.kind(), x.device())),
                    ),
                };
                let groups = (filled + len) / p;
                // Up-pooled values for every position of xx's groups, shifted by one group:
                // group 0 gets `prev`, group g ≥ 1 gets up(inner output g − 1).
                let ups = if groups > 0 {
                    let y = down.forward(&xx.narrow(1, 0, groups * p)); // (B, groups, H_{s+1})
                    let z = self.stage_forward(s + 1, &y, inner)?; // (B, groups, H_{s+1})
                    Tensor::cat(&[&prev, &up.forward(&z)], 1) // (B, (groups + 1)·p, H_s)
                } else {
                    prev
                };
                if let Some(ps) = pool {
                    let rest = filled + len - groups * p;
                    ps.buffer = xx.narrow(1, groups * p, rest).copy(); // (B, rest, H_s)
                    ps.pending = ups.narrow(1, groups * p, p).copy(); // (B, p, H_s)
                }
                x + ups.narrow(1, filled, len) // (B, L, H_s)
            }
            _ => x.shallow_clone(),
        };
        blocks_forward(blocks, u, mine)
    }

    /// Hidden state after `norm_f` for one token per sequence.
    ///
    /// # Shapes
    /// `tokens`: (B) int64 → (B, d_model).
    ///
    /// # Panics
    /// If `state` was not made for this U-Net (another layout).
    pub fn step(&self, tokens: &Tensor, state: &mut State) -> Tensor {
        if let Err(e) = self.check_state(state) {
            panic!("Unet::step: {e}");
        }
        let x = Tensor::embedding(&self.embedding, tokens, -1, false, false); // (B, d_model)
        let h = self.stage_step(0, x, &mut state.pools, &mut state.layers);
        self.norm_f.forward(&h)
    }

    /// `f_s` for one step at stage `s`'s rate.
    ///
    /// # Shapes
    /// `x`: (B, H_s) → (B, H_s).
    fn stage_step(
        &self,
        s: usize,
        x: Tensor,
        pools: &mut [PoolState],
        layers: &mut [LayerState],
    ) -> Tensor {
        let blocks = &self.stages[s];
        let (mine, inner_layers) = layers.split_at_mut(blocks.len());
        let mut u = match (pools.split_first_mut(), self.down.get(s), self.up.get(s)) {
            (Some((ps, inner_pools)), Some(down), Some(up)) => {
                let j = ps.filled();
                let pending = ps.pending.select(1, j); // (B, H_s)
                ps.buffer = Tensor::cat(&[&ps.buffer, &x.unsqueeze(1)], 1); // (B, j + 1, H_s)
                if j + 1 == down.pool {
                    let y = down.forward(&ps.buffer).squeeze_dim(1); // (B, H_{s+1})
                    ps.buffer = ps.buffer.narrow(1, 0, 0).copy(); // (B, 0, H_s)
                    let z = self.stage_step(s + 1, y, inner_pools, inner_layers);
                    ps.pending = up.forward(&z.unsqueeze(1)); // (B, p, H_s)
                }
                x + pending
            }
            _ => x,
        };
        for (block, ls) in blocks.iter().zip(mine.iter_mut()) {
            u = &u + block.mixer.step(&block.norm.forward(&u), ls);
        }
        u
    }
}

/// A stack of pre-norm residual blocks over a whole sequence, continuing from `states` if given.
///
/// # Shapes
/// `u`: (B, L, H) → (B, L, H).
fn blocks_forward(
    blocks: &[Block],
    mut u: Tensor,
    mut states: Option<&mut [LayerState]>,
) -> Result<Tensor> {
    for (i, block) in blocks.iter().enumerate() {
        let ls = states.as_deref_mut().map(|st| &mut st[i]);
        u = &u + block.mixer.forward(&block.norm.forward(&u), ls)?;
    }
    Ok(u)
}
