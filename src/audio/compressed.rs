//! FLAC, OGG/Vorbis and the WAV codecs `hound` does not read (A-law, mu-law, ADPCM, 64-bit
//! float), through `symphonia`.

use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL, CODEC_TYPE_VORBIS};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use super::{audio_error, downmix_into, Audio, AudioInfo, FileFormat};
use super::{MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};
use crate::{Error, Result};

/// Decodes the whole file to mono.
pub(super) fn decode(path: &Path, format: FileFormat) -> Result<Audio> {
    guarded(path, || decode_inner(path, format))
}

/// Reads the stream parameters without decoding packets.
pub(super) fn probe(path: &Path, format: FileFormat) -> Result<AudioInfo> {
    guarded(path, || {
        let opened = open(path, format)?;
        Ok(opened.info)
    })
}

/// Runs a symphonia call, turning a panic inside the decoder into an error naming the file: a
/// malformed file must never take the process down.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(audio_error(
                path,
                format!("the decoder failed on malformed data ({msg})"),
            ))
        }
    }
}

struct Opened {
    reader: Box<dyn FormatReader>,
    track_id: u32,
    info: AudioInfo,
}

fn open(path: &Path, format: FileFormat) -> Result<Opened> {
    let file = File::open(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let mss = MediaSourceStream::new(Box::new(file), MediaSourceStreamOptions::default());
    let mut hint = Hint::new();
    hint.with_extension(match format {
        FileFormat::Wav => "wav",
        FileFormat::Flac => "flac",
        FileFormat::OggVorbis => "ogg",
    });
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| {
            audio_error(
                path,
                format!("not a valid {format} stream: {}", describe(&e)),
            )
        })?;
    let reader = probed.format;
    let track = reader
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| audio_error(path, format!("{format} file without an audio track")))?;
    let params = &track.codec_params;
    let codec_name = symphonia::default::get_codecs()
        .get_codec(params.codec)
        .map(|d| d.short_name)
        .unwrap_or("unknown");
    if format == FileFormat::OggVorbis && params.codec != CODEC_TYPE_VORBIS {
        return Err(audio_error(
            path,
            format!("unsupported codec {codec_name:?} in an OGG file; only Vorbis is supported"),
        ));
    }
    let sample_rate = params
        .sample_rate
        .ok_or_else(|| audio_error(path, "the header gives no sample rate"))?;
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&sample_rate) {
        return Err(audio_error(
            path,
            format!(
                "sample rate {sample_rate} Hz is outside the supported range \
                 {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} Hz"
            ),
        ));
    }
    let channels = params.channels.map(|c| c.count()).unwrap_or(0);
    if channels == 0 {
        return Err(audio_error(path, "the header declares zero channels"));
    }
    let encoding = match params.bits_per_sample {
        Some(bits) if format == FileFormat::Flac => format!("FLAC {bits}-bit"),
        _ => codec_name.to_string(),
    };
    let info = AudioInfo {
        format,
        encoding,
        sample_rate,
        channels: channels.min(usize::from(u16::MAX)) as u16,
        frames: params.n_frames.filter(|&n| n > 0),
    };
    Ok(Opened {
        track_id: track.id,
        reader,
        info,
    })
}

fn describe(e: &SymError) -> String {
    match e {
        SymError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the file ends inside its header (truncated)".into()
        }
        SymError::Unsupported(what) => format!("unsupported: {what}"),
        other => other.to_string(),
    }
}

fn decode_inner(path: &Path, format: FileFormat) -> Result<Audio> {
    let Opened {
        mut reader,
        track_id,
        info,
    } = open(path, format)?;
    let track = reader
        .tracks()
        .iter()
        .find(|t| t.id == track_id)
        .ok_or_else(|| audio_error(path, "audio track vanished"))?;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| {
            audio_error(
                path,
                format!("cannot decode {}: {}", info.encoding, describe(&e)),
            )
        })?;
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let declared = info.frames.unwrap_or(0).min(file_len.saturating_mul(2));
    let mut samples: Vec<f32> = Vec::with_capacity(declared as usize);
    let mut buf: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match reader.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => {
                return Err(audio_error(
                    path,
                    format!(
                        "corrupt {format} stream after {:.2} s: {}",
                        samples.len() as f64 / info.sample_rate as f64,
                        describe(&e)
                    ),
                ))
            }
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = decoder.decode(&packet).map_err(|e| {
            audio_error(
                path,
                format!(
                    "corrupt {} data after {:.2} s: {}",
                    info.encoding,
                    samples.len() as f64 / info.sample_rate as f64,
                    describe(&e)
                ),
            )
        })?;
        let spec = *decoded.spec();
        let frames = decoded.capacity() as u64;
        if spec.rate != info.sample_rate {
            return Err(audio_error(
                path,
                format!(
                    "the sample rate changes inside the stream ({} → {} Hz)",
                    info.sample_rate, spec.rate
                ),
            ));
        }
        let sb = match &mut buf {
            Some(sb) if sb.capacity() as u64 >= frames * spec.channels.count() as u64 => sb,
            _ => buf.insert(SampleBuffer::new(frames, spec)),
        };
        sb.copy_interleaved_ref(decoded);
        downmix_into(sb.samples(), spec.channels.count(), &mut samples);
    }
    if let Some(n) = info.frames {
        if format == FileFormat::Flac && (samples.len() as u64) < n {
            return Err(audio_error(
                path,
                format!(
                    "truncated: the header declares {n} frames but the file holds only {}",
                    samples.len()
                ),
            ));
        }
        if format == FileFormat::Flac {
            samples.truncate(n as usize);
        }
    }
    Ok(Audio {
        samples,
        sample_rate: info.sample_rate,
    })
}
