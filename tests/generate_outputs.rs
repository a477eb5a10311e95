//! `wavemamba generate`'s outputs: impossible requests fail before writing anything, outputs go
//! through symlinks and by extension, and an unwritable spectrogram fails before generating.

mod common;

use tch::Device;

use common::{model_and_prompt as setup, path_str as s, text, wavemamba};
use wavemamba::audio::{read_audio, write_wav, WavFormat};
use wavemamba::model::checkpoint;

#[test]
fn impossible_requests_fail_before_writing_anything() {
    let (dir, model) = setup("impossible");
    let zero = dir.join("zero.wav");
    write_wav(&zero, &[], 16_000, WavFormat::Pcm16).unwrap();
    // A training run's directory (best/, checkpoints/, latest) and a model without weights.
    let run = dir.join("run");
    std::fs::create_dir_all(run.join("checkpoints")).unwrap();
    let m = checkpoint::load(&model, Device::Cpu).unwrap();
    checkpoint::save(&m, &run.join("best")).unwrap();
    checkpoint::save(&m, &run.join("checkpoints/step-000002")).unwrap();
    std::fs::write(run.join("latest"), "step-000002").unwrap();
    let no_weights = dir.join("no-weights");
    checkpoint::save(&m, &no_weights).unwrap();
    std::fs::remove_file(no_weights.join("model.safetensors")).unwrap();
    let out_dir = dir.join("out");
    std::fs::create_dir_all(out_dir.join("dir.png")).unwrap();
    let out = out_dir.join("o.wav");
    let prompt = dir.join("prompt.wav");
    let (p, o) = (s(&prompt), s(&out));
    let png = |name: &str| s(&out_dir.join(name)).to_owned();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            args(&["--prompt", s(&zero), "--out", o]),
            "zero.wav: no audio samples",
        ),
        (
            args(&["--seconds", "0.00001", "--out", o]),
            "invalid value for --seconds: 0.00001 is less than one sample at 16000 Hz",
        ),
        (
            args(&["--prompt", p, "--seconds", "1e12", "--out", o]),
            "more than a 16-bit WAV file can",
        ),
        (
            args(&["--prompt", p, "--seconds", "3e6", "--out", o]),
            "more than a 16-bit WAV file can",
        ),
        (args(&["--num", "100000000", "--out", o]), "of memory"),
        (
            args(&["--out", s(&out_dir.join("o.mp3"))]),
            ".mp3 is not written",
        ),
        (
            args(&["--out", o, "--spectrogram", &png("s.gif")]),
            ".gif is not written",
        ),
        (
            args(&["--out", o, "--spectrogram", s(&out_dir)]),
            "give it a .png",
        ),
        (
            args(&["--out", o, "--spectrogram", &png("dir.png")]),
            "is a directory",
        ),
        (
            args(&["--out", o, "--rate", "5"]),
            "invalid value for --rate",
        ),
        (
            args(&["--out", o, "--top-p", "0"]),
            "invalid value for --top-p",
        ),
        (args(&["--out", o, "--num", "0"]), "invalid value for --num"),
    ];
    for (i, (mut a, needle)) in cases.into_iter().enumerate() {
        if !a.contains(&"--model".to_owned()) {
            a.extend(["--model".into(), s(&model).into()]);
        }
        expect_failure(&a, needle, &format!("case {i}"));
    }
    let err = expect_failure(
        &args(&["--model", s(&run), "--out", o]),
        "a training run's directory, not a model directory: use",
        "run dir",
    );
    assert!(
        err.contains(&format!(
            "{} (the best validation model)",
            s(&run.join("best"))
        )) && err.contains("checkpoints/step-000002 (the latest checkpoint)"),
        "{err}"
    );
    let err = expect_failure(
        &args(&["--model", s(&no_weights), "--out", o]),
        "model.safetensors is missing",
        "no weights",
    );
    assert!(!err.contains("IoError") && !err.contains("Os {"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "only dir.png/ should remain: {left:?}");
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|x| x.to_string()).collect()
}

/// Runs `generate --quiet ARGS` (0.1 s unless `--seconds` is given), expects status 1 and
/// `needle` in stderr without a panic or an abort; returns stderr.
fn expect_failure(a: &[String], needle: &str, what: &str) -> String {
    let mut all: Vec<&str> = vec!["generate", "--quiet"];
    if !a.contains(&"--seconds".to_owned()) {
        all.extend(["--seconds", "0.1"]);
    }
    all.extend(a.iter().map(String::as_str));
    let o = wavemamba(&all);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{what}: {err}");
    assert!(
        err.contains(needle),
        "{what}: expected {needle:?} in: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("memory allocation"),
        "{what}: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
    err
}

/// Outputs through symbolic links replace the files they point to and keep the links; a
/// spectrogram named .jpg is a JPEG; the speed line says which way is faster.
#[test]
fn generate_writes_through_links_and_by_extension() {
    let (dir, model) = setup("links");
    std::fs::create_dir_all(dir.join("real")).unwrap();
    let (link, jpg) = (dir.join("out.wav"), dir.join("spec.jpg"));
    std::os::unix::fs::symlink("real/out.wav", &link).unwrap();
    std::fs::write(dir.join("real/out.wav"), b"old").unwrap();
    let o = wavemamba(&[
        "generate",
        "--model",
        s(&model),
        "--seconds",
        "0.05",
        "--quiet",
        "--out",
        s(&link),
        "--spectrogram",
        s(&jpg),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_symlink(), "the link was replaced");
    assert_eq!(
        read_audio(&dir.join("real/out.wav")).unwrap().samples.len(),
        800
    );
    assert_eq!(
        &std::fs::read(&jpg).unwrap()[..2],
        b"\xff\xd8",
        "not a JPEG"
    );
    let stdout = text(&o.stdout);
    assert!(stdout.contains("than real time)"), "{stdout}");
    assert!(stdout.contains(&format!("wrote {}", s(&jpg))), "{stdout}");
}

/// A directory that cannot be written fails before generating, and leaves nothing (as root
/// every directory is writable: then only the rest is checked).
#[test]
fn an_unwritable_spectrogram_directory_fails_before_generating() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, model) = setup("readonly");
    let (out, ro) = (dir.join("out.wav"), dir.join("ro"));
    let generate = |spectrogram: &str| {
        wavemamba(&[
            "generate",
            "--model",
            s(&model),
            "--seconds",
            "0.05",
            "--quiet",
            "--out",
            s(&out),
            "--spectrogram",
            spectrogram,
        ])
    };
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let o = generate(s(&ro.join("s.png")));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert_eq!(o.status.code(), Some(1));
        assert!(
            text(&o.stderr).contains("Permission denied"),
            "{}",
            text(&o.stderr)
        );
        assert!(!out.exists(), "the WAV of a failed run was left");
    }
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Written where root ignores the permissions.
    let _ = std::fs::remove_file(&out);
    // A directory where no file can be created, whoever runs this: procfs.
    let o = generate("/proc/wavemamba-test.png");
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("/proc/wavemamba-test.png: "), "{err}");
    assert!(!out.exists(), "the WAV of a failed run was left");
}
