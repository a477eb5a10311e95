//! Broken, absurd and hostile files: each gives an error naming the file and the reason, or a
//! correct decode, within seconds, without a panic.

use std::path::PathBuf;

use super::common::audio_gen::*;
use super::common::{within, TempDir};
use wavemamba::audio::{probe, read_audio};

/// What a corpus file must give.
enum Expect {
    /// An error whose message contains this.
    Err(&'static str),
    /// A decode of exactly this many samples.
    Samples(usize),
}

fn good_wav() -> RawWav {
    RawWav::pcm16(
        1,
        16_000,
        le16(&to_int(&sine(440.0, 16_000, 0.05, 0.5), 16)),
    )
}

fn corpus() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use Expect::*;
    let good = good_wav();
    let good_bytes = good.bytes();
    let mut random = Vec::new();
    let mut rng = Rng(99);
    for _ in 0..4096 {
        random.push(rng.next_u64() as u8);
    }
    let flac = flac_bytes(&to_int(&noise(20_000, 0.5, 4), 16), 1, 16, 16_000);
    let ogg = ogg_vorbis_bytes(&[sine(500.0, 16_000, 0.5, 0.5)], 16_000);
    let mut riff_garbage = b"RIFF\x10\x00\x00\x00WAVE".to_vec();
    riff_garbage.extend_from_slice(&random[..64]);
    vec![
        ("empty.wav", Vec::new(), Err("empty file (0 bytes)")),
        (
            "random.wav",
            random.clone(),
            Err("not a supported audio file"),
        ),
        ("tiny.wav", b"RI".to_vec(), Err("truncated")),
        (
            "truncated-header.wav",
            good_bytes[..30].to_vec(),
            Err("truncated header"),
        ),
        (
            "riff-only.wav",
            good_bytes[..12].to_vec(),
            Err("truncated header"),
        ),
        (
            "data-longer-than-file.wav",
            RawWav {
                declared: Some(1_000_000),
                ..good.clone()
            }
            .bytes(),
            Err("truncated: the data chunk declares 1000000 bytes but only 1600 follow"),
        ),
        (
            // A streaming writer's placeholder size: the data runs to the end of the file.
            "placeholder-size.wav",
            RawWav {
                declared: Some(u32::MAX),
                ..good.clone()
            }
            .bytes(),
            Samples(800),
        ),
        (
            "zero-channels.wav",
            RawWav {
                channels: 0,
                ..good.clone()
            }
            .bytes(),
            Err("zero channels"),
        ),
        (
            "rate-0.wav",
            RawWav {
                rate: 0,
                ..good.clone()
            }
            .bytes(),
            Err("sample rate 0 Hz is outside"),
        ),
        (
            "rate-1.wav",
            RawWav {
                rate: 1,
                ..good.clone()
            }
            .bytes(),
            Err("sample rate 1 Hz is outside"),
        ),
        (
            "rate-10MHz.wav",
            RawWav {
                rate: 10_000_000,
                ..good.clone()
            }
            .bytes(),
            Err("sample rate 10000000 Hz is outside"),
        ),
        (
            "mp3-in-wav.wav",
            RawWav {
                format: 0x55,
                ..good.clone()
            }
            .bytes(),
            Err("unsupported WAV encoding: format code 0x0055 (MPEG layer 3)"),
        ),
        (
            "format-code-0.wav",
            RawWav {
                format: 0,
                ..good.clone()
            }
            .bytes(),
            Err("unsupported WAV encoding: format code 0x0000"),
        ),
        (
            "float-8bit.wav",
            RawWav {
                format: 3,
                bits: 8,
                block_align: 1,
                ..good.clone()
            }
            .bytes(),
            Err("IEEE float with 8 bits"),
        ),
        (
            "pcm-12bit.wav",
            RawWav {
                bits: 12,
                ..good.clone()
            }
            .bytes(),
            Err("PCM with 12 bits"),
        ),
        (
            "bad-block-align.wav",
            RawWav {
                block_align: 7,
                ..good.clone()
            }
            .bytes(),
            Err("block align 7 does not match"),
        ),
        (
            "no-samples.wav",
            RawWav {
                data: Vec::new(),
                ..good.clone()
            }
            .bytes(),
            Err("no audio samples"),
        ),
        (
            // A recorder that never finalised its file: the data chunk still says 0 bytes.
            "unfinalised.wav",
            RawWav {
                declared: Some(0),
                ..good.clone()
            }
            .bytes(),
            Err("no audio samples: the data chunk declares 0 bytes but 1600 bytes follow it"),
        ),
        (
            "less-than-one-frame.wav",
            RawWav {
                data: vec![7],
                ..good.clone()
            }
            .bytes(),
            Err("no audio samples"),
        ),
        (
            "no-samples.flac",
            flac_bytes(&[], 1, 16, 16_000),
            Err("no-samples.flac"),
        ),
        (
            "odd-chunk-before-fmt.wav",
            RawWav {
                before_fmt: vec![(*b"LIST", vec![1, 2, 3])],
                ..good.clone()
            }
            .bytes(),
            Samples(800),
        ),
        (
            "chunk-past-end.wav",
            {
                let mut b = good_bytes[..12].to_vec();
                b.extend_from_slice(b"JUNK\xff\xff\xff\x7f");
                b
            },
            Err("chunk \"JUNK\" runs past the end"),
        ),
        (
            "data-before-fmt.wav",
            {
                let mut b = good_bytes[..12].to_vec();
                b.extend_from_slice(b"data\x04\x00\x00\x00\x00\x00\x00\x00");
                b
            },
            Err("data chunk before the fmt chunk"),
        ),
        ("riff-garbage.wav", riff_garbage, Err("truncated header")),
        (
            "avi.wav",
            b"RIFF\x04\x00\x00\x00AVI LIST".to_vec(),
            Err("not WAVE audio"),
        ),
        (
            "rifx.wav",
            b"RIFX\x04\x00\x00\x00WAVEfmt ".to_vec(),
            Err("big-endian"),
        ),
        (
            "rf64.wav",
            b"RF64\xff\xff\xff\xffWAVEds64".to_vec(),
            Err("RF64"),
        ),
        (
            "truncated.flac",
            flac[..flac.len() * 6 / 10].to_vec(),
            Err("truncated"),
        ),
        ("header-only.flac", flac[..42].to_vec(), Err(".flac")),
        (
            "garbage.flac",
            [b"fLaC".as_slice(), &random].concat(),
            Err("FLAC"),
        ),
        (
            "garbage.ogg",
            [b"OggS".as_slice(), &random].concat(),
            Err("OGG"),
        ),
        ("truncated-ogg-header.ogg", ogg[..40].to_vec(), Err("OGG")),
        (
            "text.wav",
            b"hello, this is not audio\n".to_vec(),
            Err("not a supported audio file"),
        ),
        (
            "song.mp3",
            b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec(),
            Err("MP3 (or an ID3-tagged file) is not supported"),
        ),
        (
            "raw.mp3",
            vec![0xFF, 0xFB, 0x90, 0x64, 0, 0, 0, 0],
            Err("MP3"),
        ),
        (
            "voice.m4a",
            b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00".to_vec(),
            Err("MP4/M4A/AAC is not supported"),
        ),
        (
            "sound.aiff",
            b"FORM\x00\x00\x00\x10AIFFCOMM".to_vec(),
            Err("AIFF is not supported"),
        ),
        (
            "voice.opus",
            [
                b"OggS\x00\x02".as_slice(),
                &[0; 22],
                b"\x01\x13OpusHead\x01\x01",
            ]
            .concat(),
            Err("Opus audio (in an OGG file) is not supported"),
        ),
        (
            "odd-data-length.wav",
            RawWav {
                data: vec![1, 0, 2, 0, 3],
                ..good.clone()
            }
            .bytes(),
            Samples(2),
        ),
    ]
}

