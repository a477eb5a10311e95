//! Audio in and out: WAV of every encoding, FLAC, OGG/Vorbis, writing, resampling, mu-law, and a
//! corpus of broken files that must give clear errors (never a panic or a hang).

mod common;

use std::path::Path;

use common::audio_gen::*;
use common::TempDir;
use tch::Tensor;
use wavemamba::audio::{
    mulaw, probe, read_audio, resample, write_wav, FileFormat, StreamingResampler, WavFormat,
};

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write test file");
}

#[test]
fn wav_integer_pcm_decodes_exactly_at_every_width() {
    let dir = TempDir::new("pcm");
    let mut x = sweep(50.0, 7000.0, 16_000, 4000, 0.9);
    x.extend([1.0, -1.0, 0.0, 0.5, -0.5]);
    for bits in [8u16, 16, 24, 32] {
        let ints = to_int(&x, bits);
        let path = dir.join(format!("pcm{bits}.wav"));
        write_wav_int(&path, &ints, 1, bits, 16_000);
        let audio = read_audio(&path).unwrap();
        assert_eq!(audio.sample_rate, 16_000);
        let scale = 1.0 / (1u64 << (bits - 1)) as f32;
        let expect: Vec<f32> = ints.iter().map(|&k| k as f32 * scale).collect();
        assert_eq!(audio.samples, expect, "{bits}-bit PCM");
        if bits <= 24 {
            // Exactly representable: k / 2^(bits-1) is a dyadic rational with ≤ 24 bits.
            for (&k, &v) in ints.iter().zip(&audio.samples) {
                assert_eq!(f64::from(v), f64::from(k) / (1u64 << (bits - 1)) as f64);
            }
        }
        let info = probe(&path).unwrap();
        assert_eq!(info.encoding, format!("PCM {bits}-bit"));
        assert_eq!(info.frames, Some(ints.len() as u64));
    }
}

#[test]
fn wav_float32_round_trips_bit_exactly() {
    let dir = TempDir::new("f32");
    let x = noise(3000, 0.99, 7);
    let path = dir.join("f.wav");
    write_wav(&path, &x, 22_050, WavFormat::Float32).unwrap();
    let audio = read_audio(&path).unwrap();
    assert_eq!(audio.sample_rate, 22_050);
    assert_eq!(audio.samples, x);
    // The same through hound's own float writer, stereo.
    let inter: Vec<f32> = x.iter().flat_map(|&v| [v, v]).collect();
    write_wav_f32(&dir.join("f2.wav"), &inter, 2, 48_000);
    assert_eq!(read_audio(&dir.join("f2.wav")).unwrap().samples, x);
}

#[test]
fn write_wav_pcm16_round_trips_bit_exactly_and_atomically() {
    let dir = TempDir::new("w16");
    let ints = to_int(&sweep(100.0, 3000.0, 8000, 5000, 0.95), 16);
    let src = dir.join("src.wav");
    write_wav_int(&src, &ints, 1, 16, 8000);
    let a = read_audio(&src).unwrap();
    let out = dir.join("out.wav");
    write_wav(&out, &a.samples, a.sample_rate, WavFormat::default()).unwrap();
    let b = read_audio(&out).unwrap();
    assert_eq!(a, b);
    let mut r = hound::WavReader::open(&out).unwrap();
    assert_eq!(r.spec().bits_per_sample, 16);
    let back: Vec<i32> = r.samples::<i16>().map(|s| i32::from(s.unwrap())).collect();
    assert_eq!(back, ints);
    // Out of range clamps; NaN is refused and leaves the existing file and no temp file.
    write_wav(&out, &[2.0, -2.0], 8000, WavFormat::Pcm16).unwrap();
    let c = read_audio(&out).unwrap();
    assert_eq!(c.samples, vec![32767.0 / 32768.0, -1.0]);
    let err = write_wav(&out, &[0.0, f32::NAN], 8000, WavFormat::Pcm16)
        .unwrap_err()
        .to_string();
    assert!(err.contains("out.wav") && err.contains("sample 1"), "{err}");
    assert_eq!(read_audio(&out).unwrap(), c);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 2, "no temporary files left behind");
    let err = write_wav(&out, &[0.0], 0, WavFormat::Pcm16)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sample rate 0 Hz"), "{err}");
    let err = write_wav(
        &dir.join("no/such/dir/x.wav"),
        &[0.0],
        8000,
        WavFormat::Pcm16,
    )
    .unwrap_err();
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

