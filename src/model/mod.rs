//! The Mamba waveform model, ported from the official `mamba_ssm` (Mamba-1) with its state-dict
//! names: [`Mixer`] = `Mamba`, [`Block`] = `Block`, [`Backbone`] = `MixerModel`,
//! [`WaveMamba`] = `MambaLMHeadModel`; [`Unet`] is the multi-scale (SaShiMi) body, ours. Three
//! paths share the weights: `forward` (parallel scan), `prefill` (parallel scan that also returns
//! the recurrent state) and `step` (one sample).

mod block;
pub mod checkpoint;
mod init;
mod lm;
pub mod loss;
mod mixer;
mod pool;
mod state;
pub mod unet;

pub use block::{Backbone, Block, RmsNorm};
pub use lm::{Body, WaveMamba};
pub use mixer::Mixer;
pub use pool::{DownPool, UpPool};
pub use state::{LayerState, PoolState, State};
pub use unet::Unet;

/// The mu-law class of silence, used as the start token (`[128] + tokens[..L-1]`).
pub const START_TOKEN: i64 = 128;
