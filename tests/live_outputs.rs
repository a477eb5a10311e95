//! `wavemamba live`'s outputs: a run that fails to start leaves no recordings, and recordings
//! appear only once committed, together.

mod common;

use std::process::Command;

use common::{text, wavemamba_bin, TempDir};
use wavemamba::audio::{read_audio, write_wav, WavFormat};

/// Every file in `dir`, hidden ones included (partial recordings), sorted.
fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Options are checked before any recording is created: a bad one leaves no file, not even a
/// header-only WAV or a hidden partial one.
#[test]
fn a_run_that_fails_to_start_leaves_no_recordings() {
    let dir = TempDir::new("live-nostart");
    let input = dir.join("in.wav");
    write_wav(
        &input,
        &common::audio_gen::sine(300.0, 16_000, 0.2, 0.3),
        16_000,
        WavFormat::Pcm16,
    )
    .unwrap();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (a, b) = (out.join("l5.wav"), out.join("l6.wav"));
    let base = |record: &std::path::Path, record_input: &std::path::Path| {
        let mut c = Command::new(wavemamba_bin());
        c.args([
            "live",
            "--mode",
            "passthrough",
            "--no-playback",
            "--lossless",
        ])
        .arg("--input")
        .arg(&input)
        .arg("--record")
        .arg(record)
        .arg("--record-input")
        .arg(record_input);
        c
    };
    let cases: [(Command, &str); 4] = [
        (
            {
                let mut c = base(&a, &b);
                c.args(["--resampler-taps", "3"]);
                c
            },
            "invalid value for --resampler-taps: must be a multiple of 8",
        ),
        (base(&a, &out.join("l6.mp3")), ".mp3 is not written"),
        (base(&a, &a), "is also the file of --record"),
        (
            {
                // No device is opened: --rate would be silently ignored.
                let mut c = base(&a, &b);
                c.args(["--rate", "48000"]);
                c
            },
            "invalid value for --rate: sets the sound devices' rate",
        ),
    ];
    for (mut cmd, needle) in cases {
        let o = cmd.output().expect("run live");
        assert_eq!(o.status.code(), Some(1));
        assert!(text(&o.stderr).contains(needle), "{}", text(&o.stderr));
        assert!(
            files_in(&out).is_empty(),
            "left behind: {:?}",
            files_in(&out)
        );
    }
    // The same run with valid options writes both.
    let ok = base(&a, &b).output().expect("run live");
    assert!(ok.status.success(), "live failed: {}", text(&ok.stderr));
    assert_eq!(files_in(&out), ["l5.wav", "l6.wav"]);
}

/// A recorder dropped before its commit (the run failed to start) removes its partial file;
/// committed together, both recordings appear.
#[test]
fn recorders_appear_only_when_committed() {
    use wavemamba::pipeline::control::{finish_all, Recorder};
    let dir = TempDir::new("live-recorder");
    let r = Recorder::create(&dir.join("a.wav"), 16_000).unwrap();
    r.sender().unwrap().send(vec![0.5; 100]).unwrap();
    assert_eq!(files_in(dir.path()), [".a.wav.partial"]);
    drop(r);
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
    let rs = vec![
        Recorder::create(&dir.join("a.wav"), 16_000).unwrap(),
        Recorder::create(&dir.join("b.wav"), 16_000).unwrap(),
    ];
    rs[0].sender().unwrap().send(vec![0.25; 10]).unwrap();
    let done = finish_all(rs).unwrap();
    assert_eq!(done[0].1, 10);
    assert_eq!(files_in(dir.path()), ["a.wav", "b.wav"]);
    assert_eq!(
        read_audio(&dir.join("a.wav")).unwrap().samples,
        vec![0.25; 10]
    );
}