#[test]
fn channels_are_averaged_to_mono() {
    let dir = TempDir::new("mix");
    let l = to_int(&sine(440.0, 16_000, 0.1, 0.5), 16);
    let r = to_int(&noise(l.len(), 0.3, 3), 16);
    let inter: Vec<i32> = l.iter().zip(&r).flat_map(|(&a, &b)| [a, b]).collect();
    write_wav_int(&dir.join("st.wav"), &inter, 2, 16, 16_000);
    let a = read_audio(&dir.join("st.wav")).unwrap();
    let expect: Vec<f32> = l
        .iter()
        .zip(&r)
        .map(|(&a, &b)| (a as f32 / 32768.0 + b as f32 / 32768.0) * 0.5)
        .collect();
    assert_eq!(a.samples, expect);
    // Six channels, 24-bit (hound writes WAVE_FORMAT_EXTENSIBLE).
    let six: Vec<i32> = (0..600i32).map(|i| (i % 6 - 2) * 100_000).collect();
    write_wav_int(&dir.join("six.wav"), &six, 6, 24, 48_000);
    let a = read_audio(&dir.join("six.wav")).unwrap();
    assert_eq!(a.samples.len(), 100);
    // channels hold -2, -1, 0, 1, 2, 3 (× 100 000): their sum is 3
    let mean = 3.0 * 100_000.0 / 8_388_608.0 / 6.0;
    assert!(
        a.samples.iter().all(|&v| (v - mean).abs() < 1e-7),
        "{:?}",
        &a.samples[..3]
    );
}

#[test]
fn g711_mulaw_wav_decodes_through_symphonia() {
    let dir = TempDir::new("ulaw");
    let x = sine(300.0, 8000, 0.5, 0.5);
    let data: Vec<u8> = to_int(&x, 16)
        .iter()
        .map(|&s| g711_ulaw(s as i16))
        .collect();
    let wav = RawWav {
        format: 7,
        bits: 8,
        block_align: 1,
        ..RawWav::pcm16(1, 8000, data)
    };
    write(&dir.join("u.wav"), &wav.bytes());
    let a = read_audio(&dir.join("u.wav")).unwrap();
    assert_eq!(a.sample_rate, 8000);
    assert_eq!(a.samples.len(), x.len());
    let max_err = x
        .iter()
        .zip(&a.samples)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max);
    assert!(max_err < 0.02, "G.711 error {max_err}");
}

#[test]
fn flac_decodes_exactly() {
    let dir = TempDir::new("flac");
    for (bits, channels, rate) in [
        (16usize, 1usize, 16_000usize),
        (24, 2, 44_100),
        (8, 1, 8000),
    ] {
        let n = 10_000;
        let planar: Vec<Vec<i32>> = (0..channels)
            .map(|c| {
                to_int(
                    &sweep(80.0 + 50.0 * c as f64, 5000.0, rate as u32, n, 0.8),
                    bits as u16,
                )
            })
            .collect();
        let inter: Vec<i32> = (0..n)
            .flat_map(|i| planar.iter().map(move |p| p[i]))
            .collect();
        let path = dir.join(format!("t{bits}.flac"));
        write(&path, &flac_bytes(&inter, channels, bits, rate));
        let a = read_audio(&path).unwrap();
        assert_eq!(a.sample_rate, rate as u32);
        let scale = 1.0 / (1u64 << (bits - 1)) as f32;
        let expect: Vec<f32> = (0..n)
            .map(|i| {
                let s: f32 = planar.iter().map(|p| p[i] as f32 * scale).sum();
                s * (1.0 / channels as f32)
            })
            .collect();
        assert_eq!(a.samples, expect, "{bits}-bit {channels} ch FLAC");
        let info = probe(&path).unwrap();
        assert_eq!(info.format, FileFormat::Flac);
        assert_eq!(info.frames, Some(n as u64));
    }
}

#[test]
fn ogg_vorbis_decodes_the_tone() {
    let dir = TempDir::new("ogg");
    let x = sine(1000.0, 44_100, 1.0, 0.5);
    let path = dir.join("t.ogg");
    write(&path, &ogg_vorbis_bytes(&[x.clone(), x.clone()], 44_100));
    let a = read_audio(&path).unwrap();
    assert_eq!(a.sample_rate, 44_100);
    assert!(
        (a.samples.len() as i64 - x.len() as i64).abs() <= 2048,
        "{} samples",
        a.samples.len()
    );
    // Lossy, but the tone must be there: compare the middle.
    let mid = 10_000..30_000;
    let snr = snr_db(&x[mid.clone()], &a.samples[mid]);
    assert!(snr > 20.0, "Vorbis SNR {snr:.1} dB");
    assert_eq!(probe(&path).unwrap().format, FileFormat::OggVorbis);
}

