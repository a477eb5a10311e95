//! Test audio made at test time: tones, sweeps, noise, WAV of every encoding (through hound or
//! byte by byte, including broken headers), FLAC (flacenc) and OGG/Vorbis (vorbis_rs).
//! Nothing is downloaded and nothing outside the repository is read.

use std::num::{NonZeroU32, NonZeroU8};
use std::path::Path;

/// `secs` seconds of a sine of `freq` Hz at `amp`.
pub fn sine(freq: f64, rate: u32, secs: f64, amp: f64) -> Vec<f32> {
    let n = (secs * f64::from(rate)).round() as usize;
    (0..n)
        .map(|i| {
            (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin()) as f32
        })
        .collect()
}

/// A linear sweep from `f0` to `f1` Hz over `n` samples.
pub fn sweep(f0: f64, f1: f64, rate: u32, n: usize, amp: f64) -> Vec<f32> {
    let dur = n as f64 / f64::from(rate);
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let phase = 2.0 * std::f64::consts::PI * (f0 * t + (f1 - f0) * t * t / (2.0 * dur));
            (amp * phase.sin()) as f32
        })
        .collect()
}

/// Deterministic xorshift64* generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// Uniform white noise in [-amp, amp).
pub fn noise(n: usize, amp: f64, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed);
    (0..n).map(|_| (amp * r.uniform()) as f32).collect()
}

/// `x` in [-1, 1] as integers of `bits` bits (full scale 2^(bits-1), clamped).
pub fn to_int(x: &[f32], bits: u16) -> Vec<i32> {
    let full = (1i64 << (bits - 1)) as f64;
    x.iter()
        .map(|&v| (f64::from(v) * full).round().clamp(-full, full - 1.0) as i32)
        .collect()
}

/// Writes interleaved integer samples with hound (8-bit is written unsigned, as WAV requires).
pub fn write_wav_int(path: &Path, interleaved: &[i32], channels: u16, bits: u16, rate: u32) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create test wav");
    for &s in interleaved {
        match bits {
            8 => w.write_sample(s as i8).expect("write"),
            16 => w.write_sample(s as i16).expect("write"),
            _ => w.write_sample(s).expect("write"),
        }
    }
    w.finalize().expect("finalize test wav");
}

/// Writes interleaved 32-bit float samples with hound.
pub fn write_wav_f32(path: &Path, interleaved: &[f32], channels: u16, rate: u32) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create test wav");
    for &s in interleaved {
        w.write_sample(s).expect("write");
    }
    w.finalize().expect("finalize test wav");
}

/// Fields of a hand-made WAV header (for codecs hound does not write and for broken files).
#[derive(Clone, Debug)]
pub struct RawWav {
    pub format: u16,
    pub channels: u16,
    pub rate: u32,
    pub bits: u16,
    pub block_align: u16,
    /// Size written in the data chunk header (`None`: the real size).
    pub declared: Option<u32>,
    /// Chunks inserted before `fmt ` (id, body).
    pub before_fmt: Vec<([u8; 4], Vec<u8>)>,
    pub data: Vec<u8>,
}

impl RawWav {
    pub fn pcm16(channels: u16, rate: u32, data: Vec<u8>) -> RawWav {
        RawWav {
            format: 1,
            channels,
            rate,
            bits: 16,
            block_align: 2 * channels,
            declared: None,
            before_fmt: Vec::new(),
            data,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&self.format.to_le_bytes());
        fmt.extend_from_slice(&self.channels.to_le_bytes());
        fmt.extend_from_slice(&self.rate.to_le_bytes());
        let byte_rate = self.rate.wrapping_mul(u32::from(self.block_align));
        fmt.extend_from_slice(&byte_rate.to_le_bytes());
        fmt.extend_from_slice(&self.block_align.to_le_bytes());
        fmt.extend_from_slice(&self.bits.to_le_bytes());
        if self.format != 1 {
            // cbSize: non-PCM fmt chunks carry it (18 bytes), as real A-law/mu-law files do.
            fmt.extend_from_slice(&0u16.to_le_bytes());
        }
        let mut body = b"WAVE".to_vec();
        for (id, chunk) in &self.before_fmt {
            body.extend_from_slice(id);
            body.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            body.extend_from_slice(chunk);
            if chunk.len() % 2 == 1 {
                body.push(0);
            }
        }
        body.extend_from_slice(b"fmt ");
        body.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
        body.extend_from_slice(&fmt);
        body.extend_from_slice(b"data");
        let declared = self.declared.unwrap_or(self.data.len() as u32);
        body.extend_from_slice(&declared.to_le_bytes());
        body.extend_from_slice(&self.data);
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }
}

/// 16-bit little-endian bytes of integer samples.
pub fn le16(samples: &[i32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|&s| (s as i16).to_le_bytes())
        .collect()
}

/// ITU-T G.711 mu-law encoding of one 16-bit sample (the classic reference algorithm).
pub fn g711_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && s & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// A FLAC stream of interleaved integer samples, encoded by flacenc.
pub fn flac_bytes(interleaved: &[i32], channels: usize, bits: usize, rate: usize) -> Vec<u8> {
    use flacenc::component::BitRepr;
    use flacenc::error::Verify;
    let config = flacenc::config::Encoder::default()
        .into_verified()
        .expect("flacenc config");
    let source = flacenc::source::MemSource::from_samples(interleaved, channels, bits, rate);
    let stream = flacenc::encode_with_fixed_block_size(&config, source, config.block_size)
        .expect("flacenc encode");
    let mut sink = flacenc::bitsink::ByteSink::new();
    stream.write(&mut sink).expect("flacenc write");
    let mut bytes = sink.as_slice().to_vec();
    // flacenc 0.5 counts the short last block in STREAMINFO's minimum block size; the FLAC spec
    // excludes it, and symphonia then cannot find the first frame. Write what `flac` writes:
    // min = max for a fixed-block-size stream (bytes 8..10 and 10..12: after the marker and the
    // 4-byte metadata block header).
    let max = [bytes[10], bytes[11]];
    bytes[8..10].copy_from_slice(&max);
    bytes
}

/// An OGG/Vorbis stream (quality-based VBR) of planar channels, encoded by libvorbis.
pub fn ogg_vorbis_bytes(planar: &[Vec<f32>], rate: u32) -> Vec<u8> {
    let mut enc = vorbis_rs::VorbisEncoderBuilder::new_with_serial(
        NonZeroU32::new(rate).expect("rate"),
        NonZeroU8::new(planar.len() as u8).expect("channels"),
        Vec::new(),
        42,
    )
    .build()
    .expect("vorbis encoder");
    let n = planar[0].len();
    let mut start = 0;
    while start < n {
        let end = (start + 1024).min(n);
        let block: Vec<&[f32]> = planar.iter().map(|c| &c[start..end]).collect();
        enc.encode_audio_block(&block).expect("vorbis encode");
        start = end;
    }
    enc.finish().expect("vorbis finish")
}

/// SNR in dB of `y` against the reference `x`.
pub fn snr_db(x: &[f32], y: &[f32]) -> f64 {
    let sig: f64 = x.iter().map(|&v| f64::from(v).powi(2)).sum();
    let err: f64 = x
        .iter()
        .zip(y)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    10.0 * (sig / err.max(1e-300)).log10()
}
