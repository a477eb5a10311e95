//! Writing mono WAV files atomically (temp file in the same directory, then rename).

use std::io::BufWriter;
use std::path::Path;

use super::{audio_error, check_sample_rate};
use crate::model::checkpoint::write_atomic;
use crate::{Error, Result};

/// Sample encoding of a written WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WavFormat {
    /// 16-bit signed integer PCM (the default): `x` is written as `round(x · 32768)` clamped to
    /// [-32768, 32767], so whatever [`super::read_audio`] decoded from a 16-bit file is written
    /// back bit for bit.
    #[default]
    Pcm16,
    /// 32-bit IEEE float, written as given (values beyond ±1 are kept).
    Float32,
}

/// Writes mono `samples` at `sample_rate` Hz to `path`. The file appears complete or not at all:
/// it is written to a temporary file in the same directory and renamed over `path`. When `path`
/// is a symbolic link, the file it points to is replaced and the link kept.
///
/// # Errors
/// [`Error::InvalidArgument`] for a sample rate outside the supported range; [`Error::Audio`]
/// naming the file when a sample is NaN or infinite, or when the data would not fit a WAV file
/// (4 GiB); [`Error::Io`] when the file cannot be written.
pub fn write_wav(path: &Path, samples: &[f32], sample_rate: u32, format: WavFormat) -> Result<()> {
    let target = super::output::resolve_link(path)?;
    write_atomic(&target, |tmp| {
        write_wav_file(path, tmp, samples, sample_rate, format)
    })
}

/// The most samples a WAV file of `format` holds (its sizes are 32-bit: 4 GiB of data, less the
/// header).
pub fn max_wav_samples(format: WavFormat) -> u64 {
    (u64::from(u32::MAX) - 64) / format.bytes_per_sample()
}

impl WavFormat {
    /// Bytes of one sample.
    pub fn bytes_per_sample(self) -> u64 {
        match self {
            WavFormat::Pcm16 => 2,
            WavFormat::Float32 => 4,
        }
    }
}

/// Writes a WAV file at `file` directly (a temporary file the caller renames, e.g. one of
/// [`super::output::Outputs`]); errors name `name`, the file the user asked for.
///
/// # Errors
/// As [`write_wav`].
pub fn write_wav_file(
    name: &Path,
    file: &Path,
    samples: &[f32],
    sample_rate: u32,
    format: WavFormat,
) -> Result<()> {
    check_sample_rate("sample_rate", sample_rate)?;
    if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
        return Err(audio_error(
            name,
            format!("cannot write sample {i}: it is {} (not finite)", samples[i]),
        ));
    }
    if samples.len() as u64 > max_wav_samples(format) {
        return Err(audio_error(
            name,
            format!(
                "{} samples do not fit in a WAV file (4 GiB limit)",
                samples.len()
            ),
        ));
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: match format {
            WavFormat::Pcm16 => 16,
            WavFormat::Float32 => 32,
        },
        sample_format: match format {
            WavFormat::Pcm16 => hound::SampleFormat::Int,
            WavFormat::Float32 => hound::SampleFormat::Float,
        },
    };
    let hound_err = |e: hound::Error| match e {
        hound::Error::IoError(source) => Error::Io {
            path: name.to_owned(),
            source,
        },
        other => audio_error(name, format!("WAV write failed: {other}")),
    };
    let out = std::fs::File::create(file).map_err(|source| Error::Io {
        path: name.to_owned(),
        source,
    })?;
    let mut w =
        hound::WavWriter::new(BufWriter::with_capacity(1 << 16, out), spec).map_err(hound_err)?;
    match format {
        WavFormat::Pcm16 => {
            for &x in samples {
                w.write_sample(pcm16(x)).map_err(hound_err)?;
            }
        }
        WavFormat::Float32 => {
            for &x in samples {
                w.write_sample(x).map_err(hound_err)?;
            }
        }
    }
    w.finalize().map_err(hound_err)
}

/// `round(x · 32768)` clamped to the i16 range.
pub(crate) fn pcm16(x: f32) -> i16 {
    (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::pcm16;

    #[test]
    fn pcm16_inverts_the_decoder_scale() {
        for k in [-32768i32, -12345, -1, 0, 1, 777, 32767] {
            assert_eq!(i32::from(pcm16(k as f32 / 32768.0)), k);
        }
        assert_eq!(pcm16(1.0), 32767);
        assert_eq!(pcm16(-1.5), -32768);
    }
}