#[test]
fn resampling_44k_16k_44k_keeps_a_1khz_tone_above_60db() {
    let x = sine(1000.0, 44_100, 1.0, 0.5);
    let down = resample(&x, 44_100, 16_000).unwrap();
    assert_eq!(down.len(), 16_000);
    let up = resample(&down, 16_000, 44_100).unwrap();
    assert_eq!(up.len(), x.len());
    let edge = 4410; // the filters see zeros beyond the ends
    let snr = snr_db(&x[edge..x.len() - edge], &up[edge..x.len() - edge]);
    assert!(snr > 60.0, "round-trip SNR {snr:.1} dB");
    // and the downsampled signal is the tone at 16 kHz
    let y = sine(1000.0, 16_000, 1.0, 0.5);
    let snr16 = snr_db(&y[1600..14_400], &down[1600..14_400]);
    assert!(snr16 > 60.0, "44.1k → 16k SNR {snr16:.1} dB");
    eprintln!("1 kHz tone: 44.1k → 16k {snr16:.1} dB, 44.1k → 16k → 44.1k {snr:.1} dB SNR");
}

#[test]
fn resample_lengths_identity_and_errors() {
    let x = noise(12_345, 0.5, 1);
    assert_eq!(resample(&x, 16_000, 16_000).unwrap(), x);
    for (from, to) in [
        (16_000u32, 8000u32),
        (8000, 16_000),
        (44_100, 48_000),
        (48_000, 22_050),
    ] {
        let y = resample(&x, from, to).unwrap();
        let expect = (x.len() as f64 * f64::from(to) / f64::from(from)).round() as usize;
        assert_eq!(y.len(), expect, "{from} → {to}");
    }
    assert!(resample(&[], 16_000, 8000).unwrap().is_empty());
    assert_eq!(resample(&[0.25], 16_000, 8000).unwrap().len(), 1);
    let err = resample(&x, 0, 16_000).unwrap_err().to_string();
    assert!(err.contains("sample rate 0 Hz"), "{err}");
    assert!(resample(&x, 16_000, 10_000_000).is_err());
}

#[test]
fn streaming_agrees_with_whole_file_after_the_reported_delay() {
    let x = {
        let mut s = sweep(20.0, 7000.0, 44_100, 30_000, 0.6);
        for (a, b) in s.iter_mut().zip(noise(30_000, 0.1, 9)) {
            *a += b;
        }
        s
    };
    for (from, to, chunk) in [
        (44_100u32, 16_000u32, 512usize),
        (16_000, 48_000, 160),
        (48_000, 16_000, 480),
        (16_000, 44_100, 256),
        (22_050, 16_000, 1024),
        (16_000, 16_000, 64),
    ] {
        let whole = resample(&x, from, to).unwrap();
        let mut s = StreamingResampler::new(from, to, chunk).unwrap();
        let mut out = Vec::new();
        let mut rng = Rng(5);
        let mut pos = 0;
        while pos < x.len() {
            let n = (rng.next_u64() % 700) as usize + 1;
            let end = (pos + n).min(x.len());
            s.process(&x[pos..end], &mut out).unwrap();
            pos = end;
        }
        s.flush(&mut out).unwrap();
        let d = s.delay_samples();
        assert_eq!(out.len(), d + whole.len(), "{from} → {to}: stream length");
        let max_err = whole
            .iter()
            .zip(&out[d..])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            max_err < 1e-4,
            "{from} → {to}: max difference {max_err} after delay {d}"
        );
        if from == to {
            assert_eq!(d, 0);
        } else {
            assert!(
                d > 0 && s.delay_ms() < 20.0,
                "{from} → {to}: delay {d} samples"
            );
        }
    }
    assert!(StreamingResampler::new(16_000, 48_000, 0).is_err());
    assert!(StreamingResampler::new(1, 48_000, 64).is_err());
}

#[test]
fn mulaw_slices_match_the_tensor_kernel() {
    let mut x: Vec<f32> = (0..=200_000).map(|i| i as f32 / 100_000.0 - 1.0).collect();
    x.extend(noise(100_000, 1.2, 11));
    // values right at and next to every decision boundary
    for q in 0..=255u8 {
        let v = mulaw::decode(q);
        x.extend([
            v,
            f32::from_bits(v.to_bits() + 1),
            f32::from_bits(v.to_bits().saturating_sub(1)),
        ]);
    }
    x.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        5.0,
        -5.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ]);
    let slice: Vec<i64> = mulaw::encode_slice(&x).into_iter().map(i64::from).collect();
    let t = mulaw::encode_tensor(&Tensor::from_slice(&x), 255).unwrap();
    let kernel = Vec::<i64>::try_from(&t).unwrap();
    let diff = slice.iter().zip(&kernel).filter(|(a, b)| a != b).count();
    assert_eq!(diff, 0, "{diff} of {} tokens differ", x.len());
    let q: Vec<u8> = (0..=255).collect();
    let dec = mulaw::decode_tensor(
        &Tensor::from_slice(&q.iter().map(|&v| i64::from(v)).collect::<Vec<_>>()),
        255,
    )
    .unwrap();
    assert_eq!(mulaw::decode_slice(&q), Vec::<f32>::try_from(&dec).unwrap());
    let mut out = vec![0i64; 4];
    mulaw::encode_into(&[-1.0, 0.0, 1.0, 0.5], &mut out);
    assert_eq!(out[..3], [0, 128, 255]);
}

