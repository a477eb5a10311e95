//! Reading audio files: format sniffing from the first bytes, a RIFF header walk that validates a
//! WAV before any sample is read, PCM/float WAV through `hound`, the rest through `symphonia`.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::{audio_error, compressed, downmix_into, Audio, AudioInfo, FileFormat};
use super::{MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};
use crate::{Error, Result};

/// Decodes a WAV (8-bit unsigned, 16/24/32-bit integer, 32/64-bit float, A-law, mu-law, ADPCM),
/// FLAC or OGG/Vorbis file of any channel count to mono `f32` in [-1, 1] at the file's rate.
///
/// The format is recognised from the file's first bytes, not its extension. The decoded audio
/// always has at least one sample: a file without any is an error ("no audio samples").
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened; [`Error::Audio`] naming the file and the reason
/// for an empty, truncated, non-audio or unsupported file, a file without a single sample
/// (e.g. a WAV whose data chunk is empty, or declares 0 bytes because its writer never finalised
/// it), a sample rate outside [`MIN_SAMPLE_RATE`]..=[`MAX_SAMPLE_RATE`], zero channels, or
/// non-finite float samples.
pub fn read_audio(path: &Path) -> Result<Audio> {
    let (format, file, len) = open_and_sniff(path)?;
    let audio = match format {
        FileFormat::Wav => {
            let header = wav_header(path, file, len)?;
            let audio = match header.route {
                WavRoute::Hound => decode_wav_hound(path, &header)?,
                WavRoute::Symphonia => compressed::decode(path, FileFormat::Wav)?,
            };
            if audio.samples.is_empty() {
                return Err(no_samples(path, Some(&header), len));
            }
            audio
        }
        other => compressed::decode(path, other)?,
    };
    if audio.samples.is_empty() {
        return Err(no_samples(path, None, len));
    }
    if let Some(i) = audio.samples.iter().position(|x| !x.is_finite()) {
        return Err(audio_error(
            path,
            format!("sample {i} is not a finite number (NaN or infinity): corrupt float data"),
        ));
    }
    Ok(audio)
}

/// The "no audio samples" error, with the reason when the header explains it: a WAV data chunk
/// that declares 0 bytes while bytes follow it was never finalised by its writer.
fn no_samples(path: &Path, header: Option<&WavHeader>, file_len: u64) -> Error {
    let after_data = header.map_or(0, |h| file_len.saturating_sub(h.data_start));
    match header {
        Some(h) if h.data_len == 0 && after_data > 0 => audio_error(
            path,
            format!(
                "no audio samples: the data chunk declares 0 bytes but {after_data} bytes follow \
                 it (probably a recording whose writer never finalised the file)"
            ),
        ),
        _ => audio_error(path, "no audio samples"),
    }
}

/// Reads only the header: format, encoding, rate, channels and declared length. A file that
/// declares no samples probes fine (`frames: Some(0)`); [`read_audio`] refuses it.
///
/// # Errors
/// As [`read_audio`], for everything that can be seen in the header.
pub fn probe(path: &Path) -> Result<AudioInfo> {
    let (format, file, len) = open_and_sniff(path)?;
    match format {
        FileFormat::Wav => {
            let h = wav_header(path, file, len)?;
            Ok(AudioInfo {
                format,
                encoding: h.encoding,
                sample_rate: h.sample_rate,
                channels: h.channels,
                frames: Some(h.data_len / u64::from(h.block_align)),
            })
        }
        other => compressed::probe(path, other),
    }
}

