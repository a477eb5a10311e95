//! wavemamba: Mamba (selective state-space) models of raw audio waveforms.
//!
//! Layout (see DESIGN.md): [`ops`] wraps the C++/CUDA kernels of `csrc/` (selective scan, mu-law)
//! and holds the pure-tch reference scan used as a test oracle; [`bench`] holds the benchmarks
//! behind `wavemamba bench`; [`info`] describes the build and the machine.

pub mod audio;
pub mod bench;
pub mod config;
pub mod continuation;
pub mod data;
pub mod denoise;
pub mod device;
pub mod error;
pub mod eval;
pub mod generate;
pub mod info;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod plot;
pub mod rng;
pub mod rtf;
pub mod runtime;
pub mod sample;
pub mod stream;
pub mod train;

pub use error::{Error, Result};
