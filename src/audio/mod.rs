//! Audio in and out: decoding (WAV with `hound`; FLAC, OGG/Vorbis and the rarer WAV codecs with
//! `symphonia`), WAV writing, resampling (`rubato`), 8-bit mu-law on slices, sound devices
//! (`cpal`, [`device`]) and the output files of a command, written all or nothing ([`output`]).
//!
//! Everything returns mono `f32` in [-1, 1]: channels are averaged, integer PCM is scaled by
//! 2^-(bits-1) (so 16-bit `k` decodes to exactly `k / 32768`), float samples beyond ±1 are clamped.
//! Every error names the file and the reason ([`crate::Error::Audio`]); no input file makes these
//! functions panic or read more than the file's header before rejecting it. A file without a
//! single sample is an error here, in the decoder ("no audio samples"), so every command that
//! reads audio refuses it the same way; dataset scanning lists such files among the skipped ones.

mod compressed;
mod decode;
pub mod device;
pub mod mulaw;
pub mod output;
mod resample;
mod wav;

use std::path::Path;

use crate::{Error, Result};

pub use decode::{probe, read_audio};
pub use resample::{check_taps, resample, StreamingResampler};
pub use wav::{max_wav_samples, write_wav, write_wav_file, WavFormat};

/// Lowest sample rate accepted anywhere (Hz): below this a file is almost surely a broken header.
pub const MIN_SAMPLE_RATE: u32 = 1_000;
/// Highest sample rate accepted anywhere (Hz): 768 kHz, the highest rate of common audio gear.
pub const MAX_SAMPLE_RATE: u32 = 768_000;

/// Decoded audio: mono samples in [-1, 1] at `sample_rate` Hz.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
}

impl Audio {
    /// Length in seconds.
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate.max(1) as f64
    }

    /// This audio at another sample rate (see [`resample`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a rate outside [`MIN_SAMPLE_RATE`]..=[`MAX_SAMPLE_RATE`].
    pub fn resampled(&self, sample_rate: u32) -> Result<Audio> {
        Ok(Audio {
            samples: resample(&self.samples, self.sample_rate, sample_rate)?,
            sample_rate,
        })
    }
}

/// Container/codec of an audio file, as recognised from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Wav,
    Flac,
    OggVorbis,
}

impl std::fmt::Display for FileFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileFormat::Wav => "WAV",
            FileFormat::Flac => "FLAC",
            FileFormat::OggVorbis => "OGG/Vorbis",
        })
    }
}

/// What a file's header says, read without decoding the audio ([`probe`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AudioInfo {
    pub format: FileFormat,
    /// Human-readable encoding, e.g. "PCM 16-bit", "IEEE float 32-bit", "FLAC 24-bit", "Vorbis".
    pub encoding: String,
    pub sample_rate: u32,
    pub channels: u16,
    /// Frames the header declares (`None` where the container does not say, e.g. some OGG files).
    pub frames: Option<u64>,
}

impl AudioInfo {
    /// Declared duration in seconds, when the header gives the frame count.
    pub fn duration_s(&self) -> Option<f64> {
        self.frames.map(|n| n as f64 / self.sample_rate as f64)
    }
}

/// Checks that `sample_rate` is in the supported range; `what` names it in the error.
///
/// # Errors
/// [`Error::InvalidArgument`].
pub fn check_sample_rate(name: &'static str, sample_rate: u32) -> Result<()> {
    if (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&sample_rate) {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            name,
            reason: format!(
                "sample rate {sample_rate} Hz is outside the supported range \
                 {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} Hz"
            ),
        })
    }
}

/// Checks, before any work, that the directory `path` will be written into exists, so a bad
/// output path fails fast and never leaves a partial file.
///
/// # Errors
/// [`Error::Io`] naming the missing directory.
pub fn check_output_dir(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if dir.is_dir() {
        Ok(())
    } else {
        Err(Error::Io {
            path: dir.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "output directory does not exist",
            ),
        })
    }
}

/// An [`Error::Audio`] for `path`.
pub(crate) fn audio_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Audio {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Averages interleaved frames of `channels` samples into mono, clamping to [-1, 1].
/// A trailing partial frame is dropped.
pub(crate) fn downmix_into(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    if channels <= 1 {
        out.extend(interleaved.iter().map(|&x| x.clamp(-1.0, 1.0)));
        return;
    }
    let scale = 1.0 / channels as f32;
    out.extend(
        interleaved
            .chunks_exact(channels)
            .map(|frame| (frame.iter().sum::<f32>() * scale).clamp(-1.0, 1.0)),
    );
}
