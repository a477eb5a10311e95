//! The fused CPU streaming step engine (DESIGN.md §1): the recurrent path for live audio.
//!
//! A step through libtorch costs ~20 op dispatches per layer (tens of µs); at 16 kHz the whole
//! model has 62.5 µs per sample. [`StepEngine`] copies the weights of a [`WaveMamba`] once into
//! contiguous f32 buffers laid out for the step (`weights.rs`), then advances every layer of
//! every stream by one sample with vectorised kernels (`vector.rs`, written once over the
//! AVX-512 and AVX2 registers of `simd.rs`, chosen at run time; portable fallback in
//! `kernels.rs`), no allocation and no libtorch call. Its logits equal
//! [`WaveMamba::step`]'s to f32 rounding (`tests/stream_engine.rs`). It runs the plain model (one
//! stage of blocks, `stage.rs`) and the U-Net (one stage per width, the pooling levels between
//! them in `unet.rs`: an inner stage steps once its outer stage has filled a group of `p`
//! samples).
//!
//! ```no_run
//! # fn main() -> wavemamba::Result<()> {
//! use wavemamba::config::{AudioConfig, MambaConfig};
//! use wavemamba::model::WaveMamba;
//! use wavemamba::stream::StepEngine;
//!
//! let model = WaveMamba::new(MambaConfig::preset("small")?, AudioConfig::default(), tch::Device::Cpu)?;
//! let mut engine = StepEngine::new(&model, 2)?; // two streams from a zero state
//! let logits = engine.step(&[128u8, 128])?; // (2, 256) row-major
//! assert_eq!(logits.len(), 2 * 256);
//! # Ok(()) }
//! ```
//!
//! [`WaveMamba`]: crate::model::WaveMamba
//! [`WaveMamba::step`]: crate::model::WaveMamba::step

mod buf;
mod denoise;
mod engine;
mod kernels;
#[cfg(target_arch = "x86_64")]
mod simd;
mod stage;
mod unet;
#[cfg(target_arch = "x86_64")]
mod vector;
mod weights;

pub use denoise::DenoiseEngine;
pub use engine::StepEngine;
pub use weights::Dims;

/// Environment variable that forces a kernel set in [`Isa::detect`]: `scalar`, `avx2` or
/// `avx512`.
pub const ISA_ENV: &str = "WAVEMAMBA_STREAM_ISA";

/// The kernel set a [`StepEngine`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isa {
    /// Plain Rust loops (any CPU).
    Scalar,
    /// AVX2 + FMA intrinsics (x86-64 CPUs that have both).
    Avx2,
    /// AVX-512F intrinsics (x86-64 CPUs with AVX-512F, AVX2 and FMA).
    Avx512,
}

impl Isa {
    /// The best set this CPU runs, unless [`ISA_ENV`] names an available one.
    pub fn detect() -> Isa {
        if let Ok(v) = std::env::var(ISA_ENV) {
            if let Ok(isa) = v.parse::<Isa>() {
                if isa.available() {
                    return isa;
                }
            }
        }
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .find(|isa| isa.available())
            .unwrap_or(Isa::Scalar)
    }

    /// Whether this CPU can run the set.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Isa::Avx2.available() && is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

impl std::str::FromStr for Isa {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Isa> {
        match s.to_ascii_lowercase().as_str() {
            "scalar" => Ok(Isa::Scalar),
            "avx2" => Ok(Isa::Avx2),
            "avx512" => Ok(Isa::Avx512),
            other => Err(crate::Error::InvalidArgument {
                name: "isa",
                reason: format!("unknown kernel set '{other}' (scalar, avx2, avx512)"),
            }),
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