/// Opens `path`, rejects empty and non-audio files from their first 64 bytes.
fn open_and_sniff(path: &Path) -> Result<(FileFormat, File, u64)> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(audio_error(path, "is a directory, not an audio file"));
    }
    let len = meta.len();
    if len == 0 {
        return Err(audio_error(path, "empty file (0 bytes)"));
    }
    let mut head = [0u8; 64];
    let n = read_up_to(&mut file, &mut head).map_err(io)?;
    let head = &head[..n];
    let unsupported = |what: &str| {
        Err(audio_error(
            path,
            format!("{what} is not supported; supported: WAV, FLAC, OGG/Vorbis"),
        ))
    };
    let contains = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    let format = if head.starts_with(b"RIFF") && n >= 12 && &head[8..12] == b"WAVE" {
        FileFormat::Wav
    } else if head.starts_with(b"RIFF") && n >= 12 {
        let form = String::from_utf8_lossy(&head[8..12]).into_owned();
        return Err(audio_error(
            path,
            format!("a RIFF file of type {form:?}, not WAVE audio"),
        ));
    } else if head.starts_with(b"RIFX") {
        return Err(audio_error(path, "big-endian WAV (RIFX) is not supported"));
    } else if head.starts_with(b"RF64") || head.starts_with(b"BW64") {
        return Err(audio_error(
            path,
            "RF64/BW64 WAV (files over 4 GB) is not supported; split it or convert it to FLAC",
        ));
    } else if head.starts_with(b"fLaC") {
        FileFormat::Flac
    } else if head.starts_with(b"OggS") && contains(b"OpusHead") {
        return unsupported("Opus audio (in an OGG file)");
    } else if head.starts_with(b"OggS") && contains(b"Speex   ") {
        return unsupported("Speex audio (in an OGG file)");
    } else if head.starts_with(b"OggS") && contains(b"\x7fFLAC") {
        return unsupported("FLAC in an OGG container");
    } else if head.starts_with(b"OggS") {
        FileFormat::OggVorbis
    } else if head.starts_with(b"ID3") || (n >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0) {
        return unsupported("MP3 (or an ID3-tagged file)");
    } else if n >= 12 && &head[4..8] == b"ftyp" {
        return unsupported("MP4/M4A/AAC");
    } else if head.starts_with(b"FORM") {
        return unsupported("AIFF");
    } else if head.starts_with(b"\x30\x26\xb2\x75") {
        return unsupported("WMA/ASF");
    } else if n < 4 || head.starts_with(b"RIFF") {
        return Err(audio_error(
            path,
            format!("truncated: only {len} bytes, too short for any audio header"),
        ));
    } else {
        return Err(audio_error(
            path,
            format!(
                "not a supported audio file (starts with bytes {}); supported: WAV, FLAC, OGG/Vorbis",
                hex(&head[..n.min(8)])
            ),
        ));
    };
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok((format, file, len))
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Which decoder handles a WAV encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WavRoute {
    /// Integer PCM 8/16/24/32-bit, float 32-bit.
    Hound,
    /// A-law, mu-law, MS/IMA ADPCM, float 64-bit.
    Symphonia,
}

/// A validated WAV header.
struct WavHeader {
    file: File,
    route: WavRoute,
    encoding: String,
    sample_rate: u32,
    channels: u16,
    block_align: u16,
    /// Bytes in the data chunk (checked against the file length).
    data_len: u64,
    /// Offset of the first sample byte.
    data_start: u64,
    /// The fmt chunk's body (at most its first 64 bytes).
    fmt: Vec<u8>,
}

const WAVE_FORMAT_PCM: u16 = 0x0001;
const WAVE_FORMAT_ADPCM: u16 = 0x0002;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 0x0003;
const WAVE_FORMAT_ALAW: u16 = 0x0006;
const WAVE_FORMAT_MULAW: u16 = 0x0007;
const WAVE_FORMAT_IMA_ADPCM: u16 = 0x0011;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

fn format_name(code: u16) -> &'static str {
    match code {
        0x0000 => "unknown",
        WAVE_FORMAT_PCM => "PCM",
        WAVE_FORMAT_ADPCM => "MS ADPCM",
        WAVE_FORMAT_IEEE_FLOAT => "IEEE float",
        WAVE_FORMAT_ALAW => "A-law",
        WAVE_FORMAT_MULAW => "mu-law",
        WAVE_FORMAT_IMA_ADPCM => "IMA ADPCM",
        0x0031 => "GSM 6.10",
        0x0050 => "MPEG",
        0x0055 => "MPEG layer 3",
        0x0092 => "Dolby AC3",
        0x00FF | 0x1610 => "AAC",
        0x2000 => "AC3",
        _ => "unknown",
    }
}