/// The corpus of broken and absurd files.
#[path = "audio_io/broken.rs"]
mod broken;

/// `write_wav` to a symbolic link writes the file it points to (also a file not there yet) and
/// keeps the link.
#[test]
fn writing_through_a_symlink_keeps_the_link() {
    let dir = TempDir::new("symlink");
    std::fs::create_dir_all(dir.join("real")).unwrap();
    std::os::unix::fs::symlink("real/a.wav", dir.join("link.wav")).unwrap();
    let x = sine(300.0, 16_000, 0.1, 0.5);
    for _ in 0..2 {
        // first through a dangling link, then over the file it created
        write_wav(&dir.join("link.wav"), &x, 16_000, WavFormat::Float32).unwrap();
        let meta = std::fs::symlink_metadata(dir.join("link.wav")).unwrap();
        assert!(meta.file_type().is_symlink(), "the link was replaced");
        assert_eq!(read_audio(&dir.join("real/a.wav")).unwrap().samples, x);
    }
}

/// The outputs of one command: checked up front (names, directories), written under temporary
/// names, renamed together at commit; dropped uncommitted, nothing is left.
#[test]
fn outputs_appear_together_or_not_at_all() {
    use wavemamba::audio::output::{OutputKind, Outputs};
    use wavemamba::audio::write_wav_file;
    let dir = TempDir::new("outputs");
    let x = sine(300.0, 16_000, 0.05, 0.5);
    let names = |d: &TempDir| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // Written but never committed (a later step failed): nothing remains.
    {
        let mut out = Outputs::new();
        let a = out
            .add("--out", &dir.join("a.wav"), OutputKind::Wav)
            .unwrap();
        out.add("--spectrogram", &dir.join("a.png"), OutputKind::Image)
            .unwrap();
        write_wav_file(out.path(a), out.tmp(a), &x, 16_000, WavFormat::Pcm16).unwrap();
        assert_eq!(names(&dir).len(), 1, "one temporary file while working");
    }
    assert!(names(&dir).is_empty(), "left behind: {:?}", names(&dir));
    // One output never written: commit fails before renaming anything.
    let mut out = Outputs::new();
    let a = out
        .add("--out", &dir.join("a.wav"), OutputKind::Wav)
        .unwrap();
    out.add("--out", &dir.join("b.wav"), OutputKind::Wav)
        .unwrap();
    write_wav_file(out.path(a), out.tmp(a), &x, 16_000, WavFormat::Pcm16).unwrap();
    let err = out.commit().unwrap_err().to_string();
    assert!(err.contains("b.wav"), "{err}");
    assert!(names(&dir).is_empty(), "left behind: {:?}", names(&dir));
    // Both written: both appear.
    let mut out = Outputs::new();
    for n in ["a.wav", "b.wav"] {
        let i = out.add("--out", &dir.join(n), OutputKind::Wav).unwrap();
        write_wav_file(out.path(i), out.tmp(i), &x, 16_000, WavFormat::Pcm16).unwrap();
    }
    out.commit().unwrap();
    assert_eq!(names(&dir), ["a.wav", "b.wav"]);
}

/// Bad output paths are refused before anything is created, each with a message naming it.
#[test]
fn bad_output_paths_are_refused_up_front() {
    use wavemamba::audio::output::{OutputKind, Outputs};
    let dir = TempDir::new("bad-outputs");
    std::fs::create_dir_all(dir.join("sub.png")).unwrap();
    let mut out = Outputs::new();
    out.add("--out", &dir.join("a.wav"), OutputKind::Wav)
        .unwrap();
    let cases: [(&str, OutputKind, &str); 5] = [
        ("a.mp3", OutputKind::Wav, ".mp3 is not written"),
        (
            "spec.gif",
            OutputKind::Image,
            "give it a .png, .jpg or .bmp name",
        ),
        ("sub.png", OutputKind::Image, "is a directory"),
        (
            "missing/a.png",
            OutputKind::Image,
            "output directory does not exist",
        ),
        ("./a.wav", OutputKind::Wav, "is also the output of --out"),
    ];
    for (name, kind, want) in cases {
        let err = out
            .add("--x", &dir.join(name), kind)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{name}: {err}");
    }
    drop(out);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(left.len(), 1, "only sub.png/ should remain: {left:?}");
}
