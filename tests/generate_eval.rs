//! `wavemamba generate` and `wavemamba eval` end to end on a saved random model and generated
//! WAV files: determinism, output format, clear errors that leave no partial files.

use std::path::{Path, PathBuf};

use tch::Device;

mod common;

use common::{text, wavemamba};
use wavemamba::audio::{read_audio, write_wav, WavFormat};
use wavemamba::config::{AudioConfig, MambaConfig};
use wavemamba::model::{checkpoint, WaveMamba};

fn setup(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("wavemamba-gen-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    tch::manual_seed(11);
    let model = WaveMamba::new(
        MambaConfig::preset("tiny").unwrap(),
        AudioConfig::default(),
        Device::Cpu,
    )
    .unwrap();
    checkpoint::save(&model, &dir.join("model")).unwrap();
    // A 0.5 s two-tone prompt at 22.05 kHz, stereo-free mono.
    let rate = 22_050u32;
    let x: Vec<f32> = (0..rate / 2)
        .map(|i| {
            let t = i as f32 / rate as f32;
            0.3 * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
                + 0.1 * (2.0 * std::f32::consts::PI * 1250.0 * t).sin()
        })
        .collect();
    write_wav(&dir.join("prompt.wav"), &x, rate, WavFormat::Pcm16).unwrap();
    (dir.clone(), dir.join("model"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn generate_is_deterministic_and_writes_prompt_plus_continuation() {
    let (dir, model) = setup("det");
    let run = |out: &Path| {
        let o = wavemamba(&[
            "generate",
            "--model",
            s(&model),
            "--prompt",
            s(&dir.join("prompt.wav")),
            "--seconds",
            "0.25",
            "--out",
            s(out),
            "--seed",
            "1",
            "--quiet",
            "--spectrogram",
            s(&dir.join("spec.png")),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
    };
    run(&dir.join("a.wav"));
    run(&dir.join("b.wav"));
    let a = std::fs::read(dir.join("a.wav")).unwrap();
    assert_eq!(
        a,
        std::fs::read(dir.join("b.wav")).unwrap(),
        "--seed 1 twice must give identical files"
    );
    let audio = read_audio(&dir.join("a.wav")).unwrap();
    assert_eq!(audio.sample_rate, 22_050, "output at the prompt's rate");
    let expected = 11_025 + (0.25f64 * 22_050.0).round() as usize;
    assert!(
        (audio.samples.len() as i64 - expected as i64).abs() <= 2,
        "{} samples, expected {expected}",
        audio.samples.len()
    );
    assert_eq!(
        &std::fs::read(dir.join("spec.png")).unwrap()[..4],
        b"\x89PNG"
    );
    // Several continuations at once, continuation only, at a requested rate.
    let o = wavemamba(&[
        "generate",
        "--model",
        s(&model),
        "--prompt",
        s(&dir.join("prompt.wav")),
        "--seconds",
        "0.1",
        "--out",
        s(&dir.join("n.wav")),
        "--num",
        "2",
        "--continuation-only",
        "--rate",
        "16000",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for i in 1..=2 {
        let a = read_audio(&dir.join(format!("n-{i}.wav"))).unwrap();
        assert_eq!((a.sample_rate, a.samples.len()), (16_000, 1600));
    }
}

#[test]
fn bad_inputs_give_clear_errors_and_no_output() {
    let (dir, model) = setup("bad");
    std::fs::write(dir.join("garbage.wav"), b"RIFF\x10\x00\x00\x00WAVEjunk").unwrap();
    let cases: [(Vec<String>, &str); 4] = [
        (
            vec![
                "--model".into(),
                s(&model).into(),
                "--prompt".into(),
                s(&dir.join("garbage.wav")).into(),
            ],
            "garbage.wav",
        ),
        (
            vec![
                "--model".into(),
                s(&dir.join("no-model")).into(),
                "--prompt".into(),
                s(&dir.join("prompt.wav")).into(),
            ],
            "not a model directory",
        ),
        (
            vec![
                "--model".into(),
                s(&model).into(),
                "--prompt".into(),
                s(&dir.join("prompt.wav")).into(),
            ],
            "does not exist",
        ),
        (
            vec![
                "--model".into(),
                s(&model).into(),
                "--spectrogram".into(),
                s(&dir.join("missing-dir/spec.png")).into(),
            ],
            "does not exist",
        ),
    ];
    for (i, (args, needle)) in cases.iter().enumerate() {
        let out = if i == 2 {
            dir.join("missing-dir/out.wav")
        } else {
            dir.join(format!("out{i}.wav"))
        };
        let mut all: Vec<&str> = vec!["generate", "--seconds", "0.1", "--quiet", "--out", s(&out)];
        all.extend(args.iter().map(String::as_str));
        let o = wavemamba(&all);
        assert_eq!(o.status.code(), Some(1), "case {i}");
        assert!(
            text(&o.stderr).contains(needle),
            "case {i}: {}",
            text(&o.stderr)
        );
        assert!(!out.exists(), "case {i}: no partial output");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn eval_reports_bits_per_sample_on_a_directory() {
    let (dir, model) = setup("eval");
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::copy(dir.join("prompt.wav"), data.join("a.wav")).unwrap();
    std::fs::copy(dir.join("prompt.wav"), data.join("sub/b.wav")).unwrap();
    std::fs::write(data.join("broken.wav"), b"not audio at all").unwrap();
    let o = wavemamba(&["eval", "--model", s(&model), "--data", s(&data), "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["files"], 2);
    assert_eq!(
        v["samples"],
        2 * 8000,
        "0.5 s at the model's 16 kHz, per file"
    );
    let nll = v["nll_bits_per_sample"].as_f64().unwrap();
    // A random model is close to uniform over 256 classes (8 bits), never wildly off.
    assert!(nll > 4.0 && nll < 12.0, "{nll}");
    assert_eq!(v["skipped"].as_array().unwrap().len(), 1);
    // Chunking with state carry-over equals one pass.
    let m = checkpoint::load(&model, Device::Cpu).unwrap();
    let tokens: Vec<u8> = (0..3000u32)
        .map(|i| ((i * 37 + i / 7) % 256) as u8)
        .collect();
    let (whole, n) = wavemamba::eval::sequence_bits(&m, &tokens, 1000).unwrap();
    let input: Vec<i64> = std::iter::once(128)
        .chain(tokens[..2999].iter().map(|&t| t as i64))
        .collect();
    let logits = tch::no_grad(|| {
        m.forward(&tch::Tensor::from_slice(&input).unsqueeze(0))
            .unwrap()
    });
    let target = tch::Tensor::from_slice(&tokens.iter().map(|&t| t as i64).collect::<Vec<_>>());
    let reference = logits
        .squeeze_dim(0)
        .cross_entropy_loss::<tch::Tensor>(&target, None, tch::Reduction::Sum, -100, 0.0)
        .double_value(&[])
        / std::f64::consts::LN_2;
    assert_eq!(n, 3000);
    assert!(
        (whole - reference).abs() / reference < 1e-5,
        "{whole} vs {reference}"
    );
}

#[test]
fn eval_split_scores_exactly_the_files_of_that_split() {
    let (dir, model) = setup("eval-split");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let names: Vec<String> = (0..40).map(|i| format!("clip-{i:02}.wav")).collect();
    for n in &names {
        std::fs::copy(dir.join("prompt.wav"), data.join(n)).unwrap();
    }
    let mut total = 0;
    for split in ["train", "valid", "test"] {
        let want = names
            .iter()
            .filter(|n| wavemamba::data::Split::of_key(n).name() == split)
            .count();
        let o = wavemamba(&[
            "eval",
            "--model",
            s(&model),
            "--data",
            s(&data),
            "--split",
            split,
            "--json",
        ]);
        assert!(want > 0, "{split}: these 40 names populate every split");
        assert!(o.status.success(), "{split}: {}", text(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["files"], want, "{split}");
        total += want;
    }
    assert_eq!(total, names.len(), "the splits partition the files");
    let o = wavemamba(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&data.join(&names[0])),
        "--split",
        "valid",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("needs a directory or a manifest"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn a_clip_shorter_than_one_stft_window_still_gets_a_spectrogram() {
    let (dir, model) = setup("short-spec");
    let (out, png) = (dir.join("short.wav"), dir.join("short.png"));
    let o = wavemamba(&[
        "generate",
        "--model",
        s(&model),
        "--seconds",
        "0.01",
        "--quiet",
        "--out",
        s(&out),
        "--spectrogram",
        s(&png),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
}

/// Every check runs before any work: empty prompts, sizes below one sample or beyond a WAV file
/// or memory, unsupported names, directories, training runs and incomplete model directories
/// are one clear line each (no abort, no Debug text), and nothing is left in the output folder.
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
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let o = wavemamba(&[
        "generate",
        "--model",
        s(&model),
        "--seconds",
        "0.05",
        "--quiet",
        "--out",
        s(&out),
        "--spectrogram",
        s(&ro.join("s.png")),
    ]);
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
    let _ = std::fs::remove_file(&out); // written where root ignores the permissions
                                        // A directory where no file can be created, whoever runs this: procfs.
    let o = wavemamba(&[
        "generate",
        "--model",
        s(&model),
        "--seconds",
        "0.05",
        "--quiet",
        "--out",
        s(&out),
        "--spectrogram",
        "/proc/wavemamba-test.png",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("/proc/wavemamba-test.png: "), "{err}");
    assert!(!out.exists(), "the WAV of a failed run was left");
}

/// Decoding refuses files without samples; scanning a directory still lists them among the
/// skipped files and scores the rest.
#[test]
fn eval_lists_an_empty_file_among_the_skipped() {
    let (dir, model) = setup("eval-empty");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(dir.join("prompt.wav"), data.join("a.wav")).unwrap();
    write_wav(&data.join("empty.wav"), &[], 16_000, WavFormat::Pcm16).unwrap();
    let o = wavemamba(&["eval", "--model", s(&model), "--data", s(&data), "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["files"], 1);
    let skipped = v["skipped"].as_array().unwrap();
    assert!(
        skipped.len() == 1
            && skipped[0]
                .as_str()
                .unwrap()
                .contains("empty.wav: no audio samples"),
        "{skipped:?}"
    );
    let o = wavemamba(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&data.join("empty.wav")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("empty.wav: no audio samples"),
        "{}",
        text(&o.stderr)
    );
}