/// Walks the RIFF chunks up to `data` (never reading the samples) and checks every field a
/// decoder relies on against the file's real length.
fn wav_header(path: &Path, file: File, file_len: u64) -> Result<WavHeader> {
    let bad = |reason: String| audio_error(path, reason);
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut r = BufReader::with_capacity(4096, file);
    r.seek(SeekFrom::Start(12)).map_err(io)?;
    let mut pos = 12u64;
    let mut fmt: Option<Vec<u8>> = None;
    // A file has a handful of chunks; a walk longer than this is a corrupt or hostile file.
    for _ in 0..10_000 {
        let mut head = [0u8; 8];
        let n = read_up_to(&mut r, &mut head).map_err(io)?;
        if n < 8 {
            let what = if fmt.is_none() { "fmt" } else { "data" };
            return Err(bad(format!(
                "truncated header: no {what} chunk before the end of the file ({file_len} bytes)"
            )));
        }
        let id = [head[0], head[1], head[2], head[3]];
        let size = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
        let body_start = pos + 8;
        if &id == b"data" {
            let Some(fmt) = fmt else {
                return Err(bad("malformed WAV: data chunk before the fmt chunk".into()));
            };
            return check_fmt(path, r.into_inner(), &fmt, body_start, size, file_len);
        }
        if body_start + size > file_len {
            return Err(bad(format!(
                "truncated header: chunk {:?} runs past the end of the file",
                String::from_utf8_lossy(&id)
            )));
        }
        if &id == b"fmt " {
            if size < 16 {
                return Err(bad(format!("fmt chunk too short ({size} bytes, need 16)")));
            }
            let mut body = vec![0u8; size.min(64) as usize];
            r.read_exact(&mut body).map_err(io)?;
            fmt = Some(body);
        }
        // Chunks are padded to an even length.
        pos = body_start + size + (size & 1);
        r.seek(SeekFrom::Start(pos)).map_err(io)?;
    }
    Err(bad(
        "malformed WAV: too many chunks before the data chunk".into()
    ))
}