#[test]
fn broken_files_give_clear_errors_and_never_panic_or_hang() {
    let dir = TempDir::new("broken");
    for (name, bytes, expect) in corpus() {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let p: PathBuf = path.clone();
        let result = within(20, name, move || read_audio(&p));
        match (expect, result) {
            (Expect::Err(want), Err(e)) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(name),
                    "{name}: error does not name the file: {msg}"
                );
                assert!(msg.contains(want), "{name}: expected {want:?} in: {msg}");
            }
            (Expect::Samples(n), Ok(a)) => assert_eq!(a.samples.len(), n, "{name}"),
            (Expect::Err(want), Ok(a)) => {
                panic!(
                    "{name}: expected an error ({want}), decoded {} samples",
                    a.samples.len()
                )
            }
            (Expect::Samples(_), Err(e)) => panic!("{name}: expected a decode, got: {e}"),
        }
        // probe reads only the header: it may accept what the decoder rejects, never panics.
        let p = path.clone();
        let _ = within(20, name, move || probe(&p).map(|i| i.channels));
    }
}

#[test]
fn missing_files_and_directories_are_named() {
    let dir = TempDir::new("missing");
    let err = read_audio(&dir.join("nope.wav")).unwrap_err().to_string();
    assert!(err.contains("nope.wav"), "{err}");
    let err = read_audio(dir.path()).unwrap_err().to_string();
    assert!(err.contains("is a directory"), "{err}");
}

/// A 2 GB file (sparse: it takes no disk) is rejected from its header in milliseconds.
#[test]
fn huge_files_are_rejected_without_reading_them() {
    let dir = TempDir::new("huge");
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "huge-random.wav",
            b"\x00\x01garbage!".to_vec(),
            "not a supported audio file",
        ),
        (
            "huge-rate0.wav",
            RawWav {
                rate: 0,
                ..good_wav()
            }
            .bytes()[..44]
                .to_vec(),
            "sample rate 0",
        ),
        (
            "huge-mp3.wav",
            RawWav {
                format: 0x55,
                ..good_wav()
            }
            .bytes()[..44]
                .to_vec(),
            "0x0055",
        ),
    ];
    for (name, head, want) in cases {
        let path = dir.join(name);
        let f = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut &f, &head).unwrap();
        f.set_len(2 << 30).unwrap();
        let start = std::time::Instant::now();
        let err = read_audio(&path).unwrap_err().to_string();
        assert!(err.contains(want), "{name}: {err}");
        assert!(
            start.elapsed().as_millis() < 500,
            "{name}: took {:?}",
            start.elapsed()
        );
    }
}