fn check_fmt(
    path: &Path,
    file: File,
    fmt: &[u8],
    data_start: u64,
    data_len: u64,
    file_len: u64,
) -> Result<WavHeader> {
    let bad = |reason: String| audio_error(path, reason);
    let u16_at = |i: usize| u16::from_le_bytes([fmt[i], fmt[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([fmt[i], fmt[i + 1], fmt[i + 2], fmt[i + 3]]);
    let tag = u16_at(0);
    let channels = u16_at(2);
    let sample_rate = u32_at(4);
    let block_align = u16_at(12);
    let bits = u16_at(14);
    // WAVE_FORMAT_EXTENSIBLE keeps the real format code in the first two bytes of its GUID.
    let code = if tag == WAVE_FORMAT_EXTENSIBLE {
        if fmt.len() < 40 {
            return Err(bad(format!(
                "malformed WAV: extensible fmt chunk of {} bytes, need 40",
                fmt.len()
            )));
        }
        u16_at(24)
    } else {
        tag
    };
    if channels == 0 {
        return Err(bad("malformed WAV: zero channels".into()));
    }
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&sample_rate) {
        return Err(bad(format!(
            "sample rate {sample_rate} Hz is outside the supported range \
             {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} Hz"
        )));
    }
    let (route, encoding) = match (code, bits) {
        (WAVE_FORMAT_PCM, 8 | 16 | 24 | 32) => (WavRoute::Hound, format!("PCM {bits}-bit")),
        (WAVE_FORMAT_IEEE_FLOAT, 32) => (WavRoute::Hound, "IEEE float 32-bit".to_string()),
        (WAVE_FORMAT_IEEE_FLOAT, 64) => (WavRoute::Symphonia, "IEEE float 64-bit".to_string()),
        (WAVE_FORMAT_ALAW | WAVE_FORMAT_MULAW, 8) => {
            (WavRoute::Symphonia, format!("{} 8-bit", format_name(code)))
        }
        (WAVE_FORMAT_ADPCM | WAVE_FORMAT_IMA_ADPCM, 4) => {
            (WavRoute::Symphonia, format_name(code).to_string())
        }
        (WAVE_FORMAT_PCM | WAVE_FORMAT_IEEE_FLOAT | WAVE_FORMAT_ALAW | WAVE_FORMAT_MULAW, _) => {
            return Err(bad(format!(
                "unsupported WAV encoding: {} with {bits} bits per sample",
                format_name(code)
            )))
        }
        _ => {
            return Err(bad(format!(
                "unsupported WAV encoding: format code 0x{code:04x} ({}); supported: PCM \
                 8/16/24/32-bit, IEEE float 32/64-bit, A-law, mu-law, MS/IMA ADPCM",
                format_name(code)
            )))
        }
    };
    if block_align == 0 {
        return Err(bad("malformed WAV: block align is 0".into()));
    }
    if route == WavRoute::Hound {
        let expect = u32::from(channels) * u32::from(bits).div_ceil(8);
        if u32::from(block_align) != expect {
            return Err(bad(format!(
                "malformed WAV: block align {block_align} does not match {channels} channels \
                 of {bits} bits (expected {expect})"
            )));
        }
    }
    let available = file_len.saturating_sub(data_start);
    // 0xFFFFFFFF is the size a streaming writer (one that cannot seek back, e.g. into a pipe)
    // leaves: the data runs to the end of the file, as sox and ffmpeg read it.
    let data_len = if data_len == u64::from(u32::MAX) {
        data_len.min(available)
    } else {
        data_len
    };
    if data_len > available {
        return Err(bad(format!(
            "truncated: the data chunk declares {data_len} bytes but only {available} follow"
        )));
    }
    Ok(WavHeader {
        file,
        route,
        encoding,
        sample_rate,
        channels,
        block_align,
        data_len,
        data_start,
        fmt: fmt.to_vec(),
    })
}

/// Decodes integer/float PCM through `hound`, downmixing frame by frame.
///
/// hound is handed a canonical header (`RIFF`, `fmt `, `data`) followed by exactly the data
/// chunk's bytes: the header walk above has already validated the file, found the data and
/// skipped every other chunk (hound itself trips over odd-sized chunks, which are common).
fn decode_wav_hound(path: &Path, header: &WavHeader) -> Result<Audio> {
    let hound_err = |e: hound::Error| audio_error(path, format!("WAV decode failed: {e}"));
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let fmt_len =
        if header.fmt.len() >= 40 && header.fmt[..2] == WAVE_FORMAT_EXTENSIBLE.to_le_bytes() {
            40
        } else {
            16
        };
    // Whole frames only: a trailing partial frame (some writers leave one) is dropped.
    let whole = header.data_len - header.data_len % u64::from(header.block_align);
    let data_len = whole as u32; // ≤ the file length, checked
    let mut canon = Vec::with_capacity(20 + fmt_len + 8);
    canon.extend_from_slice(b"RIFF");
    let riff_len = (4 + 8 + fmt_len as u64 + 8 + whole).min(u64::from(u32::MAX));
    canon.extend_from_slice(&(riff_len as u32).to_le_bytes());
    canon.extend_from_slice(b"WAVEfmt ");
    canon.extend_from_slice(&(fmt_len as u32).to_le_bytes());
    canon.extend_from_slice(&header.fmt[..fmt_len]);
    canon.extend_from_slice(b"data");
    canon.extend_from_slice(&data_len.to_le_bytes());
    let mut file = header.file.try_clone().map_err(io)?;
    file.seek(SeekFrom::Start(header.data_start)).map_err(io)?;
    let data = BufReader::with_capacity(1 << 16, file).take(whole);
    let reader =
        hound::WavReader::new(std::io::Cursor::new(canon).chain(data)).map_err(hound_err)?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels);
    let frames = (header.data_len / u64::from(header.block_align)) as usize;
    let mut samples = Vec::with_capacity(frames);
    let mut frame = Vec::with_capacity(channels);
    let mut push = |x: f32, samples: &mut Vec<f32>| {
        frame.push(x);
        if frame.len() == channels {
            downmix_into(&frame, channels, samples);
            frame.clear();
        }
    };
    match spec.sample_format {
        hound::SampleFormat::Float => {
            let mut reader = reader;
            for s in reader.samples::<f32>() {
                push(s.map_err(hound_err)?, &mut samples);
            }
        }
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            let mut reader = reader;
            for s in reader.samples::<i32>() {
                push(s.map_err(hound_err)? as f32 * scale, &mut samples);
            }
        }
    }
    Ok(Audio {
        samples,
        sample_rate: spec.sample_rate,
    })
}
